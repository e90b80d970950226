//! Defaults for Service, Namespace, Secret, Node, volumes, networking, storage,
//! scheduling, RBAC and CRDs.

use base64::Engine;
use serde_json::{json, Map, Value};

use crate::validation::util::{child_obj, ensure_obj, get, set_default, str_at};

/// core/v1 `SetDefaults_Service` plus the IP family fields the service
/// registry fills (single-stack cluster). Cluster IPs and node ports are
/// allocated by the server, not here.
pub(crate) fn default_service(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    set_default(spec, "sessionAffinity", json!("None"));
    match str_at(spec, &["sessionAffinity"]) {
        "None" => {
            ensure_obj(spec).remove("sessionAffinityConfig");
        }
        "ClientIP" => {
            let cfg = child_obj(child_obj(spec, "sessionAffinityConfig"), "clientIP");
            set_default(cfg, "timeoutSeconds", json!(10800));
        }
        _ => {}
    }
    set_default(spec, "type", json!("ClusterIP"));
    if let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
            let unset = match p.get("targetPort") {
                None | Some(Value::Null) => true,
                Some(Value::Number(n)) => n.as_i64() == Some(0),
                Some(Value::String(s)) => s.is_empty(),
                _ => false,
            };
            if unset {
                if let Some(port) = p.get("port").cloned() {
                    ensure_obj(p).insert("targetPort".to_string(), port);
                }
            }
        }
    }
    let ty = str_at(spec, &["type"]).to_string();
    let has_external_ips = spec
        .get("externalIPs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let externally_accessible =
        ty == "LoadBalancer" || ty == "NodePort" || (ty == "ClusterIP" && has_external_ips);
    if externally_accessible {
        set_default(spec, "externalTrafficPolicy", json!("Cluster"));
    }
    if matches!(ty.as_str(), "ClusterIP" | "NodePort" | "LoadBalancer") {
        set_default(spec, "internalTrafficPolicy", json!("Cluster"));
    }
    if ty == "LoadBalancer" {
        set_default(spec, "allocateLoadBalancerNodePorts", json!(true));
    }
    if ty != "ExternalName" {
        // keep clusterIP and clusterIPs in step (the registry's normalisation)
        let ip = str_at(spec, &["clusterIP"]).to_string();
        let ips_empty = spec
            .get("clusterIPs")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if !ip.is_empty() && ips_empty {
            ensure_obj(spec).insert("clusterIPs".to_string(), json!([ip]));
        } else if ip.is_empty() && !ips_empty {
            let first = get(spec, &["clusterIPs"])
                .and_then(|a| a.get(0))
                .cloned()
                .unwrap_or(Value::Null);
            if first.is_string() {
                ensure_obj(spec).insert("clusterIP".to_string(), first);
            }
        }
        set_default(spec, "ipFamilyPolicy", json!("SingleStack"));
        let families_empty = spec
            .get("ipFamilies")
            .and_then(Value::as_array)
            .is_none_or(|a| a.is_empty());
        if families_empty {
            let ip = str_at(spec, &["clusterIP"]);
            let fam = if ip.parse::<std::net::Ipv6Addr>().is_ok() {
                "IPv6"
            } else {
                "IPv4"
            };
            ensure_obj(spec).insert("ipFamilies".to_string(), json!([fam]));
        }
    }
}

/// Namespace: the `kubernetes.io/metadata.name` label, phase Active and, unless
/// the namespace is being deleted, the `kubernetes` finalizer.
pub(crate) fn default_namespace(obj: &mut Value) {
    let name = str_at(obj, &["metadata", "name"]).to_string();
    let deleting = get(obj, &["metadata", "deletionTimestamp"]).is_some_and(|v| !v.is_null());
    if !name.is_empty() {
        let labels = ensure_obj(child_obj(child_obj(obj, "metadata"), "labels"));
        labels.insert("kubernetes.io/metadata.name".to_string(), json!(name));
    }
    set_default(child_obj(obj, "status"), "phase", json!("Active"));
    if !deleting {
        let spec = ensure_obj(child_obj(obj, "spec"));
        let fins = spec.entry("finalizers").or_insert_with(|| json!([]));
        if !fins.is_array() {
            *fins = json!([]);
        }
        if let Some(list) = fins.as_array_mut() {
            if !list.iter().any(|f| f == "kubernetes") {
                list.push(json!("kubernetes"));
            }
        }
    }
}

