//! `kubectl port-forward` on the agent: `/portForward/{namespace}/{pod}`.
//!
//! Three framings of the same thing (a TCP connection to `127.0.0.1:<port>`
//! inside the pod's network namespace):
//! - SPDY/3.1 after an HTTP/1.1 `Upgrade: SPDY/3.1` (`POST`, kubectl's
//!   fallback): every local connection opens an `error` and a `data` stream
//!   carrying `port` and `requestID` headers;
//! - the same SPDY tunnelled in WebSocket binary messages (subprotocol
//!   `SPDY/3.1+portforward.k8s.io`, kubectl 1.31+);
//! - the channel WebSocket the Python client uses (`?ports=80,443`; channel
//!   `2i` carries data for the i-th port, `2i+1` errors; the first message on
//!   each channel is the port, 2 bytes little-endian).
//!
//! The connection is made on a short-lived thread that has entered the pod's
//! network namespace (`setns`); the socket keeps that namespace afterwards.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use navarch_runtime::ContainerRuntime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

use crate::exec::normal_close;
use crate::spdy::{self, Frame, HeaderReader, HeaderWriter};

/// WebSocket subprotocol of SPDY tunnelled in WebSocket.
pub const SPDY_WS_PROTOCOL: &str = "SPDY/3.1+portforward.k8s.io";
/// The port-forward stream protocol negotiated over SPDY.
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Connect to `127.0.0.1:port` in the network namespace at `netns` (the
/// host's when `None`).
pub async fn connect_in_netns(netns: Option<PathBuf>, port: u16) -> std::io::Result<TcpStream> {
    let Some(netns) = netns else {
        return TcpStream::connect(("127.0.0.1", port)).await;
    };
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("portforward-connect".into())
        .spawn(move || {
            let _ = tx.send(connect_blocking(&netns, port));
        })?;
    let std = rx
        .await
        .map_err(|_| std::io::Error::other("connect thread died"))??;
    std.set_nonblocking(true)?;
    TcpStream::from_std(std)
}

fn connect_blocking(netns: &std::path::Path, port: u16) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(netns)?;
    // SAFETY: setns on this (throw-away) thread with a namespace fd we opened.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // Pods without a network plugin have a loopback that is still down;
    // bring it up as the CNI loopback plugin would (idempotent).
    if let Err(e) = loopback_up() {
        tracing::debug!(error = %e, "portforward: could not bring lo up");
    }
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(10))
}

/// Set `IFF_UP` on `lo` in the current thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: a plain datagram socket used only for interface ioctls.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: we own the new fd.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *d = *s as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = req.ifr_ifru.ifru_flags;
        let up = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if flags & up == up {
            return Ok(());
        }
        req.ifr_ifru.ifru_flags = flags | up;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

#[derive(Clone)]
pub(crate) struct PfState {
    runtime: Arc<dyn ContainerRuntime>,
}

/// How to reach ports of one pod.
#[derive(Clone, Debug)]
pub struct PodTarget {
    /// The pod's network namespace (`None`: host network).
    pub netns: Option<PathBuf>,
}

impl PodTarget {
    async fn connect(&self, port: u16) -> std::io::Result<TcpStream> {
        let s = connect_in_netns(self.netns.clone(), port).await?;
        let _ = s.set_nodelay(true);
        Ok(s)
    }
}

async fn pod_target(
    runtime: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
) -> Result<PodTarget, Response> {
    let c = crate::exec::find_container(runtime, ns, pod, None).await?;
    let sandboxes = runtime
        .list_sandboxes()
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let sb = sandboxes
        .into_iter()
        .find(|s| s.id == c.sandbox_id)
        .ok_or_else(|| text(StatusCode::NOT_FOUND, format!("pod {pod:?} has no sandbox")))?;
    Ok(PodTarget {
        netns: sb.netns_path,
    })
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [("content-type", "text/plain; charset=utf-8")], msg).into_response()
}

