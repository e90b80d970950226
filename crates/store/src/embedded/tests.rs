//! Behaviour tests of the embedded store through the `Store` trait.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;

use super::wal::{list_segments, WAL_MAGIC};
use super::{snapshot, EmbeddedOptions, EmbeddedStore};
use crate::{prefix_end, Event, EventType, Precondition, Store, StoreError, WatchStream};

fn opts() -> EmbeddedOptions {
    EmbeddedOptions {
        auto_compact_retention: None,
        ..EmbeddedOptions::default()
    }
}

fn open(dir: &Path) -> Arc<EmbeddedStore> {
    EmbeddedStore::open(dir, opts()).unwrap()
}

fn b(s: &str) -> Bytes {
    Bytes::copy_from_slice(s.as_bytes())
}

async fn next_event(w: &mut WatchStream) -> Event {
    tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .expect("watch event timed out")
        .expect("watch ended")
        .expect("watch error")
}

async fn no_event(w: &mut WatchStream) {
    let res = tokio::time::timeout(Duration::from_millis(100), w.next()).await;
    assert!(res.is_err(), "unexpected watch item: {res:?}");
}

fn last_segment(dir: &Path) -> std::path::PathBuf {
    list_segments(dir).unwrap().pop().unwrap().1
}

#[tokio::test]
async fn put_get_and_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.current_revision(), 0);
    assert!(store.get("/a").await.unwrap().is_none());

    let kv1 = store.put("/a", b("1"), Precondition::None).await.unwrap();
    assert_eq!((kv1.create_revision, kv1.mod_revision), (1, 1));
    let kv2 = store.put("/b", b("2"), Precondition::None).await.unwrap();
    assert_eq!((kv2.create_revision, kv2.mod_revision), (2, 2));
    let kv3 = store.put("/a", b("3"), Precondition::None).await.unwrap();
    assert_eq!((kv3.create_revision, kv3.mod_revision), (1, 3));
    assert_eq!(store.current_revision(), 3);

    let got = store.get("/a").await.unwrap().unwrap();
    assert_eq!(got, kv3);
    assert_eq!(got.value, b("3"));
    assert_eq!(store.len(), 2);
}

#[tokio::test]
async fn stored_values_do_not_keep_the_callers_buffer() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    // A value that is a slice of a much larger buffer (a request body, say).
    let body = Bytes::from(vec![b'x'; 64 * 1024]);
    let value = body.slice(100..200);
    store
        .put("/k", value.clone(), Precondition::None)
        .await
        .unwrap();
    let got = store.get("/k").await.unwrap().unwrap();
    assert_eq!(got.value, value);
    let range = body.as_ptr_range();
    assert!(
        !range.contains(&got.value.as_ptr()),
        "the index holds its own copy, not a view into the caller's buffer"
    );
}

#[tokio::test]
async fn preconditions_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let created = store
        .put("/k", b("v1"), Precondition::MustNotExist)
        .await
        .unwrap();
    assert!(matches!(
        store.put("/k", b("x"), Precondition::MustNotExist).await,
        Err(StoreError::AlreadyExists)
    ));
    // Compare-and-swap with a stale revision reports the current value.
    match store.put("/k", b("x"), Precondition::ModRevision(99)).await {
        Err(StoreError::Conflict { current: Some(cur) }) => assert_eq!(cur, created),
        other => panic!("expected conflict, got {other:?}"),
    }
    // On a missing key there is no current value.
    assert!(matches!(
        store
            .put("/missing", b("x"), Precondition::ModRevision(1))
            .await,
        Err(StoreError::Conflict { current: None })
    ));
    let updated = store
        .put(
            "/k",
            b("v2"),
            Precondition::ModRevision(created.mod_revision),
        )
        .await
        .unwrap();
    assert_eq!(updated.create_revision, created.create_revision);
    assert_eq!(updated.mod_revision, 2);
    // Failed writes do not consume revisions.
    assert_eq!(store.current_revision(), 2);

    assert!(matches!(
        store.delete("/k", Precondition::ModRevision(1)).await,
        Err(StoreError::Conflict { current: Some(_) })
    ));
    assert!(matches!(
        store.delete("/k", Precondition::MustNotExist).await,
        Err(StoreError::AlreadyExists)
    ));
    assert!(matches!(
        store.delete("/nope", Precondition::None).await,
        Err(StoreError::NotFound)
    ));
    assert!(matches!(
        store.delete("/nope", Precondition::ModRevision(2)).await,
        Err(StoreError::NotFound)
    ));
    let deleted = store
        .delete("/k", Precondition::ModRevision(2))
        .await
        .unwrap();
    assert_eq!(deleted.mod_revision, 3);
    assert_eq!(deleted.create_revision, 1);
    assert_eq!(deleted.value, b("v2"));
    assert!(store.get("/k").await.unwrap().is_none());
    assert!(matches!(
        store.delete("/k", Precondition::None).await,
        Err(StoreError::NotFound)
    ));
    // Re-creating a deleted key starts a new incarnation.
    let again = store
        .put("/k", b("v3"), Precondition::MustNotExist)
        .await
        .unwrap();
    assert_eq!((again.create_revision, again.mod_revision), (4, 4));
}

