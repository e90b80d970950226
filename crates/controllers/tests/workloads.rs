//! End-to-end: Deployments, ReplicaSets, the garbage collector and the
//! ServiceAccount controller inside a real navarch server, driven by kubectl.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster};

const WAIT: Duration = Duration::from_secs(30);

fn deployment(name: &str, ns: &str, replicas: i32, strategy: &str) -> String {
    format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: {name}
  namespace: {ns}
spec:
  replicas: {replicas}
  strategy:
    type: {strategy}
  selector:
    matchLabels:
      app: {name}
  template:
    metadata:
      labels:
        app: {name}
    spec:
      containers:
      - name: app
        image: nginx:1.25
"#
    )
}

fn rs_list(c: &Cluster, ns: &str, sel: &str) -> Vec<serde_json::Value> {
    c.json(&["get", "rs", "-n", ns, "-l", sel])["items"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn count_pods(c: &Cluster, ns: &str, sel: &str, n: usize) -> bool {
    c.pods(ns, sel).len() == n
}

#[test]
fn deployment_rollout_undo_scale_and_gc() {
    let c = Arc::new(Cluster::start());
    let ns = "default";
    c.apply(&deployment("web", ns, 3, "RollingUpdate"));

    // 3 pods owned by one ReplicaSet with a controller reference.
    eventually(WAIT, || count_pods(&c, ns, "app=web", 3).then_some(()))
        .unwrap_or_else(|| panic!("3 pods; log:\n{}", c.log()));
    let rss = rs_list(&c, ns, "app=web");
    assert_eq!(rss.len(), 1);
    let rs = &rss[0];
    let rs_name = rs["metadata"]["name"].as_str().unwrap().to_string();
    assert!(rs["metadata"]["labels"]["pod-template-hash"].is_string());
    assert_eq!(
        rs["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "1"
    );
    assert_eq!(rs["metadata"]["ownerReferences"][0]["kind"], "Deployment");
    let pod = &c.pods(ns, "app=web")[0];
    let oref = &pod["metadata"]["ownerReferences"][0];
    assert_eq!(oref["kind"], "ReplicaSet");
    assert_eq!(oref["name"], rs_name.as_str());
    assert_eq!(oref["controller"], true);
    assert_eq!(oref["blockOwnerDeletion"], true);
    assert!(pod["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with(&format!("{rs_name}-")));
    eventually(WAIT, || {
        let rs = c.json(&["get", "rs", &rs_name, "-n", ns]);
        (rs["status"]["replicas"] == 3 && rs["status"]["fullyLabeledReplicas"] == 3).then_some(())
    })
    .expect("rs status");

    // Events from the replicaset controller.
    let ev = c.ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=SuccessfulCreate",
        "-o",
        "name",
    ]);
    assert!(!ev.trim().is_empty(), "SuccessfulCreate events");

    let _kubelet = c.kubelet(ns);
    eventually(WAIT, || {
        let d = c.json(&["get", "deploy", "web", "-n", ns]);
        (d["status"]["availableReplicas"] == 3 && d["status"]["readyReplicas"] == 3).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "deploy available; {}",
            c.ok(&["get", "deploy", "web", "-o", "yaml"])
        )
    });
    c.ok(&["rollout", "status", "deploy/web", "-n", ns, "--timeout=30s"]);

    // A deleted pod is replaced.
    let victim = c.pods(ns, "app=web")[0]["metadata"]["name"]
        .as_str()
        .unwrap()
        .to_string();
    c.ok(&["delete", "pod", &victim, "-n", ns, "--wait=false"]);
    eventually(WAIT, || {
        let pods = c.pods(ns, "app=web");
        (pods.len() == 3
            && pods
                .iter()
                .all(|p| p["metadata"]["name"] != victim.as_str()))
        .then_some(())
    })
    .expect("pod replaced");

    // Scale through the scale subresource.
    c.ok(&["scale", "deploy/web", "-n", ns, "--replicas=5"]);
    eventually(WAIT, || count_pods(&c, ns, "app=web", 5).then_some(())).expect("5 pods");
    c.ok(&["rollout", "status", "deploy/web", "-n", ns, "--timeout=30s"]);

    // New image: a second ReplicaSet, rolled until the old one is at 0.
    c.ok(&["set", "image", "deploy/web", "-n", ns, "app=nginx:1.26"]);
    c.ok(&["rollout", "status", "deploy/web", "-n", ns, "--timeout=60s"]);
    let rss = rs_list(&c, ns, "app=web");
    assert_eq!(rss.len(), 2, "{rss:?}");
    let old = rss
        .iter()
        .find(|r| r["metadata"]["name"] == rs_name.as_str())
        .unwrap();
    assert_eq!(old["spec"]["replicas"], 0);
    let new = rss
        .iter()
        .find(|r| r["metadata"]["name"] != rs_name.as_str())
        .unwrap();
    assert_eq!(
        new["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    assert_eq!(
        new["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.26"
    );
    let pods = c.pods(ns, "app=web");
    assert_eq!(pods.len(), 5);
    assert!(pods
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "nginx:1.26"));
    let d = c.json(&["get", "deploy", "web", "-n", ns]);
    assert_eq!(
        d["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "2"
    );
    let conds = d["status"]["conditions"].as_array().unwrap();
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Progressing" && c["reason"] == "NewReplicaSetAvailable"));
    assert!(conds
        .iter()
        .any(|c| c["type"] == "Available" && c["status"] == "True"));
    let events = c.ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=ScalingReplicaSet",
    ]);
    assert!(events.contains("Scaled up replica set"), "{events}");
    assert!(events.contains("Scaled down replica set"), "{events}");

    // History and undo (back to the first template, renumbered 3).
    let hist = c.ok(&["rollout", "history", "deploy/web", "-n", ns]);
    assert!(hist.contains('1') && hist.contains('2'), "{hist}");
    c.ok(&["rollout", "undo", "deploy/web", "-n", ns]);
    c.ok(&["rollout", "status", "deploy/web", "-n", ns, "--timeout=60s"]);
    let back = c.json(&["get", "rs", &rs_name, "-n", ns]);
    assert_eq!(
        back["metadata"]["annotations"]["deployment.kubernetes.io/revision"],
        "3"
    );
    assert_eq!(back["spec"]["replicas"], 5);
    assert_eq!(rs_list(&c, ns, "app=web").len(), 2);
    let hist = c.ok(&["rollout", "history", "deploy/web", "-n", ns]);
    assert!(
        hist.contains('3') && !hist.lines().any(|l| l.trim_start().starts_with("1 ")),
        "{hist}"
    );

    // Pause: no rollout while paused; resume continues it.
    c.ok(&["rollout", "pause", "deploy/web", "-n", ns]);
    c.ok(&["set", "image", "deploy/web", "-n", ns, "app=nginx:1.27"]);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(
        rs_list(&c, ns, "app=web").len(),
        2,
        "no new RS while paused"
    );
    c.ok(&["rollout", "resume", "deploy/web", "-n", ns]);
    c.ok(&["rollout", "status", "deploy/web", "-n", ns, "--timeout=60s"]);
    assert_eq!(rs_list(&c, ns, "app=web").len(), 3);

    // Restart makes a new ReplicaSet too.
    c.ok(&["rollout", "restart", "deploy/web", "-n", ns]);
    c.ok(&["rollout", "status", "deploy/web", "-n", ns, "--timeout=60s"]);
    assert_eq!(rs_list(&c, ns, "app=web").len(), 4);

    // Deleting the deployment removes its ReplicaSets and pods (GC).
    c.ok(&["delete", "deploy/web", "-n", ns, "--wait=false"]);
    eventually(WAIT, || {
        (rs_list(&c, ns, "app=web").is_empty() && c.pods(ns, "app=web").is_empty()).then_some(())
    })
    .expect("GC removed replica sets and pods");
}

#[test]
fn recreate_strategy_service_account_and_orphans() {
    let c = Arc::new(Cluster::start());
    c.ok(&["create", "namespace", "team"]);
    eventually(WAIT, || {
        c.kubectl(&["get", "sa", "default", "-n", "team"])
            .status
            .success()
            .then_some(())
    })
    .expect("default service account");
    c.ok(&["delete", "sa", "default", "-n", "team"]);
    eventually(WAIT, || {
        c.kubectl(&["get", "sa", "default", "-n", "team"])
            .status
            .success()
            .then_some(())
    })
    .expect("default service account recreated");

    let ns = "team";
    c.apply(&deployment("db", ns, 2, "Recreate"));
    let _kubelet = c.kubelet(ns);
    c.ok(&["rollout", "status", "deploy/db", "-n", ns, "--timeout=30s"]);
    c.ok(&["set", "image", "deploy/db", "-n", ns, "app=postgres:17"]);
    c.ok(&["rollout", "status", "deploy/db", "-n", ns, "--timeout=60s"]);
    let rss = rs_list(&c, ns, "app=db");
    assert_eq!(rss.len(), 2);
    let events = c.ok(&[
        "get",
        "events",
        "-n",
        ns,
        "--field-selector",
        "reason=ScalingReplicaSet",
    ]);
    assert!(
        events.contains("to 0"),
        "old RS scaled to 0 at once: {events}"
    );
    let pods = c.pods(ns, "app=db");
    assert_eq!(pods.len(), 2);
    assert!(pods
        .iter()
        .all(|p| p["spec"]["containers"][0]["image"] == "postgres:17"));

    // A bare ReplicaSet adopts a matching orphan pod and creates the rest.
    // The orphan runs before the ReplicaSet exists, so the controller's pod
    // cache holds it when the ReplicaSet is first synced (otherwise it would
    // create two pods, adopt the orphan and delete a tie-ranked surplus pod).
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata: {name: stray, namespace: team, labels: {app: cache}}
spec: {containers: [{name: app, image: redis}]}
"#,
    );
    eventually(WAIT, || {
        let p = c.json(&["get", "pod", "stray", "-n", ns]);
        (p["status"]["phase"] == "Running").then_some(())
    })
    .expect("orphan runs");
    c.apply(
        r#"apiVersion: apps/v1
kind: ReplicaSet
metadata: {name: cache, namespace: team}
spec:
  replicas: 2
  selector: {matchLabels: {app: cache}}
  template:
    metadata: {labels: {app: cache}}
    spec: {containers: [{name: app, image: redis}]}
"#,
    );
    eventually(WAIT, || {
        let pods = c.pods(ns, "app=cache");
        let stray = pods.iter().find(|p| p["metadata"]["name"] == "stray")?;
        (pods.len() == 2 && stray["metadata"]["ownerReferences"][0]["name"] == "cache")
            .then_some(())
    })
    .expect("orphan adopted");
    eventually(WAIT, || {
        let rs = c.json(&["get", "rs", "cache", "-n", ns]);
        (rs["status"]["readyReplicas"] == 2
            && rs["status"]["availableReplicas"] == 2
            && rs["status"]["observedGeneration"] == 1)
            .then_some(())
    })
    .expect("rs status ready");

    // Scale down deletes one; then delete the RS: pods go (GC).
    c.ok(&["scale", "rs/cache", "-n", ns, "--replicas=1"]);
    eventually(WAIT, || count_pods(&c, ns, "app=cache", 1).then_some(())).expect("scaled down");
    c.ok(&["delete", "rs/cache", "-n", ns, "--wait=false"]);
    eventually(WAIT, || count_pods(&c, ns, "app=cache", 0).then_some(())).expect("GC removed pods");
}

fn owned_pod(c: &Cluster, ns: &str, pod: &str, owner: &str) {
    let uid = c.json(&["get", "cm", owner, "-n", ns])["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string();
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {pod}
  namespace: {ns}
  ownerReferences:
  - {{apiVersion: v1, kind: ConfigMap, name: {owner}, uid: {uid}, blockOwnerDeletion: true}}
spec: {{containers: [{{name: app, image: busybox}}]}}
"#
    ));
}

