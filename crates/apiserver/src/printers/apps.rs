//! apps/v1: deployments, replica sets, stateful sets, daemon sets and
//! controller revisions.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::{
    age, arr_at, at, format_label_selector, format_labels, int_at, int_cell, layout_containers,
    name, opt_int, selector_string, str_at,
};
use super::{col, wide, Column, AGE, CONTAINERS, IMAGES, NAME};

const SELECTOR: Column = wide(
    "Selector",
    "string",
    "Label selector for pods. Existing ReplicaSets whose pods are selected by this will be the ones affected by this deployment.",
);

pub(crate) const DEPLOYMENT_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    col("Up-to-date", "string", "Total number of non-terminated pods targeted by this deployment that have the desired template spec."),
    col("Available", "string", "Total number of available pods (ready for at least minReadySeconds) targeted by this deployment."),
    AGE,
    CONTAINERS,
    IMAGES,
    SELECTOR,
];

pub(crate) const REPLICA_SET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Desired",
        "integer",
        "Replicas is the number of desired replicas.",
    ),
    col(
        "Current",
        "integer",
        "Replicas is the most recently observed number of replicas.",
    ),
    col(
        "Ready",
        "integer",
        "The number of ready replicas for this replica set.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the replica count.",
    ),
];

pub(crate) const STATEFUL_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "Number of the pod with ready state"),
    AGE,
    CONTAINERS,
    IMAGES,
];

pub(crate) const DAEMON_SET_COLUMNS: &[Column] = &[
    NAME,
    col("Desired", "integer", "The total number of nodes that should be running the daemon pod (including nodes correctly running the daemon pod)."),
    col("Current", "integer", "The number of nodes that are running at least 1 daemon pod and are supposed to run the daemon pod."),
    col("Ready", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and ready."),
    col("Up-to-date", "integer", "The total number of nodes that are running updated daemon pod"),
    col("Available", "integer", "The number of nodes that should be running the daemon pod and have one or more of the daemon pod running and available."),
    col("Node Selector", "string", "NodeSelector is a selector which must be true for the pod to fit on a node."),
    AGE,
    CONTAINERS,
    IMAGES,
    wide("Selector", "string", "A label query over pods that are managed by the daemon set."),
];

pub(crate) const CONTROLLER_REVISION_COLUMNS: &[Column] = &[
    NAME,
    col("Controller", "string", "Controller of the object"),
    col(
        "Revision",
        "string",
        "Revision indicates the revision of the state represented by Data.",
    ),
    AGE,
];

/// `spec.replicas`, defaulted to 1 like the API server's defaulting.
fn desired(obj: &Value) -> i64 {
    opt_int(obj, "/spec/replicas").unwrap_or(1)
}

fn template_containers(obj: &Value) -> (String, String) {
    layout_containers(arr_at(obj, "/spec/template/spec/containers"))
}

pub(crate) fn deployment_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    let selector =
        selector_string(at(obj, "/spec/selector")).unwrap_or_else(|| "<invalid>".to_string());
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            int_at(obj, "/status/readyReplicas"),
            desired(obj)
        )),
        int_cell(int_at(obj, "/status/updatedReplicas")),
        int_cell(int_at(obj, "/status/availableReplicas")),
        age(obj, now),
        Value::from(names),
        Value::from(images),
        Value::from(selector),
    ]
}

pub(crate) fn replica_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        int_cell(desired(obj)),
        int_cell(int_at(obj, "/status/replicas")),
        int_cell(int_at(obj, "/status/readyReplicas")),
        age(obj, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(at(obj, "/spec/selector"))),
    ]
}

pub(crate) fn stateful_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            int_at(obj, "/status/readyReplicas"),
            desired(obj)
        )),
        age(obj, now),
        Value::from(names),
        Value::from(images),
    ]
}

pub(crate) fn daemon_set_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = template_containers(obj);
    vec![
        name(obj),
        int_cell(int_at(obj, "/status/desiredNumberScheduled")),
        int_cell(int_at(obj, "/status/currentNumberScheduled")),
        int_cell(int_at(obj, "/status/numberReady")),
        int_cell(int_at(obj, "/status/updatedNumberScheduled")),
        int_cell(int_at(obj, "/status/numberAvailable")),
        Value::from(format_labels(at(obj, "/spec/template/spec/nodeSelector"))),
        age(obj, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_label_selector(at(obj, "/spec/selector"))),
    ]
}

