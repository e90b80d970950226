//! Small helpers for objects held as JSON.

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// An object serialised as it is stored: without `metadata.resourceVersion` (the
/// store's revision is the version), written straight from the borrowed value
/// instead of from a copy with the field removed.
pub struct Stored<'a>(pub &'a Value);

impl Serialize for Stored<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let Value::Object(map) = self.0 else {
            return self.0.serialize(s);
        };
        let mut out = s.serialize_map(Some(map.len()))?;
        for (k, v) in map {
            match v {
                Value::Object(meta) if k == "metadata" => {
                    out.serialize_entry(k, &Without(meta, "resourceVersion"))?
                }
                _ => out.serialize_entry(k, v)?,
            }
        }
        out.end()
    }
}

/// A map serialised without one of its keys.
struct Without<'a>(&'a Map<String, Value>, &'static str);

impl Serialize for Without<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let len = self.0.len() - usize::from(self.0.contains_key(self.1));
        let mut out = s.serialize_map(Some(len))?;
        for (k, v) in self.0.iter().filter(|(k, _)| k.as_str() != self.1) {
            out.serialize_entry(k, v)?;
        }
        out.end()
    }
}

/// The object's `metadata` map, created if missing (or if it was not a map).
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.is_object() {
        *obj = Value::Object(Map::new());
    }
    let map = obj.as_object_mut().expect("just made an object");
    let entry = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?.get(field)?.as_str()
}

pub fn name(obj: &Value) -> &str {
    meta_str(obj, "name").unwrap_or("")
}

pub fn labels(obj: &Value) -> Option<&Map<String, Value>> {
    obj.get("metadata")?.get("labels")?.as_object()
}

/// RFC 3339 with second precision, as the API writes timestamps.
pub fn now_rfc3339() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// The value of `resourceVersion` in the object, parsed.
pub fn resource_version(obj: &Value) -> Option<i64> {
    meta_str(obj, "resourceVersion").and_then(|s| s.parse().ok())
}

/// Finalizers listed in metadata.
pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.get("metadata")
        .and_then(|m| m.get("finalizers"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// Random suffix for generateName (upstream: 5 characters from a vowel-free alphabet).
pub fn random_suffix() -> String {
    use rand::Rng;
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn stored_form_drops_only_the_resource_version() {
        let obj = json!({"kind": "Pod", "metadata": {"name": "a", "resourceVersion": "7",
            "labels": {"resourceVersion": "kept"}}, "spec": {"resourceVersion": 1}});
        let bytes = serde_json::to_vec(&Stored(&obj)).unwrap();
        let back: Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            back,
            json!({"kind": "Pod", "metadata": {"name": "a", "labels": {"resourceVersion": "kept"}},
                "spec": {"resourceVersion": 1}})
        );
    }

    #[test]
    fn stored_form_of_metadata_holding_only_the_version() {
        let obj = json!({"metadata": {"resourceVersion": "7"}, "data": {}});
        assert_eq!(
            serde_json::to_string(&Stored(&obj)).unwrap(),
            r#"{"metadata":{},"data":{}}"#
        );
        let no_meta = json!({"a": [1, 2]});
        assert_eq!(
            serde_json::to_string(&Stored(&no_meta)).unwrap(),
            r#"{"a":[1,2]}"#
        );
        assert_eq!(serde_json::to_string(&Stored(&json!(3))).unwrap(), "3");
    }
}
