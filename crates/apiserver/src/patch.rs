//! PATCH: JSON patch, merge patch, strategic merge patch and server-side apply,
//! applied to the current object inside a conflict-retrying update.

use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use navarch_api::catalog::{ResourceType, Subresource};
use navarch_api::patch::{self as p, managed, PatchError, PatchType};
use serde_json::{json, Value};

use crate::body::{self, FieldValidation};
use crate::error::{ApiError, ApiResult};
use crate::handler::App;
use crate::registry::WriteOptions;
use crate::request::{Query, ResponseFormat};

pub fn patch_error(rt: &ResourceType, name: &str, e: PatchError) -> ApiError {
    match e {
        PatchError::Conflicts(conflicts) => {
            let causes: Vec<Value> = conflicts
                .iter()
                .map(|c| json!({"reason": "FieldManagerConflict", "message": c.to_string(), "field": c.field}))
                .collect();
            ApiError::new(
                409,
                "Conflict",
                format!(
                    "Apply failed with {} conflict{}: {}",
                    conflicts.len(),
                    if conflicts.len() == 1 { "" } else { "s" },
                    conflicts
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )
            .with_details(
                json!({"name": name, "group": rt.group, "kind": rt.plural, "causes": causes}),
            )
        }
        PatchError::TestFailed { .. } | PatchError::JsonPatchFailed { .. } => {
            ApiError::new(422, "Invalid", e.to_string())
                .with_details(json!({"name": name, "group": rt.group, "kind": rt.plural}))
        }
        other => ApiError::bad_request(other.to_string()),
    }
}

/// The field manager of a write (`fieldManager`, else derived from the
/// User-Agent), after checking `fieldManager` as upstream does: a bad one is a
/// 422 naming `options_kind` (`CreateOptions`, `UpdateOptions`, `PatchOptions`).
pub(crate) fn update_manager(
    q: &Query,
    headers: &HeaderMap,
    options_kind: &str,
) -> ApiResult<String> {
    if let Some(m) = q.field_manager.as_deref() {
        managed::validate_field_manager(m).map_err(|e| {
            ApiError::new(
                422,
                "Invalid",
                format!("{options_kind}.meta.k8s.io \"\" is invalid: fieldManager: {e}"),
            )
            .with_details(
                json!({"group": "meta.k8s.io", "kind": options_kind, "causes": [
                    {"reason": e.reason(), "message": e.to_string(), "field": "fieldManager"}
                ]}),
            )
        })?;
    }
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    Ok(managed::field_manager(
        q.field_manager.as_deref(),
        user_agent,
    ))
}

#[allow(clippy::too_many_arguments)]
pub async fn patch(
    app: &App,
    rt: &'static ResourceType,
    ns: Option<&str>,
    name: &str,
    sub: Option<Subresource>,
    q: &Query,
    headers: &HeaderMap,
    body: &[u8],
    format: ResponseFormat,
) -> ApiResult<Response> {
    let reg = &app.registry;
    let ct = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/strategic-merge-patch+json");
    let pt = PatchType::from_content_type(ct).ok_or_else(|| {
        ApiError::unsupported_media_type(format!(
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct})"
        ))
    })?;
    let fv = FieldValidation::parse(q.field_validation.as_deref())?;
    let manager = update_manager(q, headers, "PatchOptions")?;
    let opts = WriteOptions {
        dry_run: q.dry_run,
        field_manager: q.field_manager.clone(),
    };
    let mut warnings: Vec<String> = Vec::new();
    if pt == PatchType::Apply {
        let manager = q
            .field_manager
            .clone()
            .filter(|m| !m.is_empty())
            .ok_or_else(|| {
                ApiError::bad_request("PATCH requests with apply patch type require a fieldManager")
            })?;
        let applied = p::parse_apply_body(body).map_err(|e| patch_error(rt, name, e))?;
        let (applied, w) = body::normalize(rt, applied, fv)?;
        warnings.extend(w);
        match reg.get(rt, ns, name).await {
            Err(e) if e.code == 404 && sub.is_none() => {
                let obj = p::server_side_apply(None, &applied, &manager, q.force, rt)
                    .map_err(|e| patch_error(rt, name, e))?;
                let mut obj = obj;
                crate::object::meta_mut(&mut obj).insert("name".into(), json!(name));
                if let Some(ns) = ns {
                    crate::object::meta_mut(&mut obj).insert("namespace".into(), json!(ns));
                }
                let created = reg.create(rt, ns, obj, &opts).await?;
                return Ok(crate::handler::with_warnings_pub(
                    render(rt, &created, format, q, StatusCode::CREATED),
                    &warnings,
                ));
            }
            Err(e) => return Err(e),
            Ok(_) => {}
        }
        let out = reg
            .guaranteed_update(rt, ns, name, sub, &opts, |cur| {
                p::server_side_apply(Some(cur), &applied, &manager, q.force, rt)
                    .map_err(|e| patch_error(rt, name, e))
            })
            .await?;
        return Ok(crate::handler::with_warnings_pub(
            render(rt, &out, format, q, StatusCode::OK),
            &warnings,
        ));
    }
    let mut last_warnings = Vec::new();
    let op = managed::UpdateOperation::now(&manager).on_subresource(sub.map(Subresource::name));
    let out = reg
        .guaranteed_update(rt, ns, name, sub, &opts, |cur| {
            let patched =
                p::apply_patch(pt, cur, body, rt).map_err(|e| patch_error(rt, name, e))?;
            let (mut obj, w) = body::normalize(rt, patched, fv)?;
            managed::record_update(Some(cur), &mut obj, rt, &op);
            last_warnings = w;
            Ok(obj)
        })
        .await?;
    warnings.extend(last_warnings);
    Ok(crate::handler::with_warnings_pub(
        render(rt, &out, format, q, StatusCode::OK),
        &warnings,
    ))
}

fn render(
    rt: &ResourceType,
    obj: &Value,
    format: ResponseFormat,
    q: &Query,
    code: StatusCode,
) -> Response {
    crate::handler::render_one(rt, obj, format, q, code)
}
