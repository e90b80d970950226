//! A container's environment: `env` (value, configMapKeyRef, secretKeyRef,
//! fieldRef, resourceFieldRef) and `envFrom`, with upstream's messages when
//! something referenced is missing.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};

use crate::expand::expand;

/// Why an environment (or a volume) cannot be built; shown as
/// `CreateContainerConfigError` with this message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A referenced ConfigMap does not exist.
    #[error("configmap {0:?} not found")]
    ConfigMapNotFound(String),
    /// A referenced Secret does not exist.
    #[error("secret {0:?} not found")]
    SecretNotFound(String),
    /// A key is missing from a ConfigMap.
    #[error("couldn't find key {key} in ConfigMap {namespace}/{name}")]
    ConfigMapKey {
        /// The key.
        key: String,
        /// Namespace of the ConfigMap.
        namespace: String,
        /// Name of the ConfigMap.
        name: String,
    },
    /// A key is missing from a Secret.
    #[error("couldn't find key {key} in Secret {namespace}/{name}")]
    SecretKey {
        /// The key.
        key: String,
        /// Namespace of the Secret.
        namespace: String,
        /// Name of the Secret.
        name: String,
    },
    /// A fieldRef or resourceFieldRef the agent does not support.
    #[error("unsupported field path {0:?}")]
    FieldPath(String),
    /// Looking the object up failed (API unreachable, ...).
    #[error("{0}")]
    Lookup(String),
}

/// Where ConfigMaps and Secrets come from (the API, or a test fixture).
#[async_trait::async_trait]
pub trait ObjectSource: Send + Sync {
    /// The ConfigMap `namespace/name`, `None` if it does not exist.
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String>;
    /// The Secret `namespace/name`, `None` if it does not exist.
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String>;
    /// A token for `namespace/service_account` (TokenRequest), for projected
    /// serviceAccountToken volumes.
    async fn service_account_token(
        &self,
        _namespace: &str,
        _service_account: &str,
        _audience: Option<&str>,
        _expiration_seconds: i64,
    ) -> Result<String, String> {
        Err("token requests are not supported".to_string())
    }
}

#[async_trait::async_trait]
impl ObjectSource for kube::Client {
    async fn config_map(&self, namespace: &str, name: &str) -> Result<Option<ConfigMap>, String> {
        kube::Api::<ConfigMap>::namespaced(self.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())
    }
    async fn secret(&self, namespace: &str, name: &str) -> Result<Option<Secret>, String> {
        kube::Api::<Secret>::namespaced(self.clone(), namespace)
            .get_opt(name)
            .await
            .map_err(|e| e.to_string())
    }
    async fn service_account_token(
        &self,
        namespace: &str,
        service_account: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        let api = kube::Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(
            self.clone(),
            namespace,
        );
        let req = TokenRequest {
            spec: TokenRequestSpec {
                audiences: audience.map(|a| vec![a.to_string()]).unwrap_or_default(),
                expiration_seconds: Some(expiration_seconds),
                ..Default::default()
            },
            ..Default::default()
        };
        let out: TokenRequest = api
            .create_subresource(
                "token",
                service_account,
                &kube::api::PostParams::default(),
                &req,
            )
            .await
            .map_err(|e| e.to_string())?;
        out.status
            .map(|s| s.token)
            .ok_or_else(|| "token request returned no status".to_string())
    }
}

/// Memoizes lookups during one sync (one GET per object).
pub struct CachedSource<'a> {
    inner: &'a dyn ObjectSource,
    cms: tokio::sync::Mutex<HashMap<String, Option<ConfigMap>>>,
    secrets: tokio::sync::Mutex<HashMap<String, Option<Secret>>>,
}

impl<'a> CachedSource<'a> {
    /// Wrap `inner`.
    pub fn new(inner: &'a dyn ObjectSource) -> Self {
        CachedSource {
            inner,
            cms: Default::default(),
            secrets: Default::default(),
        }
    }

    /// A ConfigMap (cached).
    pub async fn config_map(&self, ns: &str, name: &str) -> Result<Option<ConfigMap>, ConfigError> {
        let mut m = self.cms.lock().await;
        if let Some(v) = m.get(name) {
            return Ok(v.clone());
        }
        let v = self
            .inner
            .config_map(ns, name)
            .await
            .map_err(ConfigError::Lookup)?;
        m.insert(name.to_string(), v.clone());
        Ok(v)
    }

    /// A service account token (not cached).
    pub async fn token(
        &self,
        ns: &str,
        sa: &str,
        audience: Option<&str>,
        expiration_seconds: i64,
    ) -> Result<String, String> {
        self.inner
            .service_account_token(ns, sa, audience, expiration_seconds)
            .await
    }

