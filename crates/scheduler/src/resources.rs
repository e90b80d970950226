//! Resource vectors (CPU, memory, ephemeral storage, pod count, extended resources)
//! and the computation of a pod's effective requests.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use crate::quantity;

/// CPU requested for scoring when a container requests none (upstream: 100m).
pub const DEFAULT_MILLI_CPU_REQUEST: i64 = 100;
/// Memory requested for scoring when a container requests none (upstream: 200 MiB).
pub const DEFAULT_MEMORY_REQUEST: i64 = 200 * 1024 * 1024;

/// An amount of each schedulable resource.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU in milli-cores.
    pub milli_cpu: i64,
    /// Memory in bytes.
    pub memory: i64,
    /// Ephemeral storage in bytes.
    pub ephemeral_storage: i64,
    /// Number of pods (only meaningful for allocatable).
    pub pods: i64,
    /// Extended and hugepages resources, by name.
    pub scalar: BTreeMap<String, i64>,
}

impl Resources {
    /// Parse a `ResourceList` (node allocatable or container requests). Unparsable
    /// quantities count as zero.
    pub fn from_list(list: &BTreeMap<String, Quantity>) -> Resources {
        let mut r = Resources::default();
        for (name, q) in list {
            r.set(name, &q.0);
        }
        r
    }

    fn set(&mut self, name: &str, q: &str) {
        match name {
            "cpu" => self.milli_cpu = quantity::milli_value(q).unwrap_or(0),
            "memory" => self.memory = quantity::value(q).unwrap_or(0),
            "ephemeral-storage" => self.ephemeral_storage = quantity::value(q).unwrap_or(0),
            "pods" => self.pods = quantity::value(q).unwrap_or(0),
            n if is_scalar_resource(n) => {
                self.scalar
                    .insert(n.to_string(), quantity::value(q).unwrap_or(0));
            }
            _ => {}
        }
    }

    /// Add `o` to `self`.
    pub fn add(&mut self, o: &Resources) {
        self.milli_cpu += o.milli_cpu;
        self.memory += o.memory;
        self.ephemeral_storage += o.ephemeral_storage;
        self.pods += o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) += v;
        }
    }

    /// Subtract `o` from `self`.
    pub fn sub(&mut self, o: &Resources) {
        self.milli_cpu -= o.milli_cpu;
        self.memory -= o.memory;
        self.ephemeral_storage -= o.ephemeral_storage;
        self.pods -= o.pods;
        for (k, v) in &o.scalar {
            *self.scalar.entry(k.clone()).or_insert(0) -= v;
        }
    }

    /// Component-wise maximum.
    pub fn max_with(&mut self, o: &Resources) {
        self.milli_cpu = self.milli_cpu.max(o.milli_cpu);
        self.memory = self.memory.max(o.memory);
        self.ephemeral_storage = self.ephemeral_storage.max(o.ephemeral_storage);
        self.pods = self.pods.max(o.pods);
        for (k, v) in &o.scalar {
            let e = self.scalar.entry(k.clone()).or_insert(0);
            *e = (*e).max(*v);
        }
    }
}

/// Whether a resource name is an extended (`example.com/gpu`), hugepages or
/// attachable-volume resource that the scheduler accounts for as an opaque integer.
pub fn is_scalar_resource(name: &str) -> bool {
    if name.starts_with("hugepages-") || name.starts_with("attachable-volumes-") {
        return true;
    }
    match name.split_once('/') {
        Some((domain, _)) => {
            !(domain == "kubernetes.io" || domain.ends_with(".kubernetes.io"))
                || name.starts_with("requests.")
        }
        None => false,
    }
}

fn container_requests(c: &Container) -> Resources {
    let mut r = Resources::default();
    if let Some(res) = &c.resources {
        // Limits stand in for missing requests (what API defaulting does).
        if let Some(l) = &res.limits {
            for (n, q) in l {
                r.set(n, &q.0);
            }
        }
        if let Some(q) = &res.requests {
            for (n, q) in q {
                r.set(n, &q.0);
            }
        }
    }
    r
}

