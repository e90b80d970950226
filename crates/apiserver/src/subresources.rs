//! Subresources with their own shapes: scale, binding, eviction.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use navarch_api::catalog::{self, Subresource};
use navarch_api::patch::{self as p, PatchType};
use navarch_api::selectors::LabelSelector;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::handler::{json_response, success_status, App};
use crate::object::{self, meta_mut};
use crate::registry::WriteOptions;
use crate::request::{Query, ResourceRequest, Verb};

/// The autoscaling/v1 Scale view of a workload.
pub fn scale_of(obj: &Value) -> Value {
    let meta = obj.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| {
            // ReplicationControllers use a plain map; apps kinds a LabelSelector.
            if s.get("matchLabels").is_some() || s.get("matchExpressions").is_some() {
                LabelSelector::from_json(s)
                    .map(|l| l.to_string())
                    .unwrap_or_default()
            } else {
                s.as_object()
                    .map(|m| {
                        m.iter()
                            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                            .collect::<Vec<_>>()
                            .join(",")
                    })
                    .unwrap_or_default()
            }
        })
        .unwrap_or_default();
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta.get("name"), "namespace": meta.get("namespace"), "uid": meta.get("uid"),
            "resourceVersion": meta.get("resourceVersion"), "creationTimestamp": meta.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(1)},
        "status": {
            "replicas": obj.pointer("/status/replicas").and_then(Value::as_i64).unwrap_or(0),
            "selector": selector,
        },
    })
}

pub async fn scale(
    app: &App,
    rr: &ResourceRequest,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult<Response> {
    let reg = &app.registry;
    let rt = rr.rt;
    let ns = rr.namespace.as_deref();
    let name = rr.name.as_deref().unwrap_or("");
    let opts = WriteOptions {
        dry_run: q.dry_run,
        field_manager: q.field_manager.clone(),
    };
    match rr.verb {
        Verb::Get => Ok(json_response(
            StatusCode::OK,
            &scale_of(&reg.get(rt, ns, name).await?),
        )),
        Verb::Update | Verb::Patch => {
            let scale_rt = catalog::by_plural("", "v1", "pods").unwrap_or(rt);
            let mut body_scale: Option<Value> = None;
            if rr.verb == Verb::Update {
                let v = crate::body::decode_object(headers, body)?;
                body_scale = Some(v);
            }
            let pt = if rr.verb == Verb::Patch {
                let ct = headers
                    .get(axum::http::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                Some(PatchType::from_content_type(ct).ok_or_else(|| {
                    ApiError::unsupported_media_type(format!("unsupported patch type {ct}"))
                })?)
            } else {
                None
            };
            let out = reg
                .guaranteed_update(rt, ns, name, None, &opts, |cur| {
                    let current_scale = scale_of(cur);
                    let wanted = match (&body_scale, pt) {
                        (Some(s), _) => {
                            if let Some(rv) = object::meta_str(s, "resourceVersion").filter(|r| !r.is_empty()) {
                                if Some(rv) != object::meta_str(cur, "resourceVersion") {
                                    return Err(ApiError::modified(rt, name));
                                }
                            }
                            s.clone()
                        }
                        (None, Some(PatchType::Apply)) => {
                            let applied = p::parse_apply_body(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                            p::merge_patch(&current_scale, &applied).map_err(|e| ApiError::bad_request(e.to_string()))?
                        }
                        (None, Some(PatchType::StrategicMerge)) => {
                            let patch: Value = serde_json::from_slice(body).map_err(|e| ApiError::bad_request(e.to_string()))?;
                            p::merge_patch(&current_scale, &patch).map_err(|e| ApiError::bad_request(e.to_string()))?
                        }
                        (None, Some(t)) => p::apply_patch(t, &current_scale, body, scale_rt)
                            .map_err(|e| ApiError::bad_request(e.to_string()))?,
                        (None, None) => current_scale.clone(),
                    };
                    let replicas = wanted.pointer("/spec/replicas").and_then(Value::as_i64).unwrap_or(0);
                    if replicas < 0 {
                        return Err(ApiError::new(422, "Invalid", format!(
                            "Scale.autoscaling \"{name}\" is invalid: spec.replicas: Invalid value: {replicas}: must be greater than or equal to 0"
                        )));
                    }
                    let mut n = cur.clone();
                    n["spec"]["replicas"] = json!(replicas);
                    meta_mut(&mut n).remove("resourceVersion");
                    Ok(n)
                })
                .await?;
            Ok(json_response(StatusCode::OK, &scale_of(&out)))
        }
        _ => Err(ApiError::method_not_allowed(
            "scale supports get, update and patch",
        )),
    }
}

/// pods/binding: assign a pod to a node (the scheduler's write).
pub async fn binding(app: &App, rr: &ResourceRequest, body: &[u8]) -> ApiResult<Response> {
    let reg = &app.registry;
    let rt = rr.rt;
    let ns = rr.namespace.as_deref();
    let name = rr.name.as_deref().unwrap_or("");
    let b: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid Binding: {e}")))?;
    let node = b
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::new(
            422,
            "Invalid",
            format!("Binding \"{name}\" is invalid: target.name: Required value"),
        ));
    }
    loop {
        let (kv, cur) = reg.get_kv_pub(rt, ns, name).await?;
        if let Some(n) = cur
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!("pod {name} is already assigned to node \"{n}\""),
            ));
        }
        if cur.pointer("/metadata/deletionTimestamp").is_some() {
            return Err(ApiError::conflict(
                rt,
                name,
                &format!("pod {name} is being deleted, cannot be assigned to a host"),
            ));
        }
        let mut n = cur.clone();
        n["spec"]["nodeName"] = json!(node);
        let conds = n["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c["type"] != "PodScheduled")
            .collect();
        conds.push(json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": object::now_rfc3339()}));
        n["status"]["conditions"] = json!(conds);
        match reg
            .write_update(rt, ns, name, &kv, &cur, n, &WriteOptions::default())
            .await
        {
            Err(e) if e.code == 409 => continue,
            Err(e) => return Err(e),
            Ok(_) => break,
        }
    }
    let mut s = success_status(rt, name, None);
    s["code"] = json!(201);
    Ok(json_response(StatusCode::CREATED, &s))
}

