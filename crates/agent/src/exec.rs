//! `kubectl exec` and `kubectl attach` on the agent: the kubelet paths
//! `/exec/{namespace}/{pod}/{container}?command=..&stdin&stdout&stderr&tty` and
//! `/attach/{namespace}/{pod}/{container}` over WebSocket with the channel
//! protocol (`v5.channel.k8s.io`, else `v4.channel.k8s.io`).
//!
//! Every binary message is `[channel][payload]`: 0 stdin, 1 stdout, 2 stderr,
//! 3 error (one JSON `Status` when the command ends), 4 resize
//! (`{"Width":..,"Height":..}`) and, in v5 only, 255 close (`ff 00` = the client
//! closed its stdin). WebSocket pings are answered by the WebSocket layer.
//!
//! Attach to a container with `stdin` or `tty` goes through its shim's attach
//! socket ([`ContainerRuntime::attach`]): live output, stdin (closed for good after
//! the first client closes its own when the container has `stdinOnce`) and terminal
//! resizes. A container with neither only has its log, so attach streams the
//! log's new lines.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequest, Path as UrlPath, Query, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use navarch_runtime::{ContainerRuntime, ContainerState, ExecProcess, ExecRequest};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::labels;

/// The channel subprotocols we speak, preferred first.
pub const CHANNEL_PROTOCOLS: [&str; 2] = ["v5.channel.k8s.io", "v4.channel.k8s.io"];

/// Channel numbers of the remote command protocol.
pub mod channel {
    /// Client to server: the command's stdin.
    pub const STDIN: u8 = 0;
    /// Server to client: stdout.
    pub const STDOUT: u8 = 1;
    /// Server to client: stderr.
    pub const STDERR: u8 = 2;
    /// Server to client: the final `Status`.
    pub const ERROR: u8 = 3;
    /// Client to server: terminal size.
    pub const RESIZE: u8 = 4;
    /// v5: the client closed a channel (payload = that channel).
    pub const CLOSE: u8 = 255;
}

/// Options of an exec or attach request (kubelet's query parameters).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// `command=` (repeated).
    pub command: Vec<String>,
    /// Connect stdin.
    pub stdin: bool,
    /// Send stdout (default on).
    pub stdout: bool,
    /// Send stderr (default on; off with a TTY).
    pub stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
}

impl StreamOptions {
    /// Parse the query pairs; `true`, `1` and an empty value mean on.
    pub fn from_pairs(pairs: &[(String, String)]) -> StreamOptions {
        let flag = |name: &str| {
            pairs
                .iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| matches!(v.as_str(), "true" | "1" | ""))
        };
        let tty = flag("tty").unwrap_or(false);
        StreamOptions {
            command: pairs
                .iter()
                .filter(|(k, _)| k == "command")
                .map(|(_, v)| v.clone())
                .collect(),
            stdin: flag("stdin").unwrap_or(false),
            stdout: flag("stdout").unwrap_or(true),
            stderr: flag("stderr").unwrap_or(true) && !tty,
            tty,
        }
    }
}

/// A terminal size message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize)]
pub struct TerminalSize {
    /// Columns.
    #[serde(rename = "Width")]
    pub width: u16,
    /// Rows.
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The JSON `Status` sent on the error channel for an exit code.
pub fn exit_status(code: i32, argv: &[String]) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// A `Status` for an internal error (the command could not run).
pub fn error_status(message: &str) -> serde_json::Value {
    json!({"metadata": {}, "status": "Failure", "message": message, "reason": "InternalError", "code": 500})
}

/// One decoded client message.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound {
    /// Bytes for stdin.
    Stdin(Bytes),
    /// The client closed its stdin.
    CloseStdin,
    /// New terminal size.
    Resize(TerminalSize),
    /// Anything else (ignored).
    Other,
}

/// Decode a binary (or, from the Python client, text) channel message.
pub fn decode_inbound(data: &[u8]) -> Inbound {
    let Some((&ch, payload)) = data.split_first() else {
        return Inbound::Other;
    };
    match ch {
        channel::STDIN => Inbound::Stdin(Bytes::copy_from_slice(payload)),
        channel::RESIZE => serde_json::from_slice(payload)
            .map(Inbound::Resize)
            .unwrap_or(Inbound::Other),
        channel::CLOSE if payload.first() == Some(&channel::STDIN) => Inbound::CloseStdin,
        _ => Inbound::Other,
    }
}

