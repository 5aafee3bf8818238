//! The pieces of a request head: request line and authority, header lines, Basic
//! credentials, and the body framing the headers declare.

use std::net::{Ipv6Addr, SocketAddr};
use std::ops::Range;

use base64::Engine as _;

use super::{HttpError, RequestLine};
use crate::http_body::BodyFraming;
use crate::target::{TargetAddr, TargetError};
use crate::Credentials;

/// RFC 9110 `tchar`.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Splits `name: value` and validates both; returns ranges relative to `line`.
pub(super) fn parse_header_line(line: &[u8]) -> Result<(Range<usize>, Range<usize>), HttpError> {
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

pub(super) fn trim_ows_start(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    s
}

/// How a forwarded request's body is delimited: by its last `Transfer-Encoding`, whose
/// final coding must be chunked (RFC 9112 §6.3), else by its `Content-Length`.
pub(super) fn body_framing(
    te: Option<&[u8]>,
    length: Option<u64>,
) -> Result<BodyFraming, HttpError> {
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
pub(super) fn check_framing<'a>(
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
pub(super) fn parse_basic(value: &[u8]) -> Result<Credentials, HttpError> {
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
pub(super) fn parse_request_line(line: &[u8]) -> Result<RequestLine, HttpError> {
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
pub(super) fn parse_authority(
    authority: &str,
    default_port: Option<u16>,
) -> Result<TargetAddr, HttpError> {
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

pub(super) fn parse_port(port: Option<&str>, default_port: Option<u16>) -> Result<u16, HttpError> {
    match port {
        None | Some("") => default_port.ok_or(HttpError::Malformed("missing port")),
        Some(p) if p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()) => {
            p.parse().map_err(|_| HttpError::Malformed("invalid port"))
        }
        Some(_) => Err(HttpError::Malformed("invalid port")),
    }
}
