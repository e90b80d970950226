//! The garbage collector: follows `metadata.ownerReferences` across every
//! listable kind (found through discovery).
//!
//! - A dependent whose owners are all gone (absent, or present with another
//!   uid) is deleted in the background; dangling references next to live
//!   owners are removed.
//! - An owner being deleted with the `foregroundDeletion` finalizer has its
//!   dependents deleted first; the finalizer is removed once no dependent
//!   with `blockOwnerDeletion: true` is left.
//! - An owner being deleted with the `orphan` finalizer has the references to
//!   it removed from its dependents, then the finalizer removed.
//!
//! Every kind is watched into a cache; a scan of the caches runs after each
//! change (batched) and every few seconds. An owner missing from the caches
//! is confirmed with a live GET before anything is deleted.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::{
    Api, DeleteParams, DynamicObject, Patch, PatchParams, Preconditions, PropagationPolicy,
};
use kube::discovery::{verbs, ApiResource, Scope};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;
use tokio::sync::Notify;

use crate::util;

/// Finalizer asking for dependents to be deleted before the owner.
pub const FOREGROUND: &str = "foregroundDeletion";
/// Finalizer asking for dependents to be orphaned before the owner goes.
pub const ORPHAN: &str = "orphan";

/// How often discovery is re-run to pick up new kinds.
const REDISCOVER: Duration = Duration::from_secs(300);
/// Scan at least this often even without changes.
const RESYNC: Duration = Duration::from_secs(5);

#[derive(Clone)]
struct Kind {
    ar: ApiResource,
    namespaced: bool,
    store: Store<DynamicObject>,
}

/// Errors of one scan step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
}

/// Run the collector until the process ends.
pub async fn run(client: Client) {
    loop {
        let discovery = match kube::Discovery::new(client.clone()).run().await {
            Ok(d) => d,
            Err(e) => {
                tracing::warn!(error = %e, "garbage collector: discovery failed; retrying");
                tokio::time::sleep(Duration::from_secs(2)).await;
                continue;
            }
        };
        let notify = Arc::new(Notify::new());
        let mut kinds = Vec::new();
        let mut tasks = Vec::new();
        for group in discovery.groups() {
            for (ar, caps) in group.recommended_resources() {
                if !(caps.supports_operation(verbs::LIST)
                    && caps.supports_operation(verbs::WATCH)
                    && caps.supports_operation(verbs::DELETE)
                    && caps.supports_operation(verbs::PATCH))
                    || ar.plural == "events"
                {
                    continue;
                }
                let api: Api<DynamicObject> = Api::all_with(client.clone(), &ar);
                let writer = reflector::store::Writer::new(ar.clone());
                let store = writer.as_reader();
                let n = notify.clone();
                tasks.push(tokio::spawn(
                    reflector::reflector(writer, watcher(api, watcher::Config::default()))
                        .default_backoff()
                        .for_each(move |_| {
                            n.notify_one();
                            futures::future::ready(())
                        }),
                ));
                kinds.push(Kind {
                    ar,
                    namespaced: caps.scope == Scope::Namespaced,
                    store,
                });
            }
        }
        let gc = Collector {
            client: client.clone(),
            kinds,
        };
        let until = tokio::time::Instant::now() + REDISCOVER;
        while tokio::time::Instant::now() < until {
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(RESYNC) => {}
            }
            // Let a burst of changes land before scanning.
            tokio::time::sleep(Duration::from_millis(100)).await;
            gc.scan().await;
        }
        for t in tasks {
            t.abort();
        }
    }
}

struct Collector {
    client: Client,
    kinds: Vec<Kind>,
}

/// What became of one owner reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OwnerState {
    /// The owner exists with the referenced uid.
    Present,
    /// The owner is gone (or was replaced by another object with its name).
    Absent,
    /// The owner's kind is unknown; leave the reference alone.
    Unknown,
}

/// What to do with a dependent given the state of each of its owners.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing.
    Keep,
    /// Delete it: every owner is gone.
    Delete,
    /// Drop the references with these uids; other owners remain.
    DropRefs(Vec<String>),
}

