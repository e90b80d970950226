//! The Endpoints and EndpointSlice controller, plus the service load balancer.
//!
//! For every Service with a selector, the pods matching it (from a watch-fed
//! cache) become:
//! - an `Endpoints` object of the same name: ready pods in `addresses`, not
//!   ready ones in `notReadyAddresses`, one subset per distinct port set;
//! - `discovery.k8s.io/v1` EndpointSlices labelled `kubernetes.io/service-name`
//!   and managed by `endpointslice-controller.k8s.io`, one per port set, with
//!   `conditions.ready/serving/terminating`.
//!
//! Named `targetPort`s are resolved against each pod's container ports.
//! Headless services get the `service.kubernetes.io/headless` label. Both
//! kinds of object are owned by the Service (deleted with it by the GC).
//!
//! LoadBalancer services get `status.loadBalancer.ingress` = the nodes'
//! InternalIPs (as k3s' service LB): the proxy serves them on node addresses.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures::{future, stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{
    EndpointAddress, EndpointPort, EndpointSubset, Endpoints, Node, ObjectReference, Pod, Service,
};
use k8s_openapi::api::discovery::v1::{
    Endpoint, EndpointConditions, EndpointPort as SlicePort, EndpointSlice,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::podcache::{PodCache, PodChanges};
use crate::util::{self, SyncError};

/// Label naming the Service of an EndpointSlice.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the manager of an EndpointSlice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our manager value (upstream's).
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";
/// Label of the endpoints of headless services.
pub const HEADLESS_LABEL: &str = "service.kubernetes.io/headless";

struct Ctx {
    client: Client,
    pods: Store<Pod>,
}

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client) {
    let (store, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, store, changes).await;
}

/// Run the controller until the process ends, reading pods from a shared
/// [`PodCache`]'s `store` and woken by its `changes`.
pub async fn run_with_pods(client: Client, pod_store: Store<Pod>, changes: PodChanges) {
    let (svc_store, svc_writer) = reflector::store::<Service>();
    let svc_triggers = reflector::reflector(
        svc_writer,
        watcher(
            Api::<Service>::all(client.clone()),
            watcher::Config::default(),
        ),
    )
    .default_backoff()
    .touched_objects()
    .map_ok(|s| ObjectRef::from_obj(&s));
    // A pod change concerns every selecting service of its namespace (also the
    // ones it stopped matching, hence no selector filter here).
    let lookup = svc_store.clone();
    let pod_triggers = changes.flat_map(move |pod| {
        let ns = pod.namespace().unwrap_or_default();
        let refs: Vec<ObjectRef<Service>> = lookup
            .state()
            .iter()
            .filter(|s| s.namespace().as_deref() == Some(ns.as_str()))
            .filter(|s| {
                s.spec
                    .as_ref()
                    .and_then(|sp| sp.selector.as_ref())
                    .is_some_and(|m| !m.is_empty())
            })
            .map(|s| ObjectRef::from_obj(s.as_ref()))
            .collect();
        stream::iter(refs.into_iter().map(Ok::<_, watcher::Error>))
    });
    // Someone editing or deleting our slices: put them back.
    let slice_triggers = watcher(
        Api::<EndpointSlice>::all(client.clone()),
        watcher::Config::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")),
    )
    .default_backoff()
    .touched_objects()
    .try_filter_map(|s| {
        future::ready(Ok(s.labels().get(SERVICE_NAME_LABEL).map(|n| {
            ObjectRef::<Service>::new(n).within(&s.namespace().unwrap_or_default())
        })))
    });
    let queue = stream::select(stream::select(svc_triggers, pod_triggers), slice_triggers);
    let ctx = Arc::new(Ctx {
        client,
        pods: pod_store,
    });
    util::run_applier(
        "endpoints controller",
        svc_store,
        queue,
        reconcile,
        ctx,
        util::RETRY,
    )
    .await;
}

