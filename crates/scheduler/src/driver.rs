//! The scheduler as an API client: watches nodes, pods and namespaces (through
//! `kube::runtime::watcher`), keeps the [`Cache`] and the [`SchedulingQueue`] in one
//! task, binds pods through `pods/<name>/binding`, and reports results as events and
//! the PodScheduled condition.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Event, Namespace, Node, Pod, PodCondition};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;
use tokio::sync::{mpsc, Semaphore};

use crate::cache::Cache;
use crate::fit_error::{FitError, Preemption};
use crate::info::{pod_key, NodeInfo, PodInfo};
use crate::preemption::Candidate;
use crate::queue::SchedulingQueue;
use crate::slim::{convert_event, WatchedNode, WatchedPod};

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// Pods whose `spec.schedulerName` is this are ours (`default-scheduler`).
    pub scheduler_name: String,
    /// Maximum concurrent API calls for bindings and status reports. Upstream
    /// binds each pod in a goroutine of its own, so this is only a safety bound:
    /// a binding waits on the store's group commit (milliseconds), and with too
    /// few in flight the bindings, not the decisions, set the rate (16 capped the
    /// end-to-end benchmark at about 800 pods/s; see `docs/scheduler.md`).
    pub parallelism: usize,
    /// Upstream's `percentageOfNodesToScore` (`None`: adaptive).
    pub percentage_of_nodes_to_score: Option<u32>,
    /// Pods scheduled between two passes over incoming watch events.
    pub batch_size: usize,
    /// Pods decided but not yet bound (or reported unschedulable) at most: the
    /// scheduler stops popping the queue beyond this, which bounds the memory
    /// held by waiting API calls and keeps decisions close to the cluster state.
    pub max_in_flight: usize,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            scheduler_name: "default-scheduler".to_string(),
            parallelism: 256,
            percentage_of_nodes_to_score: None,
            batch_size: 256,
            max_in_flight: 256,
        }
    }
}

/// Why the scheduler stopped.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// An API call failed in a way that stops the scheduler.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
    /// All watch streams ended.
    #[error("watch streams ended")]
    WatchEnded,
}

enum Msg {
    Node(Box<watcher::Event<Node>>),
    Pod(Box<watcher::Event<Pod>>),
    Namespace(Box<watcher::Event<Namespace>>),
    Bound {
        key: String,
        result: Result<(), BindFailure>,
    },
    /// An unschedulable report finished.
    Reported,
}

#[derive(Debug)]
enum BindFailure {
    /// The pod is gone or already bound: stop trying.
    Gone,
    /// Retry after backoff.
    Retry,
}

/// Run the scheduler until the watch streams end (they retry on errors, so in
/// practice until the task is dropped).
pub async fn run(config: SchedulerConfig, client: Client) -> Result<(), SchedulerError> {
    let (tx, mut rx) = mpsc::channel::<Msg>(4096);
    spawn_watch(
        watcher(
            Api::<WatchedNode>::all(client.clone()),
            watcher::Config::default(),
        ),
        tx.clone(),
        |e| Msg::Node(Box::new(convert_event(e))),
    );
    spawn_watch(
        watcher(
            Api::<WatchedPod>::all(client.clone()),
            watcher::Config::default(),
        ),
        tx.clone(),
        |e| Msg::Pod(Box::new(convert_event(e))),
    );
    spawn_watch(
        watcher(
            Api::<Namespace>::all(client.clone()),
            watcher::Config::default(),
        ),
        tx.clone(),
        |e| Msg::Namespace(Box::new(e)),
    );
    let mut s = Driver {
        cache: Cache::new(),
        queue: SchedulingQueue::new(),
        reporter: Reporter {
            client,
            component: Arc::new(config.scheduler_name.clone()),
            sem: Arc::new(Semaphore::new(config.parallelism.max(1))),
            event_sem: Arc::new(Semaphore::new(EVENT_PARALLELISM)),
            events_pending: Arc::new(AtomicUsize::new(0)),
        },
        tx,
        config,
        nodes_synced: false,
        pods_synced: false,
        init_nodes: None,
        init_pods: None,
        in_flight: 0,
    };
    s.cache
        .set_percentage_of_nodes_to_score(s.config.percentage_of_nodes_to_score);
    loop {
        let now = Instant::now();
        let busy = s.synced() && s.queue.stats().0 > 0 && s.has_room();
        let wake = if busy {
            now
        } else {
            s.queue
                .next_wakeup()
                .unwrap_or(now + Duration::from_secs(1))
                .min(now + Duration::from_secs(1))
        };
        tokio::select! {
            m = rx.recv() => match m {
                Some(m) => s.handle(m),
                None => return Err(SchedulerError::WatchEnded),
            },
            _ = tokio::time::sleep_until(wake.into()) => {}
        }
        while let Ok(m) = rx.try_recv() {
            s.handle(m);
        }
        if s.synced() {
            s.schedule_batch();
        }
    }
}

