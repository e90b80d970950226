//! navarch-runtime: images and containers for the node agent.
//!
//! The agent (crate `navarch-agent`) drives pods through two traits:
//! - [`ImageService`]: pull from registries, import archives, list and remove
//!   images; blobs are content-addressed and each layer is unpacked once and shared.
//! - [`ContainerRuntime`]: pod sandboxes (the shared net/ipc/uts namespaces of a
//!   pod) and containers (an OCI runtime spec per container: namespaces, cgroups,
//!   mounts, an overlayfs rootfs over the image's layers), their state, logs and
//!   exec.
//!
//! Everything is identified by plain strings so the agent can persist and re-adopt
//! state across restarts.
//!
//! Implementations: [`LocalImageService`] (content-addressed store, registry
//! pulls, archive imports) and [`RuncRuntime`] (runc under a per-container shim,
//! see [`shim_main`]), both configured by [`RuntimeConfig`]. `docs/runtime.md`
//! describes the on-disk layout and the decisions behind them.

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Errors from images and containers. `reason()` gives the Kubernetes waiting
/// reason the agent reports (`ErrImagePull`, `CreateContainerError`, ...).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("image {image:?} not found: {detail}")]
    ImageNotFound { image: String, detail: String },
    #[error("failed to pull image {image:?}: {detail}")]
    Pull { image: String, detail: String },
    #[error("invalid image reference {0:?}")]
    InvalidReference(String),
    #[error("invalid image archive: {0}")]
    InvalidArchive(String),
    #[error("container {0} not found")]
    ContainerNotFound(String),
    #[error("sandbox {0} not found")]
    SandboxNotFound(String),
    #[error("failed to create container: {0}")]
    Create(String),
    #[error("failed to start container: {0}")]
    Start(String),
    #[error("OCI runtime: {0}")]
    Oci(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

impl RuntimeError {
    /// The reason a container waiting on this error shows (upstream's strings).
    pub fn reason(&self) -> &'static str {
        match self {
            RuntimeError::ImageNotFound { .. } | RuntimeError::Pull { .. } => "ErrImagePull",
            RuntimeError::InvalidReference(_) => "InvalidImageName",
            RuntimeError::Start(_) => "RunContainerError",
            _ => "CreateContainerError",
        }
    }
}

pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// Credentials for one registry (from `imagePullSecrets` of type
/// `kubernetes.io/dockerconfigjson`).
#[derive(Clone, Debug, Default)]
pub struct RegistryAuth {
    pub username: Option<String>,
    pub password: Option<String>,
    pub identity_token: Option<String>,
}

/// A stored image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Image {
    /// `sha256:...` of the image config (upstream's image ID).
    pub id: String,
    /// References that point at it, e.g. `docker.io/library/busybox:1.36`.
    pub references: Vec<String>,
    /// `repo@sha256:...` of the manifest, as `imageID` in container statuses.
    pub repo_digests: Vec<String>,
    pub size: u64,
    /// From the image config: default entrypoint, cmd, env, working dir, user.
    pub config: ImageConfig,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageConfig {
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub working_dir: Option<String>,
    pub user: Option<String>,
}

/// Pull progress reported to a callback (for the CLI).
#[derive(Clone, Debug)]
pub struct PullProgress {
    pub layer: String,
    pub downloaded: u64,
    pub total: Option<u64>,
}

/// Size and free space of the filesystem holding the images (the kubelet's
/// "image filesystem").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FsUsage {
    /// Total bytes of the filesystem.
    pub capacity_bytes: u64,
    /// Bytes available to unprivileged users (`f_bavail`).
    pub available_bytes: u64,
}

/// What one image garbage collection did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageGcReport {
    /// IDs of the images removed, in the order they went (least recently used
    /// first).
    pub removed: Vec<String>,
    /// Bytes the removed blobs and unpacked layers took on disk.
    pub freed_bytes: u64,
}

#[async_trait::async_trait]
pub trait ImageService: Send + Sync + 'static {
    /// Pull `reference` (e.g. `busybox:1.36`, `127.0.0.1:5000/x/y@sha256:...`)
    /// unless already present; returns the image.
    async fn pull(
        &self,
        reference: &str,
        auth: &BTreeMap<String, RegistryAuth>,
        progress: Option<&(dyn Fn(PullProgress) + Send + Sync)>,
    ) -> Result<Image>;
    /// The image `reference` resolves to locally, if present.
    async fn get(&self, reference: &str) -> Result<Option<Image>>;
    /// Import an `oci-archive` or `docker-archive` tarball; returns the images in it.
    async fn import(&self, archive: &std::path::Path) -> Result<Vec<Image>>;
    async fn list(&self) -> Result<Vec<Image>>;
    async fn remove(&self, id_or_reference: &str) -> Result<()>;
    /// Size and free space of the image filesystem; `None` when the service
    /// cannot tell (then the agent never garbage-collects images).
    async fn image_fs_usage(&self) -> Result<Option<FsUsage>> {
        Ok(None)
    }
    /// Remove images no container uses, least recently used first, until at
    /// least `bytes_to_free` bytes are freed or no candidate is left. `in_use`
    /// holds image IDs or references the caller knows to be in use; blobs and
    /// layers shared with a remaining image stay.
    async fn garbage_collect(
        &self,
        in_use: &std::collections::HashSet<String>,
        bytes_to_free: u64,
    ) -> Result<ImageGcReport> {
        let _ = (in_use, bytes_to_free);
        Ok(ImageGcReport::default())
    }
}