async fn reconcile(svc: Arc<Service>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    if svc.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let mut action = Action::await_change();
    let is_lb = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("LoadBalancer");
    if is_lb {
        sync_load_balancer(&ctx.client, &svc).await?;
        // Nodes come and go: look again now and then.
        action = Action::requeue(Duration::from_secs(30));
    }
    let selects = svc
        .spec
        .as_ref()
        .and_then(|s| s.selector.as_ref())
        .is_some_and(|m| !m.is_empty());
    let external = svc.spec.as_ref().and_then(|s| s.type_.as_deref()) == Some("ExternalName");
    if !selects || external {
        // Endpoints of selector-less services are the user's.
        return Ok(action);
    }
    // Before the first pod list is in, the cache would say "no endpoints".
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(action);
    }
    let pods: Vec<Arc<Pod>> = ctx
        .pods
        .state()
        .into_iter()
        .filter(|p| p.namespace().as_deref() == Some(ns.as_str()))
        .collect();
    let (endpoints, slices) = desired(&svc, &pods);

    let ep_api: Api<Endpoints> = Api::namespaced(ctx.client.clone(), &ns);
    match ep_api.get_opt(&name).await? {
        None => match ep_api.create(&PostParams::default(), &endpoints).await {
            Ok(_) => {}
            Err(e) if util::is_status(&e, 409) => {
                return Ok(Action::requeue(Duration::from_millis(200)))
            }
            Err(e) => return Err(e.into()),
        },
        Some(cur) => {
            if cur.subsets.clone().unwrap_or_default()
                != endpoints.subsets.clone().unwrap_or_default()
                || !labels_contain(&cur.metadata, &endpoints.metadata)
            {
                let mut next = endpoints.clone();
                next.metadata.resource_version = cur.metadata.resource_version.clone();
                let mut labels = cur.metadata.labels.clone().unwrap_or_default();
                labels.extend(endpoints.metadata.labels.clone().unwrap_or_default());
                next.metadata.labels = Some(labels);
                match ep_api.replace(&name, &PostParams::default(), &next).await {
                    Ok(_) => {}
                    Err(e) if util::is_status(&e, 409) => {
                        return Ok(Action::requeue(Duration::from_millis(200)))
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }

    let slice_api: Api<EndpointSlice> = Api::namespaced(ctx.client.clone(), &ns);
    let existing = slice_api
        .list(&ListParams::default().labels(&format!(
            "{SERVICE_NAME_LABEL}={name},{MANAGED_BY_LABEL}={MANAGED_BY}"
        )))
        .await?;
    let mut by_name: BTreeMap<String, EndpointSlice> = existing
        .items
        .into_iter()
        .map(|s| (s.name_any(), s))
        .collect();
    for want in slices {
        let sname = want.metadata.name.clone().unwrap_or_default();
        match by_name.remove(&sname) {
            None => match slice_api.create(&PostParams::default(), &want).await {
                Ok(_) => {}
                Err(e) if util::is_status(&e, 409) => {
                    action = Action::requeue(Duration::from_millis(200));
                }
                Err(e) => return Err(e.into()),
            },
            Some(cur) => {
                if !slice_equal(&cur, &want) {
                    let mut next = want.clone();
                    next.metadata.resource_version = cur.metadata.resource_version.clone();
                    match slice_api
                        .replace(&sname, &PostParams::default(), &next)
                        .await
                    {
                        Ok(_) => {}
                        Err(e) if util::is_status(&e, 409) => {
                            action = Action::requeue(Duration::from_millis(200));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
    for stale in by_name.keys() {
        match slice_api.delete(stale, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_status(&e, 404) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(action)
}

fn labels_contain(cur: &ObjectMeta, want: &ObjectMeta) -> bool {
    let have = cur.labels.clone().unwrap_or_default();
    want.labels
        .iter()
        .flatten()
        .all(|(k, v)| have.get(k) == Some(v))
}

fn slice_equal(a: &EndpointSlice, b: &EndpointSlice) -> bool {
    a.address_type == b.address_type
        && a.endpoints == b.endpoints
        && a.ports.clone().unwrap_or_default() == b.ports.clone().unwrap_or_default()
        && a.metadata.labels == b.metadata.labels
        && a.metadata.owner_references == b.metadata.owner_references
}

/// Set `status.loadBalancer.ingress` to the nodes' InternalIPs.
async fn sync_load_balancer(client: &Client, svc: &Service) -> Result<(), SyncError> {
    let nodes: Api<Node> = Api::all(client.clone());
    let mut ips: BTreeSet<String> = BTreeSet::new();
    for n in nodes.list(&ListParams::default()).await?.items {
        let addrs = n.status.and_then(|s| s.addresses).unwrap_or_default();
        if let Some(a) = addrs.iter().find(|a| a.type_ == "InternalIP") {
            ips.insert(a.address.clone());
        }
    }
    let have: BTreeSet<String> = svc
        .status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|l| l.ingress.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.clone())
        .collect();
    if have == ips {
        return Ok(());
    }
    let ingress: Vec<serde_json::Value> = ips
        .iter()
        .map(|ip| json!({"ip": ip, "ipMode": "VIP"}))
        .collect();
    let patch = json!({"status": {"loadBalancer": {"ingress": ingress}}});
    let api: Api<Service> = Api::namespaced(client.clone(), &svc.namespace().unwrap_or_default());
    api.patch_status(
        &svc.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

/// A pod's readiness as endpoints see it.
fn pod_ready(pod: &Pod) -> bool {
    util::pod_is_ready(pod)
}

/// One endpoint port of a service port, for `pod` (`None`: the pod has no
/// container port of that name).
fn resolve_port(sp: &k8s_openapi::api::core::v1::ServicePort, pod: &Pod) -> Option<i32> {
    let proto = sp.protocol.as_deref().unwrap_or("TCP");
    match &sp.target_port {
        None => Some(sp.port),
        Some(IntOrString::Int(n)) => Some(*n),
        Some(IntOrString::String(s)) => match s.parse::<i32>() {
            Ok(n) => Some(n),
            Err(_) => pod
                .spec
                .as_ref()?
                .containers
                .iter()
                .flat_map(|c| c.ports.iter().flatten())
                .find(|p| {
                    p.name.as_deref() == Some(s) && p.protocol.as_deref().unwrap_or("TCP") == proto
                })
                .map(|p| p.container_port),
        },
    }
}

type PortSet = Vec<(Option<String>, i32, String)>;

/// The Endpoints and EndpointSlices `svc` should have given the pods of its
/// namespace (pure; the reconcile writes the difference).
pub fn desired(svc: &Service, pods: &[Arc<Pod>]) -> (Endpoints, Vec<EndpointSlice>) {
    let ns = svc.namespace().unwrap_or_default();
    let name = svc.name_any();
    let spec = svc.spec.clone().unwrap_or_default();
    let selector = spec.selector.clone().unwrap_or_default();
    let headless = spec.cluster_ip.as_deref() == Some("None");
    let publish_not_ready = spec.publish_not_ready_addresses == Some(true);

    // Port set → (ready, not ready) Endpoints addresses and slice endpoints.
    type Group = (Vec<EndpointAddress>, Vec<EndpointAddress>, Vec<Endpoint>);
    let mut groups: BTreeMap<PortSet, Group> = BTreeMap::new();
    let mut matching: Vec<&Arc<Pod>> = pods
        .iter()
        .filter(|p| {
            let labels = p.metadata.labels.clone().unwrap_or_default();
            selector.iter().all(|(k, v)| labels.get(k) == Some(v))
        })
        .filter(|p| {
            let phase = p
                .status
                .as_ref()
                .and_then(|s| s.phase.as_deref())
                .unwrap_or("");
            phase != "Succeeded" && phase != "Failed"
        })
        .collect();
    matching.sort_by_key(|p| p.name_any());
    for pod in matching {
        let Some(ip) = pod
            .status
            .as_ref()
            .and_then(|s| s.pod_ip.clone())
            .filter(|ip| !ip.is_empty())
        else {
            continue;
        };
        let ports: PortSet = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|sp| {
                let n = resolve_port(sp, pod)?;
                Some((
                    sp.name.clone(),
                    n,
                    sp.protocol.clone().unwrap_or_else(|| "TCP".into()),
                ))
            })
            .collect();
        if ports.is_empty() && !spec.ports.as_deref().unwrap_or(&[]).is_empty() {
            continue;
        }
        let terminating = pod.metadata.deletion_timestamp.is_some();
        let serving = pod_ready(pod);
        let ready = (serving && !terminating) || publish_not_ready;
        let pspec = pod.spec.clone().unwrap_or_default();
        let hostname = pspec
            .hostname
            .clone()
            .filter(|_| pspec.subdomain.as_deref() == Some(name.as_str()));
        let node_name = pspec.node_name.clone();
        let target = ObjectReference {
            kind: Some("Pod".into()),
            namespace: Some(ns.clone()),
            name: pod.metadata.name.clone(),
            uid: pod.metadata.uid.clone(),
            ..Default::default()
        };
        let g = groups.entry(ports).or_default();
        if !terminating || publish_not_ready {
            let addr = EndpointAddress {
                ip: ip.clone(),
                hostname: hostname.clone(),
                node_name: node_name.clone(),
                target_ref: Some(target.clone()),
            };
            if ready {
                g.0.push(addr);
            } else {
                g.1.push(addr);
            }
        }
        g.2.push(Endpoint {
            addresses: vec![ip],
            conditions: Some(EndpointConditions {
                ready: Some(ready),
                serving: Some(serving),
                terminating: Some(terminating),
            }),
            hostname,
            node_name,
            target_ref: Some(target),
            ..Default::default()
        });
    }

    let mut labels: BTreeMap<String, String> = svc.metadata.labels.clone().unwrap_or_default();
    if headless {
        labels.insert(HEADLESS_LABEL.into(), String::new());
    }
    let owner = util::owner_ref("v1", "Service", &svc.metadata);
    let subsets: Vec<EndpointSubset> = groups
        .iter()
        .filter(|(_, g)| !g.0.is_empty() || !g.1.is_empty())
        .map(|(ports, g)| EndpointSubset {
            addresses: (!g.0.is_empty()).then(|| g.0.clone()),
            not_ready_addresses: (!g.1.is_empty()).then(|| g.1.clone()),
            ports: Some(
                ports
                    .iter()
                    .map(|(n, p, proto)| EndpointPort {
                        name: n.clone(),
                        port: *p,
                        protocol: Some(proto.clone()),
                        ..Default::default()
                    })
                    .collect(),
            ),
        })
        .collect();
    let endpoints = Endpoints {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns.clone()),
            labels: Some(labels.clone()),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        subsets: Some(subsets),
    };

    let mut slice_labels = labels;
    slice_labels.insert(SERVICE_NAME_LABEL.into(), name.clone());
    slice_labels.insert(MANAGED_BY_LABEL.into(), MANAGED_BY.into());
    let slice = |ports: Option<&PortSet>, eps: Vec<Endpoint>| {
        let key = format!("{ports:?}");
        let suffix = format!("{:08x}", fnv32(key.as_bytes()));
        let base: String = name.chars().take(63 - 9).collect();
        EndpointSlice {
            metadata: ObjectMeta {
                name: Some(format!("{base}-{suffix}")),
                namespace: Some(ns.clone()),
                labels: Some(slice_labels.clone()),
                owner_references: Some(vec![owner.clone()]),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: eps,
            ports: ports.map(|ps| {
                ps.iter()
                    .map(|(n, p, proto)| SlicePort {
                        name: n.clone(),
                        port: Some(*p),
                        protocol: Some(proto.clone()),
                        app_protocol: None,
                    })
                    .collect()
            }),
        }
    };
    let mut slices: Vec<EndpointSlice> = groups
        .iter()
        .map(|(ports, g)| slice(Some(ports), g.2.clone()))
        .collect();
    if slices.is_empty() {
        // Upstream keeps one empty placeholder slice.
        slices.push(slice(None, Vec::new()));
    }
    (endpoints, slices)
}

fn fnv32(data: &[u8]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in data {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        Container, ContainerPort, PodCondition, PodSpec, PodStatus, ServicePort, ServiceSpec,
    };

    fn svc(headless: bool, target: IntOrString) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some("web".into()),
                namespace: Some("default".into()),
                uid: Some("svc-uid".into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                selector: Some([("app".to_string(), "web".to_string())].into()),
                cluster_ip: Some(if headless {
                    "None".into()
                } else {
                    "10.43.0.5".into()
                }),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    port: 80,
                    target_port: Some(target),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i32) -> Arc<Pod> {
        Arc::new(Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("default".into()),
                uid: Some(format!("uid-{name}")),
                labels: Some([("app".to_string(), "web".to_string())].into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                node_name: Some("n1".into()),
                containers: vec![Container {
                    name: "c".into(),
                    ports: Some(vec![ContainerPort {
                        name: Some(port_name.into()),
                        container_port: port,
                        ..Default::default()
                    }]),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                pod_ip: Some(ip.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True".into() } else { "False".into() },
                    ..Default::default()
                }]),
                ..Default::default()
            }),
        })
    }

    #[test]
    fn ready_and_not_ready_pods() {
        let pods = vec![
            pod("a", "10.42.0.2", true, "web", 8080),
            pod("b", "10.42.0.3", false, "web", 8080),
            pod("c", "", true, "web", 8080), // no IP yet
        ];
        let mut other = (*pod("x", "10.42.0.9", true, "web", 8080)).clone();
        other.metadata.labels = Some([("app".to_string(), "db".to_string())].into());
        let mut all = pods.clone();
        all.push(Arc::new(other));
        let (ep, slices) = desired(&svc(false, IntOrString::Int(8080)), &all);
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 1);
        let s = &subsets[0];
        assert_eq!(s.addresses.as_ref().unwrap()[0].ip, "10.42.0.2");
        assert_eq!(s.not_ready_addresses.as_ref().unwrap()[0].ip, "10.42.0.3");
        assert_eq!(s.ports.as_ref().unwrap()[0].port, 8080);
        assert_eq!(slices.len(), 1);
        let sl = &slices[0];
        let labels = sl.metadata.labels.as_ref().unwrap();
        assert_eq!(
            labels.get(SERVICE_NAME_LABEL).map(String::as_str),
            Some("web")
        );
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some(MANAGED_BY)
        );
        assert_eq!(sl.endpoints.len(), 2);
        let ready: Vec<(String, Option<bool>)> = sl
            .endpoints
            .iter()
            .map(|e| (e.addresses[0].clone(), e.conditions.as_ref().unwrap().ready))
            .collect();
        assert_eq!(
            ready,
            vec![
                ("10.42.0.2".into(), Some(true)),
                ("10.42.0.3".into(), Some(false))
            ]
        );
        assert_eq!(ep.metadata.owner_references.unwrap()[0].uid, "svc-uid");
    }

    #[test]
    fn named_target_ports_split_port_sets() {
        let pods = vec![
            pod("a", "10.42.0.2", true, "http-alt", 8080),
            pod("b", "10.42.0.3", true, "http-alt", 9090),
            pod("c", "10.42.0.4", true, "other", 7070), // no such port: excluded
        ];
        let (ep, slices) = desired(&svc(true, IntOrString::String("http-alt".into())), &pods);
        let subsets = ep.subsets.unwrap();
        assert_eq!(subsets.len(), 2);
        assert_eq!(slices.len(), 2);
        let ports: BTreeSet<i32> = slices
            .iter()
            .map(|s| s.ports.as_ref().unwrap()[0].port.unwrap())
            .collect();
        assert_eq!(ports, [8080, 9090].into());
        assert!(ep.metadata.labels.unwrap().contains_key(HEADLESS_LABEL));
        assert_ne!(slices[0].metadata.name, slices[1].metadata.name);
    }

    #[test]
    fn no_pods_gives_empty_endpoints_and_placeholder_slice() {
        let (ep, slices) = desired(&svc(false, IntOrString::Int(80)), &[]);
        assert!(ep.subsets.unwrap().is_empty());
        assert_eq!(slices.len(), 1);
        assert!(slices[0].endpoints.is_empty());
        assert!(slices[0].ports.is_none());
    }

    #[test]
    fn terminating_pods_are_not_ready_in_slices_only() {
        let mut p = (*pod("a", "10.42.0.2", true, "web", 80)).clone();
        p.metadata.deletion_timestamp = Some(util::now());
        let (ep, slices) = desired(&svc(false, IntOrString::Int(80)), &[Arc::new(p)]);
        assert!(ep.subsets.unwrap().is_empty());
        let c = slices[0].endpoints[0].conditions.clone().unwrap();
        assert_eq!(
            (c.ready, c.serving, c.terminating),
            (Some(false), Some(true), Some(true))
        );
    }
}
