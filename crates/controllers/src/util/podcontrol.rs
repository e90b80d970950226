//! Creating and deleting an owner's pods with the Events upstream's
//! `RealPodControl` records (the ReplicaSet, Job and DaemonSet controllers
//! use it; the StatefulSet controller words its events differently).

use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::api::{Api, DeleteParams, PostParams};
use kube::ResourceExt;

use super::{delete_same, error_message};
use crate::events::{EventType, Recorder};

/// Pod writes on behalf of one owner, each recorded as an Event on it.
pub struct PodControl<'a> {
    api: Api<Pod>,
    recorder: &'a Recorder,
    owner: ObjectReference,
}

impl<'a> PodControl<'a> {
    /// Pod writes through `api` (the owner's namespace), recorded on `owner`.
    pub fn new(api: Api<Pod>, recorder: &'a Recorder, owner: ObjectReference) -> Self {
        PodControl {
            api,
            recorder,
            owner,
        }
    }

    /// The API the pods are written through (for writes recorded separately,
    /// e.g. with [`PodControl::record_create`]).
    pub fn api(&self) -> &Api<Pod> {
        &self.api
    }

    /// Create `pod` and record the result ([`PodControl::record_create`]).
    pub async fn create(&self, pod: &Pod) -> Result<Pod, kube::Error> {
        let created = self.api.create(&PostParams::default(), pod).await;
        self.record_create(&created).await;
        created
    }

    /// Record a create's result: `SuccessfulCreate` "Created pod: <name>" or
    /// `FailedCreate` "Error creating: <message>".
    pub async fn record_create(&self, created: &Result<Pod, kube::Error>) {
        let (type_, reason, msg) = match created {
            Ok(p) => (
                EventType::Normal,
                "SuccessfulCreate",
                format!("Created pod: {}", p.name_any()),
            ),
            Err(e) => (
                EventType::Warning,
                "FailedCreate",
                format!("Error creating: {}", error_message(e)),
            ),
        };
        self.recorder
            .publish(&self.owner, type_, reason, &msg)
            .await;
    }

    /// Delete `pod` if it is still the pod seen ([`delete_same`]); when it was
    /// deleted, record `SuccessfulDelete` "Deleted pod: <name>". Returns
    /// whether it was deleted.
    pub async fn delete(&self, pod: &Pod) -> Result<bool, kube::Error> {
        let deleted = delete_same(&self.api, pod, DeleteParams::default()).await?;
        if deleted {
            let msg = format!("Deleted pod: {}", pod.name_any());
            self.recorder
                .publish(&self.owner, EventType::Normal, "SuccessfulDelete", &msg)
                .await;
        }
        Ok(deleted)
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, Reply};
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn pod(name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(format!("uid-{name}")),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn owner() -> ObjectReference {
        ObjectReference {
            kind: Some("Job".into()),
            name: Some("pi".into()),
            namespace: Some("ns".into()),
            uid: Some("job-uid".into()),
            ..Default::default()
        }
    }

    /// (reason, message) of the Events the fake was sent.
    fn events(seen: &fake::Seen) -> Vec<(String, String)> {
        seen.requests()
            .iter()
            .filter(|r| r.path.ends_with("/events"))
            .map(|r| {
                let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
                let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
                (s("reason"), s("message"))
            })
            .collect()
    }

    fn answer(r: &fake::Request) -> Reply {
        if r.path.ends_with("/events") {
            return Reply::ok(&serde_json::from_str::<serde_json::Value>(&r.body).unwrap());
        }
        match (r.method.as_str(), r.path.as_str()) {
            ("POST", "/api/v1/namespaces/ns/pods") => {
                let mut p: Pod = serde_json::from_str(&r.body).unwrap();
                if p.metadata.generate_name.as_deref() == Some("bad-") {
                    return Reply::status(422);
                }
                p.metadata.name = Some("pi-x1".into());
                Reply::ok(&p)
            }
            ("DELETE", "/api/v1/namespaces/ns/pods/a") => Reply::ok(&pod("a")),
            _ => Reply::status(404),
        }
    }

    #[tokio::test]
    async fn creates_record_upstream_events() {
        let (client, seen) = fake::client(answer);
        let recorder = Recorder::new(client.clone(), "job-controller");
        let pods = PodControl::new(Api::namespaced(client, "ns"), &recorder, owner());
        let mut p = Pod::default();
        p.metadata.generate_name = Some("pi-".into());
        assert_eq!(pods.create(&p).await.unwrap().name_any(), "pi-x1");
        p.metadata.generate_name = Some("bad-".into());
        assert!(pods.create(&p).await.is_err());
        assert_eq!(
            events(&seen),
            [
                (
                    "SuccessfulCreate".to_string(),
                    "Created pod: pi-x1".to_string()
                ),
                (
                    "FailedCreate".to_string(),
                    "Error creating: fake 422".to_string()
                ),
            ]
        );
    }

    #[tokio::test]
    async fn deletes_record_only_what_was_deleted() {
        let (client, seen) = fake::client(answer);
        let recorder = Recorder::new(client.clone(), "job-controller");
        let pods = PodControl::new(Api::namespaced(client, "ns"), &recorder, owner());
        assert!(pods.delete(&pod("a")).await.unwrap());
        assert!(!pods.delete(&pod("gone")).await.unwrap());
        assert_eq!(
            events(&seen),
            [("SuccessfulDelete".to_string(), "Deleted pod: a".to_string())]
        );
        let ev = seen
            .requests()
            .into_iter()
            .find(|r| r.path.ends_with("/events"))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&ev.body).unwrap();
        assert_eq!(v["involvedObject"]["uid"], "job-uid");
        assert_eq!(v["source"]["component"], "job-controller");
    }
}
