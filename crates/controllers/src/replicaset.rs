//! The ReplicaSet controller: keeps `spec.replicas` active pods matching the
//! selector, adopting matching orphans and releasing pods that stopped
//! matching, and reports counts in `status`.
//!
//! Pods are read from a watch-fed cache. Because that cache lags behind the
//! controller's own writes, every create/delete is recorded as an
//! *expectation*; the ReplicaSet is not resized again until the cache has seen
//! them (or they expire), so it never overshoots.

use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{future, stream, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{ReplicaSet, ReplicaSetCondition, ReplicaSetStatus};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};

use crate::events::{EventType, Recorder};
use crate::podcache::{PodCache, PodChanges};
use crate::util::{self, PodControl};

/// How long an unmet expectation blocks resizing before it is given up.
const EXPECTATION_TTL: Duration = Duration::from_secs(15);
/// At most this many pods are created or deleted per sync.
const BURST: usize = 500;

/// Errors of one ReplicaSet sync.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An API call failed.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
    /// The pod cache went away.
    #[error("pod cache is gone")]
    CacheGone,
}

/// Creates and deletes the controller has made and not yet seen in its cache.
#[derive(Debug)]
struct Expectation {
    adds: HashSet<String>,
    dels: HashSet<String>,
    at: Instant,
}

/// Pending expectations per ReplicaSet (`namespace/name`).
#[derive(Debug, Default)]
pub struct Expectations {
    inner: Mutex<HashMap<String, Expectation>>,
}

impl Expectations {
    /// Record pods (by name) the controller created and pods (by uid) it deleted.
    pub fn expect(&self, key: &str, adds: Vec<String>, dels: Vec<String>) {
        if adds.is_empty() && dels.is_empty() {
            return;
        }
        if let Ok(mut m) = self.inner.lock() {
            let e = m.entry(key.to_string()).or_insert_with(|| Expectation {
                adds: HashSet::new(),
                dels: HashSet::new(),
                at: Instant::now(),
            });
            e.adds.extend(adds);
            e.dels.extend(dels);
            e.at = Instant::now();
        }
    }

    /// Are all expectations for `key` met, given what the cache holds now?
    /// `has_name` says whether a pod name is cached, `has_uid` whether a pod
    /// uid is cached (and not yet being deleted).
    pub fn satisfied(
        &self,
        key: &str,
        has_name: impl Fn(&str) -> bool,
        has_uid: impl Fn(&str) -> bool,
    ) -> bool {
        let Ok(mut m) = self.inner.lock() else {
            return true;
        };
        let Some(e) = m.get_mut(key) else {
            return true;
        };
        e.adds.retain(|n| !has_name(n));
        e.dels.retain(|u| has_uid(u));
        if (e.adds.is_empty() && e.dels.is_empty()) || e.at.elapsed() > EXPECTATION_TTL {
            m.remove(key);
            return true;
        }
        false
    }

    /// Forget everything about `key` (the ReplicaSet is gone).
    pub fn forget(&self, key: &str) {
        if let Ok(mut m) = self.inner.lock() {
            m.remove(key);
        }
    }
}

struct Ctx {
    client: Client,
    pods: Store<Pod>,
    expectations: Expectations,
    recorder: Recorder,
}

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client) {
    let (store, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, store, changes).await;
}

/// Run the controller until the process ends, reading pods from a shared
/// [`PodCache`]'s `store` and woken by its `changes`.
pub async fn run_with_pods(client: Client, pod_store: Store<Pod>, changes: PodChanges) {
    let rs_api: Api<ReplicaSet> = Api::all(client.clone());
    let (rs_store, rs_writer) = reflector::store::<ReplicaSet>();

    let rs_triggers = reflector::reflector(rs_writer, watcher(rs_api, watcher::Config::default()))
        .default_backoff()
        .touched_objects()
        .map_ok(|rs| ObjectRef::from_obj(&rs));
    let rs_lookup = rs_store.clone();
    let pod_triggers = changes.flat_map(move |pod| {
        stream::iter(
            owners_of(&rs_lookup, &pod)
                .into_iter()
                .map(Ok::<_, watcher::Error>),
        )
    });
    let queue = stream::select(rs_triggers, pod_triggers);

    let ctx = Arc::new(Ctx {
        client: client.clone(),
        pods: pod_store,
        expectations: Expectations::default(),
        recorder: Recorder::new(client, "replicaset-controller"),
    });
    util::run_applier(
        "replicaset controller",
        rs_store,
        queue,
        reconcile,
        ctx,
        util::RETRY,
    )
    .await;
}

