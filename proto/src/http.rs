//! HTTP/1.1 proxy request head parser, as a sans-IO state machine.
//!
//! Accepts `CONNECT host:port HTTP/1.1` and absolute-form requests
//! (`GET http://host[:port]/path HTTP/1.1`), with `Proxy-Authorization: Basic`.
//! For an absolute-form request the parser produces the head to send upstream: the
//! request line in origin-form, `Proxy-Authorization`, `Proxy-Connection` and other
//! hop-by-hop headers removed, `Host` taken from the URL (RFC 9112 §3.2.2), plus
//! `Connection: close`: one request per connection (see [`crate::http_body`]).

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;

use base64::Engine as _;

use crate::http_body::BodyFraming;
use crate::target::{TargetAddr, TargetError};
use crate::Credentials;

/// Bounds on what a client may send before the head is complete.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Most bytes in the request head. Defaults to 16 KiB.
    pub max_head_bytes: usize,
    /// Most header lines. Defaults to 100.
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_head_bytes: 16 * 1024,
            max_headers: 100,
        }
    }
}

/// A parsed proxy request.
#[derive(Debug, PartialEq, Eq)]
pub enum HttpProxyRequest {
    /// `CONNECT host:port`: answer `200` and tunnel.
    Connect {
        /// Where to connect.
        target: TargetAddr,
        /// From `Proxy-Authorization: Basic`, if present.
        credentials: Option<Credentials>,
    },
    /// An absolute-form request: connect, send `head`, then relay.
    Forward {
        /// Where to connect (port 80 when the URL has none).
        target: TargetAddr,
        /// From `Proxy-Authorization: Basic`, if present.
        credentials: Option<Credentials>,
        /// The rewritten request head to send to the target.
        head: Vec<u8>,
        /// Where the request's body ends: nothing after it is forwarded.
        body: BodyFraming,
    },
}

/// A malformed or refused request head.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HttpError {
    /// The request line or a header line is not valid HTTP/1.x.
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head exceeds [`HttpLimits::max_head_bytes`].
    #[error("request head too large")]
    HeadTooLarge,
    /// More header lines than [`HttpLimits::max_headers`].
    #[error("too many headers")]
    TooManyHeaders,
    /// The method is neither CONNECT nor an absolute-form request (e.g. origin-form).
    #[error("not a proxy request: {0}")]
    NotProxyRequest(&'static str),
    /// The URL scheme is not `http` (e.g. `https://` without CONNECT).
    #[error("unsupported scheme")]
    UnsupportedScheme,
    /// The target host or port is invalid.
    #[error("invalid target: {0}")]
    BadTarget(#[from] crate::target::TargetError),
    /// `Proxy-Authorization` is present but is not valid Basic credentials.
    #[error("malformed Proxy-Authorization")]
    BadAuthorization,
    /// The request carries a body framing this proxy refuses (both `Content-Length` and
    /// `Transfer-Encoding`, or several differing `Content-Length`s).
    #[error("ambiguous message framing")]
    AmbiguousFraming,
}

impl HttpError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::UnsupportedScheme => 501,
            HttpError::Malformed(_)
            | HttpError::NotProxyRequest(_)
            | HttpError::BadTarget(_)
            | HttpError::BadAuthorization
            | HttpError::AmbiguousFraming => 400,
        }
    }

    /// The RFC 9209 proxy error type for the `Proxy-Status` header.
    pub fn proxy_error(&self) -> &'static str {
        match self {
            HttpError::BadAuthorization => "http_request_denied",
            _ => "http_request_error",
        }
    }
}

/// Builds a complete proxy response head: status line, `Proxy-Status` when
/// `proxy_status` is set, `extra` headers, `Content-Length: 0` for errors, and the blank
/// line. A `407` always carries `Proxy-Authenticate: Basic realm="turbo"`.
///
/// CR and LF in `proxy_status` and `extra` are dropped so a value can never start a
/// new header line.
pub fn response(status: u16, proxy_status: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    out.extend_from_slice(format!("HTTP/1.1 {status} {}\r\n", reason(status)).as_bytes());
    if let Some(value) = proxy_status {
        push_header(&mut out, "Proxy-Status", value);
    }
    for (name, value) in extra {
        push_header(&mut out, name, value);
    }
    if status == 407 {
        out.extend_from_slice(b"Proxy-Authenticate: Basic realm=\"turbo\"\r\n");
    }
    if status >= 400 {
        out.extend_from_slice(b"Content-Length: 0\r\nConnection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    let clean = |s: &str, out: &mut Vec<u8>| {
        out.extend(s.bytes().filter(|b| !matches!(b, b'\r' | b'\n')));
    };
    clean(name, out);
    out.extend_from_slice(b": ");
    clean(value, out);
    out.extend_from_slice(b"\r\n");
}

/// The reason phrase for the statuses Turbo sends.
fn reason(status: u16) -> &'static str {
    match status {
        200 => "Connection Established",
        400 => "Bad Request",
        402 => "Payment Required",
        403 => "Forbidden",
        407 => "Proxy Authentication Required",
        408 => "Request Timeout",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Error",
    }
}

