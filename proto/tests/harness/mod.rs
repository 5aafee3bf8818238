//! Shared by the cargo-fuzz targets in `fuzz/` (through `#[path]`) and by
//! `proto/tests/corpus.rs`: each function feeds one input through a parser whole,
//! one byte at a time and in pseudo-random chunks, and panics if the results differ or
//! an invariant breaks.
#![allow(dead_code)]

use turbo_proto::http::{response, HttpError, HttpHeadParser, HttpLimits, HttpProxyRequest};
use turbo_proto::http_body::{BodyEnd, BodyFraming, ResponseEnd};
use turbo_proto::params::{parse_username, CountryCode, MAX_SESSTIME_MINUTES};
use turbo_proto::socks5::{Socks5Error, Socks5Handshake, Socks5Step};
use turbo_proto::wire::control::{ControlDecoder, ControlMessage};
use turbo_proto::wire::relay::{RelayHeader, RelayHeaderReader, RelayReply};
use turbo_proto::wire::WireError;

/// The splittings every input is tried with: whole, byte at a time, and chunks whose
/// sizes derive from the input itself.
fn splittings(data: &[u8]) -> Vec<Vec<&[u8]>> {
    let whole = vec![data];
    let bytes = data.chunks(1).collect();
    // FNV-1a of the input seeds an xorshift generator for the chunk sizes.
    let mut seed = data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    let mut random = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let n = match seed % 8 {
            0 => 1 + (seed >> 8) as usize % 512,
            _ => 1 + (seed >> 8) as usize % 16,
        }
        .min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        random.push(chunk);
        rest = tail;
    }
    vec![whole, bytes, random]
}

// ---------------------------------------------------------------------------- SOCKS5

/// Everything a SOCKS5 handshake did: the steps, the bytes sent, and the bytes after
/// the request (leftover plus anything never fed).
#[derive(Debug, PartialEq)]
struct SocksRun {
    steps: Vec<Result<Socks5Step, Socks5Error>>,
    out: Vec<u8>,
    after: Vec<u8>,
}

fn socks_run(chunks: &[&[u8]]) -> SocksRun {
    let mut hs = Socks5Handshake::new();
    let mut steps = Vec::new();
    let mut out = Vec::new();
    let mut i = 0;
    let mut next: &[u8] = chunks.first().copied().unwrap_or(&[]);
    let mut after = Vec::new();
    loop {
        let step = hs.input(next);
        next = &[];
        out.extend(hs.take_output());
        match step {
            Ok(Socks5Step::NeedInput) => {
                i += 1;
                match chunks.get(i) {
                    Some(c) => next = c,
                    None => break,
                }
            }
            Ok(Socks5Step::Credentials(c)) => {
                assert!(!c.username.is_empty() && !c.password.is_empty());
                // Refuse one password so both paths are exercised.
                hs.auth_result(c.password != "bad");
                out.extend(hs.take_output());
                steps.push(Ok(Socks5Step::Credentials(c)));
            }
            Ok(Socks5Step::Connect(target)) => {
                assert_ne!(target.port(), 0);
                steps.push(Ok(Socks5Step::Connect(target)));
                assert_eq!(hs.input(b"x"), Err(Socks5Error::OutOfOrder));
                after = std::mem::take(&mut hs).into_leftover();
                for c in chunks.iter().skip(i + 1) {
                    after.extend_from_slice(c);
                }
                break;
            }
            Err(e) => {
                steps.push(Err(e));
                break;
            }
        }
    }
    SocksRun { steps, out, after }
}

/// Runs a SOCKS5 handshake over `data`.
pub(crate) fn socks5(data: &[u8]) {
    let mut first: Option<SocksRun> = None;
    for chunks in splittings(data) {
        let run = socks_run(&chunks);
        match &first {
            None => first = Some(run),
            Some(f) => assert_eq!(f, &run, "chunked SOCKS5 run differs"),
        }
    }
}

// ------------------------------------------------------------------------------ HTTP

