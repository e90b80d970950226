//! ResourceQuota status: keeps `status.hard` (a copy of `spec.hard`) and
//! `status.used` current. Admission itself (rejecting creates over quota) is in
//! the API server and counts from the stored objects, so a stale `status.used`
//! never lets anything through; this controller is for display
//! (`kubectl describe quota`).
//!
//! Counted: `pods` (non-terminal), `requests.*`/`limits.*` and bare
//! `cpu`/`memory` of non-terminal pods, `configmaps`, `secrets`, `services`,
//! `services.nodeports`, `services.loadbalancers`, `persistentvolumeclaims`,
//! `replicationcontrollers`, `resourcequotas`, and `count/<resource>` of those.
//! A quota is re-synced when a pod of its namespace changes, and every 10 s.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, Pod, ReplicationController, ResourceQuota, Secret, Service,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::Store;
use kube::{Client, ResourceExt};
use serde_json::json;

use crate::podcache::{PodCache, PodChanges};
use crate::util::{SyncError, TriggeredController};

/// How long a failed quota sync waits before it is retried.
const RETRY: Duration = Duration::from_secs(2);

struct Ctx {
    client: Client,
    pods: Store<Pod>,
}

/// Run the controller until the process ends (with a pod cache of its own).
pub async fn run(client: Client) {
    let (store, changes) = PodCache::spawn_private(client.clone());
    run_with_pods(client, store, changes).await;
}

/// Run the controller until the process ends, counting pods from a shared
/// [`PodCache`]'s `store` and woken by its `changes`.
pub async fn run_with_pods(client: Client, pods: Store<Pod>, changes: PodChanges) {
    // Any pod change may change the usage of every quota of its namespace.
    let controller = TriggeredController::new(Api::<ResourceQuota>::all(client.clone()))
        .woken_by_pods(changes, |_: &ResourceQuota, _| true);
    let ctx = Arc::new(Ctx { client, pods });
    controller
        .run("resourcequota controller", reconcile, ctx, RETRY)
        .await;
}

async fn reconcile(q: Arc<ResourceQuota>, ctx: Arc<Ctx>) -> Result<Action, SyncError> {
    let client = &ctx.client;
    let ns = q.namespace().unwrap_or_default();
    let hard = q
        .spec
        .as_ref()
        .and_then(|s| s.hard.clone())
        .unwrap_or_default();
    let keys: Vec<String> = hard.keys().cloned().collect();
    // Nothing is counted before the pod cache has been listed.
    if ctx.pods.wait_until_ready().await.is_err() {
        return Ok(Action::requeue(RETRY));
    }
    let used = usage(client, &ctx.pods, &ns, &keys).await?;
    let used: BTreeMap<String, Quantity> = used
        .into_iter()
        .map(|(k, v)| {
            let q = Quantity(format_milli(&k, v));
            (k, q)
        })
        .collect();
    let status = q.status.clone().unwrap_or_default();
    if status.hard.as_ref() != Some(&hard) || status.used.as_ref() != Some(&used) {
        let api: Api<ResourceQuota> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"status": {"hard": hard, "used": used}});
        api.patch_status(
            &q.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }
    Ok(Action::requeue(Duration::from_secs(10)))
}

