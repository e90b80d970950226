//! The watch step's readers on one thread: an epoll loop (mio) over all watch
//! connections, rustls driven by hand, HTTP/1.1 with the chunked body decoded
//! here. No async runtime, no task per watch.
//!
//! Why: the watchers run on the same two cores as the server. With a task per
//! watch on a multi-threaded runtime, the readers' own scheduling adds to the
//! measured delays (see "Watch fan-out: the floor" in `docs/performance.md`).
//! One thread reading every connection in turn is how a lean client reads many
//! sockets, and it leaves the server the other core.

use std::io::{ErrorKind, Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mio::{Events, Interest, Poll, Token};
use rustls::ClientConnection;

use crate::client::Target;
use crate::error::Error;
use crate::objects::AddedMatcher;
use crate::watch::{Lines, Shared};

/// A chunked transfer-coding decoder (RFC 9112 §7.1), enough for a watch
/// body: sizes with optional extensions, no trailers expected.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    #[default]
    Size,
    /// This many data bytes left in the chunk.
    Data(usize),
    /// The CRLF after a chunk's data.
    DataEnd,
    /// The last (zero-size) chunk was seen: the body ended.
    Done,
}

impl Chunked {
    /// Decode `input`, handing the body's bytes to `out`. Returns whether the
    /// body has ended.
    pub(crate) fn feed(
        &mut self,
        mut input: &[u8],
        mut out: impl FnMut(&[u8]),
    ) -> Result<bool, String> {
        while !input.is_empty() && self.state != ChunkState::Done {
            match self.state {
                ChunkState::Size | ChunkState::DataEnd => {
                    let Some(nl) = memchr::memchr(b'\n', input) else {
                        self.line.extend_from_slice(input);
                        if self.line.len() > 1024 {
                            return Err("chunk-size line too long".into());
                        }
                        return Ok(false);
                    };
                    self.line.extend_from_slice(&input[..nl]);
                    input = &input[nl + 1..];
                    if self.state == ChunkState::DataEnd {
                        if self.line.iter().any(|b| *b != b'\r') {
                            return Err("no CRLF after chunk data".into());
                        }
                        self.state = ChunkState::Size;
                    } else {
                        let text =
                            std::str::from_utf8(&self.line).map_err(|_| "chunk size not ASCII")?;
                        let hex = text.split(';').next().unwrap_or("").trim();
                        let size = usize::from_str_radix(hex, 16)
                            .map_err(|_| format!("bad chunk size {hex:?}"))?;
                        self.state = if size == 0 {
                            ChunkState::Done
                        } else {
                            ChunkState::Data(size)
                        };
                    }
                    self.line.clear();
                }
                ChunkState::Data(left) => {
                    let take = left.min(input.len());
                    out(&input[..take]);
                    input = &input[take..];
                    self.state = if take == left {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left - take)
                    };
                }
                ChunkState::Done => {}
            }
        }
        Ok(self.state == ChunkState::Done)
    }
}

/// One watch connection.
struct Watch {
    sock: mio::net::TcpStream,
    tls: ClientConnection,
    body: Chunked,
    lines: Lines,
    open: bool,
}

/// What the reader thread saw.
pub(crate) struct EpollResult {
    /// (pod index, arrival µs) for every bench pod's ADDED event.
    pub arrivals: Vec<(u64, u64)>,
    /// Watches that failed or ended before the stop.
    pub errors: u64,
    pub first_error: Option<String>,
}

fn io_err(what: &str) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(what.to_string(), e)
}

