//! Issue 2, "Done means": the real kubectl against a real navarch server.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::{eventually, Cluster};

const POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  labels:
    app: web
spec:
  containers:
  - name: app
    image: nginx:1.25
    ports:
    - containerPort: 80
    env:
    - name: A
      value: "1"
"#;

#[test]
fn namespaces_and_discovery() {
    let c = Cluster::start();
    let out = c.ok(&["get", "ns"]);
    for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        let line = out
            .lines()
            .find(|l| l.starts_with(ns))
            .unwrap_or_else(|| panic!("{ns} missing in:\n{out}"));
        assert!(line.contains("Active"), "{line}");
    }
    assert!(out.starts_with("NAME"), "table header expected:\n{out}");
    let res = c.ok(&["api-resources"]);
    for r in [
        "pods",
        "deployments",
        "configmaps",
        "leases",
        "horizontalpodautoscalers",
        "clusterroles",
    ] {
        assert!(
            res.lines().any(|l| l.starts_with(r)),
            "{r} missing from api-resources:\n{res}"
        );
    }
    let v = c.ok(&["version", "-o", "json"]);
    assert!(v.contains("\"minor\": \"33\""), "{v}");
}

#[test]
fn create_generators_send_protobuf() {
    let c = Cluster::start();
    assert_eq!(
        c.ok(&["create", "configmap", "c", "--from-literal=a=b"])
            .trim(),
        "configmap/c created"
    );
    assert_eq!(c.ok(&["get", "cm", "c", "-o", "jsonpath={.data.a}"]), "b");
    assert_eq!(
        c.ok(&["create", "deployment", "web", "--image=nginx"])
            .trim(),
        "deployment.apps/web created"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}"
        ]),
        "nginx"
    );
    // Defaults as upstream.
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.spec.strategy.rollingUpdate.maxSurge}"
        ]),
        "25%"
    );
    let table = c.ok(&["get", "deploy"]);
    assert!(
        table.contains("READY") && table.contains("UP-TO-DATE") && table.contains("web"),
        "{table}"
    );
    assert_eq!(
        c.ok(&["create", "namespace", "team-a"]).trim(),
        "namespace/team-a created"
    );
    assert_eq!(
        c.ok(&[
            "create",
            "secret",
            "generic",
            "s",
            "--from-literal=password=hunter2",
            "-n",
            "team-a"
        ])
        .trim(),
        "secret/s created"
    );
    assert_eq!(
        c.ok(&[
            "get",
            "secret",
            "s",
            "-n",
            "team-a",
            "-o",
            "jsonpath={.data.password}"
        ]),
        "aHVudGVyMg=="
    );
}

