//! [`LocalImageService`]: the [`crate::ImageService`] over the on-disk store.

mod archive;
mod gc;
mod registry;
pub(crate) mod store;

pub use gc::ImageGcPolicy;
pub use registry::RegistriesConfig;

use crate::{
    FsUsage, Image, ImageGcReport, ImageReference, PullProgress, RegistryAuth, Result,
    RuntimeConfig, RuntimeError,
};
use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use store::ImageStore;

/// OCI / Docker manifest JSON shapes.
pub(crate) mod manifest {
    use serde::Deserialize;
    use std::collections::BTreeMap;

    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";

    #[derive(Debug, Deserialize, Default)]
    pub struct Platform {
        #[serde(default)]
        pub architecture: String,
        #[serde(default)]
        pub os: String,
    }

    #[derive(Debug, Deserialize)]
    pub struct Descriptor {
        #[serde(rename = "mediaType", default)]
        pub media_type: String,
        pub digest: String,
        #[serde(default)]
        pub size: u64,
        #[serde(default)]
        pub platform: Option<Platform>,
        #[serde(default)]
        pub annotations: BTreeMap<String, String>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Index {
        #[serde(default)]
        pub manifests: Vec<Descriptor>,
    }

    #[derive(Debug, Deserialize)]
    pub struct Manifest {
        pub config: Descriptor,
        #[serde(default)]
        pub layers: Vec<Descriptor>,
    }

    /// Whether a manifest body (with its media type, possibly empty) is an index / list.
    pub fn is_index(media_type: &str, body: &[u8]) -> bool {
        if media_type == OCI_INDEX || media_type == DOCKER_LIST {
            return true;
        }
        #[derive(Deserialize)]
        struct Probe {
            #[serde(rename = "mediaType", default)]
            media_type: String,
            manifests: Option<serde_json::Value>,
        }
        match serde_json::from_slice::<Probe>(body) {
            Ok(p) => {
                p.media_type == OCI_INDEX || p.media_type == DOCKER_LIST || p.manifests.is_some()
            }
            Err(_) => false,
        }
    }
}

/// The OCI architecture name of this host.
pub(crate) fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The manifest for linux/<host arch> in an index (a manifest without a platform
/// is taken when it is the only one).
pub(crate) fn pick_platform(index: &manifest::Index) -> Option<String> {
    let arch = host_arch();
    index
        .manifests
        .iter()
        .find(|d| {
            d.platform
                .as_ref()
                .map(|p| p.os == "linux" && p.architecture == arch)
                .unwrap_or(false)
        })
        .or_else(|| {
            (index.manifests.len() == 1 && index.manifests[0].platform.is_none())
                .then(|| &index.manifests[0])
        })
        .map(|d| d.digest.clone())
}

/// Images in a local content-addressed store (see the module docs of the store for
/// the layout), pulled from registries or imported from archives.
#[derive(Clone)]
pub struct LocalImageService {
    store: Arc<ImageStore>,
    registry: Arc<registry::Client>,
    containers_dir: std::path::PathBuf,
    gc_min_age: std::time::Duration,
}

impl std::fmt::Debug for LocalImageService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalImageService")
            .field("store", &self.store)
            .finish()
    }
}

impl LocalImageService {
    /// Open (creating) the store under `config.root/images`; reads registry
    /// settings from `config.root/registries.json` (see [`RegistriesConfig`]).
    pub fn new(config: &RuntimeConfig) -> Result<Self> {
        let store = Arc::new(ImageStore::open(config.images_dir())?);
        let regs = RegistriesConfig::load(&config.root.join("registries.json"))?;
        Ok(LocalImageService {
            store,
            registry: Arc::new(registry::Client::new(regs)?),
            containers_dir: config.containers_dir(),
            gc_min_age: ImageGcPolicy::default().min_age,
        })
    }

    /// Images stored or used more recently than `min_age` are never
    /// garbage-collected (default: [`ImageGcPolicy::default`]'s 2 minutes).
    pub fn with_gc_min_age(mut self, min_age: std::time::Duration) -> Self {
        self.gc_min_age = min_age;
        self
    }

    /// Remove images no container uses, least recently used (by container
    /// creation, else by when they were stored) first, until `bytes_to_free`
    /// bytes are freed or no candidate is left. `in_use` holds image IDs or
    /// references in use; the images of the runtime's existing containers are
    /// in use too. Images younger than the GC minimum age are kept. A blob or
    /// unpacked layer is deleted only when no remaining image and no
    /// container's rootfs refers to it.
    pub async fn garbage_collect(
        &self,
        in_use: &HashSet<String>,
        bytes_to_free: u64,
    ) -> Result<ImageGcReport> {
        let store = self.store.clone();
        let containers = self.containers_dir.clone();
        let in_use = in_use.clone();
        let min_age = self.gc_min_age;
        blocking(move || {
            gc::collect(
                &store,
                &containers,
                &in_use,
                bytes_to_free,
                min_age,
                std::time::SystemTime::now(),
            )
        })
        .await
    }

