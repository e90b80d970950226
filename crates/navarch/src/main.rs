//! `navarch`: one binary for the whole system.
//!
//! - `navarch server`: the control plane (API server on the embedded store).
//! - `navarch version`: print the version.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "navarch",
    version,
    about = "A Kubernetes-compatible container orchestrator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the control plane: API server on the embedded store.
    Server(ServerArgs),
    /// Print version information.
    Version,
}

#[derive(clap::Args)]
struct ServerArgs {
    /// Where the store, certificates and kubeconfig live.
    #[arg(long, default_value = "/var/lib/navarch", env = "NAVARCH_DATA_DIR")]
    data_dir: PathBuf,
    /// HTTPS port of the API server.
    #[arg(long, default_value_t = 6443)]
    https_port: u16,
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind_address: IpAddr,
    /// Extra subject alternative names (DNS names or IPs) for the serving certificate.
    #[arg(long = "tls-san")]
    tls_sans: Vec<String>,
    /// Log filter (e.g. `info`, `navarch_apiserver=debug`).
    #[arg(long, default_value = "info", env = "NAVARCH_LOG")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "navarch {} (Kubernetes API v1.33)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Server(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
                .with_writer(std::io::stderr)
                .init();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(server(args))
        }
    }
}

async fn server(args: ServerArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.data_dir)?;
    let store = navarch_store::embedded::EmbeddedStore::open(
        &args.data_dir.join("store"),
        navarch_store::embedded::EmbeddedOptions::default(),
    )?;
    let store: Arc<dyn navarch_store::Store> = store;
    let cfg = navarch_apiserver::ServerConfig {
        data_dir: args.data_dir.clone(),
        bind_address: args.bind_address,
        https_port: args.https_port,
        tls_sans: args.tls_sans.clone(),
    };
    let running = navarch_apiserver::start(cfg, store).await?;
    let client = navarch_controllers::client_from_kubeconfig(&running.kubeconfig).await?;
    navarch_controllers::spawn_all(client);
    eprintln!(
        "navarch server ready on https://{}  (kubeconfig: {})",
        running.addr,
        running.kubeconfig.display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("navarch server stopping");
    Ok(())
}
