//! Primitive encoding shared by the control and relay formats: QUIC varints and bounded
//! length-prefixed byte strings, read from an in-memory slice.

use super::WireError;

/// Largest value a QUIC varint can hold.
pub const VARINT_MAX: u64 = (1 << 62) - 1;

/// Appends `v` as a QUIC varint. Values above [`VARINT_MAX`] are clamped.
pub fn put_varint(out: &mut Vec<u8>, v: u64) {
    let v = v.min(VARINT_MAX);
    if v < 1 << 6 {
        out.push(v as u8);
    } else if v < 1 << 14 {
        out.extend_from_slice(&((v as u16) | 0x4000).to_be_bytes());
    } else if v < 1 << 30 {
        out.extend_from_slice(&((v as u32) | 0x8000_0000).to_be_bytes());
    } else {
        out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes());
    }
}

/// Appends a varint length followed by the bytes.
pub fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Reads a varint from the front of `buf`: `Ok(Some((value, len)))`, or `Ok(None)` when
/// `buf` is too short.
pub fn get_varint(buf: &[u8]) -> Option<(u64, usize)> {
    let first = *buf.first()?;
    let len = 1usize << (first >> 6);
    if buf.len() < len {
        return None;
    }
    let mut v = u64::from(first & 0x3f);
    for b in &buf[1..len] {
        v = (v << 8) | u64::from(*b);
    }
    Some((v, len))
}

/// A cursor over one complete, length-delimited message. Running out of bytes here is
/// an error ([`WireError::Truncated`]), not a request for more input.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// Starts reading `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    /// Reads one byte.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of the message.
    pub fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        let b = *self.buf.get(self.pos).ok_or(WireError::Truncated(field))?;
        self.pos += 1;
        Ok(b)
    }

    /// Reads a big-endian u16.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of the message.
    pub fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, field)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    /// Reads a varint.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of the message.
    pub fn varint(&mut self, field: &'static str) -> Result<u64, WireError> {
        let (v, len) = get_varint(&self.buf[self.pos..]).ok_or(WireError::Truncated(field))?;
        self.pos += len;
        Ok(v)
    }

    /// Reads exactly `n` bytes.
    ///
    /// # Errors
    /// [`WireError::Truncated`] at the end of the message.
    pub fn take(&mut self, n: usize, field: &'static str) -> Result<&'a [u8], WireError> {
        if self.remaining() < n {
            return Err(WireError::Truncated(field));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// Reads a varint-length-prefixed byte string of at most `max` bytes.
    ///
    /// # Errors
    /// [`WireError::TooLong`] or [`WireError::Truncated`].
    pub fn bytes(&mut self, field: &'static str, max: usize) -> Result<&'a [u8], WireError> {
        let len = self.varint(field)?;
        if len > max as u64 {
            return Err(WireError::TooLong {
                field,
                len,
                max: max as u64,
            });
        }
        self.take(len as usize, field)
    }

    /// Reads a varint-length-prefixed UTF-8 string of at most `max` bytes.
    ///
    /// # Errors
    /// [`WireError::TooLong`], [`WireError::Truncated`] or [`WireError::NotUtf8`].
    pub fn string(&mut self, field: &'static str, max: usize) -> Result<String, WireError> {
        let b = self.bytes(field, max)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| WireError::NotUtf8(field))
    }
}

/// Splits one `varint length | body` frame off the front of `buf`, refusing bodies
/// longer than `max`. `Ok(None)` means more input is needed.
///
/// # Errors
/// [`WireError::TooLong`] when the declared body exceeds `max`.
pub fn split_frame<'a>(
    buf: &'a [u8],
    field: &'static str,
    max: usize,
) -> Result<Option<(&'a [u8], usize)>, WireError> {
    let Some((len, hdr)) = get_varint(buf) else {
        return Ok(None);
    };
    if len > max as u64 {
        return Err(WireError::TooLong {
            field,
            len,
            max: max as u64,
        });
    }
    let end = hdr + len as usize;
    if buf.len() < end {
        return Ok(None);
    }
    Ok(Some((&buf[hdr..end], end)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_round_trip() {
        for v in [
            0,
            1,
            63,
            64,
            16383,
            16384,
            (1 << 30) - 1,
            1 << 30,
            VARINT_MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            assert_eq!(get_varint(&out), Some((v, out.len())));
            assert_eq!(get_varint(&out[..out.len() - 1]), None);
        }
    }

    #[test]
    fn frame_split_respects_bound() {
        let mut out = Vec::new();
        put_bytes(&mut out, b"hello");
        assert_eq!(
            split_frame(&out, "f", 5).unwrap(),
            Some((&b"hello"[..], out.len()))
        );
        assert!(split_frame(&out, "f", 4).is_err());
        assert_eq!(split_frame(&out[..3], "f", 5).unwrap(), None);
    }
}
