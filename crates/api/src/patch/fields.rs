//! Field sets in the `FieldsV1` format of `metadata.managedFields`.
//!
//! A [`FieldSet`] is a trie of path elements: `f:<field>` for an object field,
//! `k:{"name":"app"}` for an element of a keyed list, `v:<json>` for an element
//! of a set list. In JSON a node that is itself a member of the set is `{}` when
//! it has no children and carries `".": {}` next to its children otherwise.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::schema::{FieldMeta, ListStrategy, SchemaNode};
use super::{json_eq, json_type, PatchError};

/// Metadata fields the API server never tracks ownership of.
pub(crate) const UNTRACKED_METADATA: &[&str] = &[
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
];

/// A set of field paths (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet {
    member: bool,
    children: BTreeMap<String, FieldSet>,
}

impl FieldSet {
    /// The empty set.
    pub fn new() -> FieldSet {
        FieldSet::default()
    }

    /// Parse a `fieldsV1` JSON value.
    pub fn from_fields_v1(v: &Value) -> Result<FieldSet, PatchError> {
        let Value::Object(m) = v else {
            return Err(PatchError::invalid(
                "metadata.managedFields",
                format!("fieldsV1 must be an object, got {}", json_type(v)),
            ));
        };
        let mut set = FieldSet {
            member: m.is_empty(),
            children: BTreeMap::new(),
        };
        for (k, child) in m {
            if k == "." {
                set.member = true;
            } else {
                set.children
                    .insert(k.clone(), FieldSet::from_fields_v1(child)?);
            }
        }
        Ok(set)
    }

    /// Render as a `fieldsV1` JSON value.
    pub fn to_fields_v1(&self) -> Value {
        let mut m = Map::new();
        if self.member && !self.children.is_empty() {
            m.insert(".".to_string(), Value::Object(Map::new()));
        }
        for (k, child) in &self.children {
            m.insert(k.clone(), child.to_fields_v1());
        }
        Value::Object(m)
    }

    /// True when the set has no member paths.
    pub fn is_empty(&self) -> bool {
        self.children.values().all(|c| !c.member && c.is_empty())
    }

    /// Whether `path` (a list of encoded elements such as `f:spec`) is a member.
    pub fn contains(&self, path: &[String]) -> bool {
        self.node(path).is_some_and(|n| n.member)
    }

    /// The sub-trie at `path`, member or not.
    pub fn node(&self, path: &[String]) -> Option<&FieldSet> {
        let mut cur = self;
        for seg in path {
            cur = cur.children.get(seg)?;
        }
        Some(cur)
    }

    /// Add `path` as a member.
    pub fn insert(&mut self, path: &[String]) {
        let mut cur = self;
        for seg in path {
            cur = cur.children.entry(seg.clone()).or_default();
        }
        cur.member = true;
    }

    /// Remove `path` as a member (its children stay), pruning empty nodes.
    pub fn remove(&mut self, path: &[String]) {
        fn go(node: &mut FieldSet, path: &[String]) {
            let Some((first, rest)) = path.split_first() else {
                node.member = false;
                return;
            };
            if let Some(child) = node.children.get_mut(first) {
                go(child, rest);
                if !child.member && child.children.is_empty() {
                    node.children.remove(first);
                }
            }
        }
        go(self, path);
    }

    /// Every member path, depth first.
    pub fn members(&self) -> Vec<Vec<String>> {
        fn go(node: &FieldSet, prefix: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
            for (k, child) in &node.children {
                prefix.push(k.clone());
                if child.member {
                    out.push(prefix.clone());
                }
                go(child, prefix, out);
                prefix.pop();
            }
        }
        let mut out = Vec::new();
        go(self, &mut Vec::new(), &mut out);
        out
    }

    /// Members of `self` that are not members of `other`.
    pub fn difference(&self, other: &FieldSet) -> FieldSet {
        let mut out = FieldSet::new();
        for path in self.members() {
            if !other.contains(&path) {
                out.insert(&path);
            }
        }
        out
    }

    /// Add every member of `other` to this set.
    pub fn union_with(&mut self, other: &FieldSet) {
        self.member |= other.member;
        for (k, child) in &other.children {
            match self.children.get_mut(k) {
                Some(mine) => mine.union_with(child),
                None => {
                    self.children.insert(k.clone(), child.clone());
                }
            }
        }
    }

    /// Remove every member of `other` from this set (path by path: a removed
    /// member's own children stay), pruning nodes left empty. True if anything
    /// was removed.
    pub fn subtract(&mut self, other: &FieldSet) -> bool {
        let mut changed = false;
        if other.member && self.member {
            self.member = false;
            changed = true;
        }
        for (k, theirs) in &other.children {
            if let Some(mine) = self.children.get_mut(k) {
                changed |= mine.subtract(theirs);
                if mine.is_blank() {
                    self.children.remove(k);
                }
            }
        }
        changed
    }

