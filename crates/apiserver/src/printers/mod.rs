//! Server-side printing: the `columnDefinitions` and row `cells` of a
//! `meta.k8s.io/v1` Table for every kind in the catalog.
//!
//! `kubectl get` asks for `application/json;as=Table;v=v1;g=meta.k8s.io` and
//! prints whatever columns the server sends. The columns, priorities and cell
//! formats here follow upstream's printers (`pkg/printers/internalversion`):
//! the column names are upstream's wire names ("Name", "Ready", "Nominated
//! Node"; kubectl upper-cases them when printing), and, as on the real server,
//! every row carries the cells of the `priority: 1` (wide) columns too.
//!
//! Kinds without a specific printer (roles, cluster roles, limit ranges,
//! custom resource definitions, ...) get upstream's default table: `Name` and
//! `Created At`.
//!
//! Printers work on the JSON of the stored object and never fail: missing or
//! malformed fields print as upstream prints the zero value.

mod apps;
mod batch;
mod core;
mod duration;
mod event;
mod json;
mod misc;
mod pod;

#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use navarch_api::catalog::ResourceType;
use serde_json::Value;

pub use duration::human_duration;

/// One column of a Table, as upstream's `TableColumnDefinition`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Upstream's column name, e.g. "Name", "Nominated Node".
    pub name: &'static str,
    /// OpenAPI type of the cells: string, integer, number, boolean or date.
    pub type_: &'static str,
    /// "name" for the column holding the object name, "" otherwise.
    pub format: &'static str,
    /// Human-readable description of the column.
    pub description: &'static str,
    /// 0: always shown; 1: only with `-o wide`.
    pub priority: i32,
}

/// Description of the name column (ObjectMeta.name).
pub(crate) const NAME_DESC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";

/// Description of the age / created-at column (ObjectMeta.creationTimestamp).
pub(crate) const CREATED_DESC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

/// A column always shown.
pub(crate) const fn col(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 0,
    }
}

/// A column shown only with `-o wide`.
pub(crate) const fn wide(
    name: &'static str,
    type_: &'static str,
    description: &'static str,
) -> Column {
    Column {
        name,
        type_,
        format: "",
        description,
        priority: 1,
    }
}

/// The `Name` column every printer starts with.
pub(crate) const NAME: Column = Column {
    name: "Name",
    type_: "string",
    format: "name",
    description: NAME_DESC,
    priority: 0,
};

/// The `Age` column.
pub(crate) const AGE: Column = col("Age", "string", CREATED_DESC);

/// Shared wide columns of workload printers.
pub(crate) const CONTAINERS: Column = wide(
    "Containers",
    "string",
    "Names of each container in the template.",
);
pub(crate) const IMAGES: Column = wide(
    "Images",
    "string",
    "Images referenced by each container in the template.",
);

/// Upstream's default table for kinds without a printer.
const DEFAULT_COLUMNS: &[Column] = &[NAME, col("Created At", "date", CREATED_DESC)];

/// Which printer handles a resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Printer {
    Pod,
    PodTemplate,
    ReplicationController,
    Node,
    Namespace,
    Service,
    Endpoints,
    ConfigMap,
    Secret,
    ServiceAccount,
    Event,
    ResourceQuota,
    PersistentVolume,
    PersistentVolumeClaim,
    Deployment,
    ReplicaSet,
    StatefulSet,
    DaemonSet,
    ControllerRevision,
    Job,
    CronJob,
    Lease,
    HorizontalPodAutoscaler,
    Ingress,
    IngressClass,
    NetworkPolicy,
    EndpointSlice,
    StorageClass,
    PodDisruptionBudget,
    PriorityClass,
    RoleBinding,
    /// Upstream's default table: Name, Created At.
    Default,
}

