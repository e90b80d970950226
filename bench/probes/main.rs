//! Probe cost benchmark (issue 6, "Speed"): 100 pods with an httpGet
//! readiness probe and a tcpSocket liveness probe, every second, for 20 s.
//! Reports the agent-side CPU time (user+sys of this process; the HTTP server
//! runs as a child process so its cost is not counted) as % of one core.
//!
//! `cargo run --release -p navarch-agent --example probe-bench [-- --pods N --secs S --netns]`
//! With `--netns` every probe connects from inside a network namespace (this
//! process's own, via `/proc/self/ns/net`), exercising the setns thread path
//! used for pods without a routable IP (needs root).

use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{
    Container, HTTPGetAction, ObjectReference, Probe, TCPSocketAction,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use navarch_agent::events::Recorder;
use navarch_agent::handlers::Target;
use navarch_agent::probes::{EventSink, PodProbes};
use navarch_runtime::{
    ContainerConfig, ContainerRuntime, ContainerStatus, ExecOutput, Result, RuntimeError, Sandbox,
    SandboxConfig,
};

struct NoRuntime;

#[async_trait::async_trait]
impl ContainerRuntime for NoRuntime {
    async fn create_sandbox(&self, _: &SandboxConfig) -> Result<Sandbox> {
        Err(RuntimeError::Oci("bench".into()))
    }
    async fn remove_sandbox(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn list_sandboxes(&self) -> Result<Vec<Sandbox>> {
        Ok(Vec::new())
    }
    async fn create_container(&self, _: &Sandbox, _: &ContainerConfig) -> Result<String> {
        Err(RuntimeError::Oci("bench".into()))
    }
    async fn start_container(&self, _: &str) -> Result<()> {
        Ok(())
    }
    async fn stop_container(&self, _: &str, _: Duration) -> Result<()> {
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
    async fn exec_sync(&self, _: &str, _: &[String], _: Duration) -> Result<ExecOutput> {
        Err(RuntimeError::Oci("bench".into()))
    }
}

fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the zeroed struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(ru.ru_utime) + t(ru.ru_stime)
}

/// The child: one tiny HTTP/1.1 listener per pod (as every pod has its own
/// server), answering 200 to everything. Prints the ports, one per line.
fn serve(count: usize) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut ports = String::new();
        for _ in 0..count {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", 0))
                .await
                .expect("bind");
            ports.push_str(&format!("{}\n", l.local_addr().expect("addr").port()));
            tokio::spawn(async move {
                loop {
                    let Ok((mut s, _)) = l.accept().await else {
                        continue;
                    };
                    tokio::spawn(async move {
                        let mut buf = [0u8; 1024];
                        let _ = s.read(&mut buf).await;
                        let _ = s
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await;
                    });
                }
            });
        }
        print!("{ports}");
        use std::io::Write;
        let _ = std::io::stdout().flush();
        std::future::pending::<()>().await;
    });
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse::<u64>().ok())
    };
    if let Some(count) = arg("--serve") {
        serve(count as usize);
        return;
    }
    let pods = arg("--pods").unwrap_or(100) as usize;
    let secs = arg("--secs").unwrap_or(20);
    let netns = args.iter().any(|a| a == "--netns");
    let mut child = std::process::Command::new(&args[0])
        .args(["--serve", &pods.to_string()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("spawn server");
    let ports: Vec<u16> = {
        use std::io::BufRead;
        let out = child.stdout.take().expect("child stdout");
        std::io::BufReader::new(out)
            .lines()
            .take(pods)
            .map(|l| l.ok().and_then(|l| l.trim().parse().ok()).unwrap_or(0))
            .collect()
    };

    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (cpu, probes_run) = rt.block_on(async move {
        let (tx, mut rx) =
            tokio::sync::mpsc::unbounded_channel::<navarch_agent::events::EventRecord>();
        let failures = tokio::spawn(async move {
            let mut n = 0u64;
            while let Some(ev) = rx.recv().await {
                if n == 0 {
                    println!("first failure: {}", ev.message);
                }
                n += 1;
            }
            n
        });
        let runtime: Arc<dyn ContainerRuntime> = Arc::new(NoRuntime);
        let probe = |p: Probe| Probe {
            period_seconds: Some(1),
            ..p
        };
        let mut all = Vec::new();
        for (i, port) in ports.iter().enumerate() {
            let c = Container {
                name: "web".into(),
                readiness_probe: Some(probe(Probe {
                    http_get: Some(HTTPGetAction {
                        path: Some("/healthz".into()),
                        port: IntOrString::Int(*port as i32),
                        ..Default::default()
                    }),
                    ..Default::default()
                })),
                liveness_probe: Some(probe(Probe {
                    tcp_socket: Some(TCPSocketAction {
                        port: IntOrString::Int(*port as i32),
                        ..Default::default()
                    }),
                    failure_threshold: Some(1_000_000),
                    ..Default::default()
                })),
                ..Default::default()
            };
            let mut pp = PodProbes::default();
            let target = Target {
                default_host: "127.0.0.1".into(),
                netns: netns.then(|| "/proc/self/ns/net".into()),
                ports: Vec::new(),
            };
            pp.ensure(
                &format!("c{i}"),
                &c,
                runtime.clone(),
                target,
                EventSink {
                    recorder: Recorder::from_sender(tx.clone()),
                    object: ObjectReference::default(),
                },
                Duration::ZERO,
            );
            all.push(pp);
        }
        drop(tx);
        // warm up one period, then measure
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let ready = all
            .iter()
            .enumerate()
            .filter(|(i, p)| p.state(&format!("c{i}")).is_some_and(|s| s.ready))
            .count();
        let c0 = cpu_seconds();
        let t0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(secs)).await;
        let cpu = (cpu_seconds() - c0) / t0.elapsed().as_secs_f64();
        drop(all);
        let failed = failures.await.unwrap_or(0);
        println!("ready after warm-up: {ready}/{pods}; failed probe runs: {failed}");
        (cpu, pods as u64 * 2 * secs)
    });
    let _ = child.kill();
    let _ = child.wait();
    println!(
        "{pods} pods x (httpGet + tcpSocket) every 1 s{}: {:.2}% of one core (~{probes_run} probe runs)",
        if netns { ", via netns threads" } else { "" },
        cpu * 100.0
    );
}