#[tokio::test]
async fn preconditions_see_earlier_writes_of_the_same_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for i in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            store
                .put(
                    "/race",
                    Bytes::from(vec![i as u8]),
                    Precondition::MustNotExist,
                )
                .await
        }));
    }
    let mut ok = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(_) => ok += 1,
            Err(StoreError::AlreadyExists) => {}
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!(ok, 1);
    assert_eq!(store.current_revision(), 1);
}

#[tokio::test]
async fn range_limit_and_old_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for k in ["/r/a", "/r/b", "/r/c", "/s/x"] {
        store.put(k, b(k), Precondition::None).await.unwrap(); // revs 1..=4
    }
    let all = store.range("/r/", &prefix_end("/r/"), 0, 0).await.unwrap();
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.as_str()).collect();
    assert_eq!(keys, ["/r/a", "/r/b", "/r/c"]);
    assert_eq!(all.revision, 4);
    assert!(!all.more);

    let limited = store.range("/r/", "/r0", 0, 2).await.unwrap();
    assert_eq!(limited.kvs.len(), 2);
    assert!(limited.more);
    let exact = store.range("/r/", "/r0", 0, 3).await.unwrap();
    assert_eq!(exact.kvs.len(), 3);
    assert!(!exact.more);

    store
        .put("/r/a", b("new"), Precondition::None)
        .await
        .unwrap(); // 5
    store.delete("/r/b", Precondition::None).await.unwrap(); // 6
    let now = store.range("/r/", "/r0", 0, 0).await.unwrap();
    assert_eq!(now.kvs.len(), 2);
    assert_eq!(now.kvs[0].value, b("new"));

    let then = store.range("/r/", "/r0", 4, 0).await.unwrap();
    assert_eq!(then.revision, 4);
    let vals: Vec<_> = then.kvs.iter().map(|kv| kv.value.clone()).collect();
    assert_eq!(vals, [b("/r/a"), b("/r/b"), b("/r/c")]);
    let early = store.range("/r/", "/r0", 2, 0).await.unwrap();
    assert_eq!(early.kvs.len(), 2);

    assert!(matches!(
        store.range("/r/", "/r0", 7, 0).await,
        Err(StoreError::FutureRevision {
            requested: 7,
            current: 6
        })
    ));
    assert!(store.range("/z", "/a", 0, 0).await.unwrap().kvs.is_empty());
    let everything = store.range("", &prefix_end(""), 0, 0).await.unwrap();
    assert_eq!(everything.kvs.len(), 3);
}

