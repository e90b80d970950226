//! The garbage collector: follows `metadata.ownerReferences` across every
//! listable kind (found through discovery).
//!
//! - A dependent whose owners are all gone (absent, or present with another
//!   uid) is deleted in the background; dangling references next to live
//!   owners are removed.
//! - An owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted first; the finalizer is removed once no dependent
//!   with `blockOwnerDeletion: true` is left.
//! - An owner being deleted with the `orphan` finalizer has the references to
//!   it removed from its dependents, then the finalizer removed.
//!
//! Every kind is watched metadata-only (`PartialObjectMetadata`), except pods
//! under [`run_with_pods`], which come from the shared pod cache's watch
//! events ([`PodEvents`]) instead of a pod watch of their own, into an
//! incremental ownership [`graph`]: each watch event updates the object's
//! node and its owner/dependent edges and marks the few uids that may need
//! work, so the cost of an event is O(owners + dependents) of that object and
//! no full scan ever runs. Nothing is acted on before every kind has been
//! listed once; then every object that needs it is processed once. An owner
//! missing from the graph is confirmed with a live GET (unless its deletion
//! was just watched) before anything is deleted.

pub mod graph;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::core::PartialObjectMeta;
use kube::discovery::{verbs, ApiResource, Scope};
use kube::runtime::watcher::{self, watcher, Event};
use kube::runtime::WatchStreamExt;
use kube::Client;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::podcache::PodEvents;
use crate::util;
use graph::{Graph, Node, OwnerRef, Uid};

/// Finalizer asking for dependents to be deleted before the owner.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer asking for dependents to be orphaned before the owner goes.
pub const ORPHAN: &str = "orphan";

/// How often discovery is re-run to pick up new kinds.
const REDISCOVER: Duration = Duration::from_secs(300);
/// Failed work is retried this often.
const RETRY: Duration = Duration::from_secs(2);
/// How long a watched deletion stands in for a live GET of that owner.
const GONE_TTL: Duration = Duration::from_secs(60);
/// At most this many watch events are applied before work is done.
const BATCH: usize = 4096;

/// A watched kind.
#[derive(Clone, Debug)]
struct Kind {
    ar: ApiResource,
    namespaced: bool,
}

/// The object of a watch event: from a metadata-only watch, or a pod shared
/// with the pod cache.
enum Watched {
    Partial(Box<PartialObjectMeta<DynamicObject>>),
    Pod(Arc<Pod>),
}

impl Watched {
    /// What the collector reads of a watched object: its metadata.
    fn object_meta(&self) -> &ObjectMeta {
        match self {
            Watched::Partial(o) => &o.metadata,
            Watched::Pod(p) => &p.metadata,
        }
    }
}

/// One watch event of one kind (by index).
type KindEvent = (usize, Event<Watched>);

/// A metadata-only watch event as one of the collector's.
fn partial_event(ev: Event<PartialObjectMeta<DynamicObject>>) -> Event<Watched> {
    match ev {
        Event::Apply(o) => Event::Apply(Watched::Partial(Box::new(o))),
        Event::Delete(o) => Event::Delete(Watched::Partial(Box::new(o))),
        Event::InitApply(o) => Event::InitApply(Watched::Partial(Box::new(o))),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// A watch event of the shared pod cache as one of the collector's.
fn shared_pod_event(ev: Event<Arc<Pod>>) -> Event<Watched> {
    match ev {
        Event::Apply(p) => Event::Apply(Watched::Pod(p)),
        Event::Delete(p) => Event::Delete(Watched::Pod(p)),
        Event::InitApply(p) => Event::InitApply(Watched::Pod(p)),
        Event::Init => Event::Init,
        Event::InitDone => Event::InitDone,
    }
}

/// Errors of one step of work.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
}

/// Run the collector until the process ends (watching pods metadata-only
/// like every other kind).
pub async fn run(client: Client) {
    run_inner(client, None).await
}

/// Run the collector until the process ends, taking pods from the watch
/// events of a shared [`PodCache`](crate::podcache::PodCache).
pub async fn run_with_pods(client: Client, pods: PodEvents) {
    run_inner(client, Some(pods)).await
}

async fn run_inner(client: Client, pods: Option<PodEvents>) {
    let (tx, rx) = mpsc::channel(BATCH);
    let mut gc = Collector::new(client, tx);
    if let Some(pods) = pods {
        gc.follow_shared_pods(pods);
    }
    loop {
        if gc.discover().await {
            break;
        }
        tracing::warn!("garbage collector: discovery failed; retrying");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    gc.run(rx).await;
}

/// What became of one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists with the referenced uid.
    Present,
    /// The owner is gone (or was replaced by another object with its name).
    Absent,
    /// The owner's kind is unknown; leave the reference alone.
    Unknown,
}

/// What to do with a dependent given the state of each of its owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Delete it: every owner is gone.
    Delete,
    /// Drop the references with these uids; other owners remain.
    DropRefs(Vec<String>),
}

