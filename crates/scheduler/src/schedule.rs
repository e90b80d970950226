//! One scheduling cycle on the cache: find feasible nodes (sampling like upstream's
//! `percentageOfNodesToScore`), score them, pick the best, assume the pod there.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use crate::cache::Cache;
use crate::fit_error::{FitError, Preemption, NO_PREEMPTION_VICTIMS, PREEMPTION_NOT_HELPFUL};
use crate::info::PodInfo;
use crate::plugins::{self, weights, MAX_NODE_SCORE};

/// How many feasible nodes to find before scoring, as upstream: all below 100
/// nodes; otherwise `percentage` (adaptive when unset: 50% − 1% per 125 nodes, at
/// least 5%) of the nodes, and at least 100.
pub fn num_feasible_nodes_to_find(num_nodes: usize, percentage: Option<u32>) -> usize {
    if num_nodes < 100 {
        return num_nodes;
    }
    let pct = match percentage {
        Some(p) if p >= 100 => return num_nodes,
        Some(p) if p > 0 => p as usize,
        _ => 50usize.saturating_sub(num_nodes / 125).max(5),
    };
    (num_nodes * pct / 100).max(100)
}

impl Cache {
    /// Schedule a pod: pick a node and assume the pod there. Returns the node name.
    pub fn schedule_one(&mut self, pod: &Pod) -> Result<String, FitError> {
        self.schedule_info(PodInfo::from_pod(pod))
    }

    /// [`Cache::schedule_one`] for an already parsed pod.
    pub fn schedule_info(&mut self, info: PodInfo) -> Result<String, FitError> {
        let node = self.find_node(&info)?;
        self.clear_nomination(&info.key);
        self.assume(info, &node);
        Ok(node)
    }

    /// Pick a node for the pod without placing it.
    pub fn find_node(&mut self, pod: &PodInfo) -> Result<String, FitError> {
        let n = self.nodes.len();
        if n == 0 {
            return Err(FitError {
                num_all_nodes: 0,
                reasons: BTreeMap::new(),
                preemption: Preemption::Diagnosis(BTreeMap::new()),
            });
        }
        let ids = self.prepare(pod);
        let want = num_feasible_nodes_to_find(n, self.percentage_of_nodes_to_score);
        let start = self.next_start % n;
        let (feasible, processed) = {
            let pre = self.pre_state(pod, &ids);
            let mut feasible = Vec::with_capacity(want.min(n));
            let mut processed = 0;
            for k in 0..n {
                let i = (start + k) % n;
                processed += 1;
                if plugins::filter(&pre, pod, &self.node_view(pod, i)).is_none() {
                    feasible.push(i);
                    if feasible.len() >= want {
                        break;
                    }
                }
            }
            if feasible.is_empty() {
                return Err(self.diagnose(pod, &pre));
            }
            (feasible, processed)
        };
        self.next_start = (start + processed) % n;
        if feasible.len() == 1 {
            return Ok(self.nodes[feasible[0]].name.clone());
        }
        let totals = {
            let pre = self.pre_state(pod, &ids);
            self.score(pod, &pre, &feasible)
        };
        // Highest total; ties broken uniformly at random (reservoir sampling).
        let mut best = 0usize;
        let mut ties = 0u64;
        for (k, t) in totals.iter().enumerate() {
            if *t > totals[best] {
                best = k;
                ties = 1;
            } else if *t == totals[best] {
                ties += 1;
                if self.next_rand().is_multiple_of(ties) {
                    best = k;
                }
            }
        }
        Ok(self.nodes[feasible[best]].name.clone())
    }

    fn diagnose(&self, pod: &PodInfo, pre: &plugins::PreState<'_>) -> FitError {
        let mut reasons = BTreeMap::new();
        let mut post = BTreeMap::new();
        for i in 0..self.nodes.len() {
            let node = self.node_view(pod, i);
            let Some(f) = plugins::filter(pre, pod, &node) else {
                continue;
            };
            for r in f.reasons(pod, &node) {
                *reasons.entry(r).or_insert(0) += 1;
            }
            let p = if f.unresolvable() {
                PREEMPTION_NOT_HELPFUL
            } else {
                NO_PREEMPTION_VICTIMS
            };
            *post.entry(p.to_string()).or_insert(0) += 1;
        }
        FitError {
            num_all_nodes: self.nodes.len(),
            reasons,
            preemption: if pod.can_preempt {
                Preemption::Diagnosis(post)
            } else {
                Preemption::NotEligible
            },
        }
    }

    fn score(&self, pod: &PodInfo, pre: &plugins::PreState<'_>, feasible: &[usize]) -> Vec<i64> {
        let nodes: Vec<_> = feasible.iter().map(|i| &self.nodes[*i]).collect();
        let mut total: Vec<i64> = nodes
            .iter()
            .map(|n| {
                weights::FIT * plugins::least_allocated(pod, n)
                    + weights::BALANCED * plugins::balanced_allocation(pod, n)
            })
            .collect();
        if !pod.preferred_node_terms.is_empty() {
            let raw: Vec<i64> = nodes
                .iter()
                .map(|n| plugins::node_affinity_raw(pod, n))
                .collect();
            let max = raw.iter().copied().max().unwrap_or(0);
            if max > 0 {
                for (t, r) in total.iter_mut().zip(&raw) {
                    *t += weights::NODE_AFFINITY * r * MAX_NODE_SCORE / max;
                }
            }
        }
        let raw: Vec<i64> = nodes.iter().map(|n| plugins::taint_raw(pod, n)).collect();
        let max = raw.iter().copied().max().unwrap_or(0);
        for (t, r) in total.iter_mut().zip(&raw) {
            let s = if max == 0 {
                MAX_NODE_SCORE
            } else {
                MAX_NODE_SCORE - r * MAX_NODE_SCORE / max
            };
            *t += weights::TAINT * s;
        }
        if plugins::has_inter_pod_scores(pre) {
            let raw: Vec<i64> = nodes
                .iter()
                .map(|n| plugins::inter_pod_raw(pre, n))
                .collect();
            let max = raw.iter().copied().max().unwrap_or(0);
            let min = raw.iter().copied().min().unwrap_or(0);
            if max > min {
                for (t, r) in total.iter_mut().zip(&raw) {
                    *t += weights::INTER_POD_AFFINITY * MAX_NODE_SCORE * (r - min) / (max - min);
                }
            }
        }
        if plugins::has_spread_scores(pre) {
            let raw: Vec<(i64, i64)> = nodes
                .iter()
                .map(|n| plugins::spread_raw(pre, n).unwrap_or((0, 0)))
                .collect();
            let max_node = raw.iter().map(|r| r.0).max().unwrap_or(0);
            let max_zone = raw.iter().map(|r| r.1).max().unwrap_or(0);
            for (t, (nc, zc)) in total.iter_mut().zip(&raw) {
                let node_score = if max_node > 0 {
                    MAX_NODE_SCORE * (max_node - nc) / max_node
                } else {
                    MAX_NODE_SCORE
                };
                let s = if max_zone > 0 {
                    let zone_score = MAX_NODE_SCORE * (max_zone - zc) / max_zone;
                    (node_score + 2 * zone_score) / 3
                } else {
                    node_score
                };
                *t += weights::SPREAD * s;
            }
        }
        total
    }
}
