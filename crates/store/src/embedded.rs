//! Embedded backend: a write-ahead log with group commit, periodic snapshots,
//! and an in-memory multi-version index.
//!
//! # Layout on disk
//!
//! `dir/wal-<seq>.log` segments of checksummed frames (one frame per group
//! commit) and at most a couple of `dir/snap-<revision>.snap` snapshots. On open
//! the newest snapshot is loaded and the segments are replayed on top of it;
//! a torn frame at the end of the newest segment is truncated with a warning.
//!
//! # Concurrency
//!
//! Reads (`get`, `range`, watch setup) take a shared lock on the in-memory state
//! and never touch the disk. Writes go to one writer thread that batches
//! everything queued into a single WAL append + fsync, then applies the batch to
//! memory and answers. A write whose future is dropped after it was sent may
//! still be committed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::sync::mpsc;
use std::time::Duration;

use tokio::sync::{broadcast, oneshot};

use crate::{
    KeyValue, Precondition, RangeResult, Result, Revision, Store, StoreError, WatchStream,
};

mod codec;
mod mvcc;
mod snapshot;
mod value;
mod wal;
mod watch;
mod writer;

#[cfg(test)]
mod compress_tests;
#[cfg(test)]
mod tests;

use codec::WalOp;
use mvcc::State;
use value::{Dictionaries, StoredValue};
use wal::WalFile;
use writer::{Op, Request, Shared, Writer};

/// Tunables of an [`EmbeddedStore`].
#[derive(Clone, Debug)]
pub struct EmbeddedOptions {
    /// Once this many WAL bytes were written since the last snapshot, a new
    /// snapshot is written (in the background) and a fresh WAL segment started;
    /// older segments are deleted once the snapshot is durable. Default 64 MiB.
    pub snapshot_wal_bytes: u64,
    /// Most events kept in memory for replaying watches. Watches from further
    /// back (but not before the compacted revision) are rebuilt from the
    /// multi-version index, which is slower. Default 10,000.
    pub watch_history_events: usize,
    /// Capacity, in committed batches, of the live event channel. A watcher
    /// that falls further behind gets [`StoreError::WatchLagged`]. Default 4,096.
    pub watch_channel_capacity: usize,
    /// Automatic compaction: keep at least this many revisions of history
    /// (`None` disables). Default `Some(10_000)`.
    pub auto_compact_retention: Option<u64>,
    /// Automatic compaction runs once history exceeds the retention by more
    /// than this many revisions, so it runs in chunks rather than on every
    /// write. Default 1,000.
    pub auto_compact_slack: u64,
    /// Most operations in one group commit. Default 4,096.
    pub max_batch_ops: usize,
    /// A group commit stops taking operations once their keys and values add
    /// up to this many bytes (it always takes at least one). Default 8 MiB.
    pub max_batch_bytes: usize,
    /// When the previous group commit held more than one write (so writers are
    /// concurrent), wait up to this long for more writes before logging the
    /// next group, as long as they keep arriving. Trades a little latency for
    /// fewer fsyncs. Zero disables. Default 300 µs.
    pub group_commit_linger: Duration,
    /// Values are kept zstd-compressed in memory; keys sharing their first
    /// this many `/`-separated segments share a compression dictionary built
    /// from their first few values (3 fits the API server's
    /// `/registry/<group>/<resource>/...` keys: one per resource). 0 compresses
    /// every value on its own. Default 3.
    pub value_dictionary_depth: usize,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        EmbeddedOptions {
            snapshot_wal_bytes: 64 << 20,
            watch_history_events: 10_000,
            watch_channel_capacity: 4096,
            auto_compact_retention: Some(10_000),
            auto_compact_slack: 1_000,
            max_batch_ops: 4096,
            max_batch_bytes: 8 << 20,
            group_commit_linger: Duration::from_micros(300),
            value_dictionary_depth: 3,
        }
    }
}

/// The embedded [`Store`]: durable, revisioned, watchable, served from memory.
pub struct EmbeddedStore {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Request>,
    writer: Mutex<Option<JoinHandle<()>>>,
    dir: PathBuf,
}

impl std::fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("dir", &self.dir)
            .field("revision", &self.current_revision())
            .field("compacted", &self.compacted_revision())
            .finish()
    }
}

impl EmbeddedStore {
    /// Opens (creating if needed) the store in `dir` and recovers its contents.
    ///
    /// This is a blocking call (it reads the snapshot and replays the WAL); from
    /// async code call it at startup or via `spawn_blocking`. It needs no Tokio
    /// runtime. Only one store may have `dir` open at a time.
    pub fn open(dir: &Path, options: EmbeddedOptions) -> Result<Arc<EmbeddedStore>> {
        std::fs::create_dir_all(dir)?;
        remove_temp_files(dir)?;

        let dicts = Dictionaries::new(options.value_dictionary_depth);
        let mut state = State::new(options.watch_history_events);
        if let Some((_, path)) = snapshot::list_snapshots(dir)?.pop() {
            snapshot::load_snapshot(&path, &mut state, &dicts)?;
        }
        state.rebuild_compact_queue();

        let segments = wal::list_segments(dir)?;
        let mut wal_bytes = 0u64;
        let mut last_len = 0u64;
        for (i, (_, path)) in segments.iter().enumerate() {
            let is_last = i + 1 == segments.len();
            last_len =
                wal::replay_segment(path, is_last, |ops| replay_ops(&mut state, ops, &dicts))?;
            wal_bytes += last_len;
        }
        let wal = match segments.last() {
            Some((seq, path)) => WalFile::open_append(path, *seq, last_len)?,
            None => WalFile::create(dir, 1)?,
        };

        let (events, _) = broadcast::channel(options.watch_channel_capacity.clamp(1, 1 << 24));
        let shared = Arc::new(Shared {
            revision: AtomicI64::new(state.revision),
            compacted: AtomicI64::new(state.compacted),
            state: RwLock::new(state),
            events,
            syncs: AtomicU64::new(0),
            dicts,
        });
        let (tx, rx) = mpsc::channel();
        let writer = Writer::new(
            Arc::clone(&shared),
            dir.to_path_buf(),
            options,
            wal,
            wal_bytes,
            rx,
        );
        let handle = std::thread::Builder::new()
            .name("navarch-store-wal".into())
            .spawn(move || writer.run())?;
        tracing::debug!(dir = %dir.display(), revision = shared.revision.load(Ordering::Acquire), "embedded store opened");
        Ok(Arc::new(EmbeddedStore {
            shared,
            tx,
            writer: Mutex::new(Some(handle)),
            dir: dir.to_path_buf(),
        }))
    }

