//! A kube-runtime controller whose reconciles are requested by streams given
//! to it, so that pod changes can come from the shared
//! [`PodCache`](crate::podcache::PodCache) instead of a pod watch of its own.
//!
//! kube-runtime's [`Controller`](kube::runtime::Controller) takes external
//! trigger streams only behind its `unstable-runtime` features, which the
//! workspace does not enable; this builds the same thing from its stable parts
//! ([`applier`](kube::runtime::controller::applier), [`trigger_self`], [`trigger_with`], a reflector): the
//! controlled objects' own watch into a store, reconciles on their own tasks,
//! and the [`requeue_on_error`](super::requeue_on_error) policy.

use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{self, BoxStream, SelectAll};
use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::Pod;
use kube::runtime::controller::{
    trigger_self, trigger_with, Action, ReconcileReason, ReconcileRequest,
};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::utils::CancelableJoinHandle;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::Instrument;

type Trigger<K> = BoxStream<'static, Result<ReconcileRequest<K>, watcher::Error>>;

/// A controller of the `K` objects, built up from trigger streams and then
/// [`run`](Self::run).
pub struct TriggeredController<K: Resource<DynamicType = ()> + 'static> {
    store: Store<K>,
    triggers: SelectAll<Trigger<K>>,
}

impl<K: Resource<DynamicType = ()> + 'static> std::fmt::Debug for TriggeredController<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TriggeredController")
            .field("triggers", &self.triggers.len())
            .finish_non_exhaustive()
    }
}

impl<K> TriggeredController<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    /// A controller of every `K` that `api` watches (default watch settings),
    /// reconciling each object when it is applied.
    pub fn new(api: Api<K>) -> Self {
        Self::from_events(watcher(api, watcher::Config::default()).default_backoff())
    }

    /// A controller of the `K` objects `events` (a watcher stream) brings,
    /// reconciling each object when it is applied.
    pub fn from_events<S>(events: S) -> Self
    where
        S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    {
        let (store, writer) = reflector::store::<K>();
        let own = trigger_self(reflector::reflector(writer, events).applied_objects(), ());
        let mut triggers = SelectAll::new();
        triggers.push(own.boxed());
        TriggeredController { store, triggers }
    }

    /// The controlled objects, as watched.
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Also reconcile the `K` owners (any owner reference of kind `K`) of each
    /// changed pod, as `Controller::owns` does for a pod watch.
    pub fn owns_pods(self, changes: impl Stream<Item = Arc<Pod>> + Send + 'static) -> Self {
        self.trigger_from_pods(changes, |pod| pod_owners::<K>(pod))
    }

    /// Also reconcile, for each changed pod, the `K` objects of its namespace
    /// that `concerns` it.
    pub fn woken_by_pods(
        self,
        changes: impl Stream<Item = Arc<Pod>> + Send + 'static,
        concerns: impl Fn(&K, &Pod) -> bool + Send + Sync + 'static,
    ) -> Self {
        let store = self.store();
        self.trigger_from_pods(changes, move |pod| {
            concerned(&store, pod, |k: &K, p: &Pod| concerns(k, p))
        })
    }

    /// Also reconcile the `K` objects `mapper` returns for each change of the
    /// objects `api` watches (default watch settings, deletions included), as
    /// `Controller::watches` does.
    pub fn watches<O, I>(self, api: Api<O>, mapper: impl Fn(O) -> I + Send + 'static) -> Self
    where
        O: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
    {
        let events = watcher(api, watcher::Config::default())
            .default_backoff()
            .touched_objects();
        self.trigger(trigger_with(events, move |o: O| {
            let related = ObjectRef::from_obj(&o).erase();
            mapper(o)
                .into_iter()
                .map(|obj_ref| related_request(obj_ref, related.clone()))
                .collect::<Vec<_>>()
        }))
    }

    /// Also reconcile what `trigger` requests.
    pub fn trigger(
        mut self,
        trigger: impl Stream<Item = Result<ReconcileRequest<K>, watcher::Error>> + Send + 'static,
    ) -> Self {
        self.triggers.push(trigger.boxed());
        self
    }

    fn trigger_from_pods(
        self,
        changes: impl Stream<Item = Arc<Pod>> + Send + 'static,
        map: impl Fn(&Pod) -> Vec<ObjectRef<K>> + Send + 'static,
    ) -> Self {
        let requests = changes.flat_map(move |pod| {
            let refs = map(&pod);
            // Most pod changes concern nothing here: name the pod only if needed.
            let requests: Vec<_> = if refs.is_empty() {
                Vec::new()
            } else {
                let related = ObjectRef::from_obj(pod.as_ref()).erase();
                refs.into_iter()
                    .map(|obj_ref| Ok(related_request(obj_ref, related.clone())))
                    .collect()
            };
            stream::iter(requests)
        });
        self.trigger(requests)
    }

    /// Run until the triggers end, syncing objects with `reconcile` (each on a
    /// task of its own, at most one at a time per object, as
    /// [`Controller::run`](kube::runtime::Controller::run) does): a failed sync
    /// is warned about and retried after `retry`; `name` labels the logs. As
    /// [`run_applier`](super::run_applier).
    pub async fn run<C, Fut, E>(
        self,
        name: &'static str,
        mut reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
        ctx: Arc<C>,
        retry: Duration,
    ) where
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
        E: std::error::Error + Send + 'static,
    {
        let spawned = move |obj, ctx| {
            CancelableJoinHandle::spawn(
                reconcile(obj, ctx).in_current_span(),
                &tokio::runtime::Handle::current(),
            )
        };
        super::run_applier(name, self.store, self.triggers, spawned, ctx, retry).await;
    }
}

