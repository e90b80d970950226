//! Create-time admission for namespaced objects: LimitRange defaults and
//! bounds for pods (type Container: default, defaultRequest, min, max,
//! maxLimitRequestRatio) and ResourceQuota enforcement (pods, requests.*,
//! limits.*, bare cpu/memory, count/<resource>, configmaps, secrets, services,
//! persistentvolumeclaims, replicationcontrollers, resourcequotas).
//!
//! Quota usage is computed from the objects stored in the namespace at admission
//! time (terminal pods do not count), so it does not depend on `status.used`
//! being fresh; the quota controller keeps `status.used` current for display.

use std::collections::BTreeMap;

use navarch_api::catalog::{self, ResourceType};
use navarch_api::validation::parse_quantity;
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::registry::{Filter, Registry};

const NANO: i128 = 1_000_000_000;

/// Apply LimitRanges and ResourceQuotas of `ns` to `obj`, about to be created.
pub async fn admit_create(
    reg: &Registry,
    rt: &ResourceType,
    ns: Option<&str>,
    obj: &mut Value,
) -> ApiResult<()> {
    let Some(ns) = ns.filter(|_| rt.namespaced) else {
        return Ok(());
    };
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let is_pod = rt.group.is_empty() && rt.plural == "pods";
    if is_pod {
        admit_priority(reg, &name, obj).await?;
        let ranges = list(reg, "limitranges", ns).await?;
        if !ranges.is_empty() {
            let errs = apply_limit_ranges(&ranges, obj);
            if !errs.is_empty() {
                return Err(ApiError::forbidden(format!(
                    "pods {name:?} is forbidden: [{}]",
                    errs.join(", ")
                )));
            }
        }
    }
    let quotas = list(reg, "resourcequotas", ns).await?;
    if quotas.is_empty() {
        return Ok(());
    }
    let delta = usage_of(rt, obj);
    if delta.is_empty() {
        return Ok(());
    }
    for q in &quotas {
        let hard = quantities(q.pointer("/spec/hard"));
        if !hard.keys().any(|k| delta.contains_key(k)) {
            continue;
        }
        let used = namespace_usage(reg, ns, &hard).await?;
        check_quota(
            &rt_display(rt),
            &name,
            q.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or(""),
            &hard,
            &used,
            &delta,
        )?;
    }
    Ok(())
}

/// Upstream's built-in classes (they need no object).
pub const SYSTEM_PRIORITY_CLASSES: [(&str, i64); 2] = [
    ("system-node-critical", 2_000_001_000),
    ("system-cluster-critical", 2_000_000_000),
];

