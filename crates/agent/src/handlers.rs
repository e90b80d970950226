//! Probe and lifecycle-hook handlers: exec, httpGet, tcpSocket, grpc and sleep.
//!
//! [`Action::run`] performs one check and returns `Ok(())` or the failure text
//! that upstream puts in events (`HTTP probe failed with statuscode: 404`,
//! `dial tcp 10.0.0.5:80: connect: connection refused`, the exec output...).
//!
//! Network handlers connect to the pod. A pod with its own network namespace but
//! no routable IP (no network plugin) is reached from inside that namespace:
//! [`connect`] creates the socket on a short-lived OS thread that has `setns`-ed
//! into the pod's namespace and hands the connected stream back to tokio.

use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ContainerPort, LifecycleHandler, Probe};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use navarch_runtime::ContainerRuntime;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Where network handlers of one container connect.
#[derive(Clone, Debug, Default)]
pub struct Target {
    /// Host used when the handler names none (the pod IP, or 127.0.0.1 inside
    /// the pod's namespace).
    pub default_host: String,
    /// Connect from inside this network namespace.
    pub netns: Option<PathBuf>,
    /// The container's ports (named ports).
    pub ports: Vec<ContainerPort>,
}

/// One handler, from a probe or a lifecycle hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Run a command in the container; exit 0 is success.
    Exec(Vec<String>),
    /// HTTP(S) GET; 200–399 is success.
    Http {
        /// "HTTP" or "HTTPS" (certificates are not verified).
        scheme: String,
        /// Host (default: the target's default host).
        host: Option<String>,
        /// Port number or container port name.
        port: IntOrString,
        /// Request path.
        path: String,
        /// Extra request headers.
        headers: Vec<(String, String)>,
    },
    /// TCP connect.
    Tcp {
        /// Host (default: the target's default host).
        host: Option<String>,
        /// Port number or container port name.
        port: IntOrString,
    },
    /// gRPC health checking protocol (`grpc.health.v1.Health/Check`).
    Grpc {
        /// Port.
        port: i32,
        /// Service name sent in the request.
        service: String,
    },
    /// Sleep (lifecycle hooks only).
    Sleep(Duration),
}

impl Action {
    /// The handler of a probe (`None` if it has none).
    pub fn from_probe(p: &Probe) -> Option<Action> {
        if let Some(e) = &p.exec {
            return Some(Action::Exec(e.command.clone().unwrap_or_default()));
        }
        if let Some(h) = &p.http_get {
            return Some(http_action(h));
        }
        if let Some(t) = &p.tcp_socket {
            return Some(Action::Tcp {
                host: t.host.clone().filter(|h| !h.is_empty()),
                port: t.port.clone(),
            });
        }
        p.grpc.as_ref().map(|g| Action::Grpc {
            port: g.port,
            service: g.service.clone().unwrap_or_default(),
        })
    }

    /// The handler of a lifecycle hook (`None` if it has none).
    pub fn from_hook(h: &LifecycleHandler) -> Option<Action> {
        if let Some(e) = &h.exec {
            return Some(Action::Exec(e.command.clone().unwrap_or_default()));
        }
        if let Some(g) = &h.http_get {
            return Some(http_action(g));
        }
        if let Some(s) = &h.sleep {
            return Some(Action::Sleep(Duration::from_secs(s.seconds.max(0) as u64)));
        }
        h.tcp_socket.as_ref().map(|t| Action::Tcp {
            host: t.host.clone().filter(|h| !h.is_empty()),
            port: t.port.clone(),
        })
    }

    /// Run the handler once against container `id`, giving up after `timeout`.
    pub async fn run(
        &self,
        runtime: &dyn ContainerRuntime,
        id: &str,
        target: &Target,
        timeout: Duration,
    ) -> Result<(), String> {
        match self {
            Action::Exec(argv) => match runtime.exec_sync(id, argv, timeout).await {
                Ok(out) if out.exit_code == 0 => Ok(()),
                Ok(out) => {
                    let mut s = String::from_utf8_lossy(&out.stdout).to_string();
                    s.push_str(&String::from_utf8_lossy(&out.stderr));
                    Err(s.trim_end().to_string())
                }
                Err(e) => {
                    let msg = e.to_string();
                    if msg.contains("timed out") || msg.contains("deadline") {
                        Err(format!("command {:?} timed out", argv.join(" ")))
                    } else {
                        Err(msg)
                    }
                }
            },
            Action::Http {
                scheme,
                host,
                port,
                path,
                headers,
            } => {
                let port = resolve_port(port, &target.ports)?;
                let host = host.clone().unwrap_or_else(|| target.default_host.clone());
                http_get(scheme, &host, port, path, headers, target, timeout).await
            }
            Action::Tcp { host, port } => {
                let port = resolve_port(port, &target.ports)?;
                let host = host.clone().unwrap_or_else(|| target.default_host.clone());
                let addr =
                    resolve(&host, port).map_err(|e| format!("dial tcp {host}:{port}: {e}"))?;
                connect(addr, target.netns.as_deref(), timeout)
                    .await
                    .map(drop)
                    .map_err(|e| format!("dial tcp {addr}: {}", dial_error(&e)))
            }
            Action::Grpc { port, service } => {
                let port = u16::try_from(*port).map_err(|_| format!("invalid port {port}"))?;
                grpc_check(&target.default_host, port, service, target, timeout).await
            }
            Action::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
        }
    }
}

