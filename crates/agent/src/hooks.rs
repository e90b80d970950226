//! Lifecycle hooks: postStart (right after the container starts; a failure
//! kills the container, event `FailedPostStartHook`) and preStop (before the
//! SIGTERM, within the termination grace period; event `FailedPreStopHook`).
//! Handlers are exec, httpGet, tcpSocket (deprecated, as upstream) and sleep.

use std::time::Duration;

use tokio::time::Instant;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler};
use navarch_runtime::ContainerRuntime;

use crate::handlers::{Action, Target};

/// Upper bound for a postStart hook (upstream has none besides the handler's
/// own; a stuck hook must not wedge the pod worker forever).
pub const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// Which hook.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// postStart.
    PostStart,
    /// preStop.
    PreStop,
}

/// The handler of hook `h` of `c`, if any.
pub fn handler(c: &Container, h: Hook) -> Option<&LifecycleHandler> {
    let l = c.lifecycle.as_ref()?;
    match h {
        Hook::PostStart => l.post_start.as_ref(),
        Hook::PreStop => l.pre_stop.as_ref(),
    }
}

/// Run hook `h` of container `c` (runtime id `id`) with at most `limit`.
/// `Ok(None)`: no such hook. `Err`: the event message (upstream's wording).
pub async fn run(
    runtime: &dyn ContainerRuntime,
    id: &str,
    c: &Container,
    pod_full_name: &str,
    h: Hook,
    target: &Target,
    limit: Duration,
) -> Result<Option<Duration>, String> {
    let Some(handler) = handler(c, h) else {
        return Ok(None);
    };
    let Some(action) = Action::from_hook(handler) else {
        return Ok(None);
    };
    let t0 = Instant::now();
    let r = match tokio::time::timeout(limit, action.run(runtime, id, target, limit)).await {
        Ok(r) => r,
        Err(_) => Err(format!("hook did not finish within {}s", limit.as_secs())),
    };
    match r {
        Ok(()) => Ok(Some(t0.elapsed())),
        Err(e) => Err(failure_message(&action, &c.name, pod_full_name, &e)),
    }
}

/// Upstream's message for a failed hook handler.
pub fn failure_message(action: &Action, container: &str, pod: &str, err: &str) -> String {
    match action {
        Action::Exec(argv) => format!(
            "Exec lifecycle hook ([{}]) for Container {container:?} in Pod {pod:?} failed - error: command '{}' exited with non-zero status, message: {err:?}",
            argv.join(" "),
            argv.join(" ")
        ),
        Action::Http { path, .. } => format!(
            "HTTP lifecycle hook ({path}) for Container {container:?} in Pod {pod:?} failed - error: {err}"
        ),
        _ => format!(
            "Lifecycle hook for Container {container:?} in Pod {pod:?} failed - error: {err}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testrt::FakeRuntime;
    use k8s_openapi::api::core::v1::{ExecAction, Lifecycle, SleepAction};

    fn with_hooks(post: Option<LifecycleHandler>, pre: Option<LifecycleHandler>) -> Container {
        Container {
            name: "web".into(),
            lifecycle: Some(Lifecycle {
                post_start: post,
                pre_stop: pre,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn exec(cmd: &[&str]) -> LifecycleHandler {
        LifecycleHandler {
            exec: Some(ExecAction {
                command: Some(cmd.iter().map(|s| s.to_string()).collect()),
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn exec_hooks_run_and_fail_with_upstream_message() {
        let rt = FakeRuntime::new(true);
        let c = with_hooks(Some(exec(&["sh", "-c", "echo hi"])), None);
        let t = Target::default();
        let r = run(
            &*rt,
            "id",
            &c,
            "p_ns(u)",
            Hook::PostStart,
            &t,
            POST_START_LIMIT,
        )
        .await;
        assert!(matches!(r, Ok(Some(_))));
        assert_eq!(rt.execs.lock()[0], vec!["sh", "-c", "echo hi"]);
        // no preStop defined
        assert_eq!(
            run(&*rt, "id", &c, "p", Hook::PreStop, &t, POST_START_LIMIT).await,
            Ok(None)
        );
        *rt.ok.lock() = false;
        let err = run(
            &*rt,
            "id",
            &c,
            "p_ns(u)",
            Hook::PostStart,
            &t,
            POST_START_LIMIT,
        )
        .await
        .unwrap_err();
        assert!(
            err.starts_with(
                "Exec lifecycle hook ([sh -c echo hi]) for Container \"web\" in Pod \"p_ns(u)\" failed"
            ),
            "{err}"
        );
        assert!(err.contains("boom"), "{err}");
    }

    #[tokio::test]
    async fn sleep_hook_is_cut_at_the_limit() {
        let rt = FakeRuntime::new(true);
        let c = with_hooks(
            None,
            Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 100 }),
                ..Default::default()
            }),
        );
        let t = Target::default();
        let r = run(
            &*rt,
            "id",
            &c,
            "p",
            Hook::PreStop,
            &t,
            Duration::from_millis(50),
        )
        .await;
        assert!(r.is_err());
        let c = with_hooks(
            None,
            Some(LifecycleHandler {
                sleep: Some(SleepAction { seconds: 1 }),
                ..Default::default()
            }),
        );
        let r = run(
            &*rt,
            "id",
            &c,
            "p",
            Hook::PreStop,
            &t,
            Duration::from_secs(5),
        )
        .await;
        assert!(
            matches!(r, Ok(Some(d)) if d >= Duration::from_secs(1)),
            "{r:?}"
        );
    }
}
