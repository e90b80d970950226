//! On-disk image store: content-addressed blobs, layers unpacked once by diff ID,
//! and image metadata in one JSON file.
//!
//! Layout under `<root>/images/`:
//! - `blobs/sha256/<hex>`: manifests, configs and (compressed) layer blobs;
//! - `layers/<diffid hex>/`: a layer unpacked, whiteouts turned into overlayfs
//!   whiteouts (0/0 character devices) and opaque directories marked with the
//!   `trusted.overlay.opaque=y` xattr, ready to be a `lowerdir`;
//! - `images.json`: image ID → record (references, repo digests, config, layers);
//! - `tmp/`: downloads and unpacks in progress (renamed into place when verified).

use crate::digest::{random_id, sha256_hex, HashingReader, HashingWriter};
use crate::{Image, ImageConfig};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};

/// Errors inside the store; callers map them to [`crate::RuntimeError`] variants.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StoreError {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("digest mismatch: expected {expected}, got {actual}")]
    Digest { expected: String, actual: String },
    #[error("invalid layer: {0}")]
    Layer(String),
}

/// The parts of an image config the runtime uses.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredConfig {
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub cmd: Vec<String>,
    #[serde(default)]
    pub env: Vec<String>,
    #[serde(default)]
    pub working_dir: Option<String>,
    #[serde(default)]
    pub user: Option<String>,
}

/// One image's metadata.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ImageRecord {
    pub id: String,
    pub references: Vec<String>,
    pub repo_digests: Vec<String>,
    pub size: u64,
    pub config: StoredConfig,
    /// Diff IDs, bottom layer first.
    pub layers: Vec<String>,
    /// Blobs this image holds on to (manifest, config, layer blobs).
    pub blobs: Vec<String>,
}

