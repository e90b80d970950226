//! Behaviour tests of the in-process core: each filter and score through
//! [`Cache::schedule_one`], and the unschedulable message.

use serde_json::{json, Value};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod};

use crate::cache::Cache;
use crate::fit_error::Preemption;
use crate::info::PodInfo;

/// A Ready node with `cpu` cores, `mem_gi` GiB and 110 pods; extra fields merged.
pub(crate) fn node(name: &str, cpu: &str, mem: &str, extra: Value) -> Node {
    let mut v = json!({
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name}},
        "spec": {},
        "status": {
            "allocatable": {"cpu": cpu, "memory": mem, "pods": "110", "ephemeral-storage": "100Gi"},
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

/// A pod in `default` requesting `cpu`/`mem`; extra fields merged.
pub(crate) fn pod(name: &str, cpu: &str, mem: &str, extra: Value) -> Pod {
    let mut v = json!({
        "metadata": {"name": name, "namespace": "default", "uid": format!("uid-{name}")},
        "spec": {"containers": [{"name": "c", "image": "x",
            "resources": {"requests": {"cpu": cpu, "memory": mem}}}]}
    });
    merge(&mut v, extra);
    serde_json::from_value(v).unwrap()
}

fn merge(a: &mut Value, b: Value) {
    match (a, b) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(Value::Null), v);
            }
        }
        (a, b) => *a = b,
    }
}

fn cache(nodes: Vec<Node>) -> Cache {
    let mut c = Cache::new();
    for n in &nodes {
        c.upsert_node(n);
    }
    c
}

fn bound(name: &str, node: &str, labels: Value, extra: Value) -> Pod {
    let mut p = pod(
        name,
        "100m",
        "100Mi",
        json!({"metadata": {"labels": labels}, "spec": {"nodeName": node}}),
    );
    let mut v = serde_json::to_value(&p).unwrap();
    merge(&mut v, extra);
    p = serde_json::from_value(v).unwrap();
    p
}

