//! Image references: parsing and Docker Hub normalisation
//! (`busybox` → `docker.io/library/busybox:latest`).

use crate::{Result, RuntimeError};

/// The registry name Docker Hub references normalise to.
pub const REFERENCE_DOCKER_HUB: &str = "docker.io";

/// A parsed, normalised image reference.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageReference {
    /// Registry host[:port], e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag (defaults to `latest` when there is no digest).
    pub tag: Option<String>,
    /// `sha256:...` when pinned by digest.
    pub digest: Option<String>,
}

impl ImageReference {
    /// Parse and normalise `s`.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = || RuntimeError::InvalidReference(s.to_string());
        if s.is_empty() || s.len() > 4096 || s.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid());
        }
        let (rest, digest) = match s.split_once('@') {
            Some((r, d)) => {
                if crate::digest::sha256_hex(d).is_none() {
                    return Err(invalid());
                }
                (r, Some(d.to_string()))
            }
            None => (s, None),
        };
        // A tag is after the last ':' that follows the last '/'.
        let last_slash = rest.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match rest[last_slash..].rfind(':') {
            Some(i) => {
                let t = &rest[last_slash + i + 1..];
                if t.is_empty()
                    || t.len() > 128
                    || !t
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
                {
                    return Err(invalid());
                }
                (&rest[..last_slash + i], Some(t.to_string()))
            }
            None => (rest, None),
        };
        if name.is_empty() {
            return Err(invalid());
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, remainder))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), remainder.to_string())
            }
            _ => (REFERENCE_DOCKER_HUB.to_string(), name.to_string()),
        };
        let registry = if registry == "index.docker.io" || registry == "registry-1.docker.io" {
            REFERENCE_DOCKER_HUB.to_string()
        } else {
            registry
        };
        let repository = if registry == REFERENCE_DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let component_ok = |c: &str| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.starts_with(|ch: char| ch.is_ascii_alphanumeric())
                && c.ends_with(|ch: char| ch.is_ascii_alphanumeric())
        };
        if !repository.split('/').all(component_ok) {
            return Err(invalid());
        }
        let tag = if tag.is_none() && digest.is_none() {
            Some("latest".to_string())
        } else {
            tag
        };
        Ok(ImageReference {
            registry,
            repository,
            tag,
            digest,
        })
    }

    /// `registry/repository`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// The string the reference is stored under: `name:tag` or `name@digest`
    /// (a reference with both keeps only the digest, as upstream does).
    pub fn normalized(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(d), _) => format!("{}@{}", self.name(), d),
            (None, Some(t)) => format!("{}:{}", self.name(), t),
            (None, None) => self.name(),
        }
    }

    /// What to ask the registry's manifest endpoint for: the digest, else the tag.
    pub fn manifest_ref(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or("latest")
    }

    /// The host serving the registry API (Docker Hub's is `registry-1.docker.io`).
    pub fn api_host(&self) -> &str {
        if self.registry == REFERENCE_DOCKER_HUB {
            "registry-1.docker.io"
        } else {
            &self.registry
        }
    }
}

impl std::fmt::Display for ImageReference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.normalized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_short_names() {
        let r = ImageReference::parse("busybox").unwrap();
        assert_eq!(r.normalized(), "docker.io/library/busybox:latest");
        assert_eq!(r.api_host(), "registry-1.docker.io");
        assert_eq!(
            ImageReference::parse("user/app:1").unwrap().normalized(),
            "docker.io/user/app:1"
        );
        assert_eq!(
            ImageReference::parse("index.docker.io/library/nginx:1.25")
                .unwrap()
                .normalized(),
            "docker.io/library/nginx:1.25"
        );
    }

    #[test]
    fn registries_with_ports_and_digests() {
        let d = format!("sha256:{}", "a".repeat(64));
        let r = ImageReference::parse(&format!("127.0.0.1:5000/x/y@{d}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "x/y");
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_ref(), d);
        let r = ImageReference::parse("localhost/foo:v1").unwrap();
        assert_eq!(
            (r.registry.as_str(), r.repository.as_str(), r.tag.as_deref()),
            ("localhost", "foo", Some("v1"))
        );
        let r = ImageReference::parse("navarch.test/busybox:1.35").unwrap();
        assert_eq!(r.normalized(), "navarch.test/busybox:1.35");
        let r = ImageReference::parse("localhost:5000/foo").unwrap();
        assert_eq!(r.normalized(), "localhost:5000/foo:latest");
    }

    #[test]
    fn invalid_references() {
        for bad in [
            "",
            "UPPER/case",
            "a b",
            "foo:",
            "foo@sha256:xyz",
            ":tag",
            "foo/:x",
            "-foo",
        ] {
            assert!(
                matches!(
                    ImageReference::parse(bad),
                    Err(RuntimeError::InvalidReference(_))
                ),
                "{bad:?} should be invalid"
            );
        }
    }
}
