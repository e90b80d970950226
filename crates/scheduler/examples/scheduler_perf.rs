//! scheduler_perf-style benchmark of the in-process core: N nodes, init pods, then
//! measured pods scheduled one by one through `Cache::schedule_one` (filters, scoring,
//! sampling and assume included; no API server).
//!
//! `cargo run --release -p navarch-scheduler --example scheduler_perf -- [--nodes 5000] [--pods 10000] [--init 1000] [--mode all|plain|anti|anti-upstream]`

use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};
use navarch_scheduler::{Cache, PodInfo};
use serde_json::json;

/// kube-scheduler's scheduler_perf CI thresholds (pods/s) at 5,000 nodes, from
/// test/integration/scheduler_perf/{misc,affinity}/performance-config.yaml.
const UPSTREAM_BASIC: f64 = 680.0; // SchedulingBasic/5000Nodes_10000Pods
const UPSTREAM_ANTI: f64 = 60.0; // SchedulingPodAntiAffinity/5000Nodes_2000Pods

fn node(i: usize) -> Node {
    let name = format!("node-{i}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name,
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {
            "allocatable": {"cpu": "4", "memory": "32Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True"}]}
    }))
    .unwrap_or_default()
}

fn pod(ns: &str, i: usize, anti_group: Option<String>) -> Pod {
    let mut v = json!({
        "metadata": {"name": format!("pod-{i}"), "namespace": ns},
        "spec": {"containers": [{"name": "pause", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"cpu": "100m", "memory": "500Mi"}}}]}
    });
    if let Some(g) = anti_group {
        v["metadata"]["labels"] = json!({"color": g});
        v["spec"]["affinity"] = json!({"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [{
            "labelSelector": {"matchLabels": {"color": g}},
            "topologyKey": "kubernetes.io/hostname",
            "namespaces": ["sched-0", "sched-1"]}]}});
    }
    serde_json::from_value(v).unwrap_or_default()
}

fn rss_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

struct Outcome {
    scheduled: usize,
    failed: usize,
    secs: f64,
}

fn run(nodes: usize, init: usize, pods: usize, group: impl Fn(usize) -> Option<String>) -> Outcome {
    let mut c = Cache::new();
    for i in 0..nodes {
        c.upsert_node(&node(i));
    }
    for i in 0..init {
        let _ = c.schedule_one(&pod("sched-0", i, group(i)));
    }
    // Parse pods up front, as an informer would have decoded them before they reach the queue.
    let infos: Vec<PodInfo> = (0..pods)
        .map(|i| PodInfo::from_pod(&pod("sched-1", i, group(init + i))))
        .collect();
    let t = Instant::now();
    let (mut scheduled, mut failed) = (0, 0);
    for info in infos {
        match c.schedule_info(info) {
            Ok(_) => scheduled += 1,
            Err(_) => failed += 1,
        }
    }
    Outcome {
        scheduled,
        failed,
        secs: t.elapsed().as_secs_f64(),
    }
}

fn report(name: &str, o: &Outcome, goal: f64, upstream: f64) {
    let rate = o.scheduled as f64 / o.secs.max(1e-9);
    println!(
        "{name:<28} {:>6} scheduled {:>5} unschedulable in {:>7.3}s = {:>9.0} pods/s  (goal {goal:>5.0}: {})  vs kube-scheduler {upstream:.0} pods/s: x{:.1}",
        o.scheduled,
        o.failed,
        o.secs,
        rate,
        if rate >= goal { "ok" } else { "MISSED" },
        rate / upstream
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |flag: &str, default: usize| -> usize {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    };
    let mode = args
        .iter()
        .position(|a| a == "--mode")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "all".into());
    let nodes = get("--nodes", 5000);
    let pods = get("--pods", 10_000);
    let init = get("--init", 1000);
    println!("navarch scheduler_perf: {nodes} nodes, {init} init pods, {pods} measured pods (in-process)");
    if mode == "all" || mode == "plain" {
        let o = run(nodes, init, pods, |_| None);
        report("SchedulingBasic", &o, 5000.0, UPSTREAM_BASIC);
    }
    if mode == "all" || mode == "anti" {
        // Required anti-affinity by hostname within groups of 10 replicas (10,000 pods
        // cannot all avoid each other on 5,000 nodes).
        let o = run(nodes, init, pods, |i| Some(format!("g{}", i / 10)));
        report("PodAntiAffinity(groups of 10)", &o, 1000.0, UPSTREAM_ANTI);
    }
    if mode == "all" || mode == "anti-upstream" {
        // Upstream's shape: every pod labelled color=green and avoiding color=green.
        let measured = pods.min(nodes.saturating_sub(init));
        let o = run(nodes, init, measured, |_| Some("green".into()));
        report("PodAntiAffinity(one group)", &o, 1000.0, UPSTREAM_ANTI);
    }
    let hwm = rss_kb("VmHWM:");
    println!(
        "peak RSS {:.1} MB (goal <= 200 MB: {})",
        hwm as f64 / 1024.0,
        if hwm <= 200 * 1024 { "ok" } else { "MISSED" }
    );
}
