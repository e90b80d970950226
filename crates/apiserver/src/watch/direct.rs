//! HTTP/1.1 watch requests served beside hyper. hyper reads each HTTP/1.1
//! connection through a [`Sniffer`], which follows the request heads and
//! bodies. A watch request is withheld from hyper until hyper has written
//! every earlier response; then the connection is taken from hyper, the watch
//! is answered here, and once the response head and the backlog are written,
//! the connection itself (socket and TLS session) goes to the
//! watch hub thread (`watch/hub.rs`), which writes its live events.
//!
//! Everything else (HTTP/2, other requests, a watch pipelined with more
//! requests) stays with hyper. A watch is still handled by
//! [`handler::handle`], so authentication, paths, selectors and errors are
//! those of every request; only who writes the body differs. The response
//! says `Connection: close`: the connection ends with the watch.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};

use axum::body::Body;
use axum::http::{self, HeaderMap, Request, Version};
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_rustls::server::TlsStream;

use super::hub::{chunk_head, Conn, Hub, LAST_CHUNK};
use super::Detachable;
use crate::auth::User;
use crate::handler::{self, App};

/// The longest request head looked at here (hyper judges longer ones).
const MAX_HEAD: usize = 64 * 1024;

/// Serves the watches of HTTP/1.1 connections.
#[derive(Clone)]
pub struct DirectWatches {
    hub: Arc<Hub>,
}

impl DirectWatches {
    /// Start the hub thread.
    pub fn start() -> io::Result<DirectWatches> {
        Ok(DirectWatches { hub: Hub::start()? })
    }

    /// Serve `req` (a watch the [`Sniffer`] handed over) on `tls`, which then
    /// belongs to the hub or is closed.
    pub async fn serve(
        &self,
        app: Arc<App>,
        user: Option<User>,
        req: Request<Body>,
        mut tls: TlsStream<TcpStream>,
    ) {
        let resp = handler::handle(app, user, req).await;
        let (parts, body) = resp.into_parts();
        let head = response_head(parts.status, &parts.headers);
        if tls.write_all(&head).await.is_err() {
            return;
        }
        let feed = parts
            .extensions
            .get::<Detachable>()
            .and_then(|d| Some((d.take()?, d.cache.clone())));
        match feed {
            Some((mut feed, cache)) => {
                while let Some(b) = feed.backlog_chunk() {
                    if write_chunk(&mut tls, &b).await.is_err() {
                        return;
                    }
                }
                if tls.flush().await.is_err() {
                    return;
                }
                let (tcp, tls) = tls.into_inner();
                match tcp.into_std() {
                    Ok(sock) => {
                        tracing::debug!(resource = feed.w.rt.plural, "watch handed to the hub");
                        self.hub.add(feed, &cache, Conn { sock, tls })
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot take over a watch socket"),
                }
            }
            None => {
                let mut body = body;
                while let Some(Ok(frame)) = body.frame().await {
                    if let Ok(data) = frame.into_data() {
                        if write_chunk(&mut tls, &data).await.is_err() {
                            return;
                        }
                    }
                }
                let _ = tls.write_all(LAST_CHUNK).await;
                let _ = tls.shutdown().await;
            }
        }
    }
}

/// What a complete request head asks for, as far as the [`Sniffer`] cares.
enum Head {
    /// A bodiless HTTP/1.1 GET watch.
    Watch(Box<Request<Body>>),
    /// Another request, with a body of this many bytes.
    Plain(u64),
    /// A request after which the bytes are no longer followed (a chunked
    /// body, an upgrade) or not HTTP/1.1 at all.
    Opaque,
}

fn classify(head: &[u8]) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut parsed = httparse::Request::new(&mut headers);
    match parsed.parse(head) {
        Ok(httparse::Status::Complete(n)) if n == head.len() => {}
        _ => return Head::Opaque,
    }
    let mut body = 0u64;
    let mut plain = false;
    for h in parsed.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            match std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse().ok())
            {
                Some(n) => body = n,
                None => return Head::Opaque,
            }
            plain = true;
        } else if h.name.eq_ignore_ascii_case("transfer-encoding")
            || h.name.eq_ignore_ascii_case("upgrade")
        {
            return Head::Opaque;
        } else if h.name.eq_ignore_ascii_case("expect") {
            plain = true;
        }
    }
    let watch = parsed.method == Some("GET")
        && parsed.version == Some(1)
        && !plain
        && parsed.path.is_some_and(is_watch);
    if !watch {
        return Head::Plain(body);
    }
    let mut b = Request::builder()
        .method(http::Method::GET)
        .uri(parsed.path.unwrap_or("/"))
        .version(Version::HTTP_11);
    for h in parsed.headers.iter() {
        b = b.header(h.name, h.value);
    }
    match b.body(Body::empty()) {
        Ok(req) => Head::Watch(Box::new(req)),
        Err(_) => Head::Plain(0),
    }
}

