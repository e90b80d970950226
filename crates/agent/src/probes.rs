//! Container probes: startupProbe, livenessProbe and readinessProbe.
//!
//! Each running container with probes gets one tokio task per probe kind (see
//! [`PodProbes`]). A task runs its handler ([`crate::handlers`]) every
//! `periodSeconds` after `initialDelaySeconds`, applies `successThreshold` and
//! `failureThreshold`, records `Unhealthy` events, and publishes the outcome in a
//! shared [`ProbeState`]. Whenever that state changes it wakes the pod's worker,
//! which reads it during the next sync:
//!
//! - `started` gates liveness and readiness (and is the container status'
//!   `started`);
//! - `ready` is the container status' `ready` (Ready/ContainersReady conditions);
//! - `kill` asks the sync to kill the container (failed liveness or startup
//!   probe), which then restarts per restartPolicy.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, ObjectReference, Probe};
use navarch_runtime::ContainerRuntime;
use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::events::{EventType, Recorder};
use crate::handlers::{Action, Target};

/// Which probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// startupProbe: gates the other two; failure kills the container.
    Startup,
    /// livenessProbe: failure kills the container.
    Liveness,
    /// readinessProbe: drives `ready`.
    Readiness,
}

impl Kind {
    /// "Startup", "Liveness", "Readiness" (event messages).
    pub fn title(self) -> &'static str {
        match self {
            Kind::Startup => "Startup",
            Kind::Liveness => "Liveness",
            Kind::Readiness => "Readiness",
        }
    }

    /// "startup", "liveness", "readiness".
    pub fn lower(self) -> &'static str {
        match self {
            Kind::Startup => "startup",
            Kind::Liveness => "liveness",
            Kind::Readiness => "readiness",
        }
    }
}

/// A request to kill a container because a probe failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KillRequest {
    /// The probe that failed (liveness or startup).
    pub kind: Kind,
    /// The probe's own terminationGracePeriodSeconds, if set.
    pub grace_seconds: Option<i64>,
}

/// What the probes of one container currently say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeState {
    /// The startup probe succeeded (true when there is none).
    pub started: bool,
    /// The readiness probe passes (true when there is none).
    pub ready: bool,
    /// Kill the container (liveness or startup probe failed).
    pub kill: Option<KillRequest>,
}

/// Timing and thresholds of a probe, with upstream's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timing {
    /// initialDelaySeconds (0).
    pub initial_delay: Duration,
    /// periodSeconds (10, at least 1).
    pub period: Duration,
    /// timeoutSeconds (1, at least 1).
    pub timeout: Duration,
    /// successThreshold (1; always 1 for liveness and startup).
    pub success_threshold: u32,
    /// failureThreshold (3).
    pub failure_threshold: u32,
    /// Probe-level terminationGracePeriodSeconds.
    pub grace_seconds: Option<i64>,
}

impl Timing {
    /// Timing of `p` for probe kind `kind`.
    pub fn of(p: &Probe, kind: Kind) -> Timing {
        let secs =
            |v: Option<i32>, d: i32, min: i32| Duration::from_secs(v.unwrap_or(d).max(min) as u64);
        Timing {
            initial_delay: secs(p.initial_delay_seconds, 0, 0),
            period: secs(p.period_seconds, 10, 1),
            timeout: secs(p.timeout_seconds, 1, 1),
            success_threshold: if kind == Kind::Readiness {
                p.success_threshold.unwrap_or(1).max(1) as u32
            } else {
                1
            },
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
            grace_seconds: p.termination_grace_period_seconds,
        }
    }
}

/// Consecutive-result counter of one probe: turns single results into
/// threshold crossings.
#[derive(Clone, Debug, Default)]
pub struct Counter {
    successes: u32,
    failures: u32,
}

/// A threshold crossing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Not enough consecutive results yet.
    Undecided,
    /// successThreshold consecutive successes.
    Success,
    /// failureThreshold consecutive failures.
    Failure,
}

