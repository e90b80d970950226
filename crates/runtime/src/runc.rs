//! [`RuncRuntime`]: the [`crate::ContainerRuntime`] over `runc`, one shim per container.
//!
//! Layout: `<root>/sandboxes/<id>/{sandbox.json,ns/}` and
//! `<root>/containers/<id>/{meta.json,config.json,rootfs/,upper/,work/,started.json,exit.json,...}`
//! (the container dir is the OCI bundle). Everything is on disk, so a new
//! `RuncRuntime` on the same root re-adopts what an earlier one created.

use crate::images::store::ImageStore;
use crate::sandbox::{create_namespaces, remove_namespaces, NsSet};
use crate::shim::{ExitState, ShimArgs, StartedState, StdioMode, EXIT_FILE, STARTED_FILE};
use crate::spec::{self, NamespacePaths};
use crate::ContainerRuntime as _;
use crate::{
    ContainerConfig, ContainerState, ContainerStatus, ExecOutput, Result, RuntimeConfig,
    RuntimeError, Sandbox, SandboxConfig,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// `sandbox.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct SandboxMeta {
    id: String,
    pod_uid: String,
    pod_name: String,
    namespace: String,
    hostname: String,
    host_network: bool,
    share_pid: bool,
    cgroup_parent: String,
    labels: BTreeMap<String, String>,
    netns_path: Option<PathBuf>,
    ipc_path: Option<PathBuf>,
    uts_path: Option<PathBuf>,
    pid_path: Option<PathBuf>,
    /// The pod's shared /dev/shm (a tmpfs).
    #[serde(default)]
    shm_path: Option<PathBuf>,
}

impl SandboxMeta {
    fn sandbox(&self) -> Sandbox {
        Sandbox {
            id: self.id.clone(),
            pod_uid: self.pod_uid.clone(),
            netns_path: self.netns_path.clone(),
        }
    }
}

/// `meta.json` of a container.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct ContainerMeta {
    id: String,
    sandbox_id: String,
    name: String,
    attempt: u32,
    image: String,
    image_id: String,
    created_at: DateTime<Utc>,
    log_path: PathBuf,
    labels: BTreeMap<String, String>,
    /// Diff IDs under the rootfs (kept from image GC).
    layers: Vec<String>,
    cgroups_path: String,
    /// stdin / stdinOnce / tty of the main process.
    #[serde(default)]
    stdin: bool,
    #[serde(default)]
    stdin_once: bool,
    #[serde(default)]
    tty: bool,
}

fn read_json<T: for<'de> Deserialize<'de>>(p: &Path) -> std::io::Result<Option<T>> {
    match std::fs::read(p) {
        Ok(b) => serde_json::from_slice(&b).map(Some).map_err(|e| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {e}", p.display()),
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

fn write_json(p: &Path, v: &impl Serialize) -> std::io::Result<()> {
    let tmp = p.with_extension("tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec_pretty(v).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, p)
}

/// Diff IDs of layers under any container's rootfs in `containers_dir`.
pub(crate) fn layers_in_use(containers_dir: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(containers_dir) else {
        return Vec::new();
    };
    rd.flatten()
        .filter_map(|e| {
            read_json::<ContainerMeta>(&e.path().join("meta.json"))
                .ok()
                .flatten()
        })
        .flat_map(|m| m.layers)
        .collect()
}

/// Overlayfs mount data may be at most a page.
const MAX_MOUNT_DATA: usize = 4095;

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Containers run by `runc` under a shim; pod sandboxes as pinned namespaces.
#[derive(Clone)]
pub struct RuncRuntime {
    cfg: Arc<RuntimeConfig>,
    images: Arc<ImageStore>,
}

impl std::fmt::Debug for RuncRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuncRuntime")
            .field("config", &self.cfg)
            .finish()
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("blocking task: {e}"))))?
}

impl RuncRuntime {
    /// Open (creating) the state under `config.root` and `config.run_root`. The
    /// image store is the one [`crate::LocalImageService`] uses on the same root.
    pub fn new(config: RuntimeConfig) -> Result<Self> {
        for d in [
            config.containers_dir(),
            config.sandboxes_dir(),
            config.runc_root(),
        ] {
            std::fs::create_dir_all(d)?;
        }
        let images = Arc::new(ImageStore::open(config.images_dir())?);
        Ok(RuncRuntime {
            cfg: Arc::new(config),
            images,
        })
    }

