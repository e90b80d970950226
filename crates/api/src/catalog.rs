//! The resource catalog: every kind navarch serves, with the facts discovery,
//! OpenAPI, storage and the REST handler need about it.
//!
//! Each entry is built from its `k8s-openapi` type, so group, version, kind and
//! plural come from the Kubernetes 1.33 API definitions, and the entry carries
//! function pointers to decode/normalise an object through the typed struct and to
//! produce its JSON schema.

use std::sync::LazyLock;

use k8s_openapi::api::{
    apps::v1 as apps, autoscaling::v2 as autoscaling, batch::v1 as batch,
    coordination::v1 as coordination, core::v1 as core, discovery::v1 as discovery,
    events::v1 as events, networking::v1 as networking, policy::v1 as policy, rbac::v1 as rbac,
    scheduling::v1 as scheduling, storage::v1 as storage,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions;
use serde::{de::DeserializeOwned, Serialize};
use serde_json::Value;

/// A subresource served under `<plural>/<name>/<subresource>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subresource {
    /// `.status` only; same kind as the parent.
    Status,
    /// autoscaling/v1 Scale view of `.spec.replicas`.
    Scale,
    /// pods/binding (v1 Binding): sets `spec.nodeName`.
    Binding,
    /// pods/eviction (policy/v1 Eviction).
    Eviction,
    /// pods/log (plain text).
    Log,
    /// pods/exec (WebSocket).
    Exec,
    /// pods/attach (WebSocket).
    Attach,
    /// pods/portforward.
    PortForward,
    /// pods/ephemeralcontainers.
    EphemeralContainers,
    /// serviceaccounts/token (authentication.k8s.io/v1 TokenRequest).
    Token,
    /// namespaces/finalize.
    Finalize,
}

impl Subresource {
    pub fn name(self) -> &'static str {
        match self {
            Subresource::Status => "status",
            Subresource::Scale => "scale",
            Subresource::Binding => "binding",
            Subresource::Eviction => "eviction",
            Subresource::Log => "log",
            Subresource::Exec => "exec",
            Subresource::Attach => "attach",
            Subresource::PortForward => "portforward",
            Subresource::EphemeralContainers => "ephemeralcontainers",
            Subresource::Token => "token",
            Subresource::Finalize => "finalize",
        }
    }

    pub fn from_name(name: &str) -> Option<Subresource> {
        ALL_SUBRESOURCES.iter().copied().find(|s| s.name() == name)
    }

    /// (group, version, kind) of the object this subresource takes and returns;
    /// `None` means "the parent's kind".
    pub fn response_kind(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Subresource::Status | Subresource::EphemeralContainers | Subresource::Log => None,
            Subresource::Finalize => None,
            Subresource::Scale => Some(("autoscaling", "v1", "Scale")),
            Subresource::Binding => Some(("", "v1", "Binding")),
            Subresource::Eviction => Some(("policy", "v1", "Eviction")),
            Subresource::Exec => Some(("", "v1", "PodExecOptions")),
            Subresource::Attach => Some(("", "v1", "PodAttachOptions")),
            Subresource::PortForward => Some(("", "v1", "PodPortForwardOptions")),
            Subresource::Token => Some(("authentication.k8s.io", "v1", "TokenRequest")),
        }
    }

    pub fn verbs(self) -> &'static [&'static str] {
        match self {
            Subresource::Status | Subresource::Scale | Subresource::EphemeralContainers => {
                &["get", "patch", "update"]
            }
            Subresource::Binding | Subresource::Eviction | Subresource::Token => &["create"],
            Subresource::Log => &["get"],
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                &["create", "get"]
            }
            Subresource::Finalize => &["update"],
        }
    }
}

const ALL_SUBRESOURCES: &[Subresource] = &[
    Subresource::Status,
    Subresource::Scale,
    Subresource::Binding,
    Subresource::Eviction,
    Subresource::Log,
    Subresource::Exec,
    Subresource::Attach,
    Subresource::PortForward,
    Subresource::EphemeralContainers,
    Subresource::Token,
    Subresource::Finalize,
];

