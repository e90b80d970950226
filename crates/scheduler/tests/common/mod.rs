//! Shared harness of the scheduler's end-to-end tests: a real `navarch server`
//! with its own scheduler disabled (the test runs the scheduler in-process),
//! simulated Node objects and pods.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use serde_json::json;

pub struct Server {
    pub child: Child,
    pub dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn navarch_bin() -> PathBuf {
    if let Ok(p) = std::env::var("NAVARCH_BIN") {
        return PathBuf::from(p);
    }
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/navarch")
}

pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

pub async fn start_server() -> Option<(Server, Client)> {
    let bin = navarch_bin();
    assert!(
        bin.exists(),
        "{} not found: build it with `cargo build -p navarch` (scripts/test.sh does)",
        bin.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let child = Command::new(&bin)
        .args([
            "server",
            "--disable-agent",
            "--disable-scheduler",
            "--bind-address",
            "127.0.0.1",
            "--https-port",
        ])
        .arg(free_port().to_string())
        .arg("--data-dir")
        .arg(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .unwrap();
    let server = Server { child, dir };
    let kubeconfig = server.dir.path().join("kubeconfig");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "server not ready; log:\n{}",
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
        if kubeconfig.exists() {
            if let Ok(kc) = kube::config::Kubeconfig::read_from(&kubeconfig) {
                if let Ok(cfg) = kube::Config::from_custom_kubeconfig(
                    kc,
                    &kube::config::KubeConfigOptions::default(),
                )
                .await
                {
                    if let Ok(client) = Client::try_from(cfg) {
                        let nodes: Api<Node> = Api::all(client.clone());
                        if nodes.list(&ListParams::default()).await.is_ok() {
                            return Some((server, client));
                        }
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn make_node(client: &Client, name: &str, cpu: &str) {
    let api: Api<Node> = Api::all(client.clone());
    let node: Node = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {}
    }))
    .unwrap();
    api.create(&PostParams::default(), &node).await.unwrap();
    let status = json!({"status": {
        "capacity": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "allocatable": {"cpu": cpu, "memory": "8Gi", "pods": "110"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
            "lastHeartbeatTime": "2026-01-01T00:00:00Z", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    }});
    api.patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

pub async fn make_pod(client: &Client, name: &str, cpu: &str, extra: serde_json::Value) {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"containers": [{"name": "c", "image": "pause",
            "resources": {"requests": {"cpu": cpu, "memory": "64Mi"}}}]}
    });
    if let Some(o) = extra.as_object() {
        for (k, val) in o {
            match (v.get_mut(k), val) {
                (Some(serde_json::Value::Object(dst)), serde_json::Value::Object(src)) => {
                    for (k2, v2) in src {
                        dst.insert(k2.clone(), v2.clone());
                    }
                }
                _ => v[k] = val.clone(),
            }
        }
    }
    let pod: Pod = serde_json::from_value(v).unwrap();
    Api::<Pod>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pod)
        .await
        .unwrap();
}

pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name)
        .await
        .ok()
        .and_then(|p| p.spec.and_then(|s| s.node_name))
        .filter(|n| !n.is_empty())
}
