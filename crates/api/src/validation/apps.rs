//! Workload validation: Deployment, ReplicaSet, StatefulSet, DaemonSet,
//! ReplicationController, Job and CronJob.

use serde_json::{Map, Value};

use super::cron::parse_schedule;
use super::meta::{immutable, nonnegative, validate_labels};
use super::names;
use super::pod::validate_pod_template_spec;
use super::util::{arr_at, bool_at, get, has, int_at, obj_at, str_at, Path};
use super::FieldError;

const SELECTOR_MISMATCH: &str = "`selector` does not match template `labels`";

/// Does a LabelSelector (JSON) select `labels`? `None` means nothing is
/// selected (a missing selector), as upstream's `LabelSelectorAsSelector(nil)`.
pub(crate) fn selector_matches(selector: Option<&Value>, labels: &Map<String, Value>) -> bool {
    let Some(sel) = selector.filter(|s| !s.is_null()) else {
        return false;
    };
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    for (k, v) in obj_at(sel, &["matchLabels"]) {
        if label(k) != v.as_str() {
            return false;
        }
    }
    for e in arr_at(sel, &["matchExpressions"]) {
        let key = str_at(e, &["key"]);
        let values: Vec<&str> = arr_at(e, &["values"])
            .iter()
            .filter_map(Value::as_str)
            .collect();
        let ok = match str_at(e, &["operator"]) {
            "In" => label(key).is_some_and(|v| values.contains(&v)),
            "NotIn" => label(key).is_none_or(|v| !values.contains(&v)),
            "Exists" => label(key).is_some(),
            "DoesNotExist" => label(key).is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn selector_is_empty(sel: &Value) -> bool {
    obj_at(sel, &["matchLabels"]).is_empty() && arr_at(sel, &["matchExpressions"]).is_empty()
}

/// Upstream `ValidateLabelSelector`.
pub(crate) fn validate_label_selector(sel: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_labels(obj_at(sel, &["matchLabels"]), &path.child("matchLabels"));
    for (i, e) in arr_at(sel, &["matchExpressions"]).iter().enumerate() {
        let p = path.child("matchExpressions").index(i);
        let op = str_at(e, &["operator"]);
        let values = arr_at(e, &["values"]);
        match op {
            "In" | "NotIn" => {
                if values.is_empty() {
                    errs.push(FieldError::required(
                        p.child("values"),
                        "must be specified when `operator` is 'In' or 'NotIn'",
                    ));
                }
            }
            "Exists" | "DoesNotExist" => {
                if !values.is_empty() {
                    errs.push(FieldError::forbidden(
                        p.child("values"),
                        "may not be specified when `operator` is 'Exists' or 'DoesNotExist'",
                    ));
                }
            }
            other => errs.push(FieldError::invalid(
                p.child("operator"),
                other,
                "not a valid selector operator",
            )),
        }
        let key = str_at(e, &["key"]);
        for msg in names::qualified_name_errors(key) {
            errs.push(FieldError::invalid(p.child("key"), key, msg));
        }
        for v in values {
            let v = v.as_str().unwrap_or("");
            for msg in names::label_value_errors(v) {
                errs.push(FieldError::invalid(p.child("values").index(0), v, msg));
            }
        }
    }
    errs
}

/// Selector required, valid, non-empty, and matching the template labels; the
/// template validated. `kind` goes into "empty selector is invalid for <kind>".
fn validate_selector_and_template(spec: &Value, sp: &Path, kind: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let selector = spec.get("selector").filter(|s| !s.is_null());
    match selector {
        None => errs.push(FieldError::required(sp.child("selector"), "")),
        Some(sel) => {
            errs.extend(validate_label_selector(sel, &sp.child("selector")));
            if selector_is_empty(sel) {
                errs.push(FieldError::invalid(
                    sp.child("selector"),
                    sel.clone(),
                    format!("empty selector is invalid for {kind}"),
                ));
            }
        }
    }
    let tmpl = spec.get("template").unwrap_or(&Value::Null);
    let tp = sp.child("template");
    let labels = obj_at(tmpl, &["metadata", "labels"]);
    let non_empty = selector.is_some_and(|s| !selector_is_empty(s));
    if non_empty && !selector_matches(selector, labels) {
        errs.push(FieldError::invalid(
            tp.child("metadata").child("labels"),
            Value::Object(labels.clone()),
            SELECTOR_MISMATCH,
        ));
    }
    errs.extend(validate_pod_template_spec(tmpl, &tp));
    errs
}

/// The template's restartPolicy must be Always and activeDeadlineSeconds unset.
fn validate_long_running_template(spec: &Value, sp: &Path, kind: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let tsp = sp.child("template").child("spec");
    let rp = str_at(spec, &["template", "spec", "restartPolicy"]);
    if rp != "Always" {
        errs.push(FieldError::not_supported(
            tsp.child("restartPolicy"),
            rp,
            &["Always"],
        ));
    }
    if has(spec, &["template", "spec", "activeDeadlineSeconds"]) {
        errs.push(FieldError::forbidden(
            tsp.child("activeDeadlineSeconds"),
            format!("activeDeadlineSeconds in {kind} is not Supported"),
        ));
    }
    errs
}

fn is_percent(s: &str) -> bool {
    s.strip_suffix('%')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The numeric part of an IntOrString (`25%` is 25).
fn int_or_percent_value(v: Option<&Value>) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => s.trim_end_matches('%').parse().unwrap_or(0),
        _ => 0,
    }
}

/// Upstream `ValidatePositiveIntOrPercent` and `IsNotMoreThan100Percent`.
fn validate_int_or_percent(v: Option<&Value>, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    match v {
        Some(Value::String(s)) => {
            if !is_percent(s) {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must be an integer or percentage (e.g '5%')",
                ));
            } else if int_or_percent_value(v) > 100 {
                errs.push(FieldError::invalid(
                    path,
                    s.as_str(),
                    "must not be greater than 100%",
                ));
            }
        }
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            if n < 0 {
                errs.push(FieldError::invalid(
                    path,
                    n,
                    "must be greater than or equal to 0",
                ));
            }
        }
        _ => {}
    }
    errs
}

