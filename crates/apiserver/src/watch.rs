//! Serving watches: newline-delimited JSON events (one-row Tables, or
//! PartialObjectMetadata when asked for), fed by the watch cache, filtered per
//! watcher, closed at the timeout.
//!
//! A watch response body is a stream polled directly by the HTTP connection (no
//! task or channel per watcher). Each poll hands out the shared, pre-encoded
//! event line of the watch cache when the watcher sees the stored object as is,
//! and when several events are already waiting (the server is busy) it joins
//! them into one chunk: one DATA frame, one TLS record run, one `writev` for
//! the batch instead of one per event. An idle server therefore writes every
//! event at once, and a loaded one amortizes its per-write cost.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::{Bytes, BytesMut};
use futures::{FutureExt, Stream, StreamExt};
use navarch_store::{Revision, WatchStream};
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::TryRecvError};
use tokio::time::{Interval, Sleep};

use crate::error::{ApiError, ApiResult};
use crate::handler::{stream_body, table_row, watch_timeout};
use crate::printers;
use crate::registry::{Filter, Registry};
use crate::request::{Query, ResourceRequest, ResponseFormat};
use crate::watchcache::{event_line, CachedEvent, LineFormat, WatchCache, WatchType};
use navarch_api::catalog::ResourceType;

/// How often a watch that asked for bookmarks gets one.
const BOOKMARK_EVERY: Duration = Duration::from_secs(60);

/// Upper bound of one body chunk when events are joined (the initial events of
/// a large list, or a backlog): keeps frames and buffers moderate.
const MAX_CHUNK: usize = 256 * 1024;

/// One watcher's view: which events it sees and how they are presented.
struct Watcher {
    rt: &'static ResourceType,
    prefix: String,
    name: Option<String>,
    filter: Filter,
    format: ResponseFormat,
    include: String,
    sent_columns: bool,
    last_revision: Revision,
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

    /// What this watcher should see of an event, if anything: the event type and
    /// the object as this watcher's version presents it.
    fn project(&self, ev: &CachedEvent) -> Option<(WatchType, Arc<Value>)> {
        if ev.revision <= self.last_revision || !ev.key.starts_with(&self.prefix) {
            return None;
        }
        let stored = ev.object()?;
        if let Some(n) = &self.name {
            if crate::object::name(stored) != n {
                return None;
            }
        }
        let obj = self.view(stored);
        if self.filter.is_empty() {
            return Some((ev.event_type, obj));
        }
        let now = self.filter.matches(&obj);
        let before = || {
            ev.prev()
                .map(|p| self.filter.matches(&self.view(p)))
                .unwrap_or(false)
        };
        let t = match ev.event_type {
            WatchType::Added => now.then_some(WatchType::Added),
            WatchType::Deleted => (now || before()).then_some(WatchType::Deleted),
            WatchType::Modified => match (before(), now) {
                (true, true) => Some(WatchType::Modified),
                (false, true) => Some(WatchType::Added),
                (true, false) => Some(WatchType::Deleted),
                (false, false) => None,
            },
        }?;
        Some((t, obj))
    }

    /// The shared line format of the cache this watcher can use, if any (Tables
    /// are per watcher: their columns are sent once per stream).
    fn line_format(&self) -> Option<LineFormat> {
        match self.format {
            ResponseFormat::Json => Some(LineFormat::Object),
            ResponseFormat::Metadata => Some(LineFormat::Metadata),
            ResponseFormat::Table => None,
        }
    }

    /// Encode `obj` as an event of type `t` for this watcher.
    fn encode(&mut self, t: WatchType, obj: &Value) -> Bytes {
        match self.line_format() {
            Some(f) => event_line(t, f, obj),
            None => self.table_event(t, obj),
        }
    }

    fn table_event(&mut self, t: WatchType, obj: &Value) -> Bytes {
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
        let mut v = Vec::with_capacity(512);
        v.extend_from_slice(b"{\"type\":\"");
        v.extend_from_slice(t.as_str().as_bytes());
        v.extend_from_slice(b"\",\"object\":");
        if let Err(e) = serde_json::to_writer(&mut v, &table) {
            tracing::error!(error = %e, "cannot serialize a table watch event");
        }
        v.extend_from_slice(b"}\n");
        Bytes::from(v)
    }

