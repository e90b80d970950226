//! The service proxy: Services + EndpointSlices → nftables rules on the node.
//!
//! Everything lives in the table `ip navarch` (see `docs/network.md`):
//! - verdict maps `services` (`vip . proto . port`) and `nodeports`
//!   (`proto . port`, on local addresses) jump to one chain per service port,
//!   `svc_<id>`, which picks an endpoint chain `ep_<id>_<tag>` with
//!   `numgen random mod N` (after session-affinity lookups in the per-endpoint
//!   sets `af_<id>_<tag>`); the endpoint chain DNATs;
//! - service ports without ready endpoints are elements of `noep`/`noep_nodeports`,
//!   which the filter chains answer with `reject`;
//! - DNATed connections are masqueraded (hairpin, NodePort to remote pods), except
//!   those from the node's own addresses: a pod's reply to the node comes back to
//!   the node anyway, so the node's clients skip the source NAT.
//!
//! A change to one service is one `nft -f -` transaction that deletes its map
//! elements, flushes and refills its chains and re-adds the elements; the table
//! itself is only (re)built at start and after a failed transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::mpsc;

use crate::cidr::Ipv4Cidr;
use crate::exec::NodeNs;
use crate::Error;

/// Name of the proxy's nftables table (family `ip`).
pub const TABLE: &str = "navarch";
/// Label of an EndpointSlice naming its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// One port of one service, as the proxy programs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServicePortInfo {
    /// `namespace/name:portname` (the port number when unnamed).
    pub key: String,
    /// Addresses the port is served on: cluster IPs, external IPs and
    /// LoadBalancer ingress IPs.
    pub vips: Vec<Ipv4Addr>,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The service port.
    pub port: u16,
    /// The NodePort, if any.
    pub node_port: Option<u16>,
    /// ClientIP session affinity timeout in seconds, if enabled.
    pub affinity_timeout: Option<u32>,
    /// Ready endpoints (address, target port), sorted and deduplicated.
    pub endpoints: Vec<(Ipv4Addr, u16)>,
}

impl ServicePortInfo {
    fn id(&self) -> String {
        format!(
            "{:012x}",
            crate::fnv64(self.key.as_bytes()) & 0xffff_ffff_ffff
        )
    }
}

fn ep_tag(ep: &(Ipv4Addr, u16)) -> String {
    format!(
        "{:08x}",
        crate::fnv64(format!("{}:{}", ep.0, ep.1).as_bytes()) & 0xffff_ffff
    )
}

/// `namespace/name` of a service.
pub fn service_key(ns: &str, name: &str) -> String {
    format!("{ns}/{name}")
}

/// The ports of `svc` with their ready endpoints from `slices` (the slices of
/// this service). Headless and ExternalName services have none.
pub fn service_ports(svc: &Service, slices: &[&EndpointSlice]) -> Vec<ServicePortInfo> {
    let Some(spec) = &svc.spec else {
        return Vec::new();
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return Vec::new();
    }
    let mut vips: Vec<Ipv4Addr> = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
        .chain(spec.external_ips.iter().flatten())
        .filter_map(|s| s.parse().ok())
        .collect();
    if spec.type_.as_deref() == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|l| l.ingress.as_ref());
        vips.extend(
            ingress
                .iter()
                .flat_map(|i| i.iter())
                .filter_map(|i| i.ip.as_deref()?.parse::<Ipv4Addr>().ok()),
        );
    }
    vips.sort();
    vips.dedup();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    if headless && vips.is_empty() {
        return Vec::new();
    }
    let affinity_timeout = (spec.session_affinity.as_deref() == Some("ClientIP")).then(|| {
        spec.session_affinity_config
            .as_ref()
            .and_then(|c| c.client_ip.as_ref())
            .and_then(|c| c.timeout_seconds)
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| *t > 0)
            .unwrap_or(10_800)
    });
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let mut out = Vec::new();
    for p in spec.ports.iter().flatten() {
        let Ok(port) = u16::try_from(p.port) else {
            continue;
        };
        let pname = p.name.clone().unwrap_or_default();
        let mut endpoints = Vec::new();
        for slice in slices {
            if slice.address_type != "IPv4" {
                continue;
            }
            let Some(sp) = slice
                .ports
                .iter()
                .flatten()
                .find(|sp| sp.name.clone().unwrap_or_default() == pname)
            else {
                continue;
            };
            let Some(target) = sp.port.and_then(|p| u16::try_from(p).ok()) else {
                continue;
            };
            for ep in &slice.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        endpoints.push((ip, target));
                    }
                }
            }
        }
        endpoints.sort();
        endpoints.dedup();
        let label = if pname.is_empty() {
            port.to_string()
        } else {
            pname
        };
        out.push(ServicePortInfo {
            key: format!("{ns}/{name}:{label}"),
            vips: vips.clone(),
            protocol: p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase(),
            port,
            node_port: p
                .node_port
                .and_then(|n| u16::try_from(n).ok())
                .filter(|n| *n > 0),
            affinity_timeout,
            endpoints,
        });
    }
    out
}

