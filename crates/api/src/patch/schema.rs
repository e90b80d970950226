//! Patch metadata of the built-in kinds: how each list field merges.
//!
//! Upstream keeps this in Go struct tags (`patchStrategy`, `patchMergeKey`) and
//! in the OpenAPI extensions `x-kubernetes-patch-strategy` /
//! `x-kubernetes-patch-merge-key`. This module encodes the same facts as a small
//! table keyed by the Go type a field belongs to, so a `ports` list under a
//! container (merge key `containerPort`) differs from `ports` under a ServiceSpec
//! (merge key `port`). Fields not listed are plain: maps merge recursively and
//! lists are replaced whole.

/// How a list field is patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListStrategy {
    /// The patch list replaces the whole list (the default; also "atomic").
    Replace,
    /// A list of objects merged element by element on a merge key.
    MergeByKey(&'static str),
    /// A list of scalars merged as a set union (e.g. `finalizers`).
    MergeSet,
}

/// The Go type (context) a JSON value belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    Unknown,
    Root(RootKind),
    ObjectMeta,
    PodTemplateSpec,
    PodSpec,
    Container,
    PodStatus,
    /// Deployment, ReplicaSet, StatefulSet, DaemonSet, Job, ReplicationController specs.
    WorkloadSpec,
    CronJobSpec,
    JobTemplateSpec,
    /// A status whose only merge list is `conditions` (by `type`).
    ConditionsStatus,
    ServiceSpec,
    NodeSpec,
    NodeStatus,
}

/// Which top-level shape a kind has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RootKind {
    Pod,
    PodTemplate,
    Workload,
    CronJob,
    Node,
    Service,
    ServiceAccount,
    ConditionsOnly,
    Other,
}

/// A position in an object's type tree; start at [`SchemaNode::for_kind`] and
/// descend with [`SchemaNode::field`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaNode(Ty);

/// What the schema says about one field of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldMeta {
    /// The node of the field's value (of each element, for lists).
    pub node: SchemaNode,
    /// How the field merges when it is a list.
    pub list: ListStrategy,
    /// The keys that identify an element of a keyed list for server-side apply
    /// (`x-kubernetes-list-map-keys`), with the default used when an element
    /// lacks one. Empty unless `list` is [`ListStrategy::MergeByKey`].
    pub map_keys: &'static [(&'static str, Option<&'static str>)],
    /// The field is atomic for server-side apply ownership (e.g. label selectors).
    pub atomic: bool,
}

impl FieldMeta {
    const fn plain(ty: Ty) -> FieldMeta {
        FieldMeta {
            node: SchemaNode(ty),
            list: ListStrategy::Replace,
            map_keys: &[],
            atomic: false,
        }
    }

    const fn keyed(
        ty: Ty,
        key: &'static str,
        map_keys: &'static [(&'static str, Option<&'static str>)],
    ) -> FieldMeta {
        FieldMeta {
            node: SchemaNode(ty),
            list: ListStrategy::MergeByKey(key),
            map_keys,
            atomic: false,
        }
    }

    const fn set() -> FieldMeta {
        FieldMeta {
            node: SchemaNode(Ty::Unknown),
            list: ListStrategy::MergeSet,
            map_keys: &[],
            atomic: false,
        }
    }
}

const BY_NAME: &[(&str, Option<&str>)] = &[("name", None)];
const BY_TYPE: &[(&str, Option<&str>)] = &[("type", None)];
const BY_IP: &[(&str, Option<&str>)] = &[("ip", None)];
const BY_UID: &[(&str, Option<&str>)] = &[("uid", None)];
const CONTAINER_PORT_KEYS: &[(&str, Option<&str>)] =
    &[("containerPort", None), ("protocol", Some("TCP"))];
const SERVICE_PORT_KEYS: &[(&str, Option<&str>)] = &[("port", None), ("protocol", Some("TCP"))];

