//! Tests of the SOCKS5 handshake state machine.
#![allow(clippy::unwrap_used)]

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
