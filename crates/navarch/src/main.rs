//! `navarch`: one binary for the whole system.
//!
//! - `navarch server`: the control plane (API server on the embedded store,
//!   controllers, scheduler).
//! - `navarch version`: print the version.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};

mod alloc;
mod join;
mod netplugin;

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
    /// Run a node that joins a server (`--token` from the server's `<data-dir>/node-token`).
    Agent(AgentArgs),
    /// Manage the local node's images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Stop and remove every container and sandbox of a node's data dir (uninstall,
    /// test clean-up). The node's objects in the API are left alone.
    Reset {
        #[arg(long, default_value = "/var/lib/navarch", env = "NAVARCH_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Print version information.
    Version,
}

#[derive(clap::Args)]
struct AgentArgs {
    /// The API server, e.g. https://10.0.0.1:6443.
    #[arg(long, env = "NAVARCH_SERVER")]
    server: String,
    /// The join token (the server's `<data-dir>/node-token`).
    #[arg(long, env = "NAVARCH_TOKEN")]
    token: String,
    /// Where this node keeps its containers, images and credentials.
    #[arg(
        long,
        default_value = "/var/lib/navarch-agent",
        env = "NAVARCH_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Node name (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Port of the agent's HTTPS endpoint (logs, exec).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// Largest number of processes (and threads) in one pod, all containers
    /// together: the pod cgroup's `pids.max` (`-1`: unlimited).
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true)]
    pod_max_pids: i64,
    /// Hard eviction thresholds, as the kubelet's flag:
    /// `memory.available<100Mi,nodefs.available<10%` (the default). Under one,
    /// the node reports MemoryPressure/DiskPressure and evicts pods; `<0%`
    /// turns a signal off (test clusters on a nearly full disk).
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<10%", value_parser = navarch_agent::eviction::Thresholds::parse)]
    eviction_hard: navarch_agent::eviction::Thresholds,
    /// Pod networking: `bridge` or `none` (see `navarch server --help`).
    #[arg(long, default_value = "bridge", value_parser = ["bridge", "none"])]
    pod_network: String,
    /// The cluster's pod range: the server's `--cluster-cidr` (traffic inside it
    /// is not masqueraded).
    #[arg(long, default_value = navarch_network::CLUSTER_CIDR)]
    cluster_cidr: navarch_network::cidr::Ipv4Cidr,
    /// The address other machines reach this node at (default: detected).
    #[arg(long)]
    node_ip: Option<String>,
    #[arg(long, default_value = "info", env = "NAVARCH_LOG")]
    log: String,
}

