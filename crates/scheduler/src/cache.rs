//! The scheduler's cache: nodes with incremental aggregates of the pods placed on
//! them (requests, host ports), and per-term pod counts by topology domain for
//! inter-pod affinity and topology spreading. Assumed pods (bound or being bound by
//! this scheduler) count as placed.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use crate::info::{pod_key, NodeInfo, PodInfo, TermKey, LABEL_ZONE};
use crate::selector::Labels;

/// Pods counted by one term, per topology domain.
#[derive(Debug, Clone)]
pub(crate) struct Counted {
    pub key: Arc<TermKey>,
    /// Matching pods per value of the term's topology key.
    pub by_domain: HashMap<String, i64>,
    /// Matching pods on nodes that have the topology key.
    pub total: i64,
}

/// Terms carried by placed pods, which constrain or attract incoming pods.
#[derive(Debug, Clone)]
pub(crate) struct Carried {
    pub key: Arc<TermKey>,
    /// Placed pods carrying this term as required anti-affinity, per domain.
    pub anti_required: HashMap<String, i64>,
    /// Signed score weight per domain: preferred affinity (+w), preferred
    /// anti-affinity (-w), required affinity (+1, upstream's hardPodAffinityWeight).
    pub weight: HashMap<String, i64>,
}

/// Terms looked up by a `key=value` label their selector requires (or scanned when
/// the selector requires none).
#[derive(Debug, Default, Clone)]
pub(crate) struct TermIndex {
    ids: HashMap<Arc<TermKey>, usize>,
    by_label: HashMap<String, HashMap<String, Vec<usize>>>,
    unindexed: Vec<usize>,
}

impl TermIndex {
    fn get(&self, k: &TermKey) -> Option<usize> {
        self.ids.get(k).copied()
    }

    fn insert(&mut self, k: Arc<TermKey>, id: usize) {
        match k.selector.index_label() {
            Some((lk, lv)) => self
                .by_label
                .entry(lk.to_string())
                .or_default()
                .entry(lv.to_string())
                .or_default()
                .push(id),
            None => self.unindexed.push(id),
        }
        self.ids.insert(k, id);
    }

    /// Ids of terms that may match an object with `labels` (a superset).
    fn candidates<'a>(&'a self, labels: &'a Labels) -> impl Iterator<Item = usize> + 'a {
        let indexed = labels.iter().flat_map(move |(k, v)| {
            self.by_label
                .get(k)
                .and_then(|m| m.get(v))
                .into_iter()
                .flatten()
                .copied()
        });
        self.unindexed.iter().copied().chain(indexed)
    }
}

#[derive(Debug, Clone)]
struct CachedPod {
    info: Arc<PodInfo>,
    assumed: bool,
}

/// The in-process state of the cluster the scheduler decides on.
#[derive(Debug, Default)]
pub struct Cache {
    pub(crate) nodes: Vec<NodeInfo>,
    node_idx: HashMap<String, usize>,
    pods: HashMap<String, CachedPod>,
    /// Placed pods by label: key -> value -> pod keys. A term seen for the first
    /// time is counted over the pods carrying its indexed label only.
    pods_by_label: HashMap<String, HashMap<String, HashSet<String>>>,
    namespaces: HashMap<String, Labels>,
    pub(crate) counted: Vec<Counted>,
    counted_index: TermIndex,
    pub(crate) carried: Vec<Carried>,
    carried_index: TermIndex,
    /// Pods per controlling owner, per node name.
    pub(crate) owner_by_node: HashMap<String, HashMap<String, i64>>,
    /// Pods per controlling owner, per zone.
    pub(crate) owner_by_zone: HashMap<String, HashMap<String, i64>>,
    terms_dirty: bool,
    pub(crate) next_start: usize,
    pub(crate) percentage_of_nodes_to_score: Option<u32>,
    pub(crate) rng: u64,
    /// Pods nominated to a node by preemption (pod key -> (node, pod)): their
    /// requests are reserved on that node against pods of lower priority.
    pub(crate) nominated: HashMap<String, (String, Arc<PodInfo>)>,
}

impl Cache {
    /// An empty cache.
    pub fn new() -> Cache {
        Cache {
            rng: 0x9E37_79B9_7F4A_7C15,
            ..Cache::default()
        }
    }

