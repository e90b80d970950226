//! The scaffolding every kube-runtime controller here shares: the error of a
//! sync, the context most reconcilers take, the error policy (log, requeue)
//! and running a controller to its end.

use std::fmt::{Debug, Display};
use std::future::Future;
use std::hash::Hash;
use std::sync::Arc;
use std::time::Duration;

use kube::runtime::controller::{applier, Action, Config, Controller, ReconcileRequest};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;

use super::DrainLogged;
use crate::events::Recorder;

/// How long most controllers wait before retrying a failed sync.
pub const RETRY: Duration = Duration::from_secs(1);

/// Errors of one sync of a controller whose only failures are API calls.
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
}

/// What most reconcilers need: a client and an event recorder.
pub struct Context {
    /// The API client.
    pub client: Client,
    /// Records Events as the controller's component.
    pub recorder: Recorder,
}

impl Context {
    /// A context whose events come from `component` (e.g. `job-controller`).
    pub fn new(client: Client, component: &str) -> Arc<Self> {
        Arc::new(Context {
            recorder: Recorder::new(client.clone(), component),
            client,
        })
    }
}

/// An error policy that warns `"<controller>: sync failed"` and retries the
/// object after `after`.
pub fn requeue_on_error<K, E, C>(
    controller: &'static str,
    after: Duration,
) -> impl Fn(Arc<K>, &E, Arc<C>) -> Action
where
    E: Display,
{
    move |_obj: Arc<K>, e: &E, _ctx: Arc<C>| {
        tracing::warn!(error = %e, "{controller}: sync failed");
        Action::requeue(after)
    }
}

/// A controller of the `P` objects that is also woken by changes to the `C`
/// objects they control (all namespaces, default watch settings).
pub fn owning<P, C>(client: &Client) -> Controller<P>
where
    P: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    C: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + 'static,
{
    Controller::new(Api::<P>::all(client.clone()), watcher::Config::default())
        .owns(Api::<C>::all(client.clone()), watcher::Config::default())
}

/// Run `controller` until its streams end, syncing objects with `reconcile`:
/// a failed sync is warned about and retried after `retry`
/// ([`requeue_on_error`]); `name` (e.g. `"job controller"`) labels the logs.
pub async fn run_controller<K, C, Fut, E>(
    name: &'static str,
    controller: Controller<K>,
    reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
    retry: Duration,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug + Unpin,
    Fut: Future<Output = Result<Action, E>> + Send + 'static,
    E: std::error::Error + Send + 'static,
{
    controller
        .run(reconcile, requeue_on_error(name, retry), ctx)
        .drain_logged(name)
        .await;
}

/// Like [`run_controller`] for a controller fed by its own `queue` of objects
/// to sync (looked up in `store`), retrying failed syncs after `retry`.
pub async fn run_applier<K, C, Q, Fut, E>(
    name: &'static str,
    store: Store<K>,
    queue: Q,
    mut reconcile: impl FnMut(Arc<K>, Arc<C>) -> Fut,
    ctx: Arc<C>,
    retry: Duration,
) where
    K: Resource + Clone + 'static,
    K::DynamicType: Eq + Hash + Clone + Debug + Unpin,
    Q: futures::TryStream,
    Q::Ok: Into<ReconcileRequest<K>>,
    Q::Error: std::error::Error + 'static,
    Fut: Future<Output = Result<Action, E>>,
    E: std::error::Error + 'static,
{
    applier(
        move |obj, ctx| Box::pin(reconcile(obj, ctx)),
        requeue_on_error(name, retry),
        ctx,
        store,
        queue,
        Config::default(),
    )
    .drain_logged(name)
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Pod;

    #[test]
    fn error_policy_requeues_after_the_given_delay() {
        let policy = requeue_on_error::<Pod, SyncError, ()>("test controller", RETRY);
        let err = SyncError::from(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert_eq!(
            policy(Arc::new(Pod::default()), &err, Arc::new(())),
            Action::requeue(Duration::from_secs(1))
        );
        let slow = requeue_on_error::<Pod, String, ()>("slow", Duration::from_secs(2));
        assert_eq!(
            slow(Arc::new(Pod::default()), &"boom".to_string(), Arc::new(())),
            Action::requeue(Duration::from_secs(2))
        );
    }

    #[test]
    fn sync_error_names_the_api_failure() {
        let err = SyncError::from(kube::Error::LinesCodecMaxLineLengthExceeded);
        assert!(err.to_string().starts_with("api: "), "{err}");
    }
}