/// The parsed request line.
#[derive(Debug)]
enum RequestLine {
    /// `CONNECT authority`.
    Connect(TargetAddr),
    /// `METHOD http://authority/path VERSION`.
    Forward {
        target: TargetAddr,
        /// `METHOD origin-path VERSION`, without line end.
        line: String,
        /// The URL authority, for a `Host` header when the request has none.
        authority: String,
    },
}

/// A header line as byte ranges into the parser buffer.
#[derive(Debug)]
struct Header {
    name: Range<usize>,
    value: Range<usize>,
}

#[derive(Debug)]
enum State {
    /// Reading lines.
    Head,
    /// The head ended at this offset; the rest of the buffer is leftover.
    Done(usize),
    /// Failed; later input returns the same error.
    Failed(HttpError),
}

/// Incremental parser of one proxy request head.
pub struct HttpHeadParser {
    limits: HttpLimits,
    buf: Vec<u8>,
    /// Where the search for the next `\n` resumes.
    scan: usize,
    /// Start of the line being read.
    line_start: usize,
    request: Option<RequestLine>,
    headers: Vec<Header>,
    state: State,
}

/// Shows progress only: the buffer may hold `Proxy-Authorization`.
impl std::fmt::Debug for HttpHeadParser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpHeadParser")
            .field("limits", &self.limits)
            .field("state", &self.state)
            .field("buffered", &self.buf.len())
            .field("headers", &self.headers.len())
            .finish()
    }
}

impl HttpHeadParser {
    /// A parser with the given limits.
    pub fn new(limits: HttpLimits) -> Self {
        HttpHeadParser {
            limits,
            buf: Vec::new(),
            scan: 0,
            line_start: 0,
            request: None,
            headers: Vec::new(),
            state: State::Head,
        }
    }

