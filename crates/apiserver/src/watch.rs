//! Serving watches: newline-delimited JSON events (one-row Tables, or
//! PartialObjectMetadata when asked for), fed by the
//! watch cache, filtered per watcher, closed at the timeout.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{BufMut, Bytes, BytesMut};
use futures::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::error::{ApiError, ApiResult};
use crate::handler::{stream_body, table_row, watch_timeout};
use crate::printers;
use crate::registry::{Filter, Registry};
use crate::request::{Query, ResourceRequest, ResponseFormat};
use crate::watchcache::{CachedEvent, WatchType};
use navarch_api::catalog::ResourceType;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

struct Watcher {
    rt: &'static ResourceType,
    prefix: String,
    name: Option<String>,
    filter: Filter,
    format: ResponseFormat,
    include: String,
    sent_columns: bool,
    last_revision: i64,
}

impl Watcher {
    /// The object as this watcher's resource version presents it.
    fn view(&self, v: &Arc<Value>) -> Arc<Value> {
        let stored = v.get("apiVersion").and_then(Value::as_str).unwrap_or("");
        if stored.is_empty() || stored == self.rt.api_version {
            v.clone()
        } else {
            Arc::new(crate::conversion::to_version(self.rt, (**v).clone()))
        }
    }

    /// What this watcher should see of an event, if anything: the event type, the
    /// object, and whether it is the stored (shared, pre-serialized) one.
    fn project(&self, ev: &CachedEvent) -> Option<(WatchType, Arc<Value>, bool)> {
        if ev.revision <= self.last_revision || !ev.key.starts_with(&self.prefix) {
            return None;
        }
        if let Some(n) = &self.name {
            if crate::object::name(&ev.object) != n {
                return None;
            }
        }
        let obj = self.view(&ev.object);
        let shared = Arc::ptr_eq(&obj, &ev.object);
        if self.filter.is_empty() {
            return Some((ev.event_type, obj, shared));
        }
        let now = self.filter.matches(&obj);
        let before = ev
            .prev
            .as_ref()
            .map(|p| self.filter.matches(&self.view(p)))
            .unwrap_or(false);
        let t = match ev.event_type {
            WatchType::Added => now.then_some(WatchType::Added),
            WatchType::Deleted => (now || before).then_some(WatchType::Deleted),
            WatchType::Modified => match (before, now) {
                (true, true) => Some(WatchType::Modified),
                (false, true) => Some(WatchType::Added),
                (true, false) => Some(WatchType::Deleted),
                (false, false) => None,
            },
        }?;
        Some((t, obj, shared))
    }

    fn encode(&mut self, t: &str, obj: &Value, json_bytes: Option<&Bytes>) -> Bytes {
        let mut out = BytesMut::with_capacity(256);
        out.put_slice(b"{\"type\":\"");
        out.put_slice(t.as_bytes());
        out.put_slice(b"\",\"object\":");
        match self.format {
            ResponseFormat::Json => match json_bytes {
                Some(b) => out.put_slice(b),
                None => out.put_slice(&serde_json::to_vec(obj).unwrap_or_default()),
            },
            ResponseFormat::Metadata => {
                let partial = crate::handler::partial_metadata(obj);
                out.put_slice(&serde_json::to_vec(&partial).unwrap_or_default());
            }
            ResponseFormat::Table => {
                let row = table_row(self.rt, obj, &self.include, chrono::Utc::now());
                let cols = if self.sent_columns {
                    json!([])
                } else {
                    printers::column_definitions_json(self.rt)
                };
                self.sent_columns = true;
                let rv = crate::object::meta_str(obj, "resourceVersion")
                    .unwrap_or("")
                    .to_string();
                let table = json!({
                    "kind": "Table", "apiVersion": "meta.k8s.io/v1",
                    "metadata": {"resourceVersion": rv},
                    "columnDefinitions": cols, "rows": [row],
                });
                out.put_slice(&serde_json::to_vec(&table).unwrap_or_default());
            }
        }
        out.put_slice(b"}\n");
        out.freeze()
    }

    fn event(&mut self, t: WatchType, ev_obj: &Arc<Value>, shared: Option<&Bytes>) -> Bytes {
        self.encode(t.as_str(), ev_obj, shared)
    }

    fn bookmark(&self, rv: i64, initial_end: bool) -> Bytes {
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if initial_end {
            meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
        }
        let (kind, api_version) = match self.format {
            ResponseFormat::Metadata => ("PartialObjectMetadata", "meta.k8s.io/v1"),
            _ => (self.rt.kind, self.rt.api_version),
        };
        let ev = json!({"type": "BOOKMARK", "object": {"kind": kind, "apiVersion": api_version, "metadata": meta}});
        let mut v = serde_json::to_vec(&ev).unwrap_or_default();
        v.push(b'\n');
        Bytes::from(v)
    }
}

