//! Framing at the start of each relay stream.
//!
//! Server -> node: [`RelayHeader`] = `version: u8 | length: varint | body`, where the
//! body is `atyp: u8 | address | port: u16 | connect_timeout_ms: varint | flags: varint`
//! followed by extension bytes that this version ignores. `atyp` uses SOCKS5 numbering
//! (1 = IPv4, 3 = domain, 4 = IPv6).
//!
//! Node -> server: [`RelayReply`] = `version: u8 | status: u8 | length: varint |
//! message`. Only after an [`RelayStatus::Ok`] reply do payload bytes flow; on any
//! other status the node finishes the stream.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use super::codec::{put_bytes, put_varint, split_frame, Reader};
use super::{WireError, WIRE_VERSION};
use crate::target::{TargetAddr, MAX_DOMAIN_LEN};
use crate::RelayStatus;

/// Largest relay header body accepted.
pub const MAX_RELAY_HEADER: usize = 1024;
/// Largest reply message accepted.
pub const MAX_REPLY_MESSAGE: usize = 256;

const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;

/// What the server asks a node to connect to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayHeader {
    /// The destination.
    pub target: TargetAddr,
    /// How long the node may spend resolving and connecting, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Option bits, reserved for later use; unknown bits are ignored.
    pub flags: u64,
}

impl RelayHeader {
    /// Appends the encoded header to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut body = Vec::with_capacity(32);
        match &self.target {
            TargetAddr::Ip(SocketAddr::V4(a)) => {
                body.push(ATYP_V4);
                body.extend_from_slice(&a.ip().octets());
            }
            TargetAddr::Ip(SocketAddr::V6(a)) => {
                body.push(ATYP_V6);
                body.extend_from_slice(&a.ip().octets());
            }
            TargetAddr::Domain { host, .. } => {
                body.push(ATYP_DOMAIN);
                put_bytes(&mut body, host.as_bytes());
            }
        }
        body.extend_from_slice(&self.target.port().to_be_bytes());
        put_varint(&mut body, self.connect_timeout_ms);
        put_varint(&mut body, self.flags);
        out.push(WIRE_VERSION);
        put_bytes(out, &body);
    }

    /// Decodes a header from the front of `buf`. `Ok(None)` means more input is needed;
    /// `Ok(Some((header, used)))` gives the number of bytes consumed.
    ///
    /// # Errors
    /// [`WireError`] for an unknown version, an oversized or malformed header, or an
    /// invalid target.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let Some((body, used)) = split_frame(&buf[1..], "relay header", MAX_RELAY_HEADER)? else {
            return Ok(None);
        };
        let mut r = Reader::new(body);
        let atyp = r.u8("address type")?;
        let target = match atyp {
            ATYP_V4 => {
                let o = r.take(4, "ipv4 address")?;
                let ip = Ipv4Addr::new(o[0], o[1], o[2], o[3]);
                TargetAddr::ip(SocketAddr::new(ip.into(), r.u16("port")?))?
            }
            ATYP_V6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(r.take(16, "ipv6 address")?);
                TargetAddr::ip(SocketAddr::new(Ipv6Addr::from(o).into(), r.u16("port")?))?
            }
            ATYP_DOMAIN => {
                let host = r.bytes("domain", MAX_DOMAIN_LEN)?;
                let host = std::str::from_utf8(host).map_err(|_| WireError::NotUtf8("domain"))?;
                let port = r.u16("port")?;
                TargetAddr::domain(host, port)?
            }
            other => {
                return Err(WireError::UnknownValue {
                    field: "address type",
                    value: other.into(),
                })
            }
        };
        let connect_timeout_ms = r.varint("connect timeout")?;
        let flags = r.varint("flags")?;
        Ok(Some((
            RelayHeader {
                target,
                connect_timeout_ms,
                flags,
            },
            1 + used,
        )))
    }
}

/// The node's side of a relay stream's start: fed the stream's bytes in whatever chunks
/// they arrive, it yields the header and the payload bytes that followed it. Memory is
/// bounded by the header limit: more input without a complete header is an error.
#[derive(Debug, Default)]
pub struct RelayHeaderReader {
    acc: Vec<u8>,
}

/// The most bytes a complete header can span: version, a 9-byte varint length, body.
const MAX_HEADER_SPAN: usize = 1 + 9 + MAX_RELAY_HEADER;

impl RelayHeaderReader {
    /// An empty reader.
    pub fn new() -> Self {
        RelayHeaderReader::default()
    }

    /// Feeds the next `chunk`; `fin` when the stream ended after it. `Ok(None)` asks
    /// for more; `Ok(Some((header, rest)))` is final, `rest` being the payload bytes
    /// that came after the header.
    ///
    /// # Errors
    /// What [`RelayHeader::decode`] reports, [`WireError::Truncated`] when the stream
    /// ends inside the header, and [`WireError::TooLong`] past the header limit.
    pub fn feed(
        &mut self,
        chunk: &[u8],
        fin: bool,
    ) -> Result<Option<(RelayHeader, Vec<u8>)>, WireError> {
        self.acc.extend_from_slice(chunk);
        match RelayHeader::decode(&self.acc)? {
            Some((header, used)) => Ok(Some((header, self.acc.split_off(used)))),
            None if fin => Err(WireError::Truncated("relay header")),
            None if self.acc.len() > MAX_HEADER_SPAN => Err(WireError::TooLong {
                field: "relay header",
                len: self.acc.len() as u64,
                max: MAX_HEADER_SPAN as u64,
            }),
            None => Ok(None),
        }
    }
}

/// The node's answer on a relay stream, sent before any payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayReply {
    /// The outcome.
    pub status: RelayStatus,
    /// Detail for logs and `Proxy-Status` (for example the resolver's error).
    pub message: String,
}

