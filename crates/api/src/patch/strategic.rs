//! Strategic merge patch (`application/strategic-merge-patch+json`).
//!
//! Semantics follow upstream's `strategicpatch` package as the API server runs
//! it (`MergeParallelList` and `IgnoreUnmatchedNulls` on):
//!
//! - maps merge recursively; `null` deletes a key (and is dropped where there is
//!   nothing to delete);
//! - lists with strategy merge and a merge key merge element by element; new
//!   elements are placed like upstream does (`$setElementOrder/<f>` wins, then the
//!   order in the patch, then the live order: without `$setElementOrder`, items
//!   that are new go before the server-only items that follow them);
//! - lists of scalars with strategy merge are unions, and
//!   `$deleteFromPrimitiveList/<f>` removes values;
//! - other lists are replaced whole;
//! - `$patch: delete|replace|merge` on maps and list elements, `$retainKeys`.
//!
//! Unlike upstream, directives never leak into the result (upstream copies a
//! patch value verbatim when the live object lacks the field), and unknown
//! fields are merged generically instead of failing.

use serde_json::{Map, Value};

use super::schema::{FieldMeta, ListStrategy, SchemaNode};
use super::{json_eq, json_type, PatchError};
use crate::catalog::ResourceType;

const PATCH: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder";
const DELETE_PRIMITIVE: &str = "$deleteFromPrimitiveList";

/// Apply a strategic merge patch to an object of a served kind.
pub fn strategic_merge(
    original: &Value,
    patch: &Value,
    kind: &ResourceType,
) -> Result<Value, PatchError> {
    strategic_merge_for(original, patch, kind.group, kind.kind)
}

/// Apply a strategic merge patch to an object of `kind` in `group` ("" for the
/// core group). Unknown kinds merge maps and replace every list except the
/// `metadata` ones.
pub fn strategic_merge_for(
    original: &Value,
    patch: &Value,
    group: &str,
    kind: &str,
) -> Result<Value, PatchError> {
    let Value::Object(patch) = patch else {
        return Err(PatchError::invalid(
            "",
            format!(
                "a strategic merge patch must be a JSON object, got {}",
                json_type(patch)
            ),
        ));
    };
    let base = match original {
        Value::Object(m) => m.clone(),
        Value::Null => Map::new(),
        other => {
            return Err(PatchError::invalid(
                "",
                format!(
                    "the object to patch must be a JSON object, got {}",
                    json_type(other)
                ),
            ))
        }
    };
    let mut path = Path::default();
    match merge_map(base, patch, SchemaNode::for_kind(group, kind), &mut path)? {
        Merged::Map(m) => Ok(Value::Object(m)),
        Merged::Delete => Ok(Value::Object(Map::new())),
    }
}

/// A field path for error messages.
#[derive(Default)]
struct Path(Vec<String>);

impl Path {
    fn render(&self) -> String {
        let mut out = String::new();
        for seg in &self.0 {
            if !out.is_empty() && !seg.starts_with('[') {
                out.push('.');
            }
            out.push_str(seg);
        }
        out
    }

    fn err(&self, reason: impl Into<String>) -> PatchError {
        PatchError::invalid(&self.render(), reason)
    }

    fn with<T>(&mut self, seg: String, f: impl FnOnce(&mut Path) -> T) -> T {
        self.0.push(seg);
        let out = f(self);
        self.0.pop();
        out
    }
}

enum Merged {
    Map(Map<String, Value>),
    Delete,
}

fn is_directive(key: &str) -> bool {
    key == PATCH
        || key == RETAIN_KEYS
        || key.starts_with(SET_ORDER)
        || key.starts_with(DELETE_PRIMITIVE)
}

/// Directives of one patch map that apply to its list fields.
#[derive(Default)]
struct ListDirectives<'a> {
    orders: Vec<(&'a str, &'a [Value])>,
    deletions: Vec<(&'a str, &'a [Value])>,
}

fn take_entry<'a>(list: &mut Vec<(&'a str, &'a [Value])>, field: &str) -> Option<&'a [Value]> {
    let i = list.iter().position(|(f, _)| *f == field)?;
    Some(list.remove(i).1)
}

