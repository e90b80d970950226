//! End to end preemption: a real `navarch server` (its own scheduler disabled),
//! a simulated node with 1 CPU, and the scheduler running in-process.
//!
//! Needs the server binary (`cargo build -p navarch`); set `NAVARCH_BIN` to use
//! another path.

use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::scheduling::v1::PriorityClass;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::Client;
use navarch_scheduler::{run, SchedulerConfig};
use serde_json::json;

mod common;

use common::{eventually, make_node, make_pod, node_of, start_server};

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
