//! The watch cache: one store watch per storage prefix, each change decoded once
//! and fanned out to every API watcher of that resource (upstream's "cacher").
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
    pub fn as_str(self) -> &'static str {
        match self {
            WatchType::Added => "ADDED",
            WatchType::Modified => "MODIFIED",
            WatchType::Deleted => "DELETED",
        }
    }
}

/// One decoded change.
#[derive(Debug)]
pub struct CachedEvent {
    pub revision: Revision,
    pub event_type: WatchType,
    pub key: String,
    /// The object (for a deletion: its last state) with resourceVersion set.
    pub object: Arc<Value>,
    /// The object before the change, for selector transitions.
    pub prev: Option<Arc<Value>>,
    /// `object` serialized once, shared by all JSON watchers.
    json: OnceLock<Bytes>,
}

impl CachedEvent {
    /// Decode a store event (once).
    pub fn from_store(ev: navarch_store::Event) -> Option<Arc<CachedEvent>> {
        let rev = ev.kv.mod_revision;
        let event_type = match ev.event_type {
            EventType::Put if ev.prev.is_none() => WatchType::Added,
            EventType::Put => WatchType::Modified,
            EventType::Delete => WatchType::Deleted,
        };
        let Some(object) = decode_stored(&ev.kv.value, rev) else {
            tracing::error!(key = %ev.kv.key, "undecodable object in store; not delivered to watchers");
            return None;
        };
        let prev = ev
            .prev
            .as_ref()
            .and_then(|p| decode_stored(&p.value, p.mod_revision))
            .map(Arc::new);
        Some(Arc::new(CachedEvent {
            revision: rev,
            event_type,
            key: ev.kv.key,
            object: Arc::new(object),
            prev,
            json: OnceLock::new(),
        }))
    }

    pub fn object_json(&self) -> &Bytes {
        self.json
            .get_or_init(|| Bytes::from(serde_json::to_vec(&*self.object).unwrap_or_default()))
    }
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

struct Inner {
    buffer: VecDeque<Arc<CachedEvent>>,
    /// Everything after this revision is (or will be) in `buffer` or delivered live.
    start_revision: Revision,
    last_revision: Revision,
}

pub struct WatchCache {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Arc<CachedEvent>>,
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
        let (tx, _) = broadcast::channel(LIVE_CHANNEL.min(capacity).max(16));
        let cache = Arc::new(WatchCache {
            inner: Mutex::new(Inner {
                buffer: VecDeque::new(),
                start_revision: start,
                last_revision: start,
            }),
            tx,
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
        let Some(cached) = CachedEvent::from_store(ev) else {
            return;
        };
        let rev = cached.revision;
        let mut inner = self.inner.lock();
        inner.last_revision = rev;
        if inner.buffer.len() >= self.capacity {
            if let Some(old) = inner.buffer.pop_front() {
                inner.start_revision = old.revision;
            }
        }
        inner.buffer.push_back(cached.clone());
        // Sending under the lock keeps replay and live consistent for subscribers.
        let _ = self.tx.send(cached);
    }

    /// Subscribe to events after `after`. `None` when the buffer no longer reaches
    /// back that far (the caller then falls back to the store).
    pub fn subscribe(&self, after: Revision) -> Option<Subscription> {
        let inner = self.inner.lock();
        if after < inner.start_revision {
            return None;
        }
        let replay = inner
            .buffer
            .iter()
            .filter(|e| e.revision > after)
            .cloned()
            .collect();
        Some(Subscription {
            replay,
            live: self.tx.subscribe(),
        })
    }

    pub fn last_revision(&self) -> Revision {
        self.inner.lock().last_revision
    }
}
