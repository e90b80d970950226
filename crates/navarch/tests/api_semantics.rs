//! Issue 2: object semantics and bad input, through kubectl and raw HTTPS.

mod common;

use std::time::Duration;

use common::{eventually, Cluster};

#[test]
fn deleting_a_namespace_empties_it_first() {
    let c = Cluster::start();
    c.ok(&["create", "namespace", "doomed"]);
    c.ok(&[
        "create",
        "configmap",
        "a",
        "-n",
        "doomed",
        "--from-literal=x=y",
    ]);
    c.ok(&["create", "deployment", "d", "-n", "doomed", "--image=nginx"]);
    let out = c.ok(&["delete", "namespace", "doomed", "--timeout=60s"]);
    assert_eq!(out.trim(), "namespace \"doomed\" deleted");
    let err = c.fails(&["get", "ns", "doomed"]);
    assert!(err.contains("namespaces \"doomed\" not found"), "{err}");
    // Nothing left behind in the store under that namespace.
    assert_eq!(
        c.ok(&["get", "cm", "-n", "doomed", "-o", "name"]).trim(),
        ""
    );
    assert_eq!(
        c.ok(&["get", "deploy", "-n", "doomed", "-o", "name"])
            .trim(),
        ""
    );
    // Creating in a missing namespace is a 404 naming the namespace.
    let err = c.fails(&[
        "create",
        "configmap",
        "b",
        "-n",
        "doomed",
        "--from-literal=x=y",
    ]);
    assert!(err.contains("namespaces \"doomed\" not found"), "{err}");
}

