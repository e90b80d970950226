//! Watched pods and nodes decoded without `metadata.managedFields`.
//!
//! The scheduler never reads managedFields, but the API server records them on
//! every write, and decoding them into `k8s-openapi` types (each entry's
//! `fieldsV1` is a free-form JSON tree) was about half of the cost of decoding a
//! watched pod. [`WatchedPod`] and [`WatchedNode`] have the same shape as
//! [`Pod`] and [`Node`] but skip that one field while decoding; they convert into
//! the full types by moving their fields.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Node, NodeSpec, NodeStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::runtime::watcher;
use serde::{Deserialize, Deserializer};

/// `ObjectMeta` as decoded by the scheduler: every field but `managedFields`
/// (left out, so serde skips it without building it).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct SlimMeta {
    annotations: Option<BTreeMap<String, String>>,
    creation_timestamp: Option<Time>,
    deletion_grace_period_seconds: Option<i64>,
    deletion_timestamp: Option<Time>,
    finalizers: Option<Vec<String>>,
    generate_name: Option<String>,
    generation: Option<i64>,
    labels: Option<BTreeMap<String, String>>,
    name: Option<String>,
    namespace: Option<String>,
    owner_references: Option<Vec<OwnerReference>>,
    resource_version: Option<String>,
    self_link: Option<String>,
    uid: Option<String>,
}

impl From<SlimMeta> for ObjectMeta {
    fn from(m: SlimMeta) -> ObjectMeta {
        ObjectMeta {
            annotations: m.annotations,
            creation_timestamp: m.creation_timestamp,
            deletion_grace_period_seconds: m.deletion_grace_period_seconds,
            deletion_timestamp: m.deletion_timestamp,
            finalizers: m.finalizers,
            generate_name: m.generate_name,
            generation: m.generation,
            labels: m.labels,
            managed_fields: None,
            name: m.name,
            namespace: m.namespace,
            owner_references: m.owner_references,
            resource_version: m.resource_version,
            self_link: m.self_link,
            uid: m.uid,
        }
    }
}

fn meta_without_managed_fields<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    Ok(Option::<SlimMeta>::deserialize(d)?
        .unwrap_or_default()
        .into())
}

/// A pod as the scheduler watches it (see the module docs).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WatchedPod {
    /// Metadata without managedFields.
    #[serde(default, deserialize_with = "meta_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The pod's spec.
    pub spec: Option<PodSpec>,
    /// The pod's status.
    pub status: Option<PodStatus>,
}

impl From<WatchedPod> for Pod {
    fn from(p: WatchedPod) -> Pod {
        Pod {
            metadata: p.metadata,
            spec: p.spec,
            status: p.status,
        }
    }
}

/// A node as the scheduler watches it (see the module docs).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct WatchedNode {
    /// Metadata without managedFields.
    #[serde(default, deserialize_with = "meta_without_managed_fields")]
    pub metadata: ObjectMeta,
    /// The node's spec.
    pub spec: Option<NodeSpec>,
    /// The node's status.
    pub status: Option<NodeStatus>,
}

impl From<WatchedNode> for Node {
    fn from(n: WatchedNode) -> Node {
        Node {
            metadata: n.metadata,
            spec: n.spec,
            status: n.status,
        }
    }
}

