//! Exec round trip through the API server (issue 5, "Speed": exec round trip
//! ≤ 50 ms), with the official Rust client (`kube`, WebSocket v5.channel.k8s.io).
//!
//! Two figures, over `--count` runs each, against a running pod:
//! - `exec_true`: open an exec of `true` and wait for its exit status
//!   (kube → API server → agent → `runc exec` → status back);
//! - `exec_echo`: one interactive session of `cat`; a line written to stdin
//!   comes back on stdout (the round trip a user typing in `kubectl exec -it`
//!   feels).
//!
//! Run by `bench/exec.sh`, which also times a bare `runc exec` of the same
//! container and `kubectl exec` in the same invocation.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use kube::api::AttachParams;
use kube::Api;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn arg(name: &str) -> Option<String> {
    let mut it = std::env::args();
    while let Some(a) = it.next() {
        if a == name {
            return it.next();
        }
    }
    None
}

fn report(name: &str, mut ms: Vec<f64>) {
    if ms.is_empty() {
        println!("{name}_count 0");
        return;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| ms[((ms.len() as f64 - 1.0) * p).round() as usize];
    println!("{name}_count {}", ms.len());
    println!("{name}_p50_ms {:.2}", q(0.5));
    println!("{name}_p99_ms {:.2}", q(0.99));
    println!("{name}_max_ms {:.2}", q(1.0));
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let kubeconfig = PathBuf::from(arg("--kubeconfig").unwrap_or_else(|| "kubeconfig".into()));
    let pod = arg("--pod").unwrap_or_else(|| "rtt".into());
    let count: usize = arg("--count").and_then(|s| s.parse().ok()).unwrap_or(100);
    let client = navarch_controllers::client_from_kubeconfig(&kubeconfig).await?;
    let pods: Api<Pod> = Api::namespaced(client, "default");

    // warm-up: the TLS connection pool and the agent's first exec
    for _ in 0..3 {
        let mut p = pods
            .exec(&pod, ["true"], &AttachParams::default().stderr(false))
            .await?;
        if let Some(s) = p.take_status() {
            s.await;
        }
    }

    let mut true_ms = Vec::with_capacity(count);
    for _ in 0..count {
        let start = Instant::now();
        let mut p = pods
            .exec(&pod, ["true"], &AttachParams::default().stderr(false))
            .await?;
        let status = match p.take_status() {
            Some(s) => s.await,
            None => None,
        };
        let ok = status.and_then(|s| s.status).as_deref() == Some("Success");
        if ok {
            true_ms.push(start.elapsed().as_secs_f64() * 1000.0);
        }
    }
    report("exec_true", true_ms);

    let mut p = pods
        .exec(
            &pod,
            ["cat"],
            &AttachParams::default()
                .stdin(true)
                .stdout(true)
                .stderr(false),
        )
        .await?;
    let (Some(mut stdin), Some(mut stdout)) = (p.stdin(), p.stdout()) else {
        anyhow::bail!("exec session without stdin/stdout");
    };
    let mut echo_ms = Vec::with_capacity(count);
    let mut buf = [0u8; 64];
    for i in 0..count {
        let line = format!("ping {i}\n");
        let start = Instant::now();
        stdin.write_all(line.as_bytes()).await?;
        stdin.flush().await?;
        let mut got = 0;
        while got < line.len() {
            let n = tokio::time::timeout(Duration::from_secs(5), stdout.read(&mut buf[got..]))
                .await??;
            if n == 0 {
                anyhow::bail!("stdout closed");
            }
            got += n;
        }
        echo_ms.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    drop(stdin);
    report("exec_echo", echo_ms);
    Ok(())
}