    /// Set upstream's `percentageOfNodesToScore` (`None`: adaptive, 50% minus 1% per
    /// 125 nodes, at least 5%; at least 100 nodes are always looked at).
    pub fn set_percentage_of_nodes_to_score(&mut self, p: Option<u32>) {
        self.percentage_of_nodes_to_score = p;
    }

    /// Number of nodes.
    pub fn num_nodes(&self) -> usize {
        self.nodes.len()
    }

    /// Number of pods placed (bound or assumed).
    pub fn num_pods(&self) -> usize {
        self.pods.len()
    }

    /// The parsed node, if known.
    pub fn node(&self, name: &str) -> Option<&NodeInfo> {
        self.node_idx.get(name).map(|i| &self.nodes[*i])
    }

    /// The node a pod is placed on (bound or assumed), if the cache has it.
    pub fn pod_node(&self, key: &str) -> Option<&str> {
        self.pods.get(key).map(|p| p.info.node_name.as_str())
    }

    /// Whether the pod is assumed (placed by this scheduler, not yet seen bound).
    pub fn is_assumed(&self, key: &str) -> bool {
        self.pods.get(key).is_some_and(|p| p.assumed)
    }

    /// Add or update a node.
    pub fn upsert_node(&mut self, node: &Node) {
        let mut info = NodeInfo::from_node(node);
        if let Some(&i) = self.node_idx.get(&info.name) {
            let old = &self.nodes[i];
            if old.labels != info.labels {
                self.terms_dirty = true;
            }
            info.requested = old.requested.clone();
            info.non_zero_requested = old.non_zero_requested;
            info.used_ports = old.used_ports.clone();
            info.pods = std::mem::take(&mut self.nodes[i].pods);
            self.nodes[i] = info;
        } else {
            let name = info.name.clone();
            self.nodes.push(info);
            let i = self.nodes.len() - 1;
            self.node_idx.insert(name.clone(), i);
            // Pods seen before their node.
            let waiting: Vec<Arc<PodInfo>> = self
                .pods
                .values()
                .filter(|p| p.info.node_name == name)
                .map(|p| p.info.clone())
                .collect();
            for p in waiting {
                self.nodes[i].add_pod(&p);
            }
            self.terms_dirty = true;
        }
    }

    /// Remove a node (its pods stay known and count again if it comes back).
    pub fn remove_node(&mut self, name: &str) {
        let Some(i) = self.node_idx.remove(name) else {
            return;
        };
        self.nodes.swap_remove(i);
        if i < self.nodes.len() {
            let moved = self.nodes[i].name.clone();
            self.node_idx.insert(moved, i);
        }
        self.terms_dirty = true;
    }

    /// Add or update a namespace (its labels matter to namespaceSelectors).
    pub fn upsert_namespace(&mut self, ns: &Namespace) {
        let name = ns.metadata.name.clone().unwrap_or_default();
        let labels = ns.metadata.labels.clone().unwrap_or_default();
        if self.namespaces.get(&name) != Some(&labels) {
            self.namespaces.insert(name, labels);
            self.terms_dirty = true;
        }
    }

