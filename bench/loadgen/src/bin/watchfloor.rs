//! The watch step's baseline (see `navarch_loadgen::floor`): a bare TLS
//! fan-out to N watches at a fixed event rate, read by the watch step's
//! readers, on this machine. Prints `name value` lines like `loadgen`.
//!
//! watchfloor --watchers 1000 --rate 100 --duration-secs 10 --event-bytes 1750

use std::time::Duration;

use clap::Parser;
use navarch_loadgen::floor::{self, FloorServer, FloorSpec};

#[derive(Parser, Debug)]
#[command(about = "Watch fan-out baseline: TLS and loopback TCP with no API server")]
struct Cli {
    #[arg(long, default_value_t = 1000)]
    watchers: usize,
    /// Events per second, each to every watch.
    #[arg(long, default_value_t = 100.0)]
    rate: f64,
    #[arg(long, default_value_t = 10.0)]
    duration_secs: f64,
    /// Bytes of one event line (a bench pod's ADDED event is about 1,750).
    #[arg(long, default_value_t = 1750)]
    event_bytes: usize,
    /// How the server writes: `tokio` (a task per connection on a two-worker
    /// runtime, as the API server) or `thread` (one thread writes every
    /// connection in turn, rustls driven by hand, no async runtime).
    #[arg(long, default_value = "tokio", value_parser = ["tokio", "thread"])]
    server: String,
    /// Prefix of the printed figures.
    #[arg(long, default_value = "floor")]
    label: String,
}

fn main() {
    let cli = Cli::parse();
    let duration = match Duration::try_from_secs_f64(cli.duration_secs) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("watchfloor: duration {}: {e}", cli.duration_secs);
            std::process::exit(2);
        }
    };
    let spec = FloorSpec {
        watchers: cli.watchers,
        rate: cli.rate,
        duration,
        event_bytes: cli.event_bytes,
        server: if cli.server == "thread" {
            FloorServer::Thread
        } else {
            FloorServer::Tokio
        },
    };
    let r = match floor::run(&spec) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("watchfloor: {e}");
            std::process::exit(1);
        }
    };
    let l = &cli.label;
    let ms = |us: u64| us as f64 / 1000.0;
    println!("{l}_watchers {}", r.watchers);
    println!("{l}_events {}", r.events);
    println!(
        "{l}_missing_events {}",
        r.expected.saturating_sub(r.received)
    );
    println!("{l}_delay_p50_ms {:.3}", ms(r.delay_us.quantile(0.50)));
    println!("{l}_delay_p99_ms {:.3}", ms(r.delay_us.quantile(0.99)));
    println!("{l}_delay_max_ms {:.3}", ms(r.delay_us.max()));
    println!("{l}_server_cpu_s {:.2}", r.server_cpu_s);
    println!("{l}_reader_cpu_s {:.2}", r.reader_cpu_s);
    println!("{l}_server_writes {}", r.server_writes);
    if r.received > 0 {
        println!(
            "{l}_server_cpu_per_delivery_us {:.2}",
            r.server_cpu_s * 1e6 / r.received as f64
        );
    }
    if let Some(e) = r.first_error {
        eprintln!("{l}: first reader error ({} in all): {e}", r.reader_errors);
    }
}
