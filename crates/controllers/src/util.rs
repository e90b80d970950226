//! Helpers shared by the controllers: label selectors, owner references, pod
//! readiness, int-or-percent values and template hashing; the controller
//! scaffolding ([`SyncError`], [`Context`], [`requeue_on_error`],
//! [`run_controller`], [`run_applier`], [`TriggeredController`]); API calls made the same way
//! everywhere ([`get_live`], [`list_controlled`], [`delete_same`],
//! [`set_owner_refs`], [`patch_status`]) and [`PodControl`].

mod api;
#[cfg(test)]
pub(crate) mod fake;
mod podcontrol;
mod scaffold;
mod triggered;

pub use api::{delete_same, get_live, list_controlled, patch_status, set_owner_refs};
pub use podcontrol::PodControl;
pub use scaffold::{
    owning, requeue_on_error, run_applier, run_controller, Context, SyncError, RETRY,
};
pub use triggered::{concerned, pod_owners, TriggeredController};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

/// Label put on ReplicaSets (selector, template) and their pods by the Deployment controller.
pub const POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Does `selector` match `labels`? A missing selector matches nothing; an empty
/// one matches everything (as `metav1.LabelSelectorAsSelector`).
pub fn selector_matches(
    selector: Option<&LabelSelector>,
    labels: Option<&BTreeMap<String, String>>,
) -> bool {
    let Some(sel) = selector else {
        return false;
    };
    let empty = BTreeMap::new();
    let labels = labels.unwrap_or(&empty);
    if let Some(ml) = &sel.match_labels {
        if ml.iter().any(|(k, v)| labels.get(k) != Some(v)) {
            return false;
        }
    }
    for e in sel.match_expressions.iter().flatten() {
        let values = e.values.as_deref().unwrap_or(&[]);
        let got = labels.get(&e.key);
        let ok = match e.operator.as_str() {
            "In" => got.is_some_and(|v| values.contains(v)),
            "NotIn" => got.is_none_or(|v| !values.contains(v)),
            "Exists" => got.is_some(),
            "DoesNotExist" => got.is_none(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

/// Is the selector empty (it would select every object)?
pub fn selector_is_empty(selector: Option<&LabelSelector>) -> bool {
    selector.is_none_or(|s| {
        s.match_labels.as_ref().is_none_or(|m| m.is_empty())
            && s.match_expressions.as_ref().is_none_or(|m| m.is_empty())
    })
}

/// The controller owner reference of an object, if any.
pub fn controller_ref(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
}

/// Is `meta` controlled by the object with `uid`?
pub fn is_controlled_by(meta: &ObjectMeta, uid: &str) -> bool {
    controller_ref(meta).is_some_and(|r| r.uid == uid)
}

/// A controller owner reference (`controller` and `blockOwnerDeletion` true).
pub fn owner_ref(api_version: &str, kind: &str, meta: &ObjectMeta) -> OwnerReference {
    OwnerReference {
        api_version: api_version.to_string(),
        kind: kind.to_string(),
        name: meta.name.clone().unwrap_or_default(),
        uid: meta.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(true),
    }
}

/// Is the pod counted as a replica (not terminal, not being deleted)?
pub fn pod_is_active(pod: &Pod) -> bool {
    let phase = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("");
    phase != "Succeeded" && phase != "Failed" && pod.metadata.deletion_timestamp.is_none()
}

/// When the pod's `Ready` condition became true, if it is ready.
pub fn pod_ready_since(pod: &Pod) -> Option<Option<Timestamp>> {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.as_ref().map(|t| t.0))
}

/// Is the pod ready?
pub fn pod_is_ready(pod: &Pod) -> bool {
    pod_ready_since(pod).is_some()
}

/// Seconds until a ready pod becomes available (`Some(0)` when it already
/// is), `None` when it is not ready.
pub fn pod_available_in(pod: &Pod, min_ready_seconds: i32, now: Timestamp) -> Option<i64> {
    let since = pod_ready_since(pod)?;
    if min_ready_seconds <= 0 {
        return Some(0);
    }
    let Some(since) = since else {
        return Some(0);
    };
    let elapsed = now.as_second() - since.as_second();
    Some((i64::from(min_ready_seconds) - elapsed).max(0))
}

/// Resolve an int-or-percent against `total`, rounding percentages up or down.
pub fn int_or_percent(v: Option<&IntOrString>, default: &str, total: i32, round_up: bool) -> i32 {
    let owned;
    let v = match v {
        Some(v) => v,
        None => {
            owned = IntOrString::String(default.to_string());
            &owned
        }
    };
    match v {
        IntOrString::Int(i) => *i,
        IntOrString::String(s) => {
            let Some(p) = s
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<i64>().ok())
            else {
                return s.trim().parse::<i32>().unwrap_or(0);
            };
            let prod = p * i64::from(total);
            let r = if round_up {
                (prod + 99).div_euclid(100)
            } else {
                prod.div_euclid(100)
            };
            i32::try_from(r).unwrap_or(i32::MAX)
        }
    }
}

/// The template without the `pod-template-hash` label (for comparing templates).
pub fn strip_hash(t: &PodTemplateSpec) -> PodTemplateSpec {
    let mut t = t.clone();
    if let Some(meta) = t.metadata.as_mut() {
        if let Some(l) = meta.labels.as_mut() {
            l.remove(POD_TEMPLATE_HASH);
            if l.is_empty() {
                meta.labels = None;
            }
        }
    }
    t
}

/// Are two templates equal ignoring the `pod-template-hash` label?
pub fn templates_equal(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let (a, b) = (strip_hash(a), strip_hash(b));
    // Compare as JSON so that `{}` and absent optional collections compare by value.
    serde_json::to_value(&a).ok() == serde_json::to_value(&b).ok()
}

/// A stable short hash of a pod template (FNV-1a over its JSON, plus the
/// collision count), encoded with the alphabet upstream uses for names.
pub fn template_hash(t: &PodTemplateSpec, collision_count: Option<i32>) -> String {
    let json = serde_json::to_vec(&strip_hash(t)).unwrap_or_default();
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |b: u8| {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    };
    json.iter().copied().for_each(&mut feed);
    if let Some(c) = collision_count {
        c.to_le_bytes().into_iter().for_each(&mut feed);
    }
    safe_encode(h)
}

fn safe_encode(mut v: u32) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut out = Vec::new();
    loop {
        out.push(ALPHABET[(v % 27) as usize]);
        v /= 27;
        if v == 0 || out.len() >= 10 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

/// Current time as an API `Time`.
pub fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now())
}

/// Is this kube error an API error with status `code`?
pub fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

/// A label-selector query string for the `matchLabels` part of `sel` (the
/// server filters with it; callers still check [`selector_matches`]).
pub fn match_labels_query(sel: Option<&LabelSelector>) -> String {
    sel.and_then(|s| s.match_labels.as_ref())
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// The message of an API error (or the error's text).
pub fn error_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => s.message.clone(),
        other => other.to_string(),
    }
}