fn header_has(req: &Request, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

pub(crate) async fn handler(
    State(st): State<PfState>,
    UrlPath((ns, pod)): UrlPath<(String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    mut req: Request,
) -> Response {
    let target = match pod_target(st.runtime.as_ref(), &ns, &pod).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    if header_has(&req, header::UPGRADE, "websocket") {
        let ws = match WebSocketUpgrade::from_request(req, &()).await {
            Ok(ws) => ws,
            Err(e) => return e.into_response(),
        };
        let ws = ws.protocols([
            SPDY_WS_PROTOCOL,
            "v4.channel.k8s.io",
            "v5.channel.k8s.io",
            PORT_FORWARD_PROTOCOL,
        ]);
        let spdy = ws
            .selected_protocol()
            .is_some_and(|p| p == SPDY_WS_PROTOCOL);
        if spdy {
            return ws.on_upgrade(move |socket| async move {
                let (a, b) = tokio::io::duplex(256 * 1024);
                tokio::spawn(bridge_ws(socket, b));
                serve_spdy(a, target).await;
            });
        }
        let ports: Vec<u16> = pairs
            .iter()
            .filter(|(k, _)| k == "ports" || k == "port")
            .flat_map(|(_, v)| {
                v.split(',')
                    .map(str::trim)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .filter_map(|p| p.parse().ok())
            .collect();
        if ports.is_empty() {
            return text(
                StatusCode::BAD_REQUEST,
                "query parameter \"port\" is required".into(),
            );
        }
        return ws.on_upgrade(move |socket| serve_channels(socket, target, ports));
    }
    if header_has(&req, header::UPGRADE, "SPDY/3.1") {
        let wanted = header_has(
            &req,
            header::HeaderName::from_static("x-stream-protocol-version"),
            PORT_FORWARD_PROTOCOL,
        );
        if !wanted {
            return text(
                StatusCode::FORBIDDEN,
                format!("unable to upgrade: unable to negotiate protocol: client supports none of [{PORT_FORWARD_PROTOCOL}]"),
            );
        }
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            match on.await {
                Ok(io) => serve_spdy(hyper_util::rt::TokioIo::new(io), target).await,
                Err(e) => tracing::debug!(error = %e, "spdy upgrade failed"),
            }
        });
        return Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(header::CONNECTION, "Upgrade")
            .header(header::UPGRADE, "SPDY/3.1")
            .header("X-Stream-Protocol-Version", PORT_FORWARD_PROTOCOL)
            .body(axum::body::Body::empty())
            .unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "response".into()));
    }
    text(StatusCode::BAD_REQUEST, "Upgrade request required".into())
}