impl ImageRecord {
    pub(crate) fn to_image(&self) -> Image {
        Image {
            id: self.id.clone(),
            references: self.references.clone(),
            repo_digests: self.repo_digests.clone(),
            size: self.size,
            config: ImageConfig {
                entrypoint: self.config.entrypoint.clone(),
                cmd: self.config.cmd.clone(),
                env: self.config.env.clone(),
                working_dir: self.config.working_dir.clone(),
                user: self.config.user.clone(),
            },
        }
    }
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Db {
    images: BTreeMap<String, ImageRecord>,
}

/// Parse the interesting parts of an OCI/Docker image config blob.
pub(crate) fn parse_config(bytes: &[u8]) -> Result<(StoredConfig, Vec<String>), String> {
    #[derive(Deserialize)]
    struct Inner {
        #[serde(rename = "Entrypoint", default)]
        entrypoint: Option<Vec<String>>,
        #[serde(rename = "Cmd", default)]
        cmd: Option<Vec<String>>,
        #[serde(rename = "Env", default)]
        env: Option<Vec<String>>,
        #[serde(rename = "WorkingDir", default)]
        working_dir: Option<String>,
        #[serde(rename = "User", default)]
        user: Option<String>,
    }
    #[derive(Deserialize)]
    struct RootFs {
        #[serde(default)]
        diff_ids: Vec<String>,
    }
    #[derive(Deserialize)]
    struct Outer {
        #[serde(default)]
        config: Option<Inner>,
        rootfs: RootFs,
    }
    let o: Outer = serde_json::from_slice(bytes).map_err(|e| format!("image config: {e}"))?;
    for d in &o.rootfs.diff_ids {
        if sha256_hex(d).is_none() {
            return Err(format!("image config: bad diff ID {d:?}"));
        }
    }
    let c = o.config.map(|i| StoredConfig {
        entrypoint: i.entrypoint.unwrap_or_default(),
        cmd: i.cmd.unwrap_or_default(),
        env: i.env.unwrap_or_default(),
        working_dir: i.working_dir.filter(|w| !w.is_empty()),
        user: i.user.filter(|u| !u.is_empty()),
    });
    Ok((c.unwrap_or_default(), o.rootfs.diff_ids))
}

/// The image store rooted at `<root>/images`.
#[derive(Debug)]
pub(crate) struct ImageStore {
    dir: PathBuf,
    db_lock: parking_lot::Mutex<()>,
}

impl ImageStore {
    pub(crate) fn open(dir: PathBuf) -> io::Result<Self> {
        for sub in ["blobs/sha256", "layers", "tmp", "used"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        Ok(ImageStore {
            dir,
            db_lock: parking_lot::Mutex::new(()),
        })
    }

    pub(crate) fn blob_path(&self, digest: &str) -> Option<PathBuf> {
        sha256_hex(digest).map(|h| self.dir.join("blobs/sha256").join(h))
    }

    pub(crate) fn has_blob(&self, digest: &str) -> bool {
        self.blob_path(digest).map(|p| p.exists()).unwrap_or(false)
    }

    pub(crate) fn read_blob(&self, digest: &str) -> io::Result<Vec<u8>> {
        let p = self.blob_path(digest).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("bad digest {digest}"))
        })?;
        fs::read(p)
    }

    /// Path of the unpacked layer with this diff ID.
    pub(crate) fn layer_dir(&self, diff_id: &str) -> Option<PathBuf> {
        sha256_hex(diff_id).map(|h| self.dir.join("layers").join(h))
    }

    fn tmp_path(&self) -> PathBuf {
        self.dir.join("tmp").join(random_id())
    }

    /// Start writing a blob; commit it with [`BlobWriter::commit`].
    pub(crate) fn blob_writer(&self) -> io::Result<BlobWriter> {
        let tmp = self.tmp_path();
        let f = File::create(&tmp)?;
        Ok(BlobWriter {
            w: Some(HashingWriter::new(io::BufWriter::with_capacity(
                256 * 1024,
                f,
            ))),
            tmp,
        })
    }

    /// Store `data` as a blob; `expected` (when given) must match.
    pub(crate) fn put_blob(
        &self,
        data: &[u8],
        expected: Option<&str>,
    ) -> Result<String, StoreError> {
        let mut w = self.blob_writer()?;
        w.write_all(data)?;
        w.commit(self, expected).map(|(d, _)| d)
    }

    /// Unpack the layer blob `blob` (tar, gzip or zstd) into `layers/<diff_id>` unless
    /// it is already there; the uncompressed stream must hash to `diff_id`.
    /// Returns whether it unpacked anything.
    pub(crate) fn ensure_layer(&self, blob: &str, diff_id: &str) -> Result<bool, StoreError> {
        let dest = self
            .layer_dir(diff_id)
            .ok_or_else(|| StoreError::Layer(format!("bad diff ID {diff_id}")))?;
        if dest.exists() {
            return Ok(false);
        }
        let path = self
            .blob_path(blob)
            .ok_or_else(|| StoreError::Layer(format!("bad digest {blob}")))?;
        let file = File::open(&path)?;
        let tmp = self.tmp_path();
        fs::create_dir(&tmp)?;
        let result = (|| -> Result<(), StoreError> {
            let mut br = BufReader::with_capacity(256 * 1024, file);
            let magic = br.fill_buf()?.to_vec();
            let decompressed: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
                Box::new(flate2::read::MultiGzDecoder::new(br))
            } else if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Box::new(zstd::stream::read::Decoder::with_buffer(br)?)
            } else {
                Box::new(br)
            };
            let mut hashing = HashingReader::new(decompressed);
            unpack_layer(&mut hashing, &tmp)?;
            let (actual, _) = hashing.finish()?;
            if actual != diff_id {
                return Err(StoreError::Digest {
                    expected: diff_id.to_string(),
                    actual,
                });
            }
            Ok(())
        })();
        if let Err(e) = result {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        // Once (and only once): if another unpack won the race, drop ours.
        if fs::rename(&tmp, &dest).is_err() {
            let _ = fs::remove_dir_all(&tmp);
            if !dest.exists() {
                return Err(StoreError::Layer(format!(
                    "could not move layer into {}",
                    dest.display()
                )));
            }
            return Ok(false);
        }
        Ok(true)
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("images.json")
    }

    fn load(&self) -> io::Result<Db> {
        match fs::read(self.db_path()) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Db::default()),
            Err(e) => Err(e),
        }
    }

    fn save(&self, db: &Db) -> io::Result<()> {
        let tmp = self.tmp_path();
        fs::write(&tmp, serde_json::to_vec(db).map_err(io::Error::other)?)?;
        fs::rename(tmp, self.db_path())
    }

    /// All images.
    pub(crate) fn list(&self) -> io::Result<Vec<ImageRecord>> {
        Ok(self.load()?.images.into_values().collect())
    }

    /// Add (or merge into) an image; its references are taken from any other image.
    pub(crate) fn add(&self, rec: ImageRecord) -> io::Result<ImageRecord> {
        let _g = self.db_lock.lock();
        let mut db = self.load()?;
        for other in db.images.values_mut() {
            if other.id != rec.id {
                other.references.retain(|r| !rec.references.contains(r));
            }
        }
        let merged = match db.images.remove(&rec.id) {
            Some(mut old) => {
                for r in rec.references {
                    if !old.references.contains(&r) {
                        old.references.push(r);
                    }
                }
                for d in rec.repo_digests {
                    if !old.repo_digests.contains(&d) {
                        old.repo_digests.push(d);
                    }
                }
                for b in rec.blobs {
                    if !old.blobs.contains(&b) {
                        old.blobs.push(b);
                    }
                }
                old
            }
            None => rec,
        };
        db.images.insert(merged.id.clone(), merged.clone());
        self.save(&db)?;
        Ok(merged)
    }

    /// Find an image by ID (`sha256:...`, its hex, or a unique hex prefix of 12+),
    /// normalised reference, or `name@digest` (a repo digest).
    pub(crate) fn resolve(&self, key: &str) -> io::Result<Option<ImageRecord>> {
        let db = self.load()?;
        Ok(resolve_in(&db, key).cloned())
    }

    /// Remove a reference (or, given an ID, the whole image). Returns the removed
    /// image record when the image itself went away, plus whether anything matched.
    pub(crate) fn remove(&self, key: &str) -> io::Result<(bool, Option<ImageRecord>)> {
        let _g = self.db_lock.lock();
        let mut db = self.load()?;
        let Some(rec) = resolve_in(&db, key).cloned() else {
            return Ok((false, None));
        };
        let normalized = crate::ImageReference::parse(key)
            .ok()
            .map(|r| r.normalized());
        let by_reference = normalized
            .as_ref()
            .map(|n| rec.references.contains(n))
            .unwrap_or(false);
        let gone = if by_reference && rec.references.len() > 1 {
            if let Some(r) = db.images.get_mut(&rec.id) {
                r.references.retain(|x| Some(x) != normalized.as_ref());
            }
            None
        } else {
            db.images.remove(&rec.id)
        };
        self.save(&db)?;
        Ok((true, gone))
    }

    /// The directory the store lives in.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record that a container was just created from image `id` (touches
    /// `used/<hex>`; its mtime is the image's last use).
    pub(crate) fn mark_used(&self, id: &str) -> io::Result<()> {
        let Some(hex) = sha256_hex(id) else {
            return Ok(());
        };
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(self.dir.join("used").join(hex))?;
        f.set_modified(std::time::SystemTime::now())
    }

    /// When image `id` was last used by a new container, else when it was
    /// stored (its config blob's mtime); `None` if neither is known.
    pub(crate) fn last_used(&self, id: &str) -> Option<std::time::SystemTime> {
        let hex = sha256_hex(id)?;
        let mtime = |p: PathBuf| fs::metadata(p).and_then(|m| m.modified()).ok();
        let used = mtime(self.dir.join("used").join(hex));
        let stored = mtime(self.dir.join("blobs/sha256").join(hex));
        used.max(stored)
    }

    /// Delete blobs and layers no image references and `in_use_layers` does not
    /// hold (and use markers of images that are gone). Returns the bytes freed.
    pub(crate) fn gc(&self, in_use_layers: &[String]) -> io::Result<u64> {
        let _g = self.db_lock.lock();
        let db = self.load()?;
        let mut blobs: std::collections::HashSet<String> = Default::default();
        let mut layers: std::collections::HashSet<String> = Default::default();
        for r in db.images.values() {
            blobs.extend(
                r.blobs
                    .iter()
                    .filter_map(|b| sha256_hex(b).map(str::to_string)),
            );
            layers.extend(
                r.layers
                    .iter()
                    .filter_map(|b| sha256_hex(b).map(str::to_string)),
            );
        }
        layers.extend(
            in_use_layers
                .iter()
                .filter_map(|b| sha256_hex(b).map(str::to_string)),
        );
        let mut freed = 0u64;
        for e in fs::read_dir(self.dir.join("blobs/sha256"))? {
            let e = e?;
            if !blobs.contains(e.file_name().to_string_lossy().as_ref()) {
                let size = disk_usage(&e.path());
                if fs::remove_file(e.path()).is_ok() {
                    freed += size;
                }
            }
        }
        for e in fs::read_dir(self.dir.join("layers"))? {
            let e = e?;
            if !layers.contains(e.file_name().to_string_lossy().as_ref()) {
                let size = disk_usage(&e.path());
                if fs::remove_dir_all(e.path()).is_ok() {
                    freed += size;
                }
            }
        }
        let images: std::collections::HashSet<&str> =
            db.images.keys().filter_map(|id| sha256_hex(id)).collect();
        if let Ok(rd) = fs::read_dir(self.dir.join("used")) {
            for e in rd.flatten() {
                if !images.contains(e.file_name().to_string_lossy().as_ref()) {
                    let _ = fs::remove_file(e.path());
                }
            }
        }
        Ok(freed)
    }
}

