//! Issue 6, "Done means": probes, lifecycle hooks and resource admission on
//! real containers (root, runc). The probe scenarios share one cluster and run
//! side by side to keep the wall time low.

mod common;

use std::time::Duration;

use common::{Cluster, TEST_IMAGE};

fn pod_manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

fn jsonpath(c: &Cluster, pod: &str, path: &str) -> String {
    c.ok(&["get", "pod", pod, "-o", &format!("jsonpath={path}")])
}

/// Wait until `path` of the pod satisfies `done`.
fn wait_jsonpath(c: &Cluster, pod: &str, path: &str, secs: u64, done: impl Fn(&str) -> bool) {
    let arg = format!("jsonpath={path}");
    c.wait_for(
        &["get", "pod", pod, "-o", &arg],
        Duration::from_secs(secs),
        done,
    );
}

fn ready_column(c: &Cluster, pod: &str) -> String {
    let table = c.ok(&["get", "pod", pod, "--no-headers"]);
    table.split_whitespace().nth(1).unwrap_or("").to_string()
}

#[test]
fn probes_and_hooks() {
    let c = Cluster::start_with_node();
    let host_dir = tempfile::tempdir().unwrap();
    // the book's liveness example: index.html disappears after 8 s. Only the
    // first run loses it (the emptyDir outlives the restart), so the restarted
    // container stays 1/1 however late the test looks at it.
    c.apply(&pod_manifest(
        "liveness",
        &format!(
            r#"  terminationGracePeriodSeconds: 1
  volumes: [{{name: state, emptyDir: {{}}}}]
  containers:
  - name: web
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www; echo ok > /www/index.html; httpd -p 80 -h /www; if [ ! -e /state/ran ]; then touch /state/ran; sleep 8; rm /www/index.html; fi; sleep 3600"]
    volumeMounts: [{{name: state, mountPath: /state}}]
    ports: [{{name: http, containerPort: 80}}]
    livenessProbe:
      httpGet: {{path: /index.html, port: http}}
      periodSeconds: 1
      failureThreshold: 2
"#
        ),
    ));
    // a slow starter: liveness alone would kill it after 1 s
    c.apply(&pod_manifest(
        "slow",
        &format!(
            r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 6; touch /tmp/up; sleep 3600"]
    startupProbe:
      exec: {{command: [cat, /tmp/up]}}
      periodSeconds: 1
      failureThreshold: 20
    livenessProbe:
      exec: {{command: [cat, /tmp/up]}}
      periodSeconds: 1
      failureThreshold: 1
"#
        ),
    ));
    // readiness: passes from 6 s to 12 s, then fails, then passes again
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata:
  name: ready
  labels: {{app: ready}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 6; touch /tmp/ready; sleep 6; rm /tmp/ready; sleep 7; touch /tmp/ready; sleep 3600"]
    readinessProbe:
      exec: {{command: [cat, /tmp/ready]}}
      periodSeconds: 1
"#
    ));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: ready}\nspec:\n  selector: {app: ready}\n  ports: [{port: 80}]\n",
    );
    // preStop writes to a hostPath file
    c.apply(&pod_manifest(
        "hooks",
        &format!(
            r#"  terminationGracePeriodSeconds: 3
  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 3600"]
    lifecycle:
      postStart:
        exec: {{command: ["sh", "-c", "echo started > /host/poststart"]}}
      preStop:
        exec: {{command: ["sh", "-c", "echo stopping > /host/prestop"]}}
    volumeMounts: [{{name: host, mountPath: /host}}]
  volumes:
  - name: host
    hostPath: {{path: {}, type: Directory}}
"#,
            host_dir.path().display()
        ),
    ));

    // a sidecar (restartable init container) feeding the main container
    c.apply(&pod_manifest(
        "sidecar",
        &format!(
            r#"  terminationGracePeriodSeconds: 1
  initContainers:
  - name: side
    image: {TEST_IMAGE}
    restartPolicy: Always
    command: ["sh", "-c", "echo from-sidecar > /shared/msg; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  containers:
  - name: main
    image: {TEST_IMAGE}
    command: ["sh", "-c", "cat /shared/msg; sleep 3600"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  volumes:
  - name: shared
    emptyDir: {{}}
"#
        ),
    ));
    // activeDeadlineSeconds
    c.apply(&pod_manifest(
        "deadline",
        &format!(
            r#"  terminationGracePeriodSeconds: 1
  activeDeadlineSeconds: 3
  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 3600"]
"#
        ),
    ));

    // --- readiness: 0/1 while failing, 1/1 once passing, 0/1 again ---
    c.wait_for(
        &[
            "get",
            "pod",
            "ready",
            "-o",
            "jsonpath={.status.phase} {.status.containerStatuses[0].ready}",
        ],
        Duration::from_secs(30),
        |s| s == "Running false",
    );
    assert_eq!(ready_column(&c, "ready"), "0/1");
    assert_eq!(
        jsonpath(
            &c,
            "ready",
            "{.status.conditions[?(@.type==\"Ready\")].status}"
        ),
        "False"
    );
    c.wait_for(
        &[
            "get",
            "pod",
            "ready",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ],
        Duration::from_secs(15),
        |s| s == "true",
    );
    assert_eq!(ready_column(&c, "ready"), "1/1");
    c.wait_for(
        &[
            "get",
            "endpoints",
            "ready",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        Duration::from_secs(5),
        |s| !s.trim().is_empty(),
    );
    c.wait_for(
        &[
            "get",
            "pod",
            "ready",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        Duration::from_secs(15),
        |s| s == "False",
    );
    // failing readiness takes the pod out of the Service's endpoints
    c.wait_for(
        &[
            "get",
            "endpoints",
            "ready",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}|{.subsets[*].notReadyAddresses[*].ip}",
        ],
        Duration::from_secs(5),
        |s| s.starts_with('|') && s.len() > 1,
    );
    c.wait_for(
        &[
            "get",
            "pod",
            "ready",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"ContainersReady\")].status}",
        ],
        Duration::from_secs(15),
        |s| s == "True",
    );
    c.wait_for(
        &[
            "get",
            "endpoints",
            "ready",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        Duration::from_secs(5),
        |s| !s.trim().is_empty(),
    );
    assert_eq!(
        jsonpath(&c, "ready", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );

    // --- liveness: restarted once, back to 1/1 ---
    c.wait_for(
        &[
            "get",
            "pod",
            "liveness",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        Duration::from_secs(30),
        |s| s == "1",
    );
    c.wait_for(
        &[
            "get",
            "pod",
            "liveness",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ],
        // The restart may wait out a back-off first; the new container then
        // keeps serving.
        Duration::from_secs(40),
        |s| s == "true",
    );
    assert_eq!(ready_column(&c, "liveness"), "1/1");
    let events = c.ok(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.name=liveness",
        "-o",
        "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}",
    ]);
    assert!(
        events.contains("Unhealthy: Liveness probe failed: HTTP probe failed with statuscode: 404"),
        "{events}"
    );
    assert!(
        events.contains("Killing: Container web failed liveness probe, will be restarted"),
        "{events}"
    );

    // --- the slow starter was never killed ---
    c.wait_for(
        &[
            "get",
            "pod",
            "slow",
            "-o",
            "jsonpath={.status.containerStatuses[0].ready}",
        ],
        Duration::from_secs(20),
        |s| s == "true",
    );
    assert_eq!(
        jsonpath(&c, "slow", "{.status.containerStatuses[0].restartCount}"),
        "0"
    );
    assert_eq!(
        jsonpath(&c, "slow", "{.status.containerStatuses[0].started}"),
        "true"
    );

    // --- sidecar started first and keeps running next to the main container ---
    c.wait_for(
        &["get", "pod", "sidecar", "-o", "jsonpath={.status.phase} {.status.initContainerStatuses[0].started} {.status.initContainerStatuses[0].ready} {.status.containerStatuses[0].ready}"],
        Duration::from_secs(10),
        |s| s == "Running true true true",
    );
    let logs = c.wait_for(
        &["logs", "sidecar", "-c", "main"],
        Duration::from_secs(10),
        |s| s.contains("from-sidecar"),
    );
    assert_eq!(logs.trim(), "from-sidecar");
    assert_eq!(
        jsonpath(
            &c,
            "sidecar",
            "{.status.conditions[?(@.type==\"Initialized\")].status}"
        ),
        "True"
    );

    // --- activeDeadlineSeconds ---
    c.wait_for(
        &[
            "get",
            "pod",
            "deadline",
            "-o",
            "jsonpath={.status.phase} {.status.reason}",
        ],
        Duration::from_secs(15),
        |s| s == "Failed DeadlineExceeded",
    );

    // --- hooks: postStart ran; preStop runs before the container stops ---
    c.wait_for(
        &["get", "pod", "hooks", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(10),
        |s| s == "Running",
    );
    let post = std::fs::read_to_string(host_dir.path().join("poststart")).unwrap_or_default();
    assert_eq!(post.trim(), "started");
    assert!(!host_dir.path().join("prestop").exists());
    c.ok(&["delete", "pod", "hooks", "--wait=true", "--timeout=30s"]);
    let pre = std::fs::read_to_string(host_dir.path().join("prestop")).unwrap_or_default();
    assert_eq!(pre.trim(), "stopping");
}

#[test]
fn limit_range_defaults_and_resource_quota() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "lr"]);
    c.ok(&["create", "namespace", "quota"]);
    c.apply(
        r#"apiVersion: v1
kind: LimitRange
metadata: {name: defaults, namespace: lr}
spec:
  limits:
  - type: Container
    default: {cpu: 500m, memory: 128Mi}
    defaultRequest: {cpu: 100m}
    max: {cpu: "1"}
"#,
    );
    c.apply(&format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: plain, namespace: lr}}\nspec:\n  containers:\n  - {{name: app, image: {TEST_IMAGE}}}\n"
    ));
    let limits = c.ok(&[
        "get",
        "pod",
        "plain",
        "-n",
        "lr",
        "-o",
        "jsonpath={.spec.containers[0].resources.limits.cpu} {.spec.containers[0].resources.limits.memory} {.spec.containers[0].resources.requests.cpu} {.spec.containers[0].resources.requests.memory}",
    ]);
    assert_eq!(limits, "500m 128Mi 100m 128Mi");
    let err = c.fails(&[
        "run",
        "big",
        "-n",
        "lr",
        &format!("--image={TEST_IMAGE}"),
        "--overrides",
        r#"{"spec":{"containers":[{"name":"big","image":"x","resources":{"limits":{"cpu":"2"}}}]}}"#,
    ]);
    assert!(
        err.contains("maximum cpu usage per Container is 1, but limit is 2"),
        "{err}"
    );

    c.apply(
        r#"apiVersion: v1
kind: ResourceQuota
metadata: {name: q, namespace: quota}
spec:
  hard: {pods: "5", requests.cpu: "1", configmaps: "1"}
"#,
    );
    let pod = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: quota}}\nspec:\n  containers:\n  - name: app\n    image: {TEST_IMAGE}\n    resources: {{requests: {{cpu: 600m}}}}\n"
        )
    };
    c.apply(&pod("a"));
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &pod("b"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("pods \"b\" is forbidden: exceeded quota: q, requested: requests.cpu=600m, used: requests.cpu=600m, limited: requests.cpu=1"),
        "{err}"
    );
    c.ok(&["create", "configmap", "one", "-n", "quota"]);
    let err = c.fails(&["create", "configmap", "two", "-n", "quota"]);
    assert!(err.contains("exceeded quota: q"), "{err}");
    // the quota controller reports usage
    c.wait_for(
        &[
            "get",
            "resourcequota",
            "q",
            "-n",
            "quota",
            "-o",
            "jsonpath={.status.used.requests\\.cpu} {.status.used.pods} {.status.used.configmaps}",
        ],
        Duration::from_secs(20),
        |s| s == "600m 1 1",
    );
}

