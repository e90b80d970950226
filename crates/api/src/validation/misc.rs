//! Validation of the smaller kinds: ConfigMap, Secret, Namespace, Node, Event,
//! PersistentVolumeClaim, Lease, RBAC, PriorityClass, CustomResourceDefinition.

use std::collections::HashSet;

use base64::Engine;
use serde_json::Value;

use super::meta::immutable;
use super::names::{self, NameRule};
use super::quantity::parse_quantity;
use super::util::{arr_at, bool_at, get, has, int_at, obj_at, str_at, strings_at, Path};
use super::FieldError;

/// Upstream `MaxSecretSize` (also the ConfigMap limit).
const MAX_SECRET_SIZE: usize = 1024 * 1024;
const IMMUTABLE_SET: &str = "field is immutable when `immutable` is set";
const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

fn decoded_len(b64: &str) -> usize {
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_or(b64.len(), |d| d.len())
}

/// A ConfigMap: valid keys, no key in both data and binaryData, 1 MiB total.
pub(crate) fn validate_config_map(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let data = obj_at(obj, &["data"]);
    let binary = obj_at(obj, &["binaryData"]);
    let mut total = 0usize;
    for (k, v) in data {
        let p = Path::new("data").key(k);
        for msg in names::config_map_key_errors(k) {
            errs.push(FieldError::invalid(&p, k.as_str(), msg));
        }
        if binary.contains_key(k) {
            errs.push(FieldError::invalid(
                &p,
                k.as_str(),
                "duplicate of key present in binaryData",
            ));
        }
        total += v.as_str().map_or(0, str::len);
    }
    for (k, v) in binary {
        let p = Path::new("binaryData").key(k);
        for msg in names::config_map_key_errors(k) {
            errs.push(FieldError::invalid(&p, k.as_str(), msg));
        }
        if data.contains_key(k) {
            errs.push(FieldError::invalid(
                &p,
                k.as_str(),
                "duplicate of key present in data",
            ));
        }
        total += decoded_len(v.as_str().unwrap_or(""));
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(Path::new(""), MAX_SECRET_SIZE));
    }
    errs
}

fn validate_immutable_data(new: &Value, old: &Value, fields: &[&str]) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if bool_at(old, &["immutable"]) {
        if !bool_at(new, &["immutable"]) {
            errs.push(FieldError::forbidden(Path::new("immutable"), IMMUTABLE_SET));
        }
        for f in fields {
            if get(new, &[f]).filter(|v| !v.is_null()) != get(old, &[f]).filter(|v| !v.is_null()) {
                errs.push(FieldError::forbidden(Path::new(f), IMMUTABLE_SET));
            }
        }
    }
    errs
}

/// ConfigMap updates: nothing changes once `immutable: true`.
pub(crate) fn validate_config_map_update(new: &Value, old: &Value) -> Vec<FieldError> {
    validate_immutable_data(new, old, &["data", "binaryData"])
}

