//! One pod's sync: level-triggered, run by the pod's own worker (so never two
//! at once for one pod). Each call looks at the pod spec and at what the runtime
//! has, does the next steps (sandbox, volumes, init containers in order, then
//! app containers; restarts with back-off), and writes the status if it changed.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{Api, DeleteParams, Patch, PatchParams, Preconditions};
use navarch_runtime::{
    ContainerConfig, ContainerRuntime, ContainerState, ContainerStatus, ImageService, Mount,
    PodCgroupLimits, RegistryAuth, Resources, Sandbox, SandboxConfig,
};

use crate::backoff::{go_duration, Backoff};
use crate::env::{CachedSource, NodeAllocatable};
use crate::events::{container_field_path, pod_ref, EventType, Recorder};
use crate::handlers::Target;
use crate::hooks::{self, Hook};
use crate::labels;
use crate::probes;
use crate::status::{effective_state, pod_status, ContainerView, StatusInput};
use crate::volumes::{self, PodDir};
use crate::AgentConfig;

/// Pod networking, for a network plugin: given the pod and its sandbox, set up
/// the network and return the pod's IPs. Without a plugin the pod reports the
/// host's IP.
#[async_trait::async_trait]
pub trait NetworkPlugin: Send + Sync + 'static {
    /// Set up the sandbox's network; returns the pod IPs.
    async fn setup(&self, pod: &Pod, sandbox: &Sandbox) -> Result<Vec<String>, String>;
    /// Tear it down (best effort).
    async fn teardown(&self, pod_uid: &str, sandbox: &Sandbox);
    /// The service environment variables (`WEB_SERVICE_HOST`, ...) of a
    /// container of `pod` starting now; the container's own `env` wins over
    /// them. None by default.
    async fn service_env(&self, _pod: &Pod) -> Vec<(String, String)> {
        Vec::new()
    }
}

/// Everything a sync needs; shared by all workers.
pub struct Context {
    /// API client.
    pub client: kube::Client,
    /// Agent configuration.
    pub config: Arc<AgentConfig>,
    /// Images.
    pub images: Arc<dyn ImageService>,
    /// Containers.
    pub runtime: Arc<dyn ContainerRuntime>,
    /// Event sender.
    pub recorder: Recorder,
    /// The node's IP (hostIP of every pod).
    pub node_ip: String,
    /// The network plugin (`None`: pods get the host's IP).
    pub network: Option<Arc<dyn NetworkPlugin>>,
    /// Node allocatable, for resourceFieldRef without limits.
    pub allocatable: NodeAllocatable,
}

/// Per-pod state kept by its worker between syncs (all of it can be rebuilt from
/// the runtime and the API, except back-off timers).
#[derive(Default)]
pub struct PodState {
    sandbox: Option<Sandbox>,
    pod_ips: Vec<String>,
    start_time: Option<Time>,
    waiting: HashMap<String, (String, String)>,
    start_errors: HashMap<String, String>,
    crash_backoff: Backoff,
    pull_backoff: Backoff,
    failed: Option<(String, String)>,
    /// image (as given to the runtime) → imageID reported (repo digest).
    image_ids: HashMap<String, String>,
    last_status: Option<serde_json::Value>,
    terminated: bool,
    /// Probe tasks of the pod's running containers.
    probes: crate::probes::PodProbes,
}

impl PodState {
    /// Wake `poke` (the pod worker) when a probe result changes.
    pub fn set_waker(&mut self, poke: Arc<tokio::sync::Notify>) {
        self.probes.set_waker(poke);
    }
}

/// What the worker should do after a sync.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Wait for the next event (or a runtime change).
    Idle,
    /// Sync again at this instant even without events (back-off ends, retry).
    At(Instant),
}

fn label_map(pod: &Pod) -> BTreeMap<String, String> {
    let mut l = BTreeMap::new();
    l.insert(
        labels::POD_UID.to_string(),
        pod.metadata.uid.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAME.to_string(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    l.insert(
        labels::POD_NAMESPACE.to_string(),
        pod.metadata.namespace.clone().unwrap_or_default(),
    );
    l
}

/// Hash of a container spec: a change restarts the container.
fn spec_hash(c: &Container) -> String {
    let s = serde_json::to_string(c).unwrap_or_default();
    format!("{:08x}", crc32(s.as_bytes()))
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xffff_ffffu32;
    for b in data {
        crc ^= u32::from(*b);
        for _ in 0..8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xedb8_8320 & mask);
        }
    }
    !crc
}

const HASH_LABEL: &str = "io.navarch.container.hash";
/// How soon a pod whose network setup failed (e.g. no free pod IP) is retried.
const NETWORK_RETRY: Duration = Duration::from_secs(3);

fn pod_full_name(pod: &Pod) -> String {
    format!(
        "{}_{}({})",
        pod.metadata.name.as_deref().unwrap_or(""),
        pod.metadata.namespace.as_deref().unwrap_or(""),
        pod.metadata.uid.as_deref().unwrap_or("")
    )
}

/// The runtime containers of pod `uid`, grouped by container name, newest attempt
/// first.
pub fn group_containers(
    all: &[ContainerStatus],
    uid: &str,
) -> HashMap<String, Vec<ContainerStatus>> {
    let mut m: HashMap<String, Vec<ContainerStatus>> = HashMap::new();
    for c in all {
        if c.labels.get(labels::POD_UID).map(String::as_str) == Some(uid) {
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_else(|| c.name.clone());
            m.entry(name).or_default().push(c.clone());
        }
    }
    for v in m.values_mut() {
        v.sort_by(|a, b| {
            b.attempt
                .cmp(&a.attempt)
                .then(b.created_at.cmp(&a.created_at))
        });
    }
    m
}

fn go_secs(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 {
        let s = format!("{:.3}", d.as_secs_f64());
        format!("{}s", s.trim_end_matches('0').trim_end_matches('.'))
    } else {
        format!("{ms}ms")
    }
}

/// Registry credentials from the pod's imagePullSecrets
/// (`kubernetes.io/dockerconfigjson` and legacy `kubernetes.io/dockercfg`).
pub fn registry_auth(secrets: &[Secret]) -> BTreeMap<String, RegistryAuth> {
    let mut out = BTreeMap::new();
    for s in secrets {
        let data = crate::env::secret_data(s);
        let (json, nested) = match s.type_.as_deref() {
            Some("kubernetes.io/dockerconfigjson") => (data.get(".dockerconfigjson"), true),
            Some("kubernetes.io/dockercfg") => (data.get(".dockercfg"), false),
            _ => (None, false),
        };
        let Some(v) = json.and_then(|j| serde_json::from_slice::<serde_json::Value>(j).ok()) else {
            continue;
        };
        let auths = if nested {
            v.get("auths").cloned()
        } else {
            Some(v)
        };
        let Some(serde_json::Value::Object(auths)) = auths else {
            continue;
        };
        for (registry, a) in auths {
            let str_of = |k: &str| a.get(k).and_then(|x| x.as_str()).map(str::to_string);
            let mut auth = RegistryAuth {
                username: str_of("username"),
                password: str_of("password"),
                identity_token: str_of("identitytoken"),
            };
            if auth.username.is_none() {
                if let Some(encoded) = str_of("auth") {
                    use base64::Engine;
                    if let Ok(dec) = base64::engine::general_purpose::STANDARD.decode(encoded) {
                        let dec = String::from_utf8_lossy(&dec).to_string();
                        if let Some((u, p)) = dec.split_once(':') {
                            auth.username = Some(u.to_string());
                            auth.password = Some(p.to_string());
                        }
                    }
                }
            }
            let host = registry
                .trim_start_matches("https://")
                .trim_start_matches("http://")
                .split('/')
                .next()
                .unwrap_or_default()
                .to_string();
            out.insert(host, auth);
        }
    }
    out
}

