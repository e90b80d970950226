//! Node-pressure eviction, a first version: every 10 s compare the node's
//! available memory and the free space of the agent's filesystem with upstream's
//! hard thresholds: upstream's defaults (`memory.available<100Mi`,
//! `nodefs.available<10%`) or `--eviction-hard` ([`Thresholds::parse`]).
//! Under pressure, evict one pod per round: BestEffort first, then Burstable,
//! then Guaranteed; lower priority first; newest first. Pods of priority
//! ≥ 2000000000 (system-critical) are never evicted. An evicted pod gets phase
//! Failed, reason `Evicted` and upstream's message, and an `Evicted` event; its
//! worker then sees the terminal phase and stops its containers.
//!
//!
//! Image garbage collection runs in the same loop, as the kubelet's image GC
//! manager: when the image filesystem is 85% full
//! ([`navarch_runtime::ImageGcPolicy`]), unused images are removed, least
//! recently used first, until it is 80% full ([`collect_images`]). Under
//! `ephemeral-storage` pressure the agent first reclaims unused images (as the
//! kubelet's node-level reclaim) and evicts a pod only if that was not enough.
//!
//! Not done: ranking by actual usage above requests (needs per-pod cgroup
//! stats), soft thresholds and grace periods, inode signals, PID pressure.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use navarch_runtime::{
    ContainerRuntime, ContainerStatus, ImageGcPolicy, ImageGcReport, ImageService, RuntimeError,
};

use crate::events::{pod_ref, EventType, Recorder};
use crate::host::HostInfo;
use crate::status::qos_class;
use crate::AgentConfig;

/// One hard threshold: a quantity of bytes or a share of the total.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Threshold {
    /// Under this many bytes available.
    Bytes(u64),
    /// Under this fraction (0.0–1.0) of the total available; `0.0` never fires.
    Fraction(f64),
}

impl Threshold {
    /// Smallest number of available bytes that does not cross it.
    pub fn min_available(&self, total: u64) -> u64 {
        match *self {
            Threshold::Bytes(b) => b,
            Threshold::Fraction(f) => (total as f64 * f) as u64,
        }
    }
}

/// Hard eviction thresholds (the kubelet's `--eviction-hard`).
#[derive(Clone, Debug, PartialEq)]
pub struct Thresholds {
    /// `memory.available` (100Mi).
    pub memory_available: Threshold,
    /// `nodefs.available`: free space of the agent's filesystem (10%).
    pub nodefs_available: Threshold,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            memory_available: Threshold::Bytes(100 << 20),
            nodefs_available: Threshold::Fraction(0.10),
        }
    }
}

/// A malformed `--eviction-hard` value.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid eviction threshold {item:?}: {reason}")]
pub struct ThresholdError {
    item: String,
    reason: String,
}

impl Thresholds {
    /// Parses upstream's flag syntax, e.g.
    /// `memory.available<100Mi,nodefs.available<10%`. Signals not named keep
    /// their defaults; `imagefs.available` is accepted and ignored (image GC
    /// has its own policy here); other signals are an error.
    pub fn parse(flag: &str) -> Result<Thresholds, ThresholdError> {
        let mut t = Thresholds::default();
        for item in flag.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let err = |reason: &str| ThresholdError {
                item: item.to_string(),
                reason: reason.to_string(),
            };
            let (signal, value) = item
                .split_once('<')
                .ok_or_else(|| err("expected <signal><<quantity> or <signal><<percent>%"))?;
            let value = parse_threshold(value.trim()).map_err(|r| err(&r))?;
            match signal.trim() {
                "memory.available" => t.memory_available = value,
                "nodefs.available" => t.nodefs_available = value,
                "imagefs.available" => {}
                _ => return Err(err(
                    "supported signals are memory.available, nodefs.available, imagefs.available",
                )),
            }
        }
        Ok(t)
    }

    /// Whether available memory is under its threshold.
    pub fn memory_pressure(&self, host: &HostInfo) -> bool {
        host.memory_bytes > 0
            && host.memory_available < self.memory_available.min_available(host.memory_bytes)
    }

    /// Whether the agent's filesystem is under its free-space threshold.
    pub fn disk_pressure(&self, host: &HostInfo) -> bool {
        host.ephemeral_bytes > 0
            && host.ephemeral_available < self.nodefs_available.min_available(host.ephemeral_bytes)
    }
}