fn http_action(h: &k8s_openapi::api::core::v1::HTTPGetAction) -> Action {
    let mut path = h.path.clone().unwrap_or_default();
    if !path.starts_with('/') {
        path.insert(0, '/');
    }
    Action::Http {
        scheme: h.scheme.clone().unwrap_or_else(|| "HTTP".to_string()),
        host: h.host.clone().filter(|h| !h.is_empty()),
        port: h.port.clone(),
        path,
        headers: h
            .http_headers
            .iter()
            .flatten()
            .map(|x| (x.name.clone(), x.value.clone()))
            .collect(),
    }
}

/// A port number, or the number of the container port with that name.
pub fn resolve_port(port: &IntOrString, ports: &[ContainerPort]) -> Result<u16, String> {
    let n = match port {
        IntOrString::Int(n) => *n,
        IntOrString::String(s) => match s.parse::<i32>() {
            Ok(n) => n,
            Err(_) => ports
                .iter()
                .find(|p| p.name.as_deref() == Some(s.as_str()))
                .map(|p| p.container_port)
                .ok_or_else(|| format!("couldn't find port: {s}"))?,
        },
    };
    u16::try_from(n)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port number: {n}"))
}

fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such host"))
}

/// Go's wording of a dial error (`connect: connection refused`, `i/o timeout`).
fn dial_error(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connect: connection refused".to_string(),
        io::ErrorKind::TimedOut => "i/o timeout".to_string(),
        _ => match e.raw_os_error() {
            Some(libc::ENETUNREACH) => "connect: network is unreachable".to_string(),
            Some(libc::EHOSTUNREACH) => "connect: no route to host".to_string(),
            _ => e.to_string(),
        },
    }
}

/// Connect to `addr`, from inside network namespace `netns` when given.
pub async fn connect(
    addr: SocketAddr,
    netns: Option<&Path>,
    timeout: Duration,
) -> io::Result<TcpStream> {
    let Some(ns) = netns else {
        return match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "i/o timeout")),
        };
    };
    let ns = ns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("netns-connect".to_string())
        .spawn(move || {
            let _ = tx.send(connect_in_netns(&ns, addr, timeout));
        })?;
    let stream = rx
        .await
        .map_err(|_| io::Error::other("netns connect thread died"))??;
    TcpStream::from_std(stream)
}

/// Runs on a throwaway thread: join the namespace, make sure loopback is up,
/// connect. The thread ends right after, so its namespace change dies with it.
fn connect_in_netns(
    ns: &Path,
    addr: SocketAddr,
    timeout: Duration,
) -> io::Result<std::net::TcpStream> {
    let f = std::fs::File::open(ns)?;
    // SAFETY: setns on a valid fd; affects only this thread.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if addr.ip().is_loopback() {
        loopback_up();
    }
    let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// Bring `lo` up in the current thread's network namespace (a fresh namespace
/// has it down until a network plugin configures it). Best effort.
fn loopback_up() {
    // SAFETY: plain socket/ioctl calls on a zeroed ifreq; the fd is closed.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) == 0 {
            let flags = req.ifr_ifru.ifru_flags;
            if flags & libc::IFF_UP as libc::c_short == 0 {
                req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
                libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
            }
        }
        libc::close(fd);
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

