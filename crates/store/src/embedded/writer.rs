//! The writer thread: group commit.
//!
//! Every mutation is sent to one dedicated thread. It takes everything queued,
//! checks preconditions in order (each write sees the earlier writes of the same
//! batch), appends the whole batch to the WAL as one frame, fsyncs once, and only
//! then applies the batch to the in-memory index, publishes it to watchers and
//! answers the callers. Readers therefore never see a write that is not durable.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use bytes::Bytes;
use parking_lot::RwLock;
use std::sync::mpsc;
use std::time::Instant;

use tokio::sync::{broadcast, oneshot};

use super::codec::{encode_batch_frame, WalOp};
use super::mvcc::{Batch, State};
use super::snapshot::{list_snapshots, write_snapshot};
use super::value::{Dictionaries, StoredValue};
use super::wal::{list_segments, sync_dir, WalFile};
use super::EmbeddedOptions;
use crate::{Event, EventType, KeyValue, Precondition, Result, Revision, StoreError};

/// State shared by the store handle, the writer thread and watch setup.
pub(crate) struct Shared {
    pub(crate) state: RwLock<State>,
    /// Committed batches, published while the state write lock is held so that a
    /// subscriber taken under the read lock misses nothing and sees nothing twice.
    pub(crate) events: broadcast::Sender<Batch>,
    pub(crate) revision: AtomicI64,
    pub(crate) compacted: AtomicI64,
    /// Number of WAL fsyncs done for group commits (a diagnostic).
    pub(crate) syncs: AtomicU64,
    /// Compression dictionaries of the index's values.
    pub(crate) dicts: Dictionaries,
}

/// A mutation requested by a caller.
pub(crate) enum Op {
    Put {
        key: String,
        /// The value as written (logged and sent to watchers).
        value: Bytes,
        /// The same value as the index keeps it (maybe compressed).
        stored: StoredValue,
        pre: Precondition,
    },
    Delete {
        key: String,
        pre: Precondition,
    },
    Compact {
        revision: Revision,
    },
}

/// The answer to an [`Op`]: the written key-value (None for a compaction).
pub(crate) type Reply = Result<Option<KeyValue>>;

/// A message to the writer thread.
pub(crate) enum Request {
    Op(Op, oneshot::Sender<Reply>),
    /// Finish what is queued before this message, then exit.
    Shutdown,
}

/// The writer thread's state.
pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) dir: PathBuf,
    pub(crate) options: EmbeddedOptions,
    pub(crate) wal: WalFile,
    /// WAL bytes written since the last snapshot was started.
    pub(crate) wal_bytes: u64,
    pub(crate) rx: mpsc::Receiver<Request>,
    snapshot: Option<JoinHandle<()>>,
    /// Set after a WAL write or fsync failed: the log's tail is unknown, so no
    /// further writes are accepted.
    failed: bool,
}

impl Writer {
    pub(crate) fn new(
        shared: Arc<Shared>,
        dir: PathBuf,
        options: EmbeddedOptions,
        wal: WalFile,
        wal_bytes: u64,
        rx: mpsc::Receiver<Request>,
    ) -> Self {
        Writer {
            shared,
            dir,
            options,
            wal,
            wal_bytes,
            rx,
            snapshot: None,
            failed: false,
        }
    }

    /// Runs until a [`Request::Shutdown`] arrives or every sender is gone.
    pub(crate) fn run(mut self) {
        let max_ops = self.options.max_batch_ops.max(1);
        let max_bytes = self.options.max_batch_bytes.max(1);
        let linger = self.options.group_commit_linger;
        let mut concurrent = false;
        loop {
            self.maybe_snapshot();
            let Ok(first) = self.rx.recv() else {
                break;
            };
            let mut batch = Vec::new();
            let mut bytes = 0usize;
            let mut shutdown = false;
            let mut next = Some(first);
            let mut deadline: Option<Instant> = None;
            while let Some(request) = next.take() {
                match request {
                    Request::Shutdown => {
                        shutdown = true;
                        break;
                    }
                    Request::Op(op, reply) => {
                        bytes += op_size(&op);
                        batch.push((op, reply));
                    }
                }
                if batch.len() >= max_ops || bytes >= max_bytes {
                    break;
                }
                next = self.rx.try_recv().ok();
                if next.is_none() && concurrent && !linger.is_zero() {
                    // Writers are concurrent: give the ones just answered a
                    // moment to send their next write into this group.
                    let until = *deadline.get_or_insert_with(|| Instant::now() + linger);
                    let now = Instant::now();
                    if now < until {
                        next = self.rx.recv_timeout(until - now).ok();
                    }
                }
            }
            concurrent = batch.len() > 1;
            if !batch.is_empty() {
                self.commit(batch);
            }
            if shutdown {
                break;
            }
        }
        if let Some(handle) = self.snapshot.take() {
            let _ = handle.join();
        }
    }