#[derive(Subcommand)]
enum ImageCommand {
    /// Import an oci-archive or docker-archive tarball (works while the server runs).
    Import {
        #[arg(long, default_value = "/var/lib/navarch", env = "NAVARCH_DATA_DIR")]
        data_dir: PathBuf,
        /// The tarball(s).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// List the images the local node holds.
    Ls {
        #[arg(long, default_value = "/var/lib/navarch", env = "NAVARCH_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Pull an image from a registry.
    Pull {
        #[arg(long, default_value = "/var/lib/navarch", env = "NAVARCH_DATA_DIR")]
        data_dir: PathBuf,
        reference: String,
    },
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
    /// Do not run a node agent (the local node) in this process.
    #[arg(long)]
    disable_agent: bool,
    /// Name of the local node (default: the host name).
    #[arg(long)]
    node_name: Option<String>,
    /// Port of the local node agent's HTTPS endpoint (logs, exec).
    #[arg(long, default_value_t = 10250)]
    agent_port: u16,
    /// Largest number of processes (and threads) in one pod, all containers
    /// together: the pod cgroup's `pids.max` (`-1`: unlimited).
    #[arg(long, default_value_t = 4096, allow_negative_numbers = true)]
    pod_max_pids: i64,
    /// Hard eviction thresholds, as the kubelet's flag:
    /// `memory.available<100Mi,nodefs.available<10%` (the default). Under one,
    /// the node reports MemoryPressure/DiskPressure and evicts pods; `<0%`
    /// turns a signal off (test clusters on a nearly full disk).
    #[arg(long, default_value = "memory.available<100Mi,nodefs.available<10%", value_parser = navarch_agent::eviction::Thresholds::parse)]
    eviction_hard: navarch_agent::eviction::Thresholds,
    /// Pod networking: `bridge` (one IP per pod on a node bridge, service proxy,
    /// cluster DNS) or `none` (pods get a network namespace with loopback only
    /// and report the node's IP). One node per host runs `bridge`.
    #[arg(long, default_value = "bridge", value_parser = ["bridge", "none"])]
    pod_network: String,
    /// The pod range every node's podCIDR is carved from.
    #[arg(long, default_value = navarch_network::CLUSTER_CIDR)]
    cluster_cidr: navarch_network::cidr::Ipv4Cidr,
    /// Prefix length of each node's podCIDR (24: 253 pods per node).
    #[arg(long, default_value_t = 24, value_parser = clap::value_parser!(u8).range(8..=30))]
    node_cidr_mask_size: u8,
    /// Do not run the scheduler in this process.
    #[arg(long)]
    disable_scheduler: bool,
    /// Do not run the controllers in this process.
    #[arg(long)]
    disable_controllers: bool,
    /// Serve HTTP/1.1 watches through hyper like other requests, not from the
    /// watch hub thread (to compare the two: `bench/apiserver.sh`).
    #[arg(long)]
    disable_watch_hub: bool,
    /// Log filter (e.g. `info`, `navarch_apiserver=debug`).
    #[arg(long, default_value = "info", env = "NAVARCH_LOG")]
    log: String,
}

fn main() -> anyhow::Result<()> {
    // The container shim forks: it must run before any thread (tokio) exists.
    if std::env::args().nth(1).as_deref() == Some(navarch_runtime::SHIM_SUBCOMMAND) {
        let args: Vec<String> = std::env::args().skip(1).collect();
        std::process::exit(navarch_runtime::shim_main(&args));
    }
    let cli = Cli::parse();
    match cli.command {
        Command::Version => {
            println!(
                "navarch {} (Kubernetes API v1.33)",
                env!("CARGO_PKG_VERSION")
            );
            Ok(())
        }
        Command::Reset { data_dir } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(reset(&data_dir))
        }
        Command::Image(cmd) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(image(cmd))
        }
        Command::Agent(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::new(&args.log))
                .with_writer(std::io::stderr)
                .init();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?;
            rt.block_on(agent(args))
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
        watch_hub: !args.disable_watch_hub,
    };
    let running = navarch_apiserver::start(cfg, store).await?;
    let client = navarch_controllers::client_from_kubeconfig(&running.kubeconfig).await?;
    if !args.disable_controllers {
        navarch_controllers::nodeipam::configure(
            &args.cluster_cidr.to_string(),
            args.node_cidr_mask_size,
        )?;
        navarch_controllers::spawn_all(client.clone());
    }
    if !args.disable_scheduler {
        spawn_scheduler(running.kubeconfig.clone())?;
    }
    if !args.disable_agent {
        start_agent(&args, &running, client.clone())?;
    }
    eprintln!(
        "navarch server ready on https://{}  (kubeconfig: {})",
        running.addr,
        running.kubeconfig.display()
    );
    eprintln!(
        "join more nodes with: navarch agent --server https://<this host>:{} --token $(cat {})",
        running.addr.port(),
        args.data_dir.join("node-token").display()
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    eprintln!("navarch server stopping");
    Ok(())
}

/// Run the scheduler on a thread of its own, with its own runtime and API
/// client, as upstream runs kube-scheduler in a process of its own. On the
/// server's runtime its one decision loop was one task among the hundreds that
/// serve requests, and under load it fell seconds behind the creates (about
/// 700 pods/s bound end to end against 1,100-1,200 as a separate process,
/// `docs/performance.md`). A thread gets its share of the CPU from the kernel.
fn spawn_scheduler(kubeconfig: PathBuf) -> anyhow::Result<()> {
    std::thread::Builder::new()
        .name("scheduler".into())
        .spawn(move || {
            let run = || -> anyhow::Result<()> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async {
                    let client = navarch_controllers::client_from_kubeconfig(&kubeconfig).await?;
                    let cfg = navarch_scheduler::SchedulerConfig::default();
                    Ok(navarch_scheduler::run(cfg, client).await?)
                })
            };
            if let Err(e) = run() {
                tracing::error!(error = %e, "scheduler stopped");
            }
        })?;
    Ok(())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_lowercase())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// Run directory for container state: under /run (gone at reboot, like the