#[test]
fn apply_edit_apply_and_patch() {
    let c = Cluster::start();
    assert_eq!(c.apply(POD).trim(), "pod/web-1 created");
    assert_eq!(c.apply(POD).trim(), "pod/web-1 unchanged");
    let edited = POD.replace("nginx:1.25", "nginx:1.26");
    assert_eq!(c.apply(&edited).trim(), "pod/web-1 configured");
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.spec.containers[0].image}"
        ]),
        "nginx:1.26"
    );
    assert_eq!(
        c.ok(&["get", "pods", "-o", "jsonpath={.items[*].metadata.name}"]),
        "web-1"
    );

    c.ok(&["label", "pod", "web-1", "tier=fe"]);
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.metadata.labels.tier}"
        ]),
        "fe"
    );
    assert_eq!(
        c.ok(&["get", "pods", "-l", "tier=fe", "-o", "name"]).trim(),
        "pod/web-1"
    );
    assert_eq!(
        c.ok(&["get", "pods", "-l", "tier!=fe", "-o", "name"])
            .trim(),
        ""
    );
    c.ok(&["annotate", "pod", "web-1", "note=hello"]);
    assert_eq!(
        c.ok(&[
            "get",
            "pod",
            "web-1",
            "-o",
            "jsonpath={.metadata.annotations.note}"
        ]),
        "hello"
    );

    c.ok(&[
        "patch",
        "pod",
        "web-1",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"m":"1"}}}"#,
    ]);
    c.ok(&[
        "patch",
        "pod",
        "web-1",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/j","value":"2"}]"#,
    ]);
    c.ok(&[
        "patch",
        "pod",
        "web-1",
        "-p",
        r#"{"spec":{"containers":[{"name":"app","image":"nginx:1.27"}]}}"#,
    ]);
    let pod = c.ok(&["get", "pod", "web-1", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&pod).expect("json");
    assert_eq!(v["metadata"]["labels"]["m"], "1");
    assert_eq!(v["metadata"]["labels"]["j"], "2");
    assert_eq!(v["spec"]["containers"][0]["image"], "nginx:1.27");
    // The strategic patch merged by name: env and ports are still there.
    assert_eq!(v["spec"]["containers"][0]["env"][0]["name"], "A");
    assert_eq!(v["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
    assert_eq!(v["spec"]["restartPolicy"], "Always");
    assert_eq!(v["status"]["phase"], "Pending");

    // Immutable pod fields.
    let err = c.fails(&[
        "patch",
        "pod",
        "web-1",
        "-p",
        r#"{"spec":{"restartPolicy":"Never"}}"#,
    ]);
    assert!(
        err.contains("Forbidden") || err.contains("Invalid"),
        "{err}"
    );

    assert_eq!(
        c.ok(&["delete", "pod", "web-1"]).trim(),
        "pod \"web-1\" deleted"
    );
    let err = c.fails(&["get", "pod", "web-1"]);
    assert_eq!(
        err.trim(),
        "Error from server (NotFound): pods \"web-1\" not found"
    );
}

#[test]
fn not_found_conflict_invalid() {
    let c = Cluster::start();
    assert_eq!(
        c.fails(&["get", "pod", "nope"]).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
    c.ok(&["create", "configmap", "c", "--from-literal=a=b"]);
    let err = c.fails(&["create", "configmap", "c", "--from-literal=a=b"]);
    assert!(err.contains("configmaps \"c\" already exists"), "{err}");
    // A stale resourceVersion is a 409 Conflict.
    let mut cm: serde_json::Value =
        serde_json::from_str(&c.ok(&["get", "cm", "c", "-o", "json"])).expect("json");
    c.ok(&["label", "cm", "c", "x=y"]);
    cm["data"]["a"] = serde_json::json!("changed");
    let out = c.kubectl_stdin(&["replace", "-f", "-"], &cm.to_string());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains("Conflict")
            && err.contains("the object has been modified"),
        "{err}"
    );
    // Invalid names are 422 with the field path.
    let bad = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"Bad_Name"}}"#;
    let out = c.kubectl_stdin(&["create", "-f", "-"], bad);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("Invalid") && err.contains("metadata.name"),
        "{err}"
    );
    // Unknown fields are refused under kubectl's strict validation.
    let unknown = r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"u"},"bogus":1}"#;
    let out = c.kubectl_stdin(&["create", "-f", "-"], unknown);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("bogus"), "{err}");
}

#[test]
fn watch_prints_changes_from_another_client() {
    let c = Cluster::start();
    c.apply(POD);
    let mut watch = c
        .kubectl_cmd()
        .args(["get", "pods", "-w"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    // Header and the existing pod first.
    let first: Vec<String> = (0..2)
        .filter_map(|_| rx.recv_timeout(Duration::from_secs(20)).ok())
        .collect();
    assert!(first.iter().any(|l| l.starts_with("web-1")), "{first:?}");
    let second = POD.replace("web-1", "web-2");
    c.apply(&second);
    let seen = eventually(Duration::from_secs(20), || {
        rx.recv_timeout(Duration::from_millis(200))
            .ok()
            .filter(|l| l.starts_with("web-2"))
    });
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(seen.is_some(), "kubectl get -w did not print web-2");
}

#[test]
fn explain_uses_openapi_schemas() {
    let c = Cluster::start();
    let out = c.ok(&["explain", "deployment.spec.replicas"]);
    assert!(out.contains("replicas") && out.contains("integer"), "{out}");
    let out = c.ok(&["explain", "pod.spec"]);
    assert!(out.contains("containers"), "{out}");
}

#[test]
fn objects_survive_a_crash_restart() {
    let mut c = Cluster::start();
    c.ok(&["create", "configmap", "keep", "--from-literal=k=v"]);
    c.apply(POD);
    c.restart();
    assert_eq!(
        c.ok(&["get", "cm", "keep", "-o", "jsonpath={.data.k}"]),
        "v"
    );
    assert_eq!(c.ok(&["get", "pods", "-o", "name"]).trim(), "pod/web-1");
}

#[test]
fn unauthenticated_requests_are_refused() {
    let c = Cluster::start();
    let out = std::process::Command::new("curl")
        .args(["-sk", "-o", "/dev/stdout", "-w", "\n%{http_code}"])
        .arg(format!("https://127.0.0.1:{}/api/v1/namespaces", c.port))
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.trim_end().ends_with("401"), "{text}");
    assert!(text.contains("\"reason\":\"Unauthorized\""), "{text}");
}

#[test]
fn python_client_lists_creates_and_watches() {
    let c = Cluster::start();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/client_smoke.py");
    let out = std::process::Command::new("python3")
        .arg(script)
        .arg(c.kubeconfig())
        .output()
        .expect("python3");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "python client smoke failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("watched ADDED py-pod"), "{stdout}");
}
