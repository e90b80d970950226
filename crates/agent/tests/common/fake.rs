//! An in-memory container runtime and image service for the agent's tests.
//!
//! Behaviour is chosen by argv: `exit N` exits at once with code N (after
//! `delay` ms given as `exit N delay`); anything else runs until stopped. Each
//! start appends one CRI log line `started <argv>` to the container's log. Images
//! whose reference contains `missing` fail to pull.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use navarch_runtime::*;
use parking_lot::Mutex;

#[derive(Default)]
pub struct State {
    pub sandboxes: BTreeMap<String, Sandbox>,
    pub containers: BTreeMap<String, (ContainerStatus, ContainerConfig)>,
    pub images: BTreeMap<String, Image>,
    pub pulls: Vec<String>,
    next: u64,
}

#[derive(Clone, Default)]
pub struct Fake {
    pub state: Arc<Mutex<State>>,
}

fn image_for(reference: &str) -> Image {
    Image {
        id: format!("sha256:{:064x}", reference.len()),
        references: vec![reference.to_string()],
        repo_digests: vec![format!("{reference}@sha256:feed")],
        size: 1234,
        config: ImageConfig {
            entrypoint: vec![],
            cmd: vec!["sh".into()],
            env: vec!["PATH=/usr/bin:/bin".into()],
            working_dir: None,
            user: None,
        },
    }
}

impl Fake {
    pub fn new() -> Fake {
        Fake::default()
    }

    /// The config a container was created with (newest attempt).
    pub fn config_of(&self, pod: &str, container: &str) -> Option<ContainerConfig> {
        let s = self.state.lock();
        s.containers
            .values()
            .filter(|(st, _)| {
                st.labels.get("io.kubernetes.pod.name").map(String::as_str) == Some(pod)
                    && st.name == container
            })
            .max_by_key(|(st, _)| st.attempt)
            .map(|(_, c)| c.clone())
    }

    pub fn containers_of_uid(&self, uid: &str) -> Vec<ContainerStatus> {
        let s = self.state.lock();
        s.containers
            .values()
            .filter(|(st, _)| {
                st.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid)
            })
            .map(|(st, _)| st.clone())
            .collect()
    }

    fn append_log(path: &std::path::Path, line: &str) {
        use std::io::Write;
        if let Some(p) = path.parent() {
            let _ = std::fs::create_dir_all(p);
        }
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let ts = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true);
            let _ = writeln!(f, "{ts} stdout F {line}");
        }
    }
}