/// Bytes `path` (a file, or a directory tree, not following symlinks)
/// occupies on disk; unreadable parts count as 0.
pub(crate) fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::symlink_metadata(path) else {
        return 0;
    };
    let mut total = meta.blocks() * 512;
    if meta.is_dir() {
        if let Ok(rd) = fs::read_dir(path) {
            for e in rd.flatten() {
                total += disk_usage(&e.path());
            }
        }
    }
    total
}

fn resolve_in<'a>(db: &'a Db, key: &str) -> Option<&'a ImageRecord> {
    if let Some(r) = db.images.get(key) {
        return Some(r);
    }
    let hexkey = key.strip_prefix("sha256:").unwrap_or(key);
    if hexkey.len() >= 12 && hexkey.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut it = db
            .images
            .values()
            .filter(|r| r.id.trim_start_matches("sha256:").starts_with(hexkey));
        if let (Some(r), None) = (it.next(), it.next()) {
            return Some(r);
        }
    }
    let parsed = crate::ImageReference::parse(key).ok()?;
    let n = parsed.normalized();
    db.images
        .values()
        .find(|r| r.references.contains(&n))
        .or_else(|| {
            db.images
                .values()
                .find(|r| parsed.digest.is_some() && r.repo_digests.contains(&n))
        })
}

