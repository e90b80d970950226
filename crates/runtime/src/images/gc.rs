//! Image garbage collection, as the kubelet's image GC manager: when the image
//! filesystem is `high_threshold_percent` full, remove images no container
//! uses, least recently used first, until it is below `low_threshold_percent`.
//!
//! The policy ([`ImageGcPolicy::bytes_to_free`]) is a pure function of the
//! filesystem usage; the collection itself ([`collect`]) works on the store.
//! Blobs and unpacked layers are shared between images: removing an image
//! deletes only those no remaining image (and no existing container's rootfs)
//! refers to, so the bytes freed are measured, not estimated.

use super::store::ImageStore;
use crate::{FsUsage, ImageGcReport, Result};
use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, SystemTime};

/// When and how much to collect (the kubelet's `imageGCHighThresholdPercent`,
/// `imageGCLowThresholdPercent` and `imageMinimumGCAge`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageGcPolicy {
    /// Collect once the image filesystem is at least this full (85).
    pub high_threshold_percent: u8,
    /// ... down to this (80).
    pub low_threshold_percent: u8,
    /// Never remove an image stored or last used more recently than this
    /// (2 minutes): it was probably pulled for a container about to start.
    pub min_age: Duration,
}

impl Default for ImageGcPolicy {
    fn default() -> Self {
        ImageGcPolicy {
            high_threshold_percent: 85,
            low_threshold_percent: 80,
            min_age: Duration::from_secs(120),
        }
    }
}

impl ImageGcPolicy {
    /// How many bytes to free, when `usage` is at or above the high threshold:
    /// enough to bring the filesystem down to the low threshold. `None` below
    /// the high threshold or for an unknown (zero-sized) filesystem.
    pub fn bytes_to_free(&self, usage: FsUsage) -> Option<u64> {
        let capacity = usage.capacity_bytes;
        if capacity == 0 {
            return None;
        }
        let available = usage.available_bytes.min(capacity);
        let used = capacity - available;
        // used / capacity >= high / 100, in integers.
        let high = u128::from(self.high_threshold_percent.min(100));
        if u128::from(used) * 100 < high * u128::from(capacity) {
            return None;
        }
        let low = u128::from(self.low_threshold_percent.min(100));
        let target_used = (low * u128::from(capacity) / 100) as u64;
        Some(used.saturating_sub(target_used)).filter(|b| *b > 0)
    }
}

/// Image IDs the runtime's own containers (running or not, as long as they
/// exist) were created from.
fn images_of_containers(containers_dir: &Path) -> HashSet<String> {
    #[derive(serde::Deserialize)]
    struct Meta {
        image_id: String,
    }
    let Ok(rd) = std::fs::read_dir(containers_dir) else {
        return HashSet::new();
    };
    rd.flatten()
        .filter_map(|e| std::fs::read(e.path().join("meta.json")).ok())
        .filter_map(|b| serde_json::from_slice::<Meta>(&b).ok())
        .map(|m| m.image_id)
        .collect()
}

/// Remove unused images, least recently used first, until `bytes_to_free`
/// bytes are freed or no candidate is left. `in_use` holds IDs or references;
/// images of the runtime's existing containers count as in use too, and
/// images younger than `min_age` are skipped.
pub(crate) fn collect(
    store: &ImageStore,
    containers_dir: &Path,
    in_use: &HashSet<String>,
    bytes_to_free: u64,
    min_age: Duration,
    now: SystemTime,
) -> Result<ImageGcReport> {
    let mut used: HashSet<String> = images_of_containers(containers_dir);
    for key in in_use {
        if let Some(rec) = store.resolve(key)? {
            used.insert(rec.id);
        }
    }
    let mut candidates: Vec<(SystemTime, String)> = store
        .list()?
        .into_iter()
        .filter(|r| !used.contains(&r.id))
        .filter_map(|r| {
            // Unknown age: leave it alone.
            let last = store.last_used(&r.id)?;
            let age = now.duration_since(last).unwrap_or(Duration::ZERO);
            (age >= min_age).then_some((last, r.id))
        })
        .collect();
    candidates.sort();
    let mut report = ImageGcReport::default();
    for (_, id) in candidates {
        if report.freed_bytes >= bytes_to_free {
            break;
        }
        let (_, gone) = store.remove(&id)?;
        if gone.is_none() {
            continue;
        }
        let layers = crate::runc::layers_in_use(containers_dir);
        report.freed_bytes += store.gc(&layers)?;
        tracing::info!(image = %id, freed = report.freed_bytes, "image garbage-collected");
        report.removed.push(id);
    }
    Ok(report)
}

