//! Turning an HTTP request into what the API is asked: the resource, namespace,
//! name, subresource and verb (upstream's RequestInfo), plus the query options.

use navarch_api::catalog::{self, ResourceType, Subresource};

use crate::error::{ApiError, ApiResult};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Get,
    List,
    Watch,
    Create,
    Update,
    Patch,
    Delete,
    DeleteCollection,
}

/// A request for a resource (as opposed to discovery and other non-resource paths).
#[derive(Clone, Debug)]
pub struct ResourceRequest {
    pub rt: &'static ResourceType,
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<Subresource>,
    pub verb: Verb,
}

/// What a URL path points at.
#[derive(Debug)]
pub enum Target {
    /// `/api` or `/apis`.
    RootDiscovery {
        legacy: bool,
    },
    /// `/api/v1` or `/apis/<group>/<version>`.
    GroupVersion {
        group: String,
        version: String,
    },
    /// `/apis/<group>`.
    Group {
        group: String,
    },
    Resource(ResourceRequest),
}

/// Upstream lets `namespaces/<name>/status` and `/finalize` be namespace subresources.
const NAMESPACE_SUBRESOURCES: &[&str] = &["status", "finalize"];

/// Parse an API path. `None` means the path is not under `/api` or `/apis`.
pub fn parse_path(
    path: &str,
    method: &axum::http::Method,
    query: &Query,
) -> Option<ApiResult<Target>> {
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let (group, version, rest): (&str, &str, &[&str]) = match parts.as_slice() {
        ["api"] => return Some(Ok(Target::RootDiscovery { legacy: true })),
        ["apis"] => return Some(Ok(Target::RootDiscovery { legacy: false })),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g] => {
            return Some(Ok(Target::Group {
                group: g.to_string(),
            }))
        }
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    if rest.is_empty() {
        return Some(Ok(Target::GroupVersion {
            group: group.to_string(),
            version: version.to_string(),
        }));
    }
    let mut namespace = None;
    let mut rest = rest;
    if rest[0] == "namespaces" && rest.len() > 1 {
        namespace = Some(rest[1].to_string());
        if rest.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&rest[2]) {
            rest = &rest[2..];
        } else {
            // `namespaces/<name>` or `namespaces/<name>/status|finalize`: the namespace
            // object itself.
            namespace = None;
        }
    }
    let plural = rest[0];
    let name = rest.get(1).map(|s| s.to_string());
    let sub = rest.get(2).copied();
    if rest.len() > 3 {
        return Some(Err(ApiError::path_not_found()));
    }
    let Some(rt) = catalog::by_plural(group, version, plural) else {
        return Some(Err(ApiError::path_not_found()));
    };
    if rt.namespaced != namespace.is_some() && (name.is_some() || !rt.namespaced) {
        // A namespaced object addressed without a namespace (or a cluster object with one).
        return Some(Err(ApiError::path_not_found()));
    }
    let subresource = match sub {
        None => None,
        Some(s) => match Subresource::from_name(s) {
            Some(sr) if rt.has_subresource(sr) => Some(sr),
            _ => return Some(Err(ApiError::path_not_found())),
        },
    };
    use axum::http::Method;
    let verb = match (method, name.is_some()) {
        (&Method::GET, true) if query.watch => Verb::Watch,
        (&Method::GET, true) => Verb::Get,
        (&Method::GET, false) if query.watch => Verb::Watch,
        (&Method::GET, false) => Verb::List,
        (&Method::POST, _) => Verb::Create,
        (&Method::PUT, true) => Verb::Update,
        (&Method::PATCH, true) => Verb::Patch,
        (&Method::DELETE, true) => Verb::Delete,
        (&Method::DELETE, false) => Verb::DeleteCollection,
        _ => {
            return Some(Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            ))))
        }
    };
    Some(Ok(Target::Resource(ResourceRequest {
        rt,
        namespace,
        name,
        subresource,
        verb,
    })))
}

/// Query parameters the API understands.
#[derive(Clone, Debug, Default)]
pub struct Query {
    pub label_selector: Option<String>,
    pub field_selector: Option<String>,
    pub limit: Option<usize>,
    pub continue_token: Option<String>,
    pub resource_version: Option<String>,
    pub watch: bool,
    pub timeout_seconds: Option<u64>,
    pub allow_watch_bookmarks: bool,
    pub send_initial_events: Option<bool>,
    pub dry_run: bool,
    pub field_validation: Option<String>,
    pub field_manager: Option<String>,
    pub force: bool,
    pub include_object: Option<String>,
    pub grace_period_seconds: Option<i64>,
    pub propagation_policy: Option<String>,
    pub generate_name: Option<String>,
    /// Raw pairs, for subresources with their own parameters (log, exec).
    pub raw: Vec<(String, String)>,
}

