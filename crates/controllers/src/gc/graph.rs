//! The ownership graph of the garbage collector, kept up to date one watch
//! event at a time (in the spirit of upstream's `GraphBuilder`).
//!
//! Every observed object is a [`Node`] keyed by uid, holding only what the
//! collector needs (kind, namespace, name, owner references, deletion state).
//! A reverse index maps an owner uid to the uids of its dependents; it also
//! holds owners that were never observed, so the dependents of a missing owner
//! are found without scanning.
//!
//! [`Graph::upsert`] and [`Graph::remove`] cost O(owners + dependents) of the
//! object concerned and return the uids whose state may need attention.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

/// An object uid, shared between the node map and the dependents index.
pub type Uid = Arc<str>;

/// One `metadata.ownerReferences` entry, reduced to what the collector uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    /// The owner's uid.
    pub uid: Uid,
    /// The owner's `apiVersion` (interned).
    pub api_version: Arc<str>,
    /// The owner's kind (interned).
    pub kind: Arc<str>,
    /// The owner's name.
    pub name: Box<str>,
    /// `blockOwnerDeletion: true`.
    pub block: bool,
}

/// What the collector remembers of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Index of the object's kind in the collector's list of watched kinds.
    pub kind: usize,
    /// The namespace, if namespaced (interned).
    pub namespace: Option<Arc<str>>,
    /// The name.
    pub name: Box<str>,
    /// Its owners.
    pub owners: Box<[OwnerRef]>,
    /// `metadata.deletionTimestamp` is set.
    pub deleting: bool,
    /// It carries the `foregroundDeletion` finalizer.
    pub foreground: bool,
    /// It carries the `orphan` finalizer.
    pub orphan: bool,
}

impl Node {
    /// Whether the collector has something to do for this node itself: check
    /// its owners, or run the foreground / orphan finalizer it carries.
    pub fn needs_attention(&self) -> bool {
        if self.deleting {
            self.foreground || self.orphan
        } else {
            !self.owners.is_empty()
        }
    }
}

/// The ownership graph.
///
/// Most objects own nothing, are owned by nothing and are not being deleted:
/// the collector only needs to know that they exist (they may be named as
/// owners) and their kind (to reconcile a relist). Those with a canonical
/// uuid uid are kept as a 128-bit number and a kind index, about 33 bytes per
/// object instead of about 190 for a [`Node`] keyed by a shared string.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<Uid, Node>,
    /// Plain objects (see above): uuid → kind index.
    plain: HashMap<u128, u32>,
    /// owner uid → dependent uids (owners may be absent from `nodes`).
    dependents: HashMap<Uid, HashSet<Uid>>,
    /// Interned namespaces, apiVersions and kinds.
    strings: HashSet<Arc<str>>,
}

impl Graph {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// A shared copy of `s`: namespaces, kinds and apiVersions repeat a lot.
    pub fn intern(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return a.clone();
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(a.clone());
        a
    }

    /// The uid as stored (shared) if it is known, or a new one.
    pub fn shared_uid(&self, uid: &str) -> Uid {
        if let Some((k, _)) = self.nodes.get_key_value(uid) {
            return k.clone();
        }
        if let Some((k, _)) = self.dependents.get_key_value(uid) {
            return k.clone();
        }
        Arc::from(uid)
    }

    /// The node with this uid, if observed and not plain (a plain object owns
    /// nothing, has no owners and is not being deleted: nothing to do for it).
    pub fn get(&self, uid: &str) -> Option<&Node> {
        self.nodes.get(uid)
    }

    /// Whether an object with this uid is observed.
    pub fn contains(&self, uid: &str) -> bool {
        self.nodes.contains_key(uid) || parse_uuid(uid).is_some_and(|k| self.plain.contains_key(&k))
    }

    /// How many objects are observed.
    pub fn len(&self) -> usize {
        self.nodes.len() + self.plain.len()
    }

