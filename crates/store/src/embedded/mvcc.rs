//! The in-memory multi-version index: every key's versions since the compaction
//! point, plus a bounded history of recent events for watch replay.

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::value::StoredValue;
use crate::{Event, EventType, KeyValue, RangeResult, Revision, StoreError};

/// The events of one committed batch, in revision order (dense revisions).
pub(crate) type Batch = Arc<[Event]>;

/// One version of a key. `value == None` is a deletion (tombstone); its
/// `create_revision` is that of the incarnation it ended.
#[derive(Clone, Debug)]
pub(crate) struct Version {
    pub(crate) mod_revision: Revision,
    pub(crate) create_revision: Revision,
    pub(crate) value: Option<StoredValue>,
}

impl Version {
    /// The version as a key-value still holding the stored (maybe compressed)
    /// value; `None` for a tombstone.
    fn to_stored(&self, key: &str) -> Option<StoredKv> {
        self.value.as_ref().map(|value| StoredKv {
            key: key.to_owned(),
            value: value.clone(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }

    /// The version as a key-value with its value decompressed; `Ok(None)` for
    /// a tombstone.
    fn to_kv(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.to_stored(key).map(StoredKv::into_kv).transpose()
    }
}

/// A key-value as the index holds it: read under the lock, decompressed after.
#[derive(Clone, Debug)]
pub(crate) struct StoredKv {
    pub(crate) key: String,
    pub(crate) value: StoredValue,
    pub(crate) create_revision: Revision,
    pub(crate) mod_revision: Revision,
}

impl StoredKv {
    /// The key-value with its value as written.
    pub(crate) fn into_kv(self) -> Result<KeyValue, StoreError> {
        Ok(KeyValue {
            value: self.value.to_bytes()?,
            key: self.key,
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
        })
    }
}

/// A range read as the index holds it (see [`StoredKv`]).
#[derive(Debug, Default)]
pub(crate) struct StoredRange {
    pub(crate) kvs: Vec<StoredKv>,
    pub(crate) revision: Revision,
    pub(crate) more: bool,
}

impl StoredRange {
    /// Decompresses every value.
    pub(crate) fn into_result(self) -> Result<RangeResult, StoreError> {
        Ok(RangeResult {
            kvs: self
                .kvs
                .into_iter()
                .map(StoredKv::into_kv)
                .collect::<Result<_, _>>()?,
            revision: self.revision,
            more: self.more,
        })
    }
}

/// A key's versions, oldest first. Almost every key has exactly one version, so
/// that case is stored inline without a separate allocation.
#[derive(Clone, Debug)]
pub(crate) enum Versions {
    One(Version),
    Many(Vec<Version>),
}

impl Versions {
    pub(crate) fn as_slice(&self) -> &[Version] {
        match self {
            Versions::One(v) => std::slice::from_ref(v),
            Versions::Many(vs) => vs,
        }
    }

    /// The newest version (live or tombstone).
    pub(crate) fn latest(&self) -> Option<&Version> {
        self.as_slice().last()
    }

    /// The newest version with `mod_revision <= revision`.
    pub(crate) fn at(&self, revision: Revision) -> Option<&Version> {
        let vs = self.as_slice();
        let idx = vs.partition_point(|v| v.mod_revision <= revision);
        idx.checked_sub(1).and_then(|i| vs.get(i))
    }

    fn push(&mut self, version: Version) {
        match self {
            Versions::One(first) => {
                let first = first.clone();
                *self = Versions::Many(vec![first, version]);
            }
            Versions::Many(vs) => vs.push(version),
        }
    }

    /// Drops versions superseded at `revision`: keeps every version newer than
    /// `revision` plus the newest one at or below it if it is live. Returns
    /// false when nothing is left.
    fn compact(&mut self, revision: Revision) -> bool {
        let vs = self.as_slice();
        let newer = vs.partition_point(|v| v.mod_revision <= revision);
        let keep_from = match newer.checked_sub(1).and_then(|i| vs.get(i)) {
            Some(v) if v.value.is_some() => newer - 1,
            _ => newer,
        };
        if keep_from == 0 {
            return true;
        }
        let mut kept: Vec<Version> = vs[keep_from..].to_vec();
        if kept.len() > 1 {
            *self = Versions::Many(kept);
            true
        } else if let Some(only) = kept.pop() {
            *self = Versions::One(only);
            true
        } else {
            false
        }
    }
}

/// The complete in-memory state, guarded by the store's `RwLock`.
pub(crate) struct State {
    pub(crate) index: BTreeMap<Arc<str>, Versions>,
    /// Latest applied (durable) revision.
    pub(crate) revision: Revision,
    pub(crate) compacted: Revision,
    /// Recent committed batches, oldest first, for watch replay.
    history: VecDeque<Batch>,
    history_events: usize,
    history_limit: usize,
    /// `(revision, key)` for every write that left a key with something a
    /// compaction at or above `revision` can drop. Sorted by revision.
    compact_queue: VecDeque<(Revision, Arc<str>)>,
}

impl State {
    pub(crate) fn new(history_limit: usize) -> Self {
        State {
            index: BTreeMap::new(),
            revision: 0,
            compacted: 0,
            history: VecDeque::new(),
            history_events: 0,
            history_limit,
            compact_queue: VecDeque::new(),
        }
    }

    /// The live value of `key` at the latest revision, as stored.
    pub(crate) fn get_stored(&self, key: &str) -> Option<StoredKv> {
        self.index.get(key)?.latest()?.to_stored(key)
    }

    /// The live value of `key` at the latest revision, decompressed.
    pub(crate) fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        self.get_stored(key).map(StoredKv::into_kv).transpose()
    }

    /// Keys in `[start, end)` as of `revision` (0 = latest), decompressed.
    #[cfg(test)]
    pub(crate) fn range(
        &self,
        start: &str,
        end: &str,
        revision: Revision,
        limit: usize,
    ) -> Result<RangeResult, StoreError> {
        self.range_stored(start, end, revision, limit)?
            .into_result()
    }

    /// Keys in `[start, end)` as of `revision` (0 = latest), as stored (the
    /// caller decompresses after releasing the lock).
    pub(crate) fn range_stored(
        &self,
        start: &str,
        end: &str,
        revision: Revision,
        limit: usize,
    ) -> Result<StoredRange, StoreError> {
        let at = if revision <= 0 {
            self.revision
        } else {
            revision
        };
        if at > self.revision {
            return Err(StoreError::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        if at < self.compacted {
            return Err(StoreError::Compacted {
                requested: at,
                compacted: self.compacted,
            });
        }
        let mut result = StoredRange {
            kvs: Vec::new(),
            revision: at,
            more: false,
        };
        if start >= end {
            return Ok(result);
        }
        let bounds: (Bound<&str>, Bound<&str>) = (Bound::Included(start), Bound::Excluded(end));
        for (key, versions) in self.index.range::<str, _>(bounds) {
            let Some(kv) = versions.at(at).and_then(|v| v.to_stored(key)) else {
                continue;
            };
            if limit > 0 && result.kvs.len() == limit {
                result.more = true;
                break;
            }
            result.kvs.push(kv);
        }
        Ok(result)
    }

    /// Applies one committed write (from a batch or WAL replay).
    pub(crate) fn apply_put(
        &mut self,
        key: &str,
        value: StoredValue,
        create_revision: Revision,
        revision: Revision,
    ) {
        let version = Version {
            mod_revision: revision,
            create_revision,
            value: Some(value),
        };
        match self.index.get_key_value(key).map(|(k, _)| Arc::clone(k)) {
            Some(arc) => {
                if let Some(versions) = self.index.get_mut(key) {
                    versions.push(version);
                }
                self.compact_queue.push_back((revision, arc));
            }
            None => {
                self.index.insert(Arc::from(key), Versions::One(version));
            }
        }
        self.revision = revision;
    }

    /// Applies one committed delete. Deleting a key with no live value only
    /// advances the revision (cannot happen for validated writes).
    pub(crate) fn apply_delete(&mut self, key: &str, revision: Revision) {
        self.revision = revision;
        let Some((arc, versions)) = self.index.get_key_value(key) else {
            return;
        };
        let Some(create_revision) = versions
            .latest()
            .filter(|v| v.value.is_some())
            .map(|v| v.create_revision)
        else {
            return;
        };
        let arc = Arc::clone(arc);
        if let Some(versions) = self.index.get_mut(key) {
            versions.push(Version {
                mod_revision: revision,
                create_revision,
                value: None,
            });
        }
        self.compact_queue.push_back((revision, arc));
    }

    /// Applies a committed batch and records it for watch replay. `stored`
    /// holds the index's form of each put's value, in order (a put without
    /// one is stored from the event's value).
    pub(crate) fn apply_batch(
        &mut self,
        batch: &Batch,
        stored: impl IntoIterator<Item = StoredValue>,
    ) {
        let mut stored = stored.into_iter();
        for event in batch.iter() {
            match event.event_type {
                EventType::Put => self.apply_put(
                    &event.kv.key,
                    stored
                        .next()
                        .unwrap_or_else(|| StoredValue::from_bytes(event.kv.value.clone())),
                    event.kv.create_revision,
                    event.kv.mod_revision,
                ),
                EventType::Delete => self.apply_delete(&event.kv.key, event.kv.mod_revision),
            }
        }
        if batch.is_empty() || self.history_limit == 0 {
            return;
        }
        self.history_events += batch.len();
        self.history.push_back(Arc::clone(batch));
        while self.history_events > self.history_limit {
            match self.history.pop_front() {
                Some(old) => self.history_events -= old.len(),
                None => break,
            }
        }
    }

    /// Drops history at or below `revision` (must be within `compacted..=revision`).
    pub(crate) fn compact(&mut self, revision: Revision) {
        if revision <= self.compacted {
            return;
        }
        while let Some((rev, _)) = self.compact_queue.front() {
            if *rev > revision {
                break;
            }
            let Some((_, key)) = self.compact_queue.pop_front() else {
                break;
            };
            let remove = match self.index.get_mut(&*key) {
                Some(versions) => !versions.compact(revision),
                None => false,
            };
            if remove {
                self.index.remove(&*key);
            }
        }
        while let Some(front) = self.history.front() {
            match front.last() {
                Some(last) if last.kv.mod_revision > revision => break,
                _ => {}
            }
            if let Some(old) = self.history.pop_front() {
                self.history_events -= old.len();
            }
        }
        self.compacted = revision;
    }

    /// Rebuilds the compaction queue after loading versions from disk.
    pub(crate) fn rebuild_compact_queue(&mut self) {
        let mut queue: Vec<(Revision, Arc<str>)> = Vec::new();
        for (key, versions) in &self.index {
            for (i, v) in versions.as_slice().iter().enumerate() {
                if i > 0 || v.value.is_none() {
                    queue.push((v.mod_revision, Arc::clone(key)));
                }
            }
        }
        queue.sort_by_key(|(rev, _)| *rev);
        self.compact_queue = queue.into();
    }

    /// Inserts a key's versions as loaded from a snapshot.
    pub(crate) fn load_key(&mut self, key: &str, versions: Versions) {
        self.index.insert(Arc::from(key), versions);
    }

    /// Events with `mod_revision > after` for keys starting with `prefix`, as
    /// batches in revision order. Served from the recent-history ring when it
    /// reaches back far enough, else rebuilt from the multi-version index.
    /// The caller has checked `after >= self.compacted`.
    pub(crate) fn events_after(
        &self,
        prefix: &str,
        after: Revision,
    ) -> Result<Vec<Batch>, StoreError> {
        if after >= self.revision {
            return Ok(Vec::new());
        }
        let covered = self
            .history
            .front()
            .and_then(|b| b.first())
            .is_some_and(|first| first.kv.mod_revision <= after + 1);
        if covered {
            let start = self
                .history
                .partition_point(|b| b.last().is_some_and(|e| e.kv.mod_revision <= after));
            return Ok(self.history.range(start..).cloned().collect());
        }
        let events = self.scan_events(prefix, after)?;
        if events.is_empty() {
            Ok(Vec::new())
        } else {
            Ok(vec![Arc::from(events)])
        }
    }

    /// Reconstructs events after `after` from the stored versions.
    fn scan_events(&self, prefix: &str, after: Revision) -> Result<Vec<Event>, StoreError> {
        let mut events = Vec::new();
        let bounds: (Bound<&str>, Bound<&str>) = (Bound::Included(prefix), Bound::Unbounded);
        for (key, versions) in self.index.range::<str, _>(bounds) {
            if !key.starts_with(prefix) {
                break;
            }
            let vs = versions.as_slice();
            let first = vs.partition_point(|v| v.mod_revision <= after);
            for i in first..vs.len() {
                let prev = match i.checked_sub(1).and_then(|p| vs.get(p)) {
                    Some(p) => p.to_kv(key)?,
                    None => None,
                };
                let v = &vs[i];
                let event = match v.to_kv(key)? {
                    Some(kv) => Event {
                        event_type: EventType::Put,
                        kv,
                        prev,
                    },
                    None => {
                        let (value, create_revision) = prev
                            .as_ref()
                            .map_or((Bytes::new(), v.create_revision), |p| {
                                (p.value.clone(), p.create_revision)
                            });
                        Event {
                            event_type: EventType::Delete,
                            kv: KeyValue {
                                key: key.to_string(),
                                value,
                                create_revision,
                                mod_revision: v.mod_revision,
                            },
                            prev,
                        }
                    }
                };
                events.push(event);
            }
        }
        events.sort_by_key(|e| e.kv.mod_revision);
        Ok(events)
    }

    /// A copy of every key's versions (values are shared), for a snapshot.
    pub(crate) fn snapshot_entries(&self) -> Vec<(Arc<str>, Versions)> {
        self.index
            .iter()
            .map(|(k, v)| (Arc::clone(k), v.clone()))
            .collect()
    }

    #[cfg(test)]
    pub(crate) fn history_len(&self) -> usize {
        self.history_events
    }

    #[cfg(test)]
    pub(crate) fn compact_queue_len(&self) -> usize {
        self.compact_queue.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(rev: Revision, create: Revision, value: Option<&'static str>) -> Version {
        Version {
            mod_revision: rev,
            create_revision: create,
            value: value.map(|s| StoredValue::Raw(Bytes::from_static(s.as_bytes()))),
        }
    }

    fn raw(v: &'static [u8]) -> StoredValue {
        StoredValue::Raw(Bytes::from_static(v))
    }

    #[test]
    fn versions_at_finds_newest_not_after() {
        let vs = Versions::Many(vec![v(2, 2, Some("a")), v(5, 2, Some("b")), v(9, 2, None)]);
        assert!(vs.at(1).is_none());
        assert_eq!(vs.at(2).map(|x| x.mod_revision), Some(2));
        assert_eq!(vs.at(8).map(|x| x.mod_revision), Some(5));
        assert!(vs.at(9).is_some_and(|x| x.value.is_none()));
    }

    #[test]
    fn versions_compact_keeps_latest_live_and_newer() {
        let mut vs = Versions::Many(vec![v(2, 2, Some("a")), v(5, 2, Some("b")), v(9, 2, None)]);
        assert!(vs.compact(6));
        let revs: Vec<_> = vs.as_slice().iter().map(|x| x.mod_revision).collect();
        assert_eq!(revs, vec![5, 9]);
        // Compacting past the tombstone removes the key entirely.
        assert!(!vs.compact(9));
    }

    #[test]
    fn versions_compact_to_single_goes_inline() {
        let mut vs = Versions::Many(vec![v(2, 2, Some("a")), v(5, 2, Some("b"))]);
        assert!(vs.compact(5));
        assert!(matches!(vs, Versions::One(ref x) if x.mod_revision == 5));
    }

    #[test]
    fn recreated_key_after_compacted_delete_has_only_new_incarnation() {
        let mut vs = Versions::Many(vec![v(1, 1, Some("a")), v(2, 1, None), v(3, 3, Some("b"))]);
        assert!(vs.compact(2));
        assert_eq!(vs.as_slice().len(), 1);
        assert_eq!(vs.as_slice()[0].create_revision, 3);
    }

    #[test]
    fn compaction_only_touches_queued_keys_and_bounds_queue() {
        let mut s = State::new(100);
        s.apply_put("a", raw(b"1"), 1, 1);
        s.apply_put("b", raw(b"1"), 2, 2);
        s.apply_put("a", raw(b"2"), 1, 3);
        s.apply_delete("b", 4);
        assert_eq!(s.compact_queue_len(), 2);
        s.compact(4);
        assert_eq!(s.compact_queue_len(), 0);
        assert!(!s.index.contains_key("b"));
        assert_eq!(s.index.get("a").map(|v| v.as_slice().len()), Some(1));
        assert_eq!(
            s.get("a").unwrap().map(|kv| kv.value),
            Some(Bytes::from_static(b"2"))
        );
    }

    #[test]
    fn scan_events_rebuilds_deletes_with_previous_value() {
        let mut s = State::new(0);
        s.apply_put("/p/a", raw(b"1"), 1, 1);
        s.apply_put("/q/x", raw(b"x"), 2, 2);
        s.apply_delete("/p/a", 3);
        let events = s.scan_events("/p/", 0).unwrap();
        assert_eq!(events.len(), 2);
        assert_eq!(events[1].event_type, EventType::Delete);
        assert_eq!(events[1].kv.mod_revision, 3);
        assert_eq!(events[1].kv.create_revision, 1);
        assert_eq!(events[1].kv.value, Bytes::from_static(b"1"));
        assert_eq!(events[1].prev.as_ref().map(|p| p.mod_revision), Some(1));
    }
}
