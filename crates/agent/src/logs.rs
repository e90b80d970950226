//! Container logs: the CRI log format the runtime writes
//! (`<RFC3339Nano> <stdout|stderr> <F|P> <text>`) and the agent's HTTPS endpoint
//! `GET /containerLogs/{namespace}/{pod}/{container}` that the API server
//! proxies `pods/<name>/log` to. Client certificates are required and checked
//! against `client_ca`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use hyper_util::rt::{TokioExecutor, TokioIo};
use navarch_runtime::{ContainerRuntime, ContainerState};
use tokio::io::{AsyncBufReadExt, AsyncSeekExt, BufReader};
use tokio::net::TcpListener;

use crate::labels;
use crate::AgentError;

/// One parsed CRI log line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the runtime wrote it.
    pub time: DateTime<Utc>,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// `false` for a partial line (`P`): continued by the next one.
    pub full: bool,
    /// The text (without the trailing newline).
    pub text: String,
}

/// Parse one CRI log line; `None` if it is not in that format.
pub fn parse_cri_line(line: &str) -> Option<LogLine> {
    let line = line.strip_suffix('\n').unwrap_or(line);
    let mut it = line.splitn(4, ' ');
    let ts = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let text = it.next().unwrap_or("");
    let time = DateTime::parse_from_rfc3339(ts).ok()?.with_timezone(&Utc);
    if stream != "stdout" && stream != "stderr" {
        return None;
    }
    let full = match tag.split(':').next() {
        Some("F") => true,
        Some("P") => false,
        _ => return None,
    };
    Some(LogLine {
        time,
        stream: stream.to_string(),
        full,
        text: text.to_string(),
    })
}

/// The query of a log request (kubectl's and the API server's parameters).
#[derive(Clone, Debug, Default, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LogOptions {
    /// Keep the stream open and send new lines.
    #[serde(default, deserialize_with = "de_bool")]
    pub follow: bool,
    /// Only the last N lines.
    pub tail_lines: Option<i64>,
    /// Prefix each line with its RFC3339Nano timestamp.
    #[serde(default, deserialize_with = "de_bool")]
    pub timestamps: bool,
    /// The previous (terminated) instance.
    #[serde(default, deserialize_with = "de_bool")]
    pub previous: bool,
    /// Only lines newer than this many seconds.
    pub since_seconds: Option<i64>,
    /// Only lines at or after this time.
    pub since_time: Option<String>,
    /// Stop after this many bytes.
    pub limit_bytes: Option<i64>,
}

fn de_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    let s: Option<String> = serde::Deserialize::deserialize(d)?;
    Ok(matches!(s.as_deref(), Some("true") | Some("1") | Some("")))
}

impl LogOptions {
    fn since(&self) -> Option<DateTime<Utc>> {
        let from_secs = self
            .since_seconds
            .map(|s| Utc::now() - chrono::Duration::seconds(s.max(0)));
        let from_time = self
            .since_time
            .as_deref()
            .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.with_timezone(&Utc));
        from_secs.or(from_time)
    }
}

/// Format one output line (a complete log line as `text` plus newline).
fn render(l: &LogLine, timestamps: bool, out: &mut Vec<u8>) {
    if timestamps {
        out.extend_from_slice(
            l.time
                .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
                .as_bytes(),
        );
        out.push(b' ');
    }
    out.extend_from_slice(l.text.as_bytes());
    if l.full {
        out.push(b'\n');
    }
}

/// Read a whole CRI log file and render it per `opts` (no follow); returns the
/// bytes and the offset reached.
pub async fn read_log(path: &Path, opts: &LogOptions) -> std::io::Result<(Vec<u8>, u64)> {
    let file = tokio::fs::File::open(path).await?;
    let mut reader = BufReader::new(file);
    let since = opts.since();
    let tail = opts.tail_lines.map(|n| n.max(0) as usize);
    let mut keep: VecDeque<LogLine> = VecDeque::new();
    let mut line = String::new();
    let mut offset = 0u64;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).await?;
        if n == 0 || !line.ends_with('\n') {
            break;
        }
        offset += n as u64;
        let Some(l) = parse_cri_line(&line) else {
            continue;
        };
        if since.is_some_and(|s| l.time < s) {
            continue;
        }
        keep.push_back(l);
        if let Some(t) = tail {
            // count complete lines only
            while keep.iter().filter(|l| l.full).count() > t {
                // drop up to and including the first full line
                while let Some(front) = keep.pop_front() {
                    if front.full {
                        break;
                    }
                }
            }
        }
    }
    let mut out = Vec::new();
    for l in &keep {
        render(l, opts.timestamps, &mut out);
    }
    if let Some(limit) = opts.limit_bytes.filter(|l| *l >= 0) {
        out.truncate(limit as usize);
    }
    Ok((out, offset))
}