/// The Priority admission plugin: resolve `spec.priorityClassName` (or the
/// class with `globalDefault: true`) to `spec.priority` and
/// `spec.preemptionPolicy`, as upstream. An unknown class is 403 Forbidden,
/// and so is a `spec.priority` that disagrees with the class.
async fn admit_priority(reg: &Registry, name: &str, pod: &mut Value) -> ApiResult<()> {
    let class_name = pod
        .pointer("/spec/priorityClassName")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let Some(rt) = catalog::by_plural("scheduling.k8s.io", "v1", "priorityclasses") else {
        return Ok(());
    };
    let mut default_name = None;
    let (value, policy) = match &class_name {
        Some(cn) => {
            if let Some((_, v)) = SYSTEM_PRIORITY_CLASSES.iter().find(|(n, _)| n == cn) {
                (*v, None)
            } else {
                match reg.get(rt, None, cn).await {
                    Ok(pc) => class_value(&pc),
                    Err(e) if e.code == 404 => {
                        return Err(ApiError::forbidden(format!(
                            "pods {name:?} is forbidden: no PriorityClass with name {cn} was found"
                        )))
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        None => {
            let classes = reg.list(rt, None, &Filter::default(), None, None).await?;
            let default = classes
                .items
                .iter()
                .filter(|pc| pc.get("globalDefault").and_then(Value::as_bool) == Some(true))
                .min_by_key(|pc| class_value(pc).0);
            match default {
                Some(pc) => {
                    default_name = pc
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    class_value(pc)
                }
                None => (0, None),
            }
        }
    };
    let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    if let Some(given) = spec.get("priority").and_then(Value::as_i64) {
        if given != value {
            return Err(ApiError::forbidden(format!(
                "pods {name:?} is forbidden: the integer value of priority ({given}) must not be \
                 provided in pod spec; priority admission controller computed {value} from the \
                 given PriorityClass name"
            )));
        }
    }
    spec.insert("priority".into(), json!(value));
    if let Some(cn) = default_name {
        spec.insert("priorityClassName".into(), json!(cn));
    }
    if !spec.contains_key("preemptionPolicy") {
        let policy = policy.unwrap_or_else(|| "PreemptLowerPriority".to_string());
        spec.insert("preemptionPolicy".into(), json!(policy));
    }
    Ok(())
}

fn class_value(pc: &Value) -> (i64, Option<String>) {
    (
        pc.get("value").and_then(Value::as_i64).unwrap_or(0),
        pc.get("preemptionPolicy")
            .and_then(Value::as_str)
            .map(str::to_string),
    )
}

fn rt_display(rt: &ResourceType) -> String {
    rt.qualified_plural()
}

async fn list(reg: &Registry, plural: &str, ns: &str) -> ApiResult<Vec<Value>> {
    let Some(rt) = catalog::by_plural("", "v1", plural) else {
        return Ok(Vec::new());
    };
    Ok(reg
        .list(rt, Some(ns), &Filter::default(), None, None)
        .await?
        .items)
}

/// A resource map (`spec.hard`, `default`, ...) as nano-units.
pub fn quantities(v: Option<&Value>) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    if let Some(Value::Object(m)) = v {
        for (k, q) in m {
            let s = match q {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => continue,
            };
            if let Ok(n) = parse_quantity(&s) {
                out.insert(k.clone(), n);
            }
        }
    }
    out
}

/// A nano-unit quantity in canonical form (`500m`, `2`, `128Mi`).
pub fn format_quantity(resource: &str, nano: i128) -> String {
    let base = resource.rsplit('.').next().unwrap_or(resource);
    let binary = base == "memory" || base.contains("storage");
    if nano % NANO != 0 {
        let milli = nano / 1_000_000;
        return format!("{milli}m");
    }
    let n = nano / NANO;
    if binary && n != 0 {
        for (suffix, size) in [
            ("Ti", 1i128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if n % size == 0 {
                return format!("{}{suffix}", n / size);
            }
        }
    }
    n.to_string()
}

fn containers_mut(pod: &mut Value) -> Vec<&mut Value> {
    let mut out = Vec::new();
    if let Some(spec) = pod.get_mut("spec").and_then(Value::as_object_mut) {
        for (key, list) in spec.iter_mut() {
            if key == "containers" || key == "initContainers" {
                if let Some(a) = list.as_array_mut() {
                    out.extend(a.iter_mut());
                }
            }
        }
    }
    out
}

/// Fill in defaults and check bounds of every `type: Container` limit of
/// `ranges` for the pod's containers. Returns upstream-worded violations.
pub fn apply_limit_ranges(ranges: &[Value], pod: &mut Value) -> Vec<String> {
    let mut errs = Vec::new();
    for lr in ranges {
        for item in lr
            .pointer("/spec/limits")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if item.get("type").and_then(Value::as_str) != Some("Container") {
                continue;
            }
            let default = item.get("default").and_then(Value::as_object).cloned();
            // a default limit without a default request also defaults the
            // request (per resource, as upstream's LimitRange defaulting)
            let mut default_req = item
                .get("defaultRequest")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            for (k, v) in default.iter().flatten() {
                default_req.entry(k.clone()).or_insert(v.clone());
            }
            let min = quantities(item.get("min"));
            let max = quantities(item.get("max"));
            let ratio = quantities(item.get("maxLimitRequestRatio"));
            for c in containers_mut(pod) {
                let Some(c) = c.as_object_mut() else { continue };
                let res = c
                    .entry("resources")
                    .or_insert_with(|| json!({}))
                    .as_object_mut();
                let Some(res) = res else { continue };
                // API defaulting: a limit without a request makes the request
                let own_limits = res.get("limits").and_then(Value::as_object).cloned();
                fill(res, "requests", own_limits.as_ref());
                fill(res, "limits", default.as_ref());
                fill(res, "requests", Some(&default_req));
                let req = quantities(res.get("requests"));
                let lim = quantities(res.get("limits"));
                for (k, m) in &min {
                    match req.get(k) {
                        Some(r) if r < m => errs.push(format!(
                            "minimum {k} usage per Container is {}, but request is {}",
                            format_quantity(k, *m),
                            format_quantity(k, *r)
                        )),
                        None => errs.push(format!(
                            "minimum {k} usage per Container is {}.  No request is specified",
                            format_quantity(k, *m)
                        )),
                        _ => {}
                    }
                }
                for (k, m) in &max {
                    match lim.get(k) {
                        Some(l) if l > m => errs.push(format!(
                            "maximum {k} usage per Container is {}, but limit is {}",
                            format_quantity(k, *m),
                            format_quantity(k, *l)
                        )),
                        None => errs.push(format!(
                            "maximum {k} usage per Container is {}.  No limit is specified",
                            format_quantity(k, *m)
                        )),
                        _ => {}
                    }
                }
                for (k, m) in &ratio {
                    if let (Some(l), Some(r)) = (lim.get(k), req.get(k)) {
                        if *r > 0 && l * NANO / r > *m {
                            errs.push(format!(
                                "{k} max limit to request ratio per Container is {}, but provided ratio is {:.6}",
                                format_quantity(k, *m),
                                *l as f64 / *r as f64
                            ));
                        }
                    }
                }
            }
        }
    }
    errs
}

fn fill(res: &mut Map<String, Value>, key: &str, defaults: Option<&Map<String, Value>>) {
    let Some(d) = defaults.filter(|d| !d.is_empty()) else {
        return;
    };
    let Some(target) = res.entry(key).or_insert_with(|| json!({})).as_object_mut() else {
        return;
    };
    for (k, v) in d {
        target.entry(k.clone()).or_insert(v.clone());
    }
}

fn pod_terminal(pod: &Value) -> bool {
    matches!(
        pod.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded") | Some("Failed")
    )
}

/// What one object counts against quota: `pods`, `requests.cpu`, `cpu`,
/// `limits.memory`, `count/<resource>`, `configmaps`, ...
pub fn usage_of(rt: &ResourceType, obj: &Value) -> BTreeMap<String, i128> {
    let mut u = BTreeMap::new();
    let count_key = if rt.group.is_empty() {
        format!("count/{}", rt.plural)
    } else {
        format!("count/{}.{}", rt.plural, rt.group)
    };
    if !(rt.group.is_empty() && rt.plural == "pods" && pod_terminal(obj)) {
        u.insert(count_key, NANO);
    }
    if rt.group.is_empty() {
        match rt.plural {
            "configmaps"
            | "secrets"
            | "services"
            | "persistentvolumeclaims"
            | "replicationcontrollers"
            | "resourcequotas" => {
                u.insert(rt.plural.to_string(), NANO);
            }
            _ => {}
        }
        if rt.plural == "services" {
            match obj.pointer("/spec/type").and_then(Value::as_str) {
                Some("NodePort") => {
                    u.insert("services.nodeports".into(), NANO);
                }
                Some("LoadBalancer") => {
                    u.insert("services.loadbalancers".into(), NANO);
                }
                _ => {}
            }
        }
        if rt.plural == "pods" && !pod_terminal(obj) {
            u.insert("pods".into(), NANO);
            for (k, v) in pod_resources(obj) {
                *u.entry(k).or_default() += v;
            }
        }
    }
    u
}

/// Effective pod requests/limits as quota keys: the sum over app containers,
/// or the largest init container if that is bigger (as upstream).
fn pod_resources(pod: &Value) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    for kind in ["requests", "limits"] {
        let mut sum: BTreeMap<String, i128> = BTreeMap::new();
        for c in pod
            .pointer("/spec/containers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, v) in quantities(c.pointer(&format!("/resources/{kind}"))) {
                *sum.entry(k).or_default() += v;
            }
        }
        for c in pod
            .pointer("/spec/initContainers")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for (k, v) in quantities(c.pointer(&format!("/resources/{kind}"))) {
                let e = sum.entry(k).or_default();
                *e = (*e).max(v);
            }
        }
        for (k, v) in sum {
            if kind == "requests" && (k == "cpu" || k == "memory") {
                out.insert(k.clone(), v);
            }
            out.insert(format!("{kind}.{k}"), v);
        }
    }
    out
}

