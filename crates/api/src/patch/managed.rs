//! `metadata.managedFields` for writes that are not server-side apply.
//!
//! Upstream records, for every create, update and (non-apply) patch, an entry
//! with `operation: Update` for the field manager that made the write: the
//! fields the write added or changed, merged into that manager's earlier
//! `Update` entry for the same apiVersion and subresource. The manager takes
//! those fields over: they leave every other manager's set, and fields the
//! write removed leave every set. Entries left with no fields are dropped.
//!
//! - [`record_update`] does this for one write, given the live object (none for
//!   a create) and the object about to be stored.
//! - [`field_manager`] picks the manager name: the `fieldManager` query
//!   parameter, else the User-Agent up to its first `/`.
//! - [`validate_field_manager`] checks a `fieldManager` parameter.
//!
//! The changed fields come from one walk over the two objects (see [`diff`]):
//! leaves whose value differs, plus every map, list and list element that the
//! write created (the `.` entries of `fieldsV1`).

use std::borrow::Cow;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value};

use super::fields::{self, FieldSet, UNTRACKED_METADATA};
use super::json_eq;
use super::schema::{FieldMeta, ListStrategy, SchemaNode};
use crate::catalog::ResourceType;

/// The longest `fieldManager` the API accepts (bytes), and the length a manager
/// name derived from the User-Agent is cut to.
pub const FIELD_MANAGER_MAX_LENGTH: usize = 128;

/// How many `Update` entries an object keeps; older ones are merged into one
/// entry of [`ANCIENT_CHANGES_MANAGER`].
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The manager that collects the oldest `Update` entries beyond
/// [`MAX_UPDATE_MANAGERS`].
pub const ANCIENT_CHANGES_MANAGER: &str = "ancient-changes";

/// Why a `fieldManager` query parameter is rejected (upstream answers 422).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldManagerError {
    /// Longer than [`FIELD_MANAGER_MAX_LENGTH`] bytes.
    #[error("Too long: may not be more than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Contains a character that is not printable.
    #[error("Invalid value: {value:?}: invalid character {code} (at position {position})")]
    InvalidCharacter {
        /// The rejected manager name.
        value: String,
        /// The character as `U+0007`.
        code: String,
        /// Its byte offset.
        position: usize,
    },
}

impl FieldManagerError {
    /// The `reason` of the Status cause: `FieldValueTooLong` or `FieldValueInvalid`.
    pub fn reason(&self) -> &'static str {
        match self {
            FieldManagerError::TooLong { .. } => "FieldValueTooLong",
            FieldManagerError::InvalidCharacter { .. } => "FieldValueInvalid",
        }
    }
}

/// Go's `unicode.IsPrint`, near enough: no control characters, and no white
/// space other than the ASCII space.
fn printable(c: char) -> bool {
    c == ' ' || !(c.is_control() || c.is_whitespace())
}

/// Check a `fieldManager` query parameter: at most 128 bytes, all printable.
pub fn validate_field_manager(manager: &str) -> Result<(), FieldManagerError> {
    if manager.len() > FIELD_MANAGER_MAX_LENGTH {
        return Err(FieldManagerError::TooLong {
            max: FIELD_MANAGER_MAX_LENGTH,
        });
    }
    if let Some((position, c)) = manager.char_indices().find(|(_, c)| !printable(*c)) {
        return Err(FieldManagerError::InvalidCharacter {
            value: manager.to_string(),
            code: format!("U+{:04X}", u32::from(c)),
            position,
        });
    }
    Ok(())
}

/// The manager name upstream derives from a User-Agent: the text before the
/// first `/`, without unprintable characters, cut to 128 bytes
/// (`kubectl/v1.32.0 (linux/amd64) kubernetes/abc` gives `kubectl`).
pub fn manager_from_user_agent(user_agent: &str) -> String {
    let prefix = user_agent.split('/').next().unwrap_or("");
    let mut out = String::new();
    for c in prefix.chars().filter(|c| printable(*c)) {
        if out.len() + c.len_utf8() > FIELD_MANAGER_MAX_LENGTH {
            break;
        }
        out.push(c);
    }
    out
}

/// The manager of a write: the `fieldManager` parameter when given and not
/// empty, else derived from the User-Agent (empty without one).
pub fn field_manager(query: Option<&str>, user_agent: Option<&str>) -> String {
    match query.filter(|m| !m.is_empty()) {
        Some(m) => m.to_string(),
        None => user_agent.map(manager_from_user_agent).unwrap_or_default(),
    }
}

/// One non-apply write, as [`record_update`] records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateOperation<'a> {
    /// The field manager (see [`field_manager`]).
    pub manager: &'a str,
    /// `Some("status")` for a write to the status subresource: then only
    /// `status` is tracked and the entry carries `subresource: status`.
    /// Without one, `status` is not tracked.
    pub subresource: Option<&'a str>,
    /// The entry's `time` (written with second precision).
    pub time: DateTime<Utc>,
}

