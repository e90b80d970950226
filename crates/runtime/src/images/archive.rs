//! `import`: `oci-archive` (OCI image layout in a tar: `index.json`, `blobs/`) and
//! `docker-archive` (`manifest.json` with `Config`, `RepoTags`, `Layers`; layers as
//! `<id>/layer.tar` or `blobs/sha256/...` in newer docker saves) tarballs.

use super::store::{parse_config, ImageRecord, ImageStore, StoreError};
use super::{manifest, pick_platform};
use crate::{ImageReference, Result, RuntimeError};
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

fn invalid(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::InvalidArchive(msg.into())
}

pub(crate) fn map_store_err(e: StoreError) -> RuntimeError {
    match e {
        StoreError::Io(e) => RuntimeError::Io(e),
        other => invalid(other.to_string()),
    }
}

fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join("/")
}

/// Import every image in the archive at `path`.
pub(crate) fn import(store: &ImageStore, path: &Path) -> Result<Vec<ImageRecord>> {
    let file = File::open(path)?;
    let mut br = BufReader::with_capacity(256 * 1024, file);
    let magic = br.fill_buf()?.to_vec();
    let reader: Box<dyn Read> = if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(br))
    } else {
        Box::new(br)
    };
    let mut ar = tar::Archive::new(reader);
    // path in archive -> blob digest; symlinks path -> target path
    let mut files: BTreeMap<String, String> = BTreeMap::new();
    let mut links: BTreeMap<String, String> = BTreeMap::new();
    let mut index_json: Option<Vec<u8>> = None;
    let mut manifest_json: Option<Vec<u8>> = None;
    let mut saw_entry = false;
    let entries = ar
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("not a tar archive: {e}")))?;
        saw_entry = true;
        let name = clean(
            &entry
                .path()
                .map_err(|e| invalid(e.to_string()))?
                .to_string_lossy(),
        );
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Ok(Some(target)) = entry.link_name() {
                let t = target.to_string_lossy();
                let resolved = if kind.is_symlink() && !t.starts_with('/') {
                    let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                    clean(&format!("{dir}/{t}"))
                } else {
                    clean(&t)
                };
                links.insert(name, resolved);
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        match name.as_str() {
            "index.json" | "manifest.json" => {
                let mut buf = Vec::new();
                entry.read_to_end(&mut buf)?;
                if name == "index.json" {
                    index_json = Some(buf);
                } else {
                    manifest_json = Some(buf);
                }
            }
            n if n.starts_with("blobs/sha256/") => {
                let expected = format!("sha256:{}", &n["blobs/sha256/".len()..]);
                if crate::digest::sha256_hex(&expected).is_none() {
                    return Err(invalid(format!("bad blob name {n}")));
                }
                if !store.has_blob(&expected) {
                    let mut w = store.blob_writer()?;
                    std::io::copy(&mut entry, &mut w)?;
                    w.commit(store, Some(&expected)).map_err(map_store_err)?;
                }
                files.insert(name, expected);
            }
            n if n.ends_with(".tar") || n.ends_with(".json") => {
                let mut w = store.blob_writer()?;
                std::io::copy(&mut entry, &mut w)?;
                let (digest, _) = w.commit(store, None).map_err(map_store_err)?;
                files.insert(name, digest);
            }
            _ => {}
        }
    }
    if !saw_entry {
        return Err(invalid("empty or not a tar archive"));
    }
    let lookup = |p: &str| -> Result<String> {
        let mut p = clean(p);
        for _ in 0..8 {
            if let Some(d) = files.get(&p) {
                return Ok(d.clone());
            }
            match links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(invalid(format!("archive lacks {p}")))
    };
    let mut images = Vec::new();
    if let Some(index) = index_json {
        let idx: manifest::Index =
            serde_json::from_slice(&index).map_err(|e| invalid(format!("index.json: {e}")))?;
        for desc in idx.manifests {
            let mut references = Vec::new();
            for key in [
                "io.containerd.image.name",
                "org.opencontainers.image.ref.name",
            ] {
                if let Some(name) = desc.annotations.get(key) {
                    if name.contains('/') || name.contains(':') || name.contains('@') {
                        if let Ok(r) = ImageReference::parse(name) {
                            let n = r.normalized();
                            if !references.contains(&n) {
                                references.push(n);
                            }
                        }
                    }
                }
            }
            let blob = |d: &str| -> Result<Vec<u8>> {
                if !store.has_blob(d) {
                    return Err(invalid(format!("archive lacks blob {d}")));
                }
                Ok(store.read_blob(d)?)
            };
            let mut digest = desc.digest.clone();
            let mut body = blob(&digest)?;
            if manifest::is_index(&desc.media_type, &body) {
                let nested: manifest::Index = serde_json::from_slice(&body)
                    .map_err(|e| invalid(format!("index {digest}: {e}")))?;
                digest = pick_platform(&nested)
                    .ok_or_else(|| invalid("no manifest for this platform"))?;
                body = blob(&digest)?;
            }
            let m: manifest::Manifest = serde_json::from_slice(&body)
                .map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
            let config = blob(&m.config.digest)?;
            let layers: Vec<(String, u64)> = m
                .layers
                .iter()
                .map(|l| (l.digest.clone(), l.size))
                .collect();
            let repo_digests = references
                .iter()
                .filter_map(|r| ImageReference::parse(r).ok())
                .map(|r| format!("{}@{}", r.name(), digest))
                .collect();
            let mut blobs = vec![digest.clone(), m.config.digest.clone()];
            blobs.extend(layers.iter().map(|l| l.0.clone()));
            images.push(finish_image(
                store,
                &m.config.digest,
                &config,
                &layers,
                references,
                repo_digests,
                blobs,
            )?);
        }
    } else if let Some(manifest) = manifest_json {
        #[derive(serde::Deserialize)]
        struct Entry {
            #[serde(rename = "Config")]
            config: String,
            #[serde(rename = "RepoTags", default)]
            repo_tags: Option<Vec<String>>,
            #[serde(rename = "Layers", default)]
            layers: Vec<String>,
        }
        let entries: Vec<Entry> = serde_json::from_slice(&manifest)
            .map_err(|e| invalid(format!("manifest.json: {e}")))?;
        for e in entries {
            let config_digest = lookup(&e.config)?;
            let config = store.read_blob(&config_digest)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let d = lookup(l)?;
                let size = store
                    .blob_path(&d)
                    .and_then(|p| std::fs::metadata(p).ok())
                    .map(|m| m.len())
                    .unwrap_or(0);
                layers.push((d, size));
            }
            let references = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .filter_map(|t| ImageReference::parse(t).ok())
                .map(|r| r.normalized())
                .collect();
            let mut blobs = vec![config_digest.clone()];
            blobs.extend(layers.iter().map(|l| l.0.clone()));
            images.push(finish_image(
                store,
                &config_digest,
                &config,
                &layers,
                references,
                Vec::new(),
                blobs,
            )?);
        }
    } else {
        return Err(invalid(
            "neither index.json (oci-archive) nor manifest.json (docker-archive) found",
        ));
    }
    if images.is_empty() {
        return Err(invalid("archive holds no image"));
    }
    Ok(images)
}

