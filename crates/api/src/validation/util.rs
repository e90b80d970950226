//! Field paths and small JSON accessors shared by validation and defaulting.

use std::fmt;

use serde_json::{Map, Value};

/// A field path as upstream's `field.Path` prints it: `spec.containers[0].image`,
/// `metadata.labels[app]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Path(String);

impl Path {
    /// A path starting at a top-level field.
    pub(crate) fn new(root: &str) -> Path {
        Path(root.to_string())
    }

    /// `a.b`
    pub(crate) fn child(&self, name: &str) -> Path {
        if self.0.is_empty() {
            Path(name.to_string())
        } else {
            Path(format!("{}.{}", self.0, name))
        }
    }

    /// `a[3]`
    pub(crate) fn index(&self, i: usize) -> Path {
        Path(format!("{}[{}]", self.0, i))
    }

    /// `a[key]`
    pub(crate) fn key(&self, k: &str) -> Path {
        Path(format!("{}[{}]", self.0, k))
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Follow a chain of object keys.
pub(crate) fn get<'a>(v: &'a Value, keys: &[&str]) -> Option<&'a Value> {
    let mut cur = v;
    for k in keys {
        cur = cur.get(k)?;
    }
    Some(cur)
}

/// A string field, `""` when missing or not a string (Go's zero value).
pub(crate) fn str_at<'a>(v: &'a Value, keys: &[&str]) -> &'a str {
    get(v, keys).and_then(Value::as_str).unwrap_or("")
}

/// An integer field, `None` when missing or null.
pub(crate) fn int_at(v: &Value, keys: &[&str]) -> Option<i64> {
    get(v, keys).and_then(Value::as_i64)
}

/// A boolean field, `false` when missing.
pub(crate) fn bool_at(v: &Value, keys: &[&str]) -> bool {
    get(v, keys).and_then(Value::as_bool).unwrap_or(false)
}

/// An array field, empty when missing.
pub(crate) fn arr_at<'a>(v: &'a Value, keys: &[&str]) -> &'a [Value] {
    get(v, keys)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

static EMPTY_MAP: std::sync::LazyLock<Map<String, Value>> = std::sync::LazyLock::new(Map::new);

/// An object field, empty when missing.
pub(crate) fn obj_at<'a>(v: &'a Value, keys: &[&str]) -> &'a Map<String, Value> {
    get(v, keys)
        .and_then(Value::as_object)
        .unwrap_or(&EMPTY_MAP)
}

/// Whether a field is present and not null.
pub(crate) fn has(v: &Value, keys: &[&str]) -> bool {
    get(v, keys).is_some_and(|x| !x.is_null())
}

/// Ensure `v` is an object and return its map (replacing null/other values).
pub(crate) fn ensure_obj(v: &mut Value) -> &mut Map<String, Value> {
    if !v.is_object() {
        *v = Value::Object(Map::new());
    }
    match v {
        Value::Object(m) => m,
        _ => unreachable!("just made an object"),
    }
}

/// The child object `key` of `v`, created (or replaced if null) when missing.
pub(crate) fn child_obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Value {
    let m = ensure_obj(v);
    let e = m.entry(key.to_string()).or_insert(Value::Null);
    if !e.is_object() {
        *e = Value::Object(Map::new());
    }
    e
}

/// Set `key` to `val` when it is missing, null or an empty string.
pub(crate) fn set_default(v: &mut Value, key: &str, val: Value) {
    let m = ensure_obj(v);
    let missing = match m.get(key) {
        None | Some(Value::Null) => true,
        Some(Value::String(s)) => s.is_empty(),
        _ => false,
    };
    if missing {
        m.insert(key.to_string(), val);
    }
}

/// `[]string` view of a string array field.
pub(crate) fn strings_at(v: &Value, keys: &[&str]) -> Vec<String> {
    arr_at(v, keys)
        .iter()
        .filter_map(|x| x.as_str().map(str::to_string))
        .collect()
}