/// What a pod's containers share.
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub pod_uid: String,
    pub pod_name: String,
    pub namespace: String,
    /// The hostname (the pod name, or spec.hostname).
    pub hostname: String,
    /// Use the host's network namespace (hostNetwork).
    pub host_network: bool,
    /// `shareProcessNamespace: true`.
    pub share_pid: bool,
    /// Cgroup parent for the pod (pod-level limits), relative to the runtime's root.
    pub cgroup_parent: String,
    /// Limits on the pod cgroup as a whole (pids, memory).
    pub limits: PodCgroupLimits,
    pub labels: BTreeMap<String, String>,
}

/// A created sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sandbox {
    pub id: String,
    pub pod_uid: String,
    /// Path of the network namespace (e.g. `/run/navarch/netns/<id>`); the network
    /// plugin sets it up.
    pub netns_path: Option<PathBuf>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    pub source: PathBuf,
    pub destination: String,
    pub read_only: bool,
}

/// Linux resources of one container.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// cgroup cpu shares (from requests.cpu; 2 minimum).
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds per period (from limits.cpu).
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    /// Bytes (from limits.memory).
    pub memory_limit: Option<i64>,
    pub pids_limit: Option<i64>,
}

/// Everything needed to create one container.
#[derive(Clone, Debug, Default)]
pub struct ContainerConfig {
    /// Container name within the pod.
    pub name: String,
    /// Restart attempt (0 for the first run); part of the container's identity.
    pub attempt: u32,
    pub image: String,
    /// The full argv (command + args already resolved against the image config).
    pub argv: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    /// uid, gid.
    pub user: Option<(u32, u32)>,
    pub mounts: Vec<Mount>,
    pub resources: Resources,
    pub read_only_rootfs: bool,
    pub privileged: bool,
    pub add_capabilities: Vec<String>,
    pub drop_capabilities: Vec<String>,
    pub no_new_privileges: bool,
    /// The seccomp profile (ignored for privileged containers, which are
    /// always unconfined).
    pub seccomp: SeccompProfile,
    pub tty: bool,
    /// Keep a stdin open for `kubectl attach -i`.
    pub stdin: bool,
    /// Close that stdin after the first attach client closes its own.
    pub stdin_once: bool,
    /// Where the container's stdout/stderr go (CRI log format).
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerState {
    Created,
    Running,
    Exited {
        exit_code: i32,
        /// "OOMKilled", "Error", "Completed".
        reason: String,
        finished_at: chrono::DateTime<chrono::Utc>,
    },
    Unknown,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerStatus {
    pub id: String,
    pub sandbox_id: String,
    pub name: String,
    pub attempt: u32,
    pub image: String,
    pub image_id: String,
    pub state: ContainerState,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub started_at: Option<chrono::DateTime<chrono::Utc>>,
    pub pid: Option<u32>,
    pub log_path: PathBuf,
    pub labels: BTreeMap<String, String>,
}

/// Output of a finished exec.
#[derive(Clone, Debug, Default)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + 'static {
    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox>;
    /// Remove a sandbox (its containers must be removed first).
    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<()>;
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>>;

    async fn create_container(&self, sandbox: &Sandbox, config: &ContainerConfig)
        -> Result<String>;
    async fn start_container(&self, id: &str) -> Result<()>;
    /// SIGTERM, then SIGKILL after `timeout`.
    async fn stop_container(&self, id: &str, timeout: std::time::Duration) -> Result<()>;
    async fn remove_container(&self, id: &str) -> Result<()>;
    async fn container_status(&self, id: &str) -> Result<ContainerStatus>;
    /// All containers this runtime knows (for re-adoption after an agent restart).
    async fn list_containers(&self) -> Result<Vec<ContainerStatus>>;
    /// Run a command in a running container and collect its output (probes, hooks).
    async fn exec_sync(
        &self,
        id: &str,
        argv: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput>;
    /// Start a command in a running container with live streams (kubectl exec,
    /// cp); see [`ExecRequest`]. Runtimes without it refuse.
    /// Attach to a running container's main process. `Ok(None)` when the container
    /// has neither stdin nor a TTY (its output is then only in its log).
    async fn attach(&self, id: &str) -> Result<Option<AttachSession>> {
        let _ = id;
        Ok(None)
    }

    async fn exec_stream(&self, id: &str, request: &ExecRequest) -> Result<ExecProcess> {
        let _ = request;
        Err(RuntimeError::Oci(format!(
            "container {id}: streaming exec is not supported by this runtime"
        )))
    }
}

mod attach;
mod cgroup;
mod config;
mod cri_log;
mod digest;
mod exec;
mod images;
mod reference;
mod runc;
mod sandbox;
mod seccomp;
mod shim;
mod spec;
mod sys;

pub use attach::{AttachReader, AttachSession, AttachWriter, Frame as AttachFrame};
pub use cgroup::{CgroupLayout, PodCgroupLimits};
pub use config::RuntimeConfig;
pub use cri_log::{CriLogWriter, LogStream};
pub use exec::{ExecProcess, ExecReader, ExecRequest, ExecWriter, TerminalResizer};
pub use images::{ImageGcPolicy, LocalImageService, RegistriesConfig};
pub use reference::{ImageReference, REFERENCE_DOCKER_HUB};
pub use runc::RuncRuntime;
pub use seccomp::{SeccompError, SeccompProfile};
pub use shim::{shim_main, SHIM_SUBCOMMAND};