/// Decide about a dependent from its owners' states.
pub fn verdict(owners: &[(String, OwnerState)]) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    let absent: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s == OwnerState::Absent)
        .map(|(u, _)| u.clone())
        .collect();
    if absent.is_empty() {
        Verdict::Keep
    } else if absent.len() == owners.len() {
        Verdict::Delete
    } else {
        Verdict::DropRefs(absent)
    }
}

/// The node for an object's metadata (`None` without a uid).
pub fn node_from_meta(graph: &mut Graph, kind: usize, meta: &ObjectMeta) -> Option<(Uid, Node)> {
    let uid = graph.shared_uid(meta.uid.as_deref()?);
    let owners: Vec<OwnerRef> = meta
        .owner_references
        .iter()
        .flatten()
        .map(|r| OwnerRef {
            uid: graph.shared_uid(&r.uid),
            api_version: graph.intern(&r.api_version),
            kind: graph.intern(&r.kind),
            name: r.name.as_str().into(),
            block: r.block_owner_deletion == Some(true),
        })
        .collect();
    let has = |f: &str| meta.finalizers.iter().flatten().any(|x| x == f);
    let node = Node {
        kind,
        namespace: meta.namespace.as_deref().map(|n| graph.intern(n)),
        name: meta.name.as_deref().unwrap_or_default().into(),
        owners: owners.into(),
        deleting: meta.deletion_timestamp.is_some(),
        foreground: has(FOREGROUND),
        orphan: has(ORPHAN),
    };
    Some((uid, node))
}

/// Everything the collector knows, fed by watch events; no API access.
#[derive(Debug, Default)]
struct State {
    graph: Graph,
    /// Per kind: listed at least once.
    synced: Vec<bool>,
    /// Per kind being (re)listed: the uids seen so far.
    relist: HashMap<usize, HashSet<Uid>>,
    /// Uids to look at.
    dirty: HashSet<Uid>,
    /// Uids whose deletion was watched, and when.
    gone: HashMap<Uid, Instant>,
}

impl State {
    /// Apply one watch event of kind `k`.
    fn apply(&mut self, k: usize, ev: Event<Watched>) {
        match ev {
            Event::Apply(o) => {
                self.observe(k, o.object_meta());
            }
            Event::InitApply(o) => {
                if let Some(uid) = self.observe(k, o.object_meta()) {
                    self.relist.entry(k).or_default().insert(uid);
                }
            }
            Event::Delete(o) => {
                if let Some(uid) = o.object_meta().uid.as_deref() {
                    self.forget(uid);
                }
            }
            Event::Init => {
                self.relist.insert(k, HashSet::new());
            }
            Event::InitDone => {
                let seen = self.relist.remove(&k).unwrap_or_default();
                // Objects of this kind deleted while the watch was down.
                for uid in self.graph.uids_of_kind(k) {
                    if !seen.contains(&uid) {
                        self.forget(&uid);
                    }
                }
                if let Some(s) = self.synced.get_mut(k) {
                    *s = true;
                }
            }
        }
    }

    fn observe(&mut self, k: usize, meta: &ObjectMeta) -> Option<Uid> {
        let (uid, node) = node_from_meta(&mut self.graph, k, meta)?;
        let dirty = self.graph.upsert(&uid, node);
        self.dirty.extend(dirty);
        Some(uid)
    }

