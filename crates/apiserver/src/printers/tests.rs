//! Cross-kind tests: every catalog entry gets a printer whose rows fit its
//! columns, and the wire shape of the column definitions.

use chrono::{DateTime, TimeZone, Utc};
use navarch_api::catalog::{self, ResourceType};
use serde_json::{json, Value};

use super::*;

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
}

fn rt(group: &str, plural: &str) -> &'static ResourceType {
    catalog::all()
        .iter()
        .find(|r| r.group == group && r.plural == plural)
        .unwrap_or_else(|| panic!("{group}/{plural} not in catalog"))
}

fn names(rt: &ResourceType) -> Vec<(&'static str, i32)> {
    columns(rt).iter().map(|c| (c.name, c.priority)).collect()
}

#[test]
fn every_kind_has_name_column_and_rows_fit() {
    let obj = json!({"metadata": {"name": "x", "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"}});
    for r in catalog::all() {
        let cols = columns(r);
        assert!(!cols.is_empty(), "{}", r.kind);
        let name_cols: Vec<_> = cols.iter().filter(|c| c.format == "name").collect();
        assert_eq!(name_cols.len(), 1, "{} has exactly one name column", r.kind);
        assert_eq!(name_cols[0].name, "Name");
        for c in &cols {
            assert!(
                ["string", "integer", "number", "boolean", "date"].contains(&c.type_),
                "{} {}",
                r.kind,
                c.name
            );
            assert!(c.priority == 0 || c.priority == 1);
            assert!(!c.description.is_empty());
        }
        let row = cells(r, &obj, now());
        assert_eq!(row.len(), cols.len(), "{}: one cell per column", r.kind);
        let idx = cols.iter().position(|c| c.format == "name").unwrap();
        assert_eq!(row[idx], json!("x"), "{}: name cell", r.kind);
        // Garbage objects never panic and still fit.
        for junk in [
            json!(null),
            json!([]),
            json!({"spec": 1, "status": "x", "metadata": {"name": 5}}),
        ] {
            assert_eq!(cells(r, &junk, now()).len(), cols.len(), "{}", r.kind);
        }
    }
}

#[test]
fn kinds_without_a_printer_get_the_default_table() {
    for (group, plural) in [
        ("rbac.authorization.k8s.io", "roles"),
        ("rbac.authorization.k8s.io", "clusterroles"),
        ("", "limitranges"),
        ("apiextensions.k8s.io", "customresourcedefinitions"),
    ] {
        let r = rt(group, plural);
        assert_eq!(names(r), vec![("Name", 0), ("Created At", 0)], "{plural}");
        assert_eq!(columns(r)[1].type_, "date");
        let obj =
            json!({"metadata": {"name": "view", "creationTimestamp": "2024-04-01T08:30:00Z"}});
        assert_eq!(
            cells(r, &obj, now()),
            vec![json!("view"), json!("2024-04-01T08:30:00Z")]
        );
        let no_ts = json!({"metadata": {"name": "view"}});
        assert_eq!(cells(r, &no_ts, now())[1], json!("0001-01-01T00:00:00Z"));
    }
}

/// (group, plural, expected (column name, priority) list).
type ColumnCase = (&'static str, &'static str, &'static [(&'static str, i32)]);

