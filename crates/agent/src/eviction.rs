//! Node-pressure eviction, a first version: every 10 s compare the node's
//! available memory and the free space of the agent's filesystem with upstream's
//! default hard thresholds (`memory.available<100Mi`, `nodefs.available<10%`).
//! Under pressure, evict one pod per round: BestEffort first, then Burstable,
//! then Guaranteed; lower priority first; newest first. Pods of priority
//! ≥ 2000000000 (system-critical) are never evicted. An evicted pod gets phase
//! Failed, reason `Evicted` and upstream's message, and an `Evicted` event; its
//! worker then sees the terminal phase and stops its containers.
//!
//! Not done: ranking by actual usage above requests (needs per-pod cgroup
//! stats), soft thresholds and grace periods, inode and image-fs signals,
//! PID pressure.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, Patch, PatchParams};

use crate::events::{pod_ref, EventType, Recorder};
use crate::host::HostInfo;
use crate::status::qos_class;
use crate::AgentConfig;

/// Hard eviction thresholds.
#[derive(Clone, Debug)]
pub struct Thresholds {
    /// Evict when `MemAvailable` falls below this many bytes (100Mi).
    pub memory_available: u64,
    /// Evict when the free fraction of the agent's filesystem falls below this
    /// (0.10).
    pub nodefs_available: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available: 100 << 20,
            nodefs_available: 0.10,
        }
    }
}

/// The resource under pressure and the eviction message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// `memory` or `ephemeral-storage`.
    pub resource: &'static str,
    /// Upstream's message for the evicted pod.
    pub message: String,
}

/// Which threshold, if any, `host` crosses.
pub fn pressure(host: &HostInfo, t: &Thresholds) -> Option<Pressure> {
    if host.memory_bytes > 0 && host.memory_available < t.memory_available {
        return Some(Pressure {
            resource: "memory",
            message: format!(
                "The node was low on resource: memory. Threshold quantity: {}Mi, available: {}Ki. ",
                t.memory_available >> 20,
                host.memory_available / 1024
            ),
        });
    }
    let min_free = (host.ephemeral_bytes as f64 * t.nodefs_available) as u64;
    if host.ephemeral_bytes > 0 && host.ephemeral_available < min_free {
        return Some(Pressure {
            resource: "ephemeral-storage",
            message: format!(
                "The node was low on resource: ephemeral-storage. Threshold quantity: {}Ki, available: {}Ki. ",
                min_free / 1024,
                host.ephemeral_available / 1024
            ),
        });
    }
    None
}

fn qos_rank(p: &Pod) -> u8 {
    match qos_class(p).as_str() {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    }
}

/// Eviction candidates in order: non-terminal, non-critical pods, BestEffort
/// first, then lower priority, then newest.
pub fn rank(pods: &[Pod]) -> Vec<&Pod> {
    let mut v: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .filter(|p| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) < 2_000_000_000)
        .collect();
    v.sort_by(|a, b| {
        let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        qos_rank(a)
            .cmp(&qos_rank(b))
            .then(prio(a).cmp(&prio(b)))
            .then(
                b.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            )
    });
    v
}

/// Watch for pressure until the process ends.
pub async fn run(client: kube::Client, config: Arc<AgentConfig>, recorder: Recorder) {
    let t = Thresholds::default();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let root = config.root.clone();
        let Ok(host) = tokio::task::spawn_blocking(move || HostInfo::read(&root)).await else {
            continue;
        };
        let Some(p) = pressure(&host, &t) else {
            continue;
        };
        let api: Api<Pod> = Api::all(client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", config.node_name));
        let pods = match api.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "eviction: listing pods failed");
                continue;
            }
        };
        let Some(victim) = rank(&pods).into_iter().next() else {
            continue;
        };
        let ns = victim.metadata.namespace.clone().unwrap_or_default();
        let name = victim.metadata.name.clone().unwrap_or_default();
        tracing::warn!(pod = %format!("{ns}/{name}"), resource = p.resource, "evicting pod under node pressure");
        recorder.record(
            pod_ref(victim, None),
            EventType::Warning,
            "Evicted",
            p.message.clone(),
        );
        let patch = serde_json::json!({"status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": p.message,
        }});
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(error = %e, "eviction: status update failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn host(mem_avail: u64, disk_avail: u64) -> HostInfo {
        let mut h = HostInfo::read(std::path::Path::new("/"));
        h.memory_bytes = 8 << 30;
        h.memory_available = mem_avail;
        h.ephemeral_bytes = 100 << 30;
        h.ephemeral_available = disk_avail;
        h
    }

    #[test]
    fn detects_pressure() {
        let t = Thresholds::default();
        assert_eq!(pressure(&host(1 << 30, 50 << 30), &t), None);
        let p = pressure(&host(50 << 20, 50 << 30), &t).unwrap();
        assert_eq!(p.resource, "memory");
        assert!(p.message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki."
        ));
        let p = pressure(&host(1 << 30, 5 << 30), &t).unwrap();
        assert_eq!(p.resource, "ephemeral-storage");
    }

    fn pod(name: &str, limits: bool, priority: i32) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        let res = limits.then(|| ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), Quantity("1".into())),
                    ("memory".to_string(), Quantity("1Gi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        p.spec = Some(PodSpec {
            priority: Some(priority),
            containers: vec![Container {
                name: "c".into(),
                resources: res,
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn ranks_best_effort_first_and_spares_critical_pods() {
        let pods = vec![
            pod("guaranteed", true, 0),
            pod("critical", false, 2_000_001_000),
            pod("besteffort-high", false, 100),
            pod("besteffort", false, 0),
        ];
        let names: Vec<_> = rank(&pods)
            .into_iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, vec!["besteffort", "besteffort-high", "guaranteed"]);
    }
}
