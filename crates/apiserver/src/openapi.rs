//! OpenAPI v3 documents: `GET /openapi/v3` and `GET /openapi/v3/<api|apis/group>/<version>`.
//!
//! One document per served group-version, built once at startup from the resource
//! catalog and kept as serialized bytes. Each document has
//!
//! - `paths`: every collection, item, cluster-wide list and subresource URL with its
//!   operations, each carrying `x-kubernetes-action` and
//!   `x-kubernetes-group-version-kind`; writes carry the `dryRun`, `fieldManager` and
//!   `fieldValidation` query parameters (kubectl skips client-side validation when the
//!   PATCH operation of a kind lists `fieldValidation`);
//! - `components.schemas`: the kinds of the group-version, their lists, the kinds of
//!   their subresources (e.g. `autoscaling/v1` `Scale`) and everything those
//!   reference, as produced by the `k8s-openapi` `schemars` implementations and
//!   adjusted for OpenAPI 3.0 (`$ref` siblings moved next to an `allOf`,
//!   `IntOrString` and `Quantity` given types).
//!
//! PATCH request bodies list JSON patch, merge patch and apply patch but deliberately
//! not strategic merge patch: when SMP is listed kubectl computes the patch from the
//! OpenAPI `x-kubernetes-patch-*` extensions instead of its compiled-in types.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use k8s_openapi::api::{
    authentication::v1 as authentication, autoscaling::v1 as autoscaling_v1, core::v1 as core,
    policy::v1 as policy,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use navarch_api::catalog::{self, ResourceType, Subresource};
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

/// Where component schemas live; every `$ref` in a document starts with this.
pub const SCHEMA_REF_PREFIX: &str = "#/components/schemas/";

const LIST_META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ListMeta";
const PATCH: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch";
const DELETE_OPTIONS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.DeleteOptions";
const STATUS: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.Status";
const INT_OR_STRING: &str = "io.k8s.apimachinery.pkg.util.intstr.IntOrString";
const QUANTITY: &str = "io.k8s.apimachinery.pkg.api.resource.Quantity";

/// PATCH content types advertised in `requestBody.content` (no strategic merge patch).
pub const PATCH_CONTENT_TYPES: &[&str] = &[
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
];

/// The served OpenAPI v3 root and group-version documents, pre-serialized.
#[derive(Clone, Debug)]
pub struct OpenApiDocs {
    root: Bytes,
    documents: BTreeMap<String, Document>,
}

#[derive(Clone, Debug)]
struct Document {
    hash: String,
    body: Bytes,
}

impl OpenApiDocs {
    /// Builds the documents for every resource in [`navarch_api::catalog::all`].
    pub fn build() -> OpenApiDocs {
        OpenApiDocs::from_resources(catalog::all())
    }

    /// Builds the documents for the given resource types (grouped by group-version,
    /// in order of first appearance).
    pub fn from_resources(resources: &[ResourceType]) -> OpenApiDocs {
        let mut order: Vec<(&str, &str)> = Vec::new();
        for r in resources {
            if !order.contains(&(r.group, r.version)) {
                order.push((r.group, r.version));
            }
        }
        let mut documents = BTreeMap::new();
        let mut root_paths = Map::new();
        for (group, version) in order {
            let members: Vec<&ResourceType> = resources
                .iter()
                .filter(|r| r.group == group && r.version == version)
                .collect();
            let doc = build_document(group, version, &members);
            let body = doc.to_string();
            let hash = content_hash(body.as_bytes());
            let path = document_path(group, version);
            root_paths.insert(
                path.clone(),
                json!({ "serverRelativeURL": format!("/openapi/v3/{path}?hash={hash}") }),
            );
            documents.insert(
                path,
                Document {
                    hash,
                    // Exact size: the documents live as long as the server.
                    body: Bytes::copy_from_slice(body.as_bytes()),
                },
            );
        }
        let root = Bytes::from(json!({ "paths": root_paths }).to_string());
        OpenApiDocs { root, documents }
    }

    /// The body of `GET /openapi/v3`.
    pub fn root(&self) -> &Bytes {
        &self.root
    }

    /// The hash and body of one group-version document; `path` is `api/v1` or
    /// `apis/<group>/<version>` (leading and trailing slashes are ignored).
    pub fn document(&self, path: &str) -> Option<(&str, &Bytes)> {
        self.documents
            .get(path.trim_matches('/'))
            .map(|d| (d.hash.as_str(), &d.body))
    }

    /// The document paths served, e.g. `api/v1`, `apis/apps/v1`.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.documents.keys().map(String::as_str)
    }
}

/// The OpenAPI documents, built on the first request for them rather than at
/// start: building walks the schema of every kind (code and memory an idle
/// server otherwise keeps resident), and most clients never ask.
#[derive(Default)]
pub struct LazyOpenApiDocs {
    docs: tokio::sync::OnceCell<Arc<OpenApiDocs>>,
}

impl LazyOpenApiDocs {
    /// The documents, building them (off the async workers) if this is the
    /// first call; concurrent first callers wait for the one build.
    pub async fn get(&self) -> Arc<OpenApiDocs> {
        self.docs
            .get_or_init(|| async {
                match tokio::task::spawn_blocking(OpenApiDocs::build).await {
                    Ok(d) => Arc::new(d),
                    // The blocking pool is shutting down: build here.
                    Err(_) => Arc::new(OpenApiDocs::build()),
                }
            })
            .await
            .clone()
    }

