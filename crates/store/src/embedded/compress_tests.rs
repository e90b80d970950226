//! Tests of in-memory value compression through the `Store` trait: callers
//! only ever see the values they wrote, and data dirs written before values
//! were compressed still load.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::codec::frame_crc;
use super::snapshot::snapshot_name;
use super::value::{StoredValue, DICT_MIN_VALUES, MIN_COMPRESS_LEN};
use super::wal::{segment_name, WAL_MAGIC};
use super::{EmbeddedOptions, EmbeddedStore};
use crate::{EventType, Precondition, Store, StoreError};

fn opts() -> EmbeddedOptions {
    EmbeddedOptions {
        auto_compact_retention: None,
        ..EmbeddedOptions::default()
    }
}

/// A JSON object of about `n` bytes that compresses well (like API objects).
fn object(name: &str, n: usize) -> Bytes {
    let mut s = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"default\"}},\"data\":{{"
    );
    let mut i = 0;
    while s.len() < n {
        s.push_str(&format!("\"key-{i}\":\"value-{i}-{name}\","));
        i += 1;
    }
    s.push_str("\"end\":\"\"}}");
    Bytes::from(s)
}

/// Whether the index holds the latest value of `key` compressed.
fn held_compressed(store: &EmbeddedStore, key: &str) -> bool {
    let state = store.shared.state.read();
    state
        .index
        .get(key)
        .and_then(|vs| vs.latest())
        .and_then(|v| v.value.as_ref())
        .is_some_and(StoredValue::is_compressed)
}

#[tokio::test]
async fn large_values_are_held_compressed_and_read_back_raw() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), opts()).unwrap();
    let big = object("big", 2000);
    let small = Bytes::from_static(b"{\"small\":true}");
    assert!(small.len() < MIN_COMPRESS_LEN);

    let put = store
        .put("/r/big", big.clone(), Precondition::None)
        .await
        .unwrap();
    assert_eq!(put.value, big);
    store
        .put("/r/small", small.clone(), Precondition::None)
        .await
        .unwrap();

    assert!(held_compressed(&store, "/r/big"));
    assert!(!held_compressed(&store, "/r/small"));
    assert_eq!(store.get("/r/big").await.unwrap().unwrap().value, big);
    assert_eq!(store.get("/r/small").await.unwrap().unwrap().value, small);
}

#[tokio::test]
async fn range_returns_raw_values_at_every_revision() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), opts()).unwrap();
    let v1: Vec<Bytes> = (0..5).map(|i| object(&format!("a{i}"), 1000)).collect();
    for (i, v) in v1.iter().enumerate() {
        store
            .put(&format!("/r/{i}"), v.clone(), Precondition::None)
            .await
            .unwrap();
    }
    let old_rev = store.current_revision();
    let v2 = object("updated", 1500);
    store
        .put("/r/0", v2.clone(), Precondition::None)
        .await
        .unwrap();

    let latest = store.range("/r/", "/r0", 0, 0).await.unwrap();
    assert_eq!(latest.kvs.len(), 5);
    assert_eq!(latest.kvs[0].value, v2);
    for (kv, v) in latest.kvs.iter().zip(&v1).skip(1) {
        assert_eq!(&kv.value, v);
    }
    let old = store.range("/r/", "/r0", old_rev, 2).await.unwrap();
    assert!(old.more);
    assert_eq!(old.kvs[0].value, v1[0]);
    assert_eq!(old.kvs[1].value, v1[1]);
}

