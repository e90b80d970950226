//! Ownership of a host's pod network.
//!
//! The bridge (`navarch0`), the nftables tables `ip navarch` and
//! `ip navarch_pod` and the cross-node routes exist once per network namespace.
//! Only one navarch node at a time may run the bridge network in a namespace.
//! [`HostLock`] enforces that with an exclusive `flock` on
//! `/run/navarch/pod-network-<netns inode>.lock`. The kernel drops the lock
//! when the process ends, crashes included.
//!
//! The lock file also names the data dir of the node that last held it. A new
//! owner with another data dir first removes what the previous one left
//! ([`teardown_node`]). A node restarting on its own data dir keeps the
//! bridge: its pods kept running and still hang on it. `navarch reset` removes
//! the network of its own data dir only, and only while no node runs.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::exec::NodeNs;
use crate::Error;

/// Where the lock files live.
pub const LOCK_DIR: &str = "/run/navarch";

/// Why the pod network of a namespace could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another live navarch node runs the bridge network here.
    #[error(
        "the pod network of this host (bridge {bridge}) is in use by another navarch node \
         (data dir {owner}); stop it, or start this one with --pod-network=none"
    )]
    InUse {
        /// The data dir recorded by the holder.
        owner: String,
        /// The bridge name.
        bridge: String,
    },
    /// The lock file could not be opened, read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// An exclusive hold on the pod network of one network namespace. Dropping it
/// (or the process ending) releases it.
#[derive(Debug)]
pub struct HostLock {
    file: File,
    path: PathBuf,
    previous_owner: Option<PathBuf>,
}

/// The lock file of the network namespace at `netns` (`None`: this process's).
pub fn lock_path(netns: Option<&Path>) -> Result<PathBuf, LockError> {
    let ns = netns.unwrap_or(Path::new("/proc/self/ns/net"));
    let meta = std::fs::metadata(ns).map_err(|e| LockError::Io(ns.display().to_string(), e))?;
    Ok(Path::new(LOCK_DIR).join(format!("pod-network-{}.lock", meta.ino())))
}

fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

impl HostLock {
    /// Take the pod network of `node`'s namespace for the node keeping its
    /// data in `owner` (recorded in the lock file). Fails at once with
    /// [`LockError::InUse`] when another process holds it.
    pub fn acquire(node: &NodeNs, owner: &Path) -> Result<HostLock, LockError> {
        Self::acquire_at(&lock_path(node.netns.as_deref())?, owner)
    }

    /// [`HostLock::acquire`] with an explicit lock file (tests).
    pub fn acquire_at(path: &Path, owner: &Path) -> Result<HostLock, LockError> {
        let shown = || path.display().to_string();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| LockError::Io(shown(), e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| LockError::Io(shown(), e))?;
        // SAFETY: flock on a file descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        let mut recorded = String::new();
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let _ = file.read_to_string(&mut recorded);
                return Err(LockError::InUse {
                    owner: recorded.trim().to_string(),
                    bridge: crate::pod::DEFAULT_BRIDGE.to_string(),
                });
            }
            return Err(LockError::Io(shown(), err));
        }
        file.read_to_string(&mut recorded)
            .map_err(|e| LockError::Io(shown(), e))?;
        let previous_owner = Some(recorded.trim())
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        let mut lock = HostLock {
            file,
            path: path.to_path_buf(),
            previous_owner,
        };
        lock.record(Some(&canonical(owner)))?;
        Ok(lock)
    }

    /// Write `owner` (or nothing) into the lock file.
    fn record(&mut self, owner: Option<&Path>) -> Result<(), LockError> {
        let io = |e| LockError::Io(self.path.display().to_string(), e);
        self.file.set_len(0).map_err(io)?;
        self.file.rewind().map_err(io)?;
        if let Some(o) = owner {
            self.file
                .write_all(o.display().to_string().as_bytes())
                .map_err(io)?;
        }
        Ok(())
    }

    /// The data dir of the node that held the network before (`None`: nobody
    /// since the last reset or boot).
    pub fn previous_owner(&self) -> Option<&Path> {
        self.previous_owner.as_deref()
    }

    /// Whether the previous holder was a node with another data dir than
    /// `owner`, so that what it left must be removed first.
    pub fn inherits_foreign_state(&self, owner: &Path) -> bool {
        self.previous_owner
            .as_deref()
            .is_some_and(|p| canonical(p) != canonical(owner))
    }

    /// Forget the owner (after the network was removed).
    pub fn clear_owner(&mut self) -> Result<(), LockError> {
        self.record(None)?;
        self.previous_owner = None;
        Ok(())
    }
}

