//! The join string an operator hands to a runner: everything a node needs to find and
//! trust its server, in one copy-pasteable line.
//!
//! Format: `turbo://<node-token>@<host>:<port>?pin=<sha256-hex>`. The pin is the SHA-256
//! of the server certificate (DER). Without a pin the node must be given a CA file.

use std::fmt;

/// A parsed join string.
#[derive(Clone, PartialEq, Eq)]
pub struct JoinString {
    /// The node's secret token. Never logged.
    pub token: String,
    /// Server host name or IP literal (IPv6 without brackets).
    pub host: String,
    /// Server QUIC port.
    pub port: u16,
    /// SHA-256 of the server certificate, if pinned.
    pub pin: Option<[u8; 32]>,
}

/// Why a join string was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    /// It does not start with `turbo://`.
    #[error("join string must start with turbo://")]
    Scheme,
    /// The token part is missing or has characters outside `[A-Za-z0-9_-]`.
    #[error("join string has no valid node token")]
    Token,
    /// The host or port is missing or invalid.
    #[error("join string has no valid host:port")]
    Address,
    /// The pin is not 64 hex digits.
    #[error("join string pin must be 64 hex digits")]
    Pin,
    /// An unknown query parameter.
    #[error("unknown join string parameter {0:?}")]
    UnknownParam(String),
}

impl JoinString {
    /// Parses a join string.
    ///
    /// # Errors
    /// [`JoinError`] naming the part that is wrong.
    pub fn parse(s: &str) -> Result<Self, JoinError> {
        let rest = s.trim().strip_prefix("turbo://").ok_or(JoinError::Scheme)?;
        let (token, rest) = rest.split_once('@').ok_or(JoinError::Token)?;
        if token.is_empty()
            || token.len() > 128
            || !token
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(JoinError::Token);
        }
        let (authority, query) = match rest.split_once('?') {
            Some((a, q)) => (a, Some(q)),
            None => (rest, None),
        };
        let authority = authority.trim_end_matches('/');
        let (host, port) = authority.rsplit_once(':').ok_or(JoinError::Address)?;
        let host = host
            .strip_prefix('[')
            .and_then(|h| h.strip_suffix(']'))
            .unwrap_or(host);
        let port: u16 = port.parse().map_err(|_| JoinError::Address)?;
        if host.is_empty() || port == 0 || host.contains(['/', '@', ' ']) {
            return Err(JoinError::Address);
        }
        let mut pin = None;
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            match pair.split_once('=') {
                Some(("pin", v)) => pin = Some(parse_pin(v)?),
                _ => return Err(JoinError::UnknownParam(pair.to_owned())),
            }
        }
        Ok(JoinString {
            token: token.to_owned(),
            host: host.to_owned(),
            port,
            pin,
        })
    }

    /// `host:port` suitable for resolving (IPv6 literals get brackets).
    pub fn server_addr(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

fn parse_pin(v: &str) -> Result<[u8; 32], JoinError> {
    let v = v.strip_prefix("sha256:").unwrap_or(v);
    if v.len() != 64 {
        return Err(JoinError::Pin);
    }
    let mut out = [0u8; 32];
    for (i, chunk) in v.as_bytes().chunks(2).enumerate() {
        let s = std::str::from_utf8(chunk).map_err(|_| JoinError::Pin)?;
        out[i] = u8::from_str_radix(s, 16).map_err(|_| JoinError::Pin)?;
    }
    Ok(out)
}

impl fmt::Display for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "turbo://{}@{}", self.token, self.server_addr())?;
        if let Some(pin) = &self.pin {
            f.write_str("?pin=")?;
            for b in pin {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for JoinString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinString")
            .field("token", &"<redacted>")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("pinned", &self.pin.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let j = JoinString {
            token: "nt_abc-DEF_1".into(),
            host: "::1".into(),
            port: 8443,
            pin: Some([0xab; 32]),
        };
        let s = j.to_string();
        assert!(s.starts_with("turbo://nt_abc-DEF_1@[::1]:8443?pin=abab"));
        assert_eq!(JoinString::parse(&s), Ok(j));
    }

    #[test]
    fn refuses_bad_strings() {
        assert_eq!(JoinString::parse("http://a@b:1"), Err(JoinError::Scheme));
        assert_eq!(JoinString::parse("turbo://b:1"), Err(JoinError::Token));
        assert_eq!(JoinString::parse("turbo://t@b"), Err(JoinError::Address));
        assert_eq!(JoinString::parse("turbo://t@b:0"), Err(JoinError::Address));
        assert_eq!(
            JoinString::parse("turbo://t@b:1?pin=zz"),
            Err(JoinError::Pin)
        );
        assert!(matches!(
            JoinString::parse("turbo://t@b:1?x=1"),
            Err(JoinError::UnknownParam(_))
        ));
        let ok = JoinString::parse("turbo://t@example.com:8443").unwrap();
        assert_eq!(ok.pin, None);
        assert_eq!(ok.server_addr(), "example.com:8443");
    }
}
