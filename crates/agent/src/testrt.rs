//! A fake container runtime for unit tests: exec succeeds while `ok` is set,
//! and every exec and stop is recorded.

use std::sync::Arc;
use std::time::Duration;

use navarch_runtime::{
    ContainerConfig, ContainerRuntime, ContainerStatus, ExecOutput, Result, RuntimeError, Sandbox,
    SandboxConfig,
};
use parking_lot::Mutex;

/// See the module docs.
#[derive(Default)]
pub struct FakeRuntime {
    /// exec exits 0 while true (else 1 with output "boom").
    pub ok: Arc<Mutex<bool>>,
    /// argv of every exec.
    pub execs: Mutex<Vec<Vec<String>>>,
    /// ids stopped.
    pub stops: Mutex<Vec<String>>,
}

impl FakeRuntime {
    /// A fake whose exec succeeds iff `ok`.
    pub fn new(ok: bool) -> Arc<FakeRuntime> {
        Arc::new(FakeRuntime {
            ok: Arc::new(Mutex::new(ok)),
            ..Default::default()
        })
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for FakeRuntime {
    async fn create_sandbox(&self, _: &SandboxConfig) -> Result<Sandbox> {
        Err(RuntimeError::SandboxNotFound("fake".into()))
    }
    async fn remove_sandbox(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(Vec::new())
    }
    async fn create_container(&self, _: &Sandbox, _: &ContainerConfig) -> Result<String> {
        Err(RuntimeError::Create("fake".into()))
    }
    async fn start_container(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn stop_container(&self, id: &str, _: Duration) -> Result<()> {
        self.stops.lock().push(id.to_string());
        Ok(())
    }
    async fn remove_container(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn container_status(&self, id: &str) -> Result<ContainerStatus> {
        Err(RuntimeError::ContainerNotFound(id.into()))
    }
    async fn list_containers(&self) -> Result<Vec<ContainerStatus>> {
        Ok(Vec::new())
    }
    async fn exec_sync(&self, _: &str, argv: &[String], _: Duration) -> Result<ExecOutput> {
        self.execs.lock().push(argv.to_vec());
        let ok = *self.ok.lock();
        Ok(ExecOutput {
            exit_code: if ok { 0 } else { 1 },
            stdout: if ok { Vec::new() } else { b"boom\n".to_vec() },
            stderr: Vec::new(),
        })
    }
}