/// The pod cgroup file `name` (cgroup v1 or v2 layout), as the node sees it.
fn pod_cgroup_file(uid: &str, controller: &str, name: &str) -> Option<String> {
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let path = if v2 {
        format!("/sys/fs/cgroup/pod{uid}/{name}")
    } else {
        format!("/sys/fs/cgroup/{controller}/pod{uid}/{name}")
    };
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

#[test]
fn pod_cgroup_limits_pids_and_memory() {
    let c = Cluster::start_with_node_args(&["--pod-max-pids", "40"]);
    let v2 = std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    // Two containers share the pod's budget of 40 processes: the first takes
    // 25, so the second (which waits for it) cannot fork 25 more (and its
    // shell exits on the failed fork).
    c.apply(&pod_manifest(
        "forks",
        &format!(
            r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: a
    image: {TEST_IMAGE}
    command: ["sh", "-c", "i=0; while [ $i -lt 25 ]; do sleep 3600 & i=$((i+1)); done; echo a-started; sleep 3600"]
    resources: {{limits: {{memory: 64Mi}}}}
  - name: b
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 3; i=0; while [ $i -lt 25 ]; do sleep 3600 & i=$((i+1)); done; sleep 3600"]
    resources: {{limits: {{memory: 32Mi}}}}
"#
        ),
    ));
    c.wait_for(
        &["logs", "forks", "-c", "b"],
        Duration::from_secs(60),
        |out| out.contains("can't fork"),
    );
    let a = c.ok(&["logs", "forks", "-c", "a"]);
    assert!(a.contains("a-started") && !a.contains("can't fork"), "{a}");

    let uid = jsonpath(&c, "forks", "{.metadata.uid}");
    assert_eq!(
        pod_cgroup_file(&uid, "pids", "pids.max").as_deref(),
        Some("40")
    );
    let current: u32 = pod_cgroup_file(&uid, "pids", "pids.current")
        .and_then(|s| s.parse().ok())
        .expect("pids.current");
    assert!((26..=40).contains(&current), "pids.current {current}");
    // Every container has a memory limit: the pod cgroup holds their sum.
    let mem = if v2 {
        pod_cgroup_file(&uid, "memory", "memory.max")
    } else {
        pod_cgroup_file(&uid, "memory", "memory.limit_in_bytes")
    };
    assert_eq!(mem.as_deref(), Some((96u64 << 20).to_string().as_str()));

    // Deleting the pod removes its cgroups.
    c.ok(&["delete", "pod", "forks", "--wait=true", "--timeout=60s"]);
    assert_eq!(pod_cgroup_file(&uid, "pids", "pids.max"), None);
}

/// `--eviction-hard` as the kubelet's flag: a threshold the node is always
/// under (less than 100% free) reports DiskPressure and evicts the pod.
#[test]
fn eviction_hard_threshold_reports_disk_pressure_and_evicts() {
    let c = Cluster::start_with_node_args(&["--eviction-hard=nodefs.available<100%"]);
    c.wait_for(
        &[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.conditions[?(@.type==\"DiskPressure\")].status}",
        ],
        Duration::from_secs(30),
        |s| s == "True",
    );
    c.apply(&pod_manifest(
        "victim",
        &format!(
            r#"  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "sleep 3600"]
"#
        ),
    ));
    wait_jsonpath(&c, "victim", "{.status.phase} {.status.reason}", 60, |s| {
        s == "Failed Evicted"
    });
    let message = jsonpath(&c, "victim", "{.status.message}");
    assert!(
        message.starts_with("The node was low on resource: ephemeral-storage."),
        "{message}"
    );
    // its container is stopped and reported so (0/1); the pod keeps its
    // phase, reason and message
    c.wait_for(
        &["get", "pod", "victim", "--no-headers"],
        Duration::from_secs(20),
        |s| s.split_whitespace().nth(1) == Some("0/1"),
    );
    assert_eq!(
        jsonpath(
            &c,
            "victim",
            "{.status.phase} {.status.reason} {.status.containerStatuses[0].state.terminated.exitCode}"
        ),
        "Failed Evicted 137"
    );
}