/// A Secret: valid keys, 1 MiB total, and the keys its type requires.
pub(crate) fn validate_secret(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let dp = Path::new("data");
    let data = obj_at(obj, &["data"]);
    let mut total = 0usize;
    for (k, v) in data {
        for msg in names::config_map_key_errors(k) {
            errs.push(FieldError::invalid(dp.key(k), k.as_str(), msg));
        }
        total += decoded_len(v.as_str().unwrap_or(""));
    }
    if total > MAX_SECRET_SIZE {
        errs.push(FieldError::too_long(&dp, MAX_SECRET_SIZE));
    }
    let require = |errs: &mut Vec<FieldError>, key: &str| {
        if !data.contains_key(key) {
            errs.push(FieldError::required(dp.key(key), ""));
        }
    };
    match str_at(obj, &["type"]) {
        "kubernetes.io/service-account-token" => {
            let key = "kubernetes.io/service-account.name";
            if str_at(obj, &["metadata", "annotations", key]).is_empty() {
                errs.push(FieldError::required(
                    Path::new("metadata").child("annotations").key(key),
                    "",
                ));
            }
        }
        "kubernetes.io/dockercfg" => {
            require(&mut errs, ".dockercfg");
            errs.extend(json_key(data.get(".dockercfg"), &dp.key(".dockercfg")));
        }
        "kubernetes.io/dockerconfigjson" => {
            require(&mut errs, ".dockerconfigjson");
            errs.extend(json_key(
                data.get(".dockerconfigjson"),
                &dp.key(".dockerconfigjson"),
            ));
        }
        "kubernetes.io/basic-auth" => {
            if !data.contains_key("username") && !data.contains_key("password") {
                require(&mut errs, "username");
                require(&mut errs, "password");
            }
        }
        "kubernetes.io/ssh-auth" => {
            if data
                .get("ssh-privatekey")
                .and_then(Value::as_str)
                .unwrap_or("")
                .is_empty()
            {
                errs.push(FieldError::required(dp.key("ssh-privatekey"), ""));
            }
        }
        "kubernetes.io/tls" => {
            require(&mut errs, "tls.crt");
            require(&mut errs, "tls.key");
        }
        "" => errs.push(FieldError::required(Path::new("type"), "")),
        other => {
            for msg in names::qualified_name_errors(other) {
                errs.push(FieldError::invalid(Path::new("type"), other, msg));
            }
        }
    }
    errs
}

/// A docker config key must hold (base64 of) JSON.
fn json_key(v: Option<&Value>, path: &Path) -> Option<FieldError> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(v?.as_str()?)
        .ok()?;
    match serde_json::from_slice::<Value>(&raw) {
        Ok(_) => None,
        Err(e) => Some(FieldError::invalid(
            path,
            "<secret contents redacted>",
            e.to_string(),
        )),
    }
}

/// Secret updates: the type is immutable, and so is everything once `immutable: true`.
pub(crate) fn validate_secret_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs: Vec<FieldError> = immutable(new, old, &["type"], &Path::new("type"))
        .into_iter()
        .collect();
    errs.extend(validate_immutable_data(new, old, &["data"]));
    errs
}

/// A Namespace: `spec.finalizers` are standard or fully qualified.
pub(crate) fn validate_namespace(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let p = Path::new("spec").child("finalizers");
    for f in strings_at(obj, &["spec", "finalizers"]) {
        for msg in names::qualified_name_errors(&f) {
            errs.push(FieldError::invalid(&p, f.as_str(), msg));
        }
        if !f.contains('/') && !matches!(f.as_str(), "kubernetes" | "orphan" | "foregroundDeletion")
        {
            errs.push(FieldError::invalid(
                &p,
                f.as_str(),
                "name is neither a standard finalizer name nor is it fully qualified",
            ));
        }
    }
    errs
}

/// A Node: taints well-formed and unique by (key, effect).
pub(crate) fn validate_node(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let mut seen = HashSet::new();
    for (i, t) in arr_at(obj, &["spec", "taints"]).iter().enumerate() {
        let p = Path::new("spec").child("taints").index(i);
        let key = str_at(t, &["key"]);
        for msg in names::qualified_name_errors(key) {
            errs.push(FieldError::invalid(p.child("key"), key, msg));
        }
        let value = str_at(t, &["value"]);
        let msgs = names::label_value_errors(value);
        if !msgs.is_empty() {
            errs.push(FieldError::invalid(p.child("value"), value, msgs.join(";")));
        }
        let effect = str_at(t, &["effect"]);
        if effect.is_empty() {
            errs.push(FieldError::required(p.child("effect"), ""));
        } else if !TAINT_EFFECTS.contains(&effect) {
            errs.push(FieldError::not_supported(
                p.child("effect"),
                effect,
                TAINT_EFFECTS,
            ));
        }
        if !seen.insert((key, effect)) {
            let mut e = FieldError::duplicate(&p, t.clone());
            e.detail = "taints must be unique by key and effect pair".to_string();
            errs.push(e);
        }
    }
    let cidr = str_at(obj, &["spec", "podCIDR"]);
    if !cidr.is_empty() && !is_cidr(cidr) {
        errs.push(FieldError::invalid(
            Path::new("spec").child("podCIDR"),
            cidr,
            "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
        ));
    }
    errs
}