/// containers), one per data dir so several servers can share a machine.
fn run_root(data_dir: &std::path::Path) -> PathBuf {
    use std::hash::{Hash, Hasher};
    let canon = std::fs::canonicalize(data_dir).unwrap_or_else(|_| data_dir.to_path_buf());
    let mut h = std::collections::hash_map::DefaultHasher::new();
    canon.hash(&mut h);
    PathBuf::from(format!(
        "/run/navarch/{:012x}",
        h.finish() & 0xffff_ffff_ffff
    ))
}

/// What a node needs to run: where it keeps things, who it is, its endpoint's
/// certificate and the CA that signs the API server's client certificate.
struct NodeSetup {
    data_dir: PathBuf,
    node_name: String,
    agent_port: u16,
    node_ip: Option<String>,
    serving: (PathBuf, PathBuf),
    client_ca: PathBuf,
    /// The cluster's pod range when the node runs the bridge network.
    bridge_network: Option<navarch_network::cidr::Ipv4Cidr>,
    pod_pids_limit: Option<i64>,
    eviction: navarch_agent::eviction::Thresholds,
}

/// Runtime (runc), image store and node agent.
fn spawn_node(setup: NodeSetup, client: kube::Client) -> anyhow::Result<()> {
    let mut rcfg = navarch_runtime::RuntimeConfig::new(setup.data_dir.join("runtime"));
    rcfg.run_root = run_root(&setup.data_dir);
    let images = Arc::new(navarch_runtime::LocalImageService::new(&rcfg)?);
    let runtime = Arc::new(navarch_runtime::RuncRuntime::new(rcfg)?);
    let mut cfg = navarch_agent::AgentConfig::new(setup.node_name, setup.data_dir.join("agent"));
    cfg.server_tls = Some(setup.serving);
    cfg.client_ca = Some(setup.client_ca);
    cfg.listen_port = setup.agent_port;
    cfg.node_ip = setup.node_ip;
    cfg.pod_pids_limit = setup.pod_pids_limit;
    cfg.eviction = setup.eviction;
    let network: Option<Arc<dyn navarch_agent::sync::NetworkPlugin>> = match setup.bridge_network {
        Some(cluster_cidr) => {
            // Fails at once when another node on this host runs the bridge.
            let lock = navarch_network::host::HostLock::acquire(
                &navarch_network::exec::NodeNs::host(),
                &setup.data_dir,
            )?;
            cfg.cluster_dns = Some(navarch_network::CLUSTER_DNS_IP.to_string());
            Some(Arc::new(netplugin::BridgePlugin::start(
                client.clone(),
                cfg.node_name.clone(),
                setup.data_dir.clone(),
                cluster_cidr,
                lock,
            )))
        }
        None => None,
    };
    let data_dir = setup.data_dir;
    tokio::spawn(async move {
        import_dropped_images(&data_dir, &images).await;
        if let Err(e) = navarch_agent::run_with_network(cfg, client, images, runtime, network).await
        {
            tracing::error!(error = %e, "node agent stopped");
        }
    });
    Ok(())
}

