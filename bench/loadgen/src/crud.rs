//! Create / get load on configmaps from N persistent connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;

use crate::client::{status_error, Target};
use crate::error::Error;
use crate::hist::Histogram;
use crate::objects;

/// Which request each client repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `POST` a new configmap `<prefix><i>` (i unique across clients).
    Create,
    /// `GET` configmap `<prefix><i mod existing>`.
    Get,
}

/// Parameters of one load run.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    /// Request to repeat.
    pub op: Op,
    /// Concurrent clients, each with its own connection, one request in flight.
    pub clients: usize,
    /// Stop after this long...
    pub duration: Duration,
    /// ...or after this many requests in total, whichever comes first.
    pub max_requests: Option<u64>,
    /// Namespace of the configmaps.
    pub namespace: String,
    /// Name prefix; names are `<prefix><index>`.
    pub prefix: String,
    /// First index to use (so that repeated create runs do not collide).
    pub start_index: u64,
    /// Approximate JSON size of each created configmap.
    pub value_bytes: usize,
    /// For [`Op::Get`]: how many configmaps `<prefix>0..existing` exist.
    pub existing: u64,
}

/// What a load run measured.
#[derive(Clone, Debug)]
pub struct LoadReport {
    /// Requests that got a 2xx answer.
    pub ok: u64,
    /// Requests that failed or got another status.
    pub errors: u64,
    /// First failure seen, for the log.
    pub first_error: Option<String>,
    /// Wall time from the start signal to the last client finishing.
    pub elapsed: Duration,
    /// Latency of successful requests, in microseconds.
    pub latency_us: Histogram,
}

impl LoadReport {
    /// Successful requests per second.
    pub fn per_sec(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }
}

struct ClientResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    hist: Histogram,
}

/// Run `spec` against `target`. Connections are opened (TLS handshakes done)
/// before the clock starts.
pub async fn run(target: &Target, spec: &LoadSpec) -> Result<LoadReport, Error> {
    if spec.clients == 0 {
        return Err(Error::Param("clients must be > 0".into()));
    }
    if spec.op == Op::Get && spec.existing == 0 {
        return Err(Error::Param("get load needs existing > 0".into()));
    }
    let mut conns = Vec::with_capacity(spec.clients);
    for _ in 0..spec.clients {
        conns.push(target.connect().await?);
    }
    let next = Arc::new(AtomicU64::new(0));
    let spec = Arc::new(spec.clone());
    let collection = objects::collection_path(&spec.namespace, "configmaps");
    let start = Instant::now();
    let deadline = start + spec.duration;
    let mut tasks = Vec::with_capacity(conns.len());
    for mut conn in conns {
        let next = next.clone();
        let spec = spec.clone();
        let collection = collection.clone();
        tasks.push(tokio::spawn(async move {
            let mut r = ClientResult {
                ok: 0,
                errors: 0,
                first_error: None,
                hist: Histogram::new(),
            };
            loop {
                if Instant::now() >= deadline {
                    break;
                }
                let i = next.fetch_add(1, Ordering::Relaxed);
                if spec.max_requests.is_some_and(|m| i >= m) {
                    break;
                }
                let (method, path, body) = match spec.op {
                    Op::Create => {
                        let name = format!("{}{}", spec.prefix, spec.start_index + i);
                        let body = objects::configmap(&name, spec.value_bytes);
                        (Method::POST, collection.clone(), Some(body))
                    }
                    Op::Get => {
                        // A stride walk so consecutive gets hit different keys.
                        let k = i.wrapping_mul(7919) % spec.existing;
                        let path = format!("{collection}/{}{}", spec.prefix, spec.start_index + k);
                        (Method::GET, path, None)
                    }
                };
                let t0 = Instant::now();
                match conn.call(method.clone(), &path, body).await {
                    Ok((status, _)) if status.is_success() => {
                        r.hist.record(t0.elapsed().as_micros() as u64);
                        r.ok += 1;
                    }
                    Ok((status, bytes)) => {
                        r.errors += 1;
                        if r.first_error.is_none() {
                            r.first_error =
                                Some(status_error(&method, &path, status, &bytes).to_string());
                        }
                    }
                    Err(e) => {
                        r.errors += 1;
                        if r.first_error.is_none() {
                            r.first_error = Some(e.to_string());
                        }
                        // The connection may be dead: reconnecting would
                        // measure handshakes, so this client stops.
                        break;
                    }
                }
            }
            r
        }));
    }
    let mut report = LoadReport {
        ok: 0,
        errors: 0,
        first_error: None,
        elapsed: Duration::ZERO,
        latency_us: Histogram::new(),
    };
    for t in futures::future::join_all(tasks).await {
        let r = t.map_err(|e| Error::Response(format!("client task failed: {e}")))?;
        report.ok += r.ok;
        report.errors += r.errors;
        report.latency_us.merge(&r.hist);
        if report.first_error.is_none() {
            report.first_error = r.first_error;
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Create namespace `name`; an existing one is fine.
pub async fn ensure_namespace(target: &Target, name: &str) -> Result<(), Error> {
    let mut conn = target.connect().await?;
    let path = "/api/v1/namespaces";
    let (status, body) = conn
        .call(Method::POST, path, Some(objects::namespace(name)))
        .await?;
    if status.is_success() || status == hyper::StatusCode::CONFLICT {
        Ok(())
    } else {
        Err(status_error(&Method::POST, path, status, &body))
    }
}
