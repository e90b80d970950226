//! A fake API server for unit tests: a `kube::Client` whose requests are
//! recorded and answered by a function.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use kube::client::Body;
use kube::Client;
use serde::Serialize;

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_type: String,
    pub body: String,
}

/// An answer: status code and JSON body.
pub struct Reply {
    code: u16,
    body: serde_json::Value,
}

impl Reply {
    /// 200 with `body`.
    pub fn ok(body: &impl Serialize) -> Reply {
        Reply {
            code: 200,
            body: serde_json::to_value(body).unwrap_or_default(),
        }
    }

    /// A failure `Status` with `code` (and the reason the API server gives it).
    pub fn status(code: u16) -> Reply {
        let reason = match code {
            404 => "NotFound",
            409 => "Conflict",
            422 => "Invalid",
            _ => "InternalError",
        };
        Reply {
            code,
            body: serde_json::json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": format!("fake {code}"), "reason": reason, "code": code,
            }),
        }
    }
}

/// The requests seen so far.
#[derive(Clone, Default)]
pub struct Seen(Arc<Mutex<Vec<Request>>>);

impl Seen {
    pub fn requests(&self) -> Vec<Request> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A client whose requests `answer` replies to.
pub fn client(answer: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> (Client, Seen) {
    let seen = Seen::default();
    let log = seen.clone();
    let answer = Arc::new(answer);
    let svc = tower::service_fn(move |req: http::Request<Body>| {
        let (log, answer) = (log.clone(), answer.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = body.collect_bytes().await.unwrap_or_default();
            let r = Request {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: parts.uri.query().unwrap_or("").to_string(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                body: String::from_utf8_lossy(&body).into_owned(),
            };
            let reply = answer(&r);
            if let Ok(mut l) = log.0.lock() {
                l.push(r);
            }
            let resp = http::Response::builder()
                .status(reply.code)
                .header("content-type", "application/json")
                .body(Body::from(
                    serde_json::to_vec(&reply.body).unwrap_or_default(),
                ))
                .unwrap();
            Ok::<_, Infallible>(resp)
        }
    });
    (Client::new(svc, "default"), seen)
}
