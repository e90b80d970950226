//! The watch cache: one store watch per storage prefix, each change decoded once
//! and fanned out to every API watcher of that resource (upstream's "cacher").
//!
//! Every change is decoded once, and its watch-event line (`{"type":...,
//! "object":...}\n`) is serialized once per output format (full object or
//! `PartialObjectMetadata`) and event type, then shared as [`Bytes`] by every
//! watcher: a watcher's own work is selector filtering and a write.
//!
//! A bounded buffer of recent events lets a watcher that starts from a recent
//! resourceVersion replay what it missed without touching the store.

use std::collections::VecDeque;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use futures::StreamExt;
use navarch_store::{EventType, Revision, Store};
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

/// A watch event type as the API names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchType {
    Added,
    Modified,
    Deleted,
}

impl WatchType {
    /// The `type` field of a watch event.
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
        }
    }

    fn index(self) -> usize {
        match self {
            WatchType::Added => 0,
            WatchType::Modified => 1,
            WatchType::Deleted => 2,
        }
    }
}

/// The shape of the object inside an encoded watch event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineFormat {
    /// The whole object, as stored.
    Object,
    /// `meta.k8s.io/v1` `PartialObjectMetadata`: only the object's metadata.
    Metadata,
}

impl LineFormat {
    fn index(self) -> usize {
        match self {
            LineFormat::Object => 0,
            LineFormat::Metadata => 3,
        }
    }
}

/// One change of the store, decoded at most once (on first use: kinds nobody
/// watches are never decoded) and encoded at most once per line format and type.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: Revision,
    pub event_type: WatchType,
    pub key: String,
    /// The stored object (for a deletion: its last state), shared with the store.
    raw: Bytes,
    object: OnceLock<Option<Arc<Value>>>,
    /// The stored bytes and revision of the object before the change; decoded
    /// only when a watcher with a selector needs it.
    prev_raw: Option<(Bytes, Revision)>,
    prev: OnceLock<Option<Arc<Value>>>,
    /// Encoded event lines, `[format][type]`, each built on first use and then
    /// shared by every watcher.
    lines: [OnceLock<Bytes>; 6],
}

impl CachedEvent {
    /// Wrap a store event; nothing is decoded yet.
    pub fn from_store(ev: navarch_store::Event) -> Arc<CachedEvent> {
        let event_type = match ev.event_type {
            EventType::Put if ev.prev.is_none() => WatchType::Added,
            EventType::Put => WatchType::Modified,
            EventType::Delete => WatchType::Deleted,
        };
        Arc::new(CachedEvent {
            revision: ev.kv.mod_revision,
            event_type,
            key: ev.kv.key,
            raw: ev.kv.value,
            object: OnceLock::new(),
            prev_raw: ev.prev.map(|p| (p.value, p.mod_revision)),
            prev: OnceLock::new(),
            lines: Default::default(),
        })
    }

    /// Whether anything was decoded or encoded for this event yet.
    pub fn is_decoded(&self) -> bool {
        self.object.get().is_some()
            || self.prev.get().is_some()
            || self.lines.iter().any(|l| l.get().is_some())
    }

    /// The same change with nothing decoded (the stored bytes are shared).
    pub fn undecoded(&self) -> Arc<CachedEvent> {
        Arc::new(CachedEvent {
            revision: self.revision,
            event_type: self.event_type,
            key: self.key.clone(),
            raw: self.raw.clone(),
            object: OnceLock::new(),
            prev_raw: self.prev_raw.clone(),
            prev: OnceLock::new(),
            lines: Default::default(),
        })
    }

    /// The object with its resourceVersion set, decoded on first use; `None`
    /// (logged once) when the stored bytes are not a JSON object.
    pub fn object(&self) -> Option<&Arc<Value>> {
        self.object
            .get_or_init(|| {
                let v = decode_stored(&self.raw, self.revision).map(Arc::new);
                if v.is_none() {
                    tracing::error!(key = %self.key, revision = self.revision,
                        "undecodable object in store; not delivered to watchers");
                }
                v
            })
            .as_ref()
    }

    /// The object before the change (None for a creation), decoded on first use.
    pub fn prev(&self) -> Option<&Arc<Value>> {
        self.prev
            .get_or_init(|| {
                let (raw, rev) = self.prev_raw.as_ref()?;
                decode_stored(raw, *rev).map(Arc::new)
            })
            .as_ref()
    }

    /// The complete watch-event line (newline included) presenting this event's
    /// object as `t` in `format`; serialized once, then shared. `None` when the
    /// object cannot be decoded.
    pub fn line(&self, format: LineFormat, t: WatchType) -> Option<&Bytes> {
        let slot = &self.lines[format.index() + t.index()];
        if let Some(b) = slot.get() {
            return Some(b);
        }
        let obj = self.object()?;
        Some(slot.get_or_init(|| event_line(t, format, obj)))
    }
}