    fn forget(&mut self, uid: &str) {
        let uid = self.graph.shared_uid(uid);
        let dirty = self.graph.remove(&uid);
        self.dirty.extend(dirty);
        self.gone.insert(uid, Instant::now());
    }

    /// Drop watched deletions older than [`GONE_TTL`].
    fn expire_gone(&mut self, now: Instant) {
        self.gone
            .retain(|_, t| now.saturating_duration_since(*t) < GONE_TTL);
    }
}

struct Collector {
    client: Client,
    tx: mpsc::Sender<KindEvent>,
    kinds: Vec<Kind>,
    /// (group, plural) of the watched kinds.
    known: HashSet<(String, String)>,
    state: State,
    /// Every kind of the first discovery has been listed once.
    ready: bool,
    /// Uids whose work failed, retried every [`RETRY`].
    retry: HashSet<Uid>,
}

/// What was found out about owners during one round of work.
type OwnerCache = HashMap<Uid, OwnerState>;

impl Collector {
    fn new(client: Client, tx: mpsc::Sender<KindEvent>) -> Self {
        Self {
            client,
            tx,
            kinds: Vec::new(),
            known: HashSet::new(),
            state: State::default(),
            ready: false,
            retry: HashSet::new(),
        }
    }

    /// Run discovery and start watching kinds not watched yet.
    async fn discover(&mut self) -> bool {
        let discovery = match kube::Discovery::new(self.client.clone()).run().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery failed");
                return false;
            }
        };
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if !(caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE)
                    && caps.supports_operation(verbs::PATCH))
                    || ar.plural == "events"
                {
                    continue;
                }
                if !self.known.insert((ar.group.clone(), ar.plural.clone())) {
                    continue;
                }
                let idx = self.kinds.len();
                self.spawn_watch(idx, &ar);
                self.kinds.push(Kind {
                    ar,
                    namespaced: caps.scope == Scope::Namespaced,
                });
                // Kinds found after the first sync do not hold work back.
                self.state.synced.push(self.ready);
            }
        }
        true
    }

    /// Take pods from `pods` (the shared pod cache's watch events) rather
    /// than a watch of their own: discovery then skips them.
    fn follow_shared_pods(&mut self, mut pods: PodEvents) {
        let ar = ApiResource::erase::<Pod>(&());
        if !self.known.insert((ar.group.clone(), ar.plural.clone())) {
            return;
        }
        let idx = self.kinds.len();
        let tx = self.tx.clone();
        tokio::spawn(async move {
            while let Some(ev) = pods.next().await {
                if tx.send((idx, shared_pod_event(ev))).await.is_err() {
                    return;
                }
            }
        });
        self.kinds.push(Kind {
            ar,
            namespaced: true,
        });
        self.state.synced.push(self.ready);
    }

    fn spawn_watch(&self, idx: usize, ar: &ApiResource) {
        // `Api<PartialObjectMeta<_>>` lists and watches metadata only (what
        // `metadata_watcher` did before it was deprecated).
        let api: Api<PartialObjectMeta<DynamicObject>> = Api::all_with(self.client.clone(), ar);
        let tx = self.tx.clone();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(ev) = events.next().await {
                match ev {
                    Ok(ev) => {
                        if tx.send((idx, partial_event(ev))).await.is_err() {
                            return;
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "garbage collector: watch failed"),
                }
            }
        });
    }

    async fn run(mut self, mut rx: mpsc::Receiver<KindEvent>) {
        let mut retry = tokio::time::interval(RETRY);
        let mut rediscover = tokio::time::interval_at(Instant::now() + REDISCOVER, REDISCOVER);
        loop {
            tokio::select! {
                ev = rx.recv() => {
                    let Some((k, ev)) = ev else { return };
                    self.state.apply(k, ev);
                    // Apply what else is queued before doing work.
                    for _ in 1..BATCH {
                        match rx.try_recv() {
                            Ok((k, ev)) => self.state.apply(k, ev),
                            Err(_) => break,
                        }
                    }
                }
                _ = retry.tick() => {
                    let failed = std::mem::take(&mut self.retry);
                    self.state.dirty.extend(failed);
                    self.state.expire_gone(Instant::now());
                }
                _ = rediscover.tick() => {
                    self.discover().await;
                }
            }
            if !self.ready && self.state.synced.iter().all(|s| *s) {
                self.ready = true;
                tracing::info!(
                    objects = self.state.graph.len(),
                    kinds = self.kinds.len(),
                    "garbage collector: initial sync done"
                );
            }
            if self.ready && !self.state.dirty.is_empty() {
                self.work().await;
            }
        }
    }

    /// Look at every dirty uid once.
    async fn work(&mut self) {
        let dirty: Vec<Uid> = self.state.dirty.drain().collect();
        let mut cache = OwnerCache::new();
        for uid in dirty {
            if let Err(e) = self.handle(&uid, &mut cache).await {
                tracing::debug!(error = %e, %uid, "garbage collector: will retry");
                self.retry.insert(uid);
            }
        }
    }

    async fn handle(&self, uid: &str, cache: &mut OwnerCache) -> Result<(), Error> {
        let Some(node) = self.state.graph.get(uid).cloned() else {
            return Ok(());
        };
        if node.deleting {
            if node.orphan {
                return self.orphan(uid, &node).await;
            }
            if node.foreground {
                return self.foreground(uid, &node).await;
            }
            return Ok(());
        }
        if node.owners.is_empty() {
            return Ok(());
        }
        let mut states = Vec::with_capacity(node.owners.len());
        for r in node.owners.iter() {
            let s = self
                .owner_state(r, node.namespace.as_deref(), cache)
                .await?;
            states.push((r.uid.to_string(), s));
        }
        match verdict(&states) {
            Verdict::Keep => Ok(()),
            Verdict::Delete => self.delete(uid, &node, PropagationPolicy::Background).await,
            Verdict::DropRefs(gone) => self.drop_refs(uid, &node, &gone).await,
        }
    }

    fn kind_for(&self, api_version: &str, kind: &str) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.ar.api_version == api_version && k.ar.kind == kind)
            .or_else(|| {
                // Another version of the same group and kind.
                let group = api_version.rsplit_once('/').map_or("", |(g, _)| g);
                self.kinds
                    .iter()
                    .find(|k| k.ar.group == group && k.ar.kind == kind)
            })
    }

    fn api(&self, k: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
        match (k.namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &k.ar),
            _ => Api::all_with(self.client.clone(), &k.ar),
        }
    }

    /// The API of a node's kind, in its namespace.
    fn node_api(&self, node: &Node) -> Option<Api<DynamicObject>> {
        let k = self.kinds.get(node.kind)?;
        Some(self.api(k, node.namespace.as_deref()))
    }

    async fn owner_state(
        &self,
        r: &OwnerRef,
        dep_ns: Option<&str>,
        cache: &mut OwnerCache,
    ) -> Result<OwnerState, Error> {
        if self.state.graph.contains(&r.uid) {
            return Ok(OwnerState::Present);
        }
        if self.state.gone.contains_key(&r.uid) {
            return Ok(OwnerState::Absent);
        }
        if let Some(s) = cache.get(&r.uid) {
            return Ok(*s);
        }
        let Some(k) = self.kind_for(&r.api_version, &r.kind) else {
            return Ok(OwnerState::Unknown);
        };
        if k.namespaced && dep_ns.is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one.
            return Ok(OwnerState::Unknown);
        }
        // Not in the graph: confirm with a live GET (the watch may lag).
        let s = match self.api(k, dep_ns).get_metadata_opt(&r.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(&*r.uid) => OwnerState::Present,
            Ok(_) => OwnerState::Absent,
            // Not readable: leave the reference alone rather than retry forever.
            Err(e) if util::is_status(&e, 403) || util::is_status(&e, 405) => OwnerState::Unknown,
            Err(e) => return Err(e.into()),
        };
        cache.insert(r.uid.clone(), s);
        Ok(s)
    }

    async fn delete(&self, uid: &str, node: &Node, policy: PropagationPolicy) -> Result<(), Error> {
        let Some(api) = self.node_api(node) else {
            return Ok(());
        };
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::debug!(name = %node.name, %uid, "garbage collector: deleting dependent");
        ignore_gone(api.delete(&node.name, &dp).await.map(|_| ()))
    }

    /// The live metadata of a node, if it still exists with that uid.
    async fn live(
        &self,
        uid: &str,
        node: &Node,
    ) -> Result<Option<(Api<DynamicObject>, ObjectMeta)>, Error> {
        let Some(api) = self.node_api(node) else {
            return Ok(None);
        };
        match api.get_metadata_opt(&node.name).await? {
            Some(o) if o.metadata.uid.as_deref() == Some(uid) => Ok(Some((api, o.metadata))),
            _ => Ok(None),
        }
    }

    async fn drop_refs(&self, uid: &str, node: &Node, owners: &[String]) -> Result<(), Error> {
        let Some((api, meta)) = self.live(uid, node).await? else {
            return Ok(());
        };
        let all = meta.owner_references.unwrap_or_default();
        let refs: Vec<&OwnerReference> = all.iter().filter(|r| !owners.contains(&r.uid)).collect();
        if refs.len() == all.len() {
            return Ok(());
        }
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": meta.resource_version}});
        ignore_gone(
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )
    }

    async fn remove_finalizer(&self, uid: &str, node: &Node, fin: &str) -> Result<(), Error> {
        let Some((api, meta)) = self.live(uid, node).await? else {
            return Ok(());
        };
        let all = meta.finalizers.unwrap_or_default();
        let rest: Vec<&String> = all.iter().filter(|f| f.as_str() != fin).collect();
        if rest.len() == all.len() {
            return Ok(());
        }
        let patch =
            json!({"metadata": {"finalizers": rest, "resourceVersion": meta.resource_version}});
        ignore_gone(
            api.patch(&node.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map(|_| ()),
        )
    }

    /// An owner being deleted with `orphan`: drop the references to it, then
    /// (once the dependents' updates are watched) its finalizer.
    async fn orphan(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let deps = self.state.graph.dependents(uid);
        for (du, d) in &deps {
            self.drop_refs(du, d, &[uid.to_string()]).await?;
        }
        if deps.is_empty() {
            self.remove_finalizer(uid, node, ORPHAN).await?;
        }
        Ok(())
    }

    /// An owner being deleted with `foregroundDeletion`: delete its dependents
    /// (in the foreground too); drop the finalizer once none blocks.
    async fn foreground(&self, uid: &str, node: &Node) -> Result<(), Error> {
        let deps = self.state.graph.dependents(uid);
        let mut blocking = 0;
        for (du, d) in &deps {
            if d.owners.iter().any(|r| &*r.uid == uid && r.block) {
                blocking += 1;
            }
            if !d.deleting {
                self.delete(du, d, PropagationPolicy::Foreground).await?;
            }
        }
        if blocking == 0 {
            self.remove_finalizer(uid, node, FOREGROUND).await?;
        }
        Ok(())
    }
}

