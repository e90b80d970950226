//! Service ClusterIP and NodePort allocation (upstream's service REST allocators).
//!
//! Allocations live in memory, rebuilt from the stored Services at start; the
//! store stays the source of truth.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use navarch_api::catalog::ResourceType;
use navarch_api::validation::{ErrorType, FieldError};
use parking_lot::Mutex;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::object;

/// The service IP range: 10.43.0.0/16.
pub const SERVICE_CIDR_BASE: u32 = u32::from_be_bytes([10, 43, 0, 0]);
pub const SERVICE_CIDR_BITS: u32 = 16;
pub const NODE_PORT_MIN: u16 = 30000;
pub const NODE_PORT_MAX: u16 = 32767;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Allocation {
    Ip(u32),
    NodePort(u16),
}

#[derive(Default)]
struct State {
    ips: HashSet<u32>,
    ports: HashSet<u16>,
    next_ip: u32,
    next_port: u16,
}

#[derive(Default)]
pub struct Allocators {
    state: Mutex<State>,
}

fn is_service(rt: &ResourceType) -> bool {
    rt.group.is_empty() && rt.plural == "services"
}

fn parse_ip(s: &str) -> Option<u32> {
    s.parse::<Ipv4Addr>().ok().map(u32::from)
}

fn in_range(ip: u32) -> bool {
    let size = 1u32 << (32 - SERVICE_CIDR_BITS);
    ip > SERVICE_CIDR_BASE && ip < SERVICE_CIDR_BASE + size - 1
}

fn invalid(rt: &ResourceType, obj: &Value, field: &str, value: Value, detail: String) -> ApiError {
    ApiError::invalid(
        rt,
        object::name(obj),
        &[FieldError {
            error_type: ErrorType::Invalid,
            field: field.into(),
            bad_value: Some(value),
            detail,
        }],
    )
}

