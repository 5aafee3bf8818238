//! Tests of the proxy request head parser and the proxy's responses.
#![allow(clippy::unwrap_used)]

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
    let (r, _) = parse(b"POST HTTP://example.org HTTP/1.0\r\nHost: x\r\nContent-Length: 4\r\n\r\n");
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
        req.extend_from_slice(b"X-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n");
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
        let want =
            format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
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
