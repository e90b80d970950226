//! Host-local IP address management: leases of a node's podCIDR persisted in a
//! JSON file (`<state dir>/ipam-<cidr>.json`), written atomically (temporary file
//! + rename) on every change so that they survive agent restarts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::cidr::Ipv4Cidr;
use crate::Error;

/// One allocated address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// UID of the pod holding the address.
    pub pod_uid: String,
    /// `namespace/name` of the pod, for humans.
    #[serde(default)]
    pub pod: String,
    /// hostPort mappings programmed for the pod (removed on release).
    #[serde(default)]
    pub host_ports: Vec<crate::pod::HostPort>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    /// Index of the last address handed out (allocation continues after it so
    /// that a released address is not reused at once).
    #[serde(default)]
    last: u64,
    #[serde(default)]
    leases: BTreeMap<Ipv4Addr, Lease>,
}

/// Address allocator for one podCIDR.
#[derive(Debug)]
pub struct Ipam {
    cidr: Ipv4Cidr,
    file: PathBuf,
    state: Mutex<State>,
}

impl Ipam {
    /// Open (or start) the lease file for `cidr` under `dir`.
    pub fn open(dir: &Path, cidr: Ipv4Cidr) -> Result<Self, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::Io(dir.display().to_string(), e))?;
        let name = format!("ipam-{}-{}.json", cidr.network(), cidr.prefix_len());
        let file = dir.join(name);
        let state = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::Ipam(format!("{}: {e}", file.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(Error::Io(file.display().to_string(), e)),
        };
        Ok(Self {
            cidr,
            file,
            state: Mutex::new(state),
        })
    }

    /// The prefix addresses come from.
    pub fn cidr(&self) -> Ipv4Cidr {
        self.cidr
    }

    /// The address leased to `pod_uid`, allocating one if it has none.
    /// Network, gateway (`.1`) and broadcast addresses are never handed out.
    pub fn allocate(&self, pod_uid: &str, pod: &str) -> Result<Ipv4Addr, Error> {
        let mut st = self.state.lock();
        if let Some((ip, _)) = st.leases.iter().find(|(_, l)| l.pod_uid == pod_uid) {
            return Ok(*ip);
        }
        let size = self.cidr.size();
        if size < 4 {
            return Err(Error::Exhausted(self.cidr.to_string()));
        }
        // Usable host indexes: 2 ..= size-2.
        let usable = size - 3;
        let prev = if st.last >= 2 {
            st.last - 2
        } else {
            usable - 1
        };
        for step in 1..=usable {
            let idx = 2 + (prev + step) % usable;
            let Some(ip) = self.cidr.nth(idx) else {
                continue;
            };
            if st.leases.contains_key(&ip) {
                continue;
            }
            st.last = idx;
            st.leases.insert(
                ip,
                Lease {
                    pod_uid: pod_uid.to_string(),
                    pod: pod.to_string(),
                    host_ports: Vec::new(),
                },
            );
            self.persist(&st)?;
            return Ok(ip);
        }
        Err(Error::Exhausted(self.cidr.to_string()))
    }

    /// Record the hostPorts programmed for `pod_uid`.
    pub fn set_host_ports(
        &self,
        pod_uid: &str,
        ports: Vec<crate::pod::HostPort>,
    ) -> Result<(), Error> {
        let mut st = self.state.lock();
        if let Some(l) = st.leases.values_mut().find(|l| l.pod_uid == pod_uid) {
            l.host_ports = ports;
        }
        self.persist(&st)
    }

    /// The lease of `pod_uid`, if any.
    pub fn lease_of(&self, pod_uid: &str) -> Option<(Ipv4Addr, Lease)> {
        let st = self.state.lock();
        st.leases
            .iter()
            .find(|(_, l)| l.pod_uid == pod_uid)
            .map(|(ip, l)| (*ip, l.clone()))
    }

    /// Release the address of `pod_uid`; returns the lease that was held.
    pub fn release(&self, pod_uid: &str) -> Result<Option<(Ipv4Addr, Lease)>, Error> {
        let mut st = self.state.lock();
        let Some(ip) = st
            .leases
            .iter()
            .find(|(_, l)| l.pod_uid == pod_uid)
            .map(|(ip, _)| *ip)
        else {
            return Ok(None);
        };
        let lease = st.leases.remove(&ip);
        self.persist(&st)?;
        Ok(lease.map(|l| (ip, l)))
    }

    /// All current leases.
    pub fn leases(&self) -> BTreeMap<Ipv4Addr, Lease> {
        self.state.lock().leases.clone()
    }

    fn persist(&self, st: &State) -> Result<(), Error> {
        let body = serde_json::to_vec_pretty(st).map_err(|e| Error::Ipam(e.to_string()))?;
        let tmp = self.file.with_extension("json.tmp");
        std::fs::write(&tmp, body).map_err(|e| Error::Io(tmp.display().to_string(), e))?;
        std::fs::rename(&tmp, &self.file).map_err(|e| Error::Io(self.file.display().to_string(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_is_idempotent_persistent_and_skips_reserved() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Cidr = "10.42.7.0/24".parse().unwrap();
        let ipam = Ipam::open(dir.path(), cidr).unwrap();
        let a = ipam.allocate("uid-a", "default/a").unwrap();
        assert_eq!(a, "10.42.7.2".parse::<Ipv4Addr>().unwrap());
        assert_eq!(ipam.allocate("uid-a", "default/a").unwrap(), a);
        let b = ipam.allocate("uid-b", "default/b").unwrap();
        assert_eq!(b, "10.42.7.3".parse::<Ipv4Addr>().unwrap());
        drop(ipam);
        let ipam = Ipam::open(dir.path(), cidr).unwrap();
        assert_eq!(ipam.allocate("uid-b", "default/b").unwrap(), b);
        assert_eq!(ipam.release("uid-a").unwrap().map(|(ip, _)| ip), Some(a));
        assert_eq!(ipam.release("uid-a").unwrap(), None);
        // Released addresses are not reused at once.
        let c = ipam.allocate("uid-c", "default/c").unwrap();
        assert_eq!(c, "10.42.7.4".parse::<Ipv4Addr>().unwrap());
    }

    #[test]
    fn exhaustion_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cidr: Ipv4Cidr = "10.42.7.0/29".parse().unwrap(); // hosts .2 .. .6
        let ipam = Ipam::open(dir.path(), cidr).unwrap();
        let mut got = Vec::new();
        for i in 0..5 {
            got.push(ipam.allocate(&format!("u{i}"), "x").unwrap());
        }
        got.sort();
        assert_eq!(got.first().unwrap().to_string(), "10.42.7.2");
        assert_eq!(got.last().unwrap().to_string(), "10.42.7.6");
        assert!(matches!(ipam.allocate("u9", "x"), Err(Error::Exhausted(_))));
        ipam.release("u2").unwrap();
        assert!(ipam.allocate("u9", "x").is_ok());
    }
}