#[test]
fn generate_name_generation_and_status_rules() {
    let c = Cluster::start();
    let out = c.kubectl_stdin(
        &["create", "-f", "-", "-o", "jsonpath={.metadata.name}"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"gen-"}}"#,
    );
    let name = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    c.ok(&["create", "deployment", "web", "--image=nginx"]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "1"
    );
    c.ok(&["label", "deploy", "web", "x=y"]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "1"
    );
    c.ok(&["scale", "deploy", "web", "--replicas=3"]);
    assert_eq!(
        c.ok(&[
            "get",
            "deploy",
            "web",
            "-o",
            "jsonpath={.metadata.generation}"
        ]),
        "2"
    );
    assert_eq!(
        c.ok(&["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"]),
        "3"
    );
    // Status written through the main resource is ignored (an HPA: no controller
    // writes its status here yet).
    c.apply(r#"{"apiVersion":"autoscaling/v2","kind":"HorizontalPodAutoscaler","metadata":{"name":"h"},
        "spec":{"scaleTargetRef":{"apiVersion":"apps/v1","kind":"Deployment","name":"web"},"maxReplicas":5}}"#);
    c.ok(&[
        "patch",
        "hpa",
        "h",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"desiredReplicas":7}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "hpa",
            "h",
            "-o",
            "jsonpath={.status.desiredReplicas}"
        ]),
        ""
    );
    // ... and taken through /status.
    c.ok(&[
        "patch",
        "hpa",
        "h",
        "--subresource=status",
        "--type",
        "merge",
        "-p",
        r#"{"status":{"desiredReplicas":7}}"#,
    ]);
    assert_eq!(
        c.ok(&[
            "get",
            "hpa",
            "h",
            "-o",
            "jsonpath={.status.desiredReplicas}"
        ]),
        "7"
    );
    // Services get a ClusterIP from 10.43.0.0/16 and NodePorts from 30000-32767.
    c.ok(&["create", "service", "nodeport", "np", "--tcp=80:8080"]);
    let ip = c.ok(&["get", "svc", "np", "-o", "jsonpath={.spec.clusterIP}"]);
    assert!(ip.starts_with("10.43."), "{ip}");
    let port: u32 = c
        .ok(&[
            "get",
            "svc",
            "np",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .parse()
        .expect("port");
    assert!((30000..=32767).contains(&port), "{port}");
    // dry run stores nothing.
    c.ok(&[
        "create",
        "configmap",
        "dry",
        "--from-literal=a=b",
        "--dry-run=server",
    ]);
    assert!(c.fails(&["get", "cm", "dry"]).contains("not found"));
}

#[test]
fn finalizers_hold_deletion() {
    let c = Cluster::start();
    c.apply(
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}"#,
    );
    c.ok(&["delete", "cm", "held", "--wait=false"]);
    let ts = c.ok(&[
        "get",
        "cm",
        "held",
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!ts.is_empty(), "deletionTimestamp should be set");
    c.ok(&[
        "patch",
        "cm",
        "held",
        "--type",
        "json",
        "-p",
        r#"[{"op":"remove","path":"/metadata/finalizers"}]"#,
    ]);
    let gone = eventually(Duration::from_secs(10), || {
        let out = c.kubectl(&["get", "cm", "held"]);
        (!out.status.success()).then_some(())
    });
    assert!(
        gone.is_some(),
        "object should disappear once its finalizers are gone"
    );
}

/// curl with the admin's client certificate.
fn curl_cmd(c: &Cluster) -> std::process::Command {
    let pki = c.data_dir().join("pki");
    let mut cmd = std::process::Command::new("curl");
    cmd.args(["-s", "--cacert"])
        .arg(pki.join("ca.crt"))
        .arg("--cert")
        .arg(pki.join("admin.crt"))
        .arg("--key")
        .arg(pki.join("admin.key"));
    cmd
}

fn curl(c: &Cluster, args: &[&str]) -> (String, String) {
    let out = curl_cmd(c)
        .args(["-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, ""));
    (body.to_string(), code.to_string())
}

#[test]
fn bad_input_is_a_4xx_status_and_harmless() {
    let c = Cluster::start();
    let base = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps",
        c.port
    );
    let post = |body: &str, ct: &str| {
        curl(
            &c,
            &[
                "-X",
                "POST",
                "-H",
                &format!("Content-Type: {ct}"),
                "--data-binary",
                body,
                &base,
            ],
        )
    };
    let (b, code) = post("{not json", "application/json");
    assert_eq!(code, "400", "{b}");
    assert!(b.contains("\"kind\":\"Status\""), "{b}");
    let (b, code) = post("a: [unclosed", "application/yaml");
    assert_eq!(code, "400", "{b}");
    let garbage = c.data_dir().join("garbage.pb");
    std::fs::write(&garbage, b"k8s\0\x0a\xff\xff\xffgarbage").expect("write");
    let (b, code) = curl(
        &c,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/vnd.kubernetes.protobuf",
            "--data-binary",
            &format!("@{}", garbage.display()),
            &base,
        ],
    );
    assert!(code.starts_with('4'), "{code} {b}");
    let (b, code) = post(
        r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"x"}}"#,
        "application/json",
    );
    assert_eq!(code, "400", "wrong kind for the URL: {b}");
    let long = "a".repeat(300);
    let (b, code) = post(
        &format!(r#"{{"metadata":{{"name":"{long}"}}}}"#),
        "application/json",
    );
    assert_eq!(code, "422", "{b}");
    assert!(b.contains("metadata.name"), "{b}");
    let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let (b, code) = post(
        &format!(r#"{{"metadata":{{"name":"deep"}},"data":{deep}}}"#),
        "application/json",
    );
    assert_eq!(code, "400", "{b}");
    let big = format!(
        r#"{{"metadata":{{"name":"big"}},"data":{{"k":"{}"}}}}"#,
        "x".repeat(4 * 1024 * 1024)
    );
    let path = c.data_dir().join("big.json");
    std::fs::write(&path, big).expect("write");
    let (b, code) = curl(
        &c,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &format!("@{}", path.display()),
            &base,
        ],
    );
    assert_eq!(code, "413", "{b}");
    let (b, code) = post(
        r#"{"metadata":{"name":"strict"},"bogus":true}"#,
        "application/json",
    );
    assert_eq!(code, "201", "unknown fields only warn by default: {b}");
    let (b, code) = curl(
        &c,
        &[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            r#"{"metadata":{"name":"strict2"},"bogus":true}"#,
            &format!("{base}?fieldValidation=Strict"),
        ],
    );
    assert_eq!(code, "400", "{b}");
    assert!(b.contains("unknown field \\\"bogus\\\""), "{b}");
    // Nothing invalid was stored, and the server is still fine.
    let names = c.ok(&["get", "cm", "-o", "jsonpath={.items[*].metadata.name}"]);
    assert_eq!(names, "strict", "{names}");
    assert_eq!(c.ok(&["get", "--raw", "/readyz"]), "ok");
}

#[test]
fn watch_from_compacted_revision_gets_410() {
    let c = Cluster::start();
    let (b, code) = curl(&c, &[&format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps?watch=true&resourceVersion=1&timeoutSeconds=2",
        c.port
    )]);
    // Nothing is compacted in a fresh server: the watch opens and times out cleanly.
    assert_eq!(code, "200", "{b}");
    let (b, code) = curl(
        &c,
        &[&format!(
            "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps?limit=1",
            c.port
        )],
    );
    assert_eq!(code, "200", "{b}");
}