impl<'a> UpdateOperation<'a> {
    /// A write by `manager` to the main resource, now.
    pub fn now(manager: &'a str) -> UpdateOperation<'a> {
        UpdateOperation {
            manager,
            subresource: None,
            time: Utc::now(),
        }
    }

    /// The same write, to `subresource`.
    pub fn on_subresource(self, subresource: Option<&'a str>) -> UpdateOperation<'a> {
        UpdateOperation {
            subresource,
            ..self
        }
    }
}

/// What one write did to an object's fields.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldChanges {
    /// Fields the write added or changed the value of, including maps, lists
    /// and list elements it created.
    pub changed: FieldSet,
    /// Fields the write removed; each member stands for its whole subtree.
    pub removed: FieldSet,
}

impl FieldChanges {
    fn is_empty(&self) -> bool {
        self.changed.is_blank() && self.removed.is_blank()
    }

    fn attach(&mut self, seg: impl FnOnce() -> String, child: FieldChanges) {
        if child.is_empty() {
            return;
        }
        let seg = seg();
        self.removed.attach(seg.clone(), child.removed);
        self.changed.attach(seg, child.changed);
    }
}

/// The fields that differ between `live` (none for a create) and `new`, in
/// one walk. Server-owned metadata, `apiVersion` and `kind` are never tracked;
/// with `status_only` only `status` is, otherwise everything but `status`.
pub fn diff(
    live: Option<&Value>,
    new: &Value,
    kind: &ResourceType,
    status_only: bool,
) -> FieldChanges {
    let root = SchemaNode::for_kind(kind.group, kind.kind);
    let mut out = FieldChanges::default();
    let live_map = live.and_then(Value::as_object);
    let Some(new_map) = new.as_object() else {
        return out;
    };
    let tracked = |k: &str| k != "apiVersion" && k != "kind" && (k == "status") == status_only;
    for (k, nv) in new_map.iter().filter(|(k, _)| tracked(k)) {
        let lv = live_map.and_then(|m| m.get(k));
        let child = if k == "metadata" {
            diff_metadata(lv, nv, root.field(k).node)
        } else {
            let implicit = matches!(k.as_str(), "spec" | "status" | "template");
            diff_value(lv, Some(nv), root.field(k), implicit)
        };
        out.attach(|| fields::field_element(k), child);
    }
    if let Some(live_map) = live_map {
        for (k, lv) in live_map.iter().filter(|(k, _)| tracked(k)) {
            if new_map.contains_key(k) {
                continue;
            }
            let child = if k == "metadata" {
                diff_metadata(Some(lv), &Value::Null, root.field(k).node)
            } else {
                diff_value(Some(lv), None, root.field(k), false)
            };
            out.attach(|| fields::field_element(k), child);
        }
    }
    out
}

/// `metadata` itself is never a member; its server-owned fields are skipped.
fn diff_metadata(live: Option<&Value>, new: &Value, node: SchemaNode) -> FieldChanges {
    let mut out = FieldChanges::default();
    let tracked = |k: &str| !UNTRACKED_METADATA.contains(&k);
    let live_map = live.and_then(Value::as_object);
    let new_map = new.as_object();
    diff_fields(live_map, new_map, node, &tracked, &mut out);
    out
}

/// Walk the fields of two maps (either may be missing).
fn diff_fields(
    live: Option<&Map<String, Value>>,
    new: Option<&Map<String, Value>>,
    node: SchemaNode,
    tracked: &dyn Fn(&str) -> bool,
    out: &mut FieldChanges,
) {
    if let Some(new) = new {
        for (k, nv) in new.iter().filter(|(k, _)| tracked(k)) {
            let meta = node.field(k);
            let implicit = implicit_field(k, &meta);
            let child = diff_value(live.and_then(|m| m.get(k)), Some(nv), meta, implicit);
            out.attach(|| fields::field_element(k), child);
        }
    }
    if let Some(live) = live {
        for (k, lv) in live.iter().filter(|(k, _)| tracked(k)) {
            if new.is_some_and(|n| n.contains_key(k)) {
                continue;
            }
            let child = diff_value(Some(lv), None, node.field(k), false);
            out.attach(|| fields::field_element(k), child);
        }
    }
}

/// Fields Go always serialises (non-pointer structs, `containers`): upstream's
/// empty object already has them, so creating them does not make the node
/// itself a member, only what is under it.
fn implicit_field(name: &str, meta: &FieldMeta) -> bool {
    match meta.list {
        ListStrategy::Replace => meta.node != SchemaNode::unknown(),
        _ => name == "containers",
    }
}

fn all_fields(_: &str) -> bool {
    true
}

/// Compare one value. `implicit`: see [`implicit_field`].
fn diff_value(
    live: Option<&Value>,
    new: Option<&Value>,
    meta: FieldMeta,
    implicit: bool,
) -> FieldChanges {
    let live = live.filter(|v| !v.is_null());
    let mut out = FieldChanges::default();
    let Some(new) = new.filter(|v| !v.is_null()) else {
        if live.is_some() {
            out.removed.mark();
        }
        return out;
    };
    if meta.atomic {
        leaf(live, new, &mut out);
        return out;
    }
    match new {
        Value::Object(new_map) => {
            let live_map = live.and_then(Value::as_object);
            if new_map.is_empty() && live_map.is_none_or(Map::is_empty) {
                leaf(live, new, &mut out);
                return out;
            }
            if live_map.is_none() {
                created(live, implicit, &mut out);
            }
            diff_fields(live_map, Some(new_map), meta.node, &all_fields, &mut out);
        }
        Value::Array(items) => match meta.list {
            ListStrategy::MergeByKey(_) => diff_keyed(live, items, meta, implicit, &mut out),
            ListStrategy::MergeSet => diff_set(live, items, &mut out),
            ListStrategy::Replace => leaf(live, new, &mut out),
        },
        _ => leaf(live, new, &mut out),
    }
    out
}

/// A container the write created: a member unless implicit; when it replaced
/// a value of another type, what was there is removed.
fn created(live: Option<&Value>, implicit: bool, out: &mut FieldChanges) {
    if live.is_some() {
        out.removed.mark();
        out.changed.mark();
    } else if !implicit {
        out.changed.mark();
    }
}

/// Compare as a whole.
fn leaf(live: Option<&Value>, new: &Value, out: &mut FieldChanges) {
    match live {
        None => out.changed.mark(),
        Some(l) if json_eq(l, new) => {}
        Some(l) => {
            out.changed.mark();
            if std::mem::discriminant(l) != std::mem::discriminant(new)
                && matches!(l, Value::Object(_) | Value::Array(_))
            {
                out.removed.mark();
            }
        }
    }
}

/// The `k:` elements of a keyed list, or None when an element has no key or
/// two share one (then the list is compared as a whole).
fn keys_of(items: &[Value], meta: &FieldMeta) -> Option<Vec<String>> {
    let keys: Vec<String> = items
        .iter()
        .map(|i| fields::key_element(i, meta.map_keys))
        .collect::<Option<_>>()?;
    let mut sorted: Vec<&String> = keys.iter().collect();
    sorted.sort_unstable();
    if sorted.windows(2).any(|w| w[0] == w[1]) {
        return None;
    }
    Some(keys)
}

fn diff_keyed(
    live: Option<&Value>,
    items: &[Value],
    meta: FieldMeta,
    implicit: bool,
    out: &mut FieldChanges,
) {
    let live_items = live.and_then(Value::as_array);
    let new_value = || Value::Array(items.to_vec());
    if items.is_empty() && live_items.is_none_or(Vec::is_empty) {
        leaf(live, &new_value(), out);
        return;
    }
    let new_keys = keys_of(items, &meta);
    let live_keys = match live_items {
        Some(l) => keys_of(l, &meta),
        None => Some(Vec::new()),
    };
    let (Some(new_keys), Some(live_keys)) = (new_keys, live_keys) else {
        leaf(live, &new_value(), out);
        return;
    };
    if live_items.is_none() {
        created(live, implicit, out);
    }
    let element = FieldMeta {
        node: meta.node,
        list: ListStrategy::Replace,
        map_keys: &[],
        atomic: false,
    };
    for (key, item) in new_keys.iter().zip(items) {
        let before = live_keys
            .iter()
            .position(|k| k == key)
            .and_then(|i| live_items.and_then(|l| l.get(i)));
        let child = diff_value(before, Some(item), element, false);
        out.attach(|| key.clone(), child);
    }
    for key in live_keys.iter().filter(|k| !new_keys.contains(k)) {
        out.removed.child_mut(key.clone()).mark();
    }
}

fn diff_set(live: Option<&Value>, items: &[Value], out: &mut FieldChanges) {
    let live_items = live.and_then(Value::as_array);
    if items.is_empty() && live_items.is_none_or(Vec::is_empty) {
        leaf(live, &Value::Array(Vec::new()), out);
        return;
    }
    if live_items.is_none() {
        created(live, false, out);
    }
    let old: &[Value] = live_items.map(Vec::as_slice).unwrap_or(&[]);
    for item in items.iter().filter(|i| !i.is_null()) {
        if !old.iter().any(|o| json_eq(o, item)) {
            out.changed.child_mut(fields::value_element(item)).mark();
        }
    }
    for item in old.iter().filter(|i| !i.is_null()) {
        if !items.iter().any(|n| json_eq(n, item)) {
            out.removed.child_mut(fields::value_element(item)).mark();
        }
    }
}

/// One managedFields entry while it is being rewritten.
struct Entry {
    raw: Map<String, Value>,
    /// None when `fieldsV1` could not be read: such an entry is left alone.
    set: Option<FieldSet>,
    dirty: bool,
}

impl Entry {
    fn parse(v: &Value, strict: bool) -> Option<Entry> {
        let raw = v.as_object()?.clone();
        let set = match raw.get("fieldsV1") {
            None => Some(FieldSet::new()),
            Some(f) => match FieldSet::from_fields_v1(f) {
                Ok(s) => Some(s),
                Err(_) if strict => return None,
                Err(_) => None,
            },
        };
        Some(Entry {
            raw,
            set,
            dirty: false,
        })
    }

