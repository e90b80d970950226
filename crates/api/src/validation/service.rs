//! Service and Endpoints validation (upstream `ValidateService`,
//! `ValidateServiceUpdate`, `ValidateEndpoints`).

use std::collections::HashSet;
use std::net::IpAddr;

use serde_json::{json, Value};

use super::meta::validate_labels;
use super::names;
use super::pod::{validate_port_num_or_name, validate_protocol};
use super::util::{arr_at, has, int_at, obj_at, str_at, strings_at, Path};
use super::FieldError;

const SERVICE_TYPES: &[&str] = &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
const SESSION_AFFINITIES: &[&str] = &["ClientIP", "None"];
const IP_FAMILY_POLICIES: &[&str] = &["PreferDualStack", "RequireDualStack", "SingleStack"];
const TRAFFIC_POLICIES: &[&str] = &["Cluster", "Local"];
/// The node port range navarch allocates from (upstream's default).
pub(crate) const NODE_PORT_RANGE: std::ops::RangeInclusive<i64> = 30000..=32767;
const KUBELET_PORT: i64 = 10250;
const INVALID_IP: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

fn is_headless(spec: &Value) -> bool {
    str_at(spec, &["clusterIP"]) == "None"
}

/// A Service.
pub(crate) fn validate_service(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let sp = Path::new("spec");
    let spec = obj.get("spec").unwrap_or(&Value::Null);
    let ty = str_at(spec, &["type"]);
    let headless = is_headless(spec);
    let ports = arr_at(spec, &["ports"]);
    let cluster_ips = strings_at(spec, &["clusterIPs"]);

    if ports.is_empty() && !headless && ty != "ExternalName" {
        errs.push(FieldError::required(sp.child("ports"), ""));
    }
    match ty {
        "LoadBalancer" | "NodePort" => {
            if ty == "LoadBalancer" {
                for (i, p) in ports.iter().enumerate() {
                    if int_at(p, &["port"]) == Some(KUBELET_PORT) {
                        errs.push(FieldError::invalid(
                            sp.child("ports").index(i),
                            KUBELET_PORT,
                            format!("may not expose port {KUBELET_PORT} externally since it is used by kubelet"),
                        ));
                    }
                }
            }
            if headless {
                errs.push(FieldError::invalid(
                    sp.child("clusterIPs").index(0),
                    "None",
                    format!("may not be set to 'None' for {ty} services"),
                ));
            }
        }
        "ExternalName" => {
            if !cluster_ips.is_empty() || !str_at(spec, &["clusterIP"]).is_empty() {
                errs.push(FieldError::forbidden(
                    sp.child("clusterIPs"),
                    "may not be set for ExternalName services",
                ));
            }
            if !arr_at(spec, &["ipFamilies"]).is_empty() {
                errs.push(FieldError::forbidden(
                    sp.child("ipFamilies"),
                    "may not be set for ExternalName services",
                ));
            }
            if has(spec, &["ipFamilyPolicy"]) {
                errs.push(FieldError::forbidden(
                    sp.child("ipFamilyPolicy"),
                    "may not be set for ExternalName services",
                ));
            }
            let cname = str_at(spec, &["externalName"]);
            let cname = cname.strip_suffix('.').unwrap_or(cname);
            if cname.is_empty() {
                errs.push(FieldError::required(sp.child("externalName"), ""));
            } else {
                for msg in names::dns1123_subdomain_errors(cname) {
                    errs.push(FieldError::invalid(sp.child("externalName"), cname, msg));
                }
            }
        }
        _ => {}
    }

    let mut port_names = HashSet::new();
    let require_name = ports.len() > 1;
    for (i, p) in ports.iter().enumerate() {
        let pp = sp.child("ports").index(i);
        let name = str_at(p, &["name"]);
        if require_name && name.is_empty() {
            errs.push(FieldError::required(pp.child("name"), ""));
        } else if !name.is_empty() {
            for msg in names::dns1123_label_errors(name) {
                errs.push(FieldError::invalid(pp.child("name"), name, msg));
            }
            if !port_names.insert(name) {
                errs.push(FieldError::duplicate(pp.child("name"), name));
            }
        }
        let port = int_at(p, &["port"]).unwrap_or(0);
        for msg in names::port_num_errors(port) {
            errs.push(FieldError::invalid(pp.child("port"), port, msg));
        }
        errs.extend(validate_protocol(p, &pp));
        errs.extend(validate_port_num_or_name(
            p.get("targetPort"),
            &pp.child("targetPort"),
        ));
        let app = str_at(p, &["appProtocol"]);
        if has(p, &["appProtocol"]) {
            for msg in names::qualified_name_errors(app) {
                errs.push(FieldError::invalid(pp.child("appProtocol"), app, msg));
            }
        }
        if let Some(np) = int_at(p, &["nodePort"]).filter(|n| *n != 0) {
            if ty == "ClusterIP" {
                errs.push(FieldError::forbidden(
                    pp.child("nodePort"),
                    "may not be used when `type` is 'ClusterIP'",
                ));
            } else if !NODE_PORT_RANGE.contains(&np) {
                errs.push(FieldError::invalid(
                    pp.child("nodePort"),
                    np,
                    format!(
                        "provided port is not in the valid range. The range of valid ports is {}-{}",
                        NODE_PORT_RANGE.start(),
                        NODE_PORT_RANGE.end()
                    ),
                ));
            }
        }
    }

    errs.extend(validate_labels(
        obj_at(spec, &["selector"]),
        &sp.child("selector"),
    ));

    let affinity = str_at(spec, &["sessionAffinity"]);
    match affinity {
        "" => errs.push(FieldError::required(sp.child("sessionAffinity"), "")),
        "ClientIP" => {
            let t = int_at(
                spec,
                &["sessionAffinityConfig", "clientIP", "timeoutSeconds"],
            )
            .unwrap_or(0);
            if !(1..=86400).contains(&t) {
                errs.push(FieldError::invalid(
                    sp.child("sessionAffinityConfig")
                        .child("clientIP")
                        .child("timeoutSeconds"),
                    t,
                    "must be greater than 0 and less than 86400",
                ));
            }
        }
        "None" => {
            if has(spec, &["sessionAffinityConfig"]) {
                errs.push(FieldError::forbidden(
                    sp.child("sessionAffinityConfig"),
                    "must not be set when session affinity is None",
                ));
            }
        }
        other => errs.push(FieldError::not_supported(
            sp.child("sessionAffinity"),
            other,
            SESSION_AFFINITIES,
        )),
    }

    // cluster IPs
    if ty != "ExternalName" {
        let primary = str_at(spec, &["clusterIP"]);
        if !cluster_ips.is_empty() && primary != cluster_ips[0] {
            errs.push(FieldError::invalid(
                sp.child("clusterIPs").index(0),
                cluster_ips[0].as_str(),
                "must match `clusterIP` when set",
            ));
        }
        let ips: Vec<&str> = if cluster_ips.is_empty() {
            Some(primary)
                .filter(|p| !p.is_empty())
                .into_iter()
                .collect()
        } else {
            cluster_ips.iter().map(String::as_str).collect()
        };
        for (i, ip) in ips.iter().enumerate() {
            if *ip == "None" {
                if i > 0 || ips.len() > 1 {
                    errs.push(FieldError::invalid(
                        sp.child("clusterIPs").index(i),
                        *ip,
                        "'None' must be the first and only value",
                    ));
                }
            } else if ip.parse::<IpAddr>().is_err() {
                errs.push(FieldError::invalid(
                    sp.child("clusterIPs").index(i),
                    *ip,
                    INVALID_IP,
                ));
            }
        }
        if ips.len() > 2 {
            errs.push(FieldError::invalid(
                sp.child("clusterIPs"),
                Value::from(cluster_ips.clone()),
                "may only hold up to 2 values",
            ));
        }
        let policy = str_at(spec, &["ipFamilyPolicy"]);
        if has(spec, &["ipFamilyPolicy"]) && !IP_FAMILY_POLICIES.contains(&policy) {
            errs.push(FieldError::not_supported(
                sp.child("ipFamilyPolicy"),
                policy,
                IP_FAMILY_POLICIES,
            ));
        }
        for (i, fam) in strings_at(spec, &["ipFamilies"]).iter().enumerate() {
            if fam != "IPv4" && fam != "IPv6" {
                errs.push(FieldError::not_supported(
                    sp.child("ipFamilies").index(i),
                    fam.as_str(),
                    &["IPv4", "IPv6"],
                ));
            }
        }
    }

    for (i, ip) in strings_at(spec, &["externalIPs"]).iter().enumerate() {
        if ip.parse::<IpAddr>().is_err() {
            errs.push(FieldError::invalid(
                sp.child("externalIPs").index(i),
                ip.as_str(),
                INVALID_IP,
            ));
        }
    }

    match ty {
        "" => errs.push(FieldError::required(sp.child("type"), "")),
        t if !SERVICE_TYPES.contains(&t) => errs.push(FieldError::not_supported(
            sp.child("type"),
            t,
            SERVICE_TYPES,
        )),
        _ => {}
    }

    // duplicate (protocol, nodePort) and (protocol, port)
    let mut node_ports = HashSet::new();
    let mut port_keys = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let proto = str_at(p, &["protocol"]);
        let pp = sp.child("ports").index(i);
        if let Some(np) = int_at(p, &["nodePort"]).filter(|n| *n != 0) {
            if !node_ports.insert((proto, np)) {
                errs.push(FieldError::duplicate(pp.child("nodePort"), np));
            }
        }
        let port = int_at(p, &["port"]).unwrap_or(0);
        if !port_keys.insert((proto, port)) {
            errs.push(FieldError::duplicate(
                &pp,
                json!({"protocol": proto, "port": port}),
            ));
        }
    }

    // traffic policies
    let externally_accessible = matches!(ty, "LoadBalancer" | "NodePort")
        || (ty == "ClusterIP" && !arr_at(spec, &["externalIPs"]).is_empty());
    let etp = str_at(spec, &["externalTrafficPolicy"]);
    if !externally_accessible {
        if !etp.is_empty() {
            errs.push(FieldError::invalid(
                sp.child("externalTrafficPolicy"),
                etp,
                "may only be set for externally-accessible services",
            ));
        }
    } else if etp.is_empty() {
        errs.push(FieldError::required(sp.child("externalTrafficPolicy"), ""));
    } else if !TRAFFIC_POLICIES.contains(&etp) {
        errs.push(FieldError::not_supported(
            sp.child("externalTrafficPolicy"),
            etp,
            TRAFFIC_POLICIES,
        ));
    }
    if ty != "ExternalName" {
        let itp = str_at(spec, &["internalTrafficPolicy"]);
        if itp.is_empty() {
            errs.push(FieldError::required(sp.child("internalTrafficPolicy"), ""));
        } else if !TRAFFIC_POLICIES.contains(&itp) {
            errs.push(FieldError::not_supported(
                sp.child("internalTrafficPolicy"),
                itp,
                TRAFFIC_POLICIES,
            ));
        }
    }
    errs
}