    /// Size and free space of the filesystem holding the image store.
    pub fn fs_usage(&self) -> Result<FsUsage> {
        gc::fs_usage(&self.store)
    }

    /// Directories (top layer first) of the unpacked layers of image `key`.
    pub fn layer_dirs(&self, key: &str) -> Result<Vec<std::path::PathBuf>> {
        layer_dirs(&self.store, key)
    }
}

pub(crate) fn layer_dirs(store: &ImageStore, key: &str) -> Result<Vec<std::path::PathBuf>> {
    let rec = store
        .resolve(key)?
        .ok_or_else(|| RuntimeError::ImageNotFound {
            image: key.to_string(),
            detail: "not present locally".into(),
        })?;
    rec.layers
        .iter()
        .rev()
        .map(|d| {
            store
                .layer_dir(d)
                .filter(|p| p.exists())
                .ok_or_else(|| RuntimeError::ImageNotFound {
                    image: key.to_string(),
                    detail: format!("layer {d} missing"),
                })
        })
        .collect()
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("blocking task: {e}"))))?
}

#[async_trait::async_trait]
impl crate::ImageService for LocalImageService {
    async fn pull(
        &self,
        reference: &str,
        auth: &BTreeMap<String, RegistryAuth>,
        progress: Option<&(dyn Fn(PullProgress) + Send + Sync)>,
    ) -> Result<Image> {
        let r = ImageReference::parse(reference)?;
        let store = self.store.clone();
        let key = r.normalized();
        if let Some(rec) = blocking(move || Ok(store.resolve(&key)?)).await? {
            return Ok(rec.to_image());
        }
        let rec = self.registry.pull(&self.store, &r, auth, progress).await?;
        Ok(rec.to_image())
    }

    async fn get(&self, reference: &str) -> Result<Option<Image>> {
        let store = self.store.clone();
        let key = reference.to_string();
        Ok(blocking(move || Ok(store.resolve(&key)?))
            .await?
            .map(|r| r.to_image()))
    }

    async fn import(&self, archive: &Path) -> Result<Vec<Image>> {
        let store = self.store.clone();
        let path = archive.to_path_buf();
        let recs = blocking(move || archive::import(&store, &path)).await?;
        Ok(recs.iter().map(|r| r.to_image()).collect())
    }

    async fn list(&self) -> Result<Vec<Image>> {
        let store = self.store.clone();
        Ok(blocking(move || Ok(store.list()?))
            .await?
            .iter()
            .map(|r| r.to_image())
            .collect())
    }

    async fn remove(&self, id_or_reference: &str) -> Result<()> {
        let store = self.store.clone();
        let key = id_or_reference.to_string();
        let containers = self.containers_dir.clone();
        blocking(move || {
            let (found, gone) = store.remove(&key)?;
            if !found {
                return Err(RuntimeError::ImageNotFound {
                    image: key,
                    detail: "not present locally".into(),
                });
            }
            if gone.is_some() {
                // Layers still under a container's rootfs stay.
                let in_use = crate::runc::layers_in_use(&containers);
                store.gc(&in_use)?;
            }
            Ok(())
        })
        .await
    }

    async fn image_fs_usage(&self) -> Result<Option<FsUsage>> {
        self.fs_usage().map(Some)
    }

    async fn garbage_collect(
        &self,
        in_use: &HashSet<String>,
        bytes_to_free: u64,
    ) -> Result<ImageGcReport> {
        LocalImageService::garbage_collect(self, in_use, bytes_to_free).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_host_platform() {
        let idx: manifest::Index = serde_json::from_value(serde_json::json!({
            "manifests": [
                {"digest": "sha256:1", "platform": {"os": "linux", "architecture": "s390x"}},
                {"digest": "sha256:2", "platform": {"os": "windows", "architecture": host_arch()}},
                {"digest": "sha256:3", "platform": {"os": "linux", "architecture": host_arch()}},
            ]
        }))
        .unwrap();
        assert_eq!(pick_platform(&idx).as_deref(), Some("sha256:3"));
        let none: manifest::Index = serde_json::from_value(serde_json::json!({
            "manifests": [{"digest": "sha256:1", "platform": {"os": "linux", "architecture": "s390x"}}]
        }))
        .unwrap();
        assert_eq!(pick_platform(&none), None);
        assert!(manifest::is_index("", br#"{"manifests":[]}"#));
        assert!(!manifest::is_index("", br#"{"config":{}}"#));
    }
}