/// Serialize one watch-event line: `{"type":"<t>","object":<obj>}` and a newline,
/// the object in `format`.
pub fn event_line(t: WatchType, format: LineFormat, obj: &Value) -> Bytes {
    let mut out = Vec::with_capacity(512);
    out.extend_from_slice(b"{\"type\":\"");
    out.extend_from_slice(t.as_str().as_bytes());
    out.extend_from_slice(b"\",\"object\":");
    let written = match format {
        LineFormat::Object => serde_json::to_writer(&mut out, obj),
        LineFormat::Metadata => {
            out.extend_from_slice(
                b"{\"kind\":\"PartialObjectMetadata\",\"apiVersion\":\"meta.k8s.io/v1\",\"metadata\":",
            );
            let empty = Value::Object(Default::default());
            let meta = obj.get("metadata").unwrap_or(&empty);
            serde_json::to_writer(&mut out, meta).map(|()| out.push(b'}'))
        }
    };
    if let Err(e) = written {
        // A serde_json::Value always serializes; keep the stream well-formed anyway.
        tracing::error!(error = %e, "cannot serialize a watch event");
    }
    out.extend_from_slice(b"}\n");
    Bytes::from(out)
}

/// Decode a stored value into an API object carrying `revision` as its
/// resourceVersion.
pub fn decode_stored(value: &[u8], revision: Revision) -> Option<Value> {
    let mut v: Value = serde_json::from_slice(value).ok()?;
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Some(v)
}

/// Slots of the live broadcast channel (each slot is allocated up front).
const LIVE_CHANNEL: usize = 1024;

/// The newest buffered events keep what was decoded and encoded for them
/// (live watchers are still working through them); older ones are kept as
/// stored bytes only and decoded again if a resuming watcher replays them.
pub const DECODED_RECENT: usize = 64;

struct Inner {
    buffer: VecDeque<Arc<CachedEvent>>,
    /// Everything after this revision is (or will be) in `buffer` or delivered live.
    start_revision: Revision,
    last_revision: Revision,
    /// The live channel, created for the first subscriber and dropped when an
    /// event finds no subscriber left (its slots are allocated up front: most
    /// resources are never watched, or only for a while).
    tx: Option<broadcast::Sender<Arc<CachedEvent>>>,
}

/// The decoded events of one storage prefix, shared by its watchers.
pub struct WatchCache {
    inner: Mutex<Inner>,
    channel: usize,
    capacity: usize,
}

/// What a new watcher gets: buffered events to replay, and the live feed.
pub struct Subscription {
    pub replay: Vec<Arc<CachedEvent>>,
    pub live: broadcast::Receiver<Arc<CachedEvent>>,
}

