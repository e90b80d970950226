//! Filters and scores, as upstream's default plugins: NodeUnschedulable,
//! TaintToleration, NodeAffinity, NodePorts, NodeResourcesFit, PodTopologySpread,
//! InterPodAffinity (filters, in that order); least-allocated, balanced allocation,
//! node affinity, taint toleration, inter-pod affinity and spreading (scores).
//!
//! Per-pod state is computed once ([`PreState`]) from the cache's per-term counts, so
//! filtering a node costs a few map lookups, independent of the number of pods.

use std::collections::HashMap;

use crate::cache::{Cache, Counted};
use crate::info::{tolerated, Effect, NodeInfo, PodInfo, Taint, LABEL_ZONE};
use crate::selector::any_term_matches;

/// Why a node was filtered out (the first failing plugin).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    Unschedulable,
    NotReady,
    Taint(usize),
    NodeAffinity,
    Ports,
    Resources,
    SpreadMissingLabel,
    Spread,
    Affinity,
    AntiAffinity,
    ExistingAntiAffinity,
}

impl Failure {
    /// Whether preemption cannot help (upstream's UnschedulableAndUnresolvable).
    pub(crate) fn unresolvable(self) -> bool {
        matches!(
            self,
            Failure::Unschedulable
                | Failure::NotReady
                | Failure::Taint(_)
                | Failure::NodeAffinity
                | Failure::SpreadMissingLabel
                | Failure::Affinity
        )
    }

    /// The reasons upstream reports for this failure on `node`.
    pub(crate) fn reasons(self, pod: &PodInfo, node: &NodeInfo) -> Vec<String> {
        let one = |s: &str| vec![s.to_string()];
        match self {
            Failure::Unschedulable => one("node(s) were unschedulable"),
            Failure::NotReady => {
                one("node(s) had untolerated taint {node.kubernetes.io/not-ready: }")
            }
            Failure::Taint(i) => {
                let t = &node.taints[i];
                vec![format!(
                    "node(s) had untolerated taint {{{}: {}}}",
                    t.key, t.value
                )]
            }
            Failure::NodeAffinity => one("node(s) didn't match Pod's node affinity/selector"),
            Failure::Ports => one("node(s) didn't have free ports for the requested pod ports"),
            Failure::Resources => insufficient_resources(pod, node),
            Failure::SpreadMissingLabel => {
                one("node(s) didn't match pod topology spread constraints (missing required label)")
            }
            Failure::Spread => one("node(s) didn't match pod topology spread constraints"),
            Failure::Affinity => one("node(s) didn't match pod affinity rules"),
            Failure::AntiAffinity => one("node(s) didn't match pod anti-affinity rules"),
            Failure::ExistingAntiAffinity => {
                one("node(s) didn't satisfy existing pods anti-affinity rules")
            }
        }
    }
}

/// A hard spread constraint with its precomputed global minimum.
pub(crate) struct HardSpread<'a> {
    counts: &'a Counted,
    min: i64,
    max_skew: i64,
    self_match: i64,
}

/// Per-pod state shared by all nodes in one scheduling attempt.
pub(crate) struct PreState<'a> {
    affinity_required: Vec<&'a Counted>,
    /// No pod matches any required affinity term, but the pod matches its own terms.
    affinity_first_of_group: bool,
    anti_required: Vec<&'a Counted>,
    /// (topology key, domains with placed pods whose required anti-affinity selects us)
    existing_anti: Vec<(&'a str, &'a HashMap<String, i64>)>,
    spread_hard: Vec<HardSpread<'a>>,
    spread_soft: Vec<&'a Counted>,
    affinity_scores: Vec<(&'a Counted, i64)>,
    existing_weights: Vec<(&'a str, &'a HashMap<String, i64>)>,
    owner_by_node: Option<&'a HashMap<String, i64>>,
    owner_by_zone: Option<&'a HashMap<String, i64>>,
}

impl Cache {
    /// Register the pod's terms (mutable), then build its [`PreState`].
    pub(crate) fn prepare(&mut self, pod: &PodInfo) -> PreIds {
        self.refresh();
        let mut ids = PreIds::default();
        for t in &pod.affinity_required {
            ids.affinity_required.push(self.counted_id(&t.key));
        }
        for t in &pod.anti_required {
            ids.anti_required.push(self.counted_id(&t.key));
        }
        for c in &pod.spread {
            let id = self.counted_id(&c.key);
            if c.hard {
                ids.spread_hard
                    .push((id, c.max_skew, c.min_domains, c.self_match));
            } else {
                ids.spread_soft.push(id);
            }
        }
        for t in &pod.affinity_preferred {
            let id = self.counted_id(&t.key);
            ids.affinity_scores.push((id, t.weight));
        }
        for t in &pod.anti_preferred {
            let id = self.counted_id(&t.key);
            ids.affinity_scores.push((id, -t.weight));
        }
        ids
    }