#[tokio::test]
async fn compaction_drops_old_revisions() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put("/a", b("1"), Precondition::None).await.unwrap(); // 1
    store.put("/b", b("1"), Precondition::None).await.unwrap(); // 2
    store.put("/a", b("2"), Precondition::None).await.unwrap(); // 3
    store.delete("/b", Precondition::None).await.unwrap(); // 4
    store.put("/c", b("1"), Precondition::None).await.unwrap(); // 5

    assert!(matches!(
        store.compact(6).await,
        Err(StoreError::FutureRevision { .. })
    ));
    store.compact(4).await.unwrap();
    assert_eq!(store.compacted_revision(), 4);
    assert!(matches!(
        store.compact(3).await,
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    store.compact(4).await.unwrap();

    assert!(matches!(
        store.range("/", "/z", 3, 0).await,
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    let at4 = store.range("/", "/z", 4, 0).await.unwrap();
    assert_eq!(at4.kvs.len(), 1);
    assert_eq!(at4.kvs[0].value, b("2"));
    let latest = store.range("/", "/z", 0, 0).await.unwrap();
    assert_eq!(latest.kvs.len(), 2);
    assert!(matches!(
        store.watch("/", 3),
        Err(StoreError::Compacted {
            requested: 3,
            compacted: 4
        })
    ));
    assert!(store.watch("/", 4).is_ok());

    // Persisted across reopen.
    drop(store);
    let store = open(dir.path());
    assert_eq!(store.compacted_revision(), 4);
    assert_eq!(store.current_revision(), 5);
    assert!(matches!(
        store.range("/", "/z", 3, 0).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test]
async fn auto_compaction_bounds_history() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        auto_compact_retention: Some(10),
        auto_compact_slack: 5,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    for i in 0..100 {
        store
            .put("/churn", Bytes::from(format!("{i}")), Precondition::None)
            .await
            .unwrap();
    }
    let current = store.current_revision();
    let compacted = store.compacted_revision();
    assert_eq!(current, 100);
    assert!(compacted > 0);
    assert!(current - compacted <= 10 + 5 + 1, "compacted {compacted}");
    let versions = store.shared.state.read().index["/churn"].as_slice().len();
    assert!(versions <= 17, "{versions} versions kept");
    assert_eq!(store.get("/churn").await.unwrap().unwrap().value, b("99"));
}

#[tokio::test]
async fn watch_replays_then_follows_live_with_prefix_filter() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store
        .put("/a/1", b("a1"), Precondition::None)
        .await
        .unwrap(); // 1
    store
        .put("/b/1", b("b1"), Precondition::None)
        .await
        .unwrap(); // 2
    store
        .put("/a/2", b("a2"), Precondition::None)
        .await
        .unwrap(); // 3

    let mut w = store.watch("/a/", 1).unwrap();
    let mut from_now = store.watch("/a/", 0).unwrap();
    let e = next_event(&mut w).await;
    assert_eq!(e.event_type, EventType::Put);
    assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/a/2", 3));
    assert!(e.prev.is_none());

    store
        .put("/b/2", b("b2"), Precondition::None)
        .await
        .unwrap(); // 4
    store
        .put("/a/1", b("a1'"), Precondition::None)
        .await
        .unwrap(); // 5
    store.delete("/a/2", Precondition::None).await.unwrap(); // 6

    for watcher in [&mut w, &mut from_now] {
        let e = next_event(watcher).await;
        assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/a/1", 5));
        assert_eq!(e.kv.create_revision, 1);
        assert_eq!(e.prev.as_ref().map(|p| p.value.clone()), Some(b("a1")));
        let e = next_event(watcher).await;
        assert_eq!(e.event_type, EventType::Delete);
        assert_eq!((e.kv.key.as_str(), e.kv.mod_revision), ("/a/2", 6));
        assert_eq!(e.kv.value, b("a2"));
        assert_eq!(e.prev.as_ref().map(|p| p.mod_revision), Some(3));
        no_event(watcher).await;
    }

    // Watching from far in the past replays everything in order.
    let mut all = store.watch("/", 0).unwrap();
    no_event(&mut all).await;
    let mut all = store.watch("", 0).unwrap();
    no_event(&mut all).await;
    let mut everything = store.watch("/", 0).unwrap();
    store.put("/c", b("c"), Precondition::None).await.unwrap(); // 7
    assert_eq!(next_event(&mut everything).await.kv.mod_revision, 7);
}

/// Replay must give the same events whether served from the history ring or
/// rebuilt from the multi-version index.
#[tokio::test]
async fn watch_replay_from_index_matches_history() {
    let small = tempfile::tempdir().unwrap();
    let large = tempfile::tempdir().unwrap();
    let small = EmbeddedStore::open(
        small.path(),
        EmbeddedOptions {
            watch_history_events: 2,
            ..opts()
        },
    )
    .unwrap();
    let large = open(large.path());
    for store in [&small, &large] {
        for i in 0..20 {
            let key = format!("/p/{}", i % 4);
            if i % 5 == 4 {
                store.delete(&key, Precondition::None).await.unwrap();
            } else {
                store
                    .put(&key, Bytes::from(format!("v{i}")), Precondition::None)
                    .await
                    .unwrap();
            }
            store
                .put("/other", Bytes::from(format!("o{i}")), Precondition::None)
                .await
                .unwrap();
        }
    }
    assert!(small.shared.state.read().history_len() <= 2);
    for after in [0i64, 1, 5, 17, 39] {
        let mut a = small.watch("/p/", after.max(1)).unwrap();
        let mut b = large.watch("/p/", after.max(1)).unwrap();
        let mut count = 0;
        loop {
            let next_a = tokio::time::timeout(Duration::from_millis(50), a.next()).await;
            let next_b = tokio::time::timeout(Duration::from_millis(50), b.next()).await;
            match (next_a, next_b) {
                (Ok(Some(Ok(x))), Ok(Some(Ok(y)))) => {
                    assert_eq!(x, y);
                    assert!(x.kv.key.starts_with("/p/"));
                    count += 1;
                }
                (Err(_), Err(_)) => break,
                other => panic!("replays differ: {other:?}"),
            }
        }
        assert!(count > 0 || after >= 39);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_opened_during_writes_sees_every_revision_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let writer = {
        let store = Arc::clone(&store);
        tokio::spawn(async move {
            for i in 0..400 {
                store
                    .put(
                        &format!("/w/{}", i % 7),
                        Bytes::from(vec![1u8; 10]),
                        Precondition::None,
                    )
                    .await
                    .unwrap();
            }
        })
    };
    let mut watchers = Vec::new();
    while watchers.len() < 20 {
        let after = store.current_revision();
        watchers.push((after, store.watch("/w/", after).unwrap()));
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    writer.await.unwrap();
    for (after, mut w) in watchers {
        let mut expect = after + 1;
        while expect <= 400 {
            let e = next_event(&mut w).await;
            assert_eq!(e.kv.mod_revision, expect);
            expect += 1;
        }
        no_event(&mut w).await;
    }
}

#[tokio::test]
async fn lagging_watcher_is_cancelled() {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(
        dir.path(),
        EmbeddedOptions {
            watch_channel_capacity: 2,
            ..opts()
        },
    )
    .unwrap();
    let mut w = store.watch("/", 0).unwrap();
    for i in 0..10 {
        store
            .put(&format!("/k{i}"), b("v"), Precondition::None)
            .await
            .unwrap();
    }
    let item = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap();
    assert!(matches!(item, Some(Err(StoreError::WatchLagged))));
    assert!(w.next().await.is_none());
}

#[tokio::test]
async fn watch_ends_when_store_shuts_down() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut w = store.watch("/", 0).unwrap();
    store.put("/a", b("1"), Precondition::None).await.unwrap();
    drop(store);
    assert_eq!(next_event(&mut w).await.kv.key, "/a");
    let item = tokio::time::timeout(Duration::from_secs(5), w.next())
        .await
        .unwrap();
    assert!(matches!(item, Some(Err(StoreError::Closed))));
}

#[tokio::test]
async fn writes_after_shutdown_fail_but_reads_work() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put("/a", b("1"), Precondition::None).await.unwrap();
    store.shutdown();
    assert!(matches!(
        store.put("/b", b("1"), Precondition::None).await,
        Err(StoreError::Closed)
    ));
    assert_eq!(store.get("/a").await.unwrap().unwrap().value, b("1"));
}

#[tokio::test]
async fn recovers_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put("/a", b("1"), Precondition::None).await.unwrap();
    store.put("/b", b("2"), Precondition::None).await.unwrap();
    store.put("/a", b("3"), Precondition::None).await.unwrap();
    store.delete("/b", Precondition::None).await.unwrap();
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.current_revision(), 4);
    let a = store.get("/a").await.unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.value), (1, 3, b("3")));
    assert!(store.get("/b").await.unwrap().is_none());
    // History survives too: old revisions and watch replay from the index.
    let at2 = store.range("/", "/z", 2, 0).await.unwrap();
    assert_eq!(at2.kvs.len(), 2);
    let mut w = store.watch("/", 2).unwrap();
    let e = next_event(&mut w).await;
    assert_eq!((e.kv.mod_revision, e.event_type), (3, EventType::Put));
    let e = next_event(&mut w).await;
    assert_eq!((e.kv.mod_revision, e.event_type), (4, EventType::Delete));
    assert_eq!(e.kv.value, b("2"));
    // New writes continue the revision sequence.
    let c = store.put("/c", b("5"), Precondition::None).await.unwrap();
    assert_eq!(c.mod_revision, 5);
    assert_eq!(next_event(&mut w).await.kv.mod_revision, 5);
}

