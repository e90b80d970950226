//! Why a pod fits no node, worded exactly as upstream kube-scheduler words it
//! (`FitError.Error()` plus the default preemption plugin's diagnosis).

use std::collections::BTreeMap;

/// What the preemption step (upstream's DefaultPreemption PostFilter) reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Preemption {
    /// The pod has `preemptionPolicy: Never`.
    NotEligible,
    /// The pod's nominated node still has a lower-priority pod being deleted: it
    /// waits for that instead of preempting again.
    TerminatingOnNominated,
    /// Victims were chosen and the pod was nominated to a node (nothing is added
    /// to the message, as upstream).
    Nominated,
    /// Per-reason node counts of the preemption dry run.
    Diagnosis(BTreeMap<String, usize>),
}

/// A pod fits no node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.message())]
pub struct FitError {
    /// Number of nodes in the cluster.
    pub num_all_nodes: usize,
    /// Filter failure reasons, each with the number of nodes that gave it.
    pub reasons: BTreeMap<String, usize>,
    /// The preemption diagnosis.
    pub preemption: Preemption,
}

/// Upstream's wording when the cluster has no node at all.
pub const NO_NODES_AVAILABLE: &str = "no nodes available to schedule pods";

/// Upstream's preemption reasons.
pub const PREEMPTION_NOT_HELPFUL: &str = "Preemption is not helpful for scheduling";
/// Upstream's reason when no lower-priority pods could be evicted.
pub const NO_PREEMPTION_VICTIMS: &str = "No preemption victims found for incoming pod";

fn histogram(n: usize, reasons: &BTreeMap<String, usize>) -> String {
    let mut parts: Vec<String> = reasons.iter().map(|(r, c)| format!("{c} {r}")).collect();
    // Upstream sorts the "<count> <reason>" strings as strings.
    parts.sort();
    let mut s = format!("0/{n} nodes are available:");
    if !parts.is_empty() {
        s.push(' ');
        s.push_str(&parts.join(", "));
        s.push('.');
    }
    s
}

impl FitError {
    /// The message for the PodScheduled condition and the FailedScheduling event.
    pub fn message(&self) -> String {
        if self.num_all_nodes == 0 {
            return NO_NODES_AVAILABLE.to_string();
        }
        let mut s = histogram(self.num_all_nodes, &self.reasons);
        match &self.preemption {
            Preemption::NotEligible => {
                s.push_str(" preemption: not eligible due to preemptionPolicy=Never.");
            }
            Preemption::TerminatingOnNominated => {
                s.push_str(
                    " preemption: not eligible due to a terminating pod on the nominated node.",
                );
            }
            Preemption::Nominated => {}
            Preemption::Diagnosis(d) => {
                s.push_str(" preemption: ");
                s.push_str(&histogram(self.num_all_nodes, d));
            }
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_format() {
        let e = FitError {
            num_all_nodes: 3,
            reasons: BTreeMap::from([
                ("Insufficient cpu".to_string(), 2),
                (
                    "node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }"
                        .to_string(),
                    1,
                ),
            ]),
            preemption: Preemption::Diagnosis(BTreeMap::from([
                (NO_PREEMPTION_VICTIMS.to_string(), 2),
                (PREEMPTION_NOT_HELPFUL.to_string(), 1),
            ])),
        };
        assert_eq!(
            e.to_string(),
            "0/3 nodes are available: 1 node(s) had untolerated taint \
             {node-role.kubernetes.io/control-plane: }, 2 Insufficient cpu. preemption: \
             0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
             2 No preemption victims found for incoming pod."
        );
    }

    #[test]
    fn not_eligible_and_no_nodes() {
        let mut e = FitError {
            num_all_nodes: 1,
            reasons: BTreeMap::from([("Insufficient memory".to_string(), 1)]),
            preemption: Preemption::NotEligible,
        };
        assert_eq!(
            e.message(),
            "0/1 nodes are available: 1 Insufficient memory. preemption: not eligible due to preemptionPolicy=Never."
        );
        e.num_all_nodes = 0;
        assert_eq!(e.message(), NO_NODES_AVAILABLE);
    }
}