/// Unpack the layers of an image whose blobs are all stored, then record it.
pub(crate) fn finish_image(
    store: &ImageStore,
    config_digest: &str,
    config: &[u8],
    layers: &[(String, u64)],
    references: Vec<String>,
    repo_digests: Vec<String>,
    blobs: Vec<String>,
) -> Result<ImageRecord> {
    let (cfg, diff_ids) = parse_config(config).map_err(invalid)?;
    if diff_ids.len() != layers.len() {
        return Err(invalid(format!(
            "{} layers but {} diff IDs in the config",
            layers.len(),
            diff_ids.len()
        )));
    }
    for ((blob, _), diff_id) in layers.iter().zip(&diff_ids) {
        if !store.has_blob(blob)
            && !store
                .layer_dir(diff_id)
                .map(|d| d.exists())
                .unwrap_or(false)
        {
            return Err(invalid(format!("missing layer blob {blob}")));
        }
        store.ensure_layer(blob, diff_id).map_err(map_store_err)?;
    }
    let size = config.len() as u64 + layers.iter().map(|l| l.1).sum::<u64>();
    let rec = ImageRecord {
        id: config_digest.to_string(),
        references,
        repo_digests,
        size,
        config: cfg,
        layers: diff_ids,
        blobs,
    };
    Ok(store.add(rec)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_paths() {
        assert_eq!(clean("./blobs/sha256/ab"), "blobs/sha256/ab");
        assert_eq!(clean("abc/../blobs//x"), "blobs/x");
        assert_eq!(clean("/index.json"), "index.json");
    }

    #[test]
    fn garbage_is_invalid_archive() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let p = dir.path().join("junk.tar");
        std::fs::write(
            &p,
            b"this is not a tarball at all, not even close".repeat(20),
        )
        .unwrap();
        assert!(matches!(
            import(&store, &p),
            Err(RuntimeError::InvalidArchive(_))
        ));
        // a tar without index.json/manifest.json
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_cksum();
        b.append_data(&mut h, "x.txt", &b"x"[..]).unwrap();
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        assert!(matches!(
            import(&store, &p),
            Err(RuntimeError::InvalidArchive(_))
        ));
    }

    #[test]
    fn corrupt_blob_is_invalid_archive_and_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path().join("images")).unwrap();
        let claimed = crate::digest::sha256_digest(b"good");
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_cksum();
        b.append_data(
            &mut h,
            format!("blobs/sha256/{}", &claimed[7..]),
            &b"bad"[..],
        )
        .unwrap();
        let p = dir.path().join("c.tar");
        std::fs::write(&p, b.into_inner().unwrap()).unwrap();
        assert!(matches!(
            import(&store, &p),
            Err(RuntimeError::InvalidArchive(_))
        ));
        assert!(!store.has_blob(&claimed));
    }
}