/// The server's own node, with a serving certificate from the cluster CA.
fn start_agent(
    args: &ServerArgs,
    running: &navarch_apiserver::Running,
    client: kube::Client,
) -> anyhow::Result<()> {
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    let pki_dir = args.data_dir.join("agent-pki");
    std::fs::create_dir_all(&pki_dir)?;
    let (cert, key) = (pki_dir.join("tls.crt"), pki_dir.join("tls.key"));
    if !cert.exists() || !key.exists() {
        let mut sans = navarch_apiserver::pki::host_addresses();
        sans.push(node_name.clone());
        sans.push("localhost".to_string());
        let pair = running
            .pki
            .serving_cert(&format!("system:node:{node_name}"), sans)?;
        std::fs::write(&cert, &pair.cert_pem)?;
        navarch_apiserver::pki::write_private(&key, pair.key_pem.as_bytes())?;
    }
    spawn_node(
        NodeSetup {
            data_dir: args.data_dir.clone(),
            node_name,
            agent_port: args.agent_port,
            node_ip: None,
            serving: (cert, key),
            client_ca: running.pki.dir.join("ca.crt"),
            bridge_network: (args.pod_network == "bridge").then_some(args.cluster_cidr),
            pod_pids_limit: (args.pod_max_pids > 0).then_some(args.pod_max_pids),
            eviction: args.eviction_hard.clone(),
        },
        client,
    )
}

/// `navarch agent`: join a server (once; credentials are kept) and run a node.
async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    let pki_dir = args.data_dir.join("pki");
    std::fs::create_dir_all(&pki_dir)?;
    let files =
        ["ca.crt", "client.crt", "client.key", "tls.crt", "tls.key"].map(|f| pki_dir.join(f));
    if !files.iter().all(|f| f.exists()) {
        let mut addrs = navarch_apiserver::pki::host_addresses();
        if let Some(ip) = &args.node_ip {
            addrs.push(ip.clone());
        }
        let creds = join::join(&args.server, &args.token, &node_name, addrs).await?;
        std::fs::write(&files[0], &creds.ca_cert)?;
        std::fs::write(&files[1], &creds.client_cert)?;
        navarch_apiserver::pki::write_private(&files[2], creds.client_key.as_bytes())?;
        std::fs::write(&files[3], &creds.serving_cert)?;
        navarch_apiserver::pki::write_private(&files[4], creds.serving_key.as_bytes())?;
    }
    let b64 = |p: &PathBuf| -> anyhow::Result<String> {
        use base64::Engine;
        Ok(base64::engine::general_purpose::STANDARD.encode(std::fs::read(p)?))
    };
    let kubeconfig = args.data_dir.join("kubeconfig");
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: navarch\n  cluster:\n    server: {}\n    certificate-authority-data: {}\nusers:\n- name: node\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: navarch\n  context: {{cluster: navarch, user: node}}\ncurrent-context: navarch\n",
        args.server,
        b64(&files[0])?,
        b64(&files[1])?,
        b64(&files[2])?
    );
    navarch_apiserver::pki::write_private(&kubeconfig, text.as_bytes())?;
    let client = navarch_controllers::client_from_kubeconfig(&kubeconfig).await?;
    spawn_node(
        NodeSetup {
            data_dir: args.data_dir.clone(),
            node_name: node_name.clone(),
            agent_port: args.agent_port,
            node_ip: args.node_ip.clone(),
            serving: (files[3].clone(), files[4].clone()),
            client_ca: files[0].clone(),
            bridge_network: (args.pod_network == "bridge").then_some(args.cluster_cidr),
            pod_pids_limit: (args.pod_max_pids > 0).then_some(args.pod_max_pids),
            eviction: args.eviction_hard.clone(),
        },
        client,
    )?;
    eprintln!("navarch agent: node {node_name} joined {}", args.server);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    Ok(())
}

fn image_service(data_dir: &std::path::Path) -> anyhow::Result<navarch_runtime::LocalImageService> {
    let cfg = navarch_runtime::RuntimeConfig::new(data_dir.join("runtime"));
    Ok(navarch_runtime::LocalImageService::new(&cfg)?)
}

