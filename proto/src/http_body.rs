//! One plain-HTTP request per customer connection, as sans-IO state machines.
//!
//! The HTTP front end forwards exactly one absolute-form request per customer
//! connection: every later request on a kept-alive connection could carry another
//! key's `Proxy-Authorization` (or none) and would reach the target unparsed and billed
//! to the first key. So the proxy asks the target to close (`Connection: close` in the
//! request head), and:
//! - [`BodyEnd`] finds where the request's body ends (`Content-Length` or chunked,
//!   RFC 9112 §6-7), so that nothing after it (a pipelined request) goes upstream;
//! - [`ResponseEnd`] adds `Connection: close` to the target's response head, so that
//!   the customer sends its next request on a new connection, and finds where the
//!   response ends, so that the proxy closes then even if the target would not.

/// How the request's body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// `Content-Length: n`, or no body at all (`0`).
    Length(u64),
    /// `Transfer-Encoding: …, chunked`.
    Chunked,
}

/// A chunked body that is not valid chunked coding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed chunked body: {0}")]
pub struct BodyError(pub &'static str);

/// Longest chunk-size line (size, extensions) or trailer line accepted.
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many body bytes are still to come (a `Content-Length` body).
    Fixed(u64),
    /// Reading a chunk-size line: the size so far, digits seen, and whether the digits
    /// ended (extensions or whitespace follow).
    Size {
        size: u64,
        digits: u8,
        ext: bool,
    },
    /// The chunk-size line's CR was seen; LF must follow.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to come.
    Data(u64),
    /// After chunk data: CR, then LF.
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines; `len` bytes of the current one seen.
    Trailer {
        len: usize,
    },
    /// A trailer line's CR was seen; `empty` when the line was empty (the end).
    TrailerLf {
        empty: bool,
    },
    /// The body is complete.
    Done,
}

/// Finds the end of one request body in the bytes that follow its head.
#[derive(Debug, Clone)]
pub struct BodyEnd {
    state: State,
    line: usize,
}

impl BodyEnd {
    /// A scanner for a body framed as `framing`.
    pub fn new(framing: BodyFraming) -> Self {
        let state = match framing {
            BodyFraming::Length(0) => State::Done,
            BodyFraming::Length(n) => State::Fixed(n),
            BodyFraming::Chunked => State::Size {
                size: 0,
                digits: 0,
                ext: false,
            },
        };
        BodyEnd { state, line: 0 }
    }

    /// Whether the whole body has been seen.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Consumes the body bytes at the start of `bytes`; returns how many there are.
    /// Bytes after the end of the body (another request) are not consumed.
    ///
    /// # Errors
    /// [`BodyError`] when a chunked body is malformed; the connection must close.
    pub fn scan(&mut self, bytes: &[u8]) -> Result<usize, BodyError> {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Done => break,
                State::Fixed(n) | State::Data(n) => {
                    let take = n.min((bytes.len() - at) as u64);
                    at += take as usize;
                    let left = n - take;
                    self.state = match (self.state, left) {
                        (State::Fixed(_), 0) => State::Done,
                        (State::Fixed(_), _) => State::Fixed(left),
                        (_, 0) => State::DataCr,
                        _ => State::Data(left),
                    };
                }
                _ => {
                    self.step(bytes[at])?;
                    at += 1;
                }
            }
        }
        Ok(at)
    }

    /// One byte of a chunk-size line, a chunk's CRLF or the trailer section.
    fn step(&mut self, b: u8) -> Result<(), BodyError> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(BodyError("line too long"));
        }
        self.state = match self.state {
            State::Size { size, digits, ext } => match b {
                b'\r' if digits > 0 => State::SizeLf { size },
                b'\r' | b'\n' => return Err(BodyError("chunk size missing")),
                _ if ext => {
                    if b == 0 {
                        return Err(BodyError("NUL in chunk extension"));
                    }
                    State::Size { size, digits, ext }
                }
                b';' | b' ' | b'\t' if digits > 0 => State::Size {
                    size,
                    digits,
                    ext: true,
                },
                _ => {
                    let d = (b as char)
                        .to_digit(16)
                        .ok_or(BodyError("invalid chunk size"))?;
                    if digits >= 15 {
                        return Err(BodyError("chunk size too large"));
                    }
                    State::Size {
                        size: size * 16 + u64::from(d),
                        digits: digits + 1,
                        ext: false,
                    }
                }
            },
            State::SizeLf { size } => {
                if b != b'\n' {
                    return Err(BodyError("bare CR after chunk size"));
                }
                self.line = 0;
                if size == 0 {
                    State::Trailer { len: 0 }
                } else {
                    State::Data(size)
                }
            }
            State::DataCr if b == b'\r' => State::DataLf,
            State::DataLf if b == b'\n' => {
                self.line = 0;
                State::Size {
                    size: 0,
                    digits: 0,
                    ext: false,
                }
            }
            State::DataCr | State::DataLf => return Err(BodyError("chunk data not ended by CRLF")),
            State::Trailer { len } => match b {
                b'\r' => State::TrailerLf { empty: len == 0 },
                b'\n' | 0 => return Err(BodyError("bare LF or NUL in trailer")),
                _ => State::Trailer { len: len + 1 },
            },
            State::TrailerLf { empty } => {
                if b != b'\n' {
                    return Err(BodyError("bare CR in trailer"));
                }
                self.line = 0;
                if empty {
                    State::Done
                } else {
                    State::Trailer { len: 0 }
                }
            }
            State::Fixed(_) | State::Data(_) | State::Done => self.state,
        };
        Ok(())
    }
}