    /// A Secret (cached).
    pub async fn secret(&self, ns: &str, name: &str) -> Result<Option<Secret>, ConfigError> {
        let mut m = self.secrets.lock().await;
        if let Some(v) = m.get(name) {
            return Ok(v.clone());
        }
        let v = self
            .inner
            .secret(ns, name)
            .await
            .map_err(ConfigError::Lookup)?;
        m.insert(name.to_string(), v.clone());
        Ok(v)
    }
}

/// The data of a ConfigMap as bytes (data and binaryData).
pub fn config_map_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in cm.data.iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    for (k, v) in cm.binary_data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    out
}

/// The data of a Secret as bytes (data and stringData).
pub fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (k, v) in s.data.iter().flatten() {
        out.insert(k.clone(), v.0.clone());
    }
    for (k, v) in s.string_data.iter().flatten() {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    out
}

/// Node allocatable values used when a resourceFieldRef's limit is unset.
#[derive(Clone, Copy, Debug, Default)]
pub struct NodeAllocatable {
    /// CPUs (cores).
    pub cpu_cores: u64,
    /// Bytes.
    pub memory: u64,
    /// Bytes.
    pub ephemeral_storage: u64,
}

/// Build the environment of `container` in `pod`; later definitions of a name
/// replace earlier ones (envFrom first, then env, like upstream).
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    source: &CachedSource<'_>,
    node: NodeAllocatable,
) -> Result<Vec<(String, String)>, ConfigError> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let mut vars: Vec<(String, String)> = Vec::new();
    let mut index: HashMap<String, usize> = HashMap::new();
    let mut set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(&i) = index.get(&k) {
            vars[i].1 = v;
        } else {
            index.insert(k.clone(), vars.len());
            vars.push((k, v));
        }
    };
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match source.config_map(ns, &r.name).await? {
                Some(cm) => {
                    for (k, v) in cm.data.iter().flatten() {
                        let name = format!("{prefix}{k}");
                        if is_env_name(&name) {
                            set(&mut vars, name, v.clone());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
            }
        }
        if let Some(r) = &from.secret_ref {
            match source.secret(ns, &r.name).await? {
                Some(s) => {
                    for (k, v) in secret_data(&s) {
                        let name = format!("{prefix}{k}");
                        if is_env_name(&name) {
                            set(&mut vars, name, String::from_utf8_lossy(&v).into_owned());
                        }
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(ConfigError::SecretNotFound(r.name.clone())),
            }
        }
    }
    for e in container.env.iter().flatten() {
        let value = if let Some(v) = &e.value {
            let snapshot: HashMap<&str, &str> =
                vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            Some(expand(v, &|n| snapshot.get(n).map(|s| s.to_string())))
        } else if let Some(src) = &e.value_from {
            if let Some(r) = &src.config_map_key_ref {
                let optional = r.optional == Some(true);
                match source.config_map(ns, &r.name).await? {
                    Some(cm) => match config_map_data(&cm).remove(&r.key) {
                        Some(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                        None if optional => None,
                        None => {
                            return Err(ConfigError::ConfigMapKey {
                                key: r.key.clone(),
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                            })
                        }
                    },
                    None if optional => None,
                    None => return Err(ConfigError::ConfigMapNotFound(r.name.clone())),
                }
            } else if let Some(r) = &src.secret_key_ref {
                let optional = r.optional == Some(true);
                match source.secret(ns, &r.name).await? {
                    Some(s) => match secret_data(&s).remove(&r.key) {
                        Some(v) => Some(String::from_utf8_lossy(&v).into_owned()),
                        None if optional => None,
                        None => {
                            return Err(ConfigError::SecretKey {
                                key: r.key.clone(),
                                namespace: ns.to_string(),
                                name: r.name.clone(),
                            })
                        }
                    },
                    None if optional => None,
                    None => return Err(ConfigError::SecretNotFound(r.name.clone())),
                }
            } else if let Some(f) = &src.field_ref {
                Some(field_value(pod, &f.field_path)?)
            } else if let Some(r) = &src.resource_field_ref {
                let c = match &r.container_name {
                    Some(n) if !n.is_empty() => pod_container(pod, n).unwrap_or(container),
                    _ => container,
                };
                Some(resource_value(
                    c,
                    &r.resource,
                    r.divisor.as_ref().map(|q| q.0.as_str()),
                    node,
                )?)
            } else {
                Some(String::new())
            }
        } else {
            Some(String::new())
        };
        if let Some(v) = value {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

fn pod_container<'p>(pod: &'p Pod, name: &str) -> Option<&'p Container> {
    let spec = pod.spec.as_ref()?;
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find(|c| c.name == name)
}

/// Upstream's C_IDENTIFIER-ish check for envFrom keys (printable, no `=`).
fn is_env_name(s: &str) -> bool {
    !s.is_empty()
        && !s.contains('=')
        && s.chars().all(|c| c.is_ascii_graphic())
        && !s.starts_with(|c: char| c.is_ascii_digit())
}

/// The value of a downward-API field path (`metadata.name`,
/// `metadata.labels['app']`, `status.podIP`, ...).
pub fn field_value(pod: &Pod, path: &str) -> Result<String, ConfigError> {
    let md = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let map_fmt = |m: Option<&BTreeMap<String, String>>| -> String {
        m.map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={v:?}"))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default()
    };
    let subscript = |prefix: &str| -> Option<String> {
        path.strip_prefix(prefix)?
            .strip_prefix("['")?
            .strip_suffix("']")
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => md.name.clone().unwrap_or_default(),
        "metadata.namespace" => md.namespace.clone().unwrap_or_default(),
        "metadata.uid" => md.uid.clone().unwrap_or_default(),
        "metadata.labels" => map_fmt(md.labels.as_ref()),
        "metadata.annotations" => map_fmt(md.annotations.as_ref()),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" => status.and_then(|s| s.pod_ip.clone()).unwrap_or_default(),
        "status.hostIP" => status.and_then(|s| s.host_ip.clone()).unwrap_or_default(),
        "status.podIPs" => status
            .and_then(|s| s.pod_ips.as_ref())
            .map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        "status.hostIPs" => status
            .and_then(|s| s.host_ips.as_ref())
            .map(|v| v.iter().map(|i| i.ip.clone()).collect::<Vec<_>>().join(","))
            .unwrap_or_default(),
        _ => {
            if let Some(k) = subscript("metadata.labels") {
                md.labels
                    .as_ref()
                    .and_then(|m| m.get(&k).cloned())
                    .unwrap_or_default()
            } else if let Some(k) = subscript("metadata.annotations") {
                md.annotations
                    .as_ref()
                    .and_then(|m| m.get(&k).cloned())
                    .unwrap_or_default()
            } else {
                return Err(ConfigError::FieldPath(path.to_string()));
            }
        }
    })
}

/// A quantity in nano-units (0 when absent or malformed).
fn nanos(q: Option<&str>) -> Option<i128> {
    q.and_then(|s| navarch_api::validation::parse_quantity(s).ok())
}

/// The value of a resourceFieldRef (`limits.cpu`, `requests.memory`, ...) divided
/// by `divisor` and rounded up, like upstream.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    node: NodeAllocatable,
) -> Result<String, ConfigError> {
    let (kind, name) = resource
        .split_once('.')
        .ok_or_else(|| ConfigError::FieldPath(resource.to_string()))?;
    let res = c.resources.as_ref();
    let get = |m: Option<
        &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>,
    >| { nanos(m.and_then(|m| m.get(name)).map(|q| q.0.as_str())) };
    let limit = get(res.and_then(|r| r.limits.as_ref()));
    let request = get(res.and_then(|r| r.requests.as_ref()));
    let node_value: i128 = match name {
        "cpu" => i128::from(node.cpu_cores) * 1_000_000_000,
        "memory" => i128::from(node.memory) * 1_000_000_000,
        "ephemeral-storage" => i128::from(node.ephemeral_storage) * 1_000_000_000,
        _ => return Err(ConfigError::FieldPath(resource.to_string())),
    };
    let value = match kind {
        "limits" => limit.unwrap_or(node_value),
        // an unset request defaults to the limit (0 for cpu means none)
        "requests" => request.or(limit).unwrap_or(0),
        _ => return Err(ConfigError::FieldPath(resource.to_string())),
    };
    let div = nanos(divisor).filter(|d| *d > 0).unwrap_or(1_000_000_000);
    let out = (value + div - 1) / div;
    Ok(out.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{
        ConfigMapEnvSource, ConfigMapKeySelector, EnvFromSource, EnvVar, EnvVarSource,
        ObjectFieldSelector, PodSpec, PodStatus, ResourceRequirements, SecretKeySelector,
    };
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::ByteString;

    #[derive(Default)]
    pub struct Fixture {
        cms: BTreeMap<String, ConfigMap>,
        secrets: BTreeMap<String, Secret>,
    }

    #[async_trait::async_trait]
    impl ObjectSource for Fixture {
        async fn config_map(&self, _ns: &str, name: &str) -> Result<Option<ConfigMap>, String> {
            Ok(self.cms.get(name).cloned())
        }
        async fn secret(&self, _ns: &str, name: &str) -> Result<Option<Secret>, String> {
            Ok(self.secrets.get(name).cloned())
        }
    }

    fn fixture() -> Fixture {
        let mut f = Fixture::default();
        f.cms.insert(
            "cm".into(),
            ConfigMap {
                data: Some(
                    [
                        ("k".to_string(), "v".to_string()),
                        ("x".to_string(), "1".to_string()),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        );
        f.secrets.insert(
            "s".into(),
            Secret {
                data: Some([("pw".to_string(), ByteString(b"hunter2".to_vec()))].into()),
                ..Default::default()
            },
        );
        f
    }

    fn pod() -> Pod {
        let mut p = Pod::default();
        p.metadata.name = Some("bb".into());
        p.metadata.namespace = Some("default".into());
        p.metadata.uid = Some("u1".into());
        p.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        p.spec = Some(PodSpec {
            node_name: Some("n1".into()),
            ..Default::default()
        });
        p.status = Some(PodStatus {
            host_ip: Some("10.0.0.1".into()),
            ..Default::default()
        });
        p
    }

    fn var(name: &str, value: &str) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        }
    }

    fn from(name: &str, src: EnvVarSource) -> EnvVar {
        EnvVar {
            name: name.into(),
            value: None,
            value_from: Some(src),
        }
    }

    #[tokio::test]
    async fn resolves_everything() {
        let f = fixture();
        let src = CachedSource::new(&f);
        let c = Container {
            name: "app".into(),
            env_from: Some(vec![EnvFromSource {
                prefix: Some("CM_".into()),
                config_map_ref: Some(ConfigMapEnvSource {
                    name: "cm".into(),
                    optional: None,
                }),
                secret_ref: None,
            }]),
            env: Some(vec![
                var("A", "a"),
                var("B", "$(A)-$(CM_k)-$(NOPE)-$$(A)"),
                from(
                    "K",
                    EnvVarSource {
                        config_map_key_ref: Some(ConfigMapKeySelector {
                            name: "cm".into(),
                            key: "k".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "PW",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "s".into(),
                            key: "pw".into(),
                            optional: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "OPT",
                    EnvVarSource {
                        secret_key_ref: Some(SecretKeySelector {
                            name: "missing".into(),
                            key: "pw".into(),
                            optional: Some(true),
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "NODE",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "spec.nodeName".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "APP",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "metadata.labels['app']".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
                from(
                    "HOST",
                    EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.hostIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    },
                ),
            ]),
            ..Default::default()
        };
        let env = container_env(&pod(), &c, &src, NodeAllocatable::default())
            .await
            .unwrap();
        let m: BTreeMap<_, _> = env.into_iter().collect();
        assert_eq!(m["CM_k"], "v");
        assert_eq!(m["CM_x"], "1");
        assert_eq!(m["B"], "a-v-$(NOPE)-$(A)");
        assert_eq!(m["K"], "v");
        assert_eq!(m["PW"], "hunter2");
        assert!(!m.contains_key("OPT"));
        assert_eq!(m["NODE"], "n1");
        assert_eq!(m["APP"], "web");
        assert_eq!(m["HOST"], "10.0.0.1");
    }

    #[tokio::test]
    async fn missing_key_has_upstream_message() {
        let f = fixture();
        let src = CachedSource::new(&f);
        let c = Container {
            name: "app".into(),
            env: Some(vec![from(
                "X",
                EnvVarSource {
                    config_map_key_ref: Some(ConfigMapKeySelector {
                        name: "cm".into(),
                        key: "X".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let e = container_env(&pod(), &c, &src, NodeAllocatable::default())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "couldn't find key X in ConfigMap default/cm");
        let c2 = Container {
            name: "app".into(),
            env: Some(vec![from(
                "X",
                EnvVarSource {
                    secret_key_ref: Some(SecretKeySelector {
                        name: "nope".into(),
                        key: "X".into(),
                        optional: None,
                    }),
                    ..Default::default()
                },
            )]),
            ..Default::default()
        };
        let e = container_env(&pod(), &c2, &src, NodeAllocatable::default())
            .await
            .unwrap_err();
        assert_eq!(e.to_string(), "secret \"nope\" not found");
    }

    #[test]
    fn resource_fields() {
        let c = Container {
            resources: Some(ResourceRequirements {
                limits: Some(
                    [
                        ("cpu".to_string(), Quantity("1500m".into())),
                        ("memory".to_string(), Quantity("64Mi".into())),
                    ]
                    .into(),
                ),
                ..Default::default()
            }),
            ..Default::default()
        };
        let node = NodeAllocatable {
            cpu_cores: 4,
            memory: 1 << 30,
            ephemeral_storage: 0,
        };
        assert_eq!(resource_value(&c, "limits.cpu", None, node).unwrap(), "2");
        assert_eq!(
            resource_value(&c, "limits.cpu", Some("1m"), node).unwrap(),
            "1500"
        );
        assert_eq!(
            resource_value(&c, "limits.memory", Some("1Mi"), node).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(&c, "requests.memory", None, node).unwrap(),
            (64u64 << 20).to_string()
        );
        let empty = Container::default();
        assert_eq!(
            resource_value(&empty, "limits.cpu", None, node).unwrap(),
            "4"
        );
        assert!(resource_value(&empty, "limits.gpu", None, node).is_err());
    }
}
