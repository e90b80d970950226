//! End-to-end tests of the pod network and the proxy inside network namespaces
//! made for the test (simulated nodes and pods). They need root, `ip` and `nft`;
//! without them they are skipped with a message. The host's own interfaces and
//! ruleset are never touched.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use navarch_network::cidr::Ipv4Cidr;
use navarch_network::exec::{in_netns, NodeNs};
use navarch_network::pod::{BridgeConfig, BridgeNetwork, HostPort, PodInfo, PodNetwork};
use navarch_network::proxy::{Proxier, ProxyConfig, ServicePortInfo};
use navarch_network::routes::sync_routes;

fn usable() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let tools = ["ip", "nft", "nsenter"].iter().all(|t| {
        Command::new(t)
            .arg("-V")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
            || Command::new(t).arg("--version").output().is_ok()
    });
    if !(root && tools) {
        eprintln!("skipping: needs root, ip, nft and nsenter");
    }
    root && tools
}

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A named network namespace deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        let name = format!(
            "navt{}-{tag}{}",
            std::process::id() % 100_000,
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let ok = Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip netns add {name}");
        Ns { name }
    }
    fn path(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
    fn node(&self) -> NodeNs {
        NodeNs::at(self.path())
    }
    fn sh(&self, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ip -n {} {args:?}: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// A TCP server in `ns` answering every connection with `reply` then closing.
fn serve(ns: &Ns, port: u16, reply: &'static str) {
    let l = in_netns(&ns.path(), move || TcpListener::bind(("0.0.0.0", port)))
        .unwrap()
        .unwrap();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            let _ = c.write_all(reply.as_bytes());
        }
    });
}

/// Connect from `ns` to `addr` and read the reply.
fn fetch(ns: &Ns, addr: SocketAddr) -> std::io::Result<String> {
    in_netns(&ns.path(), move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    })
    .unwrap()
}

fn pod(ns: &Ns, name: &str, host_ports: Vec<HostPort>) -> PodInfo {
    PodInfo {
        namespace: "default".into(),
        name: name.into(),
        uid: format!("uid-{}", ns.name),
        netns: ns.path(),
        host_ports,
    }
}