/// The header line [`ResponseEnd`] adds to the response head.
pub const CONNECTION_CLOSE: &[u8] = b"Connection: close\r\n";

/// Longest response head accepted (interim responses included).
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// What one call of [`ResponseEnd::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// How many of the bytes belong to the response (the rest, if any, is past its end
    /// and must not be delivered).
    pub used: usize,
    /// [`CONNECTION_CLOSE`] goes after this many of them (after the final response's
    /// status line).
    pub insert_at: Option<usize>,
    /// The response is complete: close the connection.
    pub done: bool,
}

#[derive(Debug, Clone)]
enum Phase {
    /// Reading a response head (interim ones too).
    Head,
    /// Reading the body of the final response.
    Body(BodyEnd),
    /// The body ends when the target closes.
    UntilClose,
    /// Complete.
    Done,
}

/// Follows the target's response to the one forwarded request: places
/// `Connection: close` after the final status line, and finds where the response ends
/// (RFC 9112 §6.3), so that the proxy closes then even if the target keeps the
/// connection open.
#[derive(Debug, Clone)]
pub struct ResponseEnd {
    phase: Phase,
    /// The request was `HEAD`: no response has a body.
    head_request: bool,
    /// The current line of the head, bounded.
    line: Vec<u8>,
    /// Lines of the current head so far.
    lines: usize,
    head_bytes: usize,
    status: u16,
    length: Option<u64>,
    /// Invalid or differing `Content-Length`s: only the close delimits the body.
    bad_length: bool,
    chunked: Option<bool>,
}

impl ResponseEnd {
    /// Follows the response to a request; `head_request` when its method was `HEAD`.
    pub fn new(head_request: bool) -> Self {
        ResponseEnd {
            phase: Phase::Head,
            head_request,
            line: Vec::new(),
            lines: 0,
            head_bytes: 0,
            status: 0,
            length: None,
            bad_length: false,
            chunked: None,
        }
    }

    /// Whether the whole response has been seen.
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Feeds the next bytes from the target.
    ///
    /// # Errors
    /// [`BodyError`] when the response cannot be framed (head too large, malformed
    /// chunked body); the connection must close.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Fed, BodyError> {
        let mut fed = Fed {
            used: 0,
            insert_at: None,
            done: false,
        };
        while fed.used < bytes.len() {
            match &mut self.phase {
                Phase::Done => break,
                Phase::UntilClose => fed.used = bytes.len(),
                Phase::Body(body) => {
                    fed.used += body.scan(&bytes[fed.used..])?;
                    if body.is_done() {
                        self.phase = Phase::Done;
                    }
                }
                Phase::Head => {
                    let b = bytes[fed.used];
                    fed.used += 1;
                    if self.head_byte(b)? && fed.insert_at.is_none() {
                        fed.insert_at = Some(fed.used);
                    }
                }
            }
        }
        fed.done = matches!(self.phase, Phase::Done);
        Ok(fed)
    }

    /// One byte of a head; returns true at the end of a final response's status line.
    fn head_byte(&mut self, b: u8) -> Result<bool, BodyError> {
        self.head_bytes += 1;
        if self.head_bytes > MAX_RESPONSE_HEAD {
            return Err(BodyError("response head too large"));
        }
        if b != b'\n' {
            if self.line.len() < 256 {
                self.line.push(b);
            }
            return Ok(false);
        }
        let line = std::mem::take(&mut self.line);
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        self.lines += 1;
        if self.lines == 1 {
            self.status = parse_status(line).ok_or(BodyError("malformed status line"))?;
            return Ok(self.status >= 200);
        }
        if !line.is_empty() {
            self.header(line);
            return Ok(false);
        }
        self.end_of_head();
        Ok(false)
    }

    fn header(&mut self, line: &[u8]) {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return;
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let n: Option<u64> = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
            match (self.length, n) {
                (None, Some(n)) => self.length = Some(n),
                (Some(a), Some(b)) if a == b => {}
                _ => self.bad_length = true,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.split(|&b| b == b',').next_back().map(trim);
            self.chunked = Some(last.is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")));
        }
    }

    /// Decides how the body is framed (RFC 9112 §6.3), or reads the next head after an
    /// interim response.
    fn end_of_head(&mut self) {
        let (status, chunked) = (self.status, self.chunked);
        let length = self.length.filter(|_| !self.bad_length);
        self.lines = 0;
        self.length = None;
        self.bad_length = false;
        self.chunked = None;
        if (100..200).contains(&status) {
            return;
        }
        self.phase = if self.head_request || status == 204 || status == 304 {
            Phase::Done
        } else {
            match (chunked, length) {
                (Some(true), _) => Phase::Body(BodyEnd::new(BodyFraming::Chunked)),
                (Some(false), _) | (None, None) => Phase::UntilClose,
                (None, Some(n)) => {
                    let body = BodyEnd::new(BodyFraming::Length(n));
                    if body.is_done() {
                        Phase::Done
                    } else {
                        Phase::Body(body)
                    }
                }
            }
        };
    }
}

