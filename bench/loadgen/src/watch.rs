//! Watch fan-out: many open pod watches while pods are created at a fixed
//! rate; measures how long after each create every watcher sees its event.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::Method;

use crate::client::{status_error, Conn, Target};
use crate::error::Error;
use crate::hist::Histogram;
use crate::objects;
use crate::watch_epoll;

/// What reads the watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchReader {
    /// A task per watch on the runtime, through hyper (HTTP/2 or HTTP/1.1 as
    /// the target speaks).
    Tasks,
    /// One thread reading every watch with epoll, HTTP/1.1 (see
    /// [`crate::watch_epoll`]).
    Epoll,
}

/// Parameters of the watch scenario.
#[derive(Clone, Debug)]
pub struct WatchSpec {
    /// Number of open watches.
    pub watchers: usize,
    /// Watches sharing one HTTP/2 connection (1 = a connection each, as
    /// independent clients would have; must be 1 for HTTP/1.1).
    pub watchers_per_conn: usize,
    /// Pods created per second.
    pub rate: f64,
    /// How long pods are created.
    pub duration: Duration,
    /// Connections the creates are spread over.
    pub creators: usize,
    /// Namespace of the pods (must exist).
    pub namespace: String,
    /// Pod name prefix; names are `<prefix><index>`.
    pub prefix: String,
    /// How long to wait for stragglers after the last create.
    pub grace: Duration,
    /// Where to write one line per pod (send, response, mean and worst delay), if anywhere.
    pub per_pod_file: Option<std::path::PathBuf>,
    /// What reads the watches.
    pub reader: WatchReader,
}

/// What the watch scenario measured. Delays are in microseconds.
#[derive(Clone, Debug)]
pub struct WatchReport {
    /// Pods created successfully.
    pub created: u64,
    /// Creates that failed.
    pub create_errors: u64,
    /// Achieved create rate.
    pub create_per_sec: f64,
    /// Create latency.
    pub create_latency_us: Histogram,
    /// Watches that were established.
    pub watchers: u64,
    /// `created × watchers`.
    pub expected_events: u64,
    /// ADDED events for bench pods received over all watches.
    pub received_events: u64,
    /// Event arrival minus the create's response arrival (0 if earlier).
    pub delay_from_response_us: Histogram,
    /// Event arrival minus the moment the create request was sent.
    pub delay_from_send_us: Histogram,
    /// Events that arrived before the create's response did.
    pub events_before_response: u64,
    /// Watches that failed or ended early.
    pub watch_errors: u64,
    /// First failure seen.
    pub first_error: Option<String>,
}

const UNSET: u64 = u64::MAX;

pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn now_us(&self) -> u64 {
        self.0.elapsed().as_micros() as u64
    }
}

/// What creators and watchers share: the clock, each pod's create times, the
/// per-pod delay summary, and the count of events received.
pub(crate) struct Shared {
    pub(crate) clock: Clock,
    sent_us: Vec<AtomicU64>,
    resp_us: Vec<AtomicU64>,
    /// Per pod: the longest delay (from the create's response) over all watchers.
    worst_us: Vec<AtomicU64>,
    /// Per pod: the sum of those delays, for their mean.
    sum_us: Vec<AtomicU64>,
    pub(crate) received: AtomicU64,
}

impl Shared {
    /// Timestamps for `total` pods, none set yet.
    pub(crate) fn new(total: usize) -> Shared {
        Shared {
            clock: Clock(Instant::now()),
            sent_us: (0..total).map(|_| AtomicU64::new(UNSET)).collect(),
            resp_us: (0..total).map(|_| AtomicU64::new(UNSET)).collect(),
            worst_us: (0..total).map(|_| AtomicU64::new(0)).collect(),
            sum_us: (0..total).map(|_| AtomicU64::new(0)).collect(),
            received: AtomicU64::new(0),
        }
    }