impl Query {
    pub fn parse(query: Option<&str>) -> ApiResult<Query> {
        let mut q = Query::default();
        let Some(s) = query else { return Ok(q) };
        for (k, v) in url::form_urlencoded::parse(s.as_bytes()) {
            let (k, v) = (k.into_owned(), v.into_owned());
            let truthy = || v.is_empty() || v == "true" || v == "1";
            match k.as_str() {
                "labelSelector" => q.label_selector = Some(v.clone()).filter(|s| !s.is_empty()),
                "fieldSelector" => q.field_selector = Some(v.clone()).filter(|s| !s.is_empty()),
                "limit" => {
                    let n: i64 = v
                        .parse()
                        .map_err(|_| ApiError::bad_request(format!("invalid limit: {v:?}")))?;
                    q.limit = if n > 0 { Some(n as usize) } else { None };
                }
                "continue" => q.continue_token = Some(v.clone()).filter(|s| !s.is_empty()),
                "resourceVersion" => q.resource_version = Some(v.clone()).filter(|s| !s.is_empty()),
                "watch" => q.watch = truthy(),
                "timeoutSeconds" => {
                    q.timeout_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid timeoutSeconds: {v:?}"))
                    })?)
                }
                "allowWatchBookmarks" => q.allow_watch_bookmarks = truthy(),
                "sendInitialEvents" => q.send_initial_events = Some(truthy()),
                "dryRun" => {
                    if v != "All" && !v.is_empty() {
                        return Err(ApiError::bad_request(format!(
                            "Invalid dry run value: {v:?}; supported values: \"All\""
                        )));
                    }
                    q.dry_run = true
                }
                "fieldValidation" => q.field_validation = Some(v.clone()),
                "fieldManager" => q.field_manager = Some(v.clone()),
                "force" => q.force = truthy(),
                "includeObject" => q.include_object = Some(v.clone()),
                "gracePeriodSeconds" => {
                    q.grace_period_seconds = Some(v.parse().map_err(|_| {
                        ApiError::bad_request(format!("invalid gracePeriodSeconds: {v:?}"))
                    })?)
                }
                "propagationPolicy" => q.propagation_policy = Some(v.clone()),
                _ => {}
            }
            q.raw.push((k, v));
        }
        Ok(q)
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.raw
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn get_all(&self, key: &str) -> Vec<&str> {
        self.raw
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// How the client wants the response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponseFormat {
    Json,
    Table,
    /// `meta.k8s.io` `PartialObjectMetadata` (or `PartialObjectMetadataList` for lists):
    /// only `metadata` of each object.
    Metadata,
}

/// Read the Accept header. JSON is always acceptable as a fallback (clients that
/// prefer protobuf also list JSON).
pub fn response_format(accept: Option<&str>) -> ResponseFormat {
    let Some(accept) = accept else {
        return ResponseFormat::Json;
    };
    for part in accept.split(',') {
        let params: Vec<&str> = part.split(';').map(str::trim).collect();
        let is_table = params.contains(&"as=Table");
        let is_partial = params.contains(&"as=PartialObjectMetadata")
            || params.contains(&"as=PartialObjectMetadataList");
        let is_meta = params.contains(&"g=meta.k8s.io");
        let known_version = params.contains(&"v=v1") || params.contains(&"v=v1beta1");
        if is_table && is_meta {
            return ResponseFormat::Table;
        }
        if is_partial && is_meta && known_version {
            return ResponseFormat::Metadata;
        }
        if params
            .first()
            .map(|m| *m == "application/json" || *m == "*/*")
            .unwrap_or(false)
            && !is_table
            && !is_partial
        {
            return ResponseFormat::Json;
        }
    }
    ResponseFormat::Json
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::Method;

    fn parse(p: &str, m: Method) -> Target {
        let q = Query::default();
        parse_path(p, &m, &q).expect("api path").expect("parses")
    }

    #[test]
    fn paths() {
        match parse("/api/v1/namespaces/default/pods/web/log", Method::GET) {
            Target::Resource(r) => {
                assert_eq!(r.rt.plural, "pods");
                assert_eq!(r.namespace.as_deref(), Some("default"));
                assert_eq!(r.name.as_deref(), Some("web"));
                assert_eq!(r.subresource, Some(Subresource::Log));
                assert_eq!(r.verb, Verb::Get);
            }
            t => panic!("{t:?}"),
        }
        match parse("/api/v1/namespaces/kube-system", Method::DELETE) {
            Target::Resource(r) => {
                assert_eq!(r.rt.plural, "namespaces");
                assert_eq!(r.name.as_deref(), Some("kube-system"));
                assert!(r.namespace.is_none());
            }
            t => panic!("{t:?}"),
        }
        match parse("/api/v1/namespaces/x/finalize", Method::PUT) {
            Target::Resource(r) => {
                assert_eq!(r.rt.plural, "namespaces");
                assert_eq!(r.subresource, Some(Subresource::Finalize));
            }
            t => panic!("{t:?}"),
        }
        match parse("/apis/apps/v1/deployments", Method::GET) {
            Target::Resource(r) => {
                assert_eq!(r.verb, Verb::List);
                assert!(r.namespace.is_none());
            }
            t => panic!("{t:?}"),
        }
        let q = Query::default();
        assert!(parse_path("/apis/apps/v1/nothings", &Method::GET, &q)
            .expect("api")
            .is_err());
        assert!(parse_path("/healthz", &Method::GET, &q).is_none());
    }

    #[test]
    fn accept() {
        assert_eq!(
            response_format(Some("application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json")),
            ResponseFormat::Table
        );
        assert_eq!(
            response_format(Some("application/json")),
            ResponseFormat::Json
        );
        assert_eq!(
            response_format(Some("application/vnd.kubernetes.protobuf,application/json")),
            ResponseFormat::Json
        );
        assert_eq!(
            response_format(Some(
                "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
            )),
            ResponseFormat::Metadata
        );
        assert_eq!(
            response_format(Some(
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1beta1,application/json"
            )),
            ResponseFormat::Metadata
        );
        // An unknown version of it falls back to the next acceptable type.
        assert_eq!(
            response_format(Some(
                "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v2,application/json"
            )),
            ResponseFormat::Json
        );
    }
}