    /// Remove a namespace.
    pub fn remove_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.terms_dirty = true;
        }
    }

    /// Add or update a pod bound to a node (`spec.nodeName` set). Pods without a node,
    /// or finished (Succeeded/Failed), are removed instead. Confirms an assumed pod.
    pub fn upsert_pod(&mut self, pod: &Pod) {
        let done = matches!(
            pod.status.as_ref().and_then(|s| s.phase.as_deref()),
            Some("Succeeded" | "Failed")
        );
        let info = PodInfo::from_pod(pod);
        if info.node_name.is_empty() || done {
            // An assumed pod still shows no node until the binding is observed.
            if !self.is_assumed(&info.key) || done {
                self.remove_pod(&info.key);
            }
            return;
        }
        self.remove_pod(&info.key);
        self.place(Arc::new(info), false);
    }

    /// Place a pod on `node` before the binding is confirmed (upstream's assume).
    pub fn assume(&mut self, mut info: PodInfo, node: &str) {
        info.node_name = node.to_string();
        self.remove_pod(&info.key);
        self.place(Arc::new(info), true);
    }

    /// Forget an assumed pod (its binding failed). Bound pods are left alone.
    pub fn forget(&mut self, key: &str) {
        if self.is_assumed(key) {
            self.remove_pod(key);
        }
    }

    /// Remove a pod by `namespace/name`.
    pub fn remove_pod(&mut self, key: &str) {
        let Some(p) = self.pods.remove(key) else {
            return;
        };
        self.unindex_labels(&p.info);
        if let Some(&i) = self.node_idx.get(&p.info.node_name) {
            self.nodes[i].remove_pod(&p.info);
            if !self.terms_dirty {
                self.account(&p.info, i, -1);
            }
        }
    }

    /// Remove a pod given as an object.
    pub fn remove_pod_object(&mut self, pod: &Pod) {
        self.remove_pod(&pod_key(pod));
    }

    /// A placed pod and whether it is assumed.
    pub(crate) fn placed(&self, key: &str) -> Option<(Arc<PodInfo>, bool)> {
        self.pods.get(key).map(|p| (p.info.clone(), p.assumed))
    }

    pub(crate) fn place(&mut self, info: Arc<PodInfo>, assumed: bool) {
        if let Some(&i) = self.node_idx.get(&info.node_name) {
            self.nodes[i].add_pod(&info);
            if !self.terms_dirty {
                self.account(&info, i, 1);
            }
        }
        self.index_labels(&info);
        self.pods
            .insert(info.key.clone(), CachedPod { info, assumed });
    }

    fn index_labels(&mut self, p: &PodInfo) {
        for (k, v) in &p.labels {
            let by_value = match self.pods_by_label.get_mut(k) {
                Some(m) => m,
                None => self.pods_by_label.entry(k.clone()).or_default(),
            };
            let keys = match by_value.get_mut(v) {
                Some(s) => s,
                None => by_value.entry(v.clone()).or_default(),
            };
            keys.insert(p.key.clone());
        }
    }

    fn unindex_labels(&mut self, p: &PodInfo) {
        for (k, v) in &p.labels {
            let Some(by_value) = self.pods_by_label.get_mut(k) else {
                continue;
            };
            if let Some(keys) = by_value.get_mut(v) {
                keys.remove(&p.key);
                if keys.is_empty() {
                    by_value.remove(v);
                }
            }
            if by_value.is_empty() {
                self.pods_by_label.remove(k);
            }
        }
    }

    /// Update the per-term and per-owner counts for a pod placed on (delta 1) or
    /// removed from (delta -1) node `i`.
    fn account(&mut self, p: &PodInfo, i: usize, delta: i64) {
        let node = &self.nodes[i];
        let ns_labels = self.namespaces.get(&p.namespace);
        let ids: Vec<usize> = self.counted_index.candidates(&p.labels).collect();
        for id in ids {
            let c = &mut self.counted[id];
            if c.key.matches_pod(&p.namespace, &p.labels, ns_labels) {
                if let Some(v) = node.labels.get(&c.key.topology_key) {
                    c.total += delta;
                    bump(&mut c.by_domain, v, delta);
                }
            }
        }
        let carried_terms = p
            .anti_required
            .iter()
            .map(|t| (t, true, 0))
            .chain(p.affinity_required.iter().map(|t| (t, false, 1)))
            .chain(p.affinity_preferred.iter().map(|t| (t, false, t.weight)))
            .chain(p.anti_preferred.iter().map(|t| (t, false, -t.weight)));
        for (t, anti, w) in carried_terms {
            let Some(v) = node.labels.get(&t.key.topology_key) else {
                continue;
            };
            let id = match self.carried_index.get(&t.key) {
                Some(id) => id,
                None => {
                    self.carried.push(Carried {
                        key: t.key.clone(),
                        anti_required: HashMap::new(),
                        weight: HashMap::new(),
                    });
                    let id = self.carried.len() - 1;
                    self.carried_index.insert(t.key.clone(), id);
                    id
                }
            };
            let c = &mut self.carried[id];
            if anti {
                bump(&mut c.anti_required, v, delta);
            } else if w != 0 {
                bump(&mut c.weight, v, delta * w);
            }
        }
        if let Some(owner) = &p.owner {
            bump(
                self.owner_by_node.entry(owner.clone()).or_default(),
                &node.name,
                delta,
            );
            if let Some(z) = node.labels.get(LABEL_ZONE) {
                bump(
                    self.owner_by_zone.entry(owner.clone()).or_default(),
                    z,
                    delta,
                );
            }
        }
    }

    /// Recompute every per-term count from the placed pods (after node label or
    /// namespace changes).
    fn rebuild_terms(&mut self) {
        self.terms_dirty = false;
        self.counted.clear();
        self.counted_index = TermIndex::default();
        self.carried.clear();
        self.carried_index = TermIndex::default();
        self.owner_by_node.clear();
        self.owner_by_zone.clear();
        let placed: Vec<(Arc<PodInfo>, usize)> = self
            .pods
            .values()
            .filter_map(|p| {
                self.node_idx
                    .get(&p.info.node_name)
                    .map(|i| (p.info.clone(), *i))
            })
            .collect();
        for (p, i) in placed {
            self.account(&p, i, 1);
        }
    }

    pub(crate) fn refresh(&mut self) {
        if self.terms_dirty {
            self.rebuild_terms();
        }
    }

    /// The id of the counts for `key`, computing them with one pass over the placed
    /// pods the first time the term is seen.
    pub(crate) fn counted_id(&mut self, key: &Arc<TermKey>) -> usize {
        if let Some(id) = self.counted_index.get(key) {
            return id;
        }
        let mut c = Counted {
            key: key.clone(),
            by_domain: HashMap::new(),
            total: 0,
        };
        // Only the pods carrying the selector's indexed label can match; without
        // one (e.g. only `Exists` requirements), every placed pod is looked at.
        let candidates: Box<dyn Iterator<Item = &CachedPod>> = match key.selector.index_label() {
            Some((lk, lv)) => Box::new(
                self.pods_by_label
                    .get(lk)
                    .and_then(|m| m.get(lv))
                    .into_iter()
                    .flatten()
                    .filter_map(|k| self.pods.get(k)),
            ),
            None => Box::new(self.pods.values()),
        };
        for p in candidates {
            // The label selector first: it rejects most pods without hashing the
            // node and namespace names.
            if !key.selector.matches(&p.info.labels) {
                continue;
            }
            let Some(&i) = self.node_idx.get(&p.info.node_name) else {
                continue;
            };
            let ns_labels = self.namespaces.get(&p.info.namespace);
            if key.namespaces.contains(&p.info.namespace, ns_labels) {
                if let Some(v) = self.nodes[i].labels.get(&key.topology_key) {
                    c.total += 1;
                    bump(&mut c.by_domain, v, 1);
                }
            }
        }
        self.counted.push(c);
        let id = self.counted.len() - 1;
        self.counted_index.insert(key.clone(), id);
        id
    }

    /// Carried terms (of placed pods) that select the incoming pod.
    pub(crate) fn carried_matching(&self, p: &PodInfo) -> Vec<usize> {
        let ns_labels = self.namespaces.get(&p.namespace);
        let mut ids: Vec<usize> = self
            .carried_index
            .candidates(&p.labels)
            .filter(|id| {
                self.carried[*id]
                    .key
                    .matches_pod(&p.namespace, &p.labels, ns_labels)
            })
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Labels of a namespace, if known.
    pub(crate) fn namespace_labels(&self, ns: &str) -> Option<&Labels> {
        self.namespaces.get(ns)
    }

    /// A cheap pseudo-random number (tie breaking among equal scores).
    pub(crate) fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng = x;
        x
    }

    /// All placed pods, by key, with their node (for tests and debugging).
    pub fn placements(&self) -> BTreeMap<String, String> {
        self.pods
            .iter()
            .map(|(k, p)| (k.clone(), p.info.node_name.clone()))
            .collect()
    }
}

fn bump(m: &mut HashMap<String, i64>, k: &str, delta: i64) {
    if let Some(v) = m.get_mut(k) {
        *v += delta;
        if *v == 0 {
            m.remove(k);
        }
    } else if delta != 0 {
        m.insert(k.to_string(), delta);
    }
}