fn milli(q: Option<&k8s_openapi::apimachinery::pkg::api::resource::Quantity>) -> Option<i128> {
    q.and_then(|q| navarch_api::validation::parse_quantity(&q.0).ok())
        .map(|n| n / 1_000_000)
}

/// cgroup resources of a container (shares from requests.cpu, quota from
/// limits.cpu, memory limit).
pub fn resources(c: &Container) -> Resources {
    let r = c.resources.clone().unwrap_or_default();
    let req = r.requests.unwrap_or_default();
    let lim = r.limits.unwrap_or_default();
    let cpu_req = milli(req.get("cpu")).or(milli(lim.get("cpu")));
    let cpu_lim = milli(lim.get("cpu"));
    let mem = lim
        .get("memory")
        .and_then(|q| navarch_api::validation::parse_quantity(&q.0).ok())
        .map(|n| (n / 1_000_000_000) as i64);
    Resources {
        cpu_shares: Some(
            cpu_req
                .map(|m| ((m * 1024) / 1000).max(2) as u64)
                .unwrap_or(2),
        ),
        cpu_quota: cpu_lim.map(|m| ((m * 100_000) / 1000).max(1000) as i64),
        cpu_period: cpu_lim.map(|_| 100_000),
        memory_limit: mem,
        pids_limit: None,
    }
}

/// The repo digest to report as a container's imageID: the one of the
/// repository the container names (an image pulled under two names has a
/// digest per name), else the first.
pub fn repo_digest_for(image: &str, repo_digests: &[String]) -> Option<String> {
    let name = navarch_runtime::ImageReference::parse(image)
        .map(|r| r.name())
        .ok();
    name.and_then(|n| {
        repo_digests
            .iter()
            .find(|d| d.split('@').next() == Some(n.as_str()))
            .cloned()
    })
    .or_else(|| repo_digests.first().cloned())
}

/// The pod cgroup's memory limit, as upstream: only when every container has
/// a memory limit, the larger of the sum over the app containers (sidecars
/// included) and the largest init container's.
pub fn pod_memory_limit(spec: &k8s_openapi::api::core::v1::PodSpec) -> Option<i64> {
    let limit = |c: &Container| resources(c).memory_limit;
    let init = spec.init_containers.as_deref().unwrap_or_default();
    let sidecar = |c: &&Container| c.restart_policy.as_deref() == Some("Always");
    let mut sum = 0i64;
    for c in spec.containers.iter().chain(init.iter().filter(sidecar)) {
        sum = sum.checked_add(limit(c)?)?;
    }
    let mut max_init = 0i64;
    for c in init.iter().filter(|c| !sidecar(c)) {
        max_init = max_init.max(limit(c)?);
    }
    Some(sum.max(max_init))
}

impl Context {
    fn pod_api(&self, pod: &Pod) -> Api<Pod> {
        Api::namespaced(
            self.client.clone(),
            pod.metadata.namespace.as_deref().unwrap_or("default"),
        )
    }

    fn event(&self, pod: &Pod, field: Option<String>, t: EventType, reason: &str, msg: String) {
        self.recorder.record(pod_ref(pod, field), t, reason, msg);
    }

    /// Sync `pod` (`None`: the pod is gone from the API; clean up `uid`).
    pub async fn sync(&self, uid: &str, pod: Option<&Pod>, st: &mut PodState) -> Next {
        match pod {
            None => {
                if self.cleanup(uid, None, Duration::from_secs(2), st).await {
                    Next::Idle
                } else {
                    Next::At(Instant::now() + Duration::from_secs(2))
                }
            }
            Some(p) if p.metadata.deletion_timestamp.is_some() => self.terminate(uid, p, st).await,
            Some(p) => self.sync_running(uid, p, st).await,
        }
    }

    async fn terminate(&self, uid: &str, pod: &Pod, st: &mut PodState) -> Next {
        let grace = pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| {
                pod.spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30)
            .max(0) as u64;
        if !st.terminated
            && !self
                .cleanup(uid, Some(pod), Duration::from_secs(grace), st)
                .await
        {
            return Next::At(Instant::now() + Duration::from_secs(2));
        }
        let dp = DeleteParams {
            grace_period_seconds: Some(0),
            preconditions: Some(Preconditions {
                uid: Some(uid.to_string()),
                resource_version: None,
            }),
            ..Default::default()
        };
        let name = pod.metadata.name.clone().unwrap_or_default();
        match self.pod_api(pod).delete(&name, &dp).await {
            Ok(_) => Next::Idle,
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => Next::Idle,
            Err(e) => {
                tracing::warn!(pod = %name, error = %e, "deleting the pod object failed; retrying");
                Next::At(Instant::now() + Duration::from_secs(1))
            }
        }
    }

    /// Stop and remove everything of pod `uid` (containers, sandbox, volumes);
    /// `false` if the runtime could not say what it holds (retry later).
    pub async fn cleanup(
        &self,
        uid: &str,
        pod: Option<&Pod>,
        grace: Duration,
        st: &mut PodState,
    ) -> bool {
        let all = match self.runtime.list_containers().await {
            Ok(all) => all,
            Err(e) => {
                tracing::warn!(pod_uid = uid, error = %e, "listing containers failed");
                return false;
            }
        };
        let groups = group_containers(&all, uid);
        let target = self.target(None, st);
        let sidecars: std::collections::HashSet<&str> = pod
            .and_then(|p| p.spec.as_ref())
            .map(|s| {
                s.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| is_sidecar(c))
                    .map(|c| c.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let is_side = |c: &ContainerStatus| {
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .map(String::as_str)
                .unwrap_or(c.name.as_str());
            sidecars.contains(name)
        };
        // app containers first; sidecars stop after them
        let (side, main): (Vec<&ContainerStatus>, Vec<&ContainerStatus>) =
            groups.values().flatten().partition(|c| is_side(c));
        for phase in [main, side] {
            let stops = phase
                .into_iter()
                .map(|c| self.stop_and_remove(pod, c, &target, grace));
            futures::future::join_all(stops).await;
        }
        let sandboxes = match self.runtime.list_sandboxes().await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(pod_uid = uid, error = %e, "listing sandboxes failed");
                return false;
            }
        };
        for s in sandboxes.iter().filter(|s| s.pod_uid == uid) {
            if let Some(net) = &self.network {
                net.teardown(uid, s).await;
            }
            if let Err(e) = self.runtime.remove_sandbox(&s.id).await {
                tracing::warn!(sandbox = %s.id, error = %e, "remove sandbox failed");
            }
        }
        if let Err(e) = volumes::teardown(&PodDir::new(&self.config.root, uid)) {
            tracing::warn!(pod = uid, error = %e, "removing the pod directory failed");
        }
        st.sandbox = None;
        st.terminated = true;
        st.probes.retain(&std::collections::HashSet::new());
        true
    }

