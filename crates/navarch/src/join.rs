//! Joining a server as a node: verify the server's CA against the hash in the
//! join token, then trade the token for node credentials (see
//! `navarch_apiserver::join` for the server side).

use std::sync::Arc;

use anyhow::{anyhow, bail, Context};
use http_body_util::BodyExt;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Credentials a node receives.
#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeCredentials {
    pub ca_cert: String,
    pub client_cert: String,
    pub client_key: String,
    pub serving_cert: String,
    pub serving_key: String,
}

/// Accepts any server certificate: used only to download the CA, which is then
/// checked against the hash in the token before anything is trusted or sent.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

async fn request(
    tls: Arc<rustls::ClientConfig>,
    server: &url::Url,
    method: hyper::Method,
    path: &str,
    token: Option<&str>,
    body: Vec<u8>,
) -> anyhow::Result<(hyper::StatusCode, Vec<u8>)> {
    let host = server
        .host_str()
        .ok_or_else(|| anyhow!("server URL has no host"))?
        .to_string();
    let port = server.port_or_known_default().unwrap_or(6443);
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("connect to {host}:{port}"))?;
    let name = ServerName::try_from(host.trim_matches(|c| c == '[' || c == ']').to_string())?;
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .context("TLS handshake with the server")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header(hyper::header::HOST, format!("{host}:{port}"));
    if let Some(t) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let req = req
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))?;
    let resp = sender.send_request(req).await?;
    let status = resp.status();
    let bytes = resp.into_body().collect().await?.to_bytes().to_vec();
    Ok((status, bytes))
}

/// Join `server` with `token` as `node_name`.
pub async fn join(
    server: &str,
    token: &str,
    node_name: &str,
    addresses: Vec<String>,
) -> anyhow::Result<NodeCredentials> {
    let url = url::Url::parse(server).with_context(|| format!("invalid server URL {server:?}"))?;
    if url.scheme() != "https" {
        bail!("the server URL must be https://");
    }
    let hash = token
        .strip_prefix("N10")
        .and_then(|t| t.split("::").next())
        .filter(|h| h.len() == 64)
        .ok_or_else(|| anyhow!("malformed join token (expected N10<ca-hash>::node:<secret>; see <server data dir>/node-token)"))?;
    let insecure = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AcceptAny(provider())))
        .with_no_client_auth();
    let (status, ca) = request(
        Arc::new(insecure),
        &url,
        hyper::Method::GET,
        "/cacerts",
        None,
        vec![],
    )
    .await?;
    if !status.is_success() {
        bail!("fetching the server CA: HTTP {status}");
    }
    if navarch_apiserver::join::sha256_hex(&ca) != hash {
        bail!("the server's CA does not match the join token: refusing to continue");
    }
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile::certs(&mut ca.as_slice()) {
        roots.add(c?)?;
    }
    let verified = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let body =
        serde_json::to_vec(&serde_json::json!({"nodeName": node_name, "addresses": addresses}))?;
    let (status, resp) = request(
        Arc::new(verified),
        &url,
        hyper::Method::POST,
        "/navarch/v1/node-credentials",
        Some(token),
        body,
    )
    .await?;
    if !status.is_success() {
        bail!(
            "requesting node credentials: HTTP {status}: {}",
            String::from_utf8_lossy(&resp)
        );
    }
    Ok(serde_json::from_slice(&resp)?)
}
