//! Pod-level cgroups: the parent every container of a pod runs under.
//!
//! runc creates each container's own cgroup (`/<parent>/<container id>`) with
//! the container's limits. The pod's parent cgroup carries the limits that
//! hold for the pod as a whole, as the kubelet's pod cgroups do upstream: the
//! pids limit (`--pod-max-pids`) and, when every container has one, the sum of
//! the containers' memory limits. Both cgroup v1 (one hierarchy per
//! controller) and v2 (one unified hierarchy) are handled.

use std::io;
use std::path::{Path, PathBuf};

/// Limits set on a pod's parent cgroup. `None` leaves a controller unlimited.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PodCgroupLimits {
    /// `pids.max`: processes and threads of all the pod's containers together.
    pub pids_max: Option<i64>,
    /// Memory limit in bytes for the whole pod.
    pub memory_limit: Option<i64>,
}

impl PodCgroupLimits {
    /// True when no limit is set (nothing to write).
    pub fn is_empty(&self) -> bool {
        self.pids_max.is_none() && self.memory_limit.is_none()
    }
}

/// Which cgroup layout a root directory (normally `/sys/fs/cgroup`) has.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CgroupLayout {
    /// cgroup v2: a single hierarchy with `cgroup.controllers` at its root.
    Unified(PathBuf),
    /// cgroup v1: one mounted hierarchy per controller under the root.
    Legacy(PathBuf),
}

impl CgroupLayout {
    /// Detect the layout under `root`.
    pub fn detect(root: &Path) -> Self {
        if root.join("cgroup.controllers").is_file() {
            CgroupLayout::Unified(root.to_path_buf())
        } else {
            CgroupLayout::Legacy(root.to_path_buf())
        }
    }

    /// Writes (file, value) to set `limits` on the cgroup `parent` (relative
    /// to the hierarchy roots, e.g. `pod<uid>`), in the order they apply.
    pub fn limit_writes(&self, parent: &str, limits: &PodCgroupLimits) -> Vec<(PathBuf, String)> {
        let rel = parent.trim_matches('/');
        let mut out = Vec::new();
        match self {
            CgroupLayout::Unified(root) => {
                let dir = root.join(rel);
                if let Some(p) = limits.pids_max {
                    out.push((dir.join("pids.max"), p.to_string()));
                }
                if let Some(m) = limits.memory_limit {
                    out.push((dir.join("memory.max"), m.to_string()));
                }
            }
            CgroupLayout::Legacy(root) => {
                if let Some(p) = limits.pids_max {
                    out.push((root.join("pids").join(rel).join("pids.max"), p.to_string()));
                }
                if let Some(m) = limits.memory_limit {
                    out.push((
                        root.join("memory").join(rel).join("memory.limit_in_bytes"),
                        m.to_string(),
                    ));
                }
            }
        }
        out
    }

    /// Create the pod cgroup and write its limits.
    pub fn apply(&self, parent: &str, limits: &PodCgroupLimits) -> io::Result<()> {
        if limits.is_empty() || parent.trim_matches('/').is_empty() {
            return Ok(());
        }
        if let CgroupLayout::Unified(root) = self {
            // Controllers must be enabled in every ancestor's subtree_control
            // for the pod cgroup to have the interface files. The pod cgroup
            // sits directly under the root.
            let mut wanted = Vec::new();
            if limits.pids_max.is_some() {
                wanted.push("+pids");
            }
            if limits.memory_limit.is_some() {
                wanted.push("+memory");
            }
            std::fs::write(root.join("cgroup.subtree_control"), wanted.join(" "))?;
        }
        for (file, value) in self.limit_writes(parent, limits) {
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::write(&file, value)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_detection_and_paths() {
        let dir = tempfile::tempdir().unwrap();
        let limits = PodCgroupLimits {
            pids_max: Some(64),
            memory_limit: Some(1 << 20),
        };
        let v1 = CgroupLayout::detect(dir.path());
        assert_eq!(v1, CgroupLayout::Legacy(dir.path().to_path_buf()));
        let w = v1.limit_writes("/podabc/", &limits);
        assert_eq!(w[0].0, dir.path().join("pids/podabc/pids.max"));
        assert_eq!(w[0].1, "64");
        assert_eq!(
            w[1].0,
            dir.path().join("memory/podabc/memory.limit_in_bytes")
        );

        std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory pids").unwrap();
        let v2 = CgroupLayout::detect(dir.path());
        assert_eq!(v2, CgroupLayout::Unified(dir.path().to_path_buf()));
        let w = v2.limit_writes("podabc", &limits);
        assert_eq!(w[0].0, dir.path().join("podabc/pids.max"));
        assert_eq!(
            w[1],
            (dir.path().join("podabc/memory.max"), "1048576".into())
        );
    }

    #[test]
    fn apply_writes_files_and_enables_controllers_on_v2() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("cgroup.controllers"), "pids").unwrap();
        let layout = CgroupLayout::detect(dir.path());
        let limits = PodCgroupLimits {
            pids_max: Some(10),
            memory_limit: None,
        };
        layout.apply("pod1", &limits).unwrap();
        let read = |p: &str| std::fs::read_to_string(dir.path().join(p)).unwrap();
        assert_eq!(read("cgroup.subtree_control"), "+pids");
        assert_eq!(read("pod1/pids.max"), "10");
        // Nothing to do: nothing written, no error.
        layout.apply("pod2", &PodCgroupLimits::default()).unwrap();
        assert!(!dir.path().join("pod2").exists());
    }
}