    /// Appends `bytes`; returns the request once the head is complete.
    ///
    /// Bytes passed after the request was returned are appended to the leftover.
    ///
    /// # Errors
    /// [`HttpError`]: answer with [`response`]`(err.status(), ...)` and close.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Option<HttpProxyRequest>, HttpError> {
        match &self.state {
            State::Head => {}
            State::Done(_) => {
                self.buf.extend_from_slice(bytes);
                return Ok(None);
            }
            State::Failed(e) => return Err(e.clone()),
        }
        self.buf.extend_from_slice(bytes);
        let result = self.advance();
        if let Err(e) = &result {
            self.state = State::Failed(e.clone());
        }
        result
    }

    fn advance(&mut self) -> Result<Option<HttpProxyRequest>, HttpError> {
        loop {
            let Some(nl) = self.buf[self.scan..].iter().position(|&b| b == b'\n') else {
                self.scan = self.buf.len();
                if self.buf.len() > self.limits.max_head_bytes {
                    return Err(HttpError::HeadTooLarge);
                }
                return Ok(None);
            };
            let nl = self.scan + nl;
            let line_end = nl + 1;
            self.scan = line_end;
            if line_end > self.limits.max_head_bytes {
                return Err(HttpError::HeadTooLarge);
            }
            let start = self.line_start;
            self.line_start = line_end;
            // Lines end in CRLF only: a bare LF is refused rather than tolerated
            // (RFC 9112 §2.2 allows either), so no two parsers on the path can
            // disagree about where a line, and so the head, ends.
            if nl == start || self.buf[nl - 1] != b'\r' {
                return Err(HttpError::Malformed("bare LF"));
            }
            let end = nl - 1;
            let line = &self.buf[start..end];
            if line.contains(&0) {
                return Err(HttpError::Malformed("NUL byte"));
            }
            if line.contains(&b'\r') {
                return Err(HttpError::Malformed("bare CR"));
            }
            if self.request.is_none() {
                self.request = Some(parse_request_line(line)?);
                continue;
            }
            if line.is_empty() {
                let request = self.finish()?;
                self.state = State::Done(line_end);
                return Ok(Some(request));
            }
            if self.headers.len() >= self.limits.max_headers {
                return Err(HttpError::TooManyHeaders);
            }
            let (name, value) = parse_header_line(line)?;
            self.headers.push(Header {
                name: start + name.start..start + name.end,
                value: start + value.start..start + value.end,
            });
        }
    }

    /// Checks the complete header set and builds the request.
    fn finish(&mut self) -> Result<HttpProxyRequest, HttpError> {
        let buf = &self.buf;
        let headers: Vec<(&[u8], &[u8])> = self
            .headers
            .iter()
            .map(|h| (&buf[h.name.clone()], &buf[h.value.clone()]))
            .collect();
        let named = |n: &'static str| {
            headers
                .iter()
                .filter(move |(name, _)| name.eq_ignore_ascii_case(n.as_bytes()))
                .map(|(_, v)| *v)
        };

        if named("host").count() > 1 {
            return Err(HttpError::Malformed("several Host headers"));
        }
        let length = check_framing(named("content-length"), named("transfer-encoding").count())?;
        // A CONNECT has no content (RFC 9110 §9.3.6): framing headers on one mean the
        // client and this proxy could disagree about where the tunnel starts.
        if matches!(self.request, Some(RequestLine::Connect(_)))
            && (named("content-length").next().is_some()
                || named("transfer-encoding").next().is_some())
        {
            return Err(HttpError::Malformed("body framing on CONNECT"));
        }

        let mut auth = named("proxy-authorization");
        let credentials = match (auth.next(), auth.next()) {
            (None, _) => None,
            (Some(v), None) => Some(parse_basic(v)?),
            (Some(_), Some(_)) => return Err(HttpError::BadAuthorization),
        };

        match self.request.take() {
            Some(RequestLine::Connect(target)) => Ok(HttpProxyRequest::Connect {
                target,
                credentials,
            }),
            Some(RequestLine::Forward {
                target,
                line,
                authority,
            }) => {
                let body = body_framing(named("transfer-encoding").next_back(), length)?;
                // Tokens of `Connection` name further hop-by-hop headers.
                let mut hop: Vec<Vec<u8>> = Vec::new();
                for v in named("connection") {
                    for token in v.split(|&b| b == b',') {
                        let token = trim_ows(token);
                        if !token.is_empty() {
                            hop.push(token.to_ascii_lowercase());
                        }
                    }
                }
                let mut head = Vec::with_capacity(buf.len() + 64);
                head.extend_from_slice(line.as_bytes());
                head.extend_from_slice(b"\r\n");
                for (name, value) in &headers {
                    let lower = name.to_ascii_lowercase();
                    // Framing stays even when `Connection` names it.
                    let protected = matches!(&lower[..], b"content-length" | b"transfer-encoding");
                    // The URL's authority replaces any Host header (RFC 9112 §3.2.2).
                    if &lower[..] == b"host"
                        || REMOVED.contains(&&lower[..])
                        || (!protected && hop.contains(&lower))
                    {
                        continue;
                    }
                    head.extend_from_slice(name);
                    head.extend_from_slice(b": ");
                    head.extend_from_slice(value);
                    head.extend_from_slice(b"\r\n");
                }
                head.extend_from_slice(b"Host: ");
                head.extend_from_slice(authority.as_bytes());
                head.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
                Ok(HttpProxyRequest::Forward {
                    target,
                    credentials,
                    head,
                    body,
                })
            }
            None => Err(HttpError::Malformed("missing request line")),
        }
    }

    /// Bytes received after the head (request body or pipelined data). Empty until the
    /// head is complete.
    pub fn into_leftover(mut self) -> Vec<u8> {
        match self.state {
            State::Done(end) => self.buf.split_off(end),
            State::Head | State::Failed(_) => Vec::new(),
        }
    }
}

/// Headers never forwarded upstream (lower case).
const REMOVED: &[&[u8]] = &[
    b"proxy-authorization",
    b"proxy-connection",
    b"connection",
    b"keep-alive",
    b"te",
    b"trailer",
    b"upgrade",
    b"via",
    b"forwarded",
    b"x-forwarded-for",
    b"x-real-ip",
];

/// RFC 9110 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits `name: value` and validates both; returns ranges relative to `line`.
fn parse_header_line(line: &[u8]) -> Result<(Range<usize>, Range<usize>), HttpError> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(HttpError::Malformed("obsolete line folding"));
    }
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        return Err(HttpError::Malformed("header line without colon"));
    };
    let name = &line[..colon];
    if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::Malformed("invalid header name"));
    }
    let raw = &line[colon + 1..];
    let value = trim_ows(raw);
    if value.iter().any(|&b| (b < 0x20 && b != b'\t') || b == 0x7F) {
        return Err(HttpError::Malformed("control character in header value"));
    }
    let lead = raw.len() - trim_ows_start(raw).len();
    let vstart = colon + 1 + lead;
    Ok((0..colon, vstart..vstart + value.len()))
}

fn trim_ows_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// How a forwarded request's body is delimited: by its last `Transfer-Encoding`, whose
/// final coding must be chunked (RFC 9112 §6.3), else by its `Content-Length`.
fn body_framing(te: Option<&[u8]>, length: Option<u64>) -> Result<BodyFraming, HttpError> {
    let Some(te) = te else {
        return Ok(BodyFraming::Length(length.unwrap_or(0)));
    };
    let last = te.split(|&b| b == b',').next_back().map(trim_ows);
    if last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) {
        Ok(BodyFraming::Chunked)
    } else {
        Err(HttpError::Malformed("final transfer coding is not chunked"))
    }
}

