//! Workload defaults: Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController, Job (with its generated selector) and CronJob.

use serde_json::{json, Value};

use super::other::default_pvc;
use super::pod::default_pod_template;
use super::{
    JOB_CONTROLLER_UID_LABEL, JOB_NAME_LABEL, LEGACY_JOB_CONTROLLER_UID_LABEL,
    LEGACY_JOB_NAME_LABEL,
};
use crate::validation::util::{child_obj, ensure_obj, get, set_default, str_at};

fn default_template_at(spec: &mut Value) {
    default_pod_template(child_obj(spec, "template"));
}

/// apps/v1 `SetDefaults_Deployment`.
pub(crate) fn default_deployment(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    set_default(spec, "replicas", json!(1));
    let strategy = child_obj(spec, "strategy");
    set_default(strategy, "type", json!("RollingUpdate"));
    if str_at(strategy, &["type"]) == "RollingUpdate" {
        let ru = child_obj(strategy, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!("25%"));
        set_default(ru, "maxSurge", json!("25%"));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    set_default(spec, "progressDeadlineSeconds", json!(600));
    default_template_at(spec);
}

/// apps/v1 `SetDefaults_ReplicaSet`.
pub(crate) fn default_replica_set(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    set_default(spec, "replicas", json!(1));
    default_template_at(spec);
}

/// apps/v1 `SetDefaults_StatefulSet` (with the PVC retention policy of 1.33).
pub(crate) fn default_stateful_set(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    set_default(spec, "podManagementPolicy", json!("OrderedReady"));
    let us = child_obj(spec, "updateStrategy");
    if str_at(us, &["type"]).is_empty() {
        ensure_obj(us).insert("type".to_string(), json!("RollingUpdate"));
        child_obj(us, "rollingUpdate");
    }
    if str_at(us, &["type"]) == "RollingUpdate" {
        if let Some(ru) = us.get_mut("rollingUpdate").filter(|r| r.is_object()) {
            set_default(ru, "partition", json!(0));
        }
    }
    let policy = child_obj(spec, "persistentVolumeClaimRetentionPolicy");
    set_default(policy, "whenDeleted", json!("Retain"));
    set_default(policy, "whenScaled", json!("Retain"));
    set_default(spec, "replicas", json!(1));
    set_default(spec, "revisionHistoryLimit", json!(10));
    if let Some(claims) = spec
        .get_mut("volumeClaimTemplates")
        .and_then(Value::as_array_mut)
    {
        for c in claims {
            default_pvc(c);
        }
    }
    default_template_at(spec);
}

/// apps/v1 `SetDefaults_DaemonSet`.
pub(crate) fn default_daemon_set(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    let us = child_obj(spec, "updateStrategy");
    set_default(us, "type", json!("RollingUpdate"));
    if str_at(us, &["type"]) == "RollingUpdate" {
        let ru = child_obj(us, "rollingUpdate");
        set_default(ru, "maxUnavailable", json!(1));
        set_default(ru, "maxSurge", json!(0));
    }
    set_default(spec, "revisionHistoryLimit", json!(10));
    default_template_at(spec);
}

/// core/v1 `SetDefaults_ReplicationController`: selector and labels from the
/// template's labels, one replica.
pub(crate) fn default_replication_controller(obj: &mut Value) {
    let labels = get(obj, &["spec", "template", "metadata", "labels"])
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = labels {
        let spec = child_obj(obj, "spec");
        if spec
            .get("selector")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            ensure_obj(spec).insert("selector".to_string(), labels.clone());
        }
        let meta = child_obj(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            ensure_obj(meta).insert("labels".to_string(), labels);
        }
    }
    let spec = child_obj(obj, "spec");
    set_default(spec, "replicas", json!(1));
    if spec.get("template").is_some_and(Value::is_object) {
        default_template_at(spec);
    }
}

/// batch/v1 `SetDefaults_Job` plus the create strategy's generated selector
/// (unless `manualSelector: true`), which needs `metadata.uid`.
pub(crate) fn default_job(obj: &mut Value) {
    let name = str_at(obj, &["metadata", "name"]).to_string();
    let uid = str_at(obj, &["metadata", "uid"]).to_string();
    let manual = get(obj, &["spec", "manualSelector"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let spec = child_obj(obj, "spec");
    if !manual && !uid.is_empty() {
        let labels = ensure_obj(child_obj(
            child_obj(child_obj(spec, "template"), "metadata"),
            "labels",
        ));
        for key in [LEGACY_JOB_NAME_LABEL, JOB_NAME_LABEL] {
            labels.entry(key).or_insert_with(|| json!(name));
        }
        for key in [LEGACY_JOB_CONTROLLER_UID_LABEL, JOB_CONTROLLER_UID_LABEL] {
            labels.entry(key).or_insert_with(|| json!(uid));
        }
        let match_labels = ensure_obj(child_obj(child_obj(spec, "selector"), "matchLabels"));
        match_labels
            .entry(JOB_CONTROLLER_UID_LABEL)
            .or_insert_with(|| json!(uid));
    }
    let has = |spec: &Value, k: &str| spec.get(k).is_some_and(|v| !v.is_null());
    if !has(spec, "completions") && !has(spec, "parallelism") {
        ensure_obj(spec).insert("completions".to_string(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    let backoff = if has(spec, "backoffLimitPerIndex") {
        i64::from(i32::MAX)
    } else {
        6
    };
    set_default(spec, "backoffLimit", json!(backoff));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    let replacement = if has(spec, "podFailurePolicy") {
        "Failed"
    } else {
        "TerminatingOrFailed"
    };
    set_default(spec, "podReplacementPolicy", json!(replacement));
    default_template_at(spec);
    // metadata.labels default to the template's labels
    let tmpl_labels = get(obj, &["spec", "template", "metadata", "labels"])
        .filter(|l| l.is_object())
        .cloned();
    if let Some(labels) = tmpl_labels {
        let meta = child_obj(obj, "metadata");
        if meta
            .get("labels")
            .and_then(Value::as_object)
            .is_none_or(|m| m.is_empty())
        {
            ensure_obj(meta).insert("labels".to_string(), labels);
        }
    }
}

/// batch/v1 `SetDefaults_CronJob` (and pod defaults in the job template).
pub(crate) fn default_cron_job(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    set_default(spec, "concurrencyPolicy", json!("Allow"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "successfulJobsHistoryLimit", json!(3));
    set_default(spec, "failedJobsHistoryLimit", json!(1));
    let job_spec = child_obj(child_obj(spec, "jobTemplate"), "spec");
    default_template_at(job_spec);
}
