//! The StatefulSet controller: pods `<sts>-<ordinal>` with stable identity
//! (hostname, `serviceName` subdomain, identity labels, one PVC per
//! `volumeClaimTemplates` entry named `<tmpl>-<sts>-<ordinal>`), created in
//! order and each Running+Ready before the next (`OrderedReady`) or all at
//! once (`Parallel`), removed highest ordinal first, and updated through
//! ControllerRevisions with `RollingUpdate` (reverse ordinal, down to
//! `partition`) or `OnDelete`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetStatus};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimVolumeSource, Pod, PodTemplateSpec, Volume,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use crate::events::{EventType, Recorder};
use crate::podcache::{PodCache, PodChanges};
use crate::revision::{self, Owner, REVISION_HASH};
use crate::util::{self, Context, SyncError, TriggeredController};

/// Label with the pod's name.
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// Label with the pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client) {
    let (_, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, changes).await;
}

/// Run the controller until the process ends, woken by the `changes` of a
/// shared [`PodCache`] (its pods are still listed live on each sync).
pub async fn run_with_pods(client: Client, changes: PodChanges) {
    let ctx = Context::new(client.clone(), "statefulset-controller");
    TriggeredController::new(Api::<StatefulSet>::all(client))
        .owns_pods(changes)
        .run("statefulset controller", reconcile, ctx, util::RETRY)
        .await;
}

/// The ordinal of a pod named `<sts>-<n>`.
pub fn ordinal_of(sts: &str, pod: &str) -> Option<i32> {
    pod.strip_prefix(sts)?.strip_prefix('-')?.parse().ok()
}

fn running_and_ready(p: &Pod) -> bool {
    util::pod_phase(p) == "Running"
        && util::pod_is_ready(p)
        && p.metadata.deletion_timestamp.is_none()
}

fn revision_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .map(String::as_str)
}

/// The PVC name for a claim template and ordinal.
pub fn claim_name(tmpl: &str, sts: &str, ordinal: i32) -> String {
    format!("{tmpl}-{sts}-{ordinal}")
}