#[test]
fn gc_orphan_and_foreground_finalizers() {
    let c = Arc::new(Cluster::start());
    let ns = "default";
    c.apply(
        r#"apiVersion: v1
kind: ConfigMap
metadata: {name: keep-owner, namespace: default}
---
apiVersion: v1
kind: ConfigMap
metadata: {name: fg-owner, namespace: default}
"#,
    );
    owned_pod(&c, ns, "orphaned", "keep-owner");
    owned_pod(&c, ns, "blocker", "fg-owner");
    c.ok(&[
        "delete",
        "cm",
        "keep-owner",
        "-n",
        ns,
        "--cascade=orphan",
        "--wait=false",
    ]);
    c.ok(&[
        "delete",
        "cm",
        "fg-owner",
        "-n",
        ns,
        "--cascade=foreground",
        "--wait=false",
    ]);
    eventually(WAIT, || {
        let gone = !c
            .kubectl(&["get", "cm", "keep-owner", "-n", ns])
            .status
            .success();
        let p = c.json(&["get", "pod", "orphaned", "-n", ns]);
        let unowned = p["metadata"]["ownerReferences"]
            .as_array()
            .is_none_or(|r| r.is_empty());
        (gone && unowned).then_some(())
    })
    .expect("orphan: owner gone, dependent kept without ownerRef");
    eventually(WAIT, || {
        let owner_gone = !c
            .kubectl(&["get", "cm", "fg-owner", "-n", ns])
            .status
            .success();
        let dep_gone = !c
            .kubectl(&["get", "pod", "blocker", "-n", ns])
            .status
            .success();
        (owner_gone && dep_gone).then_some(())
    })
    .expect("foreground: dependent deleted, then owner");
    // A pod whose owner never existed is collected.
    c.apply(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: dangling
  namespace: default
  ownerReferences: [{apiVersion: v1, kind: ConfigMap, name: nope, uid: 00000000-0000-0000-0000-000000000000}]
spec: {containers: [{name: app, image: busybox}]}
"#,
    );
    eventually(WAIT, || {
        (!c.kubectl(&["get", "pod", "dangling", "-n", ns])
            .status
            .success())
        .then_some(())
    })
    .expect("dangling dependent collected");
}
