//! The destination a customer asked for: an IP socket address or a domain name that the
//! node resolves (remote DNS, as `socks5h` expects).

use std::fmt;
use std::net::SocketAddr;

/// Longest domain name accepted anywhere in Turbo (RFC 1035 limit for a presentation name).
pub const MAX_DOMAIN_LEN: usize = 253;

/// A relay target.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// A literal IPv4 or IPv6 address and port.
    Ip(SocketAddr),
    /// A host name and port, resolved by the node.
    Domain {
        /// The host name, without trailing dot handling or case folding.
        host: String,
        /// The TCP port.
        port: u16,
    },
}

/// Why a host name was refused by [`TargetAddr::domain`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    /// The host name is empty.
    #[error("empty host name")]
    EmptyHost,
    /// The host name is longer than [`MAX_DOMAIN_LEN`].
    #[error("host name longer than {MAX_DOMAIN_LEN} bytes")]
    HostTooLong,
    /// The host name has a byte that no DNS name may carry (NUL, space, control, `/`...).
    #[error("host name has a forbidden character")]
    BadHostChar,
    /// Port 0 is not a valid destination.
    #[error("port 0 is not a valid destination")]
    PortZero,
}

impl TargetAddr {
    /// Builds a domain target, validating the name and the port.
    ///
    /// A name that parses as an IP literal becomes [`TargetAddr::Ip`].
    ///
    /// # Errors
    /// [`TargetError`] when the name is empty, too long, has forbidden bytes, or the
    /// port is 0.
    pub fn domain(host: &str, port: u16) -> Result<Self, TargetError> {
        if port == 0 {
            return Err(TargetError::PortZero);
        }
        if host.is_empty() {
            return Err(TargetError::EmptyHost);
        }
        if host.len() > MAX_DOMAIN_LEN {
            return Err(TargetError::HostTooLong);
        }
        let literal = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        if let Ok(ip) = literal.parse::<std::net::IpAddr>() {
            return Ok(TargetAddr::Ip(SocketAddr::new(ip, port)));
        }
        if !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
        {
            return Err(TargetError::BadHostChar);
        }
        Ok(TargetAddr::Domain {
            host: host.to_owned(),
            port,
        })
    }

    /// Builds an IP target, refusing port 0.
    ///
    /// # Errors
    /// [`TargetError::PortZero`] for port 0.
    pub fn ip(addr: SocketAddr) -> Result<Self, TargetError> {
        if addr.port() == 0 {
            return Err(TargetError::PortZero);
        }
        Ok(TargetAddr::Ip(addr))
    }

    /// The destination port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(a) => a.port(),
            TargetAddr::Domain { port, .. } => *port,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(a) => a.fmt(f),
            TargetAddr::Domain { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_validation() {
        assert!(matches!(
            TargetAddr::domain("example.com", 443),
            Ok(TargetAddr::Domain { .. })
        ));
        assert_eq!(
            TargetAddr::domain("[::1]", 80),
            Ok(TargetAddr::Ip("[::1]:80".parse().unwrap()))
        );
        assert_eq!(
            TargetAddr::domain("10.0.0.1", 80),
            Ok(TargetAddr::Ip("10.0.0.1:80".parse().unwrap()))
        );
        assert_eq!(TargetAddr::domain("", 80), Err(TargetError::EmptyHost));
        assert_eq!(
            TargetAddr::domain("a\0b", 80),
            Err(TargetError::BadHostChar)
        );
        assert_eq!(TargetAddr::domain("a b", 80), Err(TargetError::BadHostChar));
        assert_eq!(TargetAddr::domain("a.com", 0), Err(TargetError::PortZero));
        assert_eq!(
            TargetAddr::domain(&"a".repeat(254), 80),
            Err(TargetError::HostTooLong)
        );
    }
}
