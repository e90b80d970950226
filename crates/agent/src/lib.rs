//! navarch-agent: the node agent (navarch's kubelet).
//!
//! The agent is a client of the API server (through `kube`) and drives containers
//! through the [`navarch_runtime`] traits. [`run`] does everything:
//!
//! - [`node`]: registers the Node (capacity, addresses, nodeInfo, conditions),
//!   renews the Lease `kube-node-lease/<node>` and reports node status.
//! - [`manager`]: watches the pods bound to this node and hands each to its own
//!   worker; it also relists the runtime (a PLEG) to notice container exits.
//! - [`sync`]: one level-triggered sync of one pod: sandbox, volumes, init
//!   containers, containers, restarts with back-off, termination.
//! - [`status`]: pod status (phase, conditions, container statuses) from what the
//!   runtime reports.
//! - [`env`] and [`expand`]: container environment and `$(VAR)` expansion.
//! - [`volumes`]: emptyDir, configMap, secret, hostPath, downwardAPI, projected.
//! - [`events`]: core/v1 events with upstream-style aggregation.
//! - [`logs`]: the HTTPS endpoint serving `/containerLogs/...` from CRI log files.
//!
//! See `docs/agent.md` for how sync, status and re-adoption work.

pub mod atomic;
pub mod backoff;
pub mod env;
pub mod events;
pub mod eviction;
pub mod exec;
pub mod expand;
pub mod handlers;
pub mod hooks;
pub mod host;
pub mod labels;
pub mod logs;
pub mod manager;
pub mod node;
pub mod portforward;
pub mod probes;
pub mod spdy;
pub mod status;
pub mod sync;
pub mod volumes;

#[cfg(test)]
mod testrt;

use std::path::PathBuf;
use std::sync::Arc;

use navarch_runtime::{ContainerRuntime, ImageService};

/// How the agent runs.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    /// The Node's name (and `spec.nodeName` of the pods it runs).
    pub node_name: String,
    /// State directory, e.g. `/var/lib/navarch/agent`: pod dirs, volumes, logs.
    pub root: PathBuf,
    /// cert/key (PEM) of the agent's HTTPS endpoint (logs); `None` disables it.
    pub server_tls: Option<(PathBuf, PathBuf)>,
    /// CA that signs the API server's client certificates for that endpoint.
    pub client_ca: Option<PathBuf>,
    /// Port of the HTTPS endpoint (10250 by default).
    pub listen_port: u16,
    /// The node's InternalIP; detected when `None`.
    pub node_ip: Option<String>,
    /// Nameserver written to pods' resolv.conf (ClusterFirst).
    pub cluster_dns: Option<String>,
    /// e.g. `cluster.local`.
    pub cluster_domain: String,
    /// `pids.max` of every pod's cgroup (the kubelet's `podPidsLimit`);
    /// `None` leaves pods unlimited.
    pub pod_pids_limit: Option<i64>,
    /// Hard eviction thresholds (`--eviction-hard`); also decide the node's
    /// MemoryPressure and DiskPressure conditions.
    pub eviction: eviction::Thresholds,
}

impl AgentConfig {
    /// A configuration with the defaults (port 10250, `cluster.local`).
    pub fn new(node_name: impl Into<String>, root: impl Into<PathBuf>) -> Self {
        AgentConfig {
            node_name: node_name.into(),
            root: root.into(),
            server_tls: None,
            client_ca: None,
            listen_port: 10250,
            node_ip: None,
            cluster_dns: None,
            cluster_domain: "cluster.local".to_string(),
            pod_pids_limit: None,
            eviction: eviction::Thresholds::default(),
        }
    }
}

/// Why the agent stopped.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// An API call failed in a way the agent cannot retry around.
    #[error("api: {0}")]
    Api(#[from] kube::Error),
    /// The container runtime failed.
    #[error("runtime: {0}")]
    Runtime(#[from] navarch_runtime::RuntimeError),
    /// Local filesystem trouble (the state directory).
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTPS endpoint could not be configured.
    #[error("tls: {0}")]
    Tls(String),
}

/// Run the agent until the process ends (or a fatal error).
///
/// Registers the node, starts the lease and node-status loops, the log endpoint
/// (when `server_tls` is set) and the pod manager.
pub async fn run(
    config: AgentConfig,
    client: kube::Client,
    images: Arc<dyn ImageService>,
    runtime: Arc<dyn ContainerRuntime>,
) -> Result<(), AgentError> {
    run_with_network(config, client, images, runtime, None).await
}

/// [`run`], with a network plugin that gives each pod its own IP.
pub async fn run_with_network(
    config: AgentConfig,
    client: kube::Client,
    images: Arc<dyn ImageService>,
    runtime: Arc<dyn ContainerRuntime>,
    network: Option<Arc<dyn sync::NetworkPlugin>>,
) -> Result<(), AgentError> {
    std::fs::create_dir_all(config.root.join("pods"))?;
    let config = Arc::new(config);
    let node_ip = config.node_ip.clone().unwrap_or_else(host::detect_node_ip);
    let recorder = events::Recorder::spawn(client.clone(), config.node_name.clone());
    let node_handle = node::NodeAgent::new(
        client.clone(),
        config.clone(),
        node_ip.clone(),
        runtime_version(),
    );
    node_handle.register().await?;
    tokio::spawn(node_handle.clone().lease_loop());
    tokio::spawn(node_handle.status_loop());
    tokio::spawn(eviction::run(
        client.clone(),
        config.clone(),
        recorder.clone(),
        images.clone(),
        runtime.clone(),
    ));
    if let Some((cert, key)) = &config.server_tls {
        let tls = logs::server_config(cert, key, config.client_ca.as_deref())?;
        let listener = tokio::net::TcpListener::bind(("0.0.0.0", config.listen_port)).await?;
        tokio::spawn(logs::serve(
            listener,
            tls,
            runtime.clone(),
            config.root.clone(),
        ));
    }
    let host = host::HostInfo::read(&config.root);
    let allocatable = env::NodeAllocatable {
        cpu_cores: host.cpus,
        memory: host.memory_bytes,
        ephemeral_storage: host.ephemeral_bytes,
    };
    let ctx = Arc::new(sync::Context {
        client,
        config,
        images,
        runtime,
        recorder,
        node_ip,
        network,
        allocatable,
    });
    manager::run(ctx).await
}

/// A chrono time as the API's timestamp type.
pub(crate) fn ts(dt: chrono::DateTime<chrono::Utc>) -> k8s_openapi::jiff::Timestamp {
    k8s_openapi::jiff::Timestamp::new(dt.timestamp(), dt.timestamp_subsec_nanos() as i32)
        .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)
}

/// `containerRuntimeVersion` reported in nodeInfo.
fn runtime_version() -> String {
    let v = std::process::Command::new("runc")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
        })
        .unwrap_or_else(|| "unknown".to_string());
    format!("runc://{v}")
}