#[tokio::test]
async fn torn_wal_tail_is_truncated_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..5 {
        store
            .put(&format!("/k{i}"), b("v"), Precondition::None)
            .await
            .unwrap();
    }
    let seg = last_segment(dir.path());
    let before_last = std::fs::metadata(&seg).unwrap().len();
    store
        .put("/lost", b("x".repeat(300).as_str()), Precondition::None)
        .await
        .unwrap();
    drop(store);

    // Simulate a crash halfway through writing the last frame.
    let full = std::fs::metadata(&seg).unwrap().len();
    let file = std::fs::OpenOptions::new().write(true).open(&seg).unwrap();
    file.set_len(before_last + (full - before_last) / 2)
        .unwrap();
    drop(file);

    let store = open(dir.path());
    assert_eq!(store.current_revision(), 5);
    assert!(store.get("/lost").await.unwrap().is_none());
    assert_eq!(std::fs::metadata(&seg).unwrap().len(), before_last);
    // Writing continues after the truncation point and survives another reopen.
    store
        .put("/after", b("y"), Precondition::None)
        .await
        .unwrap();
    drop(store);

    // Now garbage appended to the end.
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&seg).unwrap();
        f.write_all(&[
            0xde, 0xad, 0xbe, 0xef, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13,
        ])
        .unwrap();
    }
    let store = open(dir.path());
    assert_eq!(store.current_revision(), 6);
    assert_eq!(store.get("/after").await.unwrap().unwrap().mod_revision, 6);
    for i in 0..5 {
        assert!(store.get(&format!("/k{i}")).await.unwrap().is_some());
    }
}

