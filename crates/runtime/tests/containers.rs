//! Containers end to end: sandboxes, logs, namespaces, OOM, stop, exec, re-adoption.

mod common;

use common::*;
use navarch_runtime::{ContainerRuntime, ContainerState, Resources, RuncRuntime};
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_a_container_with_cri_logs_and_the_sandbox_hostname() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-a"))
        .await
        .unwrap();
    let cfg = container(&env, "c1", "echo hi; echo err >&2; hostname");
    let t0 = Instant::now();
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    assert_eq!(
        env.rt.container_status(&id).await.unwrap().state,
        ContainerState::Created
    );
    env.rt.start_container(&id).await.unwrap();
    let started = t0.elapsed();
    let st = wait_exited(&env.rt, &id, Duration::from_secs(10)).await;
    match &st.state {
        ContainerState::Exited {
            exit_code, reason, ..
        } => {
            assert_eq!((*exit_code, reason.as_str()), (0, "Completed"));
        }
        other => panic!("unexpected state {other:?}"),
    }
    assert!(st.started_at.is_some());
    assert_eq!(st.sandbox_id, sb.id);
    assert_eq!(st.name, "c1");
    assert!(st.image_id.starts_with("sha256:"));
    let text = std::fs::read_to_string(&cfg.log_path).unwrap();
    let recs = log_records(&text);
    assert!(recs.contains(&"stdout F hi".to_string()), "{text}");
    assert!(recs.contains(&"stderr F err".to_string()), "{text}");
    assert!(
        recs.contains(&"stdout F pod-a".to_string()),
        "hostname is the sandbox's: {text}"
    );
    eprintln!("create+start took {started:?}");
    // A second start is refused.
    assert!(env.rt.start_container(&id).await.is_err());
    cleanup(&env.rt).await;
    assert!(env.rt.list_containers().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_of_a_sandbox_share_net_but_not_pid() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-b"))
        .await
        .unwrap();
    // Both stay up while compared: a freed namespace's inode number can be reused.
    let script = "readlink /proc/self/ns/net; readlink /proc/self/ns/pid; exec sleep 30";
    let a = env
        .rt
        .create_container(
            &sb,
            &container(
                &env,
                "a",
                &format!("echo shared > /dev/shm/from-a; {script}"),
            ),
        )
        .await
        .unwrap();
    let b = env
        .rt
        .create_container(&sb, &container(&env, "b", script))
        .await
        .unwrap();
    env.rt.start_container(&a).await.unwrap();
    env.rt.start_container(&b).await.unwrap();
    wait_log(&env.log_path("a"), "pid:[", Duration::from_secs(5)).await;
    wait_log(&env.log_path("b"), "pid:[", Duration::from_secs(5)).await;
    let read = |n: &str| -> (String, String) {
        let text = std::fs::read_to_string(env.log_path(n)).unwrap();
        let recs = log_records(&text);
        let get = |p: &str| {
            recs.iter()
                .find(|r| r.contains(p))
                .cloned()
                .unwrap_or_else(|| panic!("{p} in {text}"))
        };
        (get("net:["), get("pid:["))
    };
    let (net_a, pid_a) = read("a");
    let (net_b, pid_b) = read("b");
    assert_eq!(net_a, net_b, "same network namespace");
    assert_ne!(pid_a, pid_b, "own pid namespaces");
    use std::os::unix::fs::MetadataExt;
    let ino = std::fs::metadata(sb.netns_path.as_ref().unwrap())
        .unwrap()
        .ino();
    assert!(
        net_a.contains(&format!("net:[{ino}]")),
        "{net_a} vs sandbox {ino}"
    );
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    assert!(!net_a.contains(host.to_str().unwrap()));
    // The pod's /dev/shm is shared too.
    let cat: Vec<String> = ["cat", "/dev/shm/from-a"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = env
        .rt
        .exec_sync(&b, &cat, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (out.exit_code, String::from_utf8_lossy(&out.stdout).as_ref()),
        (0, "shared\n")
    );
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_limit_ends_in_oomkilled() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-oom"))
        .await
        .unwrap();
    let mut cfg = container(
        &env,
        "hog",
        r#"x=$(head -c 200000000 /dev/zero | tr "\0" a); echo survived"#,
    );
    cfg.resources = Resources {
        memory_limit: Some(20 << 20),
        ..Default::default()
    };
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    env.rt.start_container(&id).await.unwrap();
    let st = wait_exited(&env.rt, &id, Duration::from_secs(20)).await;
    match st.state {
        ContainerState::Exited {
            exit_code, reason, ..
        } => {
            assert_eq!((exit_code, reason.as_str()), (137, "OOMKilled"));
        }
        other => panic!("unexpected {other:?}"),
    }
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_honours_sigterm_and_kills_after_the_grace_period() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-stop"))
        .await
        .unwrap();
    let polite = container(
        &env,
        "polite",
        r#"trap "echo bye; exit 3" TERM; echo ready; while true; do sleep 0.05; done"#,
    );
    let stubborn = container(
        &env,
        "stubborn",
        r#"trap "" TERM; echo ready; while true; do sleep 0.05; done"#,
    );
    let p = env.rt.create_container(&sb, &polite).await.unwrap();
    let s = env.rt.create_container(&sb, &stubborn).await.unwrap();
    env.rt.start_container(&p).await.unwrap();
    env.rt.start_container(&s).await.unwrap();
    wait_log(&polite.log_path, "ready", Duration::from_secs(5)).await;
    wait_log(&stubborn.log_path, "ready", Duration::from_secs(5)).await;
    assert_eq!(
        env.rt.container_status(&p).await.unwrap().state,
        ContainerState::Running
    );
    assert!(env.rt.container_status(&p).await.unwrap().pid.is_some());

    let t = Instant::now();
    env.rt
        .stop_container(&p, Duration::from_secs(10))
        .await
        .unwrap();
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "SIGTERM handled promptly: {:?}",
        t.elapsed()
    );
    match env.rt.container_status(&p).await.unwrap().state {
        ContainerState::Exited {
            exit_code, reason, ..
        } => assert_eq!((exit_code, reason.as_str()), (3, "Error")),
        other => panic!("unexpected {other:?}"),
    }
    wait_log(&polite.log_path, "stdout F bye", Duration::from_secs(2)).await;

    let t = Instant::now();
    env.rt
        .stop_container(&s, Duration::from_millis(700))
        .await
        .unwrap();
    let took = t.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "waited for the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(6), "killed after it: {took:?}");
    match env.rt.container_status(&s).await.unwrap().state {
        ContainerState::Exited { exit_code, .. } => assert_eq!(exit_code, 137),
        other => panic!("unexpected {other:?}"),
    }
    // Stopping an exited container is a no-op.
    env.rt
        .stop_container(&s, Duration::from_secs(1))
        .await
        .unwrap();
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_sync_returns_output_and_exit_code() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-exec"))
        .await
        .unwrap();
    let mut cfg = container(&env, "svc", "echo ready; exec sleep 30");
    cfg.env = vec![("GREETING".into(), "hello".into())];
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    env.rt.start_container(&id).await.unwrap();
    wait_log(&cfg.log_path, "ready", Duration::from_secs(5)).await;
    let argv: Vec<String> = ["sh", "-c", "echo $GREETING; echo oops >&2; exit 7"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let out = env
        .rt
        .exec_sync(&id, &argv, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(out.exit_code, 7);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let slow: Vec<String> = ["sleep", "5"].iter().map(|s| s.to_string()).collect();
    let t = Instant::now();
    assert!(env
        .rt
        .exec_sync(&id, &slow, Duration::from_millis(300))
        .await
        .is_err());
    assert!(t.elapsed() < Duration::from_secs(3));
    env.rt.stop_container(&id, Duration::ZERO).await.unwrap();
    assert!(
        env.rt
            .exec_sync(&id, &argv, Duration::from_secs(1))
            .await
            .is_err(),
        "not running any more"
    );
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_runtime_readopts_running_containers() {
    let env = Env::with_busybox().await;
    let rt1 = RuncRuntime::new(env.config.clone()).unwrap();
    let sb = rt1.create_sandbox(&sandbox_config("pod-re")).await.unwrap();
    let cfg = container(
        &env,
        "ticker",
        "i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done",
    );
    let id = rt1.create_container(&sb, &cfg).await.unwrap();
    rt1.start_container(&id).await.unwrap();
    wait_log(&cfg.log_path, "tick 1", Duration::from_secs(5)).await;
    drop(rt1); // the agent goes away

    let rt2 = RuncRuntime::new(env.config.clone()).unwrap();
    let list = rt2.list_containers().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].id, id);
    assert_eq!(list[0].state, ContainerState::Running);
    assert_eq!(rt2.list_sandboxes().await.unwrap(), vec![sb.clone()]);
    let before = std::fs::read_to_string(&cfg.log_path)
        .unwrap()
        .lines()
        .count();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = std::fs::read_to_string(&cfg.log_path)
        .unwrap()
        .lines()
        .count();
    assert!(after > before, "logs keep growing ({before} -> {after})");
    rt2.stop_container(&id, Duration::from_secs(2))
        .await
        .unwrap();
    cleanup(&rt2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_failure_is_reported() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-fail"))
        .await
        .unwrap();
    let mut cfg = container(&env, "bad", "");
    cfg.argv = vec!["/no/such/binary".into()];
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    let err = env.rt.start_container(&id).await.unwrap_err();
    assert_eq!(err.reason(), "RunContainerError", "{err}");
    assert!(
        err.to_string().contains("no such file") || err.to_string().contains("/no/such/binary"),
        "{err}"
    );
    let mut missing = container(&env, "m", "true");
    missing.image = "navarch.test/none:1".into();
    let err = env.rt.create_container(&sb, &missing).await.unwrap_err();
    assert!(
        matches!(err, navarch_runtime::RuntimeError::ImageNotFound { .. }),
        "{err}"
    );
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_rotate_by_size() {
    let env = Env::with_busybox().await;
    let mut config = env.config.clone();
    config.log_max_size = 4096;
    let rt = RuncRuntime::new(config).unwrap();
    let sb = rt.create_sandbox(&sandbox_config("pod-rot")).await.unwrap();
    let cfg = container(
        &env,
        "chatty",
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done",
    );
    let id = rt.create_container(&sb, &cfg).await.unwrap();
    rt.start_container(&id).await.unwrap();
    wait_exited(&rt, &id, Duration::from_secs(10)).await;
    let mut old = cfg.log_path.clone().into_os_string();
    old.push(".1");
    let current = std::fs::read_to_string(&cfg.log_path).unwrap();
    let rotated = std::fs::read_to_string(&old).unwrap();
    assert!(current.len() <= 4096 && rotated.len() <= 4096);
    assert!(current.ends_with("stdout F line 299\n"), "{current}");
    assert!(log_records(&rotated)
        .iter()
        .all(|r| r.starts_with("stdout F line ")));
    cleanup(&rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_without_metadata_are_removed_with_their_mounts() {
    let env = Env::new();
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("pod-orphan"))
        .await
        .unwrap();
    let dir = env.config.root.join("sandboxes").join(&sb.id);
    let mounted = || {
        std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .contains(dir.to_str().unwrap())
    };
    assert!(mounted(), "the sandbox pins its namespaces and /dev/shm");
    // What a create cut short, or an `rm -rf` of the data dir, leaves behind.
    std::fs::remove_file(dir.join("sandbox.json")).unwrap();
    assert!(env.rt.list_sandboxes().await.unwrap().is_empty());
    assert_eq!(env.rt.remove_orphan_sandboxes().await.unwrap(), 1);
    assert!(!dir.exists());
    assert!(!mounted(), "mounts of {} are gone", dir.display());
    assert_eq!(env.rt.remove_orphan_sandboxes().await.unwrap(), 0);
}
