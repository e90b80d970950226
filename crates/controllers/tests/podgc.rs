//! End-to-end: the pod garbage collector against a real navarch server.
//!
//! The server runs its own controllers (with upstream's PodGC settings: a
//! 12,500 threshold and a 40 s quarantine, which never act within this test);
//! the test runs a second collector in-process with a threshold of 2 and a
//! 2 s quarantine, so each rule shows within seconds.

mod common;

use std::time::Duration;

use common::Cluster;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use navarch_controllers::podgc::{self, PodGcConfig, OUT_OF_SERVICE};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

fn node(name: &str, ready: bool, taints: serde_json::Value) -> Node {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"taints": taints},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

fn bound_pod(name: &str, node: &str) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {"nodeName": node, "containers": [{"name": "app", "image": "nginx:1.25"}]}
    }))
    .unwrap()
}

async fn names(api: &Api<Pod>) -> Vec<String> {
    let mut v: Vec<String> = api
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|p| p.metadata.name)
        .collect();
    v.sort();
    v
}

/// Poll until `api`'s pod names equal `want`; the last names seen otherwise.
async fn wait_names(api: &Api<Pod>, want: &[&str]) -> Result<(), Vec<String>> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let got = names(api).await;
        if got == want {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(got);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn pod_gc_deletes_terminated_orphaned_and_out_of_service_pods() {
    let c = Cluster::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = navarch_controllers::client_from_kubeconfig(&c.kubeconfig())
            .await
            .unwrap();
        let nodes: Api<Node> = Api::all(client.clone());
        let pp = PostParams::default();
        nodes
            .create(&pp, &node("gc-node", true, json!([])))
            .await
            .unwrap();
        nodes
            .create(
                &pp,
                &node(
                    "oos-node",
                    false,
                    json!([{"key": OUT_OF_SERVICE, "value": "shutdown", "effect": "NoSchedule"}]),
                ),
            )
            .await
            .unwrap();

        // Terminated pods: 4 finished (oldest first by name within a second), one running.
        c.ok(&["create", "namespace", "gc-done"]);
        let done: Api<Pod> = Api::namespaced(client.clone(), "gc-done");
        for name in ["t-0", "t-1", "t-2", "t-3", "running"] {
            done.create(&pp, &bound_pod(name, "gc-node")).await.unwrap();
            tokio::time::sleep(Duration::from_millis(1100)).await;
        }
        for (name, phase) in [
            ("t-0", "Succeeded"),
            ("t-1", "Failed"),
            ("t-2", "Succeeded"),
            ("t-3", "Failed"),
            ("running", "Running"),
        ] {
            let patch = json!({"status": {"phase": phase}});
            done.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }

        // An orphan (its node never existed) and a pod on a live node.
        c.ok(&["create", "namespace", "gc-orphan"]);
        let orphan: Api<Pod> = Api::namespaced(client.clone(), "gc-orphan");
        orphan
            .create(&pp, &bound_pod("orphan", "ghost-node"))
            .await
            .unwrap();
        orphan
            .create(&pp, &bound_pod("housed", "gc-node"))
            .await
            .unwrap();

        // A terminating pod on a not-ready, out-of-service node: no kubelet will
        // ever confirm its deletion.
        c.ok(&["create", "namespace", "gc-oos"]);
        let oos: Api<Pod> = Api::namespaced(client.clone(), "gc-oos");
        oos.create(&pp, &bound_pod("stuck", "oos-node"))
            .await
            .unwrap();
        oos.create(&pp, &bound_pod("alive", "oos-node"))
            .await
            .unwrap();
        let dp = DeleteParams {
            grace_period_seconds: Some(300),
            ..DeleteParams::default()
        };
        oos.delete("stuck", &dp).await.unwrap();
        let stuck = oos.get("stuck").await.unwrap();
        assert!(
            stuck.metadata.deletion_timestamp.is_some(),
            "a bound pod deleted with a grace period waits for its kubelet"
        );

        let cfg = PodGcConfig {
            terminated_pod_threshold: 2,
            period: Duration::from_millis(500),
            quarantine: Duration::from_secs(2),
            concurrency: 4,
        };
        let gc = tokio::spawn(podgc::run_with(client.clone(), cfg));

        // The two oldest terminated pods go; the running one stays.
        wait_names(&done, &["running", "t-2", "t-3"])
            .await
            .unwrap_or_else(|got| panic!("terminated pods over threshold: {got:?}\n{}", c.log()));
        // The orphan goes after the quarantine; the pod on a real node stays.
        wait_names(&orphan, &["housed"])
            .await
            .unwrap_or_else(|got| panic!("orphaned pod: {got:?}"));
        // The terminating pod on the out-of-service node is force-deleted; the
        // one not being deleted stays.
        wait_names(&oos, &["alive"])
            .await
            .unwrap_or_else(|got| panic!("out-of-service pod: {got:?}"));

        // The quarantine is a real wait: a fresh orphan survives the first second.
        orphan
            .create(&pp, &bound_pod("orphan-2", "ghost-node"))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(800)).await;
        assert_eq!(names(&orphan).await, ["housed", "orphan-2"]);
        wait_names(&orphan, &["housed"])
            .await
            .unwrap_or_else(|got| panic!("second orphan: {got:?}"));
        gc.abort();
    });
}