/// A pod's effective requests, as upstream computes them: the sum over app
/// containers and restartable (sidecar) init containers, at least the largest
/// regular init container (plus sidecars started before it), plus pod overhead.
/// `pods` is set to 1.
pub fn pod_requests(pod: &Pod) -> Resources {
    let mut reqs = Resources::default();
    let Some(spec) = &pod.spec else {
        reqs.pods = 1;
        return reqs;
    };
    for c in &spec.containers {
        reqs.add(&container_requests(c));
    }
    let mut restartable = Resources::default();
    let mut init_max = Resources::default();
    for ic in spec.init_containers.iter().flatten() {
        let r = container_requests(ic);
        let effective = if ic.restart_policy.as_deref() == Some("Always") {
            reqs.add(&r);
            restartable.add(&r);
            restartable.clone()
        } else {
            let mut t = r;
            t.add(&restartable);
            t
        };
        init_max.max_with(&effective);
    }
    reqs.max_with(&init_max);
    if let Some(o) = &spec.overhead {
        reqs.add(&Resources::from_list(o));
    }
    reqs.pods = 1;
    reqs
}

/// CPU and memory used for scoring: like [`pod_requests`] for app containers but a
/// container that requests nothing counts as 100m CPU / 200 MiB, as upstream.
pub fn non_zero_requests(pod: &Pod) -> (i64, i64) {
    let Some(spec) = &pod.spec else {
        return (DEFAULT_MILLI_CPU_REQUEST, DEFAULT_MEMORY_REQUEST);
    };
    let (mut cpu, mut mem) = (0, 0);
    for c in &spec.containers {
        let r = container_requests(c);
        cpu += if r.milli_cpu == 0 {
            DEFAULT_MILLI_CPU_REQUEST
        } else {
            r.milli_cpu
        };
        mem += if r.memory == 0 {
            DEFAULT_MEMORY_REQUEST
        } else {
            r.memory
        };
    }
    if let Some(o) = &spec.overhead {
        let o = Resources::from_list(o);
        cpu += o.milli_cpu;
        mem += o.memory;
    }
    (cpu, mem)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn c(name: &str, cpu: &str, mem: &str) -> serde_json::Value {
        json!({"name": name, "image": "x", "resources": {"requests": {"cpu": cpu, "memory": mem}}})
    }

    #[test]
    fn sums_containers_and_overhead() {
        let p = pod(json!({"spec": {
            "containers": [c("a", "100m", "1Mi"), c("b", "200m", "1Mi")],
            "overhead": {"cpu": "10m"}
        }}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 310);
        assert_eq!(r.memory, 2 << 20);
        assert_eq!(r.pods, 1);
    }

    #[test]
    fn init_containers_use_max_rule() {
        let p = pod(json!({"spec": {
            "containers": [c("a", "100m", "1Mi")],
            "initContainers": [c("i1", "500m", "1Mi"), c("i2", "50m", "10Mi")]
        }}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 500);
        assert_eq!(r.memory, 10 << 20);
    }

    #[test]
    fn sidecars_add_to_total() {
        let mut side = c("s", "100m", "1Mi");
        side["restartPolicy"] = json!("Always");
        let p = pod(json!({"spec": {
            "containers": [c("a", "100m", "1Mi")],
            "initContainers": [side, c("i", "300m", "1Mi")]
        }}));
        let r = pod_requests(&p);
        // containers + sidecar = 200m; init i runs beside the sidecar: 300+100 = 400m.
        assert_eq!(r.milli_cpu, 400);
    }

    #[test]
    fn limits_default_requests_and_extended() {
        let p = pod(json!({"spec": {"containers": [{"name": "a", "image": "x",
            "resources": {"limits": {"cpu": "1", "example.com/gpu": "2"}}}]}}));
        let r = pod_requests(&p);
        assert_eq!(r.milli_cpu, 1000);
        assert_eq!(r.scalar.get("example.com/gpu"), Some(&2));
        assert_eq!(non_zero_requests(&p), (1000, DEFAULT_MEMORY_REQUEST));
    }

    #[test]
    fn scalar_names() {
        assert!(is_scalar_resource("example.com/gpu"));
        assert!(is_scalar_resource("hugepages-2Mi"));
        assert!(!is_scalar_resource("cpu"));
        assert!(!is_scalar_resource("kubernetes.io/foo"));
    }
}