/// What is in the kernel for one service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Programmed {
    id: String,
    /// Keys of `services`/`noep` elements (`vip . proto . port`).
    vip_keys: Vec<String>,
    /// Key of the `nodeports`/`noep_nodeports` element (`proto . port`).
    np_key: Option<String>,
    /// Whether the elements are in the reject maps (no endpoints).
    rejecting: bool,
    /// Endpoint tags with a chain.
    ep_tags: BTreeSet<String>,
    /// Endpoint tags with an affinity set.
    aff_tags: BTreeSet<String>,
}

/// Configuration of the proxy.
#[derive(Clone, Debug)]
pub struct ProxyConfig {
    /// Where the rules go.
    pub node: NodeNs,
    /// The cluster's pod range.
    pub cluster_cidr: Ipv4Cidr,
    /// The service range: a route to it via `bridge` is installed when set.
    pub service_route: Option<(Ipv4Cidr, String)>,
    /// Node-local DNS: `(service IP, local address)`: UDP and TCP port 53 of
    /// the service IP (10.43.0.10) go to the DNS server of this node on the
    /// local address (e.g. the bridge address), whatever the API says about
    /// the `kube-dns` Service.
    pub local_dns: Option<(Ipv4Addr, Ipv4Addr)>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            node: NodeNs::host(),
            cluster_cidr: Ipv4Cidr::new(Ipv4Addr::new(10, 42, 0, 0), 16)
                .unwrap_or_else(|_| unreachable_cidr()),
            service_route: None,
            local_dns: None,
        }
    }
}

/// The static rules sending `vip:53` to the node's own DNS server at `local:53`.
pub fn local_dns_script(vip: Ipv4Addr, local: Ipv4Addr) -> String {
    let t = format!("ip {TABLE}");
    format!(
        "add chain {t} dns_local\n\
         add rule {t} dns_local meta l4proto udp dnat to {local}:53\n\
         add rule {t} dns_local meta l4proto tcp dnat to {local}:53\n\
         add element {t} services {{ {vip} . udp . 53 : goto dns_local, {vip} . tcp . 53 : goto dns_local }}\n"
    )
}

fn unreachable_cidr() -> Ipv4Cidr {
    // 0.0.0.0/32 always parses; only used as a fallback for a constant.
    Ipv4Cidr::new(Ipv4Addr::UNSPECIFIED, 32).unwrap_or_else(|_| unreachable_cidr())
}