    pub(crate) fn pre_state(&self, pod: &PodInfo, ids: &PreIds) -> PreState<'_> {
        let affinity_required: Vec<&Counted> = ids
            .affinity_required
            .iter()
            .map(|i| &self.counted[*i])
            .collect();
        let ns_labels = self.namespace_labels(&pod.namespace);
        let affinity_first_of_group = !affinity_required.is_empty()
            && affinity_required.iter().all(|c| c.by_domain.is_empty())
            && pod
                .affinity_required
                .iter()
                .all(|t| t.key.matches_pod(&pod.namespace, &pod.labels, ns_labels));
        let mut existing_anti = Vec::new();
        let mut existing_weights = Vec::new();
        for id in self.carried_matching(pod) {
            let c = &self.carried[id];
            if !c.anti_required.is_empty() {
                existing_anti.push((c.key.topology_key.as_str(), &c.anti_required));
            }
            if !c.weight.is_empty() {
                existing_weights.push((c.key.topology_key.as_str(), &c.weight));
            }
        }
        let spread_hard = ids
            .spread_hard
            .iter()
            .map(|&(id, max_skew, min_domains, self_match)| {
                let counts = &self.counted[id];
                HardSpread {
                    min: self.spread_min(pod, counts, min_domains),
                    counts,
                    max_skew,
                    self_match: i64::from(self_match),
                }
            })
            .collect();
        let (owner_by_node, owner_by_zone) = match (&pod.owner, pod.spread.is_empty()) {
            (Some(o), true) => (self.owner_by_node.get(o), self.owner_by_zone.get(o)),
            _ => (None, None),
        };
        PreState {
            affinity_required,
            affinity_first_of_group,
            anti_required: ids
                .anti_required
                .iter()
                .map(|i| &self.counted[*i])
                .collect(),
            existing_anti,
            spread_hard,
            spread_soft: ids.spread_soft.iter().map(|i| &self.counted[*i]).collect(),
            affinity_scores: ids
                .affinity_scores
                .iter()
                .map(|(i, w)| (&self.counted[*i], *w))
                .collect(),
            existing_weights,
            owner_by_node,
            owner_by_zone,
        }
    }

    /// The smallest count among the eligible domains of a spread constraint: domains
    /// of nodes that pass the pod's node selector/affinity and carry the key.
    fn spread_min(&self, pod: &PodInfo, counts: &Counted, min_domains: Option<i64>) -> i64 {
        let key = &counts.key.topology_key;
        let mut domains: HashMap<&str, i64> = HashMap::new();
        for n in &self.nodes {
            if !node_affinity_ok(pod, n) {
                continue;
            }
            if let Some(v) = n.labels.get(key) {
                domains
                    .entry(v.as_str())
                    .or_insert_with(|| counts.by_domain.get(v).copied().unwrap_or(0));
            }
        }
        if min_domains.is_some_and(|m| (domains.len() as i64) < m) {
            return 0;
        }
        domains.values().copied().min().unwrap_or(0)
    }
}

/// Ids of the counted terms a pod uses (registered before the immutable phase).
#[derive(Debug, Default)]
pub(crate) struct PreIds {
    affinity_required: Vec<usize>,
    anti_required: Vec<usize>,
    spread_hard: Vec<(usize, i64, Option<i64>, bool)>,
    spread_soft: Vec<usize>,
    affinity_scores: Vec<(usize, i64)>,
}

fn node_affinity_ok(pod: &PodInfo, n: &NodeInfo) -> bool {
    for (k, v) in &pod.node_selector {
        if n.labels.get(k) != Some(v) {
            return false;
        }
    }
    match &pod.required_node_terms {
        Some(terms) => any_term_matches(terms, &n.name, &n.labels),
        None => true,
    }
}

fn tolerates_key(pod: &PodInfo, key: &str) -> bool {
    tolerated(
        &pod.tolerations,
        &Taint {
            key: key.to_string(),
            value: String::new(),
            effect: Effect::NoSchedule,
        },
    )
}

