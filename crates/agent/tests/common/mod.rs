//! A real `navarch server` for the agent's tests.
#![allow(dead_code)]

pub mod fake;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Server {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn navarch_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NAVARCH_BIN") {
        return PathBuf::from(p);
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    target.join("debug/navarch")
}

impl Server {
    pub async fn start() -> (Server, kube::Client) {
        let bin = navarch_bin();
        assert!(
            bin.exists(),
            "{} missing: run `cargo build -p navarch` first (or set NAVARCH_BIN)",
            bin.display()
        );
        let dir = tempfile::tempdir().unwrap();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(&bin)
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
            .unwrap();
        let server = Server { child, dir };
        let kc = server.dir.path().join("kubeconfig");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if kc.exists() {
                if let Ok(client) = client_from(&kc).await {
                    if client.apiserver_version().await.is_ok() {
                        return (server, client);
                    }
                }
            }
            assert!(Instant::now() < deadline, "server did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn client_from(path: &std::path::Path) -> Result<kube::Client, Box<dyn std::error::Error>> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Poll `f` until it returns Some, or panic after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
