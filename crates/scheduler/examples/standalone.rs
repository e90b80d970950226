//! The scheduler as a process of its own, against any navarch (or Kubernetes) API
//! server: `standalone --kubeconfig <path> [--parallelism N]`.
//!
//! `navarch server` runs the same scheduler in-process; this binary exists so that
//! benchmarks (`bench/hollow/run.sh`, `SCHEDULER=separate`) can measure the
//! scheduler's own memory and CPU, apart from the API server's. It uses the
//! allocator `navarch` ships with (mimalloc; the benchmark starts it with
//! `MIMALLOC_ARENA_EAGER_COMMIT=0`, the option `navarch` sets for itself).

use std::path::PathBuf;
use std::process::ExitCode;

use navarch_scheduler::{run, SchedulerConfig};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Why the process stopped.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("usage: standalone --kubeconfig <path> [--parallelism N]")]
    Usage,
    #[error("kubeconfig: {0}")]
    Kubeconfig(#[from] kube::config::KubeconfigError),
    #[error("client: {0}")]
    Client(#[from] kube::Error),
    #[error("scheduler: {0}")]
    Scheduler(#[from] navarch_scheduler::SchedulerError),
}

async fn main_inner() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let path = value("--kubeconfig")
        .map(PathBuf::from)
        .ok_or(Error::Usage)?;
    let mut config = SchedulerConfig::default();
    if let Some(p) = value("--parallelism") {
        config.parallelism = p.parse().map_err(|_| Error::Usage)?;
    }
    let kc = kube::config::Kubeconfig::read_from(&path)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    let client = kube::Client::try_from(cfg)?;
    run(config, client).await?;
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("scheduler: {e}");
            ExitCode::FAILURE
        }
    }
}
