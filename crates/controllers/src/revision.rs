//! ControllerRevisions (`apps/v1`) for StatefulSets and DaemonSets: one per
//! distinct pod template, named `<owner>-<hash>`, owned by the workload, with
//! `.data` = the template patch (`{"spec":{"template":{…,"$patch":"replace"}}}`)
//! and `.revision` = 1 + the highest existing revision when (re)selected.

use k8s_openapi::api::apps::v1::ControllerRevision;
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::runtime::RawExtension;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Client, ResourceExt};
use serde_json::{json, Value};

use crate::util;

/// Label on revisions and pods naming the revision.
pub const REVISION_HASH: &str = "controller-revision-hash";

/// The workload a revision belongs to.
pub struct Owner<'a> {
    /// `Kind` of the owner (`StatefulSet`, `DaemonSet`).
    pub kind: &'a str,
    /// The owner's metadata (name, namespace, uid).
    pub meta: &'a ObjectMeta,
    /// The owner's selector (revisions are listed with it).
    pub selector: Option<&'a LabelSelector>,
}

/// The revision `.data` for a template.
pub fn revision_data(template: &PodTemplateSpec) -> Value {
    let mut t = serde_json::to_value(template).unwrap_or_default();
    if let Some(o) = t.as_object_mut() {
        o.insert("$patch".into(), json!("replace"));
    }
    json!({"spec": {"template": t}})
}

/// The template stored in a revision.
pub fn template_of(rev: &ControllerRevision) -> Option<PodTemplateSpec> {
    let mut t = rev.data.as_ref()?.0.get("spec")?.get("template")?.clone();
    if let Some(o) = t.as_object_mut() {
        o.remove("$patch");
    }
    serde_json::from_value(t).ok()
}

/// List the owner's revisions, and make sure one exists (with the highest
/// revision number) for `template`. Returns all revisions and the index of
/// the one for `template`.
pub async fn sync(
    client: &Client,
    owner: &Owner<'_>,
    template: &PodTemplateSpec,
    collision_count: Option<i32>,
) -> Result<(Vec<ControllerRevision>, usize), kube::Error> {
    let ns = owner.meta.namespace.clone().unwrap_or_default();
    let uid = owner.meta.uid.clone().unwrap_or_default();
    let api: Api<ControllerRevision> = Api::namespaced(client.clone(), &ns);
    let lp = ListParams::default().labels(&util::match_labels_query(owner.selector));
    let mut revs = util::list_controlled(&api, &lp, &uid).await?;
    let data = revision_data(template);
    let max = revs.iter().map(|r| r.revision).max().unwrap_or(0);
    let hash = util::template_hash(template, collision_count);
    let name = format!("{}-{hash}", owner.meta.name.clone().unwrap_or_default());
    if let Some(i) = revs
        .iter()
        .position(|r| r.data.as_ref().map(|d| &d.0) == Some(&data))
    {
        if revs[i].revision < max {
            let patch = json!({"revision": max + 1});
            revs[i] = api
                .patch(
                    &revs[i].name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                )
                .await?;
        }
        return Ok((revs, i));
    }
    let mut labels = template
        .metadata
        .as_ref()
        .and_then(|m| m.labels.clone())
        .unwrap_or_default();
    labels.insert(REVISION_HASH.into(), hash);
    let rev = ControllerRevision {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            namespace: Some(ns),
            labels: Some(labels),
            owner_references: Some(vec![util::owner_ref("apps/v1", owner.kind, owner.meta)]),
            ..Default::default()
        },
        data: Some(RawExtension(data)),
        revision: max + 1,
    };
    let created = match api.create(&PostParams::default(), &rev).await {
        Ok(r) => r,
        // Someone (an earlier sync) made it: use it.
        Err(e) if util::is_status(&e, 409) => api.get(&name).await?,
        Err(e) => return Err(e),
    };
    revs.push(created);
    Ok((revs.clone(), revs.len() - 1))
}

/// Delete the oldest revisions beyond `limit` that are not in `keep` (names).
pub async fn prune(
    client: &Client,
    revs: &[ControllerRevision],
    keep: &[String],
    limit: usize,
) -> Result<(), kube::Error> {
    let mut old: Vec<&ControllerRevision> = revs
        .iter()
        .filter(|r| !keep.contains(&r.name_any()))
        .collect();
    if old.len() <= limit {
        return Ok(());
    }
    old.sort_by_key(|r| r.revision);
    let n = old.len() - limit;
    for r in old.into_iter().take(n) {
        let api: Api<ControllerRevision> =
            Api::namespaced(client.clone(), &r.namespace().unwrap_or_default());
        match api.delete(&r.name_any(), &DeleteParams::default()).await {
            Ok(_) => {}
            Err(e) if util::is_status(&e, 404) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_round_trips_the_template() {
        let t = PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some([("app".to_string(), "db".to_string())].into()),
                ..Default::default()
            }),
            spec: None,
        };
        let d = revision_data(&t);
        assert_eq!(d["spec"]["template"]["$patch"], "replace");
        let rev = ControllerRevision {
            data: Some(RawExtension(d)),
            ..Default::default()
        };
        assert_eq!(template_of(&rev), Some(t));
    }
}