fn merge_map(
    mut orig: Map<String, Value>,
    patch: &Map<String, Value>,
    node: SchemaNode,
    path: &mut Path,
) -> Result<Merged, PatchError> {
    match patch.get(PATCH) {
        None => {}
        Some(Value::String(d)) => match d.as_str() {
            "delete" => return Ok(Merged::Delete),
            "replace" => orig = Map::new(),
            "merge" => {}
            other => return Err(path.err(format!("unknown $patch directive \"{other}\""))),
        },
        Some(other) => {
            return Err(path.err(format!("$patch must be a string, got {}", json_type(other))))
        }
    }

    let mut directives = ListDirectives::default();
    let mut retain: Option<Vec<&str>> = None;
    for (k, v) in patch {
        if k == RETAIN_KEYS {
            let keys = v
                .as_array()
                .and_then(|a| a.iter().map(Value::as_str).collect::<Option<Vec<_>>>())
                .ok_or_else(|| path.err("$retainKeys must be a list of strings"))?;
            retain = Some(keys);
        } else if let Some(rest) = k.strip_prefix(SET_ORDER) {
            let field = list_directive_field(rest, k, path)?;
            let list = v
                .as_array()
                .ok_or_else(|| path.err(format!("{k} must be a list, got {}", json_type(v))))?;
            directives.orders.push((field, list));
        } else if let Some(rest) = k.strip_prefix(DELETE_PRIMITIVE) {
            let field = list_directive_field(rest, k, path)?;
            let list = v
                .as_array()
                .ok_or_else(|| path.err(format!("{k} must be a list, got {}", json_type(v))))?;
            directives.deletions.push((field, list));
        }
    }

    if let Some(keys) = &retain {
        for (k, v) in patch {
            if !is_directive(k) && !v.is_null() && !keys.contains(&k.as_str()) {
                return Err(path.err(format!(
                    "field \"{k}\" is set but not listed in $retainKeys"
                )));
            }
        }
        orig.retain(|k, _| keys.contains(&k.as_str()));
    }

    for (k, pv) in patch {
        if is_directive(k) {
            continue;
        }
        if pv.is_null() {
            orig.shift_remove(k);
            continue;
        }
        let meta = node.field(k);
        let existing = orig.get_mut(k).map(std::mem::take);
        let new = path.with(k.clone(), |path| -> Result<Option<Value>, PatchError> {
            Ok(match pv {
                Value::Object(pm) => {
                    let base = match existing {
                        Some(Value::Object(m)) => m,
                        _ => Map::new(),
                    };
                    match merge_map(base, pm, meta.node, path)? {
                        Merged::Map(m) => Some(Value::Object(m)),
                        Merged::Delete => None,
                    }
                }
                Value::Array(pl) => {
                    let order = take_entry(&mut directives.orders, k);
                    let dels = take_entry(&mut directives.deletions, k);
                    let base = match existing {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    Some(Value::Array(merge_list(
                        base,
                        Some(pl),
                        meta,
                        order,
                        dels,
                        path,
                    )?))
                }
                scalar => Some(scalar.clone()),
            })
        })?;
        match new {
            Some(v) => {
                if let Some(slot) = orig.get_mut(k) {
                    *slot = v;
                } else {
                    orig.insert(k.clone(), v);
                }
            }
            None => {
                orig.shift_remove(k);
            }
        }
    }

    // Order and deletion directives for lists the patch does not otherwise touch.
    let mut leftovers: Vec<&str> = directives.orders.iter().map(|(f, _)| *f).collect();
    for (f, _) in &directives.deletions {
        if !leftovers.contains(f) {
            leftovers.push(f);
        }
    }
    for field in leftovers {
        let order = take_entry(&mut directives.orders, field);
        let dels = take_entry(&mut directives.deletions, field);
        if !matches!(orig.get(field), Some(Value::Array(_))) {
            // Nothing to order or delete from.
            continue;
        }
        let Some(Value::Array(existing)) = orig.get_mut(field).map(std::mem::take) else {
            continue;
        };
        let meta = node.field(field);
        let merged = path.with(field.to_string(), |path| {
            merge_list(existing, None, meta, order, dels, path)
        })?;
        if let Some(slot) = orig.get_mut(field) {
            *slot = Value::Array(merged);
        }
    }
    Ok(Merged::Map(orig))
}

fn list_directive_field<'a>(rest: &'a str, key: &str, path: &Path) -> Result<&'a str, PatchError> {
    match rest.strip_prefix('/') {
        Some(f) if !f.is_empty() => Ok(f),
        _ => Err(path.err(format!(
            "invalid directive \"{key}\": expected \"$setElementOrder/<field>\" or \"$deleteFromPrimitiveList/<field>\""
        ))),
    }
}

