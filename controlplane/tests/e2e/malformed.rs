//! Malformed handshakes on both front ends: every case gets its specified answer (and
//! nothing more), then a legitimate request succeeds on the same, unchanged process.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use crate::fixtures::{targets, Net};

/// What the client receives before the server closes.
#[derive(Debug, Clone, PartialEq)]
enum Expect {
    /// Exactly these bytes, then EOF.
    Exact(Vec<u8>),
    /// An HTTP response with this status (with `Proxy-Status` when it is an error).
    Status(u16),
}

/// Sends `bytes`, half-closes, and reads until the server closes.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    // The server may answer and close before all bytes are written: ignore EPIPE.
    let _ = s.write_all(bytes);
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e) => panic!("no close after {got:?}: {e}"),
        }
    }
}

fn check(addr: SocketAddr, name: &str, bytes: &[u8], expect: &Expect) {
    let got = exchange(addr, bytes);
    match expect {
        Expect::Exact(want) => assert_eq!(&got, want, "{name}"),
        Expect::Status(code) => {
            let text = String::from_utf8_lossy(&got);
            assert!(
                text.starts_with(&format!("HTTP/1.1 {code} ")),
                "{name}: expected {code}, got {text:?}"
            );
            if *code >= 400 {
                assert!(
                    text.contains("Proxy-Status: turbo; error="),
                    "{name}: {text:?}"
                );
            }
        }
    }
}

const GREETING_OK: [u8; 2] = [5, 2];
const AUTH_OK: [u8; 2] = [1, 0];
const AUTH_FAILED: [u8; 2] = [1, 1];

fn socks_reply(code: u8) -> Vec<u8> {
    vec![5, code, 0, 1, 0, 0, 0, 0, 0, 0]
}

fn auth(user: &[u8], pass: &[u8]) -> Vec<u8> {
    let mut v = vec![1, user.len() as u8];
    v.extend_from_slice(user);
    v.push(pass.len() as u8);
    v.extend_from_slice(pass);
    v
}

fn request(cmd: u8, rsv: u8, atyp: u8, addr: &[u8], port: u16) -> Vec<u8> {
    let mut v = vec![5, cmd, rsv, atyp];
    v.extend_from_slice(addr);
    v.extend_from_slice(&port.to_be_bytes());
    v
}