    /// The runtime's configuration.
    pub fn config(&self) -> &RuntimeConfig {
        &self.cfg
    }

    fn container_dir(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(RuntimeError::ContainerNotFound(id.to_string()));
        }
        Ok(self.cfg.containers_dir().join(id))
    }

    fn sandbox_dir(&self, id: &str) -> Result<PathBuf> {
        if !valid_id(id) {
            return Err(RuntimeError::SandboxNotFound(id.to_string()));
        }
        Ok(self.cfg.sandboxes_dir().join(id))
    }

    fn load_meta(&self, id: &str) -> Result<ContainerMeta> {
        read_json(&self.container_dir(id)?.join("meta.json"))?
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.into()))
    }

    fn status_of(&self, meta: ContainerMeta) -> Result<ContainerStatus> {
        let dir = self.cfg.containers_dir().join(&meta.id);
        let started: Option<StartedState> = read_json(&dir.join(STARTED_FILE))?;
        let exited: Option<ExitState> = read_json(&dir.join(EXIT_FILE))?;
        let state = match (&started, exited) {
            (_, Some(e)) => ContainerState::Exited {
                exit_code: e.exit_code,
                reason: if e.oom_killed {
                    "OOMKilled".into()
                } else if e.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                finished_at: e.finished_at,
            },
            (Some(s), None) => {
                if crate::sys::same_process_alive(s.pid, s.pid_start_time)
                    || crate::sys::same_process_alive(s.shim_pid, s.shim_start_time)
                {
                    ContainerState::Running
                } else {
                    ContainerState::Unknown
                }
            }
            (None, None) => ContainerState::Created,
        };
        let pid = match (&state, &started) {
            (ContainerState::Running, Some(s)) => Some(s.pid),
            _ => None,
        };
        Ok(ContainerStatus {
            id: meta.id,
            sandbox_id: meta.sandbox_id,
            name: meta.name,
            attempt: meta.attempt,
            image: meta.image,
            image_id: meta.image_id,
            state,
            created_at: meta.created_at,
            started_at: started.map(|s| s.started_at),
            pid,
            log_path: meta.log_path,
            labels: meta.labels,
        })
    }

    async fn runc(&self, args: &[&str]) -> Result<std::process::Output> {
        tokio::process::Command::new(&self.cfg.runc)
            .arg("--root")
            .arg(self.cfg.runc_root())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .map_err(|e| RuntimeError::Oci(format!("running {}: {e}", self.cfg.runc.display())))
    }

    /// Wait until the container's exit is recorded, up to `timeout`.
    async fn wait_exit(&self, id: &str, timeout: Duration) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let st = self.container_status(id).await?;
            match st.state {
                ContainerState::Exited { .. }
                | ContainerState::Unknown
                | ContainerState::Created => return Ok(true),
                ContainerState::Running => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Remove sandbox directories that have no `sandbox.json` (a create cut
    /// short, or a data dir whose files were deleted while its namespace and
    /// `/dev/shm` mounts kept the directories): `list_sandboxes` does not see
    /// them, so nothing else would unmount them. Returns how many were removed.
    pub async fn remove_orphan_sandboxes(&self) -> Result<usize> {
        use crate::ContainerRuntime;
        let dir = self.cfg.sandboxes_dir();
        let orphans = blocking(move || {
            let rd = match std::fs::read_dir(&dir) {
                Ok(rd) => rd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(e.into()),
            };
            let mut out = Vec::new();
            for e in rd {
                let p = e?.path();
                if p.is_dir() && !p.join("sandbox.json").exists() {
                    if let Some(id) = p.file_name().and_then(|n| n.to_str()) {
                        out.push(id.to_string());
                    }
                }
            }
            Ok(out)
        })
        .await?;
        for id in &orphans {
            self.remove_sandbox(id).await?;
        }
        Ok(orphans.len())
    }
}

#[async_trait::async_trait]
impl crate::ContainerRuntime for RuncRuntime {
    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let id = crate::digest::random_id();
        let dir = self.sandbox_dir(&id)?;
        let c = config.clone();
        blocking(move || {
            std::fs::create_dir_all(&dir)?;
            let ns_dir = dir.join("ns");
            // hostNetwork pods also keep the node's hostname (UTS), as upstream.
            let set = NsSet {
                net: !c.host_network,
                ipc: true,
                uts: !c.host_network,
                pid: c.share_pid,
            };
            if let Err(e) = create_namespaces(&ns_dir, &c.hostname, set) {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(RuntimeError::Create(format!("sandbox namespaces: {e}")));
            }
            let shm = dir.join("shm");
            let shm_ok = std::fs::create_dir_all(&shm)
                .and_then(|_| crate::sys::mount_tmpfs(&shm, "mode=1777,size=65536k"));
            if let Err(e) = shm_ok {
                let _ = remove_namespaces(&ns_dir);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(RuntimeError::Create(format!("sandbox /dev/shm: {e}")));
            }
            let layout = crate::cgroup::CgroupLayout::detect(Path::new("/sys/fs/cgroup"));
            // Undo everything above (a failed create leaves nothing behind).
            let undo = || {
                let _ = crate::sys::umount_detach(&shm);
                let _ = remove_namespaces(&ns_dir);
                let _ = std::fs::remove_dir_all(&dir);
                remove_pod_cgroups(&c.cgroup_parent);
            };
            if let Err(e) = layout.apply(&c.cgroup_parent, &c.limits) {
                undo();
                return Err(RuntimeError::Create(format!("pod cgroup: {e}")));
            }
            let p = |on: bool, n: &str| on.then(|| ns_dir.join(n));
            let meta = SandboxMeta {
                id: id.clone(),
                pod_uid: c.pod_uid.clone(),
                pod_name: c.pod_name.clone(),
                namespace: c.namespace.clone(),
                hostname: c.hostname.clone(),
                host_network: c.host_network,
                share_pid: c.share_pid,
                cgroup_parent: c.cgroup_parent.clone(),
                labels: c.labels.clone(),
                netns_path: p(set.net, "net"),
                ipc_path: p(set.ipc, "ipc"),
                uts_path: p(set.uts, "uts"),
                pid_path: p(set.pid, "pid"),
                shm_path: Some(shm.clone()),
            };
            if let Err(e) = write_json(&dir.join("sandbox.json"), &meta) {
                // Without its metadata the sandbox would be invisible to
                // `list_sandboxes`, its mounts pinned for good.
                undo();
                return Err(e.into());
            }
            Ok(meta.sandbox())
        })
        .await
    }

    async fn remove_sandbox(&self, sandbox_id: &str) -> Result<()> {
        let dir = self.sandbox_dir(sandbox_id)?;
        blocking(move || {
            let meta: Option<SandboxMeta> = read_json(&dir.join("sandbox.json"))?;
            remove_namespaces(&dir.join("ns"))?;
            crate::sys::umount_detach(&dir.join("shm"))?;
            if let Some(m) = meta {
                remove_pod_cgroups(&m.cgroup_parent);
            }
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        let dir = self.cfg.sandboxes_dir();
        blocking(move || {
            let mut out = Vec::new();
            for e in std::fs::read_dir(dir)? {
                if let Some(m) = read_json::<SandboxMeta>(&e?.path().join("sandbox.json"))? {
                    out.push(m.sandbox());
                }
            }
            Ok(out)
        })
        .await
    }

    async fn create_container(
        &self,
        sandbox: &Sandbox,
        config: &ContainerConfig,
    ) -> Result<String> {
        let sb_dir = self.sandbox_dir(&sandbox.id)?;
        let id = crate::digest::random_id();
        let dir = self.container_dir(&id)?;
        let images = self.images.clone();
        let c = config.clone();
        let sandbox_id = sandbox.id.clone();
        blocking(move || {
            let sb: SandboxMeta = read_json(&sb_dir.join("sandbox.json"))?
                .ok_or(RuntimeError::SandboxNotFound(sandbox_id))?;
            let image = images
                .resolve(&c.image)?
                .ok_or_else(|| RuntimeError::ImageNotFound {
                    image: c.image.clone(),
                    detail: "not present locally".into(),
                })?;
            let lowers = crate::images::layer_dirs(&images, &image.id)?;
            if let Err(e) = images.mark_used(&image.id) {
                tracing::debug!(image = %image.id, error = %e, "recording image use");
            }
            let rootfs = dir.join("rootfs");
            for d in ["rootfs", "upper", "work"] {
                std::fs::create_dir_all(dir.join(d))?;
            }
            let result = (|| -> Result<ContainerMeta> {
                let mut lower: Vec<String> =
                    lowers.iter().map(|p| p.display().to_string()).collect();
                if lower.is_empty() {
                    std::fs::create_dir_all(dir.join("empty"))?;
                    lower.push(dir.join("empty").display().to_string());
                }
                if lower.iter().any(|l| l.contains([':', ','])) {
                    return Err(RuntimeError::Create(
                        "layer path contains ':' or ','".into(),
                    ));
                }
                let data = format!(
                    "lowerdir={},upperdir={},workdir={}",
                    lower.join(":"),
                    dir.join("upper").display(),
                    dir.join("work").display()
                );
                if data.len() > MAX_MOUNT_DATA {
                    return Err(RuntimeError::Create(format!(
                        "{} layers make the overlay mount options too long",
                        lower.len()
                    )));
                }
                crate::sys::mount_overlay(&rootfs, &data)
                    .map_err(|e| RuntimeError::Create(format!("mounting the rootfs: {e}")))?;
                let parent = sb.cgroup_parent.trim_matches('/');
                let cgroups_path = if parent.is_empty() {
                    format!("/navarch/{id}")
                } else {
                    format!("/{parent}/{id}")
                };
                let ns = NamespacePaths {
                    net: sb.netns_path.clone(),
                    ipc: sb.ipc_path.clone(),
                    uts: sb.uts_path.clone(),
                    pid: sb.pid_path.clone(),
                    shm: sb.shm_path.clone(),
                };
                let spec = spec::build(&c, &image.config, &rootfs, &ns, &cgroups_path);
                write_json(&dir.join("config.json"), &spec)?;
                if let Some(parent) = c.log_path.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let meta = ContainerMeta {
                    id: id.clone(),
                    sandbox_id: sb.id.clone(),
                    name: c.name.clone(),
                    attempt: c.attempt,
                    image: c.image.clone(),
                    image_id: image.id.clone(),
                    created_at: Utc::now(),
                    log_path: c.log_path.clone(),
                    labels: c.labels.clone(),
                    layers: image.layers.clone(),
                    cgroups_path,
                    stdin: c.stdin,
                    stdin_once: c.stdin_once,
                    tty: c.tty,
                };
                write_json(&dir.join("meta.json"), &meta)?;
                Ok(meta)
            })();
            match result {
                Ok(_) => Ok(id),
                Err(e) => {
                    let _ = crate::sys::umount_detach(&rootfs);
                    let _ = std::fs::remove_dir_all(&dir);
                    Err(e)
                }
            }
        })
        .await
    }

    async fn start_container(&self, id: &str) -> Result<()> {
        let meta = self.load_meta(id)?;
        let dir = self.container_dir(id)?;
        if dir.join(STARTED_FILE).exists() || dir.join(EXIT_FILE).exists() {
            return Err(RuntimeError::Start(format!(
                "container {id} was already started"
            )));
        }
        let args = ShimArgs {
            bundle: dir.clone(),
            id: id.to_string(),
            runc: self.cfg.runc.clone(),
            runc_root: self.cfg.runc_root(),
            log: meta.log_path.clone(),
            log_max: self.cfg.log_max_size,
            cgroup_path: meta.cgroups_path.clone(),
            stdio: StdioMode {
                stdin: meta.stdin,
                stdin_once: meta.stdin_once,
                tty: meta.tty,
            },
        };
        let shim_log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(dir.join("shim.log"))?;
        let mut child = tokio::process::Command::new(&self.cfg.shim_exe)
            .args(args.to_argv())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(shim_log)
            .spawn()
            .map_err(|e| {
                RuntimeError::Start(format!(
                    "spawning shim {}: {e}",
                    self.cfg.shim_exe.display()
                ))
            })?;
        let mut out = child
            .stdout
            .take()
            .ok_or_else(|| RuntimeError::Start("shim has no stdout".into()))?;
        let mut line = String::new();
        use tokio::io::AsyncReadExt;
        let read =
            tokio::time::timeout(Duration::from_secs(60), out.read_to_string(&mut line)).await;
        let _ = child.wait().await;
        match read {
            Err(_) => {
                return Err(RuntimeError::Start(
                    "the shim did not answer within 60s".into(),
                ))
            }
            Ok(Err(e)) => {
                return Err(RuntimeError::Start(format!(
                    "reading the shim's answer: {e}"
                )))
            }
            Ok(Ok(_)) => {}
        }
        let line = line.trim();
        if line.starts_with("ok ") {
            Ok(())
        } else if let Some(msg) = line.strip_prefix("error ") {
            Err(RuntimeError::Start(msg.to_string()))
        } else {
            let log = std::fs::read_to_string(dir.join("shim.log")).unwrap_or_default();
            Err(RuntimeError::Start(format!(
                "the shim failed: {line:?} {}",
                log.trim()
            )))
        }
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> Result<()> {
        let st = self.container_status(id).await?;
        if st.state != ContainerState::Running {
            return Ok(());
        }
        if !timeout.is_zero() {
            let _ = self.runc(&["kill", id, "TERM"]).await?;
            if self.wait_exit(id, timeout).await? {
                return Ok(());
            }
        }
        let out = self.runc(&["kill", "--all", id, "KILL"]).await?;
        if self.wait_exit(id, Duration::from_secs(10)).await? {
            return Ok(());
        }
        Err(RuntimeError::Oci(format!(
            "container {id} did not stop after SIGKILL: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }

    async fn remove_container(&self, id: &str) -> Result<()> {
        let dir = self.container_dir(id)?;
        if !dir.exists() {
            return Ok(());
        }
        if let Ok(st) = self.container_status(id).await {
            if st.state == ContainerState::Running {
                self.stop_container(id, Duration::ZERO).await?;
            }
        }
        // The shim deletes the runc container when it exits; this covers a dead shim.
        let _ = self.runc(&["delete", "--force", id]).await;
        blocking(move || {
            crate::sys::umount_detach(&dir.join("rootfs"))?;
            match std::fs::remove_dir_all(&dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            }
        })
        .await
    }

    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        let meta = self.load_meta(id)?;
        self.status_of(meta)
    }

    async fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        let dir = self.cfg.containers_dir();
        let this = self.clone();
        blocking(move || {
            let mut out = Vec::new();
            for e in std::fs::read_dir(dir)? {
                let e = e?;
                if let Some(m) = read_json::<ContainerMeta>(&e.path().join("meta.json"))? {
                    out.push(this.status_of(m)?);
                }
            }
            out.sort_by_key(|c| c.created_at);
            Ok(out)
        })
        .await
    }

    async fn attach(&self, id: &str) -> Result<Option<crate::AttachSession>> {
        let meta = self.load_meta(id)?;
        let dir = self.container_dir(id)?;
        let (tty, stdin) = (meta.tty, meta.stdin);
        let st = self.status_of(meta)?;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::Oci(format!("container {id} is not running")));
        }
        if !(tty || stdin) || !crate::attach::available(&dir) {
            return Ok(None);
        }
        crate::attach::connect(&dir, tty, stdin).await.map(Some)
    }

    async fn exec_stream(
        &self,
        id: &str,
        request: &crate::ExecRequest,
    ) -> Result<crate::ExecProcess> {
        let st = self.container_status(id).await?;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::Oci(format!("container {id} is not running")));
        }
        crate::exec::spawn(&self.cfg.runc, &self.cfg.runc_root(), id, request)
    }

    async fn exec_sync(&self, id: &str, argv: &[String], timeout: Duration) -> Result<ExecOutput> {
        let st = self.container_status(id).await?;
        if st.state != ContainerState::Running {
            return Err(RuntimeError::Oci(format!("container {id} is not running")));
        }
        if argv.is_empty() {
            return Err(RuntimeError::Oci("exec needs a command".into()));
        }
        let pid_file = self
            .container_dir(id)?
            .join(format!("exec-{}.pid", &crate::digest::random_id()[..12]));
        let mut cmd = tokio::process::Command::new(&self.cfg.runc);
        cmd.arg("--root")
            .arg(self.cfg.runc_root())
            .arg("exec")
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .args(argv)
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true);
        let result = tokio::time::timeout(timeout, cmd.output()).await;
        let exec_pid: Option<i32> = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse().ok());
        let _ = std::fs::remove_file(&pid_file);
        match result {
            Ok(Ok(out)) => {
                use std::os::unix::process::ExitStatusExt;
                let exit_code = out
                    .status
                    .code()
                    .unwrap_or_else(|| 128 + out.status.signal().unwrap_or(0));
                Ok(ExecOutput {
                    exit_code,
                    stdout: out.stdout,
                    stderr: out.stderr,
                })
            }
            Ok(Err(e)) => Err(RuntimeError::Oci(format!("runc exec: {e}"))),
            Err(_) => {
                if let Some(p) = exec_pid {
                    // SAFETY: signalling the exec'd process runc reported.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                Err(RuntimeError::Oci(format!(
                    "command timed out after {timeout:?}"
                )))
            }
        }
    }
}

