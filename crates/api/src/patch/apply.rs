//! Server-side apply (`application/apply-patch+yaml`), first version.
//!
//! The applied configuration is merged into the live object like a strategic
//! merge patch (lists by merge key). Ownership is recorded in
//! `metadata.managedFields` as an `Apply` entry of the field manager, with the
//! fields the configuration sets in `FieldsV1` form. Fields this manager applied
//! before and no longer sets are removed unless another manager owns them.
//! A field owned by another manager (an `Apply` entry, or an `Update` entry
//! recorded by [`super::managed`] for a create, update or patch) whose live
//! value differs from the applied one is a conflict: an error unless `force`,
//! in which case the other manager loses it. Entries are kept in upstream's
//! order ([`super::managed::sort_entries`]).

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::fields::{self, FieldSet};
use super::schema::SchemaNode;
use super::strategic::strategic_merge_for;
use super::{json_eq, json_type, PatchError};
use crate::catalog::ResourceType;

/// One field another manager owns with a different value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyConflict {
    /// The other field manager.
    pub manager: String,
    /// The apiVersion recorded in that manager's entry.
    pub api_version: String,
    /// The field, rendered like `.spec.replicas`.
    pub field: String,
}

impl std::fmt::Display for ApplyConflict {
    /// `conflict with "kubectl-scale" using apps/v1: .spec.replicas`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "conflict with \"{}\"", self.manager)?;
        if !self.api_version.is_empty() {
            write!(f, " using {}", self.api_version)?;
        }
        write!(f, ": {}", self.field)
    }
}

/// Upstream's message: `Apply failed with 1 conflict: conflict with "m" using apps/v1: .spec.replicas`.
pub(crate) fn conflict_message(conflicts: &[ApplyConflict]) -> String {
    let n = conflicts.len();
    let mut out = format!(
        "Apply failed with {n} conflict{}:",
        if n == 1 { "" } else { "s" }
    );
    for c in conflicts {
        if n == 1 {
            out.push_str(&format!(" {c}"));
        } else {
            out.push_str(&format!("\n- {c}"));
        }
    }
    out
}

/// Parse an apply request body: JSON, or YAML (a single document). It must be
/// an object.
pub fn parse_apply_body(body: &[u8]) -> Result<Value, PatchError> {
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(json_err) => yaml_serde::from_slice(body).map_err(|yaml_err| {
            PatchError::InvalidBody(format!("neither JSON ({json_err}) nor YAML ({yaml_err})"))
        })?,
    };
    if !value.is_object() {
        return Err(PatchError::InvalidBody(format!(
            "an apply configuration must be an object, got {}",
            json_type(&value)
        )));
    }
    Ok(value)
}

/// Server-side apply `applied` over `live` (or create it when `live` is None)
/// for `manager`, stamping the managedFields entry with the current time.
pub fn server_side_apply(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    kind: &ResourceType,
) -> Result<Value, PatchError> {
    server_side_apply_at(live, applied, manager, force, kind, Utc::now())
}

struct Entry {
    raw: Map<String, Value>,
    manager: String,
    operation: String,
    api_version: String,
    set: FieldSet,
    changed: bool,
}

impl Entry {
    fn parse(v: &Value) -> Option<Entry> {
        let raw = v.as_object()?.clone();
        let s = |k: &str| raw.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let set = raw
            .get("fieldsV1")
            .and_then(|f| FieldSet::from_fields_v1(f).ok())
            .unwrap_or_default();
        Some(Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            set,
            raw,
            changed: false,
        })
    }
}