    async fn ensure_sandbox(
        &self,
        uid: &str,
        pod: &Pod,
        st: &mut PodState,
    ) -> Result<Sandbox, String> {
        if let Some(s) = &st.sandbox {
            return Ok(s.clone());
        }
        // re-adopt
        if let Ok(list) = self.runtime.list_sandboxes().await {
            if let Some(s) = list.into_iter().find(|s| s.pod_uid == uid) {
                st.sandbox = Some(s.clone());
                return Ok(s);
            }
        }
        let spec = pod.spec.clone().unwrap_or_default();
        // hostPorts must be free
        for c in &spec.containers {
            for p in c.ports.iter().flatten() {
                if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                    let ip = p.host_ip.clone().unwrap_or_else(|| "0.0.0.0".to_string());
                    let proto = p.protocol.as_deref().unwrap_or("TCP");
                    let free = if proto == "UDP" {
                        std::net::UdpSocket::bind((ip.as_str(), hp as u16)).is_ok()
                    } else {
                        std::net::TcpListener::bind((ip.as_str(), hp as u16)).is_ok()
                    };
                    if !free {
                        return Err(format!(
                            "failed to set up hostPort {hp}/{proto}: port is already in use"
                        ));
                    }
                }
            }
        }
        let cfg = SandboxConfig {
            pod_uid: uid.to_string(),
            pod_name: pod.metadata.name.clone().unwrap_or_default(),
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            hostname: volumes::pod_hostname(pod),
            host_network: spec.host_network == Some(true),
            share_pid: spec.share_process_namespace == Some(true),
            cgroup_parent: format!("pod{uid}"),
            limits: PodCgroupLimits {
                pids_max: self.config.pod_pids_limit,
                memory_limit: pod_memory_limit(&spec),
            },
            labels: label_map(pod),
        };
        let s = self
            .runtime
            .create_sandbox(&cfg)
            .await
            .map_err(|e| e.to_string())?;
        st.sandbox = Some(s.clone());
        Ok(s)
    }

    /// The pod's IPs: from the network plugin, or the node's IP for
    /// hostNetwork pods and nodes without a plugin.
    async fn pod_network(&self, pod: &Pod, sb: &Sandbox) -> Result<Vec<String>, String> {
        let host_network = pod.spec.as_ref().and_then(|s| s.host_network) == Some(true);
        match &self.network {
            Some(net) if !host_network => {
                let ips = net.setup(pod, sb).await?;
                if ips.is_empty() {
                    return Err("the network plugin returned no IP".to_string());
                }
                Ok(ips)
            }
            _ => Ok(vec![self.node_ip.clone()]),
        }
    }

    async fn sync_running(&self, uid: &str, pod: &Pod, st: &mut PodState) -> Next {
        st.terminated = false;
        let spec = pod.spec.clone().unwrap_or_default();
        let policy = spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".to_string());
        if st.start_time.is_none() {
            st.start_time = pod
                .status
                .as_ref()
                .and_then(|s| s.start_time.clone())
                .or_else(|| Some(Time(k8s_openapi::jiff::Timestamp::now())));
        }
        let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
        let terminal = matches!(phase.as_deref(), Some("Succeeded") | Some("Failed"));
        let mut next: Option<Instant> = None;
        let mut set_next = |at: Instant| {
            next = Some(next.map_or(at, |n: Instant| n.min(at)));
        };
        let dir = PodDir::new(&self.config.root, uid);
        let mut volume_paths = BTreeMap::new();
        let mut ready_to_run = !terminal;
        let cache = CachedSource::new(&self.client);

        if ready_to_run {
            match self.ensure_sandbox(uid, pod, st).await {
                Ok(sb) => {
                    if st.pod_ips.is_empty() {
                        match self.pod_network(pod, &sb).await {
                            Ok(ips) => st.pod_ips = ips,
                            Err(e) => {
                                // As upstream: the sandbox is not ready, the pod
                                // stays ContainerCreating and the setup is
                                // retried; the pod never runs without its IP.
                                self.event(
                                    pod,
                                    None,
                                    EventType::Warning,
                                    "FailedCreatePodSandBox",
                                    format!("Failed to create pod sandbox: failed to set up pod network: {e}"),
                                );
                                ready_to_run = false;
                                set_next(Instant::now() + NETWORK_RETRY);
                            }
                        }
                    }
                }
                Err(e) => {
                    self.event(
                        pod,
                        None,
                        EventType::Warning,
                        "FailedCreatePodSandBox",
                        format!("Failed to create pod sandbox: {e}"),
                    );
                    ready_to_run = false;
                    set_next(Instant::now() + Duration::from_secs(5));
                }
            }
        }
        if ready_to_run {
            let ip = st
                .pod_ips
                .first()
                .cloned()
                .unwrap_or_else(|| self.node_ip.clone());
            if let Err(e) = volumes::write_etc_files(
                pod,
                &dir,
                &ip,
                self.config.cluster_dns.as_deref(),
                &self.config.cluster_domain,
            ) {
                tracing::warn!(error = %e, "writing etc files failed");
            }
            match volumes::setup(pod, &dir, &cache, self.allocatable).await {
                Ok(v) => volume_paths = v,
                Err(e) => {
                    self.event(pod, None, EventType::Warning, "FailedMount", e.to_string());
                    ready_to_run = false;
                    set_next(Instant::now() + Duration::from_secs(5));
                }
            }
        }

        let all = match self.runtime.list_containers().await {
            Ok(all) => all,
            Err(e) => {
                // never act on an unknown state: that would duplicate containers
                tracing::warn!(pod = %pod_full_name(pod), error = %e, "listing containers failed");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
        };
        let mut groups = group_containers(&all, uid);
        let mut pod_failed = st.failed.clone();

        if ready_to_run && pod_failed.is_none() {
            // init containers, in order
            let mut init_done = true;
            for c in spec.init_containers.iter().flatten() {
                let latest = groups.get(&c.name).and_then(|v| v.first()).cloned();
                let view = ContainerView {
                    latest: latest.clone(),
                    start_error: latest
                        .as_ref()
                        .and_then(|l| st.start_errors.get(&l.id).cloned()),
                    ..Default::default()
                };
                if is_sidecar(c) {
                    match self
                        .sync_sidecar(pod, c, &view, &groups, &volume_paths, &cache, st)
                        .await
                    {
                        SidecarStep::Continue(at) => {
                            if let Some(at) = at {
                                set_next(at);
                            }
                            continue;
                        }
                        SidecarStep::Wait(at) => {
                            if let Some(at) = at {
                                set_next(at);
                            }
                            init_done = false;
                            break;
                        }
                    }
                }
                match effective_state(&view) {
                    Some(ContainerState::Exited { exit_code: 0, .. }) => continue,
                    Some(ContainerState::Running) | Some(ContainerState::Unknown) => {
                        init_done = false;
                        break;
                    }
                    Some(ContainerState::Created) => {
                        if let Some(l) = &latest {
                            self.start(pod, c, true, l, st).await;
                        }
                        init_done = false;
                        break;
                    }
                    Some(ContainerState::Exited { finished_at, .. }) => {
                        init_done = false;
                        if policy == "Never" {
                            pod_failed = Some((
                                "Failed".to_string(),
                                format!("init container {} failed", c.name),
                            ));
                            break;
                        }
                        let attempt = latest.as_ref().map(|l| l.attempt + 1).unwrap_or(0);
                        if let Some(at) = self
                            .restart_with_backoff(
                                pod,
                                c,
                                true,
                                attempt,
                                finished_at,
                                &volume_paths,
                                &cache,
                                st,
                            )
                            .await
                        {
                            set_next(at);
                        }
                        break;
                    }
                    None => {
                        init_done = false;
                        if let Some(at) = self
                            .create_and_start(pod, c, true, 0, &volume_paths, &cache, st)
                            .await
                        {
                            set_next(at);
                        }
                        break;
                    }
                }
            }
            if init_done {
                if self.kill_failed_probes(pod, &spec, &groups, st).await {
                    if let Ok(all) = self.runtime.list_containers().await {
                        groups = group_containers(&all, uid);
                    }
                }
                for c in &spec.containers {
                    let latest = groups.get(&c.name).and_then(|v| v.first()).cloned();
                    let view = ContainerView {
                        latest: latest.clone(),
                        start_error: latest
                            .as_ref()
                            .and_then(|l| st.start_errors.get(&l.id).cloned()),
                        ..Default::default()
                    };
                    let hash_changed = latest
                        .as_ref()
                        .and_then(|l| l.labels.get(HASH_LABEL))
                        .is_some_and(|h| *h != spec_hash(c));
                    match effective_state(&view) {
                        None => {
                            if let Some(at) = self
                                .create_and_start(pod, c, false, 0, &volume_paths, &cache, st)
                                .await
                            {
                                set_next(at);
                            }
                        }
                        Some(ContainerState::Running) if hash_changed => {
                            if let Some(l) = &latest {
                                self.event(
                                    pod,
                                    Some(container_field_path(false, &c.name)),
                                    EventType::Normal,
                                    "Killing",
                                    format!(
                                        "Container {} definition changed, will be restarted",
                                        c.name
                                    ),
                                );
                                let target = self.target(None, st);
                                let grace =
                                    self.pre_stop(pod, l, &target, pod_grace(pod, None)).await;
                                let _ = self.runtime.stop_container(&l.id, grace).await;
                                st.crash_backoff.reset(&c.name);
                                if let Some(at) = self
                                    .create_and_start(
                                        pod,
                                        c,
                                        false,
                                        l.attempt + 1,
                                        &volume_paths,
                                        &cache,
                                        st,
                                    )
                                    .await
                                {
                                    set_next(at);
                                }
                            }
                        }
                        Some(ContainerState::Running) | Some(ContainerState::Unknown) => {
                            st.waiting.remove(&c.name);
                        }
                        Some(ContainerState::Created) => {
                            if let Some(l) = &latest {
                                self.start(pod, c, false, l, st).await;
                            }
                        }
                        Some(ContainerState::Exited {
                            exit_code,
                            finished_at,
                            ..
                        }) => {
                            let restart = match policy.as_str() {
                                "Never" => false,
                                "OnFailure" => exit_code != 0,
                                _ => true,
                            };
                            if restart {
                                let attempt = latest.as_ref().map(|l| l.attempt + 1).unwrap_or(0);
                                if let Some(at) = self
                                    .restart_with_backoff(
                                        pod,
                                        c,
                                        false,
                                        attempt,
                                        finished_at,
                                        &volume_paths,
                                        &cache,
                                        st,
                                    )
                                    .await
                                {
                                    set_next(at);
                                }
                            } else {
                                st.waiting.remove(&c.name);
                            }
                        }
                    }
                }
            }
            // refresh after actions
            if let Ok(all) = self.runtime.list_containers().await {
                groups = group_containers(&all, uid);
            }
            self.gc_dead(&groups).await;
        }
        self.update_probes(pod, &spec, &groups, st);
        if let Some(at) = self
            .check_deadline(pod, &spec, &groups, &mut pod_failed, st)
            .await
        {
            set_next(at);
        }
        // whether this round stopped containers of a finished pod
        let mut stopped = false;
        if terminal {
            // a finished pod keeps nothing running
            for c in groups.values().flatten() {
                if matches!(c.state, ContainerState::Running) {
                    let _ = self
                        .runtime
                        .stop_container(&c.id, Duration::from_secs(2))
                        .await;
                    stopped = true;
                }
            }
            if stopped {
                // report how they ended (an evicted pod reads 0/1)
                if let Ok(all) = self.runtime.list_containers().await {
                    groups = group_containers(&all, uid);
                }
            }
        }
        st.failed = pod_failed.clone();
        // imageID: the repo digest (`repo@sha256:…`) when the image store knows it
        // of the repository the pod's container names.
        let spec_images: HashMap<&str, &str> = pod
            .spec
            .iter()
            .flat_map(|s| {
                s.containers
                    .iter()
                    .chain(s.init_containers.iter().flatten())
            })
            .filter_map(|c| Some((c.name.as_str(), c.image.as_deref()?)))
            .collect();
        for (name, cs) in groups.iter_mut() {
            let named = spec_images.get(name.as_str()).copied().unwrap_or_default();
            for c in cs.iter_mut() {
                let key = format!("{}|{named}", c.image);
                if !st.image_ids.contains_key(&key) {
                    let id = match self.images.get(&c.image).await {
                        Ok(Some(img)) => {
                            repo_digest_for(named, &img.repo_digests).unwrap_or(img.id)
                        }
                        _ => c.image_id.clone(),
                    };
                    st.image_ids.insert(key.clone(), id);
                }
                if let Some(id) = st.image_ids.get(&key).filter(|id| !id.is_empty()) {
                    c.image_id = id.clone();
                }
            }
        }

        let view = |c: &Container| -> ContainerView {
            let list = groups.get(&c.name);
            let latest = list.and_then(|v| v.first()).cloned();
            let probe = latest
                .as_ref()
                .filter(|l| matches!(l.state, ContainerState::Running))
                .and_then(|l| st.probes.state(&l.id));
            ContainerView {
                started: probe.as_ref().map(|p| p.started),
                ready: probe.as_ref().map(|p| p.ready),
                start_error: latest
                    .as_ref()
                    .and_then(|l| st.start_errors.get(&l.id).cloned()),
                latest,
                previous: list.and_then(|v| v.get(1)).cloned(),
                waiting: st.waiting.get(&c.name).cloned(),
            }
        };
        let input = StatusInput {
            init: spec
                .init_containers
                .iter()
                .flatten()
                .map(|c| (c.name.clone(), view(c)))
                .collect(),
            containers: spec
                .containers
                .iter()
                .map(|c| (c.name.clone(), view(c)))
                .collect(),
            // A sandbox whose network is not set up is not ready.
            sandbox_ready: st.sandbox.is_some() && !st.pod_ips.is_empty(),
            host_ips: vec![self.node_ip.clone()],
            pod_ips: if st.pod_ips.is_empty() {
                Vec::new()
            } else {
                st.pod_ips.clone()
            },
            start_time: st.start_time.clone(),
            failed: pod_failed,
        };
        let mut status = pod_status(pod, &input, pod.status.as_ref());
        if terminal {
            // A terminal phase is final, with the reason and message whoever
            // ended the pod gave it (an eviction, a deadline); only the
            // containers' final states are reported, once, after they were
            // stopped here (otherwise the reported states stay as written).
            if !stopped {
                return Next::Idle;
            }
            if let Some(old) = pod.status.as_ref() {
                status.phase = old.phase.clone();
                status.reason = old.reason.clone();
                status.message = old.message.clone();
            }
            if let Err(e) = self.write_status(pod, status, st).await {
                tracing::warn!(pod = %pod_full_name(pod), error = %e, "status update failed; retrying");
                return Next::At(Instant::now() + Duration::from_secs(1));
            }
            return Next::Idle;
        }
        if let Err(e) = self.write_status(pod, status, st).await {
            tracing::warn!(pod = %pod_full_name(pod), error = %e, "status update failed; retrying");
            set_next(Instant::now() + Duration::from_secs(1));
        }
        match next {
            Some(at) => Next::At(at),
            None => Next::Idle,
        }
    }

    /// Remove dead containers older than the previous attempt.
    async fn gc_dead(&self, groups: &HashMap<String, Vec<ContainerStatus>>) {
        for list in groups.values() {
            for old in list.iter().skip(2) {
                if !matches!(old.state, ContainerState::Running) {
                    let _ = self.runtime.remove_container(&old.id).await;
                }
            }
        }
    }

    async fn write_status(
        &self,
        pod: &Pod,
        status: PodStatus,
        st: &mut PodState,
    ) -> Result<(), kube::Error> {
        let mut value = serde_json::to_value(&status).unwrap_or_default();
        // compare without transition times (they are derived)
        let mut cmp = value.clone();
        if let Some(conds) = cmp.get_mut("conditions").and_then(|c| c.as_array_mut()) {
            for c in conds {
                if let Some(o) = c.as_object_mut() {
                    o.remove("lastTransitionTime");
                }
            }
        }
        if st.last_status.as_ref() == Some(&cmp) {
            return Ok(());
        }
        if let Some(o) = value.as_object_mut() {
            // phase reason/message are cleared explicitly when absent
            o.entry("reason").or_insert(serde_json::Value::Null);
            o.entry("message").or_insert(serde_json::Value::Null);
        }
        let patch = serde_json::json!({ "status": value });
        let name = pod.metadata.name.clone().unwrap_or_default();
        self.pod_api(pod)
            .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        st.last_status = Some(cmp);
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn restart_with_backoff(
        &self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: u32,
        finished_at: chrono::DateTime<chrono::Utc>,
        volume_paths: &BTreeMap<String, PathBuf>,
        cache: &CachedSource<'_>,
        st: &mut PodState,
    ) -> Option<Instant> {
        let now = Instant::now();
        let since = (chrono::Utc::now() - finished_at)
            .to_std()
            .unwrap_or_default();
        if let Some(delay) = st.crash_backoff.in_backoff_since(&c.name, now, since) {
            let msg = format!(
                "back-off {} restarting failed container={} pod={}",
                go_duration(delay),
                c.name,
                pod_full_name(pod)
            );
            let first = st.waiting.get(&c.name).map(|w| w.0.as_str()) != Some("CrashLoopBackOff")
                || st.waiting.get(&c.name).map(|w| w.1.as_str()) != Some(msg.as_str());
            if first {
                self.event(
                    pod,
                    Some(container_field_path(init, &c.name)),
                    EventType::Warning,
                    "BackOff",
                    format!(
                        "Back-off restarting failed container {} in pod {}",
                        c.name,
                        pod_full_name(pod)
                    ),
                );
            }
            st.waiting
                .insert(c.name.clone(), ("CrashLoopBackOff".to_string(), msg));
            return Some(now + delay.saturating_sub(since) + Duration::from_millis(50));
        }
        st.crash_backoff.next(&c.name, now);
        self.create_and_start(pod, c, init, attempt, volume_paths, cache, st)
            .await
    }

    /// Pull (per policy), build the config, create and start one container.
    /// Returns when to retry if it could not.
    #[allow(clippy::too_many_arguments)]
    async fn create_and_start(
        &self,
        pod: &Pod,
        c: &Container,
        init: bool,
        attempt: u32,
        volume_paths: &BTreeMap<String, PathBuf>,
        cache: &CachedSource<'_>,
        st: &mut PodState,
    ) -> Option<Instant> {
        let field = Some(container_field_path(init, &c.name));
        let fail = |st: &mut PodState, reason: &str, msg: String| {
            st.waiting.insert(c.name.clone(), (reason.to_string(), msg));
        };
        // image
        let image = match self.ensure_image(pod, c, &field, cache, st).await {
            Ok(i) => i,
            Err(retry) => return retry,
        };
        // environment
        let mut env: Vec<(String, String)> = Vec::new();
        for kv in &image.config.env {
            if let Some((k, v)) = kv.split_once('=') {
                env.push((k.to_string(), v.to_string()));
            }
        }
        if let Some(net) = &self.network {
            for (k, v) in net.service_env(pod).await {
                env.retain(|(ek, _)| ek != &k);
                env.push((k, v));
            }
        }
        match crate::env::container_env(pod, c, cache, self.allocatable).await {
            Ok(vars) => {
                for (k, v) in vars {
                    env.retain(|(ek, _)| ek != &k);
                    env.push((k, v));
                }
            }
            Err(e) => {
                let msg = e.to_string();
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                fail(st, "CreateContainerConfigError", msg);
                return Some(Instant::now() + Duration::from_secs(5));
            }
        }
        // mounts
        let dir = PodDir::new(&self.config.root, pod.metadata.uid.as_deref().unwrap_or(""));
        let mut mounts = Vec::new();
        for m in c.volume_mounts.iter().flatten() {
            match volumes::mount_source(volume_paths, m, &env) {
                Ok(source) => mounts.push(Mount {
                    source,
                    destination: m.mount_path.clone(),
                    read_only: m.read_only == Some(true),
                }),
                Err(msg) => {
                    self.event(
                        pod,
                        field,
                        EventType::Warning,
                        "Failed",
                        format!("Error: {msg}"),
                    );
                    fail(st, "CreateContainerConfigError", msg);
                    return Some(Instant::now() + Duration::from_secs(5));
                }
            }
        }
        for (dest, src) in [
            ("/etc/hosts", dir.hosts()),
            ("/etc/hostname", dir.hostname()),
            ("/etc/resolv.conf", dir.resolv_conf()),
        ] {
            if !mounts.iter().any(|m| m.destination == dest) {
                mounts.push(Mount {
                    source: src,
                    destination: dest.to_string(),
                    read_only: false,
                });
            }
        }
        // argv with $(VAR) expansion
        let lookup = |n: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == n)
                .map(|(_, v)| v.clone())
        };
        let command: Vec<String> = c
            .command
            .iter()
            .flatten()
            .map(|s| crate::expand::expand(s, &lookup))
            .collect();
        let args: Vec<String> = c
            .args
            .iter()
            .flatten()
            .map(|s| crate::expand::expand(s, &lookup))
            .collect();
        let argv =
            crate::expand::argv(&command, &args, &image.config.entrypoint, &image.config.cmd);
        if argv.is_empty() {
            let msg = "no command specified".to_string();
            self.event(
                pod,
                field,
                EventType::Warning,
                "Failed",
                format!("Error: {msg}"),
            );
            fail(st, "CreateContainerError", msg);
            return Some(Instant::now() + Duration::from_secs(5));
        }
        let psc = pod
            .spec
            .as_ref()
            .and_then(|s| s.security_context.clone())
            .unwrap_or_default();
        let sc = c.security_context.clone().unwrap_or_default();
        let uid = sc.run_as_user.or(psc.run_as_user);
        let gid = sc.run_as_group.or(psc.run_as_group);
        let user = match uid {
            Some(u) => Some((u as u32, gid.unwrap_or(0) as u32)),
            None => image.config.user.as_deref().and_then(|u| {
                let (a, b) = u.split_once(':').unwrap_or((u, "0"));
                Some((a.parse().ok()?, b.parse().unwrap_or(0)))
            }),
        };
        let caps = sc.capabilities.clone().unwrap_or_default();
        let seccomp = match navarch_runtime::SeccompProfile::from_types(
            sc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            psc.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
        ) {
            Ok(p) => p,
            Err(e) => {
                let msg = e.to_string();
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                fail(st, "CreateContainerConfigError", msg);
                return Some(Instant::now() + Duration::from_secs(5));
            }
        };
        let mut lbl = label_map(pod);
        lbl.insert(labels::CONTAINER_NAME.to_string(), c.name.clone());
        lbl.insert(labels::ATTEMPT.to_string(), attempt.to_string());
        lbl.insert(
            labels::CONTAINER_KIND.to_string(),
            if init { "init" } else { "app" }.to_string(),
        );
        lbl.insert(HASH_LABEL.to_string(), spec_hash(c));
        let cfg = ContainerConfig {
            name: c.name.clone(),
            attempt,
            image: image.id.clone(),
            argv,
            env,
            working_dir: c.working_dir.clone().or(image.config.working_dir.clone()),
            user,
            mounts,
            resources: resources(c),
            read_only_rootfs: sc.read_only_root_filesystem == Some(true),
            privileged: sc.privileged == Some(true),
            add_capabilities: caps.add.unwrap_or_default(),
            drop_capabilities: caps.drop.unwrap_or_default(),
            no_new_privileges: sc.allow_privilege_escalation == Some(false),
            seccomp,
            tty: c.tty == Some(true),
            stdin: c.stdin == Some(true),
            stdin_once: c.stdin_once == Some(true),
            log_path: dir.log(&c.name, attempt),
            labels: lbl,
        };
        if let Some(parent) = cfg.log_path.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        let Some(sandbox) = st.sandbox.clone() else {
            return Some(Instant::now() + Duration::from_secs(1));
        };
        let id = match self.runtime.create_container(&sandbox, &cfg).await {
            Ok(id) => id,
            Err(e) => {
                let msg = e.to_string();
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                fail(st, e.reason(), msg);
                return Some(Instant::now() + Duration::from_secs(5));
            }
        };
        self.event(
            pod,
            field.clone(),
            EventType::Normal,
            "Created",
            format!("Created container: {}", c.name),
        );
        st.waiting.remove(&c.name);
        match self.runtime.start_container(&id).await {
            Ok(()) => {
                self.event(
                    pod,
                    field.clone(),
                    EventType::Normal,
                    "Started",
                    format!("Started container {}", c.name),
                );
                self.post_start(pod, c, &id, field, st).await
            }
            Err(e) => {
                let msg = e.to_string();
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {msg}"),
                );
                st.start_errors.insert(id, msg);
                // the next sync restarts it per policy, with back-off
                Some(Instant::now() + Duration::from_millis(100))
            }
        }
    }

    async fn start(
        &self,
        pod: &Pod,
        c: &Container,
        init: bool,
        l: &ContainerStatus,
        st: &mut PodState,
    ) {
        let field = Some(container_field_path(init, &c.name));
        match self.runtime.start_container(&l.id).await {
            Ok(()) => self.event(
                pod,
                field,
                EventType::Normal,
                "Started",
                format!("Started container {}", c.name),
            ),
            Err(e) => {
                self.event(
                    pod,
                    field,
                    EventType::Warning,
                    "Failed",
                    format!("Error: {e}"),
                );
                st.start_errors.insert(l.id.clone(), e.to_string());
            }
        }
    }

    /// The image for `c`, honouring imagePullPolicy and pull back-off.
    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
        field: &Option<String>,
        cache: &CachedSource<'_>,
        st: &mut PodState,
    ) -> Result<navarch_runtime::Image, Option<Instant>> {
        let image_ref = c.image.clone().unwrap_or_default();
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            let last = image_ref.rsplit('/').next().unwrap_or(&image_ref);
            if image_ref.contains('@') || (last.contains(':') && !last.ends_with(":latest")) {
                "IfNotPresent".to_string()
            } else {
                "Always".to_string()
            }
        });
        let set_wait = |st: &mut PodState, reason: &str, msg: String| {
            st.waiting.insert(c.name.clone(), (reason.to_string(), msg));
        };
        if policy != "Always" {
            match self.images.get(&image_ref).await {
                Ok(Some(img)) => {
                    self.event(
                        pod,
                        field.clone(),
                        EventType::Normal,
                        "Pulled",
                        format!("Container image {image_ref:?} already present on machine"),
                    );
                    return Ok(img);
                }
                Ok(None) if policy == "Never" => {
                    let msg = format!(
                        "Container image {image_ref:?} is not present with pull policy of Never"
                    );
                    self.event(
                        pod,
                        field.clone(),
                        EventType::Warning,
                        "ErrImageNeverPull",
                        msg.clone(),
                    );
                    set_wait(st, "ErrImageNeverPull", msg);
                    return Err(Some(Instant::now() + Duration::from_secs(10)));
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(error = %e, "image lookup failed; pulling");
                }
            }
        }
        let now = Instant::now();
        if let Some(until) = st.pull_backoff.until(&image_ref, now) {
            let msg = format!("Back-off pulling image {image_ref:?}");
            self.event(
                pod,
                field.clone(),
                EventType::Normal,
                "BackOff",
                msg.clone(),
            );
            set_wait(st, "ImagePullBackOff", msg);
            return Err(Some(until + Duration::from_millis(50)));
        }
        // credentials
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let mut secrets = Vec::new();
        for r in pod
            .spec
            .iter()
            .flat_map(|s| s.image_pull_secrets.iter().flatten())
        {
            if let Ok(Some(s)) = cache.secret(ns, &r.name).await {
                secrets.push(s);
            }
        }
        let auth = registry_auth(&secrets);
        self.event(
            pod,
            field.clone(),
            EventType::Normal,
            "Pulling",
            format!("Pulling image {image_ref:?}"),
        );
        let t0 = Instant::now();
        match self.images.pull(&image_ref, &auth, None).await {
            Ok(img) => {
                let d = go_secs(t0.elapsed());
                self.event(pod, field.clone(), EventType::Normal, "Pulled", format!(
                    "Successfully pulled image {image_ref:?} in {d} ({d} including waiting). Image size: {} bytes.",
                    img.size
                ));
                st.pull_backoff.reset(&image_ref);
                Ok(img)
            }
            Err(e) => {
                let reason = e.reason();
                let msg = e.to_string();
                self.event(
                    pod,
                    field.clone(),
                    EventType::Warning,
                    "Failed",
                    format!("Failed to pull image {image_ref:?}: {msg}"),
                );
                self.event(
                    pod,
                    field.clone(),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {reason}"),
                );
                let delay = st.pull_backoff.next(&image_ref, Instant::now());
                set_wait(st, reason, msg);
                Err(Some(Instant::now() + delay + Duration::from_millis(50)))
            }
        }
    }
}

