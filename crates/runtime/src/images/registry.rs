//! Pulling over the OCI distribution v2 API: HTTPS (plain HTTP for loopback and
//! configured insecure registries), mirrors, bearer-token and basic auth,
//! manifest lists / OCI indexes, digest verification of every blob.

use super::archive::finish_image;
use super::manifest::{self, Manifest};
use super::pick_platform;
use super::store::{ImageRecord, ImageStore, StoreError};
use crate::{ImageReference, PullProgress, RegistryAuth, Result, RuntimeError};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

/// `<root>/registries.json`:
/// `{"mirrors": {"docker.io": ["http://127.0.0.1:5000"]}, "insecure": ["reg.lan:5000"]}`.
/// Mirrors are tried in order before the registry itself; insecure registries
/// are spoken to over plain HTTP. Loopback registries (`127.0.0.1:*`,
/// `localhost:*`, `[::1]:*`) always use plain HTTP.
#[derive(Clone, Debug, Default, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct RegistriesConfig {
    /// Registry name (e.g. `docker.io`) → mirror base URLs (`http(s)://host[:port]`).
    #[serde(default)]
    pub mirrors: BTreeMap<String, Vec<String>>,
    /// Registries (`host[:port]`) reached over plain HTTP.
    #[serde(default)]
    pub insecure: Vec<String>,
}

impl RegistriesConfig {
    /// Read the file; a missing file is the empty config.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| {
                RuntimeError::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("{}: {e}", path.display()),
                ))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(e.into()),
        }
    }

    /// Base URLs to try for `reference`'s registry, in order.
    pub fn endpoints(&self, reference: &ImageReference) -> Vec<String> {
        let mut out: Vec<String> = self
            .mirrors
            .get(&reference.registry)
            .map(|m| {
                m.iter()
                    .map(|u| u.trim_end_matches('/').to_string())
                    .collect()
            })
            .unwrap_or_default();
        let host = reference.api_host();
        let plain = is_loopback(host)
            || self
                .insecure
                .iter()
                .any(|i| i == &reference.registry || i == host);
        out.push(format!("{}://{host}", if plain { "http" } else { "https" }));
        out
    }
}

fn is_loopback(host: &str) -> bool {
    let h = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host)
    };
    h == "localhost" || h == "::1" || h.starts_with("127.")
}

/// Parse `Bearer realm="...",service="...",scope="..."` / `Basic realm="..."`.
pub(crate) fn parse_challenge(header: &str) -> Option<(String, BTreeMap<String, String>)> {
    let header = header.trim();
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = BTreeMap::new();
    let mut chars = rest.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next().is_none() {
            break;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '\\' => {
                        if let Some(n) = chars.next() {
                            value.push(n)
                        }
                    }
                    '"' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == ',' {
                    break;
                }
                value.push(c);
                chars.next();
            }
        }
        params.insert(key.trim().to_ascii_lowercase(), value);
    }
    Some((scheme.to_ascii_lowercase(), params))
}

pub(crate) struct Client {
    http: reqwest::Client,
    config: RegistriesConfig,
}

/// One pull's connection to one endpoint.
struct Session<'a> {
    http: &'a reqwest::Client,
    base: String,
    repo: String,
    creds: Option<&'a RegistryAuth>,
    authorization: Option<String>,
    image: String,
}

fn pull_err(image: &str, detail: impl Into<String>) -> RuntimeError {
    RuntimeError::Pull {
        image: image.to_string(),
        detail: detail.into(),
    }
}

fn basic(user: &str, pass: &str) -> String {
    use base64_lite::encode;
    format!("Basic {}", encode(format!("{user}:{pass}").as_bytes()))
}

