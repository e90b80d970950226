//! Validation tests: kubectl-generated objects validate clean after defaulting,
//! and invalid objects produce upstream's field paths and messages.

use serde_json::{json, Value};

use super::*;
use crate::catalog::{self, ResourceType};
use crate::defaults;

fn rt(api_version: &str, kind: &str) -> &'static ResourceType {
    catalog::by_kind(api_version, kind).unwrap()
}

/// What the server does before validating: type check, namespace and uid, defaults.
fn prepare(v: Value) -> (&'static ResourceType, Value) {
    let r = rt(
        v["apiVersion"].as_str().unwrap(),
        v["kind"].as_str().unwrap(),
    );
    let mut obj = (r.roundtrip)(v).unwrap();
    if r.namespaced && obj["metadata"].get("namespace").is_none() {
        obj["metadata"]["namespace"] = json!("default");
    }
    if obj["metadata"].get("uid").is_none() {
        obj["metadata"]["uid"] = json!("0b6e2f0c-1111-2222-3333-444455556666");
    }
    defaults::apply(r, &mut obj);
    (r, obj)
}

fn messages(v: Value) -> Vec<String> {
    let (r, obj) = prepare(v);
    validate_create(r, &obj)
        .iter()
        .map(FieldError::message)
        .collect()
}

fn update_messages(new: Value, old: Value) -> Vec<String> {
    let (r, old) = prepare(old);
    let (_, new) = prepare(new);
    validate_update(r, &new, &old)
        .iter()
        .map(FieldError::message)
        .collect()
}

fn fixture(name: &str) -> Value {
    let text = match name {
        "cj" => include_str!("testdata/cj.json"),
        "cm" => include_str!("testdata/cm.json"),
        "crb" => include_str!("testdata/crb.json"),
        "deploy" => include_str!("testdata/deploy.json"),
        "deploy2" => include_str!("testdata/deploy2.json"),
        "ext" => include_str!("testdata/ext.json"),
        "ing" => include_str!("testdata/ing.json"),
        "job" => include_str!("testdata/job.json"),
        "np" => include_str!("testdata/np.json"),
        "ns" => include_str!("testdata/ns.json"),
        "pc" => include_str!("testdata/pc.json"),
        "pdb" => include_str!("testdata/pdb.json"),
        "pod" => include_str!("testdata/pod.json"),
        "quota" => include_str!("testdata/quota.json"),
        "rb" => include_str!("testdata/rb.json"),
        "role" => include_str!("testdata/role.json"),
        "sa" => include_str!("testdata/sa.json"),
        "secret" => include_str!("testdata/secret.json"),
        "svc" => include_str!("testdata/svc.json"),
        other => panic!("no fixture {other}"),
    };
    serde_json::from_str(text).unwrap()
}

const FIXTURES: &[&str] = &[
    "cj", "cm", "crb", "deploy", "deploy2", "ext", "ing", "job", "np", "ns", "pc", "pdb", "pod",
    "quota", "rb", "role", "sa", "secret", "svc",
];

fn pod() -> Value {
    fixture("pod")
}

fn has(msgs: &[String], want: &str) -> bool {
    msgs.iter().any(|m| m == want)
}

#[track_caller]
fn assert_has(msgs: &[String], want: &str) {
    assert!(has(msgs, want), "missing {want:?} in {msgs:#?}");
}

#[test]
fn kubectl_objects_validate_clean_after_defaulting() {
    for name in FIXTURES {
        let msgs = messages(fixture(name));
        assert!(msgs.is_empty(), "{name}: {msgs:#?}");
    }
}

#[test]
fn kubectl_objects_update_to_themselves() {
    for name in FIXTURES {
        let msgs = update_messages(fixture(name), fixture(name));
        assert!(msgs.is_empty(), "{name}: {msgs:#?}");
    }
}

#[test]
fn field_error_rendering() {
    let e = FieldError::required("spec.containers[0].image", "");
    assert_eq!(e.message(), "spec.containers[0].image: Required value");
    assert_eq!(e.reason(), "FieldValueRequired");
    assert_eq!(e.body(), "Required value");
    let e = FieldError::not_supported(
        "spec.restartPolicy",
        "Sometimes",
        &["Always", "OnFailure", "Never"],
    );
    assert_eq!(
        e.message(),
        "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""
    );
    let e = FieldError::invalid("spec.replicas", -1, "must be greater than or equal to 0");
    assert_eq!(
        e.message(),
        "spec.replicas: Invalid value: -1: must be greater than or equal to 0"
    );
    assert_eq!(e.to_string(), e.message());
    let e = FieldError::invalid("x", json!({"b": "2", "a": "1"}), "d");
    assert_eq!(
        e.message(),
        "x: Invalid value: map[string]string{\"a\":\"1\", \"b\":\"2\"}: d"
    );
    assert_eq!(
        FieldError::too_long("metadata.annotations", 262144).message(),
        "metadata.annotations: Too long: may not be more than 262144 bytes"
    );
    assert_eq!(
        FieldError::duplicate("a", "x").reason(),
        "FieldValueDuplicate"
    );
    assert_eq!(
        FieldError::not_found("a", "x").message(),
        "a: Not found: \"x\""
    );
    assert_eq!(
        FieldError::too_many("a", 5, 3).message(),
        "a: Too many: 5: must have at most 3 items"
    );
    assert_eq!(
        FieldError::forbidden("a", "no").reason(),
        "FieldValueForbidden"
    );
    assert_eq!(
        aggregate_message(&[
            FieldError::required("a", ""),
            FieldError::required("b", ""),
            FieldError::required("a", "")
        ]),
        "[a: Required value, b: Required value]"
    );
}