/// The code of `HTTP/1.x NNN …`.
fn parse_status(line: &[u8]) -> Option<u16> {
    let rest = line.strip_prefix(b"HTTP/1.")?;
    let code = rest.get(2..5)?;
    if rest.get(1) != Some(&b' ') || !code.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(code).ok()?.parse().ok()
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan_all(framing: BodyFraming, data: &[u8], chunk: usize) -> Result<usize, BodyError> {
        let mut end = BodyEnd::new(framing);
        let mut total = 0;
        for piece in data.chunks(chunk.max(1)) {
            let n = end.scan(piece)?;
            total += n;
            if n < piece.len() {
                assert!(end.is_done());
                break;
            }
        }
        Ok(total)
    }

    #[test]
    fn fixed_length_stops_at_the_next_request() {
        let data = b"abcdGET http://x/ HTTP/1.1\r\n\r\n";
        for chunk in [1, 3, 100] {
            assert_eq!(scan_all(BodyFraming::Length(4), data, chunk), Ok(4));
        }
        let mut none = BodyEnd::new(BodyFraming::Length(0));
        assert!(none.is_done());
        assert_eq!(none.scan(b"GET"), Ok(0));
    }

    #[test]
    fn chunked_body_with_extensions_and_trailers() {
        let body =
            b"4;name=v\r\nWiki\r\n5 \r\npedia\r\nE\r\n in\r\n\r\nchunks.\r\n0\r\nX-T: 1\r\n\r\n";
        let mut data = body.to_vec();
        data.extend_from_slice(b"GET http://evil/ HTTP/1.1\r\n\r\n");
        for chunk in [1, 2, 7, 1000] {
            assert_eq!(
                scan_all(BodyFraming::Chunked, &data, chunk),
                Ok(body.len()),
                "{chunk}"
            );
        }
        assert_eq!(scan_all(BodyFraming::Chunked, b"0\r\n\r\nNEXT", 1), Ok(5));
    }

    #[test]
    fn malformed_chunked_bodies_are_refused() {
        for bad in [
            &b"\r\n"[..],
            b"x\r\n",
            b"4\nWiki",
            b"4\r\nWikiX",
            b"1000000000000000\r\n",
            b"0\r\nX: 1\nY",
            b";x\r\n",
        ] {
            assert!(
                scan_all(BodyFraming::Chunked, bad, 100).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        let long = vec![b'a'; MAX_LINE + 2];
        let mut ext = b"1;".to_vec();
        ext.extend_from_slice(&long);
        assert!(scan_all(BodyFraming::Chunked, &ext, 100).is_err());
    }

    fn feed_all(end: &mut ResponseEnd, data: &[u8], chunk: usize) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        for piece in data.chunks(chunk.max(1)) {
            let fed = end.feed(piece).expect("valid");
            let used = &piece[..fed.used];
            match fed.insert_at {
                Some(at) => {
                    out.extend_from_slice(&used[..at]);
                    out.extend_from_slice(CONNECTION_CLOSE);
                    out.extend_from_slice(&used[at..]);
                }
                None => out.extend_from_slice(used),
            }
            if fed.done {
                return (out, true);
            }
        }
        (out, false)
    }

    #[test]
    fn response_end_and_close_notice() {
        let next = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nAGAIN";
        let cases: [(&[u8], bool, &[u8], bool); 6] = [
            (
                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
                false,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\ncontent-length: 2\r\n\r\nok",
                true,
            ),
            (
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                false,
                b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
                true,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 9\r\n\r\n",
                true,
            ),
            (
                b"HTTP/1.0 204 No Content\n\n",
                false,
                b"HTTP/1.0 204 No Content\nConnection: close\r\n\n",
                true,
            ),
            (
                b"HTTP/1.1 200 OK\r\n\r\nuntil close",
                false,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close",
                false,
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nabc",
                false,
                b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nabc",
                false,
            ),
        ];
        for (response, head_request, want, done) in cases {
            for chunk in [1, 5, 1000] {
                let mut data = response.to_vec();
                if done {
                    data.extend_from_slice(next);
                }
                let mut end = ResponseEnd::new(head_request);
                let (out, finished) = feed_all(&mut end, &data, chunk);
                assert_eq!(
                    (String::from_utf8_lossy(&out), finished),
                    (String::from_utf8_lossy(want), done),
                    "chunk {chunk}"
                );
            }
        }
        assert!(ResponseEnd::new(false).feed(b"SSH-2.0\r\n").is_err());
    }
}
