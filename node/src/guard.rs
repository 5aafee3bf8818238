//! Destination policy: which addresses and ports a node will connect to on a customer's
//! behalf. Deny by default everything that reaches the runner's own networks
//! (loopback, private, CGNAT, link-local including cloud metadata, ULA, multicast...),
//! including IPv4 addresses hidden inside IPv6 forms (mapped, compatible, NAT64, 6to4).
//! Checked on every resolved address, after DNS; `--allow-cidr` is the only way to open
//! a range.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Ports refused by default (SMTP: a node must not send spam).
pub const DEFAULT_BLOCKED_PORTS: [u16; 3] = [25, 465, 587];

/// Why a destination was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyDenied {
    /// The address is in a forbidden range.
    #[error("{addr} is in a forbidden range ({range})")]
    Address {
        /// The address.
        addr: IpAddr,
        /// The range's name.
        range: &'static str,
    },
    /// The port is blocked.
    #[error("port {0} is blocked")]
    Port(u16),
}

/// The rules one node enforces.
#[derive(Debug, Clone)]
pub struct DestinationPolicy {
    allow: Vec<IpNet>,
    blocked_ports: Vec<u16>,
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        DestinationPolicy::new(Vec::new())
    }
}

impl DestinationPolicy {
    /// The default policy, plus explicitly allowed ranges.
    pub fn new(allow: Vec<IpNet>) -> Self {
        DestinationPolicy {
            allow,
            blocked_ports: DEFAULT_BLOCKED_PORTS.to_vec(),
        }
    }

    /// Refuses blocked ports.
    ///
    /// # Errors
    /// [`PolicyDenied::Port`].
    pub fn check_port(&self, port: u16) -> Result<(), PolicyDenied> {
        if self.blocked_ports.contains(&port) {
            return Err(PolicyDenied::Port(port));
        }
        Ok(())
    }

    /// Checks one resolved destination.
    ///
    /// # Errors
    /// [`PolicyDenied`] naming the rule.
    pub fn check(&self, addr: SocketAddr) -> Result<(), PolicyDenied> {
        self.check_port(addr.port())?;
        let ip = addr.ip();
        let embedded = match ip {
            IpAddr::V6(v6) => embedded_v4(v6).map(IpAddr::V4),
            IpAddr::V4(_) => None,
        };
        if self
            .allow
            .iter()
            .any(|n| n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e)))
        {
            return Ok(());
        }
        if let Some(range) = forbidden(ip) {
            return Err(PolicyDenied::Address { addr: ip, range });
        }
        Ok(())
    }
}

/// The IPv4 address carried inside an IPv6 form, if any.
fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped) and ::a.b.c.d (compatible, deprecated).
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(tail),
        // ::ffff:0:a.b.c.d (IPv4-translated, RFC 2765).
        [0, 0, 0, 0, 0xffff, 0, _, _] => Some(tail),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix).
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:AABB:CCDD::/48 (6to4).
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], len: u32) -> bool {
    let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    const RANGES: &[([u8; 4], u32, &str)] = &[
        ([0, 0, 0, 0], 8, "this network"),
        ([10, 0, 0, 0], 8, "private"),
        ([100, 64, 0, 0], 10, "carrier-grade NAT"),
        ([127, 0, 0, 0], 8, "loopback"),
        ([169, 254, 0, 0], 16, "link-local / cloud metadata"),
        ([172, 16, 0, 0], 12, "private"),
        ([192, 0, 0, 0], 24, "IETF protocol assignments"),
        ([192, 0, 2, 0], 24, "documentation"),
        ([192, 88, 99, 0], 24, "6to4 relay anycast"),
        ([192, 168, 0, 0], 16, "private"),
        ([198, 18, 0, 0], 15, "benchmarking"),
        ([198, 51, 100, 0], 24, "documentation"),
        ([203, 0, 113, 0], 24, "documentation"),
        ([224, 0, 0, 0], 4, "multicast"),
        ([240, 0, 0, 0], 4, "reserved / broadcast"),
    ];
    RANGES
        .iter()
        .find(|(net, len, _)| in_v4(ip, *net, *len))
        .map(|r| r.2)
}

fn forbidden(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = embedded_v4(v6) {
                // Covers ::, ::1 (as 0.0.0.0/8) and every mapped or translated form.
                return forbidden_v4(v4).map(|_| "IPv4 range hidden in IPv6");
            }
            let s = v6.segments();
            match s[0] {
                0xfc00..=0xfdff => Some("unique local (ULA)"),
                0xfe80..=0xfebf => Some("link-local"),
                0xfec0..=0xfeff => Some("site-local"),
                0xff00..=0xffff => Some("multicast"),
                0x0064 if s[1] == 0xff9b && s[2] == 1 => Some("local-use NAT64"),
                0x2001 if s[1] == 0x0db8 => Some("documentation"),
                0x2001 if s[1] == 0 => Some("Teredo"),
                0x0100 if s[1..4] == [0, 0, 0] => Some("discard-only"),
                _ => None,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn denied(p: &DestinationPolicy, a: &str) -> bool {
        p.check(a.parse().expect("addr")).is_err()
    }

    #[test]
    fn denies_local_ranges_in_every_form() {
        let p = DestinationPolicy::default();
        for a in [
            "127.0.0.1:80",
            "0.0.0.0:80",
            "10.1.2.3:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "169.254.169.254:80",
            "224.0.0.1:80",
            "255.255.255.255:80",
            "[::1]:80",
            "[::]:80",
            "[fc00::1]:80",
            "[fd12:3456::1]:80",
            "[fe80::1]:80",
            "[ff02::1]:80",
            "[::ffff:10.0.0.1]:80",
            "[::ffff:127.0.0.1]:80",
            "[::ffff:169.254.169.254]:80",
            "[::10.0.0.1]:80",
            "[64:ff9b::10.0.0.1]:80",
            "[64:ff9b::7f00:1]:80",
            "[64:ff9b:1::1]:80",
            "[2002:0a00:0001::1]:80",
            "[2002:c0a8:0101::1]:80",
            "[2001:db8::1]:80",
        ] {
            assert!(denied(&p, a), "{a} must be denied");
        }
    }

    #[test]
    fn allows_public_addresses() {
        let p = DestinationPolicy::default();
        for a in [
            "1.1.1.1:443",
            "8.8.8.8:53",
            "93.184.216.34:80",
            "172.32.0.1:80",
            "100.128.0.1:80",
            "[2606:4700::1111]:443",
            "[::ffff:1.1.1.1]:443",
            "[64:ff9b::101:101]:443",
            "[2002:0101:0101::1]:80",
        ] {
            assert!(!denied(&p, a), "{a} must be allowed");
        }
    }

    #[test]
    fn smtp_ports_blocked_and_allow_cidr_opens_a_range() {
        let p = DestinationPolicy::default();
        assert_eq!(
            p.check("1.1.1.1:25".parse().expect("a")),
            Err(PolicyDenied::Port(25))
        );
        assert!(denied(&p, "1.1.1.1:587") && denied(&p, "1.1.1.1:465"));
        let lab = DestinationPolicy::new(vec!["127.0.0.0/8".parse().expect("net")]);
        assert!(!denied(&lab, "127.0.0.1:8080"));
        assert!(!denied(&lab, "[::ffff:127.0.0.1]:8080"));
        assert!(denied(&lab, "10.0.0.1:80"));
        assert!(
            denied(&lab, "[::1]:80"),
            "allowing v4 loopback does not allow ::1"
        );
        assert!(denied(&lab, "127.0.0.1:25"), "ports stay blocked");
    }
}
