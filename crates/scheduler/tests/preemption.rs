//! End to end preemption: a real `navarch server` (its own scheduler disabled),
//! a simulated node with 1 CPU, and the scheduler running in-process.
//!
//! Needs the server binary (`cargo build -p navarch`); set `NAVARCH_BIN` to use
//! another path.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Event, Node, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
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

async fn make_class(client: &Client, name: &str, value: i32, policy: &str) {
    let pc: PriorityClass = serde_json::from_value(json!({
        "apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass",
        "metadata": {"name": name}, "value": value, "preemptionPolicy": policy
    }))
    .unwrap();
    Api::<PriorityClass>::all(client.clone())
        .create(&PostParams::default(), &pc)
        .await
        .unwrap();
}

async fn scheduled_false_message(pods: &Api<Pod>, name: &str) -> Option<String> {
    pods.get(name)
        .await
        .ok()?
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "PodScheduled" && c.status == "False")?
        .message
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn high_priority_pod_preempts_low_priority_pod() {
    let Some((_server, client)) = start_server().await else {
        return;
    };
    make_class(&client, "low", 0, "PreemptLowerPriority").await;
    make_class(&client, "mid-never", 500, "Never").await;
    make_class(&client, "high", 1000, "PreemptLowerPriority").await;
    make_node(&client, "node1", "1").await;
    let sched = tokio::spawn(run(SchedulerConfig::default(), client.clone()));
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client.clone(), "default");

    // A low-priority pod takes the whole node and runs.
    make_pod(
        &client,
        "low",
        "1",
        json!({"spec": {"priorityClassName": "low"}}),
    )
    .await;
    let n = eventually("low bound", || node_of(&pods, "low")).await;
    assert_eq!(n, "node1");
    let running = json!({"status": {"phase": "Running"}});
    pods.patch_status("low", &PatchParams::default(), &Patch::Merge(&running))
        .await
        .unwrap();

    // preemptionPolicy Never: stays pending, preempts nothing.
    make_pod(
        &client,
        "never",
        "1",
        json!({"spec": {"priorityClassName": "mid-never"}}),
    )
    .await;
    let msg = eventually("never unschedulable", || {
        scheduled_false_message(&pods, "never")
    })
    .await;
    assert_eq!(
        msg,
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to \
         preemptionPolicy=Never."
    );
    let low = pods.get("low").await.unwrap();
    assert!(low.metadata.deletion_timestamp.is_none());
    assert_eq!(low.spec.and_then(|s| s.node_name).as_deref(), Some("node1"));

    // A high-priority pod preempts the low one.
    make_pod(
        &client,
        "high",
        "1",
        json!({"spec": {"priorityClassName": "high"}}),
    )
    .await;
    let high_uid = pods.get("high").await.unwrap().metadata.uid.unwrap();
    eventually("low deleted", || async {
        match pods.get_opt("low").await.ok()? {
            None => Some(()),
            // Graceful deletion: finish it, as the node agent would.
            Some(p) if p.metadata.deletion_timestamp.is_some() => {
                let conds = p.status.and_then(|s| s.conditions).unwrap_or_default();
                assert!(conds.iter().any(|c| c.type_ == "DisruptionTarget"));
                let _ = pods
                    .delete("low", &DeleteParams::default().grace_period(0))
                    .await;
                None
            }
            Some(_) => None,
        }
    })
    .await;
    let ev = eventually("Preempted event", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("Preempted")
                    && e.involved_object.name.as_deref() == Some("low")
            })
    })
    .await;
    assert_eq!(
        ev.message.as_deref(),
        Some(format!("Preempted by pod {high_uid} on node node1").as_str())
    );
    let n = eventually("high bound", || node_of(&pods, "high")).await;
    assert_eq!(n, "node1");
    let high = pods.get("high").await.unwrap();
    assert_eq!(
        high.status.and_then(|s| s.nominated_node_name).as_deref(),
        Some("node1")
    );
    // The freed CPU went to the nominated pod, not to the lower-priority one.
    assert!(node_of(&pods, "never").await.is_none());
    sched.abort();
}
