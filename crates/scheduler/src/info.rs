//! Pods and nodes as the scheduler sees them: parsed once from the API objects into
//! the fields the filters and scores need.

use std::collections::BTreeSet;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    Node, Pod, PodAffinityTerm, Taint as ApiTaint, Toleration as ApiToleration,
    TopologySpreadConstraint,
};

use crate::resources::{non_zero_requests, pod_requests, Resources};
use crate::selector::{Labels, NodeTerm, Selector};

/// The hostname label (default topology key for per-node spreading).
pub const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The zone label.
pub const LABEL_ZONE: &str = "topology.kubernetes.io/zone";

/// `namespace/name` of a pod.
pub fn pod_key(pod: &Pod) -> String {
    format!(
        "{}/{}",
        pod.metadata.namespace.as_deref().unwrap_or("default"),
        pod.metadata.name.as_deref().unwrap_or("")
    )
}

/// A taint effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    /// Pods without a toleration are not scheduled.
    NoSchedule,
    /// The scheduler avoids the node.
    PreferNoSchedule,
    /// Pods without a toleration are not scheduled and are evicted.
    NoExecute,
}

impl Effect {
    fn parse(s: &str) -> Option<Effect> {
        match s {
            "NoSchedule" => Some(Effect::NoSchedule),
            "PreferNoSchedule" => Some(Effect::PreferNoSchedule),
            "NoExecute" => Some(Effect::NoExecute),
            _ => None,
        }
    }
}

/// A node taint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Taint {
    /// Key.
    pub key: String,
    /// Value (may be empty).
    pub value: String,
    /// Effect.
    pub effect: Effect,
}

impl Taint {
    fn from_api(t: &ApiTaint) -> Option<Taint> {
        Some(Taint {
            key: t.key.clone(),
            value: t.value.clone().unwrap_or_default(),
            effect: Effect::parse(&t.effect)?,
        })
    }
}

/// A pod toleration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Toleration {
    key: String,
    exists: bool,
    value: String,
    effect: Option<Effect>,
}

impl Toleration {
    fn from_api(t: &ApiToleration) -> Option<Toleration> {
        let effect = match t.effect.as_deref() {
            None | Some("") => None,
            Some(e) => Some(Effect::parse(e)?),
        };
        Some(Toleration {
            key: t.key.clone().unwrap_or_default(),
            exists: t.operator.as_deref() == Some("Exists"),
            value: t.value.clone().unwrap_or_default(),
            effect,
        })
    }

    /// Whether this toleration tolerates `t` (upstream's `ToleratesTaint`).
    pub fn tolerates(&self, t: &Taint) -> bool {
        if self.effect.is_some_and(|e| e != t.effect) {
            return false;
        }
        if !self.key.is_empty() && self.key != t.key {
            return false;
        }
        if self.exists {
            return true;
        }
        // An empty key with operator Equal is invalid in the API; treat as no match.
        !self.key.is_empty() && self.value == t.value
    }
}

/// Whether any toleration tolerates the taint.
pub fn tolerated(tols: &[Toleration], t: &Taint) -> bool {
    tols.iter().any(|tol| tol.tolerates(t))
}

/// A host port in use or wanted: protocol, host IP (`0.0.0.0` for any) and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HostPort {
    /// TCP, UDP or SCTP.
    pub protocol: String,
    /// Host IP (`0.0.0.0` when unset).
    pub ip: String,
    /// Port number.
    pub port: i32,
}

impl HostPort {
    /// Whether two host ports conflict (same protocol and port, and overlapping IPs).
    pub fn conflicts(&self, o: &HostPort) -> bool {
        self.port == o.port
            && self.protocol == o.protocol
            && (self.ip == o.ip || self.ip == "0.0.0.0" || o.ip == "0.0.0.0")
    }
}

/// Which namespaces an affinity term or spread constraint applies to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NamespaceSet {
    /// Explicit namespaces.
    pub names: BTreeSet<String>,
    /// Namespaces selected by their labels (`None` when no namespaceSelector).
    pub selector: Option<Selector>,
}

impl NamespaceSet {
    /// Only the given namespace.
    pub fn only(ns: &str) -> NamespaceSet {
        NamespaceSet {
            names: BTreeSet::from([ns.to_string()]),
            selector: None,
        }
    }

    /// Whether a namespace with these labels is in the set.
    pub fn contains(&self, ns: &str, ns_labels: Option<&Labels>) -> bool {
        if self.names.contains(ns) {
            return true;
        }
        match &self.selector {
            None => false,
            Some(Selector::All(r)) if r.is_empty() => true,
            Some(s) => ns_labels.is_some_and(|l| s.matches(l)),
        }
    }
}