fn is_cidr(s: &str) -> bool {
    let Some((ip, bits)) = s.split_once('/') else {
        return false;
    };
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
        return false;
    };
    let max = if ip.is_ipv4() { 32 } else { 128 };
    bits.parse::<u8>().is_ok_and(|b| b <= max)
}

/// Length and presence checks shared by new-style events.
fn validate_event_reporting(
    obj: &Value,
    controller_field: &str,
    note_field: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let controller = str_at(obj, &["reportingController"]);
    if controller.is_empty() {
        errs.push(FieldError::required(Path::new(controller_field), ""));
    } else {
        for msg in names::qualified_name_errors(controller) {
            errs.push(FieldError::invalid(
                Path::new(controller_field),
                controller,
                msg,
            ));
        }
    }
    for (field, limit) in [
        ("reportingInstance", 128usize),
        ("action", 128),
        ("reason", 128),
    ] {
        let v = str_at(obj, &[field]);
        if v.is_empty() {
            errs.push(FieldError::required(Path::new(field), ""));
        } else if v.len() > limit {
            errs.push(FieldError::invalid(
                Path::new(field),
                "",
                format!("can have at most {limit} characters"),
            ));
        }
    }
    if str_at(obj, &[note_field]).len() > 1024 {
        errs.push(FieldError::invalid(
            Path::new(note_field),
            "",
            "can have at most 1024 characters",
        ));
    }
    errs
}

/// A core/v1 Event (upstream's legacy event validation).
pub(crate) fn validate_core_event(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let involved = obj_at(obj, &["involvedObject"]);
    if involved.is_empty() {
        errs.push(FieldError::required(Path::new("involvedObject"), ""));
    }
    let ns = str_at(obj, &["metadata", "namespace"]);
    let ins = str_at(obj, &["involvedObject", "namespace"]);
    let ip = Path::new("involvedObject").child("namespace");
    if !has(obj, &["eventTime"]) {
        let ok = if ins.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == ins
        };
        if !ok {
            errs.push(FieldError::invalid(
                ip,
                ins,
                "does not match event.namespace",
            ));
        }
    } else {
        if ins.is_empty() && ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                ip,
                ins,
                "does not match event.namespace",
            ));
        }
        errs.extend(validate_event_reporting(obj, "source", "message"));
    }
    errs
}

/// An events.k8s.io/v1 Event (upstream's strict validation).
pub(crate) fn validate_events_event(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if !has(obj, &["eventTime"]) {
        errs.push(FieldError::required(Path::new("eventTime"), ""));
    }
    let ty = str_at(obj, &["type"]);
    if ty != "Normal" && ty != "Warning" {
        errs.push(FieldError::invalid(
            Path::new("type"),
            "",
            format!("has invalid value: {ty}"),
        ));
    }
    let ns = str_at(obj, &["metadata", "namespace"]);
    let rns = str_at(obj, &["regarding", "namespace"]);
    if rns.is_empty() {
        if ns != "default" && ns != "kube-system" {
            errs.push(FieldError::invalid(
                Path::new("regarding").child("namespace"),
                rns,
                "does not match event.namespace",
            ));
        }
    } else if rns != ns {
        errs.push(FieldError::invalid(
            Path::new("regarding").child("namespace"),
            rns,
            "does not match event.namespace",
        ));
    }
    errs.extend(validate_event_reporting(obj, "reportingController", "note"));
    if let Some(c) = int_at(obj, &["series", "count"]) {
        if c < 2 {
            errs.push(FieldError::invalid(
                Path::new("series").child("count"),
                "",
                "should be at least 2",
            ));
        }
    }
    errs
}