/// `kind[.group]/name` of the controller owner reference, lower-cased kind
/// and group, or `<none>`.
pub(crate) fn controller_of(obj: &Value) -> String {
    let Some(owner) = arr_at(obj, "/metadata/ownerReferences")
        .iter()
        .find(|r| at(r, "/controller").and_then(Value::as_bool) == Some(true))
    else {
        return "<none>".to_string();
    };
    let api_version = str_at(owner, "/apiVersion");
    let group = match api_version.rsplit_once('/') {
        Some((g, _)) => g,
        None => "",
    };
    let kind = str_at(owner, "/kind");
    let owner_name = str_at(owner, "/name");
    if kind.is_empty() && group.is_empty() {
        return owner_name.to_string();
    }
    let group_kind = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    format!("{}/{owner_name}", group_kind.to_lowercase())
}

pub(crate) fn controller_revision_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(controller_of(obj)),
        int_cell(int_at(obj, "/revision")),
        age(obj, now),
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

    fn template() -> Value {
        json!({"metadata": {"labels": {"app": "web"}},
               "spec": {"containers": [{"name": "nginx", "image": "nginx:1.25"}, {"name": "sidecar", "image": "busybox"}]}})
    }

    fn meta() -> Value {
        json!({"name": "web", "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"})
    }

    #[test]
    fn deployments() {
        let d = json!({"metadata": meta(),
            "spec": {"replicas": 3, "selector": {"matchLabels": {"app": "web"}}, "template": template()},
            "status": {"replicas": 3, "readyReplicas": 2, "updatedReplicas": 3, "availableReplicas": 2}});
        assert_eq!(
            deployment_cells(&d, now()),
            vec![
                json!("web"),
                json!("2/3"),
                json!(3),
                json!(2),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.25,busybox"),
                json!("app=web")
            ]
        );
        let fresh = json!({"metadata": meta(), "spec": {"template": template()}});
        let c = deployment_cells(&fresh, now());
        assert_eq!(&c[1..4], &[json!("0/1"), json!(0), json!(0)]);
        assert_eq!(c[7], json!(""));
        let bad = json!({"metadata": meta(), "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "Bogus"}]}}});
        assert_eq!(deployment_cells(&bad, now())[7], json!("<invalid>"));
    }

    #[test]
    fn replica_sets_and_stateful_sets() {
        let rs = json!({"metadata": meta(),
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web", "pod-template-hash": "5d4"}}, "template": template()},
            "status": {"replicas": 2, "readyReplicas": 1}});
        assert_eq!(
            replica_set_cells(&rs, now()),
            vec![
                json!("web"),
                json!(2),
                json!(2),
                json!(1),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.25,busybox"),
                json!("app=web,pod-template-hash=5d4")
            ]
        );
        let sts = json!({"metadata": meta(), "spec": {"replicas": 3, "template": template()}, "status": {"readyReplicas": 3}});
        assert_eq!(
            stateful_set_cells(&sts, now()),
            vec![
                json!("web"),
                json!("3/3"),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.25,busybox")
            ]
        );
    }

    #[test]
    fn daemon_sets() {
        let mut tpl = template();
        tpl["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let ds = json!({"metadata": meta(), "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": tpl},
            "status": {"desiredNumberScheduled": 3, "currentNumberScheduled": 3, "numberReady": 2,
                       "updatedNumberScheduled": 3, "numberAvailable": 2}});
        assert_eq!(
            daemon_set_cells(&ds, now()),
            vec![
                json!("web"),
                json!(3),
                json!(3),
                json!(2),
                json!(3),
                json!(2),
                json!("kubernetes.io/os=linux"),
                json!("60m"),
                json!("nginx,sidecar"),
                json!("nginx:1.25,busybox"),
                json!("app=web")
            ]
        );
        let bare = json!({"metadata": meta(), "spec": {"template": {"spec": {}}}});
        let c = daemon_set_cells(&bare, now());
        assert_eq!(c[6], json!("<none>"));
        assert_eq!(c[10], json!("<none>"));
    }

    #[test]
    fn controller_revisions() {
        let cr = json!({"metadata": {"name": "web-7b9", "creationTimestamp": "2024-05-01T11:00:00Z",
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "web", "uid": "u", "controller": true}]},
            "revision": 2, "data": {}});
        assert_eq!(
            controller_revision_cells(&cr, now()),
            vec![
                json!("web-7b9"),
                json!("daemonset.apps/web"),
                json!(2),
                json!("60m")
            ]
        );
        let core_owner = json!({"metadata": {"ownerReferences": [
            {"apiVersion": "v1", "kind": "Pod", "name": "x", "controller": false},
            {"apiVersion": "v1", "kind": "ReplicationController", "name": "rc", "controller": true}]}});
        assert_eq!(controller_of(&core_owner), "replicationcontroller/rc");
        assert_eq!(controller_of(&json!({"metadata": {}})), "<none>");
    }
}
