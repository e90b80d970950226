//! core/v1 Events from the agent (`source.component: kubelet`), aggregated like
//! upstream: an event with the same object, reason, type and message as an
//! earlier one bumps that one's `count` and `lastTimestamp` instead of creating
//! a new object. Sending happens on a background task so syncs never wait on it.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::api::{Api, Patch, PatchParams, PostParams};
use tokio::sync::mpsc;

/// `Normal` or `Warning`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    /// Normal.
    Normal,
    /// Warning.
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// One event to record.
#[derive(Clone, Debug)]
pub struct EventRecord {
    /// The object it is about.
    pub object: ObjectReference,
    /// Normal or Warning.
    pub type_: EventType,
    /// CamelCase reason (`Pulled`, `BackOff`).
    pub reason: String,
    /// Human message.
    pub message: String,
}

/// Sends events; cheap to clone.
#[derive(Clone, Debug)]
pub struct Recorder {
    tx: mpsc::UnboundedSender<EventRecord>,
}

/// A reference to `pod`, optionally to one of its containers
/// (`spec.containers{app}`).
pub fn pod_ref(pod: &Pod, field_path: Option<String>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".to_string()),
        kind: Some("Pod".to_string()),
        name: pod.metadata.name.clone(),
        namespace: pod.metadata.namespace.clone(),
        uid: pod.metadata.uid.clone(),
        resource_version: pod.metadata.resource_version.clone(),
        field_path,
    }
}

/// The fieldPath of a container (`spec.containers{app}`,
/// `spec.initContainers{init}`).
pub fn container_field_path(init: bool, name: &str) -> String {
    if init {
        format!("spec.initContainers{{{name}}}")
    } else {
        format!("spec.containers{{{name}}}")
    }
}

impl Recorder {
    /// Start the sender task against the API.
    pub fn spawn(client: kube::Client, host: String) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(send_loop(client, host, rx));
        Recorder { tx }
    }

    /// A recorder whose events go to `tx` (tests).
    pub fn from_sender(tx: mpsc::UnboundedSender<EventRecord>) -> Recorder {
        Recorder { tx }
    }

    /// Record an event (never blocks, never fails the caller).
    pub fn record(
        &self,
        object: ObjectReference,
        type_: EventType,
        reason: &str,
        message: impl Into<String>,
    ) {
        let _ = self.tx.send(EventRecord {
            object,
            type_,
            reason: reason.to_string(),
            message: message.into(),
        });
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    uid: String,
    field_path: String,
    type_: EventType,
    reason: String,
    message: String,
}

struct Seen {
    name: String,
    count: i32,
}

const CACHE_MAX: usize = 4096;

async fn send_loop(
    client: kube::Client,
    host: String,
    mut rx: mpsc::UnboundedReceiver<EventRecord>,
) {
    let mut cache: HashMap<Key, Seen> = HashMap::new();
    while let Some(ev) = rx.recv().await {
        let ns = ev
            .object
            .namespace
            .clone()
            .unwrap_or_else(|| "default".to_string());
        let api: Api<Event> = Api::namespaced(client.clone(), &ns);
        let key = Key {
            uid: ev.object.uid.clone().unwrap_or_default(),
            field_path: ev.object.field_path.clone().unwrap_or_default(),
            type_: ev.type_,
            reason: ev.reason.clone(),
            message: ev.message.clone(),
        };
        let now = Time(k8s_openapi::jiff::Timestamp::now());
        if let Some(seen) = cache.get_mut(&key) {
            let patch = serde_json::json!({
                "count": seen.count + 1,
                "lastTimestamp": now,
            });
            match api
                .patch(&seen.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => {
                    seen.count += 1;
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "event patch failed; creating a new one");
                    cache.remove(&key);
                }
            }
        }
        let base = ev
            .object
            .name
            .clone()
            .unwrap_or_else(|| "unknown".to_string());
        let nanos = now.0.as_nanosecond();
        let name = format!("{base}.{nanos:x}");
        let event = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns.clone()),
                ..Default::default()
            },
            involved_object: ev.object.clone(),
            reason: Some(ev.reason.clone()),
            message: Some(ev.message.clone()),
            type_: Some(ev.type_.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some("kubelet".to_string()),
                host: Some(host.clone()),
            }),
            reporting_component: Some("kubelet".to_string()),
            reporting_instance: Some(host.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &event).await {
            Ok(_) => {
                if cache.len() >= CACHE_MAX {
                    cache.clear();
                }
                cache.insert(key, Seen { name, count: 1 });
            }
            Err(e) => tracing::warn!(error = %e, reason = %ev.reason, "could not record event"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references() {
        let mut p = Pod::default();
        p.metadata.name = Some("bb".into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("u".into());
        let r = pod_ref(&p, Some(container_field_path(false, "app")));
        assert_eq!(r.field_path.as_deref(), Some("spec.containers{app}"));
        assert_eq!(r.kind.as_deref(), Some("Pod"));
        assert_eq!(container_field_path(true, "i"), "spec.initContainers{i}");
        let (tx, mut rx) = mpsc::unbounded_channel();
        let rec = Recorder::from_sender(tx);
        rec.record(r, EventType::Warning, "BackOff", "x");
        let got = rx.try_recv().unwrap();
        assert_eq!(got.reason, "BackOff");
        assert_eq!(got.type_, EventType::Warning);
    }
}
