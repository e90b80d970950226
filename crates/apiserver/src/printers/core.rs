//! Core-group kinds other than pods and events.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::{
    age, arr_at, at, bool_at, count_cell, format_labels, int_at, int_cell, layout_containers, name,
    obj_len, opt_int, opt_str, or_none, quantity, str_at,
};
use super::{col, wide, Column, AGE, CONTAINERS, IMAGES, NAME};

pub(crate) const POD_TEMPLATE_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Containers",
        "string",
        "Names of each container in the template.",
    ),
    col(
        "Images",
        "string",
        "Images referenced by each container in the template.",
    ),
    col("Pod Labels", "string", "The labels for the pod template."),
];

pub(crate) const REPLICATION_CONTROLLER_COLUMNS: &[Column] = &[
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
        "The number of ready replicas for this replication controller.",
    ),
    AGE,
    CONTAINERS,
    IMAGES,
    wide(
        "Selector",
        "string",
        "Selector is a label query over pods that should match the Replicas count.",
    ),
];

pub(crate) const NODE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the node"),
    col("Roles", "string", "The roles of the node"),
    AGE,
    col("Version", "string", "Kubelet Version reported by the node."),
    wide("Internal-IP", "string", "List of addresses reachable to the node."),
    wide("External-IP", "string", "List of addresses reachable to the node."),
    wide("OS-Image", "string", "OS Image reported by the node from /etc/os-release (e.g. Debian GNU/Linux 7 (wheezy))."),
    wide("Kernel-Version", "string", "Kernel Version reported by the node from 'uname -r' (e.g. 3.16.0-0.bpo.4-amd64)."),
    wide("Container-Runtime", "string", "ContainerRuntime Version reported by the node through runtime remote API (e.g. containerd://1.4.2)."),
];

pub(crate) const NAMESPACE_COLUMNS: &[Column] = &[
    NAME,
    col("Status", "string", "The status of the namespace"),
    AGE,
];

pub(crate) const SERVICE_COLUMNS: &[Column] = &[
    NAME,
    col("Type", "string", "type determines how the Service is exposed."),
    col("Cluster-IP", "string", "clusterIP is the IP address of the service and is usually assigned randomly."),
    col("External-IP", "string", "externalIPs is a list of IP addresses for which nodes in the cluster will also accept traffic for this service."),
    col("Port(s)", "string", "The list of ports that are exposed by this service."),
    AGE,
    wide("Selector", "string", "Route service traffic to pods with label keys and values matching this selector."),
];

pub(crate) const ENDPOINTS_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Endpoints",
        "string",
        "The set of all endpoints is the union of all subsets.",
    ),
    AGE,
];

pub(crate) const CONFIG_MAP_COLUMNS: &[Column] = &[
    NAME,
    col("Data", "string", "Data contains the configuration data."),
    AGE,
];

pub(crate) const SECRET_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Type",
        "string",
        "Used to facilitate programmatic handling of secret data.",
    ),
    col("Data", "string", "Data contains the secret data."),
    AGE,
];

pub(crate) const SERVICE_ACCOUNT_COLUMNS: &[Column] = &[
    NAME,
    col("Secrets", "string", "Secrets is a list of the secrets in the same namespace that pods running using this ServiceAccount are allowed to use."),
    AGE,
];

pub(crate) const RESOURCE_QUOTA_COLUMNS: &[Column] = &[
    NAME,
    col("Request", "string", "Request represents a minimum amount of cpu/memory that a container may consume."),
    col("Limit", "string", "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node."),
    AGE,
];