impl SchemaNode {
    /// The root node of an object of `kind` in `group` ("" for core). Unknown
    /// kinds get a root that knows only `metadata` (every other list replaces).
    pub fn for_kind(group: &str, kind: &str) -> SchemaNode {
        let root = match (group, kind) {
            ("", "Pod") => RootKind::Pod,
            ("", "PodTemplate") => RootKind::PodTemplate,
            ("", "ReplicationController")
            | ("apps", "Deployment" | "ReplicaSet" | "StatefulSet" | "DaemonSet")
            | ("batch", "Job") => RootKind::Workload,
            ("batch", "CronJob") => RootKind::CronJob,
            ("", "Node") => RootKind::Node,
            ("", "Service") => RootKind::Service,
            ("", "ServiceAccount") => RootKind::ServiceAccount,
            ("", "Namespace" | "PersistentVolumeClaim")
            | ("autoscaling", "HorizontalPodAutoscaler")
            | ("policy", "PodDisruptionBudget") => RootKind::ConditionsOnly,
            _ => RootKind::Other,
        };
        SchemaNode(Ty::Root(root))
    }

    /// A node that knows nothing: maps merge, lists replace.
    pub fn unknown() -> SchemaNode {
        SchemaNode(Ty::Unknown)
    }

    /// Metadata of `field` under this node.
    pub fn field(self, field: &str) -> FieldMeta {
        use Ty::*;
        let plain = FieldMeta::plain;
        match (self.0, field) {
            (Root(_), "metadata") => plain(ObjectMeta),
            (Root(r), _) => root_field(r, field),

            (ObjectMeta, "finalizers") => FieldMeta::set(),
            (ObjectMeta, "ownerReferences") => FieldMeta::keyed(Unknown, "uid", BY_UID),

            (PodTemplateSpec, "metadata") => plain(ObjectMeta),
            (PodTemplateSpec, "spec") => plain(PodSpec),
            (WorkloadSpec, "template") => plain(PodTemplateSpec),
            (WorkloadSpec, "selector") => atomic(),
            (CronJobSpec, "jobTemplate") => plain(JobTemplateSpec),
            (JobTemplateSpec, "metadata") => plain(ObjectMeta),
            (JobTemplateSpec, "spec") => plain(WorkloadSpec),

            (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
                FieldMeta::keyed(Container, "name", BY_NAME)
            }
            (PodSpec, "volumes" | "imagePullSecrets" | "schedulingGates" | "resourceClaims") => {
                FieldMeta::keyed(Unknown, "name", BY_NAME)
            }
            (PodSpec, "hostAliases") => FieldMeta::keyed(Unknown, "ip", BY_IP),
            (PodSpec, "topologySpreadConstraints") => FieldMeta::keyed(
                Unknown,
                "topologyKey",
                &[("topologyKey", None), ("whenUnsatisfiable", None)],
            ),

            (Container, "ports") => FieldMeta::keyed(Unknown, "containerPort", CONTAINER_PORT_KEYS),
            (Container, "env") => FieldMeta::keyed(Unknown, "name", BY_NAME),
            (Container, "volumeMounts") => {
                FieldMeta::keyed(Unknown, "mountPath", &[("mountPath", None)])
            }
            (Container, "volumeDevices") => {
                FieldMeta::keyed(Unknown, "devicePath", &[("devicePath", None)])
            }

            (PodStatus, "conditions") => FieldMeta::keyed(Unknown, "type", BY_TYPE),
            (PodStatus, "podIPs" | "hostIPs") => FieldMeta::keyed(Unknown, "ip", BY_IP),
            (PodStatus, "resourceClaimStatuses") => FieldMeta::keyed(Unknown, "name", BY_NAME),

            (ConditionsStatus, "conditions") => FieldMeta::keyed(Unknown, "type", BY_TYPE),

            (ServiceSpec, "ports") => FieldMeta::keyed(Unknown, "port", SERVICE_PORT_KEYS),
            (ServiceSpec, "selector") => atomic(),

            (NodeSpec, "podCIDRs") => FieldMeta::set(),
            (NodeStatus, "conditions" | "addresses") => FieldMeta::keyed(Unknown, "type", BY_TYPE),

            (_, "selector" | "labelSelector" | "podSelector" | "namespaceSelector") => atomic(),
            _ => plain(Unknown),
        }
    }
}

