//! The CronJob controller: creates a Job from `jobTemplate` at each scheduled
//! time, honouring `concurrencyPolicy`, `startingDeadlineSeconds` and
//! `suspend`, tracks `status.active`/`lastScheduleTime`/`lastSuccessfulTime`
//! and prunes finished Jobs beyond the history limits.
//!
//! Jobs are named `<cronjob>-<scheduled time in minutes since the epoch>`, so
//! a schedule slot creates at most one Job even across restarts. Every sync
//! is requeued for the next fire time; the decision itself
//! ([`next_action`]) is a pure function of the CronJob, its Jobs and "now".

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use crate::cronschedule::Schedule;
use crate::events::{EventType, Recorder};
use crate::util::{self, Context, SyncError};

/// Annotation on created Jobs: the scheduled time (RFC 3339, in the schedule's zone).
pub const SCHEDULED_TIMESTAMP: &str = "batch.kubernetes.io/cronjob-scheduled-timestamp";
/// Missed schedules beyond this are not enumerated (upstream's 100).
const MAX_MISSED: usize = 100;

/// Run the controller until the process ends.
pub async fn run(client: Client) {
    let ctx = Context::new(client.clone(), "cronjob-controller");
    let controller = util::owning::<CronJob, Job>(&client);
    util::run_controller(
        "cronjob controller",
        controller,
        reconcile,
        ctx,
        util::RETRY,
    )
    .await;
}

/// The name of the Job for a scheduled time.
pub fn job_name(cj: &str, scheduled: Timestamp) -> String {
    format!("{cj}-{}", scheduled.as_second().div_euclid(60))
}

/// Is the Job finished, and did it succeed?
pub fn job_finished(job: &Job) -> Option<bool> {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| {
            cs.iter()
                .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")
        })
        .map(|c| c.type_ == "Complete")
}

/// What the controller should do at `now` (ignoring history and status bookkeeping).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nothing is due; look again after this long.
    Wait(Duration),
    /// Create the Job for this scheduled time (after replacing active ones if `replace`).
    Create {
        /// The scheduled time.
        scheduled: Timestamp,
        /// Delete active Jobs first (`Replace`).
        replace: bool,
    },
    /// The most recent time was missed by more than the starting deadline.
    Missed(Timestamp),
    /// `Forbid` and a Job is still running.
    Forbidden(Timestamp),
}

/// Decide what to do (pure): `has_active` says whether a Job of this
/// CronJob is still running.
pub fn next_action(
    cj: &CronJob,
    schedule: &Schedule,
    has_active: bool,
    now: Timestamp,
) -> (Decision, usize) {
    let spec = cj.spec.as_ref();
    let mut earliest = cj
        .status
        .as_ref()
        .and_then(|s| s.last_schedule_time.as_ref())
        .or(cj.metadata.creation_timestamp.as_ref())
        .map_or(now, |t| t.0);
    let deadline = spec.and_then(|s| s.starting_deadline_seconds);
    if let Some(d) = deadline {
        if let Ok(t) = Timestamp::from_second(now.as_second() - d) {
            earliest = earliest.max(t);
        }
    }
    let wait = |after: Timestamp| {
        schedule
            .next_after(after)
            .map(|n| {
                let ms = n.as_millisecond() - now.as_millisecond();
                Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0) + 100)
            })
            .unwrap_or(Duration::from_secs(3600))
    };
    let (recent, missed) = schedule.most_recent(earliest, now, MAX_MISSED);
    let Some(scheduled) = recent else {
        return (Decision::Wait(wait(now)), missed);
    };
    if let Some(d) = deadline {
        if scheduled.as_second() + d < now.as_second() {
            return (Decision::Missed(scheduled), missed);
        }
    }
    let policy = spec
        .and_then(|s| s.concurrency_policy.as_deref())
        .unwrap_or("Allow");
    if has_active && policy == "Forbid" {
        return (Decision::Forbidden(scheduled), missed);
    }
    (
        Decision::Create {
            scheduled,
            replace: has_active && policy == "Replace",
        },
        missed,
    )
}

fn job_ref(job: &Job) -> ObjectReference {
    ObjectReference {
        api_version: Some("batch/v1".into()),
        kind: Some("Job".into()),
        name: job.metadata.name.clone(),
        namespace: job.metadata.namespace.clone(),
        uid: job.metadata.uid.clone(),
        resource_version: job.metadata.resource_version.clone(),
        ..Default::default()
    }
}

/// The Job for `scheduled` built from the CronJob's template.
pub fn job_for(cj: &CronJob, schedule: &Schedule, scheduled: Timestamp) -> Job {
    let tmpl = cj
        .spec
        .as_ref()
        .map(|s| s.job_template.clone())
        .unwrap_or_default();
    let tmeta = tmpl.metadata.unwrap_or_default();
    let mut annotations = tmeta.annotations.unwrap_or_default();
    let zoned = scheduled.to_zoned(schedule.time_zone().clone());
    annotations.insert(
        SCHEDULED_TIMESTAMP.into(),
        zoned.strftime("%Y-%m-%dT%H:%M:%S%:z").to_string(),
    );
    Job {
        metadata: ObjectMeta {
            name: Some(job_name(&cj.name_any(), scheduled)),
            namespace: cj.namespace(),
            labels: tmeta.labels,
            annotations: Some(annotations),
            owner_references: Some(vec![util::owner_ref("batch/v1", "CronJob", &cj.metadata)]),
            ..Default::default()
        },
        spec: tmpl.spec,
        status: None,
    }
}

