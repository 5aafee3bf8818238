//! The server<->node protocol, carried over one QUIC connection per node.
//!
//! - The node opens the first client bidirectional stream (id 0) as the **control
//!   stream** and speaks [`control::ControlMessage`] frames on it: hello, welcome, ping,
//!   stats, drain.
//! - The server opens one **relay stream** (server-initiated bidirectional) per customer
//!   connection. It starts with a [`relay::RelayHeader`]; the node answers with a
//!   [`relay::RelayReply`] before any payload byte, then both sides relay raw bytes.
//!   Stream FIN is TCP FIN; a stream reset is a TCP abort.
//!
//! Every message starts with a version byte, so the format can evolve. Integers are
//! QUIC variable-length integers (RFC 9000 section 16); strings are length-prefixed
//! UTF-8 with per-field bounds.

pub mod codec;
pub mod control;
pub mod relay;

/// ALPN token of the server<->node protocol.
pub const ALPN: &[u8] = b"turbo/1";
/// Version of the wire format spoken by this build.
pub const WIRE_VERSION: u8 = 1;

/// Flow control both ends advertise for relay streams, and the delivery reports that
/// bound what the server sends ahead of them. The numbers are shared so that the server
/// and the node never disagree.
///
/// A relay stream's receive window starts at [`STREAM_WINDOW_INITIAL`] and grows (quiche
/// auto-tuning, only while the reader keeps up) to at most [`STREAM_WINDOW`], so a
/// stream nobody drains holds at most that much of the connection's shared
/// [`CONNECTION_WINDOW`]: 200 stalled streams take 200 MiB of 1 GiB, and live streams
/// keep moving.
pub mod window {
    /// A relay stream's first receive window.
    pub const STREAM_WINDOW_INITIAL: u64 = 256 << 10;
    /// Largest receive window a relay stream can grow to: the most one stream may hold
    /// unread.
    pub const STREAM_WINDOW: u64 = 1 << 20;
    /// A node connection's shared receive window (fixed, not auto-tuned).
    pub const CONNECTION_WINDOW: u64 = 1 << 30;
    /// Most upstream bytes the server sends on a relay stream beyond what the node has
    /// reported delivered to the target
    /// ([`super::control::ControlMessage::Delivered`]), whatever windows the node
    /// advertises.
    pub const MAX_UNDELIVERED: u64 = 4 << 20;
    /// The node reports deliveries at least every this many bytes, and when the
    /// direction ends.
    pub const DELIVERED_EVERY: u64 = 256 << 10;
}

/// A malformed or hostile message from the peer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message declares a version this build does not speak.
    #[error("unsupported wire version {0}")]
    UnsupportedVersion(u8),
    /// A length field exceeds the bound for that field.
    #[error("{field} is {len} bytes, more than the limit of {max}")]
    TooLong {
        /// Which field.
        field: &'static str,
        /// Declared length.
        len: u64,
        /// The bound.
        max: u64,
    },
    /// The message ended before a field was complete (inside a length-delimited frame).
    #[error("truncated {0}")]
    Truncated(&'static str),
    /// A string field is not UTF-8.
    #[error("{0} is not UTF-8")]
    NotUtf8(&'static str),
    /// An enum field carries an unknown value.
    #[error("unknown {field} value {value}")]
    UnknownValue {
        /// Which field.
        field: &'static str,
        /// The value received.
        value: u64,
    },
    /// The target in a relay header is invalid.
    #[error("invalid target: {0}")]
    BadTarget(#[from] crate::target::TargetError),
}
