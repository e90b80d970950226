//! The Deployment controller: one ReplicaSet per pod template (named
//! `<deployment>-<pod-template-hash>`), rolled out with the RollingUpdate or
//! Recreate strategy, numbered with `deployment.kubernetes.io/revision`, old
//! ones pruned beyond `revisionHistoryLimit`, and a status that `kubectl
//! rollout status` can follow.
//!
//! ReplicaSets are listed from the API server on each sync (there are few per
//! namespace), so decisions never rest on a stale cache; watches only trigger
//! syncs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::{stream, TryStreamExt};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet, ReplicaSetSpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::util::{self, Context, POD_TEMPLATE_HASH};

/// Revision of a ReplicaSet (and, copied, of its Deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a re-used ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// `spec.replicas` of the Deployment when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// `spec.replicas + maxSurge` when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";

const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const DEFAULT_DEADLINE: i32 = 600;

/// Errors of one Deployment sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
    /// A ReplicaSet with the new one's name holds another template.
    #[error("hash collision for replica set {0}")]
    Collision(String),
}

/// Run the controller until the process ends.
pub async fn run(client: Client) {
    let d_api: Api<Deployment> = Api::all(client.clone());
    let rs_api: Api<ReplicaSet> = Api::all(client.clone());
    let (d_store, d_writer) = reflector::store::<Deployment>();
    let d_triggers = reflector::reflector(d_writer, watcher(d_api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .map_ok(|d| ObjectRef::from_obj(&d));
    let lookup = d_store.clone();
    let rs_triggers = watcher(rs_api, watcher::Config::default())
        .default_backoff()
        .touched_objects()
        .map_ok(move |rs| stream::iter(owners_of(&lookup, &rs).into_iter().map(Ok)))
        .try_flatten();
    let ctx = Context::new(client, "deployment-controller");
    let queue = stream::select(d_triggers, rs_triggers);
    util::run_applier(
        "deployment controller",
        d_store,
        queue,
        reconcile,
        ctx,
        util::RETRY,
    )
    .await;
}

fn owners_of(store: &Store<Deployment>, rs: &ReplicaSet) -> Vec<ObjectRef<Deployment>> {
    let ns = rs.namespace().unwrap_or_default();
    if let Some(r) = util::controller_ref(&rs.metadata) {
        if r.kind == "Deployment" {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    store
        .state()
        .iter()
        .filter(|d| d.namespace().as_deref() == Some(ns.as_str()))
        .filter(|d| {
            util::selector_matches(
                d.spec.as_ref().map(|s| &s.selector),
                rs.metadata.labels.as_ref(),
            )
        })
        .map(|d| ObjectRef::from_obj(d.as_ref()))
        .collect()
}

/// maxSurge and maxUnavailable resolved against `spec.replicas` (surge rounds
/// up, unavailable down; both zero means one unavailable), as upstream.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let Some(spec) = d.spec.as_ref() else {
        return (0, 0);
    };
    let replicas = spec.replicas.unwrap_or(1);
    let strategy = spec.strategy.as_ref();
    if strategy.and_then(|s| s.type_.as_deref()) == Some("Recreate") {
        return (0, 0);
    }
    let ru = strategy.and_then(|s| s.rolling_update.as_ref());
    let surge = util::int_or_percent(ru.and_then(|r| r.max_surge.as_ref()), "25%", replicas, true);
    let mut unavailable = util::int_or_percent(
        ru.and_then(|r| r.max_unavailable.as_ref()),
        "25%",
        replicas,
        false,
    );
    if surge == 0 && unavailable == 0 {
        unavailable = 1;
    }
    (surge.max(0), unavailable.clamp(0, replicas.max(0)))
}

fn replicas_of(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

fn rs_status(rs: &ReplicaSet) -> (i32, i32, i32) {
    rs.status.as_ref().map_or((0, 0, 0), |s| {
        (
            s.replicas,
            s.ready_replicas.unwrap_or(0),
            s.available_replicas.unwrap_or(0),
        )
    })
}

fn annotation(meta: &ObjectMeta, key: &str) -> Option<String> {
    meta.annotations.as_ref().and_then(|a| a.get(key)).cloned()
}

/// The revision number of a ReplicaSet (0 when absent).
pub fn revision_of(rs: &ReplicaSet) -> i64 {
    annotation(&rs.metadata, REVISION)
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Replicas the new ReplicaSet should have now (upstream `NewRSNewReplicas`).
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_current: i32) -> i32 {
    let replicas = replicas_of(d);
    let (surge, _) = fenceposts(d);
    if is_recreate(d) {
        return replicas;
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = replicas + surge;
    if current >= max_total {
        return new_current;
    }
    let up = (max_total - current).min(replicas - new_current).max(0);
    new_current + up
}

fn is_recreate(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        == Some("Recreate")
}

/// Compute the status from the ReplicaSets (upstream `calculateStatus`,
/// without the Progressing condition).
pub fn calculate_status(
    d: &Deployment,
    all: &[ReplicaSet],
    new_rs: Option<&ReplicaSet>,
) -> DeploymentStatus {
    let old = d.status.clone().unwrap_or_default();
    let available: i32 = all.iter().map(|r| rs_status(r).2).sum();
    let spec_total: i32 = all.iter().map(rs_replicas).sum();
    let mut s = DeploymentStatus {
        observed_generation: d.metadata.generation,
        replicas: Some(all.iter().map(|r| rs_status(r).0).sum()),
        updated_replicas: Some(new_rs.map_or(0, |r| rs_status(r).0)),
        ready_replicas: Some(all.iter().map(|r| rs_status(r).1).sum()),
        available_replicas: Some(available),
        unavailable_replicas: Some((spec_total - available).max(0)),
        collision_count: old.collision_count,
        conditions: old.conditions.clone(),
        ..Default::default()
    };
    let (_, max_unavailable) = fenceposts(d);
    let cond = if available >= replicas_of(d) - max_unavailable {
        condition(
            "Available",
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        condition(
            "Available",
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    set_condition(&mut s, cond);
    s
}

fn condition(type_: &str, status: &str, reason: &str, message: &str) -> DeploymentCondition {
    let now = util::now();
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message.into()),
        last_transition_time: Some(now.clone()),
        last_update_time: Some(now),
    }
}

fn get_condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// Set a condition; one with the same status and reason is left as is, and
/// the transition time is kept when only the reason changes.
fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    let conds = s.conditions.get_or_insert_with(Vec::new);
    if let Some(cur) = conds.iter().find(|x| x.type_ == c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    conds.retain(|x| x.type_ != c.type_);
    conds.push(c);
}

/// Is the rollout finished (upstream `DeploymentComplete`)?
pub fn is_complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas_of(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

fn made_progress(old: &DeploymentStatus, new: &DeploymentStatus) -> bool {
    let old_old = old.replicas.unwrap_or(0) - old.updated_replicas.unwrap_or(0);
    let new_old = new.replicas.unwrap_or(0) - new.updated_replicas.unwrap_or(0);
    new.updated_replicas.unwrap_or(0) > old.updated_replicas.unwrap_or(0)
        || new_old < old_old
        || new.ready_replicas.unwrap_or(0) > old.ready_replicas.unwrap_or(0)
        || new.available_replicas.unwrap_or(0) > old.available_replicas.unwrap_or(0)
}

/// Set the Progressing condition (upstream `syncRolloutStatus`); returns when
/// to check again for the deadline.
pub fn progress(
    d: &Deployment,
    s: &mut DeploymentStatus,
    new_rs: Option<&ReplicaSet>,
    now: Timestamp,
) -> Option<Duration> {
    let deadline = d
        .spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .unwrap_or(DEFAULT_DEADLINE);
    if deadline == i32::MAX {
        return None;
    }
    let old = d.status.clone().unwrap_or_default();
    let cur = get_condition(s, "Progressing").cloned();
    let done = s.replicas == s.updated_replicas
        && cur.as_ref().and_then(|c| c.reason.as_deref()) == Some("NewReplicaSetAvailable");
    if done {
        return None;
    }
    let name = new_rs.map(|r| r.name_any());
    let subject = |verb: &str| match &name {
        Some(n) => format!("ReplicaSet \"{n}\" {verb}"),
        None => format!("Deployment \"{}\" {verb}", d.name_any()),
    };
    if is_complete(d, s) {
        set_condition(
            s,
            condition(
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &subject("has successfully progressed."),
            ),
        );
        return None;
    }
    if made_progress(&old, s) {
        let mut c = condition(
            "Progressing",
            "True",
            "ReplicaSetUpdated",
            &subject("is progressing."),
        );
        if let Some(cur) = &cur {
            if cur.status == "True" {
                c.last_transition_time = cur.last_transition_time.clone();
            }
        }
        if let Some(conds) = s.conditions.as_mut() {
            conds.retain(|x| x.type_ != "Progressing");
        }
        s.conditions.get_or_insert_with(Vec::new).push(c);
        return Some(Duration::from_secs(
            u64::try_from(deadline).unwrap_or(600) + 1,
        ));
    }
    let cur = cur?;
    match cur.reason.as_deref() {
        Some("ProgressDeadlineExceeded") | Some("NewReplicaSetAvailable") => None,
        _ => {
            let from = cur
                .last_update_time
                .as_ref()
                .map_or(now.as_second(), |t| t.0.as_second());
            let left = from + i64::from(deadline) - now.as_second();
            if left < 0 {
                set_condition(
                    s,
                    condition(
                        "Progressing",
                        "False",
                        "ProgressDeadlineExceeded",
                        &subject("has timed out progressing."),
                    ),
                );
                None
            } else {
                Some(Duration::from_secs(u64::try_from(left).unwrap_or(0) + 1))
            }
        }
    }
}

struct Sync<'a> {
    ctx: &'a Context,
    d: &'a Deployment,
    rs_api: Api<ReplicaSet>,
}

impl Sync<'_> {
    /// Set a ReplicaSet's replicas (and the replica annotations). Returns whether anything changed.
    async fn scale(&self, rs: &mut ReplicaSet, to: i32) -> Result<bool, Error> {
        let from = rs_replicas(rs);
        let (surge, _) = fenceposts(self.d);
        let desired = replicas_of(self.d).to_string();
        let max = (replicas_of(self.d) + surge).to_string();
        let annotations_ok = annotation(&rs.metadata, DESIRED_REPLICAS).as_deref()
            == Some(desired.as_str())
            && annotation(&rs.metadata, MAX_REPLICAS).as_deref() == Some(max.as_str());
        if from == to && annotations_ok {
            return Ok(false);
        }
        let patch = json!({
            "metadata": {"annotations": {DESIRED_REPLICAS: desired, MAX_REPLICAS: max}},
            "spec": {"replicas": to},
        });
        *rs = self.patch_rs(rs, &patch).await?;
        if from != to {
            self.record_scaled(&rs.name_any(), from, to).await;
        }
        Ok(from != to)
    }

    /// Merge-patch one of the Deployment's ReplicaSets.
    async fn patch_rs(
        &self,
        rs: &ReplicaSet,
        patch: &serde_json::Value,
    ) -> Result<ReplicaSet, kube::Error> {
        self.rs_api
            .patch(
                &rs.name_any(),
                &PatchParams::default(),
                &Patch::Merge(patch),
            )
            .await
    }

    /// Record `ScalingReplicaSet` "Scaled up|down replica set <rs> from <from> to <to>".
    async fn record_scaled(&self, rs: &str, from: i32, to: i32) {
        let dir = if to > from { "up" } else { "down" };
        let msg = format!("Scaled {dir} replica set {rs} from {from} to {to}");
        self.ctx
            .recorder
            .publish(
                &Recorder::reference(self.d),
                EventType::Normal,
                "ScalingReplicaSet",
                &msg,
            )
            .await;
    }

    /// Annotations a new (or re-used) ReplicaSet gets from its Deployment.
    fn rs_annotations(&self, revision: i64) -> BTreeMap<String, String> {
        let mut a: BTreeMap<String, String> = self
            .d
            .metadata
            .annotations
            .clone()
            .unwrap_or_default()
            .into_iter()
            .filter(|(k, _)| {
                k != LAST_APPLIED
                    && k != REVISION
                    && k != REVISION_HISTORY
                    && k != DESIRED_REPLICAS
                    && k != MAX_REPLICAS
            })
            .collect();
        let (surge, _) = fenceposts(self.d);
        a.insert(REVISION.into(), revision.to_string());
        a.insert(DESIRED_REPLICAS.into(), replicas_of(self.d).to_string());
        a.insert(
            MAX_REPLICAS.into(),
            (replicas_of(self.d) + surge).to_string(),
        );
        a
    }

    /// Find the ReplicaSet for the current template, creating it if asked;
    /// renumbers a re-used one. Also returns a Progressing condition to set.
    async fn new_rs(
        &self,
        owned: &[ReplicaSet],
        create: bool,
    ) -> Result<(Option<ReplicaSet>, Option<DeploymentCondition>), Error> {
        let Some(spec) = self.d.spec.as_ref() else {
            return Ok((None, None));
        };
        let template = &spec.template;
        let existing = owned
            .iter()
            .filter(|rs| {
                rs.spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|t| util::templates_equal(t, template))
            })
            .min_by_key(|rs| rs.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let max_old = owned
            .iter()
            .filter(|rs| existing.is_none_or(|e| e.metadata.uid != rs.metadata.uid))
            .map(revision_of)
            .max()
            .unwrap_or(0);
        let has_progressing = self
            .d
            .status
            .as_ref()
            .is_some_and(|s| get_condition(s, "Progressing").is_some());
        if let Some(rs) = existing {
            let mut rs = rs.clone();
            let rev = revision_of(&rs);
            let wanted = if rev <= max_old { max_old + 1 } else { rev };
            let mut annotations = self.rs_annotations(wanted);
            // Scaling is done elsewhere: keep the replica annotations as they are.
            for k in [DESIRED_REPLICAS, MAX_REPLICAS] {
                match annotation(&rs.metadata, k) {
                    Some(v) => annotations.insert(k.into(), v),
                    None => annotations.remove(k),
                };
            }
            if wanted != rev && rev > 0 {
                let mut hist: Vec<String> = annotation(&rs.metadata, REVISION_HISTORY)
                    .map(|h| h.split(',').map(String::from).collect())
                    .unwrap_or_default();
                hist.push(rev.to_string());
                annotations.insert(REVISION_HISTORY.into(), hist.join(","));
            } else if let Some(h) = annotation(&rs.metadata, REVISION_HISTORY) {
                annotations.insert(REVISION_HISTORY.into(), h);
            }
            let current = rs.metadata.annotations.clone().unwrap_or_default();
            if annotations.iter().any(|(k, v)| current.get(k) != Some(v)) {
                let patch = json!({"metadata": {"annotations": annotations}});
                rs = self.patch_rs(&rs, &patch).await?;
            }
            let cond = (!has_progressing).then(|| {
                condition(
                    "Progressing",
                    "True",
                    "FoundNewReplicaSet",
                    &format!("Found new replica set \"{}\"", rs.name_any()),
                )
            });
            return Ok((Some(rs), cond));
        }
        if !create {
            return Ok((None, None));
        }
        let collision = self.d.status.as_ref().and_then(|s| s.collision_count);
        let hash = util::template_hash(template, collision);
        let name = format!("{}-{hash}", self.d.name_any());
        let mut t = template.clone();
        t.metadata
            .get_or_insert_with(Default::default)
            .labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let mut selector: LabelSelector = spec.selector.clone();
        selector
            .match_labels
            .get_or_insert_with(Default::default)
            .insert(POD_TEMPLATE_HASH.into(), hash.clone());
        let labels = t.metadata.as_ref().and_then(|m| m.labels.clone());
        let replicas = new_rs_new_replicas(self.d, owned, 0);
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.d.namespace(),
                labels,
                annotations: Some(self.rs_annotations(max_old + 1)),
                owner_references: Some(vec![util::owner_ref(
                    "apps/v1",
                    "Deployment",
                    &self.d.metadata,
                )]),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                min_ready_seconds: spec.min_ready_seconds,
                selector,
                template: Some(t),
            }),
            status: None,
        };
        match self.rs_api.create(&PostParams::default(), &rs).await {
            Ok(created) => {
                if replicas > 0 {
                    self.record_scaled(&name, 0, replicas).await;
                }
                let cond = condition(
                    "Progressing",
                    "True",
                    "NewReplicaSetCreated",
                    &format!("Created new replica set \"{name}\""),
                );
                Ok((Some(created), Some(cond)))
            }
            Err(e) if util::is_status(&e, 409) => {
                let found = self.rs_api.get(&name).await?;
                let same = found
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.as_ref())
                    .is_some_and(|ft| util::templates_equal(ft, template));
                if same
                    && util::is_controlled_by(
                        &found.metadata,
                        self.d.metadata.uid.as_deref().unwrap_or(""),
                    )
                {
                    // Our own, not yet seen: the next sync picks it up.
                    return Ok((Some(found), None));
                }
                let d_api: Api<Deployment> = Api::namespaced(
                    self.ctx.client.clone(),
                    &self.d.namespace().unwrap_or_default(),
                );
                let patch = json!({"status": {"collisionCount": collision.unwrap_or(0) + 1}});
                d_api
                    .patch_status(
                        &self.d.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await?;
                Err(Error::Collision(name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Scale when `spec.replicas` changed (upstream `scale`). Returns whether it did.
    async fn scale_event(
        &self,
        new_rs: Option<&mut ReplicaSet>,
        olds: &mut [ReplicaSet],
    ) -> Result<bool, Error> {
        let replicas = replicas_of(self.d);
        let mut all: Vec<&mut ReplicaSet> = olds.iter_mut().collect();
        let new_uid = new_rs.as_ref().and_then(|r| r.metadata.uid.clone());
        if let Some(n) = new_rs {
            all.push(n);
        }
        let active: Vec<usize> = (0..all.len())
            .filter(|&i| rs_replicas(all[i]) > 0)
            .collect();
        let target = match active.as_slice() {
            [i] => Some(*i),
            [] => {
                // Scale the newest (the new one, if present).
                (0..all.len()).max_by_key(|&i| {
                    (
                        all[i].metadata.uid == new_uid,
                        all[i].metadata.creation_timestamp.as_ref().map(|t| t.0),
                    )
                })
            }
            _ => None,
        };
        if let Some(i) = target {
            return self.scale(all[i], replicas).await;
        }
        // Several active: spread the difference proportionally.
        let (surge, _) = fenceposts(self.d);
        let allowed = replicas + surge;
        let current: i32 = all.iter().map(|r| rs_replicas(r)).sum();
        let to_add = allowed - current;
        let mut order: Vec<usize> = active.clone();
        order.sort_by_key(|&i| {
            let size = rs_replicas(all[i]);
            let t = all[i]
                .metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0);
            if to_add > 0 {
                (-i64::from(size), -t)
            } else {
                (-i64::from(size), t)
            }
        });
        let mut targets: Vec<(usize, i32)> = Vec::new();
        let mut added = 0;
        for &i in &order {
            let size = rs_replicas(all[i]);
            let annotated = annotation(&all[i].metadata, MAX_REPLICAS)
                .and_then(|v| v.parse::<i32>().ok())
                .unwrap_or_else(|| {
                    self.d
                        .status
                        .as_ref()
                        .and_then(|s| s.replicas)
                        .unwrap_or(size)
                });
            let fraction = if replicas == 0 {
                -size
            } else if annotated > 0 {
                let f = f64::from(size) * f64::from(allowed) / f64::from(annotated);
                (f.round() as i32) - size
            } else {
                0
            };
            let left = to_add - added;
            let p = if to_add > 0 {
                fraction.min(left).max(0)
            } else {
                fraction.max(left).min(0)
            };
            added += p;
            targets.push((i, size + p));
        }
        if let Some(first) = targets.first_mut() {
            first.1 = (first.1 + to_add - added).max(0);
        }
        let mut changed = false;
        for (i, to) in targets {
            changed |= self.scale(all[i], to).await?;
        }
        Ok(changed)
    }
}

fn is_scaling_event(d: &Deployment, all: &[&ReplicaSet]) -> bool {
    let want = replicas_of(d).to_string();
    all.iter()
        .filter(|rs| rs_replicas(rs) > 0)
        .any(|rs| annotation(&rs.metadata, DESIRED_REPLICAS).is_some_and(|v| v != want))
}

async fn reconcile(d: Arc<Deployment>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = d.namespace().unwrap_or_default();
    let name = d.name_any();
    let uid = d.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = d.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
    let d_api: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let s = Sync {
        ctx: &ctx,
        d: &d,
        rs_api: rs_api.clone(),
    };
    if util::selector_is_empty(Some(&spec.selector)) {
        let msg = "This deployment is selecting all pods. A non-empty selector is required.";
        ctx.recorder
            .publish(
                &Recorder::reference(d.as_ref()),
                EventType::Warning,
                "SelectingAll",
                msg,
            )
            .await;
        return Ok(Action::await_change());
    }

    // Claim ReplicaSets: ours that still match, plus matching orphans.
    let deleting = d.metadata.deletion_timestamp.is_some();
    let mut owned: Vec<ReplicaSet> = Vec::new();
    for rs in rs_api.list(&ListParams::default()).await?.items {
        let matches = util::selector_matches(Some(&spec.selector), rs.metadata.labels.as_ref());
        match util::controller_ref(&rs.metadata) {
            Some(r) if r.uid == uid => {
                if matches || rs.metadata.deletion_timestamp.is_some() {
                    owned.push(rs);
                } else {
                    let refs: Vec<_> = rs
                        .owner_references()
                        .iter()
                        .filter(|r| r.uid != uid)
                        .cloned()
                        .collect();
                    util::set_owner_refs(&rs_api, &rs, &refs).await?;
                }
            }
            None if matches && !deleting && rs.metadata.deletion_timestamp.is_none() => {
                let mut refs = rs.owner_references().to_vec();
                refs.push(util::owner_ref("apps/v1", "Deployment", &d.metadata));
                if let Some(adopted) = util::set_owner_refs(&rs_api, &rs, &refs).await? {
                    owned.push(adopted);
                }
            }
            _ => {}
        }
    }

    let paused = spec.paused.unwrap_or(false);
    let mut requeue: Option<Duration> = None;
    let mut extra_cond: Option<DeploymentCondition> = None;
    let (mut new_rs, mut olds) = if deleting {
        (None, owned.clone())
    } else {
        let create = !paused && !is_scaling_event(&d, &owned.iter().collect::<Vec<_>>());
        let (n, c) = s.new_rs(&owned, create).await?;
        extra_cond = c;
        let new_uid = n.as_ref().and_then(|r| r.metadata.uid.clone());
        let olds: Vec<ReplicaSet> = owned
            .into_iter()
            .filter(|r| r.metadata.uid != new_uid || new_uid.is_none())
            .collect();
        (n, olds)
    };
    olds.sort_by_key(|r| r.metadata.creation_timestamp.as_ref().map(|t| t.0));

    if !deleting {
        let mut all_refs: Vec<&ReplicaSet> = olds.iter().collect();
        if let Some(n) = new_rs.as_ref() {
            all_refs.push(n);
        }
        let scaling = is_scaling_event(&d, &all_refs);
        if scaling || paused {
            s.scale_event(new_rs.as_mut(), &mut olds).await?;
        } else if is_recreate(&d) {
            rollout_recreate(&s, &mut new_rs, &mut olds).await?;
        } else {
            rollout_rolling(&s, &mut new_rs, &mut olds).await?;
        }
    }

    // Revision annotation on the Deployment.
    if let Some(n) = new_rs.as_ref() {
        let rev = revision_of(n).to_string();
        if annotation(&d.metadata, REVISION).as_deref() != Some(rev.as_str()) {
            let patch = json!({"metadata": {"annotations": {REVISION: rev}}});
            d_api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
    }

    let mut all: Vec<ReplicaSet> = olds.clone();
    if let Some(n) = new_rs.clone() {
        all.push(n);
    }
    let mut status = calculate_status(&d, &all, new_rs.as_ref());
    if let Some(c) = extra_cond {
        set_condition(&mut status, c);
    }
    let cur_reason = status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "Progressing")
        .and_then(|c| c.reason.clone());
    if paused {
        if cur_reason.as_deref() != Some("DeploymentPaused") {
            let mut c = condition(
                "Progressing",
                "Unknown",
                "DeploymentPaused",
                "Deployment is paused",
            );
            c.last_transition_time = Some(util::now());
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .retain(|x| x.type_ != "Progressing");
            status.conditions.get_or_insert_with(Vec::new).push(c);
        }
    } else {
        if cur_reason.as_deref() == Some("DeploymentPaused") {
            let c = condition(
                "Progressing",
                "Unknown",
                "DeploymentResumed",
                "Deployment is resumed",
            );
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .retain(|x| x.type_ != "Progressing");
            status.conditions.get_or_insert_with(Vec::new).push(c);
        }
        requeue = progress(&d, &mut status, new_rs.as_ref(), Timestamp::now());
    }

    // Prune old revisions once the rollout is done.
    if !deleting && !paused && is_complete(&d, &status) {
        cleanup(&rs_api, &olds, spec.revision_history_limit.unwrap_or(10)).await?;
    }

    if d.status.as_ref() != Some(&status) && !util::patch_status(&d_api, &name, &status).await? {
        return Ok(Action::await_change());
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

async fn rollout_rolling(
    s: &Sync<'_>,
    new_rs: &mut Option<ReplicaSet>,
    olds: &mut [ReplicaSet],
) -> Result<(), Error> {
    let Some(new) = new_rs.as_mut() else {
        return Ok(());
    };
    let replicas = replicas_of(s.d);
    let all: Vec<ReplicaSet> = olds
        .iter()
        .cloned()
        .chain(std::iter::once(new.clone()))
        .collect();
    // Scale up the new ReplicaSet.
    let cur = rs_replicas(new);
    let target = if cur > replicas {
        replicas
    } else {
        new_rs_new_replicas(s.d, &all, cur)
    };
    if s.scale(new, target).await? {
        return Ok(());
    }
    // Scale down old ones, keeping minimum availability.
    let old_count: i32 = olds.iter().map(rs_replicas).sum();
    if old_count == 0 {
        return Ok(());
    }
    let (_, max_unavailable) = fenceposts(s.d);
    let min_available = replicas - max_unavailable;
    let all_count: i32 = olds.iter().map(rs_replicas).sum::<i32>() + rs_replicas(new);
    let new_unavailable = rs_replicas(new) - rs_status(new).2;
    let max_scaled_down = all_count - min_available - new_unavailable;
    if max_scaled_down <= 0 {
        return Ok(());
    }
    // First the old pods that are not available anyway.
    let mut cleaned = 0;
    for rs in olds.iter_mut() {
        if cleaned >= max_scaled_down {
            break;
        }
        let (size, avail) = (rs_replicas(rs), rs_status(rs).2);
        if size == 0 || size <= avail {
            continue;
        }
        let down = (max_scaled_down - cleaned).min(size - avail);
        s.scale(rs, size - down).await?;
        cleaned += down;
    }
    // Then available ones, as far as availability allows.
    let available: i32 = olds
        .iter()
        .map(|r| rs_status(r).2.min(rs_replicas(r)))
        .sum::<i32>()
        + rs_status(new).2;
    if available <= min_available {
        return Ok(());
    }
    let total = (available - min_available).min(max_scaled_down - cleaned);
    let mut done = 0;
    for rs in olds.iter_mut() {
        if done >= total {
            break;
        }
        let size = rs_replicas(rs);
        if size == 0 {
            continue;
        }
        let down = size.min(total - done);
        s.scale(rs, size - down).await?;
        done += down;
    }
    Ok(())
}

async fn rollout_recreate(
    s: &Sync<'_>,
    new_rs: &mut Option<ReplicaSet>,
    olds: &mut [ReplicaSet],
) -> Result<(), Error> {
    let mut scaled = false;
    for rs in olds.iter_mut() {
        if rs_replicas(rs) > 0 {
            scaled |= s.scale(rs, 0).await?;
        }
    }
    if scaled {
        return Ok(());
    }
    // Wait for the old pods to be gone.
    let old_running = olds.iter().any(|r| {
        rs_status(r).0 > 0
            || r.status
                .as_ref()
                .and_then(|st| st.observed_generation)
                .unwrap_or(0)
                < r.metadata.generation.unwrap_or(0)
    });
    if old_running {
        return Ok(());
    }
    if let Some(new) = new_rs.as_mut() {
        s.scale(new, replicas_of(s.d)).await?;
    }
    Ok(())
}

/// Delete old, empty ReplicaSets beyond the history limit (oldest revisions first).
async fn cleanup(api: &Api<ReplicaSet>, olds: &[ReplicaSet], limit: i32) -> Result<(), Error> {
    let mut candidates: Vec<&ReplicaSet> = olds
        .iter()
        .filter(|r| {
            rs_replicas(r) == 0 && rs_status(r).0 == 0 && r.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let limit = usize::try_from(limit.max(0)).unwrap_or(0);
    if candidates.len() <= limit {
        return Ok(());
    }
    candidates.sort_by_key(|r| revision_of(r));
    let n = candidates.len() - limit;
    for rs in candidates.into_iter().take(n) {
        util::delete_same(api, rs, DeleteParams::background()).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetStatus, RollingUpdateDeployment,
    };
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                name: Some("web".into()),
                generation: Some(2),
                ..Default::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn rs(replicas: i32, status: i32, available: i32) -> ReplicaSet {
        ReplicaSet {
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(ReplicaSetStatus {
                replicas: status,
                ready_replicas: Some(available),
                available_replicas: Some(available),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn fenceposts_round_like_upstream() {
        let pct = |s: &str| IntOrString::String(s.into());
        assert_eq!(fenceposts(&deploy(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deploy(3, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(
            fenceposts(&deploy(3, IntOrString::Int(0), IntOrString::Int(0))),
            (0, 1)
        );
        assert_eq!(
            fenceposts(&deploy(2, IntOrString::Int(1), IntOrString::Int(5))),
            (1, 2)
        );
    }

    #[test]
    fn new_rs_grows_within_surge() {
        let d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        // Old RS at 3: one surge pod allowed.
        assert_eq!(new_rs_new_replicas(&d, &[rs(3, 3, 3), rs(0, 0, 0)], 0), 1);
        // Already at max total: no growth.
        assert_eq!(new_rs_new_replicas(&d, &[rs(3, 3, 3), rs(1, 1, 0)], 1), 1);
        assert_eq!(new_rs_new_replicas(&d, &[rs(1, 1, 1), rs(2, 2, 2)], 2), 3);
    }

    #[test]
    fn status_and_completion() {
        let d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        let new = rs(3, 3, 3);
        let old = rs(0, 0, 0);
        let st = calculate_status(&d, &[old.clone(), new.clone()], Some(&new));
        assert_eq!(st.replicas, Some(3));
        assert_eq!(st.updated_replicas, Some(3));
        assert_eq!(st.unavailable_replicas, Some(0));
        assert!(is_complete(&d, &st));
        let avail = get_condition(&st, "Available").unwrap();
        assert_eq!(
            (avail.status.as_str(), avail.reason.as_deref()),
            ("True", Some("MinimumReplicasAvailable"))
        );

        let mid = rs(2, 2, 0);
        let st = calculate_status(&d, &[rs(3, 3, 3), mid.clone()], Some(&mid));
        assert!(!is_complete(&d, &st));
        assert_eq!(st.unavailable_replicas, Some(2));
    }

    #[test]
    fn progress_conditions() {
        let mut d = deploy(3, IntOrString::Int(1), IntOrString::Int(0));
        let new = rs(3, 3, 3);
        let mut st = calculate_status(&d, std::slice::from_ref(&new), Some(&new));
        progress(&d, &mut st, Some(&new), Timestamp::now());
        let c = get_condition(&st, "Progressing").unwrap();
        assert_eq!(c.reason.as_deref(), Some("NewReplicaSetAvailable"));

        // No progress for longer than the deadline: timed out.
        d.spec.as_mut().unwrap().progress_deadline_seconds = Some(5);
        let stuck = rs(3, 3, 0);
        let mut prev = calculate_status(&d, std::slice::from_ref(&stuck), Some(&stuck));
        let mut c = condition("Progressing", "True", "ReplicaSetUpdated", "x");
        c.last_update_time = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            Timestamp::from_second(Timestamp::now().as_second() - 60).unwrap(),
        ));
        prev.conditions
            .get_or_insert_with(Vec::new)
            .retain(|x| x.type_ != "Progressing");
        prev.conditions.get_or_insert_with(Vec::new).push(c);
        d.status = Some(prev);
        let mut st = calculate_status(&d, std::slice::from_ref(&stuck), Some(&stuck));
        progress(&d, &mut st, Some(&stuck), Timestamp::now());
        let c = get_condition(&st, "Progressing").unwrap();
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some("ProgressDeadlineExceeded"))
        );
    }
}