fn parse_threshold(v: &str) -> Result<Threshold, String> {
    if let Some(pct) = v.strip_suffix('%') {
        let f: f64 = pct
            .trim()
            .parse()
            .map_err(|_| format!("{v:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&f) {
            return Err(format!("{v:?} is not between 0% and 100%"));
        }
        return Ok(Threshold::Fraction(f / 100.0));
    }
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (digits, suffix) = v.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{v:?} is not a quantity"))?;
    let mult: u64 = match suffix {
        "" => 1,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        _ => return Err(format!("{v:?} has an unknown unit")),
    };
    n.checked_mul(mult)
        .map(Threshold::Bytes)
        .ok_or_else(|| format!("{v:?} is too large"))
}

/// The resource under pressure and the eviction message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pressure {
    /// `memory` or `ephemeral-storage`.
    pub resource: &'static str,
    /// Upstream's message for the evicted pod.
    pub message: String,
}

/// Which threshold, if any, `host` crosses.
pub fn pressure(host: &HostInfo, t: &Thresholds) -> Option<Pressure> {
    if t.memory_pressure(host) {
        return Some(Pressure {
            resource: "memory",
            message: format!(
                "The node was low on resource: memory. Threshold quantity: {}Mi, available: {}Ki. ",
                t.memory_available.min_available(host.memory_bytes) >> 20,
                host.memory_available / 1024
            ),
        });
    }
    if t.disk_pressure(host) {
        return Some(Pressure {
            resource: "ephemeral-storage",
            message: format!(
                "The node was low on resource: ephemeral-storage. Threshold quantity: {}Ki, available: {}Ki. ",
                t.nodefs_available.min_available(host.ephemeral_bytes) / 1024,
                host.ephemeral_available / 1024
            ),
        });
    }
    None
}

fn qos_rank(p: &Pod) -> u8 {
    match qos_class(p).as_str() {
        "BestEffort" => 0,
        "Burstable" => 1,
        _ => 2,
    }
}

/// Eviction candidates in order: non-terminal, non-critical pods, BestEffort
/// first, then lower priority, then newest.
pub fn rank(pods: &[Pod]) -> Vec<&Pod> {
    let mut v: Vec<&Pod> = pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .filter(|p| {
            !matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded") | Some("Failed")
            )
        })
        .filter(|p| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0) < 2_000_000_000)
        .collect();
    v.sort_by(|a, b| {
        let prio = |p: &Pod| p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0);
        qos_rank(a)
            .cmp(&qos_rank(b))
            .then(prio(a).cmp(&prio(b)))
            .then(
                b.metadata
                    .creation_timestamp
                    .as_ref()
                    .map(|t| t.0)
                    .cmp(&a.metadata.creation_timestamp.as_ref().map(|t| t.0)),
            )
    });
    v
}

/// Image IDs and references of every container the runtime holds (running
/// or exited): the images garbage collection must keep.
pub fn images_in_use(containers: &[ContainerStatus]) -> HashSet<String> {
    containers
        .iter()
        .flat_map(|c| [c.image_id.clone(), c.image.clone()])
        .filter(|s| !s.is_empty())
        .collect()
}

/// One image garbage collection: how much was asked for and what was done.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGcOutcome {
    /// Bytes the collection had to free.
    pub wanted: u64,
    /// What it removed and freed.
    pub report: ImageGcReport,
}

impl ImageGcOutcome {
    /// Upstream's `ImageGCFailed` message when too little could be freed.
    pub fn failure_message(&self) -> Option<String> {
        (self.report.freed_bytes < self.wanted).then(|| {
            format!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found {} bytes eligible to free.",
                self.wanted, self.report.freed_bytes
            )
        })
    }
}

/// Free `bytes` of unused images (images of the runtime's containers are in
/// use).
pub async fn free_image_bytes(
    images: &dyn ImageService,
    runtime: &dyn ContainerRuntime,
    bytes: u64,
) -> Result<ImageGcOutcome, RuntimeError> {
    let in_use = images_in_use(&runtime.list_containers().await?);
    let report = images.garbage_collect(&in_use, bytes).await?;
    Ok(ImageGcOutcome {
        wanted: bytes,
        report,
    })
}

