//! The generic registry: create, read, update, delete, list and watch for any
//! resource type in the catalog, with kind-specific behaviour from `strategy`,
//! defaulting and validation from `navarch_api`, and persistence in the store.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use navarch_api::catalog::{self, ResourceType, Subresource};
use navarch_api::selectors::{FieldSelector, LabelSelector};
use navarch_api::{defaults, validation};
use navarch_store::{prefix_end, KeyValue, Precondition, Revision, Store, StoreError};
use serde_json::{json, Value};

use crate::alloc::Allocators;
use crate::error::{ApiError, ApiResult};
use crate::object::{self, meta_mut};
use crate::strategy;
use crate::watchcache::{decode_stored, WatchCache};

/// Options of a write.
#[derive(Clone, Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
    pub field_manager: Option<String>,
}

/// Parsed list/watch filters.
#[derive(Default)]
pub struct Filter {
    pub label: Option<LabelSelector>,
    pub field: Option<FieldSelector>,
}

impl Filter {
    pub fn parse(rt: &ResourceType, label: Option<&str>, field: Option<&str>) -> ApiResult<Filter> {
        let label = match label {
            Some(s) => {
                Some(LabelSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?)
            }
            None => None,
        };
        let field = match field {
            Some(s) => {
                let fs =
                    FieldSelector::parse(s).map_err(|e| ApiError::bad_request(e.to_string()))?;
                let allowed = strategy::for_type(rt).selectable_fields();
                for req in fs.requirements() {
                    let f = req.field.as_str();
                    if f != "metadata.name" && f != "metadata.namespace" && !allowed.contains(&f) {
                        return Err(ApiError::bad_request(format!(
                            "field label not supported: {f}"
                        )));
                    }
                }
                Some(fs)
            }
            None => None,
        };
        Ok(Filter { label, field })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        if let Some(l) = &self.label {
            if !l.matches(object::labels(obj)) {
                return false;
            }
        }
        if let Some(f) = &self.field {
            if !f.matches(|field| navarch_api::selectors::field_value(obj, field)) {
                return false;
            }
        }
        true
    }

    /// The name a `metadata.name=x` field selector pins, if any (lets get-by-name
    /// watches skip other objects cheaply).
    pub fn is_empty(&self) -> bool {
        self.label.is_none() && self.field.is_none()
    }
}

/// One page of a list.
pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: Revision,
    pub continue_token: Option<String>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    start: String,
}

/// Outcome of a delete.
pub struct Deleted {
    pub object: Value,
    /// False when deletion is pending (finalizers or graceful termination).
    pub gone: bool,
}

pub struct Registry {
    pub store: Arc<dyn Store>,
    caches: HashMap<String, Arc<WatchCache>>,
    pub alloc: Allocators,
}

/// Decoded events kept per resource for watchers resuming from a recent
/// resourceVersion (older ones fall back to a store watch). Each holds the object
/// and its previous state, so this bounds the cache's memory.
pub const WATCH_REPLAY_EVENTS: usize = 1024;

/// How long a watch stays open when the client names no timeout.
pub const DEFAULT_WATCH_SECONDS: u64 = 1800;

impl Registry {
    pub async fn new(store: Arc<dyn Store>) -> ApiResult<Arc<Registry>> {
        let mut caches = HashMap::new();
        for rt in catalog::all() {
            caches.entry(rt.storage_prefix.clone()).or_insert_with(|| {
                WatchCache::start(
                    store.clone(),
                    rt.storage_prefix.clone(),
                    WATCH_REPLAY_EVENTS,
                )
            });
        }
        let alloc = Allocators::default();
        let reg = Registry {
            store,
            caches,
            alloc,
        };
        // Rebuild the allocators from the services that exist.
        if let Some(svc) = catalog::by_plural("", "v1", "services") {
            let all = reg.list(svc, None, &Filter::default(), None, None).await?;
            for s in &all.items {
                reg.alloc.observe(s);
            }
        }
        Ok(Arc::new(reg))
    }

    pub fn cache(&self, rt: &ResourceType) -> Option<&Arc<WatchCache>> {
        self.caches.get(&rt.storage_prefix)
    }

