//! Several nodes: a second `navarch agent` joins the server with the join token
//! (issue 3's `navarch agent --server URL --token T`), the scheduler spreads over
//! both, and pods of a node whose agent stops are recreated elsewhere (issue 4).

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{navarch_bin, Cluster, TEST_IMAGE};

struct Agent(Child, std::path::PathBuf);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        Cluster::reset_node(&self.1);
    }
}

fn join(c: &Cluster, name: &str, dir: &std::path::Path) -> Agent {
    let token = std::fs::read_to_string(c.data_dir().join("node-token")).expect("node-token");
    let images = dir.join("images");
    std::fs::create_dir_all(&images).expect("images dir");
    std::fs::copy(common::test_image(), images.join("busybox.tar")).expect("copy image");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port();
    let log = std::fs::File::create(dir.join("agent.log")).expect("log");
    let child = Command::new(navarch_bin())
        .args([
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", c.port),
            "--token",
            token.trim(),
        ])
        .args(["--node-name", name, "--agent-port", &port.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::from(log))
        .spawn()
        .expect("start navarch agent");
    Agent(child, dir.to_path_buf())
}

fn ready_nodes(c: &Cluster) -> usize {
    let out = c.ok(&["get", "nodes", "--no-headers"]);
    out.lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
        .count()
}

#[test]
fn a_second_node_joins_and_takes_over_when_the_first_one_goes() {
    let c = Cluster::start_with_node();
    let dir = tempfile::tempdir().expect("tmp");
    let agent = join(&c, "node-b", dir.path());
    c.wait_for(
        &["get", "nodes", "--no-headers"],
        Duration::from_secs(60),
        |s| {
            s.lines()
                .filter(|l| l.split_whitespace().nth(1) == Some("Ready"))
                .count()
                == 2
        },
    );
    assert_eq!(ready_nodes(&c), 2);
    // A bad token is refused.
    let bad = Command::new(navarch_bin())
        .args([
            "agent",
            "--server",
            &format!("https://127.0.0.1:{}", c.port),
            "--token",
            "N10deadbeef::node:x",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("bad"))
        .output()
        .expect("agent");
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("token"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );

    // Two replicas that must not share a node land one per node.
    c.apply(&format!(r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: spread}}
spec:
  replicas: 2
  selector: {{matchLabels: {{app: spread}}}}
  template:
    metadata: {{labels: {{app: spread}}}}
    spec:
      terminationGracePeriodSeconds: 1
      tolerations:
      - {{key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      - {{key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
          - weight: 100
            podAffinityTerm:
              labelSelector: {{matchLabels: {{app: spread}}}}
              topologyKey: kubernetes.io/hostname
      containers:
      - name: app
        image: {TEST_IMAGE}
        command: ["sleep", "3600"]
"#));
    c.wait_for(
        &[
            "get",
            "deploy",
            "spread",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        Duration::from_secs(60),
        |s| s == "2",
    );
    let nodes = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "-o",
        "jsonpath={.items[*].spec.nodeName}",
    ]);
    let mut names: Vec<&str> = nodes.split_whitespace().collect();
    names.sort();
    names.dedup();
    assert_eq!(
        names.len(),
        2,
        "replicas should spread over both nodes: {nodes}"
    );
    // kubectl logs reaches the joined node's agent through the API server.
    let pod_b = c.ok(&[
        "get",
        "pods",
        "-l",
        "app=spread",
        "--field-selector",
        "spec.nodeName=node-b",
        "-o",
        "name",
    ]);
    assert!(!pod_b.trim().is_empty());

    // node-b's agent stops: Unknown after the grace period, its pod evicted and
    // recreated on the remaining node.
    drop(agent);
    c.wait_for(
        &[
            "get",
            "node",
            "node-b",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        Duration::from_secs(90),
        |s| s == "Unknown",
    );
    // The evicted pod stays Terminating while its node is unreachable (as upstream);
    // its replacement runs on the remaining node.
    let live_elsewhere = || {
        let out = c.ok(&["get", "pods", "-l", "app=spread", "-o", "json"]);
        let v: serde_json::Value = serde_json::from_str(&out).expect("json");
        v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
                    .filter(|p| {
                        p["status"]["phase"] == "Running" && p["spec"]["nodeName"] != "node-b"
                    })
                    .count()
            })
            .unwrap_or(0)
    };
    let ok = common::eventually(Duration::from_secs(90), || {
        (live_elsewhere() == 2).then_some(())
    });
    assert!(
        ok.is_some(),
        "replacement not running elsewhere:\n{}",
        c.ok(&["get", "pods", "-o", "wide"])
    );
}
