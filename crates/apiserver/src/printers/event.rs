//! Events, in both shapes: core/v1 (`involvedObject`, `message`, ...) and
//! events.k8s.io/v1 (`regarding`, `note`, `deprecated*`). Upstream serves both
//! from one storage and prints them with one printer.

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::json::{at, int_at, name, opt_int, since, str_at, timestamp};
use super::{col, wide, Column, NAME_DESC};

/// Event columns, as upstream (the name column comes last and is wide).
pub(crate) const COLUMNS: &[Column] = &[
    col("Last Seen", "string", "The time at which the most recent occurrence of this event was recorded."),
    col("Type", "string", "Type of this event (Normal, Warning), new types could be added in the future"),
    col("Reason", "string", "This should be a short, machine understandable string that gives the reason for the transition into the object's current status."),
    col("Object", "string", "The object that this event is about."),
    wide("Subobject", "string", "If referring to a piece of an object instead of an entire object, this string should contain a valid JSON/Go field access statement, such as desiredState.manifest.containers[2]."),
    wide("Source", "string", "The component reporting this event. Should be a short machine understandable string."),
    col("Message", "string", "A human-readable description of the status of this operation."),
    wide("First Seen", "string", "The time at which the event was first recorded. (Time of server receipt is in TypeMeta.)"),
    wide("Count", "string", "The number of times this event has occurred."),
    Column { name: "Name", type_: "string", format: "name", description: NAME_DESC, priority: 1 },
];

/// JSON pointers of the event fields in one API shape.
struct Shape {
    regarding: &'static str,
    message: &'static str,
    first: &'static str,
    last: &'static str,
    count: &'static str,
    source: &'static str,
    reporting_controller: &'static str,
}

const CORE: Shape = Shape {
    regarding: "/involvedObject",
    message: "/message",
    first: "/firstTimestamp",
    last: "/lastTimestamp",
    count: "/count",
    source: "/source",
    reporting_controller: "/reportingComponent",
};

const EVENTS_V1: Shape = Shape {
    regarding: "/regarding",
    message: "/note",
    first: "/deprecatedFirstTimestamp",
    last: "/deprecatedLastTimestamp",
    count: "/deprecatedCount",
    source: "/deprecatedSource",
    reporting_controller: "/reportingController",
};

fn first_non_empty<'a>(a: &'a str, b: &'a str) -> &'a str {
    if a.is_empty() {
        b
    } else {
        a
    }
}

/// The cells of an event row; `group` selects the JSON shape.
pub(crate) fn cells(group: &str, ev: &Value, now: DateTime<Utc>) -> Vec<Value> {
    let shape = if group == "events.k8s.io" {
        &EVENTS_V1
    } else {
        &CORE
    };

    let first_seen = match timestamp(ev, shape.first) {
        Some(t) => since(Some(t), now),
        None => since(timestamp(ev, "/eventTime"), now),
    };
    let mut last_seen = match timestamp(ev, shape.last) {
        Some(t) => since(Some(t), now),
        None => first_seen.clone(),
    };
    let mut count = int_at(ev, shape.count);
    if let Some(series) = at(ev, "/series") {
        last_seen = since(timestamp(series, "/lastObservedTime"), now);
        count = opt_int(series, "/count").unwrap_or(0);
    } else if count == 0 {
        // Singleton events of the new API carry no count.
        count = 1;
    }

    let regarding = at(ev, shape.regarding).unwrap_or(&Value::Null);
    let kind = str_at(regarding, "/kind").to_lowercase();
    let target_name = str_at(regarding, "/name");
    let target = if target_name.is_empty() {
        kind
    } else {
        format!("{kind}/{target_name}")
    };

    let component = first_non_empty(
        str_at(ev, &format!("{}/component", shape.source)),
        str_at(ev, shape.reporting_controller),
    );
    let instance = first_non_empty(
        str_at(ev, &format!("{}/host", shape.source)),
        str_at(ev, "/reportingInstance"),
    );
    let source = if instance.is_empty() {
        component.to_string()
    } else {
        format!("{component}, {instance}")
    };

    vec![
        Value::from(last_seen),
        Value::from(str_at(ev, "/type")),
        Value::from(str_at(ev, "/reason")),
        Value::from(target),
        Value::from(str_at(regarding, "/fieldPath")),
        Value::from(source),
        Value::from(str_at(ev, shape.message).trim()),
        Value::from(first_seen),
        Value::from(count),
        name(ev),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::json;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 5, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn core_event() {
        let ev = json!({
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": "web-1.17c", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "web-1", "namespace": "default", "fieldPath": "spec.containers{app}"},
            "reason": "BackOff", "message": "Back-off restarting failed container\n", "type": "Warning",
            "source": {"component": "kubelet", "host": "node1"},
            "firstTimestamp": "2024-05-01T11:00:00Z", "lastTimestamp": "2024-05-01T11:58:00Z", "count": 7
        });
        assert_eq!(
            cells("", &ev, now()),
            vec![
                json!("2m"),
                json!("Warning"),
                json!("BackOff"),
                json!("pod/web-1"),
                json!("spec.containers{app}"),
                json!("kubelet, node1"),
                json!("Back-off restarting failed container"),
                json!("60m"),
                json!(7),
                json!("web-1.17c")
            ]
        );
    }

    #[test]
    fn core_event_without_timestamps_uses_event_time_and_series() {
        let ev = json!({
            "metadata": {"name": "e"},
            "involvedObject": {"kind": "Node"},
            "reason": "Starting", "message": "", "type": "Normal",
            "eventTime": "2024-05-01T11:59:00.123456Z",
            "reportingComponent": "kube-proxy", "reportingInstance": "node1"
        });
        let c = cells("", &ev, now());
        // 59.88s ago: truncated, never rounded.
        assert_eq!(c[0], json!("59s"));
        assert_eq!(c[3], json!("node"));
        assert_eq!(c[5], json!("kube-proxy, node1"));
        assert_eq!(c[7], json!("59s"));
        assert_eq!(c[8], json!(1));

        let mut with_series = ev.clone();
        with_series["series"] =
            json!({"count": 4, "lastObservedTime": "2024-05-01T11:59:50.000000Z"});
        let c = cells("", &with_series, now());
        assert_eq!(c[0], json!("10s"));
        assert_eq!(c[8], json!(4));

        let bare = json!({"metadata": {"name": "e"}});
        let c = cells("", &bare, now());
        assert_eq!(c[0], json!("<unknown>"));
        assert_eq!(c[3], json!(""));
    }

    #[test]
    fn events_v1_shape() {
        let ev = json!({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "web.1", "namespace": "default"},
            "regarding": {"kind": "Deployment", "name": "web", "namespace": "default"},
            "note": "Scaled up replica set web-5d4 to 3", "reason": "ScalingReplicaSet", "type": "Normal",
            "eventTime": "2024-05-01T11:55:00.000000Z",
            "reportingController": "deployment-controller", "reportingInstance": "",
            "deprecatedSource": {"component": ""}, "deprecatedCount": 2,
            "deprecatedFirstTimestamp": "2024-05-01T11:50:00Z", "deprecatedLastTimestamp": "2024-05-01T11:57:00Z"
        });
        assert_eq!(
            cells("events.k8s.io", &ev, now()),
            vec![
                json!("3m"),
                json!("Normal"),
                json!("ScalingReplicaSet"),
                json!("deployment/web"),
                json!(""),
                json!("deployment-controller"),
                json!("Scaled up replica set web-5d4 to 3"),
                json!("10m"),
                json!(2),
                json!("web.1")
            ]
        );
    }
}
