//! The namespace controller: when a namespace is being deleted, delete every
//! namespaced object in it, then remove the `kubernetes` finalizer from
//! `spec.finalizers` (through `namespaces/<name>/finalize`), which lets the API
//! server remove the namespace.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, PostParams};
use kube::discovery::{ApiResource, Scope};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::Client;

use crate::util::{self, SyncError};

/// How long a failed sync waits before it is retried.
const RETRY: Duration = Duration::from_secs(2);

struct Ctx {
    client: Client,
    resources: Vec<ApiResource>,
}

/// Run the controller until the process ends (re-discovering on failure).
pub async fn run(client: Client) {
    loop {
        match kube::Discovery::new(client.clone()).run().await {
            Ok(d) => {
                let mut resources = Vec::new();
                for group in d.groups() {
                    for (ar, caps) in group.recommended_resources() {
                        if caps.scope == Scope::Namespaced
                            && caps.supports_operation(kube::discovery::verbs::LIST)
                            && caps.supports_operation(kube::discovery::verbs::DELETE)
                        {
                            resources.push(ar);
                        }
                    }
                }
                let ctx = Arc::new(Ctx {
                    client: client.clone(),
                    resources,
                });
                let nss: Api<Namespace> = Api::all(client.clone());
                let controller = Controller::new(nss, watcher::Config::default());
                util::run_controller("namespace controller", controller, reconcile, ctx, RETRY)
                    .await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "namespace controller: discovery failed; retrying");
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

async fn reconcile(ns: Arc<Namespace>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    if ns.metadata.deletion_timestamp.is_none() {
        return Ok(Action::await_change());
    }
    let name = ns.metadata.name.clone().unwrap_or_default();
    let mut remaining = 0usize;
    for ar in &ctx.resources {
        let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &name, ar);
        let list = match api.list(&ListParams::default()).await {
            Ok(l) => l,
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 405 => continue,
            Err(e) => return Err(e.into()),
        };
        for obj in list.items {
            remaining += 1;
            let Some(n) = obj.metadata.name.as_deref() else {
                continue;
            };
            if obj.metadata.deletion_timestamp.is_some() {
                continue;
            }
            match api.delete(n, &DeleteParams::background()).await {
                Ok(_) => {}
                Err(kube::Error::Api(e)) if e.code == 404 => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    if remaining > 0 {
        // Check again soon: objects with finalizers or grace periods take time.
        return Ok(Action::requeue(Duration::from_millis(500)));
    }
    let finalizers = ns
        .spec
        .as_ref()
        .and_then(|s| s.finalizers.clone())
        .unwrap_or_default();
    if finalizers.iter().any(|f| f == "kubernetes") {
        let mut updated = (*ns).clone();
        if let Some(spec) = updated.spec.as_mut() {
            spec.finalizers = Some(
                finalizers
                    .into_iter()
                    .filter(|f| f != "kubernetes")
                    .collect(),
            );
        }
        let api: Api<Namespace> = Api::all(ctx.client.clone());
        match api
            .replace_subresource("finalize", &name, &PostParams::default(), &updated)
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                return Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Action::await_change())
}
