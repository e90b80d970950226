//! The cluster's certificates: a CA, the API server's serving certificate and the
//! admin client certificate, generated on first start and kept in `<data-dir>/pki`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    #[error("io error on {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("certificate generation: {0}")]
    Rcgen(#[from] rcgen::Error),
    #[error("bad PEM in {0}")]
    Pem(PathBuf),
    #[error("tls configuration: {0}")]
    Tls(String),
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PkiError + '_ {
    move |source| PkiError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// PEM-encoded certificate and key.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
}

/// The cluster CA plus the server's and admin's certificates.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: CertPair,
    pub server: CertPair,
    pub admin: CertPair,
}

fn validity(params: &mut CertificateParams) {
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2054, 1, 1);
}

fn read_pair(dir: &Path, name: &str) -> Result<Option<CertPair>, PkiError> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    if !cert.exists() || !key.exists() {
        return Ok(None);
    }
    Ok(Some(CertPair {
        cert_pem: std::fs::read_to_string(&cert).map_err(io_err(&cert))?,
        key_pem: std::fs::read_to_string(&key).map_err(io_err(&key))?,
    }))
}

fn write_pair(dir: &Path, name: &str, pair: &CertPair) -> Result<(), PkiError> {
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, &pair.cert_pem).map_err(io_err(&cert))?;
    write_private(&key, pair.key_pem.as_bytes())
}

/// Write a file readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))
}

/// Addresses of this host (IPv4 from the kernel's local routing table, plus loopback).
pub fn host_addresses() -> Vec<String> {
    let mut out = vec!["127.0.0.1".to_string(), "::1".to_string()];
    if let Ok(trie) = std::fs::read_to_string("/proc/net/fib_trie") {
        let lines: Vec<&str> = trie.lines().collect();
        for w in lines.windows(2) {
            if w[1].contains("/32 host LOCAL") {
                if let Some(ip) = w[0].trim().strip_prefix("|-- ") {
                    let ip = ip.trim().to_string();
                    if !out.contains(&ip) {
                        out.push(ip);
                    }
                }
            }
        }
    }
    out
}

