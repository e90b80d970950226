//! Shared setup of the runtime's integration tests. They run as root and need
//! `runc`, `skopeo`, `docker-registry` and `busybox-static` (`scripts/setup.sh`
//! installs them); a missing piece fails the test with a message saying so.
#![allow(dead_code)]

use navarch_runtime::{
    ContainerRuntime, ContainerState, ContainerStatus, ImageService, LocalImageService,
    RuncRuntime, RuntimeConfig,
};
use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn have(cmd: &str) -> bool {
    std::process::Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Fail (never skip) when the environment cannot run these tests.
pub fn require(tools: &[&str]) {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "the runtime tests must run as root (they create namespaces, mounts and cgroups)"
    );
    for t in tools {
        assert!(
            have(t),
            "`{t}` is not installed: run scripts/setup.sh first"
        );
    }
}

static BUILD: Once = Once::new();

/// The busybox oci-archive from scripts/build-test-image.sh (built once).
pub fn test_image() -> PathBuf {
    let out = workspace_root().join("target/test-images/busybox.tar");
    BUILD.call_once(|| {
        let st = std::process::Command::new("bash")
            .arg(workspace_root().join("scripts/build-test-image.sh"))
            .arg(&out)
            .status()
            .expect("running scripts/build-test-image.sh");
        assert!(st.success(), "scripts/build-test-image.sh failed");
    });
    assert!(out.exists(), "{} was not built", out.display());
    out
}

pub const TEST_REF: &str = "navarch.test/busybox:1.35";

pub struct Env {
    pub dir: tempfile::TempDir,
    pub config: RuntimeConfig,
    pub images: LocalImageService,
    pub rt: RuncRuntime,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().unwrap();
        let mut config = RuntimeConfig::new(dir.path().join("root"));
        config.run_root = dir.path().join("run");
        config.shim_exe = PathBuf::from(env!("CARGO_BIN_EXE_navarch-runtime-shim"));
        config.runc = PathBuf::from("runc");
        let images = LocalImageService::new(&config).unwrap();
        let rt = RuncRuntime::new(config.clone()).unwrap();
        Env {
            dir,
            config,
            images,
            rt,
        }
    }

    /// An Env with the busybox image imported.
    pub async fn with_busybox() -> Env {
        require(&["runc"]);
        let env = Env::new();
        env.images.import(&test_image()).await.unwrap();
        env
    }

    pub fn log_path(&self, name: &str) -> PathBuf {
        self.dir.path().join("logs").join(format!("{name}.log"))
    }
}

/// Poll until the container has exited.
pub async fn wait_exited(rt: &RuncRuntime, id: &str, timeout: Duration) -> ContainerStatus {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let st = rt.container_status(id).await.unwrap();
        if matches!(st.state, ContainerState::Exited { .. }) {
            return st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "container {id} did not exit in {timeout:?}: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Poll until the log file contains `needle`.
pub async fn wait_log(path: &Path, needle: &str, timeout: Duration) -> String {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{needle:?} not in {}: {text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The messages of the log's records, e.g. `stdout F hi`.
pub fn log_records(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.split_once(' ').map(|(_, rest)| rest.to_string()))
        .collect()
}

/// A sandbox for a test pod `name` (its own cgroup parent per test process).
pub fn sandbox_config(name: &str) -> navarch_runtime::SandboxConfig {
    navarch_runtime::SandboxConfig {
        pod_uid: format!("uid-{name}"),
        pod_name: name.into(),
        namespace: "default".into(),
        hostname: name.into(),
        host_network: false,
        share_pid: false,
        cgroup_parent: format!("navarch-test/pod-{name}-{}", std::process::id()),
        limits: Default::default(),
        labels: std::collections::BTreeMap::new(),
    }
}

/// A busybox container running `sh -c script`, logging to the env's log dir.
pub fn container(env: &Env, name: &str, script: &str) -> navarch_runtime::ContainerConfig {
    navarch_runtime::ContainerConfig {
        name: name.into(),
        image: TEST_REF.into(),
        argv: vec!["sh".into(), "-c".into(), script.into()],
        log_path: env.log_path(name),
        ..Default::default()
    }
}

/// Remove every container and sandbox of `rt`.
pub async fn cleanup(rt: &RuncRuntime) {
    for c in rt.list_containers().await.unwrap() {
        rt.remove_container(&c.id).await.unwrap();
    }
    for s in rt.list_sandboxes().await.unwrap() {
        rt.remove_sandbox(&s.id).await.unwrap();
    }
}