fn spawn_watch<K, S>(stream: S, tx: mpsc::Sender<Msg>, wrap: fn(watcher::Event<K>) -> Msg)
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream.default_backoff());
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(ev) => {
                    if tx.send(wrap(ev)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "scheduler: watch error; retrying"),
            }
        }
    });
}

struct Driver {
    cache: Cache,
    queue: SchedulingQueue<Pod>,
    reporter: Reporter,
    tx: mpsc::Sender<Msg>,
    config: SchedulerConfig,
    nodes_synced: bool,
    pods_synced: bool,
    init_nodes: Option<HashSet<String>>,
    init_pods: Option<HashSet<String>>,
    /// Bindings and unschedulable reports spawned and not finished.
    in_flight: usize,
}

/// Whether a node change can make a pending pod schedulable.
fn node_changed(old: Option<&NodeInfo>, new: &NodeInfo) -> bool {
    match old {
        None => true,
        Some(o) => {
            o.labels != new.labels
                || o.allocatable != new.allocatable
                || o.taints != new.taints
                || o.unschedulable != new.unschedulable
                || o.ready != new.ready
        }
    }
}

impl Driver {
    fn synced(&self) -> bool {
        self.nodes_synced && self.pods_synced
    }

    fn handle(&mut self, m: Msg) {
        let now = Instant::now();
        match m {
            Msg::Node(ev) => match *ev {
                watcher::Event::Init => self.init_nodes = Some(HashSet::new()),
                watcher::Event::InitApply(n) => {
                    if let Some(seen) = self.init_nodes.as_mut() {
                        seen.insert(n.metadata.name.clone().unwrap_or_default());
                    }
                    self.apply_node(&n, now);
                }
                watcher::Event::Apply(n) => self.apply_node(&n, now),
                watcher::Event::Delete(n) => {
                    self.cache
                        .remove_node(n.metadata.name.as_deref().unwrap_or(""));
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = self.init_nodes.take() {
                        let gone: Vec<String> = (0..self.cache.num_nodes())
                            .filter_map(|i| {
                                let name = &self.cache.nodes[i].name;
                                (!seen.contains(name)).then(|| name.clone())
                            })
                            .collect();
                        for n in gone {
                            self.cache.remove_node(&n);
                        }
                    }
                    self.nodes_synced = true;
                    self.queue.move_all(now);
                }
            },
            Msg::Pod(ev) => match *ev {
                watcher::Event::Init => self.init_pods = Some(HashSet::new()),
                watcher::Event::InitApply(p) => {
                    if let Some(seen) = self.init_pods.as_mut() {
                        seen.insert(pod_key(&p));
                    }
                    self.apply_pod(p, now);
                }
                watcher::Event::Apply(p) => self.apply_pod(p, now),
                watcher::Event::Delete(p) => {
                    let key = pod_key(&p);
                    let placed = self.cache.pod_node(&key).is_some();
                    self.cache.remove_pod(&key);
                    self.cache.clear_nomination(&key);
                    self.queue.delete(&key);
                    if placed {
                        self.queue.move_all(now);
                    }
                }
                watcher::Event::InitDone => {
                    if let Some(seen) = self.init_pods.take() {
                        let gone: Vec<String> = self
                            .cache
                            .placements()
                            .into_keys()
                            .filter(|k| !seen.contains(k) && !self.cache.is_assumed(k))
                            .collect();
                        for k in gone {
                            self.cache.remove_pod(&k);
                            self.queue.delete(&k);
                        }
                    }
                    self.pods_synced = true;
                }
            },
            Msg::Namespace(ev) => match *ev {
                watcher::Event::Apply(ns) | watcher::Event::InitApply(ns) => {
                    self.cache.upsert_namespace(&ns);
                    self.queue.move_all(now);
                }
                watcher::Event::Delete(ns) => {
                    self.cache
                        .remove_namespace(ns.metadata.name.as_deref().unwrap_or(""));
                }
                watcher::Event::Init | watcher::Event::InitDone => {}
            },
            Msg::Reported => self.in_flight = self.in_flight.saturating_sub(1),
            Msg::Bound { key, result } => {
                self.in_flight = self.in_flight.saturating_sub(1);
                self.bound(key, result, now);
            }
        }
    }