#[test]
fn column_sets_match_upstream() {
    let cases: &[ColumnCase] = &[
        (
            "",
            "pods",
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Status", 0),
                ("Restarts", 0),
                ("Age", 0),
                ("IP", 1),
                ("Node", 1),
                ("Nominated Node", 1),
                ("Readiness Gates", 1),
            ],
        ),
        (
            "",
            "nodes",
            &[
                ("Name", 0),
                ("Status", 0),
                ("Roles", 0),
                ("Age", 0),
                ("Version", 0),
                ("Internal-IP", 1),
                ("External-IP", 1),
                ("OS-Image", 1),
                ("Kernel-Version", 1),
                ("Container-Runtime", 1),
            ],
        ),
        ("", "namespaces", &[("Name", 0), ("Status", 0), ("Age", 0)]),
        (
            "",
            "services",
            &[
                ("Name", 0),
                ("Type", 0),
                ("Cluster-IP", 0),
                ("External-IP", 0),
                ("Port(s)", 0),
                ("Age", 0),
                ("Selector", 1),
            ],
        ),
        (
            "",
            "endpoints",
            &[("Name", 0), ("Endpoints", 0), ("Age", 0)],
        ),
        ("", "configmaps", &[("Name", 0), ("Data", 0), ("Age", 0)]),
        (
            "",
            "secrets",
            &[("Name", 0), ("Type", 0), ("Data", 0), ("Age", 0)],
        ),
        (
            "",
            "serviceaccounts",
            &[("Name", 0), ("Secrets", 0), ("Age", 0)],
        ),
        (
            "",
            "events",
            &[
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1),
            ],
        ),
        (
            "events.k8s.io",
            "events",
            &[
                ("Last Seen", 0),
                ("Type", 0),
                ("Reason", 0),
                ("Object", 0),
                ("Subobject", 1),
                ("Source", 1),
                ("Message", 0),
                ("First Seen", 1),
                ("Count", 1),
                ("Name", 1),
            ],
        ),
        (
            "",
            "resourcequotas",
            &[("Name", 0), ("Request", 0), ("Limit", 0), ("Age", 0)],
        ),
        (
            "",
            "persistentvolumes",
            &[
                ("Name", 0),
                ("Capacity", 0),
                ("Access Modes", 0),
                ("Reclaim Policy", 0),
                ("Status", 0),
                ("Claim", 0),
                ("StorageClass", 0),
                ("VolumeAttributesClass", 0),
                ("Reason", 0),
                ("Age", 0),
                ("VolumeMode", 1),
            ],
        ),
        (
            "",
            "persistentvolumeclaims",
            &[
                ("Name", 0),
                ("Status", 0),
                ("Volume", 0),
                ("Capacity", 0),
                ("Access Modes", 0),
                ("StorageClass", 0),
                ("VolumeAttributesClass", 0),
                ("Age", 0),
                ("VolumeMode", 1),
            ],
        ),
        (
            "",
            "replicationcontrollers",
            &[
                ("Name", 0),
                ("Desired", 0),
                ("Current", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "",
            "podtemplates",
            &[
                ("Name", 0),
                ("Containers", 0),
                ("Images", 0),
                ("Pod Labels", 0),
            ],
        ),
        (
            "apps",
            "deployments",
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "apps",
            "replicasets",
            &[
                ("Name", 0),
                ("Desired", 0),
                ("Current", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "apps",
            "statefulsets",
            &[
                ("Name", 0),
                ("Ready", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
            ],
        ),
        (
            "apps",
            "daemonsets",
            &[
                ("Name", 0),
                ("Desired", 0),
                ("Current", 0),
                ("Ready", 0),
                ("Up-to-date", 0),
                ("Available", 0),
                ("Node Selector", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "apps",
            "controllerrevisions",
            &[("Name", 0), ("Controller", 0), ("Revision", 0), ("Age", 0)],
        ),
        (
            "batch",
            "jobs",
            &[
                ("Name", 0),
                ("Status", 0),
                ("Completions", 0),
                ("Duration", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "batch",
            "cronjobs",
            &[
                ("Name", 0),
                ("Schedule", 0),
                ("Timezone", 0),
                ("Suspend", 0),
                ("Active", 0),
                ("Last Schedule", 0),
                ("Age", 0),
                ("Containers", 1),
                ("Images", 1),
                ("Selector", 1),
            ],
        ),
        (
            "coordination.k8s.io",
            "leases",
            &[("Name", 0), ("Holder", 0), ("Age", 0)],
        ),
        (
            "autoscaling",
            "horizontalpodautoscalers",
            &[
                ("Name", 0),
                ("Reference", 0),
                ("Targets", 0),
                ("MinPods", 0),
                ("MaxPods", 0),
                ("Replicas", 0),
                ("Age", 0),
            ],
        ),
        (
            "networking.k8s.io",
            "ingresses",
            &[
                ("Name", 0),
                ("Class", 0),
                ("Hosts", 0),
                ("Address", 0),
                ("Ports", 0),
                ("Age", 0),
            ],
        ),
        (
            "networking.k8s.io",
            "ingressclasses",
            &[
                ("Name", 0),
                ("Controller", 0),
                ("Parameters", 0),
                ("Age", 0),
            ],
        ),
        (
            "networking.k8s.io",
            "networkpolicies",
            &[("Name", 0), ("Pod-Selector", 0), ("Age", 0)],
        ),
        (
            "discovery.k8s.io",
            "endpointslices",
            &[
                ("Name", 0),
                ("AddressType", 0),
                ("Ports", 0),
                ("Endpoints", 0),
                ("Age", 0),
            ],
        ),
        (
            "storage.k8s.io",
            "storageclasses",
            &[
                ("Name", 0),
                ("Provisioner", 0),
                ("ReclaimPolicy", 0),
                ("VolumeBindingMode", 0),
                ("AllowVolumeExpansion", 0),
                ("Age", 0),
            ],
        ),
        (
            "policy",
            "poddisruptionbudgets",
            &[
                ("Name", 0),
                ("Min Available", 0),
                ("Max Unavailable", 0),
                ("Allowed Disruptions", 0),
                ("Age", 0),
            ],
        ),
        (
            "scheduling.k8s.io",
            "priorityclasses",
            &[
                ("Name", 0),
                ("Value", 0),
                ("Global-Default", 0),
                ("Age", 0),
                ("PreemptionPolicy", 0),
            ],
        ),
        (
            "rbac.authorization.k8s.io",
            "rolebindings",
            &[
                ("Name", 0),
                ("Role", 0),
                ("Age", 0),
                ("Users", 1),
                ("Groups", 1),
                ("ServiceAccounts", 1),
            ],
        ),
        (
            "rbac.authorization.k8s.io",
            "clusterrolebindings",
            &[
                ("Name", 0),
                ("Role", 0),
                ("Age", 0),
                ("Users", 1),
                ("Groups", 1),
                ("ServiceAccounts", 1),
            ],
        ),
    ];
    for (group, plural, want) in cases {
        assert_eq!(names(rt(group, plural)), want.to_vec(), "{group}/{plural}");
    }
}

#[test]
fn column_definitions_use_wire_keys() {
    let defs = column_definitions_json(rt("", "pods"));
    let arr = defs.as_array().unwrap();
    assert_eq!(arr.len(), 9);
    assert_eq!(
        arr[0],
        json!({"name": "Name", "type": "string", "format": "name", "description": NAME_DESC, "priority": 0})
    );
    assert_eq!(arr[3]["name"], "Restarts");
    assert_eq!(arr[3]["type"], "string");
    assert_eq!(arr[3]["format"], "");
    assert_eq!(arr[5]["name"], "IP");
    assert_eq!(arr[5]["priority"], 1);
    assert!(arr.iter().all(|c| c.get("type_").is_none()));
}

#[test]
fn integer_columns_get_json_numbers() {
    let rs = rt("apps", "replicasets");
    let obj = json!({"metadata": {"name": "web"}, "spec": {"replicas": 3}, "status": {"replicas": 2, "readyReplicas": 1}});
    let row = cells(rs, &obj, now());
    for (c, v) in columns(rs).iter().zip(&row) {
        if c.type_ == "integer" {
            assert!(v.is_i64(), "{} should be a number, got {v}", c.name);
        }
    }
    assert_eq!(&row[1..4], &[json!(3), json!(2), json!(1)]);
}

#[test]
fn crash_looping_pod_row() {
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2024-05-01T11:00:00Z"},
        "spec": {"containers": [{"name": "app", "image": "busybox"}], "nodeName": "node1"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.0.0.5"}], "containerStatuses": [{
            "name": "app", "ready": false, "restartCount": 3, "image": "busybox", "imageID": "",
            "state": {"waiting": {"reason": "CrashLoopBackOff"}},
            "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:57:30Z"}}
        }]}
    });
    assert_eq!(
        cells(rt("", "pods"), &pod, now()),
        vec![
            json!("web-1"),
            json!("0/1"),
            json!("CrashLoopBackOff"),
            json!("3 (2m30s ago)"),
            json!("60m"),
            json!("10.0.0.5"),
            json!("node1"),
            json!("<none>"),
            json!("<none>")
        ]
    );
    assert!(row_conditions(rt("", "pods"), &pod).is_none());
    assert!(row_conditions(rt("", "configmaps"), &pod).is_none());
}

#[test]
fn event_printer_follows_resource_group() {
    let v1 = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Pod", "name": "p"}, "note": "hello",
                    "eventTime": "2024-05-01T11:59:00.000000Z"});
    let row = cells(rt("events.k8s.io", "events"), &v1, now());
    assert_eq!(row[3], json!("pod/p"));
    assert_eq!(row[6], json!("hello"));
    let core = cells(rt("", "events"), &v1, now());
    assert_eq!(core[3], Value::from(""));
}
