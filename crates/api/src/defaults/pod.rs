//! Pod spec defaulting (upstream `SetDefaults_PodSpec`, `SetDefaults_Container`
//! and friends) plus the Pod-only defaults of `SetDefaults_Pod` and the
//! admission plugins that always run (Priority, DefaultTolerationSeconds,
//! ServiceAccount name).

use serde_json::{json, Value};

use crate::validation::util::{child_obj, ensure_obj, set_default, str_at};

/// Seconds a pod tolerates a not-ready/unreachable node (upstream admission default).
const DEFAULT_TOLERATION_SECONDS: i64 = 300;

/// Defaults for a whole Pod object.
pub(crate) fn default_pod(obj: &mut Value) {
    let spec = child_obj(obj, "spec");
    default_pod_spec(spec);
    for list in ["containers", "initContainers"] {
        for c in containers_mut(spec, list) {
            default_requests_from_limits(c);
        }
    }
    set_default(spec, "enableServiceLinks", json!(true));
    if spec
        .get("hostNetwork")
        .and_then(Value::as_bool)
        .unwrap_or(false)
    {
        for list in ["containers", "initContainers"] {
            for c in containers_mut(spec, list) {
                host_network_ports(c);
            }
        }
    }
    set_default(spec, "serviceAccountName", json!("default"));
    let sa = str_at(spec, &["serviceAccountName"]).to_string();
    set_default(spec, "serviceAccount", json!(sa));
    // spec.priority and spec.preemptionPolicy come from the PriorityClass at
    // admission (apiserver `admission::admit_priority`), as upstream's Priority
    // plugin: defaulting them here would hide a globalDefault class.
    default_tolerations(spec);
}

/// Defaults for a PodTemplateSpec (`{metadata, spec}`).
pub(crate) fn default_pod_template(tmpl: &mut Value) {
    default_pod_spec(child_obj(tmpl, "spec"));
}

fn containers_mut<'a>(spec: &'a mut Value, list: &str) -> impl Iterator<Item = &'a mut Value> {
    spec.get_mut(list)
        .and_then(Value::as_array_mut)
        .into_iter()
        .flat_map(|a| a.iter_mut())
}

/// Upstream `SetDefaults_PodSpec` and everything nested in a pod spec.
pub(crate) fn default_pod_spec(spec: &mut Value) {
    set_default(spec, "dnsPolicy", json!("ClusterFirst"));
    set_default(spec, "restartPolicy", json!("Always"));
    child_obj(spec, "securityContext");
    set_default(spec, "terminationGracePeriodSeconds", json!(30));
    set_default(spec, "schedulerName", json!("default-scheduler"));
    for list in ["containers", "initContainers", "ephemeralContainers"] {
        for c in containers_mut(spec, list) {
            default_container(c);
        }
    }
    if let Some(vols) = spec.get_mut("volumes").and_then(Value::as_array_mut) {
        for v in vols {
            default_volume(v);
        }
    }
}

/// Upstream `ParseImageName`'s tag, with a missing tag and digest meaning `latest`.
fn image_tag(image: &str) -> Option<&str> {
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    let last = name.rsplit('/').next().unwrap_or(name);
    match last.split_once(':') {
        Some((_, tag)) => Some(tag),
        None if digest.is_some() => None,
        None => Some("latest"),
    }
}

