//! Patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386), strategic merge
//! patch and server-side apply.
//!
//! Objects are `serde_json::Value`s as the API server stores them. Every entry
//! point returns a new value (or an error) and leaves its inputs alone, so a
//! failed patch never half-applies.
//!
//! - `application/json-patch+json`: [`json_patch`].
//! - `application/merge-patch+json`: [`merge_patch`].
//! - `application/strategic-merge-patch+json`: [`strategic_merge`], with merge
//!   keys from [`schema`].
//! - `application/apply-patch+yaml`: [`server_side_apply`], recording
//!   `metadata.managedFields` (see [`fields`]).
//! - Dispatch on [`PatchType`] for the first three: [`apply_patch`].

use serde_json::Value;

use crate::catalog::ResourceType;

pub mod apply;
pub mod fields;
mod json;
pub mod managed;
pub mod schema;
mod strategic;

pub use apply::{parse_apply_body, server_side_apply, server_side_apply_at, ApplyConflict};
pub use json::{json_patch, merge_patch};
pub use strategic::{strategic_merge, strategic_merge_for};

/// Why a patch could not be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PatchError {
    /// The request body is not valid JSON/YAML of the expected shape.
    #[error("invalid patch body: {0}")]
    InvalidBody(String),
    /// A JSON patch (RFC 6902) document is malformed (not a list, bad `op`,
    /// missing `path`/`value`/`from`, bad pointer syntax).
    #[error("invalid JSON patch: {0}")]
    InvalidJsonPatch(String),
    /// A JSON patch operation could not be applied.
    #[error("json patch {op} operation {index} failed at \"{path}\": {reason}")]
    JsonPatchFailed {
        /// Index of the operation in the patch.
        index: usize,
        /// The operation name (`add`, `remove`, ...).
        op: String,
        /// The JSON pointer the operation targets.
        path: String,
        /// What went wrong.
        reason: String,
    },
    /// A JSON patch `test` operation did not match.
    #[error("json patch test operation {index} failed: the value at \"{path}\" does not match")]
    TestFailed {
        /// Index of the operation in the patch.
        index: usize,
        /// The JSON pointer tested.
        path: String,
    },
    /// A merge or strategic merge patch is malformed at a field path
    /// (wrong JSON type, bad directive, mismatched `$setElementOrder`, ...).
    #[error("invalid patch at {path}: {reason}")]
    InvalidPatch {
        /// Field path such as `spec.template.spec.containers`.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// An element of a merge list lacks the merge key.
    #[error(
        "invalid patch at {path}: list element {element} does not contain the merge key \"{key}\""
    )]
    MissingMergeKey {
        /// Field path of the list.
        path: String,
        /// The merge key, e.g. `name`.
        key: String,
        /// The offending element (as JSON).
        element: String,
    },
    /// Server-side apply found fields owned by other managers with different
    /// values (answer 409 with `FieldManagerConflict` causes).
    #[error("{}", apply::conflict_message(.0))]
    Conflicts(Vec<ApplyConflict>),
}

impl PatchError {
    pub(crate) fn invalid(path: &str, reason: impl Into<String>) -> PatchError {
        PatchError::InvalidPatch {
            path: if path.is_empty() {
                "<root>".to_string()
            } else {
                path.to_string()
            },
            reason: reason.into(),
        }
    }
}

/// The patch formats a PATCH request can carry, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    /// `application/json-patch+json`
    Json,
    /// `application/merge-patch+json`
    Merge,
    /// `application/strategic-merge-patch+json`
    StrategicMerge,
    /// `application/apply-patch+yaml` (also `application/apply-patch+json`,
    /// `application/apply-patch+cbor` is not supported)
    Apply,
}

impl PatchType {
    /// Recognise a `Content-Type` header value (parameters such as `; charset=utf-8`
    /// are ignored). `None` means 415 Unsupported Media Type.
    pub fn from_content_type(content_type: &str) -> Option<PatchType> {
        let essence = content_type
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        match essence.as_str() {
            "application/json-patch+json" => Some(PatchType::Json),
            "application/merge-patch+json" => Some(PatchType::Merge),
            "application/strategic-merge-patch+json" => Some(PatchType::StrategicMerge),
            "application/apply-patch+yaml" | "application/apply-patch+json" => {
                Some(PatchType::Apply)
            }
            _ => None,
        }
    }

    /// The canonical media type.
    pub fn content_type(self) -> &'static str {
        match self {
            PatchType::Json => "application/json-patch+json",
            PatchType::Merge => "application/merge-patch+json",
            PatchType::StrategicMerge => "application/strategic-merge-patch+json",
            PatchType::Apply => "application/apply-patch+yaml",
        }
    }
}

