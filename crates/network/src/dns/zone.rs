//! The cluster zone: what the DNS server knows about Services and their
//! endpoints, and how a question about `cluster.local` is answered.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;

use super::wire::{RData, Record, Response, TYPE_A, TYPE_ANY, TYPE_SRV};
use super::wire::{RCODE_NOERROR, RCODE_NXDOMAIN};

/// TTL of cluster records (as CoreDNS' kubernetes plugin).
pub const TTL: u32 = 5;

/// A named service port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortRecord {
    /// Port name (SRV records exist only for named ports).
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// Service port (or the endpoint port for headless services).
    pub port: u16,
}

/// An endpoint of a headless service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointRecord {
    /// Its address.
    pub ip: Ipv4Addr,
    /// `spec.hostname` of the pod (when its subdomain is the service).
    pub hostname: Option<String>,
}

/// One service as DNS sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServiceRecord {
    /// Cluster IPs; empty for headless services.
    pub cluster_ips: Vec<Ipv4Addr>,
    /// Target of an ExternalName service.
    pub external_name: Option<String>,
    /// Named ports.
    pub ports: Vec<PortRecord>,
    /// Ready endpoints (used for headless services).
    pub endpoints: Vec<EndpointRecord>,
}

impl ServiceRecord {
    /// From a Service and its EndpointSlices.
    pub fn from_objects(svc: &Service, slices: &[&EndpointSlice]) -> Self {
        let spec = svc.spec.clone().unwrap_or_default();
        let external_name = (spec.type_.as_deref() == Some("ExternalName"))
            .then(|| spec.external_name.clone())
            .flatten();
        let cluster_ips: Vec<Ipv4Addr> = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter())
            .filter_map(|s| s.parse().ok())
            .fold(Vec::new(), |mut v, ip| {
                if !v.contains(&ip) {
                    v.push(ip);
                }
                v
            });
        let headless = cluster_ips.is_empty();
        let mut ports = Vec::new();
        for p in spec.ports.iter().flatten() {
            let Some(name) = p.name.clone().filter(|n| !n.is_empty()) else {
                continue;
            };
            let protocol = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
            let mut port = u16::try_from(p.port).unwrap_or(0);
            if headless {
                // Headless SRV records carry the endpoint port.
                if let Some(ep) = slices
                    .iter()
                    .flat_map(|s| s.ports.iter().flatten())
                    .find(|sp| sp.name.as_deref() == Some(name.as_str()))
                    .and_then(|sp| sp.port)
                {
                    port = u16::try_from(ep).unwrap_or(port);
                }
            }
            ports.push(PortRecord {
                name: name.to_ascii_lowercase(),
                protocol,
                port,
            });
        }
        let mut endpoints = Vec::new();
        for s in slices.iter().filter(|s| s.address_type == "IPv4") {
            for ep in &s.endpoints {
                if !ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true) {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse() {
                        endpoints.push(EndpointRecord {
                            ip,
                            hostname: ep.hostname.clone().map(|h| h.to_ascii_lowercase()),
                        });
                    }
                }
            }
        }
        endpoints.sort_by_key(|e| e.ip);
        endpoints.dedup_by_key(|e| e.ip);
        Self {
            cluster_ips,
            external_name,
            ports,
            endpoints,
        }
    }
}

/// What to do with a question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    /// Not in the cluster domain: ask the upstream resolvers.
    Forward,
    /// An authoritative answer.
    Answer(Response),
}

/// Services by namespace and name, under a cluster domain.
#[derive(Clone, Debug)]
pub struct Zone {
    domain: String,
    services: HashMap<String, HashMap<String, ServiceRecord>>,
}

impl Zone {
    /// An empty zone for `domain` (e.g. `cluster.local`).
    pub fn new(domain: &str) -> Self {
        Self {
            domain: domain.trim_matches('.').to_ascii_lowercase(),
            services: HashMap::new(),
        }
    }