#[test]
fn resources_fit_and_message() {
    let mut c = cache(vec![
        node("n1", "1", "1Gi", json!({})),
        node("n2", "1", "1Gi", json!({})),
        node(
            "cp",
            "8",
            "8Gi",
            json!({"spec": {"taints": [{"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}]}}),
        ),
    ]);
    let err = c
        .schedule_one(&pod("big", "2", "100Mi", json!({})))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, \
         2 Insufficient cpu. preemption: 0/3 nodes are available: 1 Preemption is not helpful for scheduling, \
         2 No preemption victims found for incoming pod."
    );
    // Two 600m pods cannot share a 1-core node.
    let a = c
        .schedule_one(&pod("a", "600m", "100Mi", json!({})))
        .unwrap();
    let b = c
        .schedule_one(&pod("b", "600m", "100Mi", json!({})))
        .unwrap();
    assert_ne!(a, b);
    let err = c
        .schedule_one(&pod("x", "600m", "100Mi", json!({})))
        .unwrap_err();
    assert_eq!(err.reasons.get("Insufficient cpu"), Some(&2));
}

#[test]
fn memory_pods_and_extended_resources() {
    let mut c = cache(vec![node(
        "n1",
        "8",
        "1Gi",
        json!({"status": {"allocatable": {"pods": "1", "example.com/gpu": "1"}}}),
    )]);
    let err = c
        .schedule_one(&pod("m", "1", "2Gi", json!({})))
        .unwrap_err();
    assert_eq!(err.reasons.get("Insufficient memory"), Some(&1));
    let gpu = json!({"spec": {"containers": [{"name": "c", "image": "x",
        "resources": {"requests": {"cpu": "1", "example.com/gpu": "2"}}}]}});
    let err = c.schedule_one(&pod("g", "1", "1Mi", gpu)).unwrap_err();
    assert_eq!(err.reasons.get("Insufficient example.com/gpu"), Some(&1));
    c.schedule_one(&pod("a", "1", "1Mi", json!({}))).unwrap();
    let err = c
        .schedule_one(&pod("b", "1", "1Mi", json!({})))
        .unwrap_err();
    assert_eq!(err.reasons.get("Too many pods"), Some(&1));
}

#[test]
fn not_ready_and_cordoned_nodes_are_skipped() {
    let mut c = cache(vec![
        node(
            "down",
            "8",
            "8Gi",
            json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        ),
        node(
            "cordoned",
            "8",
            "8Gi",
            json!({"spec": {"unschedulable": true}}),
        ),
        node("ok", "1", "1Gi", json!({})),
    ]);
    assert_eq!(
        c.schedule_one(&pod("a", "100m", "1Mi", json!({}))).unwrap(),
        "ok"
    );
    let err = c
        .schedule_one(&pod("b", "4", "1Mi", json!({})))
        .unwrap_err();
    assert_eq!(err.reasons.get("node(s) were unschedulable"), Some(&1));
    assert_eq!(
        err.reasons
            .get("node(s) had untolerated taint {node.kubernetes.io/not-ready: }"),
        Some(&1)
    );
    // A toleration for the cordon lets the pod onto the cordoned node.
    let tol = json!({"spec": {"tolerations": [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]}});
    assert_eq!(
        c.schedule_one(&pod("c", "4", "1Mi", tol)).unwrap(),
        "cordoned"
    );
}

#[test]
fn taints_and_tolerations() {
    let taint = |effect: &str| json!({"spec": {"taints": [{"key": "dedicated", "value": "db", "effect": effect}]}});
    let mut c = cache(vec![
        node("ns", "8", "8Gi", taint("NoSchedule")),
        node("ne", "8", "8Gi", taint("NoExecute")),
    ]);
    let err = c
        .schedule_one(&pod("a", "1", "1Mi", json!({})))
        .unwrap_err();
    assert_eq!(
        err.reasons
            .get("node(s) had untolerated taint {dedicated: db}"),
        Some(&2)
    );
    let tol = json!({"spec": {"tolerations": [{"key": "dedicated", "operator": "Equal", "value": "db", "effect": "NoExecute"}]}});
    assert_eq!(c.schedule_one(&pod("b", "1", "1Mi", tol)).unwrap(), "ne");
}

#[test]
fn prefer_no_schedule_is_a_score() {
    let mut c = cache(vec![
        node(
            "soft",
            "8",
            "8Gi",
            json!({"spec": {"taints": [{"key": "k", "effect": "PreferNoSchedule"}]}}),
        ),
        node("clean", "8", "8Gi", json!({})),
    ]);
    for i in 0..5 {
        assert_eq!(
            c.schedule_one(&pod(&format!("p{i}"), "10m", "1Mi", json!({})))
                .unwrap(),
            "clean"
        );
    }
}

#[test]
fn node_selector_and_required_node_affinity() {
    let mut c = cache(vec![
        node(
            "a",
            "8",
            "8Gi",
            json!({"metadata": {"labels": {"disk": "ssd", "cores": "16"}}}),
        ),
        node(
            "b",
            "8",
            "8Gi",
            json!({"metadata": {"labels": {"disk": "hdd", "cores": "4"}}}),
        ),
    ]);
    let sel = json!({"spec": {"nodeSelector": {"disk": "hdd"}}});
    assert_eq!(c.schedule_one(&pod("p1", "1", "1Mi", sel)).unwrap(), "b");
    let gt = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "cores", "operator": "Gt", "values": ["8"]}]}]}}}}});
    assert_eq!(c.schedule_one(&pod("p2", "1", "1Mi", gt)).unwrap(), "a");
    let field = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b"]}]}]}}}}});
    assert_eq!(c.schedule_one(&pod("p3", "1", "1Mi", field)).unwrap(), "b");
    let none = json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchExpressions": [{"key": "disk", "operator": "DoesNotExist"}]}]}}}}});
    let err = c.schedule_one(&pod("p4", "1", "1Mi", none)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity/selector. preemption: \
         0/2 nodes are available: 2 Preemption is not helpful for scheduling."
    );
}