/// The base of the table: maps, hooks, masquerade and reject chains. Replaces
/// the whole table in one transaction (used at start and to recover).
pub fn base_script(cluster_cidr: Ipv4Cidr) -> String {
    let t = format!("ip {TABLE}");
    let mut s = format!("add table {t}\ndelete table {t}\nadd table {t}\n");
    s.push_str(&format!(
        "add map {t} services {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         add map {t} nodeports {{ type inet_proto . inet_service : verdict ; }}\n\
         add map {t} noep {{ type ipv4_addr . inet_proto . inet_service : verdict ; }}\n\
         add map {t} noep_nodeports {{ type inet_proto . inet_service : verdict ; }}\n\
         add chain {t} reject_chain\n\
         add rule {t} reject_chain meta l4proto tcp reject with tcp reset\n\
         add rule {t} reject_chain reject\n"
    ));
    for (chain, hook) in [("nat_prerouting", "prerouting"), ("nat_output", "output")] {
        s.push_str(&format!(
            "add chain {t} {chain} {{ type nat hook {hook} priority -100 ; }}\n\
             add rule {t} {chain} ip daddr . meta l4proto . th dport vmap @services\n\
             add rule {t} {chain} ip daddr != 127.0.0.0/8 fib daddr type local meta l4proto . th dport vmap @nodeports\n"
        ));
    }
    s.push_str(&format!(
        "add chain {t} nat_postrouting {{ type nat hook postrouting priority 100 ; }}\n\
         add rule {t} nat_postrouting ct status dnat ip saddr {cluster_cidr} fib saddr type != local masquerade\n\
         add rule {t} nat_postrouting meta mark & 0x4000 == 0x4000 fib saddr type != local masquerade\n"
    ));
    for (chain, hook) in [
        ("filter_input", "input"),
        ("filter_forward", "forward"),
        ("filter_output", "output"),
    ] {
        s.push_str(&format!(
            "add chain {t} {chain} {{ type filter hook {hook} priority 0 ; }}\n\
             add rule {t} {chain} ct state new ip daddr . meta l4proto . th dport vmap @noep\n"
        ));
        if hook != "forward" {
            s.push_str(&format!(
                "add rule {t} {chain} ct state new fib daddr type local meta l4proto . th dport vmap @noep_nodeports\n"
            ));
        }
    }
    s
}

