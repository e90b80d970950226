//! The smaller groups: coordination, autoscaling, networking, discovery,
//! storage, policy, scheduling and RBAC bindings.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::core::load_balancer_ingress;
use super::json::{
    age, arr_at, as_int, at, bool_at, format_label_selector, int_at, int_cell, int_or_string,
    list_with_more, name, opt_int, opt_str, quantity, str_at,
};
use super::{col, wide, Column, AGE, NAME};

pub(crate) const LEASE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Holder",
        "string",
        "holderIdentity contains the identity of the holder of a current lease.",
    ),
    AGE,
];

pub(crate) const HPA_COLUMNS: &[Column] = &[
    NAME,
    col("Reference", "string", "scaleTargetRef points to the target resource to scale, and is used to the pods for which metrics should be collected, as well as to actually change the replica count."),
    col("Targets", "string", "metrics contains the specifications for which to use to calculate the desired replica count."),
    col("MinPods", "string", "minReplicas is the lower limit for the number of replicas to which the autoscaler can scale down."),
    col("MaxPods", "string", "maxReplicas is the upper limit for the number of replicas to which the autoscaler can scale up."),
    col("Replicas", "string", "currentReplicas is current number of replicas of pods managed by this autoscaler, as last seen by the autoscaler."),
    AGE,
];

pub(crate) const INGRESS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Class",
        "string",
        "The name of the IngressClass resource that should be used for additional configuration",
    ),
    col(
        "Hosts",
        "string",
        "Hosts that incoming requests are matched against before the ingress rule",
    ),
    col(
        "Address",
        "string",
        "Address is a list containing ingress points for the load-balancer",
    ),
    col("Ports", "string", "Ports of TLS configurations that open"),
    AGE,
];

pub(crate) const INGRESS_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Controller",
        "string",
        "Controller that is responsible for handling this class",
    ),
    col(
        "Parameters",
        "string",
        "A reference to a resource with additional parameters",
    ),
    AGE,
];

pub(crate) const NETWORK_POLICY_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Pod-Selector",
        "string",
        "Selects the pods to which this NetworkPolicy object applies.",
    ),
    AGE,
];

pub(crate) const ENDPOINT_SLICE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "AddressType",
        "string",
        "addressType specifies the type of address carried by this EndpointSlice.",
    ),
    col(
        "Ports",
        "string",
        "ports specifies the list of network ports exposed by each endpoint in this slice.",
    ),
    col(
        "Endpoints",
        "string",
        "endpoints is a list of unique endpoints in this slice.",
    ),
    AGE,
];

pub(crate) const STORAGE_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Provisioner", "string", "provisioner indicates the type of the provisioner."),
    col("ReclaimPolicy", "string", "reclaimPolicy controls the reclaimPolicy for dynamically provisioned PersistentVolumes of this storage class."),
    col("VolumeBindingMode", "string", "volumeBindingMode indicates how PersistentVolumeClaims should be provisioned and bound."),
    col("AllowVolumeExpansion", "string", "allowVolumeExpansion shows whether the storage class allow volume expand."),
    AGE,
];

pub(crate) const PDB_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Min Available",
        "string",
        "The minimum number of pods that must be available.",
    ),
    col(
        "Max Unavailable",
        "string",
        "The maximum number of pods that may be unavailable.",
    ),
    col(
        "Allowed Disruptions",
        "integer",
        "Calculated number of pods that may be disrupted at this time.",
    ),
    AGE,
];

pub(crate) const PRIORITY_CLASS_COLUMNS: &[Column] = &[
    NAME,
    col("Value", "integer", "value represents the integer value of this priority class."),
    col("Global-Default", "boolean", "globalDefault specifies whether this PriorityClass should be considered as the default priority for pods that do not have any priority class."),
    AGE,
    col("PreemptionPolicy", "string", "preemptionPolicy is the Policy for preempting pods with lower priority."),
];

pub(crate) const ROLE_BINDING_COLUMNS: &[Column] = &[
    NAME,
    col("Role", "string", "RoleRef can reference a Role in the current namespace or a ClusterRole in the global namespace."),
    AGE,
    wide("Users", "string", "Users in the roleBinding"),
    wide("Groups", "string", "Groups in the roleBinding"),
    wide("ServiceAccounts", "string", "ServiceAccounts in the roleBinding"),
];

