//! The Node object and its Lease: registration, heartbeats, status.

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Namespace, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta, OwnerReference, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};

use crate::host::HostInfo;
use crate::{AgentConfig, AgentError};

/// Lease renewal period.
pub const LEASE_RENEW: Duration = Duration::from_secs(10);
/// `leaseDurationSeconds`.
pub const LEASE_DURATION_SECONDS: i32 = 40;
/// Node status is re-posted at least this often even without changes.
pub const STATUS_REPORT_MAX: Duration = Duration::from_secs(300);
/// `kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.33.0-navarch";

/// Registers and maintains the Node and its Lease.
#[derive(Clone)]
pub struct NodeAgent {
    client: kube::Client,
    config: Arc<AgentConfig>,
    node_ip: String,
    runtime_version: String,
}

fn condition(
    type_: &str,
    ok_status: &str,
    reason: &str,
    message: &str,
    now: &Time,
) -> NodeCondition {
    NodeCondition {
        type_: type_.to_string(),
        status: ok_status.to_string(),
        reason: Some(reason.to_string()),
        message: Some(message.to_string()),
        last_heartbeat_time: Some(now.clone()),
        last_transition_time: Some(now.clone()),
    }
}

/// The node status for `host` (conditions with upstream's reasons/messages).
pub fn node_status(
    host: &HostInfo,
    thresholds: &crate::eviction::Thresholds,
    node_ip: &str,
    port: u16,
    runtime_version: &str,
    previous: Option<&NodeStatus>,
) -> NodeStatus {
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let mut capacity = std::collections::BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(host.cpus.to_string()));
    capacity.insert(
        "memory".to_string(),
        Quantity(format!("{}Ki", host.memory_bytes / 1024)),
    );
    capacity.insert("pods".to_string(), Quantity("110".to_string()));
    capacity.insert(
        "ephemeral-storage".to_string(),
        Quantity(format!("{}Ki", host.ephemeral_bytes / 1024)),
    );
    let mem_pressure = thresholds.memory_pressure(host);
    let disk_pressure = thresholds.disk_pressure(host);
    let mut conditions = vec![
        if mem_pressure {
            condition(
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                &now,
            )
        } else {
            condition(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                &now,
            )
        },
        if disk_pressure {
            condition(
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                &now,
            )
        } else {
            condition(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                &now,
            )
        },
        condition(
            "PIDPressure",
            "False",
            "KubeletHasSufficientPID",
            "kubelet has sufficient PID available",
            &now,
        ),
        condition(
            "Ready",
            "True",
            "KubeletReady",
            "kubelet is posting ready status",
            &now,
        ),
    ];
    if let Some(prev) = previous.and_then(|p| p.conditions.as_ref()) {
        for c in conditions.iter_mut() {
            if let Some(p) = prev
                .iter()
                .find(|p| p.type_ == c.type_ && p.status == c.status)
            {
                c.last_transition_time = p.last_transition_time.clone();
            }
        }
    }
    NodeStatus {
        capacity: Some(capacity.clone()),
        allocatable: Some(capacity),
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".to_string(),
                address: node_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".to_string(),
                address: host.hostname.clone(),
            },
        ]),
        conditions: Some(conditions),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: host.architecture.clone(),
            boot_id: std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            container_runtime_version: runtime_version.to_string(),
            kernel_version: host.kernel_version.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.to_string(),
            machine_id: host.machine_id.clone(),
            operating_system: "linux".to_string(),
            os_image: host.os_image.clone(),
            system_uuid: host.machine_id.clone(),
            swap: None,
        }),
        ..Default::default()
    }
}

/// The parts of a status that count as a change (no heartbeat times).
fn fingerprint(s: &NodeStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(s).unwrap_or_default();
    if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds {
            if let Some(o) = c.as_object_mut() {
                o.remove("lastHeartbeatTime");
                o.remove("lastTransitionTime");
            }
        }
    }
    v
}

impl NodeAgent {
    /// A node agent for `config`.
    pub fn new(
        client: kube::Client,
        config: Arc<AgentConfig>,
        node_ip: String,
        runtime_version: String,
    ) -> Self {
        NodeAgent {
            client,
            config,
            node_ip,
            runtime_version,
        }
    }

    fn status(&self, previous: Option<&NodeStatus>) -> NodeStatus {
        let host = HostInfo::read(&self.config.root);
        node_status(
            &host,
            &self.config.eviction,
            &self.node_ip,
            self.config.listen_port,
            &self.runtime_version,
            previous,
        )
    }