#[derive(Clone)]
struct AppState {
    runtime: Arc<dyn ContainerRuntime>,
}

fn text(code: StatusCode, msg: String) -> Response {
    (code, [("content-type", "text/plain; charset=utf-8")], msg).into_response()
}

/// Find the log file of `namespace/pod/container` (the newest attempt, or the one
/// before with `previous`).
async fn find_log(
    runtime: &dyn ContainerRuntime,
    ns: &str,
    pod: &str,
    container: &str,
    previous: bool,
) -> Result<(PathBuf, String, bool), Response> {
    let all = runtime
        .list_containers()
        .await
        .map_err(|e| text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let mut mine: Vec<_> = all
        .into_iter()
        .filter(|c| {
            c.labels.get(labels::POD_NAMESPACE).map(String::as_str) == Some(ns)
                && c.labels.get(labels::POD_NAME).map(String::as_str) == Some(pod)
                && c.labels.get(labels::CONTAINER_NAME).map(String::as_str) == Some(container)
        })
        .collect();
    mine.sort_by(|a, b| {
        b.attempt
            .cmp(&a.attempt)
            .then(b.created_at.cmp(&a.created_at))
    });
    let pick = if previous { mine.get(1) } else { mine.first() };
    match pick {
        Some(c) => Ok((
            c.log_path.clone(),
            c.id.clone(),
            matches!(c.state, ContainerState::Running | ContainerState::Created),
        )),
        None if previous => Err(text(
            StatusCode::BAD_REQUEST,
            format!("previous terminated container {container:?} in pod {pod:?} not found"),
        )),
        None => Err(text(
            StatusCode::NOT_FOUND,
            format!("container {container:?} in pod {pod:?} is not available"),
        )),
    }
}

async fn container_logs(
    State(app): State<AppState>,
    UrlPath((ns, pod, container)): UrlPath<(String, String, String)>,
    Query(opts): Query<LogOptions>,
) -> Response {
    let (path, id, running) =
        match find_log(app.runtime.as_ref(), &ns, &pod, &container, opts.previous).await {
            Ok(x) => x,
            Err(r) => return r,
        };
    let (first, offset) = match read_log(&path, &opts).await {
        Ok(x) => x,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (Vec::new(), 0),
        Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    };
    if !opts.follow || opts.previous || !running {
        return ([("content-type", "text/plain")], first).into_response();
    }
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let limit = opts.limit_bytes.filter(|l| *l >= 0).map(|l| l as usize);
    tokio::spawn(async move {
        let mut sent = first.len();
        if !first.is_empty() && tx.send(Ok(Bytes::from(first))).await.is_err() {
            return;
        }
        let _ = follow(
            app.runtime,
            path,
            id,
            offset,
            opts.timestamps,
            limit,
            &mut sent,
            tx,
        )
        .await;
    });
    let body = axum::body::Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
    ([("content-type", "text/plain")], body).into_response()
}

#[allow(clippy::too_many_arguments)]
async fn follow(
    runtime: Arc<dyn ContainerRuntime>,
    path: PathBuf,
    id: String,
    offset: u64,
    timestamps: bool,
    limit: Option<usize>,
    sent: &mut usize,
    tx: tokio::sync::mpsc::Sender<Result<Bytes, std::io::Error>>,
) -> std::io::Result<()> {
    let mut file = loop {
        match tokio::fs::File::open(&path).await {
            Ok(f) => break f,
            Err(_) if !tx.is_closed() => tokio::time::sleep(Duration::from_millis(100)).await,
            Err(e) => return Err(e),
        }
    };
    file.seek(std::io::SeekFrom::Start(offset)).await?;
    let mut reader = BufReader::new(file);
    let mut pending = String::new();
    let mut idle_checks = 0u32;
    loop {
        let n = reader.read_line(&mut pending).await?;
        if n > 0 && pending.ends_with('\n') {
            if let Some(l) = parse_cri_line(&pending) {
                let mut out = Vec::new();
                render(&l, timestamps, &mut out);
                if let Some(lim) = limit {
                    let room = lim.saturating_sub(*sent);
                    out.truncate(room);
                }
                *sent += out.len();
                if !out.is_empty() && tx.send(Ok(Bytes::from(out))).await.is_err() {
                    return Ok(());
                }
                if limit.is_some_and(|l| *sent >= l) {
                    return Ok(());
                }
            }
            pending.clear();
            continue;
        }
        // at EOF: stop once the container is gone or no longer running
        if tx.is_closed() {
            return Ok(());
        }
        idle_checks += 1;
        if idle_checks.is_multiple_of(10) {
            match runtime.container_status(&id).await {
                Ok(s) if matches!(s.state, ContainerState::Running | ContainerState::Created) => {}
                _ => {
                    // drain what is left, then end
                    if n == 0 {
                        return Ok(());
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// rustls configuration of the endpoint: `cert`/`key` (PEM), client
/// certificates required and verified against `client_ca`.
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<rustls::ServerConfig>, AgentError> {
    let tls = |e: &dyn std::fmt::Display| AgentError::Tls(e.to_string());
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let certs = rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(cert)?))
        .collect::<Result<Vec<_>, _>>()?;
    let key = rustls_pemfile::private_key(&mut std::io::BufReader::new(std::fs::File::open(key)?))?
        .ok_or_else(|| AgentError::Tls(format!("no private key in {}", key.display())))?;
    let ca = client_ca.ok_or_else(|| {
        AgentError::Tls(
            "client_ca is required: the log endpoint only serves authenticated clients".to_string(),
        )
    })?;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut std::io::BufReader::new(std::fs::File::open(ca)?)) {
        roots.add(c?).map_err(|e| tls(&e))?;
    }
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(roots),
        provider.clone(),
    )
    .build()
    .map_err(|e| tls(&e))?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs, key)
        .map_err(|e| tls(&e))?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// The endpoint's routes.
pub fn router(runtime: Arc<dyn ContainerRuntime>) -> axum::Router {
    axum::Router::new()
        .route(
            "/containerLogs/{namespace}/{pod}/{container}",
            axum::routing::get(container_logs),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }))
        .with_state(AppState {
            runtime: runtime.clone(),
        })
        .merge(crate::exec::router(runtime.clone()))
        .merge(crate::portforward::router(runtime))
}

/// Serve the endpoint on `listener` forever.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    runtime: Arc<dyn ContainerRuntime>,
    _root: PathBuf,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let app = router(runtime);
    loop {
        let (tcp, _) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(error = %e, "log endpoint: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let app = app.clone();
        tokio::spawn(async move {
            let Ok(Ok(stream)) =
                tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await
            else {
                return;
            };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let app = app.clone();
                    async move {
                        use tower::ServiceExt;
                        app.oneshot(req.map(axum::body::Body::new)).await
                    }
                });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cri_lines() {
        let l = parse_cri_line("2016-10-06T00:17:09.669794202Z stdout F hello world\n").unwrap();
        assert_eq!(l.text, "hello world");
        assert!(l.full);
        assert_eq!(l.stream, "stdout");
        let p = parse_cri_line("2016-10-06T00:17:09.669794202Z stderr P part").unwrap();
        assert!(!p.full);
        assert!(parse_cri_line("garbage").is_none());
        let empty = parse_cri_line("2016-10-06T00:17:09Z stdout F").unwrap();
        assert_eq!(empty.text, "");
    }

    #[tokio::test]
    async fn reads_with_options() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("0.log");
        let now = Utc::now();
        let old = (now - chrono::Duration::seconds(100))
            .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        let new = now.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
        std::fs::write(&p, format!(
            "{old} stdout F one\n{old} stdout P tw\n{old} stdout F o\n{new} stderr F three\n{new} stdout F four\n"
        )).unwrap();
        let all = read_log(&p, &LogOptions::default()).await.unwrap().0;
        assert_eq!(String::from_utf8(all).unwrap(), "one\ntwo\nthree\nfour\n");
        let tail = read_log(
            &p,
            &LogOptions {
                tail_lines: Some(3),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0;
        assert_eq!(String::from_utf8(tail).unwrap(), "two\nthree\nfour\n");
        let since = read_log(
            &p,
            &LogOptions {
                since_seconds: Some(10),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0;
        assert_eq!(String::from_utf8(since).unwrap(), "three\nfour\n");
        let ts = read_log(
            &p,
            &LogOptions {
                tail_lines: Some(1),
                timestamps: true,
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0;
        assert_eq!(String::from_utf8(ts).unwrap(), format!("{new} four\n"));
        let lim = read_log(
            &p,
            &LogOptions {
                limit_bytes: Some(5),
                ..Default::default()
            },
        )
        .await
        .unwrap()
        .0;
        assert_eq!(String::from_utf8(lim).unwrap(), "one\nt");
    }

    #[test]
    fn query_parsing() {
        let q: LogOptions =
            serde_urlencoded_like("follow=true&tailLines=5&timestamps=false&previous=1");
        assert!(q.follow);
        assert!(!q.timestamps);
        assert!(q.previous);
        assert_eq!(q.tail_lines, Some(5));
    }

    fn serde_urlencoded_like(s: &str) -> LogOptions {
        let uri: axum::http::Uri = format!("/x?{s}").parse().unwrap();
        Query::<LogOptions>::try_from_uri(&uri).unwrap().0
    }
}
