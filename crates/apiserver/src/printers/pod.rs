//! Pods: READY, STATUS (upstream's reason logic), RESTARTS and the wide
//! columns.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::json::{arr_at, at, bool_at, int_at, name, opt_str, since, str_at, timestamp};
use super::{col, wide, Column, AGE, NAME};

/// Pod columns, as upstream.
pub(crate) const COLUMNS: &[Column] = &[
    NAME,
    col("Ready", "string", "The aggregate readiness state of this pod for accepting traffic."),
    col("Status", "string", "The aggregate status of the containers in this pod."),
    col(
        "Restarts",
        "string",
        "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
    ),
    AGE,
    wide("IP", "string", "podIP address allocated to the pod. Routable at least within the cluster. Empty if not yet allocated."),
    wide("Node", "string", "NodeName indicates in which node this pod is scheduled."),
    wide("Nominated Node", "string", "nominatedNodeName is set only when this pod preempts other pods on the node, but it cannot be scheduled right away as preemption victims receive their graceful termination periods."),
    wide("Readiness Gates", "string", "If specified, all readiness gates will be evaluated for pod readiness."),
];

/// The status cell and counters of a pod, computed as upstream's `printPod`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct PodSummary {
    /// Ready containers (regular plus started restartable init containers).
    pub ready: usize,
    /// Regular containers plus restartable (sidecar) init containers.
    pub total: usize,
    /// The STATUS cell.
    pub reason: String,
    /// Restart count shown in RESTARTS.
    pub restarts: i64,
    /// When the last counted container last terminated.
    pub last_restart: Option<DateTime<Utc>>,
}

fn condition_true(conditions: &[Value], type_: &str) -> bool {
    conditions
        .iter()
        .find(|c| str_at(c, "/type") == type_)
        .is_some_and(|c| str_at(c, "/status") == "True")
}

fn has_pod_ready_condition(conditions: &[Value]) -> bool {
    conditions
        .iter()
        .any(|c| str_at(c, "/type") == "Ready" && str_at(c, "/status") == "True")
}

fn later(a: Option<DateTime<Utc>>, b: Option<DateTime<Utc>>) -> Option<DateTime<Utc>> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

/// The reason of a terminated state with no reason: `Signal:N` or `ExitCode:N`.
fn exit_reason(term: &Value) -> String {
    let signal = int_at(term, "/signal");
    if signal != 0 {
        format!("Signal:{signal}")
    } else {
        format!("ExitCode:{}", int_at(term, "/exitCode"))
    }
}

