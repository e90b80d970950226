//! Pod networking end to end (issue 5's "Done means"): a real `navarch server`
//! whose node runs the bridge pod network (the default), driven with the real
//! `kubectl`, pods of the busybox test image (`wget`, `nc`, `httpd`).
//!
//! Only one node per host can run the bridge network, so every test here takes
//! the host-wide network test lock (`Cluster::start_with_network`) and the tests
//! run one after the other. Without root, `ip`, `nft` or `nsenter` they are
//! skipped with the reason printed.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{eventually, navarch_bin, Cluster, TEST_IMAGE};

const MINUTE: Duration = Duration::from_secs(60);

/// A pod running busybox httpd on port 80 that serves its own host name.
fn web_pod(name: &str, labels: &str, extra_container_fields: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{{labels}}}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: web
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
    ports: [{{containerPort: 80}}]
{extra_container_fields}"#
    )
}

fn sleeper(name: &str) -> String {
    format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: c
    image: {TEST_IMAGE}
    command: ["sleep", "3600"]
"#
    )
}

fn wait_running(c: &Cluster, pod: &str) {
    c.wait_for(
        &["get", "pod", pod, "-o", "jsonpath={.status.phase}"],
        MINUTE,
        |s| s == "Running",
    );
}

fn wait_ready(c: &Cluster, pod: &str) {
    c.wait_for(
        &[
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ],
        MINUTE,
        |s| s == "True",
    );
}

fn jsonpath(c: &Cluster, args: &[&str], path: &str) -> String {
    let mut all: Vec<&str> = args.to_vec();
    let p = format!("jsonpath={path}");
    all.extend(["-o", &p]);
    c.ok(&all).trim().to_string()
}

/// `kubectl exec <pod> -- sh -c <script>`; stdout, or a panic with everything.
fn sh(c: &Cluster, pod: &str, script: &str) -> String {
    c.ok(&["exec", pod, "--", "sh", "-c", script])
}

/// Retry a shell command in a pod until its output satisfies `pred` (rules and
/// DNS records follow the API a moment later).
fn sh_until(c: &Cluster, pod: &str, script: &str, pred: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(30), || {
        let out = c.kubectl(&["exec", pod, "--", "sh", "-c", script]);
        last = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        pred(&last).then_some(())
    });
    assert!(
        ok.is_some(),
        "`{script}` in {pod}: last output {last:?}\nserver log tail:\n{}",
        tail(&c.log())
    );
    last
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A plain HTTP/1.0 GET from the test process; the body, or None.
fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    let (head, body) = buf.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_string())
}

fn node_internal_ip(c: &Cluster) -> String {
    jsonpath(
        c,
        &["get", "nodes"],
        "{.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
    )
}