/// Minimal base64 (standard alphabet, padded) for basic auth headers.
mod base64_lite {
    pub fn encode(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
        for chunk in data.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

impl<'a> Session<'a> {
    async fn get(&mut self, url: &str, accept: Option<&str>) -> Result<reqwest::Response> {
        for attempt in 0..2 {
            let mut req = self.http.get(url);
            if let Some(a) = accept {
                req = req.header(reqwest::header::ACCEPT, a);
            }
            if let Some(auth) = &self.authorization {
                req = req.header(reqwest::header::AUTHORIZATION, auth);
            }
            let resp = req
                .send()
                .await
                .map_err(|e| pull_err(&self.image, format!("GET {url}: {e}")))?;
            if resp.status() == reqwest::StatusCode::UNAUTHORIZED && attempt == 0 {
                let challenge = resp
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                if let Some(ch) = challenge {
                    self.authenticate(&ch).await?;
                    continue;
                }
            }
            return Ok(resp);
        }
        Err(pull_err(&self.image, format!("GET {url}: unauthorized")))
    }

    async fn authenticate(&mut self, challenge: &str) -> Result<()> {
        let (scheme, params) = parse_challenge(challenge)
            .ok_or_else(|| pull_err(&self.image, "bad WWW-Authenticate"))?;
        let user_pass = self
            .creds
            .and_then(|c| Some((c.username.clone()?, c.password.clone().unwrap_or_default())));
        match scheme.as_str() {
            "basic" => {
                let (u, p) =
                    user_pass.ok_or_else(|| pull_err(&self.image, "registry wants credentials"))?;
                self.authorization = Some(basic(&u, &p));
                Ok(())
            }
            "bearer" => {
                let realm = params
                    .get("realm")
                    .ok_or_else(|| pull_err(&self.image, "bearer challenge lacks realm"))?;
                let mut url = reqwest::Url::parse(realm)
                    .map_err(|e| pull_err(&self.image, format!("realm: {e}")))?;
                {
                    let mut q = url.query_pairs_mut();
                    if let Some(s) = params.get("service") {
                        q.append_pair("service", s);
                    }
                    let scope = params
                        .get("scope")
                        .cloned()
                        .unwrap_or_else(|| format!("repository:{}:pull", self.repo));
                    q.append_pair("scope", &scope);
                }
                let mut req = self.http.get(url);
                if let Some((u, p)) = &user_pass {
                    req = req.header(reqwest::header::AUTHORIZATION, basic(u, p));
                } else if let Some(t) = self.creds.and_then(|c| c.identity_token.as_ref()) {
                    req = req.bearer_auth(t);
                }
                let resp = req
                    .send()
                    .await
                    .map_err(|e| pull_err(&self.image, format!("token: {e}")))?;
                if !resp.status().is_success() {
                    return Err(pull_err(
                        &self.image,
                        format!("token endpoint answered {}", resp.status()),
                    ));
                }
                #[derive(Deserialize)]
                struct Token {
                    token: Option<String>,
                    access_token: Option<String>,
                }
                let t: Token = resp
                    .json()
                    .await
                    .map_err(|e| pull_err(&self.image, format!("token: {e}")))?;
                let tok = t
                    .token
                    .or(t.access_token)
                    .ok_or_else(|| pull_err(&self.image, "token endpoint gave no token"))?;
                self.authorization = Some(format!("Bearer {tok}"));
                Ok(())
            }
            other => Err(pull_err(
                &self.image,
                format!("unsupported auth scheme {other}"),
            )),
        }
    }

    /// Fetch a manifest; returns (digest, media type, body), verified when `reference` is a digest.
    async fn manifest(&mut self, reference: &str) -> Result<(String, String, Vec<u8>)> {
        let url = format!("{}/v2/{}/manifests/{}", self.base, self.repo, reference);
        let accept = [
            manifest::OCI_INDEX,
            manifest::DOCKER_LIST,
            manifest::OCI_MANIFEST,
            manifest::DOCKER_MANIFEST,
        ]
        .join(", ");
        let resp = self.get(&url, Some(&accept)).await?;
        let status = resp.status();
        if status == reqwest::StatusCode::NOT_FOUND {
            return Err(RuntimeError::ImageNotFound {
                image: self.image.clone(),
                detail: format!("{} has no manifest {reference}", self.base),
            });
        }
        if !status.is_success() {
            return Err(pull_err(&self.image, format!("GET {url}: {status}")));
        }
        let media_type = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        let body = resp
            .bytes()
            .await
            .map_err(|e| pull_err(&self.image, format!("GET {url}: {e}")))?
            .to_vec();
        let digest = crate::digest::sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(pull_err(
                &self.image,
                format!("manifest digest mismatch: wanted {reference}, got {digest}"),
            ));
        }
        Ok((digest, media_type, body))
    }

    /// Download blob `digest` into the store (verified).
    async fn blob(
        &mut self,
        store: &ImageStore,
        digest: &str,
        progress: Option<&(dyn Fn(PullProgress) + Send + Sync)>,
        total: Option<u64>,
    ) -> Result<()> {
        if store.has_blob(digest) {
            return Ok(());
        }
        let url = format!("{}/v2/{}/blobs/{}", self.base, self.repo, digest);
        let mut resp = self.get(&url, None).await?;
        if !resp.status().is_success() {
            return Err(pull_err(
                &self.image,
                format!("GET {url}: {}", resp.status()),
            ));
        }
        let mut w = store.blob_writer()?;
        let mut downloaded = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| pull_err(&self.image, format!("GET {url}: {e}")))?
        {
            w.write_all(&chunk)?;
            downloaded += chunk.len() as u64;
            if let Some(p) = progress {
                p(PullProgress {
                    layer: digest.to_string(),
                    downloaded,
                    total,
                });
            }
        }
        w.commit(store, Some(digest)).map_err(|e| match e {
            StoreError::Io(e) => RuntimeError::Io(e),
            other => pull_err(&self.image, format!("blob {digest}: {other}")),
        })?;
        Ok(())
    }
}