    /// Whether the documents were built yet.
    pub fn is_built(&self) -> bool {
        self.docs.initialized()
    }
}

/// `api/v1` for the core group, `apis/<group>/<version>` otherwise.
pub fn document_path(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("api/{version}")
    } else {
        format!("apis/{group}/{version}")
    }
}

/// Uppercase hex FNV-1a (128-bit) of the document bytes: stable across runs and
/// builds, changes whenever the document does.
fn content_hash(bytes: &[u8]) -> String {
    const OFFSET: u128 = 0x6c62272e07bb014262b821756295c58d;
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let h = bytes
        .iter()
        .fold(OFFSET, |h, b| (h ^ u128::from(*b)).wrapping_mul(PRIME));
    format!("{h:032X}")
}

/// A group/version/kind as used in `x-kubernetes-group-version-kind`.
fn gvk(group: &str, version: &str, kind: &str) -> Value {
    json!({ "group": group, "kind": kind, "version": version })
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("{SCHEMA_REF_PREFIX}{name}") })
}

/// Registers `T` in the generator and returns its component name.
fn register<T: JsonSchema>(generator: &mut SchemaGenerator) -> String {
    generator.subschema_for::<T>();
    T::schema_name().into_owned()
}

/// Schemas of kinds that are not resources of their own but are the request or
/// response of a subresource. Returns the component name.
fn extra_kind_schema(
    generator: &mut SchemaGenerator,
    (group, version, kind): (&str, &str, &str),
) -> Option<String> {
    match (group, version, kind) {
        ("autoscaling", "v1", "Scale") => Some(register::<autoscaling_v1::Scale>(generator)),
        ("", "v1", "Binding") => Some(register::<core::Binding>(generator)),
        ("policy", "v1", "Eviction") => Some(register::<policy::Eviction>(generator)),
        ("authentication.k8s.io", "v1", "TokenRequest") => {
            Some(register::<authentication::TokenRequest>(generator))
        }
        _ => None,
    }
}

/// Subresource kinds that get a schema in their own group-version document when
/// that group-version is served.
const EXTRA_KINDS: &[(&str, &str, &str)] = &[
    ("autoscaling", "v1", "Scale"),
    ("", "v1", "Binding"),
    ("policy", "v1", "Eviction"),
    ("authentication.k8s.io", "v1", "TokenRequest"),
];

/// Operation ids are `<verb><GroupVersion><Namespaced?><Kind><Suffix>` as upstream,
/// e.g. `patchAppsV1NamespacedDeployment`, `listCoreV1PodForAllNamespaces`.
fn group_version_ident(group: &str, version: &str) -> String {
    let group = if group.is_empty() {
        "core"
    } else {
        group.strip_suffix(".k8s.io").unwrap_or(group)
    };
    let mut out = String::new();
    for part in group.split(['.', '-']).chain(std::iter::once(version)) {
        let mut chars = part.chars();
        if let Some(first) = chars.next() {
            out.extend(first.to_uppercase());
            out.push_str(chars.as_str());
        }
    }
    out
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

fn query_param(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "query",
        "description": description,
        "schema": { "type": ty, "uniqueItems": true },
    })
}

fn path_param(name: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": "path",
        "description": description,
        "required": true,
        "schema": { "type": "string", "uniqueItems": true },
    })
}

fn pretty_param() -> Value {
    query_param(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed.",
    )
}

fn dry_run_param() -> Value {
    query_param(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. Valid values: All.",
    )
}

fn field_manager_param() -> Value {
    query_param(
        "fieldManager",
        "string",
        "A name associated with the actor or entity that is making these changes.",
    )
}

fn field_validation_param() -> Value {
    query_param(
        "fieldValidation",
        "string",
        "How the server handles unknown or duplicate fields in the request: Ignore, Warn or Strict.",
    )
}

/// Query parameters of create and update.
fn write_params() -> Vec<Value> {
    vec![
        dry_run_param(),
        field_manager_param(),
        field_validation_param(),
    ]
}

/// Query parameters of patch.
fn patch_params() -> Vec<Value> {
    let mut p = write_params();
    p.push(query_param(
        "force",
        "boolean",
        "Force an apply request to take ownership of conflicting fields.",
    ));
    p
}

/// Query parameters of list and watch.
fn list_params() -> Vec<Value> {
    vec![
        query_param(
            "allowWatchBookmarks",
            "boolean",
            "Request watch events with type BOOKMARK.",
        ),
        query_param(
            "continue",
            "string",
            "The continue token of a previous paginated list call.",
        ),
        query_param(
            "fieldSelector",
            "string",
            "Restrict the returned objects by their fields.",
        ),
        query_param(
            "labelSelector",
            "string",
            "Restrict the returned objects by their labels.",
        ),
        query_param(
            "limit",
            "integer",
            "The maximum number of responses to return for a list call.",
        ),
        query_param(
            "resourceVersion",
            "string",
            "Constrains which resource versions the request may be served from.",
        ),
        query_param(
            "resourceVersionMatch",
            "string",
            "How resourceVersion is applied to list calls.",
        ),
        query_param(
            "sendInitialEvents",
            "boolean",
            "Send synthetic events for the current state before the watch stream.",
        ),
        query_param(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call.",
        ),
        query_param(
            "watch",
            "boolean",
            "Watch for changes to the described resources.",
        ),
    ]
}

