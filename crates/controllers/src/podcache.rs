//! One watch-fed cache of all pods, shared by every in-process controller
//! that looks at pods: ReplicaSet, Endpoints and node lifecycle read it;
//! Job, StatefulSet, DaemonSet, disruption and resource quota are woken by its
//! changes ([`subscribe`](PodCache::subscribe)); the garbage collector takes
//! its watch events ([`subscribe_events`](PodCache::subscribe_events)); pod GC
//! reads it.
//!
//! Each of them used to run its own pod watch, so every pod event was sent
//! over loopback and decoded up to eight times over, with its `managedFields`
//! (typed entries whose `fieldsV1` becomes a JSON tree), and held in several
//! stores. Here one watch feeds one [`Store`] and every subscriber is told
//! which pods changed (the same `Arc` the store holds, not a copy).
//!
//! Cached pods are slimmed first ([`slim`]): `metadata.managedFields` and the
//! `kubectl.kubernetes.io/last-applied-configuration` annotation are dropped.
//! No controller reads them, and every write the controllers make to pods is a
//! patch or a delete (with `uid`/`resourceVersion` preconditions), never a
//! replace of the cached object. Anything that needs them must read the pod
//! from the API.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client};
use tokio::sync::mpsc;

/// The annotation `kubectl apply` writes: a copy of the whole applied object.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// Drop the parts of a pod no controller reads from the cache (see the module doc).
pub fn slim(pod: &mut Pod) {
    pod.metadata.managed_fields = None;
    if let Some(a) = pod.metadata.annotations.as_mut() {
        a.remove(LAST_APPLIED);
        if a.is_empty() {
            pod.metadata.annotations = None;
        }
    }
}

/// The shared pod cache before it runs: take its [`store`](Self::store) and
/// [`subscribe`](Self::subscribe) to changes, then [`run`](Self::run) it (which
/// consumes it, so no subscriber can come too late to see the initial list).
pub struct PodCache {
    store: Store<Pod>,
    writer: reflector::store::Writer<Pod>,
    changes: Vec<mpsc::UnboundedSender<Arc<Pod>>>,
    events: Vec<mpsc::UnboundedSender<watcher::Event<Arc<Pod>>>>,
}

impl Default for PodCache {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for PodCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PodCache")
            .field("change_subscribers", &self.changes.len())
            .field("event_subscribers", &self.events.len())
            .finish_non_exhaustive()
    }
}

impl PodCache {
    /// An empty cache with no subscribers.
    pub fn new() -> Self {
        let (store, writer) = reflector::store::<Pod>();
        PodCache {
            store,
            writer,
            changes: Vec::new(),
            events: Vec::new(),
        }
    }

    /// A reader of the cache (ready once the first list is in).
    pub fn store(&self) -> Store<Pod> {
        self.store.clone()
    }

    /// The pods that change from now on: each applied or deleted pod, every
    /// listed pod once a (re)list is complete, and (as they were last seen)
    /// the pods a relist found gone. When a pod is handed out the store
    /// already holds its new state. A subscriber that lags only queues
    /// `Arc`s; one that is dropped is forgotten.
    pub fn subscribe(&mut self) -> PodChanges {
        let (tx, rx) = mpsc::unbounded_channel();
        self.changes.push(tx);
        PodChanges { rx }
    }

    /// The watch events themselves from now on (slimmed, shared), for a
    /// subscriber that keeps state of its own and must know about relists:
    /// `Init`, `InitApply` for each listed pod, `InitDone`, then `Apply` and
    /// `Delete`.
    pub fn subscribe_events(&mut self) -> PodEvents {
        let (tx, rx) = mpsc::unbounded_channel();
        self.events.push(tx);
        PodEvents { rx }
    }

    /// A cache of its own for one controller: subscribes once, starts the
    /// watch through `client` and returns the reader and the changes.
    pub fn spawn_private(client: Client) -> (Store<Pod>, PodChanges) {
        let mut pods = PodCache::new();
        let changes = pods.subscribe();
        let store = pods.store();
        tokio::spawn(pods.run(client));
        (store, changes)
    }

    /// A cache of its own for one controller that only reads it: starts the
    /// watch through `client` and returns the reader.
    pub fn spawn_store(client: Client) -> Store<Pod> {
        let pods = PodCache::new();
        let store = pods.store();
        tokio::spawn(pods.run(client));
        store
    }