/// Init containers with `restartPolicy: Always` (sidecars).
pub fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Probes, hooks and the active deadline.
impl Context {
    /// Where probes and hooks of the pod connect (ports of `c`, if given).
    fn target(&self, c: Option<&Container>, st: &PodState) -> Target {
        let netns = st.sandbox.as_ref().and_then(|s| s.netns_path.clone());
        let ip = st
            .pod_ips
            .first()
            .cloned()
            .unwrap_or_else(|| self.node_ip.clone());
        let none = Container::default();
        // without a network plugin the pod has no routable IP of its own:
        // connect from inside its namespace
        probes::probe_target(c.unwrap_or(&none), &ip, netns, self.network.is_none())
    }

    /// Stop one container of a pod being removed (Killing event and preStop
    /// hook when the pod object is known), then remove it.
    async fn stop_and_remove(
        &self,
        pod: Option<&Pod>,
        c: &ContainerStatus,
        target: &Target,
        grace: Duration,
    ) {
        if matches!(c.state, ContainerState::Running) {
            if let Some(p) = pod {
                let init = c.labels.get(labels::CONTAINER_KIND).map(String::as_str) == Some("init");
                self.event(
                    p,
                    Some(container_field_path(init, &c.name)),
                    EventType::Normal,
                    "Killing",
                    format!("Stopping container {}", c.name),
                );
            }
            let grace = match pod {
                Some(p) => self.pre_stop(p, c, target, grace).await,
                None => grace,
            };
            if let Err(e) = self.runtime.stop_container(&c.id, grace).await {
                tracing::warn!(container = %c.id, error = %e, "stop failed");
            }
        }
        if let Err(e) = self.runtime.remove_container(&c.id).await {
            tracing::warn!(container = %c.id, error = %e, "remove failed");
        }
    }

