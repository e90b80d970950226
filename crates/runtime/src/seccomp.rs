//! Seccomp: which profile a container gets, and navarch's default profile as
//! the OCI spec's `linux.seccomp`.
//!
//! Upstream's kubelet runs containers `Unconfined` unless `--seccomp-default`
//! is set; navarch behaves as if it were: a container gets the runtime default
//! profile unless its (or its pod's) `securityContext.seccompProfile.type` is
//! `Unconfined`. Privileged containers are always unconfined (as upstream).
//!
//! The default profile is a **deny list**: `defaultAction: SCMP_ACT_ALLOW`, and
//! the syscalls that reach kernel-global state, other namespaces or kernel
//! attack surface fail with `EPERM` (`clone3` with `ENOSYS`, so C libraries
//! fall back to `clone`, whose namespace flags can be checked). Docker and
//! containerd use an allow list instead; a deny list cannot break a workload
//! that uses a syscall newer than the list, and blocks the same dangerous calls.

use serde_json::{json, Value};

/// The seccomp profile of one container.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SeccompProfile {
    /// navarch's default profile (see the module docs); what `RuntimeDefault`
    /// and an unset profile mean.
    #[default]
    RuntimeDefault,
    /// No seccomp filter.
    Unconfined,
}

/// A `seccompProfile` navarch cannot apply; the agent reports it as
/// `CreateContainerConfigError`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    /// `type: Localhost` (profiles from files on the node) is not implemented.
    #[error("seccomp profile type Localhost is not supported on this node (use RuntimeDefault or Unconfined)")]
    LocalhostUnsupported,
    /// Any other type.
    #[error("unknown seccomp profile type {0:?} (want RuntimeDefault, Unconfined or Localhost)")]
    UnknownType(String),
}

impl SeccompProfile {
    /// The profile from `securityContext.seccompProfile.type` of the container
    /// and of the pod: the container's wins; neither set means
    /// [`SeccompProfile::RuntimeDefault`].
    pub fn from_types(
        container: Option<&str>,
        pod: Option<&str>,
    ) -> Result<SeccompProfile, SeccompError> {
        match container.or(pod) {
            None | Some("RuntimeDefault") => Ok(SeccompProfile::RuntimeDefault),
            Some("Unconfined") => Ok(SeccompProfile::Unconfined),
            Some("Localhost") => Err(SeccompError::LocalhostUnsupported),
            Some(other) => Err(SeccompError::UnknownType(other.to_string())),
        }
    }
}

/// Syscalls the default profile makes fail with `EPERM`.
pub(crate) const DENIED: &[&str] = &[
    // kernel keyring (not namespaced)
    "add_key",
    "keyctl",
    "request_key",
    // mounts and namespaces
    "mount",
    "mount_setattr",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "umount",
    "umount2",
    "pivot_root",
    "unshare",
    "setns",
    // the machine itself
    "reboot",
    "kexec_load",
    "kexec_file_load",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "quotactl_fd",
    "syslog",
    "vhangup",
    // kernel modules
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    // clocks (not namespaced)
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "stime",
    // kernel attack surface
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "lookup_dcookie",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "fanotify_init",
    // file handles bypass the mount namespace (the "shocker" escape)
    "open_by_handle_at",
    "name_to_handle_at",
    // obsolete or raw hardware access
    "_sysctl",
    "sysfs",
    "ustat",
    "uselib",
    "nfsservctl",
    "ioperm",
    "iopl",
    "vm86",
    "vm86old",
];

/// `clone` flags that create namespaces; `clone` with any of them fails with
/// `EPERM` (one rule per flag: seccomp compares masked arguments for equality).
const CLONE_NAMESPACE_FLAGS: &[u64] = &[
    0x0002_0000, // CLONE_NEWNS
    0x0200_0000, // CLONE_NEWCGROUP
    0x0400_0000, // CLONE_NEWUTS
    0x0800_0000, // CLONE_NEWIPC
    0x1000_0000, // CLONE_NEWUSER
    0x2000_0000, // CLONE_NEWPID
    0x4000_0000, // CLONE_NEWNET
];

const EPERM: u32 = 1;
const ENOSYS: u32 = 38;

