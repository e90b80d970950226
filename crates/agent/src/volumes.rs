//! Pod volumes on the host: `<root>/pods/<uid>/volumes/<name>`, plus the
//! per-pod `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf`.
//!
//! configMap, secret, downwardAPI and projected volumes are written with
//! [`crate::atomic::write_atomic`] on every sync, so running containers see
//! updates without a restart.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, Volume, VolumeMount};

use crate::atomic::{validate_path, write_atomic, FileProjection};
use crate::env::{
    config_map_data, field_value, resource_value, secret_data, CachedSource, NodeAllocatable,
};

/// A volume set-up failure (reported as a `FailedMount` event).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume {volume:?} : {message}")]
pub struct VolumeError {
    /// The volume's name.
    pub volume: String,
    /// Upstream-style cause.
    pub message: String,
}

/// Layout of a pod's directory.
#[derive(Clone, Debug)]
pub struct PodDir {
    /// `<root>/pods/<uid>`.
    pub dir: PathBuf,
}

impl PodDir {
    /// The directory of pod `uid` under `root`.
    pub fn new(root: &Path, uid: &str) -> PodDir {
        PodDir {
            dir: root.join("pods").join(uid),
        }
    }
    /// Where volume `name` lives.
    pub fn volume(&self, name: &str) -> PathBuf {
        self.dir.join("volumes").join(name)
    }
    /// The pod's hosts file.
    pub fn hosts(&self) -> PathBuf {
        self.dir.join("etc-hosts")
    }
    /// The pod's hostname file.
    pub fn hostname(&self) -> PathBuf {
        self.dir.join("etc-hostname")
    }
    /// The pod's resolv.conf.
    pub fn resolv_conf(&self) -> PathBuf {
        self.dir.join("resolv.conf")
    }
    /// Log file of a container attempt.
    pub fn log(&self, container: &str, attempt: u32) -> PathBuf {
        self.dir
            .join("logs")
            .join(container)
            .join(format!("{attempt}.log"))
    }
}

/// Set up every volume of `pod`; returns the host path of each.
pub async fn setup(
    pod: &Pod,
    dir: &PodDir,
    source: &CachedSource<'_>,
    node: NodeAllocatable,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut out = BTreeMap::new();
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(out);
    };
    for v in spec.volumes.iter().flatten() {
        let path = setup_one(pod, v, dir, source, node)
            .await
            .map_err(|message| VolumeError {
                volume: v.name.clone(),
                message,
            })?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

fn mode_of(mode: Option<i32>, default: Option<i32>) -> u32 {
    mode.or(default)
        .map(|m| (m as u32) & 0o7777)
        .unwrap_or(0o644)
}

/// Project `data` through `items` (all keys when `items` is empty).
fn project(
    data: &BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: Option<i32>,
    optional: bool,
    missing_key: &dyn Fn(&str) -> String,
    out: &mut BTreeMap<String, FileProjection>,
) -> Result<(), String> {
    match items {
        Some(items) if !items.is_empty() => {
            for it in items {
                match data.get(&it.key) {
                    Some(d) => {
                        validate_path(&it.path).map_err(|e| e.to_string())?;
                        out.insert(
                            it.path.clone(),
                            FileProjection {
                                data: d.clone(),
                                mode: mode_of(it.mode, default_mode),
                            },
                        );
                    }
                    None if optional => {}
                    None => return Err(missing_key(&it.key)),
                }
            }
        }
        _ => {
            for (k, d) in data {
                out.insert(
                    k.clone(),
                    FileProjection {
                        data: d.clone(),
                        mode: mode_of(None, default_mode),
                    },
                );
            }
        }
    }
    Ok(())
}

fn downward(
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    default_mode: Option<i32>,
    node: NodeAllocatable,
    out: &mut BTreeMap<String, FileProjection>,
) -> Result<(), String> {
    for it in items {
        validate_path(&it.path).map_err(|e| e.to_string())?;
        let value = if let Some(f) = &it.field_ref {
            field_value(pod, &f.field_path).map_err(|e| e.to_string())?
        } else if let Some(r) = &it.resource_field_ref {
            let c = pod
                .spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| Some(&c.name) == r.container_name.as_ref())
                })
                .ok_or_else(|| format!("container {:?} not found", r.container_name))?;
            resource_value(
                c,
                &r.resource,
                r.divisor.as_ref().map(|q| q.0.as_str()),
                node,
            )
            .map_err(|e| e.to_string())?
        } else {
            String::new()
        };
        out.insert(
            it.path.clone(),
            FileProjection {
                data: value.into_bytes(),
                mode: mode_of(it.mode, default_mode),
            },
        );
    }
    Ok(())
}