#[test]
fn metadata_rules() {
    let mut p = pod();
    p["metadata"]["name"] = json!("Foo_1");
    assert_eq!(
        messages(p),
        vec!["metadata.name: Invalid value: \"Foo_1\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"]
    );
    let mut p = pod();
    p["metadata"].as_object_mut().unwrap().remove("name");
    assert_eq!(
        messages(p),
        vec!["metadata.name: Required value: name or generateName is required"]
    );
    let mut p = pod();
    p["metadata"]["name"] = json!("a".repeat(254));
    assert_eq!(messages(p).len(), 1);

    let mut ns = fixture("ns");
    ns["metadata"]["name"] = json!("a.b");
    let m = messages(ns);
    assert!(
        m[0].starts_with(
            "metadata.name: Invalid value: \"a.b\": a lowercase RFC 1123 label must consist"
        ),
        "{m:?}"
    );
    // the default label carries the (bad) name too, and is reported
    assert!(m.iter().all(|x| x.starts_with("metadata.")));

    let mut svc = fixture("svc");
    svc["metadata"]["name"] = json!("1web");
    assert_has(&messages(svc), "metadata.name: Invalid value: \"1web\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')");

    let mut role = fixture("role");
    role["metadata"]["name"] = json!("a/b");
    assert_eq!(
        messages(role),
        vec!["metadata.name: Invalid value: \"a/b\": may not contain '/'"]
    );
    let mut role = fixture("role");
    role["metadata"]["name"] = json!("system:Controller");
    assert!(messages(role).is_empty());

    let mut ns = fixture("ns");
    ns["metadata"]["namespace"] = json!("default");
    assert_eq!(
        messages(ns),
        vec!["metadata.namespace: Forbidden: not allowed on this type"]
    );
    let (r, mut obj) = prepare(pod());
    obj["metadata"].as_object_mut().unwrap().remove("namespace");
    assert_eq!(
        validate_create(r, &obj)[0].message(),
        "metadata.namespace: Required value"
    );

    let mut p = pod();
    p["metadata"]["labels"] = json!({"a/b/c": "x", "ok": "-bad", "fine": "a".repeat(64)});
    let m = messages(p);
    assert_eq!(m.len(), 3, "{m:#?}");
    assert_has(&m, "metadata.labels: Invalid value: \"-bad\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
    assert!(m
        .iter()
        .any(|x| x.ends_with("must be no more than 63 characters")));

    let mut p = pod();
    p["metadata"]["annotations"] = json!({"Example.COM/Key": "v", "big": "x".repeat(262_144)});
    assert_eq!(
        messages(p),
        vec!["metadata.annotations: Too long: may not be more than 262144 bytes"]
    );
    let mut p = pod();
    p["metadata"]["annotations"] = json!({"bad key": "v"});
    assert_eq!(messages(p).len(), 1);

    let mut p = pod();
    p["metadata"]["generateName"] = json!("web-");
    assert!(messages(p).is_empty());
}

#[test]
fn metadata_update_rules() {
    let mut new = pod();
    new["metadata"]["name"] = json!("other");
    let m = update_messages(new, pod());
    assert_has(
        &m,
        "metadata.name: Invalid value: \"other\": field is immutable",
    );
    let mut new = fixture("cm");
    new["metadata"]["namespace"] = json!("kube-system");
    assert_eq!(
        update_messages(new, fixture("cm")),
        vec!["metadata.namespace: Invalid value: \"kube-system\": field is immutable"]
    );
    let mut new = fixture("cm");
    new["metadata"]["uid"] = json!("another");
    assert_eq!(
        update_messages(new, fixture("cm")),
        vec!["metadata.uid: Invalid value: \"another\": field is immutable"]
    );
}

#[test]
fn pod_containers() {
    let mut p = pod();
    p["spec"]["containers"] = json!([]);
    assert_eq!(messages(p), vec!["spec.containers: Required value"]);

    let mut p = pod();
    p["spec"]["containers"][0]["image"] = json!("");
    assert_eq!(
        messages(p),
        vec!["spec.containers[0].image: Required value"]
    );

    let mut p = pod();
    p["spec"]["initContainers"] = json!([{"name": "bb", "image": "busybox"}]);
    assert_eq!(
        messages(p),
        vec!["spec.containers[0].name: Duplicate value: \"bb\""]
    );

    let mut p = pod();
    p["spec"]["containers"][0]["name"] = json!("Web");
    assert_eq!(messages(p), vec!["spec.containers[0].name: Invalid value: \"Web\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"]);

    let mut p = pod();
    p["spec"]["restartPolicy"] = json!("Sometimes");
    assert_eq!(messages(p), vec!["spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\""]);

    let mut p = pod();
    p["spec"]["dnsPolicy"] = json!("Cluster");
    assert_eq!(messages(p), vec!["spec.dnsPolicy: Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""]);
    let mut p = pod();
    p["spec"]["dnsPolicy"] = json!("None");
    assert_eq!(
        messages(p),
        vec!["spec.dnsConfig: Required value: must provide `dnsConfig` when `dnsPolicy` is None"]
    );
}

#[test]
fn pod_ports_env_volumes() {
    let mut p = pod();
    p["spec"]["containers"][0]["ports"] = json!([
        {"containerPort": 80, "name": "http"},
        {"containerPort": 70000, "name": "http"},
        {"containerPort": 81, "protocol": "HTTP", "name": "8080"},
        {"containerPort": 82, "hostPort": 0}
    ]);
    let m = messages(p);
    assert_eq!(m, vec![
        "spec.containers[0].ports[1].name: Duplicate value: \"http\"",
        "spec.containers[0].ports[1].containerPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
        "spec.containers[0].ports[2].name: Invalid value: \"8080\": must contain at least one letter (a-z)",
        "spec.containers[0].ports[2].protocol: Unsupported value: \"HTTP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
    ]);

    let mut p = pod();
    p["spec"]["containers"][0]["env"] = json!([
        {"name": "", "value": "x"},
        {"name": "A=B"},
        {"name": "OK", "valueFrom": {}},
        {"name": "CM", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}},
        {"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "spec.bogus"}}}
    ]);
    let m = messages(p);
    assert_has(&m, "spec.containers[0].env[0].name: Required value");
    assert_has(&m, "spec.containers[0].env[1].name: Invalid value: \"A=B\": a valid environment variable name must consist only of printable ASCII characters other than '='");
    assert_has(&m, "spec.containers[0].env[2].valueFrom: Invalid value: \"\": must specify one of: `fieldRef`, `resourceFieldRef`, `configMapKeyRef` or `secretKeyRef`");
    assert!(m.iter().any(|x| x.starts_with(
        "spec.containers[0].env[4].valueFrom.fieldRef.fieldPath: Unsupported value: \"spec.bogus\""
    )));
    assert_eq!(m.len(), 4, "{m:#?}");

    let mut p = pod();
    p["spec"]["volumes"] =
        json!([{"name": "data", "emptyDir": {}}, {"name": "data", "configMap": {"name": "x"}}]);
    p["spec"]["containers"][0]["volumeMounts"] = json!([
        {"name": "data", "mountPath": "/d"},
        {"name": "missing", "mountPath": "/d"}
    ]);
    assert_eq!(
        messages(p),
        vec![
            "spec.volumes[1].name: Duplicate value: \"data\"",
            "spec.containers[0].volumeMounts[1].name: Not found: \"missing\"",
            "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/d\": must be unique",
        ]
    );
    let mut p = pod();
    p["spec"]["volumes"] = json!([{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}, {"name": "s", "secret": {}}]);
    let m = messages(p);
    assert_eq!(m.len(), 2, "{m:#?}");
    assert_has(&m, "spec.volumes[1].secret.secretName: Required value");
    assert!(m[0].ends_with("Forbidden: may not specify more than 1 volume type"));
}

#[test]
fn pod_resources_and_probes() {
    let mut p = pod();
    p["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "1"}, "requests": {"cpu": "2", "memory": "lots"}});
    assert_eq!(messages(p), vec![
        "spec.containers[0].resources.requests[memory]: Invalid value: \"lots\": quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        "spec.containers[0].resources.requests: Invalid value: \"2\": must be less than or equal to cpu limit of 1",
    ]);
    let mut p = pod();
    p["spec"]["containers"][0]["resources"] =
        json!({"limits": {"cpu": "1000m", "gpu": "1"}, "requests": {"cpu": "1"}});
    // requests default to limits, so the bad name shows up twice (as upstream)
    assert_eq!(messages(p), vec![
        "spec.containers[0].resources.limits[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
        "spec.containers[0].resources.requests[gpu]: Invalid value: \"gpu\": must be a standard resource for containers",
    ]);

    let mut p = pod();
    p["spec"]["containers"][0]["livenessProbe"] = json!({"periodSeconds": -1});
    p["spec"]["containers"][0]["readinessProbe"] =
        json!({"exec": {"command": ["true"]}, "tcpSocket": {"port": 80}});
    let m = messages(p);
    assert_eq!(m, vec![
        "spec.containers[0].livenessProbe: Required value: must specify a handler type",
        "spec.containers[0].livenessProbe.periodSeconds: Invalid value: -1: must be greater than or equal to 0",
        "spec.containers[0].readinessProbe.tcpSocket: Forbidden: may not specify more than 1 handler type",
    ]);
    let mut p = pod();
    p["spec"]["containers"][0]["livenessProbe"] =
        json!({"httpGet": {"port": "http"}, "successThreshold": 2});
    assert_eq!(
        messages(p),
        vec!["spec.containers[0].livenessProbe.successThreshold: Invalid value: 2: must be 1"]
    );
}

#[test]
fn pod_tolerations() {
    let mut p = pod();
    p["spec"]["tolerations"] = json!([
        {"key": "k", "operator": "Exists", "value": "v"},
        {"key": "k", "operator": "Equal", "value": "v", "effect": "NoSchedule", "tolerationSeconds": 5},
        {"key": "k", "operator": "Maybe"}
    ]);
    assert_eq!(messages(p), vec![
        "spec.tolerations[0].operator: Invalid value: \"v\": value must be empty when `operator` is 'Exists'",
        "spec.tolerations[1].effect: Invalid value: \"NoSchedule\": effect must be 'NoExecute' when `tolerationSeconds` is set",
        "spec.tolerations[2].operator: Unsupported value: \"Maybe\": supported values: \"Equal\", \"Exists\"",
    ]);
}

#[test]
fn pod_updates() {
    // as `kubectl set image` does: patch the stored (defaulted) object
    let (r, old) = prepare(pod());
    let mut new = old.clone();
    new["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    new["spec"]["activeDeadlineSeconds"] = json!(100);
    new["metadata"]["labels"]["extra"] = json!("yes");
    defaults::apply(r, &mut new);
    let m = validate_update(r, &new, &old);
    assert!(m.is_empty(), "{m:#?}");

    let mut new = pod();
    new["spec"]["restartPolicy"] = json!("Never");
    let m = update_messages(new, pod());
    assert_eq!(m.len(), 1);
    assert!(m[0].starts_with("spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)\n"), "{m:?}");
    assert!(m[0].contains("restartPolicy"));

    let mut old = pod();
    old["spec"]["activeDeadlineSeconds"] = json!(50);
    let mut new = pod();
    new["spec"]["activeDeadlineSeconds"] = json!(60);
    assert_eq!(update_messages(new, old.clone()), vec!["spec.activeDeadlineSeconds: Invalid value: 60: must be less than or equal to previous value"]);
    assert_eq!(update_messages(pod(), old), vec!["spec.activeDeadlineSeconds: Invalid value: null: must not update from a positive integer to nil value"]);

    let mut old = pod();
    old["spec"]["tolerations"] =
        json!([{"key": "a", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 10}]);
    let mut new = old.clone();
    new["spec"]["tolerations"][0]["tolerationSeconds"] = json!(5);
    new["spec"]["tolerations"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": "b", "operator": "Exists"}));
    assert!(update_messages(new, old.clone()).is_empty());
    let mut new = old.clone();
    new["spec"]["tolerations"][0]["key"] = json!("c");
    assert_eq!(update_messages(new, old), vec!["spec.tolerations: Forbidden: existing toleration can not be modified except its tolerationSeconds"]);
}

#[test]
fn services() {
    let mut s = fixture("svc");
    s["spec"]["ports"] = json!([]);
    assert_eq!(messages(s), vec!["spec.ports: Required value"]);
    let mut s = fixture("svc");
    s["spec"]["ports"] = json!([]);
    s["spec"]["clusterIP"] = json!("None");
    assert!(messages(s).is_empty());

    let mut s = fixture("svc");
    s["spec"]["ports"] = json!([
        {"port": 80, "targetPort": 8080},
        {"name": "b", "port": 0, "protocol": "ICMP"},
        {"name": "b", "port": 80, "targetPort": "x--y"}
    ]);
    let m = messages(s);
    assert_eq!(m, vec![
        "spec.ports[0].name: Required value",
        "spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.ports[1].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
        "spec.ports[1].targetPort: Invalid value: 0: must be between 1 and 65535, inclusive",
        "spec.ports[2].name: Duplicate value: \"b\"",
        "spec.ports[2].targetPort: Invalid value: \"x--y\": must not contain consecutive hyphens",
        "spec.ports[2]: Duplicate value: {\"protocol\":\"TCP\",\"port\":80}",
    ]);

    let mut s = fixture("svc");
    s["spec"]["type"] = json!("Internal");
    assert_has(&messages(s), "spec.type: Unsupported value: \"Internal\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\"");

    let mut s = fixture("svc");
    s["spec"]["ports"][0]["nodePort"] = json!(30001);
    assert_eq!(
        messages(s),
        vec!["spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"]
    );
    let mut s = fixture("np");
    s["spec"]["ports"][0]["nodePort"] = json!(80);
    assert_eq!(messages(s), vec!["spec.ports[0].nodePort: Invalid value: 80: provided port is not in the valid range. The range of valid ports is 30000-32767"]);

    let mut s = fixture("ext");
    s["spec"]["externalName"] = json!("");
    assert_eq!(messages(s), vec!["spec.externalName: Required value"]);

    let mut s = fixture("svc");
    s["spec"]["clusterIP"] = json!("10.0.0.300");
    assert_eq!(messages(s), vec!["spec.clusterIPs[0]: Invalid value: \"10.0.0.300\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"]);
}

#[test]
fn service_updates() {
    let mut old = fixture("svc");
    old["spec"]["clusterIP"] = json!("10.96.0.10");
    let mut new = old.clone();
    new["spec"]["clusterIP"] = json!("10.96.0.11");
    new["spec"]["clusterIPs"] = json!(["10.96.0.11"]);
    assert_eq!(
        update_messages(new, old.clone()),
        vec![
            "spec.clusterIPs[0]: Invalid value: []string{\"10.96.0.11\"}: may not change once set"
        ]
    );
    let mut new = old.clone();
    new["spec"]["selector"]["app"] = json!("other");
    assert!(update_messages(new, old).is_empty());
}

#[test]
fn deployments() {
    let mut d = fixture("deploy");
    d["spec"]["template"]["metadata"]["labels"]["app"] = json!("other");
    assert_eq!(messages(d), vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"other\"}: `selector` does not match template `labels`"]);

    let mut d = fixture("deploy");
    d["spec"].as_object_mut().unwrap().remove("selector");
    // k8s-openapi's selector is not optional: a missing one reads as empty
    assert_eq!(
        messages(d),
        vec!["spec.selector: Invalid value: {}: empty selector is invalid for deployment"]
    );

    let mut d = fixture("deploy");
    d["spec"]["replicas"] = json!(-1);
    assert_eq!(
        messages(d),
        vec!["spec.replicas: Invalid value: -1: must be greater than or equal to 0"]
    );

    let mut d = fixture("deploy");
    d["spec"]["strategy"] = json!({"type": "Recreate", "rollingUpdate": {"maxSurge": 1}});
    assert_eq!(messages(d), vec!["spec.strategy.rollingUpdate: Forbidden: may not be specified when strategy `type` is 'Recreate'"]);
    let mut d = fixture("deploy");
    d["spec"]["strategy"] = json!({"type": "Canary"});
    assert_eq!(messages(d), vec!["spec.strategy: Unsupported value: \"Canary\": supported values: \"Recreate\", \"RollingUpdate\""]);
    let mut d = fixture("deploy");
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": 0, "maxUnavailable": "0%"}});
    assert_eq!(messages(d), vec!["spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"0%\": may not be 0 when `maxSurge` is 0"]);
    let mut d = fixture("deploy");
    d["spec"]["strategy"] = json!({"rollingUpdate": {"maxSurge": "x", "maxUnavailable": "120%"}});
    assert_eq!(messages(d), vec![
        "spec.strategy.rollingUpdate.maxUnavailable: Invalid value: \"120%\": must not be greater than 100%",
        "spec.strategy.rollingUpdate.maxSurge: Invalid value: \"x\": must be an integer or percentage (e.g '5%')",
    ]);
    let mut d = fixture("deploy");
    d["spec"]["template"]["spec"]["restartPolicy"] = json!("Never");
    assert_eq!(messages(d), vec!["spec.template.spec.restartPolicy: Unsupported value: \"Never\": supported values: \"Always\""]);
    let mut d = fixture("deploy");
    d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("");
    assert_eq!(
        messages(d),
        vec!["spec.template.spec.containers[0].image: Required value"]
    );
    let mut d = fixture("deploy");
    d["spec"]["selector"] = json!({"matchExpressions": [{"key": "app", "operator": "In"}]});
    assert_eq!(messages(d), vec![
        "spec.selector.matchExpressions[0].values: Required value: must be specified when `operator` is 'In' or 'NotIn'",
        "spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"web\"}: `selector` does not match template `labels`",
    ]);

    let mut new = fixture("deploy");
    new["spec"]["selector"]["matchLabels"]["tier"] = json!("x");
    new["spec"]["template"]["metadata"]["labels"]["tier"] = json!("x");
    let m = update_messages(new, fixture("deploy"));
    assert_eq!(m, vec!["spec.selector: Invalid value: {\"matchLabels\":{\"app\":\"web\",\"tier\":\"x\"}}: field is immutable"]);
    let mut new = fixture("deploy");
    new["spec"]["replicas"] = json!(5);
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("nginx:2");
    assert!(update_messages(new, fixture("deploy")).is_empty());
}

fn sts() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "db"},
        "spec": {"serviceName": "db", "selector": {"matchLabels": {"app": "db"}},
            "template": {"metadata": {"labels": {"app": "db"}}, "spec": {"containers": [{"name": "db", "image": "postgres:16"}]}},
            "volumeClaimTemplates": [{"metadata": {"name": "data"}, "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}}]}})
}

fn ds() -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "agent"},
        "spec": {"selector": {"matchLabels": {"app": "agent"}},
            "template": {"metadata": {"labels": {"app": "agent"}}, "spec": {"containers": [{"name": "a", "image": "agent:1"}]}}}})
}

#[test]
fn stateful_sets_and_daemon_sets() {
    assert!(messages(sts()).is_empty(), "{:?}", messages(sts()));
    assert!(messages(ds()).is_empty(), "{:?}", messages(ds()));

    let mut s = sts();
    s["spec"]["podManagementPolicy"] = json!("Random");
    s["spec"]["updateStrategy"] = json!({"type": "Sometimes"});
    assert_eq!(
        messages(s),
        vec![
        "spec.podManagementPolicy: Invalid value: \"Random\": must be 'OrderedReady' or 'Parallel'",
        "spec.updateStrategy: Invalid value: \"Sometimes\": must be 'RollingUpdate' or 'OnDelete'",
    ]
    );
    let mut s = sts();
    s["spec"]["selector"] = json!({});
    assert_eq!(
        messages(s),
        vec!["spec.selector: Invalid value: {}: empty selector is invalid for statefulset"]
    );

    let mut new = sts();
    new["spec"]["replicas"] = json!(3);
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("postgres:17");
    assert!(update_messages(new, sts()).is_empty());
    let mut new = sts();
    new["spec"]["serviceName"] = json!("other");
    assert_eq!(update_messages(new, sts()), vec!["spec: Forbidden: updates to statefulset spec for fields other than 'replicas', 'ordinals', 'template', 'updateStrategy', 'revisionHistoryLimit', 'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds' are forbidden"]);

    let mut d = ds();
    d["spec"]["updateStrategy"] =
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1, "maxSurge": 1}});
    assert_eq!(messages(d), vec!["spec.updateStrategy.rollingUpdate.maxSurge: Invalid value: 1: may not be set when maxUnavailable is non-zero"]);
    let mut d = ds();
    d["spec"]["updateStrategy"] = json!({"type": "Blue"});
    assert_eq!(messages(d), vec!["spec.updateStrategy: Unsupported value: \"Blue\": supported values: \"RollingUpdate\", \"OnDelete\""]);
    let mut d = ds();
    d["spec"]["template"]["metadata"]["labels"] = json!({"app": "x"});
    assert_eq!(messages(d), vec!["spec.template.metadata.labels: Invalid value: map[string]string{\"app\":\"x\"}: `selector` does not match template `labels`"]);
}