fn related_request<K: Resource>(
    obj_ref: ObjectRef<K>,
    related: ObjectRef<kube::api::DynamicObject>,
) -> ReconcileRequest<K> {
    ReconcileRequest {
        obj_ref,
        reason: ReconcileReason::RelatedObjectUpdated {
            obj_ref: Box::new(related),
        },
    }
}

/// The `K` objects `pod` names as owners (any owner reference whose
/// `apiVersion` and `kind` are `K`'s), in the pod's namespace.
pub fn pod_owners<K: Resource<DynamicType = ()>>(pod: &Pod) -> Vec<ObjectRef<K>> {
    let ns = pod.metadata.namespace.as_deref();
    pod.metadata
        .owner_references
        .iter()
        .flatten()
        .filter_map(|r| ObjectRef::from_owner_ref(ns, r, ()))
        .collect()
}

/// The `K` objects in `store` of `pod`'s namespace that `concerns` it.
pub fn concerned<K>(
    store: &Store<K>,
    pod: &Pod,
    concerns: impl Fn(&K, &Pod) -> bool,
) -> Vec<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    let ns = pod.namespace();
    store
        .state()
        .iter()
        .filter(|o| o.namespace() == ns && concerns(o, pod))
        .map(|o| ObjectRef::from_obj(o.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::Job;
    use k8s_openapi::api::policy::v1::PodDisruptionBudget;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
    use std::collections::BTreeMap;
    use tokio::sync::mpsc;

    fn job(name: &str, ns: &str) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn owner(api_version: &str, kind: &str, name: &str) -> OwnerReference {
        OwnerReference {
            api_version: api_version.into(),
            kind: kind.into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    fn pod(name: &str, ns: &str, owners: Vec<OwnerReference>, app: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                owner_references: Some(owners),
                labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn pod_owners_of_the_controlled_kind_only() {
        let p = pod(
            "p",
            "ns",
            vec![
                owner("batch/v1", "Job", "a"),
                owner("apps/v1", "ReplicaSet", "rs"),
                owner("batch/v2", "Job", "other-version"),
            ],
            "x",
        );
        let jobs: Vec<ObjectRef<Job>> = pod_owners(&p);
        assert_eq!(jobs, [ObjectRef::new("a").within("ns")]);
        assert!(pod_owners::<Job>(&pod("q", "ns", vec![], "x")).is_empty());
    }

    #[tokio::test]
    async fn concerned_objects_are_in_the_pods_namespace() {
        let (store, mut writer) = reflector::store::<PodDisruptionBudget>();
        let pdb = |name: &str, ns: &str| PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            ..Default::default()
        };
        for p in [pdb("web", "ns"), pdb("db", "ns"), pdb("web", "other")] {
            writer.apply_watcher_event(&watcher::Event::Apply(p));
        }
        let p = pod("p", "ns", vec![], "web");
        let refs = concerned(&store, &p, |b: &PodDisruptionBudget, p| {
            p.labels().get("app") == b.metadata.name.as_ref()
        });
        assert_eq!(refs, [ObjectRef::new("web").within("ns")]);
    }

    async fn next(synced: &mut mpsc::UnboundedReceiver<String>) -> Option<String> {
        tokio::time::timeout(Duration::from_secs(5), synced.recv())
            .await
            .ok()
            .flatten()
    }

    #[tokio::test]
    async fn pod_changes_wake_their_owners_and_objects_their_own_events() {
        let (events_tx, events_rx) = mpsc::unbounded_channel::<watcher::Event<Job>>();
        let (pods_tx, pods_rx) = mpsc::unbounded_channel::<Arc<Pod>>();
        let events = futures::stream::unfold(events_rx, |mut rx| async move {
            rx.recv().await.map(|e| (Ok(e), rx))
        });
        let pods =
            futures::stream::unfold(
                pods_rx,
                |mut rx| async move { rx.recv().await.map(|p| (p, rx)) },
            );
        let controller = TriggeredController::from_events(events).owns_pods(pods);
        let (synced_tx, mut synced) = mpsc::unbounded_channel::<String>();
        let reconcile = move |j: Arc<Job>, tx: Arc<mpsc::UnboundedSender<String>>| async move {
            let _ = tx.send(j.name_any());
            Ok::<_, std::io::Error>(Action::await_change())
        };
        let task = tokio::spawn(controller.run(
            "test controller",
            reconcile,
            Arc::new(synced_tx),
            Duration::from_secs(1),
        ));

        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(job("a", "ns")),
            watcher::Event::InitApply(job("b", "ns")),
            watcher::Event::InitDone,
        ] {
            assert!(events_tx.send(e).is_ok());
        }
        let mut first = vec![next(&mut synced).await, next(&mut synced).await];
        first.sort();
        assert_eq!(first, [Some("a".to_string()), Some("b".to_string())]);

        // A pod of `b` wakes `b` only; a pod of a ReplicaSet wakes nothing.
        let rs_pod = pod("r", "ns", vec![owner("apps/v1", "ReplicaSet", "b")], "x");
        assert!(pods_tx.send(Arc::new(rs_pod)).is_ok());
        let b_pod = pod("p", "ns", vec![owner("batch/v1", "Job", "b")], "x");
        assert!(pods_tx.send(Arc::new(b_pod)).is_ok());
        assert_eq!(next(&mut synced).await.as_deref(), Some("b"));

        // A pod whose Job is not (yet) watched is skipped, not synced.
        let orphan = pod("o", "ns", vec![owner("batch/v1", "Job", "zzz")], "x");
        assert!(pods_tx.send(Arc::new(orphan)).is_ok());
        // The controlled objects' own changes still reconcile them.
        assert!(events_tx
            .send(watcher::Event::Apply(job("a", "ns")))
            .is_ok());
        assert_eq!(next(&mut synced).await.as_deref(), Some("a"));
        task.abort();
    }
}
