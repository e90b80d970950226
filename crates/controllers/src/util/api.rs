//! API calls the controllers make the same way: reading an object live,
//! listing what an object controls, deleting only the object seen (uid
//! precondition) and merge-patching status.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{is_controlled_by, is_status};

/// Read `obj` again from the API server (the watch cache may not have the
/// controller's last status write yet); `None` when it is gone.
pub async fn get_live<K>(client: &Client, obj: &K) -> Result<Option<Arc<K>>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Clone
        + DeserializeOwned
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), &obj.namespace().unwrap_or_default());
    Ok(api.get_opt(&obj.name_any()).await?.map(Arc::new))
}

/// The objects `api` lists with `lp` whose controller is the object with `owner_uid`.
pub async fn list_controlled<K>(
    api: &Api<K>,
    lp: &ListParams,
    owner_uid: &str,
) -> Result<Vec<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    Ok(api
        .list(lp)
        .await?
        .items
        .into_iter()
        .filter(|o| is_controlled_by(o.meta(), owner_uid))
        .collect())
}

/// Delete `obj` with `params` but only if it is still the object seen (a uid
/// precondition). `Ok(false)` when it is already gone (404) or its name now
/// belongs to another object (409).
pub async fn delete_same<K>(
    api: &Api<K>,
    obj: &K,
    params: DeleteParams,
) -> Result<bool, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.meta().uid.clone(),
            resource_version: None,
        }),
        ..params
    };
    match api.delete(&obj.name_any(), &params).await {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Replace `obj`'s owner references with `refs` if it is unchanged since it
/// was read (its `resourceVersion`). `None` when it is gone (404) or changed
/// meanwhile (409); the updated object otherwise.
pub async fn set_owner_refs<K>(
    api: &Api<K>,
    obj: &K,
    refs: &[OwnerReference],
) -> Result<Option<K>, kube::Error>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let patch = serde_json::json!({"metadata": {
        "ownerReferences": refs,
        "resourceVersion": obj.meta().resource_version,
    }});
    match api
        .patch(
            &obj.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(o) => Ok(Some(o)),
        Err(e) if is_status(&e, 404) || is_status(&e, 409) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Merge-patch `{"status": status}` into object `name`'s status subresource.
/// `Ok(false)` when the object is gone (404).
pub async fn patch_status<K, S>(api: &Api<K>, name: &str, status: &S) -> Result<bool, kube::Error>
where
    K: Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({ "status": status });
    match api
        .patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(true),
        Err(e) if is_status(&e, 404) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::super::fake::{self, Reply};
    use super::*;
    use k8s_openapi::api::core::v1::Pod;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn pod(name: &str, uid: &str, owner: Option<&str>) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                uid: Some(uid.into()),
                owner_references: owner.map(|o| {
                    vec![OwnerReference {
                        uid: o.into(),
                        controller: Some(true),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn get_live_reads_the_object_again_or_none() {
        let (client, seen) = fake::client(|r| match r.path.as_str() {
            "/api/v1/namespaces/ns/pods/a" => Reply::ok(&pod("a", "u-new", None)),
            _ => Reply::status(404),
        });
        let live = get_live(&client, &pod("a", "u-old", None)).await.unwrap();
        assert_eq!(live.unwrap().metadata.uid.as_deref(), Some("u-new"));
        assert!(get_live(&client, &pod("b", "u", None))
            .await
            .unwrap()
            .is_none());
        assert_eq!(seen.requests()[0].method, "GET");
    }

    #[tokio::test]
    async fn list_controlled_keeps_only_the_owners_objects() {
        let (client, seen) = fake::client(|_| {
            Reply::ok(&json!({
                "apiVersion": "v1", "kind": "PodList", "metadata": {},
                "items": [pod("mine", "1", Some("owner")), pod("other", "2", Some("x")), pod("bare", "3", None)],
            }))
        });
        let api: Api<Pod> = Api::namespaced(client, "ns");
        let got = list_controlled(&api, &ListParams::default().labels("app=web"), "owner")
            .await
            .unwrap();
        let names: Vec<String> = got.iter().map(|p| p.name_any()).collect();
        assert_eq!(names, ["mine"]);
        assert!(seen.requests()[0].query.contains("labelSelector=app%3Dweb"));
    }

    #[tokio::test]
    async fn delete_same_sends_the_uid_and_treats_gone_as_false() {
        let (client, seen) = fake::client(|r| match r.path.as_str() {
            "/api/v1/namespaces/ns/pods/a" => Reply::ok(&pod("a", "1", None)),
            "/api/v1/namespaces/ns/pods/gone" => Reply::status(404),
            "/api/v1/namespaces/ns/pods/moved" => Reply::status(409),
            _ => Reply::status(500),
        });
        let api: Api<Pod> = Api::namespaced(client, "ns");
        assert!(
            delete_same(&api, &pod("a", "1", None), DeleteParams::background())
                .await
                .unwrap()
        );
        let body: serde_json::Value = serde_json::from_str(&seen.requests()[0].body).unwrap();
        assert_eq!(body["preconditions"]["uid"], "1");
        assert_eq!(body["propagationPolicy"], "Background");
        for name in ["gone", "moved"] {
            let p = pod(name, "2", None);
            assert!(!delete_same(&api, &p, DeleteParams::default())
                .await
                .unwrap());
        }
        let err = delete_same(&api, &pod("boom", "3", None), DeleteParams::default()).await;
        assert!(err.is_err());
    }

    #[tokio::test]
    async fn set_owner_refs_is_conditional_on_the_version_read() {
        let (client, seen) = fake::client(|r| match r.path.as_str() {
            "/api/v1/namespaces/ns/pods/a" => Reply::ok(&pod("a", "1", Some("rs"))),
            "/api/v1/namespaces/ns/pods/changed" => Reply::status(409),
            _ => Reply::status(404),
        });
        let api: Api<Pod> = Api::namespaced(client, "ns");
        let mut a = pod("a", "1", None);
        a.metadata.resource_version = Some("7".into());
        let refs = [OwnerReference {
            uid: "rs".into(),
            controller: Some(true),
            ..Default::default()
        }];
        let got = set_owner_refs(&api, &a, &refs).await.unwrap().unwrap();
        assert!(is_controlled_by(&got.metadata, "rs"));
        let body: serde_json::Value = serde_json::from_str(&seen.requests()[0].body).unwrap();
        assert_eq!(body["metadata"]["resourceVersion"], "7");
        assert_eq!(body["metadata"]["ownerReferences"][0]["uid"], "rs");
        for name in ["changed", "gone"] {
            let p = pod(name, "2", None);
            assert!(set_owner_refs(&api, &p, &[]).await.unwrap().is_none());
        }
    }

    #[tokio::test]
    async fn patch_status_merges_and_reports_a_missing_object() {
        let (client, seen) = fake::client(|r| match r.path.as_str() {
            "/api/v1/namespaces/ns/pods/a/status" => Reply::ok(&pod("a", "1", None)),
            "/api/v1/namespaces/ns/pods/gone/status" => Reply::status(404),
            _ => Reply::status(500),
        });
        let api: Api<Pod> = Api::namespaced(client, "ns");
        assert!(patch_status(&api, "a", &json!({"phase": "Running"}))
            .await
            .unwrap());
        let req = &seen.requests()[0];
        assert_eq!(req.method, "PATCH");
        assert_eq!(req.content_type, "application/merge-patch+json");
        assert_eq!(req.body, r#"{"status":{"phase":"Running"}}"#);
        assert!(!patch_status(&api, "gone", &json!({})).await.unwrap());
        assert!(patch_status(&api, "other", &json!({})).await.is_err());
    }
}
