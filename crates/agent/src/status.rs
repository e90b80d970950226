//! Pod status from what the runtime reports: phase, conditions and container
//! statuses, following upstream's rules (`getPhase`, `generateAPIPodStatus`) so
//! that `kubectl get pods` prints the same STATUS strings.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState as KState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus as KStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use navarch_runtime::{ContainerState, ContainerStatus};

/// What the agent knows about one container of the pod.
#[derive(Clone, Debug, Default)]
pub struct ContainerView {
    /// Newest runtime container (highest attempt), if any.
    pub latest: Option<ContainerStatus>,
    /// The one before it (for `lastState`).
    pub previous: Option<ContainerStatus>,
    /// A waiting reason and message to report instead of the runtime state
    /// (CrashLoopBackOff, ErrImagePull, CreateContainerConfigError, ...).
    pub waiting: Option<(String, String)>,
    /// The start of `latest` failed with this message (reported as
    /// Terminated/StartError, exit code 128).
    pub start_error: Option<String>,
    /// The startup probe's verdict for `latest` (`None`: no probes, counts as
    /// started once running).
    pub started: Option<bool>,
    /// The readiness probe's verdict for `latest` (`None`: no probes, ready
    /// once running and started).
    pub ready: Option<bool>,
}

/// Runtime state of a view after start failures are folded in.
pub fn effective_state(v: &ContainerView) -> Option<ContainerState> {
    let latest = v.latest.as_ref()?;
    match (&latest.state, &v.start_error) {
        (ContainerState::Created, Some(_)) => Some(ContainerState::Exited {
            exit_code: 128,
            reason: "StartError".to_string(),
            finished_at: latest.created_at,
        }),
        (s, _) => Some(s.clone()),
    }
}

/// Inputs of [`pod_status`].
#[derive(Clone, Debug, Default)]
pub struct StatusInput {
    /// Views of init containers, by name.
    pub init: BTreeMap<String, ContainerView>,
    /// Views of app containers, by name.
    pub containers: BTreeMap<String, ContainerView>,
    /// The sandbox exists.
    pub sandbox_ready: bool,
    /// Host IPs.
    pub host_ips: Vec<String>,
    /// Pod IPs (hostIP until a network plugin assigns one).
    pub pod_ips: Vec<String>,
    /// When the agent first acknowledged the pod.
    pub start_time: Option<Time>,
    /// The pod failed for good (e.g. an init container failed with restartPolicy
    /// Never): (reason, message).
    pub failed: Option<(String, String)>,
}

fn terminated(
    s: &ContainerStatus,
    st: &ContainerState,
    message: Option<String>,
) -> Option<ContainerStateTerminated> {
    match st {
        ContainerState::Exited {
            exit_code,
            reason,
            finished_at,
        } => Some(ContainerStateTerminated {
            exit_code: *exit_code,
            reason: Some(if reason.is_empty() {
                if *exit_code == 0 {
                    "Completed"
                } else {
                    "Error"
                }
                .to_string()
            } else {
                reason.clone()
            }),
            message,
            started_at: s.started_at.map(|t| Time(crate::ts(t))),
            finished_at: Some(Time(crate::ts(*finished_at))),
            container_id: Some(container_id(&s.id)),
            signal: None,
        }),
        _ => None,
    }
}

/// `navarch://<id>`.
pub fn container_id(id: &str) -> String {
    format!("navarch://{id}")
}

