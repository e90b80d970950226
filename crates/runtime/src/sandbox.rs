//! Pod sandboxes without a pause process: a short-lived child `unshare`s the
//! pod's namespaces, sets the hostname and bind-mounts its `/proc/self/ns/*`
//! files onto `<root>/sandboxes/<id>/ns/{net,ipc,uts,pid}`, which keeps the
//! namespaces alive after it exits. Containers join them by path.

use crate::sys::cstring;
use std::ffi::CString;
use std::io;
use std::path::{Path, PathBuf};

/// Which namespaces to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct NsSet {
    pub net: bool,
    pub ipc: bool,
    pub uts: bool,
    pub pid: bool,
}

impl NsSet {
    /// (file name under `ns/`, /proc source, clone flag) of each selected namespace.
    fn selected(&self) -> Vec<(&'static str, &'static std::ffi::CStr, libc::c_int)> {
        let mut v = Vec::new();
        if self.net {
            v.push(("net", c"/proc/self/ns/net", libc::CLONE_NEWNET));
        }
        if self.ipc {
            v.push(("ipc", c"/proc/self/ns/ipc", libc::CLONE_NEWIPC));
        }
        if self.uts {
            v.push(("uts", c"/proc/self/ns/uts", libc::CLONE_NEWUTS));
        }
        if self.pid {
            v.push(("pid", c"/proc/self/ns/pid_for_children", libc::CLONE_NEWPID));
        }
        v
    }
}

/// Create the namespaces in `set` and pin them under `ns_dir`. Returns the pinned paths.
pub(crate) fn create_namespaces(
    ns_dir: &Path,
    hostname: &str,
    set: NsSet,
) -> io::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(ns_dir)?;
    let selected = set.selected();
    let mut targets: Vec<(PathBuf, CString, &'static std::ffi::CStr)> = Vec::new();
    let mut flags = 0;
    for (name, src, flag) in &selected {
        let p = ns_dir.join(name);
        std::fs::File::create(&p)?;
        targets.push((p.clone(), cstring(&p)?, src));
        flags |= flag;
    }
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let host = hostname.as_bytes().to_vec();
    if host.len() > 64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "hostname longer than 64 bytes",
        ));
    }
    // SAFETY: the child only makes raw syscalls (async-signal-safe) on memory
    // prepared before the fork, then _exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        unsafe {
            if libc::unshare(flags) != 0 {
                libc::_exit(10);
            }
            if set.uts && libc::sethostname(host.as_ptr().cast(), host.len()) != 0 {
                libc::_exit(11);
            }
            for (i, (_, target, src)) in targets.iter().enumerate() {
                if libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ) != 0
                {
                    libc::_exit(20 + i as libc::c_int);
                }
            }
            libc::_exit(0);
        }
    }
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINTR) {
            return Err(e);
        }
    }
    if libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        return Ok(targets.into_iter().map(|t| t.0).collect());
    }
    let what = match libc::WEXITSTATUS(status) {
        10 => "unshare".to_string(),
        11 => "sethostname".to_string(),
        n if n >= 20 => format!("bind-mounting namespace {}", n - 20),
        _ => format!("namespace helper ended with status {status}"),
    };
    let _ = remove_namespaces(ns_dir);
    Err(io::Error::other(format!(
        "creating pod namespaces failed at {what}"
    )))
}

/// Unmount and delete the pinned namespaces under `ns_dir`.
pub(crate) fn remove_namespaces(ns_dir: &Path) -> io::Result<()> {
    let rd = match std::fs::read_dir(ns_dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for e in rd {
        let p = e?.path();
        crate::sys::umount_detach(&p)?;
        std::fs::remove_file(&p)?;
    }
    std::fs::remove_dir(ns_dir)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn creates_pins_and_removes_namespaces() {
        if unsafe { libc::geteuid() } != 0 {
            panic!("this test needs root (creating namespaces)");
        }
        let dir = tempfile::tempdir().unwrap();
        let ns = dir.path().join("ns");
        let paths = create_namespaces(
            &ns,
            "pod-a",
            NsSet {
                net: true,
                ipc: true,
                uts: true,
                pid: false,
            },
        )
        .unwrap();
        assert_eq!(paths.len(), 3);
        let host_net = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let pinned = std::fs::metadata(ns.join("net")).unwrap().ino();
        assert_ne!(host_net, pinned, "the pinned net namespace is a new one");
        assert!(crate::sys::is_mountpoint(&ns.join("uts")));
        remove_namespaces(&ns).unwrap();
        assert!(!ns.exists());
    }
}