    /// The bytes this watcher gets for a cached event, if it sees it at all:
    /// the cache's shared line when the object is presented as stored.
    fn cached_event(&mut self, ev: &CachedEvent) -> Option<Bytes> {
        let out = self.project(ev).map(|(t, obj)| {
            let shared = ev.object().is_some_and(|o| Arc::ptr_eq(o, &obj));
            match self.line_format().filter(|_| shared) {
                Some(f) => match ev.line(f, t) {
                    Some(line) => line.clone(),
                    None => self.encode(t, &obj),
                },
                None => self.encode(t, &obj),
            }
        });
        self.last_revision = self.last_revision.max(ev.revision);
        out
    }

    fn bookmark(&self, rv: Revision, initial_end: bool) -> Bytes {
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

/// Collects the events of one body chunk: the first one is kept as is (no copy
/// for a lone event, the common case), more are joined.
#[derive(Default)]
struct Chunk {
    first: Option<Bytes>,
    joined: Option<BytesMut>,
}

impl Chunk {
    fn push(&mut self, b: Bytes) {
        match (&mut self.first, &mut self.joined) {
            (None, _) => self.first = Some(b),
            (Some(first), None) => {
                let mut j = BytesMut::with_capacity((first.len() + b.len()) * 2);
                j.extend_from_slice(first);
                j.extend_from_slice(&b);
                self.joined = Some(j);
            }
            (Some(_), Some(j)) => j.extend_from_slice(&b),
        }
    }

    fn len(&self) -> usize {
        match (&self.first, &self.joined) {
            (_, Some(j)) => j.len(),
            (Some(f), None) => f.len(),
            (None, None) => 0,
        }
    }

    fn full(&self) -> bool {
        self.len() >= MAX_CHUNK
    }

    fn take(self) -> Option<Bytes> {
        match (self.first, self.joined) {
            (_, Some(j)) => Some(j.freeze()),
            (first, None) => first,
        }
    }
}

/// Where live events come from.
enum Source {
    /// The resource's watch cache (shared decoding and encoding).
    Cache(broadcast::Receiver<Arc<CachedEvent>>),
    /// A store watch of this watcher's own (the cache no longer reaches back
    /// to the requested revision).
    Store(WatchStream),
}

/// The state of one watch response body.
struct Feed {
    w: Watcher,
    /// Listed objects to send as ADDED first (`sendInitialEvents`, or a watch
    /// without a resourceVersion).
    initial: std::vec::IntoIter<Value>,
    /// The `initial-events-end` bookmark to send after `initial`, at this revision.
    initial_end: Option<Revision>,
    /// Buffered events from the cache to replay before the live feed.
    replay: std::vec::IntoIter<Arc<CachedEvent>>,
    source: Source,
    /// When the watch ends (the client's `timeoutSeconds`, or the default).
    deadline_at: tokio::time::Instant,
    /// Whether the client allows periodic bookmarks.
    bookmarks_allowed: bool,
    /// The timers of a feed polled on the runtime, made on first wait (a feed
    /// served by the [`hub`] thread keeps its own clock).
    timers: Option<Timers>,
    done: bool,
}

struct Timers {
    deadline: Pin<Box<Sleep>>,
    /// Periodic bookmarks, when the client allows them.
    bookmarks: Option<Interval>,
}

impl Feed {
    /// The next chunk of what is owed before the live feed (initial events,
    /// their closing bookmark, the replay from the cache), without waiting;
    /// `None` once all of it has been handed out.
    fn backlog_chunk(&mut self) -> Option<Bytes> {
        let mut chunk = Chunk::default();
        for o in self.initial.by_ref() {
            chunk.push(self.w.encode(WatchType::Added, &o));
            if chunk.full() {
                return chunk.take();
            }
        }
        if let Some(rv) = self.initial_end.take() {
            chunk.push(self.w.bookmark(rv, true));
        }
        for ev in self.replay.by_ref() {
            if let Some(b) = self.w.cached_event(&ev) {
                chunk.push(b);
                if chunk.full() {
                    return chunk.take();
                }
            }
        }
        chunk.take()
    }

    /// Every live event already waiting, as one chunk, without waiting; the
    /// feed is `done` afterwards when the watch has to end.
    fn ready_chunk(&mut self) -> Option<Bytes> {
        let mut chunk = Chunk::default();
        self.drain_ready(&mut chunk);
        chunk.take()
    }

    /// Whether live events come from the watch cache (which the [`hub`]
    /// thread can read without a runtime).
    fn fed_by_cache(&self) -> bool {
        matches!(self.source, Source::Cache(_))
    }

    /// The next body chunk; `None` ends the watch.
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if self.done {
            return None;
        }
        if let Some(b) = self.backlog_chunk() {
            return Some(b);
        }
        let mut chunk = Chunk::default();
        loop {
            match self.wait_live().await {
                Live::Bytes(b) => chunk.push(b),
                Live::Skip => continue,
                Live::End(last) => {
                    self.done = true;
                    if let Some(b) = last {
                        chunk.push(b);
                    }
                    return chunk.take();
                }
            }
            // Whatever else is already waiting goes into the same chunk.
            self.drain_ready(&mut chunk);
            return chunk.take();
        }
    }

    /// Wait for the next live event, bookmark, or the end of the watch.
    async fn wait_live(&mut self) -> Live {
        let (deadline_at, allowed) = (self.deadline_at, self.bookmarks_allowed);
        let Feed {
            w, source, timers, ..
        } = self;
        let Timers {
            deadline,
            bookmarks,
        } = timers.get_or_insert_with(|| Timers {
            deadline: Box::pin(tokio::time::sleep_until(deadline_at)),
            bookmarks: allowed.then(|| {
                let start = tokio::time::Instant::now() + BOOKMARK_EVERY;
                tokio::time::interval_at(start, BOOKMARK_EVERY)
            }),
        });
        let tick = async {
            match bookmarks.as_mut() {
                Some(t) => {
                    t.tick().await;
                }
                None => futures::future::pending::<()>().await,
            }
        };
        let next = match source {
            Source::Cache(rx) => tokio::select! {
                _ = deadline => return Live::End(None),
                _ = tick => return Live::Bytes(w.bookmark(w.last_revision, false)),
                r = rx.recv() => Incoming::Cached(r.map_err(|_| ())),
            },
            Source::Store(stream) => tokio::select! {
                _ = deadline => return Live::End(None),
                _ = tick => return Live::Bytes(w.bookmark(w.last_revision, false)),
                r = stream.next() => Incoming::Store(r),
            },
        };
        self.incoming(next)
    }

    /// Turn one received item into what the watcher sends.
    fn incoming(&mut self, item: Incoming) -> Live {
        match item {
            // Lagging behind the live feed (or the cache going away) ends the
            // watch; the client resumes from its last resourceVersion.
            Incoming::Cached(Err(())) => Live::End(None),
            Incoming::Cached(Ok(ev)) => match self.w.cached_event(&ev) {
                Some(b) => Live::Bytes(b),
                None => Live::Skip,
            },
            Incoming::Store(Some(Ok(ev))) => {
                let ev = CachedEvent::from_store(ev);
                match self.w.cached_event(&ev) {
                    Some(b) => Live::Bytes(b),
                    None => Live::Skip,
                }
            }
            Incoming::Store(Some(Err(e))) => Live::End(Some(error_event(&ApiError::from(e)))),
            Incoming::Store(None) => Live::End(None),
        }
    }

    /// Add every event that is already available, without waiting, up to the
    /// chunk limit.
    fn drain_ready(&mut self, chunk: &mut Chunk) {
        while !chunk.full() {
            let item = match &mut self.source {
                Source::Cache(rx) => match rx.try_recv() {
                    Ok(ev) => Incoming::Cached(Ok(ev)),
                    Err(TryRecvError::Empty) => return,
                    Err(TryRecvError::Lagged(_)) | Err(TryRecvError::Closed) => {
                        Incoming::Cached(Err(()))
                    }
                },
                Source::Store(stream) => match stream.next().now_or_never() {
                    Some(r) => Incoming::Store(r),
                    None => return,
                },
            };
            match self.incoming(item) {
                Live::Bytes(b) => chunk.push(b),
                Live::Skip => {}
                Live::End(last) => {
                    self.done = true;
                    if let Some(b) = last {
                        chunk.push(b);
                    }
                    return;
                }
            }
        }
    }
}

enum Incoming {
    Cached(Result<Arc<CachedEvent>, ()>),
    Store(Option<navarch_store::Result<navarch_store::Event>>),
}

enum Live {
    Bytes(Bytes),
    Skip,
    /// The watch ends, after these last bytes if any.
    End(Option<Bytes>),
}

fn streaming_response<S>(stream: S) -> Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
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

/// What opening a watch gives: its feed, or the one error event it ends with.
enum Opened {
    Feed(Box<Feed>),
    Expired(Bytes),
}

impl Opened {
    fn into_stream(self) -> Pin<Box<dyn Stream<Item = Bytes> + Send>> {
        match self {
            Opened::Expired(b) => Box::pin(futures::stream::once(async move { b })),
            Opened::Feed(feed) => Box::pin(futures::stream::unfold(feed, |mut feed| async move {
                let chunk = feed.next_chunk().await?;
                Some((chunk, feed))
            })),
        }
    }
}

/// The body of a watch request, as a stream of chunks of complete event lines.
pub async fn open(
    reg: &Registry,
    rr: &ResourceRequest,
    q: &Query,
    format: ResponseFormat,
) -> ApiResult<Pin<Box<dyn Stream<Item = Bytes> + Send>>> {
    Ok(open_feed(reg, rr, q, format).await?.into_stream())
}

async fn open_feed(
    reg: &Registry,
    rr: &ResourceRequest,
    q: &Query,
    format: ResponseFormat,
) -> ApiResult<Opened> {
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
    let send_initial = q.send_initial_events == Some(true);
    let rv: Option<Revision> = match q.resource_version.as_deref() {
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
                return Ok(Opened::Expired(error_event(&e)));
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
    w.last_revision = after;
    let (replay, source) = match reg.cache(rt).and_then(|c| c.subscribe(after)) {
        Some(sub) => (sub.replay, Source::Cache(sub.live)),
        None => (
            Vec::new(),
            Source::Store(reg.store.watch(&w.prefix, after).map_err(ApiError::from)?),
        ),
    };
    let feed = Feed {
        w,
        initial: initial.into_iter(),
        initial_end: send_initial.then_some(after),
        replay: replay.into_iter(),
        source,
        deadline_at: tokio::time::Instant::now() + watch_timeout(q),
        bookmarks_allowed: q.allow_watch_bookmarks,
        timers: None,
        done: false,
    };
    Ok(Opened::Feed(Box::new(feed)))
}

/// Serve a watch request.
pub async fn serve(
    reg: Arc<Registry>,
    rr: ResourceRequest,
    q: Query,
    format: ResponseFormat,
) -> ApiResult<Response> {
    let opened = open_feed(&reg, &rr, &q, format).await?;
    let cache = reg.cache(rr.rt).cloned();
    match (opened, cache) {
        (Opened::Feed(feed), Some(cache)) if feed.fed_by_cache() => {
            // The connection may hand this feed to the hub thread instead of
            // polling the body (see `direct`); the body takes it otherwise.
            let slot = Detachable {
                feed: Arc::new(parking_lot::Mutex::new(Some(feed))),
                cache,
            };
            let taken = slot.feed.clone();
            let body = futures::stream::once(async move { taken.lock().take() })
                .filter_map(futures::future::ready)
                .flat_map(|feed| Opened::Feed(feed).into_stream());
            let mut r = streaming_response(body);
            r.extensions_mut().insert(slot);
            Ok(r)
        }
        (opened, _) => Ok(streaming_response(opened.into_stream())),
    }
}

/// A watch response's feed, which whoever serves the connection can take
/// instead of polling the body: the HTTP/1.1 connections of [`direct`] hand it
/// to the watch hub thread (`watch/hub.rs`).
#[derive(Clone)]
pub struct Detachable {
    feed: Arc<parking_lot::Mutex<Option<Box<Feed>>>>,
    cache: Arc<WatchCache>,
}

impl Detachable {
    fn take(&self) -> Option<Box<Feed>> {
        self.feed.lock().take()
    }
}

pub mod direct;
mod hub;

#[cfg(test)]
mod tests;
