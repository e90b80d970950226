//! Request bodies and the bits of responses the scenarios look at.

use bytes::Bytes;
use serde_json::{json, Value};

use crate::error::Error;

/// Collection path of a namespaced core/v1 resource (`configmaps`, `pods`).
pub fn collection_path(namespace: &str, resource: &str) -> String {
    format!("/api/v1/namespaces/{namespace}/{resource}")
}

/// A ConfigMap named `name` whose JSON encoding is about `total_bytes` long
/// (never shorter than the skeleton itself).
pub fn configmap(name: &str, total_bytes: usize) -> Bytes {
    let skeleton = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "navarch-bench"}},
        "data": {"payload": ""},
    });
    let base = serde_json::to_vec(&skeleton).map(|v| v.len()).unwrap_or(0);
    let pad = total_bytes.saturating_sub(base);
    // Printable, JSON-safe filler that does not compress to nothing.
    let filler: String = (0..pad)
        .map(|i| char::from(b'a' + ((i * 7 + i / 26) % 26) as u8))
        .collect();
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": {"app": "navarch-bench"}},
        "data": {"payload": filler},
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A minimal valid Pod named `name`.
pub fn pod(name: &str) -> Bytes {
    let body = json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "navarch-bench"}},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/bench:1"}]},
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// A Namespace named `name`.
pub fn namespace(name: &str) -> Bytes {
    let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// `metadata.resourceVersion` of a list (or object) response.
pub fn resource_version(body: &[u8]) -> Result<String, Error> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| Error::Response(format!("not JSON: {e}")))?;
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| Error::Response("no metadata.resourceVersion".into()))
}

/// Finds the bench pods' ADDED events in watch-event lines. Built once per
/// watcher: with 1,000 watchers on the same two cores as the server, the load
/// generator's own scanning must stay cheap (it was 15 % of its CPU with a
/// byte-by-byte search and a needle allocated per line).
///
/// This is a byte scan, not a JSON parse. It relies on the server writing
/// `{"type":"ADDED",...` first (navarch and Kubernetes do) and on `"<prefix>`
/// occurring only in `metadata.name` of the bench objects.
pub struct AddedMatcher {
    name: memchr::memmem::Finder<'static>,
}

impl AddedMatcher {
    /// Matches pods named `<prefix><index>`.
    pub fn new(prefix: &str) -> AddedMatcher {
        let needle = format!("\"name\":\"{prefix}").into_bytes();
        AddedMatcher {
            name: memchr::memmem::Finder::new(&needle).into_owned(),
        }
    }

    /// The index of the bench pod an `ADDED` event line is about, if it is one.
    pub fn index(&self, line: &[u8]) -> Option<u64> {
        const ADDED: &[u8] = b"{\"type\":\"ADDED\"";
        if !line.starts_with(ADDED) {
            return None;
        }
        let at = self.name.find(line)?;
        let digits = &line[at + self.name.needle().len()..];
        let end = digits.iter().position(|b| !b.is_ascii_digit())?;
        if end == 0 || digits.get(end) != Some(&b'"') {
            return None;
        }
        std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configmap_has_requested_size_and_name() {
        let b = configmap("cm-17", 500);
        assert_eq!(b.len(), 500);
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["metadata"]["name"], "cm-17");
        assert_eq!(v["kind"], "ConfigMap");
        // Too small a target still gives a valid object.
        let small = configmap("x", 10);
        assert!(serde_json::from_slice::<Value>(&small).is_ok());
    }

    #[test]
    fn pod_is_valid_json_with_a_container() {
        let v: Value = serde_json::from_slice(&pod("w-1")).unwrap();
        assert_eq!(v["spec"]["containers"][0]["name"], "c");
        assert_eq!(v["metadata"]["name"], "w-1");
    }

    #[test]
    fn resource_version_is_read_from_lists() {
        let body = br#"{"kind":"PodList","metadata":{"resourceVersion":"42"},"items":[]}"#;
        assert_eq!(resource_version(body).unwrap(), "42");
        assert!(resource_version(b"{}").is_err());
        assert!(resource_version(b"nope").is_err());
    }

    #[test]
    fn added_matcher_finds_bench_objects_only() {
        let m = AddedMatcher::new("bw-");
        let ev = br#"{"type":"ADDED","object":{"kind":"Pod","metadata":{"name":"bw-123","namespace":"b"}}}"#;
        assert_eq!(m.index(ev), Some(123));
        let modified = br#"{"type":"MODIFIED","object":{"metadata":{"name":"bw-123"}}}"#;
        assert_eq!(m.index(modified), None);
        let other = br#"{"type":"ADDED","object":{"metadata":{"name":"web-1"}}}"#;
        assert_eq!(m.index(other), None);
        let suffix = br#"{"type":"ADDED","object":{"metadata":{"name":"bw-12x"}}}"#;
        assert_eq!(m.index(suffix), None);
        let empty = br#"{"type":"ADDED","object":{"metadata":{"name":"bw-"}}}"#;
        assert_eq!(m.index(empty), None);
    }
}