/// The payload of the client's next data message (text too: the Python client
/// sends text frames); `None` once it closes or the connection ends.
pub(crate) async fn next_payload<S, E>(stream: &mut S) -> Option<Bytes>
where
    S: futures::Stream<Item = Result<Message, E>> + Unpin,
{
    while let Some(Ok(m)) = stream.next().await {
        match m {
            Message::Binary(b) => return Some(b),
            Message::Text(t) => return Some(Bytes::copy_from_slice(t.as_str().as_bytes())),
            Message::Close(_) => return None,
            _ => continue,
        }
    }
    None
}

fn frame(ch: u8, payload: &[u8]) -> Message {
    let mut v = Vec::with_capacity(payload.len() + 1);
    v.push(ch);
    v.extend_from_slice(payload);
    Message::Binary(Bytes::from(v))
}

#[derive(Clone)]
pub(crate) struct ExecState {
    pub(crate) runtime: Arc<dyn ContainerRuntime>,
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [("content-type", "text/plain; charset=utf-8")], msg).into_response()
}

/// The id and state of the newest instance of `ns/pod/container`.
pub(crate) async fn find_container(
    runtime: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
    container: Option<&str>,
) -> Result<navarch_runtime::ContainerStatus, Response> {
    let all = runtime
        .list_containers()
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    all.into_iter()
        .filter(|c| {
            c.labels.get(labels::POD_NAMESPACE).map(String::as_str) == Some(ns)
                && c.labels.get(labels::POD_NAME).map(String::as_str) == Some(pod)
                && container.is_none_or(|n| {
                    c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(n)
                })
        })
        .max_by(|a, b| {
            a.attempt
                .cmp(&b.attempt)
                .then(a.created_at.cmp(&b.created_at))
        })
        .ok_or_else(|| {
            text(
                StatusCode::NOT_FOUND,
                format!(
                    "container {:?} in pod {pod:?} is not available",
                    container.unwrap_or("")
                ),
            )
        })
}

async fn upgrade(req: Request) -> Result<(WebSocketUpgrade, bool), Response> {
    let ws = WebSocketUpgrade::from_request(req, &())
        .await
        .map_err(IntoResponse::into_response)?
        .protocols(CHANNEL_PROTOCOLS);
    let v5 = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some("v5.channel.k8s.io") => true,
        Some(_) => false,
        None => {
            return Err(text(
                StatusCode::BAD_REQUEST,
                format!("websocket subprotocol must be one of {CHANNEL_PROTOCOLS:?}"),
            ))
        }
    };
    Ok((ws, v5))
}

pub(crate) async fn exec_handler(
    State(st): State<ExecState>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let opts = StreamOptions::from_pairs(&pairs);
    if opts.command.is_empty() {
        return text(
            StatusCode::BAD_REQUEST,
            "you must specify at least one command for the container".into(),
        );
    }
    let c = match find_container(st.runtime.as_ref(), &ns, &pod, Some(&container)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if c.state != ContainerState::Running {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is not running"),
        );
    }
    let (ws, v5) = match upgrade(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let runtime = st.runtime.clone();
    ws.on_upgrade(move |socket| async move {
        let request = ExecRequest {
            argv: opts.command.clone(),
            tty: opts.tty,
            stdin: opts.stdin,
            size: None,
        };
        match runtime.exec_stream(&c.id, &request).await {
            Ok(p) => run_exec(socket, p, &opts, v5).await,
            Err(e) => {
                let mut socket = socket;
                let status = error_status(&e.to_string()).to_string();
                let _ = socket.send(frame(channel::ERROR, status.as_bytes())).await;
                let _ = socket.send(normal_close()).await;
            }
        }
    })
}

/// Drive one exec over `socket` until the command ends.
pub async fn run_exec(socket: WebSocket, mut p: ExecProcess, opts: &StreamOptions, v5: bool) {
    let _ = v5;
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Message>(64);
    let writer = tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            let close = matches!(m, Message::Close(_));
            if sink.send(m).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut pumps = Vec::new();
    for (reader, ch, wanted) in [
        (p.stdout.take(), channel::STDOUT, opts.stdout),
        (p.stderr.take(), channel::STDERR, opts.stderr),
    ] {
        let Some(mut reader) = reader else { continue };
        let tx = tx.clone();
        pumps.push(tokio::spawn(async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match reader.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if wanted && tx.send(frame(ch, &buf[..n])).await.is_err() {
                            break;
                        }
                    }
                }
            }
        }));
    }
    let mut stdin = p.stdin.take();
    let resizer = p.resizer.clone();
    let reader = tokio::spawn(async move {
        while let Some(data) = next_payload(&mut stream).await {
            match decode_inbound(&data) {
                Inbound::Stdin(b) => {
                    if let Some(w) = stdin.as_mut() {
                        if w.write_all(&b).await.is_err() || w.flush().await.is_err() {
                            stdin = None;
                        }
                    }
                }
                Inbound::CloseStdin => {
                    if let Some(mut w) = stdin.take() {
                        let _ = w.shutdown().await;
                    }
                }
                Inbound::Resize(size) => {
                    if let Some(r) = &resizer {
                        let _ = r.resize(size.width, size.height);
                    }
                }
                Inbound::Other => {}
            }
        }
    });
    let code = p.exit.await;
    // Let the output drain (a background child may hold the pipes open).
    let _ = tokio::time::timeout(Duration::from_secs(2), futures::future::join_all(pumps)).await;
    let status = match code {
        Ok(c) => exit_status(c, &opts.command),
        Err(e) => error_status(&e.to_string()),
    };
    let _ = tx
        .send(frame(channel::ERROR, status.to_string().as_bytes()))
        .await;
    let _ = tx.send(normal_close()).await;
    drop(tx);
    let _ = writer.await;
    reader.abort();
}

