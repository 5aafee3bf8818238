//! The proxy's own HTTP responses: status line, reason phrase, `Proxy-Status`.

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