    /// The cluster domain.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// Insert or replace a service.
    pub fn upsert(&mut self, namespace: &str, name: &str, rec: ServiceRecord) {
        self.services
            .entry(namespace.to_ascii_lowercase())
            .or_default()
            .insert(name.to_ascii_lowercase(), rec);
    }

    /// Remove a service.
    pub fn remove(&mut self, namespace: &str, name: &str) {
        let ns = namespace.to_ascii_lowercase();
        if let Some(m) = self.services.get_mut(&ns) {
            m.remove(&name.to_ascii_lowercase());
            if m.is_empty() {
                self.services.remove(&ns);
            }
        }
    }

    /// Replace everything with the given services (`(ns, name, record)`).
    pub fn replace_all(&mut self, all: impl IntoIterator<Item = (String, String, ServiceRecord)>) {
        self.services.clear();
        for (ns, name, rec) in all {
            self.upsert(&ns, &name, rec);
        }
    }

    fn soa(&self) -> Record {
        Record {
            name: Some(self.domain.clone()),
            ttl: TTL,
            data: RData::Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: 1,
                minimum: TTL,
            },
        }
    }

    fn negative(&self, rcode: u8) -> Lookup {
        Lookup::Answer(Response {
            rcode,
            authoritative: true,
            authority: vec![self.soa()],
            ..Default::default()
        })
    }

    fn records(&self, answers: Vec<Record>, additional: Vec<Record>) -> Lookup {
        if answers.is_empty() {
            return self.negative(RCODE_NOERROR);
        }
        Lookup::Answer(Response {
            rcode: RCODE_NOERROR,
            authoritative: true,
            answers,
            additional,
            ..Default::default()
        })
    }

    /// Answer `name` (lower case, no trailing dot) of type `qtype`.
    pub fn lookup(&self, name: &str, qtype: u16) -> Lookup {
        let rest = if name == self.domain {
            ""
        } else if let Some(r) = name
            .strip_suffix(self.domain.as_str())
            .and_then(|r| r.strip_suffix('.'))
        {
            r
        } else {
            return Lookup::Forward;
        };
        let labels: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.rsplit('.').collect()
        };
        let a = |ip: Ipv4Addr| Record {
            name: None,
            ttl: TTL,
            data: RData::A(ip),
        };
        let wants_a = qtype == TYPE_A || qtype == TYPE_ANY;
        match labels.as_slice() {
            [] | ["svc"] | ["pod"] => self.negative(RCODE_NOERROR),
            ["svc", ns] | ["pod", ns] => {
                if self.services.contains_key(*ns) || labels[0] == "pod" {
                    self.negative(RCODE_NOERROR)
                } else {
                    self.negative(RCODE_NXDOMAIN)
                }
            }
            ["pod", _ns, ip] => match ip.replace('-', ".").parse::<Ipv4Addr>() {
                Ok(addr) if wants_a => self.records(vec![a(addr)], Vec::new()),
                Ok(_) => self.negative(RCODE_NOERROR),
                Err(_) => self.negative(RCODE_NXDOMAIN),
            },
            ["svc", ns, svc] => {
                let Some(rec) = self.services.get(*ns).and_then(|m| m.get(*svc)) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                if let Some(target) = &rec.external_name {
                    return self.records(
                        vec![Record {
                            name: None,
                            ttl: TTL,
                            data: RData::Cname(target.clone()),
                        }],
                        Vec::new(),
                    );
                }
                match qtype {
                    q if q == TYPE_A || q == TYPE_ANY => {
                        let ips: Vec<Ipv4Addr> = if rec.cluster_ips.is_empty() {
                            rec.endpoints.iter().map(|e| e.ip).collect()
                        } else {
                            rec.cluster_ips.clone()
                        };
                        self.records(ips.into_iter().map(a).collect(), Vec::new())
                    }
                    TYPE_SRV => {
                        let (ans, add) = self.srv(ns, svc, rec, None);
                        self.records(ans, add)
                    }
                    _ => self.negative(RCODE_NOERROR),
                }
            }
            ["svc", ns, svc, fourth] => {
                let Some(rec) = self.services.get(*ns).and_then(|m| m.get(*svc)) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                if fourth.starts_with('_') {
                    // `_tcp.<svc>...`: an empty non-terminal when such ports exist.
                    let proto = fourth.trim_start_matches('_');
                    return if rec.ports.iter().any(|p| p.protocol == proto) {
                        self.negative(RCODE_NOERROR)
                    } else {
                        self.negative(RCODE_NXDOMAIN)
                    };
                }
                // `<hostname>.<svc>...` or `<a-b-c-d>.<svc>...` of a headless endpoint
                let ep = rec.endpoints.iter().find(|e| {
                    e.hostname.as_deref() == Some(*fourth)
                        || e.ip.to_string().replace('.', "-") == *fourth
                });
                match ep {
                    Some(e) if wants_a => self.records(vec![a(e.ip)], Vec::new()),
                    Some(_) => self.negative(RCODE_NOERROR),
                    None => self.negative(RCODE_NXDOMAIN),
                }
            }
            ["svc", ns, svc, proto, port] if proto.starts_with('_') && port.starts_with('_') => {
                let Some(rec) = self.services.get(*ns).and_then(|m| m.get(*svc)) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                let proto = proto.trim_start_matches('_');
                let pname = port.trim_start_matches('_');
                let Some(p) = rec
                    .ports
                    .iter()
                    .find(|p| p.name == pname && p.protocol == proto)
                else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                if qtype == TYPE_SRV || qtype == TYPE_ANY {
                    let (ans, add) = self.srv(ns, svc, rec, Some(p));
                    self.records(ans, add)
                } else {
                    self.negative(RCODE_NOERROR)
                }
            }
            _ => self.negative(RCODE_NXDOMAIN),
        }
    }

    /// SRV answers (and A additionals) for a service, for one port or all.
    fn srv(
        &self,
        ns: &str,
        svc: &str,
        rec: &ServiceRecord,
        only: Option<&PortRecord>,
    ) -> (Vec<Record>, Vec<Record>) {
        let base = format!("{svc}.{ns}.svc.{}", self.domain);
        let ports: Vec<&PortRecord> = match only {
            Some(p) => vec![p],
            None => rec.ports.iter().collect(),
        };
        let mut ans = Vec::new();
        let mut add = Vec::new();
        for p in ports {
            if rec.cluster_ips.is_empty() {
                for e in &rec.endpoints {
                    let host = e
                        .hostname
                        .clone()
                        .unwrap_or_else(|| e.ip.to_string().replace('.', "-"));
                    let target = format!("{host}.{base}");
                    ans.push(Record {
                        name: None,
                        ttl: TTL,
                        data: RData::Srv {
                            priority: 0,
                            weight: 100,
                            port: p.port,
                            target: target.clone(),
                        },
                    });
                    add.push(Record {
                        name: Some(target),
                        ttl: TTL,
                        data: RData::A(e.ip),
                    });
                }
            } else {
                ans.push(Record {
                    name: None,
                    ttl: TTL,
                    data: RData::Srv {
                        priority: 0,
                        weight: 100,
                        port: p.port,
                        target: base.clone(),
                    },
                });
                for ip in &rec.cluster_ips {
                    let r = Record {
                        name: Some(base.clone()),
                        ttl: TTL,
                        data: RData::A(*ip),
                    };
                    if !add.contains(&r) {
                        add.push(r);
                    }
                }
            }
        }
        (ans, add)
    }
}

