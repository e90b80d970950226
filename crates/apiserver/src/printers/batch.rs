//! batch/v1: jobs and cron jobs.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::{
    age, arr_at, at, count_cell, format_label_selector, int_at, layout_containers, name, opt_bool,
    opt_int, opt_str, since, str_at, timestamp,
};
use super::{col, human_duration, wide, Column, AGE, CONTAINERS, IMAGES, NAME};

pub(crate) const JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "Status of the job."),
    col(
        "Completions",
        "string",
        "The number of pods which reached phase Succeeded.",
    ),
    col("Duration", "string", "Time required to complete the job."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "A label query over pods that should match the pod count.",
    ),
];

pub(crate) const CRON_JOB_COLUMNS: &[Column] = &[
    NAME,
    col("Schedule", "string", "The schedule in Cron format, see https://en.wikipedia.org/wiki/Cron."),
    col("Timezone", "string", "The time zone name for the given schedule, see https://en.wikipedia.org/wiki/List_of_tz_database_time_zones."),
    col("Suspend", "boolean", "This flag tells the controller to suspend subsequent executions, it does not apply to already started executions."),
    col("Active", "integer", "A list of pointers to currently running jobs."),
    col("Last Schedule", "string", "Information when was the last time the job was successfully scheduled."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that should match the pod count."),
];

/// Upstream's `hasJobCondition`: the first condition of that type is True.
fn has_condition(job: &Value, type_: &str) -> bool {
    arr_at(job, "/status/conditions")
        .iter()
        .find(|c| str_at(c, "/type") == type_)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

/// The STATUS cell of a job.
pub(crate) fn job_status(job: &Value) -> &'static str {
    if has_condition(job, "Complete") {
        "Complete"
    } else if has_condition(job, "Failed") {
        "Failed"
    } else if at(job, "/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else if has_condition(job, "Suspended") {
        "Suspended"
    } else if has_condition(job, "FailureTarget") {
        "FailureTarget"
    } else {
        "Running"
    }
}

/// The COMPLETIONS cell: `succeeded/completions`, or for work-queue jobs
/// `succeeded/1 of parallelism`.
fn completions(job: &Value) -> String {
    let succeeded = int_at(job, "/status/succeeded");
    let completions = opt_int(job, "/spec/completions");
    let parallelism = opt_int(job, "/spec/parallelism");
    match (completions, parallelism) {
        (Some(c), _) => format!("{succeeded}/{c}"),
        // Defaulting sets completions=1 when neither is given.
        (None, None) => format!("{succeeded}/1"),
        (None, Some(p)) if p > 1 => format!("{succeeded}/1 of {p}"),
        (None, Some(_)) => format!("{succeeded}/1"),
    }
}

pub(crate) fn job_cells(job: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let duration = match (
        timestamp(job, "/status/startTime"),
        timestamp(job, "/status/completionTime"),
    ) {
        (None, _) => String::new(),
        (Some(start), None) => human_duration(now.signed_duration_since(start)),
        (Some(start), Some(end)) => human_duration(end.signed_duration_since(start)),
    };
    let (names, images) = layout_containers(arr_at(job, "/spec/template/spec/containers"));
    vec![
        name(job),
        Value::from(job_status(job)),
        Value::from(completions(job)),
        Value::from(duration),
        age(job, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(at(job, "/spec/selector"))),
    ]
}

pub(crate) fn cron_job_cells(cj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let last_schedule = match at(cj, "/status/lastScheduleTime") {
        Some(_) => since(timestamp(cj, "/status/lastScheduleTime"), now),
        None => "<none>".to_string(),
    };
    let suspend = match opt_bool(cj, "/spec/suspend") {
        Some(true) => "True",
        Some(false) => "False",
        None => "<unset>",
    };
    let (names, images) = layout_containers(arr_at(
        cj,
        "/spec/jobTemplate/spec/template/spec/containers",
    ));
    vec![
        name(cj),
        Value::from(str_at(cj, "/spec/schedule")),
        Value::from(opt_str(cj, "/spec/timeZone").unwrap_or("<none>")),
        Value::from(suspend),
        count_cell(arr_at(cj, "/status/active").len()),
        Value::from(last_schedule),
        age(cj, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(at(
            cj,
            "/spec/jobTemplate/spec/selector",
        ))),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    fn job(spec: Value, status: Value) -> Value {
        let mut spec = spec;
        spec["template"] = json!({"spec": {"containers": [{"name": "pi", "image": "perl"}], "restartPolicy": "Never"}});
        spec["selector"] = json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "abc"}});
        json!({"metadata": {"name": "pi", "creationTimestamp": "2024-05-01T11:00:00Z"}, "spec": spec, "status": status})
    }

    #[test]
    fn job_rows() {
        let cases = [
            (
                "complete",
                job(
                    json!({"completions": 1, "parallelism": 1}),
                    json!({"succeeded": 1, "startTime": "2024-05-01T11:00:00Z", "completionTime": "2024-05-01T11:00:42Z",
                           "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}),
                ),
                ["pi", "Complete", "1/1", "42s", "60m"],
            ),
            (
                "running",
                job(
                    json!({"completions": 5, "parallelism": 2}),
                    json!({"succeeded": 2, "active": 2, "startTime": "2024-05-01T11:55:00Z"}),
                ),
                ["pi", "Running", "2/5", "5m", "60m"],
            ),
            (
                "work queue",
                job(json!({"parallelism": 3}), json!({})),
                ["pi", "Running", "0/1 of 3", "", "60m"],
            ),
            (
                "failed",
                job(
                    json!({"completions": 1}),
                    json!({"failed": 6, "startTime": "2024-05-01T11:00:00Z",
                           "conditions": [{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}]}),
                ),
                ["pi", "Failed", "0/1", "60m", "60m"],
            ),
            (
                "suspended",
                job(
                    json!({"suspend": true}),
                    json!({"conditions": [{"type": "Suspended", "status": "True"}]}),
                ),
                ["pi", "Suspended", "0/1", "", "60m"],
            ),
            (
                "failure target",
                job(
                    json!({}),
                    json!({"conditions": [{"type": "FailureTarget", "status": "True"}]}),
                ),
                ["pi", "FailureTarget", "0/1", "", "60m"],
            ),
        ];
        for (what, j, want) in cases {
            let c = job_cells(&j, now());
            assert_eq!(c[..5], want.map(Value::from), "{what}");
            assert_eq!(
                c[5..],
                [
                    json!("pi"),
                    json!("perl"),
                    json!("batch.kubernetes.io/controller-uid=abc")
                ],
                "{what}"
            );
        }
        let mut deleting = job(json!({}), json!({}));
        deleting["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(job_cells(&deleting, now())[1], json!("Terminating"));
    }

    #[test]
    fn cron_job_rows() {
        let cj = json!({"metadata": {"name": "hello", "creationTimestamp": "2024-04-29T12:00:00Z"},
            "spec": {"schedule": "*/1 * * * *", "timeZone": "Etc/UTC", "suspend": false,
                     "jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "hello", "image": "busybox"}]}}}}},
            "status": {"active": [{"name": "hello-1"}], "lastScheduleTime": "2024-05-01T11:59:00Z"}});
        assert_eq!(
            cron_job_cells(&cj, now()),
            vec![
                json!("hello"),
                json!("*/1 * * * *"),
                json!("Etc/UTC"),
                json!("False"),
                json!(1),
                json!("60s"),
                json!("2d"),
                json!("hello"),
                json!("busybox"),
                json!("<none>")
            ]
        );
        let bare = json!({"metadata": {"name": "x"}, "spec": {"schedule": "@daily"}});
        let c = cron_job_cells(&bare, now());
        assert_eq!(
            &c[2..6],
            &[json!("<none>"), json!("<unset>"), json!(0), json!("<none>")]
        );
    }
}