/// Query parameters of delete.
fn delete_params() -> Vec<Value> {
    vec![
        dry_run_param(),
        query_param(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted.",
        ),
        query_param(
            "orphanDependents",
            "boolean",
            "Deprecated: use propagationPolicy.",
        ),
        query_param(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed: Orphan, Background or Foreground.",
        ),
    ]
}

/// Response content of an object-returning operation.
fn object_content(schema: &Value) -> Value {
    json!({
        "application/json": { "schema": schema },
        "application/yaml": { "schema": schema },
    })
}

fn responses(codes: &[(&str, &str)], schema: &Value) -> Value {
    let mut out = Map::new();
    for (code, description) in codes {
        out.insert(
            (*code).to_string(),
            json!({ "description": description, "content": object_content(schema) }),
        );
    }
    out.insert("401".to_string(), json!({ "description": "Unauthorized" }));
    Value::Object(out)
}

fn body(content_types: &[&str], schema: &Value) -> Value {
    let content: Map<String, Value> = content_types
        .iter()
        .map(|ct| ((*ct).to_string(), json!({ "schema": schema })))
        .collect();
    json!({ "content": content, "required": true })
}

/// Everything an operation needs besides the method.
struct Operation {
    description: String,
    operation_id: String,
    action: &'static str,
    gvk: Value,
    parameters: Vec<Value>,
    request_body: Option<Value>,
    responses: Value,
    tag: String,
}

impl Operation {
    fn into_value(self) -> Value {
        let mut op = Map::new();
        op.insert("description".into(), self.description.into());
        op.insert("operationId".into(), self.operation_id.into());
        op.insert("tags".into(), json!([self.tag]));
        if !self.parameters.is_empty() {
            op.insert("parameters".into(), Value::Array(self.parameters));
        }
        if let Some(b) = self.request_body {
            op.insert("requestBody".into(), b);
        }
        op.insert("responses".into(), self.responses);
        op.insert("x-kubernetes-action".into(), self.action.into());
        op.insert("x-kubernetes-group-version-kind".into(), self.gvk);
        Value::Object(op)
    }
}

/// Builds the path items of one document.
struct PathBuilder {
    paths: Map<String, Value>,
    ident: String,
    tag: String,
}

impl PathBuilder {
    fn add(&mut self, path: String, path_params: Vec<Value>, ops: Vec<(&str, Operation)>) {
        let mut item = Map::new();
        for (method, op) in ops {
            item.insert(method.to_string(), op.into_value());
        }
        let mut params = path_params;
        params.push(pretty_param());
        item.insert("parameters".into(), Value::Array(params));
        self.paths.insert(path, Value::Object(item));
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        verb: &str,
        scope: &str,
        kind: &str,
        suffix: &str,
        description: String,
        action: &'static str,
        gvk: &Value,
        parameters: Vec<Value>,
        request_body: Option<Value>,
        responses: Value,
    ) -> Operation {
        Operation {
            description,
            operation_id: format!("{verb}{}{scope}{kind}{suffix}", self.ident),
            action,
            gvk: gvk.clone(),
            parameters,
            request_body,
            responses,
            tag: self.tag.clone(),
        }
    }