#[test]
fn replica_sets_and_replication_controllers() {
    let rs = json!({"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "r"},
        "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"metadata": {"labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert!(messages(rs.clone()).is_empty());
    let mut bad = rs.clone();
    bad["spec"]["selector"] = json!({"matchLabels": {"a": "c"}});
    assert_eq!(messages(bad).len(), 1);

    let rc = json!({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "r"},
        "spec": {"template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
    assert!(
        messages(rc.clone()).is_empty(),
        "{:?}",
        messages(rc.clone())
    );
    let (_, obj) = prepare(rc);
    assert_eq!(obj["spec"]["selector"], json!({"a": "b"}));
    assert_eq!(obj["metadata"]["labels"], json!({"a": "b"}));
}

#[test]
fn jobs() {
    let (_, j) = prepare(fixture("job"));
    assert_eq!(
        j["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        j["metadata"]["uid"]
    );

    let mut j = fixture("job");
    j["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    assert_eq!(messages(j), vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]);
    let mut j = fixture("job");
    j["spec"]["template"]["spec"]
        .as_object_mut()
        .unwrap()
        .remove("restartPolicy");
    assert_eq!(messages(j), vec!["spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]);
    let mut j = fixture("job");
    j["spec"]["completions"] = json!(-1);
    j["spec"]["parallelism"] = json!(-2);
    assert_eq!(
        messages(j),
        vec![
            "spec.parallelism: Invalid value: -2: must be greater than or equal to 0",
            "spec.completions: Invalid value: -1: must be greater than or equal to 0",
        ]
    );
    let mut j = fixture("job");
    j["spec"]["selector"] = json!({"matchLabels": {"x": "y"}});
    j["spec"]["template"]["metadata"]["labels"] = json!({"x": "y"});
    assert_eq!(messages(j), vec!["spec.selector: Invalid value: {\"matchLabels\":{\"x\":\"y\",\"batch.kubernetes.io/controller-uid\":\"0b6e2f0c-1111-2222-3333-444455556666\"}}: `selector` not auto-generated"]);
    let mut j = fixture("job");
    j["spec"]["manualSelector"] = json!(true);
    j["spec"]["selector"] = json!({"matchLabels": {"x": "y"}});
    assert_eq!(messages(j), vec!["spec.template.metadata.labels: Invalid value: {}: `selector` does not match template `labels`"]);

    let mut new = fixture("job");
    new["spec"]["template"]["spec"]["containers"][0]["image"] = json!("busybox:2");
    let m = update_messages(new, fixture("job"));
    assert_eq!(m.len(), 1);
    assert!(
        m[0].starts_with("spec.template: Invalid value: {")
            && m[0].ends_with("}: field is immutable"),
        "{m:?}"
    );
    let mut old = fixture("job");
    old["spec"]["suspend"] = json!(true);
    let mut new = old.clone();
    new["spec"]["template"]["spec"]["nodeSelector"] = json!({"disk": "ssd"});
    assert!(update_messages(new, old).is_empty());
}

#[test]
fn cron_jobs() {
    let mut c = fixture("cj");
    c["spec"]["schedule"] = json!("");
    assert_eq!(messages(c), vec!["spec.schedule: Required value"]);
    let mut c = fixture("cj");
    c["spec"]["schedule"] = json!("every minute");
    assert_eq!(messages(c), vec!["spec.schedule: Invalid value: \"every minute\": expected exactly 5 fields, found 2: [every minute]"]);
    let mut c = fixture("cj");
    c["spec"]["schedule"] = json!("TZ=UTC 0 * * * *");
    assert_eq!(messages(c), vec!["spec.schedule: Invalid value: \"TZ=UTC 0 * * * *\": cannot use TZ or CRON_TZ in schedule, use timeZone field instead"]);
    let mut c = fixture("cj");
    c["spec"]["concurrencyPolicy"] = json!("Sometimes");
    assert_eq!(messages(c), vec!["spec.concurrencyPolicy: Unsupported value: \"Sometimes\": supported values: \"Allow\", \"Forbid\", \"Replace\""]);
    let mut c = fixture("cj");
    c["metadata"]["name"] = json!("a".repeat(53));
    assert_eq!(
        messages(c),
        vec![format!(
            "metadata.name: Invalid value: \"{}\": must be no more than 52 characters",
            "a".repeat(53)
        )]
    );
    let mut c = fixture("cj");
    c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["restartPolicy"] = json!("Always");
    assert_eq!(messages(c), vec!["spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: \"Always\": supported values: \"OnFailure\", \"Never\""]);
}

#[test]
fn config_maps_and_secrets() {
    let mut c = fixture("cm");
    c["data"] = json!({"a/b": "x", "..x": "y"});
    c["binaryData"] = json!({"..x": "eQ=="});
    let m = messages(c);
    assert_has(&m, "data[a/b]: Invalid value: \"a/b\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')");
    assert_has(
        &m,
        "data[..x]: Invalid value: \"..x\": must not start with '..'",
    );
    assert_has(
        &m,
        "data[..x]: Invalid value: \"..x\": duplicate of key present in binaryData",
    );

    let mut old = fixture("cm");
    old["immutable"] = json!(true);
    let mut new = old.clone();
    new["data"]["a"] = json!("changed");
    assert_eq!(
        update_messages(new, old.clone()),
        vec!["data: Forbidden: field is immutable when `immutable` is set"]
    );
    let mut new = old.clone();
    new["immutable"] = json!(false);
    assert_eq!(
        update_messages(new, old),
        vec!["immutable: Forbidden: field is immutable when `immutable` is set"]
    );
    let mut new = fixture("cm");
    new["data"]["a"] = json!("changed");
    assert!(update_messages(new, fixture("cm")).is_empty());

    let mut s = fixture("secret");
    s["type"] = json!("kubernetes.io/tls");
    assert_eq!(
        messages(s),
        vec![
            "data[tls.crt]: Required value",
            "data[tls.key]: Required value"
        ]
    );
    let mut new = fixture("secret");
    new["type"] = json!("example.com/custom");
    assert_eq!(
        update_messages(new, fixture("secret")),
        vec!["type: Invalid value: \"example.com/custom\": field is immutable"]
    );
    let mut s = fixture("secret");
    s["stringData"] = json!({"pw": "hunter2"});
    let (r, obj) = prepare(s);
    assert_eq!(obj["data"]["pw"], "aHVudGVyMg==");
    assert!(obj.get("stringData").is_none());
    assert!(validate_create(r, &obj).is_empty());
}

#[test]
fn namespaces_nodes_leases_events() {
    let mut ns = fixture("ns");
    ns["spec"] = json!({"finalizers": ["custom"]});
    assert_eq!(messages(ns), vec!["spec.finalizers: Invalid value: \"custom\": name is neither a standard finalizer name nor is it fully qualified"]);

    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
        "spec": {"taints": [{"key": "a", "effect": "NoSchedule"}, {"key": "a", "effect": "NoSchedule"}, {"key": "b", "effect": "Never"}]}});
    let m = messages(node);
    assert_eq!(m.len(), 2, "{m:#?}");
    assert!(
        m[0].starts_with("spec.taints[1]: Duplicate value: ")
            && m[0].ends_with(": taints must be unique by key and effect pair")
    );
    assert_eq!(m[1], "spec.taints[2].effect: Unsupported value: \"Never\": supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"");
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "2"}}});
    let (r, obj) = prepare(node);
    assert_eq!(obj["status"]["allocatable"], json!({"cpu": "2"}));
    assert!(validate_create(r, &obj).is_empty());

    let lease = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": "l"},
        "spec": {"holderIdentity": "me", "leaseDurationSeconds": 0}});
    assert_eq!(
        messages(lease),
        vec!["spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"]
    );

    let ev = json!({"apiVersion": "v1", "kind": "Event", "metadata": {"name": "e1"},
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"}, "reason": "Started", "message": "m"});
    assert!(messages(ev.clone()).is_empty());
    let mut bad = ev.clone();
    bad["involvedObject"]["namespace"] = json!("other");
    assert_eq!(
        messages(bad),
        vec!["involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"]
    );
    let mut bad = ev;
    bad.as_object_mut().unwrap().remove("involvedObject");
    assert_eq!(messages(bad), vec!["involvedObject: Required value"]);

    let ev2 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event", "metadata": {"name": "e2"},
        "eventTime": "2024-01-01T00:00:00.000000Z", "type": "Normal", "reason": "R", "action": "A",
        "reportingController": "example.com/ctl", "reportingInstance": "i", "regarding": {"kind": "Pod", "namespace": "default"}});
    assert!(
        messages(ev2.clone()).is_empty(),
        "{:?}",
        messages(ev2.clone())
    );
    let mut bad = ev2;
    bad["type"] = json!("Odd");
    bad.as_object_mut().unwrap().remove("action");
    assert_eq!(
        messages(bad),
        vec![
            "type: Invalid value: \"\": has invalid value: Odd",
            "action: Required value"
        ]
    );
}

#[test]
fn rbac_pvc_priority_crd() {
    let mut r = fixture("role");
    r["rules"] = json!([{"verbs": [], "apiGroups": [""], "resources": ["pods"]}, {"verbs": ["get"], "nonResourceURLs": ["/x"]}]);
    assert_eq!(messages(r), vec![
        "rules[0].verbs: Required value: verbs must contain at least one value",
        "rules[1].nonResourceURLs: Invalid value: []string{\"/x\"}: namespaced rules cannot apply to non-resource URLs",
    ]);
    let mut b = fixture("crb");
    b["roleRef"]["kind"] = json!("Role");
    b["subjects"][0]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    assert_eq!(
        messages(b),
        vec![
            "roleRef.kind: Unsupported value: \"Role\": supported values: \"ClusterRole\"",
            "subjects[0].namespace: Required value",
        ]
    );
    let mut new = fixture("rb");
    new["roleRef"]["name"] = json!("other");
    let m = update_messages(new, fixture("rb"));
    assert_eq!(m.len(), 1);
    assert!(
        m[0].starts_with("roleRef: Invalid value: ") && m[0].ends_with(": cannot change roleRef")
    );

    let pvc = json!({"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "c"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}}});
    assert!(messages(pvc.clone()).is_empty());
    let (_, obj) = prepare(pvc.clone());
    assert_eq!(obj["spec"]["volumeMode"], "Filesystem");
    let mut bad = pvc.clone();
    bad["spec"] = json!({});
    assert_eq!(
        messages(bad),
        vec![
            "spec.accessModes: Required value: at least 1 access mode is required",
            "spec.resources[storage]: Required value"
        ]
    );
    let mut new = pvc.clone();
    new["spec"]["accessModes"] = json!(["ReadWriteMany"]);
    assert_eq!(update_messages(new, pvc.clone()).len(), 1);
    let mut new = pvc.clone();
    new["spec"]["resources"]["requests"]["storage"] = json!("2Gi");
    assert!(update_messages(new, pvc).is_empty());

    let mut pc = fixture("pc");
    pc["value"] = json!(2_000_000_000);
    assert_eq!(
        messages(pc),
        vec!["value: Forbidden: maximum allowed value of a user defined priority is 1000000000"]
    );
    let mut new = fixture("pc");
    new["value"] = json!(5);
    assert_eq!(
        update_messages(new, fixture("pc")),
        vec!["value: Forbidden: may not be changed in an update."]
    );

    let crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {"group": "example.com", "scope": "Namespaced", "names": {"plural": "widgets", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true, "schema": {"openAPIV3Schema": {"type": "object"}}}]}});
    assert!(
        messages(crd.clone()).is_empty(),
        "{:?}",
        messages(crd.clone())
    );
    let mut bad = crd;
    bad["metadata"]["name"] = json!("gadgets.example.com");
    assert_eq!(messages(bad), vec!["metadata.name: Invalid value: \"gadgets.example.com\": must be spec.names.plural+\".\"+spec.group"]);
}

#[test]
fn odd_but_typed_objects_do_not_panic() {
    for r in catalog::all() {
        let mut obj =
            json!({"apiVersion": r.api_version, "kind": r.kind, "metadata": {"name": "x"}});
        defaults::apply(r, &mut obj);
        let first = obj.clone();
        defaults::apply(r, &mut obj);
        assert_eq!(first, obj, "{}", r.kind);
        let _ = validate_create(r, &obj);
        let _ = validate_update(r, &obj, &first);
        let mut null = Value::Null;
        defaults::apply(r, &mut null);
        let _ = validate_create(r, &Value::Null);
    }
}
