//! Which addresses ingest may dial for a tenant's Modbus-TCP gateway.
//!
//! A company types its gateway's host; without a check the platform would dial whatever that is
//! — its own PostgreSQL on 127.0.0.1:5432, a metadata service on 169.254.169.254, the private
//! network behind it — and the fleet page (online or not, how a poll failed) would tell the
//! tenant which ports are open. So the *resolved* address is checked at every dial (a name can
//! resolve differently tomorrow than when the form was saved): loopback, unspecified, link-local,
//! private, shared (CGNAT), multicast, broadcast, documentation and benchmarking ranges, IPv6
//! unique-local and site-local, and every address of this machine's own interfaces are refused
//! unless a range in the platform's configuration (`ingest.dial_allow`, CIDR) permits them. The
//! demo and the tests allow `127.0.0.0/8`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A CIDR range: an address and a prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;

    /// `10.1.0.0/16`, `::1/128`, or a bare address (a range of one).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = match text.trim().split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text.trim(), None),
        };
        let network: IpAddr = address
            .parse()
            .map_err(|_| format!("{text}: not an IP address or CIDR range"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text}: the prefix is 0 to {max}"))?,
            None => max,
        };
        Ok(Cidr { network, prefix })
    }
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped or -compatible IPv6 address as the IPv4 address it reaches.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

fn is_internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || ip.is_documentation()
        || a == 0
        || (a == 100 && (64..128).contains(&b)) // shared address space (CGNAT)
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || a >= 240 // reserved
}

fn is_internal_v6(ip: Ipv6Addr) -> bool {
    let first = ip.segments()[0];
    ip.is_loopback()
        || ip.is_unspecified()
        || ip.is_multicast()
        || (first & 0xfe00) == 0xfc00 // unique local
        || (first & 0xffc0) == 0xfe80 // link-local
        || (first & 0xffc0) == 0xfec0 // site-local (deprecated)
        || first == 0x2001 && ip.segments()[1] == 0x0db8 // documentation
        || first == 0x0064 && ip.segments()[1] == 0xff9b // NAT64 to anything, internal too
}

/// Whether `ip` is one of this machine's own addresses: only an address of a local interface
/// can be bound.
fn is_own(ip: IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

/// The addresses ingest may dial.
#[derive(Debug, Clone, Default)]
pub struct DialPolicy {
    allow: Vec<Cidr>,
}

impl DialPolicy {
    /// A policy allowing internal addresses only within `allow` (CIDR texts); an unparsable
    /// range is an error, so a typo in the configuration is seen at start-up.
    pub fn new(allow: &[String]) -> Result<Self, String> {
        let allow = allow
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<Cidr>, _>>()?;
        Ok(DialPolicy { allow })
    }

    /// Whether a dial to `ip` may go out.
    pub fn allows(&self, ip: IpAddr) -> bool {
        if self.allow.iter().any(|c| c.contains(ip)) {
            return true;
        }
        let internal = match canonical(ip) {
            IpAddr::V4(v4) => is_internal_v4(v4),
            IpAddr::V6(v6) => is_internal_v6(v6),
        };
        !internal && !is_own(canonical(ip))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn internal_addresses_are_refused_by_default() {
        let policy = DialPolicy::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "0.0.0.0",
            "10.0.0.5",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::7f00:1",
        ] {
            assert!(!policy.allows(ip(refused)), "{refused}");
        }
        for allowed in ["8.8.8.8", "1.2.3.4", "172.32.0.1", "2400:3200::1"] {
            assert!(policy.allows(ip(allowed)), "{allowed}");
        }
    }

    #[test]
    fn the_configured_ranges_let_internal_addresses_through() {
        let policy = DialPolicy::new(&["127.0.0.0/8".into(), "10.1.0.0/16".into()]).unwrap();
        assert!(policy.allows(ip("127.0.0.1")));
        assert!(policy.allows(ip("::ffff:127.0.0.1")));
        assert!(policy.allows(ip("10.1.2.3")));
        assert!(!policy.allows(ip("10.2.0.1")));
        assert!(!policy.allows(ip("192.168.0.1")));
        assert!(DialPolicy::new(&["10.0.0.0/33".into()]).is_err());
        assert!(DialPolicy::new(&["not-a-range".into()]).is_err());
        assert_eq!("::1".parse::<Cidr>().unwrap().prefix, 128);
    }
}