async fn http_get(
    scheme: &str,
    host: &str,
    port: u16,
    path: &str,
    headers: &[(String, String)],
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    let https = scheme.eq_ignore_ascii_case("HTTPS");
    let url = format!(
        "{}://{}{}",
        if https { "https" } else { "http" },
        host_port(host, port),
        path
    );
    let work = async {
        let addr =
            resolve(host, port).map_err(|e| format!("dial tcp {}: {e}", host_port(host, port)))?;
        let tcp = connect(addr, target.netns.as_deref(), timeout)
            .await
            .map_err(|e| format!("dial tcp {addr}: {}", dial_error(&e)))?;
        let _ = tcp.set_nodelay(true);
        let mut io: Box<dyn Io> = if https {
            Box::new(tls_connect(tcp, host).await?)
        } else {
            Box::new(tcp)
        };
        let req = http_request(host, port, path, headers);
        io.write_all(req.as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        let code = read_status(&mut io).await?;
        Ok::<u16, String>(code)
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(format!(
            "Get {url:?}: context deadline exceeded (Client.Timeout exceeded while awaiting headers)"
        )),
        Ok(Err(e)) => Err(format!("Get {url:?}: {e}")),
        Ok(Ok(code)) if (200..400).contains(&code) => Ok(()),
        Ok(Ok(code)) => Err(format!("HTTP probe failed with statuscode: {code}")),
    }
}

/// The request upstream's prober sends (User-Agent `kube-probe/1.33`, headers
/// from httpHeaders, a `Host` header overriding the default).
pub fn http_request(host: &str, port: u16, path: &str, headers: &[(String, String)]) -> String {
    let mut req = format!("GET {path} HTTP/1.1\r\n");
    let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
    if !has("host") {
        req.push_str(&format!("Host: {}\r\n", host_port(host, port)));
    }
    if !has("user-agent") {
        req.push_str("User-Agent: kube-probe/1.33\r\n");
    }
    if !has("accept") {
        req.push_str("Accept: */*\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("Connection: close\r\n\r\n");
    req
}

/// Parse the status code from the start of an HTTP/1.x response.
pub fn parse_status_line(head: &[u8]) -> Option<u16> {
    let line = head.split(|b| *b == b'\n').next()?;
    let line = std::str::from_utf8(line).ok()?;
    let mut parts = line.split_whitespace();
    if !parts.next()?.starts_with("HTTP/") {
        return None;
    }
    parts.next()?.parse().ok()
}

async fn read_status(io: &mut Box<dyn Io>) -> Result<u16, String> {
    let mut buf = Vec::with_capacity(256);
    let mut chunk = [0u8; 256];
    loop {
        if buf.contains(&b'\n') {
            return parse_status_line(&buf).ok_or_else(|| "malformed HTTP response".to_string());
        }
        let n = io.read(&mut chunk).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("EOF".to_string());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            return Err("malformed HTTP response".to_string());
        }
    }
}

/// Accepts any server certificate (probes do not verify, like upstream).
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CFG: std::sync::OnceLock<Result<Arc<rustls::ClientConfig>, String>> =
        std::sync::OnceLock::new();
    CFG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    })
    .clone()
}

async fn tls_connect(
    tcp: TcpStream,
    host: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, String> {
    let cfg = tls_config()?;
    let name =
        rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(cfg)
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())
}

/// The protobuf `grpc.health.v1.HealthCheckRequest{service}` in a gRPC frame.
pub fn grpc_request_frame(service: &str) -> Vec<u8> {
    let mut msg = Vec::new();
    if !service.is_empty() {
        msg.push(0x0a); // field 1, length-delimited
        let mut n = service.len();
        loop {
            let b = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                msg.push(b);
                break;
            }
            msg.push(b | 0x80);
        }
        msg.extend_from_slice(service.as_bytes());
    }
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    frame.extend_from_slice(&msg);
    frame
}

/// The serving status in a gRPC-framed `HealthCheckResponse` (0 UNKNOWN,
/// 1 SERVING, 2 NOT_SERVING, 3 SERVICE_UNKNOWN).
pub fn grpc_response_status(body: &[u8]) -> Option<u64> {
    let msg = body.get(5..)?;
    let mut i = 0;
    let mut status = 0;
    while i < msg.len() {
        let key = msg[i];
        i += 1;
        let (v, used) = varint(msg.get(i..)?)?;
        i += used;
        match key {
            0x08 => status = v,
            k if k & 7 == 2 => i += v as usize,
            k if k & 7 == 0 => {}
            _ => return None,
        }
    }
    Some(status)
}

fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let mut v = 0u64;
    for (i, x) in b.iter().enumerate().take(10) {
        v |= u64::from(x & 0x7f) << (7 * i);
        if x & 0x80 == 0 {
            return Some((v, i + 1));
        }
    }
    None
}