    /// Run `c`'s postStart hook; on failure kill the container
    /// (FailedPostStartHook) and ask for a prompt resync.
    async fn post_start(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        field: Option<String>,
        st: &PodState,
    ) -> Option<Instant> {
        hooks::handler(c, Hook::PostStart)?;
        let target = self.target(Some(c), st);
        let r = hooks::run(
            &*self.runtime,
            id,
            c,
            &pod_full_name(pod),
            Hook::PostStart,
            &target,
            hooks::POST_START_LIMIT,
        )
        .await;
        let msg = r.err()?;
        self.event(
            pod,
            field.clone(),
            EventType::Warning,
            "FailedPostStartHook",
            msg,
        );
        self.event(
            pod,
            field,
            EventType::Normal,
            "Killing",
            "FailedPostStartHook".to_string(),
        );
        let grace = pod_grace(pod, None);
        if let Err(e) = self.runtime.stop_container(id, grace).await {
            tracing::warn!(container = %id, error = %e, "stop after a failed postStart hook failed");
        }
        Some(Instant::now() + Duration::from_millis(100))
    }

    /// Run the preStop hook of runtime container `rc` (if its spec has one);
    /// returns what is left of `grace` for the SIGTERM (at least 2 s, as
    /// upstream).
    async fn pre_stop(
        &self,
        pod: &Pod,
        rc: &ContainerStatus,
        target: &Target,
        grace: Duration,
    ) -> Duration {
        let name = rc
            .labels
            .get(labels::CONTAINER_NAME)
            .cloned()
            .unwrap_or_else(|| rc.name.clone());
        let Some(spec) = pod.spec.as_ref() else {
            return grace;
        };
        let (c, init) = match spec.containers.iter().find(|c| c.name == name) {
            Some(c) => (c, false),
            None => match spec
                .init_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
            {
                Some(c) => (c, true),
                None => return grace,
            },
        };
        if hooks::handler(c, Hook::PreStop).is_none() {
            return grace;
        }
        let mut target = target.clone();
        target.ports = c.ports.clone().unwrap_or_default();
        let t0 = Instant::now();
        if let Err(msg) = hooks::run(
            &*self.runtime,
            &rc.id,
            c,
            &pod_full_name(pod),
            Hook::PreStop,
            &target,
            grace,
        )
        .await
        {
            self.event(
                pod,
                Some(container_field_path(init, &c.name)),
                EventType::Warning,
                "FailedPreStopHook",
                msg,
            );
        }
        grace
            .saturating_sub(t0.elapsed())
            .max(Duration::from_secs(2))
    }