async fn image(cmd: ImageCommand) -> anyhow::Result<()> {
    use navarch_runtime::ImageService;
    match cmd {
        ImageCommand::Import { data_dir, files } => {
            let svc = image_service(&data_dir)?;
            for f in files {
                for img in svc.import(&f).await? {
                    println!("imported {} {}", img.references.join(","), img.id);
                }
            }
        }
        ImageCommand::Ls { data_dir } => {
            let svc = image_service(&data_dir)?;
            println!("{:<60} {:<20} {:>10}", "IMAGE", "ID", "SIZE");
            for img in svc.list().await? {
                let id = img.id.trim_start_matches("sha256:");
                let name = img
                    .references
                    .first()
                    .cloned()
                    .unwrap_or_else(|| "<none>".into());
                println!(
                    "{:<60} {:<20} {:>10}",
                    name,
                    &id[..id.len().min(12)],
                    img.size
                );
            }
        }
        ImageCommand::Pull {
            data_dir,
            reference,
        } => {
            let svc = image_service(&data_dir)?;
            let progress = |p: navarch_runtime::PullProgress| {
                let total = p.total.map(|t| t.to_string()).unwrap_or_else(|| "?".into());
                eprintln!("{}: {}/{} bytes", p.layer, p.downloaded, total);
            };
            let img = svc
                .pull(&reference, &Default::default(), Some(&progress))
                .await?;
            println!("pulled {} {}", reference, img.id);
        }
    }
    Ok(())
}

/// Tarballs dropped in `<data-dir>/images/` are imported at start (air-gapped
/// machines).
async fn import_dropped_images(
    data_dir: &std::path::Path,
    images: &navarch_runtime::LocalImageService,
) {
    use navarch_runtime::ImageService;
    let dir = data_dir.join("images");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let is_tar = p.extension().map(|x| x == "tar").unwrap_or(false);
        if !is_tar {
            continue;
        }
        match images.import(&p).await {
            Ok(imgs) => {
                for i in imgs {
                    tracing::info!(image = %i.references.join(","), file = %p.display(), "imported image");
                }
            }
            Err(e) => {
                tracing::warn!(file = %p.display(), error = %e, "could not import image tarball")
            }
        }
    }
}

/// Stop and remove all containers and sandboxes of the node in `data_dir`.
async fn reset(data_dir: &std::path::Path) -> anyhow::Result<()> {
    use navarch_runtime::ContainerRuntime;
    let mut rcfg = navarch_runtime::RuntimeConfig::new(data_dir.join("runtime"));
    rcfg.run_root = run_root(data_dir);
    let runtime = navarch_runtime::RuncRuntime::new(rcfg)?;
    let mut failures = 0;
    for c in runtime.list_containers().await? {
        let _ = runtime
            .stop_container(&c.id, std::time::Duration::from_secs(0))
            .await;
        if let Err(e) = runtime.remove_container(&c.id).await {
            eprintln!("container {}: {e}", c.id);
            failures += 1;
        }
    }
    for sb in runtime.list_sandboxes().await? {
        if let Err(e) = runtime.remove_sandbox(&sb.id).await {
            eprintln!("sandbox {}: {e}", sb.id);
            failures += 1;
        }
    }
    match runtime.remove_orphan_sandboxes().await {
        Ok(0) => {}
        Ok(n) => eprintln!("removed {n} sandbox directories without metadata"),
        Err(e) => {
            eprintln!("sandboxes without metadata: {e}");
            failures += 1;
        }
    }
    if failures > 0 {
        anyhow::bail!("{failures} containers or sandboxes could not be removed");
    }
    // runc's state for this node (under /run): empty now.
    let run_dir = run_root(data_dir);
    match std::fs::remove_dir_all(&run_dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            eprintln!("removing {}: {e}", run_dir.display())
        }
        _ => {}
    }
    // The bridge, nftables tables and routes, if this data dir's node set them
    // up last and no node runs now.
    use navarch_network::host::{reset_owned, ResetOutcome};
    match reset_owned(&navarch_network::exec::NodeNs::host(), data_dir).await? {
        ResetOutcome::Removed => eprintln!("removed the pod network (bridge, nftables, routes)"),
        ResetOutcome::InUse => {
            eprintln!("pod network left alone: a navarch node on this host still runs it")
        }
        ResetOutcome::NotOwned => {}
    }
    Ok(())
}
