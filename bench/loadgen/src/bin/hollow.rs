//! End-to-end scheduler benchmark with hollow nodes (issue 4, "Speed").
//!
//! Drives a running `navarch server --disable-agent` over HTTPS/2 and plays
//! every part a real cluster would add around the scheduler:
//!
//! - registers N hollow Node objects (capacity, allocatable, Ready condition)
//!   and renews one Lease per node in `kube-node-lease`, spread evenly over
//!   `--lease-renew-secs`, so the node lifecycle controller keeps them Ready;
//! - acts as all the hollow kubelets at once: one cluster-wide pod watch, and
//!   for every pod bound to a node a `pods/<name>/status` merge patch making
//!   it Running and Ready (bounded concurrency);
//! - creates the workload of each phase and measures it through that watch:
//!   `plain` and `anti` (bare pods with requests, the second with required pod
//!   anti-affinity by hostname in groups of 10) give pods bound per second from
//!   the first create to the last binding seen; `deploy` creates a Deployment
//!   and times it to `status.readyReplicas == replicas`.
//!
//! Prints `name value` lines (`bench/hollow/run.sh` annotates them with goals).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use navarch_loadgen::client::{status_error, tls_config};
use navarch_loadgen::hist::Histogram;
use navarch_loadgen::{Error, Protocol};
use rustls::pki_types::ServerName;
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_rustls::TlsConnector;

/// kube-scheduler's scheduler_perf CI thresholds at 5,000 nodes (pods/s), from
/// `test/integration/scheduler_perf/{misc,affinity}/performance-config.yaml`;
/// its published 5,000-node throughput is in the low hundreds of pods/s.
const UPSTREAM_BASIC: f64 = 680.0;
const UPSTREAM_ANTI: f64 = 60.0;

const LEASE_NS: &str = "kube-node-lease";
const MERGE_PATCH: &str = "application/merge-patch+json";
const JSON: &str = "application/json";

#[derive(Parser, Debug)]
#[command(
    name = "hollow",
    about = "End-to-end scheduler benchmark with hollow nodes"
)]
struct Args {
    /// Server address (host:port).
    #[arg(long)]
    addr: SocketAddr,
    /// Directory holding ca.crt, admin.crt and admin.key.
    #[arg(long)]
    pki: PathBuf,
    /// Hollow nodes to register.
    #[arg(long, default_value_t = 5000)]
    nodes: usize,
    /// Bare pods per throughput phase.
    #[arg(long, default_value_t = 10_000)]
    pods: usize,
    /// Replicas of the Deployment phase.
    #[arg(long, default_value_t = 1000)]
    replicas: usize,
    /// Comma-separated phases: plain, anti, deploy.
    #[arg(long, default_value = "plain,anti,deploy")]
    phases: String,
    /// HTTP/2 connections for requests (the watch has its own).
    #[arg(long, default_value_t = 8)]
    conns: usize,
    /// Creates in flight.
    #[arg(long, default_value_t = 64)]
    create_concurrency: usize,
    /// Hollow-kubelet status patches in flight.
    #[arg(long, default_value_t = 32)]
    status_concurrency: usize,
    /// Every node's Lease is renewed once per this many seconds.
    #[arg(long, default_value_t = 20)]
    lease_renew_secs: u64,
    /// A phase gives up after this long.
    #[arg(long, default_value_t = 120)]
    phase_timeout_secs: u64,
    /// Before the first phase, wait until node IPAM gave every node a podCIDR.
    #[arg(long)]
    wait_pod_cidrs: bool,
    /// Processes whose RSS is sampled, as `label:pid` (e.g. `server:1234`).
    #[arg(long = "rss")]
    rss: Vec<String>,
}

// ---------------------------------------------------------------- objects

/// RFC 3339 UTC with microseconds (`MicroTime`), from a system time.
fn rfc3339_micros(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, day) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60,
        d.subsec_micros()
    )
}

/// RFC 3339 UTC with whole seconds (`Time`).
fn rfc3339_secs(t: SystemTime) -> String {
    let s = rfc3339_micros(t);
    format!("{}Z", &s[..19])
}

/// (year, month, day) of a day count since 1970-01-01 (proleptic Gregorian).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn node_name(i: usize) -> String {
    format!("hollow-{i:05}")
}

/// A fake IPv4 address in `base`.0.0.0/8 for index `i`.
fn fake_ip(base: u8, i: usize) -> String {
    format!("{base}.{}.{}.{}", (i >> 16) & 255, (i >> 8) & 255, i & 255)
}