/// Drive a blocking TLS connection until the peer's HTTP head (request or
/// response, up to its blank line) is in. Returns what was read, which may go
/// on past the head, and where the head ends. Used by the readers here and by
/// the baseline's one-thread server ([`crate::floor`]).
pub(crate) fn read_head<D>(
    tls: &mut rustls::ConnectionCommon<D>,
    sock: &mut TcpStream,
) -> std::io::Result<(Vec<u8>, usize)> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(at) = memchr::memmem::find(&head, b"\r\n\r\n") {
            return Ok((head, at + 4));
        }
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("HTTP head too long"));
        }
        tls.complete_io(sock)?;
        loop {
            match tls.reader().read(&mut buf) {
                Ok(0) => {
                    return Err(std::io::Error::other(
                        "connection closed before the HTTP head",
                    ))
                }
                Ok(n) => head.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Open one watch: TCP, TLS handshake, the GET, and the response head
/// (blocking). Returns the connection with any body bytes already read fed to
/// the decoder.
fn open(
    target: &Target,
    path: &str,
    matcher: &AddedMatcher,
    shared: &Shared,
    arrivals: &mut Vec<(u64, u64)>,
) -> Result<Watch, Error> {
    let mut sock = TcpStream::connect(target.addr()).map_err(io_err("connect"))?;
    sock.set_nodelay(true).map_err(io_err("set_nodelay"))?;
    // Opening is blocking: a server that never answers fails it instead of hanging.
    sock.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(io_err("set_read_timeout"))?;
    let mut tls = ClientConnection::new(target.http1_tls_config(), target.server_name())?;
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nAccept: application/json\r\nUser-Agent: navarch-loadgen\r\n\r\n",
        target.addr()
    );
    tls.writer()
        .write_all(req.as_bytes())
        .map_err(io_err("request"))?;
    let (head, end) = read_head(&mut tls, &mut sock).map_err(io_err("response head"))?;
    let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
    if !text.starts_with("http/1.1 200") {
        let first = text.lines().next().unwrap_or("").to_string();
        let body = String::from_utf8_lossy(&head[end..]).into_owned();
        return Err(Error::Response(format!("watch answered {first}: {body}")));
    }
    if !text.contains("\r\ntransfer-encoding: chunked\r\n") {
        return Err(Error::Response("watch response is not chunked".into()));
    }
    sock.set_nonblocking(true)
        .map_err(io_err("set_nonblocking"))?;
    let mut w = Watch {
        sock: mio::net::TcpStream::from_std(sock),
        tls,
        body: Chunked::default(),
        lines: Lines::default(),
        open: true,
    };
    let now = shared.clock.now_us();
    deliver(&mut w, &head[end..], now, matcher, shared, arrivals).map_err(Error::Response)?;
    Ok(w)
}

/// Feed body bytes through the chunk decoder and the line splitter.
fn deliver(
    w: &mut Watch,
    bytes: &[u8],
    now: u64,
    matcher: &AddedMatcher,
    shared: &Shared,
    arrivals: &mut Vec<(u64, u64)>,
) -> Result<(), String> {
    let lines = &mut w.lines;
    let ended = w.body.feed(bytes, |data| {
        lines.feed(data, |line| {
            if let Some(i) = matcher.index(line) {
                arrivals.push((i, now));
                shared.received.fetch_add(1, Ordering::Relaxed);
            }
        })
    })?;
    if ended {
        return Err("watch stream ended early".into());
    }
    Ok(())
}

/// Read everything a readable connection has.
fn drain(
    w: &mut Watch,
    plain: &mut [u8],
    matcher: &AddedMatcher,
    shared: &Shared,
    arrivals: &mut Vec<(u64, u64)>,
) -> Result<(), String> {
    loop {
        match w.tls.read_tls(&mut w.sock) {
            Ok(0) => return Err("connection closed".into()),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("read: {e}")),
        }
        w.tls
            .process_new_packets()
            .map_err(|e| format!("TLS: {e}"))?;
        let now = shared.clock.now_us();
        loop {
            match w.tls.reader().read(plain) {
                Ok(0) => return Err("TLS session closed".into()),
                Ok(n) => deliver(w, &plain[..n], now, matcher, shared, arrivals)?,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(format!("TLS read: {e}")),
            }
        }
    }
}

/// Name of the reader thread (the baseline measures its CPU by it).
pub(crate) const READER_THREAD: &str = "watch-epoll";

/// The reader thread, from its start to its result.
pub(crate) struct Readers {
    thread: std::thread::JoinHandle<EpollResult>,
    stop: Arc<AtomicBool>,
    ready: Option<tokio::sync::oneshot::Receiver<Result<u64, String>>>,
}