fn kube_status(spec: &Container, v: &ContainerView, default_waiting: &str, init: bool) -> KStatus {
    let eff = effective_state(v);
    let latest = v.latest.as_ref();
    let mut state = KState::default();
    let mut last_state = KState::default();
    let mut ready = false;
    let mut started = false;
    let waiting_override = v
        .waiting
        .clone()
        .filter(|_| !matches!(eff, Some(ContainerState::Running)));
    match (&eff, latest) {
        (Some(ContainerState::Running), Some(l)) => {
            state.running = Some(ContainerStateRunning {
                started_at: l.started_at.map(|t| Time(crate::ts(t))),
            });
            started = v.started.unwrap_or(true);
            // a running sidecar is ready like an app container
            let sidecar = init && spec.restart_policy.as_deref() == Some("Always");
            ready = (!init || sidecar) && started && v.ready.unwrap_or(true);
        }
        (Some(st @ ContainerState::Exited { exit_code, .. }), Some(l)) => {
            let t = terminated(l, st, v.start_error.clone());
            if let Some((reason, message)) = &waiting_override {
                state.waiting = Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: Some(message.clone()).filter(|m| !m.is_empty()),
                });
                last_state.terminated = t;
            } else {
                state.terminated = t;
                ready = init && *exit_code == 0;
            }
        }
        _ => {
            let (reason, message) = waiting_override
                .clone()
                .unwrap_or_else(|| (default_waiting.to_string(), String::new()));
            state.waiting = Some(ContainerStateWaiting {
                reason: Some(reason),
                message: Some(message).filter(|m| !m.is_empty()),
            });
        }
    }
    if last_state.terminated.is_none() {
        if let Some(p) = &v.previous {
            last_state.terminated = terminated(p, &p.state, None);
        }
    }
    let image_id = latest
        .map(|l| l.image_id.clone())
        .or_else(|| v.previous.as_ref().map(|p| p.image_id.clone()))
        .unwrap_or_default();
    KStatus {
        name: spec.name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        image_id,
        container_id: latest.map(|l| container_id(&l.id)),
        state: Some(state),
        last_state: Some(last_state),
        ready,
        restart_count: latest.map(|l| l.attempt as i32).unwrap_or(0),
        started: Some(started),
        ..Default::default()
    }
}

fn condition(type_: &str, ok: bool, reason: Option<&str>, message: Option<String>) -> PodCondition {
    PodCondition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.filter(|_| !ok).map(str::to_string),
        message: message.filter(|_| !ok),
        ..Default::default()
    }
}

/// The pod's QoS class from its containers' requests and limits.
pub fn qos_class(pod: &Pod) -> String {
    let Some(spec) = pod.spec.as_ref() else {
        return "BestEffort".to_string();
    };
    let all: Vec<&Container> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in &all {
        let r = c.resources.clone().unwrap_or_default();
        let req = r.requests.unwrap_or_default();
        let lim = r.limits.unwrap_or_default();
        let relevant =
            |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
                m.iter()
                    .filter(|(k, _)| k.as_str() == "cpu" || k.as_str() == "memory")
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            navarch_api::validation::parse_quantity(&v.0).unwrap_or(0),
                        )
                    })
                    .filter(|(_, v)| *v != 0)
                    .collect::<BTreeMap<_, _>>()
            };
        let req = relevant(&req);
        let lim = relevant(&lim);
        if !req.is_empty() || !lim.is_empty() {
            any = true;
        }
        if lim.len() != 2 {
            guaranteed = false;
        }
        for (k, v) in &req {
            if lim.get(k) != Some(v) {
                guaranteed = false;
            }
        }
    }
    if !any {
        "BestEffort".to_string()
    } else if guaranteed {
        "Guaranteed".to_string()
    } else {
        "Burstable".to_string()
    }
}