fn default_container(c: &mut Value) {
    let image = str_at(c, &["image"]).to_string();
    let policy = if image_tag(&image) == Some("latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_default(c, "imagePullPolicy", json!(policy));
    set_default(c, "terminationMessagePath", json!("/dev/termination-log"));
    set_default(c, "terminationMessagePolicy", json!("File"));
    child_obj(c, "resources");
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, "protocol", json!("TCP"));
        }
    }
    for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
        if let Some(p) = c.get_mut(probe).filter(|p| p.is_object()) {
            set_default(p, "timeoutSeconds", json!(1));
            set_default(p, "periodSeconds", json!(10));
            set_default(p, "successThreshold", json!(1));
            set_default(p, "failureThreshold", json!(3));
            default_handler(p);
        }
    }
    if let Some(lc) = c.get_mut("lifecycle").filter(|l| l.is_object()) {
        for hook in ["postStart", "preStop"] {
            if let Some(h) = lc.get_mut(hook).filter(|h| h.is_object()) {
                default_handler(h);
            }
        }
    }
    if let Some(env) = c.get_mut("env").and_then(Value::as_array_mut) {
        for e in env {
            if let Some(fr) = e
                .get_mut("valueFrom")
                .and_then(|v| v.get_mut("fieldRef"))
                .filter(|f| f.is_object())
            {
                set_default(fr, "apiVersion", json!("v1"));
            }
        }
    }
}

fn default_handler(h: &mut Value) {
    if let Some(g) = h.get_mut("httpGet").filter(|g| g.is_object()) {
        set_default(g, "path", json!("/"));
        set_default(g, "scheme", json!("HTTP"));
    }
}

const VOLUME_SOURCES_WITH_MODE: &[&str] = &["configMap", "secret", "downwardAPI", "projected"];

fn default_volume(v: &mut Value) {
    let m = ensure_obj(v);
    let has_source = m.iter().any(|(k, x)| k != "name" && !x.is_null());
    if !has_source {
        m.insert("emptyDir".to_string(), json!({}));
    }
    for src in VOLUME_SOURCES_WITH_MODE {
        if let Some(s) = m.get_mut(*src).filter(|s| s.is_object()) {
            set_default(s, "defaultMode", json!(420));
            if let Some(items) = s.get_mut("items").and_then(Value::as_array_mut) {
                for it in items {
                    if let Some(fr) = it.get_mut("fieldRef").filter(|f| f.is_object()) {
                        set_default(fr, "apiVersion", json!("v1"));
                    }
                }
            }
            if let Some(sources) = s.get_mut("sources").and_then(Value::as_array_mut) {
                for ps in sources {
                    if let Some(items) = ps
                        .get_mut("downwardAPI")
                        .and_then(|d| d.get_mut("items"))
                        .and_then(Value::as_array_mut)
                    {
                        for it in items {
                            if let Some(fr) = it.get_mut("fieldRef").filter(|f| f.is_object()) {
                                set_default(fr, "apiVersion", json!("v1"));
                            }
                        }
                    }
                    if let Some(t) = ps.get_mut("serviceAccountToken").filter(|t| t.is_object()) {
                        set_default(t, "expirationSeconds", json!(3607));
                    }
                }
            }
        }
    }
    if let Some(hp) = m.get_mut("hostPath").filter(|s| s.is_object()) {
        set_default(hp, "type", json!(""));
    }
}

/// `SetDefaults_Pod`: requests default to limits for resources only limited.
fn default_requests_from_limits(c: &mut Value) {
    let Some(limits) = c
        .get("resources")
        .and_then(|r| r.get("limits"))
        .and_then(Value::as_object)
        .cloned()
    else {
        return;
    };
    let res = child_obj(c, "resources");
    let req = ensure_obj(child_obj(res, "requests"));
    for (k, v) in limits {
        req.entry(k).or_insert(v);
    }
}

/// With hostNetwork, hostPort defaults to containerPort.
fn host_network_ports(c: &mut Value) {
    if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
        for p in ports {
            let cp = p.get("containerPort").cloned().unwrap_or(Value::Null);
            let missing = p
                .get("hostPort")
                .is_none_or(|h| h.is_null() || h.as_i64() == Some(0));
            if missing && !cp.is_null() {
                ensure_obj(p).insert("hostPort".to_string(), cp);
            }
        }
    }
}