    /// Collection, item, all-namespaces list and subresource paths of one resource.
    fn resource(&mut self, r: &ResourceType, sub_schemas: &[(Subresource, String)]) {
        let prefix = if r.group.is_empty() {
            format!("/api/{}", r.version)
        } else {
            format!("/apis/{}/{}", r.group, r.version)
        };
        let (scope, base, mut base_params) = if r.namespaced {
            (
                "Namespaced",
                format!("{prefix}/namespaces/{{namespace}}/{}", r.plural),
                vec![path_param(
                    "namespace",
                    "object name and auth scope, such as for teams and projects",
                )],
            )
        } else {
            ("", format!("{prefix}/{}", r.plural), Vec::new())
        };
        let kind = r.kind;
        let gvk_v = gvk(r.group, r.version, kind);
        let obj = schema_ref(&r.schema_name);
        let list = schema_ref(&format!("{}List", r.schema_name));
        let status = schema_ref(STATUS);

        // Collection: list, create, deletecollection.
        let mut deletecollection_params = delete_params();
        deletecollection_params.extend(list_params());
        let collection_ops = vec![
            (
                "get",
                self.op(
                    "list",
                    scope,
                    kind,
                    "",
                    format!("list or watch objects of kind {kind}"),
                    "list",
                    &gvk_v,
                    list_params(),
                    None,
                    responses(&[("200", "OK")], &list),
                ),
            ),
            (
                "post",
                self.op(
                    "create",
                    scope,
                    kind,
                    "",
                    format!("create a {kind}"),
                    "post",
                    &gvk_v,
                    write_params(),
                    Some(body(&["*/*"], &obj)),
                    responses(
                        &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                        &obj,
                    ),
                ),
            ),
            (
                "delete",
                self.op(
                    "deleteCollection",
                    scope,
                    kind,
                    "",
                    format!("delete collection of {kind}"),
                    "deletecollection",
                    &gvk_v,
                    deletecollection_params,
                    Some(body(&["*/*"], &schema_ref(DELETE_OPTIONS))),
                    responses(&[("200", "OK")], &status),
                ),
            ),
        ];
        self.add(base.clone(), base_params.clone(), collection_ops);

        // Item: read, replace, patch, delete.
        base_params.insert(0, path_param("name", &format!("name of the {kind}")));
        let item = format!("{base}/{{name}}");
        let item_ops = vec![
            (
                "get",
                self.op(
                    "read",
                    scope,
                    kind,
                    "",
                    format!("read the specified {kind}"),
                    "get",
                    &gvk_v,
                    Vec::new(),
                    None,
                    responses(&[("200", "OK")], &obj),
                ),
            ),
            (
                "put",
                self.op(
                    "replace",
                    scope,
                    kind,
                    "",
                    format!("replace the specified {kind}"),
                    "put",
                    &gvk_v,
                    write_params(),
                    Some(body(&["*/*"], &obj)),
                    responses(&[("200", "OK"), ("201", "Created")], &obj),
                ),
            ),
            (
                "patch",
                self.op(
                    "patch",
                    scope,
                    kind,
                    "",
                    format!("partially update the specified {kind}"),
                    "patch",
                    &gvk_v,
                    patch_params(),
                    Some(body(PATCH_CONTENT_TYPES, &schema_ref(PATCH))),
                    responses(&[("200", "OK"), ("201", "Created")], &obj),
                ),
            ),
            (
                "delete",
                self.op(
                    "delete",
                    scope,
                    kind,
                    "",
                    format!("delete a {kind}"),
                    "delete",
                    &gvk_v,
                    delete_params(),
                    Some(body(&["*/*"], &schema_ref(DELETE_OPTIONS))),
                    responses(&[("200", "OK"), ("202", "Accepted")], &status),
                ),
            ),
        ];
        self.add(item.clone(), base_params.clone(), item_ops);

        // Cluster-wide list of a namespaced resource.
        if r.namespaced {
            let op = self.op(
                "list",
                "",
                kind,
                "ForAllNamespaces",
                format!("list or watch objects of kind {kind} in all namespaces"),
                "list",
                &gvk_v,
                list_params(),
                None,
                responses(&[("200", "OK")], &list),
            );
            self.add(
                format!("{prefix}/{}", r.plural),
                Vec::new(),
                vec![("get", op)],
            );
        }

        for sub in r.subresources {
            self.subresource(r, *sub, scope, &item, &base_params, sub_schemas);
        }
    }

