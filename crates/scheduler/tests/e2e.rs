//! End to end: a real `navarch server`, fake Node objects, pods, and the scheduler
//! running in-process as an API client.
//!
//! Needs the server binary (`cargo build -p navarch`); set `NAVARCH_BIN` to use
//! another path.

use k8s_openapi::api::core::v1::{Event, Pod};
use kube::api::{Api, ListParams};
use navarch_scheduler::{run, SchedulerConfig};
use serde_json::json;

mod common;

use common::{eventually, make_node, make_pod, node_of, start_server};

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