/// Everything the server knows about one resource type.
#[derive(Clone, Debug)]
pub struct ResourceType {
    /// API group ("" for the core group).
    pub group: &'static str,
    pub version: &'static str,
    /// "v1" or "apps/v1".
    pub api_version: &'static str,
    pub kind: &'static str,
    pub list_kind: &'static str,
    /// URL segment, e.g. "deployments".
    pub plural: &'static str,
    /// e.g. "deployment".
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [Subresource],
    /// OpenAPI definition name, e.g. "io.k8s.api.apps.v1.Deployment".
    pub schema_name: String,
    /// Decode through the typed struct and encode again: rejects values of the wrong
    /// JSON type and drops fields the type does not know.
    pub roundtrip: fn(Value) -> Result<Value, serde_json::Error>,
    /// JSON schema of the kind (for OpenAPI), registering referenced definitions in
    /// the generator.
    pub json_schema: fn(&mut schemars::SchemaGenerator) -> schemars::Schema,
    /// Where objects of this type live in the store: the prefix under which
    /// `<namespace>/<name>` or `<name>` follows. Two resources may share storage
    /// (core/v1 and events.k8s.io/v1 events do upstream).
    pub storage_prefix: String,
}

impl ResourceType {
    /// "deployments.apps", or "pods" for the core group: how upstream names the
    /// resource in error messages.
    pub fn qualified_plural(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_subresource(&self, sub: Subresource) -> bool {
        self.subresources.contains(&sub)
    }

    /// The storage key of one object.
    pub fn key(&self, namespace: Option<&str>, name: &str) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/{}", self.storage_prefix, ns, name),
            _ => format!("{}{}", self.storage_prefix, name),
        }
    }

    /// The storage prefix of a list (all namespaces when `namespace` is None).
    pub fn list_prefix(&self, namespace: Option<&str>) -> String {
        match (self.namespaced, namespace) {
            (true, Some(ns)) => format!("{}{}/", self.storage_prefix, ns),
            _ => self.storage_prefix.clone(),
        }
    }
}

fn roundtrip<K: Serialize + DeserializeOwned>(v: Value) -> Result<Value, serde_json::Error> {
    let typed: K = serde_json::from_value(v)?;
    serde_json::to_value(typed)
}

fn schema_of<K: schemars::JsonSchema>(g: &mut schemars::SchemaGenerator) -> schemars::Schema {
    g.subschema_for::<K>()
}

struct Extra {
    singular: &'static str,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [Subresource],
}

fn entry<K>(extra: Extra) -> ResourceType
where
    K: k8s_openapi::Resource
        + k8s_openapi::ListableResource
        + Serialize
        + DeserializeOwned
        + schemars::JsonSchema,
{
    let namespaced = std::any::type_name::<K::Scope>().ends_with("NamespaceResourceScope");
    let group_dir = if K::GROUP.is_empty() {
        "core"
    } else {
        K::GROUP
    };
    ResourceType {
        group: K::GROUP,
        version: K::VERSION,
        api_version: K::API_VERSION,
        kind: K::KIND,
        list_kind: K::LIST_KIND,
        plural: K::URL_PATH_SEGMENT,
        singular: extra.singular,
        namespaced,
        short_names: extra.short_names,
        categories: extra.categories,
        subresources: extra.subresources,
        schema_name: K::schema_name().into_owned(),
        roundtrip: roundtrip::<K>,
        json_schema: schema_of::<K>,
        storage_prefix: format!("/registry/{}/{}/", group_dir, K::URL_PATH_SEGMENT),
    }
}

macro_rules! x {
    ($singular:expr, [$($short:expr),*], [$($cat:expr),*], [$($sub:ident),*]) => {
        Extra {
            singular: $singular,
            short_names: &[$($short),*],
            categories: &[$($cat),*],
            subresources: &[$(Subresource::$sub),*],
        }
    };
}