fn merge_list(
    orig: Vec<Value>,
    patch: Option<&[Value]>,
    meta: FieldMeta,
    order: Option<&[Value]>,
    dels: Option<&[Value]>,
    path: &mut Path,
) -> Result<Vec<Value>, PatchError> {
    match meta.list {
        ListStrategy::Replace => {
            let mut out = match patch {
                Some(p) => clean_list(p, meta.node, path)?,
                None => orig,
            };
            if let Some(d) = dels {
                out.retain(|v| !d.iter().any(|x| json_eq(x, v)));
            }
            Ok(out)
        }
        ListStrategy::MergeSet => merge_set(orig, patch, dels, order, path),
        ListStrategy::MergeByKey(key) => {
            if dels.is_some() {
                return Err(path.err(format!(
                    "{DELETE_PRIMITIVE} applies to lists of scalars, but this list merges on \"{key}\""
                )));
            }
            merge_keyed(orig, patch.unwrap_or(&[]), key, meta.node, order, path)
        }
    }
}

/// The patch list of a replaced field, with directives resolved in its elements.
fn clean_list(
    patch: &[Value],
    node: SchemaNode,
    path: &mut Path,
) -> Result<Vec<Value>, PatchError> {
    let mut out = Vec::with_capacity(patch.len());
    for (i, el) in patch.iter().enumerate() {
        match el {
            // A directive element has no meaning in a list that is not merged.
            Value::Object(m) if m.contains_key(PATCH) => {}
            Value::Object(m) => {
                if let Merged::Map(m) = path.with(format!("[{i}]"), |path| {
                    merge_map(Map::new(), m, node, path)
                })? {
                    out.push(Value::Object(m));
                }
            }
            Value::Array(inner) => {
                let inner = path.with(format!("[{i}]"), |path| {
                    clean_list(inner, SchemaNode::unknown(), path)
                })?;
                out.push(Value::Array(inner));
            }
            other => out.push(other.clone()),
        }
    }
    Ok(out)
}

fn is_scalar(v: &Value) -> bool {
    matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_))
}

fn merge_set(
    orig: Vec<Value>,
    patch: Option<&[Value]>,
    dels: Option<&[Value]>,
    order: Option<&[Value]>,
    path: &mut Path,
) -> Result<Vec<Value>, PatchError> {
    let patch: Vec<&Value> = patch
        .unwrap_or(&[])
        .iter()
        .filter(|v| !v.is_null())
        .collect();
    for v in patch
        .iter()
        .copied()
        .chain(dels.unwrap_or(&[]))
        .chain(order.unwrap_or(&[]))
    {
        if !is_scalar(v) && !v.is_null() {
            return Err(path.err(format!(
                "this list merges as a set of scalars, but an element is a {}",
                json_type(v)
            )));
        }
    }
    let server_order = orig.clone();
    let mut merged: Vec<Value> = Vec::with_capacity(orig.len() + patch.len());
    for v in orig.into_iter().chain(patch.iter().map(|v| (*v).clone())) {
        if !merged.iter().any(|m| json_eq(m, &v)) {
            merged.push(v);
        }
    }
    if let Some(d) = dels {
        merged.retain(|v| !d.iter().any(|x| json_eq(x, v)));
    }
    let order_list: Vec<&Value> = match order {
        Some(o) => {
            validate_order(patch.iter().copied(), o.iter(), path)?;
            o.iter().collect()
        }
        None if !patch.is_empty() => patch,
        None => return Ok(merged),
    };
    Ok(normalize_order(
        merged,
        &order_list,
        &server_order.iter().collect::<Vec<_>>(),
        |v| Some(v),
    ))
}

