//! Priority preemption, as upstream's DefaultPreemption PostFilter (simplified).
//!
//! When a pod fits no node, every node whose failure could be fixed by removing
//! pods (not node selector/affinity, taints, cordon, readiness) is tried: all pods
//! of lower priority are removed from the cache (a dry run), and if the pod then
//! fits, the removed pods are added back one by one, highest priority first, and
//! those that no longer let the pod fit become the victims. The node whose victims
//! matter least is picked (lowest highest-victim priority, then smallest sum of
//! priorities, then fewest victims) and the pod is nominated to it: its requests
//! are reserved there against pods of lower priority until it is scheduled.
//!
//! PodDisruptionBudgets are not considered (upstream prefers nodes violating
//! fewer budgets; here every node counts as violating none).

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use crate::cache::Cache;
use crate::fit_error::{FitError, Preemption, NO_PREEMPTION_VICTIMS, PREEMPTION_NOT_HELPFUL};
use crate::info::{NodeInfo, PodInfo};
use crate::plugins;

/// A pod chosen to be deleted so that a higher-priority pod fits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Victim {
    /// `namespace/name`.
    pub key: String,
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Priority.
    pub priority: i32,
}

impl Victim {
    fn from_info(p: &PodInfo) -> Victim {
        Victim {
            key: p.key.clone(),
            namespace: p.namespace.clone(),
            name: p.name.clone(),
            uid: p.uid.clone(),
            priority: p.priority,
        }
    }
}

/// A node where deleting `victims` lets the preemptor fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// The node.
    pub node: String,
    /// Pods to delete, highest priority first.
    pub victims: Vec<Victim>,
}

impl Candidate {
    /// Upstream's ordering key: highest victim priority, sum of victim priorities
    /// (shifted so that negative priorities still add up positively), number of
    /// victims; smaller is better.
    fn rank(&self) -> (i64, i64, usize) {
        let highest = self
            .victims
            .iter()
            .map(|v| i64::from(v.priority))
            .max()
            .unwrap_or(i64::from(i32::MIN));
        let sum = self
            .victims
            .iter()
            .map(|v| i64::from(v.priority) + i64::from(i32::MAX) + 1)
            .sum();
        (highest, sum, self.victims.len())
    }
}

/// The best candidate, as upstream picks it: lowest highest-victim priority, then
/// smallest sum of victim priorities, then fewest victims; ties go to the first.
pub fn pick_candidate(candidates: &[Candidate]) -> Option<&Candidate> {
    let mut best: Option<&Candidate> = None;
    for c in candidates {
        if best.is_none_or(|b| c.rank() < b.rank()) {
            best = Some(c);
        }
    }
    best
}

