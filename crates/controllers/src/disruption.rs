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
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::{Client, ResourceExt};

use crate::util::{self, SyncError};

/// Run the controller until the process ends.
pub async fn run(client: Client) {
    // A pod change concerns the budgets of its namespace that select it.
    let controller = util::woken_by_pods(&client, |pdb: &PodDisruptionBudget, pod| {
        util::selector_matches(
            pdb.spec.as_ref().and_then(|s| s.selector.as_ref()),
            pod.metadata.labels.as_ref(),
        )
    });
    let ctx = Arc::new(client);
    util::run_controller(
        "disruption controller",
        controller,
        reconcile,
        ctx,
        util::RETRY,
    )
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

async fn reconcile(
    pdb: Arc<PodDisruptionBudget>,
    client: Arc<Client>,
) -> Result<Action, SyncError> {
    let ns = pdb.namespace().unwrap_or_default();
    let name = pdb.name_any();
    let spec = pdb.spec.clone().unwrap_or_default();
    let pod_api: Api<Pod> = Api::namespaced((*client).clone(), &ns);
    let lp = ListParams::default().labels(&util::match_labels_query(spec.selector.as_ref()));
    let listed = pod_api.list(&lp).await?.items;
    let pods: Vec<&Pod> = listed
        .iter()
        .filter(|p| util::selector_matches(spec.selector.as_ref(), p.metadata.labels.as_ref()))
        .filter(|p| p.metadata.deletion_timestamp.is_none() && util::pod_is_active(p))
        .collect();
    let healthy = i32::try_from(pods.iter().filter(|p| util::pod_is_ready(p)).count()).unwrap_or(0);
    let uses_percent_or_max = spec.max_unavailable.is_some()
        || matches!(spec.min_available, Some(IntOrString::String(_)));
    let expected = if uses_percent_or_max {
        expected_pods(&client, &ns, &pods).await?
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
        let api: Api<PodDisruptionBudget> = Api::namespaced((*client).clone(), &ns);
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
}