/// Usage in namespace `ns` of each quota key in `keys`, in milli-units (pods
/// as `pods` holds them, everything else listed live).
async fn usage(
    client: &Client,
    pods: &Store<Pod>,
    ns: &str,
    keys: &[String],
) -> Result<BTreeMap<String, i128>, SyncError> {
    let mut used: BTreeMap<String, i128> = keys.iter().map(|k| (k.clone(), 0)).collect();
    let wants = |names: &[&str]| keys.iter().any(|k| names.contains(&k.as_str()));
    let lp = ListParams::default();
    let pod_keys = keys.iter().any(|k| {
        k == "pods"
            || k == "count/pods"
            || k == "cpu"
            || k == "memory"
            || k.starts_with("requests.")
            || k.starts_with("limits.")
    });
    if pod_keys {
        for p in pods.state_filter(|p| p.metadata.namespace.as_deref() == Some(ns)) {
            let u = pod_usage(&p);
            if u.contains_key("pods") {
                add(&mut used, "count/pods", 1000);
            }
            for (k, v) in u {
                add(&mut used, &k, v);
            }
        }
    }
    macro_rules! count {
        ($t:ty, $plural:expr) => {
            if wants(&[$plural, concat!("count/", $plural)]) {
                let api: Api<$t> = Api::namespaced(client.clone(), ns);
                let n = api.list(&lp).await?.items.len() as i128 * 1000;
                add(&mut used, $plural, n);
                add(&mut used, concat!("count/", $plural), n);
            }
        };
    }
    count!(ConfigMap, "configmaps");
    count!(Secret, "secrets");
    count!(PersistentVolumeClaim, "persistentvolumeclaims");
    count!(ReplicationController, "replicationcontrollers");
    count!(ResourceQuota, "resourcequotas");
    if wants(&[
        "services",
        "count/services",
        "services.nodeports",
        "services.loadbalancers",
    ]) {
        let api: Api<Service> = Api::namespaced(client.clone(), ns);
        for s in api.list(&lp).await?.items {
            add(&mut used, "services", 1000);
            add(&mut used, "count/services", 1000);
            match s.spec.as_ref().and_then(|s| s.type_.as_deref()) {
                Some("NodePort") => add(&mut used, "services.nodeports", 1000),
                Some("LoadBalancer") => add(&mut used, "services.loadbalancers", 1000),
                _ => {}
            }
        }
    }
    Ok(used)
}

fn add(used: &mut BTreeMap<String, i128>, key: &str, v: i128) {
    if let Some(u) = used.get_mut(key) {
        *u += v;
    }
}

/// What a pod counts against quota (milli-units): nothing once terminal;
/// otherwise `pods` and its effective requests and limits (sum of app
/// containers, or the largest init container if bigger).
pub fn pod_usage(p: &Pod) -> BTreeMap<String, i128> {
    let mut out = BTreeMap::new();
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref());
    if matches!(phase, Some("Succeeded") | Some("Failed")) {
        return out;
    }
    out.insert("pods".to_string(), 1000);
    let Some(spec) = p.spec.as_ref() else {
        return out;
    };
    for kind in ["requests", "limits"] {
        let pick = |c: &k8s_openapi::api::core::v1::Container| {
            let r = c.resources.clone().unwrap_or_default();
            if kind == "requests" {
                r.requests.unwrap_or_default()
            } else {
                r.limits.unwrap_or_default()
            }
        };
        let mut sum: BTreeMap<String, i128> = BTreeMap::new();
        for c in &spec.containers {
            for (k, q) in pick(c) {
                *sum.entry(k).or_default() += parse_milli(&q.0).unwrap_or(0);
            }
        }
        for c in spec.init_containers.iter().flatten() {
            for (k, q) in pick(c) {
                let e = sum.entry(k).or_default();
                *e = (*e).max(parse_milli(&q.0).unwrap_or(0));
            }
        }
        for (k, v) in sum {
            if kind == "requests" && (k == "cpu" || k == "memory") {
                out.insert(k.clone(), v);
            }
            out.insert(format!("{kind}.{k}"), v);
        }
    }
    out
}

/// A quantity (`500m`, `1.5`, `128Mi`, `1e3`, `2G`) in milli-units.
pub fn parse_milli(s: &str) -> Option<i128> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-' || c == '+'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    let neg = int.starts_with('-');
    let int: i128 = int.trim_start_matches(['-', '+']).parse().unwrap_or(0);
    let frac_digits = frac.len().min(9) as u32;
    let frac_val: i128 = if frac.is_empty() {
        0
    } else {
        frac[..frac_digits as usize].parse().ok()?
    };
    // value in nano-units, then scaled
    let nano = int * 1_000_000_000 + frac_val * 10i128.pow(9 - frac_digits);
    let scaled = match suffix {
        "" => nano,
        "m" => nano / 1000,
        "k" => nano * 1000,
        "M" => nano * 1_000_000,
        "G" => nano * 1_000_000_000,
        "T" => nano * 1_000_000_000_000,
        "Ki" => nano << 10,
        "Mi" => nano << 20,
        "Gi" => nano << 30,
        "Ti" => nano << 40,
        e if e.starts_with('e') || e.starts_with('E') => {
            let exp: u32 = e[1..].parse().ok()?;
            nano * 10i128.checked_pow(exp)?
        }
        _ => return None,
    };
    let milli = scaled / 1_000_000;
    Some(if neg { -milli } else { milli })
}

