//! Pod, pod template and container validation (upstream `ValidatePodSpec` and
//! friends), plus the pod update rules.

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use super::meta::{nonnegative, validate_annotations, validate_labels};
use super::names;
use super::quantity::parse_quantity;
use super::util::{arr_at, get, has, int_at, obj_at, str_at, Path};
use super::FieldError;

const RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const HTTP_SCHEMES: &[&str] = &["HTTP", "HTTPS"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const TERMINATION_MESSAGE_POLICIES: &[&str] = &["File", "FallbackToLogsOnError"];
const FILE_MODE_MSG: &str = "must be a number between 0 and 0777 (octal), both inclusive";
const ENV_FIELD_PATHS: &[&str] = &[
    "metadata.annotations",
    "metadata.labels",
    "metadata.name",
    "metadata.namespace",
    "metadata.uid",
    "spec.nodeName",
    "spec.serviceAccountName",
    "status.hostIP",
    "status.hostIPs",
    "status.podIP",
    "status.podIPs",
];

/// Upstream's message when a pod update touches an immutable field.
pub(crate) const POD_UPDATE_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// A Pod.
pub(crate) fn validate_pod(obj: &Value) -> Vec<FieldError> {
    validate_pod_spec(obj.get("spec").unwrap_or(&Value::Null), &Path::new("spec"))
}

/// A PodTemplate (the kind): its `template`.
pub(crate) fn validate_pod_template(obj: &Value) -> Vec<FieldError> {
    validate_pod_template_spec(
        obj.get("template").unwrap_or(&Value::Null),
        &Path::new("template"),
    )
}

/// A PodTemplateSpec at `path` (upstream `ValidatePodTemplateSpec`): labels and
/// annotations (reported as `<path>.labels`, as upstream does) and the pod spec.
pub(crate) fn validate_pod_template_spec(tmpl: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_labels(obj_at(tmpl, &["metadata", "labels"]), &path.child("labels"));
    errs.extend(validate_annotations(
        obj_at(tmpl, &["metadata", "annotations"]),
        &path.child("annotations"),
    ));
    let spec_path = path.child("spec");
    let spec = tmpl.get("spec").unwrap_or(&Value::Null);
    if !arr_at(spec, &["ephemeralContainers"]).is_empty() {
        errs.push(FieldError::forbidden(
            spec_path.child("ephemeralContainers"),
            "ephemeral containers not allowed in pod template",
        ));
    }
    errs.extend(validate_pod_spec(spec, &spec_path));
    errs
}

/// Upstream `ValidatePodSpec` (the parts navarch checks).
pub(crate) fn validate_pod_spec(spec: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let volumes = validate_volumes(
        arr_at(spec, &["volumes"]),
        &path.child("volumes"),
        &mut errs,
    );
    let restart_policy = str_at(spec, &["restartPolicy"]);
    let mut all_names = HashSet::new();
    let init = arr_at(spec, &["initContainers"]);
    for (i, c) in init.iter().enumerate() {
        let p = path.child("initContainers").index(i);
        errs.extend(validate_container(c, &p, &volumes, &mut all_names, true));
        let sidecar = str_at(c, &["restartPolicy"]) == "Always";
        if !sidecar {
            for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
                if has(c, &[probe]) {
                    errs.push(FieldError::forbidden(
                        p.child(probe),
                        "may not be set for init containers without restartPolicy=Always",
                    ));
                }
            }
        }
        let rp = str_at(c, &["restartPolicy"]);
        if !rp.is_empty() && rp != "Always" {
            errs.push(FieldError::not_supported(
                p.child("restartPolicy"),
                rp,
                &["Always"],
            ));
        }
    }
    let containers = arr_at(spec, &["containers"]);
    if containers.is_empty() {
        errs.push(FieldError::required(path.child("containers"), ""));
    }
    for (i, c) in containers.iter().enumerate() {
        let p = path.child("containers").index(i);
        errs.extend(validate_container(c, &p, &volumes, &mut all_names, false));
        if has(c, &["restartPolicy"]) {
            errs.push(FieldError::forbidden(
                p.child("restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
    match restart_policy {
        "Always" | "OnFailure" | "Never" => {}
        "" => errs.push(FieldError::required(path.child("restartPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            path.child("restartPolicy"),
            other,
            RESTART_POLICIES,
        )),
    }
    let dns_policy = str_at(spec, &["dnsPolicy"]);
    match dns_policy {
        "ClusterFirstWithHostNet" | "ClusterFirst" | "Default" => {}
        "None" => {
            if !has(spec, &["dnsConfig"]) {
                errs.push(FieldError::required(
                    path.child("dnsConfig"),
                    "must provide `dnsConfig` when `dnsPolicy` is None",
                ));
            }
        }
        "" => errs.push(FieldError::required(path.child("dnsPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            path.child("dnsPolicy"),
            other,
            DNS_POLICIES,
        )),
    }
    errs.extend(validate_labels(
        obj_at(spec, &["nodeSelector"]),
        &path.child("nodeSelector"),
    ));
    let sa = str_at(spec, &["serviceAccountName"]);
    if !sa.is_empty() {
        for msg in names::dns1123_subdomain_errors(sa) {
            errs.push(FieldError::invalid(
                path.child("serviceAccountName"),
                sa,
                msg,
            ));
        }
    }
    for field in ["hostname", "subdomain"] {
        let v = str_at(spec, &[field]);
        if !v.is_empty() {
            for msg in names::dns1123_label_errors(v) {
                errs.push(FieldError::invalid(path.child(field), v, msg));
            }
        }
    }
    if let Some(ads) = int_at(spec, &["activeDeadlineSeconds"]) {
        if !(1..=i64::from(i32::MAX)).contains(&ads) {
            errs.push(FieldError::invalid(
                path.child("activeDeadlineSeconds"),
                ads,
                format!("must be between 1 and {}, inclusive", i32::MAX),
            ));
        }
    }
    errs.extend(validate_tolerations(
        arr_at(spec, &["tolerations"]),
        &path.child("tolerations"),
    ));
    errs
}

/// Volumes: unique DNS-1123 label names and exactly one source. Returns the names.
fn validate_volumes(volumes: &[Value], path: &Path, errs: &mut Vec<FieldError>) -> HashSet<String> {
    let mut seen = HashSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let p = path.index(i);
        let name = str_at(v, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        } else {
            for msg in names::dns1123_label_errors(name) {
                errs.push(FieldError::invalid(p.child("name"), name, msg));
            }
            if !seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(p.child("name"), name));
            }
        }
        let sources: Vec<&String> = v
            .as_object()
            .map(|m| {
                m.iter()
                    .filter(|(k, x)| *k != "name" && !x.is_null())
                    .map(|(k, _)| k)
                    .collect()
            })
            .unwrap_or_default();
        match sources.as_slice() {
            [] => errs.push(FieldError::required(&p, "must specify a volume type")),
            [one] => errs.extend(validate_volume_source(
                one,
                v.get(one.as_str()).unwrap_or(&Value::Null),
                &p.child(one),
            )),
            [_, second, ..] => errs.push(FieldError::forbidden(
                p.child(second),
                "may not specify more than 1 volume type",
            )),
        }
    }
    seen
}

fn validate_volume_source(kind: &str, src: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let required = match kind {
        "configMap" => Some("name"),
        "secret" => Some("secretName"),
        "hostPath" => Some("path"),
        "persistentVolumeClaim" => Some("claimName"),
        _ => None,
    };
    if let Some(f) = required {
        if str_at(src, &[f]).is_empty() {
            errs.push(FieldError::required(path.child(f), ""));
        }
    }
    if let Some(mode) = int_at(src, &["defaultMode"]) {
        if !(0..=0o777).contains(&mode) {
            errs.push(FieldError::invalid(
                path.child("defaultMode"),
                mode,
                FILE_MODE_MSG,
            ));
        }
    }
    for (i, item) in arr_at(src, &["items"]).iter().enumerate() {
        let ip = path.child("items").index(i);
        if str_at(item, &["key"]).is_empty() {
            errs.push(FieldError::required(ip.child("key"), ""));
        }
        if str_at(item, &["path"]).is_empty() {
            errs.push(FieldError::required(ip.child("path"), ""));
        }
        if let Some(mode) = int_at(item, &["mode"]) {
            if !(0..=0o777).contains(&mode) {
                errs.push(FieldError::invalid(ip.child("mode"), mode, FILE_MODE_MSG));
            }
        }
    }
    errs
}

fn validate_container(
    c: &Value,
    path: &Path,
    volumes: &HashSet<String>,
    all_names: &mut HashSet<String>,
    init: bool,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_at(c, &["name"]);
    if name.is_empty() {
        errs.push(FieldError::required(path.child("name"), ""));
    } else {
        for msg in names::dns1123_label_errors(name) {
            errs.push(FieldError::invalid(path.child("name"), name, msg));
        }
        if !all_names.insert(name.to_string()) {
            errs.push(FieldError::duplicate(path.child("name"), name));
        }
    }
    let image = str_at(c, &["image"]);
    if image.is_empty() {
        errs.push(FieldError::required(path.child("image"), ""));
    } else if image.trim() != image {
        errs.push(FieldError::invalid(
            path.child("image"),
            image,
            "must not have leading or trailing whitespace",
        ));
    }
    let pull = str_at(c, &["imagePullPolicy"]);
    match pull {
        "Always" | "IfNotPresent" | "Never" => {}
        "" => errs.push(FieldError::required(path.child("imagePullPolicy"), "")),
        other => errs.push(FieldError::not_supported(
            path.child("imagePullPolicy"),
            other,
            PULL_POLICIES,
        )),
    }
    let tmp = str_at(c, &["terminationMessagePolicy"]);
    match tmp {
        "File" | "FallbackToLogsOnError" => {}
        "" => errs.push(FieldError::required(
            path.child("terminationMessagePolicy"),
            "",
        )),
        other => errs.push(FieldError::not_supported(
            path.child("terminationMessagePolicy"),
            other,
            TERMINATION_MESSAGE_POLICIES,
        )),
    }
    errs.extend(validate_container_ports(
        arr_at(c, &["ports"]),
        &path.child("ports"),
    ));
    errs.extend(validate_env(arr_at(c, &["env"]), &path.child("env")));
    errs.extend(validate_volume_mounts(
        arr_at(c, &["volumeMounts"]),
        volumes,
        &path.child("volumeMounts"),
    ));
    errs.extend(validate_resources(
        c.get("resources").unwrap_or(&Value::Null),
        &path.child("resources"),
    ));
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get(probe).filter(|p| !p.is_null()) {
            let pp = path.child(probe);
            errs.extend(validate_probe(p, &pp));
            if probe != "readinessProbe" {
                if let Some(st) = int_at(p, &["successThreshold"]) {
                    if st != 1 {
                        errs.push(FieldError::invalid(
                            pp.child("successThreshold"),
                            st,
                            "must be 1",
                        ));
                    }
                }
            }
        }
    }
    if !init {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = get(c, &["lifecycle", hook]).filter(|h| !h.is_null()) {
                errs.extend(validate_handler(
                    h,
                    &path.child("lifecycle").child(hook),
                    true,
                ));
            }
        }
    }
    errs
}

fn validate_container_ports(ports: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut names_seen = HashSet::new();
    for (i, port) in ports.iter().enumerate() {
        let p = path.index(i);
        let name = str_at(port, &["name"]);
        if !name.is_empty() {
            let msgs = names::port_name_errors(name);
            if !msgs.is_empty() {
                for msg in msgs {
                    errs.push(FieldError::invalid(p.child("name"), name, msg));
                }
            } else if !names_seen.insert(name.to_string()) {
                errs.push(FieldError::duplicate(p.child("name"), name));
            }
        }
        match int_at(port, &["containerPort"]) {
            None | Some(0) => errs.push(FieldError::required(p.child("containerPort"), "")),
            Some(n) => {
                for msg in names::port_num_errors(n) {
                    errs.push(FieldError::invalid(p.child("containerPort"), n, msg));
                }
            }
        }
        if let Some(n) = int_at(port, &["hostPort"]).filter(|n| *n != 0) {
            for msg in names::port_num_errors(n) {
                errs.push(FieldError::invalid(p.child("hostPort"), n, msg));
            }
        }
        errs.extend(validate_protocol(port, &p));
    }
    errs
}

/// `protocol`: required, one of SCTP/TCP/UDP.
pub(crate) fn validate_protocol(port: &Value, path: &Path) -> Option<FieldError> {
    match str_at(port, &["protocol"]) {
        "TCP" | "UDP" | "SCTP" => None,
        "" => Some(FieldError::required(path.child("protocol"), "")),
        other => Some(FieldError::not_supported(
            path.child("protocol"),
            other,
            PROTOCOLS,
        )),
    }
}

/// Upstream `ValidatePortNumOrName` for an IntOrString port.
pub(crate) fn validate_port_num_or_name(port: Option<&Value>, path: &Path) -> Vec<FieldError> {
    match port {
        Some(Value::Number(n)) => {
            let n = n.as_i64().unwrap_or(0);
            names::port_num_errors(n)
                .into_iter()
                .map(|m| FieldError::invalid(path, n, m))
                .collect()
        }
        Some(Value::String(s)) => names::port_name_errors(s)
            .into_iter()
            .map(|m| FieldError::invalid(path, s.as_str(), m))
            .collect(),
        _ => names::port_num_errors(0)
            .into_iter()
            .map(|m| FieldError::invalid(path, 0, m))
            .collect(),
    }
}

fn validate_env(env: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, ev) in env.iter().enumerate() {
        let p = path.index(i);
        let name = str_at(ev, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        } else {
            for msg in names::env_var_name_errors(name) {
                errs.push(FieldError::invalid(p.child("name"), name, msg));
            }
        }
        let Some(from) = ev.get("valueFrom").filter(|v| !v.is_null()) else {
            continue;
        };
        let fp = p.child("valueFrom");
        let mut sources = 0;
        if let Some(fr) = from.get("fieldRef").filter(|v| !v.is_null()) {
            sources += 1;
            let frp = fp.child("fieldRef");
            if str_at(fr, &["apiVersion"]).is_empty() {
                errs.push(FieldError::required(frp.child("apiVersion"), ""));
            }
            let field_path = str_at(fr, &["fieldPath"]);
            if field_path.is_empty() {
                errs.push(FieldError::required(frp.child("fieldPath"), ""));
            } else {
                let base = field_path.split_once('[').map_or(field_path, |(b, _)| b);
                let subscripted = field_path.contains('[');
                let ok = ENV_FIELD_PATHS.contains(&base)
                    && (subscripted == matches!(base, "metadata.labels" | "metadata.annotations"));
                if !ok {
                    errs.push(FieldError::not_supported(
                        frp.child("fieldPath"),
                        field_path,
                        ENV_FIELD_PATHS,
                    ));
                }
            }
        }
        if from.get("resourceFieldRef").is_some_and(|v| !v.is_null()) {
            sources += 1;
        }
        for (kind, key) in [("configMapKeyRef", "key"), ("secretKeyRef", "key")] {
            if let Some(r) = from.get(kind).filter(|v| !v.is_null()) {
                sources += 1;
                let rp = fp.child(kind);
                if str_at(r, &["name"]).is_empty() {
                    errs.push(FieldError::required(rp.child("name"), ""));
                }
                let k = str_at(r, &[key]);
                if k.is_empty() {
                    errs.push(FieldError::required(rp.child(key), ""));
                } else {
                    for msg in names::config_map_key_errors(k) {
                        errs.push(FieldError::invalid(rp.child(key), k, msg));
                    }
                }
            }
        }
        if sources == 0 {
            errs.push(FieldError::invalid(
                &fp,
                "",
                "must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`",
            ));
        } else if !str_at(ev, &["value"]).is_empty() {
            errs.push(FieldError::invalid(
                &fp,
                "",
                "may not be specified when `value` is not empty",
            ));
        } else if sources > 1 {
            errs.push(FieldError::invalid(
                &fp,
                "",
                "may not have more than one field specified at a time",
            ));
        }
    }
    errs
}

fn validate_volume_mounts(
    mounts: &[Value],
    volumes: &HashSet<String>,
    path: &Path,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut points = HashSet::new();
    for (i, m) in mounts.iter().enumerate() {
        let p = path.index(i);
        let name = str_at(m, &["name"]);
        if name.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        }
        if !volumes.contains(name) {
            errs.push(FieldError::not_found(p.child("name"), name));
        }
        let mp = str_at(m, &["mountPath"]);
        if mp.is_empty() {
            errs.push(FieldError::required(p.child("mountPath"), ""));
        }
        if !points.insert(mp.to_string()) {
            errs.push(FieldError::invalid(
                p.child("mountPath"),
                mp,
                "must be unique",
            ));
        }
        let sub = str_at(m, &["subPath"]);
        if sub.starts_with('/') {
            errs.push(FieldError::invalid(
                path.child("subPath"),
                sub,
                "must be a relative path",
            ));
        } else if sub.split('/').any(|s| s == "..") {
            errs.push(FieldError::invalid(
                path.child("subPath"),
                sub,
                "must not contain '..'",
            ));
        }
    }
    errs
}