/// Carry a byte stream in WebSocket binary messages, both ways.
async fn bridge_ws(socket: WebSocket, io: tokio::io::DuplexStream) {
    let (mut sink, mut stream) = socket.split();
    let (mut rd, mut wr) = tokio::io::split(io);
    let up = async move {
        while let Some(Ok(m)) = stream.next().await {
            match m {
                Message::Binary(b) if wr.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = wr.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(Bytes::copy_from_slice(&buf[..n])))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = sink.send(normal_close()).await;
    };
    tokio::join!(up, down);
}

/// Frames our side sends; encoded in order by the writer task (which owns
/// the header compressor).
#[derive(Debug)]
enum Out {
    Reply(u32),
    Data(u32, Bytes, bool),
    Raw(Vec<u8>),
}

/// Serve one SPDY port-forward connection until the client goes away.
pub async fn serve_spdy<IO>(io: IO, target: PodTarget)
where
    IO: AsyncRead + AsyncWrite + Send + 'static,
{
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let writer = tokio::spawn(async move {
        let mut hw = HeaderWriter::default();
        while let Some(o) = rx.recv().await {
            let bytes = match o {
                Out::Reply(id) => {
                    let mut p = id.to_be_bytes().to_vec();
                    p.extend(hw.compress(&spdy::encode_headers(&[])));
                    spdy::control_frame(spdy::kind::SYN_REPLY, 0, &p)
                }
                Out::Data(id, d, fin) => spdy::data_frame(id, fin, &d),
                Out::Raw(b) => b,
            };
            if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    let mut hr = HeaderReader::default();
    let mut buf = BytesMut::with_capacity(64 * 1024);
    // data stream id -> sender into its socket (None = FIN)
    let mut sockets: HashMap<u32, mpsc::UnboundedSender<Option<Bytes>>> = HashMap::new();
    // requestID -> error stream id
    let mut errors: HashMap<String, u32> = HashMap::new();
    'conn: loop {
        loop {
            let frame = match spdy::parse_frame(&mut buf) {
                Ok(Some(f)) => f,
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(error = %e, "spdy: bad frame");
                    break 'conn;
                }
            };
            match frame {
                Frame::Data {
                    stream,
                    flags,
                    data,
                } => {
                    if let Some(s) = sockets.get(&stream) {
                        if !data.is_empty() {
                            let _ = s.send(Some(data));
                        }
                        if flags & spdy::FLAG_FIN != 0 {
                            let _ = s.send(None);
                            sockets.remove(&stream);
                        }
                    }
                }
                Frame::Control { kind, payload, .. } => match kind {
                    spdy::kind::SYN_STREAM => {
                        let Ok((id, block)) = spdy::syn_stream_parts(&payload) else {
                            break 'conn;
                        };
                        let headers =
                            match hr.decompress(&block).and_then(|b| spdy::decode_headers(&b)) {
                                Ok(h) => h,
                                Err(e) => {
                                    tracing::debug!(error = %e, "spdy: bad headers");
                                    break 'conn;
                                }
                            };
                        let _ = tx.send(Out::Reply(id));
                        let request = spdy::header(&headers, "requestid")
                            .unwrap_or("")
                            .to_string();
                        match spdy::header(&headers, "streamtype") {
                            Some("error") => {
                                errors.insert(request, id);
                            }
                            Some("data") => {
                                let port = spdy::header(&headers, "port")
                                    .and_then(|p| p.parse::<u16>().ok());
                                let err_stream = errors.remove(&request);
                                let (stx, srx) = mpsc::unbounded_channel();
                                sockets.insert(id, stx);
                                tokio::spawn(forward_stream(
                                    target.clone(),
                                    port,
                                    id,
                                    err_stream,
                                    srx,
                                    tx.clone(),
                                ));
                            }
                            _ => {
                                let _ = tx.send(Out::Raw(spdy::rst_stream(id, 1)));
                            }
                        }
                    }
                    spdy::kind::RST_STREAM if payload.len() >= 4 => {
                        let id =
                            u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                                & 0x7fff_ffff;
                        if let Some(s) = sockets.remove(&id) {
                            let _ = s.send(None);
                        }
                    }
                    spdy::kind::PING => {
                        let _ =
                            tx.send(Out::Raw(spdy::control_frame(spdy::kind::PING, 0, &payload)));
                    }
                    spdy::kind::GOAWAY => break 'conn,
                    _ => {}
                },
            }
        }
        match rd.read_buf(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
    }
    for (_, s) in sockets.drain() {
        let _ = s.send(None);
    }
    drop(tx);
    let _ = writer.await;
}

/// One forwarded connection: SPDY data stream `id` <-> the pod's `port`.
async fn forward_stream(
    target: PodTarget,
    port: Option<u16>,
    id: u32,
    err_stream: Option<u32>,
    mut from_client: mpsc::UnboundedReceiver<Option<Bytes>>,
    tx: mpsc::UnboundedSender<Out>,
) {
    let fail = |msg: String| {
        if let Some(e) = err_stream {
            let _ = tx.send(Out::Data(e, Bytes::from(msg), true));
        }
        let _ = tx.send(Out::Data(id, Bytes::new(), true));
    };
    let Some(port) = port else {
        fail("invalid port".into());
        return;
    };
    let sock = match target.connect(port).await {
        Ok(s) => s,
        Err(e) => {
            fail(format!(
                "failed to connect to localhost:{port} inside the pod: {e}"
            ));
            return;
        }
    };
    let (mut srd, mut swr) = sock.into_split();
    let to_socket = tokio::spawn(async move {
        while let Some(Some(b)) = from_client.recv().await {
            if swr.write_all(&b).await.is_err() {
                return;
            }
        }
        let _ = swr.shutdown().await;
    });
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match srd.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if tx
                    .send(Out::Data(id, Bytes::copy_from_slice(&buf[..n]), false))
                    .is_err()
                {
                    break;
                }
            }
        }
    }
    let _ = tx.send(Out::Data(id, Bytes::new(), true));
    if let Some(e) = err_stream {
        let _ = tx.send(Out::Data(e, Bytes::new(), true));
    }
    to_socket.abort();
}

/// The channel WebSocket form (Python client).
async fn serve_channels(socket: WebSocket, target: PodTarget, ports: Vec<u16>) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Message>();
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
    });
    let frame = |ch: u8, b: &[u8]| {
        let mut v = Vec::with_capacity(b.len() + 1);
        v.push(ch);
        v.extend_from_slice(b);
        Message::Binary(Bytes::from(v))
    };
    let mut writers = Vec::new();
    let mut pumps = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let _ = tx.send(frame(data_ch, &port.to_le_bytes()));
        let _ = tx.send(frame(data_ch + 1, &port.to_le_bytes()));
        match target.connect(*port).await {
            Ok(s) => {
                let (mut rd, wr) = s.into_split();
                writers.push(Some(wr));
                let tx = tx.clone();
                pumps.push(tokio::spawn(async move {
                    let mut buf = vec![0u8; 32 * 1024];
                    loop {
                        match rd.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if tx.send(frame(data_ch, &buf[..n])).is_err() {
                                    break;
                                }
                            }
                        }
                    }
                }));
            }
            Err(e) => {
                writers.push(None);
                let msg = format!("failed to connect to localhost:{port} inside the pod: {e}");
                let _ = tx.send(frame(data_ch + 1, msg.as_bytes()));
            }
        }
    }
    let inbound = async {
        while let Some(data) = crate::exec::next_payload(&mut stream).await {
            let Some((&ch, payload)) = data.split_first() else {
                continue;
            };
            if ch % 2 != 0 {
                continue;
            }
            if let Some(Some(w)) = writers.get_mut(ch as usize / 2) {
                if w.write_all(payload).await.is_err() {
                    writers[ch as usize / 2] = None;
                }
            }
        }
    };
    tokio::select! {
        _ = inbound => {}
        _ = futures::future::join_all(pumps) => {}
    }
    let _ = tx.send(normal_close());
    drop(tx);
    let _ = writer.await;
}