    /// Kill the running containers whose liveness or startup probe failed.
    /// Returns whether any was killed.
    async fn kill_failed_probes(
        &self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        groups: &HashMap<String, Vec<ContainerStatus>>,
        st: &mut PodState,
    ) -> bool {
        let restart = spec.restart_policy.as_deref() != Some("Never");
        let target = self.target(None, st);
        let mut killed = false;
        let all = spec.containers.iter().map(|c| (c, false)).chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| is_sidecar(c))
                .map(|c| (c, true)),
        );
        for (c, init) in all {
            let Some(l) = groups.get(&c.name).and_then(|v| v.first()) else {
                continue;
            };
            if !matches!(l.state, ContainerState::Running) {
                continue;
            }
            let Some(kill) = st.probes.state(&l.id).and_then(|p| p.kill) else {
                continue;
            };
            let mut msg = format!("Container {} failed {} probe", c.name, kill.kind.lower());
            if restart || init {
                msg.push_str(", will be restarted");
            }
            self.event(
                pod,
                Some(container_field_path(init, &c.name)),
                EventType::Normal,
                "Killing",
                msg,
            );
            let grace = pod_grace(pod, kill.grace_seconds);
            let grace = self.pre_stop(pod, l, &target, grace).await;
            if let Err(e) = self.runtime.stop_container(&l.id, grace).await {
                tracing::warn!(container = %l.id, error = %e, "stop after a failed probe failed");
            }
            st.probes.remove(&l.id);
            killed = true;
        }
        killed
    }

    /// Start the probes of running containers (app containers and sidecars);
    /// stop those of containers that no longer run.
    fn update_probes(
        &self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        groups: &HashMap<String, Vec<ContainerStatus>>,
        st: &mut PodState,
    ) {
        let mut live = std::collections::HashSet::new();
        let all = spec.containers.iter().map(|c| (c, false)).chain(
            spec.init_containers
                .iter()
                .flatten()
                .filter(|c| is_sidecar(c))
                .map(|c| (c, true)),
        );
        for (c, init) in all {
            let Some(l) = groups.get(&c.name).and_then(|v| v.first()) else {
                continue;
            };
            if !matches!(l.state, ContainerState::Running) || !probes::has_probes(c) {
                continue;
            }
            live.insert(l.id.clone());
            let target = self.target(Some(c), st);
            let events = probes::EventSink {
                recorder: self.recorder.clone(),
                object: pod_ref(pod, Some(container_field_path(init, &c.name))),
            };
            let started_ago = l
                .started_at
                .and_then(|t| (chrono::Utc::now() - t).to_std().ok())
                .unwrap_or_default();
            st.probes
                .ensure(&l.id, c, self.runtime.clone(), target, events, started_ago);
        }
        st.probes.retain(&live);
    }

    /// activeDeadlineSeconds: once exceeded, stop the containers and fail the
    /// pod (DeadlineExceeded). Otherwise returns when to look again.
    async fn check_deadline(
        &self,
        pod: &Pod,
        spec: &k8s_openapi::api::core::v1::PodSpec,
        groups: &HashMap<String, Vec<ContainerStatus>>,
        pod_failed: &mut Option<(String, String)>,
        st: &PodState,
    ) -> Option<Instant> {
        let deadline = spec.active_deadline_seconds?;
        if pod_failed.is_some() {
            return None;
        }
        let start = st.start_time.as_ref()?;
        let now = k8s_openapi::jiff::Timestamp::now();
        let elapsed_ms = now.as_millisecond() - start.0.as_millisecond();
        let left_ms = deadline.saturating_mul(1000) - elapsed_ms;
        if left_ms > 0 {
            return Some(Instant::now() + Duration::from_millis(left_ms as u64 + 50));
        }
        let msg = "Pod was active on the node longer than the specified deadline".to_string();
        self.event(
            pod,
            None,
            EventType::Normal,
            "DeadlineExceeded",
            msg.clone(),
        );
        let target = self.target(None, st);
        let grace = pod_grace(pod, None);
        let stops = groups
            .values()
            .flatten()
            .filter(|c| matches!(c.state, ContainerState::Running))
            .map(|c| {
                let target = &target;
                async move {
                    let grace = self.pre_stop(pod, c, target, grace).await;
                    let _ = self.runtime.stop_container(&c.id, grace).await;
                }
            });
        futures::future::join_all(stops).await;
        *pod_failed = Some(("DeadlineExceeded".to_string(), msg));
        None
    }
}