#[tokio::test]
async fn corruption_in_the_middle_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    for i in 0..5 {
        store
            .put(&format!("/k{i}"), b("value"), Precondition::None)
            .await
            .unwrap();
    }
    drop(store);
    let seg = last_segment(dir.path());
    let mut raw = std::fs::read(&seg).unwrap();
    // Flip a byte inside the first frame's payload.
    raw[WAL_MAGIC.len() + 8 + 4] ^= 0x40;
    std::fs::write(&seg, &raw).unwrap();
    assert!(matches!(
        EmbeddedStore::open(dir.path(), opts()),
        Err(StoreError::Corrupt(_))
    ));
}

#[tokio::test]
async fn snapshot_then_wal_replay() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_wal_bytes: 4096,
        ..opts()
    };
    let store = EmbeddedStore::open(dir.path(), options.clone()).unwrap();
    for i in 0..300 {
        let key = format!("/s/{}", i % 25);
        if i % 11 == 10 {
            let _ = store.delete(&key, Precondition::None).await;
        } else {
            store
                .put(&key, Bytes::from(vec![b'x'; 100 + i]), Precondition::None)
                .await
                .unwrap();
        }
    }
    let revision = store.current_revision();
    let old_rev = revision / 2;
    let latest = store.range("/s/", "/s0", 0, 0).await.unwrap();
    let old = store.range("/s/", "/s0", old_rev, 0).await.unwrap();
    drop(store);

    let snaps = snapshot::list_snapshots(dir.path()).unwrap();
    assert!(!snaps.is_empty(), "no snapshot was written");
    assert!(snaps.len() <= 2);
    let segments = list_segments(dir.path()).unwrap();
    assert!(segments.len() <= 3, "{} WAL segments left", segments.len());

    // Reopen without snapshotting and add a write that exists only in the WAL.
    let no_snapshots = EmbeddedOptions {
        snapshot_wal_bytes: u64::MAX,
        ..opts()
    };
    let store = EmbeddedStore::open(dir.path(), no_snapshots.clone()).unwrap();
    assert_eq!(store.current_revision(), revision);
    let tail = store
        .put("/s/tail", b("t"), Precondition::None)
        .await
        .unwrap();
    assert_eq!(tail.mod_revision, revision + 1);
    drop(store);
    let (snap_rev, _) = snapshot::list_snapshots(dir.path()).unwrap().pop().unwrap();
    assert!(snap_rev < tail.mod_revision);

    let store = EmbeddedStore::open(dir.path(), no_snapshots).unwrap();
    assert_eq!(store.current_revision(), revision + 1);
    let mut now = store.range("/s/", "/s0", 0, 0).await.unwrap().kvs;
    now.retain(|kv| kv.key != "/s/tail");
    assert_eq!(now, latest.kvs);
    assert_eq!(
        store.range("/s/", "/s0", old_rev, 0).await.unwrap().kvs,
        old.kvs
    );
    assert_eq!(store.get("/s/tail").await.unwrap(), Some(tail));
}

