//! Per-resource strategies: what differs between kinds in the generic REST flow
//! (upstream's "registry + strategy"). The generic code lives in `registry`; this
//! module answers the kind-specific questions.

use navarch_api::catalog::{ResourceType, Subresource};
use serde_json::{json, Value};

/// Kind-specific behaviour for the generic registry.
pub trait Strategy: Send + Sync {
    /// Reset or fill fields on create (status, phase, ...). Runs before defaulting.
    fn prepare_for_create(&self, _rt: &ResourceType, _obj: &mut Value) {}

    /// Carry over what a main-resource update may not change (status when the kind
    /// has a status subresource).
    fn prepare_for_update(&self, rt: &ResourceType, new: &mut Value, old: &Value) {
        if rt.has_subresource(Subresource::Status) {
            match old.get("status") {
                Some(s) => new["status"] = s.clone(),
                None => {
                    if let Some(m) = new.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
    }

    /// Does this kind track `metadata.generation` (bumped on spec change)?
    fn tracks_generation(&self) -> bool {
        false
    }

    /// May a PUT of a missing object create it?
    fn allow_create_on_update(&self) -> bool {
        false
    }

    /// Field labels usable in field selectors besides metadata.name/namespace.
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[]
    }

    /// Does a successful delete answer with the object (instead of a Status)?
    fn returns_deleted_object(&self) -> bool {
        false
    }
}

struct Default_;
impl Strategy for Default_ {}

struct Workload;
impl Strategy for Workload {
    fn prepare_for_create(&self, rt: &ResourceType, obj: &mut Value) {
        if rt.has_subresource(Subresource::Status) {
            if let Some(m) = obj.as_object_mut() {
                m.remove("status");
            }
        }
    }
    fn tracks_generation(&self) -> bool {
        true
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.successful"]
    }
}

struct Pods;
impl Strategy for Pods {
    fn prepare_for_create(&self, _rt: &ResourceType, obj: &mut Value) {
        obj["status"] = json!({"phase": "Pending"});
    }
    fn prepare_for_update(&self, _rt: &ResourceType, new: &mut Value, old: &Value) {
        new["status"] = old.get("status").cloned().unwrap_or_else(|| json!({}));
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.nominatedNodeName",
        ]
    }
    fn returns_deleted_object(&self) -> bool {
        true
    }
}

struct Namespaces;
impl Strategy for Namespaces {
    fn prepare_for_create(&self, _rt: &ResourceType, obj: &mut Value) {
        obj["status"] = json!({"phase": "Active"});
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["status.phase"]
    }
}

struct Nodes;
impl Strategy for Nodes {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["spec.unschedulable"]
    }
}

struct Services;
impl Strategy for Services {
    /// Allocated values the client left out (e.g. `kubectl replace` of the original
    /// manifest) are carried over, as upstream does before validation.
    fn prepare_for_update(&self, _rt: &ResourceType, new: &mut Value, old: &Value) {
        new["status"] = old
            .get("status")
            .cloned()
            .unwrap_or_else(|| json!({"loadBalancer": {}}));
        let same_type = new.pointer("/spec/type") == old.pointer("/spec/type")
            || new.pointer("/spec/type").is_none();
        if let (Some(spec), Some(old_spec)) = (
            new.get_mut("spec").and_then(Value::as_object_mut),
            old.get("spec"),
        ) {
            for k in ["clusterIP", "clusterIPs"] {
                let missing = spec.get(k).map(|v| v.is_null() || v == "").unwrap_or(true);
                if missing {
                    if let Some(v) = old_spec.get(k) {
                        spec.insert(k.into(), v.clone());
                    }
                }
            }
            if same_type {
                if let (Some(ports), Some(old_ports)) = (
                    spec.get_mut("ports").and_then(Value::as_array_mut),
                    old_spec.get("ports").and_then(Value::as_array),
                ) {
                    for p in ports.iter_mut() {
                        if p.get("nodePort")
                            .map(|n| n.is_null() || n == 0)
                            .unwrap_or(true)
                        {
                            let same = old_ports.iter().find(|o| {
                                o.get("port") == p.get("port")
                                    && o.get("protocol").or(Some(&json!("TCP")))
                                        == p.get("protocol").or(Some(&json!("TCP")))
                            });
                            if let Some(np) = same.and_then(|o| o.get("nodePort")) {
                                p["nodePort"] = np.clone();
                            }
                        }
                    }
                }
            }
        }
    }
    fn prepare_for_create(&self, _rt: &ResourceType, obj: &mut Value) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    fn returns_deleted_object(&self) -> bool {
        true
    }
}

struct Events;
impl Strategy for Events {
    fn allow_create_on_update(&self) -> bool {
        true
    }
    fn selectable_fields(&self) -> &'static [&'static str] {
        &[
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
            "regarding.kind",
            "regarding.namespace",
            "regarding.name",
            "regarding.uid",
        ]
    }
}

struct CreateOnUpdate;
impl Strategy for CreateOnUpdate {
    fn allow_create_on_update(&self) -> bool {
        true
    }
}

struct Secrets;
impl Strategy for Secrets {
    fn selectable_fields(&self) -> &'static [&'static str] {
        &["type"]
    }
}

/// The strategy for a resource type.
pub fn for_type(rt: &ResourceType) -> &'static dyn Strategy {
    match (rt.group, rt.plural) {
        ("", "pods") => &Pods,
        ("", "namespaces") => &Namespaces,
        ("", "nodes") => &Nodes,
        ("", "services") => &Services,
        ("", "secrets") => &Secrets,
        ("", "events") | ("events.k8s.io", "events") => &Events,
        ("coordination.k8s.io", "leases")
        | ("", "endpoints")
        | ("discovery.k8s.io", "endpointslices") => &CreateOnUpdate,
        ("apps", _)
        | ("batch", _)
        | ("autoscaling", _)
        | ("policy", _)
        | ("", "replicationcontrollers")
        | ("networking.k8s.io", "ingresses")
        | ("networking.k8s.io", "networkpolicies")
        | ("apiextensions.k8s.io", _) => &Workload,
        _ => {
            if rt.has_subresource(Subresource::Status) {
                &Workload
            } else {
                &Default_
            }
        }
    }
}