async fn grpc_check(
    host: &str,
    port: u16,
    service: &str,
    target: &Target,
    timeout: Duration,
) -> Result<(), String> {
    use http_body_util::BodyExt;
    let hp = host_port(host, port);
    let work = async {
        let addr = resolve(host, port).map_err(|e| e.to_string())?;
        let tcp = connect(addr, target.netns.as_deref(), timeout)
            .await
            .map_err(|e| e.to_string())?;
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .map_err(|e| e.to_string())?;
        let conn = tokio::spawn(conn);
        let req = hyper::Request::post(format!("http://{hp}/grpc.health.v1.Health/Check"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .header("user-agent", "kube-probe/1.33")
            .body(http_body_util::Full::new(bytes::Bytes::from(
                grpc_request_frame(service),
            )))
            .map_err(|e| e.to_string())?;
        let resp = send.send_request(req).await.map_err(|e| e.to_string())?;
        let header_status = resp
            .headers()
            .get("grpc-status")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let collected = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        let trailer_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        conn.abort();
        let code = trailer_status.or(header_status).unwrap_or_default();
        if code != "0" {
            return Err(format!(
                "rpc error: code = {} desc = health rpc failed",
                if code.is_empty() { "Unknown" } else { &code }
            ));
        }
        Ok(grpc_response_status(&collected.to_bytes()))
    };
    match tokio::time::timeout(timeout, work).await {
        Err(_) => Err(format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )),
        Ok(Err(e)) => Err(format!(
            "timeout: failed to connect service {hp:?} within {}s: {e}",
            timeout.as_secs()
        )),
        Ok(Ok(Some(1))) => Ok(()),
        Ok(Ok(s)) => {
            let name = match s {
                Some(2) => "NOT_SERVING",
                Some(3) => "SERVICE_UNKNOWN",
                _ => "UNKNOWN",
            };
            Err(format!("service unhealthy (responded with {name:?})"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_by_number_and_name() {
        let ports = vec![ContainerPort {
            name: Some("http".into()),
            container_port: 8080,
            ..Default::default()
        }];
        assert_eq!(resolve_port(&IntOrString::Int(80), &ports), Ok(80));
        assert_eq!(
            resolve_port(&IntOrString::String("http".into()), &ports),
            Ok(8080)
        );
        assert_eq!(
            resolve_port(&IntOrString::String("81".into()), &ports),
            Ok(81)
        );
        assert!(resolve_port(&IntOrString::String("nope".into()), &ports).is_err());
        assert!(resolve_port(&IntOrString::Int(0), &ports).is_err());
    }

    #[test]
    fn request_and_status_line() {
        let r = http_request("10.0.0.1", 80, "/x", &[("X-Custom".into(), "a".into())]);
        assert!(r.starts_with("GET /x HTTP/1.1\r\nHost: 10.0.0.1:80\r\n"));
        assert!(r.contains("X-Custom: a\r\n"));
        assert!(r.ends_with("\r\n\r\n"));
        let r = http_request("h", 80, "/", &[("Host".into(), "example".into())]);
        assert!(!r.contains("Host: h:80"));
        assert_eq!(parse_status_line(b"HTTP/1.0 404 Not Found\r\n"), Some(404));
        assert_eq!(parse_status_line(b"garbage\r\n"), None);
    }

    #[test]
    fn grpc_frames() {
        assert_eq!(grpc_request_frame(""), vec![0, 0, 0, 0, 0]);
        assert_eq!(
            grpc_request_frame("ab"),
            vec![0, 0, 0, 0, 4, 0x0a, 2, b'a', b'b']
        );
        assert_eq!(grpc_response_status(&[0, 0, 0, 0, 2, 0x08, 1]), Some(1));
        assert_eq!(grpc_response_status(&[0, 0, 0, 0, 0]), Some(0));
        assert_eq!(grpc_response_status(&[0, 0, 0, 0, 2, 0x08, 2]), Some(2));
    }

    async fn serve_once(response: &'static str) -> u16 {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                let _ = s.write_all(response.as_bytes()).await;
            }
        });
        port
    }

    #[tokio::test]
    async fn http_and_tcp_against_a_local_server() {
        let ok = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").await;
        let missing = serve_once("HTTP/1.1 404 Not Found\r\n\r\n").await;
        let target = Target {
            default_host: "127.0.0.1".into(),
            ..Default::default()
        };
        let http = |port: u16| Action::Http {
            scheme: "HTTP".into(),
            host: None,
            port: IntOrString::Int(port as i32),
            path: "/index.html".into(),
            headers: Vec::new(),
        };
        let rt = crate::testrt::FakeRuntime::new(true);
        let t = Duration::from_secs(2);
        assert_eq!(http(ok).run(&*rt, "x", &target, t).await, Ok(()));
        assert_eq!(
            http(missing).run(&*rt, "x", &target, t).await,
            Err("HTTP probe failed with statuscode: 404".to_string())
        );
        let tcp = Action::Tcp {
            host: None,
            port: IntOrString::Int(ok as i32),
        };
        assert_eq!(tcp.run(&*rt, "x", &target, t).await, Ok(()));
        // a closed port
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let closed = l.local_addr().unwrap().port();
        drop(l);
        let err = Action::Tcp {
            host: None,
            port: IntOrString::Int(closed as i32),
        }
        .run(&*rt, "x", &target, t)
        .await
        .unwrap_err();
        assert_eq!(
            err,
            format!("dial tcp 127.0.0.1:{closed}: connect: connection refused")
        );
        let err = http(closed).run(&*rt, "x", &target, t).await.unwrap_err();
        assert!(
            err.starts_with(&format!(
                "Get \"http://127.0.0.1:{closed}/index.html\": dial tcp"
            )),
            "{err}"
        );
    }
}