/// Apply a JSON, merge or strategic merge patch body to `original`.
///
/// For [`PatchType::Apply`] use [`server_side_apply`], which needs the field
/// manager; this function answers `InvalidBody` for it.
pub fn apply_patch(
    patch_type: PatchType,
    original: &Value,
    body: &[u8],
    kind: &ResourceType,
) -> Result<Value, PatchError> {
    let patch: Value =
        serde_json::from_slice(body).map_err(|e| PatchError::InvalidBody(e.to_string()))?;
    match patch_type {
        PatchType::Json => json_patch(original, &patch),
        PatchType::Merge => merge_patch(original, &patch),
        PatchType::StrategicMerge => strategic_merge(original, &patch, kind),
        PatchType::Apply => Err(PatchError::InvalidBody(
            "apply patches need a field manager: use server_side_apply".into(),
        )),
    }
}

/// The JSON type name of a value, for error messages.
pub(crate) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "list",
        Value::Object(_) => "object",
    }
}

/// JSON equality with numbers compared by value (`80` equals `80.0`), as Go's
/// `float64` decoding would.
pub(crate) fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => match (x.as_i64(), y.as_i64()) {
            (Some(i), Some(j)) => i == j,
            _ => match (x.as_u64(), y.as_u64()) {
                (Some(i), Some(j)) => i == j,
                _ => x.as_f64() == y.as_f64(),
            },
        },
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_eq(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
pub(crate) mod testgen {
    use serde_json::{json, Map, Value};

    /// A tiny deterministic generator for property-style tests.
    pub(crate) struct Rng(pub(crate) u64);
    impl Rng {
        pub(crate) fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        pub(crate) fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
        pub(crate) fn value(&mut self, depth: u32) -> Value {
            const KEYS: &[&str] = &[
                "spec",
                "template",
                "containers",
                "name",
                "env",
                "ports",
                "containerPort",
                "$patch",
                "delete",
                "replace",
                "merge",
                "$retainKeys",
                "$setElementOrder/containers",
                "$deleteFromPrimitiveList/finalizers",
                "finalizers",
                "metadata",
                "a",
                "type",
                "$setElementOrder/env",
                "conditions",
                "managedFields",
                "manager",
                "operation",
                "fieldsV1",
                "f:spec",
                "f:name",
                "k:{\"name\":\"a\"}",
                "v:\"a\"",
                ".",
            ];
            let pick = if depth == 0 {
                self.below(4)
            } else {
                self.below(7)
            };
            match pick {
                0 => Value::Null,
                1 => Value::Bool(self.below(2) == 0),
                2 => json!(self.below(3)),
                3 => Value::String(KEYS[self.below(KEYS.len() as u64) as usize].to_string()),
                4 | 5 => {
                    let mut m = Map::new();
                    for _ in 0..self.below(4) {
                        let k = KEYS[self.below(KEYS.len() as u64) as usize].to_string();
                        m.insert(k, self.value(depth - 1));
                    }
                    Value::Object(m)
                }
                _ => Value::Array((0..self.below(4)).map(|_| self.value(depth - 1)).collect()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_types() {
        assert_eq!(
            PatchType::from_content_type("application/strategic-merge-patch+json; charset=utf-8"),
            Some(PatchType::StrategicMerge)
        );
        assert_eq!(
            PatchType::from_content_type("application/apply-patch+yaml"),
            Some(PatchType::Apply)
        );
        assert_eq!(PatchType::from_content_type("application/json"), None);
        for t in [
            PatchType::Json,
            PatchType::Merge,
            PatchType::StrategicMerge,
            PatchType::Apply,
        ] {
            assert_eq!(PatchType::from_content_type(t.content_type()), Some(t));
        }
    }

    #[test]
    fn apply_patch_dispatches() {
        let kind = crate::catalog::by_kind("apps/v1", "Deployment").unwrap();
        let orig = json!({"spec": {"replicas": 1}});
        let out =
            apply_patch(PatchType::Merge, &orig, br#"{"spec":{"replicas":3}}"#, kind).unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 3}}));
        let out = apply_patch(
            PatchType::Json,
            &orig,
            br#"[{"op":"replace","path":"/spec/replicas","value":5}]"#,
            kind,
        )
        .unwrap();
        assert_eq!(out, json!({"spec": {"replicas": 5}}));
        assert!(matches!(
            apply_patch(PatchType::StrategicMerge, &orig, b"{not json", kind),
            Err(PatchError::InvalidBody(_))
        ));
        assert!(apply_patch(PatchType::Apply, &orig, b"{}", kind).is_err());
    }

    #[test]
    fn json_eq_compares_numbers_by_value() {
        assert!(json_eq(&json!(80), &json!(80.0)));
        assert!(json_eq(&json!({"a": [1, 2.0]}), &json!({"a": [1.0, 2]})));
        assert!(!json_eq(&json!(1), &json!("1")));
        assert!(!json_eq(&json!({"a": 1}), &json!({"a": 1, "b": 2})));
    }
}