pub(crate) const PERSISTENT_VOLUME_COLUMNS: &[Column] = &[
    NAME,
    col("Capacity", "string", "capacity is the description of the persistent volume's resources and capacity."),
    col("Access Modes", "string", "accessModes contains all ways the volume can be mounted."),
    col("Reclaim Policy", "string", "persistentVolumeReclaimPolicy defines what happens to a persistent volume when released from its claim."),
    col("Status", "string", "phase indicates if a volume is available, bound to a claim, or released by a claim."),
    col("Claim", "string", "claimRef is part of a bi-directional binding between PersistentVolume and PersistentVolumeClaim."),
    col("StorageClass", "string", "StorageClass of the pv"),
    col("VolumeAttributesClass", "string", "VolumeAttributesClass of the pv"),
    col("Reason", "string", "reason is a brief CamelCase string that describes any failure and is meant for machine parsing and tidy display in the CLI."),
    AGE,
    wide("VolumeMode", "string", "volumeMode defines if a volume is intended to be used with a formatted filesystem or to remain in raw block state."),
];

pub(crate) const PERSISTENT_VOLUME_CLAIM_COLUMNS: &[Column] = &[
    NAME,
    col(
        "Status",
        "string",
        "phase represents the current phase of PersistentVolumeClaim.",
    ),
    col(
        "Volume",
        "string",
        "volumeName is the binding reference to the PersistentVolume backing this claim.",
    ),
    col(
        "Capacity",
        "string",
        "capacity represents the actual resources of the underlying volume.",
    ),
    col(
        "Access Modes",
        "string",
        "accessModes contains the actual access modes the volume backing the PVC has.",
    ),
    col("StorageClass", "string", "StorageClass of the pvc"),
    col(
        "VolumeAttributesClass",
        "string",
        "VolumeAttributesClass of the pvc",
    ),
    AGE,
    wide(
        "VolumeMode",
        "string",
        "volumeMode defines what type of volume is required by the claim.",
    ),
];

pub(crate) fn pod_template_cells(obj: &Value) -> Vec<Value> {
    let (names, images) = layout_containers(arr_at(obj, "/template/spec/containers"));
    vec![
        name(obj),
        Value::from(names),
        Value::from(images),
        Value::from(format_labels(at(obj, "/template/metadata/labels"))),
    ]
}

pub(crate) fn replication_controller_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let (names, images) = layout_containers(arr_at(obj, "/spec/template/spec/containers"));
    vec![
        name(obj),
        int_cell(opt_int(obj, "/spec/replicas").unwrap_or(1)),
        int_cell(int_at(obj, "/status/replicas")),
        int_cell(int_at(obj, "/status/readyReplicas")),
        age(obj, now),
        Value::from(names),
        Value::from(images),
        Value::from(format_labels(at(obj, "/spec/selector"))),
    ]
}

/// Upstream's `findNodeRoles`: `node-role.kubernetes.io/<role>` label keys
/// and the value of `kubernetes.io/role`, sorted and de-duplicated.
fn node_roles(node: &Value) -> String {
    let mut roles = BTreeSet::new();
    if let Some(labels) = at(node, "/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            if let Some(role) = k.strip_prefix("node-role.kubernetes.io/") {
                if !role.is_empty() {
                    roles.insert(role.to_string());
                }
            } else if k == "kubernetes.io/role" {
                if let Some(v) = v.as_str().filter(|v| !v.is_empty()) {
                    roles.insert(v.to_string());
                }
            }
        }
    }
    or_none(&roles.into_iter().collect::<Vec<_>>().join(","))
}

fn node_address(node: &Value, type_: &str) -> String {
    arr_at(node, "/status/addresses")
        .iter()
        .find(|a| str_at(a, "/type") == type_)
        .map(|a| str_at(a, "/address").to_string())
        .unwrap_or_else(|| "<none>".to_string())
}

fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        "<unknown>".to_string()
    } else {
        s.to_string()
    }
}

pub(crate) fn node_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // Only the Ready condition is shown (the last one wins if repeated, as upstream's map).
    let ready = arr_at(obj, "/status/conditions")
        .iter()
        .rfind(|c| str_at(c, "/type") == "Ready");
    let mut status = vec![match ready {
        Some(c) if str_at(c, "/status") == "True" => "Ready",
        Some(_) => "NotReady",
        None => "Unknown",
    }];
    if bool_at(obj, "/spec/unschedulable") {
        status.push("SchedulingDisabled");
    }
    vec![
        name(obj),
        Value::from(status.join(",")),
        Value::from(node_roles(obj)),
        age(obj, now),
        Value::from(str_at(obj, "/status/nodeInfo/kubeletVersion")),
        Value::from(node_address(obj, "InternalIP")),
        Value::from(node_address(obj, "ExternalIP")),
        Value::from(or_unknown(str_at(obj, "/status/nodeInfo/osImage"))),
        Value::from(or_unknown(str_at(obj, "/status/nodeInfo/kernelVersion"))),
        Value::from(or_unknown(str_at(
            obj,
            "/status/nodeInfo/containerRuntimeVersion",
        ))),
    ]
}

