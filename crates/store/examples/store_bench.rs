//! Throughput benchmark of the embedded store.
//!
//! ```text
//! cargo run --release -p navarch-store --example store_bench -- [DIR] \
//!     [--writers 32] [--puts 300] [--value-bytes 500] [--readers 32] [--gets 5000]
//! ```
//!
//! `--puts` and `--gets` are per writer / per reader. Without DIR a fresh
//! directory under /tmp is used and removed afterwards. Prints
//! `store_put_per_sec`, `store_get_per_sec`, `store_put_p50_ms` and
//! `store_put_p99_ms` lines (one `name value` pair per line).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use navarch_store::embedded::{EmbeddedOptions, EmbeddedStore};
use navarch_store::{Precondition, Store};

struct Args {
    dir: Option<PathBuf>,
    writers: usize,
    puts: usize,
    value_bytes: usize,
    readers: usize,
    gets: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        dir: None,
        writers: 32,
        puts: 300,
        value_bytes: 500,
        readers: 32,
        gets: 5000,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut number = |name: &str| -> Result<usize, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--writers" => args.writers = number("--writers")?.max(1),
            "--puts" => args.puts = number("--puts")?.max(1),
            "--value-bytes" => args.value_bytes = number("--value-bytes")?,
            "--readers" => args.readers = number("--readers")?.max(1),
            "--gets" => args.gets = number("--gets")?,
            "-h" | "--help" => {
                return Err("usage: store_bench [DIR] [--writers N] [--puts M] \
                            [--value-bytes B] [--readers R] [--gets G]"
                    .into())
            }
            other if !other.starts_with('-') && args.dir.is_none() => {
                args.dir = Some(PathBuf::from(other))
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(args)
}

fn percentile_ms(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args()?;
    let (dir, temporary) = match &args.dir {
        Some(dir) => (dir.clone(), false),
        None => (
            std::env::temp_dir().join(format!("navarch-store-bench-{}", std::process::id())),
            true,
        ),
    };
    let run = std::process::id();

    let open_started = Instant::now();
    let store = EmbeddedStore::open(&dir, EmbeddedOptions::default())?;
    println!(
        "store_open_ms {:.1}",
        open_started.elapsed().as_secs_f64() * 1000.0
    );
    let start_rev = store.current_revision();
    let syncs_before = store.wal_syncs();

    // Creates: each writer its own keys, ~value_bytes each.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..args.writers {
        let store = Arc::clone(&store);
        let (puts, value_bytes) = (args.puts, args.value_bytes);
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(puts);
            for i in 0..puts {
                let key = format!("/bench/{run}/w{w:03}/obj-{i:06}");
                let value = Bytes::from(vec![b'a' + (i % 26) as u8; value_bytes]);
                let t = Instant::now();
                store.put(&key, value, Precondition::MustNotExist).await?;
                latencies.push(t.elapsed());
            }
            Ok::<_, navarch_store::StoreError>(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(args.writers * args.puts);
    for t in tasks {
        latencies.extend(t.await??);
    }
    let put_secs = started.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let total_puts = latencies.len();
    println!("store_put_per_sec {:.1}", total_puts as f64 / put_secs);
    println!("store_put_p50_ms {:.3}", percentile_ms(&latencies, 0.50));
    println!("store_put_p99_ms {:.3}", percentile_ms(&latencies, 0.99));
    let syncs = store.wal_syncs() - syncs_before;
    println!("store_put_fsyncs {syncs}");
    println!(
        "store_put_per_fsync {:.1}",
        total_puts as f64 / syncs.max(1) as f64
    );

    // Gets of random existing keys.
    let started = Instant::now();
    let mut tasks = Vec::new();
    for r in 0..args.readers {
        let store = Arc::clone(&store);
        let (gets, writers, puts) = (args.gets, args.writers, args.puts);
        tasks.push(tokio::spawn(async move {
            let mut x: u64 = 0x9e37_79b9_7f4a_7c15 ^ (r as u64 + 1);
            let mut found = 0usize;
            for _ in 0..gets {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let w = (x % writers as u64) as usize;
                let i = ((x >> 32) % puts as u64) as usize;
                let key = format!("/bench/{run}/w{w:03}/obj-{i:06}");
                if store.get(&key).await?.is_some() {
                    found += 1;
                }
            }
            Ok::<_, navarch_store::StoreError>(found)
        }));
    }
    let mut found = 0;
    for t in tasks {
        found += t.await??;
    }
    let get_secs = started.elapsed().as_secs_f64();
    let total_gets = args.readers * args.gets;
    println!("store_get_per_sec {:.1}", total_gets as f64 / get_secs);
    if found != total_gets {
        eprintln!(
            "warning: {} of {total_gets} gets missed",
            total_gets - found
        );
    }
    println!("store_revisions {}", store.current_revision() - start_rev);

    store.shutdown();
    drop(store);
    if temporary {
        std::fs::remove_dir_all(&dir)?;
    }
    Ok(())
}
