//! navarch-controllers: controllers that reconcile desired state.
//!
//! Each controller is a client of the API server (through `kube`, over HTTPS, like
//! any other client): a watch-fed cache, a work queue, and a level-triggered
//! reconcile that is retried on error.
//!
//! - [`namespace`]: empties a namespace being deleted, then releases its finalizer.
//! - [`replicaset`]: keeps `spec.replicas` pods per ReplicaSet.
//! - [`deployment`]: rolls Deployments out through ReplicaSets.
//! - [`gc`]: deletes or orphans dependents through `ownerReferences`.
//! - [`serviceaccount`]: a `default` ServiceAccount in every namespace.
//! - [`endpoints`]: Endpoints/EndpointSlices from ready pods; LoadBalancer status.
//! - [`nodeipam`]: a podCIDR for every Node.
//! - [`job`], [`cronjob`]: batch Jobs and their schedules ([`cronschedule`]).
//! - [`statefulset`], [`daemonset`]: ordinal and per-node workloads.
//! - [`nodelifecycle`]: marks silent nodes Unknown, taints them, evicts pods.
//! - [`disruption`]: PodDisruptionBudget status.
//! - [`podgc`]: deletes terminated pods beyond a threshold and orphaned pods.
//! - [`resourcequota`]: ResourceQuota `status.hard` and `status.used`.
//!
//! Every controller that looks at pods shares one pod watch and cache
//! ([`podcache`]): one decode per pod event, whatever the number of
//! controllers. Those woken by pod changes but run by kube-runtime use
//! [`util::TriggeredController`] to take them from the cache.

pub mod cronjob;
pub mod cronschedule;
pub mod daemonset;
pub mod deployment;
pub mod disruption;
pub mod endpoints;
pub mod events;
pub mod gc;
pub mod job;
pub mod namespace;
pub mod nodeipam;
pub mod nodelifecycle;
pub mod podcache;
pub mod podgc;
pub mod replicaset;
pub mod resourcequota;
pub mod revision;
pub mod serviceaccount;
pub mod statefulset;
pub mod util;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
}

/// A client for controllers from a kubeconfig file.
pub async fn client_from_kubeconfig(path: &Path) -> Result<kube::Client, Error> {
    let kc = kube::config::Kubeconfig::read_from(path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(kube::Client::try_from(cfg)?)
}

/// Start every controller; they run until the process ends. All of them
/// share one pod watch ([`podcache::PodCache`]).
pub fn spawn_all(client: kube::Client) {
    let cfg = ControllersConfig::default();
    // Subscribed before the cache runs: nobody misses the initial list.
    let mut pods = podcache::PodCache::new();
    let store = pods.store();
    tokio::spawn(namespace::run(client.clone()));
    tokio::spawn(replicaset::run_with_pods(
        client.clone(),
        store.clone(),
        pods.subscribe(),
    ));
    tokio::spawn(deployment::run(client.clone()));
    tokio::spawn(gc::run_with_pods(client.clone(), pods.subscribe_events()));
    tokio::spawn(serviceaccount::run(client.clone()));
    tokio::spawn(endpoints::run_with_pods(
        client.clone(),
        store.clone(),
        pods.subscribe(),
    ));
    tokio::spawn(nodeipam::run(client.clone()));
    tokio::spawn(resourcequota::run_with_pods(
        client.clone(),
        store.clone(),
        pods.subscribe(),
    ));
    tokio::spawn(podgc::run_with_pods(
        client.clone(),
        podgc::PodGcConfig::default(),
        store.clone(),
    ));
    spawn_batch_and_sets_with_pods(client.clone(), &cfg, &mut pods);
    tokio::spawn(pods.run(client));
}

/// Settings of the controllers that have any (everything else is fixed).
#[derive(Debug, Clone, Default)]
pub struct ControllersConfig {
    /// Job controller settings.
    pub job: job::JobConfig,
    /// Node lifecycle controller settings.
    pub node_lifecycle: nodelifecycle::NodeLifecycleConfig,
}

/// Start the Job, CronJob, StatefulSet, DaemonSet, node lifecycle and
/// PodDisruptionBudget controllers with `cfg`, sharing one pod watch of their
/// own (`spawn_all` shares its one with every other controller too).
pub fn spawn_batch_and_sets(client: kube::Client, cfg: &ControllersConfig) {
    let mut pods = podcache::PodCache::new();
    spawn_batch_and_sets_with_pods(client.clone(), cfg, &mut pods);
    tokio::spawn(pods.run(client));
}

/// The controllers of [`spawn_batch_and_sets`], on `pods` (not running yet).
fn spawn_batch_and_sets_with_pods(
    client: kube::Client,
    cfg: &ControllersConfig,
    pods: &mut podcache::PodCache,
) {
    let store = pods.store();
    tokio::spawn(nodelifecycle::run_with_pods(
        client.clone(),
        cfg.node_lifecycle.clone(),
        store.clone(),
    ));
    tokio::spawn(job::run_with_pods(
        client.clone(),
        cfg.job.clone(),
        pods.subscribe(),
    ));
    tokio::spawn(cronjob::run(client.clone()));
    tokio::spawn(statefulset::run_with_pods(client.clone(), pods.subscribe()));
    tokio::spawn(daemonset::run_with_pods(client.clone(), pods.subscribe()));
    tokio::spawn(disruption::run_with_pods(client, store, pods.subscribe()));
}
