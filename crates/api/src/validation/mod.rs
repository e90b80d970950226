//! Per-kind validation of API objects, with upstream's field paths and wording.
//!
//! The API server calls [`validate_create`] or [`validate_update`] after
//! [`crate::defaults::apply`]. Each returned [`FieldError`] names the offending
//! field (`spec.containers[0].image`) and renders like Kubernetes' `field.Error`,
//! so `kubectl` users see the messages they know.

mod apps;
mod cron;
mod meta;
mod misc;
mod names;
mod pod;
mod quantity;
mod service;
pub(crate) mod util;

#[cfg(test)]
mod tests;

use std::fmt;

use serde_json::Value;

use crate::catalog::ResourceType;

pub use names::{
    is_config_map_key, is_dns1035_label, is_dns1123_label, is_dns1123_subdomain, is_qualified_name,
    is_valid_label_value, is_valid_path_segment_name, is_valid_port_name,
};
pub use quantity::{parse_quantity, QuantityError};

/// The kind of a validation failure (upstream `field.ErrorType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorType {
    /// A required field is missing or empty.
    Required,
    /// The value is malformed or out of range.
    Invalid,
    /// The value collides with another one that must be unique.
    Duplicate,
    /// The value is not one of a fixed set of supported values.
    NotSupported,
    /// The field may not be set or changed here.
    Forbidden,
    /// The value is longer than allowed.
    TooLong,
    /// A list has more items than allowed.
    TooMany,
    /// A reference points at something that does not exist.
    NotFound,
}

impl ErrorType {
    /// The `StatusCause.reason` of this error type, e.g. `FieldValueRequired`.
    pub fn reason(self) -> &'static str {
        match self {
            ErrorType::Required => "FieldValueRequired",
            ErrorType::Invalid => "FieldValueInvalid",
            ErrorType::Duplicate => "FieldValueDuplicate",
            ErrorType::NotSupported => "FieldValueNotSupported",
            ErrorType::Forbidden => "FieldValueForbidden",
            ErrorType::TooLong => "FieldValueTooLong",
            ErrorType::TooMany => "FieldValueTooMany",
            ErrorType::NotFound => "FieldValueNotFound",
        }
    }

    /// The human text upstream prints for the type, e.g. `Required value`.
    pub fn text(self) -> &'static str {
        match self {
            ErrorType::Required => "Required value",
            ErrorType::Invalid => "Invalid value",
            ErrorType::Duplicate => "Duplicate value",
            ErrorType::NotSupported => "Unsupported value",
            ErrorType::Forbidden => "Forbidden",
            ErrorType::TooLong => "Too long",
            ErrorType::TooMany => "Too many",
            ErrorType::NotFound => "Not found",
        }
    }
}

/// One validation failure on one field (upstream `field.Error`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{}", self.message())]
pub struct FieldError {
    /// What went wrong.
    pub error_type: ErrorType,
    /// The field path, e.g. `spec.containers[0].image` or `data[key]`.
    pub field: String,
    /// The offending value, when upstream prints one.
    pub bad_value: Option<Value>,
    /// Extra explanation appended after the value.
    pub detail: String,
}

impl FieldError {
    fn new(
        error_type: ErrorType,
        field: impl fmt::Display,
        bad_value: Option<Value>,
        detail: impl Into<String>,
    ) -> Self {
        FieldError {
            error_type,
            field: field.to_string(),
            bad_value,
            detail: detail.into(),
        }
    }