    /// Whether no object is observed.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty() && self.plain.is_empty()
    }

    /// The observed dependents of `owner` (an observed object or not).
    pub fn dependents(&self, owner: &str) -> Vec<(Uid, Node)> {
        self.dependents
            .get(owner)
            .into_iter()
            .flatten()
            .filter_map(|d| self.nodes.get(d).map(|n| (d.clone(), n.clone())))
            .collect()
    }

    /// The uids of every observed object of one kind (for reconciling a relist).
    pub fn uids_of_kind(&self, kind: usize) -> Vec<Uid> {
        let plain = self
            .plain
            .iter()
            .filter(|(_, k)| usize::try_from(**k).is_ok_and(|k| k == kind))
            .map(|(u, _)| Uid::from(format_uuid(*u)));
        self.nodes
            .iter()
            .filter(|(_, n)| n.kind == kind)
            .map(|(u, _)| u.clone())
            .chain(plain)
            .collect()
    }

    /// Owners (by uid) of `node` that are observed and being deleted: a change
    /// of one of their dependents may let their finalizer go.
    fn deleting_owners<'a>(&'a self, owners: &'a [OwnerRef]) -> impl Iterator<Item = Uid> + 'a {
        owners.iter().filter_map(move |o| {
            self.nodes
                .get_key_value(&*o.uid)
                .filter(|(_, n)| n.deleting)
                .map(|(u, _)| u.clone())
        })
    }

    /// Record an added or modified object. Returns the uids to look at: the
    /// object itself if it needs attention, and its owners (before and after)
    /// that are being deleted.
    pub fn upsert(&mut self, uid: &str, node: Node) -> Vec<Uid> {
        let key = parse_uuid(uid);
        let plain = key.filter(|_| node.owners.is_empty() && !node.deleting);
        let kind = u32::try_from(node.kind).ok();
        if let (Some(k), Some(kind)) = (plain, kind) {
            if !self.nodes.contains_key(uid) {
                // Plain before and after (or new): nothing links to change.
                self.plain.insert(k, kind);
                return Vec::new();
            }
        }
        if let Some(k) = key {
            self.plain.remove(&k);
        }
        let uid = self.shared_uid(uid);
        let old = self.nodes.remove(&uid);
        let mut dirty = Vec::new();
        let old_owners: &[OwnerRef] = old.as_ref().map_or(&[], |o| &o.owners);
        for o in old_owners {
            if !node.owners.iter().any(|n| n.uid == o.uid) {
                self.unlink(&o.uid, &uid);
            }
        }
        for o in node.owners.iter() {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        dirty.extend(self.deleting_owners(old_owners));
        dirty.extend(self.deleting_owners(&node.owners));
        if node.needs_attention() {
            dirty.push(uid.clone());
        }
        match (plain, kind) {
            (Some(k), Some(kind)) => {
                self.plain.insert(k, kind);
            }
            _ => {
                self.nodes.insert(uid, node);
            }
        }
        dirty.sort();
        dirty.dedup();
        dirty
    }

    /// Forget a deleted object. Returns the uids to look at: its dependents
    /// (their owner is gone) and its owners that are being deleted.
    pub fn remove(&mut self, uid: &str) -> Vec<Uid> {
        let Some((uid, node)) = self.nodes.remove_entry(uid) else {
            // A plain object: only its dependents (if any) are affected.
            if parse_uuid(uid).is_some_and(|k| self.plain.remove(&k).is_some()) {
                let mut dirty: Vec<Uid> = self
                    .dependents
                    .get(uid)
                    .into_iter()
                    .flatten()
                    .cloned()
                    .collect();
                dirty.sort();
                return dirty;
            }
            return Vec::new();
        };
        for o in node.owners.iter() {
            self.unlink(&o.uid, &uid);
        }
        let mut dirty: Vec<Uid> = self.deleting_owners(&node.owners).collect();
        if let Some(deps) = self.dependents.get(&uid) {
            dirty.extend(deps.iter().cloned());
        }
        dirty.sort();
        dirty.dedup();
        dirty
    }

    fn unlink(&mut self, owner: &str, dependent: &str) {
        if let Some(set) = self.dependents.get_mut(owner) {
            set.remove(dependent);
            if set.is_empty() {
                self.dependents.remove(owner);
            }
        }
    }
}

/// A uid in canonical uuid form (`8-4-4-4-12` lowercase hex digits) as a
/// number; `None` for anything else (kept as a string, so it prints back
/// exactly as it came).
pub fn parse_uuid(uid: &str) -> Option<u128> {
    let b = uid.as_bytes();
    if b.len() != 36 {
        return None;
    }
    let mut n: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            if c != b'-' {
                return None;
            }
            continue;
        }
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        n = (n << 4) | u128::from(d);
    }
    Some(n)
}