/// Refuses both `Content-Length` and `Transfer-Encoding`, and differing lengths;
/// returns the length, if one was given.
fn check_framing<'a>(
    lengths: impl Iterator<Item = &'a [u8]>,
    transfer_encodings: usize,
) -> Result<Option<u64>, HttpError> {
    let mut seen: Option<u64> = None;
    for value in lengths {
        if transfer_encodings > 0 {
            return Err(HttpError::AmbiguousFraming);
        }
        for part in value.split(|&b| b == b',') {
            let part = trim_ows(part);
            if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
                return Err(HttpError::Malformed("invalid Content-Length"));
            }
            let n = part
                .iter()
                .fold(0u64, |acc, &d| acc * 10 + u64::from(d - b'0'));
            match seen {
                Some(prev) if prev != n => return Err(HttpError::AmbiguousFraming),
                _ => seen = Some(n),
            }
        }
    }
    Ok(seen)
}

/// Decodes `Basic base64(user:pass)`.
fn parse_basic(value: &[u8]) -> Result<Credentials, HttpError> {
    let value = std::str::from_utf8(value).map_err(|_| HttpError::BadAuthorization)?;
    let (scheme, token) = value
        .split_once([' ', '\t'])
        .ok_or(HttpError::BadAuthorization)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(HttpError::BadAuthorization);
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim_matches([' ', '\t']))
        .map_err(|_| HttpError::BadAuthorization)?;
    let decoded = String::from_utf8(decoded).map_err(|_| HttpError::BadAuthorization)?;
    let (username, password) = decoded.split_once(':').ok_or(HttpError::BadAuthorization)?;
    Ok(Credentials {
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

/// Parses `METHOD SP target SP HTTP/1.x`.
fn parse_request_line(line: &[u8]) -> Result<RequestLine, HttpError> {
    if line.is_empty() {
        return Err(HttpError::Malformed("empty request line"));
    }
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HttpError::Malformed(
            "request line is not METHOD TARGET VERSION",
        ));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HttpError::Malformed("invalid method"));
    }
    if target.is_empty() || !target.iter().all(|&b| (0x21..=0x7E).contains(&b)) {
        return Err(HttpError::Malformed("invalid request target"));
    }
    if !matches!(version, [b'H', b'T', b'T', b'P', b'/', b'1', b'.', d] if d.is_ascii_digit()) {
        return Err(HttpError::Malformed("unsupported HTTP version"));
    }
    // All three parts are ASCII (checked above).
    let (Ok(method), Ok(target), Ok(version)) = (
        std::str::from_utf8(method),
        std::str::from_utf8(target),
        std::str::from_utf8(version),
    ) else {
        return Err(HttpError::Malformed("request line is not ASCII"));
    };

    if method == "CONNECT" {
        return Ok(RequestLine::Connect(parse_authority(target, None)?));
    }
    if target.starts_with('/') || target == "*" {
        return Err(HttpError::NotProxyRequest("origin-form request"));
    }
    let Some((scheme, rest)) = target.split_once("://") else {
        return Err(HttpError::NotProxyRequest("not an absolute-form request"));
    };
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'));
    if !scheme_ok {
        return Err(HttpError::NotProxyRequest("not an absolute-form request"));
    }
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(HttpError::UnsupportedScheme);
    }
    let auth_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(auth_end);
    if authority.contains('@') {
        return Err(HttpError::Malformed("userinfo in URL"));
    }
    let target = parse_authority(authority, Some(80))?;
    let path = path.split_once('#').map_or(path, |(p, _)| p);
    let path = if path.is_empty() {
        "/".to_owned()
    } else if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_owned()
    };
    Ok(RequestLine::Forward {
        target,
        line: format!("{method} {path} {version}"),
        authority: authority.to_owned(),
    })
}