const ACCESS_MODES: &[&str] = &[
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOnce",
    "ReadWriteOncePod",
];

/// A PersistentVolumeClaim.
pub(crate) fn validate_pvc(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = Path::new("spec");
    let modes = strings_at(obj, &["spec", "accessModes"]);
    if modes.is_empty() && !has(obj, &["spec", "dataSourceRef"]) {
        errs.push(FieldError::required(
            sp.child("accessModes"),
            "at least 1 access mode is required",
        ));
    }
    for m in &modes {
        if !ACCESS_MODES.contains(&m.as_str()) {
            errs.push(FieldError::not_supported(
                sp.child("accessModes"),
                m.as_str(),
                ACCESS_MODES,
            ));
        }
    }
    if modes.iter().any(|m| m == "ReadWriteOncePod") && modes.len() > 1 {
        errs.push(FieldError::forbidden(
            sp.child("accessModes"),
            "may not use ReadWriteOncePod with other access modes",
        ));
    }
    let storage = str_at(obj, &["spec", "resources", "requests", "storage"]);
    let rp = sp.child("resources").key("storage");
    if storage.is_empty() {
        errs.push(FieldError::required(&rp, ""));
    } else {
        match parse_quantity(storage) {
            Err(e) => errs.push(FieldError::invalid(&rp, storage, e.to_string())),
            Ok(n) if n <= 0 => errs.push(FieldError::invalid(
                &rp,
                storage,
                "must be greater than zero",
            )),
            Ok(_) => {}
        }
    }
    let vm = str_at(obj, &["spec", "volumeMode"]);
    if has(obj, &["spec", "volumeMode"]) && vm != "Block" && vm != "Filesystem" {
        errs.push(FieldError::not_supported(
            sp.child("volumeMode"),
            vm,
            &["Block", "Filesystem"],
        ));
    }
    errs
}

/// PVC updates: the spec is immutable except the storage request, the
/// volume attributes class, and binding a volume name.
pub(crate) fn validate_pvc_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut n = new.get("spec").cloned().unwrap_or(Value::Null);
    let o = old.get("spec").cloned().unwrap_or(Value::Null);
    if let (Some(nm), Some(om)) = (n.as_object_mut(), o.as_object()) {
        let mut fields = vec!["resources", "volumeAttributesClassName"];
        if str_at(&o, &["volumeName"]).is_empty() {
            fields.push("volumeName");
        }
        for f in fields {
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
            "spec is immutable after creation except resources.requests and volumeAttributesClassName for bound claims",
        )]
    }
}