pub(crate) fn namespace_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        Value::from(str_at(obj, "/status/phase")),
        age(obj, now),
    ]
}

/// Load-balancer ingress points: IPs, else hostnames, sorted and unique,
/// comma joined (upstream's wide form: never truncated, since the server
/// always prints wide).
pub(crate) fn load_balancer_ingress(ingress: &[Value]) -> String {
    let set: BTreeSet<&str> = ingress
        .iter()
        .filter_map(|i| {
            let ip = str_at(i, "/ip");
            let host = str_at(i, "/hostname");
            if !ip.is_empty() {
                Some(ip)
            } else if !host.is_empty() {
                Some(host)
            } else {
                None
            }
        })
        .collect();
    set.into_iter().collect::<Vec<_>>().join(",")
}

fn service_external_ip(svc: &Value, type_: &str) -> String {
    let external: Vec<&str> = arr_at(svc, "/spec/externalIPs")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    match type_ {
        "ClusterIP" | "NodePort" => {
            if external.is_empty() {
                "<none>".to_string()
            } else {
                external.join(",")
            }
        }
        "LoadBalancer" => {
            let lb = load_balancer_ingress(arr_at(svc, "/status/loadBalancer/ingress"));
            if !external.is_empty() {
                let mut all: Vec<&str> = if lb.is_empty() {
                    Vec::new()
                } else {
                    lb.split(',').collect()
                };
                all.extend(external);
                all.join(",")
            } else if !lb.is_empty() {
                lb
            } else {
                "<pending>".to_string()
            }
        }
        "ExternalName" => str_at(svc, "/spec/externalName").to_string(),
        _ => "<unknown>".to_string(),
    }
}

fn service_ports(svc: &Value) -> String {
    let pieces: Vec<String> = arr_at(svc, "/spec/ports")
        .iter()
        .map(|p| {
            let port = int_at(p, "/port");
            let protocol = opt_str(p, "/protocol").unwrap_or("TCP");
            let node_port = int_at(p, "/nodePort");
            if node_port > 0 {
                format!("{port}:{node_port}/{protocol}")
            } else {
                format!("{port}/{protocol}")
            }
        })
        .collect();
    or_none(&pieces.join(","))
}

pub(crate) fn service_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let type_ = opt_str(obj, "/spec/type").unwrap_or("ClusterIP");
    let cluster_ip = arr_at(obj, "/spec/clusterIPs")
        .first()
        .and_then(Value::as_str)
        .or_else(|| opt_str(obj, "/spec/clusterIP"))
        .filter(|ip| !ip.is_empty())
        .unwrap_or("<none>");
    vec![
        name(obj),
        Value::from(type_),
        Value::from(cluster_ip),
        Value::from(service_external_ip(obj, type_)),
        Value::from(service_ports(obj)),
        age(obj, now),
        Value::from(format_labels(at(obj, "/spec/selector"))),
    ]
}

