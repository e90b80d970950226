//! Test harness: a real `navarch server` (which runs these controllers) on a
//! free port, driven with `kubectl`, plus a fake kubelet that marks pods ready.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub struct Cluster {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    cache: tempfile::TempDir,
    pub port: u16,
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("addr").port()
}

/// The server binary, built (with this crate's controllers) if needed.
pub fn navarch_bin() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "navarch"])
            .current_dir(&root)
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build -p navarch failed");
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    target.join("debug").join("navarch")
}

impl Cluster {
    pub fn start() -> Cluster {
        let bin = navarch_bin();
        let dir = tempfile::tempdir().expect("tempdir");
        let cache = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("server.log")).expect("log file");
        let child = Command::new(bin)
            .args([
                "server",
                "--disable-agent",
                "--bind-address",
                "127.0.0.1",
                "--https-port",
            ])
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start navarch server");
        let c = Cluster {
            child: Some(child),
            dir,
            cache,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if c.kubeconfig().exists() && c.kubectl(&["get", "--raw", "/readyz"]).status.success() {
                return c;
            }
            assert!(
                Instant::now() < deadline,
                "server not ready; log:\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    pub fn kubectl(&self, args: &[&str]) -> Output {
        Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .env_remove("KUBECONFIG")
            .args(args)
            .output()
            .expect("run kubectl")
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.kubectl(args);
        assert!(
            out.status.success(),
            "kubectl {:?} failed:\n{}\n{}",
            args,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.ok(&a)).expect("json output")
    }

    pub fn apply(&self, manifest: &str) {
        use std::io::Write;
        let mut child = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(self.kubeconfig())
            .arg("--cache-dir")
            .arg(self.cache.path())
            .args(["apply", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(manifest.as_bytes())
            .expect("write");
        let out = child.wait_with_output().expect("kubectl");
        assert!(
            out.status.success(),
            "apply failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Active (not deleting) pods in `ns` with label selector `sel`.
    pub fn pods(&self, ns: &str, sel: &str) -> Vec<serde_json::Value> {
        let v = self.json(&["get", "pods", "-n", ns, "-l", sel]);
        v["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .collect()
    }

    /// Mark every not-yet-ready pod in `ns` running and ready (a fake kubelet).
    pub fn ready_pods(&self, ns: &str) {
        let Ok(v) = serde_json::from_slice::<serde_json::Value>(
            &self
                .kubectl(&["get", "pods", "-n", ns, "-o", "json"])
                .stdout,
        ) else {
            return;
        };
        for p in v["items"].as_array().cloned().unwrap_or_default() {
            let ready = p["status"]["conditions"].as_array().is_some_and(|cs| {
                cs.iter()
                    .any(|c| c["type"] == "Ready" && c["status"] == "True")
            });
            if ready || !p["metadata"]["deletionTimestamp"].is_null() {
                continue;
            }
            let name = p["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let patch = serde_json::json!({"status": {
                "phase": "Running",
                "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-01-01T00:00:00Z"}],
                "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "x", "imageID": "", "state": {"running": {}}}],
            }});
            let _ = self.kubectl(&[
                "patch",
                "pod",
                &name,
                "-n",
                ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                &patch.to_string(),
            ]);
        }
    }

    /// Keep pods in `ns` ready in the background until the guard is dropped.
    pub fn kubelet(self: &Arc<Self>, ns: &str) -> KubeletGuard {
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s, ns) = (self.clone(), stop.clone(), ns.to_string());
        let handle = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                c.ready_pods(&ns);
                std::thread::sleep(Duration::from_millis(300));
            }
        });
        KubeletGuard {
            stop,
            handle: Some(handle),
        }
    }
}

pub struct KubeletGuard {
    stop: Arc<AtomicBool>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl Drop for KubeletGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
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
        std::thread::sleep(Duration::from_millis(200));
    }
}