fn replicas_and_counts(spec: &Value, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        errs.extend(nonnegative(spec, &[f], &sp.child(f)));
    }
    errs
}

/// A Deployment.
pub(crate) fn validate_deployment(obj: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = replicas_and_counts(spec, &sp);
    errs.extend(validate_selector_and_template(spec, &sp, "deployment"));
    errs.extend(validate_long_running_template(spec, &sp, "ReplicaSet"));

    let strategy = spec.get("strategy").unwrap_or(&Value::Null);
    let stp = sp.child("strategy");
    match str_at(strategy, &["type"]) {
        "Recreate" => {
            if has(strategy, &["rollingUpdate"]) {
                errs.push(FieldError::forbidden(
                    stp.child("rollingUpdate"),
                    "may not be specified when strategy `type` is 'Recreate'",
                ));
            }
        }
        "RollingUpdate" => match strategy.get("rollingUpdate").filter(|r| !r.is_null()) {
            None => errs.push(FieldError::required(
                stp.child("rollingUpdate"),
                "this should be defaulted and never be nil",
            )),
            Some(ru) => {
                let rp = stp.child("rollingUpdate");
                errs.extend(validate_int_or_percent(
                    ru.get("maxUnavailable"),
                    &rp.child("maxUnavailable"),
                ));
                errs.extend(validate_int_or_percent(
                    ru.get("maxSurge"),
                    &rp.child("maxSurge"),
                ));
                if int_or_percent_value(ru.get("maxUnavailable")) == 0
                    && int_or_percent_value(ru.get("maxSurge")) == 0
                {
                    errs.push(FieldError::invalid(
                        rp.child("maxUnavailable"),
                        ru.get("maxUnavailable").cloned().unwrap_or(Value::from(0)),
                        "may not be 0 when `maxSurge` is 0",
                    ));
                }
            }
        },
        other => errs.push(FieldError::not_supported(
            stp,
            other,
            &["Recreate", "RollingUpdate"],
        )),
    }
    if let Some(pds) = int_at(spec, &["progressDeadlineSeconds"]) {
        errs.extend(nonnegative(
            spec,
            &["progressDeadlineSeconds"],
            &sp.child("progressDeadlineSeconds"),
        ));
        if pds <= int_at(spec, &["minReadySeconds"]).unwrap_or(0) {
            errs.push(FieldError::invalid(
                sp.child("progressDeadlineSeconds"),
                pds,
                "must be greater than minReadySeconds",
            ));
        }
    }
    errs
}

/// A ReplicaSet.
pub(crate) fn validate_replica_set(obj: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = replicas_and_counts(spec, &sp);
    errs.extend(validate_selector_and_template(spec, &sp, "deployment"));
    errs.extend(validate_long_running_template(spec, &sp, "ReplicaSet"));
    errs
}