/// A hollow Node: 4 CPUs, 32 GiB, 110 pods, Ready, three zones.
fn node(i: usize, now: &str) -> Value {
    let name = node_name(i);
    let res = json!({"cpu": "4", "memory": "32Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    let cond = |t: &str, s: &str, reason: &str| {
        json!({"type": t, "status": s, "reason": reason, "message": "hollow kubelet",
               "lastHeartbeatTime": now, "lastTransitionTime": now})
    };
    json!({
        "apiVersion": "v1", "kind": "Node",
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3),
            "navarch.io/hollow": "true"}},
        "spec": {},
        "status": {
            "capacity": res, "allocatable": res,
            "conditions": [
                cond("MemoryPressure", "False", "KubeletHasSufficientMemory"),
                cond("DiskPressure", "False", "KubeletHasNoDiskPressure"),
                cond("PIDPressure", "False", "KubeletHasSufficientPID"),
                cond("Ready", "True", "KubeletReady"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": fake_ip(10, i)},
                {"type": "Hostname", "address": name}],
            "nodeInfo": {
                "architecture": "amd64", "bootID": "hollow", "containerRuntimeVersion": "hollow://0",
                "kernelVersion": "hollow", "kubeProxyVersion": "", "kubeletVersion": "v1.33.0-hollow",
                "machineID": name, "operatingSystem": "linux", "osImage": "hollow",
                "systemUUID": name},
        },
    })
}

/// The Lease a kubelet keeps for its node.
fn lease(node: &str, now: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": node, "namespace": LEASE_NS},
        "spec": {"holderIdentity": node, "leaseDurationSeconds": 40,
                 "acquireTime": now, "renewTime": now},
    })
}

/// The pod spec every benchmark pod uses (scheduler_perf's pause pod with requests).
fn pod_spec() -> Value {
    json!({
        "terminationGracePeriodSeconds": 0,
        "containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}],
    })
}

/// Bare pod `i` of a throughput phase; with `anti`, labelled `color=g<i/10>` and
/// required to avoid same-colour pods on its node.
fn bare_pod(i: usize, anti: bool) -> Value {
    let mut v = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("pod-{i}"), "labels": {"app": "hollow-bench"}},
        "spec": pod_spec(),
    });
    if anti {
        let color = format!("g{}", i / 10);
        v["metadata"]["labels"]["color"] = json!(color);
        v["spec"]["affinity"] = json!({"podAntiAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": [{
                "labelSelector": {"matchLabels": {"color": color}},
                "topologyKey": "kubernetes.io/hostname"}]}});
    }
    v
}

/// A Deployment of `replicas` pause pods with requests.
fn deployment(name: &str, replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec()},
        },
    })
}

/// What a kubelet reports once a pod's containers run: phase Running, every
/// condition True, one running and ready status per container.
fn running_status_patch(
    containers: &[(String, String)],
    host_ip: &str,
    pod_ip: &str,
    now: &str,
) -> Value {
    let cond = |t: &str| json!({"type": t, "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
    let statuses: Vec<Value> = containers
        .iter()
        .map(|(name, image)| {
            json!({"name": name, "image": image, "imageID": "", "ready": true, "started": true,
                   "restartCount": 0, "state": {"running": {"startedAt": now}}})
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": host_ip, "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip, "podIPs": [{"ip": pod_ip}],
        "startTime": now,
        "conditions": [cond("PodReadyToStartContainers"), cond("Initialized"), cond("Ready"),
                       cond("ContainersReady"), cond("PodScheduled")],
        "containerStatuses": statuses,
    }})
}

// ---------------------------------------------------------------- HTTP

/// A few HTTP/2 connections used round robin.
#[derive(Clone)]
struct Api {
    senders: Arc<Vec<http2::SendRequest<Full<Bytes>>>>,
    next: Arc<AtomicUsize>,
    authority: Arc<String>,
}

fn io_err(what: &str, source: std::io::Error) -> Error {
    Error::Io {
        what: what.to_string(),
        source,
    }
}

async fn connect_h2(
    addr: SocketAddr,
    connector: &TlsConnector,
) -> Result<http2::SendRequest<Full<Bytes>>, Error> {
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| io_err("connect", e))?;
    tcp.set_nodelay(true).map_err(|e| io_err("nodelay", e))?;
    let tls = connector
        .connect(ServerName::IpAddress(addr.ip().into()), tcp)
        .await
        .map_err(|e| io_err("TLS handshake", e))?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .initial_stream_window_size(4 << 20)
        .initial_connection_window_size(16 << 20)
        .handshake(TokioIo::new(tls))
        .await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Api {
    async fn connect(addr: SocketAddr, pki: &Path, conns: usize) -> Result<Api, Error> {
        let read = |f: &str| std::fs::read(pki.join(f)).map_err(|e| io_err(f, e));
        let cfg = tls_config(
            &read("ca.crt")?,
            &read("admin.crt")?,
            &read("admin.key")?,
            Protocol::Http2,
        )?;
        let connector = TlsConnector::from(Arc::new(cfg));
        let mut senders = Vec::new();
        for _ in 0..conns.max(1) {
            senders.push(connect_h2(addr, &connector).await?);
        }
        Ok(Api {
            senders: Arc::new(senders),
            next: Arc::new(AtomicUsize::new(0)),
            authority: Arc::new(addr.to_string()),
        })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Option<Bytes>,
    ) -> Result<hyper::Response<Incoming>, Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.senders.len();
        let mut s = self.senders[i].clone();
        let req = Request::builder()
            .method(method)
            .uri(format!("https://{}{}", self.authority, path))
            .header(hyper::header::ACCEPT, JSON)
            .header(hyper::header::CONTENT_TYPE, ctype)
            .body(Full::new(body.unwrap_or_default()))?;
        s.ready().await?;
        Ok(s.send_request(req).await?)
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let resp = self.send(method, path, ctype, body).await?;
        let status = resp.status();
        Ok((status, resp.into_body().collect().await?.to_bytes()))
    }

    /// A call that must succeed (2xx), or fail with 409 when `exists_ok`;
    /// transport errors and 5xx/429 are retried a few times.
    async fn must(
        &self,
        method: Method,
        path: &str,
        ctype: &str,
        body: &Value,
        exists_ok: bool,
    ) -> Result<Bytes, Error> {
        let bytes = Bytes::from(serde_json::to_vec(body).unwrap_or_default());
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let res = self
                .call(method.clone(), path, ctype, Some(bytes.clone()))
                .await;
            match res {
                Ok((s, b)) if s.is_success() => return Ok(b),
                Ok((StatusCode::CONFLICT, b)) if exists_ok => return Ok(b),
                Ok((s, b))
                    if attempt >= 5
                        || !(s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS) =>
                {
                    return Err(status_error(&method, path, s, &b));
                }
                Err(e) if attempt >= 5 => return Err(e),
                _ => tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await,
            }
        }
    }

    async fn get_json(&self, path: &str) -> Result<Value, Error> {
        let (s, b) = self.call(Method::GET, path, JSON, None).await?;
        if !s.is_success() {
            return Err(status_error(&Method::GET, path, s, &b));
        }
        serde_json::from_slice(&b).map_err(|e| Error::Response(format!("{path}: {e}")))
    }
}

