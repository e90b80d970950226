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
//! Priority-based preemption is not implemented yet; unschedulable pods report the
//! preemption diagnosis upstream would give when no victims exist.

pub mod cache;
pub mod driver;
pub mod fit_error;
pub mod info;
pub mod plugins;
pub mod quantity;
pub mod queue;
pub mod resources;
pub mod schedule;
pub mod selector;

#[cfg(test)]
mod tests;

pub use cache::Cache;
pub use driver::{run, SchedulerConfig, SchedulerError};
pub use fit_error::{FitError, Preemption};
pub use info::{NodeInfo, PodInfo};
pub use queue::SchedulingQueue;
pub use schedule::num_feasible_nodes_to_find;