pub(crate) fn lease_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, "/spec/holderIdentity")),
        age(obj, now),
    ]
}

/// A metric target or current value of the autoscaling/v2 MetricTarget /
/// MetricValueStatus shape.
fn metric_value(v: Option<&Value>, field: &str) -> Option<String> {
    at(v?, field).map(|q| quantity(Some(q)))
}

/// Upstream's `formatHPAMetrics` over autoscaling/v2 JSON.
fn format_hpa_metrics(hpa: &Value) -> String {
    const MAX: usize = 2;
    let specs = arr_at(hpa, "/spec/metrics");
    if specs.is_empty() {
        return "<none>".to_string();
    }
    let statuses = arr_at(hpa, "/status/currentMetrics");
    let unknown = || "<unknown>".to_string();
    let mut list: Vec<String> = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        let status = statuses.get(i);
        // The source object of this metric type in spec and status, e.g. "resource".
        let item = match str_at(spec, "/type") {
            "External" => Some(("external", false)),
            "Pods" => Some(("pods", false)),
            "Object" => Some(("object", false)),
            "Resource" => Some(("resource", true)),
            "ContainerResource" => Some(("containerResource", true)),
            _ => None,
        };
        let Some((key, is_resource)) = item else {
            list.push("<unknown type>".to_string());
            continue;
        };
        let spec_src = spec.get(key);
        let target = spec_src.and_then(|s| s.get("target"));
        let current = status
            .and_then(|s| s.get(key))
            .filter(|s| !s.is_null())
            .and_then(|s| s.get("current"));
        let resource_name = spec_src.map(|s| str_at(s, "/name")).unwrap_or("");
        let average_value = metric_value(target, "/averageValue");
        let text = if key == "pods" {
            let cur = metric_value(current, "/averageValue").unwrap_or_else(unknown);
            format!("{cur}/{}", average_value.unwrap_or_else(|| "0".to_string()))
        } else if let Some(avg) = average_value {
            let cur = metric_value(current, "/averageValue").unwrap_or_else(unknown);
            if is_resource {
                format!("{resource_name}: {cur}/{avg}")
            } else {
                format!("{cur}/{avg} (avg)")
            }
        } else if is_resource {
            let cur = current
                .and_then(|c| at(c, "/averageUtilization"))
                .and_then(as_int)
                .map(|u| format!("{u}%"))
                .unwrap_or_else(unknown);
            let tgt = target
                .and_then(|t| at(t, "/averageUtilization"))
                .and_then(as_int)
                .map(|u| format!("{u}%"))
                .unwrap_or_else(|| "<auto>".to_string());
            format!("{resource_name}: {cur}/{tgt}")
        } else {
            let cur = metric_value(current, "/value").unwrap_or_else(unknown);
            format!(
                "{cur}/{}",
                metric_value(target, "/value").unwrap_or_else(|| "0".to_string())
            )
        };
        list.push(text);
    }
    let count = list.len();
    if count > MAX {
        list.truncate(MAX);
        format!("{} + {} more...", list.join(", "), count - MAX)
    } else {
        list.join(", ")
    }
}

pub(crate) fn hpa_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let reference = format!(
        "{}/{}",
        str_at(obj, "/spec/scaleTargetRef/kind"),
        str_at(obj, "/spec/scaleTargetRef/name")
    );
    let min_pods =
        opt_int(obj, "/spec/minReplicas").map_or_else(|| "<unset>".to_string(), |n| n.to_string());
    vec![
        name(obj),
        Value::from(reference),
        Value::from(format_hpa_metrics(obj)),
        Value::from(min_pods),
        int_cell(int_at(obj, "/spec/maxReplicas")),
        int_cell(int_at(obj, "/status/currentReplicas")),
        age(obj, now),
    ]
}

/// Upstream's `formatHosts`: up to three hosts, `*` when none.
fn format_hosts(rules: &[Value]) -> String {
    const MAX: usize = 3;
    let mut list: Vec<&str> = Vec::new();
    let mut more = false;
    for rule in rules {
        if list.len() == MAX {
            more = true;
        }
        let host = str_at(rule, "/host");
        if !more && !host.is_empty() {
            list.push(host);
        }
    }
    if list.is_empty() {
        return "*".to_string();
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", rules.len().saturating_sub(MAX))
    } else {
        ret
    }
}