impl Cache {
    /// The node as pods of `pod`'s priority see it: with the requests of pods
    /// nominated there (by preemption) whose priority is not lower added.
    pub(crate) fn node_view(&self, pod: &PodInfo, i: usize) -> Cow<'_, NodeInfo> {
        let node = &self.nodes[i];
        if self.nominated.is_empty() {
            return Cow::Borrowed(node);
        }
        let mut view: Option<NodeInfo> = None;
        for (key, (name, p)) in &self.nominated {
            if *name != node.name || *key == pod.key || p.priority < pod.priority {
                continue;
            }
            view.get_or_insert_with(|| node.clone()).add_pod(p);
        }
        match view {
            Some(v) => Cow::Owned(v),
            None => Cow::Borrowed(node),
        }
    }

    /// Whether `pod` fits node `i` as the cache is now (all filters).
    fn fits_on(&mut self, pod: &PodInfo, i: usize) -> bool {
        let ids = self.prepare(pod);
        let pre = self.pre_state(pod, &ids);
        plugins::filter(&pre, pod, &self.node_view(pod, i)).is_none()
    }

    /// The pods to delete from `node` so that `pod` fits there: the smallest set
    /// found by removing every lower-priority pod and adding back those not needed
    /// (highest priority first). `None` when the node is unknown, has no
    /// lower-priority pod, or the pod does not fit even without them. The cache is
    /// left as it was.
    pub fn select_victims(&mut self, pod: &PodInfo, node: &str) -> Option<Vec<Victim>> {
        self.refresh();
        let i = self.nodes.iter().position(|n| n.name == node)?;
        let mut potential: Vec<(Arc<PodInfo>, bool)> = self.nodes[i]
            .pods
            .iter()
            .filter_map(|k| self.placed(k))
            .filter(|(p, _)| p.priority < pod.priority)
            .collect();
        if potential.is_empty() {
            return None;
        }
        for (p, _) in &potential {
            self.remove_pod(&p.key);
        }
        if !self.fits_on(pod, i) {
            for (p, assumed) in potential {
                self.place(p, assumed);
            }
            return None;
        }
        // Reprieve the most important pods first.
        potential.sort_by(|a, b| b.0.priority.cmp(&a.0.priority).then(a.0.key.cmp(&b.0.key)));
        let mut victims = Vec::new();
        for (p, assumed) in potential {
            self.place(p.clone(), assumed);
            if !self.fits_on(pod, i) {
                self.remove_pod(&p.key);
                victims.push((p, assumed));
            }
        }
        let out = victims.iter().map(|(p, _)| Victim::from_info(p)).collect();
        for (p, assumed) in victims {
            self.place(p, assumed);
        }
        Some(out)
    }

    /// Try every node where preemption may help. Returns the best candidate, or
    /// the per-reason node counts upstream reports when there is none.
    pub fn find_preemption(&mut self, pod: &PodInfo) -> Result<Candidate, BTreeMap<String, usize>> {
        let ids = self.prepare(pod);
        let mut diagnosis: BTreeMap<String, usize> = BTreeMap::new();
        let mut tried = Vec::new();
        {
            let pre = self.pre_state(pod, &ids);
            for i in 0..self.nodes.len() {
                match plugins::filter(&pre, pod, &self.node_view(pod, i)) {
                    Some(f) if f.unresolvable() => {
                        *diagnosis
                            .entry(PREEMPTION_NOT_HELPFUL.to_string())
                            .or_insert(0) += 1;
                    }
                    Some(_) => tried.push(self.nodes[i].name.clone()),
                    // A node that fits as is needs no victims; it is not a candidate.
                    None => {}
                }
            }
        }
        let mut candidates = Vec::new();
        for node in tried {
            match self.select_victims(pod, &node) {
                Some(victims) => candidates.push(Candidate { node, victims }),
                None => {
                    *diagnosis
                        .entry(NO_PREEMPTION_VICTIMS.to_string())
                        .or_insert(0) += 1;
                }
            }
        }
        match pick_candidate(&candidates) {
            Some(c) => Ok(c.clone()),
            None => Err(diagnosis),
        }
    }

    /// Upstream's PodEligibleToPreemptOthers: a pod may preempt unless its policy
    /// is `Never` or its nominated node (`nominated_node`, or the one this cache
    /// nominated it to) still has a lower-priority pod being deleted.
    pub fn eligible_to_preempt(&self, pod: &PodInfo, nominated_node: Option<&str>) -> bool {
        if !pod.can_preempt {
            return false;
        }
        let node = nominated_node
            .filter(|n| !n.is_empty())
            .or_else(|| self.nominated.get(&pod.key).map(|(n, _)| n.as_str()));
        let Some(node) = node.and_then(|n| self.node(n)) else {
            return true;
        };
        !node.pods.iter().any(|k| {
            self.placed(k)
                .is_some_and(|(p, _)| p.terminating && p.priority < pod.priority)
        })
    }

    /// Run preemption for a pod that failed with `fe`: on success the pod is
    /// nominated to the chosen node, the victims are marked terminating in the
    /// cache, `fe` says so, and the candidate is returned for the caller to delete
    /// the victims. Otherwise `fe` carries the preemption diagnosis.
    pub fn preempt(
        &mut self,
        pod: &PodInfo,
        nominated_node: Option<&str>,
        fe: &mut FitError,
    ) -> Option<Candidate> {
        if fe.num_all_nodes == 0 || !pod.can_preempt {
            return None;
        }
        if !self.eligible_to_preempt(pod, nominated_node) {
            fe.preemption = Preemption::TerminatingOnNominated;
            return None;
        }
        match self.find_preemption(pod) {
            Ok(c) => {
                for v in &c.victims {
                    if let Some((p, assumed)) = self.placed(&v.key) {
                        let mut p = (*p).clone();
                        p.terminating = true;
                        self.remove_pod(&v.key);
                        self.place(Arc::new(p), assumed);
                    }
                }
                self.nominate(pod.clone(), &c.node);
                fe.preemption = Preemption::Nominated;
                Some(c)
            }
            Err(d) => {
                fe.preemption = Preemption::Diagnosis(d);
                None
            }
        }
    }

    /// Reserve `pod`'s requests on `node` against lower-priority pods.
    pub fn nominate(&mut self, pod: PodInfo, node: &str) {
        self.nominated
            .insert(pod.key.clone(), (node.to_string(), Arc::new(pod)));
    }

    /// Drop a pod's nomination (it was scheduled or deleted).
    pub fn clear_nomination(&mut self, key: &str) {
        self.nominated.remove(key);
    }

    /// The node a pod is nominated to, if any.
    pub fn nominated_node(&self, key: &str) -> Option<&str> {
        self.nominated.get(key).map(|(n, _)| n.as_str())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::tests::{node, pod};

    fn placed(c: &mut Cache, name: &str, node: &str, cpu: &str, prio: i32, extra: Value) {
        let mut v = serde_json::to_value(pod(
            name,
            cpu,
            "10Mi",
            json!({"spec": {"nodeName": node, "priority": prio}}),
        ))
        .unwrap();
        if let (Some(dst), Some(src)) = (v.as_object_mut(), extra.as_object()) {
            for (k, val) in src {
                if let (Some(Value::Object(d)), Value::Object(s)) = (dst.get_mut(k), val) {
                    for (k2, v2) in s {
                        d.insert(k2.clone(), v2.clone());
                    }
                } else {
                    dst.insert(k.clone(), val.clone());
                }
            }
        }
        c.upsert_pod(&serde_json::from_value(v).unwrap());
    }

    fn incoming(name: &str, cpu: &str, prio: i32) -> PodInfo {
        PodInfo::from_pod(&pod(name, cpu, "10Mi", json!({"spec": {"priority": prio}})))
    }

    fn names(v: &[Victim]) -> Vec<&str> {
        v.iter().map(|v| v.name.as_str()).collect()
    }

    fn cluster(nodes: &[(&str, &str)]) -> Cache {
        let mut c = Cache::new();
        for (n, cpu) in nodes {
            c.upsert_node(&node(n, cpu, "8Gi", json!({})));
        }
        c
    }

    #[test]
    fn victims_are_minimal_and_lower_priority_only() {
        let mut c = cluster(&[("n", "4")]);
        placed(&mut c, "low1", "n", "1", 1, json!({}));
        placed(&mut c, "low2", "n", "1", 2, json!({}));
        placed(&mut c, "mid", "n", "1", 5, json!({}));
        placed(&mut c, "high", "n", "1", 100, json!({}));
        let before = c.node("n").unwrap().requested.clone();
        // 2 CPUs needed: the two lowest go, `mid` is reprieved.
        let v = c.select_victims(&incoming("p", "2", 10), "n").unwrap();
        assert_eq!(names(&v), vec!["low2", "low1"]);
        // The dry run leaves the cache as it was.
        assert_eq!(c.node("n").unwrap().requested, before);
        assert_eq!(c.num_pods(), 4);
        // 1 CPU: only the lowest is needed.
        let v = c.select_victims(&incoming("p", "1", 10), "n").unwrap();
        assert_eq!(names(&v), vec!["low1"]);
        // 4 CPUs would need `high` too: no victims.
        assert!(c.select_victims(&incoming("p", "4", 10), "n").is_none());
        // Equal priority is never a victim.
        assert!(c.select_victims(&incoming("p", "1", 1), "n").is_none());
        assert!(c.select_victims(&incoming("p", "1", 10), "nope").is_none());
    }

    #[test]
    fn existing_anti_affinity_is_resolved_by_preemption() {
        let mut c = cluster(&[("n", "8")]);
        let anti = json!({"metadata": {"labels": {"app": "db"}}, "spec": {"affinity": {"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"app": "web"}},
                "topologyKey": "kubernetes.io/hostname"}]}}}});
        placed(&mut c, "db", "n", "100m", 0, anti);
        placed(&mut c, "other", "n", "100m", 0, json!({}));
        let web = PodInfo::from_pod(&pod(
            "web",
            "100m",
            "10Mi",
            json!({"metadata": {"labels": {"app": "web"}}, "spec": {"priority": 10}}),
        ));
        assert!(c.find_node(&web).is_err());
        let v = c.select_victims(&web, "n").unwrap();
        assert_eq!(names(&v), vec!["db"]);
        // The counts were restored: still blocked.
        assert!(c.find_node(&web).is_err());
    }

    #[test]
    fn candidate_order_follows_upstream() {
        let v = |p: i32| Victim {
            key: String::new(),
            namespace: String::new(),
            name: format!("p{p}"),
            uid: String::new(),
            priority: p,
        };
        let cand = |n: &str, ps: &[i32]| Candidate {
            node: n.to_string(),
            victims: ps.iter().map(|p| v(*p)).collect(),
        };
        // Lowest highest-victim priority wins even with more victims.
        let cs = vec![cand("a", &[5]), cand("b", &[1, 1, 1])];
        assert_eq!(pick_candidate(&cs).unwrap().node, "b");
        // Same highest: smallest sum.
        let cs = vec![cand("a", &[3, 3]), cand("b", &[3, 1])];
        assert_eq!(pick_candidate(&cs).unwrap().node, "b");
        // Negative priorities still count per victim in the sum.
        let cs = vec![cand("a", &[-5, -5]), cand("b", &[-5])];
        assert_eq!(pick_candidate(&cs).unwrap().node, "b");
        // Same highest and sum: fewest victims; then the first.
        let cs = vec![cand("a", &[2, 0]), cand("b", &[2, 0]), cand("c", &[2])];
        assert_eq!(pick_candidate(&cs).unwrap().node, "c");
        let cs = vec![cand("a", &[2]), cand("b", &[2])];
        assert_eq!(pick_candidate(&cs).unwrap().node, "a");
        assert!(pick_candidate(&[]).is_none());
    }

    #[test]
    fn find_preemption_picks_node_and_diagnoses() {
        let mut c = cluster(&[("a", "2"), ("b", "2"), ("t", "2")]);
        c.upsert_node(&node(
            "t",
            "2",
            "8Gi",
            json!({"spec": {"taints": [{"key": "k", "value": "v", "effect": "NoSchedule"}]}}),
        ));
        placed(&mut c, "a1", "a", "2", 5, json!({}));
        placed(&mut c, "b1", "b", "1", 3, json!({}));
        placed(&mut c, "b2", "b", "1", 3, json!({}));
        let p = incoming("p", "2", 10);
        let best = c.find_preemption(&p).unwrap();
        assert_eq!(best.node, "b");
        assert_eq!(names(&best.victims), vec!["b1", "b2"]);
        // Priority too low for any victim.
        let err = c.find_preemption(&incoming("q", "2", 3)).unwrap_err();
        assert_eq!(
            err,
            BTreeMap::from([
                (NO_PREEMPTION_VICTIMS.to_string(), 2),
                (PREEMPTION_NOT_HELPFUL.to_string(), 1),
            ])
        );
    }

    #[test]
    fn preempt_nominates_reserves_and_waits_for_victims() {
        let mut c = cluster(&[("n", "1")]);
        placed(&mut c, "low", "n", "1", 0, json!({}));
        let p = incoming("high", "1", 100);
        let mut fe = c.find_node(&p).unwrap_err();
        let cand = c.preempt(&p, None, &mut fe).unwrap();
        assert_eq!(cand.node, "n");
        assert_eq!(names(&cand.victims), vec!["low"]);
        assert_eq!(fe.preemption, Preemption::Nominated);
        assert_eq!(fe.message(), "0/1 nodes are available: 1 Insufficient cpu.");
        assert_eq!(c.nominated_node("default/high"), Some("n"));
        // The victim is still terminating: no second preemption.
        let mut fe = c.find_node(&p).unwrap_err();
        assert!(c.preempt(&p, None, &mut fe).is_none());
        assert_eq!(
            fe.message(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to a terminating pod on the nominated node."
        );
        // The victim is gone: a lower-priority pod cannot take the reserved CPU...
        c.remove_pod("default/low");
        let err = c.find_node(&incoming("other", "1", 5)).unwrap_err();
        assert_eq!(
            err.message(),
            "0/1 nodes are available: 1 Insufficient cpu. preemption: 0/1 nodes are available: 1 No preemption victims found for incoming pod."
        );
        // ...but the nominated pod gets it, and its reservation ends.
        assert_eq!(c.schedule_info(p).unwrap(), "n");
        assert_eq!(c.nominated_node("default/high"), None);
    }

    #[test]
    fn never_policy_and_no_victims_keep_the_diagnosis() {
        let mut c = cluster(&[("a", "1"), ("b", "1"), ("c", "1")]);
        for n in ["a", "b", "c"] {
            placed(&mut c, &format!("{n}1"), n, "1", 10, json!({}));
        }
        let p = incoming("p", "1", 5);
        let mut fe = c.find_node(&p).unwrap_err();
        assert!(c.preempt(&p, None, &mut fe).is_none());
        assert_eq!(
            fe.message(),
            "0/3 nodes are available: 3 Insufficient cpu. preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod."
        );
        let never = PodInfo::from_pod(&pod(
            "n",
            "1",
            "10Mi",
            json!({"spec": {"priority": 100, "preemptionPolicy": "Never"}}),
        ));
        let mut fe = c.find_node(&never).unwrap_err();
        assert!(c.preempt(&never, None, &mut fe).is_none());
        assert_eq!(fe.preemption, Preemption::NotEligible);
        assert_eq!(c.num_pods(), 3);
    }
}