    fn subresource(
        &mut self,
        r: &ResourceType,
        sub: Subresource,
        scope: &str,
        item: &str,
        params: &[Value],
        sub_schemas: &[(Subresource, String)],
    ) {
        let kind = r.kind;
        let suffix = capitalize(sub.name());
        let (gvk_v, schema) = match sub.response_kind() {
            None => (gvk(r.group, r.version, kind), schema_ref(&r.schema_name)),
            Some((g, v, k)) => (
                gvk(g, v, k),
                sub_schemas
                    .iter()
                    .find(|(s, _)| *s == sub)
                    .map(|(_, n)| schema_ref(n))
                    .unwrap_or_else(|| json!({ "type": "string" })),
            ),
        };
        let path = format!("{item}/{}", sub.name());
        let name = sub.name();
        let text = json!({ "type": "string" });
        let mut ops = Vec::new();
        match sub {
            Subresource::Status | Subresource::Scale | Subresource::EphemeralContainers => {
                ops.push((
                    "get",
                    self.op(
                        "read",
                        scope,
                        kind,
                        &suffix,
                        format!("read {name} of the specified {kind}"),
                        "get",
                        &gvk_v,
                        Vec::new(),
                        None,
                        responses(&[("200", "OK")], &schema),
                    ),
                ));
                ops.push((
                    "put",
                    self.op(
                        "replace",
                        scope,
                        kind,
                        &suffix,
                        format!("replace {name} of the specified {kind}"),
                        "put",
                        &gvk_v,
                        write_params(),
                        Some(body(&["*/*"], &schema)),
                        responses(&[("200", "OK"), ("201", "Created")], &schema),
                    ),
                ));
                ops.push((
                    "patch",
                    self.op(
                        "patch",
                        scope,
                        kind,
                        &suffix,
                        format!("partially update {name} of the specified {kind}"),
                        "patch",
                        &gvk_v,
                        patch_params(),
                        Some(body(PATCH_CONTENT_TYPES, &schema_ref(PATCH))),
                        responses(&[("200", "OK"), ("201", "Created")], &schema),
                    ),
                ));
            }
            Subresource::Binding | Subresource::Eviction | Subresource::Token => {
                ops.push((
                    "post",
                    self.op(
                        "create",
                        scope,
                        kind,
                        &suffix,
                        format!("create {name} of a {kind}"),
                        "post",
                        &gvk_v,
                        write_params(),
                        Some(body(&["*/*"], &schema)),
                        responses(
                            &[("200", "OK"), ("201", "Created"), ("202", "Accepted")],
                            &schema,
                        ),
                    ),
                ));
            }
            Subresource::Finalize => {
                ops.push((
                    "put",
                    self.op(
                        "replace",
                        scope,
                        kind,
                        &suffix,
                        format!("replace finalize of the specified {kind}"),
                        "put",
                        &gvk_v,
                        write_params(),
                        Some(body(&["*/*"], &schema)),
                        responses(&[("200", "OK"), ("201", "Created")], &schema),
                    ),
                ));
            }
            Subresource::Log => {
                let log_params = vec![
                    query_param(
                        "container",
                        "string",
                        "The container for which to stream logs.",
                    ),
                    query_param("follow", "boolean", "Follow the log stream of the pod."),
                    query_param(
                        "limitBytes",
                        "integer",
                        "Number of bytes to read from the server.",
                    ),
                    query_param(
                        "previous",
                        "boolean",
                        "Return previous terminated container logs.",
                    ),
                    query_param(
                        "sinceSeconds",
                        "integer",
                        "Relative time in seconds to show logs from.",
                    ),
                    query_param(
                        "sinceTime",
                        "string",
                        "RFC 3339 timestamp from which to show logs.",
                    ),
                    query_param(
                        "tailLines",
                        "integer",
                        "Number of lines from the end of the logs to show.",
                    ),
                    query_param(
                        "timestamps",
                        "boolean",
                        "Add an RFC 3339 timestamp to every line.",
                    ),
                ];
                let mut resp = Map::new();
                resp.insert(
                    "200".into(),
                    json!({ "description": "OK", "content": { "text/plain": { "schema": text } } }),
                );
                resp.insert("401".into(), json!({ "description": "Unauthorized" }));
                ops.push((
                    "get",
                    self.op(
                        "read",
                        scope,
                        kind,
                        "Log",
                        format!("read log of the specified {kind}"),
                        "get",
                        &gvk(r.group, r.version, kind),
                        log_params,
                        None,
                        Value::Object(resp),
                    ),
                ));
            }
            Subresource::Exec | Subresource::Attach | Subresource::PortForward => {
                let connect_params: Vec<Value> = match sub {
                    Subresource::PortForward => {
                        vec![query_param("ports", "integer", "List of ports to forward.")]
                    }
                    _ => {
                        let mut p = vec![
                            query_param("container", "string", "The container in which to run."),
                            query_param("stderr", "boolean", "Redirect the standard error stream."),
                            query_param("stdin", "boolean", "Redirect the standard input stream."),
                            query_param(
                                "stdout",
                                "boolean",
                                "Redirect the standard output stream.",
                            ),
                            query_param("tty", "boolean", "Allocate a terminal."),
                        ];
                        if sub == Subresource::Exec {
                            p.push(query_param("command", "string", "The command to run."));
                        }
                        p
                    }
                };
                for method in ["get", "post"] {
                    let mut resp = Map::new();
                    resp.insert(
                        "200".into(),
                        json!({ "description": "OK", "content": { "*/*": { "schema": text } } }),
                    );
                    resp.insert("401".into(), json!({ "description": "Unauthorized" }));
                    ops.push((
                        method,
                        self.op(
                            &format!("connect{}", capitalize(method)),
                            scope,
                            kind,
                            &suffix,
                            format!("connect {method} requests to {name} of {kind}"),
                            "connect",
                            &gvk_v,
                            connect_params.clone(),
                            None,
                            Value::Object(resp),
                        ),
                    ));
                }
            }
        }
        self.add(path, params.to_vec(), ops);
    }
}

/// The schema of `<Kind>List`.
fn list_schema(r: &ResourceType) -> Value {
    json!({
        "description": format!("{} is a list of {} objects.", r.list_kind, r.kind),
        "type": "object",
        "properties": {
            "apiVersion": {
                "description": "APIVersion defines the versioned schema of this representation of an object.",
                "type": "string",
            },
            "items": {
                "description": format!("List of {}.", r.plural),
                "type": "array",
                "items": schema_ref(&r.schema_name),
            },
            "kind": {
                "description": "Kind is a string value representing the REST resource this object represents.",
                "type": "string",
            },
            "metadata": {
                "description": "Standard list metadata.",
                "allOf": [schema_ref(LIST_META)],
            },
        },
        "required": ["items"],
        "x-kubernetes-group-version-kind": [gvk(r.group, r.version, r.list_kind)],
    })
}