/// The seccomp architectures of the host (the native one and its compat ABIs,
/// so a 32-bit syscall cannot sidestep the list).
fn architectures() -> Vec<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => vec!["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
        "aarch64" => vec!["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"],
        "x86" => vec!["SCMP_ARCH_X86"],
        "arm" => vec!["SCMP_ARCH_ARM"],
        "powerpc64" => vec!["SCMP_ARCH_PPC64LE"],
        "s390x" => vec!["SCMP_ARCH_S390X", "SCMP_ARCH_S390"],
        "riscv64" => vec!["SCMP_ARCH_RISCV64"],
        _ => vec![],
    }
}

/// The index of `clone`'s flags argument (s390 swaps the first two).
fn clone_flags_index() -> u32 {
    if std::env::consts::ARCH == "s390x" {
        1
    } else {
        0
    }
}

/// navarch's default profile as an OCI `linux.seccomp` object.
pub(crate) fn default_profile() -> Value {
    let mut syscalls = vec![json!({
        "names": DENIED,
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": EPERM,
    })];
    for flag in CLONE_NAMESPACE_FLAGS {
        syscalls.push(json!({
            "names": ["clone"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": EPERM,
            "args": [{
                "index": clone_flags_index(),
                "value": flag,
                "valueTwo": flag,
                "op": "SCMP_CMP_MASKED_EQ",
            }],
        }));
    }
    syscalls.push(json!({
        "names": ["clone3"],
        "action": "SCMP_ACT_ERRNO",
        "errnoRet": ENOSYS,
    }));
    json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": architectures(),
        "syscalls": syscalls,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profile_type_resolution() {
        use SeccompProfile::*;
        assert_eq!(SeccompProfile::from_types(None, None), Ok(RuntimeDefault));
        assert_eq!(
            SeccompProfile::from_types(None, Some("Unconfined")),
            Ok(Unconfined)
        );
        assert_eq!(
            SeccompProfile::from_types(Some("RuntimeDefault"), Some("Unconfined")),
            Ok(RuntimeDefault),
            "the container's type wins"
        );
        assert_eq!(
            SeccompProfile::from_types(Some("Unconfined"), Some("RuntimeDefault")),
            Ok(Unconfined)
        );
        assert_eq!(
            SeccompProfile::from_types(Some("Localhost"), None),
            Err(SeccompError::LocalhostUnsupported)
        );
        assert_eq!(
            SeccompProfile::from_types(None, Some("Bogus")),
            Err(SeccompError::UnknownType("Bogus".into()))
        );
        assert!(SeccompError::LocalhostUnsupported
            .to_string()
            .contains("Localhost"));
    }

    #[test]
    fn default_profile_denies_the_essentials() {
        let p = default_profile();
        assert_eq!(p["defaultAction"], "SCMP_ACT_ALLOW");
        let rules = p["syscalls"].as_array().unwrap();
        let denied: Vec<&str> = rules[0]["names"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        assert_eq!(rules[0]["action"], "SCMP_ACT_ERRNO");
        assert_eq!(rules[0]["errnoRet"], 1);
        for s in [
            "keyctl",
            "add_key",
            "request_key",
            "mount",
            "umount2",
            "unshare",
            "setns",
            "reboot",
            "swapon",
            "swapoff",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "bpf",
            "perf_event_open",
            "userfaultfd",
            "clock_settime",
            "settimeofday",
            "open_by_handle_at",
            "pivot_root",
            "acct",
            "quotactl",
        ] {
            assert!(denied.contains(&s), "{s} not denied");
        }
        // Everyday syscalls stay allowed.
        for s in ["read", "clone", "execve", "ptrace", "chown", "setuid"] {
            assert!(!denied.contains(&s), "{s} denied");
        }
        // clone with a namespace flag: one masked rule per flag.
        let clone_rules: Vec<&Value> = rules.iter().filter(|r| r["names"][0] == "clone").collect();
        assert_eq!(clone_rules.len(), CLONE_NAMESPACE_FLAGS.len());
        let newuser = clone_rules
            .iter()
            .find(|r| r["args"][0]["value"] == 0x1000_0000u64)
            .unwrap();
        assert_eq!(newuser["args"][0]["valueTwo"], 0x1000_0000u64);
        assert_eq!(newuser["args"][0]["op"], "SCMP_CMP_MASKED_EQ");
        let clone3 = rules.iter().find(|r| r["names"][0] == "clone3").unwrap();
        assert_eq!(clone3["errnoRet"], 38);
        if std::env::consts::ARCH == "x86_64" {
            assert_eq!(
                p["architectures"],
                json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
            );
        }
    }
}