/// Decide about a dependent from its owners' states.
pub fn verdict(owners: &[(String, OwnerState)]) -> Verdict {
    if owners.is_empty() {
        return Verdict::Keep;
    }
    let absent: Vec<String> = owners
        .iter()
        .filter(|(_, s)| *s == OwnerState::Absent)
        .map(|(u, _)| u.clone())
        .collect();
    if absent.is_empty() {
        Verdict::Keep
    } else if absent.len() == owners.len() {
        Verdict::Delete
    } else {
        Verdict::DropRefs(absent)
    }
}

impl Collector {
    fn kind_for(&self, r: &OwnerReference) -> Option<&Kind> {
        self.kinds
            .iter()
            .find(|k| k.ar.api_version == r.api_version && k.ar.kind == r.kind)
            .or_else(|| {
                // Another version of the same group and kind.
                let group = r.api_version.rsplit_once('/').map_or("", |(g, _)| g);
                self.kinds
                    .iter()
                    .find(|k| k.ar.group == group && k.ar.kind == r.kind)
            })
    }

    fn api(&self, k: &Kind, ns: Option<&str>) -> Api<DynamicObject> {
        match (k.namespaced, ns) {
            (true, Some(ns)) => Api::namespaced_with(self.client.clone(), ns, &k.ar),
            _ => Api::all_with(self.client.clone(), &k.ar),
        }
    }

    async fn owner_state(
        &self,
        r: &OwnerReference,
        dep_ns: Option<&str>,
        cached: &HashSet<String>,
    ) -> OwnerState {
        if cached.contains(&r.uid) {
            return OwnerState::Present;
        }
        let Some(k) = self.kind_for(r) else {
            return OwnerState::Unknown;
        };
        if k.namespaced && dep_ns.is_none() {
            // A cluster-scoped object cannot be owned by a namespaced one.
            return OwnerState::Unknown;
        }
        match self.api(k, dep_ns).get_opt(&r.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(r.uid.as_str()) => OwnerState::Present,
            Ok(_) => OwnerState::Absent,
            Err(e) => {
                tracing::debug!(error = %e, "garbage collector: owner lookup failed");
                OwnerState::Unknown
            }
        }
    }

    async fn scan(&self) {
        // Index everything cached.
        let mut objects: Vec<(&Kind, Arc<DynamicObject>)> = Vec::new();
        for k in &self.kinds {
            for o in k.store.state() {
                objects.push((k, o));
            }
        }
        let uids: HashSet<String> = objects
            .iter()
            .filter_map(|(_, o)| o.metadata.uid.clone())
            .collect();
        let mut dependents: HashMap<String, Vec<(&Kind, Arc<DynamicObject>)>> = HashMap::new();
        for (k, o) in &objects {
            for r in o.owner_references() {
                dependents
                    .entry(r.uid.clone())
                    .or_default()
                    .push((k, o.clone()));
            }
        }

        // Owners being deleted with a GC finalizer.
        for (k, o) in &objects {
            if o.metadata.deletion_timestamp.is_none() {
                continue;
            }
            let fins = o.finalizers();
            let uid = o.metadata.uid.clone().unwrap_or_default();
            let deps = dependents.get(&uid).map(Vec::as_slice).unwrap_or(&[]);
            if fins.iter().any(|f| f == ORPHAN) {
                if let Err(e) = self.orphan(k, o, &uid, deps).await {
                    tracing::debug!(error = %e, "garbage collector: orphaning failed");
                }
            } else if fins.iter().any(|f| f == FOREGROUND) {
                if let Err(e) = self.foreground(k, o, &uid, deps).await {
                    tracing::debug!(error = %e, "garbage collector: foreground deletion failed");
                }
            }
        }

        // Dependents whose owners are gone.
        for (k, o) in &objects {
            if o.metadata.deletion_timestamp.is_some() || o.owner_references().is_empty() {
                continue;
            }
            let ns = o.namespace();
            let mut states = Vec::new();
            for r in o.owner_references() {
                states.push((
                    r.uid.clone(),
                    self.owner_state(r, ns.as_deref(), &uids).await,
                ));
            }
            let res = match verdict(&states) {
                Verdict::Keep => Ok(()),
                Verdict::Delete => self.delete(k, o, PropagationPolicy::Background).await,
                Verdict::DropRefs(gone) => self.drop_refs(k, o, &gone).await,
            };
            if let Err(e) = res {
                tracing::debug!(error = %e, "garbage collector: collecting failed");
            }
        }
    }

