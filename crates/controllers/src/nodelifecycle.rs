//! Node lifecycle: notices nodes whose kubelet went silent, marks them
//! `Ready=Unknown` and taints them, and evicts pods from nodes with NoExecute
//! taints they do not tolerate (the NoExecute taint manager).
//!
//! A node's heartbeat is the later of its Lease (`kube-node-lease/<node>`)
//! `renewTime` and its `Ready` condition's `lastHeartbeatTime`; to be safe
//! against a kubelet clock running ahead, a heartbeat counts from when this
//! controller *saw* it change, unless the stamped time is older. A node
//! silent for longer than `grace_period` gets every condition `Unknown`
//! (reason `NodeStatusUnknown`) and the `node.kubernetes.io/unreachable`
//! NoSchedule and NoExecute taints; `Ready=False` gives the `not-ready` ones.
//! When the heartbeat resumes the taints are removed, and conditions this
//! controller set to Unknown are put back to healthy (a kubelet that posts
//! status overwrites them anyway). Pods on a node that is not ready get
//! `Ready=False`; pods on a node with a NoExecute taint are deleted once their
//! toleration's `tolerationSeconds` (counted from the taint's `timeAdded`)
//! has passed, at once if they do not tolerate it.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use futures::{future, StreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod, PodCondition, Taint};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::podcache::PodCache;
use crate::util::{self, SyncError};

/// Taint for a node whose kubelet stopped reporting.
pub const UNREACHABLE: &str = "node.kubernetes.io/unreachable";
/// Taint for a node reporting `Ready=False`.
pub const NOT_READY: &str = "node.kubernetes.io/not-ready";
const LEASE_NAMESPACE: &str = "kube-node-lease";
const UNKNOWN_MESSAGE: &str = "Kubelet stopped posting node status.";

/// Node lifecycle settings.
#[derive(Debug, Clone)]
pub struct NodeLifecycleConfig {
    /// How long a node may go without a heartbeat (`node-monitor-grace-period`).
    pub grace_period: Duration,
    /// How often nodes and pods are examined (`node-monitor-period`).
    pub monitor_period: Duration,
}

impl Default for NodeLifecycleConfig {
    fn default() -> Self {
        NodeLifecycleConfig {
            grace_period: Duration::from_secs(40),
            monitor_period: Duration::from_secs(1),
        }
    }
}

/// The health a node should be marked with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Heartbeats arrive and the node says it is ready.
    Ready,
    /// Heartbeats arrive but the node reports `Ready=False`.
    NotReady,
    /// No heartbeat within the grace period.
    Unknown,
}

/// Heartbeats seen per node: (stamped time, when it was first seen, wall clock then).
#[derive(Debug, Default)]
pub struct Heartbeats {
    seen: HashMap<String, (i64, Instant, i64)>,
}

impl Heartbeats {
    /// Seconds since the node's last heartbeat (`stamp` = its stamped time in
    /// seconds; `now` the wall clock in seconds).
    pub fn age(&mut self, node: &str, stamp: i64, now: i64) -> i64 {
        let local = Instant::now();
        let e = self
            .seen
            .entry(node.to_string())
            .or_insert((stamp, local, now));
        if e.0 != stamp {
            *e = (stamp, local, now);
        }
        let since_seen = i64::try_from(e.1.elapsed().as_secs()).unwrap_or(i64::MAX);
        if stamp <= e.2 {
            (now - stamp).max(since_seen).max(0)
        } else {
            since_seen
        }
    }

    /// Forget nodes that no longer exist.
    pub fn retain(&mut self, alive: impl Fn(&str) -> bool) {
        self.seen.retain(|k, _| alive(k));
    }
}

/// What health the node should have given its heartbeat age and Ready condition.
pub fn health(age: Duration, grace: Duration, node: &Node) -> Health {
    if age > grace {
        return Health::Unknown;
    }
    match ready_condition(node) {
        Some(c) if c.status == "False" => Health::NotReady,
        _ => Health::Ready,
    }
}

fn ready_condition(node: &Node) -> Option<&NodeCondition> {
    node.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == "Ready")
}

