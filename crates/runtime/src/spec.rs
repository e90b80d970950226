//! The OCI runtime spec (`config.json`) of one container.

use crate::images::store::StoredConfig;
use crate::{ContainerConfig, SeccompProfile};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

/// Docker's / containerd's default capability set (no SYS_ADMIN).
pub(crate) const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Every capability up to CAP_CHECKPOINT_RESTORE (privileged containers).
const ALL_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// runc's default masked paths.
const MASKED_PATHS: &[&str] = &[
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// runc's default read-only paths.
const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Namespaces a container joins (None: a new one / the host's, see [`build`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct NamespacePaths {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// Shared pid namespace of the pod (shareProcessNamespace).
    pub pid: Option<PathBuf>,
    /// The pod's `/dev/shm` tmpfs (shared by its containers), else a private one.
    pub shm: Option<PathBuf>,
}

fn normalize_cap(c: &str) -> String {
    let u = c.to_ascii_uppercase();
    if u.starts_with("CAP_") {
        u
    } else {
        format!("CAP_{u}")
    }
}

/// The capability bounding set of this process (`CapBnd` of
/// `/proc/self/status`), if readable.
fn own_bounding_set() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// Every capability the runtime itself holds (`ALL_CAPS` is indexed by
/// capability number): what "all capabilities" means, as in containerd —
/// asking runc for one the runtime lacks fails the container.
fn all_caps(bounding: Option<u64>) -> Vec<String> {
    ALL_CAPS
        .iter()
        .enumerate()
        .filter(|(bit, _)| bounding.is_none_or(|b| b & (1u64 << bit) != 0))
        .map(|(_, c)| c.to_string())
        .collect()
}

/// The capability set after privileged / add / drop (`ALL` is understood).
pub(crate) fn capabilities(cfg: &ContainerConfig) -> Vec<String> {
    capabilities_within(cfg, own_bounding_set())
}

/// [`capabilities`] with "all" limited to the bounding set `bounding`.
fn capabilities_within(cfg: &ContainerConfig, bounding: Option<u64>) -> Vec<String> {
    let mut caps: Vec<String> = if cfg.privileged {
        all_caps(bounding)
    } else {
        DEFAULT_CAPS.iter().map(|s| s.to_string()).collect()
    };
    if !cfg.privileged {
        for a in &cfg.add_capabilities {
            if a.eq_ignore_ascii_case("ALL") {
                caps = all_caps(bounding);
            } else {
                let n = normalize_cap(a);
                if !caps.contains(&n) {
                    caps.push(n);
                }
            }
        }
        for d in &cfg.drop_capabilities {
            if d.eq_ignore_ascii_case("ALL") {
                caps.clear();
            } else {
                let n = normalize_cap(d);
                caps.retain(|c| c != &n);
            }
        }
        // Adds win over "drop ALL" (upstream semantics).
        if cfg
            .drop_capabilities
            .iter()
            .any(|d| d.eq_ignore_ascii_case("ALL"))
        {
            for a in &cfg.add_capabilities {
                let n = normalize_cap(a);
                if !a.eq_ignore_ascii_case("ALL") && !caps.contains(&n) {
                    caps.push(n);
                }
            }
        }
    }
    caps
}

/// Process env: the image's, overridden by the container's; PATH defaulted.
pub(crate) fn environment(cfg: &ContainerConfig, image: &StoredConfig) -> Vec<String> {
    let mut env: Vec<(String, String)> = Vec::new();
    let mut set = |k: &str, v: &str| match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(e) => e.1 = v.to_string(),
        None => env.push((k.to_string(), v.to_string())),
    };
    set(
        "PATH",
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    );
    for e in &image.env {
        let (k, v) = e.split_once('=').unwrap_or((e, ""));
        set(k, v);
    }
    for (k, v) in &cfg.env {
        set(k, v);
    }
    env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
}

/// uid/gid: the container's, else a numeric image `User` (`uid[:gid]`), else root.
pub(crate) fn user(cfg: &ContainerConfig, image: &StoredConfig) -> (u32, u32) {
    if let Some(u) = cfg.user {
        return u;
    }
    if let Some(u) = &image.user {
        let (a, b) = u.split_once(':').unwrap_or((u, ""));
        if let Ok(uid) = a.parse::<u32>() {
            return (uid, b.parse().unwrap_or(0));
        }
    }
    (0, 0)
}