#[tokio::test]
async fn delete_conflict_and_watch_see_raw_values() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        // No history ring: a watch from the past is rebuilt from the index.
        watch_history_events: 0,
        ..opts()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let v1 = object("one", 1200);
    let v2 = object("two", 1200);
    store
        .put("/w/a", v1.clone(), Precondition::None)
        .await
        .unwrap();
    let kv2 = store
        .put("/w/a", v2.clone(), Precondition::None)
        .await
        .unwrap();

    match store
        .put("/w/a", v1.clone(), Precondition::ModRevision(1))
        .await
    {
        Err(StoreError::Conflict { current: Some(c) }) => assert_eq!(c.value, v2),
        other => panic!("expected a conflict, got {other:?}"),
    }

    let mut w = store.watch("/w/", 0).unwrap();
    let deleted = store
        .delete("/w/a", Precondition::ModRevision(kv2.mod_revision))
        .await
        .unwrap();
    assert_eq!(deleted.value, v2);
    let live = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(live.event_type, EventType::Delete);
    assert_eq!(live.kv.value, v2);
    assert_eq!(live.prev.map(|p| p.value), Some(v2.clone()));

    // Replayed from the index (compressed there).
    let mut replay = store.watch("/w/", 1).unwrap();
    let e = tokio::time::timeout(Duration::from_secs(5), replay.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(e.event_type, EventType::Put);
    assert_eq!(e.kv.value, v2);
    assert_eq!(e.prev.map(|p| p.value), Some(v1));
}

#[tokio::test]
async fn compressed_values_survive_wal_replay_and_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_wal_bytes: 8 << 10,
        ..opts()
    };
    let values: Vec<Bytes> = (0..40).map(|i| object(&format!("s{i}"), 900)).collect();
    {
        let store = EmbeddedStore::open(dir.path(), options.clone()).unwrap();
        for (i, v) in values.iter().enumerate() {
            store
                .put(&format!("/s/{i:03}"), v.clone(), Precondition::None)
                .await
                .unwrap();
        }
        store.shutdown();
    }
    let has_snapshot = std::fs::read_dir(dir.path())
        .unwrap()
        .any(|e| e.unwrap().file_name().to_string_lossy().ends_with(".snap"));
    assert!(has_snapshot, "test needs a snapshot on disk");

    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    let all = store.range("/s/", "/s0", 0, 0).await.unwrap();
    assert_eq!(all.kvs.len(), values.len());
    for (kv, v) in all.kvs.iter().zip(&values) {
        assert_eq!(&kv.value, v);
    }
    assert!(held_compressed(&store, "/s/000"));
    assert!(held_compressed(&store, "/s/039"));
}

// ---- data dirs in the format written before values were compressed ----
//
// Built byte by byte here (not with the current encoder), so that a change to
// the on-disk format that would break existing data dirs fails this test.

fn frame(payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::new();
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&frame_crc(len, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

fn blob(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&u32::try_from(b.len()).unwrap().to_le_bytes());
    out.extend_from_slice(b);
}

/// A WAL batch (version 1) of puts `(revision, create_revision, key, value)`.
fn old_wal_batch(puts: &[(i64, i64, &str, &[u8])]) -> Vec<u8> {
    let mut p = vec![1u8];
    p.extend_from_slice(&u32::try_from(puts.len()).unwrap().to_le_bytes());
    for (rev, create, key, value) in puts {
        p.push(1); // put
        p.extend_from_slice(&rev.to_le_bytes());
        p.extend_from_slice(&create.to_le_bytes());
        blob(&mut p, key.as_bytes());
        blob(&mut p, value);
    }
    frame(&p)
}

/// A snapshot (`NVSNAP01`) of single-version live keys `(revision, key, value)`.
fn old_snapshot(revision: i64, keys: &[(i64, &str, &[u8])]) -> Vec<u8> {
    let mut out = b"NVSNAP01".to_vec();
    let mut header = Vec::new();
    header.extend_from_slice(&revision.to_le_bytes());
    header.extend_from_slice(&0i64.to_le_bytes()); // compacted
    header.extend_from_slice(&i64::try_from(keys.len()).unwrap().to_le_bytes());
    out.extend(frame(&header));
    for (rev, key, value) in keys {
        let mut p = Vec::new();
        blob(&mut p, key.as_bytes());
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&rev.to_le_bytes());
        p.extend_from_slice(&rev.to_le_bytes());
        p.push(1); // live
        blob(&mut p, value);
        out.extend(frame(&p));
    }
    out
}

fn write_old_dir(dir: &Path, a: &[u8], b: &[u8], c: &[u8]) {
    std::fs::write(
        dir.join(snapshot_name(2)),
        old_snapshot(2, &[(1, "/o/a", a), (2, "/o/b", b)]),
    )
    .unwrap();
    let mut wal = WAL_MAGIC.to_vec();
    wal.extend(old_wal_batch(&[(3, 3, "/o/c", c)]));
    std::fs::write(dir.join(segment_name(1)), wal).unwrap();
}