/// The pod's phase (`""` when unset).
pub fn pod_phase(pod: &Pod) -> &str {
    pod.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

/// Does toleration `tol` tolerate `taint` (upstream `ToleratesTaint`)?
pub fn tolerates(
    tol: &k8s_openapi::api::core::v1::Toleration,
    taint: &k8s_openapi::api::core::v1::Taint,
) -> bool {
    if tol
        .effect
        .as_deref()
        .is_some_and(|e| !e.is_empty() && e != taint.effect)
    {
        return false;
    }
    let key = tol.key.as_deref().unwrap_or("");
    match tol.operator.as_deref().unwrap_or("Equal") {
        "Exists" => key.is_empty() || key == taint.key,
        "Equal" | "" => {
            key == taint.key
                && tol.value.as_deref().unwrap_or("") == taint.value.as_deref().unwrap_or("")
        }
        _ => false,
    }
}

/// Drive a controller's output stream to its end, logging failed syncs at debug
/// level (each controller's error policy already warns).
pub trait DrainLogged<T, E: std::fmt::Display>:
    futures::Stream<Item = Result<T, E>> + Sized
{
    fn drain_logged(self, controller: &'static str) -> impl std::future::Future<Output = ()> {
        use futures::StreamExt;
        self.for_each(move |r| {
            if let Err(e) = r {
                tracing::debug!(error = %e, "{controller}");
            }
            futures::future::ready(())
        })
    }
}

impl<S, T, E> DrainLogged<T, E> for S
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn selectors() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "NotIn".into(),
                values: Some(vec!["db".into()]),
            }]),
        };
        assert!(selector_matches(
            Some(&sel),
            Some(&labels(&[("app", "web")]))
        ));
        assert!(!selector_matches(
            Some(&sel),
            Some(&labels(&[("app", "web"), ("tier", "db")]))
        ));
        assert!(!selector_matches(
            Some(&sel),
            Some(&labels(&[("app", "api")]))
        ));
        assert!(!selector_matches(None, Some(&labels(&[("app", "web")]))));
        assert!(selector_matches(Some(&LabelSelector::default()), None));
        assert!(selector_is_empty(Some(&LabelSelector::default())));
        assert!(!selector_is_empty(Some(&sel)));
    }

    #[test]
    fn match_labels_query_joins_pairs() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("a", "1"), ("b", "2")])),
            match_expressions: None,
        };
        assert_eq!(match_labels_query(Some(&sel)), "a=1,b=2");
        assert_eq!(match_labels_query(None), "");
    }

    #[test]
    fn toleration_matching() {
        use k8s_openapi::api::core::v1::{Taint, Toleration};
        let taint = Taint {
            key: "node.kubernetes.io/unreachable".into(),
            effect: "NoExecute".into(),
            ..Default::default()
        };
        let exists = Toleration {
            key: Some(taint.key.clone()),
            operator: Some("Exists".into()),
            effect: Some("NoExecute".into()),
            ..Default::default()
        };
        assert!(tolerates(&exists, &taint));
        let wildcard = Toleration {
            operator: Some("Exists".into()),
            ..Default::default()
        };
        assert!(tolerates(&wildcard, &taint));
        let other_effect = Toleration {
            effect: Some("NoSchedule".into()),
            ..exists.clone()
        };
        assert!(!tolerates(&other_effect, &taint));
        let equal = Toleration {
            key: Some(taint.key.clone()),
            value: Some("x".into()),
            ..Default::default()
        };
        assert!(!tolerates(&equal, &taint));
    }

    #[test]
    fn percentages_round_as_upstream() {
        let p = IntOrString::String("25%".into());
        assert_eq!(int_or_percent(Some(&p), "25%", 10, true), 3);
        assert_eq!(int_or_percent(Some(&p), "25%", 10, false), 2);
        assert_eq!(int_or_percent(None, "25%", 3, true), 1);
        assert_eq!(int_or_percent(None, "25%", 3, false), 0);
        assert_eq!(
            int_or_percent(Some(&IntOrString::Int(2)), "25%", 3, false),
            2
        );
    }

    #[test]
    fn hash_is_stable_and_ignores_hash_label() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels(&[("app", "web")])),
                ..Default::default()
            }),
            spec: None,
        };
        let h1 = template_hash(&t, None);
        assert_eq!(h1, template_hash(&t, None));
        assert_ne!(h1, template_hash(&t, Some(1)));
        let mut t2 = t.clone();
        if let Some(m) = t2.metadata.as_mut() {
            m.labels
                .get_or_insert_with(Default::default)
                .insert(POD_TEMPLATE_HASH.into(), h1.clone());
        }
        assert_eq!(h1, template_hash(&t2, None));
        assert!(templates_equal(&t, &t2));
        assert!(h1
            .chars()
            .all(|c| "bcdfghjklmnpqrstvwxz2456789".contains(c)));
    }
}
