//! HTTP/1.1 proxy request head parser, as a sans-IO state machine.
//!
//! Accepts `CONNECT host:port HTTP/1.1` and absolute-form requests
//! (`GET http://host[:port]/path HTTP/1.1`), with `Proxy-Authorization: Basic`.
//! For an absolute-form request the parser produces the head to send upstream: the
//! request line in origin-form, `Proxy-Authorization`, `Proxy-Connection` and other
//! hop-by-hop headers removed, `Host` taken from the URL (RFC 9112 §3.2.2), plus
//! `Connection: close`: one request per connection (see [`crate::http_body`]).

use std::ops::Range;

use crate::http_body::BodyFraming;
use crate::target::TargetAddr;
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

mod forward;
mod lines;
mod response;
#[cfg(test)]
mod tests;

use self::lines::*;
pub use self::response::response;

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
                let hop = forward::named_hop_by_hop(named("connection"));
                let head =
                    forward::upstream_head(&line, &authority, &headers, &hop, buf.len() + 64);
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
