//! ObjectMeta validation (upstream `ValidateObjectMeta`, `ValidateObjectMetaUpdate`).

use serde_json::{Map, Value};

use super::names::{self, NameRule};
use super::util::{arr_at, int_at, obj_at, str_at, Path};
use super::FieldError;
use crate::catalog::ResourceType;

/// Upstream `TotalAnnotationSizeLimitB`.
const TOTAL_ANNOTATION_SIZE_LIMIT: usize = 256 * 1024;

pub(crate) const IMMUTABLE: &str = "field is immutable";
pub(crate) const NEGATIVE: &str = "must be greater than or equal to 0";

/// The rule `metadata.name` must follow for a kind.
pub(crate) fn name_rule(rt: &ResourceType) -> NameRule {
    match (rt.group, rt.kind) {
        ("", "Namespace") => NameRule::Dns1123Label,
        ("", "Service") => NameRule::Dns1035Label,
        ("", "PersistentVolume" | "PersistentVolumeClaim") => NameRule::PathSegment,
        ("rbac.authorization.k8s.io", _) => NameRule::PathSegment,
        ("autoscaling", "HorizontalPodAutoscaler") => NameRule::PathSegment,
        _ => NameRule::Dns1123Subdomain,
    }
}

/// Validate `metadata` of a top-level object.
pub(crate) fn validate_object_meta(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let path = Path::new("metadata");
    let meta = obj.get("metadata").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    let rule = name_rule(rt);

    let generate_name = str_at(meta, &["generateName"]);
    if !generate_name.is_empty() {
        for msg in rule.errors(generate_name, true) {
            errs.push(FieldError::invalid(
                path.child("generateName"),
                generate_name,
                msg,
            ));
        }
    }
    let name = str_at(meta, &["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(
            path.child("name"),
            "name or generateName is required",
        ));
    } else {
        for msg in rule.errors(name, false) {
            errs.push(FieldError::invalid(path.child("name"), name, msg));
        }
    }
    let namespace = str_at(meta, &["namespace"]);
    if rt.namespaced {
        if namespace.is_empty() {
            errs.push(FieldError::required(path.child("namespace"), ""));
        } else {
            for msg in names::dns1123_label_errors(namespace) {
                errs.push(FieldError::invalid(path.child("namespace"), namespace, msg));
            }
        }
    } else if !namespace.is_empty() {
        errs.push(FieldError::forbidden(
            path.child("namespace"),
            "not allowed on this type",
        ));
    }
    if let Some(g) = int_at(meta, &["generation"]) {
        if g < 0 {
            errs.push(FieldError::invalid(path.child("generation"), g, NEGATIVE));
        }
    }
    errs.extend(validate_labels(
        obj_at(meta, &["labels"]),
        &path.child("labels"),
    ));
    errs.extend(validate_annotations(
        obj_at(meta, &["annotations"]),
        &path.child("annotations"),
    ));
    for r in arr_at(meta, &["ownerReferences"]) {
        errs.extend(validate_owner_reference(r, &path.child("ownerReferences")));
    }
    for f in arr_at(meta, &["finalizers"]) {
        let f = f.as_str().unwrap_or("");
        for msg in names::qualified_name_errors(f) {
            errs.push(FieldError::invalid(path.child("finalizers"), f, msg));
        }
    }
    errs
}

fn validate_owner_reference(r: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let api_version = str_at(r, &["apiVersion"]);
    let version = api_version.rsplit('/').next().unwrap_or("");
    if version.is_empty() {
        errs.push(FieldError::invalid(
            path.child("apiVersion"),
            api_version,
            "version must not be empty",
        ));
    }
    for (field, detail) in [
        ("kind", "must not be empty"),
        ("name", "must not be empty"),
        ("uid", "must not be empty"),
    ] {
        if str_at(r, &[field]).is_empty() {
            errs.push(FieldError::invalid(path.child(field), "", detail));
        }
    }
    errs
}

/// Upstream `ValidateLabels`: qualified-name keys, label values; errors are
/// reported on the map's path (not per key), as upstream does.
pub(crate) fn validate_labels(labels: &Map<String, Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (k, v) in labels {
        for msg in names::qualified_name_errors(k) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        let v = v.as_str().unwrap_or("");
        for msg in names::label_value_errors(v) {
            errs.push(FieldError::invalid(path, v, msg));
        }
    }
    errs
}

/// Upstream `ValidateAnnotations`: case-insensitive qualified-name keys and a
/// total size limit of 256 KiB.
pub(crate) fn validate_annotations(
    annotations: &Map<String, Value>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut total = 0usize;
    for (k, v) in annotations {
        for msg in names::qualified_name_errors(&k.to_lowercase()) {
            errs.push(FieldError::invalid(path, k.as_str(), msg));
        }
        total += k.len() + v.as_str().map_or(0, str::len);
    }
    if total > TOTAL_ANNOTATION_SIZE_LIMIT {
        errs.push(FieldError::too_long(path, TOTAL_ANNOTATION_SIZE_LIMIT));
    }
    errs
}

/// Upstream `ValidateObjectMetaUpdate`: name, namespace and uid are immutable.
pub(crate) fn validate_object_meta_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let path = Path::new("metadata");
    let mut errs = Vec::new();
    for field in ["name", "namespace", "uid"] {
        let n = str_at(new, &["metadata", field]);
        let o = str_at(old, &["metadata", field]);
        // an update that leaves uid out keeps the stored one (as upstream's BeforeUpdate)
        if field == "uid" && n.is_empty() {
            continue;
        }
        if n != o {
            errs.push(FieldError::invalid(path.child(field), n, IMMUTABLE));
        }
    }
    errs
}

/// Upstream `ValidateNonnegativeField`.
pub(crate) fn nonnegative(v: &Value, keys: &[&str], path: &Path) -> Option<FieldError> {
    int_at(v, keys)
        .filter(|n| *n < 0)
        .map(|n| FieldError::invalid(path, n, NEGATIVE))
}

/// Upstream `ValidateImmutableField` on a JSON sub-value (missing == null).
pub(crate) fn immutable(
    new: &Value,
    old: &Value,
    keys: &[&str],
    path: &Path,
) -> Option<FieldError> {
    let n = super::util::get(new, keys).cloned().unwrap_or(Value::Null);
    let o = super::util::get(old, keys).cloned().unwrap_or(Value::Null);
    if n == o {
        None
    } else {
        Some(FieldError::invalid(path, n, IMMUTABLE))
    }
}
