//! API discovery: legacy (`/api`, `/apis`, `/api/v1`, `/apis/<g>/<v>`) and
//! aggregated v2 (`application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList`).
//! All documents are computed once from the catalog.

use std::collections::HashMap;

use bytes::Bytes;
use navarch_api::catalog::{self, ResourceType};
use serde_json::{json, Value};

pub const AGGREGATED_V2: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList";
pub const AGGREGATED_V2BETA1: &str =
    "application/json;g=apidiscovery.k8s.io;v=v2beta1;as=APIGroupDiscoveryList";

/// Extra group-versions served outside the catalog (e.g. metrics.k8s.io) can be
/// added here later.
pub struct Discovery {
    pub api_versions: Bytes,
    pub api_groups: Bytes,
    pub aggregated_core: Bytes,
    pub aggregated_groups: Bytes,
    pub aggregated_core_v2beta1: Bytes,
    pub aggregated_groups_v2beta1: Bytes,
    /// "v1" or "apps/v1" → APIResourceList
    pub resource_lists: HashMap<String, Bytes>,
    /// group → APIGroup
    pub groups: HashMap<String, Bytes>,
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn bytes(v: &Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).unwrap_or_default())
}

fn resources_of(group: &str, version: &str) -> Vec<&'static ResourceType> {
    catalog::all()
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .collect()
}

fn legacy_resource_list(group: &str, version: &str) -> Value {
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    let mut resources = Vec::new();
    for r in resources_of(group, version) {
        let mut e = json!({
            "name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
            "kind": r.kind, "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        resources.push(e);
        for s in r.subresources {
            let mut e = json!({
                "name": format!("{}/{}", r.plural, s.name()), "singularName": "",
                "namespaced": r.namespaced, "kind": r.kind, "verbs": s.verbs(),
            });
            if let Some((g, v, k)) = s.response_kind() {
                e["group"] = json!(g);
                e["version"] = json!(v);
                e["kind"] = json!(k);
            }
            resources.push(e);
        }
    }
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn aggregated_version(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for r in resources_of(group, version) {
        let subs: Vec<Value> = r
            .subresources
            .iter()
            .map(|s| {
                let (g, v, k) = s.response_kind().unwrap_or((r.group, r.version, r.kind));
                json!({"subresource": s.name(), "responseKind": {"group": g, "version": v, "kind": k}, "verbs": s.verbs()})
            })
            .collect();
        let mut e = json!({
            "resource": r.plural, "singularResource": r.singular,
            "scope": if r.namespaced { "Namespaced" } else { "Cluster" },
            "responseKind": {"group": r.group, "version": r.version, "kind": r.kind},
            "verbs": VERBS,
        });
        if !r.short_names.is_empty() {
            e["shortNames"] = json!(r.short_names);
        }
        if !r.categories.is_empty() {
            e["categories"] = json!(r.categories);
        }
        if !subs.is_empty() {
            e["subresources"] = json!(subs);
        }
        resources.push(e);
    }
    json!({"version": version, "freshness": "Current", "resources": resources})
}

impl Discovery {
    pub fn build() -> Discovery {
        let gvs = catalog::group_versions();
        let mut groups_order: Vec<&str> = Vec::new();
        for (g, _) in &gvs {
            if !g.is_empty() && !groups_order.contains(g) {
                groups_order.push(g);
            }
        }
        let mut resource_lists = HashMap::new();
        for (g, v) in &gvs {
            let key = if g.is_empty() {
                v.to_string()
            } else {
                format!("{g}/{v}")
            };
            resource_lists.insert(key, bytes(&legacy_resource_list(g, v)));
        }
        let mut groups = HashMap::new();
        let mut group_list = Vec::new();
        let mut agg_groups = Vec::new();
        for g in &groups_order {
            let versions: Vec<&str> = gvs
                .iter()
                .filter(|(gg, _)| gg == g)
                .map(|(_, v)| *v)
                .collect();
            let vs: Vec<Value> = versions
                .iter()
                .map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v}))
                .collect();
            let group = json!({"name": g, "versions": vs, "preferredVersion": vs[0]});
            let mut one = group.clone();
            one["kind"] = json!("APIGroup");
            one["apiVersion"] = json!("v1");
            groups.insert(g.to_string(), bytes(&one));
            group_list.push(group);
            let avs: Vec<Value> = versions.iter().map(|v| aggregated_version(g, v)).collect();
            agg_groups.push(json!({"metadata": {"name": g}, "versions": avs}));
        }
        let core = json!({"metadata": {}, "versions": [aggregated_version("", "v1")]});
        let agg = |items: Vec<Value>, v: &str| json!({"kind": "APIGroupDiscoveryList", "apiVersion": format!("apidiscovery.k8s.io/{v}"), "metadata": {}, "items": items});
        Discovery {
            api_versions: bytes(&json!({
                "kind": "APIVersions", "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
            })),
            api_groups: bytes(
                &json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": group_list}),
            ),
            aggregated_core: bytes(&agg(vec![core.clone()], "v2")),
            aggregated_groups: bytes(&agg(agg_groups.clone(), "v2")),
            aggregated_core_v2beta1: bytes(&agg(vec![core], "v2beta1")),
            aggregated_groups_v2beta1: bytes(&agg(agg_groups, "v2beta1")),
            resource_lists,
            groups,
        }
    }
}

/// Which aggregated discovery format the Accept header asks for, if any.
pub fn wants_aggregated(accept: Option<&str>) -> Option<&'static str> {
    let accept = accept?;
    for part in accept.split(',') {
        let p = part.trim();
        if p.contains("g=apidiscovery.k8s.io") && p.contains("as=APIGroupDiscoveryList") {
            if p.contains("v=v2beta1") {
                return Some(AGGREGATED_V2BETA1);
            }
            if p.contains("v=v2") {
                return Some(AGGREGATED_V2);
            }
        }
        if p.starts_with("application/json") && !p.contains("as=") {
            return None;
        }
    }
    None
}