/// The identity of a counted term: which pods (namespaces + selector) are counted in
/// which topology domains (by `topology_key`). Many pods share one term (all the
/// replicas of a Deployment), so counts are kept per term, incrementally.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TermKey {
    /// The namespaces of counted pods.
    pub namespaces: NamespaceSet,
    /// The labels of counted pods.
    pub selector: Selector,
    /// The node label defining a domain.
    pub topology_key: String,
}

impl TermKey {
    /// Whether a pod in namespace `ns` with `labels` is counted by this term.
    pub fn matches_pod(&self, ns: &str, labels: &Labels, ns_labels: Option<&Labels>) -> bool {
        self.selector.matches(labels) && self.namespaces.contains(ns, ns_labels)
    }
}

/// An inter-pod affinity or anti-affinity term, with its weight (1 for required
/// terms, as upstream's hardPodAffinityWeight when scoring).
#[derive(Debug, Clone)]
pub struct AffinityTerm {
    /// What is counted.
    pub key: Arc<TermKey>,
    /// Weight for scoring.
    pub weight: i64,
}

fn affinity_term(pod_ns: &str, t: &PodAffinityTerm, weight: i64) -> AffinityTerm {
    let mut names: BTreeSet<String> = t.namespaces.iter().flatten().cloned().collect();
    let selector = t
        .namespace_selector
        .as_ref()
        .map(|s| Selector::from_label_selector(Some(s)));
    if names.is_empty() && selector.is_none() {
        names.insert(pod_ns.to_string());
    }
    AffinityTerm {
        key: Arc::new(TermKey {
            namespaces: NamespaceSet { names, selector },
            selector: Selector::from_label_selector(t.label_selector.as_ref()),
            topology_key: t.topology_key.clone(),
        }),
        weight,
    }
}

/// A topology spread constraint.
#[derive(Debug, Clone)]
pub struct SpreadConstraint {
    /// Pods counted (the pod's namespace and the constraint's selector) per domain.
    pub key: Arc<TermKey>,
    /// Maximum allowed skew.
    pub max_skew: i64,
    /// `DoNotSchedule` (true) or `ScheduleAnyway` (false).
    pub hard: bool,
    /// Minimum number of eligible domains.
    pub min_domains: Option<i64>,
    /// Whether the incoming pod itself matches the selector.
    pub self_match: bool,
}

/// A pod, parsed for scheduling.
#[derive(Debug, Clone)]
pub struct PodInfo {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Labels.
    pub labels: Labels,
    /// `spec.nodeName` (empty when unassigned).
    pub node_name: String,
    /// `spec.schedulerName`.
    pub scheduler_name: String,
    /// Priority (`spec.priority`, default 0).
    pub priority: i32,
    /// Whether the pod may preempt (`preemptionPolicy` not `Never`).
    pub can_preempt: bool,
    /// Whether the pod is being deleted (`metadata.deletionTimestamp` set).
    pub terminating: bool,
    /// Effective requests (pods = 1).
    pub requests: Resources,
    /// CPU and memory for scoring (defaults for containers without requests).
    pub non_zero: (i64, i64),
    /// Host ports wanted.
    pub host_ports: Vec<HostPort>,
    /// `spec.nodeSelector`.
    pub node_selector: Labels,
    /// Required node affinity terms (ORed); `None` when absent.
    pub required_node_terms: Option<Vec<NodeTerm>>,
    /// Preferred node affinity terms with weights.
    pub preferred_node_terms: Vec<(i64, NodeTerm)>,
    /// Tolerations.
    pub tolerations: Vec<Toleration>,
    /// Required pod affinity terms.
    pub affinity_required: Vec<AffinityTerm>,
    /// Preferred pod affinity terms.
    pub affinity_preferred: Vec<AffinityTerm>,
    /// Required pod anti-affinity terms.
    pub anti_required: Vec<AffinityTerm>,
    /// Preferred pod anti-affinity terms.
    pub anti_preferred: Vec<AffinityTerm>,
    /// Topology spread constraints.
    pub spread: Vec<SpreadConstraint>,
    /// UID of the controlling owner (for default spreading of replicas).
    pub owner: Option<String>,
}

