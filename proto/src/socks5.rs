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
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::target::TargetError;

    const GREETING: &[u8] = &[5, 1, 2];
    const AUTH: &[u8] = &[1, 3, b'b', b'o', b'b', 2, b'p', b'w'];

    fn creds() -> Credentials {
        Credentials {
            username: "bob".into(),
            password: "pw".into(),
        }
    }

    /// What a full exchange produced: steps, output, leftover.
    #[derive(Debug, PartialEq)]
    struct Run {
        steps: Vec<Result<Socks5Step, Socks5Error>>,
        out: Vec<u8>,
        leftover: Vec<u8>,
    }

    /// Feeds `data` in chunks of `chunk` bytes (0 = all at once), accepting credentials
    /// when `accept`, until an error or `Connect`.
    fn run(data: &[u8], chunk: usize, accept: bool) -> Run {
        let mut hs = Socks5Handshake::new();
        let mut steps = Vec::new();
        let mut out = Vec::new();
        let chunk = if chunk == 0 { data.len().max(1) } else { chunk };
        let mut chunks = data.chunks(chunk);
        let mut next: &[u8] = chunks.next().unwrap_or(&[]);
        loop {
            let step = hs.input(next);
            next = &[];
            out.extend(hs.take_output());
            match step {
                Ok(Socks5Step::NeedInput) => match chunks.next() {
                    Some(c) => next = c,
                    None => break,
                },
                Ok(Socks5Step::Credentials(c)) => {
                    steps.push(Ok(Socks5Step::Credentials(c)));
                    hs.auth_result(accept);
                    out.extend(hs.take_output());
                }
                Ok(Socks5Step::Connect(t)) => {
                    steps.push(Ok(Socks5Step::Connect(t)));
                    for c in chunks.by_ref() {
                        // Leftover arrives with later chunks only via the buffer; the
                        // driver stops calling `input` after Connect.
                        let _ = c;
                    }
                    break;
                }
                Err(e) => {
                    steps.push(Err(e));
                    break;
                }
            }
        }
        Run {
            steps,
            out,
            leftover: hs.into_leftover(),
        }
    }

    fn request(atyp: u8, addr: &[u8], port: u16) -> Vec<u8> {
        let mut r = vec![5, 1, 0, atyp];
        r.extend_from_slice(addr);
        r.extend_from_slice(&port.to_be_bytes());
        r
    }

    fn full(req: &[u8]) -> Vec<u8> {
        [GREETING, AUTH, req].concat()
    }

    fn reply(rep: u8) -> Vec<u8> {
        vec![5, rep, 0, 1, 0, 0, 0, 0, 0, 0]
    }

    /// Runs whole, byte-at-a-time and in 3-byte chunks; all must agree.
    fn check(data: &[u8], accept: bool) -> Run {
        let whole = run(data, 0, accept);
        assert_eq!(whole.steps, run(data, 1, accept).steps);
        assert_eq!(whole.out, run(data, 1, accept).out);
        assert_eq!(whole.steps, run(data, 3, accept).steps);
        assert_eq!(whole.out, run(data, 3, accept).out);
        whole
    }

    #[test]
    fn connect_domain_pipelined_with_leftover() {
        let mut data = full(&[&[5, 1, 0, 3, 11][..], b"example.com", &[1, 187]].concat());
        let r = run(&data, 0, true);
        assert_eq!(r.leftover, b"");
        data.extend_from_slice(b"hello");
        let r = run(&data, 0, true);
        assert_eq!(
            r.steps,
            vec![
                Ok(Socks5Step::Credentials(creds())),
                Ok(Socks5Step::Connect(TargetAddr::Domain {
                    host: "example.com".into(),
                    port: 443
                }))
            ]
        );
        assert_eq!(r.out, [5, 2, 1, 0]);
        assert_eq!(r.leftover, b"hello");
        // Byte at a time: the driver stops at Connect, the rest of the bytes were never
        // fed, so compare without the payload.
        let data = &data[..data.len() - 5];
        assert_eq!(check(data, true).steps, r.steps);
    }

    #[test]
    fn connect_ipv4_and_ipv6() {
        let r = check(&full(&request(1, &[10, 0, 0, 1], 80)), true);
        assert_eq!(
            r.steps[1],
            Ok(Socks5Step::Connect(TargetAddr::Ip(
                "10.0.0.1:80".parse().unwrap()
            )))
        );
        let mut v6 = [0u8; 16];
        v6[15] = 1;
        let r = check(&full(&request(4, &v6, 8080)), true);
        assert_eq!(
            r.steps[1],
            Ok(Socks5Step::Connect(TargetAddr::Ip(
                "[::1]:8080".parse().unwrap()
            )))
        );
    }

    #[test]
    fn greeting_errors() {
        let r = check(b"GET / HTTP/1.1\r\n", true);
        assert_eq!(r.steps, vec![Err(Socks5Error::BadVersion(b'G'))]);
        assert!(r.out.is_empty());

        let r = check(&[5, 0], true);
        assert_eq!(r.steps, vec![Err(Socks5Error::NoMethods)]);
        assert_eq!(r.out, [5, 0xFF]);

        let r = check(&[5, 2, 0, 1], true);
        assert_eq!(r.steps, vec![Err(Socks5Error::NoAcceptableMethod)]);
        assert_eq!(r.out, [5, 0xFF]);

        // Many methods including 2 is fine.
        let r = check(&[5, 3, 0, 1, 2], true);
        assert_eq!(r.steps, vec![]);
        assert_eq!(r.out, [5, 2]);
    }

    #[test]
    fn auth_errors() {
        let r = check(&[GREETING, &[2, 1, b'a', 1, b'b']].concat(), true);
        assert_eq!(r.steps, vec![Err(Socks5Error::BadAuthVersion(2))]);
        assert_eq!(r.out, [5, 2, 1, 1]);

        let r = check(&[GREETING, &[1, 0, 1, b'b']].concat(), true);
        assert_eq!(r.steps, vec![Err(Socks5Error::EmptyCredentials)]);
        assert_eq!(r.out, [5, 2, 1, 1]);
        let r = check(&[GREETING, &[1, 1, b'a', 0]].concat(), true);
        assert_eq!(r.steps, vec![Err(Socks5Error::EmptyCredentials)]);

        let r = check(&[GREETING, &[1, 1, 0xFF, 1, b'b']].concat(), true);
        assert_eq!(r.steps, vec![Err(Socks5Error::CredentialsNotUtf8)]);
        assert_eq!(r.out, [5, 2, 1, 1]);
        let r = check(&[GREETING, &[1, 1, b'a', 2, 0xC3, 0x28]].concat(), true);
        assert_eq!(r.steps, vec![Err(Socks5Error::CredentialsNotUtf8)]);
    }

    #[test]
    fn auth_refused() {
        let mut hs = Socks5Handshake::new();
        assert_eq!(
            hs.input(&full(&request(1, &[1, 2, 3, 4], 80))),
            Ok(Socks5Step::Credentials(creds()))
        );
        hs.auth_result(false);
        assert_eq!(hs.take_output(), [5, 2, 1, 1]);
        assert_eq!(hs.input(&[]), Err(Socks5Error::AuthFailed));
        assert_eq!(hs.input(&[5]), Err(Socks5Error::AuthFailed));
        assert!(hs.take_output().is_empty());
        assert!(hs.into_leftover().is_empty());
    }

    #[test]
    fn out_of_order() {
        let mut hs = Socks5Handshake::new();
        assert_eq!(
            hs.input(&[GREETING, AUTH].concat()),
            Ok(Socks5Step::Credentials(creds()))
        );
        assert_eq!(hs.input(&[5]), Err(Socks5Error::OutOfOrder));

        let mut hs = Socks5Handshake::new();
        let data = full(&request(1, &[1, 2, 3, 4], 80));
        assert!(matches!(hs.input(&data), Ok(Socks5Step::Credentials(_))));
        hs.auth_result(true);
        assert!(matches!(hs.input(&[]), Ok(Socks5Step::Connect(_))));
        assert_eq!(hs.input(b"x"), Err(Socks5Error::OutOfOrder));
        assert_eq!(hs.input(&[]), Err(Socks5Error::OutOfOrder));
        // auth_result out of turn is ignored.
        hs.auth_result(true);
        assert_eq!(hs.take_output(), [5, 2, 1, 0]);
        assert!(hs.into_leftover().is_empty());
    }

    #[test]
    fn request_errors() {
        let cases: Vec<(Vec<u8>, Socks5Error, u8)> = vec![
            (
                vec![4, 1, 0, 1, 1, 2, 3, 4, 0, 80],
                Socks5Error::BadVersion(4),
                1,
            ),
            (
                vec![5, 2, 0, 1, 1, 2, 3, 4, 0, 80],
                Socks5Error::CommandNotSupported(2),
                7,
            ),
            (
                vec![5, 3, 0, 1, 1, 2, 3, 4, 0, 80],
                Socks5Error::CommandNotSupported(3),
                7,
            ),
            (
                vec![5, 9, 0, 1, 1, 2, 3, 4, 0, 80],
                Socks5Error::CommandNotSupported(9),
                7,
            ),
            (
                vec![5, 1, 1, 1, 1, 2, 3, 4, 0, 80],
                Socks5Error::BadReserved(1),
                1,
            ),
            (
                vec![5, 1, 0, 2, 1, 2, 3, 4, 0, 80],
                Socks5Error::AddressTypeNotSupported(2),
                8,
            ),
            (vec![5, 1, 0, 9], Socks5Error::AddressTypeNotSupported(9), 8),
            (
                request(1, &[1, 2, 3, 4], 0),
                Socks5Error::BadTarget(TargetError::PortZero),
                1,
            ),
            (
                request(3, &[0], 80),
                Socks5Error::BadTarget(TargetError::EmptyHost),
                1,
            ),
            (
                request(3, b"\x03a\0b", 80),
                Socks5Error::BadTarget(TargetError::BadHostChar),
                1,
            ),
            (
                request(3, b"\x02\xC3\x28", 80),
                Socks5Error::BadTarget(TargetError::BadHostChar),
                1,
            ),
            (
                request(3, &[&[254u8][..], &[b'a'; 254]].concat(), 80),
                Socks5Error::BadTarget(TargetError::HostTooLong),
                1,
            ),
        ];
        for (req, err, rep) in cases {
            let r = check(&full(&req), true);
            assert_eq!(
                r.steps,
                vec![Ok(Socks5Step::Credentials(creds())), Err(err)]
            );
            assert_eq!(r.out, [&[5, 2, 1, 0][..], &reply(rep)].concat());
        }
    }

    #[test]
    fn incomplete_needs_input() {
        let mut hs = Socks5Handshake::new();
        assert_eq!(hs.input(&[]), Ok(Socks5Step::NeedInput));
        assert_eq!(hs.input(&[5, 1]), Ok(Socks5Step::NeedInput));
        assert_eq!(hs.input(&[2, 1, 1]), Ok(Socks5Step::NeedInput));
        assert_eq!(hs.take_output(), [5, 2]);
    }

    #[test]
    fn encode_replies() {
        let mut out = Vec::new();
        encode_reply(Reply::Succeeded, None, &mut out);
        assert_eq!(out, reply(0));
        out.clear();
        encode_reply(
            Reply::HostUnreachable,
            Some("1.2.3.4:258".parse().unwrap()),
            &mut out,
        );
        assert_eq!(out, [5, 4, 0, 1, 1, 2, 3, 4, 1, 2]);
        out.clear();
        encode_reply(
            Reply::TtlExpired,
            Some("[::2]:1".parse().unwrap()),
            &mut out,
        );
        let mut want = vec![5, 6, 0, 4];
        want.extend_from_slice(&[0; 15]);
        want.extend_from_slice(&[2, 0, 1]);
        assert_eq!(out, want);
        for (r, code) in [
            (Reply::GeneralFailure, 1),
            (Reply::NotAllowed, 2),
            (Reply::NetworkUnreachable, 3),
            (Reply::ConnectionRefused, 5),
            (Reply::CommandNotSupported, 7),
            (Reply::AddressTypeNotSupported, 8),
        ] {
            out.clear();
            encode_reply(r, None, &mut out);
            assert_eq!(out[1], code);
        }
    }

    #[test]
    fn debug_does_not_show_password() {
        let mut hs = Socks5Handshake::new();
        assert_eq!(
            hs.input(&[GREETING, &[1, 3, b'b', b'o', b'b', 6], b"secre"].concat()),
            Ok(Socks5Step::NeedInput)
        );
        let shown = format!("{hs:?}");
        assert!(!shown.contains("115"), "{shown}"); // b's'
        assert!(!shown.contains("secre"), "{shown}");
    }
}