fn build_document(group: &str, version: &str, resources: &[&ResourceType]) -> Value {
    let settings = SchemaSettings::openapi3().with(|s| s.meta_schema = None);
    let mut generator = settings.into_generator();
    // Components every document references from its operations.
    register::<meta::ListMeta>(&mut generator);
    register::<meta::DeleteOptions>(&mut generator);
    register::<meta::Status>(&mut generator);

    // (component name, GVK) pairs to mark as top-level kinds.
    let mut kinds: Vec<(String, Value)> = Vec::new();
    let mut builder = PathBuilder {
        paths: Map::new(),
        ident: group_version_ident(group, version),
        tag: {
            let g = if group.is_empty() { "core" } else { group };
            format!("{}_{version}", g.replace(['.', '-'], "_"))
        },
    };
    for r in resources {
        (r.json_schema)(&mut generator);
        kinds.push((r.schema_name.clone(), gvk(r.group, r.version, r.kind)));
        let mut sub_schemas = Vec::new();
        for sub in r.subresources {
            if let Some(k) = sub.response_kind() {
                if let Some(name) = extra_kind_schema(&mut generator, k) {
                    kinds.push((name.clone(), gvk(k.0, k.1, k.2)));
                    sub_schemas.push((*sub, name));
                }
            }
        }
        builder.resource(r, &sub_schemas);
    }
    for k in EXTRA_KINDS {
        if k.0 == group && k.1 == version {
            if let Some(name) = extra_kind_schema(&mut generator, *k) {
                kinds.push((name, gvk(k.0, k.1, k.2)));
            }
        }
    }

    let mut schemas = generator.take_definitions(true);
    for r in resources {
        schemas.insert(format!("{}List", r.schema_name), list_schema(r));
    }
    schemas.insert(
        PATCH.to_string(),
        json!({
            "description": "Patch is provided to give a concrete name and type to the Kubernetes PATCH request body.",
            "type": "object",
        }),
    );
    fix_scalar_schemas(&mut schemas);
    for (name, gvk_v) in kinds {
        if let Some(Value::Object(schema)) = schemas.get_mut(&name) {
            let entry = schema
                .entry("x-kubernetes-group-version-kind")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Value::Array(list) = entry {
                if !list.contains(&gvk_v) {
                    list.push(gvk_v);
                }
            }
        }
    }
    // Stable component order.
    let schemas: BTreeMap<String, Value> = schemas.into_iter().collect();

    let title = if group.is_empty() {
        "Kubernetes".to_string()
    } else {
        format!("Kubernetes {group}")
    };
    json!({
        "openapi": "3.0.0",
        "info": { "title": title, "version": "v1.33.0" },
        "paths": builder.paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "BearerToken": {
                    "type": "apiKey",
                    "description": "Bearer Token authentication",
                    "name": "authorization",
                    "in": "header",
                },
            },
        },
        "security": [{ "BearerToken": [] }],
    })
}

