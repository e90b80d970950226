//! End-to-end: Jobs, CronJobs, StatefulSets, DaemonSets, node lifecycle,
//! PodDisruptionBudget status and ResourceQuota usage inside one real navarch
//! server, driven by kubectl. The scenarios run concurrently (each in its own
//! namespace) to keep the wall time down; the CronJob one waits for a real
//! minute boundary (< 65 s).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, Cluster};
use serde_json::{json, Value};

const WAIT: Duration = Duration::from_secs(40);

fn ns(c: &Cluster, name: &str) {
    c.ok(&["create", "namespace", name]);
}

fn set_phase(c: &Cluster, ns: &str, pod: &str, phase: &str) {
    let patch = json!({"status": {"phase": phase}});
    let _ = c.kubectl(&[
        "patch",
        "pod",
        pod,
        "-n",
        ns,
        "--subresource=status",
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_ && c["status"] == "True")
}

fn job(name: &str, ns: &str, completions: i32, parallelism: i32, backoff: i32) -> String {
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
  namespace: {ns}
spec:
  completions: {completions}
  parallelism: {parallelism}
  backoffLimit: {backoff}
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: app
        image: busybox
"#
    )
}

/// Terminate every running pod of the Job with `phase`, until `done` holds.
fn drive_job(c: &Cluster, ns: &str, name: &str, phase: &str, max_active: &mut usize) -> Value {
    eventually(WAIT, || {
        let pods = c.pods(ns, &format!("batch.kubernetes.io/job-name={name}"));
        let running: Vec<&Value> = pods
            .iter()
            .filter(|p| !matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed")))
            .collect();
        *max_active = (*max_active).max(running.len());
        for p in running {
            assert!(p["metadata"]["finalizers"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "batch.kubernetes.io/job-tracking")));
            set_phase(c, ns, p["metadata"]["name"].as_str().unwrap(), phase);
        }
        let j = c.json(&["get", "job", name, "-n", ns]);
        (condition(&j, "Complete").is_some() || condition(&j, "Failed").is_some()).then_some(j)
    })
    .unwrap_or_else(|| panic!("job {name} did not finish; log:\n{}", c.log()))
}

fn job_completes(c: &Cluster) {
    let n = "batch";
    ns(c, n);
    c.apply(&job("pi", n, 3, 2, 6));
    let mut max_active = 0;
    let j = drive_job(c, n, "pi", "Succeeded", &mut max_active);
    assert!(condition(&j, "Complete").is_some(), "{j}");
    assert!(condition(&j, "SuccessCriteriaMet").is_some(), "{j}");
    assert_eq!(j["status"]["succeeded"], 3);
    assert!(j["status"]["completionTime"].is_string());
    assert!(j["status"]["startTime"].is_string());
    assert!(
        (1..=2).contains(&max_active),
        "parallelism exceeded: {max_active}"
    );
    // Counted pods lose the tracking finalizer.
    let pods = c.pods(n, "job-name=pi");
    assert_eq!(pods.len(), 3);
    assert!(pods.iter().all(|p| p["metadata"]["finalizers"]
        .as_array()
        .is_none_or(|f| f.is_empty())));
    let out = c.ok(&["get", "jobs", "-n", n]);
    assert!(out.contains("3/3"), "{out}");
    let ev = c.ok(&["get", "events", "-n", n]);
    assert!(
        ev.contains("SuccessfulCreate") && ev.contains("Completed"),
        "{ev}"
    );
}

fn job_fails(c: &Cluster) {
    let n = "batch-fail";
    ns(c, n);
    c.apply(&job("boom", n, 1, 1, 1));
    let mut max_active = 0;
    // Two failures (the second after the 10 s back-off) exceed backoffLimit 1.
    let j = drive_job(c, n, "boom", "Failed", &mut max_active);
    let f = condition(&j, "Failed").unwrap_or_else(|| panic!("{j}"));
    assert_eq!(f["reason"], "BackoffLimitExceeded");
    assert!(condition(&j, "FailureTarget").is_some());
    assert_eq!(j["status"]["failed"], 2);
    let ev = c.ok(&["get", "events", "-n", n]);
    assert!(ev.contains("BackoffLimitExceeded"), "{ev}");
}