impl Client {
    pub(crate) fn new(config: RegistriesConfig) -> Result<Self> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("navarch/", env!("CARGO_PKG_VERSION")))
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("http client: {e}"))))?;
        Ok(Client { http, config })
    }

    pub(crate) async fn pull(
        &self,
        store: &Arc<ImageStore>,
        r: &ImageReference,
        auth: &BTreeMap<String, RegistryAuth>,
        progress: Option<&(dyn Fn(PullProgress) + Send + Sync)>,
    ) -> Result<ImageRecord> {
        let mut last = None;
        for base in self.config.endpoints(r) {
            match self.pull_from(store, r, &base, auth, progress).await {
                Ok(rec) => return Ok(rec),
                Err(e) => {
                    tracing::debug!(image = %r, endpoint = %base, error = %e, "pull attempt failed");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| pull_err(&r.normalized(), "no endpoint")))
    }

    async fn pull_from(
        &self,
        store: &Arc<ImageStore>,
        r: &ImageReference,
        base: &str,
        auth: &BTreeMap<String, RegistryAuth>,
        progress: Option<&(dyn Fn(PullProgress) + Send + Sync)>,
    ) -> Result<ImageRecord> {
        let creds = find_auth(auth, r);
        let mut s = Session {
            http: &self.http,
            base: base.to_string(),
            repo: r.repository.clone(),
            creds,
            authorization: None,
            image: r.normalized(),
        };
        let (mut digest, media_type, mut body) = s.manifest(r.manifest_ref()).await?;
        if manifest::is_index(&media_type, &body) {
            let idx: manifest::Index = serde_json::from_slice(&body)
                .map_err(|e| pull_err(&s.image, format!("index: {e}")))?;
            let d = pick_platform(&idx).ok_or_else(|| {
                pull_err(
                    &s.image,
                    format!("no manifest for linux/{}", super::host_arch()),
                )
            })?;
            let (d2, _, b2) = s.manifest(&d).await?;
            digest = d2;
            body = b2;
        }
        let m: Manifest = serde_json::from_slice(&body)
            .map_err(|e| pull_err(&s.image, format!("manifest: {e}")))?;
        s.blob(store, &m.config.digest, None, Some(m.config.size))
            .await?;
        let config = store.read_blob(&m.config.digest)?;
        let (_, diff_ids) =
            super::store::parse_config(&config).map_err(|e| pull_err(&s.image, e))?;
        if diff_ids.len() != m.layers.len() {
            return Err(pull_err(
                &s.image,
                "layer count differs from the config's diff IDs",
            ));
        }
        for (l, diff_id) in m.layers.iter().zip(&diff_ids) {
            let unpacked = store
                .layer_dir(diff_id)
                .map(|d| d.exists())
                .unwrap_or(false);
            if !unpacked {
                s.blob(store, &l.digest, progress, Some(l.size)).await?;
            }
        }
        store
            .put_blob(&body, Some(&digest))
            .map_err(|e| pull_err(&s.image, e.to_string()))?;
        let references = vec![r.normalized()];
        let repo_digests = vec![format!("{}@{}", r.name(), digest)];
        let mut blobs = vec![digest.clone(), m.config.digest.clone()];
        blobs.extend(m.layers.iter().map(|l| l.digest.clone()));
        let layers: Vec<(String, u64)> = m
            .layers
            .iter()
            .map(|l| (l.digest.clone(), l.size))
            .collect();
        let store = store.clone();
        let image = s.image.clone();
        let config_digest = m.config.digest.clone();
        let refs = if r.digest.is_some() && r.tag.is_none() {
            Vec::new()
        } else {
            references
        };
        tokio::task::spawn_blocking(move || {
            finish_image(
                &store,
                &config_digest,
                &config,
                &layers,
                refs,
                repo_digests,
                blobs,
            )
            .map_err(|e| match e {
                RuntimeError::InvalidArchive(d) => pull_err(&image, d),
                other => other,
            })
        })
        .await
        .map_err(|e| RuntimeError::Io(std::io::Error::other(format!("blocking task: {e}"))))?
    }
}

