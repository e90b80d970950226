//! What pods see of the cluster network: docker-link style service environment
//! variables and the cluster-first `/etc/resolv.conf`.

use k8s_openapi::api::core::v1::Service;

/// Environment variables for the services visible to a pod in `namespace`
/// (upstream's `enableServiceLinks`): every service of the namespace with a
/// cluster IP, plus `default/kubernetes` for every namespace. Headless and
/// ExternalName services get none. Sorted by service name, ports in spec order.
///
/// For `web` (10.43.0.5, port `http` 80/TCP): `WEB_SERVICE_HOST=10.43.0.5`,
/// `WEB_SERVICE_PORT=80`, `WEB_SERVICE_PORT_HTTP=80`, `WEB_PORT=tcp://10.43.0.5:80`,
/// `WEB_PORT_80_TCP=tcp://10.43.0.5:80`, `WEB_PORT_80_TCP_PROTO=tcp`,
/// `WEB_PORT_80_TCP_PORT=80`, `WEB_PORT_80_TCP_ADDR=10.43.0.5`.
pub fn service_env(services: &[Service], namespace: &str) -> Vec<(String, String)> {
    let mut visible: Vec<&Service> = services
        .iter()
        .filter(|s| {
            let ns = s.metadata.namespace.as_deref().unwrap_or("default");
            let name = s.metadata.name.as_deref().unwrap_or("");
            ns == namespace || (ns == "default" && name == "kubernetes")
        })
        .collect();
    visible.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    // A service of the pod's own namespace wins over default/kubernetes.
    visible.dedup_by(|a, b| a.metadata.name == b.metadata.name);
    let mut out = Vec::new();
    for svc in visible {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec.cluster_ip.as_deref() else {
            continue;
        };
        if ip.is_empty() || ip == "None" || spec.type_.as_deref() == Some("ExternalName") {
            continue;
        }
        let ports = spec.ports.as_deref().unwrap_or(&[]);
        let Some(first) = ports.first() else { continue };
        let prefix = env_name(svc.metadata.name.as_deref().unwrap_or(""));
        out.push((format!("{prefix}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{prefix}_SERVICE_PORT"), first.port.to_string()));
        for p in ports {
            if let Some(n) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!("{prefix}_SERVICE_PORT_{}", env_name(n)),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase()
        };
        out.push((
            format!("{prefix}_PORT"),
            format!("{}://{ip}:{}", proto(first), first.port),
        ));
        for p in ports {
            let pr = proto(p);
            let base = format!("{prefix}_PORT_{}_{}", p.port, pr.to_ascii_uppercase());
            out.push((base.clone(), format!("{pr}://{ip}:{}", p.port)));
            out.push((format!("{base}_PROTO"), pr));
            out.push((format!("{base}_PORT"), p.port.to_string()));
            out.push((format!("{base}_ADDR"), ip.to_string()));
        }
    }
    out
}

fn env_name(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// `/etc/resolv.conf` of a ClusterFirst pod in `namespace`:
/// `nameserver <dns_ip>`, the search path `<ns>.svc.<domain> svc.<domain> <domain>`
/// and `options ndots:5`.
pub fn resolv_conf(namespace: &str, dns_ip: &str, cluster_domain: &str) -> String {
    format!(
        "search {namespace}.svc.{cluster_domain} svc.{cluster_domain} {cluster_domain}\nnameserver {dns_ip}\noptions ndots:5\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ServicePort, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(ns: &str, name: &str, ip: &str, ports: &[(Option<&str>, i32, &str)]) -> Service {
        Service {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some(ns.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(
                    ports
                        .iter()
                        .map(|(n, p, proto)| ServicePort {
                            name: n.map(str::to_string),
                            port: *p,
                            protocol: Some(proto.to_string()),
                            ..Default::default()
                        })
                        .collect(),
                ),
                ..Default::default()
            }),
            status: None,
        }
    }

    #[test]
    fn docker_link_variables() {
        let services = vec![
            svc(
                "default",
                "web-front",
                "10.43.0.5",
                &[(Some("http"), 80, "TCP"), (Some("dns"), 53, "UDP")],
            ),
            svc("other", "hidden", "10.43.0.6", &[(None, 80, "TCP")]),
            svc("default", "headless", "None", &[(None, 80, "TCP")]),
            svc(
                "default",
                "kubernetes",
                "10.43.0.1",
                &[(Some("https"), 443, "TCP")],
            ),
        ];
        let env = service_env(&services, "default");
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("WEB_FRONT_SERVICE_HOST"), Some("10.43.0.5"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT"), Some("80"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT_HTTP"), Some("80"));
        assert_eq!(get("WEB_FRONT_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get("WEB_FRONT_PORT"), Some("tcp://10.43.0.5:80"));
        assert_eq!(get("WEB_FRONT_PORT_80_TCP"), Some("tcp://10.43.0.5:80"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("WEB_FRONT_PORT_53_UDP_ADDR"), Some("10.43.0.5"));
        assert_eq!(get("HIDDEN_SERVICE_HOST"), None);
        assert_eq!(get("HEADLESS_SERVICE_HOST"), None);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("10.43.0.1"));
        // kubernetes is visible from every namespace
        let env = service_env(&services, "other");
        assert!(env
            .iter()
            .any(|(k, _)| k == "KUBERNETES_SERVICE_PORT_HTTPS"));
        assert!(env.iter().any(|(k, _)| k == "HIDDEN_PORT_80_TCP_PORT"));
    }

    #[test]
    fn resolv() {
        assert_eq!(
            resolv_conf("team", "10.43.0.10", "cluster.local"),
            "search team.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.43.0.10\noptions ndots:5\n"
        );
    }
}