/// A StatefulSet.
pub(crate) fn validate_stateful_set(obj: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    match str_at(spec, &["podManagementPolicy"]) {
        "OrderedReady" | "Parallel" => {}
        "" => errs.push(FieldError::required(sp.child("podManagementPolicy"), "")),
        other => errs.push(FieldError::invalid(
            sp.child("podManagementPolicy"),
            other,
            "must be 'OrderedReady' or 'Parallel'",
        )),
    }
    let usp = sp.child("updateStrategy");
    match str_at(spec, &["updateStrategy", "type"]) {
        "" => errs.push(FieldError::required(&usp, "")),
        "OnDelete" => {
            if let Some(ru) =
                get(spec, &["updateStrategy", "rollingUpdate"]).filter(|r| !r.is_null())
            {
                errs.push(FieldError::invalid(
                    usp.child("rollingUpdate"),
                    ru.clone(),
                    "only allowed for updateStrategy 'RollingUpdate'",
                ));
            }
        }
        "RollingUpdate" => {
            let rp = usp.child("rollingUpdate");
            errs.extend(nonnegative(
                spec,
                &["updateStrategy", "rollingUpdate", "partition"],
                &rp.child("partition"),
            ));
            if let Some(mu) = get(spec, &["updateStrategy", "rollingUpdate", "maxUnavailable"]) {
                errs.extend(validate_int_or_percent(
                    Some(mu),
                    &rp.child("maxUnavailable"),
                ));
                if int_or_percent_value(Some(mu)) == 0 {
                    errs.push(FieldError::invalid(
                        rp.child("maxUnavailable"),
                        mu.clone(),
                        "must be greater than 0",
                    ));
                }
            }
        }
        other => errs.push(FieldError::invalid(
            &usp,
            other,
            "must be 'RollingUpdate' or 'OnDelete'",
        )),
    }
    let pp = sp.child("persistentVolumeClaimRetentionPolicy");
    for f in ["whenDeleted", "whenScaled"] {
        let v = str_at(spec, &["persistentVolumeClaimRetentionPolicy", f]);
        if !v.is_empty() && v != "Retain" && v != "Delete" {
            errs.push(FieldError::not_supported(
                pp.child(f),
                v,
                &["Retain", "Delete"],
            ));
        }
    }
    errs.extend(replicas_and_counts(spec, &sp));
    errs.extend(nonnegative(
        spec,
        &["ordinals", "start"],
        &sp.child("ordinals.start"),
    ));
    errs.extend(validate_selector_and_template(spec, &sp, "statefulset"));
    errs.extend(validate_long_running_template(spec, &sp, "StatefulSet"));
    errs
}

/// StatefulSet updates may change only replicas, ordinals, template,
/// updateStrategy, revisionHistoryLimit, the PVC retention policy and minReadySeconds.
pub(crate) fn validate_stateful_set_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut n = new.get("spec").cloned().unwrap_or(Value::Null);
    let o = old.get("spec").cloned().unwrap_or(Value::Null);
    if let (Some(nm), Some(om)) = (n.as_object_mut(), o.as_object()) {
        for f in [
            "replicas",
            "ordinals",
            "template",
            "updateStrategy",
            "revisionHistoryLimit",
            "persistentVolumeClaimRetentionPolicy",
            "minReadySeconds",
        ] {
            match om.get(f) {
                Some(v) => nm.insert(f.to_string(), v.clone()),
                None => nm.remove(f),
            };
        }
    }
    if n == o {
        Vec::new()
    } else {
        vec![FieldError::forbidden(
            Path::new("spec"),
            "updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden",
        )]
    }
}

/// A DaemonSet.
pub(crate) fn validate_daemon_set(obj: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = validate_selector_and_template(spec, &sp, "daemonset");
    errs.extend(validate_long_running_template(spec, &sp, "DaemonSet"));
    for f in [
        "minReadySeconds",
        "templateGeneration",
        "revisionHistoryLimit",
    ] {
        errs.extend(nonnegative(spec, &[f], &sp.child(f)));
    }
    let usp = sp.child("updateStrategy");
    match str_at(spec, &["updateStrategy", "type"]) {
        "OnDelete" => {}
        "RollingUpdate" => {
            match get(spec, &["updateStrategy", "rollingUpdate"]).filter(|r| !r.is_null()) {
                None => errs.push(FieldError::required(usp.child("rollingUpdate"), "")),
                Some(ru) => {
                    let rp = usp.child("rollingUpdate");
                    errs.extend(validate_int_or_percent(
                        ru.get("maxUnavailable"),
                        &rp.child("maxUnavailable"),
                    ));
                    errs.extend(validate_int_or_percent(
                        ru.get("maxSurge"),
                        &rp.child("maxSurge"),
                    ));
                    let unavailable = int_or_percent_value(ru.get("maxUnavailable")) != 0;
                    let surge = int_or_percent_value(ru.get("maxSurge")) != 0;
                    if unavailable && surge {
                        errs.push(FieldError::invalid(
                            rp.child("maxSurge"),
                            ru.get("maxSurge").cloned().unwrap_or(Value::Null),
                            "may not be set when maxUnavailable is non-zero",
                        ));
                    } else if !unavailable && !surge {
                        errs.push(FieldError::required(
                            rp.child("maxUnavailable"),
                            "cannot be 0 when maxSurge is 0",
                        ));
                    }
                }
            }
        }
        other => errs.push(FieldError::not_supported(
            usp,
            other,
            &["RollingUpdate", "OnDelete"],
        )),
    }
    errs
}