/// A blob being written; dropped without commit, its temp file is removed.
pub(crate) struct BlobWriter {
    w: Option<HashingWriter<io::BufWriter<File>>>,
    tmp: PathBuf,
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &mut self.w {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("blob writer finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match &mut self.w {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl BlobWriter {
    /// Verify against `expected` (if any) and move into the store. Returns digest and size.
    pub(crate) fn commit(
        mut self,
        store: &ImageStore,
        expected: Option<&str>,
    ) -> Result<(String, u64), StoreError> {
        let Some(w) = self.w.take() else {
            return Err(StoreError::Layer("blob writer finished".into()));
        };
        let (digest, size, mut bw) = w.finish();
        bw.flush()?;
        drop(bw);
        if let Some(exp) = expected {
            if exp != digest {
                return Err(StoreError::Digest {
                    expected: exp.to_string(),
                    actual: digest,
                });
            }
        }
        let dest = store
            .blob_path(&digest)
            .ok_or_else(|| StoreError::Layer("bad digest".into()))?;
        fs::rename(&self.tmp, dest)?;
        Ok((digest, size))
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        if self.w.is_some() || self.tmp.exists() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

/// Unpack a layer tar into `dest`, turning OCI whiteouts into overlayfs ones:
/// `.wh.<name>` → a 0/0 character device `<name>`; `.wh..wh..opq` → the
/// `trusted.overlay.opaque=y` xattr on its directory.
pub(crate) fn unpack_layer(reader: impl Read, dest: &Path) -> Result<(), StoreError> {
    let mut ar = tar::Archive::new(reader);
    ar.set_preserve_permissions(true);
    ar.set_preserve_ownerships(true);
    ar.set_preserve_mtime(true);
    ar.set_unpack_xattrs(true);
    ar.set_overwrite(true);
    let entries = ar
        .entries()
        .map_err(|e| StoreError::Layer(format!("not a tar stream: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| StoreError::Layer(format!("bad tar entry: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| StoreError::Layer(format!("bad path: {e}")))?
            .into_owned();
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        if let Some(name) = name.as_deref().filter(|n| n.starts_with(".wh.")) {
            let rel = safe_relative(&path)
                .ok_or_else(|| StoreError::Layer(format!("unsafe path {path:?}")))?;
            let parent = dest.join(rel.parent().unwrap_or(Path::new("")));
            fs::create_dir_all(&parent)?;
            if name == ".wh..wh..opq" {
                crate::sys::lsetxattr(&parent, "trusted.overlay.opaque", b"y")?;
            } else {
                let target = parent.join(&name[4..]);
                match fs::symlink_metadata(&target) {
                    Ok(m) if m.is_dir() => fs::remove_dir_all(&target)?,
                    Ok(_) => fs::remove_file(&target)?,
                    Err(_) => {}
                }
                crate::sys::mknod_whiteout(&target)?;
            }
            continue;
        }
        entry.unpack_in(dest).map_err(|e| {
            StoreError::Layer(format!("unpacking {}: {}", path.display(), error_chain(&e)))
        })?;
    }
    Ok(())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// `path` without leading `/` or `.`, refusing `..`.
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileTypeExt;

    fn tar_with(entries: &[(&str, Option<&[u8]>)]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (path, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_mode(0o644);
                    h.set_cksum();
                    b.append_data(&mut h, path, *d).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_mode(0o755);
                    h.set_cksum();
                    b.append_data(&mut h, path, &[][..]).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    #[test]
    fn whiteouts_become_overlay_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let t = tar_with(&[
            ("etc/", None),
            ("etc/.wh.passwd", Some(b"")),
            ("var/", None),
            ("var/.wh..wh..opq", Some(b"")),
            ("var/new", Some(b"n")),
        ]);
        unpack_layer(&t[..], dir.path()).unwrap();
        let m = fs::symlink_metadata(dir.path().join("etc/passwd")).unwrap();
        assert!(m.file_type().is_char_device());
        use std::os::unix::fs::MetadataExt;
        assert_eq!(m.rdev(), 0);
        assert!(!dir.path().join("etc/.wh.passwd").exists());
        assert_eq!(
            crate::sys::lgetxattr(&dir.path().join("var"), "trusted.overlay.opaque").unwrap(),
            b"y"
        );
        assert_eq!(fs::read(dir.path().join("var/new")).unwrap(), b"n");
    }

    #[test]
    fn rejects_escaping_whiteouts() {
        let dir = tempfile::tempdir().unwrap();
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_old();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(0);
        // bypass tar's own path checks by writing the name bytes directly
        h.as_old_mut().name[..12].copy_from_slice(b"../.wh.hosts");
        h.set_cksum();
        b.append(&h, &[][..]).unwrap();
        let t = b.into_inner().unwrap();
        assert!(matches!(
            unpack_layer(&t[..], dir.path()),
            Err(StoreError::Layer(_))
        ));
    }

    #[test]
    fn layer_is_verified_and_unpacked_once() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let t = tar_with(&[("hello", Some(b"world"))]);
        let diff_id = crate::digest::sha256_digest(&t);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).unwrap();
        let gz = gz.finish().unwrap();
        let blob = store.put_blob(&gz, None).unwrap();
        // wrong diff ID: error, nothing left behind
        let wrong = crate::digest::sha256_digest(b"other");
        assert!(matches!(
            store.ensure_layer(&blob, &wrong),
            Err(StoreError::Digest { .. })
        ));
        assert!(!store.layer_dir(&wrong).unwrap().exists());
        assert!(store.ensure_layer(&blob, &diff_id).unwrap());
        assert!(!store.ensure_layer(&blob, &diff_id).unwrap());
        assert_eq!(
            fs::read(store.layer_dir(&diff_id).unwrap().join("hello")).unwrap(),
            b"world"
        );
        // zstd too
        let z = zstd::stream::encode_all(&t[..], 1).unwrap();
        let zblob = store.put_blob(&z, None).unwrap();
        fs::remove_dir_all(store.layer_dir(&diff_id).unwrap()).unwrap();
        assert!(store.ensure_layer(&zblob, &diff_id).unwrap());
        assert_eq!(
            fs::read_dir(dir.path().join("images/tmp")).unwrap().count(),
            0
        );
    }

    #[test]
    fn blob_digest_mismatch_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let wrong = crate::digest::sha256_digest(b"b");
        assert!(matches!(
            store.put_blob(b"a", Some(&wrong)),
            Err(StoreError::Digest { .. })
        ));
        assert!(!store.has_blob(&wrong));
        assert!(!store.has_blob(&crate::digest::sha256_digest(b"a")));
        assert_eq!(
            fs::read_dir(dir.path().join("images/tmp")).unwrap().count(),
            0
        );
    }

    fn rec(id: &str, refs: &[&str]) -> ImageRecord {
        ImageRecord {
            id: id.into(),
            references: refs.iter().map(|s| s.to_string()).collect(),
            repo_digests: vec![],
            size: 1,
            config: StoredConfig::default(),
            layers: vec![],
            blobs: vec![],
        }
    }

    #[test]
    fn references_move_and_resolve() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let a = crate::digest::sha256_digest(b"a");
        let b = crate::digest::sha256_digest(b"b");
        store
            .add(rec(&a, &["docker.io/library/busybox:latest", "x.io/a:1"]))
            .unwrap();
        store
            .add(rec(&b, &["docker.io/library/busybox:latest"]))
            .unwrap();
        assert_eq!(store.resolve("busybox").unwrap().unwrap().id, b);
        assert_eq!(store.resolve("x.io/a:1").unwrap().unwrap().id, a);
        assert_eq!(store.resolve(&a[7..19]).unwrap().unwrap().id, a);
        assert!(store.resolve("nothing:here").unwrap().is_none());
        // removing one of two references keeps the image
        store.add(rec(&a, &["x.io/a:2"])).unwrap();
        let (found, gone) = store.remove("x.io/a:1").unwrap();
        assert!(found && gone.is_none());
        let (found, gone) = store.remove("x.io/a:2").unwrap();
        assert!(found && gone.is_some());
        assert!(store.resolve(&a).unwrap().is_none());
        assert_eq!(store.remove("x.io/a:2").unwrap(), (false, None));
    }

    #[test]
    fn config_parsing() {
        let cfg = br#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":["PATH=/bin"],"WorkingDir":""},
            "rootfs":{"type":"layers","diff_ids":["sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]}}"#;
        let (c, l) = parse_config(cfg).unwrap();
        assert_eq!(c.cmd, vec!["sh"]);
        assert_eq!(c.working_dir, None);
        assert_eq!(l.len(), 1);
        assert!(parse_config(br#"{"rootfs":{"diff_ids":["md5:x"]}}"#).is_err());
        assert!(parse_config(b"nope").is_err());
    }
}