    /// `field.Required`: the field must be set.
    pub fn required(field: impl fmt::Display, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Required, field, None, detail)
    }

    /// `field.Invalid`: the value is not acceptable.
    pub fn invalid(
        field: impl fmt::Display,
        value: impl Into<Value>,
        detail: impl Into<String>,
    ) -> Self {
        Self::new(ErrorType::Invalid, field, Some(value.into()), detail)
    }

    /// `field.Duplicate`: the value must be unique.
    pub fn duplicate(field: impl fmt::Display, value: impl Into<Value>) -> Self {
        Self::new(ErrorType::Duplicate, field, Some(value.into()), "")
    }

    /// `field.NotSupported`: the value is not in `valid` (listed in the detail).
    pub fn not_supported(
        field: impl fmt::Display,
        value: impl Into<Value>,
        valid: &[&str],
    ) -> Self {
        let detail = if valid.is_empty() {
            String::new()
        } else {
            let quoted: Vec<String> = valid.iter().map(|v| go_quote(v)).collect();
            format!("supported values: {}", quoted.join(", "))
        };
        Self::new(ErrorType::NotSupported, field, Some(value.into()), detail)
    }

    /// `field.Forbidden`: the field may not be set or changed.
    pub fn forbidden(field: impl fmt::Display, detail: impl Into<String>) -> Self {
        Self::new(ErrorType::Forbidden, field, None, detail)
    }

    /// `field.TooLong`: the value exceeds `max` bytes.
    pub fn too_long(field: impl fmt::Display, max: usize) -> Self {
        let unit = if max == 1 { "byte" } else { "bytes" };
        Self::new(
            ErrorType::TooLong,
            field,
            None,
            format!("may not be more than {max} {unit}"),
        )
    }

    /// `field.TooMany`: the list has `actual` items, more than `max`.
    pub fn too_many(field: impl fmt::Display, actual: usize, max: usize) -> Self {
        let unit = if max == 1 { "item" } else { "items" };
        Self::new(
            ErrorType::TooMany,
            field,
            Some(Value::from(actual)),
            format!("must have at most {max} {unit}"),
        )
    }

    /// `field.NotFound`: the referenced value does not exist.
    pub fn not_found(field: impl fmt::Display, value: impl Into<Value>) -> Self {
        Self::new(ErrorType::NotFound, field, Some(value.into()), "")
    }

    /// The `StatusCause.reason`, e.g. `FieldValueInvalid`.
    pub fn reason(&self) -> &'static str {
        self.error_type.reason()
    }

    /// The message without the field path (upstream `ErrorBody()`), which is what
    /// upstream puts in `details.causes[].message`: `Required value`,
    /// `Invalid value: "Foo": ...`.
    pub fn body(&self) -> String {
        let mut s = match (self.error_type, &self.bad_value) {
            (ErrorType::Required | ErrorType::Forbidden | ErrorType::TooLong, _) | (_, None) => {
                self.error_type.text().to_string()
            }
            (_, Some(v)) => format!("{}: {}", self.error_type.text(), render_value(v)),
        };
        if !self.detail.is_empty() {
            s.push_str(": ");
            s.push_str(&self.detail);
        }
        s
    }

    /// The full message as upstream's `field.Error.Error()`:
    /// `spec.containers[0].image: Required value`.
    pub fn message(&self) -> String {
        format!("{}: {}", self.field, self.body())
    }
}

/// The message of a whole error list as upstream's `ErrorList.ToAggregate()`
/// prints it: one message alone, several as `[a, b]`, duplicates dropped.
pub fn aggregate_message(errors: &[FieldError]) -> String {
    let mut msgs: Vec<String> = Vec::new();
    for e in errors {
        let m = e.message();
        if !msgs.contains(&m) {
            msgs.push(m);
        }
    }
    if msgs.len() == 1 {
        msgs.remove(0)
    } else {
        format!("[{}]", msgs.join(", "))
    }
}