    /// The directory the store lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Finishes the writes already queued, stops the writer thread and closes
    /// the files. Blocks. Later writes fail with [`StoreError::Closed`]; reads
    /// keep working. Also done on drop.
    pub fn shutdown(&self) {
        let handle = self.writer.lock().take();
        if let Some(handle) = handle {
            let _ = self.tx.send(Request::Shutdown);
            if handle.join().is_err() {
                tracing::error!("store writer thread panicked");
            }
        }
    }

    /// Number of keys with a live value (a diagnostic; walks the index).
    pub fn len(&self) -> usize {
        let state = self.shared.state.read();
        state
            .index
            .values()
            .filter(|v| v.latest().is_some_and(|v| v.value.is_some()))
            .count()
    }

    /// Number of WAL fsyncs done since open; with concurrent writers this is
    /// well below the number of writes (group commit).
    pub fn wal_syncs(&self) -> u64 {
        self.shared.syncs.load(Ordering::Relaxed)
    }

    /// True when no key has a live value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    async fn submit(&self, op: Op) -> Result<Option<KeyValue>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request::Op(op, reply))
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

impl Drop for EmbeddedStore {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Applies logged operations during recovery; revisions must continue densely.
fn replay_ops(state: &mut State, ops: Vec<WalOp>, dicts: &Dictionaries) -> Result<()> {
    for op in ops {
        match op {
            WalOp::Put {
                revision,
                create_revision,
                key,
                value,
            } => {
                if check_next(state, revision)? {
                    state.apply_put(&key, dicts.encode(&key, &value), create_revision, revision);
                }
            }
            WalOp::Delete { revision, key } => {
                if check_next(state, revision)? {
                    state.apply_delete(&key, revision);
                }
            }
            WalOp::Compact { revision } => {
                if revision > state.compacted && revision <= state.revision {
                    state.compact(revision);
                }
            }
        }
    }
    Ok(())
}

/// Whether a logged write at `revision` still has to be applied (it may already
/// be in the snapshot); a gap in revisions is corruption.
fn check_next(state: &State, revision: Revision) -> Result<bool> {
    if revision <= state.revision {
        return Ok(false);
    }
    if revision != state.revision + 1 {
        return Err(StoreError::Corrupt(format!(
            "WAL jumps from revision {} to {revision}",
            state.revision
        )));
    }
    Ok(true)
}

fn remove_temp_files(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.ends_with(snapshot::TMP_SUFFIX))
        {
            std::fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

#[async_trait::async_trait]
impl Store for EmbeddedStore {
    async fn get(&self, key: &str) -> Result<Option<KeyValue>> {
        // Decompress after releasing the lock.
        let stored = self.shared.state.read().get_stored(key);
        stored.map(mvcc::StoredKv::into_kv).transpose()
    }

    async fn range(
        &self,
        start: &str,
        end: &str,
        revision: Revision,
        limit: usize,
    ) -> Result<RangeResult> {
        let stored = self
            .shared
            .state
            .read()
            .range_stored(start, end, revision, limit)?;
        stored.into_result()
    }

    async fn put(&self, key: &str, value: Bytes, pre: Precondition) -> Result<KeyValue> {
        // The index keeps the value for as long as the key lives: compress it
        // here (on the caller's thread, not the writer's), or else hold an
        // exact-size copy, not the caller's buffer (a `Vec` grown by doubling,
        // or a slice of a larger request body, would keep up to twice the
        // value's size, or the whole body, alive). Watch events get the raw
        // value, exact-size too.
        let stored = self.shared.dicts.encode(key, &value);
        let value = match &stored {
            StoredValue::Raw(raw) => raw.clone(),
            _ => Bytes::copy_from_slice(&value),
        };
        let op = Op::Put {
            key: key.to_owned(),
            value,
            stored,
            pre,
        };
        self.submit(op).await?.ok_or(StoreError::Closed)
    }

    async fn delete(&self, key: &str, pre: Precondition) -> Result<KeyValue> {
        let op = Op::Delete {
            key: key.to_owned(),
            pre,
        };
        self.submit(op).await?.ok_or(StoreError::Closed)
    }

    fn watch(&self, prefix: &str, after: Revision) -> Result<WatchStream> {
        watch::open(&self.shared, prefix, after)
    }

    fn current_revision(&self) -> Revision {
        self.shared.revision.load(Ordering::Acquire)
    }

    fn compacted_revision(&self) -> Revision {
        self.shared.compacted.load(Ordering::Acquire)
    }

    async fn compact(&self, revision: Revision) -> Result<()> {
        self.submit(Op::Compact { revision }).await.map(|_| ())
    }
}
