//! Node IPAM: gives every Node a podCIDR (`spec.podCIDR` and `spec.podCIDRs`),
//! a /24 out of the cluster CIDR (default 10.42.0.0/16). The agent's pod
//! network reads it. When the range is exhausted the Node gets a Warning event
//! (`CIDRNotAvailable`) and is retried; nothing crashes.
//!
//! `navarch server --cluster-cidr C --node-cidr-mask-size N` calls
//! [`configure`] before the controllers start; [`run`] then carves /N subnets
//! out of C.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::Store;
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::events::{EventType, Recorder};
use crate::util::{self, SyncError};

/// The default cluster CIDR.
pub const DEFAULT_CLUSTER_CIDR: &str = "10.42.0.0/16";
/// Prefix length of each node's range.
pub const NODE_PREFIX: u8 = 24;

/// An allocator of fixed-size subnets of an IPv4 range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubnetAllocator {
    base: u32,
    prefix: u8,
    sub_prefix: u8,
}

impl SubnetAllocator {
    /// Subnets of length `sub_prefix` in `cidr` (e.g. `10.42.0.0/16`, 24).
    pub fn new(cidr: &str, sub_prefix: u8) -> Option<Self> {
        let (a, p) = cidr.split_once('/')?;
        let addr: Ipv4Addr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        if prefix > sub_prefix || sub_prefix > 30 {
            return None;
        }
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(prefix))
        };
        Some(Self {
            base: u32::from(addr) & mask,
            prefix,
            sub_prefix,
        })
    }

    /// Number of subnets.
    pub fn capacity(&self) -> u32 {
        1u32 << u32::from(self.sub_prefix - self.prefix)
    }

    /// The `i`-th subnet as a string.
    pub fn subnet(&self, i: u32) -> String {
        let step = 1u32 << (32 - u32::from(self.sub_prefix));
        let net = self.base.wrapping_add(i.wrapping_mul(step));
        format!("{}/{}", Ipv4Addr::from(net), self.sub_prefix)
    }

    /// The index of `cidr` when it is one of this allocator's subnets.
    pub fn index_of(&self, cidr: &str) -> Option<u32> {
        let (a, p) = cidr.split_once('/')?;
        if p.parse::<u8>().ok()? != self.sub_prefix {
            return None;
        }
        let addr = u32::from(a.parse::<Ipv4Addr>().ok()?);
        let off = addr.wrapping_sub(self.base);
        let step_bits = 32 - u32::from(self.sub_prefix);
        let i = off >> step_bits;
        (off & ((1u32 << step_bits) - 1) == 0 && i < self.capacity()).then_some(i)
    }

    /// The first free subnet index at or after `from` (wrapping around).
    pub fn next_free(&self, used: &HashSet<u32>, from: u32) -> Option<u32> {
        let cap = self.capacity();
        (0..cap)
            .map(|k| (from.wrapping_add(k)) % cap)
            .find(|i| !used.contains(i))
    }
}

/// Which subnets are taken, rebuilt from the node cache at most every
/// [`USED_TTL`]: with thousands of nodes registering at once, rebuilding it
/// (and scanning from the first subnet) on every reconcile is quadratic.
/// Allocations made since the last rebuild are added as they happen.
#[derive(Default)]
struct UsedSubnets {
    used: HashSet<u32>,
    built: Option<Instant>,
    cursor: u32,
}

const USED_TTL: Duration = Duration::from_secs(1);

/// The range and subnet size [`run`] uses, set once by [`configure`].
static CONFIG: OnceLock<(String, u8)> = OnceLock::new();

/// A bad `--cluster-cidr` / `--node-cidr-mask-size` pair.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The pair does not describe subnets of an IPv4 range.
    #[error(
        "invalid node IPAM settings: cluster CIDR {cidr:?} with /{prefix} per node \
         (need an IPv4 CIDR and a node mask size between its prefix and 30)"
    )]
    Invalid {
        /// The cluster CIDR given.
        cidr: String,
        /// The node mask size given.
        prefix: u8,
    },
    /// [`configure`] was called before with other settings.
    #[error("node IPAM is already configured with {0}")]
    AlreadySet(String),
}

/// Set the cluster CIDR and per-node prefix length [`run`] uses (once per
/// process, before the controllers start).
pub fn configure(cluster_cidr: &str, node_prefix: u8) -> Result<(), ConfigError> {
    if SubnetAllocator::new(cluster_cidr, node_prefix).is_none() {
        return Err(ConfigError::Invalid {
            cidr: cluster_cidr.to_string(),
            prefix: node_prefix,
        });
    }
    let want = (cluster_cidr.to_string(), node_prefix);
    let got = CONFIG.get_or_init(|| want.clone());
    if *got != want {
        return Err(ConfigError::AlreadySet(format!("{}, /{}", got.0, got.1)));
    }
    Ok(())
}

struct Ctx {
    client: Client,
    nodes: Store<Node>,
    alloc: SubnetAllocator,
    /// Assigned by us but maybe not in the cache yet (node name → CIDR).
    pending: Mutex<HashMap<String, String>>,
    used: Mutex<UsedSubnets>,
    recorder: Recorder,
}

/// Run the controller with the [`configure`]d range (default: /24s of
/// 10.42.0.0/16) until the process ends.
pub async fn run(client: Client) {
    match CONFIG.get() {
        Some((cidr, prefix)) => run_with_prefix(client, cidr, *prefix).await,
        None => run_with(client, DEFAULT_CLUSTER_CIDR).await,
    }
}