type HttpRun = (Result<Option<HttpProxyRequest>, HttpError>, Vec<u8>);

fn http_run(chunks: &[&[u8]], limits: HttpLimits) -> HttpRun {
    let mut p = HttpHeadParser::new(limits);
    let mut result = Ok(None);
    for c in chunks {
        match p.input(c) {
            Ok(None) => {}
            Ok(Some(r)) => {
                assert!(matches!(result, Ok(None)), "a second request from one head");
                result = Ok(Some(r));
            }
            Err(e) => {
                let again = p.input(b"");
                assert_eq!(again.as_ref().err(), Some(&e));
                result = Err(e);
                break;
            }
        }
    }
    (result, p.into_leftover())
}

fn check_http(run: &HttpRun, limits: HttpLimits) {
    match &run.0 {
        Ok(Some(HttpProxyRequest::Forward { target, head, .. })) => {
            assert_ne!(target.port(), 0);
            assert!(head.ends_with(b"Connection: close\r\n\r\n"));
            let lower = head.to_ascii_lowercase();
            assert!(!lower.windows(22).any(|w| w == b"\nproxy-authorization:"));
            // The rewritten head is an origin-form request.
            let space = lower.iter().position(|&b| b == b' ').unwrap_or(0);
            assert_eq!(lower.get(space + 1), Some(&b'/'));
        }
        Ok(Some(HttpProxyRequest::Connect { target, .. })) => assert_ne!(target.port(), 0),
        Ok(None) => {}
        Err(e) => {
            let status = e.status();
            assert!(matches!(status, 400 | 431 | 501));
            let r = response(status, Some(e.proxy_error()), &[("X", "y")]);
            assert!(r.ends_with(b"\r\n\r\n"));
            if matches!(e, HttpError::HeadTooLarge) {
                assert!(limits.max_head_bytes < usize::MAX);
            }
        }
    }
}

/// Parses `data` as an HTTP proxy head with default and with tight limits.
pub(crate) fn http_head(data: &[u8]) {
    for limits in [
        HttpLimits::default(),
        HttpLimits {
            max_head_bytes: 200,
            max_headers: 4,
        },
    ] {
        let mut first: Option<HttpRun> = None;
        for chunks in splittings(data) {
            let run = http_run(&chunks, limits);
            check_http(&run, limits);
            match &first {
                None => first = Some(run),
                Some(f) => assert_eq!(f, &run, "chunked HTTP run differs"),
            }
        }
    }
}

// ------------------------------------------------------------------------- http body

/// What a body scanner made of a whole input: bytes consumed, done, error.
fn body_run(chunks: &[&[u8]], framing: BodyFraming) -> (usize, bool, bool) {
    let mut end = BodyEnd::new(framing);
    let mut used = 0;
    for chunk in chunks {
        match end.scan(chunk) {
            Ok(n) => {
                assert!(n <= chunk.len());
                used += n;
                if n < chunk.len() {
                    assert!(end.is_done(), "stopped early without being done");
                    break;
                }
            }
            Err(_) => return (used, end.is_done(), true),
        }
    }
    (used, end.is_done(), false)
}

/// What a response follower made of a whole input: bytes used, where the close notice
/// went (offset in the whole input), done, error.
fn response_run(chunks: &[&[u8]], head_request: bool) -> (usize, Option<usize>, bool, bool) {
    let mut end = ResponseEnd::new(head_request);
    let (mut used, mut insert) = (0, None);
    for chunk in chunks {
        match end.feed(chunk) {
            Ok(fed) => {
                assert!(fed.used <= chunk.len());
                if let Some(at) = fed.insert_at {
                    assert!(insert.is_none(), "Connection: close placed twice");
                    assert!(at <= fed.used);
                    insert = Some(used + at);
                }
                used += fed.used;
                if fed.done {
                    return (used, insert, true, false);
                }
                assert_eq!(fed.used, chunk.len(), "bytes left over before the end");
            }
            Err(_) => return (used, insert, false, true),
        }
    }
    (used, insert, false, false)
}

