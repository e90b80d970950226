//! Test harness: a real `navarch server` on a free port with its own data dir,
//! driven with the real `kubectl` (and the Python client).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub struct Cluster {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    pub port: u16,
    /// The local node agent's port, when the server runs one.
    pub agent_port: Option<u16>,
    /// Extra `navarch server` flags (kept across restarts).
    extra_args: Vec<String>,
    /// Held by clusters that run the bridge pod network (see
    /// [`Cluster::start_with_network`]); released after the node is reset.
    net_lock: Option<std::fs::File>,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

/// The test image (`navarch.test/busybox:1.35`), built once by
/// `scripts/build-test-image.sh` from Debian's busybox-static.
pub const TEST_IMAGE: &str = "navarch.test/busybox:1.35";

pub fn test_image() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = root.join("target/test-images/busybox.tar");
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(root.join("scripts/build-test-image.sh"))
            .arg(&out)
            .status()
            .expect("run scripts/build-test-image.sh");
        assert!(status.success(), "scripts/build-test-image.sh failed");
    });
    out
}

pub fn navarch_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_navarch"))
}

impl Cluster {
    /// A control plane without a node (API, controllers, scheduler).
    pub fn start() -> Cluster {
        Self::start_with(false, &[])
    }

    /// A control plane plus the local node agent running real containers (needs root).
    pub fn start_with_node() -> Cluster {
        Self::start_with_node_args(&[])
    }

    /// `start_with_node` with extra `navarch server` flags. Unless they say
    /// otherwise, the node runs without pod network (`--pod-network=none`):
    /// only one node per host can run the bridge network, and tests run in
    /// parallel. Tests of the network use [`Cluster::start_with_network`].
    pub fn start_with_node_args(extra: &[&str]) -> Cluster {
        let mut args: Vec<&str> = extra.to_vec();
        if !extra.iter().any(|a| a.starts_with("--pod-network")) {
            args.push("--pod-network=none");
        }
        Self::start_node(&args, None)
    }

    /// A cluster whose node runs the bridge pod network (pod IPs, service
    /// proxy, cluster DNS), with extra `navarch server` flags. Such clusters
    /// take the host's network one at a time: this waits for a host-wide test
    /// lock, held until the cluster is dropped and its node reset. `None` (with
    /// the reason printed) when the machine cannot run it.
    pub fn start_with_network(extra: &[&str]) -> Option<Cluster> {
        if let Some(why) = network_unavailable() {
            eprintln!("skipped: the pod network needs {why}");
            return None;
        }
        let lock = network_test_lock();
        let mut args = vec!["--pod-network=bridge"];
        args.extend_from_slice(extra);
        Some(Self::start_node(&args, Some(lock)))
    }

    fn start_node(extra: &[&str], net_lock: Option<std::fs::File>) -> Cluster {
        let mut c = Self::start_with(true, extra);
        c.net_lock = net_lock;
        let ok = eventually(Duration::from_secs(30), || {
            let out = c.kubectl(&[
                "get",
                "nodes",
                "-o",
                "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
            ]);
            String::from_utf8_lossy(&out.stdout)
                .contains("True")
                .then_some(())
        });
        assert!(
            ok.is_some(),
            "the local node did not become Ready; log:\n{}",
            c.log()
        );
        c
    }