impl PodInfo {
    /// Parse a pod. Never fails: invalid selectors match nothing, bad quantities are 0.
    pub fn from_pod(pod: &Pod) -> PodInfo {
        let ns = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        let spec = pod.spec.as_ref();
        let mut host_ports = Vec::new();
        for c in spec.iter().flat_map(|s| s.containers.iter()) {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|p| *p > 0) {
                    host_ports.push(HostPort {
                        protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                        ip: p
                            .host_ip
                            .clone()
                            .filter(|s| !s.is_empty())
                            .unwrap_or_else(|| "0.0.0.0".into()),
                        port: hp,
                    });
                }
            }
        }
        let affinity = spec.and_then(|s| s.affinity.as_ref());
        let na = affinity.and_then(|a| a.node_affinity.as_ref());
        let required_node_terms = na
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|r| {
                r.node_selector_terms
                    .iter()
                    .map(NodeTerm::from_api)
                    .collect()
            });
        let preferred_node_terms = na
            .and_then(|n| {
                n.preferred_during_scheduling_ignored_during_execution
                    .as_ref()
            })
            .map(|p| {
                p.iter()
                    .map(|t| (i64::from(t.weight), NodeTerm::from_api(&t.preference)))
                    .collect()
            })
            .unwrap_or_default();
        let pa = affinity.and_then(|a| a.pod_affinity.as_ref());
        let paa = affinity.and_then(|a| a.pod_anti_affinity.as_ref());
        let req = |v: Option<&Vec<PodAffinityTerm>>| -> Vec<AffinityTerm> {
            v.into_iter()
                .flatten()
                .map(|t| affinity_term(&ns, t, 1))
                .collect()
        };
        let affinity_required = req(pa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let anti_required = req(paa.and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let pref = |v: Option<&Vec<k8s_openapi::api::core::v1::WeightedPodAffinityTerm>>| {
            v.into_iter()
                .flatten()
                .map(|w| affinity_term(&ns, &w.pod_affinity_term, i64::from(w.weight)))
                .collect::<Vec<_>>()
        };
        let affinity_preferred = pref(pa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let anti_preferred = pref(paa.and_then(|a| {
            a.preferred_during_scheduling_ignored_during_execution
                .as_ref()
        }));
        let spread = spec
            .and_then(|s| s.topology_spread_constraints.as_ref())
            .map(|v| {
                v.iter()
                    .map(|c| spread_constraint(&ns, &labels, c))
                    .collect()
            })
            .unwrap_or_default();
        let owner = pod
            .metadata
            .owner_references
            .iter()
            .flatten()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        PodInfo {
            key: pod_key(pod),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            node_name: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
            scheduler_name: spec
                .and_then(|s| s.scheduler_name.clone())
                .unwrap_or_else(|| "default-scheduler".into()),
            priority: spec.and_then(|s| s.priority).unwrap_or(0),
            can_preempt: spec.and_then(|s| s.preemption_policy.as_deref()) != Some("Never"),
            terminating: pod.metadata.deletion_timestamp.is_some(),
            requests: pod_requests(pod),
            non_zero: non_zero_requests(pod),
            host_ports,
            node_selector: spec
                .and_then(|s| s.node_selector.clone())
                .unwrap_or_default(),
            required_node_terms,
            preferred_node_terms,
            tolerations: spec
                .and_then(|s| s.tolerations.as_ref())
                .map(|t| t.iter().filter_map(Toleration::from_api).collect())
                .unwrap_or_default(),
            affinity_required,
            affinity_preferred,
            anti_required,
            anti_preferred,
            spread,
            owner,
            namespace: ns,
            labels,
        }
    }

    /// Whether the pod has any inter-pod (anti-)affinity term that existing pods are
    /// checked against.
    pub fn has_required_anti(&self) -> bool {
        !self.anti_required.is_empty()
    }
}

fn spread_constraint(ns: &str, labels: &Labels, c: &TopologySpreadConstraint) -> SpreadConstraint {
    let selector = Selector::from_label_selector(c.label_selector.as_ref());
    SpreadConstraint {
        self_match: selector.matches(labels),
        key: Arc::new(TermKey {
            namespaces: NamespaceSet::only(ns),
            selector,
            topology_key: c.topology_key.clone(),
        }),
        max_skew: i64::from(c.max_skew.max(1)),
        hard: c.when_unsatisfiable != "ScheduleAnyway",
        min_domains: c.min_domains.map(i64::from),
    }
}

/// A node, parsed, with the aggregates of the pods placed on it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: Labels,
    /// Allocatable resources (pods = max pods).
    pub allocatable: Resources,
    /// Sum of the requests of pods placed here (pods = number of pods).
    pub requested: Resources,
    /// CPU and memory requested, for scoring (non-zero defaults).
    pub non_zero_requested: (i64, i64),
    /// Taints.
    pub taints: Vec<Taint>,
    /// `spec.unschedulable` (cordoned).
    pub unschedulable: bool,
    /// Ready condition is True.
    pub ready: bool,
    /// Host ports in use.
    pub used_ports: Vec<HostPort>,
    /// Keys of the pods placed here.
    pub pods: BTreeSet<String>,
}

