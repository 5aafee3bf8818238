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

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use crate::target::TargetAddr;
use crate::Credentials;

const VERSION: u8 = 5;
const METHOD_USERPASS: u8 = 0x02;
const METHOD_NONE_ACCEPTABLE: u8 = 0xFF;
const AUTH_VERSION: u8 = 1;
const CMD_CONNECT: u8 = 1;
const ATYP_IPV4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_IPV6: u8 = 4;

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
    out.extend_from_slice(&[VERSION, reply as u8, 0]);
    match bound {
        Some(SocketAddr::V4(a)) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Some(SocketAddr::V6(a)) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        None => out.extend_from_slice(&[ATYP_IPV4, 0, 0, 0, 0, 0, 0]),
    }
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

/// Where the handshake stands.
#[derive(Debug, Default)]
enum State {
    /// Waiting for `VER NMETHODS METHODS`.
    #[default]
    Greeting,
    /// Waiting for the RFC 1929 `VER ULEN UNAME PLEN PASSWD`.
    Auth,
    /// Credentials handed to the driver; waiting for [`Socks5Handshake::auth_result`].
    AwaitAuthResult,
    /// Waiting for `VER CMD RSV ATYP DST.ADDR DST.PORT`.
    Request,
    /// `Connect` was returned; only `into_leftover` remains.
    Done,
    /// The handshake failed; every later `input` returns this error again.
    Failed(Socks5Error),
}

/// The server side of a SOCKS5 handshake.
#[derive(Default)]
pub struct Socks5Handshake {
    state: State,
    /// Received bytes not yet consumed by a complete message.
    buf: Vec<u8>,
    /// Bytes queued for the client.
    out: Vec<u8>,
}

/// Shows the state and buffer sizes only: the buffer may hold a password.
impl std::fmt::Debug for Socks5Handshake {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Socks5Handshake")
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("queued", &self.out.len())
            .finish()
    }
}

/// Result of trying to parse one message from the buffer.
enum Parsed<T> {
    /// More bytes are needed.
    Incomplete,
    /// A complete message of this many bytes.
    Done(T, usize),
}

impl Socks5Handshake {
    /// A handshake waiting for the client greeting.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `bytes` and advances as far as possible. Pass an empty slice to continue
    /// after [`auth_result`](Self::auth_result) with already-buffered input.
    ///
    /// # Errors
    /// [`Socks5Error`]: the driver writes [`take_output`](Self::take_output) and closes.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Socks5Step, Socks5Error> {
        match &self.state {
            State::Failed(e) => return Err(e.clone()),
            // The handshake stays finished (and `into_leftover` intact); `bytes` are
            // not taken.
            State::Done => return Err(Socks5Error::OutOfOrder),
            State::AwaitAuthResult => return Err(self.fail(Socks5Error::OutOfOrder)),
            State::Greeting | State::Auth | State::Request => {}
        }
        self.buf.extend_from_slice(bytes);
        let result = self.advance();
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn fail(&mut self, e: Socks5Error) -> Socks5Error {
        self.state = State::Failed(e.clone());
        e
    }

    fn advance(&mut self) -> Result<Socks5Step, Socks5Error> {
        loop {
            match self.state {
                State::Greeting => match self.greeting()? {
                    Parsed::Incomplete => return Ok(Socks5Step::NeedInput),
                    Parsed::Done((), n) => {
                        self.buf.drain(..n);
                        self.out.extend_from_slice(&[VERSION, METHOD_USERPASS]);
                        self.state = State::Auth;
                    }
                },
                State::Auth => match self.auth()? {
                    Parsed::Incomplete => return Ok(Socks5Step::NeedInput),
                    Parsed::Done(credentials, n) => {
                        self.buf.drain(..n);
                        self.state = State::AwaitAuthResult;
                        return Ok(Socks5Step::Credentials(credentials));
                    }
                },
                State::Request => match self.request()? {
                    Parsed::Incomplete => return Ok(Socks5Step::NeedInput),
                    Parsed::Done(target, n) => {
                        self.buf.drain(..n);
                        self.state = State::Done;
                        return Ok(Socks5Step::Connect(target));
                    }
                },
                // `input` filters these states out before calling `advance`.
                State::AwaitAuthResult | State::Done | State::Failed(_) => {
                    return Err(Socks5Error::OutOfOrder)
                }
            }
        }
    }

    /// `VER NMETHODS METHODS...`
    fn greeting(&mut self) -> Result<Parsed<()>, Socks5Error> {
        let b = &self.buf;
        let Some(&ver) = b.first() else {
            return Ok(Parsed::Incomplete);
        };
        if ver != VERSION {
            return Err(Socks5Error::BadVersion(ver));
        }
        let Some(&n) = b.get(1) else {
            return Ok(Parsed::Incomplete);
        };
        if n == 0 {
            self.out
                .extend_from_slice(&[VERSION, METHOD_NONE_ACCEPTABLE]);
            return Err(Socks5Error::NoMethods);
        }
        let len = 2 + usize::from(n);
        let Some(methods) = b.get(2..len) else {
            return Ok(Parsed::Incomplete);
        };
        if !methods.contains(&METHOD_USERPASS) {
            self.out
                .extend_from_slice(&[VERSION, METHOD_NONE_ACCEPTABLE]);
            return Err(Socks5Error::NoAcceptableMethod);
        }
        Ok(Parsed::Done((), len))
    }