    fn get(&self, k: &str) -> &str {
        self.raw.get(k).and_then(Value::as_str).unwrap_or("")
    }

    fn is_update(&self) -> bool {
        self.get("operation") != "Apply"
    }

    fn into_value(mut self) -> Value {
        if self.dirty {
            if let Some(set) = &self.set {
                self.raw.insert("fieldsV1".into(), set.to_fields_v1());
            }
        }
        Value::Object(self.raw)
    }
}

fn new_entry(
    manager: &str,
    api_version: &str,
    time: &str,
    subresource: Option<&str>,
    set: FieldSet,
) -> Entry {
    let mut m = Map::new();
    m.insert("manager".into(), Value::String(manager.to_string()));
    m.insert("operation".into(), Value::String("Update".into()));
    m.insert("apiVersion".into(), Value::String(api_version.to_string()));
    m.insert("time".into(), Value::String(time.to_string()));
    m.insert("fieldsType".into(), Value::String("FieldsV1".into()));
    m.insert("fieldsV1".into(), Value::Object(Map::new()));
    if let Some(sub) = subresource {
        m.insert("subresource".into(), Value::String(sub.to_string()));
    }
    Entry {
        raw: m,
        set: Some(set),
        dirty: true,
    }
}

/// Entries a request's `managedFields` list asks for, or None when it cannot
/// be read (then the live ones are used, as upstream does).
fn parse_strict(v: &Value) -> Option<Vec<Entry>> {
    v.as_array()?
        .iter()
        .map(|e| Entry::parse(e, true))
        .collect()
}

fn parse_lenient(v: Option<&Value>) -> Vec<Entry> {
    v.and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|e| Entry::parse(e, false)).collect())
        .unwrap_or_default()
}