    /// Validates, logs, syncs and applies one group of requests.
    fn commit(&mut self, requests: Vec<(Op, oneshot::Sender<Reply>)>) {
        if self.failed {
            for (_, reply) in requests {
                let _ = reply.send(Err(StoreError::Closed));
            }
            return;
        }
        let mut replies = Vec::with_capacity(requests.len());
        let mut events: Vec<Event> = Vec::with_capacity(requests.len());
        let mut ops: Vec<WalOp> = Vec::with_capacity(requests.len());
        // The index's form of each accepted put's value, in event order.
        let mut stored: Vec<StoredValue> = Vec::with_capacity(requests.len());
        let mut compact_to: Option<Revision> = None;
        {
            let state = self.shared.state.read();
            let mut pending = Pending {
                state: &state,
                overlay: HashMap::new(),
                next: state.revision + 1,
                compacted: state.compacted,
            };
            for (op, reply) in requests {
                let result =
                    pending.validate(op, &mut events, &mut ops, &mut stored, &mut compact_to);
                replies.push((reply, result));
            }
            if let Some(target) = self.auto_compact_target(pending.next - 1, pending.compacted) {
                ops.push(WalOp::Compact { revision: target });
                compact_to = Some(target);
            }
        }
        if ops.is_empty() {
            for (reply, result) in replies {
                let _ = reply.send(result);
            }
            return;
        }
        if let Err(e) = self.log(&ops) {
            tracing::error!(error = %e, "WAL write failed; the store no longer accepts writes");
            self.failed = true;
            for (reply, _) in replies {
                let _ = reply.send(Err(StoreError::Io(std::io::Error::new(
                    e.kind(),
                    e.to_string(),
                ))));
            }
            return;
        }
        let batch: Batch = Arc::from(events);
        {
            let mut state = self.shared.state.write();
            state.apply_batch(&batch, stored);
            if let Some(target) = compact_to {
                state.compact(target);
            }
            self.shared
                .revision
                .store(state.revision, Ordering::Release);
            self.shared
                .compacted
                .store(state.compacted, Ordering::Release);
            if !batch.is_empty() {
                // No receivers is fine.
                let _ = self.shared.events.send(batch);
            }
        }
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }

    /// Appends the batch as one frame and fsyncs.
    fn log(&mut self, ops: &[WalOp]) -> std::io::Result<()> {
        let frame = encode_batch_frame(ops)?;
        self.wal.append(&frame)?;
        self.wal.sync()?;
        self.shared.syncs.fetch_add(1, Ordering::Relaxed);
        self.wal_bytes += frame.len() as u64;
        Ok(())
    }

    /// The revision to auto-compact to after this batch, if it is due.
    fn auto_compact_target(&self, current: Revision, compacted: Revision) -> Option<Revision> {
        let retention = i64::try_from(self.options.auto_compact_retention?).unwrap_or(i64::MAX);
        let slack = i64::try_from(self.options.auto_compact_slack).unwrap_or(i64::MAX);
        let target = current.saturating_sub(retention);
        (target > compacted && target - compacted > slack).then_some(target)
    }

    /// Starts a snapshot when the WAL has grown past the threshold: seals the
    /// current segment, starts a fresh one, and writes the snapshot on a
    /// background thread, which then deletes the files it supersedes.
    fn maybe_snapshot(&mut self) {
        if let Some(handle) = &self.snapshot {
            if !handle.is_finished() {
                return;
            }
            if let Some(handle) = self.snapshot.take() {
                let _ = handle.join();
            }
        }
        if self.failed || self.wal_bytes < self.options.snapshot_wal_bytes {
            return;
        }
        self.wal_bytes = 0;
        let seq = self.wal.seq + 1;
        let rotated = self
            .wal
            .sync()
            .and_then(|()| WalFile::create(&self.dir, seq));
        match rotated {
            Ok(wal) => self.wal = wal,
            Err(e) => {
                tracing::error!(error = %e, "could not start a new WAL segment; snapshot skipped");
                return;
            }
        }
        let (entries, revision, compacted) = {
            let state = self.shared.state.read();
            (state.snapshot_entries(), state.revision, state.compacted)
        };
        let dir = self.dir.clone();
        let spawned = std::thread::Builder::new()
            .name("navarch-store-snapshot".into())
            .spawn(move || {
                let started = std::time::Instant::now();
                match write_snapshot(&dir, revision, compacted, &entries) {
                    Ok(_) => {
                        drop(entries);
                        if let Err(e) = remove_superseded(&dir, revision, seq) {
                            tracing::warn!(error = %e, "could not remove old WAL segments or snapshots");
                        }
                        tracing::info!(revision, elapsed_ms = started.elapsed().as_millis() as u64, "store snapshot written");
                    }
                    Err(e) => tracing::error!(error = %e, revision, "store snapshot failed"),
                }
            });
        match spawned {
            Ok(handle) => self.snapshot = Some(handle),
            Err(e) => tracing::error!(error = %e, "could not start the snapshot thread"),
        }
    }
}