/// `(namespace, name)` of a service object.
pub fn service_id(svc: &Service) -> (String, String) {
    (svc.namespace().unwrap_or_default(), svc.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::wire::{TYPE_AAAA, TYPE_SOA};

    fn zone() -> Zone {
        let mut z = Zone::new("cluster.local");
        z.upsert(
            "default",
            "web",
            ServiceRecord {
                cluster_ips: vec!["10.43.0.5".parse().unwrap()],
                ports: vec![PortRecord {
                    name: "http".into(),
                    protocol: "tcp".into(),
                    port: 80,
                }],
                ..Default::default()
            },
        );
        z.upsert(
            "default",
            "db",
            ServiceRecord {
                ports: vec![PortRecord {
                    name: "pg".into(),
                    protocol: "tcp".into(),
                    port: 5432,
                }],
                endpoints: vec![
                    EndpointRecord {
                        ip: "10.42.0.7".parse().unwrap(),
                        hostname: Some("db-0".into()),
                    },
                    EndpointRecord {
                        ip: "10.42.1.8".parse().unwrap(),
                        hostname: None,
                    },
                ],
                ..Default::default()
            },
        );
        z.upsert(
            "default",
            "ext",
            ServiceRecord {
                external_name: Some("example.com".into()),
                ..Default::default()
            },
        );
        z
    }

    fn answer(l: Lookup) -> Response {
        match l {
            Lookup::Answer(r) => r,
            Lookup::Forward => panic!("forwarded"),
        }
    }

    #[test]
    fn service_a_and_headless() {
        let z = zone();
        let r = answer(z.lookup("web.default.svc.cluster.local", TYPE_A));
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A("10.43.0.5".parse().unwrap()));
        let r = answer(z.lookup("db.default.svc.cluster.local", TYPE_A));
        assert_eq!(r.answers.len(), 2);
        let r = answer(z.lookup("db-0.db.default.svc.cluster.local", TYPE_A));
        assert_eq!(r.answers[0].data, RData::A("10.42.0.7".parse().unwrap()));
        let r = answer(z.lookup("10-42-1-8.db.default.svc.cluster.local", TYPE_A));
        assert_eq!(r.answers.len(), 1);
        // AAAA of an existing name: NODATA, not NXDOMAIN
        let r = answer(z.lookup("web.default.svc.cluster.local", TYPE_AAAA));
        assert_eq!(r.rcode, RCODE_NOERROR);
        assert!(r.answers.is_empty());
        assert_eq!(r.authority.len(), 1);
    }

    #[test]
    fn srv_records() {
        let z = zone();
        let r = answer(z.lookup("_http._tcp.web.default.svc.cluster.local", TYPE_SRV));
        assert_eq!(
            r.answers[0].data,
            RData::Srv {
                priority: 0,
                weight: 100,
                port: 80,
                target: "web.default.svc.cluster.local".into()
            }
        );
        assert_eq!(r.additional.len(), 1);
        let r = answer(z.lookup("_pg._tcp.db.default.svc.cluster.local", TYPE_SRV));
        assert_eq!(r.answers.len(), 2);
        let r = answer(z.lookup("_nope._tcp.web.default.svc.cluster.local", TYPE_SRV));
        assert_eq!(r.rcode, RCODE_NXDOMAIN);
    }

    #[test]
    fn nxdomain_pods_cname_and_forward() {
        let z = zone();
        assert_eq!(
            answer(z.lookup("nope.default.svc.cluster.local", TYPE_A)).rcode,
            RCODE_NXDOMAIN
        );
        assert_eq!(
            answer(z.lookup("web.nope.svc.cluster.local", TYPE_A)).rcode,
            RCODE_NXDOMAIN
        );
        assert_eq!(
            answer(z.lookup("default.svc.cluster.local", TYPE_A)).rcode,
            RCODE_NOERROR
        );
        assert_eq!(
            answer(z.lookup("cluster.local", TYPE_SOA)).rcode,
            RCODE_NOERROR
        );
        let r = answer(z.lookup("10-42-0-9.default.pod.cluster.local", TYPE_A));
        assert_eq!(r.answers[0].data, RData::A("10.42.0.9".parse().unwrap()));
        let r = answer(z.lookup("ext.default.svc.cluster.local", TYPE_A));
        assert_eq!(r.answers[0].data, RData::Cname("example.com".into()));
        assert_eq!(z.lookup("example.com", TYPE_A), Lookup::Forward);
        assert_eq!(z.lookup("notcluster.local", TYPE_A), Lookup::Forward);
    }
}
