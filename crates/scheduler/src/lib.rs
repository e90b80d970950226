//! navarch-scheduler: assigns pending pods to nodes.
//!
//! Two layers:
//! - a pure in-process core, [`Cache`] (nodes, placed pods, incremental aggregates)
//!   with [`Cache::schedule_one`], usable without any API server (benchmarks, tests,
//!   simulation);
//! - [`run`], an API client (through `kube`) that watches nodes, pods and
//!   namespaces, keeps the cache, schedules pods from a [`SchedulingQueue`], binds
//!   them (`pods/<name>/binding`) and records events and the PodScheduled condition.
//!
//! A pod that fits nowhere may preempt lower-priority pods ([`preemption`]): the
//! driver nominates it to a node (`status.nominatedNodeName`) and deletes the
//! victims; the pod is scheduled there once they are gone.

pub mod cache;
pub mod driver;
pub mod fit_error;
pub mod info;
pub mod plugins;
pub mod preemption;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod schedule;
pub mod selector;
pub mod slim;

#[cfg(test)]
mod tests;

pub use cache::Cache;
pub use driver::{run, SchedulerConfig, SchedulerError};
pub use fit_error::{FitError, Preemption};
pub use info::{NodeInfo, PodInfo};
pub use preemption::{pick_candidate, Candidate, Victim};
pub use queue::SchedulingQueue;
pub use schedule::num_feasible_nodes_to_find;
