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

/// The API form of a stored object as bytes, without decoding it: the stored
/// JSON (as [`Stored`] wrote it) with `metadata.resourceVersion` added last,
/// as decoding and encoding again would give. `None` when the bytes are not
/// the compact object this expects (the caller then decodes).
pub fn stored_with_resource_version(stored: &[u8], revision: i64) -> Option<bytes::Bytes> {
    let close = metadata_close(stored)?;
    let empty = stored.get(close.checked_sub(1)?) == Some(&b'{');
    let rv = format!(
        "{}\"resourceVersion\":\"{revision}\"",
        if empty { "" } else { "," }
    );
    let mut out = Vec::with_capacity(stored.len() + rv.len());
    out.extend_from_slice(&stored[..close]);
    out.extend_from_slice(rv.as_bytes());
    out.extend_from_slice(&stored[close..]);
    Some(out.into())
}

/// Where the top-level `metadata` object of compact JSON `b` closes.
fn metadata_close(b: &[u8]) -> Option<usize> {
    if b.first() != Some(&b'{') {
        return None;
    }
    let mut i = 1;
    loop {
        let key_end = skip_string(b, i)?;
        if b.get(key_end) != Some(&b':') {
            return None;
        }
        let value = key_end + 1;
        let end = skip_value(b, value)?;
        if &b[i..key_end] == b"\"metadata\"" {
            return (b.get(value) == Some(&b'{')).then_some(end - 1);
        }
        match b.get(end) {
            Some(b',') => i = end + 1,
            _ => return None,
        }
    }
}

/// The index after the JSON string starting at `i`.
fn skip_string(b: &[u8], i: usize) -> Option<usize> {
    if b.get(i) != Some(&b'"') {
        return None;
    }
    let mut j = i + 1;
    while j < b.len() {
        match b[j] {
            b'\\' => j += 2,
            b'"' => return Some(j + 1),
            _ => j += 1,
        }
    }
    None
}

/// The index after the compact JSON value starting at `i`.
fn skip_value(b: &[u8], i: usize) -> Option<usize> {
    match *b.get(i)? {
        b'"' => skip_string(b, i),
        b'{' | b'[' => {
            let mut depth = 0usize;
            let mut j = i;
            while j < b.len() {
                match b[j] {
                    b'"' => {
                        j = skip_string(b, j)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(j + 1);
                        }
                    }
                    _ => {}
                }
                j += 1;
            }
            None
        }
        _ => {
            let n = b[i..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']'))?;
            Some(i + n)
        }
    }
}

#[cfg(test)]
mod stored_tests {
    use super::*;
    use serde_json::json;

    /// The spliced bytes are what decoding and encoding again gives.
    #[test]
    fn resource_version_is_spliced_as_decoding_would_add_it() {
        for obj in [
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "resourceVersion": "3", "labels": {"x": "}{\"]"}}, "data": {"metadata": "{"}}),
            json!({"spec": {"template": {"metadata": {"labels": {"a": "b"}}}}, "metadata": {"name": "d"}, "kind": "Deployment"}),
            json!({"kind": "X", "metadata": {}, "n": [1, 2.5, null, true, {"a": []}], "s": "\\\"q"}),
        ] {
            let stored = serde_json::to_vec(&Stored(&obj)).unwrap();
            let fast = stored_with_resource_version(&stored, 42).expect("spliced");
            let slow = crate::watchcache::decode_stored(&stored, 42).unwrap();
            assert_eq!(&fast[..], &serde_json::to_vec(&slow).unwrap()[..], "{obj}");
        }
    }

    #[test]
    fn unexpected_shapes_fall_back() {
        for b in [
            &b""[..],
            b"[]",
            b"{\"kind\":\"X\"}",
            b"{\"metadata\":\"x\"}",
            b"{\"metadata\":{\"name\":\"a\"",
            b"{ \"metadata\":{}}",
        ] {
            assert!(stored_with_resource_version(b, 1).is_none(), "{b:?}");
        }
    }
}