/// The canonical uuid form of a number from [`parse_uuid`].
pub fn format_uuid(n: u128) -> String {
    let h = format!("{n:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const U1: &str = "7e533b8f-033b-4b33-939a-85afbbde4057";
    const U2: &str = "1e026ac0-f533-4640-aad0-0a25436f2213";

    #[test]
    fn uuids_round_trip_and_others_are_refused() {
        assert_eq!(format_uuid(parse_uuid(U1).unwrap()), U1);
        assert_eq!(parse_uuid("00000000-0000-0000-0000-000000000001"), Some(1));
        assert_eq!(parse_uuid(&U1.to_uppercase()), None, "not canonical");
        assert_eq!(parse_uuid("7e533b8f0033b-4b33-939a-85afbbde4057"), None);
        assert_eq!(parse_uuid("u"), None);
        assert_eq!(parse_uuid("7e533b8f-033b-4b33-939a-85afbbde405g"), None);
    }

    #[test]
    fn plain_objects_are_compact_and_still_owners() {
        let mut g = Graph::new();
        let n = node(&mut g, "owner", vec![]);
        assert!(g.upsert(U1, n).is_empty());
        assert!(g.nodes.is_empty(), "kept in the compact map");
        assert!(g.contains(U1));
        assert!(g.get(U1).is_none(), "nothing to do for a plain object");
        assert_eq!(g.len(), 1);
        assert_eq!(uids(&g.uids_of_kind(0)), vec![U1]);
        assert!(g.uids_of_kind(3).is_empty());
        // A dependent of the plain owner.
        let r = owner(&mut g, U1, true);
        let n = node(&mut g, "dep", vec![r]);
        assert_eq!(uids(&g.upsert(U2, n)), vec![U2]);
        assert!(g.get(U2).is_some(), "an owned object is a full node");
        assert_eq!(g.dependents(U1).len(), 1);
        // The owner goes: its dependent is reported.
        assert_eq!(uids(&g.remove(U1)), vec![U2]);
        assert!(!g.contains(U1));
        assert!(g.remove(U1).is_empty(), "already gone");
    }

    #[test]
    fn objects_move_between_plain_and_full() {
        let mut g = Graph::new();
        let r = owner(&mut g, "o", false);
        let n = node(&mut g, "x", vec![r]);
        g.upsert(U1, n);
        assert!(g.get(U1).is_some());
        assert_eq!(g.dependents("o").len(), 1);
        // Orphaned: becomes plain, and the owner's index entry goes.
        let n = node(&mut g, "x", vec![]);
        assert!(g.upsert(U1, n).is_empty());
        assert!(g.get(U1).is_none() && g.contains(U1));
        assert!(g.dependents.is_empty());
        // Being deleted with a finalizer: a full node again, reported.
        let mut n = node(&mut g, "x", vec![]);
        n.deleting = true;
        n.foreground = true;
        assert_eq!(uids(&g.upsert(U1, n)), vec![U1]);
        assert!(g.get(U1).is_some_and(|n| n.foreground));
        assert!(g.plain.is_empty());
        assert_eq!(g.len(), 1);
        assert_eq!(uids(&g.remove(U1)), Vec::<&str>::new());
        assert!(g.is_empty());
    }

    fn owner(g: &mut Graph, uid: &str, block: bool) -> OwnerRef {
        OwnerRef {
            uid: Arc::from(uid),
            api_version: g.intern("v1"),
            kind: g.intern("ConfigMap"),
            name: format!("cm-{uid}").into(),
            block,
        }
    }

    fn node(g: &mut Graph, name: &str, owners: Vec<OwnerRef>) -> Node {
        Node {
            kind: 0,
            namespace: Some(g.intern("default")),
            name: name.into(),
            owners: owners.into(),
            deleting: false,
            foreground: false,
            orphan: false,
        }
    }

    fn uids(v: &[Uid]) -> Vec<&str> {
        v.iter().map(|u| &**u).collect()
    }

    #[test]
    fn upsert_indexes_dependents_and_reports_owned_objects() {
        let mut g = Graph::new();
        let n = node(&mut g, "owner", vec![]);
        assert!(
            g.upsert("o", n).is_empty(),
            "an unowned object needs nothing"
        );
        let r = owner(&mut g, "o", true);
        let n = node(&mut g, "dep", vec![r]);
        assert_eq!(uids(&g.upsert("d", n)), vec!["d"]);
        assert_eq!(g.len(), 2);
        let deps = g.dependents("o");
        assert_eq!(deps.len(), 1);
        assert_eq!(&*deps[0].0, "d");
        assert_eq!(&*deps[0].1.name, "dep");
        // Dependents of an owner never observed are indexed too.
        let r = owner(&mut g, "ghost", false);
        let n = node(&mut g, "dep2", vec![r]);
        g.upsert("d2", n);
        assert_eq!(g.dependents("ghost").len(), 1);
        assert!(!g.contains("ghost"));
    }

    #[test]
    fn owner_removal_reports_its_dependents() {
        let mut g = Graph::new();
        let n = node(&mut g, "owner", vec![]);
        g.upsert("o", n);
        for d in ["d1", "d2"] {
            let r = owner(&mut g, "o", false);
            let n = node(&mut g, d, vec![r]);
            g.upsert(d, n);
        }
        assert_eq!(uids(&g.remove("o")), vec!["d1", "d2"]);
        assert!(g.get("o").is_none());
        // Removing something unknown is harmless.
        assert!(g.remove("nothing").is_empty());
    }

    #[test]
    fn changed_owner_references_update_the_index() {
        let mut g = Graph::new();
        let a = owner(&mut g, "a", false);
        let n = node(&mut g, "dep", vec![a]);
        g.upsert("d", n);
        let b = owner(&mut g, "b", false);
        let n = node(&mut g, "dep", vec![b]);
        g.upsert("d", n);
        assert!(g.dependents("a").is_empty());
        assert_eq!(g.dependents("b").len(), 1);
        // Orphaned: no references left, nothing to do for it.
        let n = node(&mut g, "dep", vec![]);
        assert!(g.upsert("d", n).is_empty());
        assert!(g.dependents("b").is_empty());
        assert!(g.dependents.is_empty(), "empty index entries are dropped");
    }

    #[test]
    fn deleting_owners_are_reported_when_dependents_change_or_go() {
        let mut g = Graph::new();
        let mut o = node(&mut g, "owner", vec![]);
        o.deleting = true;
        o.foreground = true;
        assert_eq!(uids(&g.upsert("o", o)), vec!["o"]);
        let r = owner(&mut g, "o", true);
        let n = node(&mut g, "dep", vec![r]);
        assert_eq!(uids(&g.upsert("d", n)), vec!["d", "o"]);
        // The dependent drops the reference: the owner is reported (orphaning
        // progresses), the dependent needs nothing.
        let n = node(&mut g, "dep", vec![]);
        assert_eq!(uids(&g.upsert("d", n)), vec!["o"]);
        let r = owner(&mut g, "o", true);
        let n = node(&mut g, "dep", vec![r]);
        g.upsert("d", n);
        // The dependent goes: the owner is reported (its finalizer may go).
        assert_eq!(uids(&g.remove("d")), vec!["o"]);
        assert!(g.dependents("o").is_empty());
    }

    #[test]
    fn attention_rules() {
        let mut g = Graph::new();
        let r = owner(&mut g, "o", false);
        let mut n = node(&mut g, "x", vec![r]);
        assert!(n.needs_attention());
        n.deleting = true;
        assert!(
            !n.needs_attention(),
            "a dependent being deleted is left alone"
        );
        n.orphan = true;
        assert!(n.needs_attention());
        let mut n = node(&mut g, "y", vec![]);
        n.deleting = true;
        assert!(!n.needs_attention());
        n.foreground = true;
        assert!(n.needs_attention());
    }

    #[test]
    fn strings_are_interned() {
        let mut g = Graph::new();
        let a = g.intern("default");
        let b = g.intern("default");
        assert!(Arc::ptr_eq(&a, &b));
        let n = node(&mut g, "x", vec![]);
        g.upsert("u", n);
        assert_eq!(g.uids_of_kind(0).len(), 1);
        assert!(g.uids_of_kind(1).is_empty());
        assert!(!g.is_empty());
    }
}