    /// Pod `i`'s create was sent and answered at `sent` and `resp` (µs).
    pub(crate) fn set_times(&self, i: usize, sent: u64, resp: u64) {
        if let (Some(s), Some(r)) = (self.sent_us.get(i), self.resp_us.get(i)) {
            s.store(sent, Ordering::Relaxed);
            r.store(resp, Ordering::Relaxed);
        }
    }
}

pub(crate) struct WatcherResult {
    pub(crate) received: u64,
    pub(crate) from_response: Histogram,
    pub(crate) from_send: Histogram,
    early: u64,
    error: Option<String>,
}

async fn open_conns(target: &Target, n: usize) -> Result<Vec<Conn>, Error> {
    let results: Vec<Result<Conn, Error>> = futures::stream::iter(0..n)
        .map(|_| target.connect())
        .buffer_unordered(32)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Current `resourceVersion` of the pod collection in `namespace`.
async fn list_rv(conn: &mut Conn, namespace: &str) -> Result<String, Error> {
    let path = format!("{}?limit=1", objects::collection_path(namespace, "pods"));
    let body = conn.call_ok(Method::GET, &path, None).await?;
    objects::resource_version(&body)
}

/// Splits a byte stream into lines. Only a line split across chunks is
/// copied; whole lines are handed out from the chunk itself.
#[derive(Default)]
pub(crate) struct Lines {
    partial: BytesMut,
}

impl Lines {
    /// Call `f` with every line (without its newline) that `chunk` completes.
    pub(crate) fn feed(&mut self, chunk: &[u8], mut f: impl FnMut(&[u8])) {
        let mut rest = chunk;
        while let Some(nl) = memchr::memchr(b'\n', rest) {
            if self.partial.is_empty() {
                f(&rest[..nl]);
            } else {
                self.partial.extend_from_slice(&rest[..nl]);
                f(&self.partial);
                self.partial.clear();
            }
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
    }
}

async fn watcher(
    mut conn: Conn,
    path: String,
    prefix: String,
    shared: Arc<Shared>,
    ready: tokio::sync::mpsc::Sender<Result<(), String>>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> WatcherResult {
    let mut arrivals: Vec<(u64, u64)> = Vec::new();
    let mut error = None;
    match conn.send(Method::GET, &path, None).await {
        Ok(resp) if resp.status().is_success() => {
            let _ = ready.send(Ok(())).await;
            drop(ready);
            let mut body = resp.into_body();
            let matcher = objects::AddedMatcher::new(&prefix);
            let mut lines = Lines::default();
            // One stop future for the whole stream: made anew per frame, it
            // would register with (and leave) the shared channel every time.
            let stopped = stop.wait_for(|s| *s);
            tokio::pin!(stopped);
            loop {
                let frame = tokio::select! {
                    f = body.frame() => f,
                    _ = &mut stopped => break,
                };
                let data = match frame {
                    Some(Ok(f)) => match f.into_data() {
                        Ok(d) => d,
                        Err(_) => continue,
                    },
                    Some(Err(e)) => {
                        error = Some(format!("watch stream: {e}"));
                        break;
                    }
                    None => {
                        error = Some("watch stream ended early".into());
                        break;
                    }
                };
                let now = shared.clock.now_us();
                lines.feed(&data, |line| {
                    if let Some(i) = matcher.index(line) {
                        arrivals.push((i, now));
                        shared.received.fetch_add(1, Ordering::Relaxed);
                    }
                });
            }
        }
        Ok(resp) => {
            let status = resp.status();
            let body = resp.into_body().collect().await.map(|b| b.to_bytes());
            let msg = status_error(
                &Method::GET,
                &path,
                status,
                body.as_deref().unwrap_or_default(),
            )
            .to_string();
            let _ = ready.send(Err(msg.clone())).await;
            error = Some(msg);
        }
        Err(e) => {
            let _ = ready.send(Err(e.to_string())).await;
            error = Some(e.to_string());
        }
    }
    // Creates are finished when the stop signal fires: all timestamps are in.
    score(arrivals, &shared, error)
}

/// Delays of `arrivals` ((pod index, arrival µs) pairs), once every create's
/// timestamps are in.
pub(crate) fn score(
    arrivals: Vec<(u64, u64)>,
    shared: &Shared,
    error: Option<String>,
) -> WatcherResult {
    let mut r = WatcherResult {
        received: arrivals.len() as u64,
        from_response: Histogram::new(),
        from_send: Histogram::new(),
        early: 0,
        error,
    };
    for (i, at) in arrivals {
        let idx = i as usize;
        let (Some(sent), Some(resp)) = (shared.sent_us.get(idx), shared.resp_us.get(idx)) else {
            continue;
        };
        let (sent, resp) = (sent.load(Ordering::Relaxed), resp.load(Ordering::Relaxed));
        if sent != UNSET {
            r.from_send.record(at.saturating_sub(sent));
        }
        if resp != UNSET {
            if at < resp {
                r.early += 1;
            }
            let d = at.saturating_sub(resp);
            r.from_response.record(d);
            if let (Some(w), Some(sum)) = (shared.worst_us.get(idx), shared.sum_us.get(idx)) {
                w.fetch_max(d, Ordering::Relaxed);
                sum.fetch_add(d, Ordering::Relaxed);
            }
        }
    }
    r
}

struct CreatorResult {
    ok: u64,
    errors: u64,
    hist: Histogram,
    first_error: Option<String>,
}

/// Which creates one creator connection sends, and when.
struct CreatorPlan {
    /// Index of its first pod; it then takes every `step`-th up to `total`.
    first: usize,
    step: usize,
    total: usize,
    /// Pod `i` is due at `start + i / rate`.
    rate: f64,
    start: tokio::time::Instant,
    collection: String,
    prefix: String,
}

async fn creator(mut conn: Conn, plan: CreatorPlan, shared: Arc<Shared>) -> CreatorResult {
    let mut r = CreatorResult {
        ok: 0,
        errors: 0,
        hist: Histogram::new(),
        first_error: None,
    };
    let CreatorPlan {
        first,
        step,
        total,
        rate,
        start,
        collection,
        prefix,
    } = plan;
    for i in (first..total).step_by(step) {
        tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
        let body = objects::pod(&format!("{prefix}{i}"));
        let t0 = shared.clock.now_us();
        shared.sent_us[i].store(t0, Ordering::Relaxed);
        match conn.call(Method::POST, &collection, Some(body)).await {
            Ok((status, _)) if status.is_success() => {
                let t1 = shared.clock.now_us();
                shared.resp_us[i].store(t1, Ordering::Relaxed);
                r.hist.record(t1.saturating_sub(t0));
                r.ok += 1;
            }
            Ok((status, body)) => {
                r.errors += 1;
                if r.first_error.is_none() {
                    r.first_error =
                        Some(status_error(&Method::POST, &collection, status, &body).to_string());
                }
            }
            Err(e) => {
                r.errors += 1;
                if r.first_error.is_none() {
                    r.first_error = Some(e.to_string());
                }
                break;
            }
        }
    }
    r
}

/// The open watches and how to stop them.
enum Watchers {
    Tasks {
        tasks: Vec<tokio::task::JoinHandle<WatcherResult>>,
        stop: tokio::sync::watch::Sender<bool>,
    },
    Epoll(watch_epoll::Readers),
}

/// A task per watch; returns them with the number established and the
/// first failure.
async fn open_task_watchers(
    target: &Target,
    spec: &WatchSpec,
    watch_path: &str,
    shared: &Arc<Shared>,
) -> Result<(Watchers, u64, Option<String>), Error> {
    let per_conn = spec.watchers_per_conn.max(1);
    let n_conns = spec.watchers.div_ceil(per_conn);
    let conns = open_conns(target, n_conns).await?;
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel(spec.watchers);
    let mut handles = Vec::with_capacity(spec.watchers);
    for conn in conns {
        for _ in 1..per_conn {
            handles.extend(conn.try_clone());
        }
        handles.push(conn);
    }
    handles.truncate(spec.watchers);
    let opened = handles.len();
    let tasks: Vec<_> = handles
        .into_iter()
        .map(|c| {
            tokio::spawn(watcher(
                c,
                watch_path.to_string(),
                spec.prefix.clone(),
                shared.clone(),
                ready_tx.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();
    drop(ready_tx);
    let mut established = 0u64;
    let mut first_error = None;
    let ready_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for _ in 0..opened {
        match tokio::time::timeout_at(ready_deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => established += 1,
            Ok(Some(Err(e))) => {
                if first_error.is_none() {
                    first_error = Some(e);
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let watchers = Watchers::Tasks {
        tasks,
        stop: stop_tx,
    };
    Ok((watchers, established, first_error))
}

/// One reader thread for all watches (HTTP/1.1, a connection each).
async fn open_epoll_watchers(
    target: &Target,
    spec: &WatchSpec,
    watch_path: &str,
    shared: &Arc<Shared>,
) -> Result<(Watchers, u64, Option<String>), Error> {
    let mut readers = watch_epoll::Readers::spawn(
        target.clone(),
        watch_path.to_string(),
        spec.watchers,
        spec.prefix.clone(),
        shared.clone(),
    )?;
    let (established, first_error) = match readers.opened().await {
        Ok(n) => (n, None),
        Err(e) => (0, Some(e)),
    };
    Ok((Watchers::Epoll(readers), established, first_error))
}

/// Run the watch scenario.
pub async fn run(target: &Target, spec: &WatchSpec) -> Result<WatchReport, Error> {
    if spec.watchers == 0 || spec.creators == 0 || spec.rate <= 0.0 {
        return Err(Error::Param(
            "watchers, creators and rate must be > 0".into(),
        ));
    }
    let per_conn = spec.watchers_per_conn.max(1);
    if per_conn > 1 && spec.reader == WatchReader::Epoll {
        return Err(Error::Param(
            "the epoll reader opens a connection per watch".into(),
        ));
    }
    if per_conn > 1 && target.protocol() != crate::client::Protocol::Http2 {
        return Err(Error::Param(
            "watchers can share a connection only over HTTP/2".into(),
        ));
    }
    let total = (spec.rate * spec.duration.as_secs_f64()).round().max(1.0) as usize;
    let shared = Arc::new(Shared::new(total));

    let mut creator_conns = open_conns(target, spec.creators).await?;
    let rv = list_rv(&mut creator_conns[0], &spec.namespace).await?;
    let watch_path = format!(
        "{}?watch=true&resourceVersion={rv}",
        objects::collection_path(&spec.namespace, "pods")
    );

    // Open the watches.
    let (watchers, established, mut first_error) = match spec.reader {
        WatchReader::Tasks => open_task_watchers(target, spec, &watch_path, &shared).await?,
        WatchReader::Epoll => open_epoll_watchers(target, spec, &watch_path, &shared).await?,
    };
    if established == 0 {
        return Err(Error::Response(format!(
            "no watch could be opened: {}",
            first_error.unwrap_or_default()
        )));
    }

    // Create pods at the requested rate.
    let collection = objects::collection_path(&spec.namespace, "pods");
    let start = tokio::time::Instant::now();
    let step = creator_conns.len();
    let creator_tasks: Vec<_> = creator_conns
        .into_iter()
        .enumerate()
        .map(|(j, conn)| {
            let plan = CreatorPlan {
                first: j,
                step,
                total,
                rate: spec.rate,
                start,
                collection: collection.clone(),
                prefix: spec.prefix.clone(),
            };
            tokio::spawn(creator(conn, plan, shared.clone()))
        })
        .collect();
    let mut created = 0u64;
    let mut create_errors = 0u64;
    let mut create_latency_us = Histogram::new();
    for t in futures::future::join_all(creator_tasks).await {
        let r = t.map_err(|e| Error::Response(format!("creator task failed: {e}")))?;
        created += r.ok;
        create_errors += r.errors;
        create_latency_us.merge(&r.hist);
        if first_error.is_none() {
            first_error = r.first_error;
        }
    }
    let create_secs = start.elapsed().as_secs_f64();

    // Wait for the events to arrive, then stop the watchers.
    let expected = created * established;
    let grace_end = tokio::time::Instant::now() + spec.grace;
    while shared.received.load(Ordering::Relaxed) < expected
        && tokio::time::Instant::now() < grace_end
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let mut report = WatchReport {
        created,
        create_errors,
        create_per_sec: if create_secs > 0.0 {
            created as f64 / create_secs
        } else {
            0.0
        },
        create_latency_us,
        watchers: established,
        expected_events: expected,
        received_events: 0,
        delay_from_response_us: Histogram::new(),
        delay_from_send_us: Histogram::new(),
        events_before_response: 0,
        watch_errors: 0,
        first_error,
    };
    let add = |r: WatcherResult, report: &mut WatchReport| {
        report.received_events += r.received;
        report.delay_from_response_us.merge(&r.from_response);
        report.delay_from_send_us.merge(&r.from_send);
        report.events_before_response += r.early;
        if let Some(e) = r.error {
            report.watch_errors += 1;
            if report.first_error.is_none() {
                report.first_error = Some(e);
            }
        }
    };
    match watchers {
        Watchers::Tasks { tasks, stop } => {
            let _ = stop.send(true);
            for t in futures::future::join_all(tasks).await {
                let r = t.map_err(|e| Error::Response(format!("watcher task failed: {e}")))?;
                add(r, &mut report);
            }
        }
        Watchers::Epoll(readers) => {
            let r = tokio::task::spawn_blocking(move || readers.finish())
                .await
                .map_err(|e| Error::Response(format!("watch reader thread: {e}")))??;
            report.watch_errors += r.errors;
            if report.first_error.is_none() {
                report.first_error = r.first_error;
            }
            add(score(r.arrivals, &shared, None), &mut report);
        }
    }
    if let Some(path) = &spec.per_pod_file {
        write_per_pod(path, &shared, established)
            .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    }
    Ok(report)
}

/// One line per pod: when its create was sent and answered (ms since the start
/// of the run), and the mean and longest delay over the watchers (ms), to see
/// when the tail happens.
fn write_per_pod(path: &std::path::Path, shared: &Shared, watchers: u64) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(out, "pod sent_ms response_ms mean_delay_ms worst_delay_ms")?;
    let ms = |us: u64| us as f64 / 1000.0;
    for (i, (((s, r), w), sum)) in shared
        .sent_us
        .iter()
        .zip(&shared.resp_us)
        .zip(&shared.worst_us)
        .zip(&shared.sum_us)
        .enumerate()
    {
        let (s, r) = (s.load(Ordering::Relaxed), r.load(Ordering::Relaxed));
        if s == UNSET || r == UNSET {
            continue;
        }
        let (w, mean) = (
            w.load(Ordering::Relaxed),
            sum.load(Ordering::Relaxed) / watchers.max(1),
        );
        writeln!(
            out,
            "{i} {:.1} {:.1} {:.1} {:.1}",
            ms(s),
            ms(r),
            ms(mean),
            ms(w)
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::Lines;

    #[test]
    fn lines_split_across_chunks_are_joined() {
        let mut lines = Lines::default();
        let mut got: Vec<String> = Vec::new();
        for chunk in [&b"ab\ncd"[..], b"ef", b"\n\ngh\n", b"", b"i"] {
            lines.feed(chunk, |l| got.push(String::from_utf8_lossy(l).into_owned()));
        }
        assert_eq!(got, ["ab", "cdef", "", "gh"]);
        lines.feed(b"j\n", |l| {
            got.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(got.last().map(String::as_str), Some("ij"));
    }
}
