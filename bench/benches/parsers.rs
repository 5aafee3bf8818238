//! `cargo bench -p turbo-bench --bench parsers`: the sans-IO parsers on the connection
//! set-up path (divan): SOCKS5 handshake, HTTP proxy head, username parameters, and the
//! relay-stream header codec.

use divan::black_box;
use turbo_proto::http::{HttpHeadParser, HttpLimits};
use turbo_proto::params::parse_username;
use turbo_proto::socks5::{Socks5Handshake, Socks5Step};
use turbo_proto::wire::relay::{RelayHeader, RelayHeaderReader};
use turbo_proto::TargetAddr;

fn main() {
    divan::main();
}

/// Greeting, RFC 1929 credentials and a CONNECT to a domain, all in one read.
#[divan::bench]
fn socks5_handshake() -> usize {
    let mut input = vec![5, 1, 2, 1, 26];
    input.extend_from_slice(b"alice-country-us-session-x");
    input.push(35);
    input.extend_from_slice(b"tk_0123456789abcdef0123456789abcdef");
    input.extend_from_slice(&[5, 1, 0, 3, 11]);
    input.extend_from_slice(b"example.com");
    input.extend_from_slice(&443u16.to_be_bytes());
    let mut hs = Socks5Handshake::new();
    let mut next: &[u8] = black_box(&input);
    loop {
        match hs.input(next) {
            Ok(Socks5Step::Credentials(_)) => hs.auth_result(true),
            Ok(Socks5Step::Connect(t)) => return t.port() as usize + hs.take_output().len(),
            other => panic!("{other:?}"),
        }
        next = &[];
    }
}

/// A CONNECT head with Proxy-Authorization and a few headers.
#[divan::bench]
fn http_connect_head() -> bool {
    let head = b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\
User-Agent: curl/8.5.0\r\nProxy-Authorization: Basic YWxpY2UtY291bnRyeS11czp0a18wMTIzNDU2Nzg5\r\n\
Proxy-Connection: Keep-Alive\r\n\r\n";
    let mut p = HttpHeadParser::new(HttpLimits::default());
    p.input(black_box(head)).expect("valid").is_some()
}

/// A username with every parameter kind.
#[divan::bench]
fn username_params() -> bool {
    parse_username(black_box("alice-country-us-session-abc123-sesstime-30")).is_ok()
}

/// Encoding then reading back a relay header, as server and node do per stream.
#[divan::bench]
fn relay_header_round_trip() -> u16 {
    let header = RelayHeader {
        target: TargetAddr::domain("example.com", 443).expect("valid"),
        connect_timeout_ms: 10_000,
        flags: 0,
    };
    let mut out = Vec::with_capacity(32);
    header.encode(&mut out);
    let mut reader = RelayHeaderReader::new();
    let (h, _) = reader
        .feed(black_box(&out), false)
        .expect("valid")
        .expect("complete");
    h.target.port()
}
