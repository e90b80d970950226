//! The pod network plugin: a Linux bridge on the node holding the podCIDR's
//! gateway address, one veth pair per pod (host end on the bridge with hairpin
//! on, `eth0` in the pod's network namespace), addresses from [`crate::ipam`],
//! egress masquerade and hostPort DNAT in the nftables table `ip navarch_pod`.
//!
//! Links and addresses are programmed with the `ip` command (`ip -batch -` inside
//! the pod namespace through `nsenter --net=`), rules with `nft -f -`.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use k8s_openapi::api::core::v1::{Node, Pod};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::cidr::Ipv4Cidr;
use crate::exec::{run_in, NodeNs};
use crate::ipam::Ipam;
use crate::Error;

/// The nftables table of the pod network (egress NAT, hostPorts).
pub const POD_TABLE: &str = "navarch_pod";
/// Default bridge name.
pub const DEFAULT_BRIDGE: &str = "navarch0";

/// A hostPort mapping of a pod.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostPort {
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Port on the node's addresses.
    pub host_port: u16,
    /// Port in the pod.
    pub container_port: u16,
}

/// What the plugin needs to know about a pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodInfo {
    /// Namespace of the pod.
    pub namespace: String,
    /// Name of the pod.
    pub name: String,
    /// UID of the pod.
    pub uid: String,
    /// The pod's network namespace (a bind-mounted ns file).
    pub netns: PathBuf,
    /// hostPort mappings.
    pub host_ports: Vec<HostPort>,
}

impl PodInfo {
    /// Build from a Pod object and its sandbox's network namespace path.
    pub fn from_pod(pod: &Pod, netns: impl Into<PathBuf>) -> Self {
        let host_ports = pod
            .spec
            .iter()
            .flat_map(|s| s.containers.iter())
            .flat_map(|c| c.ports.iter().flatten())
            .filter_map(|p| {
                let hp = u16::try_from(p.host_port?).ok().filter(|p| *p > 0)?;
                let cp = u16::try_from(p.container_port).ok()?;
                Some(HostPort {
                    protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
                    host_port: hp,
                    container_port: cp,
                })
            })
            .collect();
        Self {
            namespace: pod.metadata.namespace.clone().unwrap_or_default(),
            name: pod.metadata.name.clone().unwrap_or_default(),
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            netns: netns.into(),
            host_ports,
        }
    }
}

/// The addresses a pod got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodIps {
    /// The pod's IPv4 address.
    pub ip: Ipv4Addr,
    /// Its default gateway (the bridge address).
    pub gateway: Ipv4Addr,
    /// Prefix length of the pod network.
    pub prefix_len: u8,
}

impl PodIps {
    /// The addresses as `status.podIPs` strings.
    pub fn to_strings(&self) -> Vec<String> {
        vec![self.ip.to_string()]
    }
}

/// A pod network plugin, called by the agent when a sandbox is created/removed.
#[async_trait::async_trait]
pub trait PodNetwork: Send + Sync + 'static {
    /// Give the pod's network namespace an interface, an address and routes.
    /// Idempotent: calling it again for the same pod returns the same address.
    async fn setup(&self, pod: &PodInfo) -> Result<PodIps, Error>;
    /// Remove the pod's interface, hostPorts and lease (best effort, idempotent).
    async fn teardown(&self, pod_uid: &str, netns: Option<&std::path::Path>) -> Result<(), Error>;
}

/// Configuration of [`BridgeNetwork`].
#[derive(Clone, Debug)]
pub struct BridgeConfig {
    /// The node's network namespace.
    pub node: NodeNs,
    /// Bridge name (default `navarch0`).
    pub bridge: String,
    /// This node's podCIDR (`spec.podCIDR`).
    pub pod_cidr: Ipv4Cidr,
    /// The cluster's pod range (default 10.42.0.0/16): traffic to it is not masqueraded.
    pub cluster_cidr: Ipv4Cidr,
    /// The service range (default 10.43.0.0/16), routed to the bridge.
    pub service_cidr: Ipv4Cidr,
    /// Where leases are kept (e.g. `<agent root>/network`).
    pub state_dir: PathBuf,
}

