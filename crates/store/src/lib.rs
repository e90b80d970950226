//! Revisioned key-value store with watch.
//!
//! The model is etcd's: one global, monotonically increasing revision; every key
//! remembers the revision that created it and the revision of its last change; a
//! watch replays every change after a revision, in order, then follows live
//! changes. Old revisions are dropped by `compact`, after which reading or watching
//! from before the compaction point fails with [`StoreError::Compacted`].
//!
//! Backends: [`embedded::EmbeddedStore`] (the default, a write-ahead log with group
//! commit plus an in-memory MVCC index). An etcd backend will implement the same
//! trait.

use std::pin::Pin;

use bytes::Bytes;
use futures::Stream;

pub mod embedded;

/// A point in the store's history. Starts at 1 for the first write; 0 means "latest"
/// where a revision is an argument.
pub type Revision = i64;

/// One key at one revision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Bytes,
    /// Revision of the write that created this incarnation of the key.
    pub create_revision: Revision,
    /// Revision of the last write (for a delete event: the deletion's revision).
    pub mod_revision: Revision,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    Put,
    Delete,
}

/// One change, as a watch delivers it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub event_type: EventType,
    /// For `Put`: the new value. For `Delete`: the key's last value, with
    /// `mod_revision` set to the deletion's revision.
    pub kv: KeyValue,
    /// The value before this change (None for a create).
    pub prev: Option<KeyValue>,
}

/// Condition a write must meet, checked atomically with the write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precondition {
    /// Write unconditionally (a put creates or overwrites; a delete needs the key to exist).
    None,
    /// The key must not exist (create).
    MustNotExist,
    /// The key must exist with exactly this `mod_revision` (compare-and-swap).
    /// A put on a missing key fails with `Conflict { current: None }`; a delete
    /// of a missing key fails with `NotFound`.
    ModRevision(Revision),
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("key already exists")]
    AlreadyExists,
    #[error("key not found")]
    NotFound,
    /// A `ModRevision` precondition failed. `current` is the key's present value, if any.
    #[error("precondition failed: key was modified")]
    Conflict { current: Option<KeyValue> },
    #[error("revision {requested} has been compacted (compacted at {compacted})")]
    Compacted {
        requested: Revision,
        compacted: Revision,
    },
    #[error("revision {requested} is in the future (current {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("watcher fell too far behind and was cancelled")]
    WatchLagged,
    #[error("store is closed")]
    Closed,
    #[error("data corrupt: {0}")]
    Corrupt(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Result of a range read.
#[derive(Clone, Debug, Default)]
pub struct RangeResult {
    /// Matching keys in ascending key order.
    pub kvs: Vec<KeyValue>,
    /// The revision the read was served at.
    pub revision: Revision,
    /// True when `limit` cut the result short.
    pub more: bool,
}

/// A stream of events in revision order. It ends with an `Err` when the watch
/// cannot continue (e.g. [`StoreError::WatchLagged`]).
pub type WatchStream = Pin<Box<dyn Stream<Item = Result<Event>> + Send>>;

#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// The current value of `key`, if it exists.
    async fn get(&self, key: &str) -> Result<Option<KeyValue>>;

    /// Keys in `[start, end)` in key order as of `revision` (0 = latest), at most
    /// `limit` of them (0 = no limit).
    async fn range(
        &self,
        start: &str,
        end: &str,
        revision: Revision,
        limit: usize,
    ) -> Result<RangeResult>;

    /// Write `value` at `key` if `pre` holds; returns the stored key-value (with its new
    /// `mod_revision`). Acknowledged writes are durable.
    async fn put(&self, key: &str, value: Bytes, pre: Precondition) -> Result<KeyValue>;

    /// Delete `key` if `pre` holds; returns the deleted value with `mod_revision` set to
    /// the deletion's revision.
    async fn delete(&self, key: &str, pre: Precondition) -> Result<KeyValue>;

    /// Every change to keys starting with `prefix` with `mod_revision > after`, then
    /// live changes. `after` = 0 means "from now"; an `after` in the future simply
    /// waits for that revision. `after` below the compacted revision fails with
    /// [`StoreError::Compacted`].
    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream>;

    /// The latest revision.
    fn current_revision(&self) -> Revision;

    /// The oldest revision that can still be read or watched from (everything at or
    /// below this has been compacted away, except the latest value of each key).
    fn compacted_revision(&self) -> Revision;

    /// Drop history at or below `revision`. Fails with `FutureRevision` beyond
    /// the current revision and `Compacted` below the compacted revision; the
    /// compacted revision itself is a no-op.
    async fn compact(&self, revision: Revision) -> Result<()>;
}

/// The smallest key greater than every key starting with `prefix` (for range ends).
pub fn prefix_end(prefix: &str) -> String {
    let mut bytes = prefix.as_bytes().to_vec();
    while let Some(last) = bytes.pop() {
        if last < 0xff {
            bytes.push(last + 1);
            return String::from_utf8_lossy(&bytes).into_owned();
        }
    }
    // An empty prefix (or all 0xff) ranges to the end of the keyspace.
    "\u{10ffff}".to_string()
}