/// Image GC by `policy`: `None` when the image filesystem is below the high
/// threshold (or its usage is unknown), else what was freed to bring it down
/// to the low threshold.
pub async fn collect_images(
    images: &dyn ImageService,
    runtime: &dyn ContainerRuntime,
    policy: &ImageGcPolicy,
) -> Result<Option<ImageGcOutcome>, RuntimeError> {
    let Some(usage) = images.image_fs_usage().await? else {
        return Ok(None);
    };
    let Some(bytes) = policy.bytes_to_free(usage) else {
        return Ok(None);
    };
    free_image_bytes(images, runtime, bytes).await.map(Some)
}

/// Bytes to free for the `ephemeral-storage` threshold to hold again.
pub fn nodefs_shortfall(host: &HostInfo, t: &Thresholds) -> u64 {
    t.nodefs_available
        .min_available(host.ephemeral_bytes)
        .saturating_sub(host.ephemeral_available)
}

/// The Node as the object of node-level events.
fn node_ref(node: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Node".to_string()),
        name: Some(node.to_string()),
        uid: Some(node.to_string()),
        ..Default::default()
    }
}

/// After a collection that freed too little, the next threshold-driven one
/// waits this long (the kubelet's image GC period).
const IMAGE_GC_RETRY: Duration = Duration::from_secs(300);