const fn atomic() -> FieldMeta {
    FieldMeta {
        node: SchemaNode(Ty::Unknown),
        list: ListStrategy::Replace,
        map_keys: &[],
        atomic: true,
    }
}

fn root_field(root: RootKind, field: &str) -> FieldMeta {
    use Ty::*;
    let plain = FieldMeta::plain;
    match (root, field) {
        (RootKind::Pod, "spec") => plain(PodSpec),
        (RootKind::Pod, "status") => plain(PodStatus),
        (RootKind::PodTemplate, "template") => plain(PodTemplateSpec),
        (RootKind::Workload, "spec") => plain(WorkloadSpec),
        (RootKind::Workload, "status") => plain(ConditionsStatus),
        (RootKind::CronJob, "spec") => plain(CronJobSpec),
        (RootKind::Node, "spec") => plain(NodeSpec),
        (RootKind::Node, "status") => plain(NodeStatus),
        (RootKind::Service, "spec") => plain(ServiceSpec),
        (RootKind::Service, "status") => plain(ConditionsStatus),
        (RootKind::ServiceAccount, "secrets") => FieldMeta::keyed(Unknown, "name", BY_NAME),
        (RootKind::ConditionsOnly, "status") => plain(ConditionsStatus),
        _ => plain(Unknown),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walk(group: &str, kind: &str, path: &[&str]) -> FieldMeta {
        let mut node = SchemaNode::for_kind(group, kind);
        let mut meta = FieldMeta::plain(Ty::Unknown);
        for p in path {
            meta = node.field(p);
            node = meta.node;
        }
        meta
    }

    #[test]
    fn merge_keys_depend_on_context() {
        let deploy = |p: &[&str]| walk("apps", "Deployment", p).list;
        assert_eq!(
            deploy(&["spec", "template", "spec", "containers"]),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            deploy(&["spec", "template", "spec", "containers", "ports"]),
            ListStrategy::MergeByKey("containerPort")
        );
        assert_eq!(
            deploy(&["spec", "template", "spec", "containers", "env"]),
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            deploy(&["spec", "template", "spec", "containers", "args"]),
            ListStrategy::Replace
        );
        assert_eq!(
            deploy(&["spec", "template", "spec", "tolerations"]),
            ListStrategy::Replace
        );
        assert_eq!(deploy(&["metadata", "finalizers"]), ListStrategy::MergeSet);
        assert_eq!(
            deploy(&["spec", "template", "metadata", "finalizers"]),
            ListStrategy::MergeSet
        );
        assert_eq!(
            deploy(&["status", "conditions"]),
            ListStrategy::MergeByKey("type")
        );
        assert_eq!(
            walk("", "Service", &["spec", "ports"]).list,
            ListStrategy::MergeByKey("port")
        );
        assert_eq!(
            walk("", "Pod", &["spec", "initContainers", "volumeMounts"]).list,
            ListStrategy::MergeByKey("mountPath")
        );
        assert_eq!(
            walk(
                "batch",
                "CronJob",
                &[
                    "spec",
                    "jobTemplate",
                    "spec",
                    "template",
                    "spec",
                    "containers"
                ]
            )
            .list,
            ListStrategy::MergeByKey("name")
        );
        assert_eq!(
            walk("", "Node", &["status", "addresses"]).list,
            ListStrategy::MergeByKey("type")
        );
        assert_eq!(
            walk("", "Node", &["spec", "podCIDRs"]).list,
            ListStrategy::MergeSet
        );
        assert_eq!(
            walk("", "Endpoints", &["subsets"]).list,
            ListStrategy::Replace
        );
        assert_eq!(
            walk("", "Pod", &["status", "containerStatuses"]).list,
            ListStrategy::Replace
        );
        assert_eq!(
            walk("", "ConfigMap", &["metadata", "ownerReferences"]).list,
            ListStrategy::MergeByKey("uid")
        );
        assert!(walk("apps", "Deployment", &["spec", "selector"]).atomic);
    }
}