fn is_standard_container_resource(name: &str) -> bool {
    matches!(name, "cpu" | "memory" | "ephemeral-storage") || name.starts_with("hugepages-")
}

/// Upstream `ValidateResourceRequirements` (container resources).
fn validate_resources(res: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut parsed: [BTreeMap<&str, i128>; 2] = [BTreeMap::new(), BTreeMap::new()];
    for (slot, field) in ["limits", "requests"].iter().enumerate() {
        for (name, q) in obj_at(res, &[field]) {
            let qp = path.child(field).key(name);
            if !name.contains('/') {
                if !is_standard_container_resource(name) {
                    errs.push(FieldError::invalid(
                        &qp,
                        name.as_str(),
                        "must be a standard resource for containers",
                    ));
                }
            } else {
                for msg in names::qualified_name_errors(name) {
                    errs.push(FieldError::invalid(&qp, name.as_str(), msg));
                }
            }
            let qs = q.as_str().unwrap_or("");
            match parse_quantity(qs) {
                Err(e) => errs.push(FieldError::invalid(&qp, qs, e.to_string())),
                Ok(n) if n < 0 => errs.push(FieldError::invalid(
                    &qp,
                    qs,
                    "must be greater than or equal to 0",
                )),
                Ok(n) => {
                    parsed[slot].insert(name.as_str(), n);
                }
            }
        }
    }
    let [limits, requests] = &parsed;
    for (name, req) in requests {
        let Some(lim) = limits.get(name) else {
            continue;
        };
        let req_s = str_at(res, &["requests", name]);
        let lim_s = str_at(res, &["limits", name]);
        let overcommit = !(name.starts_with("hugepages-") || name.contains('/'));
        if !overcommit && req != lim {
            errs.push(FieldError::invalid(
                path.child("requests"),
                req_s,
                format!("must be equal to {name} limit of {lim_s}"),
            ));
        } else if req > lim {
            errs.push(FieldError::invalid(
                path.child("requests"),
                req_s,
                format!("must be less than or equal to {name} limit of {lim_s}"),
            ));
        }
    }
    errs
}