impl WatchCache {
    /// Start following `prefix` in `store` from its current revision.
    pub fn start(store: Arc<dyn Store>, prefix: String, capacity: usize) -> Arc<WatchCache> {
        let start = store.current_revision();
        // The live channel is smaller than the replay buffer: a watcher that falls
        // further behind is closed and resumes from the buffer by resourceVersion.
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Inner {
                buffer: VecDeque::new(),
                start_revision: start,
                last_revision: start,
                tx: None,
            }),
            channel: LIVE_CHANNEL.min(capacity).max(16),
            capacity,
        });
        let c = cache.clone();
        tokio::spawn(async move {
            let mut after = start;
            loop {
                let mut stream = match store.watch(&prefix, after) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(%prefix, error = %e, "watch cache cannot follow the store");
                        // Everything older is lost to this cache: restart from now.
                        after = store.current_revision();
                        c.reset(after);
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                        continue;
                    }
                };
                while let Some(ev) = stream.next().await {
                    match ev {
                        Ok(ev) => {
                            after = ev.kv.mod_revision;
                            c.push(ev);
                        }
                        Err(e) => {
                            tracing::warn!(%prefix, error = %e, "store watch ended; resuming");
                            break;
                        }
                    }
                }
            }
        });
        cache
    }

    fn reset(&self, revision: Revision) {
        let mut inner = self.inner.lock();
        inner.buffer.clear();
        inner.start_revision = revision;
        inner.last_revision = revision;
    }

    fn push(&self, ev: navarch_store::Event) {
        let cached = CachedEvent::from_store(ev);
        let rev = cached.revision;
        let mut inner = self.inner.lock();
        inner.last_revision = rev;
        if inner.buffer.len() >= self.capacity {
            if let Some(old) = inner.buffer.pop_front() {
                inner.start_revision = old.revision;
            }
        }
        inner.buffer.push_back(cached.clone());
        // Past the recent window, keep only the stored bytes of an event.
        if let Some(i) = inner.buffer.len().checked_sub(DECODED_RECENT + 1) {
            if let Some(old) = inner.buffer.get_mut(i) {
                if old.is_decoded() {
                    *old = old.undecoded();
                }
            }
        }
        // Sending under the lock keeps replay and live consistent for subscribers.
        if let Some(tx) = &inner.tx {
            if tx.send(cached).is_err() {
                // Nobody is listening any more: free the channel's slots.
                inner.tx = None;
            }
        }
    }

    /// Subscribe to events after `after`. `None` when the buffer no longer reaches
    /// back that far (the caller then falls back to the store).
    pub fn subscribe(&self, after: Revision) -> Option<Subscription> {
        let mut inner = self.inner.lock();
        if after < inner.start_revision {
            return None;
        }
        let replay = inner
            .buffer
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        let channel = self.channel;
        let live = inner
            .tx
            .get_or_insert_with(|| broadcast::channel(channel).0)
            .subscribe();
        Some(Subscription { replay, live })
    }

    /// Whether the live channel exists (someone subscribed since the last
    /// event that found no subscriber).
    pub fn has_live_channel(&self) -> bool {
        self.inner.lock().tx.is_some()
    }

    pub fn last_revision(&self) -> Revision {
        self.inner.lock().last_revision
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use navarch_store::KeyValue;
    use serde_json::json;

    fn kv(value: &Value, rev: Revision) -> KeyValue {
        KeyValue {
            key: "/registry/core/configmaps/default/a".into(),
            value: Bytes::from(serde_json::to_vec(value).unwrap()),
            create_revision: 1,
            mod_revision: rev,
        }
    }

    fn obj(labels: Value) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "a", "namespace": "default", "labels": labels},
            "data": {"k": "v"}})
    }

    fn modified() -> Arc<CachedEvent> {
        CachedEvent::from_store(navarch_store::Event {
            event_type: EventType::Put,
            kv: kv(&obj(json!({"v": "2"})), 7),
            prev: Some(kv(&obj(json!({"v": "1"})), 5)),
        })
    }

    #[test]
    fn decodes_lazily_and_once() {
        let ev = modified();
        assert_eq!(ev.event_type, WatchType::Modified);
        assert!(ev.object.get().is_none(), "nothing decoded before use");
        assert!(ev.prev.get().is_none());
        let o = ev.object().unwrap();
        assert_eq!(o["metadata"]["resourceVersion"], "7");
        assert!(Arc::ptr_eq(o, ev.object().unwrap()), "decoded once");
        assert!(ev.prev.get().is_none(), "prev only when asked");
        assert_eq!(ev.prev().unwrap()["metadata"]["resourceVersion"], "5");
        assert_eq!(ev.prev().unwrap()["metadata"]["labels"]["v"], "1");
    }

    #[test]
    fn lines_are_encoded_once_per_format_and_type() {
        let ev = modified();
        let a = ev.line(LineFormat::Object, WatchType::Modified).unwrap();
        let b = ev.line(LineFormat::Object, WatchType::Modified).unwrap();
        assert_eq!(a.as_ptr(), b.as_ptr());
        let v: Value = serde_json::from_slice(a).unwrap();
        assert!(a.ends_with(b"}\n"));
        assert_eq!(v["type"], "MODIFIED");
        assert_eq!(v["object"], **ev.object().unwrap());
        // A selector can turn the same change into an ADDED or DELETED.
        let added = ev.line(LineFormat::Object, WatchType::Added).unwrap();
        assert!(added.starts_with(b"{\"type\":\"ADDED\",\"object\":{"));
        let meta = ev.line(LineFormat::Metadata, WatchType::Deleted).unwrap();
        let v: Value = serde_json::from_slice(meta).unwrap();
        assert_eq!(v["type"], "DELETED");
        assert_eq!(
            v["object"],
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": ev.object().unwrap()["metadata"].clone()})
        );
    }

    #[test]
    fn undecodable_objects_have_no_line() {
        let ev = CachedEvent::from_store(navarch_store::Event {
            event_type: EventType::Put,
            kv: KeyValue {
                key: "/x".into(),
                value: Bytes::from_static(b"{not json"),
                create_revision: 1,
                mod_revision: 1,
            },
            prev: None,
        });
        assert_eq!(ev.event_type, WatchType::Added);
        assert!(ev.object().is_none());
        assert!(ev.line(LineFormat::Object, WatchType::Added).is_none());
    }

    #[tokio::test]
    async fn subscribe_replays_after_a_revision_or_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = navarch_store::embedded::EmbeddedStore::open(
            dir.path(),
            navarch_store::embedded::EmbeddedOptions::default(),
        )
        .unwrap();
        store
            .put(
                "/old",
                Bytes::from_static(b"{}"),
                navarch_store::Precondition::None,
            )
            .await
            .unwrap();
        let cache = WatchCache::start(store.clone(), "/p/".into(), 2);
        assert!(cache.subscribe(0).is_none(), "before the cache started");
        for i in 0..3 {
            let v = Bytes::from(format!("{{\"metadata\":{{\"name\":\"k{i}\"}}}}"));
            store
                .put(&format!("/p/k{i}"), v, navarch_store::Precondition::None)
                .await
                .unwrap();
        }
        let last = store.current_revision();
        for _ in 0..500 {
            if cache.last_revision() >= last {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(cache.last_revision(), last);
        // Capacity 2: the first of the three fell out of the buffer.
        assert!(cache.subscribe(last - 3).is_none());
        let sub = cache.subscribe(last - 2).unwrap();
        let revs: Vec<Revision> = sub.replay.iter().map(|e| e.revision).collect();
        assert_eq!(revs, [last - 1, last]);
        assert!(cache.subscribe(last).unwrap().replay.is_empty());
    }
    async fn wait_for(cache: &WatchCache, rev: Revision) {
        for _ in 0..500 {
            if cache.last_revision() >= rev {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("cache did not reach revision {rev}");
    }

    #[tokio::test]
    async fn older_events_keep_only_stored_bytes_and_decode_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = navarch_store::embedded::EmbeddedStore::open(
            dir.path(),
            navarch_store::embedded::EmbeddedOptions::default(),
        )
        .unwrap();
        let cache = WatchCache::start(store.clone(), "/p/".into(), 1024);
        let from = store.current_revision();
        let mut sub = cache.subscribe(from).unwrap();
        let n = DECODED_RECENT + 10;
        for i in 0..n {
            let v = Bytes::from(format!("{{\"metadata\":{{\"name\":\"k{i}\"}}}}"));
            store
                .put(&format!("/p/k{i}"), v, navarch_store::Precondition::None)
                .await
                .unwrap();
            // A live watcher decodes and encodes each event as it comes.
            let ev = sub.live.recv().await.unwrap();
            assert!(ev.line(LineFormat::Object, WatchType::Added).is_some());
            assert!(ev.is_decoded());
        }
        wait_for(&cache, store.current_revision()).await;
        let replay = cache.subscribe(from).unwrap().replay;
        assert_eq!(replay.len(), n);
        let decoded: Vec<bool> = replay.iter().map(|e| e.is_decoded()).collect();
        assert!(
            decoded[..n - DECODED_RECENT].iter().all(|d| !d),
            "old events stripped"
        );
        assert!(
            decoded[n - DECODED_RECENT..].iter().all(|d| *d),
            "recent ones kept"
        );
        // A stripped event decodes again to the same object and line.
        let old = &replay[0];
        assert_eq!(old.object().unwrap()["metadata"]["name"], "k0");
        let line = old.line(LineFormat::Object, WatchType::Added).unwrap();
        assert!(line.starts_with(b"{\"type\":\"ADDED\""));
        assert_eq!(old.revision, from + 1);
        assert_eq!(old.event_type, WatchType::Added);
    }

    #[tokio::test]
    async fn live_channel_exists_only_while_someone_listens() {
        let dir = tempfile::tempdir().unwrap();
        let store = navarch_store::embedded::EmbeddedStore::open(
            dir.path(),
            navarch_store::embedded::EmbeddedOptions::default(),
        )
        .unwrap();
        let cache = WatchCache::start(store.clone(), "/p/".into(), 16);
        assert!(!cache.has_live_channel());
        let put = |i: usize| {
            let store = store.clone();
            async move {
                let v = Bytes::from(format!("{{\"metadata\":{{\"name\":\"k{i}\"}}}}"));
                store
                    .put(&format!("/p/k{i}"), v, navarch_store::Precondition::None)
                    .await
                    .unwrap();
                store.current_revision()
            }
        };
        let rev = put(0).await;
        wait_for(&cache, rev).await;
        assert!(!cache.has_live_channel(), "no channel without subscribers");
        let mut sub = cache.subscribe(rev).unwrap();
        assert!(cache.has_live_channel());
        let rev = put(1).await;
        let ev = sub.live.recv().await.unwrap();
        assert_eq!(ev.revision, rev);
        drop(sub);
        let rev = put(2).await;
        wait_for(&cache, rev).await;
        assert!(!cache.has_live_channel(), "dropped once nobody listens");
        // A new subscriber gets a new channel and everything from the buffer.
        let mut sub = cache.subscribe(rev - 2).unwrap();
        assert_eq!(sub.replay.len(), 2);
        let rev = put(3).await;
        assert_eq!(sub.live.recv().await.unwrap().revision, rev);
    }
}