/// Open `path` (created if missing) and wait for an exclusive `flock` on it;
/// the lock lasts as long as the returned file. Used to serialize tests that
/// need the host's pod network.
pub fn lock_blocking(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    loop {
        // SAFETY: flock on a file descriptor this function owns.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) };
        if rc == 0 {
            return Ok(file);
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

/// What [`reset_owned`] did.
#[derive(Debug, PartialEq, Eq)]
pub enum ResetOutcome {
    /// The network of this data dir was removed.
    Removed,
    /// The network belongs to another data dir (or nobody): left alone.
    NotOwned,
    /// A node still runs it: left alone.
    InUse,
}

/// `navarch reset`: remove the pod network of `node`'s namespace if the node
/// with data dir `owner` set it up last and no node runs it now.
pub async fn reset_owned(node: &NodeNs, owner: &Path) -> Result<ResetOutcome, Error> {
    let path = lock_path(node.netns.as_deref()).map_err(lock_to_error)?;
    reset_owned_at(node, &path, owner).await
}

/// [`reset_owned`] with an explicit lock file (tests).
pub async fn reset_owned_at(
    node: &NodeNs,
    lock_file: &Path,
    owner: &Path,
) -> Result<ResetOutcome, Error> {
    if !lock_file.exists() {
        return Ok(ResetOutcome::NotOwned);
    }
    let mut lock = match HostLock::acquire_at(lock_file, owner) {
        Ok(l) => l,
        Err(LockError::InUse { .. }) => return Ok(ResetOutcome::InUse),
        Err(e) => return Err(lock_to_error(e)),
    };
    let mine = lock
        .previous_owner()
        .is_some_and(|p| canonical(p) == canonical(owner));
    if !mine {
        // Put the previous owner back: this reset must not claim its network.
        let prev = lock.previous_owner().map(Path::to_path_buf);
        lock.record(prev.as_deref()).map_err(lock_to_error)?;
        return Ok(ResetOutcome::NotOwned);
    }
    teardown_node(node, crate::pod::DEFAULT_BRIDGE).await?;
    lock.clear_owner().map_err(lock_to_error)?;
    Ok(ResetOutcome::Removed)
}

fn lock_to_error(e: LockError) -> Error {
    match e {
        LockError::Io(what, e) => Error::Io(what, e),
        other => Error::Netns(other.to_string()),
    }
}

/// Remove a node's pod network from its namespace: the nftables tables of the
/// proxy and of the pod network, the cross-node routes, the bridge (with its
/// address and the service route) and any veth still on it. Idempotent.
pub async fn teardown_node(node: &NodeNs, bridge: &str) -> Result<(), Error> {
    let tables = node.run("nft", &["list", "tables"]).await?;
    let mut script = String::new();
    for t in [crate::proxy::TABLE, crate::pod::POD_TABLE] {
        if tables
            .lines()
            .any(|l| l.split_whitespace().eq(["table", "ip", t]))
        {
            script.push_str(&format!("delete table ip {t}\n"));
        }
    }
    if !script.is_empty() {
        node.nft(&script).await?;
    }
    let routes = node
        .run(
            "ip",
            &["-4", "route", "show", "proto", crate::routes::ROUTE_PROTO],
        )
        .await?;
    let mut batch = String::new();
    for dst in crate::routes::parse_routes(&routes).keys() {
        batch.push_str(&format!(
            "route del {dst} proto {}\n",
            crate::routes::ROUTE_PROTO
        ));
    }
    let ports = node
        .run("ip", &["-o", "link", "show", "master", bridge])
        .await
        .unwrap_or_default();
    for name in link_names(&ports) {
        batch.push_str(&format!("link del {name}\n"));
    }
    if node.run("ip", &["link", "show", bridge]).await.is_ok() {
        batch.push_str(&format!("link del {bridge}\n"));
    }
    if !batch.is_empty() {
        node.run_stdin("ip", &["-batch", "-"], &batch).await?;
    }
    Ok(())
}

/// Interface names from `ip -o link show` output (`3: nv0a1b@if2: <...>`).
pub fn link_names(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            let name = name.split('@').next()?.trim();
            (!name.is_empty()).then(|| name.to_string())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_remembers_the_owner() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.lock");
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::create_dir_all(&a).unwrap();
        std::fs::create_dir_all(&b).unwrap();
        let first = HostLock::acquire_at(&file, &a).unwrap();
        assert_eq!(first.previous_owner(), None);
        assert!(!first.inherits_foreign_state(&a));
        match HostLock::acquire_at(&file, &b) {
            Err(LockError::InUse { owner, .. }) => {
                assert_eq!(owner, canonical(&a).display().to_string())
            }
            other => panic!("expected InUse, got {other:?}"),
        }
        drop(first);
        let second = HostLock::acquire_at(&file, &b).unwrap();
        assert_eq!(second.previous_owner(), Some(canonical(&a).as_path()));
        assert!(second.inherits_foreign_state(&b));
        drop(second);
        let again = HostLock::acquire_at(&file, &b).unwrap();
        assert!(
            !again.inherits_foreign_state(&b),
            "restart on the same data dir"
        );
    }

    #[test]
    fn in_use_message_says_what_to_do() {
        let e = LockError::InUse {
            owner: "/var/lib/navarch".into(),
            bridge: "navarch0".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("/var/lib/navarch") && s.contains("--pod-network=none"),
            "{s}"
        );
    }

    #[tokio::test]
    async fn reset_leaves_a_foreign_or_missing_network_alone() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("x.lock");
        let node = NodeNs::at(dir.path().join("no-such-netns"));
        let me = dir.path().join("me");
        assert_eq!(
            reset_owned_at(&node, &file, &me).await.unwrap(),
            ResetOutcome::NotOwned
        );
        let other = dir.path().join("other");
        drop(HostLock::acquire_at(&file, &other).unwrap());
        assert_eq!(
            reset_owned_at(&node, &file, &me).await.unwrap(),
            ResetOutcome::NotOwned
        );
        // The other owner is still recorded.
        let l = HostLock::acquire_at(&file, &other).unwrap();
        assert!(!l.inherits_foreign_state(&other));
        // While held, reset does nothing.
        let other_me = dir.path().join("other");
        assert_eq!(
            reset_owned_at(&node, &file, &other_me).await.unwrap(),
            ResetOutcome::InUse
        );
    }

    #[test]
    fn blocking_lock_waits_for_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("t.lock");
        let held = lock_blocking(&file).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let f2 = file.clone();
        let t = std::thread::spawn(move || {
            let _l = lock_blocking(&f2).unwrap();
            tx.send(()).unwrap();
        });
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        drop(held);
        rx.recv_timeout(std::time::Duration::from_secs(5)).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn parses_link_names() {
        let out = "7: nva65af347c5c2@if2: <BROADCAST,MULTICAST,UP> mtu 1500 master navarch0\n8: eth1: <UP> mtu 1500\n";
        assert_eq!(link_names(out), vec!["nva65af347c5c2", "eth1"]);
    }
}