/// A ReplicationController (selector is a plain map).
pub(crate) fn validate_replication_controller(obj: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = Vec::new();
    errs.extend(nonnegative(
        spec,
        &["minReadySeconds"],
        &sp.child("minReadySeconds"),
    ));
    let selector = obj_at(spec, &["selector"]);
    if selector.is_empty() {
        errs.push(FieldError::required(sp.child("selector"), ""));
    }
    errs.extend(nonnegative(spec, &["replicas"], &sp.child("replicas")));
    let tp = sp.child("template");
    match spec.get("template").filter(|t| !t.is_null()) {
        None => errs.push(FieldError::required(&tp, "")),
        Some(tmpl) => {
            let labels = obj_at(tmpl, &["metadata", "labels"]);
            if !selector.is_empty() && selector.iter().any(|(k, v)| labels.get(k) != Some(v)) {
                errs.push(FieldError::invalid(
                    tp.child("metadata").child("labels"),
                    Value::Object(labels.clone()),
                    SELECTOR_MISMATCH,
                ));
            }
            errs.extend(validate_pod_template_spec(tmpl, &tp));
            errs.extend(validate_long_running_template(
                spec,
                &sp,
                "ReplicationController",
            ));
        }
    }
    errs
}

/// Selector immutability (apps/v1 Deployment, ReplicaSet, DaemonSet).
pub(crate) fn validate_selector_immutable(new: &Value, old: &Value) -> Vec<FieldError> {
    immutable(
        new,
        old,
        &["spec", "selector"],
        &Path::new("spec").child("selector"),
    )
    .into_iter()
    .collect()
}

