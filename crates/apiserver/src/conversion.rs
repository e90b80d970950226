//! Conversion between API versions that share storage. Upstream keeps core/v1
//! Events and events.k8s.io/v1 Events in one place and converts between them; so
//! do we. An object is converted when it is read through a resource whose
//! apiVersion differs from the one it was written with.

use navarch_api::catalog::ResourceType;
use serde_json::{Map, Value};

/// Field renames between core/v1 Event (left) and events.k8s.io/v1 Event (right).
const EVENT_FIELDS: &[(&str, &str)] = &[
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
    ("count", "deprecatedCount"),
];

/// Same-named fields both shapes carry.
const EVENT_SHARED: &[&str] = &[
    "metadata",
    "reason",
    "type",
    "eventTime",
    "series",
    "related",
    "action",
    "reportingInstance",
];

fn rename(obj: &Map<String, Value>, to_events_k8s_io: bool) -> Map<String, Value> {
    let mut out = Map::new();
    for k in EVENT_SHARED {
        if let Some(v) = obj.get(*k) {
            out.insert((*k).to_string(), v.clone());
        }
    }
    for (core, new) in EVENT_FIELDS {
        let (from, to) = if to_events_k8s_io {
            (core, new)
        } else {
            (new, core)
        };
        if let Some(v) = obj.get(*from) {
            out.insert((*to).to_string(), v.clone());
        }
    }
    out
}

/// Whether objects of `rt` may be stored in another version than served
/// (then [`to_version`] has work to do).
pub fn converts(rt: &ResourceType) -> bool {
    rt.kind == "Event"
}

/// Present `obj` in `rt`'s version (a no-op unless the stored version differs).
pub fn to_version(rt: &ResourceType, obj: Value) -> Value {
    if !converts(rt) {
        return obj;
    }
    let stored = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if stored == rt.api_version || stored.is_empty() {
        return obj;
    }
    match (stored, rt.api_version, rt.kind) {
        ("v1", "events.k8s.io/v1", "Event") | ("events.k8s.io/v1", "v1", "Event") => {
            let Value::Object(m) = obj else { return obj };
            let mut out = rename(&m, rt.api_version == "events.k8s.io/v1");
            out.insert("apiVersion".into(), Value::String(rt.api_version.into()));
            out.insert("kind".into(), Value::String("Event".into()));
            Value::Object(out)
        }
        _ => obj,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use navarch_api::catalog;
    use serde_json::json;

    #[test]
    fn events_round_trip_between_versions() {
        let core = catalog::by_plural("", "v1", "events").expect("core events");
        let new = catalog::by_plural("events.k8s.io", "v1", "events").expect("events.k8s.io");
        let ev = json!({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p"}, "reason": "Started", "message": "hi",
            "source": {"component": "kubelet"}, "count": 2, "type": "Normal",
        });
        let converted = to_version(new, ev.clone());
        assert_eq!(converted["apiVersion"], "events.k8s.io/v1");
        assert_eq!(converted["regarding"]["name"], "p");
        assert_eq!(converted["note"], "hi");
        assert_eq!(converted["deprecatedCount"], 2);
        assert_eq!(to_version(core, converted), ev);
    }
}