    fn decode(&self, kv: &KeyValue) -> ApiResult<Value> {
        decode_stored(&kv.value, kv.mod_revision).ok_or_else(|| {
            ApiError::internal(format!("stored object at {} is not valid JSON", kv.key))
        })
    }

    fn encode(obj: &Value) -> ApiResult<Bytes> {
        let mut buf = Vec::with_capacity(4096);
        serde_json::to_writer(&mut buf, &object::Stored(obj))
            .map(|()| Bytes::from(buf))
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    pub async fn get(&self, rt: &ResourceType, ns: Option<&str>, name: &str) -> ApiResult<Value> {
        match self.store.get(&rt.key(ns, name)).await? {
            Some(kv) => Ok(crate::conversion::to_version(rt, self.decode(&kv)?)),
            None => Err(ApiError::not_found(rt, name)),
        }
    }

    /// An object's JSON as a get returns it, without decoding it when its
    /// stored form is already the served one (no version conversion).
    pub async fn get_json(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<Bytes> {
        let kv = self
            .store
            .get(&rt.key(ns, name))
            .await?
            .ok_or_else(|| ApiError::not_found(rt, name))?;
        if !crate::conversion::converts(rt) {
            if let Some(b) = crate::object::stored_with_resource_version(&kv.value, kv.mod_revision)
            {
                return Ok(b);
            }
        }
        let v = crate::conversion::to_version(rt, self.decode(&kv)?);
        serde_json::to_vec(&v)
            .map(Bytes::from)
            .map_err(|e| ApiError::internal(e.to_string()))
    }

    pub async fn get_kv_pub(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<(KeyValue, Value)> {
        self.get_kv(rt, ns, name).await
    }

    async fn get_kv(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<(KeyValue, Value)> {
        match self.store.get(&rt.key(ns, name)).await? {
            Some(kv) => {
                let v = crate::conversion::to_version(rt, self.decode(&kv)?);
                Ok((kv, v))
            }
            None => Err(ApiError::not_found(rt, name)),
        }
    }

    /// List objects, optionally paged.
    pub async fn list(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        filter: &Filter,
        limit: Option<usize>,
        continue_token: Option<&str>,
    ) -> ApiResult<ListResult> {
        let prefix = rt.list_prefix(ns);
        let end = prefix_end(&prefix);
        let (mut start, revision) = match continue_token {
            Some(tok) => {
                let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(tok)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                let t: ContinueToken = serde_json::from_slice(&raw)
                    .map_err(|_| ApiError::bad_request("invalid continue token"))?;
                if !t.start.starts_with(&prefix) {
                    return Err(ApiError::bad_request(
                        "continue token does not match the request",
                    ));
                }
                (t.start, t.rv)
            }
            None => (prefix.clone(), 0),
        };
        let mut items = Vec::new();
        let mut revision = revision;
        loop {
            let want = limit.map(|l| l - items.len());
            let batch = want.map(|w| w.max(64)).unwrap_or(0);
            let res = match self.store.range(&start, &end, revision, batch).await {
                Ok(r) => r,
                Err(StoreError::Compacted { .. }) if continue_token.is_some() => {
                    return Err(ApiError::expired(
                        "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                    ))
                }
                Err(e) => return Err(e.into()),
            };
            revision = res.revision;
            let n = res.kvs.len();
            let mut last_key = None;
            for kv in &res.kvs {
                last_key = Some(kv.key.clone());
                let obj = crate::conversion::to_version(rt, self.decode(kv)?);
                if filter.matches(&obj) {
                    items.push(obj);
                    if let Some(l) = limit {
                        if items.len() >= l {
                            // Anything after this key?
                            let next = format!("{}\0", kv.key);
                            let more = kv.key != res.kvs[n - 1].key || res.more;
                            let token = if more {
                                let t = ContinueToken {
                                    rv: revision,
                                    start: next,
                                };
                                Some(
                                    base64::engine::general_purpose::URL_SAFE_NO_PAD
                                        .encode(serde_json::to_vec(&t).unwrap_or_default()),
                                )
                            } else {
                                None
                            };
                            return Ok(ListResult {
                                items,
                                revision,
                                continue_token: token,
                            });
                        }
                    }
                }
            }
            if !res.more {
                break;
            }
            match last_key {
                Some(k) => start = format!("{k}\0"),
                None => break,
            }
        }
        Ok(ListResult {
            items,
            revision,
            continue_token: None,
        })
    }

    async fn check_namespace(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
    ) -> ApiResult<()> {
        let (true, Some(ns)) = (rt.namespaced, ns) else {
            return Ok(());
        };
        let Some(nsrt) = catalog::by_plural("", "v1", "namespaces") else {
            return Ok(());
        };
        match self.store.get(&nsrt.key(None, ns)).await? {
            None => Err(ApiError::namespace_not_found(ns)),
            Some(kv) => {
                let v = crate::conversion::to_version(rt, self.decode(&kv)?);
                if v.pointer("/metadata/deletionTimestamp").is_some() {
                    Err(ApiError::forbidden(format!(
                        "{} \"{}\" is forbidden: unable to create new content in namespace {} because it is being terminated",
                        rt.qualified_plural(),
                        name,
                        ns
                    )))
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Create `obj` (already decoded and type-checked).
    pub async fn create(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        mut obj: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        let strat = strategy::for_type(rt);
        {
            let m = meta_mut(&mut obj);
            let name = m
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                if let Some(g) = m
                    .get("generateName")
                    .and_then(Value::as_str)
                    .filter(|g| !g.is_empty())
                {
                    let n = format!("{g}{}", object::random_suffix());
                    m.insert("name".into(), json!(n));
                }
            }
            if rt.namespaced {
                if let Some(ns) = ns {
                    m.insert("namespace".into(), json!(ns));
                }
            } else {
                m.remove("namespace");
            }
            m.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
            m.insert("creationTimestamp".into(), json!(object::now_rfc3339()));
            m.remove("resourceVersion");
            m.remove("deletionTimestamp");
            m.remove("deletionGracePeriodSeconds");
            m.remove("selfLink");
            if strat.tracks_generation() {
                m.insert("generation".into(), json!(1));
            } else {
                m.remove("generation");
            }
        }
        let name = object::name(&obj).to_string();
        if name.is_empty() {
            return Err(ApiError::invalid(
                rt,
                "",
                &[validation::FieldError {
                    error_type: validation::ErrorType::Required,
                    field: "metadata.name".into(),
                    bad_value: None,
                    detail: "name or generateName is required".into(),
                }],
            ));
        }
        strat.prepare_for_create(rt, &mut obj);
        defaults::apply(rt, &mut obj);
        self.check_namespace(rt, ns, &name).await?;
        crate::admission::admit_create(self, rt, ns, &mut obj).await?;
        let errs = validation::validate_create(rt, &obj);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, &name, &errs));
        }
        let allocated = self.alloc.admit_create(rt, &mut obj)?;
        if opts.dry_run {
            self.alloc.release_all(&allocated);
            return Ok(obj);
        }
        let bytes = Self::encode(&obj)?;
        match self
            .store
            .put(&rt.key(ns, &name), bytes, Precondition::MustNotExist)
            .await
        {
            Ok(kv) => {
                meta_mut(&mut obj)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                Ok(obj)
            }
            Err(e) => {
                self.alloc.release_all(&allocated);
                match e {
                    StoreError::AlreadyExists => Err(ApiError::already_exists(rt, &name)),
                    e => Err(e.into()),
                }
            }
        }
    }

    /// Replace an object (PUT), or its status (`sub` = Status).
    pub async fn update(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        obj: Value,
        sub: Option<Subresource>,
        opts: &WriteOptions,
    ) -> ApiResult<(Value, bool)> {
        let strat = strategy::for_type(rt);
        let (kv, old) = match self.get_kv(rt, ns, name).await {
            Ok(x) => x,
            Err(e) if e.code == 404 && strat.allow_create_on_update() && sub.is_none() => {
                return Ok((self.create(rt, ns, obj, opts).await?, true));
            }
            Err(e) => return Err(e),
        };
        if let Some(rv) = object::meta_str(&obj, "resourceVersion").filter(|s| !s.is_empty()) {
            if rv.parse::<i64>().ok() != Some(kv.mod_revision) {
                return Err(ApiError::modified(rt, name));
            }
        }
        let new = self.prepare_update(rt, ns, name, obj, &old, sub)?;
        let out = self
            .write_update(rt, ns, name, &kv, &old, new, opts)
            .await?;
        Ok((out, false))
    }

    /// Build the object an update would store: system fields carried over,
    /// status or spec kept per subresource, defaults, validation.
    pub fn prepare_update(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        mut obj: Value,
        old: &Value,
        sub: Option<Subresource>,
    ) -> ApiResult<Value> {
        let strat = strategy::for_type(rt);
        if object::name(&obj) != name && !object::name(&obj).is_empty() {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({}) does not match the name on the URL ({})",
                object::name(&obj),
                name
            )));
        }
        if let (Some(body_ns), Some(ns)) = (object::meta_str(&obj, "namespace"), ns) {
            if !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if let Some(uid) = object::meta_str(&obj, "uid").filter(|u| !u.is_empty()) {
            if Some(uid) != object::meta_str(old, "uid") {
                return Err(ApiError::conflict(
                    rt,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {}, UID in object meta: {}",
                        uid,
                        object::meta_str(old, "uid").unwrap_or("")
                    ),
                ));
            }
        }
        let mut new = match sub {
            Some(Subresource::Status) => {
                let mut n = match (old.as_object(), obj.get_mut("status")) {
                    // The old object with the new status, the old status not copied.
                    (Some(o), Some(status)) => {
                        let mut m = serde_json::Map::with_capacity(o.len() + 1);
                        for (k, v) in o {
                            if k == "status" {
                                m.insert(k.clone(), status.take());
                            } else {
                                m.insert(k.clone(), v.clone());
                            }
                        }
                        if !m.contains_key("status") {
                            m.insert("status".into(), status.take());
                        }
                        Value::Object(m)
                    }
                    _ => {
                        let mut n = old.clone();
                        if let Some(m) = n.as_object_mut() {
                            m.remove("status");
                        }
                        n
                    }
                };
                // As upstream's ResetObjectMetaForStatus: metadata stays the old
                // one except managedFields, which record this status write.
                if let Some(mf) = obj.pointer_mut("/metadata/managedFields") {
                    meta_mut(&mut n).insert("managedFields".into(), mf.take());
                }
                n
            }
            _ => {
                strat.prepare_for_update(rt, &mut obj, old);
                obj
            }
        };
        {
            let empty = serde_json::Map::new();
            let old_meta = old
                .get("metadata")
                .and_then(Value::as_object)
                .unwrap_or(&empty);
            let m = meta_mut(&mut new);
            for k in [
                "name",
                "namespace",
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
                "generation",
            ] {
                match old_meta.get(k) {
                    Some(v) => {
                        m.insert(k.into(), v.clone());
                    }
                    None => {
                        m.remove(k);
                    }
                }
            }
            m.remove("selfLink");
        }
        new["apiVersion"] = json!(rt.api_version);
        new["kind"] = json!(rt.kind);
        defaults::apply(rt, &mut new);
        if strat.tracks_generation() {
            let changed = new.get("spec") != old.get("spec");
            let g = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(1);
            meta_mut(&mut new).insert("generation".into(), json!(if changed { g + 1 } else { g }));
        }
        let errs = validation::validate_update(rt, &new, old);
        if !errs.is_empty() {
            return Err(ApiError::invalid(rt, name, &errs));
        }
        Ok(new)
    }

    /// Store an updated object against the revision it was read at.
    #[allow(clippy::too_many_arguments)]
    pub async fn write_update(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        kv: &KeyValue,
        old: &Value,
        mut new: Value,
        opts: &WriteOptions,
    ) -> ApiResult<Value> {
        meta_mut(&mut new).insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
        if &new == old {
            return Ok(new);
        }
        let allocated = self.alloc.admit_update(rt, &mut new, old)?;
        if opts.dry_run {
            self.alloc.release_all(&allocated);
            return Ok(new);
        }
        // The last finalizer gone from an object being deleted: delete it for real.
        if new.pointer("/metadata/deletionTimestamp").is_some()
            && object::finalizers(&new).is_empty()
            && !namespace_spec_finalizers_pending(rt, &new)
        {
            return match self
                .store
                .delete(
                    &rt.key(ns, name),
                    Precondition::ModRevision(kv.mod_revision),
                )
                .await
            {
                Ok(d) => {
                    self.alloc.release_object(rt, &new);
                    meta_mut(&mut new)
                        .insert("resourceVersion".into(), json!(d.mod_revision.to_string()));
                    Ok(new)
                }
                Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound) => {
                    Err(ApiError::modified(rt, name))
                }
                Err(e) => Err(e.into()),
            };
        }
        let bytes = Self::encode(&new)?;
        match self
            .store
            .put(
                &rt.key(ns, name),
                bytes,
                Precondition::ModRevision(kv.mod_revision),
            )
            .await
        {
            Ok(kv) => {
                self.alloc.release_replaced(rt, &new, old);
                meta_mut(&mut new)
                    .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                Ok(new)
            }
            Err(StoreError::Conflict { .. }) | Err(StoreError::NotFound) => {
                self.alloc.release_all(&allocated);
                Err(ApiError::modified(rt, name))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read-modify-write with retries on conflict: `f` gets the current object and
    /// returns the object to store (before the update pipeline). Used by PATCH and
    /// the subresources.
    pub async fn guaranteed_update<F>(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        sub: Option<Subresource>,
        opts: &WriteOptions,
        mut f: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(&Value) -> ApiResult<Value>,
    {
        let mut attempts = 0;
        loop {
            attempts += 1;
            let (kv, old) = self.get_kv(rt, ns, name).await?;
            let wanted = f(&old)?;
            if let Some(rv) = object::meta_str(&wanted, "resourceVersion").filter(|s| !s.is_empty())
            {
                if rv.parse::<i64>().ok() != Some(kv.mod_revision) {
                    return Err(ApiError::modified(rt, name));
                }
            }
            let new = self.prepare_update(rt, ns, name, wanted, &old, sub)?;
            match self.write_update(rt, ns, name, &kv, &old, new, opts).await {
                Err(e) if e.code == 409 && e.reason == "Conflict" && attempts < 10 => continue,
                other => return other,
            }
        }
    }

    /// Delete an object, gracefully or with finalizers where they apply.
    pub async fn delete(
        &self,
        rt: &ResourceType,
        ns: Option<&str>,
        name: &str,
        options: &Value,
        query_grace: Option<i64>,
        dry_run: bool,
    ) -> ApiResult<Deleted> {
        loop {
            let (kv, mut obj) = self.get_kv(rt, ns, name).await?;
            if let Some(pre) = options.get("preconditions") {
                if let Some(uid) = pre.get("uid").and_then(Value::as_str) {
                    let actual = object::meta_str(&obj, "uid").unwrap_or("");
                    if uid != actual {
                        return Err(ApiError::conflict(rt, name, &format!(
                            "Precondition failed: UID in precondition: {uid}, UID in object meta: {actual}"
                        )));
                    }
                }
                if let Some(rv) = pre.get("resourceVersion").and_then(Value::as_str) {
                    if rv.parse::<i64>().ok() != Some(kv.mod_revision) {
                        return Err(ApiError::conflict(rt, name, &format!(
                            "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                            kv.mod_revision
                        )));
                    }
                }
            }
            let grace = options
                .get("gracePeriodSeconds")
                .and_then(Value::as_i64)
                .or(query_grace);
            if obj.pointer("/metadata/deletionTimestamp").is_none() {
                apply_gc_finalizers(&mut obj, options);
            }
            let pending_finalizers =
                !object::finalizers(&obj).is_empty() || namespace_spec_finalizers_pending(rt, &obj);
            let graceful = graceful_period(rt, &obj, grace);
            let already_deleting = obj.pointer("/metadata/deletionTimestamp").is_some();
            if pending_finalizers || graceful.is_some() {
                if already_deleting && graceful.is_none() {
                    return Ok(Deleted {
                        object: obj,
                        gone: false,
                    });
                }
                if dry_run {
                    return Ok(Deleted {
                        object: obj,
                        gone: false,
                    });
                }
                let m = meta_mut(&mut obj);
                if !already_deleting {
                    m.insert("deletionTimestamp".into(), json!(object::now_rfc3339()));
                }
                if let Some(g) = graceful {
                    let current = m.get("deletionGracePeriodSeconds").and_then(Value::as_i64);
                    if current.map(|c| g < c).unwrap_or(true) {
                        m.insert("deletionGracePeriodSeconds".into(), json!(g));
                    }
                } else if !already_deleting {
                    m.insert("deletionGracePeriodSeconds".into(), json!(0));
                }
                if rt.group.is_empty() && rt.plural == "namespaces" {
                    obj["status"]["phase"] = json!("Terminating");
                }
                if strategy::for_type(rt).tracks_generation() && !already_deleting {
                    let g = obj
                        .pointer("/metadata/generation")
                        .and_then(Value::as_i64)
                        .unwrap_or(1);
                    meta_mut(&mut obj).insert("generation".into(), json!(g + 1));
                }
                let bytes = Self::encode(&obj)?;
                match self
                    .store
                    .put(
                        &rt.key(ns, name),
                        bytes,
                        Precondition::ModRevision(kv.mod_revision),
                    )
                    .await
                {
                    Ok(kv) => {
                        meta_mut(&mut obj)
                            .insert("resourceVersion".into(), json!(kv.mod_revision.to_string()));
                        return Ok(Deleted {
                            object: obj,
                            gone: false,
                        });
                    }
                    Err(StoreError::Conflict { .. }) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if dry_run {
                return Ok(Deleted {
                    object: obj,
                    gone: true,
                });
            }
            match self
                .store
                .delete(
                    &rt.key(ns, name),
                    Precondition::ModRevision(kv.mod_revision),
                )
                .await
            {
                Ok(d) => {
                    self.alloc.release_object(rt, &obj);
                    meta_mut(&mut obj)
                        .insert("resourceVersion".into(), json!(d.mod_revision.to_string()));
                    return Ok(Deleted {
                        object: obj,
                        gone: true,
                    });
                }
                Err(StoreError::Conflict { .. }) => continue,
                Err(StoreError::NotFound) => return Err(ApiError::not_found(rt, name)),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

pub const FINALIZER_FOREGROUND: &str = "foregroundDeletion";
pub const FINALIZER_ORPHAN: &str = "orphan";

/// Translate DeleteOptions' propagation policy into the garbage collector's
/// finalizers (upstream's `deletionFinalizersForGarbageCollection`): Foreground
/// adds `foregroundDeletion`, Orphan adds `orphan`, Background (the default) adds
/// neither; the GC controller removes them when it is done.
fn apply_gc_finalizers(obj: &mut Value, options: &Value) {
    let policy = options
        .get("propagationPolicy")
        .and_then(Value::as_str)
        .map(str::to_string)
        .or_else(|| {
            options
                .get("orphanDependents")
                .and_then(Value::as_bool)
                .map(|o| {
                    if o {
                        "Orphan".to_string()
                    } else {
                        "Background".to_string()
                    }
                })
        });
    let Some(policy) = policy else { return };
    let mut fins = object::finalizers(obj);
    fins.retain(|f| f != FINALIZER_FOREGROUND && f != FINALIZER_ORPHAN);
    match policy.as_str() {
        "Foreground" => fins.push(FINALIZER_FOREGROUND.to_string()),
        "Orphan" => fins.push(FINALIZER_ORPHAN.to_string()),
        _ => {}
    }
    let m = meta_mut(obj);
    if fins.is_empty() {
        m.remove("finalizers");
    } else {
        m.insert("finalizers".into(), json!(fins));
    }
}

/// A namespace whose `spec.finalizers` still lists something cannot go yet.
fn namespace_spec_finalizers_pending(rt: &ResourceType, obj: &Value) -> bool {
    rt.group.is_empty()
        && rt.plural == "namespaces"
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .map(|a| !a.is_empty())
            .unwrap_or(false)
}

/// Pods bound to a node terminate gracefully: the node's agent stops the
/// containers and then deletes the object with grace 0.
fn graceful_period(rt: &ResourceType, obj: &Value, requested: Option<i64>) -> Option<i64> {
    if !(rt.group.is_empty() && rt.plural == "pods") {
        return None;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .map(|n| !n.is_empty())
        .unwrap_or(false);
    let phase = obj
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if !bound || phase == "Succeeded" || phase == "Failed" {
        return None;
    }
    let g = requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30);
    if g <= 0 {
        None
    } else {
        Some(g)
    }
}