impl RelayReply {
    /// A success reply with no message.
    pub fn ok() -> Self {
        RelayReply {
            status: RelayStatus::Ok,
            message: String::new(),
        }
    }

    /// Appends the encoded reply to `out`. Messages are truncated to
    /// [`MAX_REPLY_MESSAGE`] bytes at a character boundary.
    pub fn encode(&self, out: &mut Vec<u8>) {
        let mut end = self.message.len().min(MAX_REPLY_MESSAGE);
        while !self.message.is_char_boundary(end) {
            end -= 1;
        }
        out.push(WIRE_VERSION);
        out.push(self.status.code());
        put_bytes(out, &self.message.as_bytes()[..end]);
    }

    /// Decodes a reply from the front of `buf`. `Ok(None)` means more input is needed.
    ///
    /// # Errors
    /// [`WireError`] for an unknown version, an oversized or non-UTF-8 message.
    pub fn decode(buf: &[u8]) -> Result<Option<(Self, usize)>, WireError> {
        let Some(&version) = buf.first() else {
            return Ok(None);
        };
        if version != WIRE_VERSION {
            return Err(WireError::UnsupportedVersion(version));
        }
        let Some(&code) = buf.get(1) else {
            return Ok(None);
        };
        let Some((msg, used)) = split_frame(&buf[2..], "reply message", MAX_REPLY_MESSAGE)? else {
            return Ok(None);
        };
        let message = std::str::from_utf8(msg)
            .map_err(|_| WireError::NotUtf8("reply message"))?
            .to_owned();
        Ok(Some((
            RelayReply {
                status: RelayStatus::from_code(code),
                message,
            },
            2 + used,
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers() -> Vec<RelayHeader> {
        vec![
            RelayHeader {
                target: TargetAddr::Ip("1.2.3.4:80".parse().unwrap()),
                connect_timeout_ms: 10_000,
                flags: 0,
            },
            RelayHeader {
                target: TargetAddr::Ip("[2001:db8::1]:443".parse().unwrap()),
                connect_timeout_ms: 1,
                flags: 5,
            },
            RelayHeader {
                target: TargetAddr::domain("example.com", 8080).unwrap(),
                connect_timeout_ms: 0,
                flags: 0,
            },
        ]
    }

    #[test]
    fn header_round_trip_byte_by_byte() {
        for h in headers() {
            let mut wire = Vec::new();
            h.encode(&mut wire);
            wire.extend_from_slice(b"payload");
            for cut in 0..wire.len() - 7 {
                assert_eq!(
                    RelayHeader::decode(&wire[..cut]).unwrap(),
                    None,
                    "cut {cut}"
                );
            }
            let (got, used) = RelayHeader::decode(&wire).unwrap().unwrap();
            assert_eq!(got, h);
            assert_eq!(&wire[used..], b"payload");
        }
    }

    #[test]
    fn header_ignores_extension_bytes() {
        let h = &headers()[0];
        let mut body = Vec::new();
        h.encode(&mut body);
        // Re-frame with two extra extension bytes.
        let inner = &body[2..];
        let mut wire = vec![WIRE_VERSION];
        let mut ext = inner.to_vec();
        ext.extend_from_slice(&[9, 9]);
        put_bytes(&mut wire, &ext);
        let (got, used) = RelayHeader::decode(&wire).unwrap().unwrap();
        assert_eq!(&got, h);
        assert_eq!(used, wire.len());
    }

    #[test]
    fn header_rejects_hostile_input() {
        assert_eq!(
            RelayHeader::decode(&[9]),
            Err(WireError::UnsupportedVersion(9))
        );
        let mut wire = vec![WIRE_VERSION];
        put_varint(&mut wire, 100_000);
        assert!(matches!(
            RelayHeader::decode(&wire),
            Err(WireError::TooLong { .. })
        ));
        // Domain with a NUL byte.
        let mut body = vec![ATYP_DOMAIN];
        put_bytes(&mut body, b"a\0b");
        body.extend_from_slice(&80u16.to_be_bytes());
        body.extend_from_slice(&[0, 0]);
        let mut wire = vec![WIRE_VERSION];
        put_bytes(&mut wire, &body);
        assert!(matches!(
            RelayHeader::decode(&wire),
            Err(WireError::BadTarget(_))
        ));
        // Port 0.
        let mut body = vec![ATYP_V4, 1, 2, 3, 4, 0, 0, 0, 0];
        let mut wire = vec![WIRE_VERSION];
        put_bytes(&mut wire, &body);
        assert!(RelayHeader::decode(&wire).is_err());
        body[0] = 2;
        let mut wire = vec![WIRE_VERSION];
        put_bytes(&mut wire, &body);
        assert!(matches!(
            RelayHeader::decode(&wire),
            Err(WireError::UnknownValue { .. })
        ));
    }

    #[test]
    fn reply_round_trip_byte_by_byte() {
        let r = RelayReply {
            status: RelayStatus::DnsFailure,
            message: "no such host".into(),
        };
        let mut wire = Vec::new();
        r.encode(&mut wire);
        for cut in 0..wire.len() {
            assert_eq!(RelayReply::decode(&wire[..cut]).unwrap(), None);
        }
        assert_eq!(RelayReply::decode(&wire).unwrap(), Some((r, wire.len())));
    }

    #[test]
    fn long_reply_message_is_truncated_on_a_char_boundary() {
        let r = RelayReply {
            status: RelayStatus::GeneralFailure,
            message: "é".repeat(200),
        };
        let mut wire = Vec::new();
        r.encode(&mut wire);
        let (got, _) = RelayReply::decode(&wire).unwrap().unwrap();
        assert_eq!(got.message.len(), MAX_REPLY_MESSAGE);
    }
}