    /// Watch every pod through `client` until the process ends.
    pub async fn run(self, client: Client) {
        let events = watcher(Api::<Pod>::all(client), watcher::Config::default()).default_backoff();
        self.feed(events).await;
    }

    /// Apply `events` (from a pod watcher) to the cache, telling subscribers.
    /// Watch errors are logged; the watcher retries by itself.
    pub async fn feed<S>(mut self, events: S)
    where
        S: Stream<Item = Result<watcher::Event<Pod>, watcher::Error>>,
    {
        let mut events = std::pin::pin!(events);
        while let Some(event) = events.next().await {
            match event {
                Ok(event) => self.apply(event),
                Err(e) => tracing::debug!(error = %e, "pod cache: watch failed"),
            }
        }
    }

    fn apply(&mut self, event: watcher::Event<Pod>) {
        let event = event.modify(slim);
        // What a relist may drop without a Delete event of its own.
        let before = if matches!(event, watcher::Event::InitDone) && !self.changes.is_empty() {
            self.store.state()
        } else {
            Vec::new()
        };
        self.writer.apply_watcher_event(&event);
        match event {
            watcher::Event::Apply(pod) => {
                // The writer stored its own copy: hand out that one.
                let cached = self.store.get(&ObjectRef::from_obj(&pod));
                let pod = cached.unwrap_or_else(|| Arc::new(pod));
                self.notify(&pod);
                self.tell(|| watcher::Event::Apply(pod.clone()));
            }
            watcher::Event::Delete(pod) => {
                let pod = Arc::new(pod);
                self.notify(&pod);
                self.tell(|| watcher::Event::Delete(pod.clone()));
            }
            watcher::Event::InitDone => {
                for old in before {
                    let now = self.store.get(&ObjectRef::from_obj(old.as_ref()));
                    if now.is_none_or(|p| p.metadata.uid != old.metadata.uid) {
                        self.notify(&old);
                    }
                }
                for pod in self.store.state() {
                    self.notify(&pod);
                }
                self.tell(|| watcher::Event::InitDone);
            }
            watcher::Event::Init => self.tell(|| watcher::Event::Init),
            watcher::Event::InitApply(pod) => {
                if !self.events.is_empty() {
                    let pod = Arc::new(pod);
                    self.tell(|| watcher::Event::InitApply(pod.clone()));
                }
            }
        }
    }

    /// Hand `pod` to every change subscriber.
    fn notify(&mut self, pod: &Arc<Pod>) {
        self.changes.retain(|s| s.send(pod.clone()).is_ok());
    }

    /// Hand the event `make` builds to every event subscriber.
    fn tell(&mut self, make: impl Fn() -> watcher::Event<Arc<Pod>>) {
        self.events.retain(|s| s.send(make()).is_ok());
    }
}

/// The changed pods a subscriber of a [`PodCache`] receives, as cached.
#[derive(Debug)]
pub struct PodChanges {
    rx: mpsc::UnboundedReceiver<Arc<Pod>>,
}

impl Stream for PodChanges {
    type Item = Arc<Pod>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

/// The pod watch events a [`PodCache::subscribe_events`] subscriber receives.
#[derive(Debug)]
pub struct PodEvents {
    rx: mpsc::UnboundedReceiver<watcher::Event<Arc<Pod>>>,
}

impl Stream for PodEvents {
    type Item = watcher::Event<Arc<Pod>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
    use kube::ResourceExt;