/// A Lease.
pub(crate) fn validate_lease(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = Path::new("spec");
    if let Some(d) = int_at(obj, &["spec", "leaseDurationSeconds"]) {
        if d <= 0 {
            errs.push(FieldError::invalid(
                sp.child("leaseDurationSeconds"),
                d,
                "must be greater than 0",
            ));
        }
    }
    if let Some(t) = int_at(obj, &["spec", "leaseTransitions"]) {
        if t < 0 {
            errs.push(FieldError::invalid(
                sp.child("leaseTransitions"),
                t,
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}

/// A Role (`namespaced`) or ClusterRole: every rule names verbs and either
/// resources or non-resource URLs.
pub(crate) fn validate_rbac_role(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, rule) in arr_at(obj, &["rules"]).iter().enumerate() {
        let p = Path::new("rules").index(i);
        if arr_at(rule, &["verbs"]).is_empty() {
            errs.push(FieldError::required(
                p.child("verbs"),
                "verbs must contain at least one value",
            ));
        }
        let urls = strings_at(rule, &["nonResourceURLs"]);
        if !urls.is_empty() {
            if namespaced {
                errs.push(FieldError::invalid(
                    p.child("nonResourceURLs"),
                    Value::from(urls.clone()),
                    "namespaced rules cannot apply to non-resource URLs",
                ));
            }
            let has_resources = ["apiGroups", "resources", "resourceNames"]
                .iter()
                .any(|f| !arr_at(rule, &[f]).is_empty());
            if has_resources {
                errs.push(FieldError::invalid(
                    p.child("nonResourceURLs"),
                    Value::from(urls),
                    "rules cannot apply to both regular resources and non-resource URLs",
                ));
            }
            continue;
        }
        if arr_at(rule, &["apiGroups"]).is_empty() {
            errs.push(FieldError::required(
                p.child("apiGroups"),
                "resource rules must supply at least one api group",
            ));
        }
        if arr_at(rule, &["resources"]).is_empty() {
            errs.push(FieldError::required(
                p.child("resources"),
                "resource rules must supply at least one resource",
            ));
        }
    }
    errs
}

/// A RoleBinding (`namespaced`) or ClusterRoleBinding.
pub(crate) fn validate_rbac_binding(obj: &Value, namespaced: bool) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let rp = Path::new("roleRef");
    let group = str_at(obj, &["roleRef", "apiGroup"]);
    if group != RBAC_GROUP {
        errs.push(FieldError::not_supported(
            rp.child("apiGroup"),
            group,
            &[RBAC_GROUP],
        ));
    }
    let kind = str_at(obj, &["roleRef", "kind"]);
    if namespaced {
        if kind != "Role" && kind != "ClusterRole" {
            errs.push(FieldError::not_supported(
                rp.child("kind"),
                kind,
                &["Role", "ClusterRole"],
            ));
        }
    } else if kind != "ClusterRole" {
        errs.push(FieldError::not_supported(
            rp.child("kind"),
            kind,
            &["ClusterRole"],
        ));
    }
    let name = str_at(obj, &["roleRef", "name"]);
    if name.is_empty() {
        errs.push(FieldError::required(rp.child("name"), ""));
    } else {
        for msg in NameRule::PathSegment.errors(name, false) {
            errs.push(FieldError::invalid(rp.child("name"), name, msg));
        }
    }
    for (i, s) in arr_at(obj, &["subjects"]).iter().enumerate() {
        let p = Path::new("subjects").index(i);
        let sname = str_at(s, &["name"]);
        if sname.is_empty() {
            errs.push(FieldError::required(p.child("name"), ""));
        }
        let group = str_at(s, &["apiGroup"]);
        match str_at(s, &["kind"]) {
            "ServiceAccount" => {
                if !sname.is_empty() {
                    for msg in names::dns1123_subdomain_errors(sname) {
                        errs.push(FieldError::invalid(p.child("name"), sname, msg));
                    }
                }
                if !group.is_empty() {
                    errs.push(FieldError::not_supported(p.child("apiGroup"), group, &[""]));
                }
                if !namespaced && str_at(s, &["namespace"]).is_empty() {
                    errs.push(FieldError::required(p.child("namespace"), ""));
                }
            }
            "User" | "Group" => {
                if group != RBAC_GROUP {
                    errs.push(FieldError::not_supported(
                        p.child("apiGroup"),
                        group,
                        &[RBAC_GROUP],
                    ));
                }
            }
            other => errs.push(FieldError::not_supported(
                p.child("kind"),
                other,
                &["ServiceAccount", "User", "Group"],
            )),
        }
    }
    errs
}

/// Bindings may not change their roleRef.
pub(crate) fn validate_rbac_binding_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let n = new.get("roleRef").cloned().unwrap_or(Value::Null);
    if Some(&n) == old.get("roleRef") {
        Vec::new()
    } else {
        vec![FieldError::invalid(
            Path::new("roleRef"),
            n,
            "cannot change roleRef",
        )]
    }
}

/// A PriorityClass.
pub(crate) fn validate_priority_class(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = str_at(obj, &["metadata", "name"]);
    let value = int_at(obj, &["value"]).unwrap_or(0);
    if name.starts_with("system-") {
        let known = matches!(
            (name, value),
            ("system-cluster-critical", 2_000_000_000) | ("system-node-critical", 2_000_001_000)
        );
        if !known {
            errs.push(FieldError::forbidden(
                Path::new("metadata").child("name"),
                format!("priority class names with 'system-' prefix are reserved for system use only. error: {name:?} is not a known system priority class"),
            ));
        }
    } else if value > 1_000_000_000 {
        errs.push(FieldError::forbidden(
            Path::new("value"),
            "maximum allowed value of a user defined priority is 1000000000",
        ));
    }
    let pp = str_at(obj, &["preemptionPolicy"]);
    if has(obj, &["preemptionPolicy"]) && pp != "PreemptLowerPriority" && pp != "Never" {
        errs.push(FieldError::not_supported(
            Path::new("preemptionPolicy"),
            pp,
            &["Never", "PreemptLowerPriority"],
        ));
    }
    errs
}

/// PriorityClass updates: value and preemptionPolicy are immutable.
pub(crate) fn validate_priority_class_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if int_at(new, &["value"]) != int_at(old, &["value"]) {
        errs.push(FieldError::forbidden(
            Path::new("value"),
            "may not be changed in an update.",
        ));
    }
    errs.extend(immutable(
        new,
        old,
        &["preemptionPolicy"],
        &Path::new("preemptionPolicy"),
    ));
    errs
}