impl NodeInfo {
    /// Parse a node (no pods yet).
    pub fn from_node(node: &Node) -> NodeInfo {
        let status = node.status.as_ref();
        let allocatable = status
            .and_then(|s| s.allocatable.as_ref().or(s.capacity.as_ref()))
            .map(Resources::from_list)
            .unwrap_or_default();
        let ready = status
            .and_then(|s| s.conditions.as_ref())
            .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
            .is_some_and(|c| c.status == "True");
        let spec = node.spec.as_ref();
        NodeInfo {
            name: node.metadata.name.clone().unwrap_or_default(),
            labels: node.metadata.labels.clone().unwrap_or_default(),
            allocatable,
            requested: Resources::default(),
            non_zero_requested: (0, 0),
            taints: spec
                .and_then(|s| s.taints.as_ref())
                .map(|t| t.iter().filter_map(Taint::from_api).collect())
                .unwrap_or_default(),
            unschedulable: spec.and_then(|s| s.unschedulable).unwrap_or(false),
            ready,
            used_ports: Vec::new(),
            pods: BTreeSet::new(),
        }
    }

    pub(crate) fn add_pod(&mut self, p: &PodInfo) {
        self.requested.add(&p.requests);
        self.non_zero_requested.0 += p.non_zero.0;
        self.non_zero_requested.1 += p.non_zero.1;
        self.used_ports.extend(p.host_ports.iter().cloned());
        self.pods.insert(p.key.clone());
    }

    pub(crate) fn remove_pod(&mut self, p: &PodInfo) {
        if !self.pods.remove(&p.key) {
            return;
        }
        self.requested.sub(&p.requests);
        self.non_zero_requested.0 -= p.non_zero.0;
        self.non_zero_requested.1 -= p.non_zero.1;
        for hp in &p.host_ports {
            if let Some(i) = self.used_ports.iter().position(|u| u == hp) {
                self.used_ports.swap_remove(i);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tolerations_match_taints() {
        let t = Taint {
            key: "k".into(),
            value: "v".into(),
            effect: Effect::NoSchedule,
        };
        let tol = |v: serde_json::Value| {
            Toleration::from_api(&serde_json::from_value(v).unwrap()).unwrap()
        };
        assert!(tol(json!({"key": "k", "value": "v"})).tolerates(&t));
        assert!(tol(json!({"key": "k", "operator": "Exists"})).tolerates(&t));
        assert!(tol(json!({"operator": "Exists"})).tolerates(&t));
        assert!(!tol(json!({"key": "k", "value": "w"})).tolerates(&t));
        assert!(
            !tol(json!({"key": "k", "operator": "Exists", "effect": "NoExecute"})).tolerates(&t)
        );
        assert!(tol(json!({"key": "k", "value": "v", "effect": "NoSchedule"})).tolerates(&t));
    }

    #[test]
    fn host_port_conflicts() {
        let hp = |ip: &str, port| HostPort {
            protocol: "TCP".into(),
            ip: ip.into(),
            port,
        };
        assert!(hp("0.0.0.0", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(!hp("10.0.0.2", 80).conflicts(&hp("10.0.0.1", 80)));
        assert!(!hp("0.0.0.0", 81).conflicts(&hp("0.0.0.0", 80)));
        let mut udp = hp("0.0.0.0", 80);
        udp.protocol = "UDP".into();
        assert!(!udp.conflicts(&hp("0.0.0.0", 80)));
    }

    #[test]
    fn affinity_term_namespaces_default_to_pod_namespace() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "namespace": "ns1", "labels": {"app": "a"}},
            "spec": {"containers": [], "affinity": {"podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [
                    {"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": "kubernetes.io/hostname"},
                    {"labelSelector": {"matchLabels": {"app": "a"}}, "topologyKey": "zone", "namespaceSelector": {}}
                ]}}}
        }))
        .unwrap();
        let info = PodInfo::from_pod(&pod);
        assert_eq!(info.anti_required.len(), 2);
        let t0 = &info.anti_required[0].key;
        assert!(t0.matches_pod("ns1", &info.labels, None));
        assert!(!t0.matches_pod("ns2", &info.labels, None));
        let t1 = &info.anti_required[1].key;
        assert!(t1.matches_pod("ns2", &info.labels, None));
    }
}