impl Printer {
    fn for_type(group: &str, kind: &str) -> Printer {
        match (group, kind) {
            ("", "Pod") => Printer::Pod,
            ("", "PodTemplate") => Printer::PodTemplate,
            ("", "ReplicationController") => Printer::ReplicationController,
            ("", "Node") => Printer::Node,
            ("", "Namespace") => Printer::Namespace,
            ("", "Service") => Printer::Service,
            ("", "Endpoints") => Printer::Endpoints,
            ("", "ConfigMap") => Printer::ConfigMap,
            ("", "Secret") => Printer::Secret,
            ("", "ServiceAccount") => Printer::ServiceAccount,
            ("" | "events.k8s.io", "Event") => Printer::Event,
            ("", "ResourceQuota") => Printer::ResourceQuota,
            ("", "PersistentVolume") => Printer::PersistentVolume,
            ("", "PersistentVolumeClaim") => Printer::PersistentVolumeClaim,
            ("apps", "Deployment") => Printer::Deployment,
            ("apps", "ReplicaSet") => Printer::ReplicaSet,
            ("apps", "StatefulSet") => Printer::StatefulSet,
            ("apps", "DaemonSet") => Printer::DaemonSet,
            ("apps", "ControllerRevision") => Printer::ControllerRevision,
            ("batch", "Job") => Printer::Job,
            ("batch", "CronJob") => Printer::CronJob,
            ("coordination.k8s.io", "Lease") => Printer::Lease,
            ("autoscaling", "HorizontalPodAutoscaler") => Printer::HorizontalPodAutoscaler,
            ("networking.k8s.io", "Ingress") => Printer::Ingress,
            ("networking.k8s.io", "IngressClass") => Printer::IngressClass,
            ("networking.k8s.io", "NetworkPolicy") => Printer::NetworkPolicy,
            ("discovery.k8s.io", "EndpointSlice") => Printer::EndpointSlice,
            ("storage.k8s.io", "StorageClass") => Printer::StorageClass,
            ("policy", "PodDisruptionBudget") => Printer::PodDisruptionBudget,
            ("scheduling.k8s.io", "PriorityClass") => Printer::PriorityClass,
            ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
                Printer::RoleBinding
            }
            _ => Printer::Default,
        }
    }

    fn columns(self) -> &'static [Column] {
        match self {
            Printer::Pod => pod::COLUMNS,
            Printer::PodTemplate => core::POD_TEMPLATE_COLUMNS,
            Printer::ReplicationController => core::REPLICATION_CONTROLLER_COLUMNS,
            Printer::Node => core::NODE_COLUMNS,
            Printer::Namespace => core::NAMESPACE_COLUMNS,
            Printer::Service => core::SERVICE_COLUMNS,
            Printer::Endpoints => core::ENDPOINTS_COLUMNS,
            Printer::ConfigMap => core::CONFIG_MAP_COLUMNS,
            Printer::Secret => core::SECRET_COLUMNS,
            Printer::ServiceAccount => core::SERVICE_ACCOUNT_COLUMNS,
            Printer::Event => event::COLUMNS,
            Printer::ResourceQuota => core::RESOURCE_QUOTA_COLUMNS,
            Printer::PersistentVolume => core::PERSISTENT_VOLUME_COLUMNS,
            Printer::PersistentVolumeClaim => core::PERSISTENT_VOLUME_CLAIM_COLUMNS,
            Printer::Deployment => apps::DEPLOYMENT_COLUMNS,
            Printer::ReplicaSet => apps::REPLICA_SET_COLUMNS,
            Printer::StatefulSet => apps::STATEFUL_SET_COLUMNS,
            Printer::DaemonSet => apps::DAEMON_SET_COLUMNS,
            Printer::ControllerRevision => apps::CONTROLLER_REVISION_COLUMNS,
            Printer::Job => batch::JOB_COLUMNS,
            Printer::CronJob => batch::CRON_JOB_COLUMNS,
            Printer::Lease => misc::LEASE_COLUMNS,
            Printer::HorizontalPodAutoscaler => misc::HPA_COLUMNS,
            Printer::Ingress => misc::INGRESS_COLUMNS,
            Printer::IngressClass => misc::INGRESS_CLASS_COLUMNS,
            Printer::NetworkPolicy => misc::NETWORK_POLICY_COLUMNS,
            Printer::EndpointSlice => misc::ENDPOINT_SLICE_COLUMNS,
            Printer::StorageClass => misc::STORAGE_CLASS_COLUMNS,
            Printer::PodDisruptionBudget => misc::PDB_COLUMNS,
            Printer::PriorityClass => misc::PRIORITY_CLASS_COLUMNS,
            Printer::RoleBinding => misc::ROLE_BINDING_COLUMNS,
            Printer::Default => DEFAULT_COLUMNS,
        }
    }

    fn cells(self, group: &str, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
        match self {
            Printer::Pod => pod::cells(obj, now),
            Printer::PodTemplate => core::pod_template_cells(obj),
            Printer::ReplicationController => core::replication_controller_cells(obj, now),
            Printer::Node => core::node_cells(obj, now),
            Printer::Namespace => core::namespace_cells(obj, now),
            Printer::Service => core::service_cells(obj, now),
            Printer::Endpoints => core::endpoints_cells(obj, now),
            Printer::ConfigMap => core::config_map_cells(obj, now),
            Printer::Secret => core::secret_cells(obj, now),
            Printer::ServiceAccount => core::service_account_cells(obj, now),
            Printer::Event => event::cells(group, obj, now),
            Printer::ResourceQuota => core::resource_quota_cells(obj, now),
            Printer::PersistentVolume => core::persistent_volume_cells(obj, now),
            Printer::PersistentVolumeClaim => core::persistent_volume_claim_cells(obj, now),
            Printer::Deployment => apps::deployment_cells(obj, now),
            Printer::ReplicaSet => apps::replica_set_cells(obj, now),
            Printer::StatefulSet => apps::stateful_set_cells(obj, now),
            Printer::DaemonSet => apps::daemon_set_cells(obj, now),
            Printer::ControllerRevision => apps::controller_revision_cells(obj, now),
            Printer::Job => batch::job_cells(obj, now),
            Printer::CronJob => batch::cron_job_cells(obj, now),
            Printer::Lease => misc::lease_cells(obj, now),
            Printer::HorizontalPodAutoscaler => misc::hpa_cells(obj, now),
            Printer::Ingress => misc::ingress_cells(obj, now),
            Printer::IngressClass => misc::ingress_class_cells(obj, now),
            Printer::NetworkPolicy => misc::network_policy_cells(obj, now),
            Printer::EndpointSlice => misc::endpoint_slice_cells(obj, now),
            Printer::StorageClass => misc::storage_class_cells(obj, now),
            Printer::PodDisruptionBudget => misc::pdb_cells(obj, now),
            Printer::PriorityClass => misc::priority_class_cells(obj, now),
            Printer::RoleBinding => misc::role_binding_cells(obj, now),
            Printer::Default => default_cells(obj),
        }
    }
}