async fn setup_one(
    pod: &Pod,
    v: &Volume,
    dir: &PodDir,
    source: &CachedSource<'_>,
    node: NodeAllocatable,
) -> Result<PathBuf, String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let target = dir.volume(&v.name);
    let io = |e: std::io::Error| e.to_string();
    if let Some(hp) = &v.host_path {
        check_host_path(Path::new(&hp.path), hp.type_.as_deref().unwrap_or(""))?;
        return Ok(PathBuf::from(&hp.path));
    }
    if let Some(ed) = &v.empty_dir {
        std::fs::create_dir_all(&target).map_err(io)?;
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .map_err(io)?;
        if ed.medium.as_deref() == Some("Memory") {
            let size = ed
                .size_limit
                .as_ref()
                .and_then(|q| navarch_api::validation::parse_quantity(&q.0).ok())
                .map(|n| (n / 1_000_000_000) as u64);
            mount_tmpfs(&target, size);
        }
        return Ok(target);
    }
    let mut payload = BTreeMap::new();
    if let Some(cm) = &v.config_map {
        let optional = cm.optional == Some(true);
        match source
            .config_map(ns, &cm.name)
            .await
            .map_err(|e| e.to_string())?
        {
            Some(obj) => project(
                &config_map_data(&obj),
                cm.items.as_ref(),
                cm.default_mode,
                optional,
                &|k| format!("configmap references non-existent config key: {k}"),
                &mut payload,
            )?,
            None if optional => {}
            None => return Err(format!("configmap {:?} not found", cm.name)),
        }
    } else if let Some(sec) = &v.secret {
        let name = sec.secret_name.clone().unwrap_or_default();
        let optional = sec.optional == Some(true);
        match source.secret(ns, &name).await.map_err(|e| e.to_string())? {
            Some(obj) => project(
                &secret_data(&obj),
                sec.items.as_ref(),
                sec.default_mode,
                optional,
                &|k| format!("references non-existent secret key: {k}"),
                &mut payload,
            )?,
            None if optional => {}
            None => return Err(format!("secret {name:?} not found")),
        }
    } else if let Some(d) = &v.downward_api {
        downward(
            pod,
            d.items.as_deref().unwrap_or(&[]),
            d.default_mode,
            node,
            &mut payload,
        )?;
    } else if let Some(p) = &v.projected {
        for s in p.sources.iter().flatten() {
            if let Some(cm) = &s.config_map {
                let optional = cm.optional == Some(true);
                match source
                    .config_map(ns, &cm.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(obj) => project(
                        &config_map_data(&obj),
                        cm.items.as_ref(),
                        p.default_mode,
                        optional,
                        &|k| format!("configmap references non-existent config key: {k}"),
                        &mut payload,
                    )?,
                    None if optional => {}
                    None => return Err(format!("configmap {:?} not found", cm.name)),
                }
            }
            if let Some(sec) = &s.secret {
                let optional = sec.optional == Some(true);
                match source
                    .secret(ns, &sec.name)
                    .await
                    .map_err(|e| e.to_string())?
                {
                    Some(obj) => project(
                        &secret_data(&obj),
                        sec.items.as_ref(),
                        p.default_mode,
                        optional,
                        &|k| format!("references non-existent secret key: {k}"),
                        &mut payload,
                    )?,
                    None if optional => {}
                    None => return Err(format!("secret {:?} not found", sec.name)),
                }
            }
            if let Some(d) = &s.downward_api {
                downward(
                    pod,
                    d.items.as_deref().unwrap_or(&[]),
                    p.default_mode,
                    node,
                    &mut payload,
                )?;
            }
            if let Some(t) = &s.service_account_token {
                let sa = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_string());
                validate_path(&t.path).map_err(|e| e.to_string())?;
                // keep a token we already wrote: tokens are renewed on restart only
                let existing = std::fs::read(target.join(&t.path)).ok();
                let token = match existing {
                    Some(tok) if !tok.is_empty() => tok,
                    _ => match source
                        .token(
                            ns,
                            &sa,
                            t.audience.as_deref(),
                            t.expiration_seconds.unwrap_or(3607),
                        )
                        .await
                    {
                        Ok(tok) => tok.into_bytes(),
                        Err(e) => {
                            tracing::debug!(error = %e, "service account token unavailable");
                            Vec::new()
                        }
                    },
                };
                payload.insert(
                    t.path.clone(),
                    FileProjection {
                        data: token,
                        mode: mode_of(None, p.default_mode.or(Some(0o600))),
                    },
                );
            }
        }
    } else {
        return Err("volume type is not supported by navarch".to_string());
    }
    write_atomic(&target, &payload).map_err(|e| e.to_string())?;
    Ok(target)
}