/// Run the controller carving /24s out of `cluster_cidr`.
pub async fn run_with(client: Client, cluster_cidr: &str) {
    run_with_prefix(client, cluster_cidr, NODE_PREFIX).await;
}

/// Run the controller carving `/node_prefix` subnets out of `cluster_cidr`.
pub async fn run_with_prefix(client: Client, cluster_cidr: &str, node_prefix: u8) {
    let Some(alloc) = SubnetAllocator::new(cluster_cidr, node_prefix) else {
        tracing::error!(cluster_cidr, node_prefix, "nodeipam: bad cluster CIDR");
        return;
    };
    let api: Api<Node> = Api::all(client.clone());
    let controller = Controller::new(api, watcher::Config::default());
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        nodes: controller.store(),
        alloc,
        pending: Mutex::new(HashMap::new()),
        used: Mutex::new(UsedSubnets::default()),
        recorder: Recorder::new(client, "node-ipam-controller"),
    });
    let retry = Duration::from_secs(2);
    util::run_controller("nodeipam", controller, reconcile, ctx, retry).await;
}

fn node_cidr(n: &Node) -> Option<String> {
    let spec = n.spec.as_ref()?;
    spec.pod_cidr
        .clone()
        .or_else(|| spec.pod_cidrs.as_ref()?.first().cloned())
        .filter(|c| !c.is_empty())
}

async fn reconcile(node: Arc<Node>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    if node_cidr(&node).is_some() || node.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = node.name_any();
    let cidr = {
        let (Ok(mut pending), Ok(mut used)) = (ctx.pending.lock(), ctx.used.lock()) else {
            return Ok(Action::requeue(Duration::from_secs(1)));
        };
        if used.built.is_none_or(|t| t.elapsed() >= USED_TTL) {
            let nodes = ctx.nodes.state();
            let live: HashSet<String> = nodes.iter().map(|n| n.name_any()).collect();
            pending.retain(|n, _| live.contains(n));
            used.used = nodes
                .iter()
                .filter_map(|n| node_cidr(n))
                .chain(pending.values().cloned())
                .filter_map(|c| ctx.alloc.index_of(&c))
                .collect();
            used.built = Some(Instant::now());
        }
        if let Some(c) = pending.get(&name) {
            Some(c.clone())
        } else {
            let from = used.cursor;
            let c = ctx.alloc.next_free(&used.used, from).map(|i| {
                used.used.insert(i);
                used.cursor = i.wrapping_add(1);
                ctx.alloc.subnet(i)
            });
            if let Some(c) = &c {
                pending.insert(name.clone(), c.clone());
            }
            c
        }
    };
    let Some(cidr) = cidr else {
        ctx.recorder
            .publish(
                &Recorder::reference(node.as_ref()),
                EventType::Warning,
                "CIDRNotAvailable",
                &format!(
                    "Node {name} status is now: CIDRNotAvailable (no free /{} left)",
                    ctx.alloc.sub_prefix
                ),
            )
            .await;
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let api: Api<Node> = Api::all(ctx.client.clone());
    let patch = json!({"spec": {"podCIDR": cidr, "podCIDRs": [cidr]}});
    api.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    tracing::info!(node = %name, %cidr, "nodeipam: assigned podCIDR");
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocates_first_free_and_exhausts() {
        let a = SubnetAllocator::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(a.capacity(), 256);
        let first =
            |a: &SubnetAllocator, used: &HashSet<u32>| a.next_free(used, 0).map(|i| a.subnet(i));
        let mut used = HashSet::new();
        assert_eq!(first(&a, &used).as_deref(), Some("10.42.0.0/24"));
        used.insert(0);
        assert_eq!(first(&a, &used).as_deref(), Some("10.42.1.0/24"));
        let small = SubnetAllocator::new("10.42.0.0/23", 24).unwrap();
        let used: HashSet<u32> = [0, 1].into();
        assert_eq!(first(&small, &used), None);
        assert!(SubnetAllocator::new("10.42.0.0/25", 24).is_none());
        assert!(SubnetAllocator::new("bogus", 24).is_none());
        let tiny = SubnetAllocator::new("10.42.0.0/16", 30).unwrap();
        assert_eq!(tiny.subnet(1), "10.42.0.4/30");
    }

    #[test]
    fn indexes_and_next_free_wrap() {
        let a = SubnetAllocator::new("10.42.0.0/16", 24).unwrap();
        assert_eq!(a.index_of("10.42.7.0/24"), Some(7));
        assert_eq!(a.index_of(&a.subnet(255)), Some(255));
        assert_eq!(a.index_of("10.42.7.0/25"), None);
        assert_eq!(a.index_of("10.42.7.1/24"), None);
        assert_eq!(a.index_of("10.43.0.0/24"), None);
        assert_eq!(a.index_of("junk"), None);
        let used: HashSet<u32> = [0, 1, 255].into();
        assert_eq!(a.next_free(&used, 0), Some(2));
        assert_eq!(a.next_free(&used, 255), Some(2));
        assert_eq!(a.next_free(&used, 9), Some(9));
        let full: HashSet<u32> = (0..256).collect();
        assert_eq!(a.next_free(&full, 3), None);
    }

    #[test]
    fn configure_validates_and_is_set_once() {
        assert!(matches!(
            configure("10.42.0.0/16", 31),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            configure("nope", 24),
            Err(ConfigError::Invalid { .. })
        ));
        configure("10.42.0.0/16", 28).unwrap();
        configure("10.42.0.0/16", 28).unwrap();
        assert!(matches!(
            configure("10.44.0.0/16", 24),
            Err(ConfigError::AlreadySet(_))
        ));
    }
}