/// The pod's status. `old` (the status currently in the API) keeps condition
/// transition times stable.
pub fn pod_status(pod: &Pod, input: &StatusInput, old: Option<&PodStatus>) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let policy = spec.restart_policy.as_deref().unwrap_or("Always");
    let empty = ContainerView::default();
    // init containers
    let mut init_statuses = Vec::new();
    let mut init_pending: Vec<String> = Vec::new();
    let mut init_failed = false;
    let mut sidecar_unready: Vec<String> = Vec::new();
    for c in spec.init_containers.iter().flatten() {
        let v = input.init.get(&c.name).unwrap_or(&empty);
        let s = kube_status(c, v, "PodInitializing", true);
        let sidecar = c.restart_policy.as_deref() == Some("Always");
        let done = if sidecar {
            // a sidecar counts as initialized once it has started
            v.latest
                .as_ref()
                .is_some_and(|l| l.attempt > 0 || l.started_at.is_some())
                && (v.started != Some(false) || v.previous.is_some())
        } else {
            matches!(
                effective_state(v),
                Some(ContainerState::Exited { exit_code: 0, .. })
            )
        };
        if sidecar && !s.ready {
            sidecar_unready.push(c.name.clone());
        }
        if !done {
            init_pending.push(c.name.clone());
            if matches!(effective_state(v), Some(ContainerState::Exited { .. }))
                && policy == "Never"
            {
                init_failed = true;
            }
        }
        init_statuses.push(s);
    }
    let initialized = init_pending.is_empty();
    let default_waiting = if initialized {
        "ContainerCreating"
    } else {
        "PodInitializing"
    };
    let mut statuses = Vec::new();
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    let mut unready = sidecar_unready;
    for c in &spec.containers {
        let v = input.containers.get(&c.name).unwrap_or(&empty);
        let s = kube_status(c, v, default_waiting, false);
        let st = s.state.clone().unwrap_or_default();
        let has_last = s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if st.waiting.is_some() && has_last {
            stopped += 1;
        } else {
            waiting += 1;
        }
        if !s.ready {
            unready.push(c.name.clone());
        }
        statuses.push(s);
    }
    let phase = if input.failed.is_some() || init_failed {
        "Failed"
    } else if !initialized || waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    };
    let terminal = phase == "Succeeded" || phase == "Failed";
    let list = |v: &[String]| format!("[{}]", v.join(" "));
    let all_ready = unready.is_empty() && !terminal;
    let ready_reason = if terminal {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let ready_message =
        (!terminal).then(|| format!("containers with unready status: {}", list(&unready)));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            input.sandbox_ready && !terminal,
            None,
            None,
        ),
        condition(
            "Initialized",
            initialized || (terminal && init_pending.is_empty()),
            Some(if terminal {
                "PodCompleted"
            } else {
                "ContainersNotInitialized"
            }),
            Some(format!(
                "containers with incomplete status: {}",
                list(&init_pending)
            )),
        ),
        condition(
            "Ready",
            all_ready,
            Some(ready_reason),
            ready_message.clone(),
        ),
        condition(
            "ContainersReady",
            all_ready,
            Some(ready_reason),
            ready_message,
        ),
        condition("PodScheduled", true, None, None),
    ];
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let old_conds = old.and_then(|o| o.conditions.clone()).unwrap_or_default();
    for c in conditions.iter_mut() {
        let prev = old_conds.iter().find(|o| o.type_ == c.type_);
        c.last_transition_time = match prev {
            Some(p) if p.status == c.status => p.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
        c.last_probe_time = None;
    }
    let (reason, message) = match &input.failed {
        Some((r, m)) => (Some(r.clone()), Some(m.clone())),
        None => (None, None),
    };
    PodStatus {
        phase: Some(phase.to_string()),
        conditions: Some(conditions),
        host_ip: input.host_ips.first().cloned(),
        host_ips: Some(
            input
                .host_ips
                .iter()
                .map(|ip| HostIP { ip: ip.clone() })
                .collect(),
        ),
        pod_ip: input.pod_ips.first().cloned(),
        pod_ips: Some(
            input
                .pod_ips
                .iter()
                .map(|ip| PodIP { ip: ip.clone() })
                .collect(),
        ),
        start_time: input.start_time.clone(),
        qos_class: Some(qos_class(pod)),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        container_statuses: Some(statuses),
        reason,
        message,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::PodSpec;
    use std::path::PathBuf;

    fn pod(policy: &str, init: bool) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("bb".into());
        p.spec = Some(PodSpec {
            restart_policy: Some(policy.into()),
            containers: vec![Container {
                name: "app".into(),
                image: Some("busybox".into()),
                ..Default::default()
            }],
            init_containers: init.then(|| {
                vec![Container {
                    name: "init".into(),
                    image: Some("busybox".into()),
                    ..Default::default()
                }]
            }),
            ..Default::default()
        });
        p
    }

    fn rc(state: ContainerState, attempt: u32) -> ContainerStatus {
        ContainerStatus {
            id: format!("c{attempt}"),
            sandbox_id: "s".into(),
            name: "app".into(),
            attempt,
            image: "busybox".into(),
            image_id: "docker.io/library/busybox@sha256:abc".into(),
            state,
            created_at: chrono::Utc::now(),
            started_at: Some(chrono::Utc::now()),
            pid: None,
            log_path: PathBuf::new(),
            labels: Default::default(),
        }
    }

    fn exited(code: i32) -> ContainerState {
        ContainerState::Exited {
            exit_code: code,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            finished_at: chrono::Utc::now(),
        }
    }

    fn input(v: ContainerView) -> StatusInput {
        StatusInput {
            containers: [("app".to_string(), v)].into(),
            sandbox_ready: true,
            host_ips: vec!["10.0.0.1".into()],
            pod_ips: vec!["10.0.0.1".into()],
            ..Default::default()
        }
    }

    #[test]
    fn creating_then_running() {
        let p = pod("Always", false);
        let s = pod_status(&p, &input(ContainerView::default()), None);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        assert_eq!(cs.image_id, "");
        let s = pod_status(
            &p,
            &input(ContainerView {
                latest: Some(rc(ContainerState::Running, 0)),
                ..Default::default()
            }),
            Some(&s),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready);
        assert_eq!(cs.container_id.as_deref(), Some("navarch://c0"));
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "Ready")
            .unwrap();
        assert_eq!(ready.status, "True");
        assert_eq!(s.qos_class.as_deref(), Some("BestEffort"));
    }

    #[test]
    fn crash_loop_reports_waiting_and_last_state() {
        let p = pod("Always", false);
        let v = ContainerView {
            latest: Some(rc(exited(1), 2)),
            waiting: Some((
                "CrashLoopBackOff".into(),
                "back-off 20s restarting failed container=app pod=bb_default(u)".into(),
            )),
            ..Default::default()
        };
        let s = pod_status(&p, &input(v), None);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 2);
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("CrashLoopBackOff")
        );
        assert_eq!(
            cs.last_state
                .as_ref()
                .unwrap()
                .terminated
                .as_ref()
                .unwrap()
                .exit_code,
            1
        );
        let ready = s
            .conditions
            .unwrap()
            .into_iter()
            .find(|c| c.type_ == "ContainersReady")
            .unwrap();
        assert_eq!(
            ready.message.as_deref(),
            Some("containers with unready status: [app]")
        );
    }

    #[test]
    fn terminal_phases() {
        let p = pod("Never", false);
        let s = pod_status(
            &p,
            &input(ContainerView {
                latest: Some(rc(exited(0), 0)),
                ..Default::default()
            }),
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let s = pod_status(
            &p,
            &input(ContainerView {
                latest: Some(rc(exited(2), 0)),
                ..Default::default()
            }),
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let p = pod("OnFailure", false);
        let s = pod_status(
            &p,
            &input(ContainerView {
                latest: Some(rc(exited(0), 0)),
                ..Default::default()
            }),
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        let p = pod("Always", false);
        let s = pod_status(
            &p,
            &input(ContainerView {
                latest: Some(rc(exited(0), 0)),
                ..Default::default()
            }),
            None,
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
    }

    #[test]
    fn init_containers() {
        let p = pod("Always", true);
        let mut inp = input(ContainerView::default());
        inp.init.insert(
            "init".into(),
            ContainerView {
                latest: Some(rc(ContainerState::Running, 0)),
                ..Default::default()
            },
        );
        let s = pod_status(&p, &inp, None);
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("PodInitializing")
        );
        let init = s
            .conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == "Initialized")
            .unwrap();
        assert_eq!(
            init.message.as_deref(),
            Some("containers with incomplete status: [init]")
        );
        inp.init.insert(
            "init".into(),
            ContainerView {
                latest: Some(rc(exited(0), 0)),
                ..Default::default()
            },
        );
        let s = pod_status(&p, &inp, None);
        assert!(s.init_container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(
            s.container_statuses.as_ref().unwrap()[0]
                .state
                .as_ref()
                .unwrap()
                .waiting
                .as_ref()
                .unwrap()
                .reason
                .as_deref(),
            Some("ContainerCreating")
        );
        // an init failure with Never fails the pod
        let p = pod("Never", true);
        inp.init.insert(
            "init".into(),
            ContainerView {
                latest: Some(rc(exited(1), 0)),
                ..Default::default()
            },
        );
        let s = pod_status(&p, &inp, None);
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    #[test]
    fn start_error_is_terminated_128() {
        let p = pod("Never", false);
        let v = ContainerView {
            latest: Some(rc(ContainerState::Created, 0)),
            start_error: Some("exec: not found".into()),
            ..Default::default()
        };
        let s = pod_status(&p, &input(v), None);
        let t = s.container_statuses.unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(t.exit_code, 128);
        assert_eq!(t.reason.as_deref(), Some("StartError"));
        assert_eq!(s.phase.as_deref(), Some("Failed"));
    }

    fn cond(s: &PodStatus, t: &str) -> String {
        s.conditions
            .iter()
            .flatten()
            .find(|c| c.type_ == t)
            .map(|c| c.status.clone())
            .unwrap_or_default()
    }

    #[test]
    fn probe_verdicts_drive_ready_and_started() {
        let p = pod("Always", false);
        let running = |started, ready| ContainerView {
            latest: Some(rc(ContainerState::Running, 0)),
            started,
            ready,
            ..Default::default()
        };
        // startup probe pending: not started, not ready
        let s = pod_status(&p, &input(running(Some(false), Some(true))), None);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!((cs.started, cs.ready), (Some(false), false));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
        // readiness failing
        let s = pod_status(&p, &input(running(Some(true), Some(false))), None);
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!((cs.started, cs.ready), (Some(true), false));
        assert_eq!(cond(&s, "ContainersReady"), "False");
        // passing
        let s = pod_status(&p, &input(running(Some(true), Some(true))), None);
        assert!(s.container_statuses.as_ref().unwrap()[0].ready);
        assert_eq!(cond(&s, "Ready"), "True");
    }

    #[test]
    fn sidecar_counts_as_initialized_once_started() {
        let mut p = pod("Never", true);
        if let Some(spec) = p.spec.as_mut() {
            if let Some(inits) = spec.init_containers.as_mut() {
                inits[0].restart_policy = Some("Always".into());
            }
        }
        let mut i = input(ContainerView {
            latest: Some(rc(ContainerState::Running, 0)),
            ..Default::default()
        });
        i.init.insert(
            "init".into(),
            ContainerView {
                latest: Some(rc(ContainerState::Running, 0)),
                ready: Some(false),
                ..Default::default()
            },
        );
        let s = pod_status(&p, &i, None);
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Initialized"), "True");
        // the sidecar's readiness counts for the pod
        assert_eq!(cond(&s, "Ready"), "False");
        if let Some(v) = i.init.get_mut("init") {
            v.ready = Some(true);
        }
        let s = pod_status(&p, &i, None);
        assert_eq!(cond(&s, "Ready"), "True");
        assert!(s.init_container_statuses.as_ref().unwrap()[0].ready);
        // main container done under Never: the pod succeeds while the sidecar runs
        i.containers.insert(
            "app".into(),
            ContainerView {
                latest: Some(rc(exited(0), 0)),
                ..Default::default()
            },
        );
        let s = pod_status(&p, &i, None);
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
    }
}