fn validate_probe(probe: &Value, path: &Path) -> Vec<FieldError> {
    let mut errs = validate_handler(probe, path, false);
    for f in [
        "initialDelaySeconds",
        "timeoutSeconds",
        "periodSeconds",
        "successThreshold",
        "failureThreshold",
    ] {
        errs.extend(nonnegative(probe, &[f], &path.child(f)));
    }
    if let Some(t) = int_at(probe, &["terminationGracePeriodSeconds"]) {
        if t <= 0 {
            errs.push(FieldError::invalid(
                path.child("terminationGracePeriodSeconds"),
                t,
                "must be greater than 0",
            ));
        }
    }
    errs
}

/// Exactly one of exec/httpGet/tcpSocket/grpc (probes) or exec/httpGet/tcpSocket/sleep
/// (lifecycle hooks).
fn validate_handler(h: &Value, path: &Path, lifecycle: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let kinds: &[&str] = if lifecycle {
        &["exec", "httpGet", "tcpSocket", "sleep"]
    } else {
        &["exec", "httpGet", "tcpSocket", "grpc"]
    };
    let mut count = 0;
    for kind in kinds {
        let Some(a) = h.get(*kind).filter(|v| !v.is_null()) else {
            continue;
        };
        let p = path.child(kind);
        if count > 0 {
            errs.push(FieldError::forbidden(
                &p,
                "may not specify more than 1 handler type",
            ));
            continue;
        }
        count += 1;
        match *kind {
            "exec" if arr_at(a, &["command"]).is_empty() => {
                errs.push(FieldError::required(p.child("command"), ""));
            }
            "httpGet" => {
                if str_at(a, &["path"]).is_empty() {
                    errs.push(FieldError::required(p.child("path"), ""));
                }
                errs.extend(validate_port_num_or_name(a.get("port"), &p.child("port")));
                let scheme = str_at(a, &["scheme"]);
                if !HTTP_SCHEMES.contains(&scheme) {
                    errs.push(FieldError::not_supported(
                        p.child("scheme"),
                        scheme,
                        HTTP_SCHEMES,
                    ));
                }
            }
            "tcpSocket" => errs.extend(validate_port_num_or_name(a.get("port"), &p.child("port"))),
            "grpc" => {
                let n = int_at(a, &["port"]).unwrap_or(0);
                for msg in names::port_num_errors(n) {
                    errs.push(FieldError::invalid(p.child("port"), n, msg));
                }
            }
            _ => {}
        }
    }
    if count == 0 {
        errs.push(FieldError::required(path, "must specify a handler type"));
    }
    errs
}