/// Record a non-apply write in `new`'s `metadata.managedFields`.
///
/// `live` is the stored object (None for a create); `new` the object the write
/// will store, whose own `managedFields` are handled as upstream: absent, empty
/// or equal to the live ones, the live ones are the starting point; otherwise
/// (main resource only) the request's list is, so `[{}]` clears them. Then the
/// fields this write added or changed become the manager's (and no one
/// else's), removed fields leave every entry, and empty entries are dropped.
/// Never fails: unreadable entries are left as they are.
pub fn record_update(
    live: Option<&Value>,
    new: &mut Value,
    kind: &ResourceType,
    op: &UpdateOperation<'_>,
) {
    let Some(new_map) = new.as_object_mut() else {
        return;
    };
    let requested = new_map
        .get_mut("metadata")
        .and_then(Value::as_object_mut)
        .and_then(|m| m.shift_remove("managedFields"));
    let live_mf = live.and_then(|l| l.pointer("/metadata/managedFields"));
    let baseline: Option<Vec<Entry>> = match requested {
        Some(r)
            if op.subresource.is_none()
                && r.as_array().is_some_and(|a| !a.is_empty())
                && Some(&r) != live_mf =>
        {
            parse_strict(&r)
        }
        _ => None,
    };
    let status_only = op.subresource == Some("status");
    let changes = diff(live, new, kind, status_only);
    if changes.is_empty() && baseline.is_none() {
        if let Some(mf) = live_mf {
            set_managed_fields(new, Cow::Borrowed(mf));
        }
        return;
    }
    let mut entries = baseline.unwrap_or_else(|| parse_lenient(live_mf));
    let time = op.time.to_rfc3339_opts(SecondsFormat::Secs, true);
    let sub = op.subresource.unwrap_or("");
    let ours = entries.iter().position(|e| {
        e.get("manager") == op.manager
            && e.get("operation") == "Update"
            && e.get("apiVersion") == kind.api_version
            && e.get("subresource") == sub
    });
    for (i, e) in entries.iter_mut().enumerate() {
        let Some(set) = e.set.as_mut() else { continue };
        let mut dirty = set.remove_subtrees(&changes.removed);
        if Some(i) != ours {
            dirty |= set.subtract(&changes.changed);
        }
        e.dirty |= dirty;
    }
    if !changes.changed.is_empty() {
        match ours.and_then(|i| entries.get_mut(i)) {
            Some(e) => {
                if let Some(set) = e.set.as_mut() {
                    set.union_with(&changes.changed);
                }
                e.raw.insert("time".into(), Value::String(time.clone()));
                e.dirty = true;
            }
            None => entries.push(new_entry(
                op.manager,
                kind.api_version,
                &time,
                op.subresource,
                changes.changed,
            )),
        }
    }
    entries.retain(|e| e.set.as_ref().is_none_or(|s| !s.is_empty()));
    cap_update_managers(&mut entries);
    let mut values: Vec<Value> = entries.into_iter().map(Entry::into_value).collect();
    sort_entries(&mut values);
    set_managed_fields(new, Cow::Owned(Value::Array(values)));
}