fn merge_keyed(
    orig: Vec<Value>,
    patch: &[Value],
    key: &str,
    node: SchemaNode,
    order: Option<&[Value]>,
    path: &mut Path,
) -> Result<Vec<Value>, PatchError> {
    let mut list = orig;
    let mut replace = false;
    let mut regular: Vec<&Map<String, Value>> = Vec::new();
    for (i, el) in patch.iter().enumerate() {
        let Value::Object(m) = el else {
            return Err(path.err(format!(
                "element {i} of a list merged on \"{key}\" must be an object, got {}",
                json_type(el)
            )));
        };
        match m.get(PATCH) {
            None => {
                if !m.contains_key(key) {
                    return Err(missing_key(path, key, el));
                }
                regular.push(m);
            }
            Some(Value::String(d)) if d == "delete" => {
                let kv = m.get(key).ok_or_else(|| missing_key(path, key, el))?;
                list.retain(|e| !has_key_value(e, key, kv));
            }
            Some(Value::String(d)) if d == "replace" => replace = true,
            Some(Value::String(d)) if d == "merge" => {
                return Err(path.err("merging lists cannot yet be specified in the patch"))
            }
            Some(other) => {
                return Err(path.err(format!(
                    "unknown $patch directive {other} in a list element"
                )))
            }
        }
    }
    if replace {
        let mut out = Vec::with_capacity(regular.len());
        for (i, m) in regular.into_iter().enumerate() {
            if let Merged::Map(m) = path.with(format!("[{i}]"), |path| {
                merge_map(Map::new(), m, node, path)
            })? {
                out.push(Value::Object(m));
            }
        }
        return Ok(out);
    }
    if let Some(o) = order {
        for el in o {
            if el.get(key).is_none() {
                return Err(missing_key(path, key, el));
            }
        }
        validate_order(
            regular.iter().map(|m| m.get(key).unwrap_or(&Value::Null)),
            o.iter().filter_map(|v| v.get(key)),
            path,
        )?;
    }
    let server_order: Vec<Value> = list
        .iter()
        .map(|e| e.get(key).cloned().unwrap_or(Value::Null))
        .collect();
    for m in &regular {
        let kv = m.get(key).unwrap_or(&Value::Null);
        let seg = format!("[{key}={kv}]");
        match list.iter().position(|e| has_key_value(e, key, kv)) {
            Some(idx) => {
                let base = match std::mem::take(&mut list[idx]) {
                    Value::Object(b) => b,
                    _ => Map::new(),
                };
                if let Merged::Map(mm) = path.with(seg, |path| merge_map(base, m, node, path))? {
                    list[idx] = Value::Object(mm);
                }
            }
            None => {
                if let Merged::Map(mm) =
                    path.with(seg, |path| merge_map(Map::new(), m, node, path))?
                {
                    list.push(Value::Object(mm));
                }
            }
        }
    }
    let order_keys: Vec<&Value> = match order {
        Some(o) => o.iter().filter_map(|e| e.get(key)).collect(),
        None if !regular.is_empty() => regular
            .iter()
            .map(|m| m.get(key).unwrap_or(&Value::Null))
            .collect(),
        None => return Ok(list),
    };
    Ok(normalize_order(
        list,
        &order_keys,
        &server_order.iter().collect::<Vec<_>>(),
        |v| v.get(key),
    ))
}

fn has_key_value(el: &Value, key: &str, kv: &Value) -> bool {
    el.get(key).is_some_and(|v| json_eq(v, kv))
}

fn missing_key(path: &Path, key: &str, el: &Value) -> PatchError {
    PatchError::MissingMergeKey {
        path: path.render(),
        key: key.to_string(),
        element: el.to_string(),
    }
}

/// Upstream's check that the (non-directive) patch elements appear in the
/// `$setElementOrder` list, in the same relative order.
fn validate_order<'a>(
    patch_keys: impl Iterator<Item = &'a Value>,
    order_keys: impl Iterator<Item = &'a Value>,
    path: &Path,
) -> Result<(), PatchError> {
    let order: Vec<&Value> = order_keys.collect();
    let mut j = 0;
    for pk in patch_keys {
        while j < order.len() && !json_eq(order[j], pk) {
            j += 1;
        }
        if j == order.len() {
            return Err(path.err(format!(
                "the order in the patch list does not match the {SET_ORDER} list (element {pk} is missing or out of order)"
            )));
        }
        j += 1;
    }
    Ok(())
}