static CATALOG: LazyLock<Vec<ResourceType>> = LazyLock::new(|| {
    use Subresource as _S;
    let mut v = vec![
        // core/v1
        entry::<core::Namespace>(x!("namespace", ["ns"], [], [Status, Finalize])),
        entry::<core::Node>(x!("node", ["no"], [], [Status])),
        entry::<core::Pod>(x!(
            "pod",
            ["po"],
            ["all"],
            [
                Status,
                Binding,
                Eviction,
                Log,
                Exec,
                Attach,
                PortForward,
                EphemeralContainers
            ]
        )),
        entry::<core::Service>(x!("service", ["svc"], ["all"], [Status])),
        entry::<core::Endpoints>(x!("endpoints", ["ep"], [], [])),
        entry::<core::ConfigMap>(x!("configmap", ["cm"], [], [])),
        entry::<core::Secret>(x!("secret", [], [], [])),
        entry::<core::ServiceAccount>(x!("serviceaccount", ["sa"], [], [Token])),
        entry::<core::Event>(x!("event", ["ev"], [], [])),
        entry::<core::LimitRange>(x!("limitrange", ["limits"], [], [])),
        entry::<core::ResourceQuota>(x!("resourcequota", ["quota"], [], [Status])),
        entry::<core::PersistentVolume>(x!("persistentvolume", ["pv"], [], [Status])),
        entry::<core::PersistentVolumeClaim>(x!("persistentvolumeclaim", ["pvc"], [], [Status])),
        entry::<core::ReplicationController>(x!(
            "replicationcontroller",
            ["rc"],
            ["all"],
            [Status, Scale]
        )),
        entry::<core::PodTemplate>(x!("podtemplate", [], [], [])),
        // apps/v1
        entry::<apps::Deployment>(x!("deployment", ["deploy"], ["all"], [Status, Scale])),
        entry::<apps::ReplicaSet>(x!("replicaset", ["rs"], ["all"], [Status, Scale])),
        entry::<apps::StatefulSet>(x!("statefulset", ["sts"], ["all"], [Status, Scale])),
        entry::<apps::DaemonSet>(x!("daemonset", ["ds"], ["all"], [Status])),
        entry::<apps::ControllerRevision>(x!("controllerrevision", [], [], [])),
        // batch/v1
        entry::<batch::Job>(x!("job", [], ["all"], [Status])),
        entry::<batch::CronJob>(x!("cronjob", ["cj"], ["all"], [Status])),
        // others
        entry::<coordination::Lease>(x!("lease", [], [], [])),
        entry::<autoscaling::HorizontalPodAutoscaler>(x!(
            "horizontalpodautoscaler",
            ["hpa"],
            ["all"],
            [Status]
        )),
        entry::<networking::Ingress>(x!("ingress", ["ing"], [], [Status])),
        entry::<networking::IngressClass>(x!("ingressclass", [], [], [])),
        entry::<networking::NetworkPolicy>(x!("networkpolicy", ["netpol"], [], [])),
        entry::<discovery::EndpointSlice>(x!("endpointslice", [], [], [])),
        entry::<storage::StorageClass>(x!("storageclass", ["sc"], [], [])),
        entry::<policy::PodDisruptionBudget>(x!("poddisruptionbudget", ["pdb"], [], [Status])),
        entry::<scheduling::PriorityClass>(x!("priorityclass", ["pc"], [], [])),
        entry::<rbac::Role>(x!("role", [], [], [])),
        entry::<rbac::RoleBinding>(x!("rolebinding", [], [], [])),
        entry::<rbac::ClusterRole>(x!("clusterrole", [], [], [])),
        entry::<rbac::ClusterRoleBinding>(x!("clusterrolebinding", [], [], [])),
        entry::<apiextensions::CustomResourceDefinition>(x!(
            "customresourcedefinition",
            ["crd", "crds"],
            [],
            [Status]
        )),
    ];
    // events.k8s.io/v1 shares storage with core/v1 events, as upstream.
    let mut ev = entry::<events::Event>(x!("event", ["ev"], [], []));
    ev.storage_prefix = "/registry/core/events/".to_string();
    v.push(ev);
    let _ = _S::Status;
    v
});

/// Every served resource type.
pub fn all() -> &'static [ResourceType] {
    &CATALOG
}

/// Look a resource up by its URL coordinates.
pub fn by_plural(group: &str, version: &str, plural: &str) -> Option<&'static ResourceType> {
    all()
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// Look a resource up by apiVersion ("v1", "apps/v1") and kind.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    all()
        .iter()
        .find(|r| r.api_version == api_version && r.kind == kind)
}

/// The served (group, version) pairs, core first, in a stable order.
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&'static str, &'static str)> = Vec::new();
    for r in all() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_facts_come_from_the_types() {
        let pods = by_plural("", "v1", "pods").expect("pods");
        assert!(pods.namespaced);
        assert_eq!(pods.kind, "Pod");
        assert_eq!(pods.list_kind, "PodList");
        assert_eq!(pods.schema_name, "io.k8s.api.core.v1.Pod");
        let nodes = by_plural("", "v1", "nodes").expect("nodes");
        assert!(!nodes.namespaced);
        let d = by_kind("apps/v1", "Deployment").expect("deployments");
        assert_eq!(d.qualified_plural(), "deployments.apps");
        assert_eq!(
            d.key(Some("default"), "web"),
            "/registry/apps/deployments/default/web"
        );
        let ev = by_plural("events.k8s.io", "v1", "events").expect("events");
        assert_eq!(ev.storage_prefix, "/registry/core/events/");
    }

    #[test]
    fn roundtrip_rejects_wrong_types_and_drops_unknown_fields() {
        let cm = by_plural("", "v1", "configmaps").expect("cm");
        let out = (cm.roundtrip)(serde_json::json!({
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"},
            "data": {"k": "v"}, "bogus": 1
        }))
        .expect("valid");
        assert!(out.get("bogus").is_none());
        assert!((cm.roundtrip)(serde_json::json!({"metadata": {"name": 3}})).is_err());
    }
}