/// The full spec.
pub(crate) fn build(
    cfg: &ContainerConfig,
    image: &StoredConfig,
    rootfs: &Path,
    ns: &NamespacePaths,
    cgroups_path: &str,
) -> Value {
    let (uid, gid) = user(cfg, image);
    let caps = capabilities(cfg);
    let cwd = cfg
        .working_dir
        .clone()
        .or_else(|| image.working_dir.clone())
        .filter(|w| w.starts_with('/'))
        .unwrap_or_else(|| "/".to_string());
    let mut mounts = vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts", "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        match &ns.shm {
            Some(p) => {
                json!({"destination": "/dev/shm", "type": "bind", "source": p, "options": ["rbind", "nosuid", "noexec", "nodev", "rw"]})
            }
            None => {
                json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm", "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]})
            }
        },
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", if cfg.privileged { "rw" } else { "ro" }]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup", "options": ["nosuid", "noexec", "nodev", "relatime", if cfg.privileged { "rw" } else { "ro" }]}),
    ];
    for m in &cfg.mounts {
        let mut opts = vec!["rbind", "rprivate"];
        opts.push(if m.read_only { "ro" } else { "rw" });
        mounts.push(json!({
            "destination": m.destination,
            "type": "bind",
            "source": m.source,
            "options": opts,
        }));
    }
    let mut namespaces = vec![json!({"type": "mount"})];
    match &ns.pid {
        Some(p) => namespaces.push(json!({"type": "pid", "path": p})),
        None => namespaces.push(json!({"type": "pid"})),
    }
    for (kind, path) in [("network", &ns.net), ("ipc", &ns.ipc), ("uts", &ns.uts)] {
        if let Some(p) = path {
            namespaces.push(json!({"type": kind, "path": p}));
        }
    }
    let mut resources = json!({
        "devices": [{"allow": cfg.privileged, "access": "rwm"}],
    });
    let r = &cfg.resources;
    let mut cpu = serde_json::Map::new();
    if let Some(s) = r.cpu_shares {
        cpu.insert("shares".into(), json!(s.max(2)));
    }
    if let Some(q) = r.cpu_quota {
        cpu.insert("quota".into(), json!(q));
        cpu.insert("period".into(), json!(r.cpu_period.unwrap_or(100_000)));
    } else if let Some(p) = r.cpu_period {
        cpu.insert("period".into(), json!(p));
    }
    if !cpu.is_empty() {
        resources["cpu"] = Value::Object(cpu);
    }
    if let Some(m) = r.memory_limit {
        resources["memory"] = json!({"limit": m});
    }
    if let Some(p) = r.pids_limit {
        resources["pids"] = json!({"limit": p});
    }
    let mut linux = json!({
        "namespaces": namespaces,
        "cgroupsPath": cgroups_path,
        "resources": resources,
    });
    if !cfg.privileged {
        linux["maskedPaths"] = json!(MASKED_PATHS);
        linux["readonlyPaths"] = json!(READONLY_PATHS);
        if cfg.seccomp == SeccompProfile::RuntimeDefault {
            linux["seccomp"] = crate::seccomp::default_profile();
        }
    }
    json!({
        "ociVersion": "1.0.2",
        "process": {
            "terminal": cfg.tty,
            "user": {"uid": uid, "gid": gid},
            "args": cfg.argv,
            "env": environment(cfg, image),
            "cwd": cwd,
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
            },
            "noNewPrivileges": cfg.no_new_privileges,
        },
        "root": {"path": rootfs, "readonly": cfg.read_only_rootfs},
        "mounts": mounts,
        "linux": linux,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Mount, Resources};

    fn cfg() -> ContainerConfig {
        ContainerConfig {
            name: "c".into(),
            argv: vec!["sh".into(), "-c".into(), "true".into()],
            env: vec![("A".into(), "1".into()), ("PATH".into(), "/x".into())],
            mounts: vec![Mount {
                source: "/tmp/h".into(),
                destination: "/etc/hosts".into(),
                read_only: true,
            }],
            resources: Resources {
                cpu_shares: Some(1),
                cpu_quota: Some(50_000),
                cpu_period: None,
                memory_limit: Some(20 << 20),
                pids_limit: Some(100),
            },
            ..Default::default()
        }
    }

    #[test]
    fn spec_has_namespaces_cgroups_resources() {
        let ns = NamespacePaths {
            net: Some("/ns/net".into()),
            ipc: Some("/ns/ipc".into()),
            uts: None,
            pid: None,
            shm: Some("/sb/shm".into()),
        };
        let image = StoredConfig {
            env: vec!["B=2".into()],
            working_dir: Some("/w".into()),
            user: Some("1000:10".into()),
            ..Default::default()
        };
        let s = build(&cfg(), &image, Path::new("/r"), &ns, "/navarch/podx/c1");
        assert_eq!(s["linux"]["cgroupsPath"], "/navarch/podx/c1");
        let nss = s["linux"]["namespaces"].as_array().unwrap();
        assert!(nss.contains(&json!({"type": "pid"})));
        assert!(nss.contains(&json!({"type": "mount"})));
        assert!(nss.contains(&json!({"type": "network", "path": "/ns/net"})));
        assert!(nss.contains(&json!({"type": "ipc", "path": "/ns/ipc"})));
        assert!(!nss.iter().any(|n| n["type"] == "uts"));
        assert_eq!(
            s["linux"]["resources"]["cpu"],
            json!({"shares": 2, "quota": 50000, "period": 100000})
        );
        assert_eq!(s["linux"]["resources"]["memory"]["limit"], 20 << 20);
        assert_eq!(s["linux"]["resources"]["pids"]["limit"], 100);
        assert_eq!(s["process"]["cwd"], "/w");
        assert_eq!(s["process"]["user"], json!({"uid": 1000, "gid": 10}));
        let env: Vec<String> = serde_json::from_value(s["process"]["env"].clone()).unwrap();
        assert!(
            env.contains(&"PATH=/x".to_string())
                && env.contains(&"A=1".into())
                && env.contains(&"B=2".into())
        );
        let mounts = s["mounts"].as_array().unwrap();
        let hosts = mounts
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert!(hosts["options"].as_array().unwrap().contains(&json!("ro")));
        let shm = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert_eq!(
            (shm["type"].as_str(), shm["source"].as_str()),
            (Some("bind"), Some("/sb/shm"))
        );
        assert_eq!(s["root"]["path"], "/r");
        assert!(s["linux"]["maskedPaths"]
            .as_array()
            .unwrap()
            .contains(&json!("/proc/kcore")));
    }

    #[test]
    fn capabilities_follow_privileged_add_drop() {
        let mut c = cfg();
        let caps = capabilities(&c);
        assert!(!caps.contains(&"CAP_SYS_ADMIN".to_string()));
        assert!(caps.contains(&"CAP_NET_RAW".to_string()));
        c.add_capabilities = vec!["NET_ADMIN".into()];
        c.drop_capabilities = vec!["CAP_NET_RAW".into()];
        let caps = capabilities(&c);
        assert!(caps.contains(&"CAP_NET_ADMIN".to_string()));
        assert!(!caps.contains(&"CAP_NET_RAW".to_string()));
        c.drop_capabilities = vec!["ALL".into()];
        assert_eq!(capabilities(&c), vec!["CAP_NET_ADMIN".to_string()]);
        c.privileged = true;
        assert!(capabilities(&c).contains(&"CAP_SYS_ADMIN".to_string()));
        // "All" is what the runtime holds: CAP_SYS_RESOURCE (24) missing here.
        let bounding = ((1u64 << 41) - 1) & !(1 << 24);
        let all = capabilities_within(&c, Some(bounding));
        assert_eq!(all.len(), ALL_CAPS.len() - 1);
        assert!(!all.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(all.contains(&"CAP_CHECKPOINT_RESTORE".to_string()));
        assert_eq!(capabilities_within(&c, None).len(), ALL_CAPS.len());
        assert_eq!(ALL_CAPS[24], "CAP_SYS_RESOURCE");
        assert_eq!(ALL_CAPS[40], "CAP_CHECKPOINT_RESTORE");
        let s = build(
            &c,
            &StoredConfig::default(),
            Path::new("/r"),
            &NamespacePaths::default(),
            "/x",
        );
        assert!(s["linux"].get("maskedPaths").is_none());
        assert_eq!(s["linux"]["resources"]["devices"][0]["allow"], true);
        assert_eq!(s["process"]["cwd"], "/");
        assert_eq!(s["process"]["user"], json!({"uid": 0, "gid": 0}));
    }

    #[test]
    fn seccomp_default_unless_unconfined_or_privileged() {
        let spec = |c: &ContainerConfig| {
            build(
                c,
                &StoredConfig::default(),
                Path::new("/r"),
                &NamespacePaths::default(),
                "/x",
            )
        };
        let mut c = cfg();
        let s = spec(&c);
        assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
        assert!(!s["linux"]["seccomp"]["syscalls"]
            .as_array()
            .unwrap()
            .is_empty());
        c.seccomp = SeccompProfile::Unconfined;
        assert!(spec(&c)["linux"].get("seccomp").is_none());
        c.seccomp = SeccompProfile::RuntimeDefault;
        c.privileged = true;
        assert!(spec(&c)["linux"].get("seccomp").is_none());
    }
}
