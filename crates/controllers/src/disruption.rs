//! PodDisruptionBudget status: how many of the selected pods are healthy, how
//! many must stay healthy and so how many voluntary disruptions (evictions)
//! are allowed now. The API server's eviction endpoint reads it.
//!
//! `expectedPods` is the sum of the `replicas` of the pods' controllers
//! (a ReplicaSet owned by a Deployment counts the Deployment's, a
//! StatefulSet its own); a pod without a controller counts as one.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};

use crate::podcache::{PodCache, PodChanges};
use crate::util::{self, SyncError, TriggeredController};

struct Ctx {
    client: Client,
    pods: Store<Pod>,
}

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client) {
    let (store, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, store, changes).await;
}

/// Run the controller until the process ends, reading pods from a shared
/// [`PodCache`]'s `store` and woken by its `changes`.
pub async fn run_with_pods(client: Client, pods: Store<Pod>, changes: PodChanges) {
    // A pod change concerns the budgets of its namespace that select it.
    let controller = TriggeredController::new(Api::<PodDisruptionBudget>::all(client.clone()))
        .woken_by_pods(changes, |pdb: &PodDisruptionBudget, pod| {
            util::selector_matches(
                pdb.spec.as_ref().and_then(|s| s.selector.as_ref()),
                pod.metadata.labels.as_ref(),
            )
        });
    let ctx = Arc::new(Ctx { client, pods });
    controller
        .run("disruption controller", reconcile, ctx, util::RETRY)
        .await;
}

/// `(desiredHealthy, disruptionsAllowed)` from the spec, the expected and healthy counts.
pub fn budget(
    min_available: Option<&IntOrString>,
    max_unavailable: Option<&IntOrString>,
    expected: i32,
    healthy: i32,
) -> (i32, i32) {
    let desired = match (min_available, max_unavailable) {
        (_, Some(mu)) => (expected - util::int_or_percent(Some(mu), "0", expected, true)).max(0),
        (Some(ma), None) => util::int_or_percent(Some(ma), "0", expected, true),
        (None, None) => expected,
    };
    (desired, (healthy - desired).max(0))
}

async fn expected_pods(client: &Client, ns: &str, pods: &[&Pod]) -> Result<i32, kube::Error> {
    let mut controllers: BTreeMap<(String, String), i32> = BTreeMap::new();
    let mut bare = 0;
    for p in pods {
        let Some(r) = util::controller_ref(&p.metadata) else {
            bare += 1;
            continue;
        };
        let key = (r.kind.clone(), r.name.clone());
        if controllers.contains_key(&key) {
            continue;
        }
        let scale = match r.kind.as_str() {
            "ReplicaSet" => {
                let rs = Api::<ReplicaSet>::namespaced(client.clone(), ns)
                    .get_opt(&r.name)
                    .await?;
                match rs
                    .as_ref()
                    .and_then(|rs| util::controller_ref(&rs.metadata))
                {
                    Some(d) if d.kind == "Deployment" => {
                        let dkey = ("Deployment".to_string(), d.name.clone());
                        if controllers.contains_key(&dkey) {
                            continue;
                        }
                        let dep = Api::<Deployment>::namespaced(client.clone(), ns)
                            .get_opt(&d.name)
                            .await?;
                        controllers.insert(dkey, dep.and_then(|d| d.spec?.replicas).unwrap_or(1));
                        continue;
                    }
                    _ => rs.and_then(|rs| rs.spec?.replicas).unwrap_or(1),
                }
            }
            "StatefulSet" => Api::<StatefulSet>::namespaced(client.clone(), ns)
                .get_opt(&r.name)
                .await?
                .and_then(|s| s.spec?.replicas)
                .unwrap_or(1),
            _ => {
                bare += 1;
                continue;
            }
        };
        controllers.insert(key, scale);
    }
    Ok(controllers.values().sum::<i32>() + bare)
}

/// The pods of namespace `ns` in `store` that `selector` selects and that
/// count for a budget (active, not being deleted).
fn selected_pods(store: &Store<Pod>, ns: &str, selector: Option<&LabelSelector>) -> Vec<Arc<Pod>> {
    store.state_filter(|p| {
        p.metadata.namespace.as_deref() == Some(ns)
            && util::selector_matches(selector, p.metadata.labels.as_ref())
            && p.metadata.deletion_timestamp.is_none()
            && util::pod_is_active(p)
    })
}

