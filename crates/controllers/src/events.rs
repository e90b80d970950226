//! Recording core/v1 Events about the objects controllers act on (what
//! `kubectl describe` shows). Repeats of the same event are aggregated by
//! bumping `count` and `lastTimestamp`, as upstream's recorder does.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::{Client, Resource};

use crate::util;

/// Event type: `Normal` or `Warning`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// Something expected happened.
    Normal,
    /// Something went wrong.
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

type Key = (String, String, String);

/// Writes Events as one component (`source.component`).
#[derive(Clone)]
pub struct Recorder {
    client: Client,
    component: String,
    seen: Arc<Mutex<HashMap<Key, (String, i32)>>>,
}

impl Recorder {
    /// A recorder reporting as `component` (e.g. `replicaset-controller`).
    pub fn new(client: Client, component: &str) -> Self {
        Recorder {
            client,
            component: component.to_string(),
            seen: Arc::default(),
        }
    }

    /// A reference to `obj` suitable for `involvedObject`.
    pub fn reference<K: Resource<DynamicType = ()>>(obj: &K) -> ObjectReference {
        let m = obj.meta();
        ObjectReference {
            api_version: Some(K::api_version(&()).into_owned()),
            kind: Some(K::kind(&()).into_owned()),
            name: m.name.clone(),
            namespace: m.namespace.clone(),
            uid: m.uid.clone(),
            resource_version: m.resource_version.clone(),
            ..Default::default()
        }
    }

    /// Record an event; failures are logged, never returned (events are best effort).
    pub async fn publish(
        &self,
        involved: &ObjectReference,
        type_: EventType,
        reason: &str,
        message: &str,
    ) {
        let ns = involved
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let api: Api<Event> = Api::namespaced(self.client.clone(), &ns);
        let key: Key = (
            involved.uid.clone().unwrap_or_default(),
            reason.to_string(),
            message.to_string(),
        );
        let prior = self.seen.lock().ok().and_then(|m| m.get(&key).cloned());
        let now = util::now();
        if let Some((name, count)) = prior {
            let patch = serde_json::json!({"count": count + 1, "lastTimestamp": now});
            if api
                .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .is_ok()
            {
                if let Ok(mut m) = self.seen.lock() {
                    m.insert(key, (name, count + 1));
                }
                return;
            }
        }
        let base = involved.name.clone().unwrap_or_default();
        let nanos = k8s_openapi::jiff::Timestamp::now().as_nanosecond();
        let name = format!("{base}.{:x}", nanos as u64);
        let ev = Event {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(ns),
                ..Default::default()
            },
            involved_object: involved.clone(),
            reason: Some(reason.to_string()),
            message: Some(message.to_string()),
            type_: Some(type_.as_str().to_string()),
            count: Some(1),
            first_timestamp: Some(now.clone()),
            last_timestamp: Some(now),
            source: Some(EventSource {
                component: Some(self.component.clone()),
                host: None,
            }),
            reporting_component: Some(self.component.clone()),
            reporting_instance: Some(self.component.clone()),
            ..Default::default()
        };
        match api.create(&PostParams::default(), &ev).await {
            Ok(_) => {
                if let Ok(mut m) = self.seen.lock() {
                    if m.len() > 4096 {
                        m.clear();
                    }
                    m.insert(key, (name, 1));
                }
            }
            Err(e) => tracing::debug!(error = %e, reason, "could not record event"),
        }
    }
}