/// Compute READY, STATUS and RESTARTS of a pod as upstream does.
pub(crate) fn summarize(pod: &Value) -> PodSummary {
    let phase = str_at(pod, "/status/phase");
    let status_reason = str_at(pod, "/status/reason");
    let mut reason = if status_reason.is_empty() {
        phase.to_string()
    } else {
        status_reason.to_string()
    };

    let conditions = arr_at(pod, "/status/conditions");
    if conditions
        .iter()
        .any(|c| str_at(c, "/type") == "PodScheduled" && str_at(c, "/reason") == "SchedulingGated")
    {
        reason = "SchedulingGated".to_string();
    }

    let init_specs = arr_at(pod, "/spec/initContainers");
    let restartable: HashSet<&str> = init_specs
        .iter()
        .filter(|c| str_at(c, "/restartPolicy") == "Always")
        .map(|c| str_at(c, "/name"))
        .collect();
    let total = arr_at(pod, "/spec/containers").len()
        + init_specs
            .iter()
            .filter(|c| str_at(c, "/restartPolicy") == "Always")
            .count();
    let mut ready = 0usize;
    let mut restarts = 0i64;
    let mut restartable_restarts = 0i64;
    let mut last_restart: Option<DateTime<Utc>> = None;
    let mut last_restartable_restart: Option<DateTime<Utc>> = None;

    let mut initializing = false;
    for (i, cs) in arr_at(pod, "/status/initContainerStatuses")
        .iter()
        .enumerate()
    {
        let count = int_at(cs, "/restartCount");
        let finished = timestamp(cs, "/lastState/terminated/finishedAt");
        restarts += count;
        last_restart = later(last_restart, finished);
        let is_restartable = restartable.contains(str_at(cs, "/name"));
        if is_restartable {
            restartable_restarts += count;
            last_restartable_restart = later(last_restartable_restart, finished);
        }
        let terminated = at(cs, "/state/terminated");
        match terminated {
            Some(t) if int_at(t, "/exitCode") == 0 => continue,
            _ if is_restartable && bool_at(cs, "/started") => {
                if bool_at(cs, "/ready") {
                    ready += 1;
                }
                continue;
            }
            Some(t) => {
                let r = str_at(t, "/reason");
                reason = if r.is_empty() {
                    format!("Init:{}", exit_reason(t))
                } else {
                    format!("Init:{r}")
                };
            }
            None => {
                let waiting = str_at(cs, "/state/waiting/reason");
                reason = if !waiting.is_empty() && waiting != "PodInitializing" {
                    format!("Init:{waiting}")
                } else {
                    format!("Init:{i}/{}", init_specs.len())
                };
            }
        }
        initializing = true;
        break;
    }

    if !initializing || condition_true(conditions, "Initialized") {
        restarts = restartable_restarts;
        last_restart = last_restartable_restart;
        let mut has_running = false;
        for cs in arr_at(pod, "/status/containerStatuses").iter().rev() {
            restarts += int_at(cs, "/restartCount");
            last_restart = later(
                last_restart,
                timestamp(cs, "/lastState/terminated/finishedAt"),
            );
            let waiting = str_at(cs, "/state/waiting/reason");
            let terminated = at(cs, "/state/terminated");
            if !waiting.is_empty() {
                reason = waiting.to_string();
            } else if let Some(t) = terminated {
                let r = str_at(t, "/reason");
                reason = if r.is_empty() {
                    exit_reason(t)
                } else {
                    r.to_string()
                };
            } else if bool_at(cs, "/ready") && at(cs, "/state/running").is_some() {
                has_running = true;
                ready += 1;
            }
        }
        if reason == "Completed" && has_running {
            reason = if has_pod_ready_condition(conditions) {
                "Running"
            } else {
                "NotReady"
            }
            .to_string();
        }
    }

    if at(pod, "/metadata/deletionTimestamp").is_some() {
        if status_reason == "NodeLost" {
            reason = "Unknown".to_string();
        } else if phase != "Succeeded" && phase != "Failed" {
            reason = "Terminating".to_string();
        }
    }

    PodSummary {
        ready,
        total,
        reason,
        restarts,
        last_restart,
    }
}

/// The cells of a pod row.
pub(crate) fn cells(pod: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let s = summarize(pod);
    let restarts = match s.last_restart {
        Some(t) if s.restarts != 0 => format!("{} ({} ago)", s.restarts, since(Some(t), now)),
        _ => s.restarts.to_string(),
    };

    let pod_ip = arr_at(pod, "/status/podIPs")
        .first()
        .map(|p| str_at(p, "/ip"))
        .filter(|ip| !ip.is_empty())
        .or_else(|| opt_str(pod, "/status/podIP"))
        .unwrap_or("");
    let gates = arr_at(pod, "/spec/readinessGates");
    let readiness_gates = if gates.is_empty() {
        "<none>".to_string()
    } else {
        let conditions = arr_at(pod, "/status/conditions");
        let true_count = gates
            .iter()
            .filter(|g| condition_true(conditions, str_at(g, "/conditionType")))
            .count();
        format!("{true_count}/{}", gates.len())
    };

    vec![
        name(pod),
        Value::from(format!("{}/{}", s.ready, s.total)),
        Value::from(s.reason),
        Value::from(restarts),
        super::json::age(pod, now),
        Value::from(super::json::or_none(pod_ip)),
        Value::from(super::json::or_none(str_at(pod, "/spec/nodeName"))),
        Value::from(super::json::or_none(str_at(
            pod,
            "/status/nominatedNodeName",
        ))),
        Value::from(readiness_gates),
    ]
}

