//! Watch semantics through the cache: event order and resourceVersions, shared
//! lines, joined chunks, selector transitions, initial events and bookmarks,
//! PartialObjectMetadata and Table formats, 410 Expired and timeouts.

use std::time::Duration;

use futures::{Stream, StreamExt};
use navarch_api::catalog::{self, ResourceType};
use navarch_store::embedded::{EmbeddedOptions, EmbeddedStore};
use navarch_store::Store;
use serde_json::{json, Value};

use super::*;
use crate::registry::WriteOptions;
use crate::request::Verb;

struct Env {
    reg: Arc<Registry>,
    store: Arc<EmbeddedStore>,
    _dir: tempfile::TempDir,
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default()).unwrap();
    let reg = Registry::new(store.clone()).await.unwrap();
    crate::bootstrap(&reg).await.unwrap();
    Env {
        reg,
        store,
        _dir: dir,
    }
}

/// Wait until the configmap watch cache has seen every write so far.
async fn settle(env: &Env) {
    let cache = env.reg.cache(configmaps()).unwrap();
    let want = env.store.current_revision();
    for _ in 0..500 {
        if cache.last_revision() >= want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("watch cache did not catch up with revision {want}");
}

fn configmaps() -> &'static ResourceType {
    catalog::by_plural("", "v1", "configmaps").unwrap()
}

fn request(ns: Option<&str>, name: Option<&str>) -> ResourceRequest {
    ResourceRequest {
        rt: configmaps(),
        namespace: ns.map(str::to_string),
        name: name.map(str::to_string),
        subresource: None,
        verb: Verb::Watch,
    }
}

fn query(rv: Option<String>) -> Query {
    Query {
        watch: true,
        resource_version: rv,
        timeout_seconds: Some(30),
        ..Query::default()
    }
}

async fn create(reg: &Registry, name: &str, labels: Value) -> Value {
    let obj = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels}, "data": {"k": "v"}});
    reg.create(configmaps(), Some("default"), obj, &WriteOptions::default())
        .await
        .unwrap()
}

async fn relabel(reg: &Registry, name: &str, labels: Value) -> Value {
    let mut obj = reg.get(configmaps(), Some("default"), name).await.unwrap();
    obj["metadata"]["labels"] = labels;
    reg.update(
        configmaps(),
        Some("default"),
        name,
        obj,
        None,
        &WriteOptions::default(),
    )
    .await
    .unwrap()
    .0
}

