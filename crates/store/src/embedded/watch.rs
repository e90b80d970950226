//! Watch streams: replay from the in-memory history (or the multi-version
//! index), then live batches from the broadcast channel.

use std::collections::VecDeque;

use tokio::sync::broadcast::{self, error::RecvError};

use super::mvcc::Batch;
use super::writer::Shared;
use crate::{Event, Result, Revision, StoreError, WatchStream};

/// Opens a watch on `prefix` for events after `after` (0 = from now).
pub(crate) fn open(shared: &Shared, prefix: &str, after: Revision) -> Result<WatchStream> {
    // Subscribing and reading the replay under the same read lock makes the two
    // meet exactly: batches are published under the write lock.
    let state = shared.state.read();
    let rx = shared.events.subscribe();
    let after = if after <= 0 { state.revision } else { after };
    if after < state.compacted {
        return Err(StoreError::Compacted {
            requested: after,
            compacted: state.compacted,
        });
    }
    let pending: VecDeque<Batch> = state.events_after(prefix, after)?.into();
    drop(state);
    let cursor = Cursor {
        prefix: prefix.to_owned(),
        seen: after,
        pending,
        pos: 0,
        rx,
        finished: false,
    };
    Ok(Box::pin(futures::stream::unfold(
        cursor,
        |mut cursor| async move {
            let item = cursor.next().await?;
            Some((item, cursor))
        },
    )))
}

/// Position of one watcher.
struct Cursor {
    prefix: String,
    /// Highest revision already considered (delivered or filtered out).
    seen: Revision,
    /// Batches to deliver before reading the channel again.
    pending: VecDeque<Batch>,
    /// Next event index in `pending.front()`.
    pos: usize,
    rx: broadcast::Receiver<Batch>,
    finished: bool,
}

impl Cursor {
    async fn next(&mut self) -> Option<Result<Event>> {
        if self.finished {
            return None;
        }
        loop {
            while let Some(batch) = self.pending.front() {
                while let Some(event) = batch.get(self.pos) {
                    self.pos += 1;
                    if event.kv.mod_revision <= self.seen {
                        continue;
                    }
                    self.seen = event.kv.mod_revision;
                    if event.kv.key.starts_with(&self.prefix) {
                        return Some(Ok(event.clone()));
                    }
                }
                self.pending.pop_front();
                self.pos = 0;
            }
            match self.rx.recv().await {
                Ok(batch) => {
                    if batch.last().is_some_and(|e| e.kv.mod_revision > self.seen) {
                        self.pending.push_back(batch);
                    }
                }
                Err(RecvError::Lagged(_)) => {
                    self.finished = true;
                    return Some(Err(StoreError::WatchLagged));
                }
                Err(RecvError::Closed) => {
                    self.finished = true;
                    return Some(Err(StoreError::Closed));
                }
            }
        }
    }
}