/// Parses `host:port` or `[v6]:port`; without a port, `default_port` applies (an
/// error when `None`).
fn parse_authority(authority: &str, default_port: Option<u16>) -> Result<TargetAddr, HttpError> {
    let (host, port) = if let Some(inner) = authority.strip_prefix('[') {
        let Some((v6, rest)) = inner.split_once(']') else {
            return Err(HttpError::Malformed("unterminated IPv6 literal"));
        };
        let port = match rest {
            "" => None,
            r => Some(
                r.strip_prefix(':')
                    .ok_or(HttpError::Malformed("junk after IPv6 literal"))?,
            ),
        };
        let ip: Ipv6Addr = v6
            .parse()
            .map_err(|_| HttpError::BadTarget(TargetError::BadHostChar))?;
        let port = parse_port(port, default_port)?;
        return Ok(TargetAddr::ip(SocketAddr::new(ip.into(), port))?);
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.contains(':') {
        return Err(HttpError::Malformed("IPv6 literal without brackets"));
    }
    let port = parse_port(port, default_port)?;
    Ok(TargetAddr::domain(host, port)?)
}

fn parse_port(port: Option<&str>, default_port: Option<u16>) -> Result<u16, HttpError> {
    match port {
        None | Some("") => default_port.ok_or(HttpError::Malformed("missing port")),
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| HttpError::Malformed("invalid port"))
        }
        Some(_) => Err(HttpError::Malformed("invalid port")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    type Outcome = (Result<Option<HttpProxyRequest>, HttpError>, Vec<u8>);

    /// Feeds `data` in `chunk`-byte pieces (0 = whole) until a result or error.
    fn feed(data: &[u8], chunk: usize, limits: HttpLimits) -> Outcome {
        let mut p = HttpHeadParser::new(limits);
        let chunk = if chunk == 0 { data.len().max(1) } else { chunk };
        let mut result = Ok(None);
        let mut chunks = data.chunks(chunk);
        for c in chunks.by_ref() {
            result = p.input(c);
            if !matches!(result, Ok(None)) {
                break;
            }
        }
        for c in chunks {
            let _ = p.input(c);
        }
        (result, p.into_leftover())
    }

    /// Whole input, byte-at-a-time and 7-byte chunks must agree.
    fn parse_with(data: &[u8], limits: HttpLimits) -> Outcome {
        let whole = feed(data, 0, limits);
        assert_eq!(whole, feed(data, 1, limits), "byte-at-a-time differs");
        assert_eq!(whole, feed(data, 7, limits), "7-byte chunks differ");
        whole
    }

    fn parse(data: &[u8]) -> Outcome {
        parse_with(data, HttpLimits::default())
    }

    fn err(data: &[u8]) -> HttpError {
        match parse(data).0 {
            Err(e) => e,
            other => panic!("expected error, got {other:?}"),
        }
    }

    fn creds(u: &str, p: &str) -> Option<Credentials> {
        Some(Credentials {
            username: u.into(),
            password: p.into(),
        })
    }

    #[test]
    fn connect() {
        let (r, left) = parse(
            b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
              proxy-authorization: basic dXNlcjpwYTpzcw==\r\n\r\nTLS",
        );
        assert_eq!(
            r,
            Ok(Some(HttpProxyRequest::Connect {
                target: TargetAddr::domain("example.com", 443).unwrap(),
                credentials: creds("user", "pa:ss"),
            }))
        );
        assert_eq!(left, b"TLS");

        let (r, left) = parse(b"CONNECT [2001:db8::1]:8443 HTTP/1.1\r\n\r\n");
        assert_eq!(
            r,
            Ok(Some(HttpProxyRequest::Connect {
                target: TargetAddr::Ip("[2001:db8::1]:8443".parse().unwrap()),
                credentials: None,
            }))
        );
        assert!(left.is_empty());

        let (r, _) = parse(b"CONNECT 10.1.2.3:22 HTTP/1.0\r\n\r\n");
        assert!(matches!(
            r,
            Ok(Some(HttpProxyRequest::Connect {
                target: TargetAddr::Ip(_),
                ..
            }))
        ));
    }

    #[test]
    fn connect_target_errors() {
        use crate::target::TargetError::*;
        assert_eq!(
            err(b"CONNECT example.com HTTP/1.1\r\n\r\n"),
            HttpError::Malformed("missing port")
        );
        assert_eq!(
            err(b"CONNECT example.com:0 HTTP/1.1\r\n\r\n"),
            HttpError::BadTarget(PortZero)
        );
        assert_eq!(
            err(b"CONNECT example.com:65536 HTTP/1.1\r\n\r\n"),
            HttpError::Malformed("invalid port")
        );
        assert_eq!(
            err(b"CONNECT :443 HTTP/1.1\r\n\r\n"),
            HttpError::BadTarget(EmptyHost)
        );
        assert_eq!(
            err(b"CONNECT a%00b:443 HTTP/1.1\r\n\r\n"),
            HttpError::BadTarget(BadHostChar)
        );
        assert_eq!(
            err(b"CONNECT ::1:443 HTTP/1.1\r\n\r\n"),
            HttpError::Malformed("IPv6 literal without brackets")
        );
        assert_eq!(
            err(b"CONNECT [zz]:443 HTTP/1.1\r\n\r\n"),
            HttpError::BadTarget(BadHostChar)
        );
        assert_eq!(
            err(b"CONNECT [::1]x HTTP/1.1\r\n\r\n"),
            HttpError::Malformed("junk after IPv6 literal")
        );
    }

    #[test]
    fn forward_rewrites_head() {
        let req = b"GET http://Example.com:8080/a/b?q=1#frag HTTP/1.1\r\n\
            User-Agent: curl\r\n\
            Proxy-Authorization: Basic dTpw\r\n\
            Proxy-Connection: keep-alive\r\n\
            Connection: keep-alive, X-Secret\r\n\
            X-Secret: 1\r\n\
            Keep-Alive: 5\r\n\
            TE: trailers\r\n\
            Trailer: x\r\n\
            Upgrade: h2c\r\n\
            Via: 1.1 other\r\n\
            Forwarded: for=1.2.3.4\r\n\
            X-Forwarded-For: 1.2.3.4\r\n\
            X-Real-IP: 1.2.3.4\r\n\
            Accept:   */*  \r\n\
            \r\nbody";
        let (r, left) = parse(req);
        assert_eq!(
            r,
            Ok(Some(HttpProxyRequest::Forward {
                target: TargetAddr::domain("Example.com", 8080).unwrap(),
                credentials: creds("u", "p"),
                head: b"GET /a/b?q=1 HTTP/1.1\r\nUser-Agent: curl\r\nAccept: */*\r\n\
                    Host: Example.com:8080\r\nConnection: close\r\n\r\n"
                    .to_vec(),
                body: BodyFraming::Length(0),
            }))
        );
        assert_eq!(left, b"body");
    }

    #[test]
    fn forward_defaults_and_host() {
        let (r, _) =
            parse(b"POST HTTP://example.org HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\n\r\n");
        assert_eq!(
            r,
            Ok(Some(HttpProxyRequest::Forward {
                target: TargetAddr::domain("example.org", 80).unwrap(),
                credentials: None,
                // The URL's authority, not the client's Host, names the origin.
                head: b"POST / HTTP/1.0\r\nContent-Length: 4\r\nHost: example.org\r\n\
                    Connection: close\r\n\r\n"
                    .to_vec(),
                body: BodyFraming::Length(4),
            }))
        );
        let (r, _) = parse(b"GET http://[::1]?x HTTP/1.1\r\n\r\n");
        assert_eq!(
            r,
            Ok(Some(HttpProxyRequest::Forward {
                target: TargetAddr::Ip("[::1]:80".parse().unwrap()),
                credentials: None,
                head: b"GET /?x HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n".to_vec(),
                body: BodyFraming::Length(0),
            }))
        );
        // Connection cannot strip framing headers.
        let (r, _) = parse(
            b"POST http://a.b/ HTTP/1.1\r\nConnection: Content-Length, host\r\n\
              Content-Length: 1\r\nHost: a.b\r\n\r\n",
        );
        let Ok(Some(HttpProxyRequest::Forward { head, .. })) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            head,
            b"POST / HTTP/1.1\r\nContent-Length: 1\r\nHost: a.b\r\nConnection: close\r\n\r\n"
        );
        // A Host naming another site than the URL is replaced, not forwarded.
        let (r, _) = parse(
            b"GET http://a.example/ HTTP/1.1\r\nHost: b.example\r\n\
              Transfer-Encoding: gzip, Chunked\r\n\r\n",
        );
        let Ok(Some(HttpProxyRequest::Forward { head, body, .. })) = r else {
            panic!("{r:?}")
        };
        assert_eq!(
            head,
            &b"GET / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\nHost: a.example\r\n\
                Connection: close\r\n\r\n"[..]
        );
        assert_eq!(body, BodyFraming::Chunked);
        assert_eq!(
            err(b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n"),
            HttpError::Malformed("final transfer coding is not chunked")
        );
    }

    #[test]
    fn scheme_and_form_errors() {
        assert_eq!(
            err(b"GET https://example.com/ HTTP/1.1\r\n\r\n"),
            HttpError::UnsupportedScheme
        );
        assert_eq!(
            err(b"GET ftp://example.com/ HTTP/1.1\r\n\r\n"),
            HttpError::UnsupportedScheme
        );
        assert_eq!(
            err(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"),
            HttpError::NotProxyRequest("origin-form request")
        );
        assert_eq!(
            err(b"OPTIONS * HTTP/1.1\r\n\r\n"),
            HttpError::NotProxyRequest("origin-form request")
        );
        assert_eq!(
            err(b"GET example.com:80 HTTP/1.1\r\n\r\n"),
            HttpError::NotProxyRequest("not an absolute-form request")
        );
        assert_eq!(
            err(b"GET http://u:p@example.com/ HTTP/1.1\r\n\r\n"),
            HttpError::Malformed("userinfo in URL")
        );
        assert_eq!(
            err(b"GET http:///x HTTP/1.1\r\n\r\n"),
            HttpError::BadTarget(crate::target::TargetError::EmptyHost)
        );
    }

    #[test]
    fn malformed() {
        let cases: &[(&[u8], &str)] = &[
            (b"\r\n", "empty request line"),
            (
                b"GET  http://a/ HTTP/1.1\r\n\r\n",
                "request line is not METHOD TARGET VERSION",
            ),
            (
                b"GET http://a/\r\n\r\n",
                "request line is not METHOD TARGET VERSION",
            ),
            (b"G@T http://a/ HTTP/1.1\r\n\r\n", "invalid method"),
            (
                b"GET http://a/\x7f HTTP/1.1\r\n\r\n",
                "invalid request target",
            ),
            (
                b"GET http://a/ HTTP/2.0\r\n\r\n",
                "unsupported HTTP version",
            ),
            (b"GET http://a/ HTTP/1.1\r\nA\0: b\r\n\r\n", "NUL byte"),
            (b"GET http://a/ HTTP/1.1\0\r\n\r\n", "NUL byte"),
            (b"GET http://a/ HTTP/1.1\r\nA: b\rc\r\n\r\n", "bare CR"),
            (b"GET http://a/ HTTP/1.1\nA: b\r\n\r\n", "bare LF"),
            (b"GET http://a/ HTTP/1.1\r\nA: b\n\r\n", "bare LF"),
            (
                b"CONNECT a:1 HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
                "body framing on CONNECT",
            ),
            (
                b"CONNECT a:1 HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "body framing on CONNECT",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nA: b\r\n c\r\n\r\n",
                "obsolete line folding",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\n\tc\r\n\r\n",
                "obsolete line folding",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nNoColon\r\n\r\n",
                "header line without colon",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nA b: c\r\n\r\n",
                "invalid header name",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\n: c\r\n\r\n",
                "invalid header name",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nA: b\x01\r\n\r\n",
                "control character in header value",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
                "several Host headers",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
                "invalid Content-Length",
            ),
            (
                b"GET http://a/ HTTP/1.1\r\nContent-Length: 1,\r\n\r\n",
                "invalid Content-Length",
            ),
        ];
        for (input, what) in cases {
            assert_eq!(
                err(input),
                HttpError::Malformed(what),
                "{:?}",
                String::from_utf8_lossy(input)
            );
        }
    }

    #[test]
    fn framing() {
        assert_eq!(
            err(b"POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"),
            HttpError::AmbiguousFraming
        );
        assert_eq!(
            err(b"POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n"),
            HttpError::AmbiguousFraming
        );
        assert_eq!(
            err(b"POST http://a/ HTTP/1.1\r\nContent-Length: 3, 4\r\n\r\n"),
            HttpError::AmbiguousFraming
        );
        for ok in [
            &b"POST http://a/ HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 3, 3\r\n\r\n"[..],
            b"POST http://a/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(matches!(parse(ok).0, Ok(Some(_))));
        }
    }

    #[test]
    fn authorization() {
        let with = |v: &str| {
            parse(format!("CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: {v}\r\n\r\n").as_bytes()).0
        };
        let creds_of = |v: &str| match with(v) {
            Ok(Some(HttpProxyRequest::Connect { credentials, .. })) => Ok(credentials),
            Ok(other) => panic!("{other:?}"),
            Err(e) => Err(e),
        };
        assert_eq!(creds_of("Basic YWxpY2U6cHc="), Ok(creds("alice", "pw")));
        assert_eq!(creds_of("BASIC   YWxpY2U6cHc="), Ok(creds("alice", "pw")));
        assert_eq!(creds_of("Basic YTo="), Ok(creds("a", "")));
        for bad in [
            "Bearer YWxpY2U6cHc=",
            "Basic",
            "Basic !!!",
            "Basic YWxpY2U",  // "alice", no colon, unpadded
            "Basic YWxpY2U=", // "alice", no colon
            "Basic /w==",     // 0xFF, not UTF-8
            "YWxpY2U6cHc=",
        ] {
            assert_eq!(creds_of(bad), Err(HttpError::BadAuthorization), "{bad}");
        }
        assert_eq!(
            err(
                b"CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic YTpi\r\n\
                  Proxy-Authorization: Basic YTpi\r\n\r\n"
            ),
            HttpError::BadAuthorization
        );
        assert_eq!(
            err(b"CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic \xff\r\n\r\n"),
            HttpError::BadAuthorization
        );
    }

    #[test]
    fn limits() {
        let limits = HttpLimits {
            max_head_bytes: 64,
            max_headers: 2,
        };
        let ok = b"CONNECT a:1 HTTP/1.1\r\nA: 1\r\nB: 2\r\n\r\n";
        assert!(matches!(parse_with(ok, limits).0, Ok(Some(_))));
        let three = b"CONNECT a:1 HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";
        assert_eq!(parse_with(three, limits).0, Err(HttpError::TooManyHeaders));
        // Exactly at the byte limit is fine; one more is not.
        let mut exact = b"CONNECT a:1 HTTP/1.1\r\nX: ".to_vec();
        exact.resize(60, b'x');
        exact.extend_from_slice(b"\r\n\r\n");
        assert_eq!(exact.len(), 64);
        assert!(matches!(parse_with(&exact, limits).0, Ok(Some(_))));
        exact.insert(30, b'x');
        assert_eq!(parse_with(&exact, limits).0, Err(HttpError::HeadTooLarge));
        // A head that never ends.
        assert_eq!(
            parse_with(&[b'A'; 100], limits).0,
            Err(HttpError::HeadTooLarge)
        );
        let mut long = b"CONNECT a:1 HTTP/1.1\r\n".to_vec();
        long.extend(std::iter::repeat_n(b"A: b\r\n".iter().copied(), 20).flatten());
        assert_eq!(
            parse_with(
                &long,
                HttpLimits {
                    max_head_bytes: 64,
                    max_headers: 100
                }
            )
            .0,
            Err(HttpError::HeadTooLarge)
        );
    }

    #[test]
    fn incremental_and_after_done() {
        let mut p = HttpHeadParser::new(HttpLimits::default());
        assert_eq!(p.input(b"CONNECT a:1 HT"), Ok(None));
        assert_eq!(p.input(b"TP/1.1\r\n"), Ok(None));
        assert!(matches!(p.input(b"\r\nxy"), Ok(Some(_))));
        assert_eq!(p.input(b"z"), Ok(None));
        assert_eq!(p.into_leftover(), b"xyz");

        let mut p = HttpHeadParser::new(HttpLimits::default());
        assert!(p.input(b"GET / HTTP/1.1\r\n").is_err());
        assert_eq!(
            p.input(b"\r\n"),
            Err(HttpError::NotProxyRequest("origin-form request"))
        );
        assert!(p.into_leftover().is_empty());
    }

    #[test]
    fn byte_at_a_time_is_linear() {
        // 16 KiB of headers fed one byte at a time must stay fast (quadratic rescans
        // would take seconds in debug builds).
        let mut req = b"GET http://a/ HTTP/1.1\r\n".to_vec();
        while req.len() < 16 * 1024 - 40 {
            req.extend_from_slice(
                b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n",
            );
        }
        req.extend_from_slice(b"\r\n");
        let limits = HttpLimits {
            max_head_bytes: 32 * 1024,
            max_headers: 1000,
        };
        let (r, _) = feed(&req, 1, limits);
        assert!(matches!(r, Ok(Some(_))));
    }

    #[test]
    fn statuses_and_proxy_errors() {
        use crate::target::TargetError;
        let all = [
            (HttpError::Malformed("x"), 400, "http_request_error"),
            (HttpError::HeadTooLarge, 431, "http_request_error"),
            (HttpError::TooManyHeaders, 431, "http_request_error"),
            (HttpError::NotProxyRequest("x"), 400, "http_request_error"),
            (HttpError::UnsupportedScheme, 501, "http_request_error"),
            (
                HttpError::BadTarget(TargetError::PortZero),
                400,
                "http_request_error",
            ),
            (HttpError::BadAuthorization, 400, "http_request_denied"),
            (HttpError::AmbiguousFraming, 400, "http_request_error"),
        ];
        for (e, status, pe) in all {
            assert_eq!(e.status(), status, "{e:?}");
            assert_eq!(e.proxy_error(), pe, "{e:?}");
        }
    }

    #[test]
    fn responses() {
        assert_eq!(
            response(200, None, &[]),
            b"HTTP/1.1 200 Connection Established\r\n\r\n"
        );
        assert_eq!(
            response(
                407,
                Some("turbo; error=http_request_denied"),
                &[("X-A", "b")]
            ),
            b"HTTP/1.1 407 Proxy Authentication Required\r\n\
              Proxy-Status: turbo; error=http_request_denied\r\nX-A: b\r\n\
              Proxy-Authenticate: Basic realm=\"turbo\"\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        assert_eq!(
            response(502, Some("a\r\nInjected: 1"), &[]),
            b"HTTP/1.1 502 Bad Gateway\r\nProxy-Status: aInjected: 1\r\n\
              Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        for (status, reason) in [
            (400, "Bad Request"),
            (402, "Payment Required"),
            (403, "Forbidden"),
            (408, "Request Timeout"),
            (429, "Too Many Requests"),
            (431, "Request Header Fields Too Large"),
            (501, "Not Implemented"),
            (503, "Service Unavailable"),
            (504, "Gateway Timeout"),
            (599, "Error"),
        ] {
            let r = response(status, None, &[]);
            let want = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            assert_eq!(r, want.as_bytes());
        }
    }

    #[test]
    fn debug_does_not_show_head() {
        let mut p = HttpHeadParser::new(HttpLimits::default());
        assert_eq!(
            p.input(b"CONNECT a:1 HTTP/1.1\r\nProxy-Authorization: Basic c2VjcmV0\r\n"),
            Ok(None)
        );
        assert!(!format!("{p:?}").contains("c2VjcmV0"));
    }
}