/// The node's taints with the lifecycle taints set for `health`.
pub fn desired_taints(node: &Node, health: Health, now: Timestamp) -> Vec<Taint> {
    let current: Vec<Taint> = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let want_key = match health {
        Health::Ready => None,
        Health::NotReady => Some(NOT_READY),
        Health::Unknown => Some(UNREACHABLE),
    };
    let mut out: Vec<Taint> = current
        .iter()
        .filter(|t| {
            let lifecycle = t.key == UNREACHABLE || t.key == NOT_READY;
            let ours = t.effect == "NoSchedule" || t.effect == "NoExecute";
            !(lifecycle && ours) || Some(t.key.as_str()) == want_key
        })
        .cloned()
        .collect();
    if let Some(key) = want_key {
        for effect in ["NoSchedule", "NoExecute"] {
            if !out.iter().any(|t| t.key == key && t.effect == effect) {
                out.push(Taint {
                    key: key.into(),
                    effect: effect.into(),
                    value: None,
                    time_added: (effect == "NoExecute")
                        .then_some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now)),
                });
            }
        }
    }
    out
}

/// When (seconds since the epoch) a pod on a node with `taints` must be
/// evicted: `Some(0)` now, `None` never.
pub fn eviction_time(pod: &Pod, taints: &[Taint], now: i64) -> Option<i64> {
    let tols = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or(&[]);
    let mut when: Option<i64> = None;
    for t in taints.iter().filter(|t| t.effect == "NoExecute") {
        let matching: Vec<_> = tols.iter().filter(|tol| util::tolerates(tol, t)).collect();
        if matching.is_empty() {
            return Some(0);
        }
        // Forever unless every matching toleration is bounded; then the shortest.
        if matching.iter().any(|m| m.toleration_seconds.is_none()) {
            continue;
        }
        let secs = matching
            .iter()
            .filter_map(|m| m.toleration_seconds)
            .min()
            .unwrap_or(0)
            .max(0);
        let added = t.time_added.as_ref().map_or(now, |a| a.0.as_second());
        let at = added + secs;
        when = Some(when.map_or(at, |w: i64| w.min(at)));
    }
    when
}

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client, cfg: NodeLifecycleConfig) {
    let store = PodCache::spawn_store(client.clone());
    run_with_pods(client, cfg, store).await;
}