fn find_auth<'a>(
    auth: &'a BTreeMap<String, RegistryAuth>,
    r: &ImageReference,
) -> Option<&'a RegistryAuth> {
    let strip = |k: &str| {
        let k = k
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        k.split('/').next().unwrap_or(k).to_string()
    };
    let want: Vec<&str> = if r.registry == crate::REFERENCE_DOCKER_HUB {
        vec!["docker.io", "index.docker.io", "registry-1.docker.io"]
    } else {
        vec![r.registry.as_str()]
    };
    auth.iter()
        .find(|(k, _)| want.contains(&strip(k).as_str()))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenge_parsing() {
        let (s, p) = parse_challenge(
            r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull,push""#,
        )
        .unwrap();
        assert_eq!(s, "bearer");
        assert_eq!(p["realm"], "https://auth.docker.io/token");
        assert_eq!(p["service"], "registry.docker.io");
        assert_eq!(p["scope"], "repository:library/busybox:pull,push");
        let (s, p) = parse_challenge(r#"Basic realm="Registry Realm""#).unwrap();
        assert_eq!(s, "basic");
        assert_eq!(p["realm"], "Registry Realm");
    }

    #[test]
    fn endpoints_and_schemes() {
        let mut c = RegistriesConfig::default();
        let hub = ImageReference::parse("busybox").unwrap();
        assert_eq!(c.endpoints(&hub), vec!["https://registry-1.docker.io"]);
        let local = ImageReference::parse("127.0.0.1:5000/x/y:1").unwrap();
        assert_eq!(c.endpoints(&local), vec!["http://127.0.0.1:5000"]);
        let lan = ImageReference::parse("reg.lan:5000/x").unwrap();
        assert_eq!(c.endpoints(&lan), vec!["https://reg.lan:5000"]);
        c.insecure.push("reg.lan:5000".into());
        c.mirrors
            .insert("docker.io".into(), vec!["http://127.0.0.1:9/".into()]);
        assert_eq!(c.endpoints(&lan), vec!["http://reg.lan:5000"]);
        assert_eq!(
            c.endpoints(&hub),
            vec!["http://127.0.0.1:9", "https://registry-1.docker.io"]
        );
        assert!(
            is_loopback("localhost:5000")
                && is_loopback("[::1]:5000")
                && !is_loopback("example.com")
        );
    }

    #[test]
    fn registries_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("registries.json");
        assert_eq!(
            RegistriesConfig::load(&p).unwrap(),
            RegistriesConfig::default()
        );
        std::fs::write(&p, r#"{"insecure":["a:1"]}"#).unwrap();
        assert_eq!(RegistriesConfig::load(&p).unwrap().insecure, vec!["a:1"]);
        std::fs::write(&p, "{").unwrap();
        assert!(RegistriesConfig::load(&p).is_err());
    }

    #[test]
    fn auth_lookup_and_basic() {
        let mut m = BTreeMap::new();
        m.insert(
            "https://index.docker.io/v1/".to_string(),
            RegistryAuth {
                username: Some("u".into()),
                password: Some("p".into()),
                identity_token: None,
            },
        );
        let hub = ImageReference::parse("busybox").unwrap();
        assert!(find_auth(&m, &hub).is_some());
        assert!(find_auth(&m, &ImageReference::parse("q.io/x").unwrap()).is_none());
        assert_eq!(
            basic("aladdin", "opensesame"),
            "Basic YWxhZGRpbjpvcGVuc2VzYW1l"
        );
        assert_eq!(base64_lite::encode(b"a"), "YQ==");
    }
}