/// The ReplicaSets a pod event concerns: its controller, or (for an orphan)
/// every ReplicaSet in its namespace whose selector matches it.
fn owners_of(rs_store: &Store<ReplicaSet>, pod: &Pod) -> Vec<ObjectRef<ReplicaSet>> {
    let ns = pod.namespace().unwrap_or_default();
    if let Some(r) = util::controller_ref(&pod.metadata) {
        if r.kind == "ReplicaSet" && r.api_version.starts_with("apps/") {
            return vec![ObjectRef::new(&r.name).within(&ns)];
        }
        return Vec::new();
    }
    rs_store
        .state()
        .iter()
        .filter(|rs| rs.namespace().as_deref() == Some(ns.as_str()))
        .filter(|rs| {
            util::selector_matches(
                rs.spec.as_ref().map(|s| &s.selector),
                pod.metadata.labels.as_ref(),
            )
        })
        .map(|rs| ObjectRef::from_obj(rs.as_ref()))
        .collect()
}

/// Order in which surplus pods are deleted (first = deleted first), as
/// upstream: unscheduled < scheduled, Pending < Unknown < Running, not ready <
/// ready, ready for less time first, more restarts first, newer first.
pub fn deletion_order(pods: &mut [Arc<Pod>]) {
    pods.sort_by_cached_key(|p| {
        let assigned = p
            .spec
            .as_ref()
            .and_then(|s| s.node_name.as_deref())
            .is_some_and(|n| !n.is_empty());
        let phase = match p.status.as_ref().and_then(|s| s.phase.as_deref()) {
            Some("Pending") | None => 0,
            Some("Unknown") => 1,
            Some("Running") => 2,
            Some(_) => 0,
        };
        let ready = util::pod_ready_since(p);
        let ready_since = ready.flatten().map(|t| t.as_second()).unwrap_or(0);
        let restarts: i32 = p
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .map(|cs| cs.iter().map(|c| c.restart_count).sum())
            .unwrap_or(0);
        let created = p
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.as_second())
            .unwrap_or(0);
        (
            assigned,
            phase,
            ready.is_some(),
            Reverse(ready_since),
            Reverse(restarts),
            Reverse(created),
        )
    });
}