/// Split `merged` into the items named in `order` (sorted by it) and the
/// server-only rest (kept in their order), then interleave them by their
/// positions in the live list, as upstream's `normalizeElementOrder`.
fn normalize_order(
    merged: Vec<Value>,
    order: &[&Value],
    server_order: &[&Value],
    key: impl Fn(&Value) -> Option<&Value>,
) -> Vec<Value> {
    let position = |list: &[&Value], v: &Value| -> Option<usize> {
        let k = key(v)?;
        list.iter().position(|o| json_eq(o, k))
    };
    let (mut patch_items, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| position(order, v).is_some());
    patch_items.sort_by_key(|v| position(order, v).unwrap_or(usize::MAX));
    let mut out = Vec::with_capacity(patch_items.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patch_items.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => matches!(
                (position(server_order, l), position(server_order, r)),
                (Some(a), Some(b)) if a < b
            ),
        };
        let next = if take_left { left.next() } else { right.next() };
        if let Some(v) = next {
            out.push(v);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn smp(kind: &str, orig: Value, patch: Value) -> Value {
        let (group, kind) = kind.split_once('/').unwrap_or(("", kind));
        strategic_merge_for(&orig, &patch, group, kind).unwrap()
    }

    fn deploy(orig: Value, patch: Value) -> Value {
        smp("apps/Deployment", orig, patch)
    }

    fn has_directive(v: &Value) -> bool {
        match v {
            Value::Object(m) => m
                .iter()
                .any(|(k, v)| k.starts_with('$') || has_directive(v)),
            Value::Array(a) => a.iter().any(has_directive),
            _ => false,
        }
    }

    fn live_deployment() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {
                        "containers": [
                            {"name": "app", "image": "nginx:1.25",
                             "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                             "ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 443, "protocol": "TCP"}]},
                            {"name": "side", "image": "busybox"}
                        ]
                    }
                }
            }
        })
    }

    #[test]
    fn kubectl_apply_patch_from_the_notes() {
        let patch: Value = serde_json::from_str(r#"{"spec":{"strategy":{"$retainKeys":["type"],"rollingUpdate":null,"type":"Recreate"},"template":{"spec":{"$setElementOrder/containers":[{"name":"app"}],"containers":[{"$setElementOrder/env":[{"name":"B"}],"$setElementOrder/ports":[{"containerPort":80}],"env":[{"$patch":"delete","name":"A"}],"name":"app","ports":[{"$patch":"delete","containerPort":443}]},{"$patch":"delete","name":"side"}]}}}}"#).unwrap();
        let out = deploy(live_deployment(), patch);
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "image": "nginx:1.25",
                    "env": [{"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80, "protocol": "TCP"}]}])
        );
        assert_eq!(out["spec"]["replicas"], json!(2));
        assert!(!has_directive(&out));
    }

    #[test]
    fn kubectl_set_image_patch() {
        let patch: Value = serde_json::from_str(r#"{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"app"}],"containers":[{"image":"nginx:1.26","name":"app"}]}}}}"#).unwrap();
        let mut live = live_deployment();
        // set image on a single-container deployment
        live["spec"]["template"]["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .pop();
        let out = deploy(live.clone(), patch);
        let c = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(c.as_array().unwrap().len(), 1);
        assert_eq!(c[0]["image"], json!("nginx:1.26"));
        assert_eq!(
            c[0]["env"],
            live["spec"]["template"]["spec"]["containers"][0]["env"]
        );
        assert!(!has_directive(&out));
    }

    #[test]
    fn set_image_keeps_other_containers_in_place() {
        let patch = json!({"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"app"},{"name":"side"}],"containers":[{"image":"busybox:2","name":"side"}]}}}});
        let out = deploy(live_deployment(), patch);
        let c = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap();
        assert_eq!(c[0]["name"], "app");
        assert_eq!(c[1]["image"], "busybox:2");
    }

    #[test]
    fn rollout_restart_adds_annotation() {
        let patch = json!({"spec":{"template":{"metadata":{"annotations":{"kubectl.kubernetes.io/restartedAt":"2025-01-01T00:00:00Z"}}}}});
        let out = deploy(live_deployment(), patch);
        assert_eq!(
            out["spec"]["template"]["metadata"],
            json!({"labels": {"app": "web"}, "annotations": {"kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"}})
        );
    }

    #[test]
    fn new_elements_and_order_without_set_element_order() {
        // Upstream puts new patch items before the server-only items that follow.
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = smp(
            "Pod",
            orig.clone(),
            json!({"spec": {"containers": [{"name": "c", "image": "x"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c", "image": "x"}, {"name": "a"}, {"name": "b"}])
        );
        // With $setElementOrder the new item goes where the order says.
        let out = smp(
            "Pod",
            orig.clone(),
            json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}, {"name": "c"}], "containers": [{"name": "c"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a"}, {"name": "b"}, {"name": "c"}])
        );
        // Reorder only.
        let out = smp(
            "Pod",
            orig,
            json!({"spec": {"$setElementOrder/containers": [{"name": "b"}, {"name": "a"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "b"}, {"name": "a"}])
        );
    }

    #[test]
    fn existing_items_merge_in_place() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let out = smp(
            "Pod",
            orig,
            json!({"spec": {"containers": [{"name": "b", "image": "3"}]}}),
        );
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "a", "image": "1"}, {"name": "b", "image": "3"}])
        );
    }

    #[test]
    fn env_ports_mounts_merge_by_their_keys() {
        let orig = json!({"spec": {"containers": [{"name": "a",
            "env": [{"name": "X", "value": "1"}],
            "ports": [{"containerPort": 80, "name": "http"}],
            "volumeMounts": [{"name": "v", "mountPath": "/data"}],
            "args": ["a", "b"]}]}});
        let out = smp(
            "Pod",
            orig,
            json!({"spec": {"containers": [{"name": "a",
                "env": [{"name": "X", "value": "2"}],
                "ports": [{"containerPort": 80.0, "protocol": "TCP"}],
                "volumeMounts": [{"name": "w", "mountPath": "/data"}],
                "args": ["c"]}]}}),
        );
        let c = &out["spec"]["containers"][0];
        assert_eq!(c["env"], json!([{"name": "X", "value": "2"}]));
        assert_eq!(
            c["ports"],
            json!([{"containerPort": 80.0, "name": "http", "protocol": "TCP"}])
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "w", "mountPath": "/data"}])
        );
        assert_eq!(c["args"], json!(["c"]));
    }

    #[test]
    fn service_ports_merge_by_port() {
        let orig = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}], "selector": {"app": "a"}}});
        let out = smp(
            "Service",
            orig,
            json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 443}]}}),
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 443}])
        );
    }

    #[test]
    fn non_merge_lists_are_replaced() {
        let orig = json!({"spec": {"tolerations": [{"key": "a"}], "containers": [{"name": "c", "command": ["x"], "envFrom": [{"prefix": "A"}]}]}});
        let out = smp(
            "Pod",
            orig,
            json!({"spec": {"tolerations": [{"key": "b"}], "containers": [{"name": "c", "command": ["y"], "envFrom": [{"prefix": "B"}]}]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "b"}]));
        assert_eq!(out["spec"]["containers"][0]["command"], json!(["y"]));
        assert_eq!(
            out["spec"]["containers"][0]["envFrom"],
            json!([{"prefix": "B"}])
        );
        let ep = smp(
            "Endpoints",
            json!({"subsets": [{"addresses": [{"ip": "1.1.1.1"}]}]}),
            json!({"subsets": [{"addresses": [{"ip": "2.2.2.2"}]}]}),
        );
        assert_eq!(ep["subsets"], json!([{"addresses": [{"ip": "2.2.2.2"}]}]));
    }

    #[test]
    fn finalizers_are_a_set() {
        let orig = json!({"metadata": {"finalizers": ["a", "b"]}});
        let out = smp(
            "ConfigMap",
            orig.clone(),
            json!({"metadata": {"finalizers": ["b", "c"]}}),
        );
        let mut got: Vec<String> =
            serde_json::from_value(out["metadata"]["finalizers"].clone()).unwrap();
        got.sort();
        assert_eq!(got, ["a", "b", "c"]);
        let out = smp(
            "ConfigMap",
            orig.clone(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["b"]));
        let out = smp(
            "ConfigMap",
            orig,
            json!({"metadata": {"$setElementOrder/finalizers": ["c", "b"], "finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]}}),
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
    }

    #[test]
    fn null_deletes_and_unmatched_nulls_vanish() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}}});
        let out = smp(
            "ConfigMap",
            orig,
            json!({"metadata": {"labels": {"a": null, "zz": null}, "annotations": {"x": null, "y": "1"}}, "data": {"k": null}}),
        );
        assert_eq!(
            out,
            json!({"metadata": {"labels": {"b": "2"}, "annotations": {"y": "1"}}, "data": {}})
        );
    }

    #[test]
    fn patch_directives_on_maps() {
        let orig = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}, "replicas": 1}});
        let out = deploy(
            orig.clone(),
            json!({"spec": {"strategy": {"$patch": "replace", "type": "Recreate"}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let out = deploy(
            orig.clone(),
            json!({"spec": {"strategy": {"$patch": "delete"}}}),
        );
        assert_eq!(out["spec"], json!({"replicas": 1}));
        let out = deploy(
            orig.clone(),
            json!({"spec": {"strategy": {"$patch": "merge", "type": "X"}}}),
        );
        assert_eq!(
            out["spec"]["strategy"]["rollingUpdate"],
            json!({"maxSurge": 1})
        );
        assert_eq!(deploy(orig.clone(), json!({"$patch": "delete"})), json!({}));
        assert!(strategic_merge_for(
            &orig,
            &json!({"spec": {"$patch": "frob"}}),
            "apps",
            "Deployment"
        )
        .is_err());
        assert!(
            strategic_merge_for(&orig, &json!({"spec": {"$patch": 1}}), "apps", "Deployment")
                .is_err()
        );
    }

    #[test]
    fn patch_replace_on_a_list() {
        let orig = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let out = smp(
            "Pod",
            orig,
            json!({"spec": {"containers": [{"$patch": "replace"}, {"name": "z", "env": [{"$patch": "delete", "name": "Q"}]}]}}),
        );
        assert_eq!(out["spec"]["containers"], json!([{"name": "z", "env": []}]));
    }

    #[test]
    fn retain_keys_validation() {
        let orig = json!({"spec": {"strategy": {"type": "A", "rollingUpdate": {}}}});
        let e = strategic_merge_for(
            &orig,
            &json!({"spec": {"strategy": {"$retainKeys": ["type"], "other": 1}}}),
            "apps",
            "Deployment",
        )
        .unwrap_err();
        assert!(e.to_string().contains("$retainKeys"), "{e}");
        assert!(strategic_merge_for(
            &orig,
            &json!({"spec": {"strategy": {"$retainKeys": "type"}}}),
            "apps",
            "Deployment"
        )
        .is_err());
        let out = deploy(
            orig,
            json!({"spec": {"strategy": {"$retainKeys": ["type"]}}}),
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "A"}));
    }

    #[test]
    fn directives_on_missing_fields_do_not_leak() {
        let out = deploy(
            json!({"metadata": {"name": "x"}}),
            json!({"spec": {"template": {"spec": {
                "$setElementOrder/containers": [{"name": "app"}],
                "containers": [{"name": "app", "$setElementOrder/env": [{"name": "B"}], "env": [{"$patch": "delete", "name": "A"}, {"name": "B", "value": "1"}]}],
                "$setElementOrder/volumes": [{"name": "v"}],
                "$deleteFromPrimitiveList/finalizers": ["x"]
            }}, "strategy": {"$retainKeys": ["type"], "type": "Recreate", "rollingUpdate": null}}, "metadata": {"finalizers": ["f"], "$deleteFromPrimitiveList/finalizers": ["f"]}}),
        );
        assert!(!has_directive(&out), "{out}");
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "app", "env": [{"name": "B", "value": "1"}]}])
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        assert_eq!(out["metadata"]["finalizers"], json!([]));
    }

    #[test]
    fn type_changes_take_the_patch() {
        let out = smp(
            "Pod",
            json!({"spec": 3, "x": {"a": 1}, "l": "s"}),
            json!({"spec": {"containers": [{"name": "a"}]}, "x": [1], "l": [{"a": 1}]}),
        );
        assert_eq!(
            out,
            json!({"spec": {"containers": [{"name": "a"}]}, "x": [1], "l": [{"a": 1}]})
        );
    }

    #[test]
    fn errors_are_typed() {
        let orig = json!({"spec": {"containers": [{"name": "a"}]}});
        let e = strategic_merge_for(
            &orig,
            &json!({"spec": {"containers": [{"image": "x"}]}}),
            "",
            "Pod",
        )
        .unwrap_err();
        assert!(
            matches!(e, PatchError::MissingMergeKey { ref key, .. } if key == "name"),
            "{e}"
        );
        assert!(e.to_string().contains("spec.containers"), "{e}");
        let e = strategic_merge_for(
            &orig,
            &json!({"spec": {"containers": [{"$patch": "delete"}]}}),
            "",
            "Pod",
        )
        .unwrap_err();
        assert!(matches!(e, PatchError::MissingMergeKey { .. }));
        assert!(
            strategic_merge_for(&orig, &json!({"spec": {"containers": [null]}}), "", "Pod")
                .is_err()
        );
        assert!(
            strategic_merge_for(&orig, &json!({"spec": {"containers": ["a"]}}), "", "Pod").is_err()
        );
        assert!(strategic_merge_for(
            &orig,
            &json!({"spec": {"containers": [{"$patch": "merge", "name": "a"}]}}),
            "",
            "Pod"
        )
        .is_err());
        assert!(strategic_merge_for(
            &orig,
            &json!({"metadata": {"finalizers": [{"a": 1}]}}),
            "",
            "Pod"
        )
        .is_err());
        assert!(
            strategic_merge_for(&orig, &json!({"spec": {"$setElementOrder": []}}), "", "Pod")
                .is_err()
        );
        assert!(strategic_merge_for(
            &orig,
            &json!({"spec": {"$setElementOrder/containers": {}}}),
            "",
            "Pod"
        )
        .is_err());
        assert!(strategic_merge_for(
            &orig,
            &json!({"spec": {"$setElementOrder/containers": [{"x": 1}]}}),
            "",
            "Pod"
        )
        .is_err());
        // Patch items out of $setElementOrder order.
        assert!(strategic_merge_for(
            &json!({}),
            &json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}], "containers": [{"name": "b"}, {"name": "a"}]}}),
            "", "Pod").is_err());
        assert!(strategic_merge_for(&json!([1]), &json!({}), "", "Pod").is_err());
        assert!(strategic_merge_for(&json!({}), &json!([1]), "", "Pod").is_err());
        assert!(strategic_merge_for(
            &orig,
            &json!({"spec": {"$deleteFromPrimitiveList/containers": ["a"]}}),
            "",
            "Pod"
        )
        .is_err());
    }

    #[test]
    fn nulls_inside_lists() {
        // A null in a replaced list is kept as data; in a set it is ignored.
        let out = smp(
            "Pod",
            json!({}),
            json!({"spec": {"tolerations": [null]}, "metadata": {"finalizers": ["a", null]}}),
        );
        assert_eq!(out["spec"]["tolerations"], json!([null]));
        assert_eq!(out["metadata"]["finalizers"], json!(["a"]));
    }

    #[test]
    fn status_conditions_merge_by_type() {
        let orig = json!({"status": {"conditions": [{"type": "Ready", "status": "False"}, {"type": "PodScheduled", "status": "True"}]}});
        let out = smp(
            "Pod",
            orig,
            json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
        );
        assert_eq!(
            out["status"]["conditions"],
            json!([{"type": "Ready", "status": "True"}, {"type": "PodScheduled", "status": "True"}])
        );
        let node = smp(
            "Node",
            json!({"status": {"addresses": [{"type": "InternalIP", "address": "1"}]}}),
            json!({"status": {"addresses": [{"type": "Hostname", "address": "n"}]}}),
        );
        assert_eq!(node["status"]["addresses"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn cronjob_template_containers_merge() {
        let orig = json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b"}]}}}}}});
        let out = smp(
            "batch/CronJob",
            orig,
            json!({"spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "2"}]}}}}}}),
        );
        assert_eq!(
            out["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"],
            json!([{"name": "a", "image": "2"}, {"name": "b"}])
        );
    }

    #[test]
    fn catalog_entry_point() {
        let kind = crate::catalog::by_kind("apps/v1", "Deployment").unwrap();
        let out =
            strategic_merge(&live_deployment(), &json!({"spec": {"replicas": 5}}), kind).unwrap();
        assert_eq!(out["spec"]["replicas"], 5);
    }

    #[test]
    fn arbitrary_patches_never_panic_or_leak() {
        let mut rng = crate::patch::testgen::Rng(0x9E37_79B9_7F4A_7C15);
        let kinds = [
            ("apps", "Deployment"),
            ("", "Pod"),
            ("", "Service"),
            ("", "ConfigMap"),
        ];
        let mut merged = 0;
        for i in 0..20_000 {
            let mut orig = rng.value(4);
            let mut patch = rng.value(4);
            // Most cases should reach the merge logic: wrap non-objects.
            if i % 8 != 0 {
                if !orig.is_object() {
                    orig = json!({"spec": orig});
                }
                if !patch.is_object() {
                    patch = json!({"spec": patch});
                }
            }
            let (g, k) = kinds[i % kinds.len()];
            if let Ok(out) = strategic_merge_for(&orig, &patch, g, k) {
                merged += 1;
                assert!(out.is_object());
                // Keys starting with '$' can only come from the original object.
                if !has_directive(&orig) {
                    assert!(!has_directive(&out), "leak: {orig} + {patch} = {out}");
                }
            }
            let _ = super::super::merge_patch(&orig, &patch);
            let _ = super::super::json_patch(&orig, &patch);
        }
        assert!(merged > 5_000, "only {merged} patches applied");
    }
}