/// A CustomResourceDefinition (the structural basics).
pub(crate) fn validate_crd(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = Path::new("spec");
    let group = str_at(obj, &["spec", "group"]);
    let plural = str_at(obj, &["spec", "names", "plural"]);
    let name = str_at(obj, &["metadata", "name"]);
    if name != format!("{plural}.{group}") {
        errs.push(FieldError::invalid(
            Path::new("metadata").child("name"),
            name,
            "must be spec.names.plural+\".\"+spec.group",
        ));
    }
    if group.is_empty() {
        errs.push(FieldError::required(sp.child("group"), ""));
    } else {
        for msg in names::dns1123_subdomain_errors(group) {
            errs.push(FieldError::invalid(sp.child("group"), group, msg));
        }
        if group.split('.').count() < 2 {
            errs.push(FieldError::invalid(
                sp.child("group"),
                group,
                "should be a domain with at least one dot",
            ));
        }
    }
    let np = sp.child("names");
    if plural.is_empty() {
        errs.push(FieldError::required(np.child("plural"), ""));
    } else {
        for msg in names::dns1035_label_errors(plural) {
            errs.push(FieldError::invalid(np.child("plural"), plural, msg));
        }
    }
    if str_at(obj, &["spec", "names", "kind"]).is_empty() {
        errs.push(FieldError::required(np.child("kind"), ""));
    }
    let scope = str_at(obj, &["spec", "scope"]);
    if scope != "Cluster" && scope != "Namespaced" {
        errs.push(FieldError::not_supported(
            sp.child("scope"),
            scope,
            &["Cluster", "Namespaced"],
        ));
    }
    let versions = arr_at(obj, &["spec", "versions"]);
    if versions.is_empty() {
        errs.push(FieldError::invalid(
            sp.child("versions"),
            Value::Array(Vec::new()),
            "must have exactly one version marked as storage version",
        ));
    } else {
        let storage = versions.iter().filter(|v| bool_at(v, &["storage"])).count();
        if storage != 1 {
            errs.push(FieldError::invalid(
                sp.child("versions"),
                Value::from(storage),
                "must have exactly one version marked as storage version",
            ));
        }
        let mut seen = HashSet::new();
        for (i, v) in versions.iter().enumerate() {
            let vname = str_at(v, &["name"]);
            let vp = sp.child("versions").index(i).child("name");
            for msg in names::dns1035_label_errors(vname) {
                errs.push(FieldError::invalid(&vp, vname, msg));
            }
            if !seen.insert(vname) {
                errs.push(FieldError::duplicate(&vp, vname));
            }
        }
    }
    errs
}