#[test]
fn partial_object_metadata_lists_gets_and_watches() {
    let c = Cluster::start();
    c.ok(&["create", "configmap", "pom", "--from-literal=big=value"]);
    let base = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps",
        c.port
    );
    let list_accept =
        "Accept: application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1,application/json";
    let (b, code) = curl(&c, &["-H", list_accept, &base]);
    assert_eq!(code, "200", "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["kind"], "PartialObjectMetadataList", "{b}");
    assert_eq!(v["apiVersion"], "meta.k8s.io/v1", "{b}");
    assert!(v["metadata"]["resourceVersion"].is_string(), "{b}");
    let item = &v["items"][0];
    assert_eq!(item["kind"], "PartialObjectMetadata", "{b}");
    assert_eq!(item["apiVersion"], "meta.k8s.io/v1", "{b}");
    assert_eq!(item["metadata"]["name"], "pom", "{b}");
    assert!(item["metadata"]["uid"].is_string(), "{b}");
    assert!(item.get("data").is_none(), "metadata only: {b}");

    let one_accept = "Accept: application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1";
    let (b, code) = curl(&c, &["-H", one_accept, &format!("{base}/pom")]);
    assert_eq!(code, "200", "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("json");
    assert_eq!(v["kind"], "PartialObjectMetadata", "{b}");
    assert_eq!(v["metadata"]["name"], "pom", "{b}");
    assert!(v.get("data").is_none(), "{b}");

    let (b, code) = curl(
        &c,
        &[
            "-H",
            one_accept,
            &format!("{base}?watch=true&resourceVersion=0&timeoutSeconds=1"),
        ],
    );
    assert_eq!(code, "200", "{b}");
    let ev: serde_json::Value =
        serde_json::from_str(b.lines().next().expect("an event")).expect("json");
    assert_eq!(ev["type"], "ADDED", "{b}");
    assert_eq!(ev["object"]["kind"], "PartialObjectMetadata", "{b}");
    assert_eq!(ev["object"]["metadata"]["name"], "pom", "{b}");
    assert!(ev["object"].get("data").is_none(), "{b}");

    // Plain JSON is unchanged.
    let (b, _) = curl(&c, &[&format!("{base}/pom")]);
    assert!(b.contains("\"data\""), "{b}");
}

#[test]
fn priority_classes_are_resolved_at_admission() {
    let c = Cluster::start();
    let pod = |name: &str, class: Option<&str>| {
        let class = class
            .map(|k| format!("  priorityClassName: {k}\n"))
            .unwrap_or_default();
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n{class}  containers: [{{name: c, image: busybox}}]\n"
        )
    };
    let spec_of = |name: &str| {
        c.ok(&[
            "get",
            "pod",
            name,
            "-o",
            "jsonpath={.spec.priority} {.spec.preemptionPolicy} {.spec.priorityClassName}",
        ])
    };
    c.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: high}\nvalue: 1000\n");
    c.apply(&pod("plain", None));
    assert_eq!(spec_of("plain").trim(), "0 PreemptLowerPriority");
    c.apply(&pod("important", Some("high")));
    assert_eq!(spec_of("important"), "1000 PreemptLowerPriority high");
    c.apply(&pod("critical", Some("system-node-critical")));
    assert_eq!(
        spec_of("critical"),
        "2000001000 PreemptLowerPriority system-node-critical"
    );
    let out = c.kubectl_stdin(&["apply", "-f", "-"], &pod("lost", Some("nope")));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("no PriorityClass with name nope was found"),
        "{err}"
    );
    // A globalDefault class applies to pods that name none.
    c.apply("apiVersion: scheduling.k8s.io/v1\nkind: PriorityClass\nmetadata: {name: batch}\nvalue: 5\nglobalDefault: true\npreemptionPolicy: Never\n");
    c.apply(&pod("defaulted", None));
    assert_eq!(spec_of("defaulted"), "5 Never batch");
}