/// Milli-units of quota key `key` in canonical form (`500m`, `2`, `1Gi`).
pub fn format_milli(key: &str, milli: i128) -> String {
    if milli % 1000 != 0 {
        return format!("{milli}m");
    }
    let n = milli / 1000;
    let base = key.rsplit('.').next().unwrap_or(key);
    if (base == "memory" || base.contains("storage")) && n != 0 {
        for (suffix, size) in [
            ("Ti", 1i128 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if n % size == 0 {
                return format!("{}{suffix}", n / size);
            }
        }
    }
    n.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec, PodStatus, ResourceRequirements};

    #[test]
    fn parses_and_formats() {
        assert_eq!(parse_milli("500m"), Some(500));
        assert_eq!(parse_milli("1.5"), Some(1500));
        assert_eq!(parse_milli("128Mi"), Some((128 << 20) * 1000));
        assert_eq!(parse_milli("1e3"), Some(1_000_000));
        assert_eq!(parse_milli("2k"), Some(2_000_000));
        assert_eq!(parse_milli("bogus"), None);
        assert_eq!(format_milli("requests.cpu", 1500), "1500m");
        assert_eq!(format_milli("requests.cpu", 2000), "2");
        assert_eq!(format_milli("limits.memory", (1 << 30) * 1000), "1Gi");
        assert_eq!(format_milli("pods", 3000), "3");
    }

    #[test]
    fn pod_usage_counts_live_pods() {
        let res = |cpu: &str| ResourceRequirements {
            requests: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
            ..Default::default()
        };
        let mut p = Pod {
            spec: Some(PodSpec {
                containers: vec![
                    Container {
                        resources: Some(res("250m")),
                        ..Default::default()
                    },
                    Container {
                        resources: Some(res("250m")),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let u = pod_usage(&p);
        assert_eq!(u["pods"], 1000);
        assert_eq!(u["requests.cpu"], 500);
        assert_eq!(u["cpu"], 500);
        p.status = Some(PodStatus {
            phase: Some("Succeeded".into()),
            ..Default::default()
        });
        assert!(pod_usage(&p).is_empty());
    }

    #[tokio::test]
    async fn pods_are_counted_from_the_cache_and_the_rest_listed() {
        use crate::util::fake::{self, Reply};
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
        use kube::runtime::{reflector, watcher};

        let pod = |name: &str, ns: &str, cpu: &str, phase: &str| Pod {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    resources: Some(ResourceRequirements {
                        requests: Some([("cpu".to_string(), Quantity(cpu.into()))].into()),
                        ..Default::default()
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            status: Some(PodStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        };
        let (store, mut writer) = reflector::store::<Pod>();
        writer.apply_watcher_event(&watcher::Event::Init);
        for p in [
            pod("a", "ns", "600m", "Running"),
            pod("b", "ns", "200m", "Pending"),
            pod("done", "ns", "1", "Succeeded"),
            pod("x", "other", "1", "Running"),
        ] {
            writer.apply_watcher_event(&watcher::Event::InitApply(p));
        }
        writer.apply_watcher_event(&watcher::Event::InitDone);
        let (client, seen) = fake::client(|r| match r.path.as_str() {
            "/api/v1/namespaces/ns/configmaps" => Reply::ok(&serde_json::json!({
                "apiVersion": "v1", "kind": "ConfigMapList", "metadata": {},
                "items": [{"metadata": {"name": "one", "namespace": "ns"}}],
            })),
            _ => Reply::status(404),
        });
        let keys: Vec<String> = ["pods", "requests.cpu", "count/configmaps", "cpu"]
            .iter()
            .map(|k| k.to_string())
            .collect();
        let used = usage(&client, &store, "ns", &keys).await.unwrap();
        assert_eq!(used["pods"], 2000);
        assert_eq!(used["requests.cpu"], 800);
        assert_eq!(used["cpu"], 800);
        assert_eq!(used["count/configmaps"], 1000);
        let paths: Vec<String> = seen.requests().into_iter().map(|r| r.path).collect();
        assert_eq!(paths, ["/api/v1/namespaces/ns/configmaps"]);
    }
}
