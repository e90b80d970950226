//! The DaemonSet controller: one pod per eligible node (the template's
//! `nodeSelector` and required node affinity match, and every
//! NoSchedule/NoExecute taint is tolerated, counting upstream's automatic
//! DaemonSet tolerations), rolled out through ControllerRevisions with
//! `RollingUpdate` (`maxUnavailable`, `maxSurge`) or `OnDelete`.
//!
//! Placement: pods get upstream's node affinity (`matchFields metadata.name
//! In [node]`) **and** `spec.nodeName` set directly, so they run without a
//! scheduler (as DaemonSets did before 1.12).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, DaemonSetStatus};
use k8s_openapi::api::core::v1::{
    Affinity, Node, NodeAffinity, NodeSelector, NodeSelectorRequirement, NodeSelectorTerm, Pod,
    PodSpec, Taint, Toleration,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Client, ResourceExt};

use crate::events::Recorder;
use crate::podcache::{PodCache, PodChanges};
use crate::revision::{self, Owner, REVISION_HASH};
use crate::util::{self, Context, PodControl, SyncError, TriggeredController};

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client) {
    let (_, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, changes).await;
}

/// Run the controller until the process ends, woken by the `changes` of a
/// shared [`PodCache`] (its pods are still listed live on each sync).
pub async fn run_with_pods(client: Client, changes: PodChanges) {
    let ctx = Context::new(client.clone(), "daemonset-controller");
    let controller = TriggeredController::new(Api::<DaemonSet>::all(client.clone()));
    let store = controller.store();
    // Any node change may change where the DaemonSets should run.
    controller
        .owns_pods(changes)
        .watches(Api::<Node>::all(client), move |_node: Node| {
            store
                .state()
                .iter()
                .map(|ds| ObjectRef::from_obj(ds.as_ref()))
                .collect::<Vec<_>>()
        })
        .run("daemonset controller", reconcile, ctx, util::RETRY)
        .await;
}

/// The tolerations every DaemonSet pod gets (upstream `AddOrUpdateDaemonPodTolerations`).
pub fn auto_tolerations() -> Vec<Toleration> {
    [
        ("node.kubernetes.io/not-ready", "NoExecute"),
        ("node.kubernetes.io/unreachable", "NoExecute"),
        ("node.kubernetes.io/disk-pressure", "NoSchedule"),
        ("node.kubernetes.io/memory-pressure", "NoSchedule"),
        ("node.kubernetes.io/pid-pressure", "NoSchedule"),
        ("node.kubernetes.io/unschedulable", "NoSchedule"),
    ]
    .into_iter()
    .map(|(k, e)| Toleration {
        key: Some(k.into()),
        operator: Some("Exists".into()),
        effect: Some(e.into()),
        ..Default::default()
    })
    .collect()
}

fn requirement_matches(r: &NodeSelectorRequirement, value: Option<&String>) -> bool {
    let values = r.values.as_deref().unwrap_or(&[]);
    match r.operator.as_str() {
        "In" => value.is_some_and(|v| values.contains(v)),
        "NotIn" => value.is_none_or(|v| !values.contains(v)),
        "Exists" => value.is_some(),
        "DoesNotExist" => value.is_none(),
        "Gt" | "Lt" => {
            let (Some(v), Some(bound)) = (
                value.and_then(|v| v.parse::<i64>().ok()),
                values.first().and_then(|b| b.parse::<i64>().ok()),
            ) else {
                return false;
            };
            if r.operator == "Gt" {
                v > bound
            } else {
                v < bound
            }
        }
        _ => false,
    }
}

/// Does a node selector (ORed terms of ANDed requirements) match the node?
pub fn node_selector_matches(sel: &NodeSelector, node: &Node) -> bool {
    let empty = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    let name = node.metadata.name.clone().unwrap_or_default();
    sel.node_selector_terms.iter().any(|t| {
        let exprs = t.match_expressions.as_deref().unwrap_or(&[]);
        let fields = t.match_fields.as_deref().unwrap_or(&[]);
        if exprs.is_empty() && fields.is_empty() {
            return false;
        }
        exprs
            .iter()
            .all(|r| requirement_matches(r, labels.get(&r.key)))
            && fields
                .iter()
                .all(|r| r.key == "metadata.name" && requirement_matches(r, Some(&name)))
    })
}

