//! The head an absolute-form request is forwarded with: request line in origin-form,
//! hop-by-hop headers (fixed ones and those `Connection` names) removed, `Host` from
//! the URL, and `Connection: close`.

use super::lines::trim_ows;

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

/// The further hop-by-hop headers the tokens of `Connection` name (lower case).
pub(super) fn named_hop_by_hop<'a>(connection: impl Iterator<Item = &'a [u8]>) -> Vec<Vec<u8>> {
    let mut hop: Vec<Vec<u8>> = Vec::new();
    for v in connection {
        for token in v.split(|&b| b == b',') {
            let token = trim_ows(token);
            if !token.is_empty() {
                hop.push(token.to_ascii_lowercase());
            }
        }
    }
    hop
}

/// The rewritten head to send to the target: `line` (origin-form), the headers that
/// are end-to-end, then `Host: authority` and `Connection: close`.
pub(super) fn upstream_head(
    line: &str,
    authority: &str,
    headers: &[(&[u8], &[u8])],
    hop: &[Vec<u8>],
    capacity: usize,
) -> Vec<u8> {
    let mut head = Vec::with_capacity(capacity);
    head.extend_from_slice(line.as_bytes());
    head.extend_from_slice(b"\r\n");
    for (name, value) in headers {
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
    head
}
