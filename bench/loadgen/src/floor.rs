//! The watch step's baseline: the same fan-out with no API server behind it.
//!
//! A bare TLS 1.3 server on a tokio runtime of its own (two workers, like the
//! API server's) answers each watch GET with a chunked body and then writes
//! every event to every connection, a task per connection, events shared
//! through a broadcast channel, waiting events joined into one write. No HTTP
//! framework, no store, no JSON encoding: what is left is the cost of the
//! runtime, TLS and loopback TCP. The same readers as the watch step
//! ([`crate::watch_epoll`], one thread) read it in the same process, on the
//! same two cores.
//!
//! Its delays and CPU per delivery are what this machine allows for the
//! watch step's fan-out, so the watch step's figures can be read against it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::broadcast;

use crate::client::{Protocol, Target};
use crate::error::Error;
use crate::hist::Histogram;
use crate::watch::{score, Shared};
use crate::watch_epoll::{self, Readers, READER_THREAD};

/// How the baseline's server writes the events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FloorServer {
    /// A task per connection on a two-worker tokio runtime, as the API server
    /// runs its connections.
    Tokio,
    /// One thread writes every event to every connection in turn: blocking
    /// handshakes, then rustls driven by hand over non-blocking sockets, no
    /// async runtime and no task per connection.
    Thread,
}

/// Parameters of the baseline.
#[derive(Clone, Debug)]
pub struct FloorSpec {
    /// Open watches (a connection each).
    pub watchers: usize,
    /// Events per second, each written to every watch.
    pub rate: f64,
    /// How long events are sent.
    pub duration: Duration,
    /// Size of one event line, about a pod's ADDED event from the API server.
    pub event_bytes: usize,
    /// How the server writes.
    pub server: FloorServer,
}

/// What the baseline measured.
#[derive(Clone, Debug)]
pub struct FloorReport {
    pub watchers: u64,
    pub events: u64,
    pub expected: u64,
    pub received: u64,
    /// Event arrival minus the moment the server sent it, µs.
    pub delay_us: Histogram,
    /// CPU seconds of the server's threads and of the reader thread while
    /// the events were sent and read.
    pub server_cpu_s: f64,
    pub reader_cpu_s: f64,
    /// Writes the server made (one per connection and batch of events).
    pub server_writes: u64,
    pub reader_errors: u64,
    pub first_error: Option<String>,
}

const SERVER_THREADS: &str = "floor-server";
const NAME_PREFIX: &str = "bw-";

/// CPU seconds used so far by this process's threads whose name starts with `name`.
fn threads_cpu_s(name: &str) -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc/self/task") else {
        return 0.0;
    };
    let ticks: u64 = dir
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm"))
                .map(|c| c.trim_end().starts_with(name))
                .unwrap_or(false)
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("stat")).ok())
        .map(|stat| {
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let rest = stat.rsplit(')').next().unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            get(11) + get(12)
        })
        .sum();
    ticks as f64 / 100.0
}

/// One event line, `{"type":"ADDED",...}` padded to `bytes`.
fn event_line(i: usize, bytes: usize) -> Bytes {
    let head = format!(
        "{{\"type\":\"ADDED\",\"object\":{{\"kind\":\"Pod\",\"apiVersion\":\"v1\",\"metadata\":{{\"name\":\"{NAME_PREFIX}{i}\",\"namespace\":\"bench-watch\"}},\"spec\":{{\"pad\":\""
    );
    let tail = "\"}}}\n";
    let pad = bytes.saturating_sub(head.len() + tail.len());
    let mut line = Vec::with_capacity(head.len() + pad + tail.len());
    line.extend_from_slice(head.as_bytes());
    line.resize(head.len() + pad, b'x');
    line.extend_from_slice(tail.as_bytes());
    Bytes::from(line)
}

/// A self-signed certificate for 127.0.0.1: the server's TLS settings and a
/// client's that trusts it.
fn tls_pair() -> Result<(rustls::ServerConfig, rustls::ClientConfig), Error> {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()])
        .map_err(|e| Error::Param(format!("certificate: {e}")))?;
    let cert = ck.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.signing_key.serialize_der())
        .map_err(|e| Error::Pem(format!("generated key: {e}")))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut server = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(vec![cert.clone()], key)?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert)?;
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok((server, client))
}

const RESPONSE_HEAD: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n";