/// The transaction taking one service port from `old` to `new` (either may be
/// absent), and what is programmed afterwards.
///
/// Without session affinity a service port is one chain (`dnat ip to numgen
/// random mod N map { i : ip . port }`); with it, one chain per endpoint plus
/// its affinity set. Map elements are only touched when the service's
/// addresses, ports or reject state change: an endpoint change rewrites the
/// chain alone.
pub fn port_script(
    old: Option<&Programmed>,
    new: Option<&ServicePortInfo>,
    cluster_cidr: Ipv4Cidr,
) -> (String, Option<Programmed>) {
    let t = format!("ip {TABLE}");
    let mut s = String::new();
    let next = new.map(|n| {
        let tags: Vec<String> = n.endpoints.iter().map(ep_tag).collect();
        let rejecting = n.endpoints.is_empty();
        let chained: BTreeSet<String> = if n.affinity_timeout.is_some() && !rejecting {
            tags.iter().cloned().collect()
        } else {
            BTreeSet::new()
        };
        Programmed {
            id: n.id(),
            vip_keys: n
                .vips
                .iter()
                .map(|ip| format!("{ip} . {} . {}", n.protocol, n.port))
                .collect(),
            np_key: n.node_port.map(|p| format!("{} . {p}", n.protocol)),
            rejecting,
            aff_tags: chained.clone(),
            ep_tags: chained,
        }
    });
    let same_hooks = match (old, &next) {
        (Some(o), Some(n)) => {
            o.vip_keys == n.vip_keys
                && o.np_key == n.np_key
                && o.rejecting == n.rejecting
                && o.id == n.id
        }
        _ => false,
    };
    // 1. Unhook the old state: elements (unless unchanged), then chain rules.
    if let Some(o) = old {
        if !same_hooks {
            let (vmap, npmap) = if o.rejecting {
                ("noep", "noep_nodeports")
            } else {
                ("services", "nodeports")
            };
            if !o.vip_keys.is_empty() {
                s.push_str(&format!(
                    "delete element {t} {vmap} {{ {} }}\n",
                    o.vip_keys.join(", ")
                ));
            }
            if let Some(k) = &o.np_key {
                s.push_str(&format!("delete element {t} {npmap} {{ {k} }}\n"));
            }
        }
        if !o.rejecting {
            s.push_str(&format!("flush chain {t} svc_{}\n", o.id));
        }
        for tag in &o.ep_tags {
            s.push_str(&format!("flush chain {t} ep_{}_{tag}\n", o.id));
        }
    }
    // 2. Drop what is no longer wanted.
    if let Some(o) = old {
        let empty = BTreeSet::new();
        let (keep_svc, want_eps, want_aff) = match &next {
            Some(n) => (!n.rejecting, &n.ep_tags, &n.aff_tags),
            None => (false, &empty, &empty),
        };
        if !o.rejecting && !keep_svc {
            s.push_str(&format!("delete chain {t} svc_{}\n", o.id));
        }
        for tag in o.ep_tags.difference(want_eps) {
            s.push_str(&format!("delete chain {t} ep_{}_{tag}\n", o.id));
        }
        for tag in o.aff_tags.difference(want_aff) {
            s.push_str(&format!("delete set {t} af_{}_{tag}\n", o.id));
        }
    }
    let (Some(n), Some(prog)) = (new, next) else {
        return (s, None);
    };
    let id = &prog.id;
    // 3. Build the new state.
    if prog.rejecting {
        if !same_hooks {
            if !prog.vip_keys.is_empty() {
                let elems: Vec<String> = prog
                    .vip_keys
                    .iter()
                    .map(|k| format!("{k} : goto reject_chain"))
                    .collect();
                s.push_str(&format!(
                    "add element {t} noep {{ {} }}\n",
                    elems.join(", ")
                ));
            }
            if let Some(k) = &prog.np_key {
                s.push_str(&format!(
                    "add element {t} noep_nodeports {{ {k} : goto reject_chain }}\n"
                ));
            }
        }
        return (s, Some(prog));
    }
    let svc = format!("svc_{id}");
    s.push_str(&format!("add chain {t} {svc}\n"));
    // Traffic from outside the pod network gets masqueraded too.
    let mark =
        format!("add rule {t} {svc} ip saddr != {cluster_cidr} meta mark set meta mark | 0x4000\n");
    if let Some(to) = n.affinity_timeout {
        let tags: Vec<String> = n.endpoints.iter().map(ep_tag).collect();
        for (ep, tag) in n.endpoints.iter().zip(&tags) {
            let chain = format!("ep_{id}_{tag}");
            s.push_str(&format!(
                "add chain {t} {chain}\n\
                 add set {t} af_{id}_{tag} {{ type ipv4_addr ; flags dynamic,timeout ; timeout {to}s ; }}\n\
                 add rule {t} {chain} update @af_{id}_{tag} {{ ip saddr }} meta l4proto {} dnat to {}:{}\n",
                n.protocol, ep.0, ep.1
            ));
        }
        for tag in &tags {
            s.push_str(&format!(
                "add rule {t} {svc} ip saddr @af_{id}_{tag} goto ep_{id}_{tag}\n"
            ));
        }
        s.push_str(&mark);
        if tags.len() == 1 {
            s.push_str(&format!("add rule {t} {svc} goto ep_{id}_{}\n", tags[0]));
        } else {
            let arms: Vec<String> = tags
                .iter()
                .enumerate()
                .map(|(i, tag)| format!("{i} : goto ep_{id}_{tag}"))
                .collect();
            s.push_str(&format!(
                "add rule {t} {svc} numgen random mod {} vmap {{ {} }}\n",
                tags.len(),
                arms.join(", ")
            ));
        }
    } else {
        s.push_str(&mark);
        if let [(ip, port)] = n.endpoints.as_slice() {
            s.push_str(&format!(
                "add rule {t} {svc} meta l4proto {} dnat to {ip}:{port}\n",
                n.protocol
            ));
        } else {
            let arms: Vec<String> = n
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, (ip, port))| format!("{i} : {ip} . {port}"))
                .collect();
            s.push_str(&format!(
                "add rule {t} {svc} meta l4proto {} dnat ip to numgen random mod {} map {{ {} }}\n",
                n.protocol,
                n.endpoints.len(),
                arms.join(", ")
            ));
        }
    }
    if !same_hooks {
        if !prog.vip_keys.is_empty() {
            let elems: Vec<String> = prog
                .vip_keys
                .iter()
                .map(|k| format!("{k} : goto {svc}"))
                .collect();
            s.push_str(&format!(
                "add element {t} services {{ {} }}\n",
                elems.join(", ")
            ));
        }
        if let Some(k) = &prog.np_key {
            s.push_str(&format!(
                "add element {t} nodeports {{ {k} : goto {svc} }}\n"
            ));
        }
    }
    (s, Some(prog))
}

/// The proxy's view of what is programmed, and the code to change it.
pub struct Proxier {
    cfg: ProxyConfig,
    /// Programmed ports by service key (`ns/name`), then by port key.
    state: HashMap<String, BTreeMap<String, Programmed>>,
}

impl Proxier {
    /// A proxier with nothing programmed yet (call [`Proxier::full_sync`] first).
    pub fn new(cfg: ProxyConfig) -> Self {
        Self {
            cfg,
            state: HashMap::new(),
        }
    }