    /// `VER ULEN UNAME PLEN PASSWD` (RFC 1929).
    fn auth(&mut self) -> Result<Parsed<Credentials>, Socks5Error> {
        let b = &self.buf;
        let Some(&ver) = b.first() else {
            return Ok(Parsed::Incomplete);
        };
        if ver != AUTH_VERSION {
            self.out.extend_from_slice(&[AUTH_VERSION, 1]);
            return Err(Socks5Error::BadAuthVersion(ver));
        }
        let Some(&ulen) = b.get(1) else {
            return Ok(Parsed::Incomplete);
        };
        let uend = 2 + usize::from(ulen);
        let Some(&plen) = b.get(uend) else {
            return Ok(Parsed::Incomplete);
        };
        let pend = uend + 1 + usize::from(plen);
        if b.len() < pend {
            return Ok(Parsed::Incomplete);
        }
        let (user, pass) = (&b[2..uend], &b[uend + 1..pend]);
        if user.is_empty() || pass.is_empty() {
            self.out.extend_from_slice(&[AUTH_VERSION, 1]);
            return Err(Socks5Error::EmptyCredentials);
        }
        match (std::str::from_utf8(user), std::str::from_utf8(pass)) {
            (Ok(u), Ok(p)) => Ok(Parsed::Done(
                Credentials {
                    username: u.to_owned(),
                    password: p.to_owned(),
                },
                pend,
            )),
            _ => {
                self.out.extend_from_slice(&[AUTH_VERSION, 1]);
                Err(Socks5Error::CredentialsNotUtf8)
            }
        }
    }

    /// `VER CMD RSV ATYP DST.ADDR DST.PORT`. Each field is checked as soon as it has
    /// arrived, so split input reports the same error as whole input.
    fn request(&mut self) -> Result<Parsed<TargetAddr>, Socks5Error> {
        let b = &self.buf;
        let Some(&ver) = b.first() else {
            return Ok(Parsed::Incomplete);
        };
        if ver != VERSION {
            encode_reply(Reply::GeneralFailure, None, &mut self.out);
            return Err(Socks5Error::BadVersion(ver));
        }
        let Some(&cmd) = b.get(1) else {
            return Ok(Parsed::Incomplete);
        };
        if cmd != CMD_CONNECT {
            encode_reply(Reply::CommandNotSupported, None, &mut self.out);
            return Err(Socks5Error::CommandNotSupported(cmd));
        }
        let Some(&rsv) = b.get(2) else {
            return Ok(Parsed::Incomplete);
        };
        if rsv != 0 {
            encode_reply(Reply::GeneralFailure, None, &mut self.out);
            return Err(Socks5Error::BadReserved(rsv));
        }
        let Some(&atyp) = b.get(3) else {
            return Ok(Parsed::Incomplete);
        };
        let (addr_len, addr_start) = match atyp {
            ATYP_IPV4 => (4, 4),
            ATYP_IPV6 => (16, 4),
            ATYP_DOMAIN => match b.get(4) {
                Some(&n) => (usize::from(n), 5),
                None => return Ok(Parsed::Incomplete),
            },
            other => {
                encode_reply(Reply::AddressTypeNotSupported, None, &mut self.out);
                return Err(Socks5Error::AddressTypeNotSupported(other));
            }
        };
        let addr_end = addr_start + addr_len;
        let len = addr_end + 2;
        if b.len() < len {
            return Ok(Parsed::Incomplete);
        }
        let addr = &b[addr_start..addr_end];
        let port = u16::from_be_bytes([b[addr_end], b[addr_end + 1]]);
        let target = match atyp {
            ATYP_IPV4 => {
                let mut o = [0u8; 4];
                o.copy_from_slice(addr);
                TargetAddr::ip(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(o), port)))
            }
            ATYP_IPV6 => {
                let mut o = [0u8; 16];
                o.copy_from_slice(addr);
                TargetAddr::ip(SocketAddr::V6(SocketAddrV6::new(
                    Ipv6Addr::from(o),
                    port,
                    0,
                    0,
                )))
            }
            _ => match std::str::from_utf8(addr) {
                Ok(host) => TargetAddr::domain(host, port),
                Err(_) => Err(crate::target::TargetError::BadHostChar),
            },
        };
        match target {
            Ok(t) => Ok(Parsed::Done(t, len)),
            Err(e) => {
                encode_reply(Reply::GeneralFailure, None, &mut self.out);
                Err(Socks5Error::BadTarget(e))
            }
        }
    }

    /// Tells the handshake whether the credentials were accepted; queues the RFC 1929
    /// status reply. Ignored unless the handshake is waiting for this answer.
    pub fn auth_result(&mut self, accepted: bool) {
        if !matches!(self.state, State::AwaitAuthResult) {
            return;
        }
        if accepted {
            self.out.extend_from_slice(&[AUTH_VERSION, 0]);
            self.state = State::Request;
        } else {
            self.out.extend_from_slice(&[AUTH_VERSION, 1]);
            self.state = State::Failed(Socks5Error::AuthFailed);
        }
    }

    /// Takes the bytes queued for the client.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Bytes the client sent after the CONNECT request (pipelined payload).
    pub fn into_leftover(self) -> Vec<u8> {
        if matches!(self.state, State::Done) {
            self.buf
        } else {
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests;