/// Watch for pressure until the process ends; garbage-collect images on the
/// way (see the module docs).
pub async fn run(
    client: kube::Client,
    config: Arc<AgentConfig>,
    recorder: Recorder,
    images: Arc<dyn ImageService>,
    runtime: Arc<dyn ContainerRuntime>,
) {
    let t = config.eviction.clone();
    let policy = ImageGcPolicy::default();
    let mut tick = tokio::time::interval(Duration::from_secs(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_image_gc = tokio::time::Instant::now();
    let report_gc = |outcome: &ImageGcOutcome| {
        if let Some(msg) = outcome.failure_message() {
            tracing::warn!("{msg}");
            recorder.record(
                node_ref(&config.node_name),
                EventType::Warning,
                "ImageGCFailed",
                msg,
            );
        }
    };
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= next_image_gc {
            match collect_images(images.as_ref(), runtime.as_ref(), &policy).await {
                Ok(Some(outcome)) => {
                    report_gc(&outcome);
                    if outcome.failure_message().is_some() {
                        next_image_gc = tokio::time::Instant::now() + IMAGE_GC_RETRY;
                    }
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
            }
        }
        let root = config.root.clone();
        let Ok(mut host) = tokio::task::spawn_blocking(move || HostInfo::read(&root)).await else {
            continue;
        };
        let Some(mut p) = pressure(&host, &t) else {
            continue;
        };
        if p.resource == "ephemeral-storage" {
            // Node-level reclaim first: unused images.
            let wanted = nodefs_shortfall(&host, &t);
            match free_image_bytes(images.as_ref(), runtime.as_ref(), wanted).await {
                Ok(outcome) if outcome.report.freed_bytes > 0 => {
                    let root = config.root.clone();
                    if let Ok(h) = tokio::task::spawn_blocking(move || HostInfo::read(&root)).await
                    {
                        host = h;
                    }
                    match pressure(&host, &t) {
                        Some(again) => p = again,
                        None => continue,
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "image garbage collection failed"),
            }
        }
        let api: Api<Pod> = Api::all(client.clone());
        let lp = ListParams::default().fields(&format!("spec.nodeName={}", config.node_name));
        let pods = match api.list(&lp).await {
            Ok(l) => l.items,
            Err(e) => {
                tracing::warn!(error = %e, "eviction: listing pods failed");
                continue;
            }
        };
        let Some(victim) = rank(&pods).into_iter().next() else {
            continue;
        };
        let ns = victim.metadata.namespace.clone().unwrap_or_default();
        let name = victim.metadata.name.clone().unwrap_or_default();
        tracing::warn!(pod = %format!("{ns}/{name}"), resource = p.resource, "evicting pod under node pressure");
        recorder.record(
            pod_ref(victim, None),
            EventType::Warning,
            "Evicted",
            p.message.clone(),
        );
        let patch = serde_json::json!({"status": {
            "phase": "Failed",
            "reason": "Evicted",
            "message": p.message,
        }});
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        if let Err(e) = api
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            tracing::warn!(error = %e, "eviction: status update failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, ResourceRequirements};
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

    fn host(mem_avail: u64, disk_avail: u64) -> HostInfo {
        let mut h = HostInfo::read(std::path::Path::new("/"));
        h.memory_bytes = 8 << 30;
        h.memory_available = mem_avail;
        h.ephemeral_bytes = 100 << 30;
        h.ephemeral_available = disk_avail;
        h
    }

    #[test]
    fn parses_the_flag_like_the_kubelet() {
        let t = Thresholds::parse("memory.available<1Gi, nodefs.available<5%").unwrap();
        assert_eq!(t.memory_available, Threshold::Bytes(1 << 30));
        assert_eq!(t.nodefs_available, Threshold::Fraction(0.05));
        let t = Thresholds::parse("nodefs.available<0%,imagefs.available<0%").unwrap();
        assert_eq!(t.memory_available, Threshold::Bytes(100 << 20));
        assert!(!t.disk_pressure(&host(1 << 30, 0)));
        let t = Thresholds::parse("memory.available<10%").unwrap();
        assert!(t.memory_pressure(&host(500 << 20, 50 << 30)));
        assert!(!t.memory_pressure(&host(1 << 30, 50 << 30)));
        for bad in [
            "memory.available",
            "memory.available<lots",
            "nodefs.available<120%",
            "pid.available<10",
            "memory.available<5Xi",
            "memory.available<99999999999999999999Ti",
        ] {
            let e = Thresholds::parse(bad).unwrap_err();
            assert!(
                e.to_string().contains(bad.split(',').next().unwrap_or(bad)),
                "{e}"
            );
        }
        assert_eq!(Thresholds::parse("").unwrap(), Thresholds::default());
    }

    #[test]
    fn detects_pressure() {
        let t = Thresholds::default();
        assert_eq!(pressure(&host(1 << 30, 50 << 30), &t), None);
        let p = pressure(&host(50 << 20, 50 << 30), &t).unwrap();
        assert_eq!(p.resource, "memory");
        assert!(p.message.starts_with(
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki."
        ));
        let p = pressure(&host(1 << 30, 5 << 30), &t).unwrap();
        assert_eq!(p.resource, "ephemeral-storage");
    }

    fn pod(name: &str, limits: bool, priority: i32) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some(name.into());
        let res = limits.then(|| ResourceRequirements {
            limits: Some(
                [
                    ("cpu".to_string(), Quantity("1".into())),
                    ("memory".to_string(), Quantity("1Gi".into())),
                ]
                .into(),
            ),
            ..Default::default()
        });
        p.spec = Some(PodSpec {
            priority: Some(priority),
            containers: vec![Container {
                name: "c".into(),
                resources: res,
                ..Default::default()
            }],
            ..Default::default()
        });
        p
    }

    #[test]
    fn ranks_best_effort_first_and_spares_critical_pods() {
        let pods = vec![
            pod("guaranteed", true, 0),
            pod("critical", false, 2_000_001_000),
            pod("besteffort-high", false, 100),
            pod("besteffort", false, 0),
        ];
        let names: Vec<_> = rank(&pods)
            .into_iter()
            .map(|p| p.metadata.name.clone().unwrap_or_default())
            .collect();
        assert_eq!(names, vec!["besteffort", "besteffort-high", "guaranteed"]);
    }

    /// An image service whose filesystem usage is injected and whose garbage
    /// collections are recorded (each frees `frees` bytes).
    struct FakeImages {
        usage: Option<navarch_runtime::FsUsage>,
        frees: u64,
        calls: parking_lot::Mutex<Vec<(HashSet<String>, u64)>>,
    }

    #[async_trait::async_trait]
    impl ImageService for FakeImages {
        async fn pull(
            &self,
            r: &str,
            _: &std::collections::BTreeMap<String, navarch_runtime::RegistryAuth>,
            _: Option<&(dyn Fn(navarch_runtime::PullProgress) + Send + Sync)>,
        ) -> navarch_runtime::Result<navarch_runtime::Image> {
            Err(RuntimeError::InvalidReference(r.into()))
        }
        async fn get(&self, _: &str) -> navarch_runtime::Result<Option<navarch_runtime::Image>> {
            Ok(None)
        }
        async fn import(
            &self,
            _: &std::path::Path,
        ) -> navarch_runtime::Result<Vec<navarch_runtime::Image>> {
            Ok(Vec::new())
        }
        async fn list(&self) -> navarch_runtime::Result<Vec<navarch_runtime::Image>> {
            Ok(Vec::new())
        }
        async fn remove(&self, _: &str) -> navarch_runtime::Result<()> {
            Ok(())
        }
        async fn image_fs_usage(
            &self,
        ) -> navarch_runtime::Result<Option<navarch_runtime::FsUsage>> {
            Ok(self.usage)
        }
        async fn garbage_collect(
            &self,
            in_use: &HashSet<String>,
            bytes: u64,
        ) -> navarch_runtime::Result<ImageGcReport> {
            self.calls.lock().push((in_use.clone(), bytes));
            Ok(ImageGcReport {
                removed: vec!["sha256:old".into()],
                freed_bytes: self.frees,
            })
        }
    }

    fn images(capacity: u64, available: u64, frees: u64) -> FakeImages {
        FakeImages {
            usage: Some(navarch_runtime::FsUsage {
                capacity_bytes: capacity,
                available_bytes: available,
            }),
            frees,
            calls: Default::default(),
        }
    }

    #[tokio::test]
    async fn image_gc_follows_the_image_filesystem_thresholds() {
        let rt = crate::testrt::FakeRuntime::new(true);
        let policy = ImageGcPolicy::default();
        let gib = 1u64 << 30;
        // 84% full: nothing happens.
        let below = images(100 * gib, 16 * gib, 0);
        assert_eq!(
            collect_images(&below, rt.as_ref(), &policy).await.unwrap(),
            None
        );
        assert!(below.calls.lock().is_empty());
        // Unknown usage: nothing either.
        let unknown = FakeImages {
            usage: None,
            ..images(0, 0, 0)
        };
        assert_eq!(
            collect_images(&unknown, rt.as_ref(), &policy)
                .await
                .unwrap(),
            None
        );
        // 90% full: free down to 80%, i.e. 10 GiB.
        let above = images(100 * gib, 10 * gib, 10 * gib);
        let outcome = collect_images(&above, rt.as_ref(), &policy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome.wanted, 10 * gib);
        assert_eq!(outcome.report.freed_bytes, 10 * gib);
        assert_eq!(outcome.failure_message(), None);
        assert_eq!(above.calls.lock().as_slice(), &[(HashSet::new(), 10 * gib)]);
        // Too little eligible: upstream's ImageGCFailed message.
        let stuck = images(100 * gib, 0, 5);
        let outcome = collect_images(&stuck, rt.as_ref(), &policy)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            outcome.failure_message().unwrap(),
            format!(
                "Failed to garbage collect required amount of images. Attempted to free {} bytes, but only found 5 bytes eligible to free.",
                20 * gib
            )
        );
    }

    #[test]
    fn images_of_all_containers_are_in_use() {
        let status = |image: &str, image_id: &str| ContainerStatus {
            id: "c".into(),
            sandbox_id: "s".into(),
            name: "n".into(),
            attempt: 0,
            image: image.into(),
            image_id: image_id.into(),
            state: navarch_runtime::ContainerState::Unknown,
            created_at: chrono::Utc::now(),
            started_at: None,
            pid: None,
            log_path: "/x".into(),
            labels: Default::default(),
        };
        let used = images_in_use(&[status("sha256:a", "sha256:a"), status("busybox", "")]);
        let want: HashSet<String> = ["sha256:a".to_string(), "busybox".to_string()].into();
        assert_eq!(used, want);
    }

    #[test]
    fn nodefs_shortfall_is_what_the_threshold_needs() {
        let t = Thresholds::default();
        assert_eq!(nodefs_shortfall(&host(1 << 30, 50 << 30), &t), 0);
        let h = host(1 << 30, 4 << 30);
        assert_eq!(nodefs_shortfall(&h, &t), (10u64 << 30) - (4 << 30));
        assert_eq!(node_ref("n1").kind.as_deref(), Some("Node"));
    }
}
