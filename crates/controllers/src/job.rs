//! The Job controller: runs pods until `completions` of them succeed (or one
//! does, for work-queue Jobs), at most `parallelism` at a time, giving up
//! after `backoffLimit` failures or `activeDeadlineSeconds`.
//!
//! Pods carry the finalizer `batch.kubernetes.io/job-tracking` until they are
//! counted: a terminal pod's uid is first recorded in
//! `status.uncountedTerminatedPods`, then its finalizer is removed, then it is
//! moved into `succeeded`/`failed`, so no pod is counted twice or lost.
//! Pods are listed live (by the Job's selector) on each sync.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::batch::v1::{Job, JobCondition, UncountedTerminatedPods};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::podcache::{PodCache, PodChanges};
use crate::util::{self, PodControl, SyncError, TriggeredController};

/// Finalizer on a Job's pods until the controller has counted them.
pub const TRACKING_FINALIZER: &str = "batch.kubernetes.io/job-tracking";
/// Annotation and label holding an Indexed Job pod's completion index.
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";
const MAX_CREATE: usize = 500;

/// Job controller settings.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// First delay before recreating pods after a failure (doubles per failure).
    pub backoff_base: Duration,
    /// Longest delay between recreations.
    pub backoff_max: Duration,
}

impl Default for JobConfig {
    fn default() -> Self {
        JobConfig {
            backoff_base: Duration::from_secs(10),
            backoff_max: Duration::from_secs(360),
        }
    }
}

struct Ctx {
    client: Client,
    cfg: JobConfig,
    recorder: Recorder,
    /// Per Job uid: the failed count last seen and when it last grew.
    failures: Mutex<HashMap<String, (i32, Instant)>>,
}

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client, cfg: JobConfig) {
    let (_, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, cfg, changes).await;
}

/// Run the controller until the process ends, woken by the `changes` of a
/// shared [`PodCache`] (its pods are still listed live on each sync).
pub async fn run_with_pods(client: Client, cfg: JobConfig, changes: PodChanges) {
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cfg,
        recorder: Recorder::new(client.clone(), "job-controller"),
        failures: Mutex::default(),
    });
    TriggeredController::new(Api::<Job>::all(client))
        .owns_pods(changes)
        .run("job controller", reconcile, ctx, util::RETRY)
        .await;
}

/// The delay before pods are recreated after `failed` failures.
pub fn backoff_delay(cfg: &JobConfig, failed: i32) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let shift = u32::try_from(failed - 1).unwrap_or(0).min(16);
    cfg.backoff_base
        .saturating_mul(1u32 << shift)
        .min(cfg.backoff_max)
}

/// Why a Job is finished (or about to be).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Enough pods succeeded.
    Complete,
    /// The Job failed, with the upstream reason and message.
    Failed(&'static str, &'static str),
}

/// Decide whether the Job is done, from its counts (pure; see tests).
pub fn outcome(
    job: &Job,
    succeeded: i32,
    failed: i32,
    active: i32,
    now: Timestamp,
) -> Option<Outcome> {
    let spec = job.spec.as_ref()?;
    let conds = job
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_deref())
        .unwrap_or(&[]);
    for c in conds.iter().filter(|c| c.status == "True") {
        match c.type_.as_str() {
            "FailureTarget" | "Failed" => {
                return Some(match c.reason.as_deref() {
                    Some("DeadlineExceeded") => Outcome::Failed(
                        "DeadlineExceeded",
                        "Job was active longer than specified deadline",
                    ),
                    _ => Outcome::Failed(
                        "BackoffLimitExceeded",
                        "Job has reached the specified backoff limit",
                    ),
                })
            }
            "SuccessCriteriaMet" | "Complete" => return Some(Outcome::Complete),
            _ => {}
        }
    }
    match spec.completions {
        Some(c) if succeeded >= c => return Some(Outcome::Complete),
        None if succeeded > 0 && active == 0 => return Some(Outcome::Complete),
        _ => {}
    }
    if failed > spec.backoff_limit.unwrap_or(6) {
        return Some(Outcome::Failed(
            "BackoffLimitExceeded",
            "Job has reached the specified backoff limit",
        ));
    }
    if let (Some(ads), Some(start)) = (
        spec.active_deadline_seconds,
        job.status.as_ref().and_then(|s| s.start_time.as_ref()),
    ) {
        if now.as_second() - start.0.as_second() >= ads {
            return Some(Outcome::Failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        }
    }
    None
}