    /// Create the Node (or take over an existing one) and post its status.
    pub async fn register(&self) -> Result<(), AgentError> {
        let api: Api<Node> = Api::all(self.client.clone());
        let name = &self.config.node_name;
        let host = HostInfo::read(&self.config.root);
        let labels = [
            ("kubernetes.io/hostname".to_string(), name.clone()),
            ("kubernetes.io/os".to_string(), "linux".to_string()),
            ("kubernetes.io/arch".to_string(), host.architecture.clone()),
            ("beta.kubernetes.io/os".to_string(), "linux".to_string()),
            (
                "beta.kubernetes.io/arch".to_string(),
                host.architecture.clone(),
            ),
        ];
        let mut attempt = 0u32;
        let existing = loop {
            let node = Node {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some(labels.iter().cloned().collect()),
                    annotations: Some(
                        [("node.alpha.kubernetes.io/ttl".to_string(), "0".to_string())].into(),
                    ),
                    ..Default::default()
                },
                ..Default::default()
            };
            match api.create(&PostParams::default(), &node).await {
                Ok(n) => break n,
                Err(kube::Error::Api(s)) if s.code == 409 => {
                    let patch = serde_json::json!({"metadata": {"labels": labels.iter().cloned().collect::<std::collections::BTreeMap<_, _>>()}});
                    break api
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                Err(e) if attempt < 30 => {
                    attempt += 1;
                    tracing::warn!(error = %e, "node registration failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        let status = self.status(existing.status.as_ref());
        self.post_status(&status).await?;
        if let Err(e) = self.renew_lease(existing.metadata.uid.as_deref()).await {
            tracing::warn!(error = %e, "initial lease renewal failed");
        }
        Ok(())
    }

    async fn post_status(&self, status: &NodeStatus) -> Result<(), kube::Error> {
        let api: Api<Node> = Api::all(self.client.clone());
        let patch = serde_json::json!({ "status": status });
        api.patch_status(
            &self.config.node_name,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
        Ok(())
    }

    /// Create or update `kube-node-lease/<node>`.
    pub async fn renew_lease(&self, node_uid: Option<&str>) -> Result<(), kube::Error> {
        let api: Api<Lease> = Api::namespaced(self.client.clone(), "kube-node-lease");
        let name = &self.config.node_name;
        let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
        let spec = LeaseSpec {
            holder_identity: Some(name.clone()),
            lease_duration_seconds: Some(LEASE_DURATION_SECONDS),
            renew_time: Some(now),
            ..Default::default()
        };
        match api.get_opt(name).await? {
            Some(mut lease) => {
                let mut s = lease.spec.take().unwrap_or_default();
                s.holder_identity = spec.holder_identity;
                s.lease_duration_seconds = spec.lease_duration_seconds;
                s.renew_time = spec.renew_time;
                lease.spec = Some(s);
                api.replace(name, &PostParams::default(), &lease).await?;
            }
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(name.clone()),
                        namespace: Some("kube-node-lease".to_string()),
                        owner_references: node_uid.map(|uid| {
                            vec![OwnerReference {
                                api_version: "v1".to_string(),
                                kind: "Node".to_string(),
                                name: name.clone(),
                                uid: uid.to_string(),
                                ..Default::default()
                            }]
                        }),
                        ..Default::default()
                    },
                    spec: Some(spec),
                };
                match api.create(&PostParams::default(), &lease).await {
                    Ok(_) => {}
                    Err(kube::Error::Api(s)) if s.code == 404 => {
                        // the namespace is missing: create it, next renewal succeeds
                        let ns: Api<Namespace> = Api::all(self.client.clone());
                        let obj = Namespace {
                            metadata: ObjectMeta {
                                name: Some("kube-node-lease".to_string()),
                                ..Default::default()
                            },
                            ..Default::default()
                        };
                        let _ = ns.create(&PostParams::default(), &obj).await;
                        api.create(&PostParams::default(), &lease).await?;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Renew the lease every 10 s, forever.
    pub async fn lease_loop(self) {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let mut tick = tokio::time::interval(LEASE_RENEW);
        tick.tick().await;
        loop {
            tick.tick().await;
            let uid = nodes
                .get_opt(&self.config.node_name)
                .await
                .ok()
                .flatten()
                .and_then(|n| n.metadata.uid);
            if let Err(e) = self.renew_lease(uid.as_deref()).await {
                tracing::warn!(error = %e, "lease renewal failed");
            }
        }
    }

    /// Check the node status every 10 s; post it when it changed, and at least
    /// every 5 min.
    pub async fn status_loop(self) {
        let api: Api<Node> = Api::all(self.client.clone());
        let mut last_post = Instant::now();
        let mut last_fp: Option<serde_json::Value> = None;
        let mut tick = tokio::time::interval(Duration::from_secs(10));
        loop {
            tick.tick().await;
            let node = match api.get_opt(&self.config.node_name).await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the node failed");
                    continue;
                }
            };
            let Some(node) = node else {
                // deleted: register again
                if let Err(e) = self.register().await {
                    tracing::warn!(error = %e, "re-registration failed");
                }
                continue;
            };
            let status = self.status(node.status.as_ref());
            let fp = fingerprint(&status);
            let old_fp = node.status.as_ref().map(fingerprint);
            let changed = last_fp.as_ref() != Some(&fp) || old_fp.as_ref() != Some(&fp);
            if changed || last_post.elapsed() >= STATUS_REPORT_MAX {
                match self.post_status(&status).await {
                    Ok(()) => {
                        last_post = Instant::now();
                        last_fp = Some(fp);
                    }
                    Err(e) => tracing::warn!(error = %e, "node status update failed"),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_has_upstream_conditions() {
        let host = HostInfo::read(std::path::Path::new("/"));
        let s = node_status(
            &host,
            &Default::default(),
            "10.0.0.2",
            10250,
            "runc://1.1.12",
            None,
        );
        let conds = s.conditions.clone().unwrap();
        let ready = conds.iter().find(|c| c.type_ == "Ready").unwrap();
        assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
        assert_eq!(
            ready.message.as_deref(),
            Some("kubelet is posting ready status")
        );
        let pid = conds.iter().find(|c| c.type_ == "PIDPressure").unwrap();
        assert_eq!(pid.status, "False");
        assert_eq!(s.allocatable.as_ref().unwrap()["pods"].0, "110");
        assert_eq!(
            s.node_info.as_ref().unwrap().kubelet_version,
            KUBELET_VERSION
        );
        assert_eq!(
            s.daemon_endpoints
                .as_ref()
                .unwrap()
                .kubelet_endpoint
                .as_ref()
                .unwrap()
                .port,
            10250
        );
        // transition times survive
        let again = node_status(
            &host,
            &Default::default(),
            "10.0.0.2",
            10250,
            "runc://1.1.12",
            Some(&s),
        );
        assert_eq!(fingerprint(&again), fingerprint(&s));
    }
}
