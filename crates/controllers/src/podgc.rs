//! The pod garbage collector, as upstream's `podgc` controller. Every
//! `period` it:
//!
//! - deletes terminated pods (phase `Succeeded` or `Failed`) beyond
//!   `terminated_pod_threshold` (`--terminated-pod-gc-threshold`, default
//!   12,500), evicted ones first, then oldest first;
//! - force-deletes pods bound to a node that does not exist, once the node has
//!   been missing for `quarantine` and a fresh GET confirms it is gone (the
//!   pod is first marked `Failed` with a `DisruptionTarget` condition, reason
//!   `DeletionByPodGC`);
//! - force-deletes terminating pods on a node that is not Ready and carries the
//!   `node.kubernetes.io/out-of-service` taint (upstream's `gcTerminating`);
//! - force-deletes terminating pods that were never scheduled.
//!
//! Force deletion is a DELETE with `gracePeriodSeconds: 0` and a UID
//! precondition. Pods are read from the shared pod cache at each pass (as
//! small summaries); nodes are summarised from a watch of their own.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use futures::{stream, FutureExt, StreamExt};
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use kube::runtime::reflector::Store;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Client;
use serde_json::json;

use crate::podcache::PodCache;
use crate::util;

/// Taint an administrator puts on a node that is shut down for good.
pub const OUT_OF_SERVICE: &str = "node.kubernetes.io/out-of-service";
/// Reason of the `DisruptionTarget` condition the collector sets.
pub const REASON: &str = "DeletionByPodGC";

/// Pod GC settings.
#[derive(Debug, Clone)]
pub struct PodGcConfig {
    /// Terminated pods kept before the oldest are deleted (0 disables that part).
    pub terminated_pod_threshold: usize,
    /// How often the collector runs (upstream: 20 s).
    pub period: Duration,
    /// How long a pod's node must be missing before the pod is deleted
    /// (upstream: 40 s).
    pub quarantine: Duration,
    /// Deletions in flight.
    pub concurrency: usize,
}

impl Default for PodGcConfig {
    fn default() -> Self {
        PodGcConfig {
            terminated_pod_threshold: 12_500,
            period: Duration::from_secs(20),
            quarantine: Duration::from_secs(40),
            concurrency: 8,
        }
    }
}

/// What the collector knows about a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodEntry {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID (deletions are conditional on it).
    pub uid: String,
    /// `spec.nodeName`, if bound.
    pub node: Option<String>,
    /// `status.phase`.
    pub phase: String,
    /// `status.reason == Evicted`.
    pub evicted: bool,
    /// Has a deletion timestamp.
    pub deleting: bool,
    /// Creation time.
    pub created: Option<Timestamp>,
}

impl PodEntry {
    /// The summary of `pod`.
    pub fn from_pod(pod: &Pod) -> PodEntry {
        let status = pod.status.as_ref();
        PodEntry {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node: pod
                .spec
                .as_ref()
                .and_then(|s| s.node_name.clone())
                .filter(|n| !n.is_empty()),
            phase: util::pod_phase(pod).to_string(),
            evicted: status.and_then(|s| s.reason.as_deref()) == Some("Evicted"),
            deleting: pod.metadata.deletion_timestamp.is_some(),
            created: pod.metadata.creation_timestamp.as_ref().map(|t| t.0),
        }
    }

    /// `namespace/name`.
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    /// Phase `Succeeded` or `Failed`.
    pub fn terminated(&self) -> bool {
        matches!(self.phase.as_str(), "Succeeded" | "Failed")
    }
}

/// What the collector knows about a node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NodeEntry {
    /// `Ready` condition is `True`.
    pub ready: bool,
    /// Has the out-of-service taint (any effect).
    pub out_of_service: bool,
}

impl NodeEntry {
    /// The summary of `node`.
    pub fn from_node(node: &Node) -> NodeEntry {
        let ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        let out_of_service = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|ts| ts.iter().any(|t| t.key == OUT_OF_SERVICE));
        NodeEntry {
            ready,
            out_of_service,
        }
    }
}

