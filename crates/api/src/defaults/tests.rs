//! Defaulting tests: upstream's values per kind, and idempotence.

use serde_json::{json, Value};

use super::*;
use crate::catalog;

fn rt(api_version: &str, kind: &str) -> &'static ResourceType {
    catalog::by_kind(api_version, kind).unwrap()
}

fn defaulted(v: Value) -> Value {
    let r = rt(
        v["apiVersion"].as_str().unwrap(),
        v["kind"].as_str().unwrap(),
    );
    let mut obj = (r.roundtrip)(v).unwrap();
    apply(r, &mut obj);
    // idempotent, and still of the right shape
    let mut again = obj.clone();
    apply(r, &mut again);
    assert_eq!(obj, again, "defaulting {} is not idempotent", r.kind);
    assert!(
        (r.roundtrip)(obj.clone()).is_ok(),
        "defaults of {} do not fit the type",
        r.kind
    );
    obj
}

#[test]
fn pod_defaults() {
    let p = defaulted(
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "bb"},
        "spec": {"containers": [{"name": "bb", "image": "busybox"}, {"name": "n", "image": "nginx:1.25"},
            {"name": "d", "image": "reg:5000/x@sha256:0123"}]}}),
    );
    let s = &p["spec"];
    assert_eq!(s["restartPolicy"], "Always");
    assert_eq!(s["dnsPolicy"], "ClusterFirst");
    assert_eq!(s["schedulerName"], "default-scheduler");
    assert_eq!(s["terminationGracePeriodSeconds"], 30);
    assert_eq!(s["securityContext"], json!({}));
    assert_eq!(s["enableServiceLinks"], true);
    // priority and preemptionPolicy: set by priority admission, not defaulting
    assert!(s.get("priority").is_none());
    assert_eq!(s["containers"][0]["imagePullPolicy"], "Always");
    assert_eq!(s["containers"][1]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(s["containers"][2]["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        s["containers"][0]["terminationMessagePath"],
        "/dev/termination-log"
    );
    assert_eq!(s["containers"][0]["terminationMessagePolicy"], "File");
    assert_eq!(s["containers"][0]["resources"], json!({}));
    assert_eq!(
        s["tolerations"],
        json!([
            {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}
        ])
    );
}

#[test]
fn deployment_defaults() {
    let d = defaulted(
        serde_json::from_str(include_str!("../validation/testdata/deploy.json")).unwrap(),
    );
    let s = &d["spec"];
    assert_eq!(s["replicas"], 1);
    assert_eq!(
        s["strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}})
    );
    assert_eq!(s["revisionHistoryLimit"], 10);
    assert_eq!(s["progressDeadlineSeconds"], 600);
    let pod = &s["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Always");
    assert_eq!(pod["containers"][0]["imagePullPolicy"], "Always");
    // Pod-only defaults stay off templates
    assert!(pod.get("tolerations").is_none());
    assert!(pod.get("enableServiceLinks").is_none());

    let recreate = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "r"},
        "spec": {"strategy": {"type": "Recreate"}}}),
    );
    assert_eq!(recreate["spec"]["strategy"], json!({"type": "Recreate"}));
}

#[test]
fn stateful_set_daemon_set_replica_set_defaults() {
    let s = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"volumeClaimTemplates": [{"metadata": {"name": "d"}, "spec": {}}]}}),
    );
    let spec = &s["spec"];
    assert_eq!(spec["podManagementPolicy"], "OrderedReady");
    assert_eq!(
        spec["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"partition": 0}})
    );
    assert_eq!(
        spec["persistentVolumeClaimRetentionPolicy"],
        json!({"whenDeleted": "Retain", "whenScaled": "Retain"})
    );
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["revisionHistoryLimit"], 10);
    assert_eq!(
        spec["volumeClaimTemplates"][0]["spec"]["volumeMode"],
        "Filesystem"
    );
    assert_eq!(
        spec["volumeClaimTemplates"][0]["status"]["phase"],
        "Pending"
    );

    let d = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "a"}, "spec": {}}),
    );
    assert_eq!(
        d["spec"]["updateStrategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 0}})
    );
    assert_eq!(d["spec"]["revisionHistoryLimit"], 10);

    let r = defaulted(
        json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "a"}}),
    );
    assert_eq!(r["spec"]["replicas"], 1);
}

