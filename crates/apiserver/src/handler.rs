//! The one generic REST handler: every resource request goes through here and is
//! dispatched by verb to the registry.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use navarch_api::catalog::{self, ResourceType, Subresource};
use navarch_api::patch::managed;
use serde_json::{json, Value};

use crate::auth::User;
use crate::body::{self, FieldValidation};
use crate::discovery::{self, Discovery};
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::openapi::LazyOpenApiDocs;
use crate::printers;
use crate::registry::{Filter, Registry, WriteOptions};
use crate::request::{self, Query, ResourceRequest, ResponseFormat, Target, Verb};
use crate::watch;

/// Everything a request handler needs.
pub struct App {
    pub pki: Arc<crate::pki::Pki>,
    pub registry: Arc<Registry>,
    pub node_client: crate::nodeproxy::NodeClient,
    pub discovery: Discovery,
    /// Built on first use (see [`LazyOpenApiDocs`]).
    pub openapi: LazyOpenApiDocs,
    pub auth: crate::auth::Authenticator,
}

/// A JSON body with `code`.
pub(crate) fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut body = Vec::with_capacity(4096);
    if serde_json::to_writer(&mut body, v).is_err() {
        body.clear();
    }
    (
        code,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

fn bytes_response(ct: &str, b: Bytes) -> Response {
    let mut r = Response::new(Body::from(b));
    if let Ok(v) = HeaderValue::from_str(ct) {
        r.headers_mut().insert(axum::http::header::CONTENT_TYPE, v);
    }
    r
}

pub fn with_warnings_pub(r: Response, warnings: &[String]) -> Response {
    with_warnings(r, warnings)
}

fn with_warnings(mut r: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - {}", serde_json::to_string(w).unwrap_or_default());
        if let Ok(v) = HeaderValue::from_str(&text) {
            r.headers_mut().append("Warning", v);
        }
    }
    r
}

pub fn version_info() -> Value {
    json!({
        "major": "1", "minor": "33", "gitVersion": concat!("v1.33.0-navarch.", env!("CARGO_PKG_VERSION")),
        "gitCommit": "", "gitTreeState": "clean", "buildDate": "1970-01-01T00:00:00Z",
        "goVersion": "rust", "compiler": "rustc", "platform": format!("linux/{}", std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64")),
    })
}

/// Entry point for every request (after TLS and authentication).
pub async fn handle(app: Arc<App>, user: Option<User>, req: axum::extract::Request) -> Response {
    match handle_inner(app, user, req).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle_inner(
    app: Arc<App>,
    user: Option<User>,
    req: axum::extract::Request,
) -> ApiResult<Response> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        crate::join::CACERTS_PATH => return Ok(crate::join::cacerts(&app.pki)),
        "/readyz" | "/livez" | "/healthz" => {
            return Ok(bytes_response("text/plain", Bytes::from_static(b"ok")))
        }
        _ => {}
    }
    let user = match user {
        Some(u) => u,
        None => app
            .auth
            .authenticate_headers(req.headers())
            .ok_or_else(ApiError::unauthorized)?,
    };
    let _ = &user;
    let query = Query::parse(req.uri().query())?;
    let accept = req
        .headers()
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    match path.as_str() {
        "/version" | "/version/" => return Ok(json_response(StatusCode::OK, &version_info())),
        "/openapi/v3" | "/openapi/v3/" => {
            return Ok(bytes_response(
                "application/json",
                app.openapi.get().await.root().clone(),
            ))
        }
        "/openapi/v2" => return Err(ApiError::path_not_found()),
        _ => {}
    }
    if let Some(doc) = path.strip_prefix("/openapi/v3/") {
        return match app.openapi.get().await.document(doc) {
            Some((_, b)) => Ok(bytes_response("application/json", b.clone())),
            None => Err(ApiError::path_not_found()),
        };
    }
    let method = req.method().clone();
    if method == Method::POST && path == crate::join::CREDENTIALS_PATH {
        let body = body::read_limited(req.into_body()).await?;
        return crate::join::node_credentials(&app.pki, &user, &body);
    }
    if method == Method::POST && crate::reviews::is_review_path(&path) {
        let headers = req.headers().clone();
        let body = body::read_limited(req.into_body()).await?;
        return crate::reviews::review(&path, &user, &headers, &body);
    }
    let target = match request::parse_path(&path, &method, &query) {
        Some(t) => t?,
        None => return Err(ApiError::path_not_found()),
    };
    match target {
        Target::RootDiscovery { legacy } => {
            if let Some(ct) = discovery::wants_aggregated(accept.as_deref()) {
                let v2 = ct == discovery::AGGREGATED_V2;
                let b = match (legacy, v2) {
                    (true, true) => &app.discovery.aggregated_core,
                    (false, true) => &app.discovery.aggregated_groups,
                    (true, false) => &app.discovery.aggregated_core_v2beta1,
                    (false, false) => &app.discovery.aggregated_groups_v2beta1,
                };
                let mut r = bytes_response(ct, b.clone());
                r.headers_mut()
                    .insert("Vary", HeaderValue::from_static("Accept"));
                return Ok(r);
            }
            let b = if legacy {
                &app.discovery.api_versions
            } else {
                &app.discovery.api_groups
            };
            Ok(bytes_response("application/json", b.clone()))
        }
        Target::Group { group } => match app.discovery.groups.get(&group) {
            Some(b) => Ok(bytes_response("application/json", b.clone())),
            None => Err(ApiError::path_not_found()),
        },
        Target::GroupVersion { group, version } => {
            let key = if group.is_empty() {
                version
            } else {
                format!("{group}/{version}")
            };
            match app.discovery.resource_lists.get(&key) {
                Some(b) => Ok(bytes_response("application/json", b.clone())),
                None => Err(ApiError::path_not_found()),
            }
        }
        Target::Resource(rr) => {
            if matches!(
                rr.subresource,
                Some(Subresource::Exec | Subresource::Attach | Subresource::PortForward)
            ) {
                return crate::streaming::serve(&app, &rr, req).await;
            }
            let format = request::response_format(accept.as_deref());
            let (parts, body) = req.into_parts();
            let headers = parts.headers;
            if matches!(rr.verb, Verb::Watch) {
                return watch::serve(app.registry.clone(), rr, query, format).await;
            }
            let declared = headers
                .get(axum::http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<usize>().ok());
            if declared.map(|n| n > body::DRAIN_LIMIT).unwrap_or(false) {
                return Err(ApiError::too_large(
                    "the request body is too large (limit 3 MiB)",
                ));
            }
            let body = match method {
                Method::GET => Bytes::new(),
                _ => body::read_limited(body).await?,
            };
            resource(&app, rr, query, format, &headers, body).await
        }
    }
}

