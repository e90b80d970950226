//! Labels the agent puts on sandboxes and containers, so it can find (and
//! re-adopt) them after a restart.

/// Pod UID.
pub const POD_UID: &str = "io.kubernetes.pod.uid";
/// Pod name.
pub const POD_NAME: &str = "io.kubernetes.pod.name";
/// Pod namespace.
pub const POD_NAMESPACE: &str = "io.kubernetes.pod.namespace";
/// Container name within the pod.
pub const CONTAINER_NAME: &str = "io.kubernetes.container.name";
/// Restart attempt.
pub const ATTEMPT: &str = "io.kubernetes.container.attempt";
/// `init` for init containers, `app` otherwise.
pub const CONTAINER_KIND: &str = "io.navarch.container.kind";
