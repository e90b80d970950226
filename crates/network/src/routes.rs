//! Cross-node pod routes: on every node, `<other node's podCIDR> via <its
//! InternalIP>` for each other node (plain host routes, no encapsulation; the
//! nodes must share an L2 segment or a router that forwards the pod range).
//!
//! Routes are installed with the routing protocol id [`ROUTE_PROTO`] so that
//! stale ones (removed nodes) are found and deleted, also after a restart.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::runtime::{reflector, watcher};
use kube::{Api, Client, ResourceExt};

use crate::cidr::Ipv4Cidr;
use crate::exec::NodeNs;
use crate::pod::node_pod_cidr;
use crate::Error;

/// `proto` of the routes this controller owns (`ip route show proto 201`).
pub const ROUTE_PROTO: &str = "201";

/// The InternalIP (else the first IPv4 address) of a node.
pub fn node_internal_ip(node: &Node) -> Option<Ipv4Addr> {
    let addrs = node.status.as_ref()?.addresses.as_ref()?;
    addrs
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .chain(addrs.iter())
        .find_map(|a| a.address.parse().ok())
}

/// Routes this node needs: every other node's podCIDR via its address.
pub fn desired_routes(nodes: &[Node], self_name: &str) -> BTreeMap<Ipv4Cidr, Ipv4Addr> {
    nodes
        .iter()
        .filter(|n| n.name_any() != self_name)
        .filter_map(|n| Some((node_pod_cidr(n)?, node_internal_ip(n)?)))
        .collect()
}

/// Parse `ip route show proto 201` output into prefix → gateway.
pub fn parse_routes(out: &str) -> BTreeMap<Ipv4Cidr, Option<Ipv4Addr>> {
    out.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let dst: Ipv4Cidr = f.next()?.parse().ok()?;
            let mut via = None;
            while let Some(w) = f.next() {
                if w == "via" {
                    via = f.next().and_then(|v| v.parse().ok());
                }
            }
            Some((dst, via))
        })
        .collect()
}

/// Make the node's owned routes exactly `desired` (replace/add, delete stale).
pub async fn sync_routes(
    node: &NodeNs,
    desired: &BTreeMap<Ipv4Cidr, Ipv4Addr>,
) -> Result<(), Error> {
    let current = parse_routes(
        &node
            .run("ip", &["-4", "route", "show", "proto", ROUTE_PROTO])
            .await?,
    );
    let mut batch = String::new();
    for (dst, via) in &current {
        if !desired.contains_key(dst) {
            batch.push_str(&format!("route del {dst} proto {ROUTE_PROTO}\n"));
        } else if desired.get(dst).copied() != *via {
            // replaced below
        }
    }
    for (dst, via) in desired {
        if current.get(dst).copied().flatten() != Some(*via) {
            batch.push_str(&format!(
                "route replace {dst} via {via} proto {ROUTE_PROTO}\n"
            ));
        }
    }
    if !batch.is_empty() {
        node.run_stdin("ip", &["-batch", "-"], &batch).await?;
    }
    Ok(())
}

/// Watch Nodes and keep this node's routes to the others' podCIDRs current
/// (re-checked every 30 s as well).
pub async fn run(client: Client, self_name: String, node: NodeNs) {
    let (store, writer) = reflector::store::<Node>();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Option<()>>();
    let events = reflector::reflector(
        writer,
        watcher(Api::<Node>::all(client), watcher::Config::default()),
    );
    crate::proxy::forward_events(events, tx, |_n: &Node| Some(()));
    if store.wait_until_ready().await.is_err() {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(30));
    loop {
        let nodes: Vec<Node> = store.state().iter().map(|n| n.as_ref().clone()).collect();
        let desired = desired_routes(&nodes, &self_name);
        if let Err(e) = sync_routes(&node, &desired).await {
            tracing::warn!(error = %e, "routes: sync failed");
        }
        tokio::select! {
            m = rx.recv() => if m.is_none() { return },
            _ = tick.tick() => {}
        }
        while rx.try_recv().is_ok() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn node(name: &str, cidr: Option<&str>, ip: &str) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(str::to_string),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: Some(vec![
                    NodeAddress {
                        type_: "Hostname".into(),
                        address: name.into(),
                    },
                    NodeAddress {
                        type_: "InternalIP".into(),
                        address: ip.into(),
                    },
                ]),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn routes_to_other_nodes_only() {
        let nodes = vec![
            node("a", Some("10.42.0.0/24"), "192.168.0.1"),
            node("b", Some("10.42.1.0/24"), "192.168.0.2"),
            node("c", None, "192.168.0.3"),
        ];
        let r = desired_routes(&nodes, "a");
        assert_eq!(r.len(), 1);
        assert_eq!(
            r.get(&"10.42.1.0/24".parse().unwrap()).copied(),
            Some("192.168.0.2".parse().unwrap())
        );
    }

    #[test]
    fn parses_ip_route_output() {
        let r = parse_routes("10.42.1.0/24 via 192.168.0.2 dev eth0 proto 201\nweird line\n");
        assert_eq!(
            r.get(&"10.42.1.0/24".parse().unwrap()).copied().flatten(),
            Some("192.168.0.2".parse().unwrap())
        );
        assert_eq!(r.len(), 1);
    }
}