/// Upstream's hostPath `type` checks (creating for `*OrCreate`).
pub fn check_host_path(path: &Path, kind: &str) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    let p = path.display();
    let md = std::fs::metadata(path);
    match kind {
        "" => Ok(()),
        "DirectoryOrCreate" => {
            if md.as_ref().map(|m| m.is_dir()).unwrap_or(false) {
                return Ok(());
            }
            std::fs::create_dir_all(path).map_err(|e| e.to_string())?;
            std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(|e| e.to_string())
        }
        "FileOrCreate" => {
            if md.is_ok() {
                return Ok(());
            }
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        "Directory" => match md {
            Ok(m) if m.is_dir() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {p} is not a directory"
            )),
        },
        "File" => match md {
            Ok(m) if m.is_file() => Ok(()),
            _ => Err(format!("hostPath type check failed: {p} is not a file")),
        },
        "Socket" => match md {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {p} is not a socket file"
            )),
        },
        "CharDevice" => match md {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {p} is not a character device"
            )),
        },
        "BlockDevice" => match md {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => Err(format!(
                "hostPath type check failed: {p} is not a block device"
            )),
        },
        other => Err(format!("invalid HostPathType {other:?}")),
    }
}

/// Host source of a volumeMount: the volume path plus `subPath` (created as a
/// directory when missing, like upstream).
pub fn mount_source(
    volumes: &BTreeMap<String, PathBuf>,
    m: &VolumeMount,
    env: &[(String, String)],
) -> Result<PathBuf, String> {
    let base = volumes
        .get(&m.name)
        .ok_or_else(|| format!("cannot find volume {:?} to mount into container", m.name))?;
    let sub = match (&m.sub_path, &m.sub_path_expr) {
        (Some(s), _) if !s.is_empty() => s.clone(),
        (_, Some(e)) if !e.is_empty() => crate::expand::expand(e, &|n| {
            env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone())
        }),
        _ => return Ok(base.clone()),
    };
    let p = Path::new(&sub);
    if p.is_absolute()
        || p.components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!(
            "subPath {sub:?} must be a relative path without '..'"
        ));
    }
    let full = base.join(p);
    if std::fs::symlink_metadata(&full).is_err() {
        std::fs::create_dir_all(&full).map_err(|e| e.to_string())?;
    }
    // a symlink out of the volume is refused
    let real = std::fs::canonicalize(&full).map_err(|e| e.to_string())?;
    let real_base = std::fs::canonicalize(base).map_err(|e| e.to_string())?;
    if !real.starts_with(&real_base) {
        return Err(format!("subPath {sub:?} points outside the volume"));
    }
    Ok(full)
}