/// What the init-container loop does after looking at a sidecar.
enum SidecarStep {
    /// The sidecar has started: go on to the next init container (and sync
    /// again at this instant, if given).
    Continue(Option<Instant>),
    /// Wait for it (optionally until this instant).
    Wait(Option<Instant>),
}

impl Context {
    /// One sidecar (init container with `restartPolicy: Always`): start it,
    /// restart it whenever it exits (with back-off, whatever the pod's
    /// restartPolicy), and let the next init container go once it has started
    /// (startup probe passed, if it has one).
    #[allow(clippy::too_many_arguments)]
    async fn sync_sidecar(
        &self,
        pod: &Pod,
        c: &Container,
        view: &ContainerView,
        groups: &HashMap<String, Vec<ContainerStatus>>,
        volume_paths: &BTreeMap<String, PathBuf>,
        cache: &CachedSource<'_>,
        st: &mut PodState,
    ) -> SidecarStep {
        let latest = view.latest.as_ref();
        // once app containers exist, a restarting sidecar does not hold them up
        let apps_started = pod
            .spec
            .as_ref()
            .is_some_and(|s| s.containers.iter().any(|a| groups.contains_key(&a.name)));
        match effective_state(view) {
            Some(ContainerState::Running) | Some(ContainerState::Unknown) => {
                st.waiting.remove(&c.name);
                let started = latest
                    .and_then(|l| st.probes.state(&l.id))
                    .is_none_or(|p| p.started);
                if started || apps_started {
                    SidecarStep::Continue(None)
                } else {
                    SidecarStep::Wait(None)
                }
            }
            Some(ContainerState::Created) => {
                if let Some(l) = latest {
                    self.start(pod, c, true, l, st).await;
                }
                SidecarStep::Wait(None)
            }
            None => {
                let at = self
                    .create_and_start(pod, c, true, 0, volume_paths, cache, st)
                    .await;
                SidecarStep::Wait(at)
            }
            Some(ContainerState::Exited { finished_at, .. }) => {
                let attempt = latest.map(|l| l.attempt + 1).unwrap_or(0);
                let at = self
                    .restart_with_backoff(
                        pod,
                        c,
                        true,
                        attempt,
                        finished_at,
                        volume_paths,
                        cache,
                        st,
                    )
                    .await;
                if apps_started {
                    SidecarStep::Continue(at)
                } else {
                    SidecarStep::Wait(at)
                }
            }
        }
    }
}

