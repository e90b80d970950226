//! Issue 3, "Done means": pods really run on the local node (root, runc).

mod common;

use std::time::Duration;

use common::{Cluster, TEST_IMAGE};

fn pod_manifest(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[test]
fn run_a_pod_and_read_its_logs() {
    let c = Cluster::start_with_node();
    c.ok(&[
        "run",
        "bb",
        &format!("--image={TEST_IMAGE}"),
        "--",
        "sh",
        "-c",
        "echo hi; sleep 3600",
    ]);
    c.wait_for(
        &["get", "pod", "bb", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |s| s == "Running",
    );
    let table = c.ok(&["get", "pods"]);
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("bb") && l.contains("1/1") && l.contains("Running")),
        "{table}"
    );
    let logs = c.wait_for(&["logs", "bb"], Duration::from_secs(10), |s| {
        s.contains("hi")
    });
    assert_eq!(logs.trim(), "hi");
    let id = c.ok(&[
        "get",
        "pod",
        "bb",
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    assert!(id.starts_with("navarch://"), "{id}");
    let image_id = c.ok(&[
        "get",
        "pod",
        "bb",
        "-o",
        "jsonpath={.status.containerStatuses[0].imageID}",
    ]);
    assert!(!image_id.is_empty());
    let events = c.ok(&["describe", "pod", "bb"]);
    for reason in ["Scheduled", "Created", "Started"] {
        assert!(events.contains(reason), "{reason} missing:\n{events}");
    }
}

#[test]
fn init_container_fills_an_empty_dir() {
    let c = Cluster::start_with_node();
    c.apply(&pod_manifest(
        "init",
        &format!(
            r#"  initContainers:
  - name: fetch
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo from-init > /work/index.html"]
    volumeMounts: [{{name: work, mountPath: /work}}]
  containers:
  - name: web
    image: {TEST_IMAGE}
    command: ["sh", "-c", "cat /srv/index.html; sleep 3600"]
    volumeMounts: [{{name: work, mountPath: /srv}}]
  volumes:
  - name: work
    emptyDir: {{}}
"#
        ),
    ));
    c.wait_for(
        &["get", "pod", "init", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |s| s == "Running",
    );
    let logs = c.wait_for(
        &["logs", "init", "-c", "web"],
        Duration::from_secs(10),
        |s| s.contains("from-init"),
    );
    assert_eq!(logs.trim(), "from-init");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "init",
            "-o",
            "jsonpath={.status.initContainerStatuses[0].state.terminated.reason}"
        ]),
        "Completed"
    );
}

#[test]
fn memory_limit_oom_kills() {
    let c = Cluster::start_with_node();
    c.apply(&pod_manifest(
        "hog",
        &format!(
            r#"  restartPolicy: Never
  containers:
  - name: hog
    image: {TEST_IMAGE}
    command: ["sh", "-c", "x=$(head -c 200000000 /dev/zero | tr '\\0' a); echo $x | wc -c"]
    resources:
      limits: {{memory: 20Mi}}
"#
        ),
    ));
    let reason = c.wait_for(
        &[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.reason}",
        ],
        Duration::from_secs(60),
        |s| !s.is_empty(),
    );
    assert_eq!(reason, "OOMKilled");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "hog",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}"
        ]),
        "137"
    );
    let table = c.ok(&["get", "pod", "hog"]);
    assert!(table.contains("OOMKilled"), "{table}");
}

#[test]
fn bad_image_goes_to_image_pull_back_off() {
    let c = Cluster::start_with_node();
    c.ok(&["run", "nope", "--image=127.0.0.1:1/nope/nothing:1"]);
    c.wait_for(
        &[
            "get",
            "pod",
            "nope",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        Duration::from_secs(60),
        |s| s == "ErrImagePull" || s == "ImagePullBackOff",
    );
    c.wait_for(
        &[
            "get",
            "pod",
            "nope",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        Duration::from_secs(60),
        |s| s == "ImagePullBackOff",
    );
    let events = c.ok(&["describe", "pod", "nope"]);
    assert!(
        events.contains("Failed") && events.contains("BackOff"),
        "{events}"
    );
}

#[test]
fn crashing_container_goes_to_crash_loop_back_off() {
    let c = Cluster::start_with_node();
    c.ok(&[
        "run",
        "crash",
        &format!("--image={TEST_IMAGE}"),
        "--",
        "sh",
        "-c",
        "echo dying; exit 3",
    ]);
    c.wait_for(
        &[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}",
        ],
        Duration::from_secs(90),
        |s| s.parse::<u32>().map(|n| n >= 2).unwrap_or(false),
    );
    let table = c.wait_for(&["get", "pod", "crash"], Duration::from_secs(30), |s| {
        s.contains("CrashLoopBackOff")
    });
    assert!(table.contains("CrashLoopBackOff"), "{table}");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "crash",
            "-o",
            "jsonpath={.status.containerStatuses[0].lastState.terminated.exitCode}"
        ]),
        "3"
    );
    let prev = c.ok(&["logs", "crash", "--previous"]);
    assert_eq!(prev.trim(), "dying");
}