pub(crate) async fn attach_handler(
    State(st): State<ExecState>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(pairs): Query<Vec<(String, String)>>,
    req: Request,
) -> Response {
    let opts = StreamOptions::from_pairs(&pairs);
    let c = match find_container(st.runtime.as_ref(), &ns, &pod, Some(&container)).await {
        Ok(c) => c,
        Err(r) => return r,
    };
    if c.state != ContainerState::Running {
        return text(
            StatusCode::BAD_REQUEST,
            format!("container {container:?} in pod {pod:?} is not running"),
        );
    }
    let (ws, _v5) = match upgrade(req).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let runtime = st.runtime.clone();
    ws.on_upgrade(move |socket| run_attach(socket, runtime, c, opts))
}

/// Attach through the shim when the container has stdin or a TTY, else follow its log.
async fn run_attach(
    socket: WebSocket,
    runtime: Arc<dyn ContainerRuntime>,
    c: navarch_runtime::ContainerStatus,
    opts: StreamOptions,
) {
    match runtime.attach(&c.id).await {
        Ok(Some(session)) => run_attach_session(socket, session, opts).await,
        Ok(None) => follow_log(socket, runtime, c, opts).await,
        Err(e) => {
            let mut socket = socket;
            let status = error_status(&e.to_string()).to_string();
            let _ = socket.send(frame(channel::ERROR, status.as_bytes())).await;
            let _ = socket.send(normal_close()).await;
        }
    }
}

/// Bridge the WebSocket and a shim attach session until the container exits or
/// the client leaves.
async fn run_attach_session(
    socket: WebSocket,
    session: navarch_runtime::AttachSession,
    opts: StreamOptions,
) {
    use navarch_runtime::AttachFrame;
    let (mut sink, mut stream) = socket.split();
    let navarch_runtime::AttachSession {
        mut reader,
        mut writer,
        tty,
        stdin: has_stdin,
    } = session;
    let use_stdin = opts.stdin && has_stdin;
    let input = tokio::spawn(async move {
        let mut stdin_open = use_stdin;
        while let Some(data) = next_payload(&mut stream).await {
            let sent = match decode_inbound(&data) {
                Inbound::Stdin(b) if stdin_open => writer.stdin(&b).await,
                Inbound::CloseStdin if stdin_open => {
                    stdin_open = false;
                    writer.close_stdin().await
                }
                Inbound::Resize(size) if tty => writer.resize(size.width, size.height).await,
                _ => Ok(()),
            };
            if sent.is_err() {
                break;
            }
        }
        // The client is gone: that closes its stdin too.
        if stdin_open {
            let _ = writer.close_stdin().await;
        }
    });
    let mut input = input;
    loop {
        let f = tokio::select! {
            f = reader.next() => f,
            // The client left (its stdin, if any, was closed on the way out).
            _ = &mut input => return,
        };
        let Some(f) = f else { break };
        let (ch, data) = match f {
            AttachFrame::Stdout(d) => (channel::STDOUT, d),
            AttachFrame::Stderr(d) if !tty => (channel::STDERR, d),
            AttachFrame::Stderr(d) => (channel::STDOUT, d),
            _ => continue,
        };
        let wanted = if ch == channel::STDERR {
            opts.stderr
        } else {
            opts.stdout
        };
        if wanted && sink.send(frame(ch, &data)).await.is_err() {
            break;
        }
    }
    // The container exited (or the client stopped reading).
    let status = json!({"metadata": {}, "status": "Success"}).to_string();
    let _ = sink.send(frame(channel::ERROR, status.as_bytes())).await;
    let _ = sink.send(normal_close()).await;
    // Let the input side finish its last frames (e.g. closing stdin).
    if tokio::time::timeout(Duration::from_secs(1), &mut input)
        .await
        .is_err()
    {
        input.abort();
    }
}

