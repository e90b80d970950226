//! Thin wrappers over the few Linux syscalls the runtime needs.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

pub(crate) fn cstring(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"))
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Mount an overlay filesystem on `target`.
pub(crate) fn mount_overlay(target: &Path, options: &str) -> io::Result<()> {
    let t = cstring(target)?;
    let data = CString::new(options)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in options"))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    check(unsafe {
        libc::mount(
            c"overlay".as_ptr(),
            t.as_ptr(),
            c"overlay".as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    })
}

/// Mount a tmpfs (nosuid, nodev, noexec) on `target`.
pub(crate) fn mount_tmpfs(target: &Path, options: &str) -> io::Result<()> {
    let t = cstring(target)?;
    let data = CString::new(options)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in options"))?;
    // SAFETY: all pointers are valid NUL-terminated strings for the duration of the call.
    check(unsafe {
        libc::mount(
            c"shm".as_ptr(),
            t.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            data.as_ptr().cast(),
        )
    })
}

/// Detach-unmount `target`; not-mounted / missing is fine.
pub(crate) fn umount_detach(target: &Path) -> io::Result<()> {
    let t = cstring(target)?;
    // SAFETY: valid C string.
    let rc = unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) };
    if rc < 0 {
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINVAL) | Some(libc::ENOENT) => Ok(()),
            _ => Err(e),
        }
    } else {
        Ok(())
    }
}

/// Whether `path` is a mount point (listed in mountinfo).
#[cfg(test)]
pub(crate) fn is_mountpoint(path: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = path.as_os_str().as_bytes();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| unescape_mountinfo(m) == want)
            .unwrap_or(false)
    })
}

#[cfg(test)]
fn unescape_mountinfo(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Create an overlayfs whiteout (a 0/0 character device) at `path`.
pub(crate) fn mknod_whiteout(path: &Path) -> io::Result<()> {
    let p = cstring(path)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknod(p.as_ptr(), libc::S_IFCHR, 0) })
}

/// Set an extended attribute (not following symlinks).
pub(crate) fn lsetxattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cstring(path)?;
    let n = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    // SAFETY: valid pointers and length.
    check(unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Read an extended attribute (for tests).
#[cfg(test)]
pub(crate) fn lgetxattr(path: &Path, name: &str) -> io::Result<Vec<u8>> {
    let p = cstring(path)?;
    let n = CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in name"))?;
    let mut buf = vec![0u8; 256];
    // SAFETY: valid pointers, buffer length passed.
    let rc = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(rc as usize);
    Ok(buf)
}

/// Whether process `pid` exists (and is not a zombie).
pub(crate) fn process_alive(pid: u32) -> bool {
    proc_stat(pid)
        .map(|(state, _)| state != "Z" && state != "X")
        .unwrap_or(false)
}

/// The start time (clock ticks since boot) of a live process `pid`.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    proc_stat(pid)
        .filter(|(state, _)| state != "Z" && state != "X")
        .map(|(_, t)| t)
}

/// Whether `pid` is alive and, when `start_time` is known, still the same process
/// (not a reused pid).
pub(crate) fn same_process_alive(pid: u32, start_time: Option<u64>) -> bool {
    match (process_start_time(pid), start_time) {
        (Some(now), Some(then)) => now == then,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// (state, starttime) from `/proc/<pid>/stat`.
fn proc_stat(pid: u32) -> Option<(String, u64)> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised comm: state is field 3, starttime field 22.
    let (_, rest) = s.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.to_string();
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

/// Total and available (`f_bavail`) bytes of the filesystem holding `path`.
pub(crate) fn statvfs(path: &Path) -> io::Result<(u64, u64)> {
    let c = cstring(path)?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid C string and `st` points to writable memory of the
    // right size.
    check(unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) })?;
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let (frsize, blocks, bavail) = (st.f_frsize, st.f_blocks, st.f_bavail);
    Ok((blocks.saturating_mul(frsize), bavail.saturating_mul(frsize)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_unescape() {
        assert_eq!(unescape_mountinfo(r"/a\040b"), b"/a b".to_vec());
        assert_eq!(unescape_mountinfo("/plain"), b"/plain".to_vec());
    }

    #[test]
    fn self_is_alive() {
        let me = std::process::id();
        assert!(process_alive(me));
        assert!(!process_alive(u32::MAX - 1));
        let t = process_start_time(me).unwrap();
        assert!(same_process_alive(me, Some(t)));
        assert!(same_process_alive(me, None));
        assert!(
            !same_process_alive(me, Some(t + 1)),
            "a reused pid has another start time"
        );
    }

    #[test]
    fn proc_is_a_mountpoint() {
        assert!(is_mountpoint(Path::new("/proc")));
        assert!(!is_mountpoint(Path::new("/proc/self")));
    }
}