fn write_options(q: &Query) -> WriteOptions {
    WriteOptions {
        dry_run: q.dry_run,
        field_manager: q.field_manager.clone(),
    }
}

/// Render one object (JSON or Table).
pub(crate) fn render_one(
    rt: &ResourceType,
    obj: &Value,
    format: ResponseFormat,
    q: &Query,
    code: StatusCode,
) -> Response {
    match format {
        ResponseFormat::Json => json_response(code, obj),
        ResponseFormat::Table => {
            json_response(code, &table(rt, std::slice::from_ref(obj), q, None, None))
        }
        ResponseFormat::Metadata => json_response(code, &partial_metadata(obj)),
    }
}

/// A meta.k8s.io/v1 `PartialObjectMetadata`: `obj` reduced to its `metadata`.
pub fn partial_metadata(obj: &Value) -> Value {
    json!({
        "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
        "metadata": obj.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// A meta.k8s.io/v1 Table of `objs`.
pub fn table(
    rt: &ResourceType,
    objs: &[Value],
    q: &Query,
    rv: Option<String>,
    cont: Option<String>,
) -> Value {
    let now = chrono::Utc::now();
    let include = q.include_object.as_deref().unwrap_or("Metadata");
    let rows: Vec<Value> = objs
        .iter()
        .map(|o| table_row(rt, o, include, now))
        .collect();
    let mut meta = json!({});
    if let Some(rv) = rv {
        meta["resourceVersion"] = json!(rv);
    }
    if let Some(c) = cont {
        meta["continue"] = json!(c);
    }
    json!({
        "kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
        "columnDefinitions": printers::column_definitions_json(rt),
        "rows": rows,
    })
}

pub fn table_row(
    rt: &ResourceType,
    o: &Value,
    include: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Value {
    let mut row = json!({"cells": printers::cells(rt, o, now)});
    if let Some(c) = printers::row_conditions(rt, o) {
        row["conditions"] = c;
    }
    match include {
        "None" => {}
        "Object" => row["object"] = o.clone(),
        _ => {
            row["object"] = json!({
                "kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                "metadata": o.get("metadata").cloned().unwrap_or_else(|| json!({})),
            })
        }
    }
    row
}

async fn resource(
    app: &App,
    rr: ResourceRequest,
    q: Query,
    format: ResponseFormat,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let reg = &app.registry;
    let rt = rr.rt;
    let ns = rr.namespace.as_deref();
    match (rr.verb, rr.subresource) {
        (Verb::List, None) => {
            let filter =
                Filter::parse(rt, q.label_selector.as_deref(), q.field_selector.as_deref())?;
            let res = reg
                .list(rt, ns, &filter, q.limit, q.continue_token.as_deref())
                .await?;
            match format {
                ResponseFormat::Metadata => {
                    let mut meta = json!({"resourceVersion": res.revision.to_string()});
                    if let Some(c) = res.continue_token {
                        meta["continue"] = json!(c);
                    }
                    let items: Vec<Value> = res.items.iter().map(partial_metadata).collect();
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": meta, "items": items}),
                    ))
                }
                ResponseFormat::Table => Ok(json_response(
                    StatusCode::OK,
                    &table(
                        rt,
                        &res.items,
                        &q,
                        Some(res.revision.to_string()),
                        res.continue_token,
                    ),
                )),
                ResponseFormat::Json => {
                    let mut meta = json!({"resourceVersion": res.revision.to_string()});
                    if let Some(c) = res.continue_token {
                        meta["continue"] = json!(c);
                    }
                    let items: Vec<Value> = res.items;
                    Ok(json_response(
                        StatusCode::OK,
                        &json!({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items}),
                    ))
                }
            }
        }
        (Verb::Get, None) | (Verb::Get, Some(Subresource::Status))
            if format == ResponseFormat::Json =>
        {
            let name = rr.name.as_deref().unwrap_or("");
            let b = reg.get_json(rt, ns, name).await?;
            Ok(bytes_response("application/json", b))
        }
        (Verb::Get, None) | (Verb::Get, Some(Subresource::Status)) => {
            let name = rr.name.as_deref().unwrap_or("");
            let obj = reg.get(rt, ns, name).await?;
            Ok(render_one(rt, &obj, format, &q, StatusCode::OK))
        }
        (Verb::Create, None) => {
            let obj = body::decode_object(headers, &body)?;
            let fv = FieldValidation::parse(q.field_validation.as_deref())?;
            let (mut obj, warnings) = body::normalize(rt, obj, fv)?;
            if let (Some(ns), true) = (ns, rt.namespaced) {
                if let Some(bns) = object::meta_str(&obj, "namespace").filter(|s| !s.is_empty()) {
                    if bns != ns {
                        return Err(ApiError::bad_request(
                            "the namespace of the provided object does not match the namespace sent on the request",
                        ));
                    }
                }
                meta_mut(&mut obj).insert("namespace".into(), json!(ns));
            }
            let manager = crate::patch::update_manager(&q, headers, "CreateOptions")?;
            managed::record_update(None, &mut obj, rt, &managed::UpdateOperation::now(&manager));
            let created = reg.create(rt, ns, obj, &write_options(&q)).await?;
            Ok(with_warnings(
                render_one(rt, &created, format, &q, StatusCode::CREATED),
                &warnings,
            ))
        }
        (Verb::Update, sub @ (None | Some(Subresource::Status) | Some(Subresource::Finalize))) => {
            let name = rr.name.as_deref().unwrap_or("");
            let obj = body::decode_object(headers, &body)?;
            let fv = FieldValidation::parse(q.field_validation.as_deref())?;
            let (obj, warnings) = body::normalize(rt, obj, fv)?;
            let manager = crate::patch::update_manager(&q, headers, "UpdateOptions")?;
            let op =
                managed::UpdateOperation::now(&manager).on_subresource(sub.map(Subresource::name));
            let sub = if sub == Some(Subresource::Finalize) {
                None
            } else {
                sub
            };
            // Read-modify-write so managedFields are computed against the
            // object actually replaced.
            let opts = write_options(&q);
            let updated = reg
                .guaranteed_update(rt, ns, name, sub, &opts, |cur| {
                    let mut o = obj.clone();
                    managed::record_update(Some(cur), &mut o, rt, &op);
                    Ok(o)
                })
                .await;
            let (out, created) = match updated {
                Err(e)
                    if e.code == 404
                        && sub.is_none()
                        && crate::strategy::for_type(rt).allow_create_on_update() =>
                {
                    let mut o = obj;
                    managed::record_update(None, &mut o, rt, &op);
                    (reg.create(rt, ns, o, &opts).await?, true)
                }
                other => (other?, false),
            };
            let code = if created {
                StatusCode::CREATED
            } else {
                StatusCode::OK
            };
            Ok(with_warnings(
                render_one(rt, &out, format, &q, code),
                &warnings,
            ))
        }
        (Verb::Patch, sub @ (None | Some(Subresource::Status))) => {
            let name = rr.name.as_deref().unwrap_or("").to_string();
            crate::patch::patch(app, rt, ns, &name, sub, &q, headers, &body, format).await
        }
        (Verb::Delete, None) => {
            let name = rr.name.as_deref().unwrap_or("");
            let mut opts = body::delete_options(&body)?;
            if let (Some(p), Some(m)) = (&q.propagation_policy, opts.as_object_mut()) {
                m.entry("propagationPolicy").or_insert_with(|| json!(p));
            }
            let d = reg
                .delete(rt, ns, name, &opts, q.grace_period_seconds, q.dry_run)
                .await?;
            if !d.gone || crate::strategy::for_type(rt).returns_deleted_object() {
                return Ok(render_one(
                    rt,
                    &d.object,
                    ResponseFormat::Json,
                    &q,
                    StatusCode::OK,
                ));
            }
            Ok(json_response(
                StatusCode::OK,
                &success_status(rt, name, object::meta_str(&d.object, "uid")),
            ))
        }
        (Verb::DeleteCollection, None) => {
            let opts = body::delete_options(&body)?;
            let filter =
                Filter::parse(rt, q.label_selector.as_deref(), q.field_selector.as_deref())?;
            let res = reg.list(rt, ns, &filter, None, None).await?;
            let mut items = Vec::new();
            for o in res.items {
                let name = object::name(&o).to_string();
                let ons = object::meta_str(&o, "namespace").map(str::to_string);
                match reg
                    .delete(
                        rt,
                        ons.as_deref(),
                        &name,
                        &opts,
                        q.grace_period_seconds,
                        q.dry_run,
                    )
                    .await
                {
                    Ok(d) => items.push(d.object),
                    Err(e) if e.code == 404 => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(json_response(
                StatusCode::OK,
                &json!({"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {}, "items": items}),
            ))
        }
        (Verb::Get, Some(Subresource::Log)) => crate::subresources::log(app, &rr, &q).await,
        (_, Some(Subresource::Scale)) => {
            crate::subresources::scale(app, &rr, &q, headers, &body).await
        }
        (Verb::Create, Some(Subresource::Binding)) => {
            crate::subresources::binding(app, &rr, &body).await
        }
        (Verb::Create, Some(Subresource::Eviction)) => {
            crate::subresources::eviction(app, &rr, &body).await
        }
        (_, Some(sub)) => Err(ApiError::method_not_allowed(format!(
            "{}/{} does not support this operation yet",
            rt.plural,
            sub.name()
        ))),
        _ => Err(ApiError::method_not_allowed(
            "the server does not allow this method on the requested resource",
        )),
    }
}

pub fn success_status(rt: &ResourceType, name: &str, uid: Option<&str>) -> Value {
    let mut details = json!({"name": name, "group": rt.group, "kind": rt.plural});
    if let Some(u) = uid {
        details["uid"] = json!(u);
    }
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details})
}

pub fn stream_body<S>(s: S) -> Body
where
    S: futures::Stream<Item = Bytes> + Send + 'static,
{
    use futures::StreamExt;
    Body::from_stream(s.map(Ok::<Bytes, Infallible>))
}

/// Watch timeouts: the client's, or a long default.
pub fn watch_timeout(q: &Query) -> Duration {
    Duration::from_secs(
        q.timeout_seconds
            .unwrap_or(crate::registry::DEFAULT_WATCH_SECONDS)
            .max(1),
    )
}

/// Look up the catalog entry behind a Scale etc. (kept for symmetry).
pub fn lookup(api_version: &str, kind: &str) -> Option<&'static ResourceType> {
    catalog::by_kind(api_version, kind)
}
