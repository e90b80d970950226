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
    join_with(c, name, dir, &format!("https://127.0.0.1:{}", c.port), None)
}

/// Start `navarch agent` joining `server`; inside the network namespace
/// `netns` (a simulated second host, with its own bridge network) if given,
/// else on the host without pod network.
fn join_with(
    c: &Cluster,
    name: &str,
    dir: &std::path::Path,
    server: &str,
    netns: Option<(&str, &str)>,
) -> Agent {
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
    let mut cmd = match netns {
        Some((ns, _)) => {
            let mut cmd = Command::new("nsenter");
            cmd.arg(format!("--net=/run/netns/{ns}"))
                .arg("--")
                .arg(navarch_bin());
            cmd
        }
        None => Command::new(navarch_bin()),
    };
    cmd.args(["agent", "--server", server, "--token", token.trim()])
        .args(["--node-name", name, "--agent-port", &port.to_string()]);
    match netns {
        Some((_, node_ip)) => cmd.args(["--node-ip", node_ip]),
        // The bridge network is one per host: the host's belongs to the server.
        None => cmd.arg("--pod-network=none"),
    };
    let child = cmd
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

/// A network namespace standing in for a second host, joined to this one by a
/// veth pair (`172.31.254.1` here, `172.31.254.2` there). Deleted on drop.
struct SecondHost {
    ns: String,
}

const HOST_SIDE: &str = "172.31.254.1";
const NODE_B_IP: &str = "172.31.254.2";

impl SecondHost {
    fn new() -> SecondHost {
        let ns = format!("navmn{}", std::process::id() % 100_000);
        let veth = format!("nvmh{}", std::process::id() % 100_000);
        let run = |args: &[&str]| {
            let out = Command::new("ip").args(args).output().expect("ip");
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let _ = Command::new("ip").args(["netns", "del", &ns]).status();
        run(&["netns", "add", &ns]);
        let host = SecondHost { ns: ns.clone() };
        run(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &ns,
        ]);
        run(&["addr", "add", &format!("{HOST_SIDE}/30"), "dev", &veth]);
        run(&["link", "set", &veth, "up"]);
        run(&["-n", &ns, "link", "set", "lo", "up"]);
        run(&[
            "-n",
            &ns,
            "addr",
            "add",
            &format!("{NODE_B_IP}/30"),
            "dev",
            "eth0",
        ]);
        run(&["-n", &ns, "link", "set", "eth0", "up"]);
        run(&["-n", &ns, "route", "add", "default", "via", HOST_SIDE]);
        host
    }

    /// Make `ip` (the first node's InternalIP, an address of this host) a
    /// direct neighbour of the second host, as on a shared L2 segment: the
    /// host answers ARP for its own addresses on the veth.
    fn on_link(&self, ip: &str) {
        let out = Command::new("ip")
            .args([
                "-n",
                &self.ns,
                "route",
                "replace",
                &format!("{ip}/32"),
                "dev",
                "eth0",
            ])
            .output()
            .expect("ip");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SecondHost {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Forward TCP connections from `listen` to `to` (the server listens on
/// loopback only; the second host reaches it through this).
fn forward(listen: &str, to: String) -> u16 {
    let l = std::net::TcpListener::bind((listen, 0)).expect("bind forwarder");
    let port = l.local_addr().expect("addr").port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(a) = c else { continue };
            let Ok(b) = std::net::TcpStream::connect(&to) else {
                continue;
            };
            let (Ok(a2), Ok(b2)) = (a.try_clone(), b.try_clone()) else {
                continue;
            };
            std::thread::spawn(move || {
                let (mut r, mut w) = (a, b);
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
            std::thread::spawn(move || {
                let (mut r, mut w) = (b2, a2);
                let _ = std::io::copy(&mut r, &mut w);
                let _ = w.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    port
}

#[test]
fn pods_on_two_nodes_talk_across_nodes() {
    if let Some(why) = common::network_unavailable() {
        eprintln!("skipped: the pod network needs {why}");
        return;
    }
    // The second host exists before the server starts, so that the serving
    // certificate covers the address the second node reaches it at.
    let second = SecondHost::new();
    let Some(c) = Cluster::start_with_network(&["--tls-san", HOST_SIDE]) else {
        return;
    };
    let server_node = c.ok(&["get", "nodes", "-o", "jsonpath={.items[0].metadata.name}"]);
    let server_ip = c.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    second.on_link(server_ip.trim());
    let api_port = forward(HOST_SIDE, format!("127.0.0.1:{}", c.port));
    let dir = tempfile::tempdir().expect("tmp");
    let agent = join_with(
        &c,
        "node-b",
        dir.path(),
        &format!("https://{HOST_SIDE}:{api_port}"),
        Some((&second.ns, NODE_B_IP)),
    );
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
    let pod = |name: &str, node: &str, cmd: &str| {
        format!(
            r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: {name}}}}}
spec:
  nodeName: {node}
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sh", "-c", "{cmd}"]
"#
        )
    };
    c.apply(&pod(
        "web-b",
        "node-b",
        "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www",
    ));
    c.apply(&pod("client-a", server_node.trim(), "exec sleep 3600"));
    c.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web-b}\nspec:\n  selector: {app: web-b}\n  ports: [{port: 80}]\n",
    );
    for p in ["web-b", "client-a"] {
        c.wait_for(
            &["get", "pod", p, "-o", "jsonpath={.status.phase}"],
            Duration::from_secs(90),
            |s| s == "Running",
        );
    }
    let ip_of = |p: &str| c.ok(&["get", "pod", p, "-o", "jsonpath={.status.podIP}"]);
    let (web_ip, client_ip) = (ip_of("web-b"), ip_of("client-a"));
    let cidr_b = c.ok(&["get", "node", "node-b", "-o", "jsonpath={.spec.podCIDR}"]);
    assert_eq!(cidr_b, "10.42.1.0/24");
    assert!(web_ip.starts_with("10.42.1."), "{web_ip}");
    assert!(client_ip.starts_with("10.42.0."), "{client_ip}");
    // Across nodes by pod IP (host routes), and through the Service by name
    // from the other node (the proxy on node A DNATs to node B's pod).
    let get = |url: &str| {
        let mut last = String::new();
        let ok = common::eventually(Duration::from_secs(30), || {
            let out = c.kubectl(&[
                "exec",
                "client-a",
                "--",
                "sh",
                "-c",
                &format!("timeout 10 wget -qO- {url}"),
            ]);
            last = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (last.trim() == "web-b").then_some(())
        });
        assert!(
            ok.is_some(),
            "{url} from client-a: {last}\nagent log:\n{}",
            std::fs::read_to_string(dir.path().join("agent.log")).unwrap_or_default()
        );
    };
    get(&format!("http://{web_ip}/"));
    get("http://web-b.default.svc.cluster.local/");
    // kubectl exec reaches the joined node's pods, whose resolver is node B's.
    let resolv = c.ok(&["exec", "web-b", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    drop(agent);
}