impl Readers {
    /// Start the thread: it opens `n` watches on `path`, then reads them.
    pub(crate) fn spawn(
        target: Target,
        path: String,
        n: usize,
        prefix: String,
        shared: Arc<Shared>,
    ) -> Result<Readers, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        let stop2 = stop.clone();
        let thread = std::thread::Builder::new()
            .name(READER_THREAD.into())
            .spawn(move || run(target, path, n, prefix, shared, ready_tx, stop2))
            .map_err(|e| Error::io("spawn the watch reader thread", e))?;
        Ok(Readers {
            thread,
            stop,
            ready: Some(ready_rx),
        })
    }

    /// Wait (up to 120 s) until the watches are open: how many, or why none.
    pub(crate) async fn opened(&mut self) -> Result<u64, String> {
        let Some(rx) = self.ready.take() else {
            return Err("already waited for".into());
        };
        match tokio::time::timeout(Duration::from_secs(120), rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("watch reader thread ended".into()),
            Err(_) => Err("watches not open after 120 s".into()),
        }
    }

    /// Stop reading and return what was read (blocks until the thread ends,
    /// within one poll interval).
    pub(crate) fn finish(self) -> Result<EpollResult, Error> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .join()
            .map_err(|_| Error::Response("watch reader thread panicked".into()))
    }
}

/// Open `n` watches on `path`, then read them on this thread until `stop`.
/// `ready` gets the number of watches opened (or the first error, if none
/// could be) once they all are.
fn run(
    target: Target,
    path: String,
    n: usize,
    prefix: String,
    shared: Arc<Shared>,
    ready: tokio::sync::oneshot::Sender<Result<u64, String>>,
    stop: Arc<AtomicBool>,
) -> EpollResult {
    let matcher = AddedMatcher::new(&prefix);
    let mut r = EpollResult {
        arrivals: Vec::new(),
        errors: 0,
        first_error: None,
    };
    let fail = |r: &mut EpollResult, e: String| {
        r.errors += 1;
        r.first_error.get_or_insert(e);
    };
    let mut poll = match Poll::new() {
        Ok(p) => p,
        Err(e) => {
            let _ = ready.send(Err(format!("epoll: {e}")));
            return r;
        }
    };
    let mut watches = Vec::with_capacity(n);
    for _ in 0..n {
        match open(&target, &path, &matcher, &shared, &mut r.arrivals) {
            Ok(mut w) => {
                let token = Token(watches.len());
                match poll
                    .registry()
                    .register(&mut w.sock, token, Interest::READABLE)
                {
                    Ok(()) => watches.push(w),
                    Err(e) => fail(&mut r, format!("epoll register: {e}")),
                }
            }
            Err(e) => fail(&mut r, e.to_string()),
        }
    }
    let opened = watches.len() as u64;
    if opened == 0 {
        let _ = ready.send(Err(r.first_error.clone().unwrap_or_default()));
        return r;
    }
    let _ = ready.send(Ok(opened));
    let mut events = Events::with_capacity(1024);
    let mut plain = vec![0u8; 64 * 1024];
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = poll.poll(&mut events, Some(Duration::from_millis(20))) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            fail(&mut r, format!("epoll wait: {e}"));
            break;
        }
        for ev in events.iter() {
            let Some(w) = watches.get_mut(ev.token().0) else {
                continue;
            };
            if !w.open {
                continue;
            }
            if let Err(e) = drain(w, &mut plain, &matcher, &shared, &mut r.arrivals) {
                w.open = false;
                let _ = poll.registry().deregister(&mut w.sock);
                fail(&mut r, e);
            }
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::Chunked;

    fn decode(parts: &[&[u8]]) -> (Vec<u8>, bool) {
        let mut c = Chunked::default();
        let mut out = Vec::new();
        let mut done = false;
        for p in parts {
            done = c.feed(p, |d| out.extend_from_slice(d)).unwrap();
        }
        (out, done)
    }

    #[test]
    fn chunks_split_anywhere_decode_the_same() {
        let body = b"5\r\nhello\r\n7;ext=1\r\n, world\r\n0\r\n\r\n";
        assert_eq!(decode(&[body]), (b"hello, world".to_vec(), true));
        let parts: Vec<&[u8]> = body.chunks(1).collect();
        assert_eq!(decode(&parts), (b"hello, world".to_vec(), true));
        let (out, done) = decode(&[&body[..9], &body[9..20]]);
        assert_eq!(out, b"hello,");
        assert!(!done);
    }

    #[test]
    fn bad_chunk_framing_is_an_error() {
        let mut c = Chunked::default();
        assert!(c.feed(b"zz\r\n", |_| {}).is_err());
        let mut c = Chunked::default();
        assert!(c.feed(b"2\r\nabX\r\n", |_| {}).is_err());
    }
}