/// Terminated pods beyond `threshold`, in deletion order: evicted first, then
/// oldest first (name breaks ties).
pub fn terminated_over_threshold<'a>(
    pods: impl IntoIterator<Item = &'a PodEntry>,
    threshold: usize,
) -> Vec<&'a PodEntry> {
    if threshold == 0 {
        return Vec::new();
    }
    let mut done: Vec<&PodEntry> = pods.into_iter().filter(|p| p.terminated()).collect();
    let excess = done.len().saturating_sub(threshold);
    if excess == 0 {
        return Vec::new();
    }
    done.sort_by(|a, b| {
        b.evicted
            .cmp(&a.evicted)
            .then_with(|| a.created.cmp(&b.created))
            .then_with(|| a.key().cmp(&b.key()))
    });
    done.truncate(excess);
    done
}

/// Terminating pods on nodes that are not Ready and are tainted out-of-service.
pub fn terminating_out_of_service<'a>(
    pods: impl IntoIterator<Item = &'a PodEntry>,
    nodes: &HashMap<String, NodeEntry>,
) -> Vec<&'a PodEntry> {
    pods.into_iter()
        .filter(|p| p.deleting)
        .filter(|p| {
            p.node
                .as_ref()
                .and_then(|n| nodes.get(n))
                .is_some_and(|n| !n.ready && n.out_of_service)
        })
        .collect()
}

/// Terminating pods that were never bound to a node.
pub fn unscheduled_terminating<'a>(
    pods: impl IntoIterator<Item = &'a PodEntry>,
) -> Vec<&'a PodEntry> {
    pods.into_iter()
        .filter(|p| p.deleting && p.node.is_none())
        .collect()
}

/// Nodes pods are bound to that the node cache does not know.
pub fn missing_nodes<'a>(
    pods: impl IntoIterator<Item = &'a PodEntry>,
    nodes: &HashMap<String, NodeEntry>,
) -> BTreeSet<String> {
    pods.into_iter()
        .filter_map(|p| p.node.as_ref())
        .filter(|n| !nodes.contains_key(*n))
        .cloned()
        .collect()
}

/// When each missing node was first noticed missing.
#[derive(Debug, Default)]
pub struct Quarantine {
    since: HashMap<String, Instant>,
}

impl Quarantine {
    /// Record the nodes missing `now`; forget those no longer missing. Returns
    /// the nodes missing for at least `period`.
    pub fn update(
        &mut self,
        missing: &BTreeSet<String>,
        now: Instant,
        period: Duration,
    ) -> Vec<String> {
        self.since.retain(|n, _| missing.contains(n));
        for n in missing {
            self.since.entry(n.clone()).or_insert(now);
        }
        let mut due: Vec<String> = self
            .since
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= period)
            .map(|(n, _)| n.clone())
            .collect();
        due.sort();
        due
    }

    /// Stop tracking `node` (its pods were handled).
    pub fn forget(&mut self, node: &str) {
        self.since.remove(node);
    }
}

/// The status patch marking a pod failed by the collector: a `DisruptionTarget`
/// condition, and phase `Failed` unless the pod already finished.
pub fn disruption_patch(pod: &PodEntry, message: &str, now: &str) -> serde_json::Value {
    let mut status = json!({"conditions": [{
        "type": "DisruptionTarget",
        "status": "True",
        "reason": REASON,
        "message": message,
        "lastTransitionTime": now,
    }]});
    if !pod.terminated() {
        status["phase"] = json!("Failed");
    }
    json!({"status": status})
}

/// Errors of one collection pass.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
}

/// The collector's node cache (pods are read from a [`PodCache`] store).
#[derive(Debug, Default)]
struct Nodes {
    nodes: HashMap<String, NodeEntry>,
    synced: bool,
    init: Option<HashMap<String, NodeEntry>>,
}