/// [`server_side_apply`] with an explicit timestamp.
pub fn server_side_apply_at(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    kind: &ResourceType,
    now: DateTime<Utc>,
) -> Result<Value, PatchError> {
    if manager.is_empty() {
        return Err(PatchError::InvalidBody(
            "fieldManager is required for apply requests".into(),
        ));
    }
    let Value::Object(applied_map) = applied else {
        return Err(PatchError::InvalidBody(format!(
            "an apply configuration must be an object, got {}",
            json_type(applied)
        )));
    };
    let mut config = sanitize_map(applied_map);
    if let Some(Value::Object(meta)) = config.get_mut("metadata") {
        meta.shift_remove("managedFields");
    }
    let config = Value::Object(config);
    let root = SchemaNode::for_kind(kind.group, kind.kind);
    let new_set = FieldSet::from_applied(&config, root);
    let api_version = config
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or(kind.api_version)
        .to_string();
    let our_entry = |set: &FieldSet| -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), Value::String(manager.to_string()));
        m.insert("operation".into(), Value::String("Apply".into()));
        m.insert("apiVersion".into(), Value::String(api_version.clone()));
        m.insert(
            "time".into(),
            Value::String(now.to_rfc3339_opts(SecondsFormat::Secs, true)),
        );
        m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
        m.insert("fieldsV1".into(), set.to_fields_v1());
        Value::Object(m)
    };

    let Some(live) = live else {
        let mut created = config.clone();
        set_managed_fields(&mut created, vec![our_entry(&new_set)]);
        return Ok(created);
    };
    if !live.is_object() {
        return Err(PatchError::invalid(
            "",
            format!(
                "the live object must be a JSON object, got {}",
                json_type(live)
            ),
        ));
    }

    let mut entries: Vec<Option<Entry>> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(Entry::parse).collect())
        .unwrap_or_default();
    let is_ours = |e: &Entry| e.manager == manager && e.operation == "Apply";

    // Conflicts: fields we set that another manager owns with a different value.
    let mut conflicts = Vec::new();
    for path in new_set.members() {
        let Some(applied_value) = resolve_path(&config, &path) else {
            continue;
        };
        if is_container(applied_value)
            && new_set
                .node(&path)
                .is_some_and(|n| n.children().next().is_some())
        {
            continue;
        }
        let Some(live_value) = resolve_path(live, &path) else {
            continue;
        };
        if json_eq(live_value, applied_value) {
            continue;
        }
        for e in entries.iter_mut().flatten() {
            if !is_ours(e) && e.set.contains(&path) {
                conflicts.push(ApplyConflict {
                    manager: e.manager.clone(),
                    api_version: e.api_version.clone(),
                    field: fields::render_path(&path),
                });
                if force {
                    e.set.remove(&path);
                    e.changed = true;
                }
            }
        }
    }
    if !conflicts.is_empty() && !force {
        return Err(PatchError::Conflicts(conflicts));
    }

    let mut merged = strategic_merge_for(live, &config, kind.group, kind.kind)?;

    // Remove what we applied before and no longer apply, unless others own it.
    let previous = entries
        .iter()
        .flatten()
        .find(|e| is_ours(e))
        .map(|e| e.set.clone())
        .unwrap_or_default();
    let removed = previous.difference(&new_set);
    let others: Vec<&FieldSet> = entries
        .iter()
        .flatten()
        .filter(|e| !is_ours(e))
        .map(|e| &e.set)
        .collect();
    prune(&mut merged, &removed, &others);

    // Rebuild managedFields: ours replaces our old entry (or is appended).
    let mut out: Vec<Value> = Vec::with_capacity(entries.len() + 1);
    let mut placed = false;
    let raw_entries: Vec<Value> = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    for (raw, parsed) in raw_entries.into_iter().zip(entries.iter_mut()) {
        match parsed {
            Some(e) if is_ours(e) => {
                if !placed {
                    out.push(our_entry(&new_set));
                    placed = true;
                }
            }
            Some(e) if e.changed => {
                if !e.set.is_empty() {
                    let mut m = std::mem::take(&mut e.raw);
                    m.insert("fieldsV1".into(), e.set.to_fields_v1());
                    out.push(Value::Object(m));
                }
            }
            _ => out.push(raw),
        }
    }
    if !placed {
        out.push(our_entry(&new_set));
    }
    super::managed::sort_entries(&mut out);
    set_managed_fields(&mut merged, out);
    Ok(merged)
}

fn is_container(v: &Value) -> bool {
    matches!(v, Value::Object(_) | Value::Array(_))
}

fn resolve_path<'a>(obj: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = obj;
    for seg in path {
        cur = fields::resolve(cur, seg)?;
    }
    Some(cur)
}

/// Delete the members of `removed` from `obj` where no other manager owns the
/// element or anything under it; otherwise descend and delete only our parts.
fn prune(obj: &mut Value, removed: &FieldSet, others: &[&FieldSet]) {
    for (seg, child) in removed.children() {
        let others_here: Vec<&FieldSet> = others
            .iter()
            .filter_map(|o| o.children().find(|(k, _)| *k == seg).map(|(_, c)| c))
            .collect();
        if child.is_member() && others_here.is_empty() {
            fields::remove_element(obj, seg);
        } else if let Some(sub) = fields::resolve_mut(obj, seg) {
            prune(sub, child, &others_here);
        }
    }
}

fn set_managed_fields(obj: &mut Value, entries: Vec<Value>) {
    let Value::Object(root) = obj else { return };
    let meta = root
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    if let Value::Object(m) = meta {
        m.insert("managedFields".into(), Value::Array(entries));
    }
}