#[test]
fn pods_reach_pods_services_by_name_nodeports_and_port_forward() {
    let Some(c) = Cluster::start_with_network(&[]) else {
        return;
    };
    c.apply(&web_pod("web", "app: web", ""));
    c.apply(&sleeper("client"));
    c.apply(
        r#"apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 80}]
"#,
    );
    wait_running(&c, "web");
    wait_running(&c, "client");

    // Pod IPs come from the node's podCIDR (10.42.0.0/24 on a fresh cluster).
    let pod_cidr = jsonpath(&c, &["get", "nodes"], "{.items[0].spec.podCIDR}");
    assert_eq!(pod_cidr, "10.42.0.0/24");
    let web_ip = jsonpath(&c, &["get", "pod", "web"], "{.status.podIP}");
    let client_ip = jsonpath(&c, &["get", "pod", "client"], "{.status.podIP}");
    for ip in [&web_ip, &client_ip] {
        assert!(ip.starts_with("10.42.0."), "pod IP {ip} not in {pod_cidr}");
    }
    assert_ne!(web_ip, client_ip);
    let host_ip = jsonpath(&c, &["get", "pod", "web"], "{.status.hostIP}");
    assert_eq!(host_ip, node_internal_ip(&c));

    // Pod to pod by IP. (busybox wget crashes with -T: timeouts come from `timeout`.)
    // Running does not mean httpd listens yet: retry until it answers.
    let page = sh_until(
        &c,
        "client",
        &format!("timeout 10 wget -qO- http://{web_ip}/"),
        |out| out.trim() == "web",
    );
    assert_eq!(page.trim(), "web");

    // The cluster resolver in the pod's resolv.conf.
    let resolv = c.ok(&["exec", "web", "--", "cat", "/etc/resolv.conf"]);
    assert!(resolv.contains("nameserver 10.43.0.10"), "{resolv}");
    assert!(
        resolv.contains("search default.svc.cluster.local svc.cluster.local cluster.local"),
        "{resolv}"
    );
    assert!(resolv.contains("options ndots:5"), "{resolv}");

    // A Service by its full name and by its short name (search path).
    let page = sh_until(
        &c,
        "client",
        "timeout 10 wget -qO- http://web.default.svc.cluster.local",
        |s| s.trim() == "web",
    );
    assert_eq!(page.trim(), "web");
    let page = sh(&c, "client", "timeout 10 wget -qO- http://web");
    assert_eq!(page.trim(), "web");
    let lookup = sh(&c, "client", "nslookup web.default.svc.cluster.local");
    let cluster_ip = jsonpath(&c, &["get", "svc", "web"], "{.spec.clusterIP}");
    assert!(lookup.contains(&cluster_ip), "{lookup}");

    // Service environment variables.
    let env = sh(&c, "client", "echo $KUBERNETES_SERVICE_HOST");
    assert_eq!(env.trim(), "10.43.0.1");

    // The NodePort answers on the node's address, from the host.
    let node_port = jsonpath(&c, &["get", "svc", "web"], "{.spec.ports[0].nodePort}");
    let addr = format!("{}:{node_port}", node_internal_ip(&c));
    let got = eventually(Duration::from_secs(20), || http_get(&addr, "/"));
    assert_eq!(
        got.as_deref().map(str::trim),
        Some("web"),
        "NodePort {addr}"
    );

    // kubectl port-forward, then a GET on localhost.
    let local = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let mut pf = c
        .kubectl_cmd()
        .args(["port-forward", "pod/web", &format!("{local}:80")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl port-forward");
    let got = eventually(Duration::from_secs(20), || {
        http_get(&format!("127.0.0.1:{local}"), "/")
    });
    let _ = pf.kill();
    let _ = pf.wait();
    assert_eq!(got.as_deref().map(str::trim), Some("web"), "port-forward");
}

#[test]
fn three_replicas_share_300_requests_and_a_not_ready_pod_gets_none() {
    let Some(c) = Cluster::start_with_network(&[]) else {
        return;
    };
    c.apply(&format!(
        r#"apiVersion: apps/v1
kind: Deployment
metadata: {{name: web}}
spec:
  replicas: 3
  selector: {{matchLabels: {{app: web}}}}
  template:
    metadata: {{labels: {{app: web}}}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: web
        image: {TEST_IMAGE}
        command: ["sh", "-c", "mkdir -p /www && hostname > /www/index.html && exec httpd -f -p 80 -h /www"]
        readinessProbe:
          tcpSocket: {{port: 80}}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {{name: web}}
spec:
  selector: {{app: web}}
  ports: [{{port: 80}}]
"#
    ));
    // Selected by the Service, serving, but never Ready.
    c.apply(&web_pod(
        "notready",
        "app: web",
        "    readinessProbe:\n      exec: {command: [\"false\"]}\n      periodSeconds: 1\n",
    ));
    c.apply(&sleeper("client"));
    c.wait_for(
        &[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.status.readyReplicas}",
        ],
        MINUTE,
        |s| s == "3",
    );
    wait_running(&c, "client");
    wait_running(&c, "notready");
    let not_ready_ip = jsonpath(&c, &["get", "pod", "notready"], "{.status.podIP}");
    // The not-ready pod serves when asked directly...
    let direct = sh_until(
        &c,
        "client",
        &format!("timeout 10 wget -qO- http://{not_ready_ip}/"),
        |s| s.trim() == "notready",
    );
    assert_eq!(direct.trim(), "notready");
    // ...but is left out of the endpoints.
    c.wait_for(
        &[
            "get",
            "endpoints",
            "web",
            "-o",
            "jsonpath={.subsets[*].addresses[*].ip}",
        ],
        MINUTE,
        |s| s.split_whitespace().count() == 3,
    );
    let ready_ips = jsonpath(
        &c,
        &["get", "endpoints", "web"],
        "{.subsets[*].addresses[*].ip}",
    );
    assert!(!ready_ips.contains(&not_ready_ip), "{ready_ips}");
    let not_ready = jsonpath(
        &c,
        &["get", "endpoints", "web"],
        "{.subsets[*].notReadyAddresses[*].ip}",
    );
    assert!(not_ready.contains(&not_ready_ip), "{not_ready}");

    // Wait until the proxy has all three backends, then send 300 requests.
    let backends: Vec<String> = c
        .ok(&["get", "pods", "-l", "app=web", "-o", "name"])
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .filter(|n| n != "notready")
        .collect();
    assert_eq!(backends.len(), 3, "{backends:?}");
    sh_until(
        &c,
        "client",
        "for i in $(seq 30); do timeout 5 wget -qO- http://web; done | sort -u",
        |s| s.lines().filter(|l| !l.trim().is_empty()).count() == 3,
    );
    let out = sh(
        &c,
        "client",
        "for i in $(seq 300); do timeout 5 wget -qO- http://web || echo FAILED; done",
    );
    let answers: Vec<&str> = out.lines().map(str::trim).collect();
    assert_eq!(answers.len(), 300, "{out}");
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for a in &answers {
        *counts.entry(a).or_default() += 1;
    }
    assert!(!counts.contains_key("FAILED"), "{counts:?}");
    assert!(!counts.contains_key("notready"), "{counts:?}");
    for b in &backends {
        let n = counts.get(b.as_str()).copied().unwrap_or(0);
        // Random balancing: each of 3 gets ~100; 40 is far in the tail.
        assert!(n >= 40, "backend {b} got {n} of 300: {counts:?}");
    }
}

#[test]
fn multi_container_pods_share_localhost_and_volumes() {
    let Some(c) = Cluster::start_with_network(&[]) else {
        return;
    };
    // Sidecar: the app writes into a shared emptyDir, the sidecar serves it.
    // Ambassador: the app talks to localhost, where the ambassador container
    // listens. Adapter: the app writes its own log format, the adapter
    // rewrites it into another file of the shared volume.
    c.apply(&format!(
        r#"apiVersion: v1
kind: Pod
metadata: {{name: patterns, labels: {{app: patterns}}}}
spec:
  terminationGracePeriodSeconds: 1
  volumes:
  - name: shared
    emptyDir: {{}}
  containers:
  - name: app
    image: {TEST_IMAGE}
    command: ["sh", "-c", "i=0; while true; do i=$((i+1)); echo \"$i app-line\" > /shared/index.html; echo \"raw $i\" >> /shared/app.log; sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: sidecar
    image: {TEST_IMAGE}
    command: ["httpd", "-f", "-p", "80", "-h", "/shared"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
  - name: ambassador
    image: {TEST_IMAGE}
    command: ["sh", "-c", "mkdir -p /amb && echo ambassador-says-hi > /amb/index.html && exec httpd -f -p 127.0.0.1:9000 -h /amb"]
  - name: adapter
    image: {TEST_IMAGE}
    command: ["sh", "-c", "while true; do sed 's/^raw /ADAPTED /' /shared/app.log > /shared/adapted.tmp 2>/dev/null && mv /shared/adapted.tmp /shared/adapted.log; sleep 1; done"]
    volumeMounts: [{{name: shared, mountPath: /shared}}]
"#
    ));
    c.apply(&sleeper("client"));
    wait_ready(&c, "patterns");
    wait_running(&c, "client");
    // Shared localhost: the app container reaches the sidecar and the
    // ambassador on 127.0.0.1.
    let from_app = sh_until(
        &c,
        "patterns",
        "timeout 10 wget -qO- http://127.0.0.1:80/index.html",
        |s| s.contains("app-line"),
    );
    assert!(from_app.contains("app-line"), "{from_app}");
    let amb = c.ok(&[
        "exec",
        "patterns",
        "-c",
        "app",
        "--",
        "timeout",
        "10",
        "wget",
        "-qO-",
        "http://localhost:9000/",
    ]);
    assert_eq!(amb.trim(), "ambassador-says-hi");
    // The ambassador listens on loopback only: not reachable from another pod.
    let ip = jsonpath(&c, &["get", "pod", "patterns"], "{.status.podIP}");
    let out = c.kubectl(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        &format!("timeout 5 nc -w 2 {ip} 9000 </dev/null && echo OPEN || echo CLOSED"),
    ]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("CLOSED"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    // The sidecar serves the app's file to other pods through the pod IP.
    let page = sh_until(
        &c,
        "client",
        &format!("timeout 10 wget -qO- http://{ip}/"),
        |out| out.contains("app-line"),
    );
    assert!(page.contains("app-line"), "{page}");
    // The adapter's output, read from the app container's mount.
    let adapted = sh_until(&c, "patterns", "cat /shared/adapted.log", |s| {
        s.contains("ADAPTED 1")
    });
    assert!(!adapted.contains("raw "), "{adapted}");
}

#[test]
fn exhausted_pod_cidr_leaves_the_pod_pending_with_an_event() {
    // A /30 per node: .1 is the bridge, one address (.2) for pods.
    let Some(c) = Cluster::start_with_network(&["--node-cidr-mask-size", "30"]) else {
        return;
    };
    let cidr = jsonpath(&c, &["get", "nodes"], "{.items[0].spec.podCIDR}");
    assert_eq!(cidr, "10.42.0.0/30");
    c.apply(&sleeper("first"));
    wait_running(&c, "first");
    assert_eq!(
        jsonpath(&c, &["get", "pod", "first"], "{.status.podIP}"),
        "10.42.0.2"
    );
    c.apply(&sleeper("second"));
    let msg = c.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=second,reason=FailedCreatePodSandBox",
            "-o",
            "jsonpath={.items[*].message}",
        ],
        MINUTE,
        |s| !s.is_empty(),
    );
    assert!(
        msg.contains("no free address left in 10.42.0.0/30"),
        "{msg}"
    );
    // Pending, ContainerCreating, no IP; and it stays so (retried, not started).
    std::thread::sleep(Duration::from_secs(4));
    assert_eq!(
        jsonpath(&c, &["get", "pod", "second"], "{.status.phase}"),
        "Pending"
    );
    assert_eq!(
        jsonpath(
            &c,
            &["get", "pod", "second"],
            "{.status.containerStatuses[0].state.waiting.reason}"
        ),
        "ContainerCreating"
    );
    assert_eq!(
        jsonpath(&c, &["get", "pod", "second"], "{.status.podIP}"),
        ""
    );
    let count = jsonpath(
        &c,
        &[
            "get",
            "events",
            "--field-selector",
            "involvedObject.name=second,reason=FailedCreatePodSandBox",
        ],
        "{.items[0].count}",
    );
    assert!(
        count.parse::<u32>().unwrap_or(0) >= 2,
        "retried: count {count}"
    );
    // The node and the first pod are fine.
    assert_eq!(
        jsonpath(&c, &["get", "pod", "first"], "{.status.phase}"),
        "Running"
    );
    // Freeing the address lets the waiting pod start.
    c.ok(&["delete", "pod", "first", "--wait=true"]);
    wait_running(&c, "second");
    assert_eq!(
        jsonpath(&c, &["get", "pod", "second"], "{.status.podIP}"),
        "10.42.0.2"
    );
}

fn host_has_pod_network() -> (bool, bool) {
    let bridge = Command::new("ip")
        .args(["link", "show", "navarch0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let tables = Command::new("nft")
        .args(["list", "tables"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).contains("navarch"))
        .unwrap_or(false);
    (bridge, tables)
}

#[test]
fn one_bridge_node_per_host_restart_keeps_pods_and_reset_cleans_up() {
    let Some(mut c) = Cluster::start_with_network(&[]) else {
        return;
    };
    c.apply(&web_pod("web", "app: web", ""));
    wait_running(&c, "web");
    let ip = jsonpath(&c, &["get", "pod", "web"], "{.status.podIP}");
    assert_eq!(host_has_pod_network(), (true, true));

    // A second server wanting the bridge on this host fails fast and says why.
    let other = tempfile::tempdir().expect("tmp");
    let out = Command::new(navarch_bin())
        .args(["server", "--bind-address", "127.0.0.1", "--https-port", "0"])
        .args(["--agent-port", "0", "--data-dir"])
        .arg(other.path())
        .output()
        .expect("second server");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--pod-network=none"), "{err}");
    Cluster::reset_node(other.path());
    assert_eq!(
        host_has_pod_network(),
        (true, true),
        "reset of another data dir"
    );

    // A crash and restart on the same data dir keeps the bridge and the pod's
    // network: it still answers on its IP.
    c.restart();
    wait_running(&c, "web");
    assert_eq!(jsonpath(&c, &["get", "pod", "web"], "{.status.podIP}"), ip);
    let got = eventually(Duration::from_secs(20), || {
        http_get(&format!("{ip}:80"), "/")
    });
    assert_eq!(got.as_deref().map(str::trim), Some("web"));

    // Stop + reset: bridge, tables, veths and routes are gone.
    c.stop();
    Cluster::reset_node(c.data_dir());
    assert_eq!(host_has_pod_network(), (false, false));
    let routes = Command::new("ip")
        .args(["route", "show"])
        .output()
        .expect("ip route");
    let routes = String::from_utf8_lossy(&routes.stdout).into_owned();
    assert!(
        !routes.contains("10.42.") && !routes.contains("10.43."),
        "{routes}"
    );
}
