//! Whom a target belongs to, for per-target statistics and policies: the registrable
//! domain of a name (`www.shop.example.co.uk` → `example.co.uk`, by the public suffix
//! list), or the network of an address (IPv4 /24, IPv6 /48). Two targets of one site share
//! a [`Reach`]; the port is not part of it.

use std::net::IpAddr;

use crate::target::{TargetAddr, MAX_DOMAIN_LEN};

/// The site a target belongs to. Borrowed from a case-folded copy of the name, so that
/// no allocation happens per connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reach<'a> {
    /// A registrable domain, lower case (or the whole name when it has no registrable
    /// part, as `localhost`).
    Site(&'a [u8]),
    /// The first three bytes of an IPv4 address.
    V4Net([u8; 3]),
    /// The first six bytes of an IPv6 address.
    V6Net([u8; 6]),
}

/// Scratch space for [`reach`]: the case-folded name lives here.
pub type ReachBuf = [u8; MAX_DOMAIN_LEN];

/// The site `target` belongs to; `buf` holds the folded name the answer borrows.
pub fn reach<'a>(target: &TargetAddr, buf: &'a mut ReachBuf) -> Reach<'a> {
    match target {
        TargetAddr::Ip(addr) => network(addr.ip()),
        TargetAddr::Domain { host, .. } => {
            let len = host.len().min(MAX_DOMAIN_LEN);
            let name = &mut buf[..len];
            name.copy_from_slice(&host.as_bytes()[..len]);
            name.make_ascii_lowercase();
            let name: &'a [u8] = name;
            let trimmed = name.strip_suffix(b".").unwrap_or(name);
            match psl::domain(trimmed) {
                Some(domain) => Reach::Site(domain.as_bytes()),
                None => Reach::Site(trimmed),
            }
        }
    }
}

fn network(ip: IpAddr) -> Reach<'static> {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            Reach::V4Net([o[0], o[1], o[2]])
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => network(IpAddr::V4(v4)),
            None => {
                let o = v6.octets();
                Reach::V6Net([o[0], o[1], o[2], o[3], o[4], o[5]])
            }
        },
    }
}

impl Reach<'_> {
    /// Bytes that identify the site unambiguously (a tag byte, then the name or net).
    pub fn write_to(&self, out: &mut impl FnMut(&[u8])) {
        match self {
            Reach::Site(name) => {
                out(b"d");
                out(name);
            }
            Reach::V4Net(net) => {
                out(b"4");
                out(net);
            }
            Reach::V6Net(net) => {
                out(b"6");
                out(net);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(host: &str) -> String {
        let mut buf = [0u8; MAX_DOMAIN_LEN];
        let target = TargetAddr::domain(host, 443).unwrap();
        match reach(&target, &mut buf) {
            Reach::Site(s) => String::from_utf8(s.to_vec()).unwrap(),
            other => format!("{other:?}"),
        }
    }

    #[test]
    fn names_fold_to_their_registrable_domain() {
        assert_eq!(site("WWW.Example.COM"), "example.com");
        assert_eq!(site("a.b.shop.example.co.uk"), "example.co.uk");
        assert_eq!(site("example.com."), "example.com");
        assert_eq!(site("user.github.io"), "user.github.io");
        assert_eq!(site("localhost"), "localhost");
    }

    #[test]
    fn addresses_fold_to_their_network() {
        let mut buf = [0u8; MAX_DOMAIN_LEN];
        let a = TargetAddr::Ip("10.1.2.3:80".parse().unwrap());
        let b = TargetAddr::Ip("10.1.2.200:25".parse().unwrap());
        assert_eq!(reach(&a, &mut buf), Reach::V4Net([10, 1, 2]));
        let mut buf2 = [0u8; MAX_DOMAIN_LEN];
        assert_eq!(reach(&a, &mut buf), reach(&b, &mut buf2));
        let v6 = TargetAddr::Ip("[2001:db8:1::5]:443".parse().unwrap());
        assert_eq!(
            reach(&v6, &mut buf),
            Reach::V6Net([0x20, 0x01, 0x0d, 0xb8, 0, 1])
        );
        let mapped = TargetAddr::Ip("[::ffff:10.1.2.9]:80".parse().unwrap());
        assert_eq!(reach(&mapped, &mut buf), Reach::V4Net([10, 1, 2]));
    }
}