impl Nodes {
    fn apply(&mut self, ev: watcher::Event<Node>) {
        let name = |n: &Node| n.metadata.name.clone().unwrap_or_default();
        match ev {
            watcher::Event::Init => self.init = Some(HashMap::new()),
            watcher::Event::InitApply(n) => {
                self.init
                    .get_or_insert_with(HashMap::new)
                    .insert(name(&n), NodeEntry::from_node(&n));
            }
            watcher::Event::InitDone => {
                self.nodes = self.init.take().unwrap_or_default();
                self.synced = true;
            }
            watcher::Event::Apply(n) => {
                self.nodes.insert(name(&n), NodeEntry::from_node(&n));
            }
            watcher::Event::Delete(n) => {
                self.nodes.remove(&name(&n));
            }
        }
    }
}

/// The summaries of the pods in `pods`, or `None` before it has been listed.
pub fn pod_entries(pods: &Store<Pod>) -> Option<Vec<PodEntry>> {
    match pods.wait_until_ready().now_or_never() {
        Some(Ok(())) => Some(pods.state().iter().map(|p| PodEntry::from_pod(p)).collect()),
        _ => None,
    }
}

/// Run the collector with default settings until the process ends (with a
/// pod cache of its own).
pub async fn run(client: Client) {
    run_with(client, PodGcConfig::default()).await
}

/// Run the collector with `cfg` until the process ends (with a pod cache of
/// its own).
pub async fn run_with(client: Client, cfg: PodGcConfig) {
    let pods = PodCache::spawn_store(client.clone());
    run_with_pods(client, cfg, pods).await
}

/// Run the collector with `cfg` until the process ends, reading pods from a
/// shared [`PodCache`]'s `store` at each pass.
pub async fn run_with_pods(client: Client, cfg: PodGcConfig, pods: Store<Pod>) {
    let mut node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(|r| async move { r.ok() })
        .boxed();
    let mut nodes = Nodes::default();
    let mut quarantine = Quarantine::default();
    let mut tick = tokio::time::interval(cfg.period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            ev = node_events.next() => match ev {
                Some(ev) => nodes.apply(ev),
                None => return,
            },
            _ = tick.tick() => {
                // Take in whatever is already queued before deciding anything.
                while let Some(Some(ev)) = node_events.next().now_or_never() {
                    nodes.apply(ev);
                }
                if !nodes.synced {
                    continue;
                }
                let Some(entries) = pod_entries(&pods) else {
                    continue;
                };
                if let Err(e) = pass(&client, &cfg, &entries, &nodes.nodes, &mut quarantine).await {
                    tracing::warn!(error = %e, "pod GC: pass failed");
                }
            }
        }
    }
}

/// A pod to force-delete, with the status patch to write first (if any).
struct Victim {
    pod: PodEntry,
    patch_message: Option<&'static str>,
}