fn cronjob_fires(c: &Cluster) {
    let n = "cron";
    ns(c, n);
    c.apply(&format!(
        r#"apiVersion: batch/v1
kind: CronJob
metadata:
  name: tick
  namespace: {n}
spec:
  schedule: "*/1 * * * *"
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers:
          - name: app
            image: busybox
"#
    ));
    let jobs = eventually(Duration::from_secs(70), || {
        let v = c.json(&["get", "jobs", "-n", n]);
        let items = v["items"].as_array().cloned().unwrap_or_default();
        (!items.is_empty()).then_some(items)
    })
    .unwrap_or_else(|| panic!("cronjob never fired; log:\n{}", c.log()));
    let j = &jobs[0];
    let name = j["metadata"]["name"].as_str().unwrap();
    let minutes: i64 = name.strip_prefix("tick-").unwrap().parse().unwrap();
    assert!(minutes > 28_000_000, "{name}");
    assert_eq!(j["metadata"]["ownerReferences"][0]["kind"], "CronJob");
    assert!(
        j["metadata"]["annotations"]["batch.kubernetes.io/cronjob-scheduled-timestamp"].is_string()
    );
    let cj = eventually(WAIT, || {
        let cj = c.json(&["get", "cronjob", "tick", "-n", n]);
        cj["status"]["lastScheduleTime"].is_string().then_some(cj)
    })
    .expect("lastScheduleTime");
    assert_eq!(cj["status"]["active"][0]["name"], name);
}

fn statefulset_in_order(c: &Arc<Cluster>) {
    let n = "sts";
    ns(c, n);
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: StatefulSet
metadata:
  name: web
  namespace: {n}
spec:
  replicas: 3
  serviceName: web
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: app
        image: nginx
  volumeClaimTemplates:
  - metadata:
      name: data
    spec:
      accessModes: ["ReadWriteOnce"]
      resources:
        requests:
          storage: 1Gi
"#
    ));
    eventually(WAIT, || (c.pods(n, "app=web").len() == 1).then_some(()))
        .unwrap_or_else(|| panic!("web-0; log:\n{}", c.log()));
    std::thread::sleep(Duration::from_millis(1500));
    let pods = c.pods(n, "app=web");
    assert_eq!(pods.len(), 1, "web-1 created before web-0 was ready");
    let p = &pods[0];
    assert_eq!(p["metadata"]["name"], "web-0");
    assert_eq!(
        p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"],
        "web-0"
    );
    assert_eq!(p["metadata"]["labels"]["apps.kubernetes.io/pod-index"], "0");
    assert_eq!(p["spec"]["hostname"], "web-0");
    assert_eq!(p["spec"]["subdomain"], "web");
    c.ok(&["get", "pvc", "data-web-0", "-n", n]);
    let _kubelet = c.kubelet(n);
    let out = c.ok(&["rollout", "status", "sts/web", "-n", n, "--timeout=40s"]);
    assert!(out.contains("complete"), "{out}");
    let names: Vec<String> = c
        .pods(n, "app=web")
        .iter()
        .map(|p| p["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["web-0", "web-1", "web-2"]);
    let s = c.json(&["get", "sts", "web", "-n", n]);
    assert_eq!(s["status"]["readyReplicas"], 3);
    assert_eq!(
        s["status"]["currentRevision"],
        s["status"]["updateRevision"]
    );
    let revs = c.json(&["get", "controllerrevisions", "-n", n]);
    assert_eq!(revs["items"].as_array().map(Vec::len), Some(1));
}

fn node_manifest(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Node
metadata:
  name: {name}
  labels:
    kubernetes.io/hostname: {name}
status:
  conditions:
  - type: Ready
    status: "True"
    reason: KubeletReady
"#
    )
}

fn daemonset_per_node(c: &Cluster) {
    let n = "ds";
    ns(c, n);
    c.apply(&node_manifest("ds-node-a"));
    c.apply(&node_manifest("ds-node-b"));
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: {n}
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      nodeSelector:
        kubernetes.io/hostname: ds-node-a
      containers:
      - name: app
        image: busybox
"#
    ));
    let pods = eventually(WAIT, || {
        let pods = c.pods(n, "app=agent");
        (pods.len() == 1).then_some(pods)
    })
    .unwrap_or_else(|| panic!("daemonset pod; log:\n{}", c.log()));
    assert_eq!(pods[0]["spec"]["nodeName"], "ds-node-a");
    // Widen the selector: one pod on each of the two nodes.
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: agent
  namespace: {n}
spec:
  selector:
    matchLabels:
      app: agent
  template:
    metadata:
      labels:
        app: agent
    spec:
      nodeSelector:
        kubernetes.io/hostname: ds-node-b
      containers:
      - name: app
        image: busybox