/// The image filesystem's usage (statvfs of the store's directory).
pub(crate) fn fs_usage(store: &ImageStore) -> Result<FsUsage> {
    let (capacity_bytes, available_bytes) = crate::sys::statvfs(store.dir())?;
    Ok(FsUsage {
        capacity_bytes,
        available_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::images::store::{ImageRecord, StoredConfig};
    use std::io::Write;

    fn usage(capacity: u64, available: u64) -> FsUsage {
        FsUsage {
            capacity_bytes: capacity,
            available_bytes: available,
        }
    }

    #[test]
    fn thresholds_as_the_kubelet() {
        let p = ImageGcPolicy::default();
        // 84% used: nothing to do.
        assert_eq!(p.bytes_to_free(usage(1000, 160)), None);
        // exactly 85%: free down to 80%.
        assert_eq!(p.bytes_to_free(usage(1000, 150)), Some(50));
        // 95% used.
        assert_eq!(p.bytes_to_free(usage(1000, 50)), Some(150));
        // full.
        assert_eq!(p.bytes_to_free(usage(1000, 0)), Some(200));
        // unknown filesystem.
        assert_eq!(p.bytes_to_free(usage(0, 0)), None);
        // nonsense (more available than capacity) is treated as empty.
        assert_eq!(p.bytes_to_free(usage(1000, 5000)), None);
        // large filesystems do not overflow.
        let tb = 1u64 << 40;
        assert_eq!(
            p.bytes_to_free(usage(100 * tb, 10 * tb)),
            Some(10 * tb),
            "90% of 100 TiB used: free 10 TiB"
        );
        let odd = ImageGcPolicy {
            high_threshold_percent: 50,
            low_threshold_percent: 10,
            min_age: Duration::ZERO,
        };
        assert_eq!(odd.bytes_to_free(usage(1000, 500)), Some(400));
        assert_eq!(odd.bytes_to_free(usage(1000, 501)), None);
    }

    /// A store with images made of fake blobs and layer dirs.
    struct Fixture {
        dir: tempfile::TempDir,
        store: ImageStore,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let store = ImageStore::open(dir.path().join("images")).unwrap();
            std::fs::create_dir_all(dir.path().join("containers")).unwrap();
            Fixture { dir, store }
        }

        fn containers(&self) -> std::path::PathBuf {
            self.dir.path().join("containers")
        }

        /// A layer dir holding `size` bytes; returns its diff ID.
        fn layer(&self, name: &str, size: usize) -> String {
            let diff_id = crate::digest::sha256_digest(name.as_bytes());
            let d = self.store.layer_dir(&diff_id).unwrap();
            std::fs::create_dir_all(&d).unwrap();
            let mut f = std::fs::File::create(d.join("data")).unwrap();
            f.write_all(&vec![7u8; size]).unwrap();
            diff_id
        }

        /// An image with its own config blob over `layers`; returns its ID.
        fn image(&self, name: &str, layers: &[String], age: Duration) -> String {
            let id = self
                .store
                .put_blob(format!("config of {name}").as_bytes(), None)
                .unwrap();
            let blob = self.store.put_blob(&vec![1u8; 8192], None).ok();
            let stamp = SystemTime::now() - age;
            std::fs::File::options()
                .write(true)
                .open(self.store.blob_path(&id).unwrap())
                .unwrap()
                .set_modified(stamp)
                .unwrap();
            self.store
                .add(ImageRecord {
                    id: id.clone(),
                    references: vec![format!("example.com/{name}:1")],
                    repo_digests: vec![],
                    size: 1,
                    config: StoredConfig::default(),
                    layers: layers.to_vec(),
                    blobs: [Some(id.clone()), blob].into_iter().flatten().collect(),
                })
                .unwrap();
            id
        }

        fn ids(&self) -> Vec<String> {
            let mut v: Vec<String> = self
                .store
                .list()
                .unwrap()
                .into_iter()
                .map(|r| r.id)
                .collect();
            v.sort();
            v
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn removes_least_recently_used_first_and_keeps_shared_layers() {
        let f = Fixture::new();
        let shared = f.layer("shared", 100_000);
        let old_only = f.layer("old-only", 50_000);
        let mid_only = f.layer("mid-only", 50_000);
        let old = f.image("old", &[shared.clone(), old_only.clone()], 3 * HOUR);
        let mid = f.image("mid", &[shared.clone(), mid_only.clone()], 2 * HOUR);
        let new = f.image("new", std::slice::from_ref(&shared), HOUR);

        // Asking for one byte removes exactly the least recently used image.
        let r = collect(
            &f.store,
            &f.containers(),
            &HashSet::new(),
            1,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r.removed, vec![old.clone()]);
        // Its own layer and blobs went; the shared layer stayed.
        assert!(r.freed_bytes >= 50_000, "{r:?}");
        assert!(!f.store.layer_dir(&old_only).unwrap().exists());
        assert!(f.store.layer_dir(&shared).unwrap().exists());
        assert!(!f.store.has_blob(&old));
        assert_eq!(f.ids(), {
            let mut v = vec![mid.clone(), new.clone()];
            v.sort();
            v
        });

        // A recent use moves "mid" behind "new".
        f.store.mark_used(&mid).unwrap();
        let r = collect(
            &f.store,
            &f.containers(),
            &HashSet::new(),
            1,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r.removed, vec![new.clone()]);
        assert!(
            f.store.layer_dir(&shared).unwrap().exists(),
            "still used by mid"
        );

        // The last image takes the shared layer with it.
        let r = collect(
            &f.store,
            &f.containers(),
            &HashSet::new(),
            u64::MAX,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r.removed, vec![mid]);
        assert!(r.freed_bytes >= 150_000, "{r:?}");
        assert!(!f.store.layer_dir(&shared).unwrap().exists());
        assert!(f.ids().is_empty());
        assert_eq!(
            std::fs::read_dir(f.store.dir().join("used"))
                .unwrap()
                .count(),
            0,
            "use markers of removed images are cleaned up"
        );
    }

    #[test]
    fn spares_images_in_use_and_young_images() {
        let f = Fixture::new();
        let l1 = f.layer("l1", 10_000);
        let l2 = f.layer("l2", 10_000);
        let l3 = f.layer("l3", 10_000);
        let by_ref = f.image("by-ref", std::slice::from_ref(&l1), 5 * HOUR);
        let by_container = f.image("by-container", std::slice::from_ref(&l2), 4 * HOUR);
        let young = f.image("young", std::slice::from_ref(&l3), Duration::from_secs(10));
        // A container (of the runtime) created from `by_container`.
        let c = f.containers().join("c1");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("meta.json"),
            serde_json::json!({"image_id": by_container, "layers": [l2]}).to_string(),
        )
        .unwrap();
        let in_use: HashSet<String> = ["example.com/by-ref:1".to_string()].into();
        let r = collect(
            &f.store,
            &f.containers(),
            &in_use,
            u64::MAX,
            Duration::from_secs(120),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(r, ImageGcReport::default());
        assert_eq!(f.ids().len(), 3);
        // Nothing needed: nothing removed even if eligible.
        let r = collect(
            &f.store,
            &f.containers(),
            &HashSet::new(),
            0,
            Duration::ZERO,
            SystemTime::now(),
        )
        .unwrap();
        assert!(r.removed.is_empty());
        // Without the in-use reference, `by_ref` goes; `young` too once old
        // enough; the container's image never.
        let r = collect(
            &f.store,
            &f.containers(),
            &HashSet::new(),
            u64::MAX,
            Duration::from_secs(120),
            SystemTime::now() + HOUR,
        )
        .unwrap();
        assert_eq!(r.removed, vec![by_ref, young]);
        assert_eq!(f.ids(), vec![by_container]);
        assert!(f.store.layer_dir(&l2).unwrap().exists());
    }
}