/// `events` as one HTTP/1.1 chunk, into `out`.
fn chunk(events: &[Bytes], out: &mut Vec<u8>) {
    let len: usize = events.iter().map(Bytes::len).sum();
    out.clear();
    out.extend_from_slice(format!("{len:x}\r\n").as_bytes());
    for ev in events {
        out.extend_from_slice(ev);
    }
    out.extend_from_slice(b"\r\n");
}

/// One watch connection ([`FloorServer::Tokio`]): read the request head,
/// answer 200 chunked, then write events as they come, joining those already
/// waiting.
async fn serve_conn(
    tcp: tokio::net::TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    mut rx: broadcast::Receiver<Bytes>,
    writes: Arc<AtomicU64>,
) -> std::io::Result<()> {
    tcp.set_nodelay(true)?;
    let mut tls = acceptor.accept(tcp).await?;
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    while memchr::memmem::find(&head, b"\r\n\r\n").is_none() {
        let n = tls.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    tls.write_all(RESPONSE_HEAD).await?;
    tls.flush().await?;
    let mut out = Vec::new();
    while let Ok(first) = rx.recv().await {
        let mut events = vec![first];
        while let Ok(ev) = rx.try_recv() {
            events.push(ev);
        }
        chunk(&events, &mut out);
        tls.write_all(&out).await?;
        tls.flush().await?;
        writes.fetch_add(1, Ordering::Relaxed);
    }
    tls.write_all(b"0\r\n\r\n").await?;
    tls.shutdown().await
}

/// The [`FloorServer::Thread`] server: accept `n` watches, then write every
/// batch of waiting events to each of them in turn until `events` closes.
fn serve_thread(
    listener: std::net::TcpListener,
    cfg: Arc<rustls::ServerConfig>,
    n: usize,
    events: std::sync::mpsc::Receiver<Bytes>,
    writes: Arc<AtomicU64>,
) -> std::io::Result<()> {
    use std::io::Write;
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        let (mut tcp, _) = listener.accept()?;
        tcp.set_nodelay(true)?;
        let mut tls = rustls::ServerConnection::new(cfg.clone())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        watch_epoll::read_head(&mut tls, &mut tcp)?;
        tls.writer().write_all(RESPONSE_HEAD)?;
        while tls.wants_write() {
            tls.write_tls(&mut tcp)?;
        }
        tcp.set_nonblocking(true)?;
        conns.push((tcp, tls));
    }
    let mut out = Vec::new();
    while let Ok(first) = events.recv() {
        let mut batch = vec![first];
        batch.extend(events.try_iter());
        chunk(&batch, &mut out);
        for (tcp, tls) in conns.iter_mut() {
            tls.writer().write_all(&out)?;
            // A full socket keeps the rest in rustls until the next batch.
            while tls.wants_write() {
                match tls.write_tls(tcp) {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            writes.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Where the producer hands each event to the server.
enum Fanout {
    Tasks(broadcast::Sender<Bytes>),
    Thread(std::sync::mpsc::Sender<Bytes>),
}

impl Fanout {
    fn send(&self, ev: Bytes) {
        match self {
            Fanout::Tasks(tx) => {
                let _ = tx.send(ev);
            }
            Fanout::Thread(tx) => {
                let _ = tx.send(ev);
            }
        }
    }
}

/// Run the baseline.
pub fn run(spec: &FloorSpec) -> Result<FloorReport, Error> {
    if spec.watchers == 0 || spec.rate <= 0.0 {
        return Err(Error::Param("watchers and rate must be > 0".into()));
    }
    let total = (spec.rate * spec.duration.as_secs_f64()).round().max(1.0) as usize;
    let shared = Arc::new(Shared::new(total));
    let (server_cfg, client_cfg) = tls_pair()?;
    // The runtime runs the producer, and in Tokio mode the server too.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(match spec.server {
            FloorServer::Tokio => SERVER_THREADS,
            FloorServer::Thread => "floor-producer",
        })
        .enable_all()
        .build()
        .map_err(|e| Error::io("floor server runtime", e))?;
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| Error::io("bind 127.0.0.1:0", e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::io("local address", e))?;
    let writes = Arc::new(AtomicU64::new(0));
    let server_cfg = Arc::new(server_cfg);
    let (fanout, server_thread) = match spec.server {
        FloorServer::Tokio => {
            let (tx, _) = broadcast::channel::<Bytes>(4096);
            let acceptor = tokio_rustls::TlsAcceptor::from(server_cfg);
            let listener = {
                let _guard = rt.enter();
                listener
                    .set_nonblocking(true)
                    .and_then(|()| TcpListener::from_std(listener))
                    .map_err(|e| Error::io("listener", e))?
            };
            let (tx2, writes) = (tx.clone(), writes.clone());
            rt.spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let rx = tx2.subscribe();
                    tokio::spawn(serve_conn(tcp, acceptor.clone(), rx, writes.clone()));
                }
            });
            (Fanout::Tasks(tx), None)
        }
        FloorServer::Thread => {
            let (tx, rx) = std::sync::mpsc::channel();
            let (writes, n) = (writes.clone(), spec.watchers);
            let t = std::thread::Builder::new()
                .name(SERVER_THREADS.into())
                .spawn(move || serve_thread(listener, server_cfg, n, rx, writes))
                .map_err(|e| Error::io("spawn the server thread", e))?;
            (Fanout::Thread(tx), Some(t))
        }
    };

    // The readers, on their own thread, as in the watch step.
    let mut readers = Readers::spawn(
        Target::from_client_config(addr, Protocol::Http1, client_cfg),
        "/watch".into(),
        spec.watchers,
        NAME_PREFIX.into(),
        shared.clone(),
    )?;
    let watchers = rt
        .block_on(readers.opened())
        .map_err(|e| Error::Response(format!("no watch opened: {e}")))?;

    // Send the events at the rate asked, the same bytes to every watch.
    let (server0, reader0) = (threads_cpu_s(SERVER_THREADS), threads_cpu_s(READER_THREAD));
    let writes0 = writes.load(Ordering::Relaxed);
    let (rate, bytes, expected) = (spec.rate, spec.event_bytes, total as u64 * watchers);
    rt.block_on(async {
        let start = tokio::time::Instant::now();
        for i in 0..total {
            tokio::time::sleep_until(start + Duration::from_secs_f64(i as f64 / rate)).await;
            let line = event_line(i, bytes);
            let now = shared.clock.now_us();
            shared.set_times(i, now, now);
            fanout.send(line);
        }
        // Until the readers have everything (or 10 s more).
        let grace_end = tokio::time::Instant::now() + Duration::from_secs(10);
        while shared.received.load(Ordering::Relaxed) < expected
            && tokio::time::Instant::now() < grace_end
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let server_cpu_s = threads_cpu_s(SERVER_THREADS) - server0;
    let reader_cpu_s = threads_cpu_s(READER_THREAD) - reader0;
    let server_writes = writes.load(Ordering::Relaxed) - writes0;
    // Stop the readers before the server ends the watches.
    let r = readers.finish()?;
    drop(fanout);
    if let Some(t) = server_thread {
        match t.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(Error::io("floor server", e)),
            Err(_) => return Err(Error::Response("server thread panicked".into())),
        }
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    let scored = score(r.arrivals, &shared, None);
    Ok(FloorReport {
        watchers,
        events: total as u64,
        expected,
        received: scored.received,
        delay_us: scored.from_send,
        server_cpu_s,
        reader_cpu_s,
        server_writes,
        reader_errors: r.errors,
        first_error: r.first_error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::AddedMatcher;

    #[test]
    fn event_lines_have_the_size_asked_and_match_as_added() {
        let line = event_line(42, 1750);
        assert_eq!(line.len(), 1750);
        assert!(line.ends_with(b"\n"));
        let v: serde_json::Value = serde_json::from_slice(&line).unwrap();
        assert_eq!(v["object"]["metadata"]["name"], "bw-42");
        let m = AddedMatcher::new(NAME_PREFIX);
        assert_eq!(m.index(&line[..line.len() - 1]), Some(42));
    }

    #[test]
    fn a_small_fan_out_delivers_every_event() {
        for server in [FloorServer::Tokio, FloorServer::Thread] {
            small_fan_out(server);
        }
    }

    fn small_fan_out(server: FloorServer) {
        let r = run(&FloorSpec {
            watchers: 20,
            rate: 200.0,
            duration: Duration::from_millis(250),
            event_bytes: 600,
            server,
        })
        .unwrap();
        assert_eq!(r.watchers, 20);
        assert_eq!(r.events, 50);
        assert_eq!(r.received, r.expected, "{:?}", r.first_error);
        assert_eq!(r.reader_errors, 0, "{server:?}: {:?}", r.first_error);
        assert!(r.server_writes > 0);
    }
}