"#
    ));
    let pods = eventually(WAIT, || {
        let pods = c.pods(n, "app=agent");
        (pods.len() == 1 && pods[0]["spec"]["nodeName"] == "ds-node-b").then_some(pods)
    })
    .unwrap_or_else(|| panic!("daemonset moved; log:\n{}", c.log()));
    assert_eq!(
        pods[0]["metadata"]["ownerReferences"][0]["kind"],
        "DaemonSet"
    );
    let ds = eventually(WAIT, || {
        let ds = c.json(&["get", "ds", "agent", "-n", n]);
        (ds["status"]["desiredNumberScheduled"] == 1 && ds["status"]["observedGeneration"] == 2)
            .then_some(ds)
    })
    .unwrap_or_else(|| panic!("ds status"));
    assert_eq!(ds["status"]["currentNumberScheduled"], 1);
}

fn daemonset_all_nodes(c: &Cluster) {
    let n = "ds-all";
    ns(c, n);
    c.apply(&node_manifest("dsall-node-1"));
    c.apply(&node_manifest("dsall-node-2"));
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: logs
  namespace: {n}
spec:
  selector:
    matchLabels:
      app: logs
  template:
    metadata:
      labels:
        app: logs
    spec:
      containers:
      - name: app
        image: busybox
"#
    ));
    // One pod per node, whatever other nodes the concurrent scenarios add.
    let ok = eventually(WAIT, || {
        let nodes = c.json(&["get", "nodes"]);
        let names: Vec<String> = nodes["items"]
            .as_array()?
            .iter()
            .map(|n| {
                n["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        let pods = c.pods(n, "app=logs");
        let mut on: Vec<String> = pods
            .iter()
            .map(|p| {
                p["spec"]["nodeName"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string()
            })
            .collect();
        on.sort();
        let mut want = names.clone();
        want.sort();
        (on == want && on.contains(&"dsall-node-1".to_string())).then_some(())
    });
    assert!(ok.is_some(), "one pod per node; log:\n{}", c.log());
}

fn lease(name: &str, renew: &str) -> String {
    format!(
        r#"apiVersion: coordination.k8s.io/v1
kind: Lease
metadata:
  name: {name}
  namespace: kube-node-lease
spec:
  holderIdentity: {name}
  leaseDurationSeconds: 40
  renewTime: "{renew}"
"#
    )
}

fn node_goes_silent(c: &Cluster) {
    let n = "evict";
    ns(c, n);
    let _ = c.kubectl(&["create", "namespace", "kube-node-lease"]);
    let node = "silent-node";
    c.apply(&node_manifest(node));
    let now = k8s_openapi::jiff::Timestamp::now();
    let fresh = now.strftime("%Y-%m-%dT%H:%M:%S.000000Z").to_string();
    c.apply(&lease(node, &fresh));
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: victim
  namespace: {n}
spec:
  nodeName: {node}
  tolerations:
  - key: node.kubernetes.io/unreachable
    operator: Exists
    effect: NoExecute
    tolerationSeconds: 2
  containers:
  - name: app
    image: busybox
"#
    ));
    std::thread::sleep(Duration::from_secs(2));
    let nd = c.json(&["get", "node", node]);
    assert!(
        nd["spec"]["taints"].as_array().is_none_or(|t| t.is_empty()),
        "{nd}"
    );
    // The lease stops being renewed: its last renewal is now 2 minutes old.
    let stale = k8s_openapi::jiff::Timestamp::from_second(now.as_second() - 120)
        .unwrap()
        .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string();
    c.apply(&lease(node, &stale));
    let nd = eventually(WAIT, || {
        let nd = c.json(&["get", "node", node]);
        let tainted = nd["spec"]["taints"].as_array().is_some_and(|t| {
            t.iter()
                .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoExecute")
        });
        tainted.then_some(nd)
    })
    .unwrap_or_else(|| panic!("node not tainted; log:\n{}", c.log()));
    let ready = nd["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(ready["status"], "Unknown");
    assert_eq!(ready["reason"], "NodeStatusUnknown");
    assert_eq!(ready["message"], "Kubelet stopped posting node status.");
    assert!(nd["spec"]["taints"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["key"] == "node.kubernetes.io/unreachable" && t["effect"] == "NoSchedule"));
    // The pod tolerates it for 2 s, then is evicted.
    eventually(Duration::from_secs(15), || {
        c.pods(n, "").is_empty().then_some(())
    })
    .unwrap_or_else(|| panic!("pod not evicted; log:\n{}", c.log()));
    // Heartbeats resume: the taints go away.
    let fresh = k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%S.000000Z")
        .to_string();
    c.apply(&lease(node, &fresh));
    eventually(WAIT, || {
        let nd = c.json(&["get", "node", node]);
        nd["spec"]["taints"]
            .as_array()
            .is_none_or(|t| t.is_empty())
            .then_some(())
    })
    .unwrap_or_else(|| panic!("taints not removed; log:\n{}", c.log()));
}

/// A bare pod nobody schedules (no scheduler by that name): it stays off the
/// fake nodes the other scenarios create and their lifecycle.
fn unscheduled_pod(ns: &str, name: &str, app: &str, cpu: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels: {{app: {app}}}
spec:
  schedulerName: nobody
  containers:
  - name: app
    image: busybox
    resources: {{requests: {{cpu: {cpu}}}}}
"#
    )
}

fn disruption_budget_follows_pods(c: &Cluster) {
    let n = "pdb";
    ns(c, n);
    c.apply(&format!(
        r#"apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: budget
  namespace: {n}
spec:
  minAvailable: 1
  selector:
    matchLabels: {{app: web}}
"#
    ));
    for (name, app) in [("web-1", "web"), ("web-2", "web"), ("db", "db")] {
        c.apply(&unscheduled_pod(n, name, app, "100m"));
    }
    c.ready_pods(n);
    let status = |healthy: i64, expected: i64, allowed: i64| {
        eventually(WAIT, || {
            let b = c.json(&["get", "pdb", "budget", "-n", n]);
            let s = &b["status"];
            (s["currentHealthy"] == healthy
                && s["expectedPods"] == expected
                && s["disruptionsAllowed"] == allowed)
                .then_some(b)
        })
        .unwrap_or_else(|| {
            panic!(
                "budget not {healthy}/{expected}/{allowed}: {}; log:\n{}",
                c.json(&["get", "pdb", "budget", "-n", n]),
                c.log()
            )
        })
    };
    let b = status(2, 2, 1);
    assert_eq!(b["status"]["desiredHealthy"], 1);
    assert!(condition(&b, "DisruptionAllowed").is_some(), "{b}");
    // A selected pod fails: it no longer counts.
    set_phase(c, n, "web-2", "Failed");
    let b = status(1, 1, 0);
    assert!(condition(&b, "DisruptionAllowed").is_none(), "{b}");
    // A new one comes up ready.
    c.apply(&unscheduled_pod(n, "web-3", "web", "100m"));
    c.ready_pods(n);
    status(2, 2, 1);
}

fn quota_usage_follows_pods(c: &Cluster) {
    let n = "quota";
    ns(c, n);
    c.apply(&format!(
        r#"apiVersion: v1
kind: ResourceQuota
metadata:
  name: q
  namespace: {n}
spec:
  hard: {{pods: "10", requests.cpu: "4"}}
"#
    ));
    for name in ["a", "b", "c"] {
        c.apply(&unscheduled_pod(n, name, "x", "500m"));
    }
    let used = |want: &str| {
        eventually(WAIT, || {
            let q = c.json(&["get", "resourcequota", "q", "-n", n]);
            let u = &q["status"]["used"];
            let got = format!(
                "{} {}",
                u["pods"].as_str().unwrap_or(""),
                u["requests.cpu"].as_str().unwrap_or("")
            );
            (got == want).then_some(())
        })
        .unwrap_or_else(|| {
            panic!(
                "quota usage not {want}: {}; log:\n{}",
                c.json(&["get", "resourcequota", "q", "-n", n]),
                c.log()
            )
        })
    };
    used("3 1500m");
    // A finished pod and a deleted one stop counting.
    set_phase(c, n, "a", "Succeeded");
    c.ok(&["delete", "pod", "b", "-n", n, "--wait=false"]);
    used("1 500m");
}

#[test]
fn batch_sets_and_node_lifecycle() {
    let c = Arc::new(Cluster::start());
    std::thread::scope(|s| {
        let handles = vec![
            s.spawn(|| job_completes(&c)),
            s.spawn(|| job_fails(&c)),
            s.spawn(|| cronjob_fires(&c)),
            s.spawn(|| statefulset_in_order(&c)),
            s.spawn(|| daemonset_per_node(&c)),
            s.spawn(|| daemonset_all_nodes(&c)),
            s.spawn(|| node_goes_silent(&c)),
            s.spawn(|| disruption_budget_follows_pods(&c)),
            s.spawn(|| quota_usage_follows_pods(&c)),
        ];
        let failures: Vec<String> = handles
            .into_iter()
            .filter_map(|h| h.join().err())
            .map(|e| {
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            })
            .collect();
        assert!(failures.is_empty(), "{}", failures.join("\n----\n"));
    });
}