async fn reconcile(rs: Arc<ReplicaSet>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    ctx.pods
        .wait_until_ready()
        .await
        .map_err(|_| Error::CacheGone)?;
    let ns = rs.namespace().unwrap_or_default();
    let name = rs.name_any();
    let key = format!("{ns}/{name}");
    let uid = rs.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = rs.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let pod_control = PodControl::new(
        pod_api.clone(),
        &ctx.recorder,
        Recorder::reference(rs.as_ref()),
    );

    // Claim: adopt matching orphans, release owned pods that stopped matching.
    let mut owned: Vec<Arc<Pod>> = Vec::new();
    let deleting = rs.metadata.deletion_timestamp.is_some();
    for pod in ctx.pods.state() {
        if pod.namespace().as_deref() != Some(ns.as_str()) {
            continue;
        }
        let matches = util::selector_matches(Some(&spec.selector), pod.metadata.labels.as_ref());
        match util::controller_ref(&pod.metadata) {
            Some(r) if r.uid == uid => {
                if matches || pod.metadata.deletion_timestamp.is_some() {
                    owned.push(pod);
                } else {
                    release(&pod_api, &pod, &uid).await?;
                }
            }
            Some(_) => {}
            None => {
                let adoptable = matches
                    && !deleting
                    && pod.metadata.deletion_timestamp.is_none()
                    && util::pod_is_active(&pod);
                if adoptable && adopt(&pod_api, &pod, &rs).await? {
                    owned.push(pod);
                }
            }
        }
    }
    let mut active: Vec<Arc<Pod>> = owned
        .iter()
        .filter(|p| util::pod_is_active(p))
        .cloned()
        .collect();

    let mut failure: Option<String> = None;
    let mut requeue: Option<Duration> = None;
    let synced = ctx.expectations.satisfied(
        &key,
        |n| ctx.pods.get(&ObjectRef::new(n).within(&ns)).is_some(),
        |u| {
            ctx.pods
                .find(|p| {
                    p.metadata.uid.as_deref() == Some(u) && p.metadata.deletion_timestamp.is_none()
                })
                .is_some()
        },
    );
    if !deleting && synced {
        let want = usize::try_from(spec.replicas.unwrap_or(1).max(0)).unwrap_or(0);
        if active.len() < want {
            let n = (want - active.len()).min(BURST);
            let (created, err) = create_pods(&pod_control, &rs, n).await;
            ctx.expectations.expect(&key, created, Vec::new());
            failure = err;
        } else if active.len() > want {
            let n = (active.len() - want).min(BURST);
            deletion_order(&mut active);
            let victims: Vec<Arc<Pod>> = active.drain(..n).collect();
            let mut dels = Vec::new();
            for p in victims {
                match pod_control.delete(&p).await {
                    Ok(true) => dels.push(p.metadata.uid.clone().unwrap_or_default()),
                    Ok(false) => {}
                    Err(e) => {
                        let msg = format!("Error deleting: {e}");
                        ctx.recorder
                            .publish(
                                &Recorder::reference(rs.as_ref()),
                                EventType::Warning,
                                "FailedDelete",
                                &msg,
                            )
                            .await;
                        failure = Some(msg);
                        break;
                    }
                }
            }
            ctx.expectations.expect(&key, Vec::new(), dels);
        }
    } else if !synced {
        requeue = Some(Duration::from_millis(500));
    }

    // Status, from the cache (pods just created show up on the next sync).
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let template_labels = spec
        .template
        .as_ref()
        .and_then(|t| t.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    let mut status = ReplicaSetStatus {
        replicas: 0,
        fully_labeled_replicas: Some(0),
        ready_replicas: Some(0),
        available_replicas: Some(0),
        observed_generation: rs.metadata.generation,
        conditions: None,
        ..Default::default()
    };
    for p in owned.iter().filter(|p| util::pod_is_active(p)) {
        status.replicas += 1;
        let labels = p.metadata.labels.clone().unwrap_or_default();
        if template_labels
            .iter()
            .all(|(k, v)| labels.get(k) == Some(v))
        {
            *status.fully_labeled_replicas.get_or_insert(0) += 1;
        }
        if util::pod_is_ready(p) {
            *status.ready_replicas.get_or_insert(0) += 1;
        }
        match util::pod_available_in(p, min_ready, now) {
            Some(0) => *status.available_replicas.get_or_insert(0) += 1,
            Some(s) => {
                let d = Duration::from_secs(u64::try_from(s).unwrap_or(1));
                requeue = Some(requeue.map_or(d, |r| r.min(d)));
            }
            None => {}
        }
    }
    let mut conditions: Vec<ReplicaSetCondition> = rs
        .status
        .as_ref()
        .and_then(|s| s.conditions.clone())
        .unwrap_or_default();
    let had_failure = conditions.iter().any(|c| c.type_ == "ReplicaFailure");
    match &failure {
        Some(msg) if !had_failure => {
            conditions.push(ReplicaSetCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some(msg.clone()),
                last_transition_time: Some(util::now()),
            });
        }
        Some(_) => {}
        None if synced => conditions.retain(|c| c.type_ != "ReplicaFailure"),
        None => {}
    }
    status.conditions = if conditions.is_empty() {
        None
    } else {
        Some(conditions)
    };
    if rs.status.as_ref() != Some(&status) {
        let rs_api: Api<ReplicaSet> = Api::namespaced(ctx.client.clone(), &ns);
        if !util::patch_status(&rs_api, &name, &status).await? {
            ctx.expectations.forget(&key);
            return Ok(Action::await_change());
        }
    }
    if failure.is_some() {
        return Ok(Action::requeue(Duration::from_secs(2)));
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// Create `n` pods, in batches of growing size (1, 2, 4, ...) so a broken
/// template fails fast. Returns the names created and the first error.
async fn create_pods(
    pods: &PodControl<'_>,
    rs: &ReplicaSet,
    n: usize,
) -> (Vec<String>, Option<String>) {
    let pod = pod_from_template(rs);
    let mut created = Vec::new();
    let pp = PostParams::default();
    let mut batch = 1usize;
    let mut left = n;
    while left > 0 {
        let size = batch.min(left);
        // Create concurrently, record one by one (so repeated events aggregate).
        let results = future::join_all((0..size).map(|_| pods.api().create(&pp, &pod))).await;
        let mut err = None;
        for r in results {
            pods.record_create(&r).await;
            match r {
                Ok(p) => created.push(p.name_any()),
                Err(e) => {
                    err.get_or_insert_with(|| {
                        format!("Error creating: {}", util::error_message(&e))
                    });
                }
            }
        }
        if err.is_some() {
            return (created, err);
        }
        left -= size;
        batch *= 2;
    }
    (created, None)
}

/// The pod a ReplicaSet creates: its template, owned by it, named `<rs>-<random>`.
pub fn pod_from_template(rs: &ReplicaSet) -> Pod {
    let template = rs
        .spec
        .as_ref()
        .and_then(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", rs.name_any())),
            namespace: rs.namespace(),
            labels: tmeta.labels,
            annotations: tmeta.annotations,
            finalizers: tmeta.finalizers,
            owner_references: Some(vec![util::owner_ref("apps/v1", "ReplicaSet", &rs.metadata)]),
            ..Default::default()
        },
        spec: template.spec,
        status: None,
    }
}

/// Add a controller reference to an orphan pod. Returns whether it now belongs to `rs`.
async fn adopt(api: &Api<Pod>, pod: &Pod, rs: &ReplicaSet) -> Result<bool, kube::Error> {
    let mut refs = pod.metadata.owner_references.clone().unwrap_or_default();
    refs.push(util::owner_ref("apps/v1", "ReplicaSet", &rs.metadata));
    Ok(util::set_owner_refs(api, pod, &refs).await?.is_some())
}

/// Remove the reference to `uid` from a pod that no longer matches.
async fn release(api: &Api<Pod>, pod: &Pod, uid: &str) -> Result<(), kube::Error> {
    let refs: Vec<_> = pod
        .metadata
        .owner_references
        .iter()
        .flatten()
        .filter(|r| r.uid != uid)
        .cloned()
        .collect();
    util::set_owner_refs(api, pod, &refs).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn pod(
        name: &str,
        node: Option<&str>,
        phase: &str,
        ready_at: Option<i64>,
        created: i64,
    ) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                creation_timestamp: Some(Time(Timestamp::from_second(created).unwrap())),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: node.map(String::from),
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: ready_at.map(|t| {
                    vec![PodCondition {
                        type_: "Ready".into(),
                        status: "True".into(),
                        last_transition_time: Some(Time(Timestamp::from_second(t).unwrap())),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn deletes_unscheduled_then_pending_then_unready_then_newest() {
        let mut pods = vec![
            pod("ready-old", Some("n"), "Running", Some(100), 10),
            pod("ready-recent", Some("n"), "Running", Some(200), 10),
            pod("running-unready", Some("n"), "Running", None, 10),
            pod("pending", Some("n"), "Pending", None, 10),
            pod("unscheduled-old", None, "Pending", None, 10),
            pod("unscheduled-new", None, "Pending", None, 20),
        ];
        deletion_order(&mut pods);
        let names: Vec<_> = pods.iter().map(|p| p.name_any()).collect();
        assert_eq!(
            names,
            [
                "unscheduled-new",
                "unscheduled-old",
                "pending",
                "running-unready",
                "ready-recent",
                "ready-old"
            ]
        );
    }

    #[test]
    fn expectations_block_until_observed() {
        let e = Expectations::default();
        assert!(e.satisfied("a/b", |_| false, |_| false));
        e.expect("a/b", vec!["p1".into()], vec!["u1".into()]);
        // Created pod not seen yet, deleted pod still cached.
        assert!(!e.satisfied("a/b", |_| false, |_| true));
        // Created pod seen, deleted pod still cached.
        assert!(!e.satisfied("a/b", |_| true, |_| true));
        assert!(e.satisfied("a/b", |_| true, |_| false));
        assert!(e.satisfied("a/b", |_| false, |_| false));
    }

    #[test]
    fn pod_template_owned() {
        let rs = ReplicaSet {
            metadata: ObjectMeta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                uid: Some("u-1".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = pod_from_template(&rs);
        assert_eq!(p.metadata.generate_name.as_deref(), Some("web-abc-"));
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!(
            (
                r.kind.as_str(),
                r.uid.as_str(),
                r.controller,
                r.block_owner_deletion
            ),
            ("ReplicaSet", "u-1", Some(true), Some(true))
        );
    }
}