pub(crate) fn ingress_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports = if arr_at(obj, "/spec/tls").is_empty() {
        "80"
    } else {
        "80, 443"
    };
    vec![
        name(obj),
        Value::from(opt_str(obj, "/spec/ingressClassName").unwrap_or("<none>")),
        Value::from(format_hosts(arr_at(obj, "/spec/rules"))),
        Value::from(load_balancer_ingress(arr_at(
            obj,
            "/status/loadBalancer/ingress",
        ))),
        Value::from(ports),
        age(obj, now),
    ]
}

pub(crate) fn ingress_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let parameters = match at(obj, "/spec/parameters") {
        Some(p) => {
            let mut s = str_at(p, "/kind").to_string();
            if let Some(group) = opt_str(p, "/apiGroup") {
                s = format!("{s}.{group}");
            }
            format!("{s}/{}", str_at(p, "/name"))
        }
        None => "<none>".to_string(),
    };
    vec![
        name(obj),
        Value::from(str_at(obj, "/spec/controller")),
        Value::from(parameters),
        age(obj, now),
    ]
}

pub(crate) fn network_policy_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // podSelector is a value, not a pointer, upstream: absent means empty.
    let selector = at(obj, "/spec/podSelector")
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    vec![
        name(obj),
        Value::from(format_label_selector(Some(&selector))),
        age(obj, now),
    ]
}

pub(crate) fn endpoint_slice_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let ports: Vec<String> = arr_at(obj, "/ports")
        .iter()
        .map(|p| match (opt_int(p, "/port"), opt_str(p, "/name")) {
            (Some(n), _) => n.to_string(),
            (None, Some(name)) => name.to_string(),
            (None, None) => "*".to_string(),
        })
        .collect();
    let addresses: Vec<String> = arr_at(obj, "/endpoints")
        .iter()
        .flat_map(|e| {
            arr_at(e, "/addresses")
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    vec![
        name(obj),
        Value::from(str_at(obj, "/addressType")),
        Value::from(list_with_more(&ports, 3)),
        Value::from(list_with_more(&addresses, 3)),
        age(obj, now),
    ]
}

fn is_default_class(obj: &Value) -> bool {
    [
        "storageclass.kubernetes.io~1is-default-class",
        "storageclass.beta.kubernetes.io~1is-default-class",
    ]
    .iter()
    .any(|k| opt_str(obj, &format!("/metadata/annotations/{k}")) == Some("true"))
}

pub(crate) fn storage_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut class_name = str_at(obj, "/metadata/name").to_string();
    if is_default_class(obj) {
        class_name.push_str(" (default)");
    }
    vec![
        Value::from(class_name),
        Value::from(str_at(obj, "/provisioner")),
        Value::from(opt_str(obj, "/reclaimPolicy").unwrap_or("Delete")),
        Value::from(opt_str(obj, "/volumeBindingMode").unwrap_or("Immediate")),
        Value::from(bool_at(obj, "/allowVolumeExpansion")),
        age(obj, now),
    ]
}

pub(crate) fn pdb_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let na = || "N/A".to_string();
    vec![
        name(obj),
        Value::from(int_or_string(at(obj, "/spec/minAvailable")).unwrap_or_else(na)),
        Value::from(int_or_string(at(obj, "/spec/maxUnavailable")).unwrap_or_else(na)),
        int_cell(int_at(obj, "/status/disruptionsAllowed")),
        age(obj, now),
    ]
}

pub(crate) fn priority_class_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        int_cell(int_at(obj, "/value")),
        Value::from(bool_at(obj, "/globalDefault")),
        age(obj, now),
        Value::from(str_at(obj, "/preemptionPolicy")),
    ]
}