async fn pass(
    client: &Client,
    cfg: &PodGcConfig,
    pods: &[PodEntry],
    nodes: &HashMap<String, NodeEntry>,
    quarantine: &mut Quarantine,
) -> Result<(), Error> {
    let mut victims: Vec<Victim> = Vec::new();
    for p in terminated_over_threshold(pods, cfg.terminated_pod_threshold) {
        victims.push(Victim {
            pod: p.clone(),
            patch_message: None,
        });
    }
    for p in terminating_out_of_service(pods, nodes) {
        victims.push(Victim {
            pod: p.clone(),
            patch_message: Some("PodGC: node is out of service"),
        });
    }
    for p in unscheduled_terminating(pods) {
        victims.push(Victim {
            pod: p.clone(),
            patch_message: None,
        });
    }
    let missing = missing_nodes(pods, nodes);
    let due = quarantine.update(&missing, Instant::now(), cfg.quarantine);
    let node_api: Api<Node> = Api::all(client.clone());
    for node in due {
        // The cache may lag: only a 404 from the API server counts.
        match node_api.get_opt(&node).await? {
            Some(_) => continue,
            None => {
                quarantine.forget(&node);
                for p in pods {
                    if p.node.as_deref() == Some(node.as_str()) {
                        victims.push(Victim {
                            pod: p.clone(),
                            patch_message: Some("PodGC: node no longer exists"),
                        });
                    }
                }
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    victims.retain(|v| seen.insert(v.pod.key()));
    if victims.is_empty() {
        return Ok(());
    }
    tracing::info!(count = victims.len(), "pod GC: deleting pods");
    let results: Vec<Result<(), kube::Error>> = stream::iter(victims)
        .map(|v| force_delete(client, v))
        .buffer_unordered(cfg.concurrency.max(1))
        .collect()
        .await;
    results
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), |e| Err(e.into()))
}

async fn force_delete(client: &Client, v: Victim) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(client.clone(), &v.pod.namespace);
    if let Some(msg) = v.patch_message {
        let now = Timestamp::now().to_string();
        let patch = disruption_patch(&v.pod, msg, &now);
        match api
            .patch_status(&v.pod.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if util::is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(v.pod.uid.clone()).filter(|u| !u.is_empty()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    tracing::info!(pod = %v.pod.key(), "pod GC: force deleting");
    match api.delete(&v.pod.name, &dp).await {
        Ok(_) => Ok(()),
        // Gone already, or replaced by a pod with another UID.
        Err(e) if util::is_status(&e, 404) || util::is_status(&e, 409) => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, node: Option<&str>, phase: &str, created_secs: i64) -> PodEntry {
        PodEntry {
            namespace: "ns".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            node: node.map(str::to_string),
            phase: phase.into(),
            evicted: false,
            deleting: false,
            created: Timestamp::from_second(created_secs).ok(),
        }
    }

    fn names(v: Vec<&PodEntry>) -> Vec<String> {
        v.into_iter().map(|p| p.name.clone()).collect()
    }

    #[test]
    fn terminated_pods_beyond_threshold_oldest_and_evicted_first() {
        let mut pods = vec![
            pod("old", None, "Succeeded", 10),
            pod("older", None, "Failed", 5),
            pod("new", None, "Failed", 30),
            pod("running", Some("n"), "Running", 1),
            pod("evicted", None, "Failed", 40),
        ];
        pods[4].evicted = true;
        assert!(terminated_over_threshold(&pods, 4).is_empty());
        assert!(terminated_over_threshold(&pods, 0).is_empty(), "0 disables");
        assert_eq!(
            names(terminated_over_threshold(&pods, 2)),
            ["evicted", "older"]
        );
        assert_eq!(
            names(terminated_over_threshold(&pods, 1)),
            ["evicted", "older", "old"]
        );
    }

    #[test]
    fn terminating_on_out_of_service_not_ready_nodes() {
        let mut a = pod("a", Some("down"), "Running", 1);
        a.deleting = true;
        let mut b = pod("b", Some("ready-oos"), "Running", 1);
        b.deleting = true;
        let c = pod("c", Some("down"), "Running", 1); // not terminating
        let mut d = pod("d", Some("down-no-taint"), "Running", 1);
        d.deleting = true;
        let nodes: HashMap<String, NodeEntry> = [
            (
                "down",
                NodeEntry {
                    ready: false,
                    out_of_service: true,
                },
            ),
            (
                "ready-oos",
                NodeEntry {
                    ready: true,
                    out_of_service: true,
                },
            ),
            (
                "down-no-taint",
                NodeEntry {
                    ready: false,
                    out_of_service: false,
                },
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        let pods = [a, b, c, d];
        assert_eq!(names(terminating_out_of_service(&pods, &nodes)), ["a"]);
    }

    #[test]
    fn unscheduled_terminating_and_missing_nodes() {
        let mut a = pod("a", None, "Pending", 1);
        a.deleting = true;
        let b = pod("b", None, "Pending", 1);
        let c = pod("c", Some("gone"), "Running", 1);
        let d = pod("d", Some("here"), "Running", 1);
        let nodes: HashMap<String, NodeEntry> = [("here".to_string(), NodeEntry::default())]
            .into_iter()
            .collect();
        let pods = [a, b, c, d];
        assert_eq!(names(unscheduled_terminating(&pods)), ["a"]);
        assert_eq!(
            missing_nodes(&pods, &nodes).into_iter().collect::<Vec<_>>(),
            ["gone"]
        );
    }

    #[test]
    fn quarantine_waits_and_forgets() {
        let mut q = Quarantine::default();
        let t0 = Instant::now();
        let period = Duration::from_secs(40);
        let missing: BTreeSet<String> = ["x".to_string()].into_iter().collect();
        assert!(q.update(&missing, t0, period).is_empty());
        assert!(q
            .update(&missing, t0 + Duration::from_secs(39), period)
            .is_empty());
        assert_eq!(
            q.update(&missing, t0 + Duration::from_secs(40), period),
            ["x"]
        );
        // The node came back: the clock restarts when it goes missing again.
        assert!(q
            .update(&BTreeSet::new(), t0 + Duration::from_secs(41), period)
            .is_empty());
        assert!(q
            .update(&missing, t0 + Duration::from_secs(42), period)
            .is_empty());
        q.forget("x");
        assert!(q
            .update(&missing, t0 + Duration::from_secs(90), period)
            .is_empty());
    }

    #[test]
    fn disruption_patch_fails_running_pods_only() {
        let running = pod("a", Some("n"), "Running", 1);
        let p = disruption_patch(&running, "PodGC: node no longer exists", "t");
        assert_eq!(p["status"]["phase"], "Failed");
        assert_eq!(p["status"]["conditions"][0]["type"], "DisruptionTarget");
        assert_eq!(p["status"]["conditions"][0]["reason"], REASON);
        let done = pod("b", Some("n"), "Succeeded", 1);
        assert!(disruption_patch(&done, "m", "t")["status"]
            .get("phase")
            .is_none());
    }

    #[test]
    fn entries_from_objects() {
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u",
                         "creationTimestamp": "2024-01-01T00:00:00Z",
                         "deletionTimestamp": "2024-01-01T00:01:00Z"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Failed", "reason": "Evicted"}
        }))
        .unwrap();
        let e = PodEntry::from_pod(&p);
        assert_eq!(e.key(), "ns/p");
        assert_eq!(e.node.as_deref(), Some("n1"));
        assert!(e.terminated() && e.evicted && e.deleting);
        let n: Node = serde_json::from_value(json!({
            "metadata": {"name": "n1"},
            "spec": {"taints": [{"key": OUT_OF_SERVICE, "effect": "NoExecute"}]},
            "status": {"conditions": [{"type": "Ready", "status": "False"}]}
        }))
        .unwrap();
        assert_eq!(
            NodeEntry::from_node(&n),
            NodeEntry {
                ready: false,
                out_of_service: true
            }
        );
    }

    #[test]
    fn node_cache_is_replaced_on_relist() {
        let mk = |name: &str| -> Node {
            serde_json::from_value(json!({"metadata": {"name": name}})).unwrap()
        };
        let mut n = Nodes::default();
        n.apply(watcher::Event::Apply(mk("stale")));
        n.apply(watcher::Event::Init);
        n.apply(watcher::Event::InitApply(mk("fresh")));
        assert!(!n.synced);
        n.apply(watcher::Event::InitDone);
        assert!(n.synced);
        assert_eq!(n.nodes.keys().collect::<Vec<_>>(), ["fresh"]);
        n.apply(watcher::Event::Delete(mk("fresh")));
        assert!(n.nodes.is_empty());
    }

    #[test]
    fn pods_are_summarised_from_the_cache_once_listed() {
        use kube::runtime::reflector;
        let (store, mut writer) = reflector::store::<Pod>();
        assert!(pod_entries(&store).is_none(), "not listed yet");
        let p: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Succeeded"}
        }))
        .unwrap();
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitApply(p));
        assert!(pod_entries(&store).is_none(), "list not complete");
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let entries = pod_entries(&store).expect("listed");
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key(), "ns/p");
        assert!(entries[0].terminated());
        assert_eq!(entries[0].node.as_deref(), Some("n1"));
    }
}
