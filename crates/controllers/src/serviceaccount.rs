//! The ServiceAccount controller: every active namespace has a `default`
//! ServiceAccount; it is recreated when deleted.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};

use crate::util;

/// Name of the ServiceAccount every namespace gets.
pub const DEFAULT_SA: &str = "default";

/// Run the controller until the process ends.
pub async fn run(client: Client) {
    let nss: Api<Namespace> = Api::all(client.clone());
    let sas: Api<ServiceAccount> = Api::all(client.clone());
    let controller = Controller::new(nss, watcher::Config::default()).watches(
        sas,
        watcher::Config::default().fields(&format!("metadata.name={DEFAULT_SA}")),
        |sa| sa.namespace().map(|ns| ObjectRef::<Namespace>::new(&ns)),
    );
    let retry = Duration::from_secs(2);
    util::run_controller(
        "serviceaccount controller",
        controller,
        reconcile,
        Arc::new(client),
        retry,
    )
    .await;
}

/// The ServiceAccount to create in `namespace`.
pub fn default_service_account(namespace: &str) -> ServiceAccount {
    ServiceAccount {
        metadata: ObjectMeta {
            name: Some(DEFAULT_SA.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        ..Default::default()
    }
}

async fn reconcile(ns: Arc<Namespace>, client: Arc<Client>) -> Result<Action, kube::Error> {
    let terminating = ns.metadata.deletion_timestamp.is_some()
        || ns.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Terminating");
    if terminating {
        return Ok(Action::await_change());
    }
    let name = ns.name_any();
    let api: Api<ServiceAccount> = Api::namespaced((*client).clone(), &name);
    if api.get_opt(DEFAULT_SA).await?.is_some() {
        return Ok(Action::await_change());
    }
    match api
        .create(&PostParams::default(), &default_service_account(&name))
        .await
    {
        Ok(_) => Ok(Action::await_change()),
        // Already there, or the namespace started terminating meanwhile.
        Err(e)
            if util::is_status(&e, 409) || util::is_status(&e, 403) || util::is_status(&e, 404) =>
        {
            Ok(Action::await_change())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_sa_shape() {
        let sa = default_service_account("team-a");
        assert_eq!(sa.metadata.name.as_deref(), Some("default"));
        assert_eq!(sa.metadata.namespace.as_deref(), Some("team-a"));
    }
}