/// Secret: type Opaque, and `stringData` merged into `data` (upstream does this
/// in conversion, before defaulting).
pub(crate) fn default_secret(obj: &mut Value) {
    set_default(obj, "type", json!("Opaque"));
    let m = ensure_obj(obj);
    if let Some(Value::Object(string_data)) = m.remove("stringData") {
        let data = m.entry("data").or_insert_with(|| Value::Object(Map::new()));
        let data = ensure_obj(data);
        for (k, v) in string_data {
            let s = v.as_str().unwrap_or("");
            data.insert(
                k,
                json!(base64::engine::general_purpose::STANDARD.encode(s)),
            );
        }
    }
}

/// Node: allocatable defaults to capacity.
pub(crate) fn default_node(obj: &mut Value) {
    let capacity = get(obj, &["status", "capacity"])
        .filter(|c| c.is_object())
        .cloned();
    if let Some(cap) = capacity {
        let status = child_obj(obj, "status");
        if status.get("allocatable").is_none_or(Value::is_null) {
            ensure_obj(status).insert("allocatable".to_string(), cap);
        }
    }
}

/// PersistentVolume: phase Pending, reclaim policy Retain, volume mode Filesystem.
pub(crate) fn default_pv(obj: &mut Value) {
    set_default(child_obj(obj, "status"), "phase", json!("Pending"));
    let spec = child_obj(obj, "spec");
    set_default(spec, "persistentVolumeReclaimPolicy", json!("Retain"));
    set_default(spec, "volumeMode", json!("Filesystem"));
    if let Some(hp) = spec.get_mut("hostPath").filter(|h| h.is_object()) {
        set_default(hp, "type", json!(""));
    }
}

/// PersistentVolumeClaim (also claim templates): volume mode Filesystem, phase Pending.
pub(crate) fn default_pvc(obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    set_default(child_obj(obj, "spec"), "volumeMode", json!("Filesystem"));
    set_default(child_obj(obj, "status"), "phase", json!("Pending"));
}

/// Endpoints: port protocol TCP.
pub(crate) fn default_endpoints(obj: &mut Value) {
    if let Some(subsets) = obj.get_mut("subsets").and_then(Value::as_array_mut) {
        for s in subsets {
            if let Some(ports) = s.get_mut("ports").and_then(Value::as_array_mut) {
                for p in ports {
                    set_default(p, "protocol", json!("TCP"));
                }
            }
        }
    }
}

/// EndpointSlice: port protocol TCP and name "".
pub(crate) fn default_endpoint_slice(obj: &mut Value) {
    if let Some(ports) = obj.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
            let m = ensure_obj(p);
            if m.get("name").is_none_or(Value::is_null) {
                m.insert("name".to_string(), json!(""));
            }
        }
    }
}