/// Merge the oldest `Update` entries into one [`ANCIENT_CHANGES_MANAGER`]
/// entry when there are more than [`MAX_UPDATE_MANAGERS`].
fn cap_update_managers(entries: &mut Vec<Entry>) {
    let mut updates: Vec<usize> = (0..entries.len())
        .filter(|&i| entries[i].is_update() && entries[i].set.is_some())
        .collect();
    if updates.len() <= MAX_UPDATE_MANAGERS {
        return;
    }
    updates.sort_by_key(|&i| entry_seconds(entries[i].get("time")));
    let excess = updates.len() - MAX_UPDATE_MANAGERS + 1;
    let mut merged: Vec<usize> = updates[..excess].to_vec();
    for &i in &updates[excess..] {
        if entries[i].get("manager") == ANCIENT_CHANGES_MANAGER {
            merged.push(i);
        }
    }
    // The newest merged entry gives the bucket its apiVersion and time.
    merged.sort_by_key(|&i| entry_seconds(entries[i].get("time")));
    let mut set = FieldSet::new();
    for &i in &merged {
        if let Some(s) = &entries[i].set {
            set.union_with(s);
        }
    }
    let Some(&newest) = merged.last() else { return };
    let bucket = new_entry(
        ANCIENT_CHANGES_MANAGER,
        entries[newest].get("apiVersion"),
        entries[newest].get("time"),
        None,
        set,
    );
    merged.sort_unstable();
    for &i in merged.iter().rev() {
        entries.remove(i);
    }
    entries.push(bucket);
}

fn entry_seconds(time: &str) -> i64 {
    DateTime::parse_from_rfc3339(time)
        .map(|t| t.timestamp())
        .unwrap_or(0)
}

/// Upstream's order of managedFields: by operation (`Apply` first), then time,
/// manager, apiVersion and subresource.
pub fn sort_entries(entries: &mut [Value]) {
    fn s<'a>(v: &'a Value, k: &str) -> &'a str {
        v.get(k).and_then(Value::as_str).unwrap_or("")
    }
    entries.sort_by(|a, b| {
        let by = |k: &str| s(a, k).cmp(s(b, k));
        by("operation")
            .then_with(|| entry_seconds(s(a, "time")).cmp(&entry_seconds(s(b, "time"))))
            .then_with(|| by("manager"))
            .then_with(|| by("apiVersion"))
            .then_with(|| by("subresource"))
    });
}