/// RoleBindings and ClusterRoleBindings: ROLE is `Kind/name`; subjects split
/// into users, groups and `namespace/name` service accounts.
pub(crate) fn role_binding_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut sas = Vec::new();
    for s in arr_at(obj, "/subjects") {
        let subject = str_at(s, "/name");
        match str_at(s, "/kind") {
            "User" => users.push(subject.to_string()),
            "Group" => groups.push(subject.to_string()),
            "ServiceAccount" => sas.push(format!("{}/{subject}", str_at(s, "/namespace"))),
            _ => {}
        }
    }
    vec![
        name(obj),
        Value::from(format!(
            "{}/{}",
            str_at(obj, "/roleRef/kind"),
            str_at(obj, "/roleRef/name")
        )),
        age(obj, now),
        Value::from(users.join(", ")),
        Value::from(groups.join(", ")),
        Value::from(sas.join(", ")),
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

    fn meta(name: &str) -> Value {
        json!({"name": name, "namespace": "default", "creationTimestamp": "2024-05-01T11:30:00Z"})
    }

    fn row(items: &[&str]) -> Vec<Value> {
        items.iter().map(|s| Value::from(*s)).collect()
    }

    #[test]
    fn leases() {
        let l = json!({"metadata": meta("node1"), "spec": {"holderIdentity": "node1", "leaseDurationSeconds": 40}});
        assert_eq!(lease_cells(&l, now()), row(&["node1", "node1", "30m"]));
        assert_eq!(
            lease_cells(&json!({"metadata": meta("x")}), now())[1],
            json!("")
        );
    }

    #[test]
    fn hpas() {
        let hpa = json!({"metadata": meta("web"),
            "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "web", "apiVersion": "apps/v1"},
                     "minReplicas": 1, "maxReplicas": 10,
                     "metrics": [
                        {"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}},
                        {"type": "Resource", "resource": {"name": "memory", "target": {"type": "AverageValue", "averageValue": "100Mi"}}},
                        {"type": "Pods", "pods": {"metric": {"name": "qps"}, "target": {"type": "AverageValue", "averageValue": "1k"}}}
                     ]},
            "status": {"currentReplicas": 3, "desiredReplicas": 3,
                       "currentMetrics": [{"type": "Resource", "resource": {"name": "cpu", "current": {"averageUtilization": 45, "averageValue": "45m"}}}]}});
        assert_eq!(
            hpa_cells(&hpa, now()),
            vec![
                json!("web"),
                json!("Deployment/web"),
                json!("cpu: 45%/80%, memory: <unknown>/100Mi + 1 more..."),
                json!("1"),
                json!(10),
                json!(3),
                json!("30m")
            ]
        );
        let bare = json!({"metadata": meta("x"), "spec": {"scaleTargetRef": {"kind": "StatefulSet", "name": "db"}, "maxReplicas": 3}});
        assert_eq!(
            hpa_cells(&bare, now()),
            vec![
                json!("x"),
                json!("StatefulSet/db"),
                json!("<none>"),
                json!("<unset>"),
                json!(3),
                json!(0),
                json!("30m")
            ]
        );
        let ext = json!({"spec": {"metrics": [
            {"type": "External", "external": {"metric": {"name": "q"}, "target": {"type": "Value", "value": "10"}}},
            {"type": "Object", "object": {"metric": {"name": "rps"}, "target": {"type": "AverageValue", "averageValue": "5"}}}]},
            "status": {"currentMetrics": [{"type": "External", "external": {"current": {"value": "7"}}}]}});
        assert_eq!(format_hpa_metrics(&ext), "7/10, <unknown>/5 (avg)");
    }

    #[test]
    fn ingresses() {
        let ing = json!({"metadata": meta("web"),
            "spec": {"ingressClassName": "nginx", "tls": [{"hosts": ["a.example.com"]}],
                     "rules": [{"host": "a.example.com"}, {"host": "b.example.com"}, {}, {"host": "c.example.com"}, {"host": "d.example.com"}]},
            "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.10"}]}}});
        assert_eq!(
            ingress_cells(&ing, now()),
            row(&[
                "web",
                "nginx",
                "a.example.com,b.example.com,c.example.com + 2 more...",
                "192.168.1.10",
                "80, 443",
                "30m"
            ])
        );
        let bare =
            json!({"metadata": meta("x"), "spec": {"defaultBackend": {"service": {"name": "s"}}}});
        assert_eq!(
            ingress_cells(&bare, now()),
            row(&["x", "<none>", "*", "", "80", "30m"])
        );

        let class = json!({"metadata": meta("nginx"), "spec": {"controller": "k8s.io/ingress-nginx",
            "parameters": {"apiGroup": "k8s.example.com", "kind": "IngressParameters", "name": "external-lb"}}});
        assert_eq!(
            ingress_class_cells(&class, now()),
            row(&[
                "nginx",
                "k8s.io/ingress-nginx",
                "IngressParameters.k8s.example.com/external-lb",
                "30m"
            ])
        );
        let plain = json!({"metadata": meta("c"), "spec": {"controller": "x"}});
        assert_eq!(ingress_class_cells(&plain, now())[2], json!("<none>"));
    }

    #[test]
    fn network_policies_and_slices() {
        let np = json!({"metadata": meta("deny"), "spec": {"podSelector": {}}});
        assert_eq!(
            network_policy_cells(&np, now()),
            row(&["deny", "<none>", "30m"])
        );
        let np = json!({"metadata": meta("web"), "spec": {"podSelector": {"matchLabels": {"role": "db"}}}});
        assert_eq!(network_policy_cells(&np, now())[1], json!("role=db"));

        let slice = json!({"metadata": meta("web-abc"), "addressType": "IPv4",
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "named"}, {}],
            "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2", "10.0.0.3"]}, {"addresses": ["10.0.0.4"]}]});
        assert_eq!(
            endpoint_slice_cells(&slice, now()),
            row(&[
                "web-abc",
                "IPv4",
                "80,named,*",
                "10.0.0.1,10.0.0.2,10.0.0.3 + 1 more...",
                "30m"
            ])
        );
        let empty = json!({"metadata": meta("e"), "addressType": "IPv4"});
        assert_eq!(
            endpoint_slice_cells(&empty, now())[2..4],
            [json!("<unset>"), json!("<unset>")]
        );
    }

    #[test]
    fn storage_classes() {
        let sc = json!({"metadata": {"name": "standard", "creationTimestamp": "2024-05-01T11:30:00Z",
            "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
            "provisioner": "rancher.io/local-path", "volumeBindingMode": "WaitForFirstConsumer"});
        assert_eq!(
            storage_class_cells(&sc, now()),
            vec![
                json!("standard (default)"),
                json!("rancher.io/local-path"),
                json!("Delete"),
                json!("WaitForFirstConsumer"),
                json!(false),
                json!("30m")
            ]
        );
        let other = json!({"metadata": {"name": "fast"}, "provisioner": "x", "reclaimPolicy": "Retain", "allowVolumeExpansion": true});
        assert_eq!(
            storage_class_cells(&other, now())[..5],
            [
                json!("fast"),
                json!("x"),
                json!("Retain"),
                json!("Immediate"),
                json!(true)
            ]
        );
    }

    #[test]
    fn pdbs_and_priority_classes() {
        let pdb = json!({"metadata": meta("web"), "spec": {"minAvailable": 2}, "status": {"disruptionsAllowed": 1}});
        assert_eq!(
            pdb_cells(&pdb, now()),
            vec![
                json!("web"),
                json!("2"),
                json!("N/A"),
                json!(1),
                json!("30m")
            ]
        );
        let pdb = json!({"metadata": meta("web"), "spec": {"maxUnavailable": "25%"}});
        assert_eq!(
            pdb_cells(&pdb, now())[1..4],
            [json!("N/A"), json!("25%"), json!(0)]
        );

        let pc = json!({"metadata": {"name": "system-node-critical", "creationTimestamp": "2024-05-01T11:30:00Z"},
            "value": 2000001000, "globalDefault": false, "preemptionPolicy": "PreemptLowerPriority"});
        assert_eq!(
            priority_class_cells(&pc, now()),
            vec![
                json!("system-node-critical"),
                json!(2000001000),
                json!(false),
                json!("30m"),
                json!("PreemptLowerPriority")
            ]
        );
    }

    #[test]
    fn role_bindings() {
        let rb = json!({"metadata": meta("admins"),
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
            "subjects": [{"kind": "User", "name": "alice"}, {"kind": "User", "name": "bob"},
                         {"kind": "Group", "name": "ops"},
                         {"kind": "ServiceAccount", "name": "ci", "namespace": "build"}]});
        assert_eq!(
            role_binding_cells(&rb, now()),
            row(&[
                "admins",
                "ClusterRole/admin",
                "30m",
                "alice, bob",
                "ops",
                "build/ci"
            ])
        );
        let empty = json!({"metadata": meta("none"), "roleRef": {"kind": "Role", "name": "r"}});
        assert_eq!(
            role_binding_cells(&empty, now()),
            row(&["none", "Role/r", "30m", "", "", ""])
        );
    }
}