    /// Whether another decision may be started (see [`SchedulerConfig::max_in_flight`]).
    fn has_room(&self) -> bool {
        self.in_flight < self.config.max_in_flight.max(1)
    }

    fn bound(&mut self, key: String, result: Result<(), BindFailure>, now: Instant) {
        match result {
            Ok(()) => self.queue.done(&key),
            Err(BindFailure::Gone) => {
                self.cache.forget(&key);
                self.queue.delete(&key);
            }
            Err(BindFailure::Retry) => {
                self.cache.forget(&key);
                self.queue.backoff(&key, now);
            }
        }
    }

    fn apply_node(&mut self, n: &Node, now: Instant) {
        let new = NodeInfo::from_node(n);
        let changed = node_changed(self.cache.node(&new.name), &new);
        self.cache.upsert_node(n);
        if changed {
            self.queue.move_all(now);
        }
    }

    fn apply_pod(&mut self, p: Pod, now: Instant) {
        let key = pod_key(&p);
        let spec = p.spec.as_ref();
        let assigned = spec
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        if assigned {
            let known = self.cache.pod_node(&key).is_some();
            self.cache.upsert_pod(&p);
            self.cache.clear_nomination(&key);
            self.queue.delete(&key);
            if !known {
                self.queue.move_all(now);
            }
            return;
        }
        let finished = matches!(
            p.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let ours = spec
            .and_then(|s| s.scheduler_name.as_deref())
            .unwrap_or("default-scheduler")
            == self.config.scheduler_name;
        let gated = spec
            .and_then(|s| s.scheduling_gates.as_ref())
            .is_some_and(|g| !g.is_empty());
        if finished || !ours || gated || p.metadata.deletion_timestamp.is_some() {
            self.queue.delete(&key);
            self.cache.clear_nomination(&key);
            return;
        }
        if self.cache.is_assumed(&key) {
            return; // binding in flight
        }
        // Only updates of what the scheduler looks at (spec, labels) are a reason to
        // retry; our own status writes and other status changes are not.
        if let Some(old) = self.queue.get(&key) {
            if old.spec == p.spec && old.metadata.labels == p.metadata.labels {
                self.queue.update_item(&key, p);
                return;
            }
        }
        let priority = spec.and_then(|s| s.priority).unwrap_or(0);
        self.queue.add(&key, p, priority, now);
    }

    /// Run preemption for a pod that fits nowhere (see [`Cache::preempt`]).
    fn try_preempt(&mut self, pod: &Pod, fe: &mut FitError) -> Option<Candidate> {
        if !matches!(fe.preemption, Preemption::Diagnosis(_)) {
            return None;
        }
        let info = PodInfo::from_pod(pod);
        let nominated = pod
            .status
            .as_ref()
            .and_then(|s| s.nominated_node_name.as_deref());
        let c = self.cache.preempt(&info, nominated, fe)?;
        tracing::info!(pod = %info.key, node = %c.node, victims = c.victims.len(), "scheduler: preempting");
        Some(c)
    }

    fn schedule_batch(&mut self) {
        let now = Instant::now();
        for _ in 0..self.config.batch_size.max(1) {
            if !self.has_room() {
                return;
            }
            let Some((key, pod)) = self.queue.pop(now) else {
                return;
            };
            let pod = pod.clone();
            match self.cache.schedule_one(&pod) {
                Ok(node) => {
                    tracing::debug!(pod = %key, %node, "scheduler: assumed");
                    let rep = self.reporter.clone();
                    let tx = self.tx.clone();
                    self.in_flight += 1;
                    tokio::spawn(async move {
                        let result = rep.bind(&pod, &node).await;
                        let _ = tx.send(Msg::Bound { key, result }).await;
                    });
                }
                Err(mut fe) => {
                    let candidate = self.try_preempt(&pod, &mut fe);
                    let msg = fe.message();
                    tracing::debug!(pod = %key, %msg, "scheduler: unschedulable");
                    self.queue.unschedulable(&key, now);
                    let rep = self.reporter.clone();
                    let tx = self.tx.clone();
                    self.in_flight += 1;
                    tokio::spawn(async move {
                        if let Some(c) = candidate {
                            rep.preempt(&pod, &c).await;
                        }
                        rep.unschedulable(&pod, &msg).await;
                        let _ = tx.send(Msg::Reported).await;
                    });
                }
            }
        }
    }
}

/// Writes bindings, events and conditions.
#[derive(Clone)]
struct Reporter {
    client: Client,
    component: Arc<String>,
    sem: Arc<Semaphore>,
    event_sem: Arc<Semaphore>,
    events_pending: Arc<AtomicUsize>,
}

/// Events written concurrently.
const EVENT_PARALLELISM: usize = 4;
/// Events waiting to be written beyond which new ones are dropped.
const EVENT_BACKLOG: usize = 4096;

static EVENT_SEQ: AtomicU64 = AtomicU64::new(0);

fn now_rfc3339() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// A pod's namespace (`default` when unset) and name.
fn ns_and_name(pod: &Pod) -> (String, String) {
    (
        pod.metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into()),
        pod.metadata.name.clone().unwrap_or_default(),
    )
}

