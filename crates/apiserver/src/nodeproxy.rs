//! Proxying to node agents: `pods/<name>/log` (and later exec, attach and
//! port-forward) are served by the agent on the pod's node; the API server
//! connects to it over HTTPS with its own client certificate and streams the
//! answer back.

use std::sync::Arc;

use axum::body::Body;
use axum::response::Response;
use serde_json::Value;
use tokio::net::TcpStream;

use crate::error::{ApiError, ApiResult};

pub struct NodeClient {
    tls: Arc<rustls::ClientConfig>,
}

/// Where a node's agent listens: its InternalIP (else the first address) and
/// `status.daemonEndpoints.kubeletEndpoint.Port`.
pub fn node_endpoint(node: &Value) -> Option<(String, u16)> {
    let addrs = node.pointer("/status/addresses")?.as_array()?;
    let pick = |t: &str| {
        addrs
            .iter()
            .find(|a| a.get("type").and_then(Value::as_str) == Some(t))
            .and_then(|a| a.get("address")?.as_str())
    };
    let ip = pick("InternalIP")
        .or_else(|| pick("ExternalIP"))
        .or_else(|| addrs.first().and_then(|a| a.get("address")?.as_str()))?;
    let port = node
        .pointer("/status/daemonEndpoints/kubeletEndpoint/Port")
        .and_then(Value::as_u64)
        .unwrap_or(10250) as u16;
    Some((ip.to_string(), port))
}

impl NodeClient {
    pub fn new(tls: Arc<rustls::ClientConfig>) -> NodeClient {
        NodeClient { tls }
    }

    /// Open an HTTP/1.1 connection over TLS to the agent at `host:port`.
    async fn connect(
        &self,
        host: &str,
        port: u16,
    ) -> ApiResult<hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>>
    {
        let tcp = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            TcpStream::connect((host, port)),
        )
        .await
        .map_err(|_| unavailable(format!("dial tcp {host}:{port}: i/o timeout")))?
        .map_err(|e| unavailable(format!("dial tcp {host}:{port}: {e}")))?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|e| unavailable(format!("bad node address {host}: {e}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        let tls = connector
            .connect(name, tcp)
            .await
            .map_err(|e| unavailable(format!("tls: {e}")))?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls))
                .await
                .map_err(|e| unavailable(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        Ok(sender)
    }

    /// GET `path_and_query` on the agent at `host:port`; the response (status,
    /// headers, streaming body) is passed through.
    pub async fn get(&self, host: &str, port: u16, path_and_query: &str) -> ApiResult<Response> {
        let mut sender = self.connect(host, port).await?;
        let req = hyper::Request::get(path_and_query)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| unavailable(e.to_string()))?;
        let (parts, body) = resp.into_parts();
        Ok(Response::from_parts(parts, Body::new(body)))
    }

    /// Send an upgrade request (`method`, `path_and_query`, `headers`) to the
    /// agent and return its raw response: on `101 Switching Protocols` the
    /// response still carries the pending upgrade (`hyper::upgrade::on`).
    pub async fn upgrade(
        &self,
        host: &str,
        port: u16,
        method: hyper::Method,
        path_and_query: &str,
        headers: &hyper::HeaderMap,
    ) -> ApiResult<hyper::Response<hyper::body::Incoming>> {
        let mut sender = self.connect(host, port).await?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(path_and_query)
            .header(hyper::header::HOST, format!("{host}:{port}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| ApiError::internal(e.to_string()))?;
        for (k, v) in headers {
            req.headers_mut().append(k, v.clone());
        }
        sender
            .send_request(req)
            .await
            .map_err(|e| unavailable(e.to_string()))
    }
}

fn unavailable(e: String) -> ApiError {
    ApiError::new(502, "InternalError", format!("error dialing backend: {e}"))
}