fn mount_tmpfs(target: &Path, size: Option<u64>) {
    use std::os::unix::ffi::OsStrExt;
    if is_mount_point(target) {
        return;
    }
    let Ok(t) = std::ffi::CString::new(target.as_os_str().as_bytes()) else {
        return;
    };
    let opts = match size {
        Some(s) if s > 0 => format!("mode=1777,size={s}"),
        _ => "mode=1777".to_string(),
    };
    let (Ok(src), Ok(fstype), Ok(data)) = (
        std::ffi::CString::new("tmpfs"),
        std::ffi::CString::new("tmpfs"),
        std::ffi::CString::new(opts),
    ) else {
        return;
    };
    // SAFETY: every pointer is a valid NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            t.as_ptr(),
            fstype.as_ptr(),
            0,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        tracing::warn!(path = %target.display(), error = %std::io::Error::last_os_error(),
            "tmpfs mount failed; emptyDir medium Memory falls back to disk");
    }
}

fn mount_points_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(p.replace("\\040", " ")))
        .filter(|p| p.starts_with(dir))
        .collect();
    // deepest first
    v.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    v
}

fn is_mount_point(p: &Path) -> bool {
    mount_points_under(p).iter().any(|m| m == p)
}

/// Remove a pod's directory (unmounting tmpfs volumes first).
pub fn teardown(dir: &PodDir) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    for m in mount_points_under(&dir.dir) {
        if let Ok(c) = std::ffi::CString::new(m.as_os_str().as_bytes()) {
            // SAFETY: `c` is a valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    match std::fs::remove_dir_all(&dir.dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Write `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` for the pod.
pub fn write_etc_files(
    pod: &Pod,
    dir: &PodDir,
    pod_ip: &str,
    cluster_dns: Option<&str>,
    cluster_domain: &str,
) -> std::io::Result<()> {
    std::fs::create_dir_all(&dir.dir)?;
    let spec = pod.spec.clone().unwrap_or_default();
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let host_network = spec.host_network == Some(true);
    let hostname = pod_hostname(pod);
    let hosts = if host_network {
        std::fs::read_to_string("/etc/hosts").unwrap_or_default()
    } else {
        let mut h = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        match spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => h.push_str(&format!(
                "{pod_ip}\t{hostname}.{sub}.{ns}.svc.{cluster_domain}\t{hostname}\n"
            )),
            None => h.push_str(&format!("{pod_ip}\t{hostname}\n")),
        }
        for a in spec.host_aliases.iter().flatten() {
            h.push_str(&format!(
                "\n# Entries added by HostAliases.\n{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
        h
    };
    write_if_changed(&dir.hosts(), hosts.as_bytes())?;
    write_if_changed(&dir.hostname(), format!("{hostname}\n").as_bytes())?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirst" => !host_network,
        "ClusterFirstWithHostNet" => true,
        _ => false,
    };
    let mut nameservers: Vec<String> = Vec::new();
    let mut searches: Vec<String> = Vec::new();
    let mut options: Vec<String> = Vec::new();
    match (policy, cluster_first, cluster_dns) {
        ("None", _, _) => {}
        (_, true, Some(dns)) => {
            nameservers.push(dns.to_string());
            searches = vec![
                format!("{ns}.svc.{cluster_domain}"),
                format!("svc.{cluster_domain}"),
                cluster_domain.to_string(),
            ];
            options.push("ndots:5".to_string());
        }
        _ => {
            for l in host_resolv.lines() {
                let mut f = l.split_whitespace();
                match f.next() {
                    Some("nameserver") => nameservers.extend(f.next().map(str::to_string)),
                    Some("search") => searches.extend(f.map(str::to_string)),
                    Some("options") => options.extend(f.map(str::to_string)),
                    _ => {}
                }
            }
        }
    }
    if let Some(c) = &spec.dns_config {
        nameservers.extend(c.nameservers.iter().flatten().cloned());
        searches.extend(c.searches.iter().flatten().cloned());
        for o in c.options.iter().flatten() {
            let Some(name) = &o.name else { continue };
            options.retain(|x| x.split(':').next() != Some(name.as_str()));
            options.push(match &o.value {
                Some(v) => format!("{name}:{v}"),
                None => name.clone(),
            });
        }
    }
    let mut r = String::new();
    if !searches.is_empty() {
        r.push_str(&format!("search {}\n", searches.join(" ")));
    }
    for n in nameservers.iter().take(3) {
        r.push_str(&format!("nameserver {n}\n"));
    }
    if !options.is_empty() {
        r.push_str(&format!("options {}\n", options.join(" ")));
    }
    write_if_changed(&dir.resolv_conf(), r.as_bytes())
}

/// The pod's hostname (spec.hostname, else the name; truncated to 63 chars).
pub fn pod_hostname(pod: &Pod) -> String {
    let h = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    let mut h: String = h.chars().take(63).collect();
    while h.ends_with(['-', '.']) {
        h.pop();
    }
    h
}

fn write_if_changed(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if std::fs::read(path).map(|d| d == data).unwrap_or(false) {
        return Ok(());
    }
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMap, ConfigMapVolumeSource, EmptyDirVolumeSource, HostPathVolumeSource, PodSpec,
        Secret, SecretVolumeSource,
    };

    struct Src;
    #[async_trait::async_trait]
    impl crate::env::ObjectSource for Src {
        async fn config_map(&self, _: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok((name == "cm").then(|| ConfigMap {
                data: Some([("game.properties".to_string(), "lives=3".to_string())].into()),
                ..Default::default()
            }))
        }
        async fn secret(&self, _: &str, _: &str) -> Result<Option<Secret>, String> {
            Ok(None)
        }
    }

    fn pod_with(volumes: Vec<Volume>) -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("web".into());
        p.metadata.namespace = Some("default".into());
        p.spec = Some(PodSpec {
            volumes: Some(volumes),
            ..Default::default()
        });
        p
    }

    #[tokio::test]
    async fn sets_up_volumes() {
        let root = tempfile::tempdir().unwrap();
        let host = root.path().join("hostdir");
        let pod = pod_with(vec![
            Volume {
                name: "cfg".into(),
                config_map: Some(ConfigMapVolumeSource {
                    name: "cm".into(),
                    items: Some(vec![KeyToPath {
                        key: "game.properties".into(),
                        path: "conf/game".into(),
                        mode: Some(0o600),
                    }]),
                    ..Default::default()
                }),
                ..Default::default()
            },
            Volume {
                name: "scratch".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Default::default()
            },
            Volume {
                name: "host".into(),
                host_path: Some(HostPathVolumeSource {
                    path: host.display().to_string(),
                    type_: Some("DirectoryOrCreate".into()),
                }),
                ..Default::default()
            },
            Volume {
                name: "opt".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some("nope".into()),
                    optional: Some(true),
                    ..Default::default()
                }),
                ..Default::default()
            },
        ]);
        let dir = PodDir::new(root.path(), "uid1");
        let src = Src;
        let cache = CachedSource::new(&src);
        let vols = setup(&pod, &dir, &cache, NodeAllocatable::default())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(vols["cfg"].join("conf/game")).unwrap(),
            "lives=3"
        );
        assert!(vols["scratch"].is_dir());
        assert!(host.is_dir());
        assert_eq!(vols["host"], host);
        // subPath
        let m = VolumeMount {
            name: "scratch".into(),
            mount_path: "/x".into(),
            sub_path: Some("a/b".into()),
            ..Default::default()
        };
        assert!(mount_source(&vols, &m, &[]).unwrap().is_dir());
        let bad = VolumeMount {
            name: "scratch".into(),
            mount_path: "/x".into(),
            sub_path: Some("../../etc".into()),
            ..Default::default()
        };
        assert!(mount_source(&vols, &bad, &[]).is_err());
        teardown(&dir).unwrap();
        assert!(!dir.dir.exists());
    }

    #[tokio::test]
    async fn missing_objects_fail_with_upstream_messages() {
        let root = tempfile::tempdir().unwrap();
        let dir = PodDir::new(root.path(), "uid2");
        let src = Src;
        let cache = CachedSource::new(&src);
        let pod = pod_with(vec![Volume {
            name: "s".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some("gone".into()),
                ..Default::default()
            }),
            ..Default::default()
        }]);
        let e = setup(&pod, &dir, &cache, NodeAllocatable::default())
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "MountVolume.SetUp failed for volume \"s\" : secret \"gone\" not found"
        );
        let pod = pod_with(vec![Volume {
            name: "h".into(),
            host_path: Some(HostPathVolumeSource {
                path: "/definitely/not/here".into(),
                type_: Some("Directory".into()),
            }),
            ..Default::default()
        }]);
        let e = setup(&pod, &dir, &cache, NodeAllocatable::default())
            .await
            .unwrap_err();
        assert!(e.message.contains("is not a directory"), "{e}");
    }

    #[tokio::test]
    async fn downward_projected_and_memory_volumes() {
        use k8s_openapi::api::core::v1::{
            ConfigMapProjection, DownwardAPIProjection, DownwardAPIVolumeSource,
            ObjectFieldSelector, ProjectedVolumeSource, VolumeProjection,
        };
        let root = tempfile::tempdir().unwrap();
        let field = |path: &str, fp: &str| DownwardAPIVolumeFile {
            path: path.into(),
            field_ref: Some(ObjectFieldSelector {
                field_path: fp.into(),
                api_version: None,
            }),
            ..Default::default()
        };
        let mut pod = pod_with(vec![
            Volume {
                name: "podinfo".into(),
                downward_api: Some(DownwardAPIVolumeSource {
                    items: Some(vec![
                        field("labels", "metadata.labels"),
                        field("name", "metadata.name"),
                    ]),
                    default_mode: Some(0o440),
                }),
                ..Default::default()
            },
            Volume {
                name: "all".into(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(vec![
                        VolumeProjection {
                            config_map: Some(ConfigMapProjection {
                                name: "cm".into(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        VolumeProjection {
                            downward_api: Some(DownwardAPIProjection {
                                items: Some(vec![field("ns", "metadata.namespace")]),
                            }),
                            ..Default::default()
                        },
                    ]),
                    default_mode: None,
                }),
                ..Default::default()
            },
            Volume {
                name: "mem".into(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".into()),
                    size_limit: None,
                }),
                ..Default::default()
            },
        ]);
        pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        let dir = PodDir::new(root.path(), "uid3");
        let src = Src;
        let cache = CachedSource::new(&src);
        let vols = setup(&pod, &dir, &cache, NodeAllocatable::default())
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(vols["podinfo"].join("labels")).unwrap(),
            "app=\"web\""
        );
        assert_eq!(
            std::fs::read_to_string(vols["podinfo"].join("name")).unwrap(),
            "web"
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(vols["podinfo"].join("name"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o440);
        assert_eq!(
            std::fs::read_to_string(vols["all"].join("game.properties")).unwrap(),
            "lives=3"
        );
        assert_eq!(
            std::fs::read_to_string(vols["all"].join("ns")).unwrap(),
            "default"
        );
        // tmpfs when permitted, a plain directory otherwise; teardown handles both
        assert!(vols["mem"].is_dir());
        std::fs::write(vols["mem"].join("f"), "x").unwrap();
        teardown(&dir).unwrap();
        assert!(!dir.dir.exists());
        assert!(mount_points_under(&dir.dir).is_empty());
    }

    #[test]
    fn etc_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = PodDir::new(root.path(), "u");
        let pod = pod_with(vec![]);
        write_etc_files(&pod, &dir, "10.1.0.5", Some("10.96.0.10"), "cluster.local").unwrap();
        let hosts = std::fs::read_to_string(dir.hosts()).unwrap();
        assert!(hosts.contains("10.1.0.5\tweb\n"), "{hosts}");
        assert_eq!(std::fs::read_to_string(dir.hostname()).unwrap(), "web\n");
        let r = std::fs::read_to_string(dir.resolv_conf()).unwrap();
        assert_eq!(
            r,
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
    }
}
