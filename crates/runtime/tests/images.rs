//! Images end to end: import (oci-archive, docker-archive), shared layers,
//! corrupt archives, pulls from a local docker-registry.

mod common;

use common::*;
use navarch_runtime::{ImageService, PullProgress, RuntimeError};
use sha2::Digest;
use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

fn layers_dir(env: &Env) -> PathBuf {
    env.config.root.join("images/layers")
}

fn sha(data: &[u8]) -> String {
    let d = sha2::Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// A second image: the busybox layer with another config (so another image ID).
fn derived_archive(src: &Path, dest: &Path, reference: &str) {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut index = Vec::new();
    let mut ar = tar::Archive::new(std::fs::File::open(src).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if let Some(h) = p.strip_prefix("blobs/sha256/") {
            blobs.insert(h.to_string(), data);
        } else if p == "index.json" {
            index = data;
        }
    }
    let idx: serde_json::Value = serde_json::from_slice(&index).unwrap();
    let mdigest = idx["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut manifest: serde_json::Value = serde_json::from_slice(&blobs[&mdigest]).unwrap();
    let cdigest = manifest["config"]["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    let mut config: serde_json::Value = serde_json::from_slice(&blobs[&cdigest]).unwrap();
    config["config"]["Cmd"] = serde_json::json!(["httpd", "-f"]);
    let config = serde_json::to_vec(&config).unwrap();
    manifest["config"]["digest"] = format!("sha256:{}", sha(&config)).into();
    manifest["config"]["size"] = config.len().into();
    let manifest = serde_json::to_vec(&manifest).unwrap();
    let index = serde_json::json!({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": format!("sha256:{}", sha(&manifest)), "size": manifest.len(),
        "annotations": {"org.opencontainers.image.ref.name": reference}}]});
    blobs.insert(sha(&config), config);
    blobs.insert(sha(&manifest), manifest);
    let mut b = tar::Builder::new(std::fs::File::create(dest).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json", &serde_json::to_vec(&index).unwrap());
    for (h, d) in &blobs {
        add(&format!("blobs/sha256/{h}"), d);
    }
    b.finish().unwrap();
}

#[tokio::test]
async fn import_list_get_and_layers_unpacked_once() {
    require(&["skopeo"]);
    let env = Env::new();
    let archive = test_image();
    let imported = env.images.import(&archive).await.unwrap();
    assert_eq!(imported.len(), 1);
    let img = &imported[0];
    assert_eq!(img.references, vec![TEST_REF.to_string()]);
    assert!(img.id.starts_with("sha256:"));
    assert!(img.repo_digests[0].starts_with("navarch.test/busybox@sha256:"));
    assert_eq!(img.config.cmd, vec!["sh"]);
    assert!(img.size > 500_000);
    assert_eq!(env.images.list().await.unwrap(), imported);
    assert_eq!(env.images.get(TEST_REF).await.unwrap().as_ref(), Some(img));
    assert_eq!(env.images.get(&img.id).await.unwrap().as_ref(), Some(img));
    assert_eq!(
        env.images.get("navarch.test/busybox:9").await.unwrap(),
        None
    );

    let layers: Vec<_> = std::fs::read_dir(layers_dir(&env))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(layers.len(), 1);
    let layer = layers[0].clone();
    assert!(layer.join("bin/busybox").exists());
    assert_eq!(
        std::fs::read_link(layer.join("bin/sh")).unwrap(),
        Path::new("busybox")
    );
    let ino = std::fs::metadata(&layer).unwrap().ino();

    // The same image as a docker-archive (made by skopeo): same layer, not unpacked again.
    let docker = env.dir.path().join("docker.tar");
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--quiet"])
        .arg(format!("oci-archive:{}", archive.display()))
        .arg(format!(
            "docker-archive:{}:other.test/bb:2",
            docker.display()
        ))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo copy to docker-archive");
    let again = env.images.import(&docker).await.unwrap();
    assert_eq!(again.len(), 1);
    assert!(
        again[0].references.contains(&"other.test/bb:2".to_string()),
        "{:?}",
        again[0]
    );
    // A second image with its own config over the same layer.
    let derived = env.dir.path().join("derived.tar");
    derived_archive(&archive, &derived, "navarch.test/httpd:1");
    let d = env.images.import(&derived).await.unwrap();
    assert_ne!(d[0].id, img.id);
    assert_eq!(d[0].config.cmd, vec!["httpd", "-f"]);
    assert_eq!(
        std::fs::read_dir(layers_dir(&env)).unwrap().count(),
        1,
        "one shared layer"
    );
    assert_eq!(
        std::fs::metadata(&layer).unwrap().ino(),
        ino,
        "unpacked once"
    );
    assert_eq!(
        env.images.layer_dirs("navarch.test/httpd:1").unwrap(),
        env.images.layer_dirs(TEST_REF).unwrap()
    );

    // Removing one image keeps the shared layer; removing the last drops it.
    env.images.remove("navarch.test/httpd:1").await.unwrap();
    assert!(layer.exists());
    assert!(matches!(
        env.images.remove("navarch.test/httpd:1").await,
        Err(RuntimeError::ImageNotFound { .. })
    ));
    let ids: Vec<String> = env
        .images
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    for id in ids {
        env.images.remove(&id).await.unwrap();
    }
    assert!(env.images.list().await.unwrap().is_empty());
    assert!(!layer.exists());
    assert_eq!(
        std::fs::read_dir(env.config.root.join("images/blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn corrupt_archive_is_invalid_and_stores_nothing() {
    let env = Env::new();
    let mut bytes = std::fs::read(test_image()).unwrap();
    let mid = bytes.len() / 2; // inside the layer blob
    bytes[mid] ^= 0xff;
    let bad = env.dir.path().join("bad.tar");
    std::fs::write(&bad, &bytes).unwrap();
    let err = env.images.import(&bad).await.unwrap_err();
    assert!(matches!(err, RuntimeError::InvalidArchive(_)), "{err}");
    assert!(env.images.list().await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(layers_dir(&env)).unwrap().count(), 0);
    let truncated = env.dir.path().join("short.tar");
    std::fs::write(&truncated, &bytes[..bytes.len() / 3]).unwrap();
    assert!(matches!(
        env.images.import(&truncated).await,
        Err(RuntimeError::InvalidArchive(_))
    ));
    let missing = env
        .images
        .import(Path::new("/nonexistent/x.tar"))
        .await
        .unwrap_err();
    assert!(matches!(missing, RuntimeError::Io(_)), "{missing}");
}

struct Registry {
    child: std::process::Child,
    port: u16,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_registry(dir: &Path) -> Registry {
    require(&["docker-registry", "skopeo"]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cfg = dir.join("registry.yml");
    std::fs::write(
        &cfg,
        format!(
            "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.join("storage").display()
        ),
    )
    .unwrap();
    let child = std::process::Command::new("docker-registry")
        .arg("serve")
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting docker-registry");
    let reg = Registry { child, port };
    for _ in 0..200 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return reg;
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    panic!("docker-registry did not listen on 127.0.0.1:{port}");
}

#[tokio::test]
async fn pulls_from_a_local_registry() {
    let env = Env::new();
    let reg = start_registry(env.dir.path());
    let repo = format!("127.0.0.1:{}/test/busybox", reg.port);
    let st = std::process::Command::new("skopeo")
        .args(["copy", "--quiet", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", test_image().display()))
        .arg(format!("docker://{repo}:1.35"))
        .status()
        .unwrap();
    assert!(st.success(), "skopeo push");

    let seen = AtomicU64::new(0);
    let progress = |p: PullProgress| {
        seen.fetch_max(p.downloaded, Ordering::Relaxed);
    };
    let img = env
        .images
        .pull(&format!("{repo}:1.35"), &BTreeMap::new(), Some(&progress))
        .await
        .unwrap();
    assert_eq!(img.references, vec![format!("{repo}:1.35")]);
    assert!(img.repo_digests[0].starts_with(&format!("{repo}@sha256:")));
    assert!(seen.load(Ordering::Relaxed) > 500_000, "progress reported");
    assert_eq!(env.images.layer_dirs(&img.id).unwrap().len(), 1);

    // Missing tag / repository.
    let err = env
        .images
        .pull(&format!("{repo}:nope"), &BTreeMap::new(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::ImageNotFound { .. }), "{err}");
    assert_eq!(err.reason(), "ErrImagePull");
    let err = env
        .images
        .pull(
            &format!("127.0.0.1:{}/no/such:1", reg.port),
            &BTreeMap::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            RuntimeError::ImageNotFound { .. } | RuntimeError::Pull { .. }
        ),
        "{err}"
    );
    assert!(matches!(
        env.images.pull("Bad Ref", &BTreeMap::new(), None).await,
        Err(RuntimeError::InvalidReference(_))
    ));

    // By digest (the manifest's), also from the registry, then everything offline.
    let by_digest = img.repo_digests[0].clone();
    let d = env
        .images
        .pull(&by_digest, &BTreeMap::new(), None)
        .await
        .unwrap();
    assert_eq!(d.id, img.id);
    drop(reg); // registry gone: a second pull is a local no-op
    let again = env
        .images
        .pull(&format!("{repo}:1.35"), &BTreeMap::new(), None)
        .await
        .unwrap();
    assert_eq!(again, img);
    let err = env
        .images
        .pull(&format!("{repo}:other"), &BTreeMap::new(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, RuntimeError::Pull { .. }),
        "unreachable registry: {err}"
    );
}

/// A minimal registry (HTTP/1.1, one request per connection) that wants a bearer
/// token from its token endpoint, which wants basic auth `user:pass`. Repository
/// `corrupt/busybox` serves a layer with one byte flipped.
struct MockRegistry {
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockRegistry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn archive_blobs(path: &Path) -> (String, BTreeMap<String, Vec<u8>>) {
    let mut blobs = BTreeMap::new();
    let mut manifest = String::new();
    let mut ar = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        if let Some(h) = p.strip_prefix("blobs/sha256/") {
            blobs.insert(format!("sha256:{h}"), data);
        } else if p == "index.json" {
            let v: serde_json::Value = serde_json::from_slice(&data).unwrap();
            manifest = v["manifests"][0]["digest"].as_str().unwrap().to_string();
        }
    }
    (manifest, blobs)
}

async fn start_mock_registry() -> MockRegistry {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (manifest_digest, blobs) = archive_blobs(&test_image());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let blobs = blobs.clone();
            let manifest_digest = manifest_digest.clone();
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).into_owned();
                let path = text.split_whitespace().nth(1).unwrap_or("/").to_string();
                let auth = text
                    .lines()
                    .find_map(|l| {
                        l.strip_prefix("authorization: ")
                            .or_else(|| l.strip_prefix("Authorization: "))
                    })
                    .unwrap_or("")
                    .trim()
                    .to_string();
                let (status, ctype, extra, body): (&str, &str, String, Vec<u8>) = if path
                    .starts_with("/token")
                {
                    // base64("user:pass")
                    if auth == "Basic dXNlcjpwYXNz" {
                        (
                            "200 OK",
                            "application/json",
                            String::new(),
                            br#"{"token":"tok123"}"#.to_vec(),
                        )
                    } else {
                        (
                            "401 Unauthorized",
                            "text/plain",
                            String::new(),
                            b"no".to_vec(),
                        )
                    }
                } else if auth != "Bearer tok123" {
                    let repo = path
                        .trim_start_matches("/v2/")
                        .split("/manifests/")
                        .next()
                        .unwrap_or("");
                    let repo = repo.split("/blobs/").next().unwrap_or("");
                    let challenge = format!(
                        "WWW-Authenticate: Bearer realm=\"http://127.0.0.1:{port}/token\",service=\"mock\",scope=\"repository:{repo}:pull\"\r\n"
                    );
                    (
                        "401 Unauthorized",
                        "application/json",
                        challenge,
                        b"{}".to_vec(),
                    )
                } else if let Some((repo, reference)) =
                    path.trim_start_matches("/v2/").split_once("/manifests/")
                {
                    let _ = repo;
                    let d = if reference == "1" {
                        manifest_digest.clone()
                    } else {
                        reference.to_string()
                    };
                    match blobs.get(&d).filter(|_| d == manifest_digest) {
                        Some(b) => (
                            "200 OK",
                            "application/vnd.oci.image.manifest.v1+json",
                            String::new(),
                            b.clone(),
                        ),
                        None => (
                            "404 Not Found",
                            "application/json",
                            String::new(),
                            b"{}".to_vec(),
                        ),
                    }
                } else if let Some((repo, digest)) =
                    path.trim_start_matches("/v2/").split_once("/blobs/")
                {
                    match blobs.get(digest) {
                        Some(b) => {
                            let mut b = b.clone();
                            if repo == "corrupt/busybox" && b.len() > 100_000 {
                                let mid = b.len() / 2;
                                b[mid] ^= 0xff;
                            }
                            ("200 OK", "application/octet-stream", String::new(), b)
                        }
                        None => (
                            "404 Not Found",
                            "application/json",
                            String::new(),
                            b"{}".to_vec(),
                        ),
                    }
                } else {
                    ("404 Not Found", "text/plain", String::new(), Vec::new())
                };
                let head = format!(
                    "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n",
                    body.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&body).await;
                let _ = sock.shutdown().await;
            });
        }
    });
    MockRegistry { port, task }
}

#[tokio::test]
async fn bearer_token_auth_and_corrupt_blobs() {
    let mock = start_mock_registry().await;
    let registry = format!("127.0.0.1:{}", mock.port);
    let mut auth = BTreeMap::new();
    auth.insert(
        registry.clone(),
        navarch_runtime::RegistryAuth {
            username: Some("user".into()),
            password: Some("pass".into()),
            identity_token: None,
        },
    );

    // Without credentials the token endpoint refuses.
    let env = Env::new();
    let err = env
        .images
        .pull(
            &format!("{registry}/auth/busybox:1"),
            &BTreeMap::new(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Pull { .. }), "{err}");

    let img = env
        .images
        .pull(&format!("{registry}/auth/busybox:1"), &auth, None)
        .await
        .unwrap();
    assert_eq!(img.references, vec![format!("{registry}/auth/busybox:1")]);
    assert_eq!(img.config.cmd, vec!["sh"]);

    // A corrupt layer: a pull error, and nothing of it is kept.
    let env = Env::new();
    let err = env
        .images
        .pull(&format!("{registry}/corrupt/busybox:1"), &auth, None)
        .await
        .unwrap_err();
    assert!(matches!(err, RuntimeError::Pull { .. }), "{err}");
    assert!(err.to_string().contains("digest"), "{err}");
    assert!(env.images.list().await.unwrap().is_empty());
    assert_eq!(std::fs::read_dir(layers_dir(&env)).unwrap().count(), 0);
    let blobs: Vec<_> = std::fs::read_dir(env.config.root.join("images/blobs/sha256"))
        .unwrap()
        .collect();
    assert!(
        blobs.len() <= 1,
        "only the (verified) config blob may be stored: {blobs:?}"
    );
    assert_eq!(
        std::fs::read_dir(env.config.root.join("images/tmp"))
            .unwrap()
            .count(),
        0
    );
}

#[tokio::test]
async fn garbage_collection_removes_unused_images_and_keeps_shared_layers() {
    use navarch_runtime::{ContainerConfig, ContainerRuntime, LocalImageService, SandboxConfig};
    use std::collections::HashSet;
    require(&["runc"]);
    let env = Env::new();
    let images = LocalImageService::new(&env.config)
        .unwrap()
        .with_gc_min_age(Duration::ZERO);
    let archive = test_image();
    let busybox = images.import(&archive).await.unwrap().remove(0);
    let derived = env.dir.path().join("derived.tar");
    derived_archive(&archive, &derived, "navarch.test/httpd:1");
    let httpd = images.import(&derived).await.unwrap().remove(0);
    let layer = images.layer_dirs(&busybox.id).unwrap().remove(0);
    let usage = images.fs_usage().unwrap();
    assert!(usage.capacity_bytes > 0 && usage.available_bytes <= usage.capacity_bytes);

    // A young image is kept by the default minimum age.
    let cautious = LocalImageService::new(&env.config).unwrap();
    let r = cautious
        .garbage_collect(&HashSet::new(), u64::MAX)
        .await
        .unwrap();
    assert!(r.removed.is_empty(), "{r:?}");

    // A (created, never started) container holds busybox.
    let sb = env
        .rt
        .create_sandbox(&SandboxConfig {
            pod_uid: "uid-gc".into(),
            pod_name: "gc".into(),
            namespace: "default".into(),
            hostname: "gc".into(),
            host_network: false,
            share_pid: false,
            cgroup_parent: format!("navarch-test/pod-gc-{}", std::process::id()),
            limits: Default::default(),
            labels: BTreeMap::new(),
        })
        .await
        .unwrap();
    let cid = env
        .rt
        .create_container(
            &sb,
            &ContainerConfig {
                name: "c".into(),
                image: TEST_REF.into(),
                argv: vec!["true".into()],
                log_path: env.log_path("gc"),
                ..Default::default()
            },
        )
        .await
        .unwrap();

    let r = images
        .garbage_collect(&HashSet::new(), u64::MAX)
        .await
        .unwrap();
    assert_eq!(r.removed, vec![httpd.id.clone()]);
    assert!(r.freed_bytes > 0, "httpd's own config and manifest");
    assert!(layer.exists(), "the shared layer stays with busybox");
    let left: Vec<String> = images
        .list()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(left, vec![busybox.id.clone()]);

    // Container gone: busybox is unused too, and its layer goes with it.
    env.rt.remove_container(&cid).await.unwrap();
    env.rt.remove_sandbox(&sb.id).await.unwrap();
    let r = images.garbage_collect(&HashSet::new(), 1).await.unwrap();
    assert_eq!(r.removed, vec![busybox.id.clone()]);
    assert!(r.freed_bytes > 500_000, "{r:?}");
    assert!(!layer.exists());
    assert!(images.list().await.unwrap().is_empty());
}