fn service_type(obj: &Value) -> &str {
    obj.pointer("/spec/type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
}

fn wants_node_ports(obj: &Value) -> bool {
    matches!(service_type(obj), "NodePort" | "LoadBalancer")
}

impl Allocators {
    /// Mark what an existing Service holds.
    pub fn observe(&self, svc: &Value) {
        let mut st = self.state.lock();
        if let Some(ip) = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(parse_ip)
        {
            st.ips.insert(ip);
        }
        if let Some(ports) = svc.pointer("/spec/ports").and_then(Value::as_array) {
            for p in ports {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    st.ports.insert(n as u16);
                }
            }
        }
    }

    fn alloc_ip(&self, st: &mut State) -> Option<u32> {
        let size = 1u32 << (32 - SERVICE_CIDR_BITS);
        // .1 is the kubernetes Service, .10 cluster DNS: both asked for explicitly.
        for i in 0..size {
            let off = (st.next_ip + i) % size;
            let ip = SERVICE_CIDR_BASE + off;
            if off < 11 || !in_range(ip) || st.ips.contains(&ip) {
                continue;
            }
            st.ips.insert(ip);
            st.next_ip = off + 1;
            return Some(ip);
        }
        None
    }

    fn alloc_port(&self, st: &mut State) -> Option<u16> {
        let span = (NODE_PORT_MAX - NODE_PORT_MIN + 1) as u32;
        for i in 0..span {
            let p = NODE_PORT_MIN + ((st.next_port as u32 + i) % span) as u16;
            if !st.ports.contains(&p) {
                st.ports.insert(p);
                st.next_port = (p - NODE_PORT_MIN + 1) % span as u16;
                return Some(p);
            }
        }
        None
    }

    /// Allocate what a new Service needs, writing it into the object.
    pub fn admit_create(&self, rt: &ResourceType, obj: &mut Value) -> ApiResult<Vec<Allocation>> {
        if !is_service(rt) {
            return Ok(vec![]);
        }
        let mut got = Vec::new();
        let r = self.allocate(rt, obj, None, &mut got);
        if r.is_err() {
            self.release_all(&got);
        }
        r.map(|_| got)
    }

    /// Keep allocations across an update; allocate newly needed node ports.
    pub fn admit_update(
        &self,
        rt: &ResourceType,
        new: &mut Value,
        old: &Value,
    ) -> ApiResult<Vec<Allocation>> {
        if !is_service(rt) {
            return Ok(vec![]);
        }
        let mut got = Vec::new();
        let r = self.allocate(rt, new, Some(old), &mut got);
        if r.is_err() {
            self.release_all(&got);
        }
        r.map(|_| got)
    }

    fn allocate(
        &self,
        rt: &ResourceType,
        obj: &mut Value,
        old: Option<&Value>,
        got: &mut Vec<Allocation>,
    ) -> ApiResult<()> {
        let mut st = self.state.lock();
        let old_ip = old
            .and_then(|o| o.pointer("/spec/clusterIP"))
            .and_then(Value::as_str)
            .map(str::to_string);
        if service_type(obj) == "ExternalName" {
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.remove("clusterIP");
                spec.remove("clusterIPs");
            }
        } else {
            let requested = obj
                .pointer("/spec/clusterIP")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            let ip_str = if requested.is_empty() {
                match old_ip.clone().filter(|s| !s.is_empty()) {
                    Some(ip) => ip,
                    None => {
                        let ip = self.alloc_ip(&mut st).ok_or_else(|| {
                            invalid(
                                rt,
                                obj,
                                "spec.clusterIPs",
                                json!([]),
                                "failed to allocate IP: range is full".into(),
                            )
                        })?;
                        got.push(Allocation::Ip(ip));
                        Ipv4Addr::from(ip).to_string()
                    }
                }
            } else if requested == "None" || old_ip.as_deref() == Some(requested.as_str()) {
                requested
            } else {
                let Some(ip) = parse_ip(&requested) else {
                    return Err(invalid(
                        rt,
                        obj,
                        "spec.clusterIPs[0]",
                        json!(requested),
                        "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)".into(),
                    ));
                };
                if !in_range(ip) {
                    return Err(invalid(rt, obj, "spec.clusterIPs", json!([requested]), format!(
                        "failed to allocate IP {requested}: the provided IP ({requested}) is not in the valid range. The range of valid IPs is 10.43.0.0/16")));
                }
                if st.ips.contains(&ip) {
                    return Err(invalid(
                        rt,
                        obj,
                        "spec.clusterIPs",
                        json!([requested]),
                        format!(
                            "failed to allocate IP {requested}: provided IP is already allocated"
                        ),
                    ));
                }
                st.ips.insert(ip);
                got.push(Allocation::Ip(ip));
                requested
            };
            if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
                spec.insert("clusterIP".into(), json!(ip_str));
                spec.insert("clusterIPs".into(), json!([ip_str]));
            }
        }
        let old_ports: Vec<u16> = old
            .and_then(|o| o.pointer("/spec/ports"))
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|p| p.get("nodePort").and_then(Value::as_u64))
                    .map(|n| n as u16)
                    .collect()
            })
            .unwrap_or_default();
        let want = wants_node_ports(obj);
        let Some(ports) = obj
            .get_mut("spec")
            .and_then(|s| s.get_mut("ports"))
            .and_then(Value::as_array_mut)
        else {
            return Ok(());
        };
        let name = String::new();
        for (i, p) in ports.iter_mut().enumerate() {
            if !want {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
                continue;
            }
            match p.get("nodePort").and_then(Value::as_u64) {
                Some(n) if n != 0 => {
                    let n16 = n as u16;
                    if old_ports.contains(&n16) {
                        continue;
                    }
                    if !(NODE_PORT_MIN as u64..=NODE_PORT_MAX as u64).contains(&n) {
                        return Err(invalid(rt, &json!({"metadata":{"name":name}}), &format!("spec.ports[{i}].nodePort"), json!(n),
                            format!("provided port is not in the valid range. The range of valid ports is {NODE_PORT_MIN}-{NODE_PORT_MAX}")));
                    }
                    if st.ports.contains(&n16) {
                        return Err(invalid(
                            rt,
                            &json!({"metadata":{"name":name}}),
                            &format!("spec.ports[{i}].nodePort"),
                            json!(n),
                            "provided port is already allocated".into(),
                        ));
                    }
                    st.ports.insert(n16);
                    got.push(Allocation::NodePort(n16));
                }
                _ => {
                    let port = self.alloc_port(&mut st).ok_or_else(|| {
                        invalid(
                            rt,
                            &json!({}),
                            &format!("spec.ports[{i}].nodePort"),
                            json!(0),
                            "failed to allocate a nodePort: range is full".into(),
                        )
                    })?;
                    got.push(Allocation::NodePort(port));
                    p["nodePort"] = json!(port);
                }
            }
        }
        Ok(())
    }

    pub fn release_all(&self, allocs: &[Allocation]) {
        let mut st = self.state.lock();
        for a in allocs {
            match a {
                Allocation::Ip(ip) => {
                    st.ips.remove(ip);
                }
                Allocation::NodePort(p) => {
                    st.ports.remove(p);
                }
            }
        }
    }

    fn held(obj: &Value) -> Vec<Allocation> {
        let mut out = Vec::new();
        if let Some(ip) = obj
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(parse_ip)
        {
            out.push(Allocation::Ip(ip));
        }
        if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
            for p in ports {
                if let Some(n) = p.get("nodePort").and_then(Value::as_u64) {
                    out.push(Allocation::NodePort(n as u16));
                }
            }
        }
        out
    }

    /// Free what a deleted Service held.
    pub fn release_object(&self, rt: &ResourceType, obj: &Value) {
        if is_service(rt) {
            self.release_all(&Self::held(obj));
        }
    }

    /// Free what `old` held and `new` no longer does.
    pub fn release_replaced(&self, rt: &ResourceType, new: &Value, old: &Value) {
        if !is_service(rt) {
            return;
        }
        let keep = Self::held(new);
        let gone: Vec<Allocation> = Self::held(old)
            .into_iter()
            .filter(|a| !keep.contains(a))
            .collect();
        self.release_all(&gone);
    }
}