/// Delete a Job of the CronJob (and its pods, in the background), recording
/// `SuccessfulDelete`; one already gone is no error.
async fn delete_job(
    ctx: &Context,
    api: &Api<Job>,
    reference: &ObjectReference,
    name: &str,
) -> Result<(), kube::Error> {
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => {
            let msg = format!("Deleted job {name}");
            ctx.recorder
                .publish(reference, EventType::Normal, "SuccessfulDelete", &msg)
                .await;
            Ok(())
        }
        Err(e) if util::is_status(&e, 404) => Ok(()),
        Err(e) => Err(e),
    }
}

async fn reconcile(cj: Arc<CronJob>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let ns = cj.namespace().unwrap_or_default();
    let name = cj.name_any();
    let Some(cj) = util::get_live(&ctx.client, cj.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let uid = cj.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = cj.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    let reference = Recorder::reference(cj.as_ref());
    let job_api: Api<Job> = Api::namespaced(ctx.client.clone(), &ns);
    let cj_api: Api<CronJob> = Api::namespaced(ctx.client.clone(), &ns);
    let mut jobs = util::list_controlled(&job_api, &ListParams::default(), &uid).await?;
    let old = cj.status.clone().unwrap_or_default();
    let mut status = old.clone();
    let was_active: Vec<String> = old
        .active
        .iter()
        .flatten()
        .filter_map(|r| r.uid.clone())
        .collect();

    // Bookkeeping: active list, completed Jobs, lastSuccessfulTime.
    let mut active = Vec::new();
    for j in &jobs {
        let juid = j.metadata.uid.clone().unwrap_or_default();
        match job_finished(j) {
            None if j.metadata.deletion_timestamp.is_none() => active.push(job_ref(j)),
            None => {}
            Some(ok) => {
                if was_active.contains(&juid) {
                    let msg = format!(
                        "Saw completed job: {}, condition: {}",
                        j.name_any(),
                        if ok { "Complete" } else { "Failed" }
                    );
                    ctx.recorder
                        .publish(&reference, EventType::Normal, "SawCompletedJob", &msg)
                        .await;
                }
                if ok {
                    let done = j.status.as_ref().and_then(|s| s.completion_time.clone());
                    if done.as_ref().map(|t| t.0)
                        > status.last_successful_time.as_ref().map(|t| t.0)
                    {
                        status.last_successful_time = done;
                    }
                }
            }
        }
    }

    // History limits: delete the oldest finished Jobs beyond them.
    jobs.sort_by_key(|j| j.metadata.creation_timestamp.as_ref().map(|t| t.0));
    for (want_ok, limit) in [
        (true, spec.successful_jobs_history_limit.unwrap_or(3)),
        (false, spec.failed_jobs_history_limit.unwrap_or(1)),
    ] {
        let done: Vec<&Job> = jobs
            .iter()
            .filter(|j| job_finished(j) == Some(want_ok) && j.metadata.deletion_timestamp.is_none())
            .collect();
        let limit = usize::try_from(limit.max(0)).unwrap_or(0);
        for j in done.iter().take(done.len().saturating_sub(limit)) {
            delete_job(&ctx, &job_api, &reference, &j.name_any()).await?;
        }
    }

    let mut requeue = Duration::from_secs(300);
    let suspended = spec.suspend.unwrap_or(false);
    if !suspended && cj.metadata.deletion_timestamp.is_none() {
        match Schedule::parse(&spec.schedule, spec.time_zone.as_deref()) {
            Err(e) => {
                let msg = format!("unparseable schedule: {:?} : {e}", spec.schedule);
                ctx.recorder
                    .publish(&reference, EventType::Warning, "UnparseableSchedule", &msg)
                    .await;
            }
            Ok(schedule) => {
                let now = Timestamp::now();
                let (decision, missed) = next_action(&cj, &schedule, !active.is_empty(), now);
                if missed >= MAX_MISSED {
                    ctx.recorder
                        .publish(
                            &reference,
                            EventType::Warning,
                            "TooManyMissedTimes",
                            "too many missed start times. Set or decrease .spec.startingDeadlineSeconds or check clock skew",
                        )
                        .await;
                }
                let next_wait = |from: Timestamp| {
                    schedule
                        .next_after(from)
                        .map_or(Duration::from_secs(300), |n| {
                            let ms = n.as_millisecond() - now.as_millisecond();
                            Duration::from_millis(u64::try_from(ms.max(0)).unwrap_or(0) + 100)
                        })
                };
                match decision {
                    Decision::Wait(d) => requeue = d,
                    Decision::Missed(t) => {
                        let msg = format!(
                            "Missed scheduled time to start a job: {}",
                            t.strftime("%Y-%m-%dT%H:%M:%SZ")
                        );
                        ctx.recorder
                            .publish(&reference, EventType::Warning, "MissSchedule", &msg)
                            .await;
                        requeue = next_wait(now);
                    }
                    Decision::Forbidden(_) => {
                        // Looked at again when the running Job finishes (owned watch).
                        requeue = next_wait(now);
                    }
                    Decision::Create { scheduled, replace } => {
                        if replace {
                            for r in active.drain(..) {
                                let jn = r.name.clone().unwrap_or_default();
                                delete_job(&ctx, &job_api, &reference, &jn).await?;
                            }
                        }
                        let job = job_for(&cj, &schedule, scheduled);
                        match job_api.create(&PostParams::default(), &job).await {
                            Ok(j) => {
                                let msg = format!("Created job {}", j.name_any());
                                ctx.recorder
                                    .publish(
                                        &reference,
                                        EventType::Normal,
                                        "SuccessfulCreate",
                                        &msg,
                                    )
                                    .await;
                                active.push(job_ref(&j));
                            }
                            Err(e) if util::is_status(&e, 409) => {}
                            Err(e) => {
                                let msg =
                                    format!("Error creating job: {}", util::error_message(&e));
                                ctx.recorder
                                    .publish(&reference, EventType::Warning, "FailedCreate", &msg)
                                    .await;
                                return Err(e.into());
                            }
                        }
                        status.last_schedule_time = Some(Time(scheduled));
                        requeue = next_wait(now);
                    }
                }
            }
        }
    }

    status.active = (!active.is_empty()).then_some(active);
    if status != old {
        let mut v = serde_json::to_value(&status).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.entry("active").or_insert(serde_json::Value::Null);
        }
        if !util::patch_status(&cj_api, &name, &v).await? {
            return Ok(Action::await_change());
        }
    }
    Ok(Action::requeue(requeue))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::batch::v1::{CronJobSpec, CronJobStatus};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn cj(policy: &str, deadline: Option<i64>, last: Option<&str>) -> CronJob {
        CronJob {
            metadata: ObjectMeta {
                name: Some("tick".into()),
                namespace: Some("default".into()),
                uid: Some("u".into()),
                creation_timestamp: Some(Time(ts("2024-01-01T00:00:10Z"))),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule: "*/1 * * * *".into(),
                concurrency_policy: Some(policy.into()),
                starting_deadline_seconds: deadline,
                ..Default::default()
            }),
            status: Some(CronJobStatus {
                last_schedule_time: last.map(|l| Time(ts(l))),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn fires_on_schedule_with_a_fake_clock() {
        let s = Schedule::parse("*/1 * * * *", None).unwrap();
        let c = cj("Allow", None, None);
        let (d, _) = next_action(&c, &s, false, ts("2024-01-01T00:00:50Z"));
        assert_eq!(d, Decision::Wait(Duration::from_millis(10_100)));
        let (d, _) = next_action(&c, &s, false, ts("2024-01-01T00:01:02Z"));
        assert_eq!(
            d,
            Decision::Create {
                scheduled: ts("2024-01-01T00:01:00Z"),
                replace: false
            }
        );
        // Already scheduled at 00:01: nothing more until 00:02.
        let c = cj("Allow", None, Some("2024-01-01T00:01:00Z"));
        let (d, _) = next_action(&c, &s, false, ts("2024-01-01T00:01:30Z"));
        assert!(matches!(d, Decision::Wait(_)));
    }

    #[test]
    fn concurrency_and_deadline() {
        let s = Schedule::parse("*/1 * * * *", None).unwrap();
        let now = ts("2024-01-01T00:05:05Z");
        let last = Some("2024-01-01T00:04:00Z");
        assert_eq!(
            next_action(&cj("Forbid", None, last), &s, true, now).0,
            Decision::Forbidden(ts("2024-01-01T00:05:00Z"))
        );
        assert_eq!(
            next_action(&cj("Replace", None, last), &s, true, now).0,
            Decision::Create {
                scheduled: ts("2024-01-01T00:05:00Z"),
                replace: true
            }
        );
        // A 3 s starting deadline: 00:05:00 was missed at 00:05:05.
        assert_eq!(
            next_action(&cj("Allow", Some(3), last), &s, false, now).0,
            Decision::Wait(Duration::from_millis(55_100))
        );
        assert_eq!(
            next_action(&cj("Allow", Some(10), last), &s, false, now).0,
            Decision::Create {
                scheduled: ts("2024-01-01T00:05:00Z"),
                replace: false
            }
        );
    }

    #[test]
    fn job_names_and_annotation() {
        let s = Schedule::parse("*/1 * * * *", None).unwrap();
        let c = cj("Allow", None, None);
        let j = job_for(&c, &s, ts("2024-01-01T00:01:00Z"));
        assert_eq!(j.metadata.name.as_deref(), Some("tick-28401121"));
        assert_eq!(
            j.metadata.annotations.unwrap()[SCHEDULED_TIMESTAMP],
            "2024-01-01T00:01:00+00:00"
        );
        assert_eq!(j.metadata.owner_references.unwrap()[0].kind, "CronJob");
    }
}