/// Scans `data` as a chunked request body and as a response (to GET and HEAD): the
/// result must not depend on how the bytes were split.
pub(crate) fn http_body(data: &[u8]) {
    let framings = [
        BodyFraming::Chunked,
        BodyFraming::Length(data.len() as u64 / 2),
    ];
    for framing in framings {
        let runs: Vec<_> = splittings(data)
            .iter()
            .map(|c| body_run(c, framing))
            .collect();
        same_however_split(&runs, |r| (r.1, r.2), "split body runs differ");
    }
    for head_request in [false, true] {
        let runs: Vec<_> = splittings(data)
            .iter()
            .map(|c| response_run(c, head_request))
            .collect();
        same_however_split(&runs, |r| (r.2, r.3), "split response runs differ");
    }
}

/// Every run of one input, split differently, ends the same way: `(done, failed)` from
/// `outcome` agree, and without an error the whole runs agree too (after an error the
/// count of bytes accepted may not, as the error drops the call's count).
fn same_however_split<R: PartialEq + std::fmt::Debug>(
    runs: &[R],
    outcome: impl Fn(&R) -> (bool, bool),
    what: &str,
) {
    let first = outcome(&runs[0]);
    assert!(runs.iter().all(|r| outcome(r) == first), "{what}: {runs:?}");
    if !first.1 {
        assert!(runs.iter().all(|r| r == &runs[0]), "{what}: {runs:?}");
    }
}

// -------------------------------------------------------------------------- username

/// Parses `data` (when UTF-8) as a proxy username.
pub(crate) fn username(data: &[u8]) {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(two) = s.get(..2) {
        if let Ok(c) = CountryCode::parse(two) {
            assert_eq!(c.as_str(), two.to_ascii_uppercase());
        }
    }
    let Ok(p) = parse_username(s) else {
        return;
    };
    assert!(!s.is_empty() && s.len() <= 255);
    if let Some(session) = &p.session {
        assert!((1..=64).contains(&session.len()));
    }
    if let Some(m) = p.sesstime_minutes {
        assert!((1..=MAX_SESSTIME_MINUTES).contains(&m));
        assert!(p.session.is_some());
    }
    if let Some(c) = p.country {
        assert_eq!(CountryCode::parse(c.as_str()), Ok(c));
    }
}

// ----------------------------------------------------------------------------- relay

/// Decodes growing prefixes the way a driver would: the first definite answer must
/// match decoding the whole input.
fn first_definite<T: PartialEq + std::fmt::Debug>(
    chunks: &[&[u8]],
    decode: impl Fn(&[u8]) -> Result<Option<(T, usize)>, WireError>,
) -> Result<Option<(T, usize)>, WireError> {
    let mut buf = Vec::new();
    for c in chunks {
        buf.extend_from_slice(c);
        match decode(&buf) {
            Ok(None) => {}
            other => return other,
        }
    }
    Ok(None)
}

/// Decodes `data` as a relay header and as a relay reply.
pub(crate) fn relay_header(data: &[u8]) {
    let whole = RelayHeader::decode(data);
    for chunks in splittings(data) {
        assert_eq!(first_definite(&chunks, RelayHeader::decode), whole);
    }
    if let Ok(Some((h, used))) = &whole {
        assert!(*used <= data.len());
        let mut out = Vec::new();
        h.encode(&mut out);
        assert_eq!(RelayHeader::decode(&out), Ok(Some((h.clone(), out.len()))));
    }

    let whole = RelayReply::decode(data);
    for chunks in splittings(data) {
        assert_eq!(first_definite(&chunks, RelayReply::decode), whole);
    }
    if let Ok(Some((r, used))) = &whole {
        assert!(*used <= data.len());
        let mut out = Vec::new();
        r.encode(&mut out);
        assert_eq!(RelayReply::decode(&out), Ok(Some((r.clone(), out.len()))));
    }
}

// --------------------------------------------------------------------------- control

type ControlRun = (Vec<ControlMessage>, Option<WireError>);