impl BridgeConfig {
    /// Defaults for a node with `pod_cidr`, keeping state under `state_dir`.
    pub fn new(pod_cidr: Ipv4Cidr, state_dir: impl Into<PathBuf>) -> Self {
        Self {
            node: NodeNs::host(),
            bridge: DEFAULT_BRIDGE.into(),
            pod_cidr,
            cluster_cidr: crate::CLUSTER_CIDR.parse().unwrap_or(pod_cidr),
            service_cidr: crate::SERVICE_CIDR.parse().unwrap_or(pod_cidr),
            state_dir: state_dir.into(),
        }
    }
}

/// The node's podCIDR from its Node object (`spec.podCIDR`, else the first IPv4
/// of `spec.podCIDRs`).
pub fn node_pod_cidr(node: &Node) -> Option<Ipv4Cidr> {
    let spec = node.spec.as_ref()?;
    spec.pod_cidr
        .iter()
        .chain(spec.pod_cidrs.iter().flatten())
        .find_map(|c| c.parse().ok())
}

/// The bridge + veth plugin.
pub struct BridgeNetwork {
    cfg: BridgeConfig,
    ipam: Ipam,
    node_ready: Mutex<bool>,
}

/// Name of the host end of a pod's veth (≤ 15 bytes, stable per pod UID).
pub fn host_veth_name(pod_uid: &str) -> String {
    format!(
        "nv{:012x}",
        crate::fnv64(pod_uid.as_bytes()) & 0xffff_ffff_ffff
    )
}