macro_rules! watched_resource {
    ($slim:ty, $full:ty) => {
        impl k8s_openapi::Resource for $slim {
            const API_VERSION: &'static str = <$full as k8s_openapi::Resource>::API_VERSION;
            const GROUP: &'static str = <$full as k8s_openapi::Resource>::GROUP;
            const KIND: &'static str = <$full as k8s_openapi::Resource>::KIND;
            const VERSION: &'static str = <$full as k8s_openapi::Resource>::VERSION;
            const URL_PATH_SEGMENT: &'static str =
                <$full as k8s_openapi::Resource>::URL_PATH_SEGMENT;
            type Scope = <$full as k8s_openapi::Resource>::Scope;
        }

        impl k8s_openapi::ListableResource for $slim {
            const LIST_KIND: &'static str = <$full as k8s_openapi::ListableResource>::LIST_KIND;
        }

        impl k8s_openapi::Metadata for $slim {
            type Ty = ObjectMeta;

            fn metadata(&self) -> &ObjectMeta {
                &self.metadata
            }

            fn metadata_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

watched_resource!(WatchedPod, Pod);
watched_resource!(WatchedNode, Node);

/// A watch event with its object converted (`WatchedPod` → `Pod`, ...).
pub fn convert_event<A, B: From<A>>(e: watcher::Event<A>) -> watcher::Event<B> {
    match e {
        watcher::Event::Apply(o) => watcher::Event::Apply(o.into()),
        watcher::Event::Delete(o) => watcher::Event::Delete(o.into()),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitApply(o) => watcher::Event::InitApply(o.into()),
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod_json() -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {
                "name": "p", "namespace": "ns", "uid": "u1", "resourceVersion": "42",
                "generateName": "p-", "generation": 3, "labels": {"app": "web"},
                "annotations": {"a": "b"}, "finalizers": ["f"],
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "deletionTimestamp": "2026-01-02T00:00:00Z", "deletionGracePeriodSeconds": 30,
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": "rs", "uid": "u0", "controller": true}],
                "selfLink": "/api/v1/namespaces/ns/pods/p",
                "managedFields": [{"manager": "kubectl", "operation": "Update",
                    "apiVersion": "v1", "fieldsType": "FieldsV1",
                    "fieldsV1": {"f:spec": {"f:containers": {}}}}]
            },
            "spec": {"schedulerName": "default-scheduler", "nodeName": "n1",
                "containers": [{"name": "c", "image": "i",
                    "resources": {"requests": {"cpu": "100m"}}}]},
            "status": {"phase": "Pending"}
        })
    }

    #[test]
    fn watched_pod_is_the_pod_without_managed_fields() {
        let slim: WatchedPod = serde_json::from_value(pod_json()).unwrap();
        let mut full: Pod = serde_json::from_value(pod_json()).unwrap();
        assert!(full.metadata.managed_fields.is_some());
        full.metadata.managed_fields = None;
        assert_eq!(Pod::from(slim), full);
    }

    #[test]
    fn watched_node_is_the_node_without_managed_fields() {
        let v = json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": "n1", "labels": {"kubernetes.io/hostname": "n1"},
                "managedFields": [{"manager": "m", "operation": "Update", "fieldsV1": {}}]},
            "spec": {"unschedulable": true, "taints": [{"key": "k", "effect": "NoSchedule"}]},
            "status": {"allocatable": {"cpu": "4"},
                "conditions": [{"type": "Ready", "status": "True"}]}
        });
        let slim: WatchedNode = serde_json::from_value(v.clone()).unwrap();
        let mut full: Node = serde_json::from_value(v).unwrap();
        full.metadata.managed_fields = None;
        assert_eq!(Node::from(slim), full);
    }

    #[test]
    fn missing_or_null_parts_decode_as_empty() {
        let p: WatchedPod = serde_json::from_value(json!({"metadata": null})).unwrap();
        assert_eq!(Pod::from(p), Pod::default());
        let p: WatchedPod = serde_json::from_value(json!({})).unwrap();
        assert_eq!(Pod::from(p), Pod::default());
        assert!(serde_json::from_value::<WatchedPod>(json!({"metadata": {"name": 3}})).is_err());
    }

    #[test]
    fn events_convert_variant_by_variant() {
        let slim = WatchedPod {
            metadata: ObjectMeta {
                name: Some("p".into()),
                ..ObjectMeta::default()
            },
            ..WatchedPod::default()
        };
        let ev: watcher::Event<Pod> = convert_event(watcher::Event::Delete(slim));
        match ev {
            watcher::Event::Delete(p) => assert_eq!(p.metadata.name.as_deref(), Some("p")),
            _ => panic!("wrong variant"),
        }
        assert!(matches!(
            convert_event::<WatchedPod, Pod>(watcher::Event::InitDone),
            watcher::Event::InitDone
        ));
    }
}