fn control_run(chunks: &[&[u8]]) -> ControlRun {
    let mut d = ControlDecoder::new();
    let mut msgs = Vec::new();
    for c in chunks {
        d.push(c);
        loop {
            match d.next_message() {
                Ok(Some(m)) => msgs.push(m),
                Ok(None) => break,
                Err(e) => return (msgs, Some(e)),
            }
        }
    }
    (msgs, None)
}

/// Decodes `data` as a control stream.
pub(crate) fn control(data: &[u8]) {
    let mut first: Option<ControlRun> = None;
    for chunks in splittings(data) {
        let run = control_run(&chunks);
        match &first {
            None => first = Some(run),
            Some(f) => assert_eq!(f, &run, "chunked control run differs"),
        }
    }
    if let Some((msgs, _)) = first {
        for m in msgs {
            if matches!(m, ControlMessage::Unknown { .. }) {
                continue;
            }
            let mut out = Vec::new();
            m.encode(&mut out);
            let mut d = ControlDecoder::new();
            d.push(&out);
            assert_eq!(d.next_message(), Ok(Some(m)));
        }
    }
}

/// One run of the node's relay-stream reader over `chunks`, the last one with FIN.
/// On success, the payload is what the reader returned plus the chunks after it (which
/// the node then reads from the stream directly).
fn relay_stream_run(chunks: &[&[u8]]) -> Result<Option<(RelayHeader, Vec<u8>)>, WireError> {
    let mut reader = RelayHeaderReader::new();
    if chunks.is_empty() {
        return reader.feed(&[], true);
    }
    for (i, c) in chunks.iter().enumerate() {
        let fin = i + 1 == chunks.len();
        if let Some((header, mut payload)) = reader.feed(c, fin)? {
            chunks[i + 1..]
                .iter()
                .for_each(|c| payload.extend_from_slice(c));
            return Ok(Some((header, payload)));
        }
    }
    Ok(None)
}

/// The node's relay-stream reader: every splitting of the stream gives the same header
/// and the same payload remainder as the one-shot decoder, or the same error class.
pub(crate) fn relay_stream(data: &[u8]) {
    let whole = RelayHeader::decode(data);
    for chunks in splittings(data) {
        let run = relay_stream_run(&chunks);
        match (&whole, &run) {
            (Ok(Some((h, used))), Ok(Some((got, rest)))) => {
                assert_eq!(got, h);
                assert_eq!(rest.as_slice(), &data[*used..]);
            }
            (Ok(None), Err(WireError::Truncated(_))) => {}
            (Ok(None), Err(WireError::TooLong { .. })) => {
                unreachable!("a header prefix within limits was called too long")
            }
            (Err(e), Err(got)) => assert_eq!(e, got),
            other => panic!("splitting changed the outcome: {other:?}"),
        }
    }
}

/// A pairing code as a runner types it, and a poll answer's error code: a code that
/// parses prints and parses back to itself, is eight letters of the alphabet, and any
/// text names at most one poll answer, which names it back.
pub(crate) fn pairing(data: &[u8]) {
    use turbo_proto::pairing::{PollAnswer, UserCode, USER_CODE_ALPHABET, USER_CODE_LEN};
    let text = String::from_utf8_lossy(data);
    if let Ok(code) = UserCode::parse(&text) {
        assert_eq!(code.as_str().len(), USER_CODE_LEN);
        assert!(code
            .as_str()
            .bytes()
            .all(|b| USER_CODE_ALPHABET.contains(&b)));
        assert_eq!(UserCode::parse(&code.to_string()), Ok(code.clone()));
        assert_eq!(UserCode::parse(code.as_str()), Ok(code));
    }
    if let Some(answer) = PollAnswer::from_error_code(&text) {
        let code = answer.error_code().expect("an error answer");
        assert_eq!(PollAnswer::from_error_code(code), Some(answer));
    }
    if let Some(code) = UserCode::from_random(data) {
        assert_eq!(UserCode::parse(&code.to_string()), Ok(code));
    }
}