    async fn delete(
        &self,
        k: &Kind,
        o: &DynamicObject,
        policy: PropagationPolicy,
    ) -> Result<(), Error> {
        let dp = DeleteParams {
            propagation_policy: Some(policy),
            preconditions: Some(Preconditions {
                uid: o.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        tracing::debug!(kind = %k.ar.kind, name = %o.name_any(), "garbage collector: deleting dependent");
        match self
            .api(k, o.namespace().as_deref())
            .delete(&o.name_any(), &dp)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_status(&e, 404) || util::is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn drop_refs(&self, k: &Kind, o: &DynamicObject, uids: &[String]) -> Result<(), Error> {
        let refs: Vec<&OwnerReference> = o
            .owner_references()
            .iter()
            .filter(|r| !uids.contains(&r.uid))
            .collect();
        let patch = json!({"metadata": {"ownerReferences": refs, "resourceVersion": o.metadata.resource_version}});
        match self
            .api(k, o.namespace().as_deref())
            .patch(
                &o.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_status(&e, 404) || util::is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn remove_finalizer(&self, k: &Kind, o: &DynamicObject, fin: &str) -> Result<(), Error> {
        let rest: Vec<&String> = o
            .finalizers()
            .iter()
            .filter(|f| f.as_str() != fin)
            .collect();
        let patch = json!({"metadata": {"finalizers": rest, "resourceVersion": o.metadata.resource_version}});
        match self
            .api(k, o.namespace().as_deref())
            .patch(
                &o.name_any(),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if util::is_status(&e, 404) || util::is_status(&e, 409) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn orphan(
        &self,
        k: &Kind,
        o: &DynamicObject,
        uid: &str,
        deps: &[(&Kind, Arc<DynamicObject>)],
    ) -> Result<(), Error> {
        for (dk, d) in deps {
            self.drop_refs(dk, d, &[uid.to_string()]).await?;
        }
        if deps.is_empty() {
            self.remove_finalizer(k, o, ORPHAN).await?;
        }
        Ok(())
    }

    async fn foreground(
        &self,
        k: &Kind,
        o: &DynamicObject,
        uid: &str,
        deps: &[(&Kind, Arc<DynamicObject>)],
    ) -> Result<(), Error> {
        let mut blocking = 0;
        for (dk, d) in deps {
            let blocks = d
                .owner_references()
                .iter()
                .any(|r| r.uid == uid && r.block_owner_deletion == Some(true));
            if blocks {
                blocking += 1;
            }
            if d.metadata.deletion_timestamp.is_none() {
                self.delete(dk, d, PropagationPolicy::Foreground).await?;
            }
        }
        if blocking == 0 {
            self.remove_finalizer(k, o, FOREGROUND).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verdicts() {
        use OwnerState::*;
        assert_eq!(verdict(&[]), Verdict::Keep);
        assert_eq!(verdict(&[("a".into(), Present)]), Verdict::Keep);
        assert_eq!(verdict(&[("a".into(), Absent)]), Verdict::Delete);
        assert_eq!(
            verdict(&[("a".into(), Absent), ("b".into(), Absent)]),
            Verdict::Delete
        );
        assert_eq!(
            verdict(&[("a".into(), Absent), ("b".into(), Present)]),
            Verdict::DropRefs(vec!["a".into()])
        );
        assert_eq!(verdict(&[("a".into(), Unknown)]), Verdict::Keep);
        assert_eq!(
            verdict(&[("a".into(), Absent), ("b".into(), Unknown)]),
            Verdict::DropRefs(vec!["a".into()])
        );
    }
}