impl Reporter {
    async fn bind(&self, pod: &Pod, node: &str) -> Result<(), BindFailure> {
        let permit = self.sem.acquire().await.map_err(|_| BindFailure::Retry)?;
        let (ns, name) = ns_and_name(pod);
        let mut meta = json!({"name": name, "namespace": ns});
        if let Some(uid) = &pod.metadata.uid {
            meta["uid"] = json!(uid);
        }
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": meta,
            "target": {"apiVersion": "v1", "kind": "Node", "name": node},
        });
        let res =
            post_ignoring_body::<Pod, _>(&self.client, &ns, &name, Some("binding"), &binding).await;
        match res {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                tracing::info!(pod = %format!("{ns}/{name}"), error = %e.message, "scheduler: binding rejected");
                return Err(BindFailure::Gone);
            }
            Err(e) => {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "scheduler: binding failed");
                return Err(BindFailure::Retry);
            }
        }
        drop(permit);
        let msg = format!("Successfully assigned {ns}/{name} to {node}");
        self.spawn_event(pod, "Normal", "Scheduled", msg);
        Ok(())
    }

    /// Record an event off the binding path, as upstream's event broadcaster does:
    /// at most [`EVENT_PARALLELISM`] in flight, and dropped (with a debug log) when
    /// [`EVENT_BACKLOG`] are already waiting.
    fn spawn_event(&self, pod: &Pod, type_: &'static str, reason: &'static str, msg: String) {
        if self.events_pending.fetch_add(1, Ordering::Relaxed) >= EVENT_BACKLOG {
            self.events_pending.fetch_sub(1, Ordering::Relaxed);
            tracing::debug!(reason, "scheduler: event backlog full; event dropped");
            return;
        }
        let rep = self.clone();
        // Only what the event refers to, not the whole pod, waits in the backlog.
        let pod = Pod {
            metadata: kube::api::ObjectMeta {
                name: pod.metadata.name.clone(),
                namespace: pod.metadata.namespace.clone(),
                uid: pod.metadata.uid.clone(),
                resource_version: pod.metadata.resource_version.clone(),
                ..Default::default()
            },
            ..Default::default()
        };
        tokio::spawn(async move {
            if let Ok(_permit) = rep.event_sem.acquire().await {
                rep.event(&pod, type_, reason, &msg).await;
            }
            rep.events_pending.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Carry out a preemption: set `status.nominatedNodeName` on the preemptor,
    /// then delete each victim (guarded by its UID) with a `Preempted` event.
    async fn preempt(&self, pod: &Pod, c: &Candidate) {
        let Ok(_permit) = self.sem.acquire().await else {
            return;
        };
        let (ns, name) = ns_and_name(pod);
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        let patch = json!({"status": {"nominatedNodeName": c.node}});
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "scheduler: nominating failed");
        }
        let target = disruption_target_patch(&self.component, &now_rfc3339());
        for v in &c.victims {
            let vapi: Api<Pod> = Api::namespaced(self.client.clone(), &v.namespace);
            if let Err(e) = vapi
                .patch_status(&v.name, &PatchParams::default(), &Patch::Strategic(&target))
                .await
            {
                tracing::debug!(victim = %v.key, error = %e, "scheduler: DisruptionTarget not set");
            }
            let dp = DeleteParams {
                preconditions: (!v.uid.is_empty()).then(|| Preconditions {
                    uid: Some(v.uid.clone()),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match vapi.delete(&v.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => continue,
                Err(e) => {
                    tracing::warn!(victim = %v.key, error = %e, "scheduler: deleting victim failed");
                    continue;
                }
            }
            let victim = Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(v.name.clone()),
                    namespace: Some(v.namespace.clone()),
                    uid: Some(v.uid.clone()),
                    ..Default::default()
                },
                ..Default::default()
            };
            let msg = format!("Preempted by pod {uid} on node {}", c.node);
            self.spawn_event(&victim, "Normal", "Preempted", msg);
        }
    }

    async fn unschedulable(&self, pod: &Pod, msg: &str) {
        let Ok(permit) = self.sem.acquire().await else {
            return;
        };
        let (ns, name) = ns_and_name(pod);
        if let Some(patch) = condition_patch(pod, msg, &now_rfc3339()) {
            let api: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
            if let Err(e) = api
                .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                tracing::warn!(pod = %format!("{ns}/{name}"), error = %e, "scheduler: status update failed");
            }
        }
        drop(permit);
        self.spawn_event(pod, "Warning", "FailedScheduling", msg.to_string());
    }

    async fn event(&self, pod: &Pod, type_: &str, reason: &str, msg: &str) {
        let (ns, name) = ns_and_name(pod);
        let seq = EVENT_SEQ.fetch_add(1, Ordering::Relaxed);
        let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0);
        let now = now_rfc3339();
        let ev = json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": format!("{name}.{:x}", (stamp as u64).wrapping_add(seq)), "namespace": ns},
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": name,
                "namespace": ns,
                "uid": pod.metadata.uid,
                "resourceVersion": pod.metadata.resource_version,
            },
            "reason": reason,
            "message": msg,
            "type": type_,
            "source": {"component": *self.component},
            "reportingComponent": *self.component,
            "reportingInstance": *self.component,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        });
        let ev: Event = match serde_json::from_value(ev) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler: building event");
                return;
            }
        };
        if let Err(e) = post_ignoring_body::<Event, _>(&self.client, &ns, "", None, &ev).await {
            tracing::warn!(error = %e, "scheduler: event not recorded");
        }
    }
}

