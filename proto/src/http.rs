//! HTTP/1.1 proxy request head parser, as a sans-IO state machine.
//!
//! Accepts `CONNECT host:port HTTP/1.1` and absolute-form requests
//! (`GET http://host[:port]/path HTTP/1.1`), with `Proxy-Authorization: Basic`.
//! For an absolute-form request the parser produces the head to send upstream: the
//! request line in origin-form, `Proxy-Authorization`, `Proxy-Connection` and other
//! hop-by-hop headers removed, plus `Connection: close`.

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
        todo!()
    }

    /// The RFC 9209 proxy error type for the `Proxy-Status` header.
    pub fn proxy_error(&self) -> &'static str {
        todo!()
    }
}

/// Builds a complete proxy response head: status line, `Proxy-Status` when
/// `proxy_status` is set, `extra` headers, `Content-Length: 0` for errors, and the blank
/// line. A `407` always carries `Proxy-Authenticate: Basic realm="turbo"`.
pub fn response(status: u16, proxy_status: Option<&str>, extra: &[(&str, &str)]) -> Vec<u8> {
    todo!("{status} {proxy_status:?} {}", extra.len())
}

/// Incremental parser of one proxy request head.
#[derive(Debug)]
pub struct HttpHeadParser {
    _todo: HttpLimits,
}

impl HttpHeadParser {
    /// A parser with the given limits.
    pub fn new(limits: HttpLimits) -> Self {
        todo!("{limits:?}")
    }

    /// Appends `bytes`; returns the request once the head is complete.
    ///
    /// # Errors
    /// [`HttpError`]: answer with [`response`]`(err.status(), ...)` and close.
    pub fn input(&mut self, bytes: &[u8]) -> Result<Option<HttpProxyRequest>, HttpError> {
        todo!("{}", bytes.len())
    }

    /// Bytes received after the head (request body or pipelined data).
    pub fn into_leftover(self) -> Vec<u8> {
        todo!()
    }
}
