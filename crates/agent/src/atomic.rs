//! Atomic directory updates for configMap/secret/downwardAPI/projected volumes,
//! the way upstream's AtomicWriter does it: the files live in a timestamped
//! directory `..<ts>`, `..data` is a symlink to it and each top-level entry is a
//! symlink through `..data`. An update writes a new directory and swaps `..data`
//! with one `rename`, so readers never see a half-written set.

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

/// One file of a payload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileProjection {
    /// Content.
    pub data: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
}

/// Errors of [`write_atomic`].
#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    /// A path in the payload is absolute, empty, or contains `..`.
    #[error("invalid path {0:?}: must be relative and may not contain '..'")]
    InvalidPath(String),
    /// Filesystem trouble.
    #[error("io: {0}")]
    Io(#[from] io::Error),
}

const DATA: &str = "..data";

/// Check a payload path (relative, no `..`, not starting with `..`).
pub fn validate_path(p: &str) -> Result<(), AtomicError> {
    let path = Path::new(p);
    let ok = !p.is_empty()
        && !p.starts_with("..")
        && path.components().all(|c| matches!(c, Component::Normal(_)));
    if ok {
        Ok(())
    } else {
        Err(AtomicError::InvalidPath(p.to_string()))
    }
}

/// Make `dir` hold exactly `payload`; returns whether anything changed.
pub fn write_atomic(
    dir: &Path,
    payload: &BTreeMap<String, FileProjection>,
) -> Result<bool, AtomicError> {
    for p in payload.keys() {
        validate_path(p)?;
    }
    std::fs::create_dir_all(dir)?;
    let data_link = dir.join(DATA);
    let old_target = std::fs::read_link(&data_link).ok();
    if let Some(old) = &old_target {
        if same_content(&dir.join(old), payload) {
            return Ok(false);
        }
    }
    let ts = format!(
        "..{}.{}",
        chrono::Utc::now().format("%Y_%m_%d_%H_%M_%S"),
        std::process::id() as u64 * 1_000_000 + u64::from(rand_suffix())
    );
    let ts_dir = dir.join(&ts);
    std::fs::create_dir_all(&ts_dir)?;
    for (p, f) in payload {
        let full = ts_dir.join(p);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, &f.data)?;
        std::fs::set_permissions(&full, std::fs::Permissions::from_mode(f.mode))?;
    }
    // swap ..data
    let tmp = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(&ts, &tmp)?;
    std::fs::rename(&tmp, &data_link)?;
    // user-visible links
    let tops: std::collections::BTreeSet<String> = payload
        .keys()
        .filter_map(|p| p.split('/').next().map(str::to_string))
        .collect();
    for t in &tops {
        let link = dir.join(t);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(PathBuf::from(DATA).join(t), &link)?;
        }
    }
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("..") {
            if name != DATA && name != ts {
                remove_any(&entry.path())?;
            }
        } else if !tops.contains(&name) {
            remove_any(&entry.path())?;
        }
    }
    Ok(true)
}

fn rand_suffix() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
        % 1_000_000
}

fn remove_any(p: &Path) -> io::Result<()> {
    let md = std::fs::symlink_metadata(p)?;
    if md.is_dir() {
        std::fs::remove_dir_all(p)
    } else {
        std::fs::remove_file(p)
    }
}

fn same_content(dir: &Path, payload: &BTreeMap<String, FileProjection>) -> bool {
    let mut existing = Vec::new();
    if collect_files(dir, dir, &mut existing).is_err() || existing.len() != payload.len() {
        return false;
    }
    payload.iter().all(|(p, f)| {
        let full = dir.join(p);
        let mode_ok = std::fs::metadata(&full)
            .map(|m| m.permissions().mode() & 0o7777 == f.mode & 0o7777)
            .unwrap_or(false);
        mode_ok && std::fs::read(&full).map(|d| d == f.data).unwrap_or(false)
    })
}

fn collect_files(base: &Path, dir: &Path, out: &mut Vec<PathBuf>) -> io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        if e.file_type()?.is_dir() {
            collect_files(base, &e.path(), out)?;
        } else {
            out.push(
                e.path()
                    .strip_prefix(base)
                    .unwrap_or(&e.path())
                    .to_path_buf(),
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(s: &str) -> FileProjection {
        FileProjection {
            data: s.as_bytes().to_vec(),
            mode: 0o644,
        }
    }

    #[test]
    fn writes_swaps_and_prunes() {
        let d = tempfile::tempdir().unwrap();
        let mut p = BTreeMap::new();
        p.insert("a".to_string(), file("1"));
        p.insert("sub/b".to_string(), file("2"));
        assert!(write_atomic(d.path(), &p).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "1");
        assert_eq!(
            std::fs::read_to_string(d.path().join("sub/b")).unwrap(),
            "2"
        );
        assert!(std::fs::symlink_metadata(d.path().join("a"))
            .unwrap()
            .file_type()
            .is_symlink());
        // unchanged → no-op
        assert!(!write_atomic(d.path(), &p).unwrap());
        // update in place: a changes, sub disappears, c appears
        let mut q = BTreeMap::new();
        q.insert("a".to_string(), file("3"));
        q.insert(
            "c".to_string(),
            FileProjection {
                data: b"x".to_vec(),
                mode: 0o400,
            },
        );
        assert!(write_atomic(d.path(), &q).unwrap());
        assert_eq!(std::fs::read_to_string(d.path().join("a")).unwrap(), "3");
        assert!(!d.path().join("sub").exists());
        let mode = std::fs::metadata(d.path().join("c"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o400);
        let hidden: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with(".."))
            .collect();
        assert_eq!(hidden.len(), 2, "{hidden:?}");
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in ["../x", "/abs", "a/../b", "..x", ""] {
            assert!(validate_path(bad).is_err(), "{bad}");
        }
        assert!(validate_path("a/b.txt").is_ok());
    }
}