#[test]
fn job_and_cron_job_defaults() {
    let mut job: Value =
        serde_json::from_str(include_str!("../validation/testdata/job.json")).unwrap();
    job["metadata"]["uid"] = json!("u-1");
    let j = defaulted(job);
    let s = &j["spec"];
    assert_eq!(s["completions"], 1);
    assert_eq!(s["parallelism"], 1);
    assert_eq!(s["backoffLimit"], 6);
    assert_eq!(s["completionMode"], "NonIndexed");
    assert_eq!(s["suspend"], false);
    assert!(s.get("manualSelector").is_none());
    assert_eq!(
        s["selector"],
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u-1"}})
    );
    let labels = json!({"batch.kubernetes.io/controller-uid": "u-1", "batch.kubernetes.io/job-name": "j",
        "controller-uid": "u-1", "job-name": "j"});
    assert_eq!(s["template"]["metadata"]["labels"], labels);
    assert_eq!(j["metadata"]["labels"], labels);

    let p = defaulted(
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "p"},
        "spec": {"parallelism": 3, "manualSelector": true, "template": {"spec": {}}}}),
    );
    assert!(p["spec"].get("completions").is_none());
    assert!(p["spec"].get("selector").is_none() || p["spec"]["selector"] == json!({}));

    let c =
        defaulted(serde_json::from_str(include_str!("../validation/testdata/cj.json")).unwrap());
    let s = &c["spec"];
    assert_eq!(s["concurrencyPolicy"], "Allow");
    assert_eq!(s["suspend"], false);
    assert_eq!(s["successfulJobsHistoryLimit"], 3);
    assert_eq!(s["failedJobsHistoryLimit"], 1);
    assert_eq!(
        s["jobTemplate"]["spec"]["template"]["spec"]["schedulerName"],
        "default-scheduler"
    );
}

#[test]
fn service_defaults() {
    let s =
        defaulted(serde_json::from_str(include_str!("../validation/testdata/svc.json")).unwrap());
    let spec = &s["spec"];
    assert_eq!(spec["type"], "ClusterIP");
    assert_eq!(spec["sessionAffinity"], "None");
    assert_eq!(spec["ipFamilyPolicy"], "SingleStack");
    assert_eq!(spec["ipFamilies"], json!(["IPv4"]));
    assert_eq!(spec["internalTrafficPolicy"], "Cluster");
    assert!(spec.get("externalTrafficPolicy").is_none());

    let s = defaulted(
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "lb"},
        "spec": {"type": "LoadBalancer", "sessionAffinity": "ClientIP", "clusterIP": "fd00::1", "ports": [{"port": 443}]}}),
    );
    let spec = &s["spec"];
    assert_eq!(
        spec["ports"][0],
        json!({"port": 443, "protocol": "TCP", "targetPort": 443})
    );
    assert_eq!(spec["externalTrafficPolicy"], "Cluster");
    assert_eq!(spec["allocateLoadBalancerNodePorts"], true);
    assert_eq!(
        spec["sessionAffinityConfig"],
        json!({"clientIP": {"timeoutSeconds": 10800}})
    );
    assert_eq!(spec["clusterIPs"], json!(["fd00::1"]));
    assert_eq!(spec["ipFamilies"], json!(["IPv6"]));

    let e =
        defaulted(serde_json::from_str(include_str!("../validation/testdata/ext.json")).unwrap());
    assert!(e["spec"].get("ipFamilyPolicy").is_none());
    assert!(e["spec"].get("internalTrafficPolicy").is_none());
}