fn error_event(e: &ApiError) -> Bytes {
    let mut v =
        serde_json::to_vec(&json!({"type": "ERROR", "object": e.status()})).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

fn streaming_response(rx: mpsc::Receiver<Bytes>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut r = (StatusCode::OK, stream_body(stream)).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    r.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-cache, private"),
    );
    r
}

/// Serve a watch request.
pub async fn serve(
    reg: Arc<Registry>,
    rr: ResourceRequest,
    q: Query,
    format: ResponseFormat,
) -> ApiResult<Response> {
    let rt = rr.rt;
    let ns = rr.namespace.as_deref();
    let filter = Filter::parse(rt, q.label_selector.as_deref(), q.field_selector.as_deref())?;
    let mut w = Watcher {
        rt,
        prefix: rt.list_prefix(ns),
        name: rr.name.clone(),
        filter,
        format,
        include: q
            .include_object
            .clone()
            .unwrap_or_else(|| "Metadata".into()),
        sent_columns: false,
        last_revision: 0,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(512);
    let send_initial = q.send_initial_events == Some(true);
    let rv: Option<i64> = match q.resource_version.as_deref() {
        None | Some("0") => None,
        Some(s) => Some(
            s.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion: {s}")))?,
        ),
    };
    let mut initial = Vec::new();
    let after = match rv {
        Some(n) if !send_initial => {
            let compacted = reg.store.compacted_revision();
            if n < compacted {
                let e = ApiError::expired(format!("too old resource version: {n} ({compacted})"));
                let _ = tx.send(error_event(&e)).await;
                drop(tx);
                return Ok(streaming_response(rx));
            }
            n
        }
        _ => {
            let res = reg.list(rt, ns, &w.filter, None, None).await?;
            initial = res
                .items
                .into_iter()
                .filter(|o| {
                    w.name
                        .as_deref()
                        .map(|n| crate::object::name(o) == n)
                        .unwrap_or(true)
                })
                .collect();
            res.revision
        }
    };
    let sub = reg.cache(rt).and_then(|c| c.subscribe(after));
    let fallback = match &sub {
        Some(_) => None,
        None => Some(reg.store.watch(&w.prefix, after).map_err(ApiError::from)?),
    };
    let timeout = watch_timeout(&q);
    let bookmarks = q.allow_watch_bookmarks;
    tokio::spawn(async move {
        let deadline = tokio::time::sleep(timeout);
        tokio::pin!(deadline);
        for o in &initial {
            let b = w.event(WatchType::Added, &Arc::new(o.clone()), None);
            if tx.send(b).await.is_err() {
                return;
            }
        }
        w.last_revision = after;
        if send_initial && tx.send(w.bookmark(after, true)).await.is_err() {
            return;
        }
        let mut tick = tokio::time::interval(BOOKMARK_EVERY);
        tick.tick().await;
        match (sub, fallback) {
            (Some(mut sub), _) => {
                for ev in sub.replay.drain(..) {
                    if let Some((t, obj, shared)) = w.project(&ev) {
                        let json =
                            (shared && w.format == ResponseFormat::Json).then(|| ev.object_json());
                        let b = w.event(t, &obj, json);
                        if tx.send(b).await.is_err() {
                            return;
                        }
                    }
                    w.last_revision = w.last_revision.max(ev.revision);
                }
                loop {
                    tokio::select! {
                        _ = &mut deadline => return,
                        _ = tx.closed() => return,
                        _ = tick.tick(), if bookmarks => {
                            if tx.send(w.bookmark(w.last_revision, false)).await.is_err() { return; }
                        }
                        r = sub.live.recv() => match r {
                            Ok(ev) => {
                                if let Some((t, obj, shared)) = w.project(&ev) {
                                    let json = (shared && w.format == ResponseFormat::Json).then(|| ev.object_json());
                                    let b = w.event(t, &obj, json);
                                    if tx.send(b).await.is_err() { return; }
                                }
                                w.last_revision = w.last_revision.max(ev.revision);
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) | Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                }
            }
            (None, Some(mut stream)) => loop {
                tokio::select! {
                    _ = &mut deadline => return,
                    _ = tx.closed() => return,
                    _ = tick.tick(), if bookmarks => {
                        if tx.send(w.bookmark(w.last_revision, false)).await.is_err() { return; }
                    }
                    r = stream.next() => match r {
                        Some(Ok(ev)) => {
                            let Some(ev) = CachedEvent::from_store(ev) else { continue };
                            if let Some((t, obj, _)) = w.project(&ev) {
                                let b = w.event(t, &obj, None);
                                if tx.send(b).await.is_err() { return; }
                            }
                            w.last_revision = w.last_revision.max(ev.revision);
                        }
                        Some(Err(e)) => {
                            let _ = tx.send(error_event(&ApiError::from(e))).await;
                            return;
                        }
                        None => return,
                    }
                }
            },
            (None, None) => {}
        }
    });
    Ok(streaming_response(rx))
}
