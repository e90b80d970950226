//! Memory of the embedded store holding many keys.
//!
//! ```text
//! cargo run --release -p navarch-store --example store_mem -- [--keys 100000] [--value-bytes 600]
//! ```
//!
//! Puts `--keys` distinct keys shaped like the API server's
//! (`/registry/core/configmaps/bench/cm-<i>`) with values of `--value-bytes`,
//! 32 writers at a time, then prints the process's resident memory before and
//! after (`store_mem_rss_before_mb`, `store_mem_rss_after_mb`) and the
//! resident bytes per key (`store_mem_bytes_per_key`). Linux only (reads
//! `/proc/self/status`).

use std::sync::Arc;

use bytes::Bytes;
use navarch_store::embedded::{EmbeddedOptions, EmbeddedStore};
use navarch_store::{Precondition, Store};

fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let keys = arg("--keys", 100_000);
    let value_bytes = arg("--value-bytes", 600);
    let dir = tempfile::tempdir()?;
    let store = EmbeddedStore::open(dir.path(), EmbeddedOptions::default())?;
    let before = rss_kb();
    let writers = 32;
    let mut tasks = Vec::new();
    for w in 0..writers {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < keys {
                // Built the way the API server builds values: a growing Vec.
                let mut v = Vec::with_capacity(128);
                v.resize(value_bytes, b'x');
                let key = format!("/registry/core/configmaps/bench/cm-{i}");
                store.put(&key, Bytes::from(v), Precondition::None).await?;
                i += writers;
            }
            Ok::<_, navarch_store::StoreError>(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let after = rss_kb();
    println!("store_mem_keys {keys}");
    println!("store_mem_rss_before_mb {:.1}", before as f64 / 1024.0);
    println!("store_mem_rss_after_mb {:.1}", after as f64 / 1024.0);
    println!(
        "store_mem_bytes_per_key {:.0}",
        (after.saturating_sub(before) * 1024) as f64 / keys.max(1) as f64
    );
    Ok(())
}