/// Parse `completedIndexes` ("1,3-5") into a set.
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Format a set of indexes as upstream does ("1,3-5").
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut parts = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    parts.join(",")
}

/// The completion index of an Indexed Job's pod.
pub fn pod_index(pod: &Pod) -> Option<i32> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| {
            pod.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(COMPLETION_INDEX))
        })
        .and_then(|v| v.parse().ok())
}

fn is_indexed(job: &Job) -> bool {
    job.spec.as_ref().and_then(|s| s.completion_mode.as_deref()) == Some("Indexed")
}

fn has_finalizer(pod: &Pod) -> bool {
    pod.metadata
        .finalizers
        .iter()
        .flatten()
        .any(|f| f == TRACKING_FINALIZER)
}

/// The pod the Job creates (for `index` when Indexed).
pub fn pod_for(job: &Job, index: Option<i32>) -> Pod {
    let name = job.name_any();
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let template = job
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    for (k, v) in [
        ("batch.kubernetes.io/controller-uid", &uid),
        ("batch.kubernetes.io/job-name", &name),
        ("controller-uid", &uid),
        ("job-name", &name),
    ] {
        labels.entry(k.to_string()).or_insert_with(|| v.clone());
    }
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let mut spec = template.spec;
    let generate_name = match index {
        Some(i) => {
            labels.insert(COMPLETION_INDEX.into(), i.to_string());
            annotations.insert(COMPLETION_INDEX.into(), i.to_string());
            if let Some(s) = spec.as_mut() {
                s.hostname.get_or_insert_with(|| format!("{name}-{i}"));
            }
            format!("{name}-{i}-")
        }
        None => format!("{name}-"),
    };
    let mut finalizers = tmeta.finalizers.unwrap_or_default();
    finalizers.push(TRACKING_FINALIZER.into());
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(generate_name),
            namespace: job.namespace(),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            finalizers: Some(finalizers),
            owner_references: Some(vec![util::owner_ref("batch/v1", "Job", &job.metadata)]),
            ..Default::default()
        },
        spec,
        status: None,
    }
}

fn set_condition(
    conds: &mut Vec<JobCondition>,
    type_: &str,
    status: &str,
    reason: &str,
    msg: &str,
) {
    let now = util::now();
    if let Some(c) = conds.iter_mut().find(|c| c.type_ == type_) {
        if c.status != status {
            c.last_transition_time = Some(now.clone());
        }
        c.status = status.into();
        c.reason = Some(reason.into());
        c.message = Some(msg.into());
        c.last_probe_time = Some(now);
        return;
    }
    conds.push(JobCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(msg.into()),
        last_probe_time: Some(now.clone()),
        last_transition_time: Some(now),
    });
}

fn finished_at(job: &Job) -> Option<Timestamp> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
        .map(|c| {
            c.last_transition_time
                .as_ref()
                .map_or(Timestamp::now(), |t| t.0)
        })
}

/// Delete a pod of the Job without an Event (see [`PodControl::delete`]).
async fn delete_pod(api: &Api<Pod>, pod: &Pod) -> Result<bool, kube::Error> {
    util::delete_same(api, pod, DeleteParams::default()).await
}