impl BridgeNetwork {
    /// A plugin with `cfg`; opens the lease file.
    pub fn new(cfg: BridgeConfig) -> Result<Self, Error> {
        let ipam = Ipam::open(&cfg.state_dir, cfg.pod_cidr)?;
        Ok(Self {
            cfg,
            ipam,
            node_ready: Mutex::new(false),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &BridgeConfig {
        &self.cfg
    }

    /// The address allocator.
    pub fn ipam(&self) -> &Ipam {
        &self.ipam
    }

    /// The nftables script of the node-level pod rules (idempotent: chains are
    /// flushed and refilled in one transaction; the hostPort map keeps its
    /// elements).
    pub fn node_rules(&self) -> String {
        let t = format!("ip {POD_TABLE}");
        let c = &self.cfg;
        let mut s = String::new();
        s.push_str(&format!("add table {t}\n"));
        s.push_str(&format!(
            "add map {t} hostports {{ type inet_proto . inet_service : ipv4_addr . inet_service ; }}\n"
        ));
        for (chain, hook, prio) in [
            ("prerouting", "prerouting", "-110"),
            ("output", "output", "-110"),
            ("postrouting", "postrouting", "110"),
        ] {
            s.push_str(&format!(
                "add chain {t} {chain} {{ type nat hook {hook} priority {prio} ; }}\nflush chain {t} {chain}\n"
            ));
        }
        s.push_str(&format!(
            "add rule {t} prerouting fib daddr type local dnat ip to meta l4proto . th dport map @hostports\n"
        ));
        s.push_str(&format!(
            "add rule {t} output fib daddr type local dnat ip to meta l4proto . th dport map @hostports\n"
        ));
        // Hairpin through a hostPort (or any DNAT) from a pod: masquerade. The node's
        // own addresses (e.g. the bridge's) need not be: replies come back to it.
        s.push_str(&format!(
            "add rule {t} postrouting ct status dnat ip saddr {} fib saddr type != local masquerade\n",
            c.cluster_cidr
        ));
        // Egress: pod traffic leaving the cluster network.
        s.push_str(&format!(
            "add rule {t} postrouting ip saddr {} ip daddr != {} oifname != \"{}\" masquerade\n",
            c.pod_cidr, c.cluster_cidr, c.bridge
        ));
        s
    }

    /// Create the bridge, its address, forwarding, the service route and the
    /// node rules (once per process, retried after a failure).
    pub async fn ensure_node(&self) -> Result<(), Error> {
        let mut ready = self.node_ready.lock().await;
        if *ready {
            return Ok(());
        }
        let c = &self.cfg;
        let gw = c
            .pod_cidr
            .gateway()
            .ok_or_else(|| Error::InvalidCidr(c.pod_cidr.to_string()))?;
        let node = &c.node;
        if let Err(e) = node
            .run("ip", &["link", "add", &c.bridge, "type", "bridge"])
            .await
        {
            if !e.to_string().contains("File exists") {
                return Err(e);
            }
        }
        let batch = format!(
            "link set lo up\naddr replace {gw}/{} dev {br}\nlink set {br} up\nroute replace {} dev {br}\n",
            c.pod_cidr.prefix_len(),
            c.service_cidr,
            br = c.bridge
        );
        node.run_stdin("ip", &["-batch", "-"], &batch).await?;
        node.sysctl("net/ipv4/ip_forward", "1").await?;
        // Pods reach service IPs through the gateway on the same interface: ICMP
        // redirects would be wrong, and they eat the ICMP rate limit of rejects.
        node.sysctl(&format!("net/ipv4/conf/{}/send_redirects", c.bridge), "0")
            .await?;
        node.sysctl("net/ipv4/conf/all/send_redirects", "0").await?;
        node.nft(&self.node_rules()).await?;
        *ready = true;
        Ok(())
    }

    async fn add_host_ports(&self, ip: Ipv4Addr, ports: &[HostPort]) -> Result<(), Error> {
        if ports.is_empty() {
            return Ok(());
        }
        let elems: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "{} . {} : {ip} . {}",
                    p.protocol, p.host_port, p.container_port
                )
            })
            .collect();
        let script = format!(
            "add element ip {POD_TABLE} hostports {{ {} }}\n",
            elems.join(", ")
        );
        self.cfg.node.nft(&script).await.map_err(|e| match e {
            Error::Command { stderr, .. } if stderr.contains("File exists") => {
                Error::HostPortInUse(format!("{ports:?}"))
            }
            e => e,
        })
    }

    async fn remove_host_ports(&self, ports: &[HostPort]) {
        for p in ports {
            let script = format!(
                "delete element ip {POD_TABLE} hostports {{ {} . {} }}\n",
                p.protocol, p.host_port
            );
            if let Err(e) = self.cfg.node.nft(&script).await {
                tracing::debug!(error = %e, "removing hostPort");
            }
        }
    }

    async fn wire(&self, pod: &PodInfo, ip: Ipv4Addr) -> Result<(), Error> {
        let c = &self.cfg;
        let veth = host_veth_name(&pod.uid);
        let gw = c
            .pod_cidr
            .gateway()
            .ok_or_else(|| Error::InvalidCidr(c.pod_cidr.to_string()))?;
        // A leftover of an interrupted setup would make `link add` fail.
        let _ = c.node.run("ip", &["link", "del", &veth]).await;
        let netns = pod.netns.display().to_string();
        c.node
            .run(
                "ip",
                &[
                    "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &netns,
                ],
            )
            .await?;
        let host = format!(
            "link set {veth} master {br}\nlink set {veth} type bridge_slave hairpin on\nlink set {veth} up\n",
            br = c.bridge
        );
        c.node.run_stdin("ip", &["-batch", "-"], &host).await?;
        let inside = format!(
            "link set lo up\naddr add {ip}/{} dev eth0\nlink set eth0 up\nroute replace default via {gw} dev eth0\n",
            c.pod_cidr.prefix_len()
        );
        run_in(Some(&pod.netns), "ip", &["-batch", "-"], Some(&inside)).await?;
        Ok(())
    }
}

