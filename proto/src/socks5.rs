//! SOCKS5 server handshake (RFC 1928) with username/password authentication
//! (RFC 1929), as a sans-IO state machine.
//!
//! Driver loop:
//! ```text
//! loop {
//!     let step = hs.input(&bytes_read)?;   // on Err: write hs.take_output(), close
//!     write hs.take_output() to the client;
//!     match step {
//!         NeedInput => read more,
//!         Credentials(c) => { hs.auth_result(check(c)); write hs.take_output();
//!                             continue with hs.input(&[]) }
//!         Connect(target) => break,
//!     }
//! }
//! // connect, then: encode_reply(status.socks_reply(), bound, &mut out)
//! // hs.into_leftover() holds bytes the client pipelined after the request.
//! ```
//! Only the username/password method (0x02) is offered; only CONNECT is supported.
//! Every failure queues the reply the RFCs prescribe before the error is returned.

use std::net::SocketAddr;

use crate::target::TargetAddr;
use crate::Credentials;

/// SOCKS5 reply codes (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Reply {
    /// 0x00 succeeded.
    Succeeded = 0,
    /// 0x01 general SOCKS server failure.
    GeneralFailure = 1,
    /// 0x02 connection not allowed by ruleset.
    NotAllowed = 2,
    /// 0x03 network unreachable.
    NetworkUnreachable = 3,
    /// 0x04 host unreachable.
    HostUnreachable = 4,
    /// 0x05 connection refused.
    ConnectionRefused = 5,
    /// 0x06 TTL expired (used for timeouts).
    TtlExpired = 6,
    /// 0x07 command not supported.
    CommandNotSupported = 7,
    /// 0x08 address type not supported.
    AddressTypeNotSupported = 8,
}

/// Appends a SOCKS5 reply (`VER REP RSV ATYP BND.ADDR BND.PORT`) to `out`. Without a
/// bound address, `0.0.0.0:0` is sent.
pub fn encode_reply(reply: Reply, bound: Option<SocketAddr>, out: &mut Vec<u8>) {
    todo!("{reply:?} {bound:?} {}", out.len())
}

/// What the handshake needs from the driver next.
#[derive(Debug, PartialEq, Eq)]
pub enum Socks5Step {
    /// Flush [`Socks5Handshake::take_output`], then feed more bytes.
    NeedInput,
    /// The client sent credentials. Verify them, then call
    /// [`Socks5Handshake::auth_result`].
    Credentials(Credentials),
    /// The client asked to CONNECT to this target. The handshake is over; reply with
    /// [`encode_reply`].
    Connect(TargetAddr),
}

/// A handshake failure. The matching reply (if the protocol has one) is already queued
/// in the output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Socks5Error {
    /// The first byte was not 5 (for example an HTTP request sent to the SOCKS port).
    #[error("not SOCKS5: version byte {0:#04x}")]
    BadVersion(u8),
    /// The greeting offered zero methods.
    #[error("greeting offers no methods")]
    NoMethods,
    /// The client does not offer username/password authentication; `0xFF` was sent.
    #[error("no acceptable authentication method")]
    NoAcceptableMethod,
    /// The username/password sub-negotiation used a version other than 1.
    #[error("bad auth sub-negotiation version {0:#04x}")]
    BadAuthVersion(u8),
    /// Username or password is empty.
    #[error("empty username or password")]
    EmptyCredentials,
    /// Username or password is not UTF-8.
    #[error("credentials are not UTF-8")]
    CredentialsNotUtf8,
    /// The credentials were refused by the driver; status 1 was sent.
    #[error("authentication failed")]
    AuthFailed,
    /// The request used a command other than CONNECT; reply 0x07 was sent.
    #[error("command {0:#04x} not supported")]
    CommandNotSupported(u8),
    /// The request used an unknown address type; reply 0x08 was sent.
    #[error("address type {0:#04x} not supported")]
    AddressTypeNotSupported(u8),
    /// The request's reserved byte was not zero; reply 0x01 was sent.
    #[error("reserved byte is {0:#04x}")]
    BadReserved(u8),
    /// The requested target is invalid (empty or bad domain, port 0); reply 0x01 or
    /// 0x04 was sent.
    #[error("invalid target: {0}")]
    BadTarget(#[from] crate::target::TargetError),
    /// Input arrived while the driver owed an answer (`auth_result`), or after the
    /// handshake finished.
    #[error("input out of order")]
    OutOfOrder,
}

/// The server side of a SOCKS5 handshake.
#[derive(Debug, Default)]
pub struct Socks5Handshake {
    _todo: (),
}

impl Socks5Handshake {
    /// A handshake waiting for the client greeting.
    pub fn new() -> Self {
        todo!()
    }

    /// Appends `bytes` and advances as far as possible. Pass an empty slice to continue
    /// after [`auth_result`](Self::auth_result) with already-buffered input.
    ///
    /// # Errors
    /// [`Socks5Error`]: the driver writes [`take_output`](Self::take_output) and closes.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Socks5Step, Socks5Error> {
        todo!("{}", bytes.len())
    }

    /// Tells the handshake whether the credentials were accepted; queues the RFC 1929
    /// status reply.
    pub fn auth_result(&mut self, accepted: bool) {
        todo!("{accepted}")
    }

    /// Takes the bytes queued for the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        todo!()
    }

    /// Bytes the client sent after the CONNECT request (pipelined payload).
    pub fn into_leftover(self) -> Vec<u8> {
        todo!()
    }
}