/// The columns of a Table of `rt`, in order, wide ones included.
pub fn columns(rt: &ResourceType) -> Vec<Column> {
    Printer::for_type(rt.group, rt.kind).columns().to_vec()
}

/// The cells of one row for `obj` (an object of type `rt`), one per column of
/// [`columns`]. `now` is the reference time for ages and durations.
pub fn cells(rt: &ResourceType, obj: &Value, now: DateTime<Utc>) -> Vec<Value> {
    Printer::for_type(rt.group, rt.kind).cells(rt.group, obj, now)
}

/// The `columnDefinitions` array of a Table of `rt`, as the wire wants it.
pub fn column_definitions_json(rt: &ResourceType) -> Value {
    Value::Array(
        columns(rt)
            .iter()
            .map(|c| {
                serde_json::json!({
                    "name": c.name,
                    "type": c.type_,
                    "format": c.format,
                    "description": c.description,
                    "priority": c.priority,
                })
            })
            .collect(),
    )
}

/// Upstream's `conditions` of a Table row, if any: pods that succeeded or
/// failed carry a `Completed` condition (kubectl uses it to tell finished
/// pods apart). `None` for every other kind and state.
pub fn row_conditions(rt: &ResourceType, obj: &Value) -> Option<Value> {
    match Printer::for_type(rt.group, rt.kind) {
        Printer::Pod => pod::row_conditions(obj),
        _ => None,
    }
}

/// Cells of upstream's default table: the name and the creation timestamp
/// in RFC 3339 (the zero time when it is missing, as upstream).
fn default_cells(obj: &Value) -> Vec<Value> {
    let created = json::timestamp(obj, "/metadata/creationTimestamp")
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| "0001-01-01T00:00:00Z".to_string());
    vec![json::name(obj), Value::from(created)]
}
