//! The server list a server sends its nodes ([`super::ControlMessage::Servers`]): every
//! live server of the network with the address nodes dial and its certificate pin, so
//! that a node can keep connections to two of them. The list travels over a pinned
//! connection, so a node trusts each entry's pin as it would a join string's.
//!
//! Body: `count: varint | count × (id | addr | pin: 32 bytes | flags: u8)`, strings
//! length-prefixed. Flag bit 0: the server is draining (dial it no more); bit 1: this
//! entry is the server that sent the list (how a node that dialled a join string
//! learns which entry it is connected to).

use super::super::codec::{put_bytes, put_varint, Reader};
use super::super::WireError;

/// Most servers in one list (a list fits one control frame).
pub const MAX_SERVERS: usize = 24;
/// Longest server id.
pub const MAX_SERVER_ID: usize = 32;
/// Longest `host:port`.
pub const MAX_SERVER_ADDR: usize = 96;

const FLAG_DRAINING: u8 = 1;
const FLAG_SENDER: u8 = 2;

/// One server of the network, as nodes need it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ServerInfo {
    /// The server's id (`s` + 8 hex digits), unique while it runs.
    pub id: String,
    /// Where nodes dial its QUIC endpoint: `host:port` (IPv6 in brackets).
    pub addr: String,
    /// SHA-256 of its certificate (DER), as in a join string.
    pub pin: [u8; 32],
    /// It is shutting down: keep no connection to it.
    pub draining: bool,
    /// It is the server that sent this list.
    pub sender: bool,
}

/// Appends a list of at most [`MAX_SERVERS`] (the rest is cut) to `body`.
pub(super) fn put(list: &[ServerInfo], body: &mut Vec<u8>) {
    let list = &list[..list.len().min(MAX_SERVERS)];
    put_varint(body, list.len() as u64);
    for s in list {
        put_bytes(body, &s.id.as_bytes()[..s.id.len().min(MAX_SERVER_ID)]);
        put_bytes(
            body,
            &s.addr.as_bytes()[..s.addr.len().min(MAX_SERVER_ADDR)],
        );
        body.extend_from_slice(&s.pin);
        let flags = [(s.draining, FLAG_DRAINING), (s.sender, FLAG_SENDER)];
        body.push(flags.iter().filter(|f| f.0).fold(0, |a, f| a | f.1));
    }
}

/// Reads a list written by [`put`]; more than [`MAX_SERVERS`] entries is an error.
pub(super) fn read(r: &mut Reader<'_>) -> Result<Vec<ServerInfo>, WireError> {
    let n = r.varint("server count")?;
    if n > MAX_SERVERS as u64 {
        return Err(WireError::UnknownValue {
            field: "server count",
            value: n,
        });
    }
    let mut list = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let id = r.string("server id", MAX_SERVER_ID)?;
        let addr = r.string("server addr", MAX_SERVER_ADDR)?;
        let pin: [u8; 32] = r
            .take(32, "server pin")?
            .try_into()
            .map_err(|_| WireError::Truncated("server pin"))?;
        let flags = r.u8("server flags")?;
        list.push(ServerInfo {
            id,
            addr,
            pin,
            draining: flags & FLAG_DRAINING != 0,
            sender: flags & FLAG_SENDER != 0,
        });
    }
    Ok(list)
}
