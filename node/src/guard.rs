//! Destination policy: which addresses and ports a node will connect to on a customer's
//! behalf. Deny by default everything that reaches the runner's own networks
//! (loopback, private, CGNAT, link-local including cloud metadata, ULA, multicast...),
//! including IPv4 addresses hidden inside IPv6 forms (mapped, compatible, NAT64, 6to4).
//! Checked on every resolved address, after DNS; `--allow-cidr` is the only way to open
//! a range. Also refused: the node's own addresses and default gateway, blocked ports
//! (SMTP by default) and blocked domains, and whatever the server pushes (the server can
//! only tighten the policy).

use std::cell::RefCell;
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
    /// The domain is blocked.
    #[error("domain {0} is blocked")]
    Domain(String),
}

/// Rules pushed by the server: they only ever add refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ServerRules {
    /// Extra blocked ports.
    pub ports: Vec<u16>,
    /// Extra blocked ranges (they win over `--allow-cidr`).
    pub nets: Vec<IpNet>,
    /// Extra blocked domains (suffix match).
    pub domains: Vec<String>,
}

/// The rules one node enforces: the defaults, the runner's own additions, and whatever
/// the server pushed. The runner can only open ranges explicitly (`--allow-cidr`); the
/// server can only tighten. The default is the deny-by-default policy with SMTP blocked.
#[derive(Debug)]
pub struct DestinationPolicy {
    allow: Vec<IpNet>,
    blocked_ports: Vec<u16>,
    blocked_domains: Vec<String>,
    /// The node's own addresses and default gateways.
    local: Vec<IpAddr>,
    server: RefCell<ServerRules>,
}

impl Default for DestinationPolicy {
    fn default() -> Self {
        DestinationPolicy::new(Vec::new())
    }
}

/// Lower-cased, without a trailing dot.
fn normalize_domain(d: &str) -> String {
    d.trim().trim_end_matches('.').to_ascii_lowercase()
}

fn domain_matches(host: &str, rule: &str) -> bool {
    host == rule
        || host
            .strip_suffix(rule)
            .is_some_and(|rest| rest.ends_with('.'))
}

impl DestinationPolicy {
    /// The default policy, plus explicitly allowed ranges.
    pub fn new(allow: Vec<IpNet>) -> Self {
        DestinationPolicy {
            allow,
            blocked_ports: DEFAULT_BLOCKED_PORTS.to_vec(),
            blocked_domains: Vec::new(),
            local: Vec::new(),
            server: RefCell::default(),
        }
    }

    /// Adds blocked ports (on top of the SMTP defaults).
    pub fn block_ports(mut self, ports: &[u16]) -> Self {
        self.blocked_ports.extend_from_slice(ports);
        self
    }

    /// Adds blocked domains: each refuses itself and every subdomain.
    pub fn block_domains(mut self, domains: &[String]) -> Self {
        self.blocked_domains
            .extend(domains.iter().map(|d| normalize_domain(d)));
        self
    }

    /// Refuses the node's own addresses and gateways (see [`local_addresses`]).
    pub fn deny_local(mut self, local: Vec<IpAddr>) -> Self {
        self.local = local;
        self
    }

    /// Replaces the server's rules (a fresh hello gets fresh rules).
    pub fn set_server_rules(&self, mut rules: ServerRules) {
        rules.domains = rules.domains.iter().map(|d| normalize_domain(d)).collect();
        *self.server.borrow_mut() = rules;
    }

    /// Refuses blocked ports.
    ///
    /// # Errors
    /// [`PolicyDenied::Port`].
    pub fn check_port(&self, port: u16) -> Result<(), PolicyDenied> {
        if self.blocked_ports.contains(&port) || self.server.borrow().ports.contains(&port) {
            return Err(PolicyDenied::Port(port));
        }
        Ok(())
    }

    /// Refuses blocked domains (and their subdomains), before any DNS query.
    ///
    /// # Errors
    /// [`PolicyDenied::Domain`].
    pub fn check_domain(&self, host: &str) -> Result<(), PolicyDenied> {
        let host = normalize_domain(host);
        let server = self.server.borrow();
        if self
            .blocked_domains
            .iter()
            .chain(server.domains.iter())
            .any(|rule| domain_matches(&host, rule))
        {
            return Err(PolicyDenied::Domain(host));
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
        let hit = |n: &IpNet| n.contains(&ip) || embedded.is_some_and(|e| n.contains(&e));
        if self.server.borrow().nets.iter().any(hit) {
            return Err(PolicyDenied::Address {
                addr: ip,
                range: "blocked by the server",
            });
        }
        if self.allow.iter().any(hit) {
            return Ok(());
        }
        if self
            .local
            .iter()
            .any(|l| *l == ip || embedded.is_some_and(|e| *l == e))
        {
            return Err(PolicyDenied::Address {
                addr: ip,
                range: "this node's own address or gateway",
            });
        }
        if let Some(range) = forbidden(ip) {
            return Err(PolicyDenied::Address { addr: ip, range });
        }
        Ok(())
    }
}

/// This machine's interface addresses and default gateways, which a node never dials
/// (even when they are public). Gateways are read from `/proc/net/route` and
/// `/proc/net/ipv6_route` on Linux; elsewhere only interface addresses are known (a
/// home gateway is in a private range, which is refused anyway).
pub fn local_addresses() -> Vec<IpAddr> {
    let mut out: Vec<IpAddr> = if_addrs::get_if_addrs()
        .map(|ifs| ifs.into_iter().map(|i| i.ip()).collect())
        .unwrap_or_default();
    out.extend(default_gateways());
    out.sort();
    out.dedup();
    out
}

#[cfg(target_os = "linux")]
fn default_gateways() -> Vec<IpAddr> {
    let mut out = Vec::new();
    if let Ok(table) = std::fs::read_to_string("/proc/net/route") {
        for line in table.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 2 && f[1] == "00000000" {
                if let Ok(gw) = u32::from_str_radix(f[2], 16) {
                    if gw != 0 {
                        out.push(IpAddr::V4(Ipv4Addr::from(gw.to_ne_bytes())));
                    }
                }
            }
        }
    }
    if let Ok(table) = std::fs::read_to_string("/proc/net/ipv6_route") {
        for line in table.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() > 4 && f[0].chars().all(|c| c == '0') && f[1] == "00" {
                if let Ok(gw) = u128::from_str_radix(f[4], 16) {
                    if gw != 0 {
                        out.push(IpAddr::V6(Ipv6Addr::from(gw)));
                    }
                }
            }
        }
    }
    out
}

#[cfg(not(target_os = "linux"))]
fn default_gateways() -> Vec<IpAddr> {
    Vec::new()
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
