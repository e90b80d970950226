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

pub mod deployment;
pub mod events;
pub mod gc;
pub mod namespace;
pub mod replicaset;
pub mod serviceaccount;
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

/// Start every controller; they run until the process ends.
pub fn spawn_all(client: kube::Client) {
    tokio::spawn(namespace::run(client.clone()));
    tokio::spawn(replicaset::run(client.clone()));
    tokio::spawn(deployment::run(client.clone()));
    tokio::spawn(gc::run(client.clone()));
    tokio::spawn(serviceaccount::run(client.clone()));
}