    fn start_with(node: bool, extra: &[&str]) -> Cluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let agent_port = node.then(free_port);
        if node {
            let images = dir.path().join("images");
            std::fs::create_dir_all(&images).expect("images dir");
            std::fs::copy(test_image(), images.join("busybox.tar")).expect("copy test image");
        }
        let mut c = Cluster {
            child: None,
            dir,
            cache,
            port: free_port(),
            agent_port,
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
            net_lock: None,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log file");
        let mut cmd = Command::new(navarch_bin());
        cmd.args(["server", "--bind-address", "127.0.0.1", "--https-port"])
            .arg(self.port.to_string());
        match self.agent_port {
            Some(p) => {
                cmd.arg("--agent-port").arg(p.to_string());
                // As kind's nodes: no disk-pressure evictions of test pods
                // because the machine running the suite is nearly full.
                if !self
                    .extra_args
                    .iter()
                    .any(|a| a.starts_with("--eviction-hard"))
                {
                    cmd.arg("--eviction-hard=nodefs.available<0%");
                }
            }
            None => {
                cmd.arg("--disable-agent");
            }
        }
        let child = cmd
            .args(&self.extra_args)
            .arg("--data-dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start navarch server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.kubeconfig().exists() {
                let out = self.kubectl(&["get", "--raw", "/readyz"]);
                if out.status.success() {
                    return;
                }
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "navarch server exited early ({status}); log:\n{}",
                    self.log()
                );
            }
            assert!(
                Instant::now() < deadline,
                "server not ready in 60s; log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Stop the server (SIGKILL, like a crash) and start it again on the same data.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Remove the containers the local node left behind (they outlive the agent).
    pub fn reset_node(dir: &Path) {
        let _ = Command::new(navarch_bin())
            .arg("reset")
            .arg("--data-dir")
            .arg(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl_cmd(&self) -> Command {
        let mut cmd = Command::new("kubectl");
        cmd.arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cache.path());
        cmd.env_remove("KUBECONFIG");
        cmd
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        self.kubectl_cmd().args(args).output().expect("run kubectl")
    }

    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Output {
        use std::io::Write;
        let mut child = self
            .kubectl_cmd()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    }

    /// Run kubectl and return stdout; panic with everything on failure.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {:?} failed ({}):\nstdout: {}\nstderr: {}",
            args,
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Apply a manifest given as text; returns stdout.
    pub fn apply(&self, manifest: &str) -> String {
        let out = self.kubectl_stdin(&["apply", "-f", "-"], manifest);
        assert!(
            out.status.success(),
            "kubectl apply failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Run kubectl expecting failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            !out.status.success(),
            "kubectl {:?} unexpectedly succeeded: {}",
            args,
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// Wait for a jsonpath query on an object to satisfy `pred`; returns the last value.
    pub fn wait_for(
        &self,
        args: &[&str],
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> String {
        let mut last = String::new();
        let ok = eventually(timeout, || {
            let out = self.kubectl(args);
            last = String::from_utf8_lossy(&out.stdout).into_owned();
            pred(&last).then_some(())
        });
        assert!(
            ok.is_some(),
            "timed out waiting on kubectl {:?}; last output: {last:?}\n{}\nserver log tail:\n{}",
            args,
            String::from_utf8_lossy(&self.kubectl(&["describe", "pods"]).stdout),
            self.log()
                .lines()
                .rev()
                .take(30)
                .collect::<Vec<_>>()
                .join("\n")
        );
        last
    }

    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
        if self.agent_port.is_some() {
            Self::reset_node(self.dir.path());
        }
        // Only now may the next network test take the host's pod network.
        self.net_lock.take();
    }
}

/// Why this machine cannot run the bridge pod network (`None`: it can).
pub fn network_unavailable() -> Option<String> {
    let uid = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_string))
        })
        .unwrap_or_default();
    if uid != "0" {
        return Some("root".into());
    }
    for (prog, arg) in [("ip", "-V"), ("nft", "--version"), ("nsenter", "--version")] {
        let ok = Command::new(prog)
            .arg(arg)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if !ok {
            return Some(format!("`{prog}` on PATH"));
        }
    }
    None
}

/// The host-wide lock serializing tests that run the bridge pod network (one
/// per host at a time, across test binaries and parallel test threads).
pub fn network_test_lock() -> std::fs::File {
    navarch_network::host::lock_blocking(Path::new("/run/navarch/network-tests.lock"))
        .expect("take the network test lock")
}

/// Poll `f` until it returns Some or the timeout passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