#[tokio::test]
async fn snapshot_with_compaction_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let options = EmbeddedOptions {
        snapshot_wal_bytes: 2048,
        auto_compact_retention: Some(20),
        auto_compact_slack: 5,
        ..EmbeddedOptions::default()
    };
    let store = EmbeddedStore::open(dir.path(), options.clone()).unwrap();
    for i in 0..200 {
        store
            .put(
                &format!("/c/{}", i % 10),
                Bytes::from(vec![b'y'; 64]),
                Precondition::None,
            )
            .await
            .unwrap();
    }
    let compacted = store.compacted_revision();
    assert!(compacted > 0);
    let latest = store.range("/c/", "/c0", 0, 0).await.unwrap();
    drop(store);
    let store = EmbeddedStore::open(dir.path(), options).unwrap();
    assert_eq!(store.current_revision(), 200);
    assert!(store.compacted_revision() >= compacted);
    assert_eq!(
        store.range("/c/", "/c0", 0, 0).await.unwrap().kvs,
        latest.kvs
    );
    assert!(matches!(
        store.range("/c/", "/c0", 1, 0).await,
        Err(StoreError::Compacted { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writers_are_group_committed_and_durable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tasks = Vec::new();
    for t in 0..32 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut revs = Vec::with_capacity(200);
            for i in 0..200 {
                let kv = store
                    .put(
                        &format!("/t{t:02}/{i:03}"),
                        Bytes::from(vec![t as u8; 50]),
                        Precondition::MustNotExist,
                    )
                    .await
                    .unwrap();
                revs.push(kv.mod_revision);
            }
            revs
        }));
    }
    let mut revs = Vec::new();
    for t in tasks {
        revs.extend(t.await.unwrap());
    }
    revs.sort_unstable();
    let expected: Vec<i64> = (1..=6400).collect();
    assert_eq!(revs, expected, "revisions must be unique and dense");
    let syncs = store.wal_syncs();
    assert!(syncs < 6400, "no group commit: {syncs} fsyncs");
    drop(store);

    let store = open(dir.path());
    assert_eq!(store.current_revision(), 6400);
    assert_eq!(store.len(), 6400);
    for t in 0..32 {
        let r = store
            .range(
                &format!("/t{t:02}/"),
                &prefix_end(&format!("/t{t:02}/")),
                0,
                0,
            )
            .await
            .unwrap();
        assert_eq!(r.kvs.len(), 200);
        assert!(r
            .kvs
            .iter()
            .all(|kv| kv.value.len() == 50 && kv.value[0] == t as u8));
    }
}

#[test]
fn open_works_without_a_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(store.current_revision(), 0);
    assert!(store.is_empty());
}

#[test]
fn version_entries_stay_compact() {
    // One inline version per key: revisions plus a stored value (a `Bytes`
    // handle, and a dictionary handle when compressed with one).
    let size = std::mem::size_of::<super::mvcc::Versions>();
    assert!(size <= 64, "Versions is {size} bytes");
}

#[tokio::test]
async fn leftover_temp_snapshot_is_ignored_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    store.put("/a", b("1"), Precondition::None).await.unwrap();
    drop(store);
    let tmp = dir.path().join(format!(
        "{}{}",
        snapshot::snapshot_name(9),
        snapshot::TMP_SUFFIX
    ));
    std::fs::write(&tmp, b"half a snapshot").unwrap();
    let store = open(dir.path());
    assert!(!tmp.exists());
    assert_eq!(store.current_revision(), 1);
}

#[tokio::test]
async fn watch_from_a_future_revision_waits_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut w = store.watch("/", 2).unwrap();
    store.put("/a", b("1"), Precondition::None).await.unwrap(); // 1
    store.put("/a", b("2"), Precondition::None).await.unwrap(); // 2
    store.put("/a", b("3"), Precondition::None).await.unwrap(); // 3
    let e = next_event(&mut w).await;
    assert_eq!(e.kv.mod_revision, 3);
    assert_eq!(e.prev.map(|p| p.value), Some(b("2")));
}
