//! What the node reports about its host: cpu, memory, disk, kernel, OS image,
//! addresses.

use std::path::Path;

/// Host facts for the Node object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostInfo {
    /// Logical CPUs.
    pub cpus: u64,
    /// `MemTotal` in bytes.
    pub memory_bytes: u64,
    /// Size of the filesystem holding the agent's root, in bytes.
    pub ephemeral_bytes: u64,
    /// `uname -r`.
    pub kernel_version: String,
    /// `PRETTY_NAME` from /etc/os-release.
    pub os_image: String,
    /// Go-style architecture (`amd64`, `arm64`).
    pub architecture: String,
    /// The host's name.
    pub hostname: String,
    /// `/etc/machine-id`, if any.
    pub machine_id: String,
    /// Free memory (`MemAvailable`) in bytes.
    pub memory_available: u64,
    /// Free bytes of the root filesystem.
    pub ephemeral_available: u64,
}

impl HostInfo {
    /// Read the host facts (`root` is the agent's state dir).
    pub fn read(root: &Path) -> HostInfo {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (total, avail) = statvfs(root).unwrap_or((0, 0));
        HostInfo {
            cpus: std::thread::available_parallelism()
                .map(|n| n.get() as u64)
                .unwrap_or(1),
            memory_bytes: meminfo_field(&meminfo, "MemTotal").unwrap_or(0),
            memory_available: meminfo_field(&meminfo, "MemAvailable").unwrap_or(0),
            ephemeral_bytes: total,
            ephemeral_available: avail,
            kernel_version: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            os_image: os_image(&std::fs::read_to_string("/etc/os-release").unwrap_or_default()),
            architecture: go_arch(std::env::consts::ARCH).to_string(),
            hostname: std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            machine_id: std::fs::read_to_string("/etc/machine-id")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
        }
    }
}

/// A `/proc/meminfo` field in bytes (`MemTotal:  16303480 kB`).
pub fn meminfo_field(meminfo: &str, field: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        if k.trim() != field {
            return None;
        }
        let mut parts = v.split_whitespace();
        let n: u64 = parts.next()?.parse().ok()?;
        Some(match parts.next() {
            Some("kB") => n * 1024,
            _ => n,
        })
    })
}

/// `PRETTY_NAME` of an os-release file (unquoted), or `Linux`.
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches('"').trim_matches('\'').to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

/// Rust's architecture name as Go (and Kubernetes) spells it.
pub fn go_arch(rust_arch: &str) -> &str {
    match rust_arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// (total, available) bytes of the filesystem holding `path`.
#[allow(clippy::unnecessary_cast)] // the field types differ between targets
pub fn statvfs(path: &Path) -> Option<(u64, u64)> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a valid NUL-terminated path and `st` points to writable
    // memory of the right type; we read it only when the call succeeded.
    let rc = unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled the struct.
    let st = unsafe { st.assume_init() };
    let frsize = st.f_frsize as u64;
    Some((st.f_blocks as u64 * frsize, st.f_bavail as u64 * frsize))
}

/// The first non-loopback IPv4 address of the host (via a UDP "connect", which
/// sends nothing), or 127.0.0.1.
pub fn detect_node_ip() -> String {
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect("10.255.255.255:1")?;
            s.local_addr()
        })
        .map(|a| a.ip().to_string())
        .ok()
        .filter(|ip| ip != "0.0.0.0")
        .unwrap_or_else(|| "127.0.0.1".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_meminfo() {
        let m = "MemTotal:       16303480 kB\nMemFree:  100 kB\nMemAvailable:   8000 kB\n";
        assert_eq!(meminfo_field(m, "MemTotal"), Some(16303480 * 1024));
        assert_eq!(meminfo_field(m, "MemAvailable"), Some(8000 * 1024));
        assert_eq!(meminfo_field(m, "Nope"), None);
    }

    #[test]
    fn parses_os_release() {
        assert_eq!(
            os_image("NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n"),
            "Debian GNU/Linux 12 (bookworm)"
        );
        assert_eq!(os_image(""), "Linux");
    }

    #[test]
    fn reads_this_host() {
        let h = HostInfo::read(Path::new("/"));
        assert!(h.cpus >= 1);
        assert!(h.memory_bytes > 0);
        assert!(h.ephemeral_bytes > 0);
        assert_eq!(go_arch("x86_64"), "amd64");
    }
}