/// LimitRange: container items get default = max and defaultRequest = default or min.
pub(crate) fn default_limit_range(obj: &mut Value) {
    let Some(limits) = obj
        .get_mut("spec")
        .and_then(|s| s.get_mut("limits"))
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    for item in limits {
        if str_at(item, &["type"]) != "Container" {
            continue;
        }
        let pick = |item: &Value, k: &str| {
            item.get(k)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let mut default = pick(item, "default");
        for (k, v) in pick(item, "max") {
            default.entry(k).or_insert(v);
        }
        let mut default_request = pick(item, "defaultRequest");
        for (k, v) in default.iter().chain(pick(item, "min").iter()) {
            default_request.entry(k.clone()).or_insert(v.clone());
        }
        let m = ensure_obj(item);
        if !default.is_empty() {
            m.insert("default".to_string(), Value::Object(default));
        }
        if !default_request.is_empty() {
            m.insert("defaultRequest".to_string(), Value::Object(default_request));
        }
    }
}

/// core/v1 Event: upstream has no defaulting; the always-serialised empty
/// `source` and reporting fields are filled so stored events look like upstream's.
pub(crate) fn default_core_event(obj: &mut Value) {
    let m = ensure_obj(obj);
    m.entry("source").or_insert_with(|| json!({}));
    m.entry("reportingComponent").or_insert_with(|| json!(""));
    m.entry("reportingInstance").or_insert_with(|| json!(""));
    m.entry("involvedObject").or_insert_with(|| json!({}));
}

fn default_scaling_rules(rules: &mut Value, up: bool) {
    let (window, policies) = if up {
        (
            0,
            json!([{"type": "Pods", "value": 4, "periodSeconds": 15}, {"type": "Percent", "value": 100, "periodSeconds": 15}]),
        )
    } else {
        (
            300,
            json!([{"type": "Percent", "value": 100, "periodSeconds": 15}]),
        )
    };
    set_default(rules, "stabilizationWindowSeconds", json!(window));
    set_default(rules, "selectPolicy", json!("Max"));
    let m = ensure_obj(rules);
    if m.get("policies")
        .and_then(Value::as_array)
        .is_none_or(|p| p.is_empty())
    {
        m.insert("policies".to_string(), policies);
    }
}

/// autoscaling/v2 HorizontalPodAutoscaler: one min replica, 80 % CPU target, and
/// behavior rules completed when behavior is given.
pub(crate) fn default_hpa(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    set_default(spec, "minReplicas", json!(1));
    let m = ensure_obj(spec);
    if m.get("metrics")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        m.insert(
            "metrics".to_string(),
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 80}}}]),
        );
    }
    if let Some(b) = m.get_mut("behavior").filter(|b| b.is_object()) {
        default_scaling_rules(child_obj(b, "scaleUp"), true);
        default_scaling_rules(child_obj(b, "scaleDown"), false);
    }
}

/// NetworkPolicy: port protocol TCP and policyTypes from the rules present.
pub(crate) fn default_network_policy(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    for dir in ["ingress", "egress"] {
        if let Some(rules) = spec.get_mut(dir).and_then(Value::as_array_mut) {
            for r in rules {
                if let Some(ports) = r.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
    let has_egress = spec
        .get("egress")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let m = ensure_obj(spec);
    if m.get("policyTypes")
        .and_then(Value::as_array)
        .is_none_or(|a| a.is_empty())
    {
        let types = if has_egress {
            json!(["Ingress", "Egress"])
        } else {
            json!(["Ingress"])
        };
        m.insert("policyTypes".to_string(), types);
    }
}

/// StorageClass: reclaim policy Delete, binding mode Immediate.
pub(crate) fn default_storage_class(obj: &mut Value) {
    set_default(obj, "reclaimPolicy", json!("Delete"));
    set_default(obj, "volumeBindingMode", json!("Immediate"));
}

/// PriorityClass: preemption policy PreemptLowerPriority.
pub(crate) fn default_priority_class(obj: &mut Value) {
    set_default(obj, "preemptionPolicy", json!("PreemptLowerPriority"));
}

/// RoleBinding/ClusterRoleBinding: the RBAC API group on roleRef and on
/// User/Group subjects.
pub(crate) fn default_binding(obj: &mut Value) {
    set_default(
        child_obj(obj, "roleRef"),
        "apiGroup",
        json!("rbac.authorization.k8s.io"),
    );
    if let Some(subjects) = obj.get_mut("subjects").and_then(Value::as_array_mut) {
        for s in subjects {
            if matches!(str_at(s, &["kind"]), "User" | "Group") {
                set_default(s, "apiGroup", json!("rbac.authorization.k8s.io"));
            }
        }
    }
}

/// CustomResourceDefinition: singular and listKind from kind, conversion None.
pub(crate) fn default_crd(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    let kind = str_at(spec, &["names", "kind"]).to_string();
    let names = child_obj(spec, "names");
    if !kind.is_empty() {
        set_default(names, "singular", json!(kind.to_lowercase()));
        set_default(names, "listKind", json!(format!("{kind}List")));
    }
    let conv = child_obj(spec, "conversion");
    set_default(conv, "strategy", json!("None"));
    if let Some(svc) = conv
        .get_mut("webhook")
        .and_then(|w| w.get_mut("clientConfig"))
        .and_then(|c| c.get_mut("service"))
    {
        if svc.is_object() {
            set_default(svc, "port", json!(443));
        }
    }
}