impl Pki {
    /// Load the PKI from `dir`, creating whatever is missing.
    pub fn load_or_create(dir: &Path, extra_sans: &[String]) -> Result<Pki, PkiError> {
        std::fs::create_dir_all(dir).map_err(io_err(dir))?;
        let ca = match read_pair(dir, "ca")? {
            Some(p) => p,
            None => {
                let key = KeyPair::generate()?;
                let mut params = CertificateParams::new(Vec::<String>::new())?;
                validity(&mut params);
                let mut dn = DistinguishedName::new();
                dn.push(DnType::CommonName, "navarch-ca");
                params.distinguished_name = dn;
                params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
                params.key_usages = vec![
                    KeyUsagePurpose::KeyCertSign,
                    KeyUsagePurpose::CrlSign,
                    KeyUsagePurpose::DigitalSignature,
                ];
                let cert = params.self_signed(&key)?;
                let pair = CertPair {
                    cert_pem: cert.pem(),
                    key_pem: key.serialize_pem(),
                };
                write_pair(dir, "ca", &pair)?;
                pair
            }
        };
        let server = match read_pair(dir, "server")? {
            Some(p) => p,
            None => {
                let mut sans = host_addresses();
                for s in [
                    "localhost",
                    "kubernetes",
                    "kubernetes.default",
                    "kubernetes.default.svc",
                    "kubernetes.default.svc.cluster.local",
                    "10.43.0.1",
                ] {
                    sans.push(s.to_string());
                }
                if let Ok(h) = std::fs::read_to_string("/etc/hostname") {
                    let h = h.trim();
                    if !h.is_empty() {
                        sans.push(h.to_string());
                    }
                }
                sans.extend(extra_sans.iter().cloned());
                sans.dedup();
                let pair = issue(&ca, "navarch-apiserver", &[], sans, true)?;
                write_pair(dir, "server", &pair)?;
                pair
            }
        };
        let admin = match read_pair(dir, "admin")? {
            Some(p) => p,
            None => {
                let pair = issue(&ca, "admin", &["system:masters"], vec![], false)?;
                write_pair(dir, "admin", &pair)?;
                pair
            }
        };
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca,
            server,
            admin,
        })
    }

    /// Issue a serving certificate (e.g. for a node agent's endpoint) for `sans`.
    pub fn serving_cert(&self, cn: &str, sans: Vec<String>) -> Result<CertPair, PkiError> {
        issue(&self.ca, cn, &[], sans, true)
    }

    /// The API server's client certificate towards node agents, created once.
    pub fn node_client(&self) -> Result<CertPair, PkiError> {
        if let Some(p) = read_pair(&self.dir, "apiserver-node-client")? {
            return Ok(p);
        }
        let pair = issue(
            &self.ca,
            "system:apiserver",
            &["system:masters"],
            vec![],
            false,
        )?;
        write_pair(&self.dir, "apiserver-node-client", &pair)?;
        Ok(pair)
    }

    /// rustls client configuration trusting only the cluster CA and presenting `pair`.
    pub fn client_config(&self, pair: &CertPair) -> Result<Arc<rustls::ClientConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&self.ca.cert_pem, &self.dir.join("ca.crt"))? {
            roots.add(c).map_err(|e| PkiError::Tls(e.to_string()))?;
        }
        let certs = pem_certs(&pair.cert_pem, &self.dir)?;
        let key = pem_key(&pair.key_pem, &self.dir)?;
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(certs, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Issue a client certificate for `user` in `groups`, signed by the cluster CA.
    pub fn client_cert(&self, user: &str, groups: &[&str]) -> Result<CertPair, PkiError> {
        issue(&self.ca, user, groups, vec![], false)
    }

    /// rustls server configuration: our certificate, client certificates verified
    /// against our CA but optional (bearer tokens are the other way in), ALPN h2 and
    /// http/1.1.
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, PkiError> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for c in pem_certs(&self.ca.cert_pem, &self.dir.join("ca.crt"))? {
            roots.add(c).map_err(|e| PkiError::Tls(e.to_string()))?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .allow_unauthenticated()
        .build()
        .map_err(|e| PkiError::Tls(e.to_string()))?;
        let certs = pem_certs(&self.server.cert_pem, &self.dir.join("server.crt"))?;
        let key = pem_key(&self.server.key_pem, &self.dir.join("server.key"))?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| PkiError::Tls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs, key)
            .map_err(|e| PkiError::Tls(e.to_string()))?;
        cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(cfg))
    }

    /// A kubeconfig for `pair` against `server` (e.g. `https://127.0.0.1:6443`).
    pub fn kubeconfig(&self, server: &str, user: &str, pair: &CertPair) -> String {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s.as_bytes());
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: navarch\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: navarch\n  context:\n    cluster: navarch\n    user: {user}\n    namespace: default\ncurrent-context: navarch\npreferences: {{}}\n",
            ca = b64(&self.ca.cert_pem),
            cert = b64(&pair.cert_pem),
            key = b64(&pair.key_pem),
        )
    }
}

fn issue(
    ca: &CertPair,
    cn: &str,
    orgs: &[&str],
    sans: Vec<String>,
    server: bool,
) -> Result<CertPair, PkiError> {
    let ca_key = KeyPair::from_pem(&ca.key_pem)?;
    let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key)?;
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(sans)?;
    validity(&mut params);
    let mut dn = DistinguishedName::new();
    for o in orgs {
        dn.push(DnType::OrganizationName, *o);
    }
    dn.push(DnType::CommonName, cn);
    params.distinguished_name = dn;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![if server {
        ExtendedKeyUsagePurpose::ServerAuth
    } else {
        ExtendedKeyUsagePurpose::ClientAuth
    }];
    params.use_authority_key_identifier_extension = true;
    let cert = params.signed_by(&key, &issuer)?;
    Ok(CertPair {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}

fn pem_certs(pem: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PkiError::Pem(path.to_path_buf()))
}

fn pem_key(pem: &str, path: &Path) -> Result<PrivateKeyDer<'static>, PkiError> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .map_err(|_| PkiError::Pem(path.to_path_buf()))?
        .ok_or_else(|| PkiError::Pem(path.to_path_buf()))
}

/// The user a client certificate names: CN is the user, each O a group.
pub fn identity_from_cert(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let user = subject
        .iter_common_name()
        .next()?
        .as_str()
        .ok()?
        .to_string();
    let groups = subject
        .iter_organization()
        .filter_map(|o| o.as_str().ok().map(str::to_string))
        .collect();
    Some((user, groups))
}