async fn reconcile(pdb: Arc<PodDisruptionBudget>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let client = &ctx.client;
    let ns = pdb.namespace().unwrap_or_default();
    let name = pdb.name_any();
    let spec = pdb.spec.clone().unwrap_or_default();
    // Nothing is decided before the pod cache has been listed.
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(util::RETRY));
    }
    let listed = selected_pods(&ctx.pods, &ns, spec.selector.as_ref());
    let pods: Vec<&Pod> = listed.iter().map(Arc::as_ref).collect();
    let healthy = i32::try_from(pods.iter().filter(|p| util::pod_is_ready(p)).count()).unwrap_or(0);
    let uses_percent_or_max = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let expected = if uses_percent_or_max {
        expected_pods(client, &ns, &pods).await?
    } else {
        i32::try_from(pods.len()).unwrap_or(0)
    };
    let (desired, allowed) = budget(
        spec.min_available.as_ref(),
        spec.max_unavailable.as_ref(),
        expected,
        healthy,
    );
    let old = pdb.status.clone().unwrap_or_default();
    let ok = allowed > 0;
    let prev = old
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == "DisruptionAllowed")
        .cloned();
    let status_str = if ok { "True" } else { "False" };
    let cond = Condition {
        type_: "DisruptionAllowed".into(),
        status: status_str.into(),
        reason: if ok {
            "SufficientPods"
        } else {
            "InsufficientPods"
        }
        .into(),
        message: String::new(),
        observed_generation: pdb.metadata.generation,
        last_transition_time: match &prev {
            Some(p) if p.status == status_str => p.last_transition_time.clone(),
            _ => util::now(),
        },
    };
    let status = PodDisruptionBudgetStatus {
        current_healthy: healthy,
        desired_healthy: desired,
        disruptions_allowed: allowed,
        expected_pods: expected,
        observed_generation: pdb.metadata.generation,
        disrupted_pods: old.disrupted_pods.clone(),
        conditions: Some(vec![cond]),
    };
    if pdb.status.as_ref() != Some(&status) {
        let api: Api<PodDisruptionBudget> = Api::namespaced(client.clone(), &ns);
        // A PDB deleted meanwhile (`false`) is no error.
        util::patch_status(&api, &name, &status).await?;
    }
    Ok(Action::requeue(Duration::from_secs(60)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets() {
        let i = |n| IntOrString::Int(n);
        let s = |v: &str| IntOrString::String(v.into());
        assert_eq!(budget(Some(&i(2)), None, 3, 3), (2, 1));
        assert_eq!(budget(Some(&i(2)), None, 3, 2), (2, 0));
        assert_eq!(budget(None, Some(&i(1)), 3, 3), (2, 1));
        assert_eq!(budget(Some(&s("50%")), None, 3, 3), (2, 1));
        assert_eq!(budget(None, Some(&s("50%")), 4, 4), (2, 2));
        assert_eq!(budget(None, None, 3, 3), (3, 0));
    }

    use crate::util::fake::{self, Reply};
    use k8s_openapi::api::core::v1::{PodCondition, PodStatus};
    use k8s_openapi::api::policy::v1::PodDisruptionBudgetSpec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
    use kube::runtime::reflector;
    use kube::runtime::watcher;

    fn pod(name: &str, ns: &str, app: &str, phase: &str, ready: bool) -> Pod {
        Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: if ready { "True" } else { "False" }.into(),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn pdb(min_available: i32) -> PodDisruptionBudget {
        PodDisruptionBudget {
            metadata: ObjectMeta {
                name: Some("budget".into()),
                namespace: Some("ns".into()),
                generation: Some(1),
                ..Default::default()
            },
            spec: Some(PodDisruptionBudgetSpec {
                min_available: Some(IntOrString::Int(min_available)),
                selector: Some(LabelSelector {
                    match_labels: Some(BTreeMap::from([("app".to_string(), "web".to_string())])),
                    match_expressions: None,
                }),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[tokio::test]
    async fn status_is_counted_from_the_pod_cache() {
        let (store, mut writer) = reflector::store::<Pod>();
        let mut deleting = pod("deleting", "ns", "web", "Running", true);
        deleting.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
        writer.apply_watcher_event(&watcher::Event::Init);
        for p in [
            pod("a", "ns", "web", "Running", true),
            pod("b", "ns", "web", "Running", true),
            pod("c", "ns", "web", "Pending", false),
            pod("done", "ns", "web", "Succeeded", false),
            deleting,
            pod("other-app", "ns", "db", "Running", true),
            pod("other-ns", "elsewhere", "web", "Running", true),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);

        let (client, seen) = fake::client(|_| Reply::ok(&pdb(2)));
        let ctx = Arc::new(Ctx {
            client,
            pods: store,
        });
        let action = reconcile(Arc::new(pdb(2)), ctx).await.unwrap();
        assert_eq!(action, Action::requeue(Duration::from_secs(60)));
        let reqs = seen.requests();
        // No pod list: one status patch.
        assert_eq!(reqs.len(), 1, "{reqs:?}");
        assert_eq!(reqs[0].method, "PATCH");
        assert_eq!(
            reqs[0].path,
            "/apis/policy/v1/namespaces/ns/poddisruptionbudgets/budget/status"
        );
        let body: serde_json::Value = serde_json::from_str(&reqs[0].body).unwrap();
        let st = &body["status"];
        assert_eq!(st["currentHealthy"], 2);
        assert_eq!(st["desiredHealthy"], 2);
        assert_eq!(st["expectedPods"], 3);
        assert_eq!(st["disruptionsAllowed"], 0);
        assert_eq!(st["conditions"][0]["reason"], "InsufficientPods");
    }
}