#[async_trait::async_trait]
impl PodNetwork for BridgeNetwork {
    async fn setup(&self, pod: &PodInfo) -> Result<PodIps, Error> {
        self.ensure_node().await?;
        let who = format!("{}/{}", pod.namespace, pod.name);
        let fresh = self.ipam.lease_of(&pod.uid).is_none();
        let ip = self.ipam.allocate(&pod.uid, &who)?;
        let mut result = self.wire(pod, ip).await;
        if result.is_ok() {
            if let Some((_, old)) = self.ipam.lease_of(&pod.uid) {
                self.remove_host_ports(&old.host_ports).await;
            }
            result = self.add_host_ports(ip, &pod.host_ports).await;
            if result.is_ok() {
                result = self.ipam.set_host_ports(&pod.uid, pod.host_ports.clone());
            }
        }
        if let Err(e) = result {
            let _ = self
                .cfg
                .node
                .run("ip", &["link", "del", &host_veth_name(&pod.uid)])
                .await;
            if fresh {
                let _ = self.ipam.release(&pod.uid);
            }
            return Err(e);
        }
        Ok(PodIps {
            ip,
            gateway: self.cfg.pod_cidr.gateway().unwrap_or(ip),
            prefix_len: self.cfg.pod_cidr.prefix_len(),
        })
    }

    async fn teardown(&self, pod_uid: &str, _netns: Option<&std::path::Path>) -> Result<(), Error> {
        // Deleting the host end removes the pair (eth0 goes with it).
        if let Err(e) = self
            .cfg
            .node
            .run("ip", &["link", "del", &host_veth_name(pod_uid)])
            .await
        {
            tracing::debug!(pod_uid, error = %e, "veth already gone");
        }
        if let Some((_, lease)) = self.ipam.lease_of(pod_uid) {
            self.remove_host_ports(&lease.host_ports).await;
        }
        self.ipam.release(pod_uid)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, ContainerPort, NodeSpec, PodSpec};

    #[test]
    fn pod_info_collects_host_ports() {
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("u1".into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![
                        ContainerPort {
                            container_port: 80,
                            host_port: Some(8080),
                            ..Default::default()
                        },
                        ContainerPort {
                            container_port: 53,
                            protocol: Some("UDP".into()),
                            ..Default::default()
                        },
                    ]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: None,
        };
        let info = PodInfo::from_pod(&pod, "/run/netns/x");
        assert_eq!(info.uid, "u1");
        assert_eq!(
            info.host_ports,
            vec![HostPort {
                protocol: "tcp".into(),
                host_port: 8080,
                container_port: 80
            }]
        );
    }

    #[test]
    fn veth_names_fit_ifnamsiz() {
        let n = host_veth_name("0b7e7a0e-7bd1-4e2b-9f39-4c8f2b1e9d11");
        assert!(n.len() <= 15, "{n}");
        assert_eq!(n, host_veth_name("0b7e7a0e-7bd1-4e2b-9f39-4c8f2b1e9d11"));
        assert_ne!(n, host_veth_name("other"));
    }

    #[test]
    fn node_cidr_from_spec() {
        let mut node = Node::default();
        assert_eq!(node_pod_cidr(&node), None);
        node.spec = Some(NodeSpec {
            pod_cidrs: Some(vec!["10.42.3.0/24".into()]),
            ..Default::default()
        });
        assert_eq!(node_pod_cidr(&node).unwrap().to_string(), "10.42.3.0/24");
    }

    #[test]
    fn node_rules_mention_nat_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let net = BridgeNetwork::new(BridgeConfig::new(
            "10.42.1.0/24".parse().unwrap(),
            dir.path(),
        ))
        .unwrap();
        let r = net.node_rules();
        assert!(r.contains(
            "ip saddr 10.42.1.0/24 ip daddr != 10.42.0.0/16 oifname != \"navarch0\" masquerade"
        ));
        assert!(r.contains("dnat ip to meta l4proto . th dport map @hostports"));
        assert!(!r.contains("delete table"), "never drop the table");
    }
}
