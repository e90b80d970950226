//! Runtime configuration shared by [`crate::LocalImageService`] and [`crate::RuncRuntime`].

use std::path::PathBuf;

/// Where the runtime keeps its state and which helper binaries it runs.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// Persistent state: images (blobs, layers, metadata), sandboxes, containers.
    /// E.g. `/var/lib/navarch/runtime`.
    pub root: PathBuf,
    /// Volatile state (runc's state dir). E.g. `/run/navarch`.
    pub run_root: PathBuf,
    /// The executable that serves as the container shim: it is spawned as
    /// `<shim_exe> internal-shim --bundle <dir> --id <id> ...` (see [`crate::shim_main`]).
    pub shim_exe: PathBuf,
    /// The `runc` binary.
    pub runc: PathBuf,
    /// Rotate a container's log file once it exceeds this many bytes (one old file is kept).
    pub log_max_size: u64,
}

impl RuntimeConfig {
    /// Defaults under `root`: run state in `/run/navarch`, `runc` from `PATH`,
    /// the shim is the current executable, logs rotate at 10 MiB.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        RuntimeConfig {
            root: root.into(),
            run_root: PathBuf::from("/run/navarch"),
            shim_exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("navarch")),
            runc: PathBuf::from("runc"),
            log_max_size: 10 * 1024 * 1024,
        }
    }

    /// Directory of the image store.
    pub(crate) fn images_dir(&self) -> PathBuf {
        self.root.join("images")
    }

    /// Directory holding one subdirectory per container.
    pub(crate) fn containers_dir(&self) -> PathBuf {
        self.root.join("containers")
    }

    /// Directory holding one subdirectory per sandbox.
    pub(crate) fn sandboxes_dir(&self) -> PathBuf {
        self.root.join("sandboxes")
    }

    /// runc's `--root`.
    pub(crate) fn runc_root(&self) -> PathBuf {
        self.run_root.join("runc")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_under_root() {
        let mut c = RuntimeConfig::new("/var/lib/x");
        c.run_root = "/run/y".into();
        assert_eq!(c.images_dir(), PathBuf::from("/var/lib/x/images"));
        assert_eq!(c.containers_dir(), PathBuf::from("/var/lib/x/containers"));
        assert_eq!(c.sandboxes_dir(), PathBuf::from("/var/lib/x/sandboxes"));
        assert_eq!(c.runc_root(), PathBuf::from("/run/y/runc"));
        assert_eq!(c.log_max_size, 10 * 1024 * 1024);
    }
}