    /// Replace the whole table with the given services (one transaction).
    pub async fn full_sync(
        &mut self,
        services: BTreeMap<String, Vec<ServicePortInfo>>,
    ) -> Result<(), Error> {
        if let Some((cidr, dev)) = &self.cfg.service_route {
            let cidr = cidr.to_string();
            self.cfg
                .node
                .run("ip", &["route", "replace", &cidr, "dev", dev])
                .await?;
        }
        let mut script = base_script(self.cfg.cluster_cidr);
        if let Some((vip, local)) = self.cfg.local_dns {
            script.push_str(&local_dns_script(vip, local));
        }
        let mut state = HashMap::new();
        for (svc, ports) in services {
            let ports = self.without_local_dns(ports);
            let mut progs = BTreeMap::new();
            for p in ports {
                let (s, prog) = port_script(None, Some(&p), self.cfg.cluster_cidr);
                script.push_str(&s);
                if let Some(prog) = prog {
                    progs.insert(p.key.clone(), prog);
                }
            }
            state.insert(svc, progs);
        }
        self.state.clear();
        self.cfg.node.nft(&script).await?;
        self.state = state;
        Ok(())
    }

    /// Bring several services to their new ports (empty: removed) in one
    /// transaction. On error nothing changed (nftables transactions are atomic).
    pub async fn update(
        &mut self,
        changes: BTreeMap<String, Vec<ServicePortInfo>>,
    ) -> Result<(), Error> {
        let mut script = String::new();
        let mut next: Vec<(String, BTreeMap<String, Programmed>)> = Vec::new();
        for (svc, ports) in changes {
            let ports = self.without_local_dns(ports);
            let old = self.state.get(&svc).cloned().unwrap_or_default();
            let mut progs = BTreeMap::new();
            let new_keys: BTreeSet<&str> = ports.iter().map(|p| p.key.as_str()).collect();
            for (k, o) in &old {
                if !new_keys.contains(k.as_str()) {
                    let (s, _) = port_script(Some(o), None, self.cfg.cluster_cidr);
                    script.push_str(&s);
                }
            }
            for p in &ports {
                let (s, prog) = port_script(old.get(&p.key), Some(p), self.cfg.cluster_cidr);
                script.push_str(&s);
                if let Some(prog) = prog {
                    progs.insert(p.key.clone(), prog);
                }
            }
            next.push((svc, progs));
        }
        if !script.is_empty() {
            self.cfg.node.nft(&script).await?;
        }
        for (svc, progs) in next {
            if progs.is_empty() {
                self.state.remove(&svc);
            } else {
                self.state.insert(svc, progs);
            }
        }
        Ok(())
    }

    /// Drop the local-DNS VIP from ports it overrides (port 53, UDP/TCP).
    fn without_local_dns(&self, ports: Vec<ServicePortInfo>) -> Vec<ServicePortInfo> {
        let Some((vip, _)) = self.cfg.local_dns else {
            return ports;
        };
        ports
            .into_iter()
            .filter_map(|mut p| {
                if p.port == 53 && (p.protocol == "udp" || p.protocol == "tcp") {
                    p.vips.retain(|v| *v != vip);
                    if p.vips.is_empty() && p.node_port.is_none() {
                        return None;
                    }
                }
                Some(p)
            })
            .collect()
    }

    /// Number of service ports programmed.
    pub fn programmed_ports(&self) -> usize {
        self.state.values().map(BTreeMap::len).sum()
    }
}

/// Drive a reflector's event stream on its own task, sending `Some(key)` for
/// each changed object (per `key_of`) and `None` when a (re)list completes.
pub fn forward_events<K, T, S>(
    events: S,
    tx: mpsc::UnboundedSender<Option<T>>,
    key_of: impl Fn(&K) -> Option<T> + Send + 'static,
) where
    K: Send + 'static,
    T: Send + 'static,
    S: futures::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            let msg = match ev {
                Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o)) => match key_of(&o) {
                    Some(k) => Some(k),
                    None => continue,
                },
                Ok(watcher::Event::InitDone) => None,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "watch failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            if tx.send(msg).is_err() {
                break;
            }
        }
    });
}