/// Go's `net.JoinHostPort`: brackets around hosts containing a colon.
fn join_host_port(host: &str, port: i64) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Upstream's `formatEndpoints`: up to three `ip:port`, then `+ N more...`.
pub(crate) fn format_endpoints(obj: &Value) -> String {
    const MAX: usize = 3;
    let subsets = arr_at(obj, "/subsets");
    if subsets.is_empty() {
        return "<none>".to_string();
    }
    let mut list: Vec<String> = Vec::new();
    let mut more = false;
    let mut count = 0usize;
    for ss in subsets {
        let addresses = arr_at(ss, "/addresses");
        let ports = arr_at(ss, "/ports");
        if ports.is_empty() {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(str_at(a, "/ip").to_string());
            }
            continue;
        }
        for p in ports {
            count += addresses.len();
            for a in addresses {
                if list.len() == MAX {
                    more = true;
                    break;
                }
                list.push(join_host_port(str_at(a, "/ip"), int_at(p, "/port")));
            }
        }
    }
    let ret = list.join(",");
    if more {
        format!("{ret} + {} more...", count.saturating_sub(MAX))
    } else {
        ret
    }
}

pub(crate) fn endpoints_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![name(obj), Value::from(format_endpoints(obj)), age(obj, now)]
}

pub(crate) fn config_map_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let n = obj_len(obj, "/data") + obj_len(obj, "/binaryData");
    vec![name(obj), count_cell(n), age(obj, now)]
}

pub(crate) fn secret_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    // stringData is merged into data on write upstream; count the union.
    let mut keys: BTreeSet<&str> = BTreeSet::new();
    for field in ["/data", "/stringData"] {
        if let Some(m) = at(obj, field).and_then(Value::as_object) {
            keys.extend(m.keys().map(String::as_str));
        }
    }
    vec![
        name(obj),
        Value::from(opt_str(obj, "/type").unwrap_or("Opaque")),
        count_cell(keys.len()),
        age(obj, now),
    ]
}

pub(crate) fn service_account_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    vec![
        name(obj),
        count_cell(arr_at(obj, "/secrets").len()),
        age(obj, now),
    ]
}

pub(crate) fn resource_quota_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let hard: BTreeMap<&str, &Value> = at(obj, "/status/hard")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, v)| (k.as_str(), v)).collect())
        .unwrap_or_default();
    let used = at(obj, "/status/used").and_then(Value::as_object);
    let mut requests = Vec::new();
    let mut limits = Vec::new();
    for (resource, hard_q) in hard {
        let used_q = quantity(used.and_then(|u| u.get(resource)));
        let piece = format!("{resource}: {used_q}/{}", quantity(Some(hard_q)));
        let mut parts = resource.split('.');
        if parts.next() == Some("limits") && parts.next().is_some() {
            limits.push(piece);
        } else {
            requests.push(piece);
        }
    }
    vec![
        name(obj),
        Value::from(requests.join(", ")),
        Value::from(limits.join(", ")),
        age(obj, now),
    ]
}

/// Upstream's `GetAccessModesAsString`: RWO, ROX, RWX, RWOP in that order.
pub(crate) fn access_modes(modes: &[Value]) -> String {
    let has = |m: &str| modes.iter().any(|v| v.as_str() == Some(m));
    [
        ("ReadWriteOnce", "RWO"),
        ("ReadOnlyMany", "ROX"),
        ("ReadWriteMany", "RWX"),
        ("ReadWriteOncePod", "RWOP"),
    ]
    .iter()
    .filter(|(m, _)| has(m))
    .map(|(_, short)| *short)
    .collect::<Vec<_>>()
    .join(",")
}

/// The storage class of a PV or PVC: the beta annotation wins over the field.
fn storage_class(obj: &Value) -> &str {
    opt_str(
        obj,
        "/metadata/annotations/volume.beta.kubernetes.io~1storage-class",
    )
    .unwrap_or_else(|| str_at(obj, "/spec/storageClassName"))
}

fn or_unset(s: Option<&str>) -> String {
    s.unwrap_or("<unset>").to_string()
}

fn phase_or_terminating(obj: &Value) -> &str {
    if at(obj, "/metadata/deletionTimestamp").is_some() {
        "Terminating"
    } else {
        str_at(obj, "/status/phase")
    }
}