/// Run `count` jobs `job(i)` with at most `concurrency` in flight; returns failures
/// (and the first error).
async fn run_bounded<F, Fut>(count: usize, concurrency: usize, job: F) -> (u64, Option<String>)
where
    F: Fn(usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Error>> + Send,
{
    let job = Arc::new(job);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let first = Arc::new(Mutex::new(None::<String>));
    let mut workers = Vec::new();
    for _ in 0..concurrency.max(1).min(count.max(1)) {
        let (job, next, failed, first) = (job.clone(), next.clone(), failed.clone(), first.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    return;
                }
                if let Err(e) = job(i).await {
                    failed.fetch_add(1, Ordering::Relaxed);
                    if let Ok(mut f) = first.lock() {
                        f.get_or_insert_with(|| e.to_string());
                    }
                }
            }
        }));
    }
    for w in workers {
        let _ = w.await;
    }
    let first = first.lock().ok().and_then(|mut f| f.take());
    (failed.load(Ordering::Relaxed), first)
}

// ---------------------------------------------------------------- watch + hollow kubelets

/// What the pod watch has seen, per namespace.
#[derive(Default)]
struct NsPods {
    /// Pod name → when it was first seen bound.
    bound: HashMap<String, Instant>,
    /// Pod name → when it was first seen Running and Ready.
    ready: HashMap<String, Instant>,
    /// Pods that exist.
    live: HashSet<String>,
}

#[derive(Default)]
struct Tracker {
    ns: Mutex<HashMap<String, NsPods>>,
    /// Pod UIDs a status patch was started for.
    started: Mutex<HashSet<String>>,
    patches_ok: AtomicU64,
    patches_failed: AtomicU64,
    events: AtomicU64,
    pod_index: AtomicUsize,
}

/// The bits of a pod watch event the benchmark looks at.
#[derive(Debug, PartialEq)]
struct PodView {
    kind: String,
    namespace: String,
    name: String,
    uid: String,
    node: Option<String>,
    phase: String,
    ready: bool,
    deleting: bool,
    containers: Vec<(String, String)>,
    resource_version: String,
}