#[test]
fn config_map_env_and_secret_files_reach_the_container() {
    let c = Cluster::start_with_node();
    c.ok(&[
        "create",
        "configmap",
        "cfg",
        "--from-literal=GREETING=hello",
    ]);
    c.ok(&[
        "create",
        "secret",
        "generic",
        "sec",
        "--from-literal=password=s3cret",
    ]);
    c.apply(&pod_manifest("envs", &format!(r#"  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "echo greeting=$GREETING; echo pw=$(cat /etc/sec/password); echo name=$MY_NAME; sleep 3600"]
    env:
    - name: GREETING
      valueFrom: {{configMapKeyRef: {{name: cfg, key: GREETING}}}}
    - name: MY_NAME
      valueFrom: {{fieldRef: {{fieldPath: metadata.name}}}}
    volumeMounts: [{{name: sec, mountPath: /etc/sec, readOnly: true}}]
  volumes:
  - name: sec
    secret: {{secretName: sec}}
"#)));
    let logs = c.wait_for(&["logs", "envs"], Duration::from_secs(30), |s| {
        s.contains("name=")
    });
    assert!(logs.contains("greeting=hello"), "{logs}");
    assert!(logs.contains("pw=s3cret"), "{logs}");
    assert!(logs.contains("name=envs"), "{logs}");
    // A missing key is CreateContainerConfigError, and nothing else breaks.
    c.apply(&pod_manifest(
        "missing",
        &format!(
            r#"  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
    env:
    - name: X
      valueFrom: {{configMapKeyRef: {{name: cfg, key: NOPE}}}}
"#
        ),
    ));
    c.wait_for(
        &[
            "get",
            "pod",
            "missing",
            "-o",
            "jsonpath={.status.containerStatuses[0].state.waiting.reason}",
        ],
        Duration::from_secs(30),
        |s| s == "CreateContainerConfigError",
    );
    assert_eq!(
        c.ok(&["get", "pod", "envs", "-o", "jsonpath={.status.phase}"]),
        "Running"
    );
}

#[test]
fn pod_survives_a_restart_of_its_node_agent() {
    let mut c = Cluster::start_with_node();
    c.ok(&[
        "run",
        "keep",
        &format!("--image={TEST_IMAGE}"),
        "--",
        "sh",
        "-c",
        "while true; do echo tick; sleep 1; done",
    ]);
    c.wait_for(
        &["get", "pod", "keep", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |s| s == "Running",
    );
    let id = c.ok(&[
        "get",
        "pod",
        "keep",
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    // SIGKILL the whole server (API, controllers and the node agent in it).
    c.restart();
    std::thread::sleep(Duration::from_secs(3));
    c.wait_for(
        &["get", "pod", "keep", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |s| s == "Running",
    );
    let id2 = c.ok(&[
        "get",
        "pod",
        "keep",
        "-o",
        "jsonpath={.status.containerStatuses[0].containerID}",
    ]);
    assert_eq!(id, id2, "the container was recreated instead of re-adopted");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "keep",
            "-o",
            "jsonpath={.status.containerStatuses[0].restartCount}"
        ]),
        "0"
    );
    let logs = c.ok(&["logs", "keep", "--tail=1"]);
    assert_eq!(logs.trim(), "tick");
}

#[test]
fn deleting_a_pod_stops_its_container() {
    let c = Cluster::start_with_node();
    c.ok(&[
        "run",
        "gone",
        &format!("--image={TEST_IMAGE}"),
        "--",
        "sleep",
        "3600",
    ]);
    c.wait_for(
        &["get", "pod", "gone", "-o", "jsonpath={.status.phase}"],
        Duration::from_secs(30),
        |s| s == "Running",
    );
    // sleep as PID 1 ignores SIGTERM: a short grace period ends in SIGKILL.
    c.ok(&["delete", "pod", "gone", "--grace-period=2"]);
    assert!(c.fails(&["get", "pod", "gone"]).contains("not found"));
}