/// Best-effort removal of a pod's cgroup directories (runc leaves the parents).
/// A cgroup whose last processes are still exiting is busy for a moment (and
/// so is its parent): each is retried for up to [`CGROUP_REMOVE_WAIT`].
fn remove_pod_cgroups(parent: &str) {
    let rel = parent.trim_matches('/');
    if rel.is_empty() {
        return;
    }
    let Ok(rd) = std::fs::read_dir("/sys/fs/cgroup") else {
        return;
    };
    let mut candidates = vec![Path::new("/sys/fs/cgroup").join(rel)];
    for e in rd.flatten() {
        candidates.push(e.path().join(rel));
    }
    let deadline = std::time::Instant::now() + CGROUP_REMOVE_WAIT;
    for c in candidates {
        if c.is_dir() {
            remove_cgroup_tree(&c, deadline);
        }
    }
}

/// How long removing a pod's cgroups waits for exiting processes.
const CGROUP_REMOVE_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Remove a cgroup and the cgroups below it (children first).
fn remove_cgroup_tree(dir: &Path, deadline: std::time::Instant) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path(), deadline);
            }
        }
    }
    loop {
        match std::fs::remove_dir(dir) {
            Err(e)
                if e.raw_os_error() == Some(libc::EBUSY)
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                tracing::debug!(cgroup = %dir.display(), error = %e, "cannot remove a pod cgroup");
                return;
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated() {
        assert!(valid_id("abc-123_x"));
        assert!(!valid_id("../etc"));
        assert!(!valid_id(""));
        assert!(!valid_id("a/b"));
    }

    #[tokio::test]
    async fn unknown_ids_are_not_found() {
        use crate::ContainerRuntime;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = RuntimeConfig::new(dir.path().join("root"));
        cfg.run_root = dir.path().join("run");
        let rt = RuncRuntime::new(cfg).unwrap();
        assert!(matches!(
            rt.container_status("nope").await,
            Err(RuntimeError::ContainerNotFound(_))
        ));
        assert!(matches!(
            rt.container_status("../x").await,
            Err(RuntimeError::ContainerNotFound(_))
        ));
        assert!(rt.list_containers().await.unwrap().is_empty());
        assert!(rt.list_sandboxes().await.unwrap().is_empty());
        rt.remove_container("nope").await.unwrap();
        rt.remove_sandbox("nope").await.unwrap();
        let sb = Sandbox {
            id: "missing".into(),
            pod_uid: "u".into(),
            netns_path: None,
        };
        let r = rt.create_container(&sb, &ContainerConfig::default()).await;
        assert!(matches!(r, Err(RuntimeError::SandboxNotFound(_))));
    }
}