/// The grace period for killing one of `pod`'s containers: the probe's own
/// terminationGracePeriodSeconds, else the pod's, else 30 s.
fn pod_grace(pod: &Pod, probe_grace: Option<i64>) -> Duration {
    let secs = probe_grace
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30)
        .max(0);
    Duration::from_secs(secs as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dockerconfigjson() {
        use base64::Engine;
        let cfg = serde_json::json!({"auths": {
            "https://reg.example:5000/v1/": {"auth": base64::engine::general_purpose::STANDARD.encode("bob:pw")},
            "other.io": {"username": "u", "password": "p"}
        }});
        let s = Secret {
            type_: Some("kubernetes.io/dockerconfigjson".into()),
            data: Some(
                [(
                    ".dockerconfigjson".to_string(),
                    k8s_openapi::ByteString(serde_json::to_vec(&cfg).unwrap()),
                )]
                .into(),
            ),
            ..Default::default()
        };
        let a = registry_auth(&[s]);
        assert_eq!(a["reg.example:5000"].username.as_deref(), Some("bob"));
        assert_eq!(a["reg.example:5000"].password.as_deref(), Some("pw"));
        assert_eq!(a["other.io"].password.as_deref(), Some("p"));
    }

    #[test]
    fn computes_resources() {
        use k8s_openapi::api::core::v1::ResourceRequirements;
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let c = Container {
            resources: Some(ResourceRequirements {
                requests: Some([("cpu".to_string(), Quantity("250m".into()))].into()),
                limits: Some(
                    [
                        ("cpu".to_string(), Quantity("500m".into())),
                        ("memory".to_string(), Quantity("128Mi".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = resources(&c);
        assert_eq!(r.cpu_shares, Some(256));
        assert_eq!(r.cpu_quota, Some(50_000));
        assert_eq!(r.cpu_period, Some(100_000));
        assert_eq!(r.memory_limit, Some(128 << 20));
        assert_eq!(resources(&Container::default()).cpu_shares, Some(2));
    }

    #[test]
    fn image_id_prefers_the_named_repository() {
        let digests = vec![
            "navarch.test/busybox@sha256:aa".to_string(),
            "127.0.0.1:5000/busybox@sha256:aa".to_string(),
        ];
        assert_eq!(
            repo_digest_for("127.0.0.1:5000/busybox:1", &digests).as_deref(),
            Some("127.0.0.1:5000/busybox@sha256:aa")
        );
        assert_eq!(
            repo_digest_for("other/thing", &digests).as_deref(),
            Some("navarch.test/busybox@sha256:aa")
        );
        assert_eq!(repo_digest_for("x", &[]), None);
    }

    #[test]
    fn pod_memory_limit_needs_every_container_limited() {
        use k8s_openapi::api::core::v1::{PodSpec, ResourceRequirements};
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
        let limited = |mem: &str| Container {
            resources: Some(ResourceRequirements {
                limits: Some([("memory".to_string(), Quantity(mem.into()))].into()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let mut spec = PodSpec {
            containers: vec![limited("64Mi"), limited("32Mi")],
            init_containers: Some(vec![limited("128Mi")]),
            ..Default::default()
        };
        assert_eq!(pod_memory_limit(&spec), Some(128 << 20));
        let mut sidecar = limited("100Mi");
        sidecar.restart_policy = Some("Always".into());
        spec.init_containers = Some(vec![limited("16Mi"), sidecar]);
        assert_eq!(pod_memory_limit(&spec), Some(196 << 20));
        spec.containers.push(Container::default());
        assert_eq!(pod_memory_limit(&spec), None);
    }

    #[test]
    fn misc_helpers() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
        assert_eq!(go_secs(Duration::from_millis(1250)), "1.25s");
        assert_eq!(go_secs(Duration::from_millis(80)), "80ms");
    }
}