fn fits_resources(pod: &PodInfo, n: &NodeInfo) -> bool {
    let r = &pod.requests;
    let (a, u) = (&n.allocatable, &n.requested);
    if u.pods + 1 > a.pods {
        return false;
    }
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - u.milli_cpu {
        return false;
    }
    if r.memory > 0 && r.memory > a.memory - u.memory {
        return false;
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage {
        return false;
    }
    r.scalar.iter().all(|(k, v)| {
        *v <= 0
            || *v <= a.scalar.get(k).copied().unwrap_or(0) - u.scalar.get(k).copied().unwrap_or(0)
    })
}

fn insufficient_resources(pod: &PodInfo, n: &NodeInfo) -> Vec<String> {
    let r = &pod.requests;
    let (a, u) = (&n.allocatable, &n.requested);
    let mut out = Vec::new();
    if u.pods + 1 > a.pods {
        out.push("Too many pods".to_string());
    }
    if r.milli_cpu > 0 && r.milli_cpu > a.milli_cpu - u.milli_cpu {
        out.push("Insufficient cpu".to_string());
    }
    if r.memory > 0 && r.memory > a.memory - u.memory {
        out.push("Insufficient memory".to_string());
    }
    if r.ephemeral_storage > 0 && r.ephemeral_storage > a.ephemeral_storage - u.ephemeral_storage {
        out.push("Insufficient ephemeral-storage".to_string());
    }
    for (k, v) in &r.scalar {
        let free = a.scalar.get(k).copied().unwrap_or(0) - u.scalar.get(k).copied().unwrap_or(0);
        if *v > 0 && *v > free {
            out.push(format!("Insufficient {k}"));
        }
    }
    out
}

/// Run the filters on one node; `None` when the pod fits.
pub(crate) fn filter(pre: &PreState<'_>, pod: &PodInfo, n: &NodeInfo) -> Option<Failure> {
    // NodeUnschedulable.
    if n.unschedulable && !tolerates_key(pod, "node.kubernetes.io/unschedulable") {
        return Some(Failure::Unschedulable);
    }
    // TaintToleration (a node without Ready=True counts as tainted not-ready, which is
    // what the node lifecycle controller would do).
    if !n.ready && !tolerates_key(pod, "node.kubernetes.io/not-ready") {
        return Some(Failure::NotReady);
    }
    for (i, t) in n.taints.iter().enumerate() {
        if t.effect != Effect::PreferNoSchedule && !tolerated(&pod.tolerations, t) {
            return Some(Failure::Taint(i));
        }
    }
    // NodeAffinity (nodeSelector and required terms).
    if !node_affinity_ok(pod, n) {
        return Some(Failure::NodeAffinity);
    }
    // NodePorts.
    if pod
        .host_ports
        .iter()
        .any(|p| n.used_ports.iter().any(|u| u.conflicts(p)))
    {
        return Some(Failure::Ports);
    }
    // NodeResourcesFit.
    if !fits_resources(pod, n) {
        return Some(Failure::Resources);
    }
    // PodTopologySpread.
    for c in &pre.spread_hard {
        let Some(v) = n.labels.get(&c.counts.key.topology_key) else {
            return Some(Failure::SpreadMissingLabel);
        };
        let count = c.counts.by_domain.get(v).copied().unwrap_or(0);
        if count + c.self_match - c.min > c.max_skew {
            return Some(Failure::Spread);
        }
    }
    // InterPodAffinity.
    if !pre.affinity_required.is_empty() {
        let mut exist = true;
        for c in &pre.affinity_required {
            match n.labels.get(&c.key.topology_key) {
                None => return Some(Failure::Affinity),
                Some(v) => {
                    if c.by_domain.get(v).copied().unwrap_or(0) <= 0 {
                        exist = false;
                    }
                }
            }
        }
        if !exist && !pre.affinity_first_of_group {
            return Some(Failure::Affinity);
        }
    }
    for c in &pre.anti_required {
        if c.by_domain.is_empty() {
            continue;
        }
        if let Some(v) = n.labels.get(&c.key.topology_key) {
            if c.by_domain.get(v).copied().unwrap_or(0) > 0 {
                return Some(Failure::AntiAffinity);
            }
        }
    }
    for (key, domains) in &pre.existing_anti {
        if domains.is_empty() {
            continue;
        }
        if let Some(v) = n.labels.get(*key) {
            if domains.get(v).copied().unwrap_or(0) > 0 {
                return Some(Failure::ExistingAntiAffinity);
            }
        }
    }
    None
}

/// Maximum score of one plugin.
pub const MAX_NODE_SCORE: i64 = 100;

/// Weights of the scores, as upstream's default profile.
pub(crate) mod weights {
    pub const TAINT: i64 = 3;
    pub const NODE_AFFINITY: i64 = 2;
    pub const INTER_POD_AFFINITY: i64 = 2;
    pub const SPREAD: i64 = 2;
    pub const FIT: i64 = 1;
    pub const BALANCED: i64 = 1;
}

/// Least-allocated score (CPU and memory equally weighted).
pub(crate) fn least_allocated(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let f = |req: i64, cap: i64| -> i64 {
        if cap <= 0 || req > cap {
            0
        } else {
            (cap - req) * MAX_NODE_SCORE / cap
        }
    };
    let cpu = f(
        n.non_zero_requested.0 + pod.non_zero.0,
        n.allocatable.milli_cpu,
    );
    let mem = f(
        n.non_zero_requested.1 + pod.non_zero.1,
        n.allocatable.memory,
    );
    (cpu + mem) / 2
}

/// Balanced-allocation score: 100 × (1 − standard deviation of the CPU and memory
/// fractions requested).
pub(crate) fn balanced_allocation(pod: &PodInfo, n: &NodeInfo) -> i64 {
    let frac = |req: i64, cap: i64| -> f64 {
        if cap <= 0 {
            1.0
        } else {
            (req as f64 / cap as f64).min(1.0)
        }
    };
    let c = frac(
        n.non_zero_requested.0 + pod.non_zero.0,
        n.allocatable.milli_cpu,
    );
    let m = frac(
        n.non_zero_requested.1 + pod.non_zero.1,
        n.allocatable.memory,
    );
    let std = (c - m).abs() / 2.0;
    ((1.0 - std) * MAX_NODE_SCORE as f64) as i64
}

/// Sum of the weights of the preferred node affinity terms the node matches.
pub(crate) fn node_affinity_raw(pod: &PodInfo, n: &NodeInfo) -> i64 {
    pod.preferred_node_terms
        .iter()
        .filter(|(_, t)| t.matches(&n.name, &n.labels))
        .map(|(w, _)| *w)
        .sum()
}

/// Number of PreferNoSchedule taints the pod does not tolerate.
pub(crate) fn taint_raw(pod: &PodInfo, n: &NodeInfo) -> i64 {
    n.taints
        .iter()
        .filter(|t| t.effect == Effect::PreferNoSchedule && !tolerated(&pod.tolerations, t))
        .count() as i64
}

/// Inter-pod affinity: the pod's preferred terms (weight × matching pods in the
/// node's domain) plus the terms of placed pods that select the pod.
pub(crate) fn inter_pod_raw(pre: &PreState<'_>, n: &NodeInfo) -> i64 {
    let mut s = 0;
    for (c, w) in &pre.affinity_scores {
        if let Some(v) = n.labels.get(&c.key.topology_key) {
            s += w * c.by_domain.get(v).copied().unwrap_or(0);
        }
    }
    for (key, weights) in &pre.existing_weights {
        if let Some(v) = n.labels.get(*key) {
            s += weights.get(v).copied().unwrap_or(0);
        }
    }
    s
}

/// Whether the inter-pod affinity score applies at all.
pub(crate) fn has_inter_pod_scores(pre: &PreState<'_>) -> bool {
    !pre.affinity_scores.is_empty() || !pre.existing_weights.is_empty()
}

/// Spreading: matching pods in the node's domains for ScheduleAnyway constraints,
/// or, for a pod without constraints, replicas of the same owner on the node
/// (weighted with its zone like upstream's selector spreading). Lower is better.
pub(crate) fn spread_raw(pre: &PreState<'_>, n: &NodeInfo) -> Option<(i64, i64)> {
    if !pre.spread_soft.is_empty() {
        let mut s = 0;
        for c in &pre.spread_soft {
            if let Some(v) = n.labels.get(&c.key.topology_key) {
                s += c.by_domain.get(v).copied().unwrap_or(0);
            }
        }
        return Some((s, 0));
    }
    let by_node = pre.owner_by_node?;
    let node_count = by_node.get(&n.name).copied().unwrap_or(0);
    let zone_count = n
        .labels
        .get(LABEL_ZONE)
        .and_then(|z| pre.owner_by_zone.and_then(|m| m.get(z)))
        .copied()
        .unwrap_or(0);
    Some((node_count, zone_count))
}

/// Whether the spreading score applies.
pub(crate) fn has_spread_scores(pre: &PreState<'_>) -> bool {
    !pre.spread_soft.is_empty() || pre.owner_by_node.is_some()
}