    fn pod(name: &str, rv: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                resource_version: Some(rv.into()),
                annotations: Some(
                    [
                        (LAST_APPLIED.to_string(), "{\"big\":true}".to_string()),
                        ("keep".to_string(), "me".to_string()),
                    ]
                    .into(),
                ),
                managed_fields: Some(vec![ManagedFieldsEntry {
                    manager: Some("kubectl".into()),
                    operation: Some("Update".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn events(
        evs: Vec<watcher::Event<Pod>>,
    ) -> impl Stream<Item = Result<watcher::Event<Pod>, watcher::Error>> {
        stream::iter(evs.into_iter().map(Ok))
    }

    fn drain(changes: &mut PodChanges) -> Vec<Arc<Pod>> {
        let mut out = Vec::new();
        while let Ok(p) = changes.rx.try_recv() {
            out.push(p);
        }
        out
    }

    #[test]
    fn slimming_drops_managed_fields_and_last_applied_only() {
        let mut p = pod("a", "1");
        slim(&mut p);
        assert_eq!(p.metadata.managed_fields, None);
        assert_eq!(
            p.annotations().iter().collect::<Vec<_>>(),
            vec![(&"keep".to_string(), &"me".to_string())]
        );
        assert_eq!(p.name_any(), "a");
        assert_eq!(p.resource_version().as_deref(), Some("1"));

        let mut only_applied = pod("b", "1");
        if let Some(a) = only_applied.metadata.annotations.as_mut() {
            a.remove("keep");
        }
        slim(&mut only_applied);
        assert_eq!(only_applied.metadata.annotations, None);
    }

    #[tokio::test]
    async fn one_store_and_every_subscriber_sees_each_change() {
        let mut cache = PodCache::new();
        let mut first = cache.subscribe();
        let mut second = cache.subscribe();
        let store = cache.store();
        cache
            .feed(events(vec![
                watcher::Event::Init,
                watcher::Event::InitApply(pod("a", "1")),
                watcher::Event::InitApply(pod("b", "1")),
                watcher::Event::InitDone,
                watcher::Event::Apply(pod("a", "2")),
                watcher::Event::Delete(pod("b", "3")),
            ]))
            .await;
        assert!(store.wait_until_ready().await.is_ok());

        let cached = store.state();
        assert_eq!(cached.len(), 1);
        let a = store
            .get(&ObjectRef::new("a").within("ns"))
            .expect("a is cached");
        assert_eq!(a.resource_version().as_deref(), Some("2"));
        assert_eq!(a.metadata.managed_fields, None);
        assert!(!a.annotations().contains_key(LAST_APPLIED));

        for changes in [&mut first, &mut second] {
            let seen = drain(changes);
            let mut names: Vec<_> = seen
                .iter()
                .map(|p| {
                    format!(
                        "{}@{}",
                        p.name_any(),
                        p.resource_version().unwrap_or_default()
                    )
                })
                .collect();
            // The initial list comes in the store's order, after it is complete.
            names[..2].sort();
            assert_eq!(names, ["a@1", "b@1", "a@2", "b@3"]);
            // The applied pod handed out is the cached one, not a copy.
            assert!(Arc::ptr_eq(&seen[2], &a));
            assert!(seen.iter().all(|p| p.metadata.managed_fields.is_none()));
        }
    }

    #[tokio::test]
    async fn a_dropped_subscriber_does_not_stop_the_others() {
        let mut cache = PodCache::new();
        let gone = cache.subscribe();
        let mut kept = cache.subscribe();
        drop(gone);
        cache
            .feed(events(vec![
                watcher::Event::Init,
                watcher::Event::InitDone,
                watcher::Event::Apply(pod("a", "1")),
            ]))
            .await;
        let seen = drain(&mut kept);
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].name_any(), "a");
    }

    #[tokio::test]
    async fn watch_errors_are_skipped() {
        let mut cache = PodCache::new();
        let mut changes = cache.subscribe();
        let store = cache.store();
        let evs = vec![
            Ok(watcher::Event::Init),
            Err(watcher::Error::NoResourceVersion),
            Ok(watcher::Event::InitApply(pod("a", "1"))),
            Ok(watcher::Event::InitDone),
        ];
        cache.feed(stream::iter(evs)).await;
        assert_eq!(store.state().len(), 1);
        assert_eq!(drain(&mut changes).len(), 1);
    }

    #[tokio::test]
    async fn subscribers_wake_on_changes() {
        let mut cache = PodCache::new();
        let changes = cache.subscribe();
        tokio::spawn(cache.feed(events(vec![
            watcher::Event::Init,
            watcher::Event::InitDone,
            watcher::Event::Apply(pod("a", "1")),
            watcher::Event::Apply(pod("b", "1")),
        ])));
        let names: Vec<String> = changes.take(2).map(|p| p.name_any()).collect().await;
        assert_eq!(names, ["a", "b"]);
    }

    fn with_uid(mut p: Pod, uid: &str) -> Pod {
        p.metadata.uid = Some(uid.into());
        p
    }

    fn names_of(pods: &[Arc<Pod>]) -> Vec<String> {
        let mut names: Vec<String> = pods
            .iter()
            .map(|p| {
                format!(
                    "{}@{}",
                    p.name_any(),
                    p.resource_version().unwrap_or_default()
                )
            })
            .collect();
        names.sort();
        names
    }

    #[tokio::test]
    async fn a_relist_tells_about_pods_that_went_away_meanwhile() {
        let mut cache = PodCache::new();
        let mut changes = cache.subscribe();
        let store = cache.store();
        cache
            .feed(events(vec![
                watcher::Event::Init,
                watcher::Event::InitApply(with_uid(pod("gone", "1"), "u-gone")),
                watcher::Event::InitApply(with_uid(pod("kept", "1"), "u-kept")),
                watcher::Event::InitApply(with_uid(pod("replaced", "1"), "u-old")),
                watcher::Event::InitDone,
                // The watch broke; the relist no longer has `gone`, and
                // `replaced` is another pod by the same name.
                watcher::Event::Init,
                watcher::Event::InitApply(with_uid(pod("kept", "2"), "u-kept")),
                watcher::Event::InitApply(with_uid(pod("replaced", "5"), "u-new")),
                watcher::Event::InitDone,
            ]))
            .await;
        let seen = drain(&mut changes);
        assert_eq!(
            names_of(&seen[..3]),
            ["gone@1", "kept@1", "replaced@1"],
            "first list"
        );
        // The vanished and the replaced pods as last seen, then the new list.
        assert_eq!(names_of(&seen[3..5]), ["gone@1", "replaced@1"]);
        assert_eq!(names_of(&seen[5..]), ["kept@2", "replaced@5"]);
        assert!(store.get(&ObjectRef::new("gone").within("ns")).is_none());
    }

    #[tokio::test]
    async fn event_subscribers_see_the_watch_events_slimmed() {
        let mut cache = PodCache::new();
        let mut evs = cache.subscribe_events();
        let mut changes = cache.subscribe();
        let store = cache.store();
        cache
            .feed(events(vec![
                watcher::Event::Init,
                watcher::Event::InitApply(pod("a", "1")),
                watcher::Event::InitDone,
                watcher::Event::Apply(pod("b", "2")),
                watcher::Event::Delete(pod("a", "3")),
            ]))
            .await;
        let mut got = Vec::new();
        while let Ok(e) = evs.rx.try_recv() {
            got.push(e);
        }
        let shape: Vec<String> = got
            .iter()
            .map(|e| match e {
                watcher::Event::Init => "init".to_string(),
                watcher::Event::InitApply(p) => format!("list {}", p.name_any()),
                watcher::Event::InitDone => "done".to_string(),
                watcher::Event::Apply(p) => format!("apply {}", p.name_any()),
                watcher::Event::Delete(p) => format!("delete {}", p.name_any()),
            })
            .collect();
        assert_eq!(shape, ["init", "list a", "done", "apply b", "delete a"]);
        for e in &got {
            if let watcher::Event::InitApply(p)
            | watcher::Event::Apply(p)
            | watcher::Event::Delete(p) = e
            {
                assert_eq!(p.metadata.managed_fields, None);
                assert!(!p.annotations().contains_key(LAST_APPLIED));
            }
        }
        // The applied pod is the cached one.
        let b = store.get(&ObjectRef::new("b").within("ns")).expect("b");
        assert!(matches!(&got[3], watcher::Event::Apply(p) if Arc::ptr_eq(p, &b)));
        // Change subscribers are not affected by event subscribers.
        assert_eq!(names_of(&drain(&mut changes)), ["a@1", "a@3", "b@2"]);
    }

    #[tokio::test]
    async fn a_store_only_cache_has_no_subscribers_to_fill() {
        let mut cache = PodCache::new();
        let store = cache.store();
        cache.apply(watcher::Event::Init);
        cache.apply(watcher::Event::InitApply(pod("a", "1")));
        cache.apply(watcher::Event::InitDone);
        assert!(cache.changes.is_empty() && cache.events.is_empty());
        assert!(store.wait_until_ready().await.is_ok());
        assert_eq!(store.state().len(), 1);
    }
}