/// Drop `null`s and patch directives: an apply configuration states values, it
/// does not carry strategic-merge instructions.
fn sanitize_map(m: &Map<String, Value>) -> Map<String, Value> {
    m.iter()
        .filter(|(k, v)| !v.is_null() && !k.starts_with('$'))
        .map(|(k, v)| (k.clone(), sanitize(v)))
        .collect()
}

fn sanitize(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(sanitize_map(m)),
        Value::Array(a) => Value::Array(a.iter().map(sanitize).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn deploy_kind() -> &'static ResourceType {
        crate::catalog::by_kind("apps/v1", "Deployment").unwrap()
    }

    fn t0() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    fn config(image: &str, with_side: bool) -> Value {
        let mut containers = vec![json!({"name": "app", "image": image})];
        if with_side {
            containers.push(json!({"name": "side", "image": "busybox"}));
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": containers}}}
        })
    }

    #[test]
    fn create_records_managed_fields() {
        let out = server_side_apply_at(
            None,
            &config("nginx", false),
            "kubectl",
            false,
            deploy_kind(),
            t0(),
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        let mf = &out["metadata"]["managedFields"];
        assert_eq!(mf.as_array().unwrap().len(), 1);
        assert_eq!(mf[0]["manager"], "kubectl");
        assert_eq!(mf[0]["operation"], "Apply");
        assert_eq!(mf[0]["apiVersion"], "apps/v1");
        assert_eq!(mf[0]["time"], "2025-01-02T03:04:05Z");
        assert_eq!(mf[0]["fieldsType"], "FieldsV1");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({
                "f:metadata": {"f:labels": {"f:app": {}}},
                "f:spec": {"f:replicas": {}, "f:selector": {}, "f:template": {
                    "f:metadata": {"f:labels": {"f:app": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}
            })
        );
    }

    #[test]
    fn reapply_updates_and_removes_dropped_fields() {
        let kind = deploy_kind();
        let live = server_side_apply_at(None, &config("nginx", true), "kubectl", false, kind, t0())
            .unwrap();
        let mut live2 = live.clone();
        live2["metadata"]["resourceVersion"] = json!("5");
        let out = server_side_apply_at(
            Some(&live2),
            &config("nginx:2", false),
            "kubectl",
            false,
            kind,
            t0(),
        )
        .unwrap();
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 1, "{out}");
        assert_eq!(containers[0]["image"], "nginx:2");
        assert_eq!(out["metadata"]["resourceVersion"], "5");
        assert_eq!(
            out["metadata"]["managedFields"].as_array().unwrap().len(),
            1
        );
    }

    #[test]
    fn fields_owned_by_others_survive_removal() {
        let kind = deploy_kind();
        let mut live =
            server_side_apply_at(None, &config("nginx", true), "kubectl", false, kind, t0())
                .unwrap();
        // Another manager also applied the side container.
        let other = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
            "spec": {"template": {"spec": {"containers": [{"name": "side", "image": "busybox"}]}}}});
        live = server_side_apply_at(Some(&live), &other, "helper", false, kind, t0()).unwrap();
        assert_eq!(
            live["metadata"]["managedFields"].as_array().unwrap().len(),
            2
        );
        let out = server_side_apply_at(
            Some(&live),
            &config("nginx", false),
            "kubectl",
            false,
            kind,
            t0(),
        )
        .unwrap();
        let containers = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(containers.len(), 2);
        assert_eq!(containers[1], json!({"name": "side", "image": "busybox"}));
    }

    #[test]
    fn conflicts_with_other_managers() {
        let kind = deploy_kind();
        let mut live =
            server_side_apply_at(None, &config("nginx", false), "kubectl", false, kind, t0())
                .unwrap();
        // kubectl scale recorded an Update owning replicas, and changed it.
        live["spec"]["replicas"] = json!(5);
        live["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(json!({
                "manager": "kubectl-scale", "operation": "Update", "apiVersion": "apps/v1",
                "time": "2025-01-01T00:00:00Z", "fieldsType": "FieldsV1",
                "fieldsV1": {"f:spec": {"f:replicas": {}}}
            }));
        let err = server_side_apply_at(
            Some(&live),
            &config("nginx", false),
            "kubectl",
            false,
            kind,
            t0(),
        )
        .unwrap_err();
        let PatchError::Conflicts(cs) = &err else {
            panic!("{err}")
        };
        assert_eq!(cs.len(), 1);
        assert_eq!(cs[0].manager, "kubectl-scale");
        assert_eq!(cs[0].field, ".spec.replicas");
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-scale\" using apps/v1: .spec.replicas"
        );
        // A third manager conflicts with both owners of the changed field.
        let err = server_side_apply_at(
            Some(&live),
            &config("nginx", false),
            "other",
            false,
            kind,
            t0(),
        )
        .unwrap_err();
        let PatchError::Conflicts(cs) = &err else {
            panic!("{err}")
        };
        let mut who: Vec<&str> = cs.iter().map(|c| c.manager.as_str()).collect();
        who.sort();
        assert_eq!(who, ["kubectl", "kubectl-scale"]);
        assert!(
            err.to_string()
                .starts_with("Apply failed with 2 conflicts:\n- conflict with"),
            "{err}"
        );
        // Same values are shared ownership, not conflicts.
        let mut same = config("nginx", false);
        same["spec"]["replicas"] = json!(5);
        assert!(server_side_apply_at(Some(&live), &same, "other", false, kind, t0()).is_ok());
        // Force takes the field over; the scaler's entry, now empty, is dropped.
        let out = server_side_apply_at(
            Some(&live),
            &config("nginx", false),
            "kubectl",
            true,
            kind,
            t0(),
        )
        .unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        let managers: Vec<&str> = out["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["manager"].as_str().unwrap())
            .collect();
        assert_eq!(managers, ["kubectl"]);
    }

    #[test]
    fn parse_body_json_or_yaml() {
        let j = parse_apply_body(br#"{"apiVersion":"v1","kind":"ConfigMap"}"#).unwrap();
        assert_eq!(j["kind"], "ConfigMap");
        let y = parse_apply_body(b"apiVersion: v1\nkind: ConfigMap\ndata:\n  a: \"1\"\n").unwrap();
        assert_eq!(y["data"]["a"], "1");
        assert!(parse_apply_body(b"- a\n- b\n").is_err());
        assert!(parse_apply_body(b"{{{").is_err());
    }

    #[test]
    fn bad_inputs_are_errors() {
        let kind = deploy_kind();
        assert!(server_side_apply_at(None, &json!([1]), "m", false, kind, t0()).is_err());
        assert!(server_side_apply_at(None, &json!({}), "", false, kind, t0()).is_err());
        assert!(server_side_apply_at(Some(&json!(3)), &json!({}), "m", false, kind, t0()).is_err());
        // Garbage managedFields in the live object are tolerated.
        let live = json!({"metadata": {"name": "x", "managedFields": [1, {"manager": "z", "fieldsV1": 3}]}});
        let out = server_side_apply_at(
            Some(&live),
            &json!({"spec": {"replicas": 1}}),
            "m",
            false,
            kind,
            t0(),
        )
        .unwrap();
        assert_eq!(
            out["metadata"]["managedFields"].as_array().unwrap().len(),
            3
        );
    }

    #[test]
    fn nulls_and_directives_in_config_are_ignored() {
        let kind = crate::catalog::by_kind("v1", "ConfigMap").unwrap();
        let live = json!({"metadata": {"name": "c"}, "data": {"a": "1"}});
        let out = server_side_apply_at(
            Some(&live),
            &json!({"metadata": {"name": "c"}, "data": {"a": null, "b": "2", "$patch": "replace"}}),
            "m",
            false,
            kind,
            t0(),
        )
        .unwrap();
        assert_eq!(out["data"], json!({"a": "1", "b": "2"}));
    }

    #[test]
    fn arbitrary_inputs_never_panic() {
        let mut rng = crate::patch::testgen::Rng(0x0123_4567_89AB_CDEF);
        let kinds = [
            crate::catalog::by_kind("apps/v1", "Deployment").unwrap(),
            crate::catalog::by_kind("v1", "Pod").unwrap(),
            crate::catalog::by_kind("v1", "ConfigMap").unwrap(),
        ];
        let mut applied_ok = 0;
        for i in 0..5_000 {
            let mut live = json!({"metadata": {"managedFields": [
                {"manager": "m", "operation": "Apply", "fieldsV1": rng.value(3)},
                {"manager": "other", "operation": "Update", "fieldsV1": rng.value(3)}
            ]}});
            live["spec"] = rng.value(3);
            let mut applied = rng.value(3);
            if !applied.is_object() {
                applied = json!({ "spec": applied });
            }
            let kind = kinds[i % kinds.len()];
            let force = i % 2 == 0;
            let live_opt = if i % 5 == 0 { None } else { Some(&live) };
            if let Ok(out) = server_side_apply_at(live_opt, &applied, "m", force, kind, t0()) {
                applied_ok += 1;
                let entries = out["metadata"]["managedFields"].as_array().unwrap();
                assert!(entries
                    .iter()
                    .any(|e| e["manager"] == "m" && e["operation"] == "Apply"));
            }
        }
        assert!(applied_ok > 1_000, "only {applied_ok} applies succeeded");
    }
}