    /// Remove the whole subtree below every member of `other` (the member
    /// itself included), pruning nodes left empty. True if anything was removed.
    pub fn remove_subtrees(&mut self, other: &FieldSet) -> bool {
        let mut changed = false;
        for (k, theirs) in &other.children {
            if theirs.member {
                changed |= self.children.remove(k).is_some();
            } else if let Some(mine) = self.children.get_mut(k) {
                changed |= mine.remove_subtrees(theirs);
                if mine.is_blank() {
                    self.children.remove(k);
                }
            }
        }
        changed
    }

    /// No member here and no children: a node that can be dropped.
    pub(crate) fn is_blank(&self) -> bool {
        !self.member && self.children.is_empty()
    }

    /// Make this node itself a member.
    pub(crate) fn mark(&mut self) {
        self.member = true;
    }

    /// The child at `seg`, created (not a member) when missing.
    pub(crate) fn child_mut(&mut self, seg: String) -> &mut FieldSet {
        self.children.entry(seg).or_default()
    }

    /// Hang `child` under `seg` unless it is blank (merging with what is there).
    pub(crate) fn attach(&mut self, seg: String, child: FieldSet) {
        if child.is_blank() {
            return;
        }
        match self.children.get_mut(&seg) {
            Some(mine) => mine.union_with(&child),
            None => {
                self.children.insert(seg, child);
            }
        }
    }

    /// The direct children, by encoded element.
    pub fn children(&self) -> impl Iterator<Item = (&str, &FieldSet)> {
        self.children.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// True when this node itself is a member.
    pub fn is_member(&self) -> bool {
        self.member
    }

    /// The fields an apply configuration sets, as upstream records them for an
    /// `Apply` operation: leaves and keyed/set list elements are members;
    /// `apiVersion`, `kind` and server-owned metadata are not tracked.
    pub fn from_applied(obj: &Value, root: SchemaNode) -> FieldSet {
        let mut set = FieldSet::new();
        if let Value::Object(m) = obj {
            for (k, v) in m {
                if k == "apiVersion" || k == "kind" {
                    continue;
                }
                if k == "metadata" {
                    if let Value::Object(meta) = v {
                        let filtered: Map<String, Value> = meta
                            .iter()
                            .filter(|(mk, _)| !UNTRACKED_METADATA.contains(&mk.as_str()))
                            .map(|(mk, mv)| (mk.clone(), mv.clone()))
                            .collect();
                        if !filtered.is_empty() {
                            let child = set.children.entry(field_element(k)).or_default();
                            collect_map(&filtered, root.field(k).node, child);
                        }
                    }
                    continue;
                }
                collect_field(k, v, root.field(k), &mut set);
            }
        }
        set
    }
}

fn collect_map(m: &Map<String, Value>, node: SchemaNode, into: &mut FieldSet) {
    for (k, v) in m {
        collect_field(k, v, node.field(k), into);
    }
}

fn collect_field(k: &str, v: &Value, meta: FieldMeta, into: &mut FieldSet) {
    if v.is_null() || k.starts_with('$') {
        return;
    }
    let child = into.children.entry(field_element(k)).or_default();
    if meta.atomic {
        child.member = true;
        return;
    }
    match v {
        Value::Object(m) if !m.is_empty() => collect_map(m, meta.node, child),
        Value::Array(items) => match meta.list {
            ListStrategy::MergeByKey(_) => {
                for item in items {
                    let Some(seg) = key_element(item, meta.map_keys) else {
                        continue;
                    };
                    let item_set = child.children.entry(seg).or_default();
                    item_set.member = true;
                    if let Value::Object(m) = item {
                        collect_map(m, meta.node, item_set);
                    }
                }
                if child.children.is_empty() {
                    child.member = true;
                }
            }
            ListStrategy::MergeSet => {
                for item in items.iter().filter(|i| !i.is_null()) {
                    child
                        .children
                        .entry(value_element(item))
                        .or_default()
                        .member = true;
                }
                if child.children.is_empty() {
                    child.member = true;
                }
            }
            ListStrategy::Replace => child.member = true,
        },
        _ => child.member = true,
    }
    if !child.member && child.children.is_empty() {
        child.member = true;
    }
}

/// `f:<name>`
pub fn field_element(name: &str) -> String {
    format!("f:{name}")
}

/// `v:<json>`
pub fn value_element(v: &Value) -> String {
    format!("v:{v}")
}

/// `k:{...}` for a keyed list element, using the list-map keys (with their
/// defaults) in sorted order; `None` when the element has none of them.
pub fn key_element(item: &Value, map_keys: &[(&str, Option<&str>)]) -> Option<String> {
    let obj = item.as_object()?;
    let mut keys: BTreeMap<&str, Value> = BTreeMap::new();
    for (k, default) in map_keys {
        match (obj.get(*k), default) {
            (Some(v), _) if !v.is_null() => {
                keys.insert(k, v.clone());
            }
            (_, Some(d)) => {
                keys.insert(k, Value::String((*d).to_string()));
            }
            _ => {}
        }
    }
    if keys.is_empty() || map_keys.first().is_some_and(|(k, _)| !obj.contains_key(*k)) {
        return None;
    }
    let m: Map<String, Value> = keys.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
    Some(format!("k:{}", Value::Object(m)))
}

/// The element of `parent` an encoded path element points at.
pub fn resolve<'a>(parent: &'a Value, seg: &str) -> Option<&'a Value> {
    match Segment::parse(seg)? {
        Segment::Field(f) => parent.as_object()?.get(f),
        Segment::Key(keys) => parent.as_array()?.iter().find(|i| key_matches(i, &keys)),
        Segment::Value(v) => parent.as_array()?.iter().find(|i| json_eq(i, &v)),
    }
}

