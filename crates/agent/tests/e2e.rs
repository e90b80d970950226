//! The agent against a real navarch API server, with the in-memory runtime:
//! node registration and lease, pod lifecycle and statuses, env and volumes,
//! errors, events, re-adoption after a restart, deletion and orphans.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::fake::Fake;
use common::{eventually, Server};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Event, Node, Pod};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use navarch_agent::{run, AgentConfig};
use navarch_runtime::{ContainerConfig, ContainerRuntime, ContainerState, SandboxConfig};

fn pod(name: &str, spec: serde_json::Value) -> Pod {
    let mut spec = spec;
    spec["nodeName"] = "node1".into();
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": "default", "labels": {"app": name}},
        "spec": spec,
    }))
    .unwrap()
}

fn container(name: &str, image: &str, command: &[&str]) -> serde_json::Value {
    serde_json::json!({"name": name, "image": image, "command": command, "imagePullPolicy": "IfNotPresent"})
}

async fn get(pods: &Api<Pod>, name: &str) -> Option<Pod> {
    pods.get_opt(name).await.ok().flatten()
}

fn cstatus(p: &Pod) -> Option<k8s_openapi::api::core::v1::ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()
        .cloned()
}

fn waiting_reason(p: &Pod) -> Option<String> {
    cstatus(p)?.state?.waiting?.reason
}

fn phase(p: &Pod) -> Option<String> {
    p.status.as_ref()?.phase.clone()
}