#[tokio::test]
async fn data_dir_written_before_compression_loads() {
    let dir = tempfile::tempdir().unwrap();
    let a = object("a", 1000);
    let b = Bytes::from_static(b"{\"tiny\":1}");
    let c = object("c", 3000);
    write_old_dir(dir.path(), &a, &b, &c);

    let store: Arc<EmbeddedStore> = EmbeddedStore::open(dir.path(), opts()).unwrap();
    assert_eq!(store.current_revision(), 3);
    assert_eq!(store.get("/o/a").await.unwrap().unwrap().value, a);
    assert_eq!(store.get("/o/b").await.unwrap().unwrap().value, b);
    let kv_c = store.get("/o/c").await.unwrap().unwrap();
    assert_eq!(kv_c.value, c);
    assert_eq!((kv_c.create_revision, kv_c.mod_revision), (3, 3));
    assert!(held_compressed(&store, "/o/a"));
    assert!(!held_compressed(&store, "/o/b"));
    assert!(held_compressed(&store, "/o/c"));

    // Writing on top and reopening keeps everything readable.
    let d = object("d", 1500);
    store
        .put("/o/d", d.clone(), Precondition::None)
        .await
        .unwrap();
    store.shutdown();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), opts()).unwrap();
    let all = store.range("/o/", "/o0", 0, 0).await.unwrap();
    let values: Vec<Bytes> = all.kvs.into_iter().map(|kv| kv.value).collect();
    assert_eq!(values, vec![a, b, c, d]);
}

#[tokio::test]
async fn on_disk_values_stay_raw() {
    // The WAL keeps values as written, so older binaries can still read a
    // data dir written by this one.
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), opts()).unwrap();
    let v = object("disk", 1000);
    store
        .put("/d/x", v.clone(), Precondition::None)
        .await
        .unwrap();
    store.shutdown();
    let wal = std::fs::read(dir.path().join(segment_name(1))).unwrap();
    assert!(wal.windows(v.len()).any(|w| w == &v[..]));
}

/// Whether the index holds the latest value of `key` compressed with a
/// dictionary.
fn held_with_dictionary(store: &EmbeddedStore, key: &str) -> bool {
    let state = store.shared.state.read();
    state
        .index
        .get(key)
        .and_then(|vs| vs.latest())
        .and_then(|v| v.value.as_ref())
        .is_some_and(StoredValue::uses_dictionary)
}

#[tokio::test]
async fn api_server_keys_share_a_dictionary_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key = |i: usize| format!("/registry/core/configmaps/ns-{}/cm-{i:03}", i % 3);
    let n = DICT_MIN_VALUES + 16;
    let values: Vec<Bytes> = (0..n).map(|i| object(&format!("cm-{i}"), 700)).collect();
    {
        let store = EmbeddedStore::open(dir.path(), opts()).unwrap();
        for (i, v) in values.iter().enumerate() {
            store
                .put(&key(i), v.clone(), Precondition::None)
                .await
                .unwrap();
        }
        assert!(!held_with_dictionary(&store, &key(0)));
        assert!(held_with_dictionary(&store, &key(n - 1)));
        for (i, v) in values.iter().enumerate() {
            assert_eq!(&store.get(&key(i)).await.unwrap().unwrap().value, v);
        }
        store.shutdown();
    }
    // Dictionaries live in memory only: recovery builds them again.
    let store = EmbeddedStore::open(dir.path(), opts()).unwrap();
    assert!(held_with_dictionary(&store, &key(n - 1)));
    let all = store
        .range(
            "/registry/core/configmaps/",
            "/registry/core/configmaps0",
            0,
            0,
        )
        .await
        .unwrap();
    assert_eq!(all.kvs.len(), values.len());
    for kv in all.kvs {
        let i: usize = kv.key.rsplit("cm-").next().unwrap().parse().unwrap();
        assert_eq!(kv.value, values[i]);
    }
}