#[test]
fn namespace_secret_and_small_kinds() {
    let ns =
        defaulted(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "team-a"}}));
    assert_eq!(ns["spec"]["finalizers"], json!(["kubernetes"]));
    assert_eq!(ns["status"]["phase"], "Active");
    assert_eq!(
        ns["metadata"]["labels"]["kubernetes.io/metadata.name"],
        "team-a"
    );
    // a namespace being finalized keeps its finalizers as the controller left them
    let gone = defaulted(json!({"apiVersion": "v1", "kind": "Namespace",
        "metadata": {"name": "old", "deletionTimestamp": "2024-01-01T00:00:00Z"}, "spec": {"finalizers": []},
        "status": {"phase": "Terminating"}}));
    assert!(gone["spec"]
        .get("finalizers")
        .is_none_or(|f| f == &json!([])));
    assert_eq!(gone["status"]["phase"], "Terminating");

    let s = defaulted(
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "stringData": {"a": "b"}}),
    );
    assert_eq!(s["type"], "Opaque");
    assert_eq!(s["data"], json!({"a": "Yg=="}));

    let pvc = defaulted(
        json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"}, "spec": {}}),
    );
    assert_eq!(pvc["spec"]["volumeMode"], "Filesystem");
    assert_eq!(pvc["status"]["phase"], "Pending");

    let pv = defaulted(
        json!({"apiVersion": "v1", "kind": "PersistentVolume", "metadata": {"name": "v"}, "spec": {}}),
    );
    assert_eq!(pv["spec"]["persistentVolumeReclaimPolicy"], "Retain");

    let sc = defaulted(
        json!({"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "s"}, "provisioner": "x"}),
    );
    assert_eq!(sc["reclaimPolicy"], "Delete");
    assert_eq!(sc["volumeBindingMode"], "Immediate");

    let np = defaulted(
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy", "metadata": {"name": "n"},
        "spec": {"podSelector": {}, "egress": [{"ports": [{"port": 53}]}]}}),
    );
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(np["spec"]["egress"][0]["ports"][0]["protocol"], "TCP");

    let hpa = defaulted(
        json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "h"},
        "spec": {"maxReplicas": 5, "scaleTargetRef": {"kind": "Deployment", "name": "web"}, "behavior": {}}}),
    );
    assert_eq!(hpa["spec"]["minReplicas"], 1);
    assert_eq!(
        hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"],
        80
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"],
        300
    );
    assert_eq!(
        hpa["spec"]["behavior"]["scaleUp"]["policies"][0]["value"],
        4
    );

    let lr = defaulted(
        json!({"apiVersion": "v1", "kind": "LimitRange", "metadata": {"name": "l"},
        "spec": {"limits": [{"type": "Container", "max": {"cpu": "2"}, "min": {"memory": "1Mi"}}]}}),
    );
    assert_eq!(lr["spec"]["limits"][0]["default"], json!({"cpu": "2"}));
    assert_eq!(
        lr["spec"]["limits"][0]["defaultRequest"],
        json!({"cpu": "2", "memory": "1Mi"})
    );

    let rb = defaulted(
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "b"},
        "roleRef": {"kind": "Role", "name": "r"}, "subjects": [{"kind": "User", "name": "u"}, {"kind": "ServiceAccount", "name": "s"}]}),
    );
    assert_eq!(rb["roleRef"]["apiGroup"], "rbac.authorization.k8s.io");
    assert_eq!(rb["subjects"][0]["apiGroup"], "rbac.authorization.k8s.io");
    assert!(rb["subjects"][1].get("apiGroup").is_none_or(|g| g == ""));

    let pc = defaulted(
        json!({"apiVersion": "scheduling.k8s.io/v1", "kind": "PriorityClass", "metadata": {"name": "p"}, "value": 1}),
    );
    assert_eq!(pc["preemptionPolicy"], "PreemptLowerPriority");

    let node = defaulted(
        json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"}, "status": {"capacity": {"pods": "110"}}}),
    );
    assert_eq!(node["status"]["allocatable"], json!({"pods": "110"}));
}

#[test]
fn every_kind_is_idempotent_on_sparse_input() {
    for r in catalog::all() {
        let v = json!({"apiVersion": r.api_version, "kind": r.kind, "metadata": {"name": "x", "uid": "u"}});
        let Ok(mut obj) = (r.roundtrip)(v) else {
            continue;
        };
        apply(r, &mut obj);
        let mut again = obj.clone();
        apply(r, &mut again);
        assert_eq!(obj, again, "{}", r.kind);
    }
}