/// Mutable [`resolve`].
pub fn resolve_mut<'a>(parent: &'a mut Value, seg: &str) -> Option<&'a mut Value> {
    match Segment::parse(seg)? {
        Segment::Field(f) => parent.as_object_mut()?.get_mut(f),
        Segment::Key(keys) => parent
            .as_array_mut()?
            .iter_mut()
            .find(|i| key_matches(i, &keys)),
        Segment::Value(v) => parent.as_array_mut()?.iter_mut().find(|i| json_eq(i, &v)),
    }
}

/// Remove what an encoded path element points at from `parent`; true if found.
pub fn remove_element(parent: &mut Value, seg: &str) -> bool {
    match Segment::parse(seg) {
        Some(Segment::Field(f)) => parent
            .as_object_mut()
            .is_some_and(|m| m.shift_remove(f).is_some()),
        Some(Segment::Key(keys)) => remove_from_list(parent, |i| key_matches(i, &keys)),
        Some(Segment::Value(v)) => remove_from_list(parent, |i| json_eq(i, &v)),
        None => false,
    }
}

fn remove_from_list(parent: &mut Value, pred: impl Fn(&Value) -> bool) -> bool {
    let Some(list) = parent.as_array_mut() else {
        return false;
    };
    let before = list.len();
    list.retain(|i| !pred(i));
    list.len() != before
}

/// Render an encoded path like upstream's conflict messages:
/// `.spec.template.spec.containers[name="app"].image`.
pub fn render_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        match Segment::parse(seg) {
            Some(Segment::Field(f)) => {
                out.push('.');
                out.push_str(f);
            }
            Some(Segment::Key(keys)) => {
                let parts: Vec<String> = keys.iter().map(|(k, v)| format!("{k}={v}")).collect();
                out.push_str(&format!("[{}]", parts.join(",")));
            }
            Some(Segment::Value(v)) => out.push_str(&format!("[={v}]")),
            None => out.push_str(seg),
        }
    }
    out
}

enum Segment<'a> {
    Field(&'a str),
    Key(Map<String, Value>),
    Value(Value),
}

