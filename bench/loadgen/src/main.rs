//! `loadgen`: drive a navarch API server over HTTPS and print `name value` lines.
//!
//! ```text
//! loadgen --addr 127.0.0.1:6443 --pki DIR/pki namespace bench
//! loadgen --addr ... --pki ... crud --op create --clients 32 --duration-secs 10 --label api_create
//! loadgen --addr ... --pki ... crud --op get --existing 30000 --label api_get
//! loadgen --addr ... --pki ... watch --watchers 1000 --rate 100 --duration-secs 10
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use navarch_loadgen::crud::{self, LoadSpec, Op};
use navarch_loadgen::watch::{self, WatchReader, WatchSpec};
use navarch_loadgen::{Error, Histogram, Protocol, Target};

/// mimalloc, as the server uses: with 1,000 watch connections on the same two
/// cores as the server, glibc's malloc was about 7 % of the load generator's CPU.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for the navarch API server")]
struct Cli {
    /// Server address (host:port); only loopback is expected.
    #[arg(long, default_value = "127.0.0.1:6443")]
    addr: SocketAddr,
    /// Directory holding ca.crt, admin.crt and admin.key.
    #[arg(long)]
    pki: PathBuf,
    /// Speak HTTP/1.1 (keep-alive) instead of HTTP/2.
    #[arg(long)]
    http1: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum OpArg {
    Create,
    Get,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create a namespace (an existing one is fine).
    Namespace {
        /// Namespace name.
        name: String,
    },
    /// Configmap create or get load from N persistent connections.
    Crud {
        #[arg(long, value_enum)]
        op: OpArg,
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// Stop after this many seconds...
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        /// ...or after this many requests in total.
        #[arg(long)]
        max_requests: Option<u64>,
        #[arg(long, default_value = "bench")]
        namespace: String,
        #[arg(long, default_value = "cm-")]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        start_index: u64,
        #[arg(long, default_value_t = 500)]
        value_bytes: usize,
        /// For gets: configmaps `<prefix><start-index>..+existing` exist.
        #[arg(long, default_value_t = 0)]
        existing: u64,
        /// Prefix of the printed figures.
        #[arg(long, default_value = "api")]
        label: String,
    },
    /// Open pod watches, create pods at a fixed rate, measure event delays.
    Watch {
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Watches per HTTP/2 connection (1 = a connection each).
        #[arg(long, default_value_t = 1)]
        watchers_per_conn: usize,
        /// Pods created per second.
        #[arg(long, default_value_t = 100.0)]
        rate: f64,
        #[arg(long, default_value_t = 10.0)]
        duration_secs: f64,
        #[arg(long, default_value_t = 4)]
        creators: usize,
        #[arg(long, default_value = "bench-watch")]
        namespace: String,
        #[arg(long, default_value = "bw-")]
        prefix: String,
        /// Seconds to wait for late events after the last create.
        #[arg(long, default_value_t = 10.0)]
        grace_secs: f64,
        /// Write one line per pod (create sent, answered, mean and worst delay
        /// over the watchers; ms) to this file.
        #[arg(long)]
        per_pod_file: Option<std::path::PathBuf>,
        /// What reads the watches: `tasks` (a task per watch, through hyper,
        /// HTTP/2 unless --http1) or `epoll` (one thread, HTTP/1.1).
        #[arg(long, default_value = "tasks", value_parser = ["tasks", "epoll"])]
        reader: String,
    },
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn print_latency(label: &str, h: &Histogram) {
    println!("{label}_p50_ms {:.3}", ms(h.quantile(0.50)));
    println!("{label}_p99_ms {:.3}", ms(h.quantile(0.99)));
    println!("{label}_max_ms {:.3}", ms(h.max()));
}

fn secs(s: f64) -> Result<Duration, Error> {
    Duration::try_from_secs_f64(s).map_err(|e| Error::Param(format!("duration {s}: {e}")))
}

async fn run(cli: Cli) -> Result<(), Error> {
    let protocol = if cli.http1 {
        Protocol::Http1
    } else {
        Protocol::Http2
    };
    let target = Target::from_pki_dir(cli.addr, protocol, &cli.pki)?;
    match cli.cmd {
        Cmd::Namespace { name } => crud::ensure_namespace(&target, &name).await,
        Cmd::Crud {
            op,
            clients,
            duration_secs,
            max_requests,
            namespace,
            prefix,
            start_index,
            value_bytes,
            existing,
            label,
        } => {
            let spec = LoadSpec {
                op: match op {
                    OpArg::Create => Op::Create,
                    OpArg::Get => Op::Get,
                },
                clients,
                duration: secs(duration_secs)?,
                max_requests,
                namespace,
                prefix,
                start_index,
                value_bytes,
                existing,
            };
            let r = crud::run(&target, &spec).await?;
            println!("{label}_per_sec {:.1}", r.per_sec());
            println!("{label}_ok {}", r.ok);
            println!("{label}_errors {}", r.errors);
            println!("{label}_elapsed_s {:.3}", r.elapsed.as_secs_f64());
            print_latency(&label, &r.latency_us);
            if let Some(e) = r.first_error {
                eprintln!("{label}: first error: {e}");
            }
            Ok(())
        }
        Cmd::Watch {
            watchers,
            watchers_per_conn,
            rate,
            duration_secs,
            creators,
            namespace,
            prefix,
            grace_secs,
            per_pod_file,
            reader,
        } => {
            let spec = WatchSpec {
                watchers,
                watchers_per_conn,
                rate,
                duration: secs(duration_secs)?,
                creators,
                namespace,
                prefix,
                grace: secs(grace_secs)?,
                per_pod_file,
                reader: if reader == "epoll" {
                    WatchReader::Epoll
                } else {
                    WatchReader::Tasks
                },
            };
            let r = watch::run(&target, &spec).await?;
            println!("watch_watchers {}", r.watchers);
            println!("watch_pods_created {}", r.created);
            println!("watch_create_errors {}", r.create_errors);
            println!("watch_create_per_sec {:.1}", r.create_per_sec);
            print_latency("watch_create", &r.create_latency_us);
            println!("watch_expected_events {}", r.expected_events);
            println!("watch_received_events {}", r.received_events);
            println!(
                "watch_missing_events {}",
                r.expected_events.saturating_sub(r.received_events)
            );
            print_latency("watch_delay", &r.delay_from_response_us);
            print_latency("watch_delay_from_send", &r.delay_from_send_us);
            println!("watch_events_before_response {}", r.events_before_response);
            println!("watch_stream_errors {}", r.watch_errors);
            if let Some(e) = r.first_error {
                eprintln!("watch: first error: {e}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("loadgen: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