/// Upstream's row conditions: `Completed` for succeeded and failed pods.
pub(crate) fn row_conditions(pod: &Value) -> Option<Value> {
    let (reason, message) = match str_at(pod, "/status/phase") {
        "Succeeded" => ("Succeeded", "The pod has completed successfully."),
        "Failed" => ("Failed", "The pod failed."),
        _ => return None,
    };
    Some(json!([{"type": "Completed", "status": "True", "reason": reason, "message": message}]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    /// A pod created 10 minutes before `now()` with the given spec and status.
    fn pod(spec: Value, status: Value) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "web-1", "namespace": "default", "creationTimestamp": "2024-05-01T11:50:00Z"},
            "spec": spec,
            "status": status
        })
    }

    fn one_container() -> Value {
        json!({"containers": [{"name": "app", "image": "nginx"}]})
    }

    fn running(name: &str, ready: bool, restarts: i64) -> Value {
        json!({"name": name, "ready": ready, "restartCount": restarts, "image": "nginx", "imageID": "",
               "state": {"running": {"startedAt": "2024-05-01T11:51:00Z"}}})
    }

    fn waiting(name: &str, reason: &str, restarts: i64) -> Value {
        json!({"name": name, "ready": false, "restartCount": restarts, "image": "nginx", "imageID": "",
               "state": {"waiting": {"reason": reason}}})
    }

    fn terminated(name: &str, reason: Option<&str>, exit: i64, signal: i64) -> Value {
        let mut t = json!({"exitCode": exit, "finishedAt": "2024-05-01T11:55:00Z"});
        if let Some(r) = reason {
            t["reason"] = json!(r);
        }
        if signal != 0 {
            t["signal"] = json!(signal);
        }
        json!({"name": name, "ready": false, "restartCount": 0, "image": "nginx", "imageID": "",
               "state": {"terminated": t}})
    }

    fn cells3(p: &Value) -> (String, String, String) {
        let c = cells(p, now());
        (
            c[1].as_str().unwrap().to_string(),
            c[2].as_str().unwrap().to_string(),
            c[3].as_str().unwrap().to_string(),
        )
    }

    #[test]
    fn status_cases_match_upstream() {
        let cases: Vec<(&str, Value, (&str, &str, &str))> = vec![
            (
                "pending, no statuses",
                pod(one_container(), json!({"phase": "Pending"})),
                ("0/1", "Pending", "0"),
            ),
            (
                "container creating",
                pod(
                    one_container(),
                    json!({"phase": "Pending", "containerStatuses": [waiting("app", "ContainerCreating", 0)]}),
                ),
                ("0/1", "ContainerCreating", "0"),
            ),
            (
                "running and ready",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [running("app", true, 0)],
                    "conditions": [{"type": "Ready", "status": "True"}]}),
                ),
                ("1/1", "Running", "0"),
            ),
            (
                "running, not ready",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [running("app", false, 0)]}),
                ),
                ("0/1", "Running", "0"),
            ),
            (
                "crash loop with last termination",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [{
                        "name": "app", "ready": false, "restartCount": 3, "image": "nginx", "imageID": "",
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off"}},
                        "lastState": {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": "2024-05-01T11:55:00Z"}}
                    }]}),
                ),
                ("0/1", "CrashLoopBackOff", "3 (5m ago)"),
            ),
            (
                "restarts without termination time",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [running("app", true, 2)]}),
                ),
                ("1/1", "Running", "2"),
            ),
            (
                "image pull error",
                pod(
                    one_container(),
                    json!({"phase": "Pending", "containerStatuses": [waiting("app", "ErrImagePull", 0)]}),
                ),
                ("0/1", "ErrImagePull", "0"),
            ),
            (
                "image pull back-off",
                pod(
                    one_container(),
                    json!({"phase": "Pending", "containerStatuses": [waiting("app", "ImagePullBackOff", 0)]}),
                ),
                ("0/1", "ImagePullBackOff", "0"),
            ),
            (
                "completed",
                pod(
                    one_container(),
                    json!({"phase": "Succeeded", "containerStatuses": [terminated("app", Some("Completed"), 0, 0)]}),
                ),
                ("0/1", "Completed", "0"),
            ),
            (
                "error",
                pod(
                    one_container(),
                    json!({"phase": "Failed", "containerStatuses": [terminated("app", Some("Error"), 1, 0)]}),
                ),
                ("0/1", "Error", "0"),
            ),
            (
                "oom killed",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [terminated("app", Some("OOMKilled"), 137, 0)]}),
                ),
                ("0/1", "OOMKilled", "0"),
            ),
            (
                "killed by signal, no reason",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [terminated("app", None, 0, 9)]}),
                ),
                ("0/1", "Signal:9", "0"),
            ),
            (
                "exit code, no reason",
                pod(
                    one_container(),
                    json!({"phase": "Running", "containerStatuses": [terminated("app", None, 3, 0)]}),
                ),
                ("0/1", "ExitCode:3", "0"),
            ),
            (
                "status.reason wins over phase",
                pod(
                    one_container(),
                    json!({"phase": "Failed", "reason": "Evicted"}),
                ),
                ("0/1", "Evicted", "0"),
            ),
            (
                "scheduling gated",
                pod(
                    one_container(),
                    json!({"phase": "Pending",
                    "conditions": [{"type": "PodScheduled", "status": "False", "reason": "SchedulingGated"}]}),
                ),
                ("0/1", "SchedulingGated", "0"),
            ),
        ];
        for (what, p, (ready, status, restarts)) in cases {
            let (r, s, rs) = cells3(&p);
            assert_eq!(
                (r.as_str(), s.as_str(), rs.as_str()),
                (ready, status, restarts),
                "{what}"
            );
        }
    }

    #[test]
    fn init_container_states() {
        let spec = json!({
            "initContainers": [{"name": "init-a", "image": "busybox"}, {"name": "init-b", "image": "busybox"}],
            "containers": [{"name": "app", "image": "nginx"}]
        });
        let app_waiting = waiting("app", "PodInitializing", 0);
        let cases: Vec<(&str, Value, &str)> = vec![
            (
                "first init running",
                json!({"phase": "Pending", "initContainerStatuses": [running("init-a", false, 0), waiting("init-b", "PodInitializing", 0)],
                       "containerStatuses": [app_waiting.clone()]}),
                "Init:0/2",
            ),
            (
                "second init running",
                json!({"phase": "Pending", "initContainerStatuses": [terminated("init-a", Some("Completed"), 0, 0), running("init-b", false, 0)],
                       "containerStatuses": [app_waiting.clone()]}),
                "Init:1/2",
            ),
            (
                "init failed",
                json!({"phase": "Pending", "initContainerStatuses": [terminated("init-a", Some("Error"), 1, 0), waiting("init-b", "PodInitializing", 0)],
                       "containerStatuses": [app_waiting.clone()]}),
                "Init:Error",
            ),
            (
                "init exit code without reason",
                json!({"phase": "Pending", "initContainerStatuses": [terminated("init-a", None, 2, 0)],
                       "containerStatuses": [app_waiting.clone()]}),
                "Init:ExitCode:2",
            ),
            (
                "init signal without reason",
                json!({"phase": "Pending", "initContainerStatuses": [terminated("init-a", None, 1, 15)],
                       "containerStatuses": [app_waiting.clone()]}),
                "Init:Signal:15",
            ),
            (
                "init crash loop",
                json!({"phase": "Pending", "initContainerStatuses": [waiting("init-a", "CrashLoopBackOff", 4)],
                       "containerStatuses": [app_waiting.clone()]}),
                "Init:CrashLoopBackOff",
            ),
            (
                "inits done, app initializing",
                json!({"phase": "Pending", "initContainerStatuses": [terminated("init-a", Some("Completed"), 0, 0), terminated("init-b", Some("Completed"), 0, 0)],
                       "containerStatuses": [app_waiting.clone()]}),
                "PodInitializing",
            ),
        ];
        for (what, status, want) in cases {
            let p = pod(spec.clone(), status);
            assert_eq!(cells3(&p).1, want, "{what}");
        }
    }

    #[test]
    fn init_restarts_count_only_while_initializing() {
        let spec = json!({"initContainers": [{"name": "init", "image": "busybox"}],
                          "containers": [{"name": "app", "image": "nginx"}]});
        let mut init = waiting("init", "CrashLoopBackOff", 4);
        init["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:58:00Z"}});
        let p = pod(
            spec.clone(),
            json!({"phase": "Pending", "initContainerStatuses": [init],
            "containerStatuses": [waiting("app", "PodInitializing", 0)]}),
        );
        assert_eq!(
            cells3(&p),
            (
                "0/1".into(),
                "Init:CrashLoopBackOff".into(),
                "4 (2m ago)".into()
            )
        );

        // Once initialized, only app (and sidecar) restarts count.
        let mut done = terminated("init", Some("Completed"), 0, 0);
        done["restartCount"] = json!(4);
        let p = pod(
            spec,
            json!({"phase": "Running", "initContainerStatuses": [done],
            "containerStatuses": [running("app", true, 1)],
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(cells3(&p), ("1/1".into(), "Running".into(), "1".into()));
    }

    #[test]
    fn sidecar_init_containers_count_as_containers() {
        let spec = json!({
            "initContainers": [{"name": "proxy", "image": "envoy", "restartPolicy": "Always"}],
            "containers": [{"name": "app", "image": "nginx"}]
        });
        let mut proxy = running("proxy", true, 1);
        proxy["started"] = json!(true);
        proxy["lastState"] =
            json!({"terminated": {"exitCode": 1, "finishedAt": "2024-05-01T11:59:00Z"}});
        let p = pod(
            spec.clone(),
            json!({"phase": "Running", "initContainerStatuses": [proxy.clone()],
            "containerStatuses": [running("app", true, 0)],
            "conditions": [{"type": "Initialized", "status": "True"}, {"type": "Ready", "status": "True"}]}),
        );
        assert_eq!(
            cells3(&p),
            ("2/2".into(), "Running".into(), "1 (60s ago)".into())
        );

        // Sidecar not yet started: still initializing.
        let p = pod(
            spec,
            json!({"phase": "Pending",
            "initContainerStatuses": [{"name": "proxy", "ready": false, "started": false, "restartCount": 0,
                                       "state": {"running": {}}}],
            "containerStatuses": [waiting("app", "PodInitializing", 0)]}),
        );
        assert_eq!(cells3(&p).0, "0/2");
        assert_eq!(cells3(&p).1, "Init:0/1");
    }

    #[test]
    fn completed_with_running_container_is_running_or_not_ready() {
        let spec =
            json!({"containers": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]});
        // The first container's state wins the reason (statuses are walked backwards).
        let status = |ready_cond: &str| {
            json!({"phase": "Running",
                   "containerStatuses": [terminated("a", Some("Completed"), 0, 0), running("b", true, 0)],
                   "conditions": [{"type": "Ready", "status": ready_cond}]})
        };
        assert_eq!(cells3(&pod(spec.clone(), status("True"))).1, "Running");
        assert_eq!(cells3(&pod(spec.clone(), status("False"))).1, "NotReady");
        assert_eq!(cells3(&pod(spec, status("True"))).0, "1/2");
    }

    #[test]
    fn deletion_gives_terminating_or_unknown() {
        let mut p = pod(
            one_container(),
            json!({"phase": "Running", "containerStatuses": [running("app", true, 0)]}),
        );
        p["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(cells3(&p).1, "Terminating");

        p["status"]["reason"] = json!("NodeLost");
        assert_eq!(cells3(&p).1, "Unknown");

        let mut done = pod(
            one_container(),
            json!({"phase": "Succeeded", "containerStatuses": [terminated("app", Some("Completed"), 0, 0)]}),
        );
        done["metadata"]["deletionTimestamp"] = json!("2024-05-01T11:59:00Z");
        assert_eq!(cells3(&done).1, "Completed");
    }

    #[test]
    fn wide_cells() {
        let mut p = pod(
            json!({"containers": [{"name": "app", "image": "nginx"}], "nodeName": "node1",
                   "readinessGates": [{"conditionType": "example.com/ready"}, {"conditionType": "example.com/lb"}]}),
            json!({"phase": "Running", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.5"}],
                   "containerStatuses": [running("app", true, 0)],
                   "conditions": [{"type": "example.com/ready", "status": "True"}, {"type": "example.com/lb", "status": "False"}]}),
        );
        let c = cells(&p, now());
        assert_eq!(c.len(), COLUMNS.len());
        assert_eq!(c[0], json!("web-1"));
        assert_eq!(c[4], json!("10m"));
        assert_eq!(
            &c[5..],
            &[
                json!("10.0.0.5"),
                json!("node1"),
                json!("<none>"),
                json!("1/2")
            ]
        );

        p["spec"] = one_container();
        p["status"] = json!({"phase": "Pending", "podIP": "10.0.0.9"});
        p["metadata"] = json!({"name": "x"});
        let c = cells(&p, now());
        assert_eq!(c[4], json!("<unknown>"));
        assert_eq!(
            &c[5..],
            &[
                json!("10.0.0.9"),
                json!("<none>"),
                json!("<none>"),
                json!("<none>")
            ]
        );
    }

    #[test]
    fn finished_pods_carry_completed_condition() {
        let p = pod(one_container(), json!({"phase": "Succeeded"}));
        let c = row_conditions(&p).unwrap();
        assert_eq!(c[0]["type"], "Completed");
        assert_eq!(c[0]["reason"], "Succeeded");
        assert_eq!(
            row_conditions(&pod(one_container(), json!({"phase": "Failed"}))).unwrap()[0]["reason"],
            "Failed"
        );
        assert!(row_conditions(&pod(one_container(), json!({"phase": "Running"}))).is_none());
    }

    #[test]
    fn garbage_never_panics() {
        for v in [
            json!(null),
            json!(3),
            json!({"status": {"containerStatuses": "x"}}),
            json!({"status": {"initContainerStatuses": [null, 1, {"state": {"terminated": "x"}}]}}),
        ] {
            assert_eq!(cells(&v, now()).len(), COLUMNS.len());
        }
    }
}