fn parse_event(line: &[u8]) -> Option<PodView> {
    let ev: Value = serde_json::from_slice(line).ok()?;
    let kind = ev.get("type")?.as_str()?.to_string();
    let o = ev.get("object")?;
    let s = |p: &str| {
        o.pointer(p)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let ready = o
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c["type"] == "Ready" && c["status"] == "True")
        });
    let containers = o
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    (
                        c["name"].as_str().unwrap_or("").to_string(),
                        c["image"].as_str().unwrap_or("").to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Some(PodView {
        kind,
        namespace: s("/metadata/namespace"),
        name: s("/metadata/name"),
        uid: s("/metadata/uid"),
        node: Some(s("/spec/nodeName")).filter(|n| !n.is_empty()),
        phase: s("/status/phase"),
        ready,
        deleting: o
            .pointer("/metadata/deletionTimestamp")
            .is_some_and(|v| !v.is_null()),
        containers,
        resource_version: s("/metadata/resourceVersion"),
    })
}

/// Whether a hollow kubelet should start this pod (make it Running).
fn needs_start(p: &PodView) -> bool {
    p.kind != "DELETED" && p.node.is_some() && !p.deleting && p.phase == "Pending"
}

impl Tracker {
    /// Record an event; returns whether the pod should be started.
    fn observe(&self, p: &PodView, now: Instant) -> bool {
        self.events.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut all) = self.ns.lock() {
            let ns = all.entry(p.namespace.clone()).or_default();
            if p.kind == "DELETED" {
                ns.live.remove(&p.name);
            } else {
                ns.live.insert(p.name.clone());
                if p.node.is_some() {
                    ns.bound.entry(p.name.clone()).or_insert(now);
                }
                if p.phase == "Running" && p.ready {
                    ns.ready.entry(p.name.clone()).or_insert(now);
                }
            }
        }
        if !needs_start(p) {
            return false;
        }
        self.started
            .lock()
            .map(|mut s| s.insert(p.uid.clone()))
            .unwrap_or(false)
    }

    fn with_ns<T>(&self, ns: &str, f: impl FnOnce(&NsPods) -> T) -> Option<T> {
        self.ns.lock().ok().and_then(|all| all.get(ns).map(f))
    }
}