async fn start_agent(
    client: &kube::Client,
    root: &std::path::Path,
    fake: &Fake,
) -> tokio::task::JoinHandle<()> {
    let mut cfg = AgentConfig::new("node1", root);
    cfg.node_ip = Some("127.0.0.1".into());
    cfg.cluster_dns = Some("10.96.0.10".into());
    let (c, f1, f2) = (client.clone(), fake.clone(), fake.clone());
    tokio::spawn(async move {
        if let Err(e) = run(cfg, c, Arc::new(f1), Arc::new(f2)).await {
            panic!("agent stopped: {e}");
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_end_to_end() {
    let (_server, client) = Server::start().await;
    let root = tempfile::tempdir().unwrap();
    let fake = Fake::new();

    // an orphan left by a previous agent: a pod that no longer exists
    let sb = fake
        .create_sandbox(&SandboxConfig {
            pod_uid: "orphan-uid".into(),
            pod_name: "old".into(),
            namespace: "default".into(),
            hostname: "old".into(),
            host_network: false,
            share_pid: false,
            cgroup_parent: String::new(),
            limits: Default::default(),
            labels: Default::default(),
        })
        .await
        .unwrap();
    let labels: BTreeMap<String, String> = [(
        "io.kubernetes.pod.uid".to_string(),
        "orphan-uid".to_string(),
    )]
    .into();
    let orphan = fake
        .create_container(
            &sb,
            &ContainerConfig {
                name: "x".into(),
                labels,
                argv: vec!["sleep".into()],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    fake.start_container(&orphan).await.unwrap();

    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let cm: ConfigMap = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "cm"}, "data": {"k": "v", "game": "lives=3"}
    }))
    .unwrap();
    cms.create(&PostParams::default(), &cm).await.unwrap();

    let mut agent = start_agent(&client, root.path(), &fake).await;

    // node and lease
    let nodes: Api<Node> = Api::all(client.clone());
    let node = eventually(20, "node registered", || async {
        nodes.get_opt("node1").await.ok().flatten().filter(|n| {
            n.status
                .as_ref()
                .and_then(|s| s.conditions.as_ref())
                .is_some()
        })
    })
    .await;
    let st = node.status.unwrap();
    let ready = st
        .conditions
        .unwrap()
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    assert_eq!(ready.reason.as_deref(), Some("KubeletReady"));
    assert_eq!(st.allocatable.unwrap()["pods"].0, "110");
    assert_eq!(st.node_info.unwrap().kubelet_version, "v1.33.0-navarch");
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let lease = eventually(10, "lease", || async {
        leases.get_opt("node1").await.ok().flatten()
    })
    .await;
    let ls = lease.spec.unwrap();
    assert_eq!(ls.holder_identity.as_deref(), Some("node1"));
    assert_eq!(ls.lease_duration_seconds, Some(40));
    assert!(ls.renew_time.is_some());

    // orphan removed at start
    eventually(10, "orphan removed", || async {
        fake.containers_of_uid("orphan-uid")
            .is_empty()
            .then_some(())
    })
    .await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pp = PostParams::default();
    // web: env from everything, configMap volume, emptyDir with subPath
    let mut web = container(
        "app",
        "busybox:1.36",
        &["sh", "-c", "echo $(K) $(MISSING) $$(K)"],
    );
    web["env"] = serde_json::json!([
        {"name": "K", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "k"}}},
        {"name": "NODE", "valueFrom": {"fieldRef": {"fieldPath": "spec.nodeName"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
        {"name": "COMBINED", "value": "$(K)-$(NODE)"},
    ]);
    web["envFrom"] = serde_json::json!([{"prefix": "CM_", "configMapRef": {"name": "cm"}}]);
    web["volumeMounts"] = serde_json::json!([
        {"name": "cfg", "mountPath": "/etc/cfg", "readOnly": true},
        {"name": "scratch", "mountPath": "/data", "subPath": "sub"},
    ]);
    let t0 = Instant::now();
    pods.create(
        &pp,
        &pod(
            "web",
            serde_json::json!({
                "containers": [web],
                "volumes": [
                    {"name": "cfg", "configMap": {"name": "cm"}},
                    {"name": "scratch", "emptyDir": {}},
                ],
            }),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &pp,
        &pod(
            "badkey",
            serde_json::json!({"containers": [{
                "name": "app", "image": "busybox:1.36", "command": ["sleep"],
                "env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "X"}}}]
            }]}),
        ),
    )
    .await
    .unwrap();
    pods.create(
        &pp,
        &pod(
            "crash",
            serde_json::json!({"containers": [container("app", "busybox:1.36", &["exit", "1"])]}),
        ),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("done", serde_json::json!({"restartPolicy": "Never", "containers": [container("app", "busybox:1.36", &["exit", "0"])]}))).await.unwrap();
    pods.create(&pp, &pod("fail", serde_json::json!({"restartPolicy": "Never", "containers": [container("app", "busybox:1.36", &["exit", "3"])]}))).await.unwrap();
    pods.create(
        &pp,
        &pod(
            "init",
            serde_json::json!({
                "initContainers": [container("setup", "busybox:1.36", &["exit", "0", "200"])],
                "containers": [container("app", "busybox:1.36", &["sleep"])],
            }),
        ),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("pullfail", serde_json::json!({"containers": [container("app", "registry.invalid/missing:1", &["sleep"])]}))).await.unwrap();
    pods.create(
        &pp,
        &pod(
            "badvol",
            serde_json::json!({
                "containers": [container("app", "busybox:1.36", &["sleep"])],
                "volumes": [{"name": "s", "secret": {"secretName": "nope"}}],
            }),
        ),
    )
    .await
    .unwrap();
    let busy = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let busy_port = busy.local_addr().unwrap().port();
    let mut hp = container("app", "busybox:1.36", &["sleep"]);
    hp["ports"] = serde_json::json!([{"containerPort": 80, "hostPort": busy_port}]);
    pods.create(
        &pp,
        &pod("hostport", serde_json::json!({"containers": [hp]})),
    )
    .await
    .unwrap();
    pods.create(&pp, &pod("nostart", serde_json::json!({"restartPolicy": "Never", "containers": [container("app", "busybox:1.36", &["/nonexistent"])]}))).await.unwrap();
    let mut never = container("app", "never/pulled:1", &["sleep"]);
    never["imagePullPolicy"] = "Never".into();
    pods.create(
        &pp,
        &pod("neverpull", serde_json::json!({"containers": [never]})),
    )
    .await
    .unwrap();

    // web runs
    let web_pod = eventually(10, "web Running", || async {
        get(&pods, "web")
            .await
            .filter(|p| phase(p).as_deref() == Some("Running"))
    })
    .await;
    let latency = t0.elapsed();
    eprintln!("web: create → Running seen in {latency:?}");
    let cs = cstatus(&web_pod).unwrap();
    assert!(cs.ready);
    assert_eq!(cs.started, Some(true));
    assert!(cs
        .container_id
        .as_deref()
        .unwrap()
        .starts_with("navarch://"));
    assert_eq!(cs.image_id, "busybox:1.36@sha256:feed");
    assert!(cs.state.unwrap().running.unwrap().started_at.is_some());
    let ws = web_pod.status.clone().unwrap();
    assert_eq!(ws.host_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(ws.pod_ip.as_deref(), Some("127.0.0.1"));
    assert_eq!(ws.qos_class.as_deref(), Some("BestEffort"));
    assert!(ws.start_time.is_some());
    let conds: BTreeMap<String, String> = ws
        .conditions
        .unwrap()
        .into_iter()
        .map(|c| (c.type_, c.status))
        .collect();
    for t in [
        "PodScheduled",
        "Initialized",
        "ContainersReady",
        "Ready",
        "PodReadyToStartContainers",
    ] {
        assert_eq!(
            conds.get(t).map(String::as_str),
            Some("True"),
            "{t}: {conds:?}"
        );
    }
    let cfg = fake.config_of("web", "app").unwrap();
    let env: BTreeMap<String, String> = cfg.env.iter().cloned().collect();
    assert_eq!(env["K"], "v");
    assert_eq!(env["CM_game"], "lives=3");
    assert_eq!(env["NODE"], "node1");
    assert_eq!(env["COMBINED"], "v-node1");
    assert_eq!(env["PATH"], "/usr/bin:/bin");
    assert_eq!(cfg.argv, vec!["sh", "-c", "echo v $(MISSING) $(K)"]);
    let cfg_mount = cfg
        .mounts
        .iter()
        .find(|m| m.destination == "/etc/cfg")
        .unwrap();
    assert!(cfg_mount.read_only);
    assert_eq!(
        std::fs::read_to_string(cfg_mount.source.join("game")).unwrap(),
        "lives=3"
    );
    let data_mount = cfg
        .mounts
        .iter()
        .find(|m| m.destination == "/data")
        .unwrap();
    assert!(data_mount.source.ends_with("volumes/scratch/sub") && data_mount.source.is_dir());
    for etc in ["/etc/hosts", "/etc/hostname", "/etc/resolv.conf"] {
        let m = cfg.mounts.iter().find(|m| m.destination == etc).unwrap();
        assert!(m.source.exists(), "{etc}");
    }
    let resolv = std::fs::read_to_string(
        &cfg.mounts
            .iter()
            .find(|m| m.destination == "/etc/resolv.conf")
            .unwrap()
            .source,
    )
    .unwrap();
    assert!(resolv.contains("nameserver 10.96.0.10"), "{resolv}");

    // configuration errors
    let bad = eventually(10, "badkey CreateContainerConfigError", || async {
        get(&pods, "badkey")
            .await
            .filter(|p| waiting_reason(p).as_deref() == Some("CreateContainerConfigError"))
    })
    .await;
    assert_eq!(
        cstatus(&bad)
            .unwrap()
            .state
            .unwrap()
            .waiting
            .unwrap()
            .message
            .as_deref(),
        Some("couldn't find key X in ConfigMap default/cm")
    );
    assert_eq!(phase(&bad).as_deref(), Some("Pending"));
    let bv = eventually(10, "badvol ContainerCreating", || async {
        get(&pods, "badvol")
            .await
            .filter(|p| waiting_reason(p).as_deref() == Some("ContainerCreating"))
    })
    .await;
    assert_eq!(phase(&bv).as_deref(), Some("Pending"));

    // terminal phases
    let done = eventually(10, "done Succeeded", || async {
        get(&pods, "done")
            .await
            .filter(|p| phase(p).as_deref() == Some("Succeeded"))
    })
    .await;
    let t = cstatus(&done).unwrap().state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (0, Some("Completed")));
    let failed = eventually(10, "fail Failed", || async {
        get(&pods, "fail")
            .await
            .filter(|p| phase(p).as_deref() == Some("Failed"))
    })
    .await;
    let t = cstatus(&failed).unwrap().state.unwrap().terminated.unwrap();
    assert_eq!((t.exit_code, t.reason.as_deref()), (3, Some("Error")));

    // init container then app
    let init = eventually(10, "init Running", || async {
        get(&pods, "init")
            .await
            .filter(|p| phase(p).as_deref() == Some("Running"))
    })
    .await;
    let ist = init.status.unwrap().init_container_statuses.unwrap()[0].clone();
    assert_eq!(
        ist.state.unwrap().terminated.unwrap().reason.as_deref(),
        Some("Completed")
    );
    assert!(ist.ready);

    // crash loop
    let crash = eventually(15, "crash CrashLoopBackOff", || async {
        get(&pods, "crash")
            .await
            .filter(|p| waiting_reason(p).as_deref() == Some("CrashLoopBackOff"))
    })
    .await;
    let cs = cstatus(&crash).unwrap();
    let msg = cs.state.unwrap().waiting.unwrap().message.unwrap();
    let uid = crash.metadata.uid.clone().unwrap();
    assert_eq!(
        msg,
        format!("back-off 10s restarting failed container=app pod=crash_default({uid})")
    );
    assert!(cs.restart_count >= 1);
    assert_eq!(cs.last_state.unwrap().terminated.unwrap().exit_code, 1);
    assert_eq!(phase(&crash).as_deref(), Some("Running"));

    // image pull failure
    eventually(15, "pullfail ImagePullBackOff", || async {
        get(&pods, "pullfail")
            .await
            .filter(|p| waiting_reason(p).as_deref() == Some("ImagePullBackOff"))
    })
    .await;

    // start failure, pull policy Never, hostPort taken
    let ns = eventually(10, "nostart Failed", || async {
        get(&pods, "nostart")
            .await
            .filter(|p| phase(p).as_deref() == Some("Failed"))
    })
    .await;
    let t = cstatus(&ns).unwrap().state.unwrap().terminated.unwrap();
    assert_eq!(
        (t.exit_code, t.reason.as_deref()),
        (128, Some("StartError"))
    );
    let np = eventually(10, "neverpull ErrImageNeverPull", || async {
        get(&pods, "neverpull")
            .await
            .filter(|p| waiting_reason(p).as_deref() == Some("ErrImageNeverPull"))
    })
    .await;
    assert_eq!(
        cstatus(&np)
            .unwrap()
            .state
            .unwrap()
            .waiting
            .unwrap()
            .message
            .as_deref(),
        Some("Container image \"never/pulled:1\" is not present with pull policy of Never")
    );

    // events
    let events: Api<Event> = Api::namespaced(client.clone(), "default");
    let evs = eventually(10, "events", || async {
        let list = events.list(&ListParams::default()).await.ok()?.items;
        let has = |name: &str, reason: &str| {
            list.iter().any(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.reason.as_deref() == Some(reason)
            })
        };
        (has("web", "Pulled")
            && has("web", "Created")
            && has("web", "Started")
            && has("crash", "BackOff")
            && has("badvol", "FailedMount")
            && has("pullfail", "Failed")
            && has("badkey", "Failed")
            && has("hostport", "FailedCreatePodSandBox"))
        .then_some(list)
    })
    .await;
    let started = evs
        .iter()
        .find(|e| {
            e.involved_object.name.as_deref() == Some("web")
                && e.reason.as_deref() == Some("Started")
        })
        .unwrap();
    assert_eq!(
        started.involved_object.field_path.as_deref(),
        Some("spec.containers{app}")
    );
    assert_eq!(
        started.source.as_ref().unwrap().component.as_deref(),
        Some("kubelet")
    );
    assert_eq!(
        started.source.as_ref().unwrap().host.as_deref(),
        Some("node1")
    );
    assert_eq!(started.count, Some(1));
    assert!(started.first_timestamp.is_some() && started.last_timestamp.is_some());
    let fm = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedMount"))
        .unwrap();
    assert_eq!(
        fm.message.as_deref(),
        Some("MountVolume.SetUp failed for volume \"s\" : secret \"nope\" not found")
    );
    assert_eq!(fm.type_.as_deref(), Some("Warning"));

    let hp_pod = get(&pods, "hostport").await.unwrap();
    assert_eq!(phase(&hp_pod).as_deref(), Some("Pending"));
    drop(busy);

    // kubectl prints upstream's STATUS strings from these statuses
    let kubeconfig = _server.dir.path().join("kubeconfig");
    let cache = tempfile::tempdir().unwrap();
    let out = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--cache-dir")
        .arg(cache.path())
        .args([
            "get",
            "pods",
            "--no-headers",
            "-o",
            "custom-columns=X:.metadata.name",
        ])
        .output();
    if out.is_ok_and(|o| o.status.success()) {
        let table = std::process::Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .arg("--cache-dir")
            .arg(cache.path())
            .args(["get", "pods", "--no-headers"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&table.stdout).to_string();
        let status_of = |name: &str| -> String {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .and_then(|l| l.split_whitespace().nth(2).map(str::to_string))
                .unwrap_or_default()
        };
        for (name, want) in [
            ("web", "Running"),
            ("badkey", "CreateContainerConfigError"),
            ("crash", "CrashLoopBackOff"),
            ("done", "Completed"),
            ("fail", "Error"),
            ("init", "Running"),
            ("pullfail", "ImagePullBackOff"),
            ("nostart", "StartError"),
            ("neverpull", "ErrImageNeverPull"),
            ("hostport", "ContainerCreating"),
            ("badvol", "ContainerCreating"),
        ] {
            assert_eq!(status_of(name), want, "{name} in:\n{text}");
        }
        let ready = text
            .lines()
            .find(|l| l.starts_with("web "))
            .unwrap_or_default()
            .to_string();
        assert!(ready.contains(" 1/1 "), "{ready}");
    } else {
        eprintln!("kubectl unavailable: STATUS column not checked");
    }

    // repeated events are aggregated (the pull back-off is reported on every sync)
    let agg = eventually(15, "aggregated BackOff", || async {
        events
            .list(&ListParams::default())
            .await
            .ok()?
            .items
            .into_iter()
            .find(|e| {
                e.involved_object.name.as_deref() == Some("pullfail")
                    && e.reason.as_deref() == Some("BackOff")
                    && e.count.unwrap_or(0) >= 2
            })
    })
    .await;
    assert_eq!(
        agg.message.as_deref(),
        Some("Back-off pulling image \"registry.invalid/missing:1\"")
    );

    // the agent restarts: running containers are re-adopted, not recreated
    let web_uid = web_pod.metadata.uid.clone().unwrap();
    let before: Vec<String> = fake
        .containers_of_uid(&web_uid)
        .into_iter()
        .map(|c| c.id)
        .collect();
    agent.abort();
    let _ = agent.await;
    agent = start_agent(&client, root.path(), &fake).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<String> = fake
        .containers_of_uid(&web_uid)
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(before, after);
    let web_now = get(&pods, "web").await.unwrap();
    assert_eq!(phase(&web_now).as_deref(), Some("Running"));
    assert_eq!(cstatus(&web_now).unwrap().restart_count, 0);

    // configMap updates reach the volume in place
    cms.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Merge(&serde_json::json!({"data": {"game": "lives=4"}})),
    )
    .await
    .unwrap();
    let game = cfg_mount.source.join("game");
    eventually(20, "configmap update in volume", || async {
        (std::fs::read_to_string(&game).ok()?.as_str() == "lives=4").then_some(())
    })
    .await;

    // deletion: containers stopped and removed, the pod object deleted
    pods.delete("web", &DeleteParams::default()).await.unwrap();
    eventually(15, "web deleted", || async {
        get(&pods, "web").await.is_none().then_some(())
    })
    .await;
    eventually(5, "web containers removed", || async {
        fake.containers_of_uid(&web_uid).is_empty().then_some(())
    })
    .await;
    assert!(!root.path().join("pods").join(&web_uid).exists());
    let killing = events.list(&ListParams::default()).await.unwrap().items;
    assert!(killing
        .iter()
        .any(|e| e.involved_object.name.as_deref() == Some("web")
            && e.reason.as_deref() == Some("Killing")));

    // nothing of the crash pod keeps running once it is gone
    pods.delete(
        "crash",
        &DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let crash_uid = crash.metadata.uid.unwrap();
    eventually(10, "crash cleaned", || async {
        fake.containers_of_uid(&crash_uid)
            .iter()
            .all(|c| !matches!(c.state, ContainerState::Running))
            .then_some(())
            .filter(|_| fake.containers_of_uid(&crash_uid).is_empty())
    })
    .await;
    agent.abort();
}