impl<'a> Segment<'a> {
    fn parse(seg: &'a str) -> Option<Segment<'a>> {
        if let Some(f) = seg.strip_prefix("f:") {
            Some(Segment::Field(f))
        } else if let Some(k) = seg.strip_prefix("k:") {
            match serde_json::from_str(k).ok()? {
                Value::Object(m) => Some(Segment::Key(m)),
                _ => None,
            }
        } else if let Some(v) = seg.strip_prefix("v:") {
            serde_json::from_str(v).ok().map(Segment::Value)
        } else {
            None
        }
    }
}

/// An element matches a `k:` element when every key it carries equals the
/// recorded one (a key the element lacks is taken to be its default).
fn key_matches(item: &Value, keys: &Map<String, Value>) -> bool {
    let Some(obj) = item.as_object() else {
        return false;
    };
    keys.iter()
        .all(|(k, v)| obj.get(k).is_none_or(|iv| json_eq(iv, v)))
        && keys.keys().any(|k| obj.contains_key(k))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_v1_roundtrip() {
        let v = json!({"f:metadata": {"f:labels": {".": {}, "f:app": {}}}, "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:image": {}}}}});
        let set = FieldSet::from_fields_v1(&v).unwrap();
        assert_eq!(set.to_fields_v1(), v);
        assert!(set.contains(&["f:metadata".into(), "f:labels".into()]));
        assert!(!set.contains(&["f:metadata".into()]));
        assert!(set.contains(&[
            "f:spec".into(),
            "f:containers".into(),
            "k:{\"name\":\"app\"}".into(),
            "f:image".into()
        ]));
        assert_eq!(set.members().len(), 4);
        assert!(FieldSet::from_fields_v1(&json!([])).is_err());
    }

    #[test]
    fn applied_config_field_set() {
        let applied = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}, "finalizers": ["a"]},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [
                    {"name": "app", "image": "nginx", "ports": [{"containerPort": 80}], "args": ["a"]}
                ]}}
            }
        });
        let set = FieldSet::from_applied(&applied, SchemaNode::for_kind("apps", "Deployment"));
        assert_eq!(
            set.to_fields_v1(),
            json!({
                "f:metadata": {"f:finalizers": {"v:\"a\"": {}}, "f:labels": {"f:app": {}}},
                "f:spec": {
                    "f:replicas": {},
                    "f:selector": {},
                    "f:template": {"f:metadata": {"f:labels": {"f:app": {}}}, "f:spec": {"f:containers": {
                        "k:{\"name\":\"app\"}": {".": {}, "f:args": {}, "f:image": {}, "f:name": {},
                            "f:ports": {"k:{\"containerPort\":80,\"protocol\":\"TCP\"}": {".": {}, "f:containerPort": {}}}}
                    }}}
                }
            })
        );
    }

    #[test]
    fn difference_and_remove() {
        let a =
            FieldSet::from_fields_v1(&json!({"f:a": {}, "f:b": {"f:c": {}, "f:d": {}}})).unwrap();
        let b = FieldSet::from_fields_v1(&json!({"f:b": {"f:c": {}}})).unwrap();
        let d = a.difference(&b);
        assert_eq!(d.to_fields_v1(), json!({"f:a": {}, "f:b": {"f:d": {}}}));
        let mut a2 = a.clone();
        a2.remove(&["f:b".into(), "f:c".into()]);
        a2.remove(&["f:b".into(), "f:d".into()]);
        assert_eq!(a2.to_fields_v1(), json!({"f:a": {}}));
        assert!(!a2.is_empty());
        a2.remove(&["f:a".into()]);
        assert!(a2.is_empty());
    }

    #[test]
    fn union_subtract_and_subtrees() {
        let mut a = FieldSet::from_fields_v1(
            &json!({"f:data": {".": {}, "f:a": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:x": {}}}}),
        )
        .unwrap();
        let b = FieldSet::from_fields_v1(&json!({"f:data": {"f:a": {}, "f:c": {}}})).unwrap();
        let mut u = a.clone();
        u.union_with(&b);
        assert_eq!(
            u.to_fields_v1(),
            json!({"f:data": {".": {}, "f:a": {}, "f:b": {}, "f:c": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
        );
        // Path-wise difference: data itself stays a member.
        assert!(a.subtract(&b));
        assert_eq!(
            a.to_fields_v1(),
            json!({"f:data": {".": {}, "f:b": {}}, "f:metadata": {"f:labels": {"f:x": {}}}})
        );
        assert!(!a.subtract(&b));
        // Subtree removal: labels (and x under it) go, metadata is pruned.
        let gone = FieldSet::from_fields_v1(&json!({"f:metadata": {"f:labels": {}}})).unwrap();
        assert!(a.remove_subtrees(&gone));
        assert_eq!(a.to_fields_v1(), json!({"f:data": {".": {}, "f:b": {}}}));
        assert!(!a.remove_subtrees(&gone));
        let mut data = FieldSet::new();
        data.attach("f:data".into(), FieldSet::new());
        assert!(data.children().next().is_none());
    }

    #[test]
    fn resolve_and_remove_elements() {
        let mut obj = json!({"ports": [{"containerPort": 80, "protocol": "TCP"}, {"containerPort": 81}], "fin": ["a", "b"]});
        let ports = resolve(&obj, "f:ports").unwrap();
        assert_eq!(
            resolve(ports, "k:{\"containerPort\":81,\"protocol\":\"TCP\"}"),
            Some(&json!({"containerPort": 81}))
        );
        assert!(resolve(ports, "k:{\"containerPort\":82}").is_none());
        let fin = resolve_mut(&mut obj, "f:fin").unwrap();
        assert!(remove_element(fin, "v:\"a\""));
        assert!(!remove_element(fin, "v:\"zz\""));
        assert!(remove_element(&mut obj, "f:ports"));
        assert_eq!(obj, json!({"fin": ["b"]}));
        assert_eq!(
            render_path(&[
                "f:spec".into(),
                "f:containers".into(),
                "k:{\"name\":\"app\"}".into(),
                "f:image".into()
            ]),
            ".spec.containers[name=\"app\"].image"
        );
    }
}
