//! Joining nodes (k3s-style): the server has a join token
//! `N10<sha256 of the CA certificate PEM>::node:<secret>`. A new node fetches the
//! CA from the unauthenticated `GET /cacerts`, checks it against the hash in the
//! token, then trades the token for credentials at
//! `POST /navarch/v1/node-credentials` (a client certificate for the API and a
//! serving certificate for its own endpoint, both from the cluster CA).

use std::path::Path;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::auth::{Authenticator, User};
use crate::error::{ApiError, ApiResult};
use crate::pki::{self, Pki};

pub const CACERTS_PATH: &str = "/cacerts";
pub const CREDENTIALS_PATH: &str = "/navarch/v1/node-credentials";
pub const NODES_GROUP: &str = "system:nodes";

/// Hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    use std::fmt::Write;
    sha2::Sha256::digest(data)
        .iter()
        .fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

/// The join token, created on first start in `<data-dir>/node-token`; registered
/// as a bearer token of the `system:nodes` group.
pub fn ensure_token(
    data_dir: &Path,
    pki: &Pki,
    auth: &mut Authenticator,
) -> std::io::Result<String> {
    let path = data_dir.join("node-token");
    let token = match std::fs::read_to_string(&path) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => {
            use rand::Rng;
            let secret: String = (0..32)
                .map(|_| format!("{:x}", rand::rng().random_range(0..16u8)))
                .collect();
            let t = format!(
                "N10{}::node:{}",
                sha256_hex(pki.ca.cert_pem.as_bytes()),
                secret
            );
            pki::write_private(&path, t.as_bytes())
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            t
        }
    };
    auth.add_token(
        token.clone(),
        User {
            name: "system:node-bootstrap".into(),
            groups: vec![NODES_GROUP.into()],
        },
    );
    Ok(token)
}

pub fn cacerts(pki: &Pki) -> Response {
    (
        StatusCode::OK,
        [(axum::http::header::CONTENT_TYPE, "application/x-pem-file")],
        pki.ca.cert_pem.clone(),
    )
        .into_response()
}

fn is_node_or_admin(user: &User) -> bool {
    user.groups
        .iter()
        .any(|g| g == NODES_GROUP || g == "system:masters")
}

/// Issue a node's credentials.
pub fn node_credentials(pki: &Pki, user: &User, body: &[u8]) -> ApiResult<Response> {
    if !is_node_or_admin(user) {
        return Err(ApiError::forbidden(format!(
            "user \"{}\" may not request node credentials",
            user.name
        )));
    }
    let req: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid request: {e}")))?;
    let node = req.get("nodeName").and_then(Value::as_str).unwrap_or("");
    if let Err(e) = navarch_api::validation::is_dns1123_subdomain(node) {
        return Err(ApiError::bad_request(format!(
            "invalid nodeName {node:?}: {e}"
        )));
    }
    let mut sans: Vec<String> = req
        .get("addresses")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    sans.push(node.to_string());
    sans.push("127.0.0.1".to_string());
    sans.dedup();
    let cn = format!("system:node:{node}");
    let serving = pki
        .serving_cert(&cn, sans)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let client = pki
        .client_cert(&cn, &[NODES_GROUP])
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let out = json!({
        "caCert": pki.ca.cert_pem,
        "clientCert": client.cert_pem, "clientKey": client.key_pem,
        "servingCert": serving.cert_pem, "servingKey": serving.key_pem,
    });
    Ok(crate::handler::json_response(StatusCode::CREATED, &out))
}
