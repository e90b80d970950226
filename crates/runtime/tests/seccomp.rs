//! The default seccomp profile: on unless the container is Unconfined or
//! privileged.

mod common;

use common::*;
use navarch_runtime::{
    ContainerConfig, ContainerRuntime, ContainerState, RuncRuntime, SeccompProfile,
};
use std::time::Duration;

/// Runs `unshare -U true` (a new user namespace needs no capability, so only
/// seccomp can refuse it) and prints the seccomp mode of the process.
fn probe(env: &Env, name: &str, seccomp: SeccompProfile, privileged: bool) -> ContainerConfig {
    ContainerConfig {
        name: name.into(),
        image: TEST_REF.into(),
        argv: vec![
            "sh".into(),
            "-c".into(),
            "grep '^Seccomp:' /proc/self/status; unshare -U true; echo unshare=$?; \
             unshare -m true; echo unshare-mnt=$?"
                .into(),
        ],
        log_path: env.log_path(name),
        seccomp,
        privileged,
        ..Default::default()
    }
}

async fn run_to_exit(
    rt: &RuncRuntime,
    sandbox: &navarch_runtime::Sandbox,
    cfg: &ContainerConfig,
) -> String {
    let id = rt.create_container(sandbox, cfg).await.unwrap();
    rt.start_container(&id).await.unwrap();
    let st = wait_exited(rt, &id, Duration::from_secs(10)).await;
    assert!(
        matches!(st.state, ContainerState::Exited { exit_code: 0, .. }),
        "{st:?}"
    );
    let text = std::fs::read_to_string(&cfg.log_path).unwrap();
    rt.remove_container(&id).await.unwrap();
    log_records(&text).join("\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_profile_blocks_namespaces_unless_unconfined_or_privileged() {
    let env = Env::with_busybox().await;
    let sb = env
        .rt
        .create_sandbox(&sandbox_config("seccomp"))
        .await
        .unwrap();

    let confined = run_to_exit(
        &env.rt,
        &sb,
        &probe(&env, "default", SeccompProfile::RuntimeDefault, false),
    )
    .await;
    assert!(confined.contains("Seccomp:\t2"), "filter mode:\n{confined}");
    assert!(confined.contains("Operation not permitted"), "{confined}");
    assert!(confined.contains("unshare=1"), "{confined}");
    assert!(confined.contains("unshare-mnt=1"), "{confined}");

    let unconfined = run_to_exit(
        &env.rt,
        &sb,
        &probe(&env, "unconfined", SeccompProfile::Unconfined, false),
    )
    .await;
    assert!(unconfined.contains("Seccomp:\t0"), "{unconfined}");
    assert!(unconfined.contains("unshare=0"), "{unconfined}");
    // Without CAP_SYS_ADMIN a mount namespace is still refused (by the kernel).
    assert!(unconfined.contains("unshare-mnt=1"), "{unconfined}");

    let privileged = run_to_exit(
        &env.rt,
        &sb,
        &probe(&env, "privileged", SeccompProfile::RuntimeDefault, true),
    )
    .await;
    assert!(privileged.contains("Seccomp:\t0"), "{privileged}");
    assert!(privileged.contains("unshare=0"), "{privileged}");
    assert!(privileged.contains("unshare-mnt=0"), "{privileged}");

    env.rt.remove_sandbox(&sb.id).await.unwrap();
}