/// Job spec checks shared by Jobs and CronJob job templates (upstream `validateJobSpec`).
fn validate_job_spec_common(spec: &Value, sp: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for f in [
        "parallelism",
        "completions",
        "activeDeadlineSeconds",
        "backoffLimit",
        "ttlSecondsAfterFinished",
    ] {
        errs.extend(nonnegative(spec, &[f], &sp.child(f)));
    }
    if has(spec, &["completionMode"]) {
        let mode = str_at(spec, &["completionMode"]);
        if mode != "NonIndexed" && mode != "Indexed" {
            errs.push(FieldError::not_supported(
                sp.child("completionMode"),
                mode,
                &["NonIndexed", "Indexed"],
            ));
        }
        if mode == "Indexed" && !has(spec, &["completions"]) {
            errs.push(FieldError::required(
                sp.child("completions"),
                "when completion mode is Indexed",
            ));
        }
    }
    let tmpl = spec.get("template").unwrap_or(&Value::Null);
    let tp = sp.child("template");
    errs.extend(validate_pod_template_spec(tmpl, &tp));
    let rp = str_at(tmpl, &["spec", "restartPolicy"]);
    if rp != "OnFailure" && rp != "Never" {
        errs.push(FieldError::not_supported(
            tp.child("spec").child("restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
    errs
}

/// A Job.
pub(crate) fn validate_job(obj: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let mut errs = validate_job_spec_common(spec, &sp);
    let selector = spec.get("selector").filter(|s| !s.is_null());
    match selector {
        None => errs.push(FieldError::required(sp.child("selector"), "")),
        Some(sel) => errs.extend(validate_label_selector(sel, &sp.child("selector"))),
    }
    let labels = obj_at(spec, &["template", "metadata", "labels"]);
    if !selector_matches(selector, labels) {
        errs.push(FieldError::invalid(
            sp.child("template").child("metadata").child("labels"),
            Value::Object(labels.clone()),
            SELECTOR_MISMATCH,
        ));
    }
    // a generated selector must select this job's uid
    let uid = str_at(obj, &["metadata", "uid"]);
    if !bool_at(spec, &["manualSelector"]) && !uid.is_empty() && selector.is_some() {
        let mut expected = Map::new();
        expected.insert(
            crate::defaults::JOB_CONTROLLER_UID_LABEL.to_string(),
            Value::from(uid),
        );
        if !selector_matches(selector, &expected) {
            errs.push(FieldError::invalid(
                sp.child("selector"),
                selector.cloned().unwrap_or(Value::Null),
                "`selector` not auto-generated",
            ));
        }
    }
    errs
}

/// Job updates: selector, completionMode and (unless suspended) the template
/// are immutable; completions too, except for elastic indexed jobs.
pub(crate) fn validate_job_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let sp = Path::new("spec");
    let mut errs = Vec::new();
    let elastic = str_at(new, &["spec", "completionMode"]) == "Indexed"
        && int_at(new, &["spec", "completions"]) == int_at(new, &["spec", "parallelism"]);
    if !elastic {
        errs.extend(immutable(
            new,
            old,
            &["spec", "completions"],
            &sp.child("completions"),
        ));
    }
    for f in [
        "selector",
        "completionMode",
        "podFailurePolicy",
        "backoffLimitPerIndex",
        "managedBy",
        "successPolicy",
    ] {
        errs.extend(immutable(new, old, &["spec", f], &sp.child(f)));
    }
    let mut new_tmpl = get(new, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    let old_tmpl = get(old, &["spec", "template"])
        .cloned()
        .unwrap_or(Value::Null);
    if bool_at(old, &["spec", "suspend"]) && !has(old, &["status", "startTime"]) {
        // a suspended job that never started may change scheduling directives
        for keys in [
            &["metadata", "labels"][..],
            &["metadata", "annotations"],
            &["spec", "nodeSelector"],
            &["spec", "tolerations"],
            &["spec", "affinity"],
            &["spec", "schedulingGates"],
        ] {
            let (parent, field) = (keys[0], keys[1]);
            let src = get(&old_tmpl, keys).cloned();
            if let Some(p) = new_tmpl.get_mut(parent).and_then(Value::as_object_mut) {
                match src {
                    Some(v) => p.insert(field.to_string(), v),
                    None => p.remove(field),
                };
            }
        }
    }
    if new_tmpl != old_tmpl {
        let shown = get(new, &["spec", "template"])
            .cloned()
            .unwrap_or(Value::Null);
        errs.push(FieldError::invalid(
            sp.child("template"),
            shown,
            super::meta::IMMUTABLE,
        ));
    }
    errs
}

/// A CronJob.
pub(crate) fn validate_cron_job(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_at(obj, &["metadata", "name"]);
    if name.len() > 52 {
        errs.push(FieldError::invalid(
            Path::new("metadata").child("name"),
            name,
            "must be no more than 52 characters",
        ));
    }
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let schedule = str_at(spec, &["schedule"]);
    if schedule.is_empty() {
        errs.push(FieldError::required(sp.child("schedule"), ""));
    } else {
        if let Err(e) = parse_schedule(schedule) {
            errs.push(FieldError::invalid(sp.child("schedule"), schedule, e));
        }
        if schedule.contains("TZ") {
            errs.push(FieldError::invalid(
                sp.child("schedule"),
                schedule,
                "cannot use TZ or CRON_TZ in schedule, use timeZone field instead",
            ));
        }
    }
    errs.extend(nonnegative(
        spec,
        &["startingDeadlineSeconds"],
        &sp.child("startingDeadlineSeconds"),
    ));
    match str_at(spec, &["concurrencyPolicy"]) {
        "Allow" | "Forbid" | "Replace" => {}
        "" => errs.push(FieldError::required(sp.child("concurrencyPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            sp.child("concurrencyPolicy"),
            other,
            &["Allow", "Forbid", "Replace"],
        )),
    }
    let jtp = sp.child("jobTemplate").child("spec");
    let jspec = get(spec, &["jobTemplate", "spec"]).unwrap_or(&Value::Null);
    errs.extend(validate_job_spec_common(jspec, &jtp));
    if let Some(sel) = jspec.get("selector").filter(|s| !s.is_null()) {
        errs.push(FieldError::invalid(
            jtp.child("selector"),
            sel.clone(),
            "`selector` will be auto-generated",
        ));
    }
    if bool_at(jspec, &["manualSelector"]) {
        errs.push(FieldError::not_supported(
            jtp.child("manualSelector"),
            true,
            &["nil", "false"],
        ));
    }
    for f in ["successfulJobsHistoryLimit", "failedJobsHistoryLimit"] {
        errs.extend(nonnegative(spec, &[f], &sp.child(f)));
    }
    errs
}