/// Stream new log lines of the container until it stops or the client leaves.
async fn follow_log(
    socket: WebSocket,
    runtime: Arc<dyn ContainerRuntime>,
    c: navarch_runtime::ContainerStatus,
    opts: StreamOptions,
) {
    use tokio::io::{AsyncBufReadExt, AsyncSeekExt};
    let (mut sink, mut stream) = socket.split();
    let (done_tx, mut done_rx) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
        let _ = done_tx.send(());
    });
    let file = tokio::fs::File::open(&c.log_path).await;
    let mut reader_buf = match file {
        Ok(mut f) => {
            let _ = f.seek(std::io::SeekFrom::End(0)).await;
            Some(tokio::io::BufReader::new(f))
        }
        Err(_) => None,
    };
    let mut pending = String::new();
    let mut ticks = 0u32;
    loop {
        let mut progressed = false;
        if let Some(r) = reader_buf.as_mut() {
            match r.read_line(&mut pending).await {
                Ok(n) if n > 0 && pending.ends_with('\n') => {
                    progressed = true;
                    if let Some(l) = crate::logs::parse_cri_line(&pending) {
                        let mut out = l.text.into_bytes();
                        if l.full {
                            out.push(b'\n');
                        }
                        let (ch, wanted) = if l.stream == "stderr" && !opts.tty {
                            (channel::STDERR, opts.stderr)
                        } else {
                            (channel::STDOUT, opts.stdout)
                        };
                        if wanted && sink.send(frame(ch, &out)).await.is_err() {
                            break;
                        }
                    }
                    pending.clear();
                }
                _ => {}
            }
        }
        if progressed {
            continue;
        }
        ticks += 1;
        if ticks.is_multiple_of(10) {
            match runtime.container_status(&c.id).await {
                Ok(s) if s.state == ContainerState::Running => {}
                _ => break,
            }
        }
        tokio::select! {
            _ = &mut done_rx => { reader.abort(); return; }
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
        }
    }
    let status = json!({"metadata": {}, "status": "Success"}).to_string();
    let _ = sink.send(frame(channel::ERROR, status.as_bytes())).await;
    let _ = sink.send(normal_close()).await;
    reader.abort();
}

/// The exec and attach routes (merged into the agent's HTTPS router).
pub fn router(runtime: Arc<dyn ContainerRuntime>) -> axum::Router {
    axum::Router::new()
        .route(
            "/exec/{namespace}/{pod}/{container}",
            axum::routing::any(exec_handler),
        )
        .route(
            "/attach/{namespace}/{pod}/{container}",
            axum::routing::any(attach_handler),
        )
        .with_state(ExecState { runtime })
}

/// A close frame with status 1000 (clients treat anything else as an error).
pub fn normal_close() -> Message {
    Message::Close(Some(axum::extract::ws::CloseFrame {
        code: 1000,
        reason: "".into(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &[(&str, &str)]) -> Vec<(String, String)> {
        s.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn parses_options() {
        let o = StreamOptions::from_pairs(&pairs(&[
            ("command", "sh"),
            ("command", "-c"),
            ("command", "echo hi"),
            ("stdin", "true"),
            ("tty", "true"),
        ]));
        assert_eq!(o.command, vec!["sh", "-c", "echo hi"]);
        assert!(o.stdin && o.tty && o.stdout);
        assert!(!o.stderr, "a tty merges stderr");
        let o = StreamOptions::from_pairs(&pairs(&[("command", "ls"), ("stdout", "false")]));
        assert!(!o.stdin && !o.stdout && o.stderr && !o.tty);
    }

    #[test]
    fn decodes_client_frames() {
        assert_eq!(
            decode_inbound(b"\x00hi"),
            Inbound::Stdin(Bytes::from_static(b"hi"))
        );
        assert_eq!(decode_inbound(b"\xff\x00"), Inbound::CloseStdin);
        assert_eq!(
            decode_inbound(b"\x04{\"Width\":120,\"Height\":40}"),
            Inbound::Resize(TerminalSize {
                width: 120,
                height: 40
            })
        );
        assert_eq!(decode_inbound(b"\x04garbage"), Inbound::Other);
        assert_eq!(decode_inbound(b""), Inbound::Other);
    }

    #[test]
    fn exit_statuses() {
        let ok = exit_status(0, &[]);
        assert_eq!(ok["status"], "Success");
        let bad = exit_status(3, &["sh".into()]);
        assert_eq!(bad["reason"], "NonZeroExitCode");
        assert_eq!(bad["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(bad["details"]["causes"][0]["message"], "3");
    }
}