#[async_trait::async_trait]
impl ImageService for Fake {
    async fn pull(
        &self,
        reference: &str,
        _auth: &BTreeMap<String, RegistryAuth>,
        _progress: Option<&(dyn Fn(PullProgress) + Send + Sync)>,
    ) -> Result<Image> {
        let mut s = self.state.lock();
        s.pulls.push(reference.to_string());
        if reference.contains("missing") {
            return Err(RuntimeError::Pull {
                image: reference.to_string(),
                detail: "manifest unknown".into(),
            });
        }
        let img = image_for(reference);
        s.images.insert(reference.to_string(), img.clone());
        Ok(img)
    }
    async fn get(&self, reference: &str) -> Result<Option<Image>> {
        let s = self.state.lock();
        Ok(s.images
            .get(reference)
            .or_else(|| s.images.values().find(|i| i.id == reference))
            .cloned())
    }
    async fn import(&self, _archive: &std::path::Path) -> Result<Vec<Image>> {
        Ok(vec![])
    }
    async fn list(&self) -> Result<Vec<Image>> {
        Ok(self.state.lock().images.values().cloned().collect())
    }
    async fn remove(&self, id: &str) -> Result<()> {
        self.state.lock().images.remove(id);
        Ok(())
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for Fake {
    async fn create_sandbox(&self, config: &SandboxConfig) -> Result<Sandbox> {
        let mut s = self.state.lock();
        s.next += 1;
        let sb = Sandbox {
            id: format!("sb{}", s.next),
            pod_uid: config.pod_uid.clone(),
            netns_path: None,
        };
        s.sandboxes.insert(sb.id.clone(), sb.clone());
        Ok(sb)
    }
    async fn remove_sandbox(&self, id: &str) -> Result<()> {
        self.state.lock().sandboxes.remove(id);
        Ok(())
    }
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(self.state.lock().sandboxes.values().cloned().collect())
    }
    async fn create_container(
        &self,
        sandbox: &Sandbox,
        config: &ContainerConfig,
    ) -> Result<String> {
        let mut s = self.state.lock();
        if !s.sandboxes.contains_key(&sandbox.id) {
            return Err(RuntimeError::SandboxNotFound(sandbox.id.clone()));
        }
        s.next += 1;
        let id = format!("c{:04}", s.next);
        let st = ContainerStatus {
            id: id.clone(),
            sandbox_id: sandbox.id.clone(),
            name: config.name.clone(),
            attempt: config.attempt,
            image: config.image.clone(),
            image_id: config.image.clone(),
            state: ContainerState::Created,
            created_at: chrono::Utc::now(),
            started_at: None,
            pid: None,
            log_path: config.log_path.clone(),
            labels: config.labels.clone(),
        };
        s.containers.insert(id.clone(), (st, config.clone()));
        Ok(id)
    }
    async fn start_container(&self, id: &str) -> Result<()> {
        let (argv, log) = {
            let mut s = self.state.lock();
            let (st, cfg) = s
                .containers
                .get_mut(id)
                .ok_or_else(|| RuntimeError::ContainerNotFound(id.into()))?;
            if cfg.argv.first().map(String::as_str) == Some("/nonexistent") {
                return Err(RuntimeError::Start(
                    "exec: \"/nonexistent\": no such file".into(),
                ));
            }
            st.state = ContainerState::Running;
            st.started_at = Some(chrono::Utc::now());
            st.pid = Some(4242);
            (cfg.argv.clone(), st.log_path.clone())
        };
        Fake::append_log(&log, &format!("started {}", argv.join(" ")));
        if argv.first().map(String::as_str) == Some("exit") {
            let code: i32 = argv.get(1).and_then(|c| c.parse().ok()).unwrap_or(0);
            let delay: u64 = argv.get(2).and_then(|c| c.parse().ok()).unwrap_or(0);
            let state = self.state.clone();
            let id = id.to_string();
            let finish = move || {
                let mut s = state.lock();
                if let Some((st, _)) = s.containers.get_mut(&id) {
                    if st.state == ContainerState::Running {
                        st.state = ContainerState::Exited {
                            exit_code: code,
                            reason: if code == 0 { "Completed" } else { "Error" }.into(),
                            finished_at: chrono::Utc::now(),
                        };
                    }
                }
            };
            if delay == 0 {
                finish();
            } else {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                    finish();
                });
            }
        }
        Ok(())
    }
    async fn stop_container(&self, id: &str, _timeout: Duration) -> Result<()> {
        let mut s = self.state.lock();
        if let Some((st, _)) = s.containers.get_mut(id) {
            if matches!(st.state, ContainerState::Running | ContainerState::Created) {
                st.state = ContainerState::Exited {
                    exit_code: 137,
                    reason: "Error".into(),
                    finished_at: chrono::Utc::now(),
                };
            }
        }
        Ok(())
    }
    async fn remove_container(&self, id: &str) -> Result<()> {
        self.state.lock().containers.remove(id);
        Ok(())
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        self.state
            .lock()
            .containers
            .get(id)
            .map(|(s, _)| s.clone())
            .ok_or_else(|| RuntimeError::ContainerNotFound(id.into()))
    }
    async fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        Ok(self
            .state
            .lock()
            .containers
            .values()
            .map(|(s, _)| s.clone())
            .collect())
    }
    async fn exec_sync(&self, _id: &str, _argv: &[String], _t: Duration) -> Result<ExecOutput> {
        Ok(ExecOutput::default())
    }
}