/// POST `body` to a namespaced collection of `K` (`sub` unset) or to the `sub`
/// subresource of object `name`, with the semantics of `Api::create` /
/// `Api::create_subresource` (an API error status is `kube::Error::Api`) but
/// without decoding the object the server returns: the scheduler only needs to
/// know whether the write succeeded.
async fn post_ignoring_body<K, B>(
    client: &Client,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    body: &B,
) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()>,
    B: serde::Serialize,
{
    let data = serde_json::to_vec(body).map_err(kube::Error::SerdeError)?;
    let req = kube::core::Request::new(K::url_path(&(), Some(ns)));
    let pp = PostParams::default();
    let req = match sub {
        Some(sub) => req.create_subresource(sub, name, &pp, data),
        None => req.create(&pp, data),
    }
    .map_err(kube::Error::BuildRequest)?;
    client.request_text(req).await.map(drop)
}

/// The strategic merge patch adding upstream's DisruptionTarget condition to a
/// victim of preemption by `scheduler`.
pub fn disruption_target_patch(scheduler: &str, now: &str) -> serde_json::Value {
    json!({"status": {"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": "PreemptionByScheduler",
        "message": format!("{scheduler}: preempting to accommodate a higher priority pod"),
        "lastTransitionTime": now,
    }]}})
}