/// Deletes WAL segments before `first_seq` and snapshots older than `revision`.
fn remove_superseded(dir: &std::path::Path, revision: Revision, first_seq: u64) -> Result<()> {
    for (seq, path) in list_segments(dir)? {
        if seq < first_seq {
            std::fs::remove_file(path)?;
        }
    }
    for (rev, path) in list_snapshots(dir)? {
        if rev < revision {
            std::fs::remove_file(path)?;
        }
    }
    sync_dir(dir)?;
    Ok(())
}

fn op_size(op: &Op) -> usize {
    match op {
        Op::Put { key, value, .. } => key.len() + value.len() + 32,
        Op::Delete { key, .. } => key.len() + 16,
        Op::Compact { .. } => 16,
    }
}

/// The state as a batch being validated sees it: the committed index plus the
/// batch's own earlier writes.
struct Pending<'a> {
    state: &'a State,
    overlay: HashMap<String, Option<KeyValue>>,
    next: Revision,
    compacted: Revision,
}

impl Pending<'_> {
    fn current(&self, key: &str) -> Result<Option<KeyValue>> {
        match self.overlay.get(key) {
            Some(kv) => Ok(kv.clone()),
            None => self.state.get(key),
        }
    }

    fn validate(
        &mut self,
        op: Op,
        events: &mut Vec<Event>,
        ops: &mut Vec<WalOp>,
        stored: &mut Vec<StoredValue>,
        compact_to: &mut Option<Revision>,
    ) -> Reply {
        match op {
            Op::Put {
                key,
                value,
                stored: stored_value,
                pre,
            } => {
                let current = self.current(&key)?;
                match pre {
                    Precondition::MustNotExist if current.is_some() => {
                        return Err(StoreError::AlreadyExists)
                    }
                    Precondition::ModRevision(rev)
                        if current.as_ref().map(|c| c.mod_revision) != Some(rev) =>
                    {
                        return Err(StoreError::Conflict { current })
                    }
                    _ => {}
                }
                let revision = self.next;
                self.next += 1;
                let kv = KeyValue {
                    create_revision: current.as_ref().map_or(revision, |c| c.create_revision),
                    mod_revision: revision,
                    key,
                    value,
                };
                ops.push(WalOp::Put {
                    revision,
                    create_revision: kv.create_revision,
                    key: kv.key.clone(),
                    value: kv.value.clone(),
                });
                self.overlay.insert(kv.key.clone(), Some(kv.clone()));
                stored.push(stored_value);
                events.push(Event {
                    event_type: EventType::Put,
                    kv: kv.clone(),
                    prev: current,
                });
                Ok(Some(kv))
            }
            Op::Delete { key, pre } => {
                let Some(current) = self.current(&key)? else {
                    return Err(StoreError::NotFound);
                };
                match pre {
                    Precondition::MustNotExist => return Err(StoreError::AlreadyExists),
                    Precondition::ModRevision(rev) if current.mod_revision != rev => {
                        return Err(StoreError::Conflict {
                            current: Some(current),
                        })
                    }
                    _ => {}
                }
                let revision = self.next;
                self.next += 1;
                let kv = KeyValue {
                    key,
                    value: current.value.clone(),
                    create_revision: current.create_revision,
                    mod_revision: revision,
                };
                ops.push(WalOp::Delete {
                    revision,
                    key: kv.key.clone(),
                });
                self.overlay.insert(kv.key.clone(), None);
                events.push(Event {
                    event_type: EventType::Delete,
                    kv: kv.clone(),
                    prev: Some(current),
                });
                Ok(Some(kv))
            }
            Op::Compact { revision } => {
                let current = self.next - 1;
                if revision > current {
                    return Err(StoreError::FutureRevision {
                        requested: revision,
                        current,
                    });
                }
                if revision < self.compacted {
                    return Err(StoreError::Compacted {
                        requested: revision,
                        compacted: self.compacted,
                    });
                }
                if revision > self.compacted {
                    self.compacted = revision;
                    ops.push(WalOp::Compact { revision });
                    *compact_to = Some(revision);
                }
                Ok(None)
            }
        }
    }
}