/// The ports of every service in the stores, by service key.
fn all_ports(
    svcs: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> BTreeMap<String, Vec<ServicePortInfo>> {
    let mut by_svc: HashMap<String, Vec<Arc<EndpointSlice>>> = HashMap::new();
    for s in slices.state() {
        if let Some(n) = s.labels().get(SERVICE_NAME_LABEL) {
            by_svc
                .entry(service_key(&s.namespace().unwrap_or_default(), n))
                .or_default()
                .push(s);
        }
    }
    svcs.state()
        .iter()
        .map(|svc| {
            let key = service_key(&svc.namespace().unwrap_or_default(), &svc.name_any());
            let sl = by_svc.get(&key).cloned().unwrap_or_default();
            let refs: Vec<&EndpointSlice> = sl.iter().map(|a| a.as_ref()).collect();
            (key, service_ports(svc, &refs))
        })
        .collect()
}

fn ports_of(
    key: &str,
    svcs: &Store<Service>,
    slices: &Store<EndpointSlice>,
) -> Vec<ServicePortInfo> {
    let Some((ns, name)) = key.split_once('/') else {
        return Vec::new();
    };
    let Some(svc) = svcs.get(&reflector::ObjectRef::new(name).within(ns)) else {
        return Vec::new();
    };
    let mine: Vec<Arc<EndpointSlice>> = slices
        .state()
        .into_iter()
        .filter(|s| {
            s.namespace().as_deref() == Some(ns)
                && s.labels().get(SERVICE_NAME_LABEL).map(String::as_str) == Some(name)
        })
        .collect();
    let refs: Vec<&EndpointSlice> = mine.iter().map(|a| a.as_ref()).collect();
    service_ports(&svc, &refs)
}

/// Run the proxy until the process ends: watch Services and EndpointSlices and
/// keep the node's rules in sync.
pub async fn run(client: Client, cfg: ProxyConfig) -> Result<(), Error> {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let (slice_store, slice_writer) = reflector::store::<EndpointSlice>();
    let (tx, mut rx) = mpsc::unbounded_channel::<Option<String>>();

    let svc_events = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    forward_events(svc_events, tx.clone(), |s: &Service| {
        Some(service_key(
            &s.namespace().unwrap_or_default(),
            &s.name_any(),
        ))
    });
    let slice_events = reflector::reflector(
        slice_writer,
        watcher(
            Api::<EndpointSlice>::all(client.clone()),
            watcher::Config::default(),
        ),
    );
    forward_events(slice_events, tx.clone(), |s: &EndpointSlice| {
        s.labels()
            .get(SERVICE_NAME_LABEL)
            .map(|n| service_key(&s.namespace().unwrap_or_default(), n))
    });
    drop(tx);

    let _ = svc_store.wait_until_ready().await;
    let _ = slice_store.wait_until_ready().await;
    let mut proxier = Proxier::new(cfg);
    let mut need_full = true;
    loop {
        if need_full {
            match proxier.full_sync(all_ports(&svc_store, &slice_store)).await {
                Ok(()) => need_full = false,
                Err(e) => {
                    tracing::error!(error = %e, "proxy: full sync failed");
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    continue;
                }
            }
        }
        let Some(first) = rx.recv().await else {
            return Ok(());
        };
        // Batch what arrived together into one transaction.
        let mut keys = BTreeSet::new();
        let mut msgs = vec![first];
        while let Ok(m) = rx.try_recv() {
            msgs.push(m);
        }
        for m in msgs {
            match m {
                Some(k) => {
                    keys.insert(k);
                }
                None => need_full = true,
            }
        }
        if need_full {
            continue;
        }
        let changes = keys
            .into_iter()
            .map(|k| {
                let ports = ports_of(&k, &svc_store, &slice_store);
                (k, ports)
            })
            .collect();
        if let Err(e) = proxier.update(changes).await {
            tracing::warn!(error = %e, "proxy: incremental update failed; resyncing");
            need_full = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        LoadBalancerIngress, LoadBalancerStatus, ServicePort, ServiceSpec, ServiceStatus,
    };
    use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn cidr() -> Ipv4Cidr {
        "10.42.0.0/16".parse().unwrap()
    }

    fn info(eps: &[(&str, u16)], affinity: bool) -> ServicePortInfo {
        ServicePortInfo {
            key: "default/web:http".into(),
            vips: vec!["10.43.0.5".parse().unwrap()],
            protocol: "tcp".into(),
            port: 80,
            node_port: Some(30080),
            affinity_timeout: affinity.then_some(60),
            endpoints: eps.iter().map(|(a, p)| (a.parse().unwrap(), *p)).collect(),
        }
    }

    #[test]
    fn create_update_remove_scripts() {
        let (s, p) = port_script(
            None,
            Some(&info(&[("10.42.0.2", 8080), ("10.42.0.3", 8080)], false)),
            cidr(),
        );
        let p = p.unwrap();
        assert!(s.contains(
            "dnat ip to numgen random mod 2 map { 0 : 10.42.0.2 . 8080, 1 : 10.42.0.3 . 8080 }"
        ));
        assert!(s.contains("add element ip navarch services { 10.43.0.5 . tcp . 80 : goto svc_"));
        assert!(s.contains("add element ip navarch nodeports { tcp . 30080 : goto svc_"));
        assert!(!s.contains("delete table"));
        // Drop one endpoint: only the chain is rewritten, the map is untouched.
        let (s2, p2) = port_script(Some(&p), Some(&info(&[("10.42.0.3", 8080)], false)), cidr());
        let p2 = p2.unwrap();
        assert!(!s2.contains("element"), "{s2}");
        assert!(s2.starts_with("flush chain ip navarch svc_"));
        assert!(s2.contains("meta l4proto tcp dnat to 10.42.0.3:8080"));
        // No endpoints: reject maps.
        let (s3, p3) = port_script(Some(&p2), Some(&info(&[], false)), cidr());
        let p3 = p3.unwrap();
        assert!(p3.rejecting);
        assert!(
            s3.contains("add element ip navarch noep { 10.43.0.5 . tcp . 80 : goto reject_chain }")
        );
        assert!(s3.contains("noep_nodeports { tcp . 30080 : goto reject_chain }"));
        // Removal of a rejecting port only removes elements.
        let (s4, p4) = port_script(Some(&p3), None, cidr());
        assert!(p4.is_none());
        assert!(s4.contains("delete element ip navarch noep"));
        assert!(!s4.contains("chain"));
    }

    #[test]
    fn affinity_sets() {
        let (s, p) = port_script(
            None,
            Some(&info(&[("10.42.0.2", 80), ("10.42.0.3", 80)], true)),
            cidr(),
        );
        let p = p.unwrap();
        assert_eq!(p.aff_tags.len(), 2);
        assert_eq!(s.matches("flags dynamic,timeout ; timeout 60s").count(), 2);
        assert!(s.contains("update @af_"));
        let (s2, _) = port_script(
            Some(&p),
            Some(&info(&[("10.42.0.2", 80), ("10.42.0.3", 80)], false)),
            cidr(),
        );
        assert_eq!(s2.matches("delete set").count(), 2);
    }

    #[test]
    fn ports_from_service_and_slices() {
        let svc = Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("LoadBalancer".into()),
                cluster_ip: Some("10.43.0.5".into()),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    node_port: Some(30080),
                    ..Default::default()
                }]),
                session_affinity: Some("ClientIP".into()),
                ..Default::default()
            }),
            status: Some(ServiceStatus {
                load_balancer: Some(LoadBalancerStatus {
                    ingress: Some(vec![LoadBalancerIngress {
                        ip: Some("192.168.1.10".into()),
                        ..Default::default()
                    }]),
                }),
                ..Default::default()
            }),
        };
        let ep = |ip: &str, ready: bool| Endpoint {
            addresses: vec![ip.into()],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                ..Default::default()
            }),
            ..Default::default()
        };
        let slice = EndpointSlice {
            address_type: "IPv4".into(),
            endpoints: vec![ep("10.42.0.2", true), ep("10.42.0.3", false)],
            ports: Some(vec![EndpointPort {
                name: Some("http".into()),
                port: Some(8080),
                ..Default::default()
            }]),
            metadata: ObjectMeta::default(),
        };
        let ports = service_ports(&svc, &[&slice]);
        assert_eq!(ports.len(), 1);
        let p = &ports[0];
        assert_eq!(p.key, "default/web:http");
        assert_eq!(p.vips.len(), 2);
        assert_eq!(p.node_port, Some(30080));
        assert_eq!(p.affinity_timeout, Some(10_800));
        assert_eq!(p.endpoints, vec![("10.42.0.2".parse().unwrap(), 8080)]);
    }
}