/// Should a pod with `spec` run on `node` (selector, affinity, taints)?
pub fn should_run(spec: &PodSpec, node: &Node) -> bool {
    let empty = Default::default();
    let labels = node.metadata.labels.as_ref().unwrap_or(&empty);
    if spec
        .node_selector
        .iter()
        .flatten()
        .any(|(k, v)| labels.get(k) != Some(v))
    {
        return false;
    }
    if let Some(sel) = spec
        .affinity
        .as_ref()
        .and_then(|a| a.node_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        })
    {
        if !node_selector_matches(sel, node) {
            return false;
        }
    }
    let mut tols = spec.tolerations.clone().unwrap_or_default();
    tols.extend(auto_tolerations());
    let taints: &[Taint] = node
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_deref())
        .unwrap_or(&[]);
    taints
        .iter()
        .filter(|t| t.effect == "NoSchedule" || t.effect == "NoExecute")
        .all(|t| tols.iter().any(|tol| util::tolerates(tol, t)))
}

/// The node a DaemonSet pod is for (`spec.nodeName`, or its affinity target).
pub fn pod_node(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    if let Some(n) = spec.node_name.clone().filter(|n| !n.is_empty()) {
        return Some(n);
    }
    spec.affinity
        .as_ref()?
        .node_affinity
        .as_ref()?
        .required_during_scheduling_ignored_during_execution
        .as_ref()?
        .node_selector_terms
        .iter()
        .flat_map(|t| t.match_fields.iter().flatten())
        .find(|r| r.key == "metadata.name" && r.operator == "In")
        .and_then(|r| r.values.as_ref()?.first().cloned())
}