/// A 404 (gone already) or 409 (changed meanwhile: its next watch event brings
/// it back) is not a failure.
fn ignore_gone(r: Result<(), kube::Error>) -> Result<(), Error> {
    match r {
        Err(e) if !(util::is_status(&e, 404) || util::is_status(&e, 409)) => Err(e.into()),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        use OwnerState::*;
        assert_eq!(verdict(&[]), Verdict::Keep);
        assert_eq!(verdict(&[("a".into(), Present)]), Verdict::Keep);
        assert_eq!(verdict(&[("a".into(), Absent)]), Verdict::Delete);
        assert_eq!(
            verdict(&[("a".into(), Absent), ("b".into(), Absent)]),
            Verdict::Delete
        );
        assert_eq!(
            verdict(&[("a".into(), Absent), ("b".into(), Present)]),
            Verdict::DropRefs(vec!["a".into()])
        );
        assert_eq!(verdict(&[("a".into(), Unknown)]), Verdict::Keep);
        assert_eq!(
            verdict(&[("a".into(), Absent), ("b".into(), Unknown)]),
            Verdict::DropRefs(vec!["a".into()])
        );
    }

    fn meta(uid: &str, owners: &[&str]) -> PartialObjectMeta<DynamicObject> {
        let metadata = ObjectMeta {
            name: Some(format!("n-{uid}")),
            namespace: Some("default".into()),
            uid: Some(uid.into()),
            owner_references: Some(
                owners
                    .iter()
                    .map(|o| OwnerReference {
                        api_version: "v1".into(),
                        kind: "ConfigMap".into(),
                        name: format!("n-{o}"),
                        uid: (*o).into(),
                        block_owner_deletion: Some(true),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        };
        PartialObjectMeta {
            types: None,
            metadata,
            _phantom: std::marker::PhantomData,
        }
    }

    fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
        serde_json::from_value(json!("2026-01-01T00:00:00Z")).unwrap()
    }

    fn dirty(s: &mut State) -> Vec<String> {
        let mut v: Vec<String> = s.dirty.drain().map(|u| u.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn node_from_metadata() {
        let mut g = Graph::new();
        let mut m = meta("d", &["o1", "o2"]).metadata;
        m.finalizers = Some(vec![ORPHAN.into(), "other".into()]);
        m.deletion_timestamp = Some(now());
        let (uid, n) = node_from_meta(&mut g, 3, &m).unwrap();
        assert_eq!(&*uid, "d");
        assert_eq!(n.kind, 3);
        assert_eq!(n.namespace.as_deref(), Some("default"));
        assert_eq!(&*n.name, "n-d");
        assert_eq!(n.owners.len(), 2);
        assert_eq!(&*n.owners[1].uid, "o2");
        assert_eq!(&*n.owners[0].kind, "ConfigMap");
        assert!(n.owners[0].block);
        assert!(n.deleting && n.orphan && !n.foreground);
        m.uid = None;
        assert!(node_from_meta(&mut g, 0, &m).is_none(), "no uid, no node");
    }

    #[test]
    fn watch_events_mark_only_affected_uids() {
        let mut s = State {
            synced: vec![false, false],
            ..Default::default()
        };
        s.apply(0, partial_event(Event::Init));
        s.apply(0, partial_event(Event::InitApply(meta("o", &[]))));
        s.apply(1, partial_event(Event::Init));
        s.apply(1, partial_event(Event::InitApply(meta("d1", &["o"]))));
        s.apply(1, partial_event(Event::InitApply(meta("d2", &["o", "x"]))));
        s.apply(1, partial_event(Event::InitApply(meta("free", &[]))));
        assert_eq!(s.synced, vec![false, false]);
        s.apply(0, partial_event(Event::InitDone));
        s.apply(1, partial_event(Event::InitDone));
        assert_eq!(s.synced, vec![true, true]);
        // Startup: every owned object is looked at once.
        assert_eq!(dirty(&mut s), vec!["d1", "d2"]);
        // An unowned object changing marks nothing.
        s.apply(1, partial_event(Event::Apply(meta("free", &[]))));
        assert!(dirty(&mut s).is_empty());
        // The owner's deletion marks its dependents, and is remembered.
        s.apply(0, partial_event(Event::Delete(meta("o", &[]))));
        assert_eq!(dirty(&mut s), vec!["d1", "d2"]);
        assert!(s.gone.contains_key("o"));
        assert!(!s.graph.contains("o"));
        s.expire_gone(Instant::now() + GONE_TTL);
        assert!(s.gone.is_empty());
    }

    #[test]
    fn relist_forgets_objects_deleted_while_not_watching() {
        let mut s = State {
            synced: vec![false],
            ..Default::default()
        };
        s.apply(0, partial_event(Event::Init));
        s.apply(0, partial_event(Event::InitApply(meta("o", &[]))));
        s.apply(0, partial_event(Event::InitApply(meta("d", &["o"]))));
        s.apply(0, partial_event(Event::InitDone));
        dirty(&mut s);
        // The watch restarts; "o" is not listed any more.
        s.apply(0, partial_event(Event::Init));
        s.apply(0, partial_event(Event::InitApply(meta("d", &["o"]))));
        s.apply(0, partial_event(Event::InitDone));
        assert!(!s.graph.contains("o"));
        assert!(s.graph.contains("d"));
        assert_eq!(dirty(&mut s), vec!["d"]);
        assert!(s.gone.contains_key("o"));
    }

    #[test]
    fn foreground_owner_is_marked_when_a_dependent_goes() {
        let mut s = State::default();
        let mut o = meta("o", &[]);
        o.metadata.deletion_timestamp = Some(now());
        o.metadata.finalizers = Some(vec![FOREGROUND.into()]);
        s.apply(0, partial_event(Event::Apply(o)));
        s.apply(0, partial_event(Event::Apply(meta("d", &["o"]))));
        assert_eq!(dirty(&mut s), vec!["d", "o"]);
        s.apply(0, partial_event(Event::Delete(meta("d", &["o"]))));
        assert_eq!(dirty(&mut s), vec!["o"]);
    }

    fn pod(uid: &str, owners: &[&str]) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: meta(uid, owners).metadata,
            ..Default::default()
        })
    }

    #[test]
    fn shared_pod_events_feed_the_graph_like_watched_ones() {
        let mut s = State {
            synced: vec![false, false],
            ..Default::default()
        };
        s.apply(0, partial_event(Event::Init));
        s.apply(0, partial_event(Event::InitApply(meta("o", &[]))));
        s.apply(0, partial_event(Event::InitDone));
        for ev in [
            Event::Init,
            Event::InitApply(pod("p1", &["o"])),
            Event::InitApply(pod("p2", &[])),
            Event::InitDone,
        ] {
            s.apply(1, shared_pod_event(ev));
        }
        assert_eq!(s.synced, vec![true, true]);
        assert_eq!(dirty(&mut s), vec!["p1"]);
        assert_eq!(s.graph.dependents("o").len(), 1);
        // A pod losing its owner reference, then going.
        s.apply(1, shared_pod_event(Event::Apply(pod("p1", &[]))));
        assert!(s.graph.dependents("o").is_empty());
        s.apply(1, shared_pod_event(Event::Delete(pod("p2", &[]))));
        assert!(!s.graph.contains("p2"));
        assert!(s.gone.contains_key("p2"));
        // A relist drops the pods it no longer has.
        for ev in [Event::Init, Event::InitDone] {
            s.apply(1, shared_pod_event(ev));
        }
        assert!(!s.graph.contains("p1"));
    }

    #[tokio::test]
    async fn shared_pods_are_a_kind_discovery_skips() {
        let (client, _) = crate::util::fake::client(|_| crate::util::fake::Reply::status(404));
        let (tx, mut rx) = mpsc::channel(16);
        let mut gc = Collector::new(client, tx);
        let mut cache = crate::podcache::PodCache::new();
        gc.follow_shared_pods(cache.subscribe_events());
        assert_eq!(gc.kinds.len(), 1);
        assert_eq!(gc.kinds[0].ar.kind, "Pod");
        assert_eq!(gc.kinds[0].ar.api_version, "v1");
        assert!(gc.kinds[0].namespaced);
        assert!(gc.known.contains(&(String::new(), "pods".to_string())));
        assert_eq!(gc.state.synced, vec![false]);
        assert!(gc.kind_for("v1", "Pod").is_some());
        // The cache's events arrive as kind 0.
        let events = futures::stream::iter(
            [
                Event::Init,
                Event::InitApply(Arc::unwrap_or_clone(pod("p", &[]))),
                Event::InitDone,
            ]
            .into_iter()
            .map(Ok),
        );
        tokio::spawn(cache.feed(events));
        let mut got = Vec::new();
        for _ in 0..3 {
            let (k, ev) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .unwrap()
                .unwrap();
            got.push((k, matches!(ev, Event::InitApply(Watched::Pod(_)))));
        }
        assert_eq!(got, [(0, false), (0, true), (0, false)]);
    }
}
