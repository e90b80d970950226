//! End to end: a real `navarch server`, fake Node objects, pods, and the scheduler
//! running in-process as an API client.
//!
//! Needs the server binary (`cargo build -p navarch`); set `NAVARCH_BIN` to use
//! another path. Without the binary the test is skipped with a message.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use navarch_scheduler::{run, SchedulerConfig};
use serde_json::json;

struct Server {
    child: Child,
    dir: tempfile::TempDir,
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
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/debug/navarch")
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn start_server() -> Option<(Server, Client)> {
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

async fn make_node(client: &Client, name: &str, cpu: &str) {
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

async fn make_pod(client: &Client, name: &str, cpu: &str, extra: serde_json::Value) {
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

async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
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

async fn node_of(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name)
        .await
        .ok()
        .and_then(|p| p.spec.and_then(|s| s.node_name))
        .filter(|n| !n.is_empty())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_through_the_api() {
    let Some((_server, client)) = start_server().await else {
        return;
    };
    make_node(&client, "node1", "2").await;
    make_node(&client, "node2", "2").await;
    make_pod(&client, "web-1", "500m", json!({})).await;
    make_pod(&client, "huge", "10", json!({})).await;
    let anti = |n: &str| {
        json!({"metadata": {"name": n, "labels": {"app": "anti"}},
               "spec": {"affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
                   {"labelSelector": {"matchLabels": {"app": "anti"}}, "topologyKey": "kubernetes.io/hostname"}]}}}})
    };
    make_pod(&client, "anti-1", "100m", anti("anti-1")).await;
    make_pod(&client, "anti-2", "100m", anti("anti-2")).await;
    make_pod(
        &client,
        "other",
        "100m",
        json!({"spec": {"schedulerName": "someone-else"}}),
    )
    .await;

    let sched = tokio::spawn(run(SchedulerConfig::default(), client.clone()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");

    // Binding.
    let web_node = eventually("web-1 bound", || node_of(&pods, "web-1")).await;
    assert!(web_node == "node1" || web_node == "node2");
    let pod = pods.get("web-1").await.unwrap();
    let cond = pod
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .find(|c| c.type_ == "PodScheduled")
        .unwrap();
    assert_eq!(cond.status, "True");

    // Scheduled event.
    let want = format!("Successfully assigned default/web-1 to {web_node}");
    let ev = eventually("Scheduled event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Scheduled")
                    && e.involved_object.name.as_deref() == Some("web-1")
            })
    })
    .await;
    assert_eq!(ev.message.as_deref(), Some(want.as_str()));
    assert_eq!(ev.type_.as_deref(), Some("Normal"));
    assert_eq!(
        ev.source.and_then(|s| s.component).as_deref(),
        Some("default-scheduler")
    );

    // Anti-affinity: two replicas on two nodes.
    let a1 = eventually("anti-1 bound", || node_of(&pods, "anti-1")).await;
    let a2 = eventually("anti-2 bound", || node_of(&pods, "anti-2")).await;
    assert_ne!(a1, a2);

    // Unschedulable: condition and FailedScheduling event with upstream's message.
    let msg = "0/2 nodes are available: 2 Insufficient cpu. preemption: 0/2 nodes are available: \
               2 No preemption victims found for incoming pod.";
    let cond = eventually("huge unschedulable", || async {
        pods.get("huge")
            .await
            .ok()?
            .status?
            .conditions?
            .into_iter()
            .find(|c| c.type_ == "PodScheduled" && c.status == "False")
    })
    .await;
    assert_eq!(cond.reason.as_deref(), Some("Unschedulable"));
    assert_eq!(cond.message.as_deref(), Some(msg));
    let ev = eventually("FailedScheduling event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("FailedScheduling")
                    && e.involved_object.name.as_deref() == Some("huge")
            })
    })
    .await;
    assert_eq!(ev.type_.as_deref(), Some("Warning"));
    assert_eq!(ev.message.as_deref(), Some(msg));

    // A pod for another scheduler is left alone.
    assert!(node_of(&pods, "other").await.is_none());

    // A new, big enough node makes the pending pod schedulable: it is retried.
    make_node(&client, "node3", "16").await;
    let n = eventually("huge bound after node3 appears", || node_of(&pods, "huge")).await;
    assert_eq!(n, "node3");
    assert!(node_of(&pods, "other").await.is_none());
    sched.abort();
}