/// The port-forward route (merged into the agent's HTTPS router).
pub fn router(runtime: Arc<dyn ContainerRuntime>) -> axum::Router {
    axum::Router::new()
        .route(
            "/portForward/{namespace}/{pod}",
            axum::routing::any(handler),
        )
        .with_state(PfState { runtime })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kubectl-like SPDY client over an in-memory pipe, forwarding to a
    /// local echo-once server on the host network.
    #[tokio::test]
    async fn spdy_session_forwards_a_connection() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut req = vec![0u8; 5];
            s.read_exact(&mut req).await.unwrap();
            s.write_all(b"pong:").await.unwrap();
            s.write_all(&req).await.unwrap();
        });
        let (client, server) = tokio::io::duplex(64 * 1024);
        tokio::spawn(serve_spdy(server, PodTarget { netns: None }));
        let (mut crd, mut cwr) = tokio::io::split(client);
        // Header blocks from the client, compressed with stored blocks (any
        // zlib stream is valid input).
        let mut hw = HeaderWriter::default();
        let p = port.to_string();
        for (id, ty) in [(1u32, "error"), (3u32, "data")] {
            let block =
                spdy::encode_headers(&[("streamtype", ty), ("port", &p), ("requestid", "0")]);
            let mut payload = id.to_be_bytes().to_vec();
            payload.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            payload.extend(hw.compress(&block));
            cwr.write_all(&spdy::control_frame(spdy::kind::SYN_STREAM, 0, &payload))
                .await
                .unwrap();
        }
        cwr.write_all(&spdy::data_frame(3, false, b"hello"))
            .await
            .unwrap();
        cwr.write_all(&spdy::control_frame(
            spdy::kind::PING,
            0,
            &9u32.to_be_bytes(),
        ))
        .await
        .unwrap();
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut replies = 0;
        let mut pinged = false;
        let mut data_fin = false;
        let mut error_fin = false;
        while !(data_fin && error_fin) {
            while let Some(f) = spdy::parse_frame(&mut buf).unwrap() {
                match f {
                    Frame::Control {
                        kind: spdy::kind::SYN_REPLY,
                        ..
                    } => replies += 1,
                    Frame::Control {
                        kind: spdy::kind::PING,
                        payload,
                        ..
                    } => {
                        assert_eq!(&payload[..], &9u32.to_be_bytes());
                        pinged = true;
                    }
                    Frame::Data {
                        stream: 3,
                        flags,
                        data,
                    } => {
                        got.extend_from_slice(&data);
                        data_fin |= flags & spdy::FLAG_FIN != 0;
                    }
                    Frame::Data {
                        stream: 1,
                        flags,
                        data,
                    } => {
                        assert!(data.is_empty(), "error: {data:?}");
                        error_fin |= flags & spdy::FLAG_FIN != 0;
                    }
                    other => panic!("unexpected {other:?}"),
                }
            }
            if data_fin && error_fin {
                break;
            }
            let n = tokio::time::timeout(Duration::from_secs(5), crd.read_buf(&mut buf))
                .await
                .unwrap()
                .unwrap();
            assert!(n > 0, "connection closed early");
        }
        assert_eq!(replies, 2);
        assert!(pinged);
        assert_eq!(got, b"pong:hello");
    }

    #[tokio::test]
    async fn refused_port_is_reported_on_the_error_stream() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (_ctx, crx) = mpsc::unbounded_channel();
        forward_stream(PodTarget { netns: None }, Some(port), 3, Some(1), crx, tx).await;
        match rx.recv().await.unwrap() {
            Out::Data(1, msg, true) => {
                assert!(String::from_utf8_lossy(&msg).contains("failed to connect"))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(rx.recv().await.unwrap(), Out::Data(3, _, true)));
    }
}