/// pods/eviction: a policy-checked delete.
pub async fn eviction(app: &App, rr: &ResourceRequest, body: &[u8]) -> ApiResult<Response> {
    let reg = &app.registry;
    let rt = rr.rt;
    let ns = rr.namespace.as_deref();
    let name = rr.name.as_deref().unwrap_or("");
    let b: Value = if body.is_empty() {
        json!({})
    } else {
        serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("invalid Eviction: {e}")))?
    };
    let opts = b.get("deleteOptions").cloned().unwrap_or_else(|| json!({}));
    let pod = reg.get(rt, ns, name).await?;
    // A pod that is not running (or already terminal) may always be evicted.
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if phase == "Running" || phase == "Pending" {
        check_disruption_budgets(app, ns, &pod).await?;
    }
    reg.delete(rt, ns, name, &opts, None, false).await?;
    let mut s = success_status(rt, name, None);
    s["code"] = json!(201);
    Ok(json_response(StatusCode::CREATED, &s))
}

/// Parameters of pods/log passed on to the agent.
const LOG_PARAMS: &[&str] = &[
    "follow",
    "tailLines",
    "timestamps",
    "previous",
    "sinceSeconds",
    "sinceTime",
    "limitBytes",
];

/// pods/log: choose the container, find the pod's node, proxy to its agent.
pub async fn log(app: &App, rr: &ResourceRequest, q: &Query) -> ApiResult<Response> {
    let reg = &app.registry;
    let rt = rr.rt;
    let ns = rr.namespace.as_deref().unwrap_or("default");
    let name = rr.name.as_deref().unwrap_or("");
    let pod = reg.get(rt, Some(ns), name).await?;
    let names: Vec<String> = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let init_names: Vec<String> = pod
        .pointer("/spec/initContainers")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|c| c.get("name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let container = match q.get("container").filter(|c| !c.is_empty()) {
        Some(c) => {
            if !names.iter().any(|n| n == c) && !init_names.iter().any(|n| n == c) {
                return Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )));
            }
            c.to_string()
        }
        None => {
            let default = pod
                .pointer("/metadata/annotations/kubectl.kubernetes.io~1default-container")
                .and_then(Value::as_str);
            match (default, names.as_slice()) {
                (Some(d), _) => d.to_string(),
                (None, [only]) => only.clone(),
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "a container name must be specified for pod {name}, choose one of: [{}]",
                        names.join(" ")
                    )))
                }
            }
        }
    };
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() {
        return Err(ApiError::bad_request(format!(
            "container \"{container}\" in pod \"{name}\" is waiting to start: pod has not been scheduled"
        )));
    }
    let nodes = catalog::by_plural("", "v1", "nodes")
        .ok_or_else(|| ApiError::internal("no nodes resource"))?;
    let node_obj = reg.get(nodes, None, node).await?;
    let (host, port) = crate::nodeproxy::node_endpoint(&node_obj).ok_or_else(|| {
        ApiError::bad_request(format!("node {node} has no address to reach its agent"))
    })?;
    let query = {
        let mut ser = url::form_urlencoded::Serializer::new(String::new());
        for p in LOG_PARAMS {
            if let Some(v) = q.get(p) {
                ser.append_pair(p, v);
            }
        }
        ser.finish()
    };
    let path = format!(
        "/containerLogs/{}/{}/{}{}{}",
        ns,
        name,
        container,
        if query.is_empty() { "" } else { "?" },
        query
    );
    app.node_client.get(&host, port, &path).await
}