fn set_managed_fields(obj: &mut Value, entries: Cow<'_, Value>) {
    let Value::Object(root) = obj else { return };
    let Some(meta) = root.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.as_array().is_some_and(Vec::is_empty) {
        meta.shift_remove("managedFields");
    } else {
        meta.insert("managedFields".into(), entries.into_owned());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cm_kind() -> &'static ResourceType {
        crate::catalog::by_kind("v1", "ConfigMap").unwrap()
    }

    fn deploy_kind() -> &'static ResourceType {
        crate::catalog::by_kind("apps/v1", "Deployment").unwrap()
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn op<'a>(manager: &'a str, time: &str) -> UpdateOperation<'a> {
        UpdateOperation {
            manager,
            subresource: None,
            time: at(time),
        }
    }

    fn entries(obj: &Value) -> Vec<Value> {
        obj.pointer("/metadata/managedFields")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default()
    }

    fn entry<'a>(obj: &'a Value, manager: &str) -> &'a Value {
        obj["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["manager"] == manager)
            .unwrap_or_else(|| panic!("no entry for {manager} in {obj}"))
    }

    const T1: &str = "2025-01-02T03:04:05Z";
    const T2: &str = "2025-01-02T04:00:00Z";
    const T3: &str = "2025-01-02T05:00:00Z";

    fn created_cm() -> Value {
        let mut obj = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "namespace": "default", "uid": "u", "resourceVersion": "3",
                          "creationTimestamp": "2025-01-01T00:00:00Z", "labels": {"app": "x"}},
            "data": {"a": "1", "b": "2"}
        });
        record_update(None, &mut obj, cm_kind(), &op("kubectl-create", T1));
        obj
    }

    #[test]
    fn create_records_every_field() {
        let obj = created_cm();
        let mf = entries(&obj);
        assert_eq!(mf.len(), 1);
        assert_eq!(
            mf[0],
            json!({
                "manager": "kubectl-create", "operation": "Update", "apiVersion": "v1",
                "time": T1, "fieldsType": "FieldsV1",
                "fieldsV1": {
                    "f:data": {".": {}, "f:a": {}, "f:b": {}},
                    "f:metadata": {"f:labels": {".": {}, "f:app": {}}}
                }
            })
        );
        // Key order as upstream serialises an entry.
        let keys: Vec<&String> = mf[0].as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "manager",
                "operation",
                "apiVersion",
                "time",
                "fieldsType",
                "fieldsV1"
            ]
        );
    }

    #[test]
    fn create_of_a_deployment_skips_status_and_implicit_structs() {
        let mut obj = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "generateName": "w-", "finalizers": ["f"]},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                         {"name": "app", "image": "nginx", "ports": [{"containerPort": 80}], "resources": {}}
                     ]}}},
            "status": {"replicas": 3}
        });
        record_update(None, &mut obj, deploy_kind(), &op("kubectl-create", T1));
        assert_eq!(
            entry(&obj, "kubectl-create")["fieldsV1"],
            json!({
                "f:metadata": {"f:finalizers": {".": {}, "v:\"f\"": {}}, "f:generateName": {}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {
                        "f:metadata": {"f:labels": {".": {}, "f:app": {}}},
                        "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {
                            ".": {}, "f:image": {}, "f:name": {}, "f:resources": {},
                            "f:ports": {".": {}, "k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}
                        }}}
                    }
                }
            })
        );
    }

    #[test]
    fn update_records_only_changed_fields_and_merges_into_the_entry() {
        let live = created_cm();
        // kubectl label: a new label.
        let mut new = live.clone();
        new["metadata"]["labels"]["tier"] = json!("fe");
        record_update(Some(&live), &mut new, cm_kind(), &op("kubectl-label", T2));
        let label = entry(&new, "kubectl-label");
        assert_eq!(label["operation"], "Update");
        assert_eq!(label["time"], T2);
        assert_eq!(
            label["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:tier": {}}}})
        );
        assert_eq!(entry(&new, "kubectl-create")["time"], T1);
        // The same manager again: merged into its entry, time refreshed.
        let live = new;
        let mut new = live.clone();
        new["metadata"]["labels"]["zone"] = json!("a");
        record_update(Some(&live), &mut new, cm_kind(), &op("kubectl-label", T3));
        let label = entry(&new, "kubectl-label");
        assert_eq!(
            label["fieldsV1"],
            json!({"f:metadata": {"f:labels": {"f:tier": {}, "f:zone": {}}}})
        );
        assert_eq!(label["time"], T3);
        assert_eq!(entries(&new).len(), 2);
    }

    #[test]
    fn changed_fields_are_taken_from_other_managers() {
        let live = created_cm();
        let mut new = live.clone();
        new["data"]["a"] = json!("changed");
        record_update(Some(&live), &mut new, cm_kind(), &op("kubectl-edit", T2));
        assert_eq!(
            entry(&new, "kubectl-create")["fieldsV1"],
            json!({"f:data": {".": {}, "f:b": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
        );
        assert_eq!(
            entry(&new, "kubectl-edit")["fieldsV1"],
            json!({"f:data": {"f:a": {}}})
        );
        // Sorted by time: the older entry first.
        let managers: Vec<Value> = entries(&new).iter().map(|e| e["manager"].clone()).collect();
        assert_eq!(managers, [json!("kubectl-create"), json!("kubectl-edit")]);
    }

    #[test]
    fn removed_fields_leave_every_entry_and_empty_entries_are_dropped() {
        let mut live = created_cm();
        live["metadata"]["labels"]["tier"] = json!("fe");
        live["metadata"]["managedFields"]
            .as_array_mut()
            .unwrap()
            .push(json!({"manager": "kubectl-label", "operation": "Update", "apiVersion": "v1",
                "time": T2, "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {"f:labels": {"f:tier": {}}}}}));
        let mut new = live.clone();
        new["metadata"]["labels"]
            .as_object_mut()
            .unwrap()
            .shift_remove("tier");
        new["data"].as_object_mut().unwrap().shift_remove("b");
        record_update(Some(&live), &mut new, cm_kind(), &op("kubectl-label", T3));
        let mf = entries(&new);
        assert_eq!(mf.len(), 1, "{new}");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({"f:data": {".": {}, "f:a": {}}, "f:metadata": {"f:labels": {".": {}, "f:app": {}}}})
        );
        // Removing the last field of the only entry drops managedFields.
        let live = json!({"metadata": {"name": "c", "managedFields": [{"manager": "m", "operation": "Update",
            "apiVersion": "v1", "time": T1, "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]},
            "data": {"a": "1"}});
        let mut new = json!({"metadata": {"name": "c"}});
        record_update(Some(&live), &mut new, cm_kind(), &op("other", T2));
        assert!(new["metadata"].get("managedFields").is_none(), "{new}");
    }

    #[test]
    fn no_op_writes_keep_managed_fields_as_they_are() {
        let live = created_cm();
        // Omitted managedFields come back from the live object.
        let mut new = live.clone();
        new["metadata"]
            .as_object_mut()
            .unwrap()
            .shift_remove("managedFields");
        new["metadata"]["resourceVersion"] = json!("9");
        record_update(Some(&live), &mut new, cm_kind(), &op("x", T2));
        assert_eq!(
            new["metadata"]["managedFields"],
            live["metadata"]["managedFields"]
        );
        // An empty list too.
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([]);
        record_update(Some(&live), &mut new, cm_kind(), &op("x", T2));
        assert_eq!(new, live);
    }

    #[test]
    fn request_managed_fields_reset_or_replace_the_live_ones() {
        let live = created_cm();
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        record_update(Some(&live), &mut new, cm_kind(), &op("kubectl-patch", T2));
        assert!(new["metadata"].get("managedFields").is_none(), "{new}");
        // [{}] plus a change: only the change is recorded.
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{}]);
        new["data"]["c"] = json!("3");
        record_update(Some(&live), &mut new, cm_kind(), &op("kubectl-patch", T2));
        assert_eq!(entries(&new).len(), 1);
        assert_eq!(
            entry(&new, "kubectl-patch")["fieldsV1"],
            json!({"f:data": {"f:c": {}}})
        );
        // A different, readable list is taken as given.
        let mut new = live.clone();
        let mine = json!([{"manager": "mine", "operation": "Update", "apiVersion": "v1", "time": T1,
            "fieldsType": "FieldsV1", "fieldsV1": {"f:data": {"f:a": {}}}}]);
        new["metadata"]["managedFields"] = mine.clone();
        record_update(Some(&live), &mut new, cm_kind(), &op("x", T2));
        assert_eq!(new["metadata"]["managedFields"], mine);
        // An unreadable one is ignored.
        let mut new = live.clone();
        new["metadata"]["managedFields"] = json!([{"fieldsV1": 3}]);
        record_update(Some(&live), &mut new, cm_kind(), &op("x", T2));
        assert_eq!(
            new["metadata"]["managedFields"],
            live["metadata"]["managedFields"]
        );
    }

    #[test]
    fn status_writes_track_only_status() {
        let kind = deploy_kind();
        let live = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 1}, "status": {"replicas": 1}});
        // Main resource: the status change is not recorded.
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(2);
        new["status"]["replicas"] = json!(2);
        record_update(Some(&live), &mut new, kind, &op("kubectl", T1));
        assert_eq!(
            entry(&new, "kubectl")["fieldsV1"],
            json!({"f:spec": {"f:replicas": {}}})
        );
        // Status subresource: only status, and the entry says so.
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        new["status"]["replicas"] = json!(2);
        new["status"]["conditions"] = json!([{"type": "Available", "status": "True"}]);
        let o = op("ctrl", T1).on_subresource(Some("status"));
        record_update(Some(&live), &mut new, kind, &o);
        let e = entry(&new, "ctrl");
        assert_eq!(e["subresource"], "status");
        assert_eq!(
            e["fieldsV1"],
            json!({"f:status": {"f:conditions": {".": {}, "k:{\"type\":\"Available\"}": {".": {}, "f:status": {}, "f:type": {}}}, "f:replicas": {}}})
        );
        // A main-resource entry of the same manager stays separate.
        let live = new;
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(7);
        record_update(Some(&live), &mut new, kind, &op("ctrl", T2));
        assert_eq!(entries(&new).len(), 2);
    }

    #[test]
    fn lists_by_key_and_sets() {
        let kind = deploy_kind();
        let live = json!({"metadata": {"name": "d", "finalizers": ["a", "b"]},
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": "v1"}, {"name": "side", "image": "s"}]}}}});
        let mut new = live.clone();
        new["metadata"]["finalizers"] = json!(["a", "c"]);
        new["spec"]["template"]["spec"]["containers"] =
            json!([{"name": "app", "image": "v2"}, {"name": "side", "image": "s"}]);
        let mut with_owner = live.clone();
        with_owner["metadata"]["managedFields"] = json!([{"manager": "old", "operation": "Update",
            "apiVersion": "apps/v1", "time": T1, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:finalizers": {"v:\"b\"": {}}}}}]);
        record_update(Some(&with_owner), &mut new, kind, &op("m", T2));
        assert_eq!(
            entry(&new, "m")["fieldsV1"],
            json!({
                "f:metadata": {"f:finalizers": {"v:\"c\"": {}}},
                "f:spec": {"f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {"f:image": {}}}}}}
            })
        );
        // "b" was removed: its owner lost it, and with it its entry.
        assert_eq!(entries(&new).len(), 1);
        // Elements without keys: the list counts as one field.
        let live = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}});
        let mut new = json!({"metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": [{"image": "y"}]}}}});
        record_update(Some(&live), &mut new, kind, &op("m", T2));
        assert_eq!(
            entry(&new, "m")["fieldsV1"],
            json!({"f:spec": {"f:template": {"f:spec": {"f:containers": {}}}}})
        );
    }

    #[test]
    fn type_changes_and_nulls() {
        let kind = cm_kind();
        let live = json!({"metadata": {"name": "c", "managedFields": [{"manager": "o", "operation": "Update",
            "apiVersion": "v1", "time": T1, "fieldsType": "FieldsV1",
            "fieldsV1": {"f:data": {".": {}, "f:a": {}}, "f:binaryData": {}}}]},
            "data": {"a": "1"}, "binaryData": null});
        let mut new = json!({"metadata": {"name": "c"}, "data": "flat", "binaryData": null});
        record_update(Some(&live), &mut new, kind, &op("m", T2));
        assert_eq!(entry(&new, "m")["fieldsV1"], json!({"f:data": {}}));
        // The other manager lost data and everything under it.
        assert_eq!(entry(&new, "o")["fieldsV1"], json!({"f:binaryData": {}}));
    }

    #[test]
    fn apply_entries_lose_fields_an_update_changes() {
        let kind = deploy_kind();
        let applied = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
            "spec": {"replicas": 2}});
        let live =
            super::super::server_side_apply_at(None, &applied, "kubectl", false, kind, at(T1))
                .unwrap();
        let mut new = live.clone();
        new["spec"]["replicas"] = json!(5);
        record_update(Some(&live), &mut new, kind, &op("kubectl-edit", T2));
        // The applier owned nothing else: its entry is gone.
        let managers: Vec<Value> = entries(&new).iter().map(|e| e["manager"].clone()).collect();
        assert_eq!(managers, [json!("kubectl-edit")]);
        // A later apply of another value conflicts with the Update owner.
        let err = super::super::server_side_apply_at(
            Some(&new),
            &applied,
            "kubectl",
            false,
            kind,
            at(T3),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Apply failed with 1 conflict: conflict with \"kubectl-edit\" using apps/v1: .spec.replicas"
        );
    }

    #[test]
    fn update_managers_are_capped() {
        let kind = cm_kind();
        let mut obj = json!({"metadata": {"name": "c"}, "data": {}});
        for i in 0..14 {
            let live = obj.clone();
            obj["data"][format!("k{i}")] = json!("v");
            let t = format!("2025-01-02T03:{i:02}:00Z");
            record_update(Some(&live), &mut obj, kind, &op(&format!("m{i}"), &t));
        }
        let mf = entries(&obj);
        assert_eq!(mf.len(), MAX_UPDATE_MANAGERS, "{obj}");
        let ancient = entry(&obj, ANCIENT_CHANGES_MANAGER);
        // m0..m4 merged; the bucket takes the newest merged time.
        assert_eq!(ancient["time"], "2025-01-02T03:04:00Z");
        assert_eq!(
            ancient["fieldsV1"]["f:data"].as_object().unwrap().len(),
            5,
            "{ancient}"
        );
        assert!(mf.iter().all(|e| e["manager"] != "m0"));
        assert_eq!(mf.last().unwrap()["manager"], "m13");
    }

    #[test]
    fn manager_names() {
        assert_eq!(
            manager_from_user_agent("kubectl/v1.32.4 (linux/amd64) kubernetes/abc"),
            "kubectl"
        );
        assert_eq!(
            manager_from_user_agent("OpenAPI-Generator/31.0.0/python"),
            "OpenAPI-Generator"
        );
        assert_eq!(manager_from_user_agent("a\u{7}b"), "ab");
        assert_eq!(manager_from_user_agent(&"x".repeat(300)).len(), 128);
        assert_eq!(manager_from_user_agent(&"é".repeat(100)).len(), 128);
        assert_eq!(
            field_manager(Some("kubectl-label"), Some("kubectl/v1")),
            "kubectl-label"
        );
        assert_eq!(field_manager(Some(""), Some("kubectl/v1")), "kubectl");
        assert_eq!(field_manager(None, None), "");
    }

    #[test]
    fn field_manager_validation() {
        assert!(validate_field_manager("kubectl-create").is_ok());
        assert!(validate_field_manager("with space").is_ok());
        assert!(validate_field_manager(&"x".repeat(128)).is_ok());
        let e = validate_field_manager(&"x".repeat(129)).unwrap_err();
        assert_eq!(e.to_string(), "Too long: may not be more than 128 bytes");
        assert_eq!(e.reason(), "FieldValueTooLong");
        let e = validate_field_manager("ab\u{7}").unwrap_err();
        assert_eq!(
            e.to_string(),
            "Invalid value: \"ab\\u{7}\": invalid character U+0007 (at position 2)"
        );
        assert_eq!(e.reason(), "FieldValueInvalid");
        assert!(validate_field_manager("tab\there").is_err());
    }

    #[test]
    fn sort_order_is_upstreams() {
        let mut v = vec![
            json!({"manager": "b", "operation": "Update", "time": T1}),
            json!({"manager": "z", "operation": "Apply", "time": T3}),
            json!({"manager": "a", "operation": "Update", "time": T1}),
            json!({"manager": "c", "operation": "Update", "time": "2025-01-01T00:00:00Z"}),
        ];
        sort_entries(&mut v);
        let order: Vec<&str> = v.iter().map(|e| e["manager"].as_str().unwrap()).collect();
        assert_eq!(order, ["z", "c", "a", "b"]);
    }

    #[test]
    fn arbitrary_inputs_never_panic() {
        let mut rng = crate::patch::testgen::Rng(0x5eed_1234_abcd_0001);
        let kinds = [
            deploy_kind(),
            cm_kind(),
            crate::catalog::by_kind("v1", "Pod").unwrap(),
        ];
        for i in 0..3_000 {
            let mut live = json!({"metadata": {"name": "x", "managedFields": [
                {"manager": "a", "operation": "Apply", "fieldsV1": rng.value(3)},
                {"manager": "b", "operation": "Update", "fieldsV1": rng.value(3)},
                rng.value(1)
            ]}});
            live["spec"] = rng.value(3);
            live["metadata"]["labels"] = rng.value(2);
            let mut new = live.clone();
            new["spec"] = rng.value(3);
            if i % 3 == 0 {
                new["metadata"]["managedFields"] = rng.value(2);
            }
            let kind = kinds[i % kinds.len()];
            let live_opt = if i % 4 == 0 { None } else { Some(&live) };
            record_update(live_opt, &mut new, kind, &op("m", T1));
            if let Some(mf) = new.pointer("/metadata/managedFields") {
                assert!(mf.as_array().is_some_and(|a| !a.is_empty()), "{new}");
            }
        }
    }
}
