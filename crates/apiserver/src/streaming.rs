//! `pods/<name>/exec`, `pods/<name>/attach` and `pods/<name>/portforward`: check
//! the pod (and container), then relay the upgraded connection to the agent on
//! the pod's node (kubelet paths `/exec/{ns}/{pod}/{container}`,
//! `/attach/...`, `/portForward/{ns}/{pod}`).
//!
//! The client's upgrade request (WebSocket `GET` or SPDY `POST`) is replayed
//! to the agent with the same upgrade headers and query; the agent's answer
//! is passed back, and after a `101` both upgraded connections are spliced
//! with `copy_bidirectional`. The API server itself speaks neither WebSocket
//! nor SPDY.

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, StatusCode};
use axum::response::Response;
use navarch_api::catalog::{self, Subresource};
use serde_json::Value;

use crate::error::{ApiError, ApiResult};
use crate::handler::App;
use crate::request::ResourceRequest;

/// Request headers that make up an upgrade and are passed to the agent.
const UPGRADE_HEADERS: &[&str] = &[
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "x-stream-protocol-version",
];

/// Whether `headers` ask for a protocol upgrade.
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers
        .get_all(axum::http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        })
        && headers.contains_key(axum::http::header::UPGRADE)
}

/// The upgrade-related subset of `headers`.
pub fn upgrade_headers(headers: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::new();
    for name in UPGRADE_HEADERS {
        let name = HeaderName::from_static(name);
        for v in headers.get_all(&name) {
            out.append(name.clone(), v.clone());
        }
    }
    out
}

fn names(pod: &Value, field: &str) -> Vec<String> {
    pod.pointer(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// The container an exec/attach targets: `container=` (checked against the
/// spec), else the default-container annotation, else the only container.
pub fn choose_container(pod: &Value, requested: Option<&str>) -> ApiResult<String> {
    let name = pod
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    let regular = names(pod, "/spec/containers");
    let mut all = regular.clone();
    all.extend(names(pod, "/spec/initContainers"));
    all.extend(names(pod, "/spec/ephemeralContainers"));
    match requested.filter(|c| !c.is_empty()) {
        Some(c) if all.iter().any(|n| n == c) => Ok(c.to_string()),
        Some(c) => Err(ApiError::bad_request(format!(
            "container {c} is not valid for pod {name}"
        ))),
        None => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str);
            match (default, regular.as_slice()) {
                (Some(d), _) => Ok(d.to_string()),
                (None, [first, ..]) => Ok(first.clone()),
                (None, []) => Err(ApiError::bad_request(format!(
                    "pod {name} has no containers"
                ))),
            }
        }
    }
}

/// The `container=` value of a raw query string.
fn query_container(raw: &str) -> Option<String> {
    url::form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.into_owned())
}

/// Serve an exec, attach or portforward request.
pub async fn serve(
    app: &App,
    rr: &ResourceRequest,
    mut req: axum::extract::Request,
) -> ApiResult<Response> {
    let reg = &app.registry;
    let ns = rr.namespace.as_deref().unwrap_or("default");
    let name = rr.name.as_deref().unwrap_or("");
    let raw_query = req.uri().query().unwrap_or("").to_string();
    let pod = reg.get(rr.rt, Some(ns), name).await?;
    let sub = rr.subresource.unwrap_or(Subresource::Exec);
    let path = match sub {
        Subresource::PortForward => format!("/portForward/{ns}/{name}"),
        Subresource::Attach | Subresource::Exec => {
            let container = choose_container(&pod, query_container(&raw_query).as_deref())?;
            let kind = if sub == Subresource::Attach {
                "attach"
            } else {
                "exec"
            };
            format!("/{kind}/{ns}/{name}/{container}")
        }
        _ => return Err(ApiError::bad_request("not a streaming subresource")),
    };
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if phase == "Succeeded" || phase == "Failed" {
        return Err(ApiError::bad_request(format!(
            "cannot {} into a container in a completed pod; current phase is {phase}",
            sub.name()
        )));
    }
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "pod {name} does not have a host assigned"
        )));
    }
    if !is_upgrade(req.headers()) {
        return Err(ApiError::bad_request("Upgrade request required"));
    }
    let nodes = catalog::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let node_obj = reg.get(nodes, None, node).await?;
    let (host, port) = crate::nodeproxy::node_endpoint(&node_obj).ok_or_else(|| {
        ApiError::bad_request(format!("node {node} has no address to reach its agent"))
    })?;
    let target = if raw_query.is_empty() {
        path
    } else {
        format!("{path}?{raw_query}")
    };
    let headers = upgrade_headers(req.headers());
    let client_upgrade = hyper::upgrade::on(&mut req);
    let mut resp = app
        .node_client
        .upgrade(&host, port, req.method().clone(), &target, &headers)
        .await?;
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        let (parts, body) = resp.into_parts();
        return Ok(Response::from_parts(parts, Body::new(body)));
    }
    let agent_upgrade = hyper::upgrade::on(&mut resp);
    tokio::spawn(async move {
        let (client, agent) = match tokio::try_join!(client_upgrade, agent_upgrade) {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(error = %e, "streaming upgrade failed");
                return;
            }
        };
        let mut client = hyper_util::rt::TokioIo::new(client);
        let mut agent = hyper_util::rt::TokioIo::new(agent);
        let _ = tokio::io::copy_bidirectional(&mut client, &mut agent).await;
    });
    let mut out = Response::new(Body::empty());
    *out.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    *out.headers_mut() = resp.headers().clone();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn picks_containers() {
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "app"}, {"name": "side"}],
            "initContainers": [{"name": "init"}]}});
        assert_eq!(choose_container(&pod, None).unwrap(), "app");
        assert_eq!(choose_container(&pod, Some("side")).unwrap(), "side");
        assert_eq!(choose_container(&pod, Some("init")).unwrap(), "init");
        let e = choose_container(&pod, Some("nope")).unwrap_err();
        assert_eq!(e.code, 400);
        let annotated = json!({"metadata": {"name": "p", "annotations": {
            "kubectl.kubernetes.io/default-container": "side"}},
            "spec": {"containers": [{"name": "app"}, {"name": "side"}]}});
        assert_eq!(choose_container(&annotated, None).unwrap(), "side");
    }

    #[test]
    fn upgrade_detection_and_headers() {
        let mut h = HeaderMap::new();
        assert!(!is_upgrade(&h));
        h.insert("connection", "keep-alive, Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        h.insert(
            "sec-websocket-protocol",
            "v5.channel.k8s.io".parse().unwrap(),
        );
        h.append(
            "x-stream-protocol-version",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        h.append(
            "x-stream-protocol-version",
            "channel.k8s.io".parse().unwrap(),
        );
        h.insert("authorization", "Bearer secret".parse().unwrap());
        assert!(is_upgrade(&h));
        let u = upgrade_headers(&h);
        assert!(u.get("authorization").is_none());
        assert_eq!(u.get_all("x-stream-protocol-version").iter().count(), 2);
        assert_eq!(u.get("upgrade").unwrap(), "websocket");
    }

    #[test]
    fn reads_container_from_query() {
        assert_eq!(
            query_container("command=ls&container=app&stdout=true").as_deref(),
            Some("app")
        );
        assert_eq!(query_container("command=ls"), None);
    }
}