#[test]
fn preferred_node_affinity_is_a_score() {
    let mut c = cache(vec![
        node(
            "a",
            "8",
            "8Gi",
            json!({"metadata": {"labels": {"zone": "x"}}}),
        ),
        node(
            "b",
            "8",
            "8Gi",
            json!({"metadata": {"labels": {"zone": "y"}}}),
        ),
    ]);
    let pref = json!({"spec": {"affinity": {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "preference": {"matchExpressions": [{"key": "zone", "operator": "In", "values": ["y"]}]}}]}}}});
    for i in 0..4 {
        assert_eq!(
            c.schedule_one(&pod(&format!("p{i}"), "10m", "1Mi", pref.clone()))
                .unwrap(),
            "b"
        );
    }
}

#[test]
fn host_ports_conflict() {
    let mut c = cache(vec![
        node("a", "8", "8Gi", json!({})),
        node("b", "8", "8Gi", json!({})),
    ]);
    let port = json!({"spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80, "hostPort": 8080}]}]}});
    let a = c
        .schedule_one(&pod("p1", "1", "1Mi", port.clone()))
        .unwrap();
    let b = c
        .schedule_one(&pod("p2", "1", "1Mi", port.clone()))
        .unwrap();
    assert_ne!(a, b);
    let err = c.schedule_one(&pod("p3", "1", "1Mi", port)).unwrap_err();
    assert_eq!(
        err.reasons
            .get("node(s) didn't have free ports for the requested pod ports"),
        Some(&2)
    );
}

fn anti(app: &str, key: &str) -> Value {
    json!({"metadata": {"labels": {"app": app}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": app}}, "topologyKey": key}]}}}})
}

#[test]
fn required_anti_affinity_spreads_and_blocks() {
    let mut c = cache(vec![
        node("a", "8", "8Gi", json!({})),
        node("b", "8", "8Gi", json!({})),
    ]);
    let x = c
        .schedule_one(&pod(
            "w1",
            "1",
            "1Mi",
            anti("web", "kubernetes.io/hostname"),
        ))
        .unwrap();
    let y = c
        .schedule_one(&pod(
            "w2",
            "1",
            "1Mi",
            anti("web", "kubernetes.io/hostname"),
        ))
        .unwrap();
    assert_ne!(x, y);
    let err = c
        .schedule_one(&pod(
            "w3",
            "1",
            "1Mi",
            anti("web", "kubernetes.io/hostname"),
        ))
        .unwrap_err();
    assert_eq!(
        err.reasons
            .get("node(s) didn't match pod anti-affinity rules"),
        Some(&2)
    );
    // Other apps are not affected.
    c.schedule_one(&pod(
        "o",
        "1",
        "1Mi",
        anti("other", "kubernetes.io/hostname"),
    ))
    .unwrap();
    // Removing a replica frees its node.
    c.remove_pod("default/w1");
    assert_eq!(
        c.schedule_one(&pod(
            "w4",
            "1",
            "1Mi",
            anti("web", "kubernetes.io/hostname")
        ))
        .unwrap(),
        x
    );
}

#[test]
fn existing_pods_anti_affinity_is_symmetric() {
    let mut c = cache(vec![
        node("a", "8", "8Gi", json!({})),
        node("b", "8", "8Gi", json!({})),
    ]);
    // A bound pod on `a` refuses company labelled app=db.
    let guard = bound(
        "guard",
        "a",
        json!({"app": "guard"}),
        json!({"spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}}}),
    );
    c.upsert_pod(&guard);
    for i in 0..3 {
        let p = pod(
            &format!("db{i}"),
            "10m",
            "1Mi",
            json!({"metadata": {"labels": {"app": "db"}}}),
        );
        assert_eq!(c.schedule_one(&p).unwrap(), "b");
    }
    let mut only_a = pod(
        "db-a",
        "10m",
        "1Mi",
        json!({"metadata": {"labels": {"app": "db"}}, "spec": {"nodeSelector": {"kubernetes.io/hostname": "a"}}}),
    );
    let err = c.schedule_one(&only_a).unwrap_err();
    assert_eq!(
        err.reasons
            .get("node(s) didn't satisfy existing pods anti-affinity rules"),
        Some(&1)
    );
    // Pods in another namespace are not selected by the guard's term.
    only_a.metadata.namespace = Some("other".into());
    assert_eq!(c.schedule_one(&only_a).unwrap(), "a");
}

#[test]
fn required_pod_affinity_with_zones() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    let mut c = cache(vec![
        node("a1", "8", "8Gi", zone("a")),
        node("a2", "8", "8Gi", zone("a")),
        node("b1", "8", "8Gi", zone("b")),
    ]);
    c.upsert_pod(&bound("cache", "a2", json!({"app": "cache"}), json!({})));
    let aff = json!({"metadata": {"labels": {"app": "web"}}, "spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "cache"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}});
    for i in 0..4 {
        let n = c
            .schedule_one(&pod(&format!("w{i}"), "10m", "1Mi", aff.clone()))
            .unwrap();
        assert!(n.starts_with('a'), "{n}");
    }
    // No matching pod anywhere and the pod does not match its own term: unschedulable.
    let aff2 = json!({"spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "nothing"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}});
    let err = c
        .schedule_one(&pod("lonely", "10m", "1Mi", aff2))
        .unwrap_err();
    assert_eq!(
        err.reasons.get("node(s) didn't match pod affinity rules"),
        Some(&3)
    );
    // The first pod of a self-affine group may go anywhere.
    let selfaff = json!({"metadata": {"labels": {"app": "grp"}}, "spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "grp"}}, "topologyKey": "topology.kubernetes.io/zone"}]}}}});
    let first = c
        .schedule_one(&pod("g0", "10m", "1Mi", selfaff.clone()))
        .unwrap();
    let zone_of = |n: &str| if n.starts_with('a') { "a" } else { "b" };
    let second = c.schedule_one(&pod("g1", "10m", "1Mi", selfaff)).unwrap();
    assert_eq!(zone_of(&first), zone_of(&second));
}

#[test]
fn affinity_namespace_selector() {
    let mut c = cache(vec![
        node("a", "8", "8Gi", json!({})),
        node("b", "8", "8Gi", json!({})),
    ]);
    let ns: Namespace =
        serde_json::from_value(json!({"metadata": {"name": "team", "labels": {"team": "x"}}}))
            .unwrap();
    c.upsert_namespace(&ns);
    let mut p = bound("db", "b", json!({"app": "db"}), json!({}));
    p.metadata.namespace = Some("team".into());
    c.upsert_pod(&p);
    let aff = json!({"spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname",
             "namespaceSelector": {"matchLabels": {"team": "x"}}}]}}}});
    assert_eq!(c.schedule_one(&pod("w", "10m", "1Mi", aff)).unwrap(), "b");
    // Without a namespace selector only the pod's own namespace counts.
    let aff_own = json!({"spec": {"affinity": {"podAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}]}}}});
    assert!(c.schedule_one(&pod("w2", "10m", "1Mi", aff_own)).is_err());
}

#[test]
fn preferred_pod_affinity_and_anti_affinity_scores() {
    let mut c = cache(vec![
        node("a", "8", "8Gi", json!({})),
        node("b", "8", "8Gi", json!({})),
    ]);
    c.upsert_pod(&bound("db", "b", json!({"app": "db"}), json!({})));
    let pref = json!({"spec": {"affinity": {"podAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}});
    for i in 0..3 {
        assert_eq!(
            c.schedule_one(&pod(&format!("p{i}"), "10m", "1Mi", pref.clone()))
                .unwrap(),
            "b"
        );
    }
    let avoid = json!({"spec": {"affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 100, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": "kubernetes.io/hostname"}}]}}}});
    for i in 0..3 {
        assert_eq!(
            c.schedule_one(&pod(&format!("q{i}"), "10m", "1Mi", avoid.clone()))
                .unwrap(),
            "a"
        );
    }
}

fn spread(max_skew: i32, when: &str) -> Value {
    json!({"metadata": {"labels": {"app": "s"}}, "spec": {"topologySpreadConstraints": [
        {"maxSkew": max_skew, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": when,
         "labelSelector": {"matchLabels": {"app": "s"}}}]}})
}

#[test]
fn topology_spread_do_not_schedule() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    let mut c = cache(vec![
        node("a1", "8", "8Gi", zone("a")),
        node("a2", "8", "8Gi", zone("a")),
        node("b1", "8", "8Gi", zone("b")),
        node("nolabel", "64", "64Gi", json!({})),
    ]);
    let mut per_zone = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..6 {
        let n = c
            .schedule_one(&pod(
                &format!("s{i}"),
                "10m",
                "1Mi",
                spread(1, "DoNotSchedule"),
            ))
            .unwrap();
        assert_ne!(n, "nolabel");
        *per_zone.entry(n[..1].to_string()).or_default() += 1;
    }
    assert_eq!(per_zone.get("a"), Some(&3));
    assert_eq!(per_zone.get("b"), Some(&3));
    // Only zone a allowed by node selector while a has one more: skew would be exceeded
    // only relative to eligible domains, so it still fits (b is not eligible).
    let mut only_b = spread(1, "DoNotSchedule");
    merge(
        &mut only_b,
        json!({"spec": {"nodeSelector": {"topology.kubernetes.io/zone": "b"}}}),
    );
    assert_eq!(
        c.schedule_one(&pod("sb", "10m", "1Mi", only_b)).unwrap(),
        "b1"
    );
    // Now b has 4, a has 3; a pod forced on b would make skew 2.
    let mut b_again = spread(1, "DoNotSchedule");
    merge(
        &mut b_again,
        json!({"spec": {"affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["b1", "nolabel"]}]}]}}}}}),
    );
    // Eligible domains are only {b} (nolabel has no zone), so min = 4 and it fits.
    assert_eq!(
        c.schedule_one(&pod("sb2", "10m", "1Mi", b_again)).unwrap(),
        "b1"
    );
    let err = {
        let mut v = spread(1, "DoNotSchedule");
        merge(
            &mut v,
            json!({"spec": {"nodeSelector": {"kubernetes.io/hostname": "nolabel"}}}),
        );
        c.schedule_one(&pod("nl", "10m", "1Mi", v)).unwrap_err()
    };
    assert_eq!(
        err.reasons
            .get("node(s) didn't match pod topology spread constraints (missing required label)"),
        Some(&1)
    );
}

#[test]
fn topology_spread_skew_blocks() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    let mut c = cache(vec![
        node("a1", "8", "8Gi", zone("a")),
        node("b1", "1", "8Gi", zone("b")),
    ]);
    // Fill b1's CPU so zone b cannot take more; zone a may take at most 1 more than b.
    c.upsert_pod(&bound("filler", "b1", json!({}), json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "1"}}}]}})));
    assert_eq!(
        c.schedule_one(&pod("s0", "10m", "1Mi", spread(1, "DoNotSchedule")))
            .unwrap(),
        "a1"
    );
    let err = c
        .schedule_one(&pod("s1", "10m", "1Mi", spread(1, "DoNotSchedule")))
        .unwrap_err();
    assert_eq!(
        err.reasons
            .get("node(s) didn't match pod topology spread constraints"),
        Some(&1)
    );
    assert_eq!(err.reasons.get("Insufficient cpu"), Some(&1));
    // ScheduleAnyway is only a preference.
    assert_eq!(
        c.schedule_one(&pod("s2", "10m", "1Mi", spread(1, "ScheduleAnyway")))
            .unwrap(),
        "a1"
    );
}

#[test]
fn schedule_anyway_prefers_emptier_domains() {
    let zone = |z: &str| json!({"metadata": {"labels": {"topology.kubernetes.io/zone": z}}});
    let mut c = cache(vec![
        node("a1", "8", "8Gi", zone("a")),
        node("b1", "8", "8Gi", zone("b")),
    ]);
    let mut per = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..10 {
        let n = c
            .schedule_one(&pod(
                &format!("s{i}"),
                "10m",
                "1Mi",
                spread(5, "ScheduleAnyway"),
            ))
            .unwrap();
        *per.entry(n).or_default() += 1;
    }
    assert_eq!(per.values().copied().collect::<Vec<_>>(), vec![5, 5]);
}

#[test]
fn replicas_of_one_owner_spread_over_nodes() {
    let mut c = cache(
        (0..4)
            .map(|i| node(&format!("n{i}"), "64", "64Gi", json!({})))
            .collect(),
    );
    // Load n0 heavily with unrelated pods so least-allocated alone would avoid it less.
    let owned = json!({"metadata": {"ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
        "name": "rs", "uid": "rs-1", "controller": true}]}});
    let mut per = std::collections::BTreeMap::<String, i32>::new();
    for i in 0..8 {
        let n = c
            .schedule_one(&pod(&format!("r{i}"), "10m", "1Mi", owned.clone()))
            .unwrap();
        *per.entry(n).or_default() += 1;
    }
    assert_eq!(per.len(), 4);
    assert!(per.values().all(|v| *v == 2), "{per:?}");
}

#[test]
fn least_allocated_and_balanced_scores() {
    let mut c = cache(vec![
        node("small", "2", "2Gi", json!({})),
        node("big", "16", "16Gi", json!({})),
    ]);
    assert_eq!(
        c.schedule_one(&pod("p", "1", "1Gi", json!({}))).unwrap(),
        "big"
    );
    // Balanced: a CPU-heavy node is avoided by a CPU-heavy pod.
    let mut c = cache(vec![
        node("cpu-used", "10", "10Gi", json!({})),
        node("fresh", "10", "10Gi", json!({})),
    ]);
    c.upsert_pod(&bound("hog", "cpu-used", json!({}), json!({"spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "5", "memory": "1Mi"}}}]}})));
    assert_eq!(
        c.schedule_one(&pod("p", "2", "1Mi", json!({}))).unwrap(),
        "fresh"
    );
}

#[test]
fn assumed_pods_count_and_forget_releases() {
    let mut c = cache(vec![node("n", "1", "1Gi", json!({}))]);
    c.schedule_one(&pod("a", "1", "1Mi", json!({}))).unwrap();
    assert!(c.is_assumed("default/a"));
    assert!(c.schedule_one(&pod("b", "1", "1Mi", json!({}))).is_err());
    c.forget("default/a");
    assert_eq!(
        c.schedule_one(&pod("b", "1", "1Mi", json!({}))).unwrap(),
        "n"
    );
    // Confirming the binding keeps the pod placed, no longer assumed.
    let mut confirmed = pod("b", "1", "1Mi", json!({}));
    confirmed.spec.as_mut().unwrap().node_name = Some("n".into());
    c.upsert_pod(&confirmed);
    assert!(!c.is_assumed("default/b"));
    assert_eq!(c.node("n").unwrap().requested.milli_cpu, 1000);
    // A finished pod frees its resources.
    confirmed.status = Some(serde_json::from_value(json!({"phase": "Succeeded"})).unwrap());
    c.upsert_pod(&confirmed);
    assert_eq!(c.node("n").unwrap().requested.milli_cpu, 0);
}

#[test]
fn node_label_changes_recount_terms_and_pods_before_nodes() {
    let mut c = Cache::new();
    // A pod bound to a node the cache has not seen yet.
    c.upsert_pod(&bound("w0", "a", json!({"app": "web"}), json!({})));
    c.upsert_node(&node("a", "8", "8Gi", json!({})));
    c.upsert_node(&node("b", "8", "8Gi", json!({})));
    assert_eq!(c.node("a").unwrap().pods.len(), 1);
    let n = c
        .schedule_one(&pod(
            "w1",
            "10m",
            "1Mi",
            anti("web", "kubernetes.io/hostname"),
        ))
        .unwrap();
    assert_eq!(n, "b");
    // Relabel both nodes into one rack: anti-affinity by rack now blocks everything.
    for name in ["a", "b"] {
        c.upsert_node(&node(
            name,
            "8",
            "8Gi",
            json!({"metadata": {"labels": {"rack": "r1"}}}),
        ));
    }
    let err = c
        .schedule_one(&pod("w2", "10m", "1Mi", anti("web", "rack")))
        .unwrap_err();
    assert_eq!(
        err.reasons
            .get("node(s) didn't match pod anti-affinity rules"),
        Some(&2)
    );
    c.remove_node("a");
    assert_eq!(c.num_nodes(), 1);
    assert_eq!(c.node("b").unwrap().name, "b");
}

#[test]
fn preemption_policy_never_and_no_nodes() {
    let mut c = Cache::new();
    let err = c
        .schedule_one(&pod("a", "1", "1Mi", json!({})))
        .unwrap_err();
    assert_eq!(err.to_string(), "no nodes available to schedule pods");
    c.upsert_node(&node("n", "1", "1Gi", json!({})));
    let err = c
        .schedule_one(&pod(
            "a",
            "2",
            "1Mi",
            json!({"spec": {"preemptionPolicy": "Never"}}),
        ))
        .unwrap_err();
    assert_eq!(err.preemption, Preemption::NotEligible);
    assert_eq!(
        err.to_string(),
        "0/1 nodes are available: 1 Insufficient cpu. preemption: not eligible due to preemptionPolicy=Never."
    );
}

#[test]
fn sampling_finds_enough_nodes_and_rotates() {
    assert_eq!(crate::num_feasible_nodes_to_find(50, None), 50);
    assert_eq!(crate::num_feasible_nodes_to_find(5000, None), 500);
    assert_eq!(crate::num_feasible_nodes_to_find(1000, None), 420);
    assert_eq!(crate::num_feasible_nodes_to_find(200, Some(10)), 100);
    assert_eq!(crate::num_feasible_nodes_to_find(200, Some(100)), 200);
    assert_eq!(crate::num_feasible_nodes_to_find(100_000, None), 5000);
    let mut c = cache(
        (0..300)
            .map(|i| node(&format!("n{i}"), "4", "4Gi", json!({})))
            .collect(),
    );
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..30 {
        seen.insert(
            c.schedule_one(&pod(&format!("p{i}"), "10m", "1Mi", json!({})))
                .unwrap(),
        );
    }
    // Rotation of the start index spreads equal-score decisions over the cluster.
    assert!(seen.len() > 20, "{}", seen.len());
}

#[test]
fn pod_info_reads_scheduler_fields() {
    let p = pod(
        "a",
        "1",
        "1Mi",
        json!({"spec": {"schedulerName": "other", "priority": 7}}),
    );
    let i = PodInfo::from_pod(&p);
    assert_eq!(i.scheduler_name, "other");
    assert_eq!(i.priority, 7);
    assert_eq!(i.key, "default/a");
}

#[test]
fn new_terms_count_pods_by_their_current_labels() {
    let mut c = cache(vec![
        node("a", "8", "8Gi", json!({})),
        node("b", "8", "8Gi", json!({})),
        node("c", "8", "8Gi", json!({})),
    ]);
    c.upsert_pod(&bound("p1", "a", json!({"app": "web"}), json!({})));
    c.upsert_pod(&bound("p2", "b", json!({"app": "web"}), json!({})));
    c.upsert_pod(&bound("p3", "c", json!({"app": "db"}), json!({})));
    // Relabelled and removed pods leave the label index.
    c.upsert_pod(&bound("p2", "b", json!({"app": "db"}), json!({})));
    c.remove_pod("default/p1");
    // The `app=db` term is first seen now: db pods are on b and c only.
    let placed = c
        .schedule_one(&pod("d1", "1", "1Mi", {
            let mut v = anti("db", "kubernetes.io/hostname");
            v["metadata"]["labels"] = json!({"role": "probe"});
            v
        }))
        .unwrap();
    assert_eq!(placed, "a");
    // A selector with no single-valued `In` requirement looks at every pod.
    let exists = json!({"metadata": {"labels": {"role": "probe2"}}, "spec": {"affinity": {"podAntiAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchExpressions": [{"key": "app", "operator": "Exists"}]},
             "topologyKey": "kubernetes.io/hostname"}]}}}});
    assert_eq!(
        c.schedule_one(&pod("e1", "1", "1Mi", exists.clone()))
            .unwrap(),
        "a"
    );
    c.remove_pod("default/p3");
    c.remove_pod("default/e1");
    let placed = c.schedule_one(&pod("e2", "1", "1Mi", exists)).unwrap();
    assert_ne!(placed, "b");
}