/// Quote a string as Go's `%q` does (close enough for messages).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Render a bad value as upstream's `%v`/`%q`/`%#v` would for the Go type the
/// JSON came from.
fn render_value(v: &Value) -> String {
    match v {
        Value::Null => "null".to_string(),
        Value::String(s) => go_quote(s),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        Value::Object(m) if !m.is_empty() && m.values().all(Value::is_string) => {
            let mut pairs: Vec<(&String, &str)> = m
                .iter()
                .map(|(k, v)| (k, v.as_str().unwrap_or_default()))
                .collect();
            pairs.sort();
            let inner: Vec<String> = pairs
                .iter()
                .map(|(k, v)| format!("{}:{}", go_quote(k), go_quote(v)))
                .collect();
            format!("map[string]string{{{}}}", inner.join(", "))
        }
        Value::Array(a) if a.iter().all(Value::is_string) => {
            let inner: Vec<String> = a
                .iter()
                .map(|s| go_quote(s.as_str().unwrap_or_default()))
                .collect();
            format!("[]string{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

/// Validate a new object of type `rt` (already type-checked and defaulted).
pub fn validate_create(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(rt, obj);
    errs.extend(kind_create(rt, obj));
    errs
}

/// Validate an update of `old` to `new` (both of type `rt`, `new` defaulted).
/// Includes everything [`validate_create`] checks on `new`, plus the immutability
/// rules.
pub fn validate_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = meta::validate_object_meta(rt, new);
    errs.extend(meta::validate_object_meta_update(new, old));
    errs.extend(kind_create(rt, new));
    errs.extend(kind_update(rt, new, old));
    errs
}

fn kind_create(rt: &ResourceType, obj: &Value) -> Vec<FieldError> {
    match (rt.group, rt.kind) {
        ("", "Pod") => pod::validate_pod(obj),
        ("", "PodTemplate") => pod::validate_pod_template(obj),
        ("", "Service") => service::validate_service(obj),
        ("", "ConfigMap") => misc::validate_config_map(obj),
        ("", "Secret") => misc::validate_secret(obj),
        ("", "Namespace") => misc::validate_namespace(obj),
        ("", "Node") => misc::validate_node(obj),
        ("", "Event") => misc::validate_core_event(obj),
        ("", "ReplicationController") => apps::validate_replication_controller(obj),
        ("", "PersistentVolumeClaim") => misc::validate_pvc(obj),
        ("", "Endpoints") => service::validate_endpoints(obj),
        ("events.k8s.io", "Event") => misc::validate_events_event(obj),
        ("apps", "Deployment") => apps::validate_deployment(obj),
        ("apps", "ReplicaSet") => apps::validate_replica_set(obj),
        ("apps", "StatefulSet") => apps::validate_stateful_set(obj),
        ("apps", "DaemonSet") => apps::validate_daemon_set(obj),
        ("batch", "Job") => apps::validate_job(obj),
        ("batch", "CronJob") => apps::validate_cron_job(obj),
        ("coordination.k8s.io", "Lease") => misc::validate_lease(obj),
        ("rbac.authorization.k8s.io", "Role") => misc::validate_rbac_role(obj, true),
        ("rbac.authorization.k8s.io", "ClusterRole") => misc::validate_rbac_role(obj, false),
        ("rbac.authorization.k8s.io", "RoleBinding") => misc::validate_rbac_binding(obj, true),
        ("rbac.authorization.k8s.io", "ClusterRoleBinding") => {
            misc::validate_rbac_binding(obj, false)
        }
        ("scheduling.k8s.io", "PriorityClass") => misc::validate_priority_class(obj),
        ("apiextensions.k8s.io", "CustomResourceDefinition") => misc::validate_crd(obj),
        _ => Vec::new(),
    }
}

fn kind_update(rt: &ResourceType, new: &Value, old: &Value) -> Vec<FieldError> {
    match (rt.group, rt.kind) {
        ("", "Pod") => pod::validate_pod_update(new, old),
        ("", "Service") => service::validate_service_update(new, old),
        ("", "ConfigMap") => misc::validate_config_map_update(new, old),
        ("", "Secret") => misc::validate_secret_update(new, old),
        ("", "PersistentVolumeClaim") => misc::validate_pvc_update(new, old),
        ("apps", "Deployment" | "ReplicaSet" | "DaemonSet") => {
            apps::validate_selector_immutable(new, old)
        }
        ("apps", "StatefulSet") => apps::validate_stateful_set_update(new, old),
        ("batch", "Job") => apps::validate_job_update(new, old),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            misc::validate_rbac_binding_update(new, old)
        }
        ("scheduling.k8s.io", "PriorityClass") => misc::validate_priority_class_update(new, old),
        _ => Vec::new(),
    }
}