pub(crate) fn persistent_volume_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let claim = match at(obj, "/spec/claimRef") {
        Some(c) => format!("{}/{}", str_at(c, "/namespace"), str_at(c, "/name")),
        None => String::new(),
    };
    let capacity = match at(obj, "/spec/capacity/storage") {
        Some(q) => quantity(Some(q)),
        None => "0".to_string(),
    };
    vec![
        name(obj),
        Value::from(capacity),
        Value::from(access_modes(arr_at(obj, "/spec/accessModes"))),
        Value::from(str_at(obj, "/spec/persistentVolumeReclaimPolicy")),
        Value::from(phase_or_terminating(obj)),
        Value::from(claim),
        Value::from(storage_class(obj)),
        Value::from(or_unset(opt_str(obj, "/spec/volumeAttributesClassName"))),
        Value::from(str_at(obj, "/status/reason")),
        age(obj, now),
        Value::from(or_unset(opt_str(obj, "/spec/volumeMode"))),
    ]
}

pub(crate) fn persistent_volume_claim_cells(obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let volume = str_at(obj, "/spec/volumeName");
    let (capacity, modes) = if volume.is_empty() {
        (String::new(), String::new())
    } else {
        (
            quantity(at(obj, "/status/capacity/storage")),
            access_modes(arr_at(obj, "/status/accessModes")),
        )
    };
    vec![
        name(obj),
        Value::from(phase_or_terminating(obj)),
        Value::from(volume),
        Value::from(capacity),
        Value::from(modes),
        Value::from(storage_class(obj)),
        Value::from(or_unset(opt_str(obj, "/spec/volumeAttributesClassName"))),
        age(obj, now),
        Value::from(or_unset(opt_str(obj, "/spec/volumeMode"))),
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
        json!({"name": name, "namespace": "default", "creationTimestamp": "2024-04-30T12:00:00Z"})
    }

    #[test]
    fn nodes() {
        let node = json!({
            "metadata": {"name": "node1", "creationTimestamp": "2024-04-28T12:00:00Z",
                         "labels": {"node-role.kubernetes.io/control-plane": "", "node-role.kubernetes.io/worker": "",
                                    "kubernetes.io/role": "master", "node-role.kubernetes.io/": "x"}},
            "spec": {"unschedulable": true},
            "status": {
                "conditions": [{"type": "MemoryPressure", "status": "False"}, {"type": "Ready", "status": "True"}],
                "addresses": [{"type": "Hostname", "address": "node1"}, {"type": "InternalIP", "address": "10.0.0.1"}],
                "nodeInfo": {"kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)",
                             "kernelVersion": "6.1.0", "containerRuntimeVersion": "navarch://0.1.0"}
            }
        });
        assert_eq!(
            node_cells(&node, now()),
            vec![
                json!("node1"),
                json!("Ready,SchedulingDisabled"),
                json!("control-plane,master,worker"),
                json!("3d"),
                json!("v1.33.0"),
                json!("10.0.0.1"),
                json!("<none>"),
                json!("Debian GNU/Linux 12 (bookworm)"),
                json!("6.1.0"),
                json!("navarch://0.1.0")
            ]
        );
        let cases = [
            (
                json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
                "NotReady",
            ),
            (
                json!({"metadata": {"name": "n"}, "status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}),
                "NotReady",
            ),
            (json!({"metadata": {"name": "n"}}), "Unknown"),
        ];
        for (n, want) in cases {
            let c = node_cells(&n, now());
            assert_eq!(c[1], json!(want));
            assert_eq!(c[2], json!("<none>"));
            assert_eq!(
                &c[7..],
                &[json!("<unknown>"), json!("<unknown>"), json!("<unknown>")]
            );
        }
    }

    #[test]
    fn services() {
        let cases = [
            (
                json!({"metadata": meta("web"), "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                       "ports": [{"port": 80, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"}], "selector": {"app": "web"}}}),
                vec![
                    "web",
                    "ClusterIP",
                    "10.96.0.10",
                    "<none>",
                    "80/TCP,53/UDP",
                    "24h",
                    "app=web",
                ],
            ),
            (
                json!({"metadata": meta("np"), "spec": {"type": "NodePort", "clusterIPs": ["10.96.0.11"],
                       "ports": [{"port": 80, "nodePort": 30080}], "externalIPs": ["1.2.3.4"]}}),
                vec![
                    "np",
                    "NodePort",
                    "10.96.0.11",
                    "1.2.3.4",
                    "80:30080/TCP",
                    "24h",
                    "<none>",
                ],
            ),
            (
                json!({"metadata": meta("lb"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.12"],
                       "ports": [{"port": 443, "nodePort": 31443, "protocol": "TCP"}]}}),
                vec![
                    "lb",
                    "LoadBalancer",
                    "10.96.0.12",
                    "<pending>",
                    "443:31443/TCP",
                    "24h",
                    "<none>",
                ],
            ),
            (
                json!({"metadata": meta("lb2"), "spec": {"type": "LoadBalancer", "clusterIPs": ["10.96.0.13"], "externalIPs": ["9.9.9.9"]},
                       "status": {"loadBalancer": {"ingress": [{"ip": "5.6.7.8"}, {"hostname": "lb.example.com"}, {"ip": "1.1.1.1"}]}}}),
                vec![
                    "lb2",
                    "LoadBalancer",
                    "10.96.0.13",
                    "1.1.1.1,5.6.7.8,lb.example.com,9.9.9.9",
                    "<none>",
                    "24h",
                    "<none>",
                ],
            ),
            (
                json!({"metadata": meta("ext"), "spec": {"type": "ExternalName", "externalName": "db.example.com"}}),
                vec![
                    "ext",
                    "ExternalName",
                    "<none>",
                    "db.example.com",
                    "<none>",
                    "24h",
                    "<none>",
                ],
            ),
            (
                json!({"metadata": meta("headless"), "spec": {"clusterIP": "None", "clusterIPs": ["None"], "ports": [{"port": 5432}]}}),
                vec![
                    "headless",
                    "ClusterIP",
                    "None",
                    "<none>",
                    "5432/TCP",
                    "24h",
                    "<none>",
                ],
            ),
        ];
        for (svc, want) in cases {
            let want: Vec<Value> = want.into_iter().map(Value::from).collect();
            assert_eq!(service_cells(&svc, now()), want);
        }
    }

    #[test]
    fn endpoints() {
        let ep = |subsets: Value| json!({"metadata": meta("web"), "subsets": subsets});
        let cases = [
            (json!([]), "<none>"),
            (
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}], "ports": [{"port": 80}]}]),
                "10.0.0.1:80,10.0.0.2:80",
            ),
            (json!([{"addresses": [{"ip": "10.0.0.1"}]}]), "10.0.0.1"),
            (
                json!([{"addresses": [{"ip": "fd00::1"}], "ports": [{"port": 80}]}]),
                "[fd00::1]:80",
            ),
            (
                json!([{"addresses": [{"ip": "10.0.0.1"}, {"ip": "10.0.0.2"}, {"ip": "10.0.0.3"}],
                        "ports": [{"name": "http", "port": 80}, {"name": "https", "port": 443}]}]),
                "10.0.0.1:80,10.0.0.2:80,10.0.0.3:80 + 3 more...",
            ),
        ];
        for (subsets, want) in cases {
            assert_eq!(endpoints_cells(&ep(subsets), now())[1], json!(want));
        }
    }

    #[test]
    fn simple_core_kinds() {
        let cm = json!({"metadata": meta("cfg"), "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}});
        assert_eq!(
            config_map_cells(&cm, now()),
            vec![json!("cfg"), json!(3), json!("24h")]
        );
        let empty_cm = json!({"metadata": meta("empty")});
        assert_eq!(config_map_cells(&empty_cm, now())[1], json!(0));

        let secret = json!({"metadata": meta("tls"), "type": "kubernetes.io/tls", "data": {"tls.crt": "", "tls.key": ""}});
        assert_eq!(
            secret_cells(&secret, now()),
            vec![
                json!("tls"),
                json!("kubernetes.io/tls"),
                json!(2),
                json!("24h")
            ]
        );
        let opaque = json!({"metadata": meta("s"), "stringData": {"a": "x"}, "data": {"a": "eA==", "b": ""}});
        assert_eq!(
            secret_cells(&opaque, now())[1..3],
            [json!("Opaque"), json!(2)]
        );

        let sa = json!({"metadata": meta("default"), "secrets": [{"name": "tok"}]});
        assert_eq!(
            service_account_cells(&sa, now()),
            vec![json!("default"), json!(1), json!("24h")]
        );

        let ns = json!({"metadata": {"name": "kube-system", "creationTimestamp": "2024-05-01T11:59:30Z"}, "status": {"phase": "Active"}});
        assert_eq!(
            namespace_cells(&ns, now()),
            vec![json!("kube-system"), json!("Active"), json!("30s")]
        );
    }

    #[test]
    fn replication_controllers_and_templates() {
        let rc = json!({"metadata": meta("rc"),
            "spec": {"replicas": 3, "selector": {"app": "web"},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]}}},
            "status": {"replicas": 3, "readyReplicas": 2}});
        assert_eq!(
            replication_controller_cells(&rc, now()),
            vec![
                json!("rc"),
                json!(3),
                json!(3),
                json!(2),
                json!("24h"),
                json!("a,b"),
                json!("nginx,redis"),
                json!("app=web")
            ]
        );
        let pt = json!({"metadata": meta("pt"), "template": {"metadata": {"labels": {"tier": "x", "app": "y"}},
                        "spec": {"containers": [{"name": "a", "image": "nginx"}]}}});
        assert_eq!(
            pod_template_cells(&pt),
            vec![
                json!("pt"),
                json!("a"),
                json!("nginx"),
                json!("app=y,tier=x")
            ]
        );
    }

    #[test]
    fn quotas() {
        let rq = json!({"metadata": meta("q"), "status": {
            "hard": {"requests.cpu": "1", "pods": "10", "limits.memory": "2Gi", "limits.cpu": "2"},
            "used": {"requests.cpu": "500m", "pods": "3", "limits.memory": "1Gi"}}});
        assert_eq!(
            resource_quota_cells(&rq, now()),
            vec![
                json!("q"),
                json!("pods: 3/10, requests.cpu: 500m/1"),
                json!("limits.cpu: 0/2, limits.memory: 1Gi/2Gi"),
                json!("24h")
            ]
        );
    }

    #[test]
    fn volumes() {
        let pv = json!({"metadata": meta("pv1"), "spec": {"capacity": {"storage": "10Gi"},
            "accessModes": ["ReadWriteMany", "ReadWriteOnce"], "persistentVolumeReclaimPolicy": "Retain",
            "claimRef": {"namespace": "default", "name": "data"}, "storageClassName": "standard"},
            "status": {"phase": "Bound"}});
        assert_eq!(
            persistent_volume_cells(&pv, now()),
            [
                "pv1",
                "10Gi",
                "RWO,RWX",
                "Retain",
                "Bound",
                "default/data",
                "standard",
                "<unset>",
                "",
                "24h",
                "<unset>"
            ]
            .map(Value::from)
            .to_vec()
        );
        let pending = json!({"metadata": meta("data"), "spec": {"storageClassName": "standard", "volumeMode": "Filesystem",
            "resources": {"requests": {"storage": "1Gi"}}}, "status": {"phase": "Pending"}});
        assert_eq!(
            persistent_volume_claim_cells(&pending, now()),
            [
                "data",
                "Pending",
                "",
                "",
                "",
                "standard",
                "<unset>",
                "24h",
                "Filesystem"
            ]
            .map(Value::from)
            .to_vec()
        );
        let mut bound = json!({"metadata": meta("data"), "spec": {"volumeName": "pv1"},
            "status": {"phase": "Bound", "capacity": {"storage": "10Gi"}, "accessModes": ["ReadWriteOncePod"]}});
        bound["metadata"]["annotations"] =
            json!({"volume.beta.kubernetes.io/storage-class": "legacy"});
        bound["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:00:00Z");
        assert_eq!(
            persistent_volume_claim_cells(&bound, now())[1..6],
            ["Terminating", "pv1", "10Gi", "RWOP", "legacy"].map(Value::from)
        );
    }
}