/// Upstream `validateUpgradeDowngradeClusterIPs` (simplified): once allocated,
/// the primary cluster IP may not change, except to or from ExternalName.
pub(crate) fn validate_service_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let (ns, os) = (
        new.get("spec").unwrap_or(&Value::Null),
        old.get("spec").unwrap_or(&Value::Null),
    );
    if str_at(ns, &["type"]) == "ExternalName" || str_at(os, &["type"]) == "ExternalName" {
        return errs;
    }
    if is_headless(ns) && is_headless(os) {
        return errs;
    }
    let old_ip = str_at(os, &["clusterIP"]);
    let new_ip = str_at(ns, &["clusterIP"]);
    let new_ips = Value::from(strings_at(ns, &["clusterIPs"]));
    let path = Path::new("spec").child("clusterIPs").index(0);
    if !old_ip.is_empty() {
        if new_ip.is_empty() {
            errs.push(FieldError::invalid(
                path,
                new_ips,
                "primary clusterIP can not be unset",
            ));
        } else if new_ip != old_ip {
            errs.push(FieldError::invalid(
                path,
                new_ips,
                "may not change once set",
            ));
        }
    }
    errs
}

/// Endpoints: addresses are IPs, ports valid (named when more than one).
pub(crate) fn validate_endpoints(obj: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    for (i, subset) in arr_at(obj, &["subsets"]).iter().enumerate() {
        let sp = Path::new("subsets").index(i);
        for field in ["addresses", "notReadyAddresses"] {
            for (j, a) in arr_at(subset, &[field]).iter().enumerate() {
                let ip = str_at(a, &["ip"]);
                if ip.parse::<IpAddr>().is_err() {
                    errs.push(FieldError::invalid(
                        sp.child(field).index(j).child("ip"),
                        ip,
                        INVALID_IP,
                    ));
                }
            }
        }
        let ports = arr_at(subset, &["ports"]);
        for (j, p) in ports.iter().enumerate() {
            let pp = sp.child("ports").index(j);
            let name = str_at(p, &["name"]);
            if ports.len() > 1 && name.is_empty() {
                errs.push(FieldError::required(pp.child("name"), ""));
            } else if !name.is_empty() {
                for msg in names::dns1123_label_errors(name) {
                    errs.push(FieldError::invalid(pp.child("name"), name, msg));
                }
            }
            let port = int_at(p, &["port"]).unwrap_or(0);
            for msg in names::port_num_errors(port) {
                errs.push(FieldError::invalid(pp.child("port"), port, msg));
            }
            errs.extend(validate_protocol(p, &pp));
        }
    }
    errs
}
