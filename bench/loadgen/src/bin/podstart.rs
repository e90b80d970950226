//! Pod start latency: API create → Running seen by a watch, for pods created one
//! after another and all at once. Prints `name value` lines (milliseconds).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use clap::Parser;
use http_body_util::BodyExt;
use hyper::Method;
use navarch_loadgen::client::{Protocol, Target};
use navarch_loadgen::hist::Histogram;
use navarch_loadgen::Error;
use tokio::sync::{mpsc, Mutex};

#[derive(Parser)]
struct Args {
    #[arg(long)]
    addr: SocketAddr,
    #[arg(long)]
    pki: PathBuf,
    #[arg(long, default_value = "navarch.test/busybox:1.35")]
    image: String,
    #[arg(long, default_value_t = 100)]
    count: usize,
    #[arg(long, default_value = "podstart")]
    namespace: String,
}

fn pod(name: &str, image: &str) -> Bytes {
    Bytes::from(
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"terminationGracePeriodSeconds": 0, "containers": [{
                "name": "c", "image": image, "imagePullPolicy": "IfNotPresent",
                "command": ["sleep", "3600"]}]}
        })
        .to_string(),
    )
}

type Seen = Arc<Mutex<HashMap<String, Instant>>>;

/// Follow pods in the namespace; record when each first shows phase Running.
async fn watch_running(
    target: &Target,
    ns: &str,
    rv: String,
    seen: Seen,
    tx: mpsc::UnboundedSender<String>,
) -> Result<(), Error> {
    let mut conn = target.connect().await?;
    let path = format!("/api/v1/namespaces/{ns}/pods?watch=true&resourceVersion={rv}");
    let resp = conn.send(Method::GET, &path, None).await?;
    let mut body = resp.into_body();
    let mut buf: Vec<u8> = Vec::new();
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else { break };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            let now = Instant::now();
            let Ok(ev) = serde_json::from_slice::<serde_json::Value>(&line) else {
                continue;
            };
            let obj = &ev["object"];
            if obj["status"]["phase"] == "Running" {
                if let Some(name) = obj["metadata"]["name"].as_str() {
                    let mut s = seen.lock().await;
                    if !s.contains_key(name) {
                        s.insert(name.to_string(), now);
                        let _ = tx.send(name.to_string());
                    }
                }
            }
        }
    }
    Ok(())
}

async fn run_phase(
    target: &Target,
    args: &Args,
    prefix: &str,
    burst: bool,
) -> Result<Histogram, Error> {
    let ns = &args.namespace;
    let mut conn = target.connect().await?;
    let list = conn
        .call_ok(Method::GET, &format!("/api/v1/namespaces/{ns}/pods"), None)
        .await?;
    let rv = navarch_loadgen::objects::resource_version(&list)?;
    let seen: Seen = Arc::new(Mutex::new(HashMap::new()));
    let (tx, mut rx) = mpsc::unbounded_channel();
    let t2 = target.clone();
    let (ns2, seen2) = (ns.clone(), seen.clone());
    tokio::spawn(async move { watch_running(&t2, &ns2, rv, seen2, tx).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut started: HashMap<String, Instant> = HashMap::new();
    let path = format!("/api/v1/namespaces/{ns}/pods");
    let mut hist = Histogram::new();
    if burst {
        let mut tasks = Vec::new();
        for i in 0..args.count {
            let name = format!("{prefix}-{i}");
            let target = target.clone();
            let (path, image) = (path.clone(), args.image.clone());
            tasks.push(tokio::spawn(async move {
                let mut c = target.connect().await?;
                let t0 = Instant::now();
                c.call_ok(Method::POST, &path, Some(pod(&name, &image)))
                    .await?;
                Ok::<_, Error>((name, t0))
            }));
        }
        for t in tasks {
            if let Ok(Ok((name, t0))) = t.await {
                started.insert(name, t0);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while seen.lock().await.len() < started.len() && Instant::now() < deadline {
            let _ = tokio::time::timeout(Duration::from_secs(1), rx.recv()).await;
        }
    } else {
        for i in 0..args.count {
            let name = format!("{prefix}-{i}");
            let t0 = Instant::now();
            conn.call_ok(Method::POST, &path, Some(pod(&name, &args.image)))
                .await?;
            started.insert(name.clone(), t0);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if seen.lock().await.contains_key(&name) || Instant::now() > deadline {
                    break;
                }
                let _ = tokio::time::timeout(Duration::from_millis(500), rx.recv()).await;
            }
        }
    }
    let s = seen.lock().await;
    for (name, t0) in &started {
        if let Some(t1) = s.get(name) {
            hist.record(t1.duration_since(*t0).as_micros() as u64);
        }
    }
    println!(
        "pod_start_{}_running {} of {}",
        prefix,
        s.len(),
        started.len()
    );
    let _ = conn
        .call(
            Method::DELETE,
            &format!("/api/v1/namespaces/{ns}/pods"),
            Some(Bytes::from_static(b"{\"gracePeriodSeconds\":0}")),
        )
        .await;
    Ok(hist)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args = Args::parse();
    let target = Target::from_pki_dir(args.addr, Protocol::Http2, &args.pki)?;
    let mut conn = target.connect().await?;
    let _ = conn
        .call(
            Method::POST,
            "/api/v1/namespaces",
            Some(navarch_loadgen::objects::namespace(&args.namespace)),
        )
        .await?;
    for (prefix, burst) in [("seq", false), ("burst", true)] {
        let h = run_phase(&target, &args, prefix, burst).await?;
        let ms = |q: f64| h.quantile(q) as f64 / 1000.0;
        println!("pod_start_{prefix}_p50_ms {:.1}", ms(0.5));
        println!("pod_start_{prefix}_p99_ms {:.1}", ms(0.99));
        println!("pod_start_{prefix}_max_ms {:.1}", h.max() as f64 / 1000.0);
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    Ok(())
}
