//! Attaching to a container's main process: stdin (with stdinOnce) and a TTY.

mod common;

use common::*;
use navarch_runtime::{AttachFrame, AttachReader, ContainerRuntime, ContainerState, RuncRuntime};
use std::time::Duration;

/// Read output frames until `needle` has appeared; returns everything read.
async fn read_until(r: &mut AttachReader, out: &mut String, needle: &str) {
    let wait = async {
        while !out.contains(needle) {
            match r.next().await {
                Some(AttachFrame::Stdout(b)) | Some(AttachFrame::Stderr(b)) => {
                    out.push_str(&String::from_utf8_lossy(&b))
                }
                Some(other) => panic!("unexpected frame {other:?}"),
                None => panic!("attach ended before {needle:?}; output so far: {out:?}"),
            }
        }
    };
    if tokio::time::timeout(Duration::from_secs(20), wait)
        .await
        .is_err()
    {
        panic!("no {needle:?} in attach output {out:?}");
    }
}

async fn exit_code(rt: &RuncRuntime, id: &str) -> i32 {
    match wait_exited(rt, id, Duration::from_secs(20)).await.state {
        ContainerState::Exited { exit_code, .. } => exit_code,
        other => panic!("not exited: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_once_feeds_the_process_then_closes() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("attach-stdin"))
        .await
        .unwrap();
    let mut cfg = container(&env, "c", "read line; echo got:$line; cat; echo done");
    cfg.stdin = true;
    cfg.stdin_once = true;
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    env.rt.start_container(&id).await.unwrap();

    let mut s = env.rt.attach(&id).await.unwrap().expect("attachable");
    assert!(s.stdin && !s.tty);
    let mut out = String::new();
    s.writer.stdin(b"hello\n").await.unwrap();
    read_until(&mut s.reader, &mut out, "got:hello").await;
    s.writer.stdin(b"more\n").await.unwrap();
    read_until(&mut s.reader, &mut out, "more").await;
    // Closing our stdin closes the container's (stdinOnce): cat ends.
    s.writer.close_stdin().await.unwrap();
    read_until(&mut s.reader, &mut out, "done").await;
    // The session ends with the container.
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        while s.reader.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "attach did not end with the container");
    assert_eq!(exit_code(&env.rt, &id).await, 0);
    let log = std::fs::read_to_string(&cfg.log_path).unwrap();
    let recs = log_records(&log);
    assert!(recs.contains(&"stdout F got:hello".to_string()), "{log}");
    assert!(recs.contains(&"stdout F done".to_string()), "{log}");
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tty_gets_a_terminal_that_resizes() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("attach-tty"))
        .await
        .unwrap();
    let mut cfg = container(&env, "t", "");
    cfg.argv = vec!["sh".into()];
    cfg.stdin = true;
    cfg.tty = true;
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    env.rt.start_container(&id).await.unwrap();

    let mut s = env.rt.attach(&id).await.unwrap().expect("attachable");
    assert!(s.tty);
    s.writer.resize(101, 33).await.unwrap();
    // A second client sees the same output (both are attached).
    let mut second = env.rt.attach(&id).await.unwrap().expect("attachable");
    let mut out = String::new();
    s.writer
        .stdin(b"stty size; tty; echo $((6*7))x\n")
        .await
        .unwrap();
    read_until(&mut s.reader, &mut out, "42x").await;
    assert!(out.contains("33 101"), "{out:?}");
    assert!(out.contains("/dev/pts/"), "{out:?}");
    let mut out2 = String::new();
    read_until(&mut second.reader, &mut out2, "42x").await;
    s.writer.stdin(b"exit 3\n").await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(20), async {
        while s.reader.next().await.is_some() {}
    })
    .await;
    assert!(end.is_ok(), "attach did not end with the container");
    assert_eq!(exit_code(&env.rt, &id).await, 3);
    // A terminal's output is logged as stdout.
    let log = std::fs::read_to_string(&cfg.log_path).unwrap();
    assert!(log.contains(" stdout ") && log.contains("42x"), "{log}");
    cleanup(&env.rt).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_without_stdin_or_tty_has_no_attach_session() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("attach-none"))
        .await
        .unwrap();
    let cfg = container(&env, "n", "sleep 30");
    let id = env.rt.create_container(&sb, &cfg).await.unwrap();
    env.rt.start_container(&id).await.unwrap();
    assert!(env.rt.attach(&id).await.unwrap().is_none());
    env.rt.stop_container(&id, Duration::ZERO).await.unwrap();
    assert!(
        env.rt.attach(&id).await.is_err(),
        "attach to a stopped container"
    );
    cleanup(&env.rt).await;
}