fn rv_of(obj: &Value) -> String {
    obj["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The next chunk of the body, split into parsed event lines.
async fn next_events<S>(s: &mut S) -> Option<Vec<Value>>
where
    S: Stream<Item = Bytes> + Unpin,
{
    let chunk = tokio::time::timeout(Duration::from_secs(5), s.next())
        .await
        .expect("a watch chunk within 5 s")?;
    assert!(chunk.ends_with(b"\n"), "chunks hold whole lines");
    Some(
        chunk
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect(),
    )
}

/// Events until `n` have arrived.
async fn events<S>(s: &mut S, n: usize) -> Vec<Value>
where
    S: Stream<Item = Bytes> + Unpin,
{
    let mut out = Vec::new();
    while out.len() < n {
        out.extend(next_events(s).await.expect("stream still open"));
    }
    out
}

fn summary(evs: &[Value]) -> Vec<(String, String)> {
    evs.iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_string(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn live_events_in_order_with_resource_versions() {
    let env = env().await;
    let start = env.store.current_revision();
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    let a = create(&env.reg, "a", json!({})).await;
    let b = create(&env.reg, "b", json!({})).await;
    let a2 = relabel(&env.reg, "a", json!({"x": "1"})).await;
    env.reg
        .delete(configmaps(), Some("default"), "b", &json!({}), None, false)
        .await
        .unwrap();
    let evs = events(&mut s, 4).await;
    assert_eq!(
        summary(&evs),
        [
            ("ADDED", "a"),
            ("ADDED", "b"),
            ("MODIFIED", "a"),
            ("DELETED", "b")
        ]
        .map(|(t, n)| (t.to_string(), n.to_string()))
    );
    assert_eq!(rv_of(&evs[0]["object"]), rv_of(&a));
    assert_eq!(rv_of(&evs[1]["object"]), rv_of(&b));
    assert_eq!(rv_of(&evs[2]["object"]), rv_of(&a2));
    assert_eq!(evs[2]["object"]["metadata"]["labels"]["x"], "1");
    assert_eq!(evs[0]["object"]["kind"], "ConfigMap");
    assert_eq!(evs[0]["object"]["data"]["k"], "v");
}

#[tokio::test]
async fn replay_from_a_past_revision_and_namespace_scope() {
    let env = env().await;
    let start = env.store.current_revision();
    create(&env.reg, "a", json!({})).await;
    let other = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "z"}});
    env.reg
        .create(
            configmaps(),
            Some("kube-system"),
            other,
            &WriteOptions::default(),
        )
        .await
        .unwrap();
    create(&env.reg, "b", json!({})).await;
    settle(&env).await;
    // Watching from `start` replays what happened since, for this namespace only,
    // joined into one chunk.
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    let first = next_events(&mut s).await.unwrap();
    assert_eq!(summary(&first).len(), 2, "replay comes as one chunk");
    assert_eq!(
        summary(&first),
        [("ADDED", "a"), ("ADDED", "b")].map(|(t, n)| (t.to_string(), n.to_string()))
    );
    // All namespaces see the kube-system one too.
    let mut all = open(
        &env.reg,
        &request(None, None),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    assert_eq!(events(&mut all, 3).await.len(), 3);
}

#[tokio::test]
async fn waiting_events_are_joined_into_one_chunk() {
    let env = env().await;
    let start = env.store.current_revision();
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    // Nothing is polled while these happen: they wait in the live feed.
    for n in ["a", "b", "c"] {
        create(&env.reg, n, json!({})).await;
    }
    settle(&env).await;
    let chunk = next_events(&mut s).await.unwrap();
    assert_eq!(
        summary(&chunk),
        [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
            .map(|(t, n)| (t.to_string(), n.to_string()))
    );
}

#[tokio::test]
async fn watchers_share_one_encoded_line() {
    let env = env().await;
    let start = env.store.current_revision();
    let cache = env.reg.cache(configmaps()).unwrap().clone();
    let mut s1 = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    let mut s2 = open(
        &env.reg,
        &request(None, None),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    create(&env.reg, "a", json!({})).await;
    let c1 = tokio::time::timeout(Duration::from_secs(5), s1.next())
        .await
        .unwrap()
        .unwrap();
    let c2 = tokio::time::timeout(Duration::from_secs(5), s2.next())
        .await
        .unwrap()
        .unwrap();
    // Same bytes at the same address: encoded once, shared.
    assert_eq!(c1, c2);
    assert_eq!(c1.as_ptr(), c2.as_ptr());
    let sub = cache.subscribe(start).unwrap();
    let ev = &sub.replay[0];
    assert_eq!(
        ev.line(LineFormat::Object, WatchType::Added)
            .unwrap()
            .as_ptr(),
        c1.as_ptr()
    );
}

#[tokio::test]
async fn label_selector_transitions() {
    let env = env().await;
    let start = env.store.current_revision();
    let mut q = query(Some(start.to_string()));
    q.label_selector = Some("app=web".into());
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &q,
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    create(&env.reg, "a", json!({})).await; // not matching: nothing
    relabel(&env.reg, "a", json!({"app": "web"})).await; // now matches: ADDED
    relabel(&env.reg, "a", json!({"app": "web", "v": "2"})).await; // MODIFIED
    relabel(&env.reg, "a", json!({"app": "db"})).await; // leaves: DELETED
    create(&env.reg, "b", json!({"app": "web"})).await; // ADDED
    env.reg
        .delete(configmaps(), Some("default"), "b", &json!({}), None, false)
        .await
        .unwrap(); // DELETED
    let evs = events(&mut s, 5).await;
    assert_eq!(
        summary(&evs),
        [
            ("ADDED", "a"),
            ("MODIFIED", "a"),
            ("DELETED", "a"),
            ("ADDED", "b"),
            ("DELETED", "b")
        ]
        .map(|(t, n)| (t.to_string(), n.to_string()))
    );
    // The DELETED for a leaving object carries its new state (as upstream).
    assert_eq!(evs[2]["object"]["metadata"]["labels"]["app"], "db");
}

#[tokio::test]
async fn watch_by_name_sees_only_that_object() {
    let env = env().await;
    let start = env.store.current_revision();
    let mut s = open(
        &env.reg,
        &request(Some("default"), Some("b")),
        &query(Some(start.to_string())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    create(&env.reg, "a", json!({})).await;
    create(&env.reg, "b", json!({})).await;
    let evs = next_events(&mut s).await.unwrap();
    assert_eq!(summary(&evs), [("ADDED".to_string(), "b".to_string())]);
}

#[tokio::test]
async fn send_initial_events_then_bookmark() {
    let env = env().await;
    create(&env.reg, "a", json!({})).await;
    let b = create(&env.reg, "b", json!({})).await;
    let mut q = query(None);
    q.send_initial_events = Some(true);
    q.allow_watch_bookmarks = true;
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &q,
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    let evs = events(&mut s, 3).await;
    assert_eq!(summary(&evs[..2]).len(), 2);
    assert_eq!(evs[0]["type"], "ADDED");
    assert_eq!(evs[1]["type"], "ADDED");
    assert_eq!(evs[2]["type"], "BOOKMARK");
    assert_eq!(evs[2]["object"]["kind"], "ConfigMap");
    assert_eq!(
        evs[2]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
    let bookmark_rv: i64 = evs[2]["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(bookmark_rv >= rv_of(&b).parse::<i64>().unwrap());
    // Then live events after the bookmark's revision.
    create(&env.reg, "c", json!({})).await;
    let evs = events(&mut s, 1).await;
    assert_eq!(summary(&evs), [("ADDED".to_string(), "c".to_string())]);
}

#[tokio::test]
async fn partial_object_metadata_events() {
    let env = env().await;
    let start = env.store.current_revision();
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some(start.to_string())),
        ResponseFormat::Metadata,
    )
    .await
    .unwrap();
    let a = create(&env.reg, "a", json!({"x": "y"})).await;
    let evs = events(&mut s, 1).await;
    let obj = &evs[0]["object"];
    assert_eq!(evs[0]["type"], "ADDED");
    assert_eq!(obj["kind"], "PartialObjectMetadata");
    assert_eq!(obj["apiVersion"], "meta.k8s.io/v1");
    assert_eq!(obj["metadata"], a["metadata"]);
    assert!(obj.get("data").is_none());
    let keys: Vec<&str> = obj
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["kind", "apiVersion", "metadata"]);
}

#[tokio::test]
async fn table_events_send_columns_once() {
    let env = env().await;
    let start = env.store.current_revision();
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some(start.to_string())),
        ResponseFormat::Table,
    )
    .await
    .unwrap();
    create(&env.reg, "a", json!({})).await;
    create(&env.reg, "b", json!({})).await;
    let evs = events(&mut s, 2).await;
    assert_eq!(evs[0]["object"]["kind"], "Table");
    assert!(!evs[0]["object"]["columnDefinitions"]
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(evs[1]["object"]["columnDefinitions"], json!([]));
    assert_eq!(evs[1]["object"]["rows"][0]["cells"][0], "b");
    assert_eq!(
        evs[1]["object"]["metadata"]["resourceVersion"],
        evs[1]["object"]["rows"][0]["object"]["metadata"]["resourceVersion"]
    );
}

#[tokio::test]
async fn compacted_revision_gets_410_expired() {
    let env = env().await;
    create(&env.reg, "a", json!({})).await;
    create(&env.reg, "a2", json!({})).await;
    let rev = env.store.current_revision();
    env.store.compact(rev).await.unwrap();
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some("1".into())),
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    let evs = next_events(&mut s).await.unwrap();
    assert_eq!(evs[0]["type"], "ERROR");
    assert_eq!(evs[0]["object"]["code"], 410);
    assert_eq!(evs[0]["object"]["reason"], "Expired");
    assert!(next_events(&mut s).await.is_none(), "the stream ends");
}

#[tokio::test]
async fn timeout_ends_the_stream() {
    let env = env().await;
    let mut q = query(Some(env.store.current_revision().to_string()));
    q.timeout_seconds = Some(1);
    let mut s = open(
        &env.reg,
        &request(Some("default"), None),
        &q,
        ResponseFormat::Json,
    )
    .await
    .unwrap();
    let t0 = std::time::Instant::now();
    assert!(next_events(&mut s).await.is_none());
    assert!(t0.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn invalid_resource_version_is_rejected() {
    let env = env().await;
    let r = open(
        &env.reg,
        &request(Some("default"), None),
        &query(Some("abc".into())),
        ResponseFormat::Json,
    )
    .await;
    assert_eq!(r.err().map(|e| e.code), Some(400));
}

#[test]
fn chunks_keep_a_lone_event_without_copying() {
    let line = Bytes::from_static(b"{\"type\":\"ADDED\"}\n");
    let mut c = Chunk::default();
    c.push(line.clone());
    let out = c.take().unwrap();
    assert_eq!(out.as_ptr(), line.as_ptr());

    let mut c = Chunk::default();
    c.push(line.clone());
    c.push(Bytes::from_static(b"{\"type\":\"DELETED\"}\n"));
    assert!(!c.full());
    assert_eq!(
        &c.take().unwrap()[..],
        b"{\"type\":\"ADDED\"}\n{\"type\":\"DELETED\"}\n"
    );
    assert!(Chunk::default().take().is_none());
}
