//! Everything a node agent starts for networking, in one call: wait for the
//! Node's podCIDR, set up the bridge, then run the route controller, the
//! service proxy and the node-local cluster DNS server (on the bridge address,
//! reached through the DNS service IP by the proxy's DNAT).

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::{Api, Client};
use parking_lot::RwLock;

use crate::cidr::Ipv4Cidr;
use crate::dns::{self, DnsServer, Handler, Zone};
use crate::exec::{in_netns, NodeNs};
use crate::pod::{node_pod_cidr, BridgeConfig, BridgeNetwork};
use crate::proxy::{self, ProxyConfig};
use crate::Error;

/// Settings of [`start`].
#[derive(Clone, Debug)]
pub struct NodeNetworkConfig {
    /// This node's name.
    pub node_name: String,
    /// Where pod leases are kept (e.g. `<agent root>/network`).
    pub state_dir: PathBuf,
    /// Where links and rules go (the host, or a namespace in tests).
    pub node: NodeNs,
    /// Cluster pod range (10.42.0.0/16).
    pub cluster_cidr: Ipv4Cidr,
    /// Service range (10.43.0.0/16).
    pub service_cidr: Ipv4Cidr,
    /// The cluster DNS service IP (10.43.0.10).
    pub cluster_dns: Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub cluster_domain: String,
    /// Resolver configuration whose name servers get the non-cluster names.
    pub resolv_conf: PathBuf,
}

impl NodeNetworkConfig {
    /// Defaults for node `node_name` keeping state in `state_dir`.
    pub fn new(node_name: &str, state_dir: impl Into<PathBuf>) -> Result<Self, Error> {
        Ok(Self {
            node_name: node_name.to_string(),
            state_dir: state_dir.into(),
            node: NodeNs::host(),
            cluster_cidr: crate::CLUSTER_CIDR.parse()?,
            service_cidr: crate::SERVICE_CIDR.parse()?,
            cluster_dns: crate::CLUSTER_DNS_IP
                .parse()
                .map_err(|_| Error::InvalidCidr(crate::CLUSTER_DNS_IP.into()))?,
            cluster_domain: crate::CLUSTER_DOMAIN.into(),
            resolv_conf: "/etc/resolv.conf".into(),
        })
    }
}

/// What [`start`] set up.
pub struct NodeNetwork {
    /// The pod network plugin (hand it to the agent).
    pub plugin: Arc<BridgeNetwork>,
    /// This node's podCIDR.
    pub pod_cidr: Ipv4Cidr,
    /// Where the node's DNS server listens (UDP and TCP).
    pub dns_addr: SocketAddr,
    /// The DNS zone (kept current by a watcher).
    pub zone: Arc<RwLock<Zone>>,
}

/// Wait until the Node has a podCIDR (assigned by the node IPAM controller).
pub async fn wait_for_pod_cidr(client: &Client, node_name: &str) -> Ipv4Cidr {
    let api: Api<Node> = Api::all(client.clone());
    let mut logged = false;
    loop {
        match api.get_opt(node_name).await {
            Ok(Some(n)) => {
                if let Some(c) = node_pod_cidr(&n) {
                    return c;
                }
            }
            Ok(None) => {}
            Err(e) => tracing::debug!(error = %e, "reading own Node"),
        }
        if !logged {
            tracing::info!(node = node_name, "waiting for a podCIDR");
            logged = true;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Start the node's networking: bridge, routes, proxy, DNS. Returns once the
/// bridge exists and the DNS server is bound; the controllers keep running on
/// spawned tasks.
pub async fn start(client: Client, cfg: NodeNetworkConfig) -> Result<NodeNetwork, Error> {
    let pod_cidr = wait_for_pod_cidr(&client, &cfg.node_name).await;
    let gateway = pod_cidr
        .gateway()
        .ok_or_else(|| Error::InvalidCidr(pod_cidr.to_string()))?;
    let mut bcfg = BridgeConfig::new(pod_cidr, &cfg.state_dir);
    bcfg.node = cfg.node.clone();
    bcfg.cluster_cidr = cfg.cluster_cidr;
    bcfg.service_cidr = cfg.service_cidr;
    let bridge = bcfg.bridge.clone();
    let plugin = Arc::new(BridgeNetwork::new(bcfg)?);
    plugin.ensure_node().await?;

    tokio::spawn(crate::routes::run(
        client.clone(),
        cfg.node_name.clone(),
        cfg.node.clone(),
    ));

    let zone = Arc::new(RwLock::new(Zone::new(&cfg.cluster_domain)));
    let resolv = std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default();
    let upstreams: Vec<SocketAddr> = dns::upstreams_from_resolv_conf(&resolv)
        .into_iter()
        .filter(|a| a.ip() != std::net::IpAddr::V4(cfg.cluster_dns))
        .collect();
    let handler = Handler::new(zone.clone(), upstreams);
    let dns_addr = SocketAddr::from((gateway, 53));
    let server = match &cfg.node.netns {
        None => DnsServer::bind(dns_addr, handler).await?,
        Some(ns) => {
            let (udp, tcp) = in_netns(ns, move || {
                Ok::<_, std::io::Error>((
                    std::net::UdpSocket::bind(dns_addr)?,
                    std::net::TcpListener::bind(dns_addr)?,
                ))
            })?
            .map_err(|e| Error::Io(format!("dns bind {dns_addr}"), e))?;
            DnsServer::from_std(udp, tcp, handler)?
        }
    };
    tokio::spawn(server.serve());
    tokio::spawn(dns::run_watchers(client.clone(), zone.clone()));

    let pcfg = ProxyConfig {
        node: cfg.node.clone(),
        cluster_cidr: cfg.cluster_cidr,
        service_route: Some((cfg.service_cidr, bridge)),
        local_dns: Some((cfg.cluster_dns, gateway)),
    };
    tokio::spawn(async move {
        if let Err(e) = proxy::run(client, pcfg).await {
            tracing::error!(error = %e, "service proxy stopped");
        }
    });
    Ok(NodeNetwork {
        plugin,
        pod_cidr,
        dns_addr,
        zone,
    })
}
