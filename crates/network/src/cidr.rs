//! IPv4 prefixes (`10.42.0.0/24`): parsing, membership and host addressing.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use crate::Error;

/// An IPv4 network prefix; the address is always the network address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Cidr {
    /// A prefix from an address (host bits are cleared) and a length (≤ 32).
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Self, Error> {
        if prefix > 32 {
            return Err(Error::InvalidCidr(format!("{addr}/{prefix}")));
        }
        let net = u32::from(addr) & mask(prefix);
        Ok(Self {
            addr: Ipv4Addr::from(net),
            prefix,
        })
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix
    }

    /// Number of addresses in the prefix.
    pub fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// Does the prefix contain `ip`?
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.addr)
    }

    /// The `n`-th address of the prefix (0 is the network address), if inside.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        if n >= self.size() {
            return None;
        }
        let n = u32::try_from(n).ok()?;
        Some(Ipv4Addr::from(u32::from(self.addr).wrapping_add(n)))
    }

    /// The gateway address (the first host, `.1`).
    pub fn gateway(&self) -> Option<Ipv4Addr> {
        self.nth(1)
    }

    /// The `index`-th sub-prefix of length `prefix` (e.g. the `n`-th /24 of a /16).
    pub fn subnet(&self, prefix: u8, index: u64) -> Option<Ipv4Cidr> {
        if prefix < self.prefix || prefix > 32 {
            return None;
        }
        let count = 1u64 << u32::from(prefix - self.prefix);
        if index >= count {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        let base = u64::from(u32::from(self.addr)) + index * step;
        let base = u32::try_from(base).ok()?;
        Ipv4Cidr::new(Ipv4Addr::from(base), prefix).ok()
    }

    /// Number of sub-prefixes of length `prefix`.
    pub fn subnet_count(&self, prefix: u8) -> u64 {
        if prefix < self.prefix || prefix > 32 {
            return 0;
        }
        1u64 << u32::from(prefix - self.prefix)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::InvalidCidr(s.to_string());
        let (a, p) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        Ipv4Cidr::new(addr, prefix)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_contain() {
        let c: Ipv4Cidr = "10.42.3.7/24".parse().unwrap();
        assert_eq!(c.to_string(), "10.42.3.0/24");
        assert!(c.contains("10.42.3.255".parse().unwrap()));
        assert!(!c.contains("10.42.4.1".parse().unwrap()));
        assert_eq!(c.gateway(), Some("10.42.3.1".parse().unwrap()));
        assert_eq!(c.nth(256), None);
        assert!("10.42.0.0/33".parse::<Ipv4Cidr>().is_err());
        assert!("nonsense".parse::<Ipv4Cidr>().is_err());
        let all: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
    }

    #[test]
    fn subnets() {
        let c: Ipv4Cidr = "10.42.0.0/16".parse().unwrap();
        assert_eq!(c.subnet_count(24), 256);
        assert_eq!(c.subnet(24, 0).unwrap().to_string(), "10.42.0.0/24");
        assert_eq!(c.subnet(24, 255).unwrap().to_string(), "10.42.255.0/24");
        assert_eq!(c.subnet(24, 256), None);
        assert_eq!(c.subnet(8, 0), None);
    }
}