/// The request in `buf` when it is exactly one HTTP/1.1 GET watch with no body.
#[cfg(test)]
fn watch_request(buf: &[u8]) -> Option<Request<Body>> {
    match classify(buf) {
        Head::Watch(r) => Some(*r),
        _ => None,
    }
}

fn head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Whether the request target asks for a watch (`watch=true|1`, or the
/// legacy `/watch/` paths).
fn is_watch(target: &str) -> bool {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    path.contains("/watch/")
        || query.split('&').any(|kv| {
            matches!(
                kv.split_once('=').unwrap_or((kv, "")),
                ("watch", "true" | "1")
            )
        })
}

/// The response head, for a body sent in chunks on a connection that closes
/// after it.
fn response_head(status: http::StatusCode, headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(
        format!(
            "HTTP/1.1 {} {}\r\n",
            status.as_u16(),
            status.canonical_reason().unwrap_or("")
        )
        .as_bytes(),
    );
    for (name, value) in headers {
        if matches!(
            name.as_str(),
            "content-length" | "transfer-encoding" | "connection"
        ) {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    let date = chrono::Utc::now().format("%a, %d %b %Y %H:%M:%S GMT");
    out.extend_from_slice(
        format!("Date: {date}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    );
    out
}

async fn write_chunk<S: AsyncWrite + Unpin>(s: &mut S, data: &Bytes) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    let mut framed = Vec::with_capacity(data.len() + 16);
    framed.extend_from_slice(chunk_head(data.len()).as_bytes());
    framed.extend_from_slice(data);
    framed.extend_from_slice(b"\r\n");
    s.write_all(&framed).await
}

/// The responses of one HTTP/1.1 connection still being written by hyper,
/// and the connection's reader waiting for there to be none.
#[derive(Default)]
pub struct Flight {
    responses: AtomicUsize,
    waiting: parking_lot::Mutex<Option<Waker>>,
}

impl Flight {
    /// A request starts; its response is in flight until the guard is dropped
    /// (with the response's body, see [`Guarded`]).
    pub fn start(self: &Arc<Self>) -> FlightGuard {
        self.responses.fetch_add(1, Ordering::AcqRel);
        FlightGuard(self.clone())
    }

    fn idle(&self) -> bool {
        self.responses.load(Ordering::Acquire) == 0
    }

    fn wake(&self) {
        if let Some(w) = self.waiting.lock().take() {
            w.wake();
        }
    }
}

/// One response in flight.
pub struct FlightGuard(Arc<Flight>);

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if self.0.responses.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.wake();
        }
    }
}

/// A response body that keeps its response in flight until hyper is done
/// with it (when its connection is followed: no guard otherwise).
pub struct Guarded<B> {
    body: B,
    _guard: Option<FlightGuard>,
}

impl<B> Guarded<B> {
    pub fn new(body: B, guard: Option<FlightGuard>) -> Guarded<B> {
        Guarded {
            body,
            _guard: guard,
        }
    }
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for Guarded<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<hyper::body::Frame<B::Data>, B::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// A watch connection taken from hyper: the TLS stream, and the watch
/// request read from it.
pub struct Handover<S> {
    pub stream: S,
    pub request: Request<Body>,
}

enum Sniffing {
    /// At the start of a request: collecting its head.
    Head,
    /// Passing this many more bytes of a request (its head and body) to hyper.
    Pass(u64),
    /// Passing everything to hyper from now on.
    Transparent,
    /// A watch, withheld from hyper until its responses are all written.
    Watch(Box<Request<Body>>),
}

/// The stream hyper reads an HTTP/1.1 connection through. It follows the
/// requests' heads and bodies; when a request is a watch and hyper has
/// nothing in flight, it hands the connection over ([`Handover`]) and hyper
/// sees the client's end of the connection.
pub struct Sniffer<S> {
    inner: Option<S>,
    buf: BytesMut,
    state: Sniffing,
    flight: Arc<Flight>,
    /// Written since the last completed flush.
    dirty: bool,
    handover: Option<oneshot::Sender<Handover<S>>>,
}

impl<S: AsyncRead + Unpin> Sniffer<S> {
    pub fn new(
        stream: S,
        flight: Arc<Flight>,
        handover: oneshot::Sender<Handover<S>>,
    ) -> Sniffer<S> {
        Sniffer {
            inner: Some(stream),
            buf: BytesMut::new(),
            state: Sniffing::Head,
            flight,
            dirty: false,
            handover: Some(handover),
        }
    }

    /// Read more of the connection into `buf` (nothing added: its end).
    fn fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(s) = &mut self.inner else {
            return Poll::Ready(Ok(()));
        };
        let mut tmp = [0u8; 8192];
        let mut rb = ReadBuf::new(&mut tmp);
        ready!(Pin::new(s).poll_read(cx, &mut rb))?;
        self.buf.extend_from_slice(rb.filled());
        Poll::Ready(Ok(()))
    }

    /// Hand at most `max` buffered bytes to hyper.
    fn give(&mut self, out: &mut ReadBuf<'_>, max: u64) -> u64 {
        let k = self
            .buf
            .len()
            .min(out.remaining())
            .min(usize::try_from(max).unwrap_or(usize::MAX));
        out.put_slice(&self.buf[..k]);
        self.buf.advance(k);
        k as u64
    }
}

impl<S> Sniffer<S> {
    fn quiet(&self) -> bool {
        self.flight.idle() && !self.dirty
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Sniffer<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                Sniffing::Transparent => {
                    if !this.buf.is_empty() {
                        this.give(out, u64::MAX);
                        return Poll::Ready(Ok(()));
                    }
                    return match &mut this.inner {
                        Some(s) => Pin::new(s).poll_read(cx, out),
                        None => Poll::Ready(Ok(())),
                    };
                }
                Sniffing::Pass(0) => this.state = Sniffing::Head,
                Sniffing::Pass(n) => {
                    let mut n = *n;
                    if this.buf.is_empty() {
                        ready!(this.fill(cx))?;
                        if this.buf.is_empty() {
                            return Poll::Ready(Ok(()));
                        }
                    }
                    n -= this.give(out, n);
                    this.state = Sniffing::Pass(n);
                    return Poll::Ready(Ok(()));
                }
                Sniffing::Head => {
                    if let Some(end) = head_end(&this.buf) {
                        this.state = match classify(&this.buf[..end]) {
                            Head::Watch(req) if this.buf.len() == end => {
                                this.buf.clear();
                                Sniffing::Watch(req)
                            }
                            // Something pipelined behind it: hyper serves both.
                            Head::Watch(_) => Sniffing::Pass(end as u64),
                            Head::Plain(body) => Sniffing::Pass(end as u64 + body),
                            Head::Opaque => Sniffing::Transparent,
                        };
                        continue;
                    }
                    if this.buf.len() > MAX_HEAD {
                        this.state = Sniffing::Transparent;
                        continue;
                    }
                    let before = this.buf.len();
                    ready!(this.fill(cx))?;
                    if this.buf.len() == before {
                        if before == 0 {
                            return Poll::Ready(Ok(()));
                        }
                        // A partial head, then the end: hyper judges it.
                        this.state = Sniffing::Transparent;
                    }
                }
                Sniffing::Watch(_) => {
                    if !this.quiet() {
                        *this.flight.waiting.lock() = Some(cx.waker().clone());
                        if !this.quiet() {
                            return Poll::Pending;
                        }
                    }
                    let state = std::mem::replace(&mut this.state, Sniffing::Transparent);
                    if let (Sniffing::Watch(request), Some(stream), Some(tx)) =
                        (state, this.inner.take(), this.handover.take())
                    {
                        let _ = tx.send(Handover {
                            stream,
                            request: *request,
                        });
                    }
                    // The end of the connection, for hyper: it is the hub's now.
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

fn gone() -> io::Error {
    io::Error::new(
        io::ErrorKind::BrokenPipe,
        "connection handed to the watch hub",
    )
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Sniffer<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[io::IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let Some(s) = &mut self.inner else {
            return Poll::Ready(Err(gone()));
        };
        let r = ready!(Pin::new(s).poll_write_vectored(cx, bufs));
        if matches!(r, Ok(n) if n > 0) {
            self.dirty = true;
        }
        Poll::Ready(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.as_ref().is_some_and(|s| s.is_write_vectored())
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let Some(s) = &mut self.inner else {
            return Poll::Ready(Ok(()));
        };
        ready!(Pin::new(s).poll_flush(cx))?;
        self.dirty = false;
        if matches!(self.state, Sniffing::Watch(_)) {
            cx.waker().wake_by_ref();
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.inner {
            Some(s) => Pin::new(s).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_requests_are_recognized() {
        let req = watch_request(
            b"GET /api/v1/namespaces/default/pods?watch=true&resourceVersion=5 HTTP/1.1\r\nHost: x\r\nAccept: application/json\r\n\r\n",
        )
        .expect("a watch");
        assert_eq!(
            req.uri().path_and_query().map(|p| p.as_str()),
            Some("/api/v1/namespaces/default/pods?watch=true&resourceVersion=5")
        );
        assert_eq!(req.headers()["accept"], "application/json");
        assert!(watch_request(b"GET /api/v1/watch/pods HTTP/1.1\r\nHost: x\r\n\r\n").is_some());
        assert!(watch_request(b"GET /api/v1/pods?watch=1 HTTP/1.1\r\n\r\n").is_some());
    }

    #[test]
    fn other_requests_go_to_hyper() {
        for head in [
            &b"GET /api/v1/pods HTTP/1.1\r\nHost: x\r\n\r\n"[..],
            b"GET /api/v1/pods?watch=false HTTP/1.1\r\n\r\n",
            b"GET /api/v1/pods?watchx=true HTTP/1.1\r\n\r\n",
            b"POST /api/v1/pods?watch=true HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}",
            b"GET /api/v1/pods?watch=true HTTP/1.0\r\n\r\n",
            // Something pipelined behind the watch.
            b"GET /api/v1/pods?watch=true HTTP/1.1\r\n\r\nGET / HTTP/1.1\r\n\r\n",
            b"GET /api/v1/pods?watch=true HTTP/1.1\r\nUpgrade: websocket\r\n\r\n",
            b"GET /api/v1/pods?watch=true HTTP/1.1\r\nHost: x\r\n",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            b"\x16\x03\x01garbage\r\n\r\n",
        ] {
            assert!(
                watch_request(head).is_none(),
                "{}",
                String::from_utf8_lossy(head)
            );
        }
    }

    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const POST: &[u8] =
        b"POST /api/v1/namespaces/default/configmaps HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}";
    const WATCH: &[u8] = b"GET /api/v1/pods?watch=1 HTTP/1.1\r\nHost: x\r\n\r\n";

    type Pair = (
        tokio::io::DuplexStream,
        Sniffer<tokio::io::DuplexStream>,
        Arc<Flight>,
        oneshot::Receiver<Handover<tokio::io::DuplexStream>>,
    );

    fn pair() -> Pair {
        let (client, server) = tokio::io::duplex(1 << 16);
        let flight = Arc::new(Flight::default());
        let (tx, rx) = oneshot::channel();
        let sniffer = Sniffer::new(server, flight.clone(), tx);
        (client, sniffer, flight, rx)
    }

    async fn read_n(s: &mut Sniffer<tokio::io::DuplexStream>, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        tokio::time::timeout(Duration::from_secs(2), s.read_exact(&mut got))
            .await
            .expect("bytes in time")
            .expect("read");
        got
    }

    #[tokio::test]
    async fn a_watch_after_a_request_waits_for_its_response_then_leaves() {
        let (mut client, mut s, flight, mut rx) = pair();
        client.write_all(POST).await.unwrap();
        assert_eq!(read_n(&mut s, POST.len()).await, POST, "passed as is");
        let guard = flight.start();
        s.write_all(b"HTTP/1.1 201 Created\r\n").await.unwrap();
        client.write_all(WATCH).await.unwrap();
        let mut buf = [0u8; 64];
        // Withheld while the response is in flight, then while it is unflushed.
        assert!(
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf))
                .await
                .is_err()
        );
        drop(guard);
        assert!(
            tokio::time::timeout(Duration::from_millis(100), s.read(&mut buf))
                .await
                .is_err()
        );
        s.flush().await.unwrap();
        let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
            .await
            .expect("released")
            .unwrap();
        assert_eq!(n, 0, "hyper sees the end of the connection");
        let mut h = rx.try_recv().expect("handed over");
        assert_eq!(h.request.uri(), "/api/v1/pods?watch=1");
        assert_eq!(h.request.headers()["host"], "x");
        // The stream is the client's connection.
        h.stream.write_all(b"ok").await.unwrap();
        let head = b"HTTP/1.1 201 Created\r\n";
        let mut got = vec![0u8; head.len() + 2];
        tokio::time::timeout(Duration::from_secs(2), client.read_exact(&mut got))
            .await
            .expect("in time")
            .unwrap();
        assert_eq!(&got[head.len()..], b"ok");
        assert!(
            s.write_all(b"late").await.is_err(),
            "hyper can no longer write"
        );
    }

    #[tokio::test]
    async fn pipelined_or_opaque_requests_stay_with_hyper() {
        let (mut client, mut s, _flight, mut rx) = pair();
        let mut both = WATCH.to_vec();
        both.extend_from_slice(POST);
        client.write_all(&both).await.unwrap();
        assert_eq!(read_n(&mut s, both.len()).await, both);
        let chunked = b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
        client.write_all(chunked).await.unwrap();
        assert_eq!(read_n(&mut s, chunked.len()).await, chunked);
        // After a chunked body nothing more is followed: a watch passes too.
        client.write_all(WATCH).await.unwrap();
        assert_eq!(read_n(&mut s, WATCH.len()).await, WATCH);
        assert!(rx.try_recv().is_err());
    }
}