/// The hollow kubelets: follow every pod in the cluster, start bound ones.
async fn kubelets(api: Api, tracker: Arc<Tracker>, status_sem: Arc<Semaphore>) {
    let mut rv = String::new();
    loop {
        if rv.is_empty() {
            match api.get_json("/api/v1/pods?limit=1").await {
                Ok(v) => {
                    rv = v
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string()
                }
                Err(e) => {
                    eprintln!("# hollow kubelets: list failed: {e}");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue;
                }
            }
        }
        let path = format!("/api/v1/pods?watch=true&allowWatchBookmarks=true&resourceVersion={rv}");
        let resp = match api.send(Method::GET, &path, JSON, None).await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                eprintln!("# hollow kubelets: watch answered {}", r.status());
                rv.clear();
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
            Err(e) => {
                eprintln!("# hollow kubelets: watch failed: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let mut body = resp.into_body();
        let mut buf: Vec<u8> = Vec::new();
        'stream: while let Some(frame) = body.frame().await {
            let Ok(frame) = frame else { break };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            let mut start = 0;
            while let Some(pos) = buf[start..].iter().position(|b| *b == b'\n') {
                let line = &buf[start..start + pos];
                start += pos + 1;
                let now = Instant::now();
                let Some(p) = parse_event(line) else { continue };
                if p.kind == "ERROR" {
                    rv.clear(); // expired: start again from now
                    break 'stream;
                }
                if !p.resource_version.is_empty() {
                    rv = p.resource_version.clone();
                }
                if p.kind == "BOOKMARK" || !tracker.observe(&p, now) {
                    continue;
                }
                let (api, tracker, sem) = (api.clone(), tracker.clone(), status_sem.clone());
                tokio::spawn(async move { start_pod(api, tracker, sem, p).await });
            }
            buf.drain(..start);
        }
    }
}

/// Patch one pod Running/Ready, as its hollow kubelet.
async fn start_pod(api: Api, tracker: Arc<Tracker>, sem: Arc<Semaphore>, p: PodView) {
    let Ok(_permit) = sem.acquire().await else {
        return;
    };
    let i = tracker.pod_index.fetch_add(1, Ordering::Relaxed);
    let node_idx = p
        .node
        .as_deref()
        .and_then(|n| n.strip_prefix("hollow-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let now = rfc3339_secs(SystemTime::now());
    let patch = running_status_patch(
        &p.containers,
        &fake_ip(10, node_idx),
        &fake_ip(100, i),
        &now,
    );
    let path = format!("/api/v1/namespaces/{}/pods/{}/status", p.namespace, p.name);
    match api
        .must(Method::PATCH, &path, MERGE_PATCH, &patch, false)
        .await
    {
        Ok(_) => {
            tracker.patches_ok.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => {
            tracker.patches_failed.fetch_add(1, Ordering::Relaxed);
            if !matches!(
                e,
                Error::Status {
                    status: StatusCode::NOT_FOUND,
                    ..
                }
            ) {
                eprintln!("# hollow kubelet: {path}: {e}");
            }
            if let Ok(mut s) = tracker.started.lock() {
                s.remove(&p.uid); // a later event may try again
            }
        }
    }
}

/// Renew every node's Lease once per `period`, spread evenly.
async fn renew_leases(
    api: Api,
    nodes: usize,
    period: Duration,
    renewed: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
) {
    let tick = Duration::from_millis(100);
    let per_tick = ((nodes as f64) * tick.as_secs_f64() / period.as_secs_f64()).ceil() as usize;
    let sem = Arc::new(Semaphore::new(16));
    let mut next = 0usize;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let now = rfc3339_micros(SystemTime::now());
        for _ in 0..per_tick.max(1) {
            let name = node_name(next % nodes.max(1));
            next += 1;
            let (api, sem, now) = (api.clone(), sem.clone(), now.clone());
            let (renewed, failed) = (renewed.clone(), failed.clone());
            tokio::spawn(async move {
                let Ok(_p) = sem.acquire().await else { return };
                let path =
                    format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{name}");
                let patch = json!({"spec": {"renewTime": now}});
                match api
                    .must(Method::PATCH, &path, MERGE_PATCH, &patch, false)
                    .await
                {
                    Ok(_) => renewed.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failed.fetch_add(1, Ordering::Relaxed),
                };
            });
        }
    }
}

// ---------------------------------------------------------------- RSS

/// A `/proc/<pid>/status` field in kB.
fn proc_kb(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// CPU seconds (user + system) a process has used.
fn proc_cpu_secs(pid: &str) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// Samples the RSS of the watched processes; `take_peaks` returns the highest
/// values since the previous call.
struct RssSampler {
    procs: Vec<(String, u32)>,
    peaks: Arc<Mutex<Vec<u64>>>,
}

impl RssSampler {
    fn start(specs: &[String]) -> RssSampler {
        let procs: Vec<(String, u32)> = specs
            .iter()
            .filter_map(|s| {
                let (label, pid) = s.split_once(':')?;
                Some((label.to_string(), pid.parse().ok()?))
            })
            .collect();
        let peaks = Arc::new(Mutex::new(vec![0u64; procs.len()]));
        let (pids, p2): (Vec<u32>, _) = (procs.iter().map(|p| p.1).collect(), peaks.clone());
        tokio::spawn(async move {
            loop {
                for (i, pid) in pids.iter().enumerate() {
                    let kb = proc_kb(*pid, "VmRSS:").unwrap_or(0);
                    if let Ok(mut p) = p2.lock() {
                        p[i] = p[i].max(kb);
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        RssSampler { procs, peaks }
    }

    fn report(&self, prefix: &str) {
        let peaks = self
            .peaks
            .lock()
            .map(|mut p| std::mem::replace(&mut *p, vec![0; self.procs.len()]))
            .unwrap_or_default();
        for ((label, pid), peak) in self.procs.iter().zip(peaks) {
            println!("{prefix}_{label}_rss_peak_mb {:.1}", peak as f64 / 1024.0);
            if let Some(kb) = proc_kb(*pid, "VmRSS:") {
                println!("{prefix}_{label}_rss_now_mb {:.1}", kb as f64 / 1024.0);
            }
        }
    }
}

// ---------------------------------------------------------------- phases

fn print_rate(label: &str, n: usize, secs: f64) {
    println!("{label} {:.1}", n as f64 / secs.max(1e-9));
}

async fn ensure_namespace(api: &Api, ns: &str) -> Result<(), Error> {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
    api.must(Method::POST, "/api/v1/namespaces", JSON, &body, true)
        .await
        .map(|_| ())
}

/// Wait until `done(ns state)` holds, or nothing changes for `stall`, or `timeout`.
async fn wait_for(
    tracker: &Tracker,
    ns: &str,
    timeout: Duration,
    stall: Duration,
    progress: impl Fn(&NsPods) -> usize,
    target: usize,
) -> usize {
    let deadline = Instant::now() + timeout;
    let (mut last, mut last_change) = (usize::MAX, Instant::now());
    loop {
        let n = tracker.with_ns(ns, &progress).unwrap_or(0);
        if n >= target {
            return n;
        }
        if n != last {
            (last, last_change) = (n, Instant::now());
        }
        if Instant::now() > deadline || last_change.elapsed() > stall {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Throughput phase: create `count` bare pods, measure bindings seen by the watch.
async fn pods_phase(
    api: &Api,
    tracker: &Arc<Tracker>,
    args: &Args,
    label: &str,
    anti: bool,
) -> Result<(), Error> {
    let ns = format!("hollow-{label}");
    ensure_namespace(api, &ns).await?;
    let count = args.pods;
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; count]));
    eprintln!("# {label}: creating {count} pods");
    let t0 = Instant::now();
    let (api2, ns2, sent2) = (api.clone(), ns.clone(), sent.clone());
    let (failed, first) = run_bounded(count, args.create_concurrency, move |i| {
        let (api, ns, sent) = (api2.clone(), ns2.clone(), sent2.clone());
        async move {
            if let Ok(mut s) = sent.lock() {
                s[i] = Some(Instant::now());
            }
            let path = format!("/api/v1/namespaces/{ns}/pods");
            api.must(Method::POST, &path, JSON, &bare_pod(i, anti), false)
                .await
                .map(|_| ())
        }
    })
    .await;
    let create_secs = t0.elapsed().as_secs_f64();
    let created = count - failed as usize;
    println!("{label}_pods_created {created}");
    println!("{label}_create_errors {failed}");
    if let Some(e) = first {
        eprintln!("# {label}: first create error: {e}");
    }
    print_rate(&format!("{label}_create_per_sec"), created, create_secs);
    let timeout = Duration::from_secs(args.phase_timeout_secs);
    let bound = wait_for(
        tracker,
        &ns,
        timeout,
        Duration::from_secs(30),
        |p| p.bound.len(),
        created,
    )
    .await;
    let (last_bound, latencies) = tracker
        .with_ns(&ns, |p| {
            let mut h = Histogram::new();
            let sent = sent.lock().map(|s| s.clone()).unwrap_or_default();
            for (name, at) in &p.bound {
                let idx = name
                    .strip_prefix("pod-")
                    .and_then(|n| n.parse::<usize>().ok());
                if let Some(Some(t)) = idx.and_then(|i| sent.get(i)) {
                    h.record(at.saturating_duration_since(*t).as_micros() as u64);
                }
            }
            (p.bound.values().max().copied(), h)
        })
        .unwrap_or((None, Histogram::new()));
    let bound_secs = last_bound.map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
    println!("{label}_pods_bound {bound}");
    println!("{label}_bound_secs {bound_secs:.3}");
    let rate = bound as f64 / bound_secs.max(1e-9);
    println!("{label}_bound_per_sec {rate:.1}");
    let upstream = if anti { UPSTREAM_ANTI } else { UPSTREAM_BASIC };
    println!("{label}_kube_scheduler_ref_per_sec {upstream:.0}");
    println!(
        "{label}_create_to_bound_p50_ms {:.1}",
        latencies.quantile(0.5) as f64 / 1000.0
    );
    println!(
        "{label}_create_to_bound_p99_ms {:.1}",
        latencies.quantile(0.99) as f64 / 1000.0
    );
    let ready = wait_for(
        tracker,
        &ns,
        Duration::from_secs(30),
        Duration::from_secs(10),
        |p| p.ready.len(),
        bound,
    )
    .await;
    let last_ready = tracker
        .with_ns(&ns, |p| p.ready.values().max().copied())
        .flatten();
    println!("{label}_pods_ready {ready}");
    println!(
        "{label}_all_ready_secs {:.3}",
        last_ready.map_or(0.0, |t| t.duration_since(t0).as_secs_f64())
    );
    Ok(())
}

/// Deployment phase: `replicas` replicas to `readyReplicas == replicas`.
async fn deploy_phase(api: &Api, tracker: &Arc<Tracker>, args: &Args) -> Result<(), Error> {
    let ns = "hollow-deploy";
    ensure_namespace(api, ns).await?;
    let name = "web";
    let want = args.replicas;
    eprintln!("# deploy: Deployment of {want} replicas");
    let t0 = Instant::now();
    api.must(
        Method::POST,
        &format!("/apis/apps/v1/namespaces/{ns}/deployments"),
        JSON,
        &deployment(name, want),
        false,
    )
    .await?;
    let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/{name}");
    let deadline = t0 + Duration::from_secs(args.phase_timeout_secs);
    let mut ready = 0usize;
    while Instant::now() < deadline {
        if let Ok(d) = api.get_json(&path).await {
            ready = d
                .pointer("/status/readyReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(0) as usize;
            if ready >= want {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = t0.elapsed().as_secs_f64();
    println!("deploy_ready_replicas {ready}");
    println!("deploy_all_ready_secs {secs:.3}");
    let (bound, last_bound, last_ready) = tracker
        .with_ns(ns, |p| {
            (
                p.bound.len(),
                p.bound.values().max().copied(),
                p.ready.values().max().copied(),
            )
        })
        .unwrap_or((0, None, None));
    let since = |t: Option<Instant>| t.map_or(0.0, |t| t.duration_since(t0).as_secs_f64());
    println!("deploy_pods_bound {bound}");
    println!("deploy_last_bound_secs {:.3}", since(last_bound));
    println!("deploy_last_pod_ready_secs {:.3}", since(last_ready));
    Ok(())
}

/// Delete a phase's pods (grace 0) and wait until the watch saw them go.
async fn cleanup(api: &Api, tracker: &Tracker, ns: &str, deployment: bool) {
    let t0 = Instant::now();
    if deployment {
        let path = format!("/apis/apps/v1/namespaces/{ns}/deployments/web");
        let body = json!({"propagationPolicy": "Background"});
        let _ = api.must(Method::DELETE, &path, JSON, &body, false).await;
    }
    let path = format!("/api/v1/namespaces/{ns}/pods");
    let body = json!({"gracePeriodSeconds": 0});
    if let Err(e) = api.must(Method::DELETE, &path, JSON, &body, false).await {
        eprintln!("# cleanup {ns}: {e}");
    }
    let left = wait_for(
        tracker,
        ns,
        Duration::from_secs(60),
        Duration::from_secs(15),
        |p| usize::MAX - p.live.len(),
        usize::MAX,
    )
    .await;
    eprintln!(
        "# cleanup {ns}: {} pods left after {:.1}s",
        usize::MAX - left,
        t0.elapsed().as_secs_f64()
    );
}

/// Register the hollow nodes and their Leases.
async fn register_nodes(api: &Api, args: &Args) -> Result<(), Error> {
    ensure_namespace(api, LEASE_NS).await?;
    let n = args.nodes;
    let t0 = Instant::now();
    let api2 = api.clone();
    let (failed, first) = run_bounded(n, args.create_concurrency, move |i| {
        let api = api2.clone();
        async move {
            let now = rfc3339_secs(SystemTime::now());
            api.must(Method::POST, "/api/v1/nodes", JSON, &node(i, &now), true)
                .await?;
            let path = format!("/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases");
            let micro = rfc3339_micros(SystemTime::now());
            api.must(
                Method::POST,
                &path,
                JSON,
                &lease(&node_name(i), &micro),
                true,
            )
            .await?;
            Ok(())
        }
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    println!("nodes_registered {}", n - failed as usize);
    println!("nodes_register_secs {secs:.3}");
    match first {
        Some(e) => Err(Error::Response(format!("registering nodes: {e}"))),
        None => Ok(()),
    }
}

/// Wait (at most 120 s, or 15 s without progress) until node IPAM gave every
/// hollow node a podCIDR, so that its work is not counted in the first phase.
async fn wait_pod_cidrs(api: &Api, nodes: usize) {
    let t0 = Instant::now();
    let (mut last, mut last_change) = (0usize, Instant::now());
    loop {
        let with_cidr = match api
            .get_json("/api/v1/nodes?labelSelector=navarch.io%2Fhollow%3Dtrue")
            .await
        {
            Ok(v) => v["items"].as_array().map_or(0, |items| {
                items
                    .iter()
                    .filter(|n| n.pointer("/spec/podCIDR").is_some_and(|c| c.is_string()))
                    .count()
            }),
            Err(_) => last,
        };
        if with_cidr != last {
            (last, last_change) = (with_cidr, Instant::now());
        }
        if with_cidr >= nodes
            || last_change.elapsed() > Duration::from_secs(15)
            || t0.elapsed() > Duration::from_secs(120)
        {
            println!("nodes_with_pod_cidr {with_cidr}");
            println!("nodes_pod_cidr_wait_secs {:.1}", t0.elapsed().as_secs_f64());
            return;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn run(args: Args) -> Result<(), Error> {
    let api = Api::connect(args.addr, &args.pki, args.conns).await?;
    let watch_api = Api::connect(args.addr, &args.pki, 1).await?;
    let tracker = Arc::new(Tracker::default());
    let rss = RssSampler::start(&args.rss);
    let own_pid = std::process::id().to_string();
    println!("hollow_nodes {}", args.nodes);
    println!("hollow_pods {}", args.pods);

    register_nodes(&api, &args).await?;
    let (renewed, renew_failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    tokio::spawn(renew_leases(
        api.clone(),
        args.nodes,
        Duration::from_secs(args.lease_renew_secs.max(1)),
        renewed.clone(),
        renew_failed.clone(),
    ));
    let status_sem = Arc::new(Semaphore::new(args.status_concurrency.max(1)));
    tokio::spawn(kubelets(watch_api, tracker.clone(), status_sem));
    if args.wait_pod_cidrs {
        wait_pod_cidrs(&api, args.nodes).await;
    }
    // Let the scheduler's node cache fill before the clock starts.
    tokio::time::sleep(Duration::from_secs(3)).await;
    rss.report("after_nodes");

    for phase in args
        .phases
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
    {
        let ns = format!("hollow-{phase}");
        let cpu0 = proc_cpu_secs(&own_pid).unwrap_or(0.0);
        match phase {
            "plain" => pods_phase(&api, &tracker, &args, phase, false).await?,
            "anti" => pods_phase(&api, &tracker, &args, phase, true).await?,
            "deploy" => deploy_phase(&api, &tracker, &args).await?,
            other => return Err(Error::Param(format!("unknown phase {other}"))),
        }
        println!(
            "{phase}_driver_cpu_secs {:.1}",
            proc_cpu_secs(&own_pid).unwrap_or(0.0) - cpu0
        );
        rss.report(phase);
        cleanup(&api, &tracker, &ns, phase == "deploy").await;
    }
    println!(
        "status_patches_ok {}",
        tracker.patches_ok.load(Ordering::Relaxed)
    );
    println!(
        "status_patches_failed {}",
        tracker.patches_failed.load(Ordering::Relaxed)
    );
    println!("lease_renewals {}", renewed.load(Ordering::Relaxed));
    println!(
        "lease_renewals_failed {}",
        renew_failed.load(Ordering::Relaxed)
    );
    println!(
        "pod_watch_events {}",
        tracker.events.load(Ordering::Relaxed)
    );
    for spec in &args.rss {
        if let Some((label, pid)) = spec.split_once(':') {
            if let Some(kb) = pid.parse().ok().and_then(|p| proc_kb(p, "VmHWM:")) {
                println!("{label}_rss_hwm_mb {:.1}", kb as f64 / 1024.0);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run(Args::parse()).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hollow: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        let t = UNIX_EPOCH + Duration::from_micros(1_704_067_200_000_000 + 3_723_000_042);
        assert_eq!(rfc3339_micros(t), "2024-01-01T01:02:03.000042Z");
        assert_eq!(rfc3339_secs(t), "2024-01-01T01:02:03Z");
    }

    #[test]
    fn node_is_ready_with_resources() {
        let n = node(7, "2024-01-01T00:00:00Z");
        assert_eq!(n["metadata"]["name"], "hollow-00007");
        assert_eq!(
            n["metadata"]["labels"]["topology.kubernetes.io/zone"],
            "zone-1"
        );
        assert_eq!(n["status"]["allocatable"]["cpu"], "4");
        let ready = n["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap();
        assert_eq!(ready["status"], "True");
        // Deserializes as a Node for typed clients (every nodeInfo field present).
        assert_eq!(n["status"]["nodeInfo"].as_object().unwrap().len(), 10);
    }

    #[test]
    fn anti_pods_avoid_their_group() {
        let p = bare_pod(23, true);
        assert_eq!(p["metadata"]["labels"]["color"], "g2");
        let term = &p["spec"]["affinity"]["podAntiAffinity"]
            ["requiredDuringSchedulingIgnoredDuringExecution"][0];
        assert_eq!(term["labelSelector"]["matchLabels"]["color"], "g2");
        assert_eq!(term["topologyKey"], "kubernetes.io/hostname");
        assert!(bare_pod(23, false)["spec"].get("affinity").is_none());
    }

    #[test]
    fn status_patch_is_running_and_ready() {
        let p = running_status_patch(&[("c".into(), "img".into())], "10.0.0.1", "100.0.0.2", "t");
        assert_eq!(p["status"]["phase"], "Running");
        assert_eq!(p["status"]["podIP"], "100.0.0.2");
        let conds = p["status"]["conditions"].as_array().unwrap();
        assert!(conds
            .iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True"));
        assert_eq!(p["status"]["containerStatuses"][0]["ready"], true);
        assert_eq!(p["status"]["containerStatuses"][0]["name"], "c");
    }

    fn event(kind: &str, node: &str, phase: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"type": kind, "object": {
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "9"},
            "spec": {"nodeName": node, "containers": [{"name": "c", "image": "i"}]},
            "status": {"phase": phase}}}))
        .unwrap()
    }

    #[test]
    fn tracker_starts_each_bound_pod_once() {
        let t = Tracker::default();
        let now = Instant::now();
        let unbound = parse_event(&event("ADDED", "", "Pending")).unwrap();
        assert_eq!(unbound.node, None);
        assert!(!t.observe(&unbound, now));
        let bound = parse_event(&event("MODIFIED", "hollow-00001", "Pending")).unwrap();
        assert_eq!(bound.containers, vec![("c".to_string(), "i".to_string())]);
        assert_eq!(bound.resource_version, "9");
        assert!(t.observe(&bound, now));
        assert!(!t.observe(&bound, now), "second event for the same pod");
        let running = parse_event(&event("MODIFIED", "hollow-00001", "Running")).unwrap();
        assert!(!t.observe(&running, now));
        assert_eq!(t.with_ns("ns", |p| p.bound.len()), Some(1));
        assert_eq!(t.with_ns("ns", |p| p.live.len()), Some(1));
        let gone = parse_event(&event("DELETED", "hollow-00001", "Running")).unwrap();
        assert!(!t.observe(&gone, now));
        assert_eq!(t.with_ns("ns", |p| p.live.len()), Some(0));
    }
}