/// Run the controller until the process ends, reading pods from a shared
/// [`PodCache`]'s `store`.
pub async fn run_with_pods(client: Client, cfg: NodeLifecycleConfig, pods: Store<Pod>) {
    let (nodes, nw) = reflector::store::<Node>();
    let (leases, lw) = reflector::store::<Lease>();
    let node_api: Api<Node> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), LEASE_NAMESPACE);
    let drain = |s: futures::stream::BoxStream<'static, ()>| {
        tokio::spawn(s.for_each(|_| future::ready(())))
    };
    drain(
        reflector::reflector(nw, watcher(node_api, watcher::Config::default()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    );
    drain(
        reflector::reflector(lw, watcher(lease_api, watcher::Config::default()))
            .default_backoff()
            .map(|_| ())
            .boxed(),
    );
    let recorder = Recorder::new(client.clone(), "node-controller");
    let mut beats = Heartbeats::default();
    if nodes.wait_until_ready().await.is_err()
        || leases.wait_until_ready().await.is_err()
        || pods.wait_until_ready().await.is_err()
    {
        return;
    }
    loop {
        if let Err(e) = pass(&client, &cfg, &recorder, &nodes, &leases, &pods, &mut beats).await {
            tracing::warn!(error = %e, "node lifecycle controller: pass failed");
        }
        tokio::time::sleep(cfg.monitor_period).await;
    }
}

async fn pass(
    client: &Client,
    cfg: &NodeLifecycleConfig,
    recorder: &Recorder,
    nodes: &Store<Node>,
    leases: &Store<Lease>,
    pods: &Store<Pod>,
    beats: &mut Heartbeats,
) -> Result<(), SyncError> {
    let now = Timestamp::now();
    let node_api: Api<Node> = Api::all(client.clone());
    let all_nodes = nodes.state();
    // Indexes built once per pass: with thousands of nodes, looking leases and
    // pods up per node would make the pass quadratic.
    let names: HashSet<String> = all_nodes.iter().map(|n| n.name_any()).collect();
    beats.retain(|n| names.contains(n));
    let renewals: HashMap<String, i64> = leases
        .state()
        .iter()
        .filter_map(|l| {
            let renew = l.spec.as_ref()?.renew_time.as_ref()?.0.as_second();
            Some((l.name_any(), renew))
        })
        .collect();
    let all_pods = pods.state();
    let mut pods_by_node: HashMap<&str, Vec<&Pod>> = HashMap::new();
    for p in all_pods.iter() {
        let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.as_deref()) else {
            continue;
        };
        if p.metadata.deletion_timestamp.is_none() && util::pod_is_active(p) {
            pods_by_node.entry(node).or_default().push(p.as_ref());
        }
    }
    let mut first_err = None;
    for node in all_nodes {
        let name = node.name_any();
        let stamp = [
            renewals.get(&name).copied(),
            ready_condition(&node)
                .and_then(|c| c.last_heartbeat_time.as_ref())
                .map(|t| t.0.as_second()),
            node.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second()),
        ]
        .into_iter()
        .flatten()
        .max()
        .unwrap_or(now.as_second());
        let age = beats.age(&name, stamp, now.as_second());
        let h = health(
            Duration::from_secs(u64::try_from(age).unwrap_or(0)),
            cfg.grace_period,
            &node,
        );
        if let Err(e) = sync_node(&node_api, recorder, &node, h, now).await {
            first_err.get_or_insert(e);
        }
        let taints = desired_taints(&node, h, now);
        // Pods need a look only on a node that is not Ready (their Ready
        // condition) or has NoExecute taints (eviction).
        if h == Health::Ready && !taints.iter().any(|t| t.effect == "NoExecute") {
            continue;
        }
        for pod in pods_by_node.get(name.as_str()).into_iter().flatten() {
            if let Err(e) = sync_pod(client, recorder, pod, h, &taints, now).await {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}

async fn sync_node(
    api: &Api<Node>,
    recorder: &Recorder,
    node: &Node,
    h: Health,
    now: Timestamp,
) -> Result<(), SyncError> {
    let name = node.name_any();
    let taints = desired_taints(node, h, now);
    let current = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.clone())
        .unwrap_or_default();
    let mut conds = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let t = k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now);
    let mut changed = false;
    match h {
        Health::Unknown => {
            if !conds.iter().any(|c| c.type_ == "Ready") {
                conds.push(NodeCondition {
                    type_: "Ready".into(),
                    status: "Unknown".into(),
                    reason: Some("NodeStatusNeverUpdated".into()),
                    message: Some("Kubelet never posted node status.".into()),
                    last_transition_time: Some(t.clone()),
                    last_heartbeat_time: None,
                });
                changed = true;
            }
            for c in conds.iter_mut().filter(|c| c.status != "Unknown") {
                c.status = "Unknown".into();
                c.reason = Some("NodeStatusUnknown".into());
                c.message = Some(UNKNOWN_MESSAGE.into());
                c.last_transition_time = Some(t.clone());
                changed = true;
            }
        }
        Health::Ready | Health::NotReady => {
            // Heartbeats resumed but nobody rewrote the conditions we set.
            for c in conds.iter_mut().filter(|c| {
                c.status == "Unknown" && c.reason.as_deref() == Some("NodeStatusUnknown")
            }) {
                let ready = c.type_ == "Ready";
                c.status = if ready { "True" } else { "False" }.into();
                c.reason = Some(
                    if ready {
                        "KubeletReady"
                    } else {
                        "NodeStatusRecovered"
                    }
                    .into(),
                );
                c.message = Some(
                    if ready {
                        "kubelet is posting ready status"
                    } else {
                        "node heartbeat resumed"
                    }
                    .into(),
                );
                c.last_transition_time = Some(t.clone());
                changed = true;
            }
        }
    }
    if changed {
        let patch = json!({"metadata": {"resourceVersion": node.metadata.resource_version}, "status": {"conditions": conds}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                let msg = format!(
                    "Node {name} status is now: {}",
                    if h == Health::Unknown {
                        "NodeNotReady"
                    } else {
                        "NodeReady"
                    }
                );
                let reason = if h == Health::Unknown {
                    "NodeNotReady"
                } else {
                    "NodeReady"
                };
                recorder
                    .publish(&node_ref(node), EventType::Normal, reason, &msg)
                    .await;
            }
            Err(e) if util::is_status(&e, 409) || util::is_status(&e, 404) => return Ok(()),
            Err(e) => return Err(e.into()),
        }
    }
    let same = taints.len() == current.len()
        && taints.iter().all(|t| {
            current
                .iter()
                .any(|c| c.key == t.key && c.effect == t.effect)
        });
    if !same {
        let patch = json!({"spec": {"taints": taints}});
        match api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {}
            Err(e) if util::is_status(&e, 409) || util::is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn node_ref(node: &Node) -> k8s_openapi::api::core::v1::ObjectReference {
    let mut r = Recorder::reference(node);
    // Events about cluster-scoped nodes live in `default`, as upstream.
    r.namespace = Some("default".into());
    r
}

async fn sync_pod(
    client: &Client,
    recorder: &Recorder,
    pod: &Pod,
    h: Health,
    taints: &[Taint],
    now: Timestamp,
) -> Result<(), SyncError> {
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    if let Some(at) = eviction_time(pod, taints, now.as_second()) {
        if at <= now.as_second() {
            if util::delete_same(&api, pod, DeleteParams::default()).await? {
                let msg = format!("Marking for deletion Pod {ns}/{name}");
                recorder
                    .publish(
                        &Recorder::reference(pod),
                        EventType::Normal,
                        "TaintManagerEviction",
                        &msg,
                    )
                    .await;
            }
            return Ok(());
        }
    }
    if h != Health::Ready && util::pod_is_ready(pod) {
        let mut conds: Vec<PodCondition> = pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.clone())
            .unwrap_or_default();
        for c in conds.iter_mut().filter(|c| c.type_ == "Ready") {
            c.status = "False".into();
            c.reason = Some("NodeNotReady".into());
            c.message = Some("Node is not ready".into());
            c.last_transition_time =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now));
        }
        let patch = json!({"metadata": {"resourceVersion": pod.metadata.resource_version}, "status": {"conditions": conds}});
        match api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                recorder
                    .publish(
                        &Recorder::reference(pod),
                        EventType::Warning,
                        "NodeNotReady",
                        "Node is not ready",
                    )
                    .await;
            }
            Err(e) if util::is_status(&e, 404) || util::is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeSpec, NodeStatus, PodSpec, Toleration};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn node(ready: &str, taints: Vec<Taint>) -> Node {
        Node {
            metadata: Default::default(),
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                conditions: Some(vec![NodeCondition {
                    type_: "Ready".into(),
                    status: ready.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn health_from_age_and_condition() {
        let g = Duration::from_secs(40);
        assert_eq!(
            health(Duration::from_secs(5), g, &node("True", vec![])),
            Health::Ready
        );
        assert_eq!(
            health(Duration::from_secs(41), g, &node("True", vec![])),
            Health::Unknown
        );
        assert_eq!(
            health(Duration::from_secs(5), g, &node("False", vec![])),
            Health::NotReady
        );
    }

    #[test]
    fn heartbeat_age_uses_the_older_of_stamp_and_sighting() {
        let mut b = Heartbeats::default();
        // A stamp from 100 s ago is stale at once.
        assert!(b.age("n", 900, 1000) >= 100);
        // A fresh stamp is fresh.
        assert_eq!(b.age("m", 1000, 1000), 0);
        // A stamp in the future (clock skew) counts from when it was seen.
        assert_eq!(b.age("f", 2000, 1000), 0);
    }

    #[test]
    fn taints_follow_health() {
        let now = Timestamp::from_second(1000).unwrap();
        let other = Taint {
            key: "dedicated".into(),
            effect: "NoSchedule".into(),
            ..Default::default()
        };
        let n = node("True", vec![other.clone()]);
        let t = desired_taints(&n, Health::Unknown, now);
        assert_eq!(t.len(), 3);
        assert!(t
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoExecute" && t.time_added.is_some()));
        assert!(t
            .iter()
            .any(|t| t.key == UNREACHABLE && t.effect == "NoSchedule"));
        let back = node("True", t);
        assert_eq!(
            desired_taints(&back, Health::Ready, now),
            vec![other.clone()]
        );
        let nr = desired_taints(&back, Health::NotReady, now);
        assert!(nr.iter().any(|t| t.key == NOT_READY) && !nr.iter().any(|t| t.key == UNREACHABLE));
    }

    #[test]
    fn eviction_times() {
        let taint = Taint {
            key: UNREACHABLE.into(),
            effect: "NoExecute".into(),
            value: None,
            time_added: Some(Time(Timestamp::from_second(1000).unwrap())),
        };
        let pod = |secs: Option<i64>| Pod {
            spec: Some(PodSpec {
                tolerations: Some(vec![Toleration {
                    key: Some(UNREACHABLE.into()),
                    operator: Some("Exists".into()),
                    effect: Some("NoExecute".into()),
                    toleration_seconds: secs,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            eviction_time(&pod(Some(2)), std::slice::from_ref(&taint), 1001),
            Some(1002)
        );
        assert_eq!(
            eviction_time(&pod(None), std::slice::from_ref(&taint), 1001),
            None
        );
        assert_eq!(
            eviction_time(&Pod::default(), std::slice::from_ref(&taint), 1001),
            Some(0)
        );
        assert_eq!(eviction_time(&Pod::default(), &[], 1001), None);
    }
}