fn validate_tolerations(tolerations: &[Value], path: &Path) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, t) in tolerations.iter().enumerate() {
        let p = path.index(i);
        let key = str_at(t, &["key"]);
        if !key.is_empty() {
            for msg in names::qualified_name_errors(key) {
                errs.push(FieldError::invalid(p.child("key"), key, msg));
            }
        }
        let op = str_at(t, &["operator"]);
        if key.is_empty() && op != "Exists" {
            errs.push(FieldError::invalid(
                p.child("operator"),
                op,
                "operator must be Exists when `key` is empty, which means \"match all values and all keys\"",
            ));
        }
        let effect = str_at(t, &["effect"]);
        if has(t, &["tolerationSeconds"]) && effect != "NoExecute" {
            errs.push(FieldError::invalid(
                p.child("effect"),
                effect,
                "effect must be 'NoExecute' when `tolerationSeconds` is set",
            ));
        }
        match op {
            "" | "Equal" => {
                let v = str_at(t, &["value"]);
                let msgs = names::label_value_errors(v);
                if !msgs.is_empty() {
                    errs.push(FieldError::invalid(p.child("operator"), v, msgs.join(";")));
                }
            }
            "Exists" => {
                let v = str_at(t, &["value"]);
                if !v.is_empty() {
                    errs.push(FieldError::invalid(
                        p.child("operator"),
                        v,
                        "value must be empty when `operator` is 'Exists'",
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                p.child("operator"),
                other,
                &["Equal", "Exists"],
            )),
        }
        if !effect.is_empty() && !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                p.child("effect"),
                effect,
                TAINT_EFFECTS,
            ));
        }
    }
    errs
}