/// The pod for `ordinal` from `template` at revision `rev`.
pub fn pod_for(sts: &StatefulSet, template: &PodTemplateSpec, rev: &str, ordinal: i32) -> Pod {
    let set = sts.name_any();
    let name = format!("{set}-{ordinal}");
    let tmeta = template.metadata.clone().unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), rev.into());
    labels.insert(POD_NAME_LABEL.into(), name.clone());
    labels.insert(POD_INDEX_LABEL.into(), ordinal.to_string());
    let mut spec = template.spec.clone().unwrap_or_default();
    spec.hostname = Some(name.clone());
    let sspec = sts.spec.as_ref();
    if let Some(svc) = sspec
        .and_then(|s| s.service_name.clone())
        .filter(|s| !s.is_empty())
    {
        spec.subdomain = Some(svc);
    }
    for t in sspec
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let tname = t.name_any();
        let vols = spec.volumes.get_or_insert_with(Vec::new);
        vols.retain(|v| v.name != tname);
        vols.push(Volume {
            name: tname.clone(),
            persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                claim_name: claim_name(&tname, &set, ordinal),
                read_only: None,
            }),
            ..Default::default()
        });
    }
    Pod {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: sts.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![util::owner_ref(
                "apps/v1",
                "StatefulSet",
                &sts.metadata,
            )]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

async fn ensure_claims(
    client: &Client,
    sts: &StatefulSet,
    ordinal: i32,
) -> Result<(), kube::Error> {
    let ns = sts.namespace().unwrap_or_default();
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), &ns);
    let sel_labels = sts
        .spec
        .as_ref()
        .and_then(|s| s.selector.match_labels.clone());
    for t in sts
        .spec
        .as_ref()
        .and_then(|s| s.volume_claim_templates.as_ref())
        .into_iter()
        .flatten()
    {
        let name = claim_name(&t.name_any(), &sts.name_any(), ordinal);
        let mut labels = t.metadata.labels.clone().unwrap_or_default();
        labels.extend(sel_labels.clone().unwrap_or_default());
        let pvc = PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(ns.clone()),
                labels: Some(labels),
                annotations: t.metadata.annotations.clone(),
                ..Default::default()
            },
            spec: t.spec.clone(),
            status: None,
        };
        match api.create(&PostParams::default(), &pvc).await {
            Ok(_) => {}
            Err(e) if util::is_status(&e, 409) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

async fn delete_pod(ctx: &Context, sts: &StatefulSet, pod: &Pod) -> Result<(), kube::Error> {
    let api: Api<Pod> = Api::namespaced(ctx.client.clone(), &sts.namespace().unwrap_or_default());
    if util::delete_same(&api, pod, DeleteParams::default()).await? {
        let msg = format!(
            "delete Pod {} in StatefulSet {} successful",
            pod.name_any(),
            sts.name_any()
        );
        ctx.recorder
            .publish(
                &Recorder::reference(sts),
                EventType::Normal,
                "SuccessfulDelete",
                &msg,
            )
            .await;
    }
    Ok(())
}

async fn reconcile(sts: Arc<StatefulSet>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let ns = sts.namespace().unwrap_or_default();
    let name = sts.name_any();
    let Some(sts) = util::get_live(&ctx.client, sts.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let uid = sts.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = sts.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if sts.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&util::match_labels_query(Some(&spec.selector)));
    let pods = util::list_controlled(&pod_api, &lp, &uid).await?;

    // Revisions.
    let owner = Owner {
        kind: "StatefulSet",
        meta: &sts.metadata,
        selector: Some(&spec.selector),
    };
    let status_old = sts.status.clone().unwrap_or_default();
    let (revs, ui) = revision::sync(
        &ctx.client,
        &owner,
        &spec.template,
        status_old.collision_count,
    )
    .await?;
    let update_rev = revs[ui].name_any();
    let current_rev = status_old
        .current_revision
        .clone()
        .filter(|c| revs.iter().any(|r| r.name_any() == *c))
        .unwrap_or_else(|| update_rev.clone());
    let current_tmpl = revs
        .iter()
        .find(|r| r.name_any() == current_rev)
        .and_then(revision::template_of)
        .unwrap_or_else(|| spec.template.clone());

    let replicas = spec.replicas.unwrap_or(1).max(0);
    let start = spec.ordinals.as_ref().and_then(|o| o.start).unwrap_or(0);
    let parallel = spec.pod_management_policy.as_deref() == Some("Parallel");
    let strategy = spec.update_strategy.as_ref();
    let rolling = strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate";
    let partition = strategy
        .and_then(|s| s.rolling_update.as_ref())
        .and_then(|r| r.partition)
        .unwrap_or(0);

    let mut by_ord: BTreeMap<i32, &Pod> = BTreeMap::new();
    for p in &pods {
        if let Some(o) = ordinal_of(&name, &p.name_any()) {
            by_ord.insert(o, p);
        }
    }
    let in_range = |o: i32| o >= start && o < start + replicas;
    let mut blocked = false;
    let mut requeue = false;
    // Create / replace pods in ordinal order.
    for o in start..start + replicas {
        if blocked && !parallel {
            break;
        }
        match by_ord.get(&o) {
            None => {
                let use_current = rolling
                    && current_rev != update_rev
                    && (o - start < partition
                        || (partition == 0
                            && o - start < status_old.current_replicas.unwrap_or(0)));
                let (tmpl, rev) = if use_current {
                    (&current_tmpl, &current_rev)
                } else {
                    (&spec.template, &update_rev)
                };
                ensure_claims(&ctx.client, &sts, o).await?;
                match pod_api
                    .create(&PostParams::default(), &pod_for(&sts, tmpl, rev, o))
                    .await
                {
                    Ok(p) => {
                        let msg = format!(
                            "create Pod {} in StatefulSet {name} successful",
                            p.name_any()
                        );
                        ctx.recorder
                            .publish(
                                &Recorder::reference(sts.as_ref()),
                                EventType::Normal,
                                "SuccessfulCreate",
                                &msg,
                            )
                            .await;
                    }
                    Err(e) if util::is_status(&e, 409) => {}
                    Err(e) => {
                        let msg = format!(
                            "create Pod {name}-{o} in StatefulSet {name} failed error: {}",
                            util::error_message(&e)
                        );
                        ctx.recorder
                            .publish(
                                &Recorder::reference(sts.as_ref()),
                                EventType::Warning,
                                "FailedCreate",
                                &msg,
                            )
                            .await;
                        return Err(e.into());
                    }
                }
                blocked = true;
            }
            Some(p)
                if matches!(util::pod_phase(p), "Failed" | "Succeeded")
                    && p.metadata.deletion_timestamp.is_none() =>
            {
                delete_pod(&ctx, &sts, p).await?;
                blocked = true;
                requeue = true;
            }
            Some(p) if !running_and_ready(p) => blocked = true,
            Some(_) => {}
        }
    }
    // Scale down: highest ordinal first; OrderedReady one at a time once the rest is healthy.
    let condemned: Vec<&Pod> = by_ord
        .iter()
        .rev()
        .filter(|(o, _)| !in_range(**o))
        .map(|(_, p)| *p)
        .collect();
    for p in &condemned {
        if p.metadata.deletion_timestamp.is_some() {
            if !parallel {
                blocked = true;
                break;
            }
            continue;
        }
        if blocked && !parallel {
            break;
        }
        delete_pod(&ctx, &sts, p).await?;
        if !parallel {
            blocked = true;
            break;
        }
    }
    // Rolling update: reverse ordinal down to the partition, one unavailable at a time.
    if rolling && !blocked && condemned.is_empty() {
        for o in (start + partition.max(0)..start + replicas).rev() {
            let Some(p) = by_ord.get(&o) else { break };
            if revision_of(p) != Some(update_rev.as_str()) {
                let all_ready = (start..start + replicas)
                    .all(|i| by_ord.get(&i).is_some_and(|p| running_and_ready(p)));
                if all_ready {
                    delete_pod(&ctx, &sts, p).await?;
                }
                break;
            }
            if !running_and_ready(p) {
                break;
            }
        }
    }

    // Status.
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let live: Vec<&Pod> = pods.iter().filter(|p| util::pod_is_active(p)).collect();
    let count =
        |f: &dyn Fn(&Pod) -> bool| i32::try_from(live.iter().filter(|p| f(p)).count()).unwrap_or(0);
    let ready = count(&|p| util::pod_is_ready(p));
    let available = count(&|p| util::pod_available_in(p, min_ready, now) == Some(0));
    let updated = count(&|p| revision_of(p) == Some(update_rev.as_str()));
    let mut current = count(&|p| revision_of(p) == Some(current_rev.as_str()));
    let mut cur_rev = current_rev.clone();
    let total = i32::try_from(live.len()).unwrap_or(0);
    if updated == replicas && ready == replicas && total == replicas {
        cur_rev = update_rev.clone();
        current = updated;
    }
    if live
        .iter()
        .any(|p| util::pod_available_in(p, min_ready, now).is_some_and(|s| s > 0))
    {
        requeue = true;
    }
    let status = StatefulSetStatus {
        observed_generation: sts.metadata.generation,
        replicas: total,
        ready_replicas: Some(ready),
        available_replicas: Some(available),
        current_replicas: Some(current),
        updated_replicas: Some(updated),
        current_revision: Some(cur_rev.clone()),
        update_revision: Some(update_rev.clone()),
        collision_count: Some(status_old.collision_count.unwrap_or(0)),
        conditions: status_old.conditions.clone(),
    };
    revision::prune(
        &ctx.client,
        &revs,
        &[cur_rev, update_rev],
        usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10),
    )
    .await?;
    if sts.status.as_ref() != Some(&status) {
        let api: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
        if !util::patch_status(&api, &name, &status).await? {
            return Ok(Action::await_change());
        }
    }
    Ok(if requeue {
        Action::requeue(Duration::from_secs(1))
    } else {
        Action::requeue(Duration::from_secs(30))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::StatefulSetSpec;

    #[test]
    fn ordinals() {
        assert_eq!(ordinal_of("web", "web-0"), Some(0));
        assert_eq!(ordinal_of("web", "web-12"), Some(12));
        assert_eq!(ordinal_of("web", "web-x"), None);
        assert_eq!(ordinal_of("web", "webx-1"), None);
        assert_eq!(ordinal_of("web", "web-db-1"), None);
    }

    #[test]
    fn pods_have_identity_and_claims() {
        let sts = StatefulSet {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                ..Default::default()
            },
            spec: Some(StatefulSetSpec {
                service_name: Some("db-hl".into()),
                volume_claim_templates: Some(vec![PersistentVolumeClaim {
                    metadata: ObjectMeta {
                        name: Some("data".into()),
                        ..Default::default()
                    },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        };
        let t = PodTemplateSpec::default();
        let p = pod_for(&sts, &t, "db-abc", 2);
        assert_eq!(p.metadata.name.as_deref(), Some("db-2"));
        let l = p.metadata.labels.clone().unwrap();
        assert_eq!(l[POD_NAME_LABEL], "db-2");
        assert_eq!(l[POD_INDEX_LABEL], "2");
        assert_eq!(l[REVISION_HASH], "db-abc");
        let s = p.spec.unwrap();
        assert_eq!(s.hostname.as_deref(), Some("db-2"));
        assert_eq!(s.subdomain.as_deref(), Some("db-hl"));
        let v = &s.volumes.unwrap()[0];
        assert_eq!(
            v.persistent_volume_claim.as_ref().unwrap().claim_name,
            "data-db-2"
        );
    }
}