/// Refuse an eviction that a PodDisruptionBudget covering the pod does not allow
/// (429, as upstream; `kubectl drain` retries), and count the disruption.
async fn check_disruption_budgets(app: &App, ns: Option<&str>, pod: &Value) -> ApiResult<()> {
    let Some(pdb_rt) = catalog::by_plural("policy", "v1", "poddisruptionbudgets") else {
        return Ok(());
    };
    let reg = &app.registry;
    let pdbs = reg
        .list(pdb_rt, ns, &crate::registry::Filter::default(), None, None)
        .await?;
    let labels = object::labels(pod);
    for pdb in &pdbs.items {
        let Some(sel) = pdb.pointer("/spec/selector") else {
            continue;
        };
        let Ok(sel) = LabelSelector::from_json(sel) else {
            continue;
        };
        if sel.is_everything() || !sel.matches(labels) {
            continue;
        }
        let allowed = pdb
            .pointer("/status/disruptionsAllowed")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if allowed < 1 {
            let pdb_name = object::name(pdb).to_string();
            return Err(ApiError::new(429, "TooManyRequests",
                "Cannot evict pod as it would violate the pod's disruption budget.")
                .with_details(json!({"causes": [{"reason": "DisruptionBudget",
                    "message": format!("The disruption budget {pdb_name} needs {} healthy pods and has {} currently",
                        pdb.pointer("/status/desiredHealthy").and_then(Value::as_i64).unwrap_or(0),
                        pdb.pointer("/status/currentHealthy").and_then(Value::as_i64).unwrap_or(0))}]})));
        }
        // Count this disruption so concurrent evictions cannot all pass.
        let pdb_name = object::name(pdb).to_string();
        let pod_name = object::name(pod).to_string();
        reg.guaranteed_update(
            pdb_rt,
            ns,
            &pdb_name,
            Some(Subresource::Status),
            &WriteOptions::default(),
            |cur| {
                let mut n = cur.clone();
                let a = n
                    .pointer("/status/disruptionsAllowed")
                    .and_then(Value::as_i64)
                    .unwrap_or(0);
                if a < 1 {
                    return Err(ApiError::new(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                    ));
                }
                n["status"]["disruptionsAllowed"] = json!(a - 1);
                n["status"]["disruptedPods"][pod_name.as_str()] = json!(object::now_rfc3339());
                Ok(n)
            },
        )
        .await?;
    }
    Ok(())
}