/// Upstream `ValidatePodUpdate`: the spec is immutable except container images,
/// activeDeadlineSeconds (set or decrease), tolerations (additions only) and a
/// negative terminationGracePeriodSeconds becoming 1.
pub(crate) fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let spec_path = Path::new("spec");
    let new_spec = new.get("spec").cloned().unwrap_or(Value::Null);
    let old_spec = old.get("spec").cloned().unwrap_or(Value::Null);
    let mut munged = new_spec.clone();

    // activeDeadlineSeconds may be set, or decreased, but not removed
    let ads_path = spec_path.child("activeDeadlineSeconds");
    match (
        int_at(&new_spec, &["activeDeadlineSeconds"]),
        int_at(&old_spec, &["activeDeadlineSeconds"]),
    ) {
        (Some(n), _) if !(0..=i64::from(i32::MAX)).contains(&n) => {
            errs.push(FieldError::invalid(
                ads_path,
                n,
                format!("must be between 0 and {}, inclusive", i32::MAX),
            ));
            return errs;
        }
        (Some(n), Some(o)) if o < n => {
            errs.push(FieldError::invalid(
                ads_path,
                n,
                "must be less than or equal to previous value",
            ));
            return errs;
        }
        (None, Some(_)) => errs.push(FieldError::invalid(
            ads_path,
            Value::Null,
            "must not update from a positive integer to nil value",
        )),
        _ => {}
    }
    copy_field(&mut munged, &old_spec, "activeDeadlineSeconds");

    // images of existing containers may change
    for list in ["containers", "initContainers"] {
        let old_list = arr_at(&old_spec, &[list]);
        if let Some(new_list) = munged.get_mut(list).and_then(Value::as_array_mut) {
            if new_list.len() == old_list.len() {
                for (n, o) in new_list.iter_mut().zip(old_list) {
                    copy_field(n, o, "image");
                }
            }
        }
    }

    // tolerations: existing ones stay (their tolerationSeconds may change)
    let new_tol = arr_at(&new_spec, &["tolerations"]);
    for o in arr_at(&old_spec, &["tolerations"]) {
        let found = new_tol.iter().any(|n| {
            let mut o = o.clone();
            copy_field(&mut o, n, "tolerationSeconds");
            &o == n
        });
        if !found {
            errs.push(FieldError::forbidden(
                spec_path.child("tolerations"),
                "existing toleration can not be modified except its tolerationSeconds",
            ));
            return errs;
        }
    }
    copy_field(&mut munged, &old_spec, "tolerations");

    // terminationGracePeriodSeconds: negative may become 1
    let old_grace = int_at(&old_spec, &["terminationGracePeriodSeconds"]);
    if old_grace.is_some_and(|g| g < 0)
        && int_at(&new_spec, &["terminationGracePeriodSeconds"]) == Some(1)
    {
        copy_field(&mut munged, &old_spec, "terminationGracePeriodSeconds");
    }

    if munged != old_spec {
        let diff = spec_diff(&old_spec, &munged);
        errs.push(FieldError::forbidden(
            spec_path,
            format!("{POD_UPDATE_FORBIDDEN}\n{diff}"),
        ));
    }
    errs
}

/// Make `dst[key]` equal to `src[key]` (removing it when `src` lacks it).
fn copy_field(dst: &mut Value, src: &Value, key: &str) {
    let Some(d) = dst.as_object_mut() else { return };
    match src.get(key) {
        Some(v) => {
            d.insert(key.to_string(), v.clone());
        }
        None => {
            d.remove(key);
        }
    }
}

/// A short `-old`/`+new` listing of the top-level spec fields that differ.
fn spec_diff(old: &Value, new: &Value) -> String {
    let mut keys: Vec<&String> = Vec::new();
    for m in [old.as_object(), new.as_object()].into_iter().flatten() {
        for k in m.keys() {
            if !keys.contains(&k) {
                keys.push(k);
            }
        }
    }
    let mut out = String::from("  core.PodSpec{\n");
    for k in keys {
        let (o, n) = (old.get(k.as_str()), new.get(k.as_str()));
        if o != n {
            if let Some(o) = o {
                out.push_str(&format!("-  {k}: {o},\n"));
            }
            if let Some(n) = n {
                out.push_str(&format!("+  {k}: {n},\n"));
            }
        }
    }
    out.push_str("  }\n");
    out
}