/// Current usage in `ns` of the keys in `hard`.
pub async fn namespace_usage(
    reg: &Registry,
    ns: &str,
    hard: &BTreeMap<String, i128>,
) -> ApiResult<BTreeMap<String, i128>> {
    let mut used: BTreeMap<String, i128> = hard.keys().map(|k| (k.clone(), 0)).collect();
    let mut types: Vec<&'static ResourceType> = Vec::new();
    for k in hard.keys() {
        let rt = if let Some(r) = k.strip_prefix("count/") {
            let (plural, group) = r.split_once('.').unwrap_or((r, ""));
            catalog::all()
                .iter()
                .find(|t| t.plural == plural && t.group == group)
        } else if k == "pods"
            || k.starts_with("requests.")
            || k.starts_with("limits.")
            || k == "cpu"
            || k == "memory"
        {
            catalog::by_plural("", "v1", "pods")
        } else if k.starts_with("services.") {
            catalog::by_plural("", "v1", "services")
        } else {
            catalog::by_plural("", "v1", k)
        };
        if let Some(rt) = rt {
            if !types.iter().any(|t| std::ptr::eq(*t, rt)) {
                types.push(rt);
            }
        }
    }
    for rt in types {
        let items = reg
            .list(rt, Some(ns), &Filter::default(), None, None)
            .await?
            .items;
        for item in &items {
            for (k, v) in usage_of(rt, item) {
                if let Some(u) = used.get_mut(&k) {
                    *u += v;
                }
            }
        }
    }
    Ok(used)
}

