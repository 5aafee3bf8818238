//! Stateless resets (RFC 9000 §10.3). Each connection's reset token is derived from
//! its server connection id with a key that lives in the data directory, so a server
//! restarted with the same data directory can still prove it is the peer: a node whose
//! packets reach the new process gets a Stateless Reset, closes at once, and dials
//! again, instead of waiting for its idle timeout.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Smallest reset we send (RFC 9000: at least 21 bytes, here 5 + 16 token + margin).
const MIN_RESET: usize = 22;
/// Largest reset we send.
const MAX_RESET: usize = 43;

/// The key behind every connection's stateless reset token.
#[derive(Clone)]
pub struct ResetKey([u8; 32]);

/// Never prints the key.
impl std::fmt::Debug for ResetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ResetKey(..)")
    }
}

impl ResetKey {
    /// A key from its bytes (stored in the data directory).
    pub fn new(bytes: [u8; 32]) -> Self {
        ResetKey(bytes)
    }

    /// The token for server connection id `cid`.
    pub(crate) fn token(&self, cid: &[u8]) -> u128 {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("any key length");
        mac.update(b"turbo stateless reset");
        mac.update(cid);
        let full = mac.finalize().into_bytes();
        let mut t = [0u8; 16];
        t.copy_from_slice(&full[..16]);
        u128::from_be_bytes(t)
    }

    /// A Stateless Reset answering a `received`-byte packet for `cid`: shorter than
    /// the packet that caused it (so two endpoints can never loop, and it amplifies
    /// nothing), or `None` when that packet was too short to answer.
    pub(crate) fn reset_for(&self, cid: &[u8], received: usize) -> Option<Vec<u8>> {
        let len = received.checked_sub(1)?.min(MAX_RESET);
        if len < MIN_RESET {
            return None;
        }
        let mut out: Vec<u8> = (0..len - 16).map(|_| rand::random::<u8>()).collect();
        // A short header: fixed bit set, long-header bit clear.
        out[0] = 0x40 | (out[0] & 0x3f);
        out.extend_from_slice(&self.token(cid).to_be_bytes());
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resets_end_in_the_token_and_never_grow() {
        let k = ResetKey::new([7; 32]);
        let cid = [1u8; 16];
        let r = k.reset_for(&cid, 1200).expect("reset");
        assert_eq!(r.len(), MAX_RESET);
        assert_eq!(r[0] & 0xc0, 0x40);
        assert_eq!(r[r.len() - 16..], k.token(&cid).to_be_bytes());
        assert_eq!(k.reset_for(&cid, 30).expect("reset").len(), 29);
        assert!(k.reset_for(&cid, MIN_RESET).is_none());
        assert_ne!(k.token(&cid), ResetKey::new([8; 32]).token(&cid));
        assert_ne!(k.token(&cid), k.token(&[2u8; 16]));
    }
}
