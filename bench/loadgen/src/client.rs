//! HTTPS connections to the API server: rustls (aws-lc-rs) with the admin
//! client certificate, and a hyper HTTP/2 or HTTP/1.1 connection on top.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::error::Error;

/// Which HTTP version to speak (chosen through ALPN).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 with keep-alive: one request at a time per connection.
    Http1,
    /// HTTP/2: requests may share a connection as streams.
    Http2,
}

/// Where and how to connect: address, TLS client config, protocol.
#[derive(Clone)]
pub struct Target {
    addr: SocketAddr,
    protocol: Protocol,
    connector: TlsConnector,
    /// The same TLS settings offering only HTTP/1.1, for the epoll watch readers.
    http1_config: Arc<rustls::ClientConfig>,
    server_name: ServerName<'static>,
}

fn read_file(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|e| Error::io(path.display().to_string(), e))
}

fn parse_certs(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, Error> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| Error::Pem(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::Pem(format!("{what}: no certificate")));
    }
    Ok(certs)
}

fn parse_key(pem: &[u8], what: &str) -> Result<PrivateKeyDer<'static>, Error> {
    rustls_pemfile::private_key(&mut &pem[..])
        .map_err(|e| Error::Pem(format!("{what}: {e}")))?
        .ok_or_else(|| Error::Pem(format!("{what}: no private key")))
}

/// A rustls client config on the aws-lc-rs provider trusting `ca_pem`,
/// presenting `cert_pem`/`key_pem`, offering the ALPN id of `protocol`.
pub fn tls_config(
    ca_pem: &[u8],
    cert_pem: &[u8],
    key_pem: &[u8],
    protocol: Protocol,
) -> Result<rustls::ClientConfig, Error> {
    let mut roots = rustls::RootCertStore::empty();
    for ca in parse_certs(ca_pem, "CA")? {
        roots.add(ca)?;
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(
            parse_certs(cert_pem, "client cert")?,
            parse_key(key_pem, "client key")?,
        )?;
    cfg.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(cfg)
}

impl Target {
    /// A target from PEM contents (see [`tls_config`]).
    pub fn new(
        addr: SocketAddr,
        protocol: Protocol,
        ca_pem: &[u8],
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Self, Error> {
        let cfg = tls_config(ca_pem, cert_pem, key_pem, protocol)?;
        Ok(Self::from_client_config(addr, protocol, cfg))
    }

    /// A target reached with the TLS client settings `cfg` (ALPN as `cfg`
    /// offers it; the epoll watch readers offer HTTP/1.1 alone).
    pub fn from_client_config(
        addr: SocketAddr,
        protocol: Protocol,
        cfg: rustls::ClientConfig,
    ) -> Self {
        let mut http1_config = cfg.clone();
        http1_config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Target {
            addr,
            protocol,
            connector: TlsConnector::from(Arc::new(cfg)),
            http1_config: Arc::new(http1_config),
            server_name: ServerName::IpAddress(addr.ip().into()),
        }
    }

    /// A target from navarch's PKI directory (`ca.crt`, `admin.crt`, `admin.key`).
    pub fn from_pki_dir(addr: SocketAddr, protocol: Protocol, pki: &Path) -> Result<Self, Error> {
        Self::new(
            addr,
            protocol,
            &read_file(&pki.join("ca.crt"))?,
            &read_file(&pki.join("admin.crt"))?,
            &read_file(&pki.join("admin.key"))?,
        )
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The name the server's certificate is checked against.
    pub fn server_name(&self) -> ServerName<'static> {
        self.server_name.clone()
    }

    /// The TLS client settings with HTTP/1.1 as the only ALPN protocol.
    pub fn http1_tls_config(&self) -> Arc<rustls::ClientConfig> {
        self.http1_config.clone()
    }

    /// The protocol this target speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Open one TCP + TLS + HTTP connection. The connection is driven by a
    /// spawned task that ends when the returned [`Conn`] (and its clones) drop.
    pub async fn connect(&self) -> Result<Conn, Error> {
        let tcp = TcpStream::connect(self.addr)
            .await
            .map_err(|e| Error::io(format!("connect {}", self.addr), e))?;
        tcp.set_nodelay(true)
            .map_err(|e| Error::io("set_nodelay", e))?;
        let tls = self
            .connector
            .connect(self.server_name.clone(), tcp)
            .await
            .map_err(|e| Error::io(format!("TLS handshake with {}", self.addr), e))?;
        let io = TokioIo::new(tls);
        let authority = self.addr.to_string();
        match self.protocol {
            Protocol::Http1 => {
                let (sender, conn) = http1::handshake(io).await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Conn {
                    sender: Sender::H1(sender),
                    authority,
                })
            }
            Protocol::Http2 => {
                let (sender, conn) = http2::Builder::new(TokioExecutor::new())
                    .initial_stream_window_size(1 << 20)
                    .initial_connection_window_size(8 << 20)
                    .handshake(io)
                    .await?;
                tokio::spawn(async move {
                    let _ = conn.await;
                });
                Ok(Conn {
                    sender: Sender::H2(sender),
                    authority,
                })
            }
        }
    }
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

/// One open HTTP connection. HTTP/1.1 connections carry one request at a
/// time; HTTP/2 ones can be [`Conn::try_clone`]d to share the connection.
pub struct Conn {
    sender: Sender,
    authority: String,
}

impl Conn {
    /// Another handle on the same HTTP/2 connection; `None` for HTTP/1.1.
    pub fn try_clone(&self) -> Option<Conn> {
        match &self.sender {
            Sender::H1(_) => None,
            Sender::H2(s) => Some(Conn {
                sender: Sender::H2(s.clone()),
                authority: self.authority.clone(),
            }),
        }
    }

    fn build(
        &self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Request<Full<Bytes>>, Error> {
        let builder = match &self.sender {
            // HTTP/1.1: origin-form target plus Host.
            Sender::H1(_) => Request::builder()
                .uri(path)
                .header(hyper::header::HOST, &self.authority),
            // HTTP/2: hyper needs scheme and authority for the pseudo-headers.
            Sender::H2(_) => Request::builder().uri(format!("https://{}{}", self.authority, path)),
        };
        let builder = builder
            .method(method)
            .header(hyper::header::ACCEPT, "application/json");
        Ok(match body {
            Some(b) => builder
                .header(hyper::header::CONTENT_TYPE, "application/json")
                .body(Full::new(b))?,
            None => builder.body(Full::new(Bytes::new()))?,
        })
    }

    /// Send a request and return the response with its body still streaming.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Response<Incoming>, Error> {
        let req = self.build(method, path, body)?;
        Ok(match &mut self.sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        })
    }

    /// Send a request and read the whole response body.
    pub async fn call(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<(StatusCode, Bytes), Error> {
        let resp = self.send(method, path, body).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }

    /// Like [`Conn::call`], but a non-2xx status is an [`Error::Status`].
    pub async fn call_ok(
        &mut self,
        method: Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<Bytes, Error> {
        let (status, bytes) = self.call(method.clone(), path, body).await?;
        if status.is_success() {
            Ok(bytes)
        } else {
            Err(status_error(&method, path, status, &bytes))
        }
    }
}

/// An [`Error::Status`] carrying the first 300 bytes of the body.
pub fn status_error(method: &Method, path: &str, status: StatusCode, body: &[u8]) -> Error {
    let end = body.len().min(300);
    Error::Status {
        method: method.to_string(),
        path: path.to_string(),
        status,
        body: String::from_utf8_lossy(&body[..end]).into_owned(),
    }
}