fn domain(host: &[u8]) -> Vec<u8> {
    let mut v = vec![host.len() as u8];
    v.extend_from_slice(host);
    v
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

fn socks_cases(key: &str) -> Vec<(String, Vec<u8>, Expect)> {
    let greet: &[u8] = &[5, 1, 2];
    let good_auth = auth(b"e2e", key.as_bytes());
    let ok_prefix = cat(&[&GREETING_OK, &AUTH_OK]);
    let after_auth = |req: Vec<u8>, code: u8| {
        (
            cat(&[greet, &good_auth, &req]),
            Expect::Exact(cat(&[&ok_prefix, &socks_reply(code)])),
        )
    };
    let mut cases = Vec::new();
    let mut add =
        |name: String, (bytes, expect): (Vec<u8>, Expect)| cases.push((name, bytes, expect));

    for v in [0u8, 1, 4, 6, 0x16, 0x7f, 0xff] {
        add(
            format!("version {v}"),
            (vec![v, 1, 2], Expect::Exact(vec![])),
        );
    }
    add(
        "GET to the SOCKS port".into(),
        (
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            Expect::Exact(vec![]),
        ),
    );
    add(
        "CONNECT to the SOCKS port".into(),
        (
            b"CONNECT x:443 HTTP/1.1\r\n\r\n".to_vec(),
            Expect::Exact(vec![]),
        ),
    );
    add(
        "zero methods".into(),
        (vec![5, 0], Expect::Exact(vec![5, 0xff])),
    );
    for methods in [&[0u8][..], &[1], &[0, 1], &[0x80, 0xfe], &[3, 4, 5, 6]] {
        let g = cat(&[&[5, methods.len() as u8], methods]);
        add(
            format!("methods {methods:?}"),
            (g, Expect::Exact(vec![5, 0xff])),
        );
    }
    let refused = Expect::Exact(cat(&[&GREETING_OK, &AUTH_FAILED]));
    add(
        "auth version 0".into(),
        (cat(&[greet, &[0, 1, b'a', 1, b'b']]), refused.clone()),
    );
    add(
        "auth version 5".into(),
        (cat(&[greet, &[5, 1, b'a', 1, b'b']]), refused.clone()),
    );
    add(
        "empty user".into(),
        (cat(&[greet, &auth(b"", key.as_bytes())]), refused.clone()),
    );
    add(
        "empty password".into(),
        (cat(&[greet, &auth(b"e2e", b"")]), refused.clone()),
    );
    add(
        "empty both".into(),
        (cat(&[greet, &auth(b"", b"")]), refused.clone()),
    );
    add(
        "wrong key".into(),
        (
            cat(&[greet, &auth(b"e2e", b"tk_not_a_key")]),
            refused.clone(),
        ),
    );
    let v4 = [93, 184, 216, 34];
    for cmd in [0u8, 2, 3, 4, 0xff] {
        add(
            format!("command {cmd}"),
            after_auth(request(cmd, 0, 1, &v4, 80), 7),
        );
    }
    for atyp in [0u8, 2, 5, 0xff] {
        add(
            format!("address type {atyp}"),
            after_auth(request(1, 0, atyp, &v4, 80), 8),
        );
    }
    add(
        "reserved byte".into(),
        after_auth(request(1, 1, 1, &v4, 80), 1),
    );
    add(
        "empty domain".into(),
        after_auth(request(1, 0, 3, &domain(b""), 80), 1),
    );
    add(
        "254-byte domain".into(),
        after_auth(request(1, 0, 3, &domain(&[b'a'; 254]), 80), 1),
    );
    add(
        "NUL in domain".into(),
        after_auth(request(1, 0, 3, &domain(b"exa\0mple.com"), 80), 1),
    );
    add(
        "space in domain".into(),
        after_auth(request(1, 0, 3, &domain(b"exa mple.com"), 80), 1),
    );
    add(
        "port 0, IPv4".into(),
        after_auth(request(1, 0, 1, &v4, 0), 1),
    );
    add(
        "port 0, domain".into(),
        after_auth(request(1, 0, 3, &domain(b"example.com"), 0), 1),
    );
    add(
        "port 0, IPv6".into(),
        after_auth(
            request(
                1,
                0,
                4,
                &[0x26, 6, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x11],
                0,
            ),
            1,
        ),
    );

    // A truncated field at every offset of three valid handshakes: the client closes
    // early and gets the answers to the messages it completed, nothing else.
    for req in [
        request(1, 0, 3, &domain(b"example.com"), 80),
        request(1, 0, 1, &v4, 443),
        request(
            1,
            0,
            4,
            &[0x26, 6, 0x47, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x11],
            443,
        ),
    ] {
        let full = cat(&[greet, &good_auth, &req]);
        for cut in 0..full.len() {
            let mut want = Vec::new();
            if cut >= greet.len() {
                want.extend_from_slice(&GREETING_OK);
            }
            if cut >= greet.len() + good_auth.len() {
                want.extend_from_slice(&AUTH_OK);
            }
            add(
                format!("truncated at {cut} of {}", full.len()),
                (full[..cut].to_vec(), Expect::Exact(want)),
            );
        }
    }
    cases
}

fn http_cases(key: &str, target: SocketAddr) -> Vec<(String, Vec<u8>, Expect)> {
    use base64::Engine;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("e2e:{key}"));
    let auth = format!("Proxy-Authorization: Basic {cred}\r\n");
    let connect = |extra: &str| {
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{auth}{extra}\r\n").into_bytes()
    };
    let mut cases: Vec<(String, Vec<u8>, Expect)> = Vec::new();
    let mut add =
        |name: &str, bytes: Vec<u8>, expect: Expect| cases.push((name.to_owned(), bytes, expect));
    add(
        "bare LF",
        String::from_utf8(connect(""))
            .unwrap()
            .replace("\r\n", "\n")
            .into_bytes(),
        Expect::Status(400),
    );
    add(
        "bare LF in one header",
        connect("X-A: b\nX-B: c\r\n"),
        Expect::Status(400),
    );
    add(
        "obs-fold",
        connect("X-A: b\r\n  folded\r\n"),
        Expect::Status(400),
    );
    add(
        "NUL in a header value",
        connect("X-A: b\0c\r\n"),
        Expect::Status(400),
    );
    add(
        "NUL in a header name",
        connect("X\0A: b\r\n"),
        Expect::Status(400),
    );
    add(
        "NUL in the target",
        format!("CONNECT exa\0mple.com:443 HTTP/1.1\r\n{auth}\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "oversized head",
        connect(&format!("X-Big: {}\r\n", "a".repeat(100_000))),
        Expect::Status(431),
    );
    add(
        "too many headers",
        connect(&"X-A: b\r\n".repeat(500)),
        Expect::Status(431),
    );
    add(
        "Content-Length on CONNECT",
        connect("Content-Length: 5\r\n"),
        Expect::Status(400),
    );
    add(
        "Transfer-Encoding on CONNECT",
        connect("Transfer-Encoding: chunked\r\n"),
        Expect::Status(400),
    );
    add(
        "no credentials",
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").into_bytes(),
        Expect::Status(407),
    );
    add(
        "wrong key",
        format!(
            "CONNECT {target} HTTP/1.1\r\nProxy-Authorization: Basic {}\r\n\r\n",
            base64::engine::general_purpose::STANDARD.encode("e2e:tk_wrong")
        )
        .into_bytes(),
        Expect::Status(407),
    );
    add(
        "bad base64",
        format!("CONNECT {target} HTTP/1.1\r\nProxy-Authorization: Basic !!!\r\n\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "missing target",
        format!("CONNECT HTTP/1.1\r\n{auth}\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "port 0",
        format!("CONNECT 127.0.0.1:0 HTTP/1.1\r\n{auth}\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "no port",
        format!("CONNECT 127.0.0.1 HTTP/1.1\r\n{auth}\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "https absolute-form",
        format!("GET https://example.com/ HTTP/1.1\r\n{auth}\r\n").into_bytes(),
        Expect::Status(501),
    );
    add(
        "origin-form",
        format!("GET / HTTP/1.1\r\nHost: example.com\r\n{auth}\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "HTTP/2 preface",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
        Expect::Status(400),
    );
    add(
        "HTTP/1.0 is fine but version 3.0 is not",
        format!("CONNECT {target} HTTP/3.0\r\n{auth}\r\n").into_bytes(),
        Expect::Status(400),
    );
    add(
        "SOCKS5 greeting to the HTTP port",
        vec![5, 1, 2],
        Expect::Exact(vec![]),
    );
    add(
        "binary garbage line",
        cat(&[&[0xff; 64], b"\r\n\r\n"]),
        Expect::Status(400),
    );
    add(
        "binary garbage without a line end",
        vec![0xff; 64],
        Expect::Exact(vec![]),
    );
    let full = connect("");
    for cut in 0..full.len() {
        add(
            &format!("truncated at {cut} of {}", full.len()),
            full[..cut].to_vec(),
            Expect::Exact(vec![]),
        );
    }
    cases
}

fn malformed_handshakes_get_specified_answers(driver: &'static str) {
    let mut net = Net::start(driver);
    let echo = targets::echo();
    let pid = net.server.id();
    let socks_cases = socks_cases(&net.key);
    for (name, bytes, expect) in &socks_cases {
        check(net.socks, name, bytes, expect);
    }
    let http_cases = http_cases(&net.key, echo);
    for (name, bytes, expect) in &http_cases {
        check(net.http, name, bytes, expect);
    }
    // Bytes pipelined after a CONNECT head, before the 200: relayed once the tunnel is up.
    let mut s = TcpStream::connect(net.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    use base64::Engine;
    let cred = base64::engine::general_purpose::STANDARD.encode(format!("e2e:{}", net.key));
    s.write_all(
        format!("CONNECT {echo} HTTP/1.1\r\nProxy-Authorization: Basic {cred}\r\n\r\nearly bytes")
            .as_bytes(),
    )
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.ends_with(b"early bytes") {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 200 "),
        "{:?}",
        String::from_utf8_lossy(&got)
    );

    // The same process still serves a legitimate customer.
    assert!(net.server.try_wait().unwrap().is_none(), "the server died");
    assert_eq!(net.server.id(), pid);
    net.echo_once(echo.port());
    println!(
        "{driver}: {} malformed SOCKS5 and {} malformed HTTP handshakes answered as specified; server {pid} still serving",
        socks_cases.len(),
        http_cases.len() + 1
    );
}

crate::both_drivers!(malformed_handshakes_get_specified_answers);