/// Fail with upstream's message if adding `delta` to `used` exceeds `hard`.
pub fn check_quota(
    resource: &str,
    name: &str,
    quota: &str,
    hard: &BTreeMap<String, i128>,
    used: &BTreeMap<String, i128>,
    delta: &BTreeMap<String, i128>,
) -> ApiResult<()> {
    let mut over = Vec::new();
    for (k, h) in hard {
        let Some(d) = delta.get(k) else { continue };
        let u = used.get(k).copied().unwrap_or(0);
        if u + d > *h {
            over.push(k.clone());
        }
    }
    if over.is_empty() {
        return Ok(());
    }
    let fmt = |m: &BTreeMap<String, i128>| {
        over.iter()
            .map(|k| format!("{k}={}", format_quantity(k, m.get(k).copied().unwrap_or(0))))
            .collect::<Vec<_>>()
            .join(",")
    };
    Err(ApiError::forbidden(format!(
        "{resource} {name:?} is forbidden: exceeded quota: {quota}, requested: {}, used: {}, limited: {}",
        fmt(delta),
        fmt(used),
        fmt(hard)
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> BTreeMap<String, i128> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), parse_quantity(v).unwrap()))
            .collect()
    }

    #[test]
    fn formats_quantities() {
        assert_eq!(format_quantity("requests.cpu", 2 * NANO), "2");
        assert_eq!(format_quantity("cpu", NANO / 2), "500m");
        assert_eq!(
            format_quantity("limits.memory", (128 << 20) * NANO),
            "128Mi"
        );
        assert_eq!(format_quantity("memory", 1000 * NANO), "1000");
        assert_eq!(format_quantity("pods", 3 * NANO), "3");
    }

    #[test]
    fn limit_range_defaults_and_bounds() {
        let lr = json!({"spec": {"limits": [{"type": "Container",
            "default": {"cpu": "500m", "memory": "128Mi"},
            "defaultRequest": {"cpu": "100m"},
            "max": {"cpu": "1"},
            "maxLimitRequestRatio": {"cpu": "10"}}]}});
        let mut pod = json!({"spec": {"containers": [{"name": "a"},
            {"name": "b", "resources": {"limits": {"cpu": "200m"}}}]}});
        let errs = apply_limit_ranges(std::slice::from_ref(&lr), &mut pod);
        assert!(errs.is_empty(), "{errs:?}");
        let a = &pod["spec"]["containers"][0]["resources"];
        assert_eq!(a["limits"]["cpu"], "500m");
        assert_eq!(a["limits"]["memory"], "128Mi");
        assert_eq!(a["requests"]["cpu"], "100m");
        assert_eq!(a["requests"]["memory"], "128Mi");
        let b = &pod["spec"]["containers"][1]["resources"];
        assert_eq!(b["limits"]["cpu"], "200m");
        assert_eq!(b["requests"]["cpu"], "200m");
        assert_eq!(b["requests"]["memory"], "128Mi");
        let mut big = json!({"spec": {"containers": [{"name": "a",
            "resources": {"limits": {"cpu": "2"}, "requests": {"cpu": "100m"}}}]}});
        let errs = apply_limit_ranges(&[lr], &mut big);
        assert_eq!(
            errs,
            vec![
                "maximum cpu usage per Container is 1, but limit is 2".to_string(),
                "cpu max limit to request ratio per Container is 10, but provided ratio is 20.000000"
                    .to_string()
            ]
        );
    }

    #[test]
    fn pod_usage_and_quota_message() {
        let rt = catalog::by_plural("", "v1", "pods").unwrap();
        let pod = json!({"spec": {"containers": [
            {"name": "a", "resources": {"requests": {"cpu": "1"}, "limits": {"memory": "1Gi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "1"}}}],
            "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "3"}}}]}});
        let u = usage_of(rt, &pod);
        assert_eq!(u["pods"], NANO);
        assert_eq!(u["requests.cpu"], 3 * NANO);
        assert_eq!(u["cpu"], 3 * NANO);
        assert_eq!(u["limits.memory"], (1 << 30) * NANO);
        assert_eq!(u["count/pods"], NANO);
        let done = json!({"status": {"phase": "Succeeded"}});
        assert!(!usage_of(rt, &done).contains_key("pods"));

        let hard = q(&[("requests.cpu", "2"), ("pods", "10")]);
        let used = q(&[("requests.cpu", "1"), ("pods", "1")]);
        let delta = q(&[("requests.cpu", "2"), ("pods", "1")]);
        let err = check_quota("pods", "x", "q", &hard, &used, &delta).unwrap_err();
        assert_eq!(err.code, 403);
        assert_eq!(
            err.message,
            "pods \"x\" is forbidden: exceeded quota: q, requested: requests.cpu=2, used: requests.cpu=1, limited: requests.cpu=2"
        );
        let ok = q(&[("requests.cpu", "1"), ("pods", "1")]);
        assert!(check_quota("pods", "x", "q", &hard, &used, &ok).is_ok());
    }

    #[test]
    fn counts_other_objects() {
        let rt = catalog::by_plural("", "v1", "configmaps").unwrap();
        let u = usage_of(rt, &json!({}));
        assert_eq!(u["configmaps"], NANO);
        assert_eq!(u["count/configmaps"], NANO);
        let rt = catalog::by_plural("", "v1", "services").unwrap();
        let u = usage_of(rt, &json!({"spec": {"type": "NodePort"}}));
        assert_eq!(u["services.nodeports"], NANO);
    }
}