/// Set the `Suspended` condition to match `suspended` if it does not yet;
/// returns the Event `(reason, message)` to record when it changed. A Job
/// never suspended has no condition to clear.
fn mark_suspended(
    conds: &mut Vec<JobCondition>,
    suspended: bool,
) -> Option<(&'static str, &'static str)> {
    let marked = conds
        .iter()
        .any(|c| c.type_ == "Suspended" && c.status == "True");
    if marked == suspended {
        return None;
    }
    let (status, reason, msg, event) = if suspended {
        ("True", "JobSuspended", "Job suspended", "Suspended")
    } else {
        ("False", "JobResumed", "Job resumed", "Resumed")
    };
    set_condition(conds, "Suspended", status, reason, msg);
    Some((event, msg))
}

async fn remove_finalizer(api: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
    let fins: Vec<&String> = pod
        .metadata
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != TRACKING_FINALIZER)
        .collect();
    let patch = json!({"metadata": {
        "finalizers": fins,
        "resourceVersion": pod.metadata.resource_version,
    }});
    match api
        .patch(
            &pod.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) => Ok(()),
        Err(e) if util::is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let ns = job.namespace().unwrap_or_default();
    let name = job.name_any();
    let Some(job) = util::get_live(&ctx.client, job.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let uid = job.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = job.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let reference = Recorder::reference(job.as_ref());
    let lp = ListParams::default().labels(&util::match_labels_query(spec.selector.as_ref()));
    let pods = util::list_controlled(&pod_api, &lp, &uid).await?;
    let pod_control = PodControl::new(pod_api.clone(), &ctx.recorder, reference.clone());

    if job.metadata.deletion_timestamp.is_some() {
        for p in pods.iter().filter(|p| has_finalizer(p)) {
            remove_finalizer(&pod_api, p).await?;
        }
        return Ok(Action::await_change());
    }

    let indexed = is_indexed(&job);
    let old = job.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let mut uncounted = old.uncounted_terminated_pods.clone().unwrap_or_default();
    let mut unc_s = uncounted.succeeded.take().unwrap_or_default();
    let mut unc_f = uncounted.failed.take().unwrap_or_default();

    // 1. Record terminal pods that still carry the finalizer as uncounted.
    let mut to_release = Vec::new();
    let mut grew = false;
    for p in pods.iter().filter(|p| has_finalizer(p)) {
        let puid = p.metadata.uid.clone().unwrap_or_default();
        let phase = util::pod_phase(p);
        let list = match phase {
            "Succeeded" => Some(&mut unc_s),
            "Failed" => Some(&mut unc_f),
            _ if p.metadata.deletion_timestamp.is_some() => Some(&mut unc_f),
            _ => None,
        };
        if let Some(list) = list {
            if !list.contains(&puid) {
                list.push(puid);
                grew = true;
            }
            to_release.push(p);
        }
    }
    if grew {
        let patch =
            json!({"status": {"uncountedTerminatedPods": {"succeeded": unc_s, "failed": unc_f}}});
        job_api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    // 2. Release them; 3. move them into the counts.
    for p in &to_release {
        remove_finalizer(&pod_api, p).await?;
    }
    let mut completed = parse_indexes(status.completed_indexes.as_deref().unwrap_or(""));
    let mut succeeded = status.succeeded.unwrap_or(0);
    let mut failed = status.failed.unwrap_or(0);
    for u in unc_s.drain(..) {
        let pod = pods
            .iter()
            .find(|p| p.metadata.uid.as_deref() == Some(u.as_str()));
        if indexed {
            let completions = spec.completions.unwrap_or(1);
            if let Some(i) = pod
                .and_then(pod_index)
                .filter(|i| (0..completions).contains(i))
            {
                completed.insert(i);
            }
        } else {
            succeeded += 1;
        }
    }
    failed += i32::try_from(unc_f.len()).unwrap_or(0);
    unc_f.clear();
    if indexed {
        succeeded = i32::try_from(completed.len()).unwrap_or(i32::MAX);
        status.completed_indexes = Some(format_indexes(&completed));
    }
    status.succeeded = Some(succeeded);
    status.failed = Some(failed);
    status.uncounted_terminated_pods = Some(UncountedTerminatedPods::default());

    let now = Timestamp::now();
    let mut active: Vec<&Pod> = pods.iter().filter(|p| util::pod_is_active(p)).collect();
    // Pods still running (including those being deleted): the Job is not
    // finished until they are gone.
    let running = pods
        .iter()
        .filter(|p| !matches!(util::pod_phase(p), "Succeeded" | "Failed"))
        .count();
    let mut conds = status.conditions.clone().unwrap_or_default();
    let suspended = spec.suspend.unwrap_or(false);
    let mut requeue: Option<Duration> = None;
    let mut want_requeue = |d: Duration| {
        requeue = Some(requeue.map_or(d, |r: Duration| r.min(d)));
    };

    let already_done = finished_at(&job).is_some();
    if !suspended && status.start_time.is_none() && !already_done {
        status.start_time = Some(Time(now));
    }
    let mut probe = (*job).clone();
    probe.status = Some(status.clone());
    let active_n = i32::try_from(active.len()).unwrap_or(i32::MAX);
    match outcome(&probe, succeeded, failed, active_n, now) {
        Some(o) if !already_done => {
            let (interim, fin, reason, msg) = match &o {
                Outcome::Complete => (
                    "SuccessCriteriaMet",
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                ),
                Outcome::Failed(r, m) => ("FailureTarget", "Failed", *r, *m),
            };
            if !conds
                .iter()
                .any(|c| c.type_ == interim && c.status == "True")
            {
                set_condition(&mut conds, interim, "True", reason, msg);
            }
            for p in active.drain(..) {
                delete_pod(&pod_api, p).await?;
            }
            if running == 0 {
                set_condition(&mut conds, fin, "True", reason, msg);
                match o {
                    Outcome::Complete => {
                        status.completion_time = Some(Time(now));
                        ctx.recorder
                            .publish(&reference, EventType::Normal, "Completed", "Job completed")
                            .await;
                    }
                    Outcome::Failed(r, m) => {
                        ctx.recorder
                            .publish(&reference, EventType::Warning, r, m)
                            .await;
                    }
                }
                if let Some(ttl) = spec.ttl_seconds_after_finished {
                    want_requeue(Duration::from_secs(u64::try_from(ttl).unwrap_or(0)));
                }
            } else {
                want_requeue(Duration::from_secs(1));
            }
        }
        Some(_) => {
            if let (Some(ttl), Some(at)) = (spec.ttl_seconds_after_finished, finished_at(&job)) {
                let left = at.as_second() + i64::from(ttl) - now.as_second();
                if left <= 0 {
                    let dp = DeleteParams::background();
                    match job_api.delete(&name, &dp).await {
                        Ok(_) => {}
                        Err(e) if util::is_status(&e, 404) => {}
                        Err(e) => return Err(e.into()),
                    }
                    return Ok(Action::await_change());
                }
                want_requeue(Duration::from_secs(u64::try_from(left).unwrap_or(1)));
            }
        }
        None if suspended => {
            for p in active.drain(..) {
                delete_pod(&pod_api, p).await?;
            }
            if let Some((reason, msg)) = mark_suspended(&mut conds, true) {
                ctx.recorder
                    .publish(&reference, EventType::Normal, reason, msg)
                    .await;
            }
            status.start_time = None;
        }
        None => {
            if let Some((reason, msg)) = mark_suspended(&mut conds, false) {
                ctx.recorder
                    .publish(&reference, EventType::Normal, reason, msg)
                    .await;
            }
            if let (Some(ads), Some(st)) = (spec.active_deadline_seconds, &status.start_time) {
                let left = st.0.as_second() + ads - now.as_second();
                want_requeue(Duration::from_secs(u64::try_from(left.max(1)).unwrap_or(1)));
            }
            let parallelism = spec.parallelism.unwrap_or(1).max(0);
            let want = match spec.completions {
                Some(c) => (c - succeeded).clamp(0, parallelism),
                None if succeeded > 0 => active_n,
                None => parallelism,
            };
            let want = usize::try_from(want).unwrap_or(0);
            // Indexed: drop duplicates and out-of-range indexes first.
            if indexed {
                let completions = spec.completions.unwrap_or(1);
                let mut seen = BTreeSet::new();
                let mut keep = Vec::new();
                for p in active.drain(..) {
                    match pod_index(p) {
                        Some(i)
                            if (0..completions).contains(&i)
                                && !completed.contains(&i)
                                && seen.insert(i) =>
                        {
                            keep.push(p)
                        }
                        _ => {
                            delete_pod(&pod_api, p).await?;
                        }
                    }
                }
                active = keep;
            }
            if active.len() > want {
                active.sort_by_key(|p| {
                    (
                        util::pod_is_ready(p),
                        std::cmp::Reverse(
                            p.metadata
                                .creation_timestamp
                                .as_ref()
                                .map(|t| t.0.as_second())
                                .unwrap_or(0),
                        ),
                    )
                });
                let n = active.len() - want;
                for p in active.drain(..n) {
                    pod_control.delete(p).await?;
                }
            } else if active.len() < want {
                let wait = backoff_remaining(&ctx, &uid, failed);
                if wait > Duration::ZERO {
                    want_requeue(wait);
                } else {
                    let n = (want - active.len()).min(MAX_CREATE);
                    let indexes: Vec<Option<i32>> = if indexed {
                        let busy: BTreeSet<i32> =
                            active.iter().filter_map(|p| pod_index(p)).collect();
                        (0..spec.completions.unwrap_or(1))
                            .filter(|i| !completed.contains(i) && !busy.contains(i))
                            .take(n)
                            .map(Some)
                            .collect()
                    } else {
                        vec![None; n]
                    };
                    for idx in indexes {
                        pod_control.create(&pod_for(&job, idx)).await?;
                    }
                }
            }
        }
    }

    // Counts of live pods (a pod just created is seen on the next sync).
    status.active = Some(active_n);
    status.ready = Some(
        i32::try_from(
            pods.iter()
                .filter(|p| util::pod_is_active(p) && util::pod_is_ready(p))
                .count(),
        )
        .unwrap_or(0),
    );
    status.conditions = (!conds.is_empty()).then_some(conds);
    if Some(&status) != job.status.as_ref() {
        let mut v = serde_json::to_value(&status).unwrap_or_default();
        // Merge patch: explicit nulls so cleared fields are removed.
        if let Some(o) = v.as_object_mut() {
            for k in ["startTime", "completionTime"] {
                o.entry(k).or_insert(serde_json::Value::Null);
            }
            // All counted: clear the lists (`{}` would merge as "no change").
            o.insert(
                "uncountedTerminatedPods".into(),
                json!({"succeeded": null, "failed": null}),
            );
        }
        if !util::patch_status(&job_api, &name, &v).await? {
            return Ok(Action::await_change());
        }
    }
    Ok(requeue.map_or_else(Action::await_change, Action::requeue))
}

/// How long the Job must still wait before creating pods after failures.
fn backoff_remaining(ctx: &Ctx, uid: &str, failed: i32) -> Duration {
    if failed <= 0 {
        return Duration::ZERO;
    }
    let Ok(mut m) = ctx.failures.lock() else {
        return Duration::ZERO;
    };
    let entry = m.entry(uid.to_string()).or_insert((failed, Instant::now()));
    if entry.0 != failed {
        *entry = (failed, Instant::now());
    }
    backoff_delay(&ctx.cfg, failed).saturating_sub(entry.1.elapsed())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{JobSpec, JobStatus};

    fn job(completions: Option<i32>, backoff: i32, deadline: Option<i64>) -> Job {
        Job {
            metadata: ObjectMeta {
                name: Some("pi".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(JobSpec {
                completions,
                backoff_limit: Some(backoff),
                active_deadline_seconds: deadline,
                ..Default::default()
            }),
            status: Some(JobStatus {
                start_time: Some(Time(Timestamp::from_second(1000).unwrap())),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn backoff_doubles_and_caps() {
        let cfg = JobConfig::default();
        assert_eq!(backoff_delay(&cfg, 0), Duration::ZERO);
        assert_eq!(backoff_delay(&cfg, 1), Duration::from_secs(10));
        assert_eq!(backoff_delay(&cfg, 2), Duration::from_secs(20));
        assert_eq!(backoff_delay(&cfg, 4), Duration::from_secs(80));
        assert_eq!(backoff_delay(&cfg, 7), Duration::from_secs(360));
        assert_eq!(backoff_delay(&cfg, 100), Duration::from_secs(360));
    }

    #[test]
    fn outcomes() {
        let t = Timestamp::from_second(1010).unwrap();
        assert_eq!(
            outcome(&job(Some(3), 6, None), 3, 0, 0, t),
            Some(Outcome::Complete)
        );
        assert_eq!(outcome(&job(Some(3), 6, None), 2, 0, 1, t), None);
        assert!(matches!(
            outcome(&job(Some(3), 1, None), 0, 2, 0, t),
            Some(Outcome::Failed("BackoffLimitExceeded", _))
        ));
        assert_eq!(outcome(&job(Some(3), 1, None), 0, 1, 0, t), None);
        assert!(matches!(
            outcome(&job(Some(3), 6, Some(5)), 0, 0, 1, t),
            Some(Outcome::Failed("DeadlineExceeded", _))
        ));
        assert_eq!(outcome(&job(Some(3), 6, Some(50)), 0, 0, 1, t), None);
        // Work queue: done once one succeeded and none is running.
        assert_eq!(outcome(&job(None, 6, None), 1, 0, 1, t), None);
        assert_eq!(
            outcome(&job(None, 6, None), 1, 0, 0, t),
            Some(Outcome::Complete)
        );
    }

    #[test]
    fn suspending_and_resuming_set_the_condition_once() {
        let mut conds = Vec::new();
        // Never suspended: nothing to clear, no event.
        assert_eq!(mark_suspended(&mut conds, false), None);
        assert!(conds.is_empty());
        assert_eq!(
            mark_suspended(&mut conds, true),
            Some(("Suspended", "Job suspended"))
        );
        assert_eq!(
            (conds[0].status.as_str(), conds[0].reason.as_deref()),
            ("True", Some("JobSuspended"))
        );
        assert_eq!(mark_suspended(&mut conds, true), None);
        assert_eq!(
            mark_suspended(&mut conds, false),
            Some(("Resumed", "Job resumed"))
        );
        assert_eq!(conds.len(), 1);
        assert_eq!(
            (conds[0].status.as_str(), conds[0].reason.as_deref()),
            ("False", Some("JobResumed"))
        );
        assert_eq!(mark_suspended(&mut conds, false), None);
    }

    #[test]
    fn index_sets_round_trip() {
        let s = parse_indexes("0,2-4,7");
        assert_eq!(s.iter().copied().collect::<Vec<_>>(), [0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&s), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }

    #[test]
    fn pods_carry_labels_finalizer_and_index() {
        let mut j = job(Some(2), 6, None);
        if let Some(s) = j.spec.as_mut() {
            s.completion_mode = Some("Indexed".into());
        }
        let p = pod_for(&j, Some(1));
        let labels = p.metadata.labels.clone().unwrap();
        assert_eq!(labels["batch.kubernetes.io/controller-uid"], "u1");
        assert_eq!(labels["job-name"], "pi");
        assert_eq!(labels[COMPLETION_INDEX], "1");
        assert_eq!(pod_index(&p), Some(1));
        assert_eq!(p.metadata.generate_name.as_deref(), Some("pi-1-"));
        assert!(has_finalizer(&p));
        let r = &p.metadata.owner_references.unwrap()[0];
        assert_eq!((r.kind.as_str(), r.controller), ("Job", Some(true)));
    }
}