fn plugin(node: &Ns, cidr: &str, dir: &std::path::Path) -> BridgeNetwork {
    let mut cfg = BridgeConfig::new(cidr.parse().unwrap(), dir);
    cfg.node = node.node();
    BridgeNetwork::new(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pods_talk_on_a_node_and_across_nodes() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (n1, n2) = (Ns::new("n1"), Ns::new("n2"));
    // The "wire" between the two nodes.
    n1.sh(&[
        "link",
        "add",
        "wire",
        "type",
        "veth",
        "peer",
        "name",
        "wire",
        "netns",
        &n2.path().display().to_string(),
    ]);
    n1.sh(&["addr", "add", "192.168.77.1/24", "dev", "wire"]);
    n2.sh(&["addr", "add", "192.168.77.2/24", "dev", "wire"]);
    n1.sh(&["link", "set", "wire", "up"]);
    n2.sh(&["link", "set", "wire", "up"]);

    let net1 = plugin(&n1, "10.42.1.0/24", &dir.path().join("n1"));
    let net2 = plugin(&n2, "10.42.2.0/24", &dir.path().join("n2"));
    let (a1, a2, b1) = (Ns::new("a1"), Ns::new("a2"), Ns::new("b1"));
    let ip_a1 = net1.setup(&pod(&a1, "a1", vec![])).await.unwrap();
    let ip_a2 = net1
        .setup(&pod(
            &a2,
            "a2",
            vec![HostPort {
                protocol: "tcp".into(),
                host_port: 8080,
                container_port: 80,
            }],
        ))
        .await
        .unwrap();
    let ip_b1 = net2.setup(&pod(&b1, "b1", vec![])).await.unwrap();
    assert_eq!(ip_a1.ip, "10.42.1.2".parse::<Ipv4Addr>().unwrap());
    assert_eq!(ip_a2.ip, "10.42.1.3".parse::<Ipv4Addr>().unwrap());
    assert_eq!(ip_b1.ip, "10.42.2.2".parse::<Ipv4Addr>().unwrap());
    // Setup is idempotent.
    assert_eq!(net1.setup(&pod(&a1, "a1", vec![])).await.unwrap(), ip_a1);

    serve(&a2, 80, "a2");
    serve(&b1, 80, "b1");
    serve(&a1, 80, "a1");
    // Same node, through the bridge.
    assert_eq!(fetch(&a1, SocketAddr::from((ip_a2.ip, 80))).unwrap(), "a2");
    // hostPort on the node's address, from the other node.
    let mut routes = BTreeMap::new();
    routes.insert(
        "10.42.2.0/24".parse::<Ipv4Cidr>().unwrap(),
        "192.168.77.2".parse().unwrap(),
    );
    sync_routes(&n1.node(), &routes).await.unwrap();
    let mut routes2 = BTreeMap::new();
    routes2.insert(
        "10.42.1.0/24".parse::<Ipv4Cidr>().unwrap(),
        "192.168.77.1".parse().unwrap(),
    );
    sync_routes(&n2.node(), &routes2).await.unwrap();
    assert_eq!(
        fetch(&n2, "192.168.77.1:8080".parse().unwrap()).unwrap(),
        "a2"
    );
    // Across nodes with the host routes, both ways.
    assert_eq!(fetch(&a1, SocketAddr::from((ip_b1.ip, 80))).unwrap(), "b1");
    assert_eq!(fetch(&b1, SocketAddr::from((ip_a1.ip, 80))).unwrap(), "a1");
    // Stale routes are removed.
    sync_routes(&n1.node(), &BTreeMap::new()).await.unwrap();
    let shown = n1
        .node()
        .run("ip", &["route", "show", "proto", "201"])
        .await
        .unwrap();
    assert!(shown.trim().is_empty(), "{shown}");

    // Teardown: the interface and the lease go, the hostPort too.
    net1.teardown(&format!("uid-{}", a2.name), Some(&a2.path()))
        .await
        .unwrap();
    assert!(net1.ipam().lease_of(&format!("uid-{}", a2.name)).is_none());
    let links = n1.node().run("ip", &["-o", "link"]).await.unwrap();
    assert!(
        !links.contains(&navarch_network::pod::host_veth_name(&format!(
            "uid-{}",
            a2.name
        )))
    );
    let inside = navarch_network::exec::run_in(Some(&a2.path()), "ip", &["-o", "link"], None)
        .await
        .unwrap();
    assert!(!inside.contains("eth0"), "{inside}");
    let rules = n1
        .node()
        .run("nft", &["list", "map", "ip", "navarch_pod", "hostports"])
        .await
        .unwrap();
    assert!(!rules.contains("8080"), "{rules}");
    // Teardown twice is fine.
    net1.teardown(&format!("uid-{}", a2.name), None)
        .await
        .unwrap();
}

fn svc_port(eps: &[(Ipv4Addr, u16)], affinity: bool) -> ServicePortInfo {
    ServicePortInfo {
        key: "default/web:http".into(),
        vips: vec!["10.43.0.50".parse().unwrap()],
        protocol: "tcp".into(),
        port: 80,
        node_port: Some(30080),
        affinity_timeout: affinity.then_some(600),
        endpoints: eps.to_vec(),
    }
}

fn seen(client: &Ns, addr: &str, tries: usize) -> BTreeSet<String> {
    let addr: SocketAddr = addr.parse().unwrap();
    (0..tries)
        .map(|_| fetch(client, addr).unwrap_or_else(|e| format!("error: {e}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_balances_updates_rejects_and_keeps_affinity() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("pn");
    let net = plugin(&node, "10.42.5.0/24", dir.path());
    let (a, b, client) = (Ns::new("pa"), Ns::new("pb"), Ns::new("pc"));
    let ip_a = net.setup(&pod(&a, "a", vec![])).await.unwrap().ip;
    let ip_b = net.setup(&pod(&b, "b", vec![])).await.unwrap().ip;
    net.setup(&pod(&client, "c", vec![])).await.unwrap();
    serve(&a, 8080, "a");
    serve(&b, 8080, "b");

    let mut proxier = Proxier::new(ProxyConfig {
        node: node.node(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        service_route: Some(("10.43.0.0/16".parse().unwrap(), "navarch0".into())),
        local_dns: None,
    });
    let mut all = BTreeMap::new();
    all.insert(
        "default/web".to_string(),
        vec![svc_port(&[(ip_a, 8080), (ip_b, 8080)], false)],
    );
    proxier.full_sync(all).await.unwrap();

    let want: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
    // ClusterIP from a pod: both backends over 100 tries.
    assert_eq!(seen(&client, "10.43.0.50:80", 100), want);
    // From the node itself (output chain).
    assert_eq!(seen(&node, "10.43.0.50:80", 40), want);
    // NodePort on a node address.
    assert_eq!(seen(&client, "10.42.5.1:30080", 40), want);
    // Hairpin: a backend reaching itself through the service.
    assert_eq!(seen(&a, "10.43.0.50:80", 40), want);

    // One endpoint left: one transaction, only that one answers.
    let mut ch = BTreeMap::new();
    ch.insert(
        "default/web".to_string(),
        vec![svc_port(&[(ip_b, 8080)], false)],
    );
    proxier.update(ch).await.unwrap();
    assert_eq!(seen(&client, "10.43.0.50:80", 20), ["b".to_string()].into());

    // No endpoints: rejected at once (connection refused), not a timeout.
    let mut ch = BTreeMap::new();
    ch.insert("default/web".to_string(), vec![svc_port(&[], false)]);
    proxier.update(ch).await.unwrap();
    let started = std::time::Instant::now();
    let err = fetch(&client, "10.43.0.50:80".parse().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(started.elapsed() < Duration::from_secs(1));
    let err = fetch(&node, "10.42.5.1:30080".parse().unwrap()).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");

    // Session affinity: one client sticks to one backend.
    let mut ch = BTreeMap::new();
    ch.insert(
        "default/web".to_string(),
        vec![svc_port(&[(ip_a, 8080), (ip_b, 8080)], true)],
    );
    proxier.update(ch).await.unwrap();
    assert_eq!(seen(&client, "10.43.0.50:80", 30).len(), 1);

    // Removed: nothing of it stays in the table.
    let mut ch = BTreeMap::new();
    ch.insert("default/web".to_string(), vec![]);
    proxier.update(ch).await.unwrap();
    assert_eq!(proxier.programmed_ports(), 0);
    let table = node
        .node()
        .run("nft", &["list", "table", "ip", "navarch"])
        .await
        .unwrap();
    assert!(
        !table.contains("chain svc_")
            && !table.contains("chain ep_")
            && !table.contains("set af_")
            && !table.contains("10.43.0.50"),
        "{table}"
    );
}

/// Issue 5's rule-update target: with 1,000 services × 10 endpoints
/// programmed, one endpoint change is in the kernel within 100 ms.
/// `cargo test -p navarch-network --test netns -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "scale measurement (several seconds)"]
async fn proxy_update_latency_at_scale() {
    if !usable() {
        return;
    }
    let node = Ns::new("ps");
    let mut proxier = Proxier::new(ProxyConfig {
        node: node.node(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        service_route: None,
        local_dns: None,
    });
    let port = |i: u32, eps: u32| ServicePortInfo {
        key: format!("default/svc-{i}:http"),
        vips: vec![Ipv4Addr::from(0x0a2b_0000 + i + 20)],
        protocol: "tcp".into(),
        port: 80,
        node_port: Some(30000 + i as u16),
        affinity_timeout: None,
        endpoints: (0..eps)
            .map(|e| (Ipv4Addr::from(0x0a2a_0000 + i * 10 + e), 8080))
            .collect(),
    };
    let all: BTreeMap<String, Vec<ServicePortInfo>> = (0..1000)
        .map(|i| (format!("default/svc-{i}"), vec![port(i, 10)]))
        .collect();
    let t = std::time::Instant::now();
    proxier.full_sync(all).await.unwrap();
    println!(
        "full sync of 1000 services x 10 endpoints: {:?}",
        t.elapsed()
    );
    let mut worst = Duration::ZERO;
    for i in 0..10 {
        let mut ch = BTreeMap::new();
        ch.insert(format!("default/svc-{i}"), vec![port(i, 9)]);
        let t = std::time::Instant::now();
        proxier.update(ch).await.unwrap();
        worst = worst.max(t.elapsed());
    }
    println!("endpoint change → in kernel: worst of 10 = {worst:?}");
    assert!(worst < Duration::from_millis(100), "{worst:?}");
}

/// A pod asks the cluster DNS at 10.43.0.10 (DNATed to the node's own server
/// on the bridge address): A, SRV, NXDOMAIN over UDP and TCP, and a forwarded
/// name answered by an upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_resolves_through_the_cluster_dns_service_ip() {
    use navarch_network::dns::wire::{
        build_query, decode_response, RCODE_NXDOMAIN, TYPE_A, TYPE_SRV,
    };
    use navarch_network::dns::zone::PortRecord;
    use navarch_network::dns::{DnsServer, Handler, ServiceRecord, Zone};
    use std::sync::Arc;

    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("dn");
    let net = plugin(&node, "10.42.6.0/24", dir.path());
    let client = Ns::new("dc");
    net.setup(&pod(&client, "c", vec![])).await.unwrap();

    // An upstream for other names (in the test's own namespace, on loopback).
    let mut up = Zone::new("example.org");
    up.upsert("x", "y", ServiceRecord::default());
    let upstream = DnsServer::bind(
        "127.0.0.1:0".parse().unwrap(),
        Handler::new(Arc::new(parking_lot::RwLock::new(up)), vec![]),
    )
    .await
    .unwrap();
    let (up_addr, _) = upstream.local_addrs().unwrap();
    tokio::spawn(upstream.serve());

    let mut zone = Zone::new("cluster.local");
    zone.upsert(
        "default",
        "web",
        ServiceRecord {
            cluster_ips: vec!["10.43.0.5".parse().unwrap()],
            ports: vec![PortRecord {
                name: "http".into(),
                protocol: "tcp".into(),
                port: 80,
            }],
            ..Default::default()
        },
    );
    let handler = Handler::new(Arc::new(parking_lot::RwLock::new(zone)), vec![up_addr]);
    let (udp, tcp) = in_netns(&node.path(), || {
        (
            std::net::UdpSocket::bind("10.42.6.1:53").unwrap(),
            TcpListener::bind("10.42.6.1:53").unwrap(),
        )
    })
    .unwrap();
    tokio::spawn(DnsServer::from_std(udp, tcp, handler).unwrap().serve());

    let mut proxier = Proxier::new(ProxyConfig {
        node: node.node(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        service_route: Some(("10.43.0.0/16".parse().unwrap(), "navarch0".into())),
        local_dns: Some(("10.43.0.10".parse().unwrap(), "10.42.6.1".parse().unwrap())),
    });
    // The API's kube-dns Service without endpoints must not shadow the local DNS.
    let mut all = BTreeMap::new();
    all.insert(
        "kube-system/kube-dns".to_string(),
        vec![ServicePortInfo {
            key: "kube-system/kube-dns:dns".into(),
            vips: vec!["10.43.0.10".parse().unwrap()],
            protocol: "udp".into(),
            port: 53,
            node_port: None,
            affinity_timeout: None,
            endpoints: vec![],
        }],
    );
    proxier.full_sync(all).await.unwrap();

    let ask = |name: &'static str, qtype: u16| {
        in_netns(&client.path(), move || {
            let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
            s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            s.send_to(&build_query(42, name, qtype), "10.43.0.10:53")
                .unwrap();
            let mut buf = [0u8; 1500];
            let n = s.recv(&mut buf).unwrap();
            decode_response(&buf[..n]).unwrap()
        })
        .unwrap()
    };
    let d = ask("web.default.svc.cluster.local", TYPE_A);
    assert_eq!(d.answers[0].data, "10.43.0.5");
    let d = ask("_http._tcp.web.default.svc.cluster.local", TYPE_SRV);
    assert_eq!(d.answers[0].data, "0 100 80 web.default.svc.cluster.local");
    let d = ask("nope.default.svc.cluster.local", TYPE_A);
    assert_eq!(d.rcode, RCODE_NXDOMAIN);
    let d = ask("a.example.org", TYPE_A);
    assert_eq!(
        (d.rcode, d.aa),
        (RCODE_NXDOMAIN, true),
        "forwarded upstream"
    );
    // TCP through the same service IP.
    let d = in_netns(&client.path(), || {
        let mut s =
            TcpStream::connect_timeout(&"10.43.0.10:53".parse().unwrap(), Duration::from_secs(2))
                .unwrap();
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let q = build_query(43, "web.default.svc.cluster.local", TYPE_A);
        s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
        s.write_all(&q).unwrap();
        let mut len = [0u8; 2];
        s.read_exact(&mut len).unwrap();
        let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
        s.read_exact(&mut buf).unwrap();
        decode_response(&buf).unwrap()
    })
    .unwrap();
    assert_eq!(d.answers[0].data, "10.43.0.5");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn teardown_node_removes_bridge_tables_routes_and_veths() {
    if !usable() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let node = Ns::new("tn");
    let net = plugin(&node, "10.42.7.0/24", dir.path());
    let p = Ns::new("tp");
    net.setup(&pod(&p, "a", vec![])).await.unwrap();
    let mut proxier = Proxier::new(ProxyConfig {
        node: node.node(),
        cluster_cidr: "10.42.0.0/16".parse().unwrap(),
        service_route: Some(("10.43.0.0/16".parse().unwrap(), "navarch0".into())),
        local_dns: None,
    });
    proxier.full_sync(BTreeMap::new()).await.unwrap();
    let mut routes = BTreeMap::new();
    routes.insert(
        "10.42.8.0/24".parse::<Ipv4Cidr>().unwrap(),
        "10.42.7.50".parse::<Ipv4Addr>().unwrap(),
    );
    sync_routes(&node.node(), &routes).await.unwrap();
    let show = |args: &[&str]| {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&node.name)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let nn = node.node();
    let tables = || nn.run("nft", &["list", "tables"]);
    assert!(show(&["link"]).contains("navarch0"));
    assert!(show(&["route"]).contains("10.42.8.0/24"));
    assert!(tables().await.unwrap().contains("navarch_pod"));

    navarch_network::host::teardown_node(&node.node(), "navarch0")
        .await
        .unwrap();
    let links = show(&["link"]);
    assert!(
        !links.contains("navarch0") && !links.contains("nv"),
        "{links}"
    );
    let r = show(&["route"]);
    assert!(!r.contains("10.42.") && !r.contains("10.43."), "{r}");
    assert!(!tables().await.unwrap().contains("navarch"));
    // Idempotent, and the pod's namespace lost its eth0.
    navarch_network::host::teardown_node(&node.node(), "navarch0")
        .await
        .unwrap();
    let inside = Command::new("ip")
        .args(["-n", &p.name, "link"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&inside.stdout).contains("eth0"));
}