#[test]
fn managed_fields_record_update_operations() {
    let c = Cluster::start();
    let managed = |name: &str| -> Vec<serde_json::Value> {
        let out = c.ok(&["get", "cm", name, "-o", "json", "--show-managed-fields"]);
        let obj: serde_json::Value = serde_json::from_str(&out).expect("json");
        obj["metadata"]["managedFields"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let entry = |entries: &[serde_json::Value], manager: &str| -> serde_json::Value {
        entries
            .iter()
            .find(|e| e["manager"] == manager)
            .cloned()
            .unwrap_or_else(|| panic!("no {manager} entry in {entries:?}"))
    };
    c.ok(&["create", "configmap", "mf", "--from-literal=a=1"]);
    c.ok(&["label", "cm", "mf", "tier=fe"]);
    let entries = managed("mf");
    assert_eq!(entries.len(), 2, "{entries:?}");
    let create = entry(&entries, "kubectl-create");
    assert_eq!(create["operation"], "Update");
    assert_eq!(create["apiVersion"], "v1");
    assert_eq!(create["fieldsType"], "FieldsV1");
    assert_eq!(
        create["fieldsV1"],
        serde_json::json!({"f:data": {".": {}, "f:a": {}}})
    );
    let label = entry(&entries, "kubectl-label");
    assert_eq!(label["operation"], "Update");
    assert_eq!(
        label["fieldsV1"],
        serde_json::json!({"f:metadata": {"f:labels": {".": {}, "f:tier": {}}}})
    );
    let time = label["time"].as_str().expect("time");
    assert!(time.len() == 20 && time.ends_with('Z'), "{time}");
    // Plain `-o json` hides them, as upstream kubectl does.
    let plain = c.ok(&["get", "cm", "mf", "-o", "json"]);
    assert!(!plain.contains("managedFields"), "{plain}");
    // A server-side apply of a field kubectl-create set conflicts with it.
    let out = c.kubectl_stdin(
        &["apply", "--server-side", "-f", "-"],
        r#"{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"mf"},"data":{"a":"2"}}"#,
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("conflict with \"kubectl-create\""), "{err}");
    // A patch takes the field over; kubectl-create keeps only `data` itself.
    c.ok(&[
        "patch",
        "cm",
        "mf",
        "--type=merge",
        "-p",
        r#"{"data":{"a":"3"}}"#,
    ]);
    let entries = managed("mf");
    assert_eq!(
        entry(&entries, "kubectl-patch")["fieldsV1"],
        serde_json::json!({"f:data": {"f:a": {}}})
    );
    assert_eq!(
        entry(&entries, "kubectl-create")["fieldsV1"],
        serde_json::json!({"f:data": {}})
    );
    // Resetting with [{}] clears them all.
    c.ok(&[
        "patch",
        "cm",
        "mf",
        "--type=json",
        "-p",
        r#"[{"op":"replace","path":"/metadata/managedFields","value":[{}]}]"#,
    ]);
    assert!(managed("mf").is_empty());
    // A bad fieldManager is a 422.
    let err = c.fails(&[
        "label",
        "cm",
        "mf",
        "x=y",
        &format!("--field-manager={}", "m".repeat(129)),
    ]);
    assert!(
        err.contains("fieldManager: Too long: may not be more than 128 bytes"),
        "{err}"
    );
    // A status write records an entry for the status subresource.
    c.ok(&["run", "mfpod", "--image=navarch.test/none:1"]);
    c.ok(&[
        "patch",
        "pod",
        "mfpod",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"message":"from-test"}}"#,
    ]);
    let out = c.ok(&["get", "pod", "mfpod", "-o", "json", "--show-managed-fields"]);
    let obj: serde_json::Value = serde_json::from_str(&out).expect("json");
    let entries = obj["metadata"]["managedFields"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let status = entries
        .iter()
        .find(|e| e["manager"] == "kubectl-patch")
        .unwrap_or_else(|| panic!("no kubectl-patch entry in {entries:?}"));
    assert_eq!(status["subresource"], "status", "{status}");
    assert!(
        status["fieldsV1"]["f:status"]["f:message"].is_object(),
        "{status}"
    );
}

/// HTTP/1.1 watches (the Python client's, curl's with `--http1.1`) are served
/// by the watch hub thread: events arrive live, selectors apply, the body ends
/// cleanly at the timeout, and errors keep their `Status` shape.
#[test]
fn http1_watches_are_served_by_the_watch_hub() {
    let c = Cluster::start();
    let base = format!(
        "https://127.0.0.1:{}/api/v1/namespaces/default/configmaps",
        c.port
    );
    c.ok(&["create", "configmap", "before", "--from-literal=a=b"]);
    let watch = |query: &str| {
        curl_cmd(&c)
            .args(["-N", "-i", "--http1.1"])
            .arg(format!("{base}?watch=true&timeoutSeconds=4&{query}"))
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("curl")
    };
    // All configmaps from the start, and only the labelled ones.
    let all = watch("");
    let web = watch("labelSelector=app%3Dweb");
    std::thread::sleep(Duration::from_millis(800));
    c.ok(&["create", "configmap", "plain", "--from-literal=a=b"]);
    c.ok(&["create", "configmap", "labelled", "--from-literal=a=b"]);
    c.ok(&["label", "configmap", "labelled", "app=web"]);
    c.ok(&["delete", "configmap", "labelled"]);
    let events = |child: std::process::Child| {
        let out = child.wait_with_output().expect("curl ends");
        // curl fails (18) when a chunked body does not end properly.
        assert!(out.status.success(), "curl: {:?}", out.status);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").expect("a head");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(
            head.contains("Connection: close"),
            "served by the hub: {head}"
        );
        body.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("one event per line");
                format!(
                    "{} {}",
                    v["type"].as_str().unwrap_or(""),
                    v["object"]["metadata"]["name"].as_str().unwrap_or("")
                )
            })
            .collect::<Vec<_>>()
    };
    let all = events(all);
    assert_eq!(
        all,
        [
            "ADDED before",
            "ADDED plain",
            "ADDED labelled",
            "MODIFIED labelled",
            "DELETED labelled"
        ],
        "{all:?}"
    );
    assert_eq!(
        events(web),
        ["ADDED labelled", "DELETED labelled"],
        "the selector's view"
    );
    // A bad watch still gets its Status, over the same path.
    let (b, code) = curl(
        &c,
        &[
            "--http1.1",
            &format!("{base}?watch=true&resourceVersion=abc"),
        ],
    );
    assert_eq!(code, "400", "{b}");
    let v: serde_json::Value = serde_json::from_str(&b).expect("a Status");
    assert_eq!(v["kind"], "Status", "{b}");
    // Plain requests on HTTP/1.1 still go to hyper (kept alive, no close),
    // and a watch after one on the same connection still goes to the hub.
    let out = curl_cmd(&c)
        .args(["-v", "-i", "--http1.1"])
        .arg(format!("{base}/plain"))
        .arg(format!(
            "{base}?watch=true&timeoutSeconds=1&fieldSelector=metadata.name%3Dplain"
        ))
        .output()
        .expect("curl");
    assert!(out.status.success(), "curl: {:?}", out.status);
    let text = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("Re-using existing connection"), "{log}");
    let second = text
        .match_indices("HTTP/1.1 200")
        .nth(1)
        .expect("two responses")
        .0;
    let (get, watch) = text.split_at(second);
    assert!(
        !get.to_ascii_lowercase().contains("connection: close"),
        "{get}"
    );
    assert!(get.contains("\"name\":\"plain\""), "{get}");
    assert!(
        watch.to_ascii_lowercase().contains("connection: close"),
        "{watch}"
    );
    assert!(watch.contains("{\"type\":\"ADDED\""), "{watch}");

    // The real kubectl on HTTP/1.1 (client-go's DISABLE_HTTP2): a list, then
    // the watch on the same connection.
    let mut kw = c.kubectl_cmd();
    kw.env("DISABLE_HTTP2", "1")
        .args(["get", "configmaps", "-w", "--request-timeout=20s"])
        .stdout(std::process::Stdio::piped());
    let mut kw = kw.spawn().expect("kubectl");
    std::thread::sleep(Duration::from_millis(1500));
    c.ok(&[
        "create",
        "configmap",
        "from-kubectl-h1",
        "--from-literal=a=b",
    ]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = kw.kill();
    let out = kw.wait_with_output().expect("kubectl ends");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("from-kubectl-h1"), "{text}");

    // A client that goes away loses its watch: the hub closes its side (no
    // socket of the server's port left waiting in CLOSE_WAIT).
    let close_wait = || {
        let out = std::process::Command::new("ss")
            .args(["-tnH", "state", "close-wait"])
            .arg(format!("( sport = :{} )", c.port))
            .output()
            .expect("ss (iproute2, installed by scripts/setup.sh)");
        String::from_utf8_lossy(&out.stdout).lines().count()
    };
    let mut gone = curl_cmd(&c)
        .args(["-N", "--http1.1"])
        .arg(format!("{base}?watch=true&timeoutSeconds=60"))
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(800));
    let _ = gone.kill();
    let _ = gone.wait();
    assert!(
        eventually(Duration::from_secs(5), || (close_wait() == 0).then_some(())).is_some(),
        "the server still holds the watch of a client that left"
    );
}