/// Gives `IntOrString` and `Quantity` explicit OpenAPI 3.0 types the way upstream
/// does (the `k8s-openapi` schemas only carry `x-kubernetes-int-or-string`).
fn fix_scalar_schemas(schemas: &mut Map<String, Value>) {
    if let Some(Value::Object(s)) = schemas.get_mut(INT_OR_STRING) {
        s.insert("format".into(), "int-or-string".into());
        s.insert(
            "oneOf".into(),
            json!([{ "type": "integer" }, { "type": "string" }]),
        );
    }
    if let Some(Value::Object(s)) = schemas.get_mut(QUANTITY) {
        s.remove("x-kubernetes-int-or-string");
        s.insert(
            "oneOf".into(),
            json!([{ "type": "string" }, { "type": "number" }]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn documents_are_built_once_on_first_use() {
        let lazy = LazyOpenApiDocs::default();
        assert!(!lazy.is_built());
        let (a, b) = tokio::join!(lazy.get(), lazy.get());
        assert!(lazy.is_built());
        assert!(Arc::ptr_eq(&a, &b));
        assert!(Arc::ptr_eq(&a, &lazy.get().await));
        assert!(a.document("api/v1").is_some());
        let root: Value = serde_json::from_slice(a.root()).unwrap();
        assert!(root["paths"]["api/v1"]["serverRelativeURL"].is_string());
    }

    fn doc(docs: &OpenApiDocs, path: &str) -> Value {
        let (_, body) = docs.document(path).expect("document");
        serde_json::from_slice(body).expect("json")
    }

    fn collect_refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    if k == "$ref" {
                        if let Value::String(s) = v {
                            out.push(s.clone());
                        }
                    } else {
                        collect_refs(v, out);
                    }
                }
            }
            Value::Array(a) => a.iter().for_each(|v| collect_refs(v, out)),
            _ => {}
        }
    }

    /// Asserts that a schema only uses OpenAPI 3.0 schema keywords (or `x-` extensions).
    fn check_openapi30_schema(s: &Value, at: &str) {
        const KEYWORDS: &[&str] = &[
            "$ref",
            "title",
            "description",
            "type",
            "format",
            "properties",
            "required",
            "items",
            "additionalProperties",
            "allOf",
            "oneOf",
            "anyOf",
            "not",
            "enum",
            "default",
            "nullable",
            "readOnly",
            "writeOnly",
            "example",
            "minimum",
            "maximum",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minLength",
            "maxLength",
            "pattern",
            "minItems",
            "maxItems",
            "uniqueItems",
            "minProperties",
            "maxProperties",
            "multipleOf",
            "deprecated",
        ];
        let obj = s
            .as_object()
            .unwrap_or_else(|| panic!("{at}: schema is not an object"));
        if obj.contains_key("$ref") {
            assert_eq!(obj.len(), 1, "{at}: $ref with siblings");
        }
        if let Some(t) = obj.get("type") {
            assert!(t.is_string(), "{at}: type must be a string");
        }
        for (k, v) in obj {
            assert!(
                k.starts_with("x-") || KEYWORDS.contains(&k.as_str()),
                "{at}: keyword {k} is not OpenAPI 3.0"
            );
            match k.as_str() {
                "properties" => {
                    for (p, sub) in v.as_object().expect("properties") {
                        check_openapi30_schema(sub, &format!("{at}.{p}"));
                    }
                }
                "items" | "not" => check_openapi30_schema(v, &format!("{at}[{k}]")),
                "additionalProperties" if v.is_object() => {
                    check_openapi30_schema(v, &format!("{at}[additionalProperties]"))
                }
                "allOf" | "oneOf" | "anyOf" => {
                    for sub in v.as_array().expect("array") {
                        check_openapi30_schema(sub, &format!("{at}[{k}]"));
                    }
                }
                _ => {}
            }
        }
    }

    /// Follows `$ref` / single-element `allOf` to a component schema.
    fn resolve<'a>(d: &'a Value, s: &'a Value) -> &'a Value {
        let s = match s.get("allOf").and_then(|a| a.get(0)) {
            Some(inner) => inner,
            None => s,
        };
        match s.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let name = r.strip_prefix(SCHEMA_REF_PREFIX).expect("local ref");
                &d["components"]["schemas"][name]
            }
            None => s,
        }
    }

    #[test]
    fn root_lists_every_group_version_with_its_hash() {
        let docs = OpenApiDocs::build();
        let root: Value = serde_json::from_slice(docs.root()).expect("json");
        let paths = root["paths"].as_object().expect("paths");
        for (g, v) in catalog::group_versions() {
            let p = document_path(g, v);
            let (hash, _) = docs.document(&p).expect("doc");
            assert_eq!(
                paths[&p]["serverRelativeURL"],
                format!("/openapi/v3/{p}?hash={hash}")
            );
        }
        assert!(paths.contains_key("api/v1"));
        assert!(paths.contains_key("apis/apps/v1"));
        assert_eq!(paths.len(), docs.paths().count());
        assert!(docs.document("/apis/apps/v1").is_some());
        assert!(docs.document("apis/nope/v1").is_none());
    }

    #[test]
    fn hashes_are_stable_and_content_addressed() {
        let a = OpenApiDocs::build();
        let b = OpenApiDocs::build();
        assert_eq!(a.root(), b.root());
        let (ha, _) = a.document("api/v1").expect("core");
        let (hb, _) = a.document("apis/apps/v1").expect("apps");
        assert_ne!(ha, hb);
        assert_eq!(ha.len(), 32);
        assert_eq!(content_hash(b"abc"), content_hash(b"abc"));
        assert_ne!(content_hash(b"abc"), content_hash(b"abd"));
    }

    #[test]
    fn every_ref_resolves_inside_its_document() {
        let docs = OpenApiDocs::build();
        for path in docs.paths() {
            let d = doc(&docs, path);
            assert_eq!(d["openapi"], "3.0.0");
            let schemas = d["components"]["schemas"].as_object().expect("schemas");
            let mut refs = Vec::new();
            collect_refs(&d, &mut refs);
            assert!(!refs.is_empty());
            for r in refs {
                let name = r
                    .strip_prefix(SCHEMA_REF_PREFIX)
                    .unwrap_or_else(|| panic!("{path}: non-local ref {r}"));
                assert!(schemas.contains_key(name), "{path}: dangling ref {r}");
            }
            for (name, schema) in schemas {
                check_openapi30_schema(schema, &format!("{path}#{name}"));
            }
        }
    }

    #[test]
    fn deployment_patch_has_gvk_field_validation_and_no_smp() {
        let docs = OpenApiDocs::build();
        let d = doc(&docs, "apis/apps/v1");
        let op = &d["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
        assert_eq!(
            op["x-kubernetes-group-version-kind"],
            json!({"group": "apps", "version": "v1", "kind": "Deployment"})
        );
        assert_eq!(op["x-kubernetes-action"], "patch");
        assert_eq!(op["operationId"], "patchAppsV1NamespacedDeployment");
        let params = op["parameters"].as_array().expect("params");
        for name in ["fieldValidation", "dryRun", "fieldManager", "force"] {
            assert!(
                params
                    .iter()
                    .any(|p| p["name"] == name && p["in"] == "query"),
                "missing {name}"
            );
        }
        let content = op["requestBody"]["content"].as_object().expect("content");
        for ct in PATCH_CONTENT_TYPES {
            assert!(content.contains_key(*ct));
        }
        assert!(!content.contains_key("application/strategic-merge-patch+json"));

        // Every served kind has such a patch operation in its document.
        for r in catalog::all() {
            let d = doc(&docs, &document_path(r.group, r.version));
            let want = gvk(r.group, r.version, r.kind);
            let found = d["paths"].as_object().expect("paths").values().any(|item| {
                let op = &item["patch"];
                op["x-kubernetes-group-version-kind"] == want
                    && op["parameters"]
                        .as_array()
                        .is_some_and(|ps| ps.iter().any(|p| p["name"] == "fieldValidation"))
            });
            assert!(found, "{}/{} has no patch operation", r.api_version, r.kind);
        }
    }

    #[test]
    fn paths_cover_collections_items_cluster_lists_and_subresources() {
        let docs = OpenApiDocs::build();
        let d = doc(&docs, "api/v1");
        let paths = d["paths"].as_object().expect("paths");
        let pods = &paths["/api/v1/namespaces/{namespace}/pods"];
        assert_eq!(pods["get"]["x-kubernetes-action"], "list");
        assert_eq!(pods["post"]["x-kubernetes-action"], "post");
        assert_eq!(pods["delete"]["x-kubernetes-action"], "deletecollection");
        let post_params = pods["post"]["parameters"].as_array().expect("params");
        assert!(post_params.iter().any(|p| p["name"] == "fieldValidation"));
        assert_eq!(
            paths["/api/v1/pods"]["get"]["operationId"],
            "listCoreV1PodForAllNamespaces"
        );
        let item = &paths["/api/v1/namespaces/{namespace}/pods/{name}"];
        for m in ["get", "put", "patch", "delete"] {
            assert!(item.get(m).is_some(), "pod item lacks {m}");
        }
        let item_params = item["parameters"].as_array().expect("path params");
        assert!(item_params
            .iter()
            .any(|p| p["name"] == "name" && p["in"] == "path"));
        assert!(item_params
            .iter()
            .any(|p| p["name"] == "namespace" && p["in"] == "path"));
        // Cluster-scoped resources have no namespace segment and no all-namespaces list.
        assert!(paths.contains_key("/api/v1/nodes/{name}"));
        assert!(!paths.contains_key("/api/v1/namespaces/{namespace}/nodes"));
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/pods/{name}/eviction"]["post"]
                ["x-kubernetes-group-version-kind"],
            json!({"group": "policy", "version": "v1", "kind": "Eviction"})
        );
        assert_eq!(
            paths["/api/v1/namespaces/{namespace}/pods/{name}/exec"]["get"]["x-kubernetes-action"],
            "connect"
        );

        let apps = doc(&docs, "apis/apps/v1");
        let scale = &apps["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"];
        assert_eq!(
            scale["patch"]["x-kubernetes-group-version-kind"],
            json!({"group": "autoscaling", "version": "v1", "kind": "Scale"})
        );
        assert_eq!(
            scale["get"]["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
            "#/components/schemas/io.k8s.api.autoscaling.v1.Scale"
        );
        assert!(apps["paths"]
            .get("/apis/apps/v1/namespaces/{namespace}/deployments/{name}/status")
            .is_some());
    }

    #[test]
    fn kind_schemas_are_complete_and_marked() {
        let docs = OpenApiDocs::build();
        let apps = doc(&docs, "apis/apps/v1");
        let schemas = &apps["components"]["schemas"];
        let deploy = &schemas["io.k8s.api.apps.v1.Deployment"];
        assert_eq!(
            deploy["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "Deployment", "version": "v1"}])
        );
        assert_eq!(
            schemas["io.k8s.api.apps.v1.DeploymentList"]["x-kubernetes-group-version-kind"],
            json!([{"group": "apps", "kind": "DeploymentList", "version": "v1"}])
        );
        assert_eq!(
            schemas["io.k8s.api.autoscaling.v1.Scale"]["x-kubernetes-group-version-kind"],
            json!([{"group": "autoscaling", "kind": "Scale", "version": "v1"}])
        );
        // deployment.spec.replicas, the way kubectl explain walks it.
        let spec = resolve(&apps, &deploy["properties"]["spec"]);
        assert_eq!(spec["properties"]["replicas"]["type"], "integer");
        let template = resolve(&apps, &spec["properties"]["template"]);
        let pod_spec = resolve(&apps, &template["properties"]["spec"]);
        assert!(pod_spec["properties"]["containers"].is_object());
        assert!(schemas
            .get("io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta")
            .is_some());
        // Siblings of a $ref are wrapped into allOf (OpenAPI 3.0 ignores them otherwise).
        assert!(deploy["properties"]["spec"]["$ref"].is_null());
        assert!(deploy["properties"]["spec"]["description"].is_string());

        let core = doc(&docs, "api/v1");
        let schemas = &core["components"]["schemas"];
        let pod_spec = &schemas["io.k8s.api.core.v1.PodSpec"];
        let containers = &pod_spec["properties"]["containers"];
        assert_eq!(containers["type"], "array");
        let container = resolve(&core, &containers["items"]);
        assert!(container["properties"]["image"].is_object());
        let quantity = &schemas[QUANTITY];
        assert_eq!(quantity["oneOf"][0]["type"], "string");
        let ios = &schemas[INT_OR_STRING];
        assert_eq!(ios["format"], "int-or-string");
        assert_eq!(
            schemas["io.k8s.api.core.v1.Pod"]["x-kubernetes-group-version-kind"][0]["kind"],
            "Pod"
        );
        // policy/v1 carries Eviction as its own kind too.
        let policy = doc(&docs, "apis/policy/v1");
        assert!(policy["components"]["schemas"]
            .get("io.k8s.api.policy.v1.Eviction")
            .is_some());
    }

    #[test]
    fn group_version_idents_follow_upstream() {
        assert_eq!(group_version_ident("", "v1"), "CoreV1");
        assert_eq!(group_version_ident("apps", "v1"), "AppsV1");
        assert_eq!(
            group_version_ident("rbac.authorization.k8s.io", "v1"),
            "RbacAuthorizationV1"
        );
        assert_eq!(group_version_ident("autoscaling", "v2"), "AutoscalingV2");
    }
}
