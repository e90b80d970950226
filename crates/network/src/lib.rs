//! navarch-network: everything a node needs for Kubernetes networking.
//!
//! - [`pod`]: the pod network plugin ([`pod::PodNetwork`], implemented by
//!   [`pod::BridgeNetwork`]: bridge + veth per pod + host-local IPAM in [`ipam`]).
//! - [`routes`]: a route controller programming `podCIDR via nodeIP` host routes
//!   to the other nodes (cross-node pod traffic without encapsulation).
//! - [`proxy`]: the service proxy (ClusterIP, NodePort, LoadBalancer on node
//!   addresses, session affinity) programmed into nftables incrementally.
//! - [`dns`]: the cluster DNS server.
//! - [`env`]: service environment variables and `/etc/resolv.conf` for pods.
//! - [`exec`]: running commands and code inside network namespaces.
//! - [`node`]: [`node::start`] runs all of the above for a node agent.
//! - [`host`]: one node per network namespace owns the pod network
//!   ([`host::HostLock`]); [`host::teardown_node`] removes it.
//!
//! See `docs/network.md`.

pub mod cidr;
pub mod dns;
pub mod env;
pub mod exec;
pub mod host;
pub mod ipam;
pub mod node;
pub mod pod;
pub mod proxy;
pub mod routes;

/// The default cluster pod range (a /24 per node is carved from it).
pub const CLUSTER_CIDR: &str = "10.42.0.0/16";
/// The default service range.
pub const SERVICE_CIDR: &str = "10.43.0.0/16";
/// The cluster DNS service address.
pub const CLUSTER_DNS_IP: &str = "10.43.0.10";
/// The default cluster domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Errors of the networking code.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A command (`ip`, `nft`, ...) failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An I/O error, with what was being done.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// A bad CIDR string.
    #[error("invalid CIDR {0:?}")]
    InvalidCidr(String),
    /// The pod range has no free address left.
    #[error("no free address left in {0}")]
    Exhausted(String),
    /// The lease file is unreadable.
    #[error("ipam: {0}")]
    Ipam(String),
    /// A hostPort is already taken by another pod.
    #[error("hostPort already allocated: {0}")]
    HostPortInUse(String),
    /// Entering a network namespace failed.
    #[error("netns: {0}")]
    Netns(String),
    /// The API server refused a request.
    #[error("api: {0}")]
    Kube(#[from] kube::Error),
}

/// FNV-1a, 64 bit: stable short names for interfaces and nftables objects.
pub fn fnv64(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in data {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}