impl Counter {
    /// Count one result.
    pub fn observe(&mut self, ok: bool, t: &Timing) -> Verdict {
        if ok {
            self.failures = 0;
            self.successes = self.successes.saturating_add(1);
            if self.successes >= t.success_threshold {
                return Verdict::Success;
            }
        } else {
            self.successes = 0;
            self.failures = self.failures.saturating_add(1);
            if self.failures >= t.failure_threshold {
                return Verdict::Failure;
            }
        }
        Verdict::Undecided
    }
}

/// Where probe tasks send their events.
#[derive(Clone)]
pub struct EventSink {
    /// The recorder.
    pub recorder: Recorder,
    /// The container's reference (pod with the container's fieldPath).
    pub object: ObjectReference,
}

/// Probe tasks of one container. Dropping it stops them.
struct ContainerProbes {
    state: Arc<Mutex<ProbeState>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for ContainerProbes {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The probes of one pod, kept in the pod worker's state.
#[derive(Default)]
pub struct PodProbes {
    waker: Option<Arc<Notify>>,
    /// Divides all probe timings (tests run probe seconds as milliseconds).
    #[cfg(test)]
    time_divisor: u32,
    containers: HashMap<String, ContainerProbes>,
}

/// Does the container have any probe?
pub fn has_probes(c: &Container) -> bool {
    c.startup_probe.is_some() || c.liveness_probe.is_some() || c.readiness_probe.is_some()
}

impl PodProbes {
    /// Wake this notify whenever a probe state changes (the pod worker's poke).
    pub fn set_waker(&mut self, waker: Arc<Notify>) {
        self.waker = Some(waker);
    }

    /// Make sure the probes of running container `id` (spec `c`) are running.
    /// `started_ago` is how long ago the container started (for
    /// initialDelaySeconds after an agent restart).
    pub fn ensure(
        &mut self,
        id: &str,
        c: &Container,
        runtime: Arc<dyn ContainerRuntime>,
        target: Target,
        events: EventSink,
        started_ago: Duration,
    ) {
        if self.containers.contains_key(id) || !has_probes(c) {
            return;
        }
        let state = Arc::new(Mutex::new(ProbeState {
            started: c.startup_probe.is_none(),
            ready: c.readiness_probe.is_none(),
            kill: None,
        }));
        let started_notify = Arc::new(Notify::new());
        let mut tasks = Vec::new();
        for (kind, p) in [
            (Kind::Startup, &c.startup_probe),
            (Kind::Liveness, &c.liveness_probe),
            (Kind::Readiness, &c.readiness_probe),
        ] {
            let Some(p) = p else { continue };
            let action = match Action::from_probe(p) {
                Some(a) => a,
                None => continue,
            };
            #[allow(unused_mut)]
            let mut timing = Timing::of(p, kind);
            #[cfg(test)]
            if self.time_divisor > 1 {
                timing.initial_delay /= self.time_divisor;
                timing.period /= self.time_divisor;
            }
            let worker = ProbeWorker {
                kind,
                action,
                timing,
                id: id.to_string(),
                runtime: runtime.clone(),
                target: target.clone(),
                events: events.clone(),
                state: state.clone(),
                waker: self.waker.clone(),
                started: started_notify.clone(),
                started_ago,
            };
            tasks.push(tokio::spawn(worker.run()));
        }
        self.containers
            .insert(id.to_string(), ContainerProbes { state, tasks });
    }

    /// Stop the probes of every container not in `live`.
    pub fn retain(&mut self, live: &HashSet<String>) {
        self.containers.retain(|id, _| live.contains(id));
    }

    /// Stop the probes of container `id`.
    pub fn remove(&mut self, id: &str) {
        self.containers.remove(id);
    }

    /// What the probes of container `id` say (`None`: no probes).
    pub fn state(&self, id: &str) -> Option<ProbeState> {
        self.containers.get(id).map(|c| c.state.lock().clone())
    }

    /// Number of containers with running probe tasks.
    pub fn len(&self) -> usize {
        self.containers.len()
    }

    /// No probes running.
    pub fn is_empty(&self) -> bool {
        self.containers.is_empty()
    }
}

struct ProbeWorker {
    kind: Kind,
    action: Action,
    timing: Timing,
    id: String,
    runtime: Arc<dyn ContainerRuntime>,
    target: Target,
    events: EventSink,
    state: Arc<Mutex<ProbeState>>,
    waker: Option<Arc<Notify>>,
    started: Arc<Notify>,
    started_ago: Duration,
}

impl ProbeWorker {
    fn wake(&self) {
        if let Some(w) = &self.waker {
            w.notify_one();
        }
    }

    async fn run(self) {
        let t = self.timing.clone();
        let delay = t.initial_delay.saturating_sub(self.started_ago);
        tokio::time::sleep(delay).await;
        let mut tick = tokio::time::interval(t.period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut counter = Counter::default();
        loop {
            if self.kind != Kind::Startup {
                let notified = self.started.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if !self.state.lock().started {
                    // gated by the startup probe
                    notified.await;
                    tick.reset_immediately();
                    continue;
                }
            }
            tick.tick().await;
            let result = self
                .action
                .run(&*self.runtime, &self.id, &self.target, t.timeout)
                .await;
            if let Err(msg) = &result {
                self.events.recorder.record(
                    self.events.object.clone(),
                    EventType::Warning,
                    "Unhealthy",
                    format!("{} probe failed: {msg}", self.kind.title()),
                );
            }
            let verdict = counter.observe(result.is_ok(), &t);
            match (self.kind, verdict) {
                (_, Verdict::Undecided) => {}
                (Kind::Startup, Verdict::Success) => {
                    self.state.lock().started = true;
                    self.started.notify_waiters();
                    self.wake();
                    return;
                }
                (Kind::Startup | Kind::Liveness, Verdict::Failure) => {
                    self.state.lock().kill = Some(KillRequest {
                        kind: self.kind,
                        grace_seconds: t.grace_seconds,
                    });
                    self.wake();
                    return;
                }
                (Kind::Liveness, Verdict::Success) => {}
                (Kind::Readiness, v) => {
                    let ready = v == Verdict::Success;
                    let changed = {
                        let mut s = self.state.lock();
                        std::mem::replace(&mut s.ready, ready) != ready
                    };
                    if changed {
                        self.wake();
                    }
                }
            }
        }
    }
}

/// Where probes of a pod connect: the host used when a handler names none, and
/// the network namespace to connect from (a pod with its own namespace but no
/// routable IP is probed from inside it).
pub fn probe_target(
    c: &Container,
    pod_ip: &str,
    netns: Option<PathBuf>,
    use_netns: bool,
) -> Target {
    Target {
        default_host: if use_netns && netns.is_some() {
            "127.0.0.1".to_string()
        } else {
            pod_ip.to_string()
        },
        netns: netns.filter(|_| use_netns),
        ports: c.ports.clone().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testrt::FakeRuntime;
    use k8s_openapi::api::core::v1::ExecAction;

    #[test]
    fn timing_defaults_and_thresholds() {
        let p = Probe::default();
        let t = Timing::of(&p, Kind::Liveness);
        assert_eq!(t.period, Duration::from_secs(10));
        assert_eq!(t.timeout, Duration::from_secs(1));
        assert_eq!(t.failure_threshold, 3);
        assert_eq!(t.success_threshold, 1);
        let p = Probe {
            success_threshold: Some(3),
            period_seconds: Some(0),
            ..Default::default()
        };
        assert_eq!(Timing::of(&p, Kind::Liveness).success_threshold, 1);
        assert_eq!(Timing::of(&p, Kind::Readiness).success_threshold, 3);
        assert_eq!(
            Timing::of(&p, Kind::Readiness).period,
            Duration::from_secs(1)
        );
    }

    #[test]
    fn counter_needs_consecutive_results() {
        let t = Timing {
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: 2,
            failure_threshold: 3,
            grace_seconds: None,
        };
        let mut c = Counter::default();
        assert_eq!(c.observe(false, &t), Verdict::Undecided);
        assert_eq!(c.observe(false, &t), Verdict::Undecided);
        assert_eq!(c.observe(true, &t), Verdict::Undecided);
        assert_eq!(c.observe(false, &t), Verdict::Undecided);
        assert_eq!(c.observe(false, &t), Verdict::Undecided);
        assert_eq!(c.observe(false, &t), Verdict::Failure);
        assert_eq!(c.observe(true, &t), Verdict::Undecided);
        assert_eq!(c.observe(true, &t), Verdict::Success);
    }

    fn exec_probe(period: i32, failure: i32) -> Probe {
        Probe {
            exec: Some(ExecAction {
                command: Some(vec!["true".into()]),
            }),
            period_seconds: Some(period),
            failure_threshold: Some(failure),
            ..Default::default()
        }
    }

    fn sink() -> (
        EventSink,
        tokio::sync::mpsc::UnboundedReceiver<crate::events::EventRecord>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        (
            EventSink {
                recorder: Recorder::from_sender(tx),
                object: ObjectReference::default(),
            },
            rx,
        )
    }

    #[tokio::test]
    async fn startup_gates_and_liveness_kills() {
        let rt = FakeRuntime::new(false);
        let ok = rt.ok.clone();
        let c = Container {
            name: "web".into(),
            startup_probe: Some(exec_probe(1, 30)),
            liveness_probe: Some(exec_probe(1, 2)),
            readiness_probe: Some(exec_probe(1, 1)),
            ..Default::default()
        };
        let waker = Arc::new(Notify::new());
        let mut pp = PodProbes {
            time_divisor: 100,
            ..Default::default()
        };
        pp.set_waker(waker.clone());
        let (events, mut rx) = sink();
        let target = probe_target(&c, "10.0.0.1", None, false);
        pp.ensure("c1", &c, rt.clone(), target, events, Duration::ZERO);
        tokio::time::sleep(Duration::from_millis(55)).await;
        let s = pp.state("c1").unwrap();
        assert!(!s.started && !s.ready && s.kill.is_none(), "{s:?}");
        // only the startup probe ran while not started
        let ev = rx.try_recv().unwrap();
        assert_eq!(ev.reason, "Unhealthy");
        assert_eq!(ev.message, "Startup probe failed: boom");
        *ok.lock() = true;
        tokio::time::sleep(Duration::from_millis(25)).await;
        let s = pp.state("c1").unwrap();
        assert!(s.started && s.ready && s.kill.is_none(), "{s:?}");
        *ok.lock() = false;
        tokio::time::sleep(Duration::from_millis(35)).await;
        let s = pp.state("c1").unwrap();
        assert!(!s.ready);
        assert_eq!(
            s.kill,
            Some(KillRequest {
                kind: Kind::Liveness,
                grace_seconds: None
            })
        );
        let mut msgs = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            msgs.push(ev.message);
        }
        assert!(msgs.iter().any(|m| m == "Liveness probe failed: boom"));
        assert!(msgs.iter().any(|m| m == "Readiness probe failed: boom"));
        pp.retain(&HashSet::new());
        assert!(pp.is_empty());
    }

    #[tokio::test]
    async fn no_probes_means_nothing_tracked() {
        let rt = FakeRuntime::new(true);
        let mut pp = PodProbes::default();
        let c = Container::default();
        let (events, _rx) = sink();
        pp.ensure(
            "c1",
            &c,
            rt,
            probe_target(&c, "1.2.3.4", None, false),
            events,
            Duration::ZERO,
        );
        assert!(pp.state("c1").is_none());
    }
}