/// The merge patch setting PodScheduled=False/Unschedulable with `msg` on the pod's
/// conditions, or `None` when the pod already says exactly that.
pub fn condition_patch(pod: &Pod, msg: &str, now: &str) -> Option<serde_json::Value> {
    let conds: Vec<PodCondition> = pod
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let old = conds.iter().find(|c| c.type_ == "PodScheduled");
    if old.is_some_and(|c| {
        c.status == "False"
            && c.reason.as_deref() == Some("Unschedulable")
            && c.message.as_deref() == Some(msg)
    }) {
        return None;
    }
    let transition = match old {
        Some(c) if c.status == "False" => c
            .last_transition_time
            .as_ref()
            .and_then(|t| serde_json::to_value(t).ok())
            .unwrap_or_else(|| json!(now)),
        _ => json!(now),
    };
    let mut out: Vec<serde_json::Value> = conds
        .iter()
        .filter(|c| c.type_ != "PodScheduled")
        .filter_map(|c| serde_json::to_value(c).ok())
        .collect();
    out.push(json!({
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": msg,
        "lastProbeTime": null,
        "lastTransitionTime": transition,
    }));
    Some(json!({"status": {"conditions": out}}))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn condition_patch_sets_and_dedups() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p"},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        let p = condition_patch(&pod, "0/1 nodes are available", "2026-01-01T00:00:00Z").unwrap();
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert_eq!(conds.len(), 2);
        assert_eq!(conds[1]["type"], "PodScheduled");
        assert_eq!(conds[1]["reason"], "Unschedulable");
        assert_eq!(conds[1]["message"], "0/1 nodes are available");
        let mut pod2 = pod.clone();
        pod2.status = Some(serde_json::from_value(p["status"].clone()).unwrap());
        assert!(condition_patch(&pod2, "0/1 nodes are available", "x").is_none());
        let again = condition_patch(&pod2, "other", "2027-01-01T00:00:00Z").unwrap();
        // The transition time is kept while the status stays False.
        assert_eq!(
            again["status"]["conditions"][1]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn disruption_target_condition() {
        let p = disruption_target_patch("default-scheduler", "2026-01-01T00:00:00Z");
        let c = &p["status"]["conditions"][0];
        assert_eq!(c["type"], "DisruptionTarget");
        assert_eq!(c["status"], "True");
        assert_eq!(c["reason"], "PreemptionByScheduler");
        assert_eq!(
            c["message"],
            "default-scheduler: preempting to accommodate a higher priority pod"
        );
    }

    #[test]
    fn node_change_detection() {
        let n: Node = serde_json::from_value(json!({"metadata": {"name": "n"}})).unwrap();
        let a = NodeInfo::from_node(&n);
        assert!(node_changed(None, &a));
        assert!(!node_changed(Some(&a), &a.clone()));
        let mut b = a.clone();
        b.unschedulable = true;
        assert!(node_changed(Some(&a), &b));
    }
}