/// DefaultTolerationSeconds admission: tolerate not-ready and unreachable nodes
/// for 300 s unless the pod already tolerates them.
fn default_tolerations(spec: &mut Value) {
    let tolerations = ensure_obj(spec)
        .entry("tolerations")
        .or_insert_with(|| json!([]));
    if !tolerations.is_array() {
        *tolerations = json!([]);
    }
    let Some(list) = tolerations.as_array_mut() else {
        return;
    };
    for key in [
        "node.kubernetes.io/not-ready",
        "node.kubernetes.io/unreachable",
    ] {
        let tolerated = list.iter().any(|t| {
            let k = str_at(t, &["key"]);
            let e = str_at(t, &["effect"]);
            (k == key || k.is_empty()) && (e == "NoExecute" || e.is_empty())
        });
        if !tolerated {
            list.push(json!({
                "key": key,
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": DEFAULT_TOLERATION_SECONDS,
            }));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_tags() {
        assert_eq!(image_tag("nginx"), Some("latest"));
        assert_eq!(image_tag("nginx:1.25"), Some("1.25"));
        assert_eq!(image_tag("localhost:5000/nginx"), Some("latest"));
        assert_eq!(image_tag("localhost:5000/nginx:v1"), Some("v1"));
        assert_eq!(image_tag("nginx@sha256:abc"), None);
        assert_eq!(image_tag("nginx:latest@sha256:abc"), Some("latest"));
    }

    #[test]
    fn requests_default_to_limits_in_pods_only() {
        let mut pod = json!({"spec": {"containers": [{"name": "a", "image": "x:1",
            "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Gi"}}}]}});
        default_pod(&mut pod);
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["requests"],
            json!({"memory": "1Gi", "cpu": "1"})
        );
        let mut tmpl = json!({"spec": {"containers": [{"name": "a", "image": "x:1",
            "resources": {"limits": {"cpu": "1"}}}]}});
        default_pod_template(&mut tmpl);
        assert!(tmpl["spec"]["containers"][0]["resources"]
            .get("requests")
            .is_none());
        assert!(tmpl["spec"].get("enableServiceLinks").is_none());
    }

    #[test]
    fn tolerations_added_unless_tolerated() {
        let mut pod = json!({"spec": {"tolerations": [{"operator": "Exists"}]}});
        default_pod(&mut pod);
        assert_eq!(pod["spec"]["tolerations"].as_array().map(Vec::len), Some(1));
        let mut pod = json!({"spec": {"tolerations": [
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]}});
        default_pod(&mut pod);
        let t = pod["spec"]["tolerations"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        assert_eq!(t.len(), 2);
        assert_eq!(t[0]["tolerationSeconds"], 10);
        assert_eq!(t[1]["key"], "node.kubernetes.io/not-ready");
        assert_eq!(t[1]["tolerationSeconds"], 300);
    }

    #[test]
    fn volumes_and_probes() {
        let mut pod = json!({"spec": {"volumes": [{"name": "a"}, {"name": "b", "configMap": {"name": "cm"}}],
            "containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
                "readinessProbe": {"httpGet": {"port": 80}},
                "env": [{"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]}]}});
        default_pod(&mut pod);
        let s = &pod["spec"];
        assert_eq!(s["volumes"][0]["emptyDir"], json!({}));
        assert_eq!(s["volumes"][1]["configMap"]["defaultMode"], 420);
        let c = &s["containers"][0];
        assert_eq!(c["imagePullPolicy"], "Always");
        assert_eq!(c["ports"][0]["protocol"], "TCP");
        assert_eq!(
            c["readinessProbe"]["httpGet"],
            json!({"port": 80, "path": "/", "scheme": "HTTP"})
        );
        assert_eq!(c["readinessProbe"]["failureThreshold"], 3);
        assert_eq!(c["env"][0]["valueFrom"]["fieldRef"]["apiVersion"], "v1");
        assert!(s.get("priority").is_none(), "set at admission");
        assert_eq!(s["serviceAccountName"], "default");
    }
}
