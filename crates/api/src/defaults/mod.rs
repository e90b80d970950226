//! Per-kind defaulting (upstream `SetDefaults_*`, plus the create-time
//! strategy and admission defaults that every real cluster applies).
//!
//! [`apply`] is idempotent and tolerates missing or oddly shaped parts (a
//! missing `spec`, a null list): it fills what it can and leaves the rest to
//! validation.

mod other;
mod pod;
mod workloads;

#[cfg(test)]
mod tests;

use serde_json::Value;

use crate::catalog::ResourceType;

/// Label on a Job's pods (and its selector) holding the Job's uid.
pub const JOB_CONTROLLER_UID_LABEL: &str = "batch.kubernetes.io/controller-uid";
/// Label on a Job's pods holding the Job's name.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
/// Legacy form of [`JOB_CONTROLLER_UID_LABEL`], still set upstream.
pub const LEGACY_JOB_CONTROLLER_UID_LABEL: &str = "controller-uid";
/// Legacy form of [`JOB_NAME_LABEL`], still set upstream.
pub const LEGACY_JOB_NAME_LABEL: &str = "job-name";

/// Fill in the defaults of an object of type `rt`, in place.
///
/// Objects that are not JSON objects are left alone (the type check rejects them
/// before this is called).
pub fn apply(rt: &ResourceType, obj: &mut Value) {
    if !obj.is_object() {
        return;
    }
    match (rt.group, rt.kind) {
        ("", "Pod") => pod::default_pod(obj),
        ("", "PodTemplate") => {
            if let Some(t) = obj.get_mut("template").filter(|t| t.is_object()) {
                pod::default_pod_template(t);
            }
        }
        ("", "ReplicationController") => workloads::default_replication_controller(obj),
        ("apps", "Deployment") => workloads::default_deployment(obj),
        ("apps", "ReplicaSet") => workloads::default_replica_set(obj),
        ("apps", "StatefulSet") => workloads::default_stateful_set(obj),
        ("apps", "DaemonSet") => workloads::default_daemon_set(obj),
        ("batch", "Job") => workloads::default_job(obj),
        ("batch", "CronJob") => workloads::default_cron_job(obj),
        ("", "Service") => other::default_service(obj),
        ("", "Namespace") => other::default_namespace(obj),
        ("", "Secret") => other::default_secret(obj),
        ("", "Node") => other::default_node(obj),
        ("", "PersistentVolume") => other::default_pv(obj),
        ("", "PersistentVolumeClaim") => other::default_pvc(obj),
        ("", "Endpoints") => other::default_endpoints(obj),
        ("", "LimitRange") => other::default_limit_range(obj),
        ("", "Event") => other::default_core_event(obj),
        ("discovery.k8s.io", "EndpointSlice") => other::default_endpoint_slice(obj),
        ("autoscaling", "HorizontalPodAutoscaler") => other::default_hpa(obj),
        ("networking.k8s.io", "NetworkPolicy") => other::default_network_policy(obj),
        ("storage.k8s.io", "StorageClass") => other::default_storage_class(obj),
        ("scheduling.k8s.io", "PriorityClass") => other::default_priority_class(obj),
        ("rbac.authorization.k8s.io", "RoleBinding" | "ClusterRoleBinding") => {
            other::default_binding(obj)
        }
        ("apiextensions.k8s.io", "CustomResourceDefinition") => other::default_crd(obj),
        _ => {}
    }
}