/// The pod the DaemonSet runs on `node` at revision `hash`.
pub fn pod_for(ds: &DaemonSet, node: &str, hash: &str) -> Pod {
    let template = ds
        .spec
        .as_ref()
        .map(|s| s.template.clone())
        .unwrap_or_default();
    let tmeta = template.metadata.unwrap_or_default();
    let mut labels = tmeta.labels.unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash.into());
    if let Some(g) = ds.metadata.generation {
        labels.insert("pod-template-generation".into(), g.to_string());
    }
    let mut spec = template.spec.unwrap_or_default();
    spec.node_name = Some(node.into());
    let affinity = spec.affinity.get_or_insert_with(Affinity::default);
    let na = affinity
        .node_affinity
        .get_or_insert_with(NodeAffinity::default);
    na.required_during_scheduling_ignored_during_execution = Some(NodeSelector {
        node_selector_terms: vec![NodeSelectorTerm {
            match_expressions: None,
            match_fields: Some(vec![NodeSelectorRequirement {
                key: "metadata.name".into(),
                operator: "In".into(),
                values: Some(vec![node.into()]),
            }]),
        }],
    });
    let tols = spec.tolerations.get_or_insert_with(Vec::new);
    for t in auto_tolerations() {
        if !tols.iter().any(|x| x.key == t.key && x.effect == t.effect) {
            tols.push(t);
        }
    }
    Pod {
        metadata: ObjectMeta {
            generate_name: Some(format!("{}-", ds.name_any())),
            namespace: ds.namespace(),
            labels: Some(labels),
            annotations: tmeta.annotations,
            owner_references: Some(vec![util::owner_ref("apps/v1", "DaemonSet", &ds.metadata)]),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn hash_of(p: &Pod) -> Option<&str> {
    p.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(REVISION_HASH))
        .map(String::as_str)
}

async fn reconcile(ds: Arc<DaemonSet>, ctx: Arc<Context>) -> Result<Action, SyncError> {
    let ns = ds.namespace().unwrap_or_default();
    let name = ds.name_any();
    let Some(ds) = util::get_live(&ctx.client, ds.as_ref()).await? else {
        return Ok(Action::await_change());
    };
    let uid = ds.metadata.uid.clone().unwrap_or_default();
    let Some(spec) = ds.spec.as_ref() else {
        return Ok(Action::await_change());
    };
    if ds.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let node_api: Api<Node> = Api::all(ctx.client.clone());
    let nodes = node_api.list(&ListParams::default()).await?.items;
    let pod_api: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let lp = ListParams::default().labels(&util::match_labels_query(Some(&spec.selector)));
    let pods = util::list_controlled(&pod_api, &lp, &uid).await?;
    let pod_control = PodControl::new(pod_api, &ctx.recorder, Recorder::reference(ds.as_ref()));
    let old_status = ds.status.clone().unwrap_or_default();
    let owner = Owner {
        kind: "DaemonSet",
        meta: &ds.metadata,
        selector: Some(&spec.selector),
    };
    let (revs, ui) = revision::sync(
        &ctx.client,
        &owner,
        &spec.template,
        old_status.collision_count,
    )
    .await?;
    let hash = revs[ui]
        .labels()
        .get(REVISION_HASH)
        .cloned()
        .unwrap_or_else(|| util::template_hash(&spec.template, old_status.collision_count));

    let mut by_node: HashMap<String, Vec<&Pod>> = HashMap::new();
    for p in pods
        .iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
    {
        if let Some(n) = pod_node(p) {
            by_node.entry(n).or_default().push(p);
        }
    }
    let template_spec = spec.template.spec.clone().unwrap_or_default();
    let now = Timestamp::now();
    let min_ready = spec.min_ready_seconds.unwrap_or(0);
    let available =
        |p: &Pod| util::pod_is_active(p) && util::pod_available_in(p, min_ready, now) == Some(0);

    let mut desired = 0;
    let (mut current, mut misscheduled, mut ready, mut updated, mut avail) = (0, 0, 0, 0, 0);
    let mut requeue = false;
    // (node, old pod, new pod) for the rolling update.
    let mut rolling: Vec<(String, Option<&Pod>, Option<&Pod>)> = Vec::new();
    for node in &nodes {
        let nname = node.name_any();
        let here = by_node.remove(&nname).unwrap_or_default();
        if !should_run(&template_spec, node) {
            if !here.is_empty() {
                misscheduled += 1;
            }
            for p in here {
                pod_control.delete(p).await?;
            }
            continue;
        }
        desired += 1;
        let (dead, mut live): (Vec<&Pod>, Vec<&Pod>) = here
            .into_iter()
            .partition(|p| util::pod_phase(p) == "Failed");
        for p in dead {
            pod_control.delete(p).await?;
            requeue = true;
        }
        if live.is_empty() {
            pod_control.create(&pod_for(&ds, &nname, &hash)).await?;
            continue;
        }
        current += 1;
        // Keep at most one new and one old pod per node; oldest first.
        live.sort_by_key(|p| p.metadata.creation_timestamp.as_ref().map(|t| t.0));
        let new = live
            .iter()
            .copied()
            .find(|p| hash_of(p) == Some(hash.as_str()));
        let old = live
            .iter()
            .copied()
            .find(|p| hash_of(p) != Some(hash.as_str()));
        for p in live.iter().filter(|p| {
            Some(p.metadata.uid.as_deref()) != new.map(|n| n.metadata.uid.as_deref())
                && Some(p.metadata.uid.as_deref()) != old.map(|o| o.metadata.uid.as_deref())
        }) {
            pod_control.delete(p).await?;
        }
        let shown = new.or(old);
        if shown.is_some_and(util::pod_is_ready) {
            ready += 1;
        }
        if shown.is_some_and(available) {
            avail += 1;
        } else if shown.is_some_and(util::pod_is_ready) {
            requeue = true;
        }
        if new.is_some() {
            updated += 1;
        }
        rolling.push((nname, old, new));
    }
    // Pods for nodes that no longer exist.
    for p in by_node.into_values().flatten() {
        pod_control.delete(p).await?;
    }

    let strategy = spec.update_strategy.as_ref();
    if strategy
        .and_then(|s| s.type_.as_deref())
        .unwrap_or("RollingUpdate")
        == "RollingUpdate"
    {
        let ru = strategy.and_then(|s| s.rolling_update.as_ref());
        let surge = util::int_or_percent(ru.and_then(|r| r.max_surge.as_ref()), "0", desired, true);
        let mut max_unavail = util::int_or_percent(
            ru.and_then(|r| r.max_unavailable.as_ref()),
            "1",
            desired,
            true,
        );
        if surge == 0 && max_unavail == 0 {
            max_unavail = 1;
        }
        let unavailable = desired - avail;
        let mut budget = max_unavail - unavailable;
        let mut surging = i32::try_from(
            rolling
                .iter()
                .filter(|(_, o, n)| o.is_some() && n.is_some())
                .count(),
        )
        .unwrap_or(0);
        for (node, old, new) in &rolling {
            match (old, new) {
                (Some(o), Some(n)) if available(n) => {
                    pod_control.delete(o).await?;
                }
                (Some(o), None) => {
                    if !available(o) {
                        pod_control.delete(o).await?;
                    } else if surge > 0 {
                        if surging < surge {
                            pod_control.create(&pod_for(&ds, node, &hash)).await?;
                            surging += 1;
                        }
                    } else if budget > 0 {
                        pod_control.delete(o).await?;
                        budget -= 1;
                    }
                }
                _ => {}
            }
        }
    }

    let status = DaemonSetStatus {
        observed_generation: ds.metadata.generation,
        desired_number_scheduled: desired,
        current_number_scheduled: current,
        number_misscheduled: misscheduled,
        number_ready: ready,
        updated_number_scheduled: Some(updated),
        number_available: Some(avail),
        number_unavailable: Some(desired - avail),
        collision_count: old_status.collision_count,
        conditions: old_status.conditions.clone(),
    };
    revision::prune(
        &ctx.client,
        &revs,
        &[revs[ui].name_any()],
        usize::try_from(spec.revision_history_limit.unwrap_or(10).max(0)).unwrap_or(10),
    )
    .await?;
    if ds.status.as_ref() != Some(&status) {
        let api: Api<DaemonSet> = Api::namespaced(ctx.client.clone(), &ns);
        if !util::patch_status(&api, &name, &status).await? {
            return Ok(Action::await_change());
        }
    }
    Ok(Action::requeue(if requeue {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(30)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::NodeSpec;

    fn node(name: &str, labels: &[(&str, &str)], taints: Vec<Taint>) -> Node {
        Node {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                ),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                taints: Some(taints),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn taint(key: &str, effect: &str) -> Taint {
        Taint {
            key: key.into(),
            effect: effect.into(),
            ..Default::default()
        }
    }

    #[test]
    fn eligibility() {
        let mut spec = PodSpec::default();
        let plain = node("a", &[("disk", "ssd")], vec![]);
        assert!(should_run(&spec, &plain));
        // Automatic tolerations cover unreachable and unschedulable.
        let down = node(
            "b",
            &[],
            vec![
                taint("node.kubernetes.io/unreachable", "NoExecute"),
                taint("node.kubernetes.io/unschedulable", "NoSchedule"),
            ],
        );
        assert!(should_run(&spec, &down));
        let dedicated = node("c", &[], vec![taint("dedicated", "NoSchedule")]);
        assert!(!should_run(&spec, &dedicated));
        let soft = node("d", &[], vec![taint("dedicated", "PreferNoSchedule")]);
        assert!(should_run(&spec, &soft));
        spec.node_selector = Some([("disk".to_string(), "ssd".to_string())].into());
        assert!(should_run(&spec, &plain));
        assert!(!should_run(&spec, &node("e", &[("disk", "hdd")], vec![])));
    }

    #[test]
    fn pods_pinned_to_their_node() {
        let ds = DaemonSet {
            metadata: ObjectMeta {
                name: Some("agent".into()),
                namespace: Some("kube-system".into()),
                uid: Some("u".into()),
                generation: Some(2),
                ..Default::default()
            },
            ..Default::default()
        };
        let p = pod_for(&ds, "n1", "h1");
        assert_eq!(pod_node(&p).as_deref(), Some("n1"));
        assert_eq!(p.spec.as_ref().unwrap().node_name.as_deref(), Some("n1"));
        assert_eq!(hash_of(&p), Some("h1"));
        let aff = p.spec.as_ref().unwrap().affinity.clone().unwrap();
        let sel = aff
            .node_affinity
            .unwrap()
            .required_during_scheduling_ignored_during_execution
            .unwrap();
        assert!(node_selector_matches(&sel, &node("n1", &[], vec![])));
        assert!(!node_selector_matches(&sel, &node("n2", &[], vec![])));
        assert_eq!(p.spec.unwrap().tolerations.unwrap().len(), 6);
    }
}
