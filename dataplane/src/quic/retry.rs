//! Address validation with QUIC Retry (RFC 9000 §8.1.2). While a core holds more
//! handshaking connections than the threshold, an Initial without a token gets a Retry
//! carrying a token instead of a connection: no state, no crypto beyond one HMAC, and
//! at most one small packet back (so no amplification). The client proves it can
//! receive at its address by echoing the token. Tokens are
//! `issued_at (u64 BE seconds) | odcid_len | odcid | tag`, where the tag is the first
//! 16 bytes of HMAC-SHA256 over issued_at, the client address and the odcid, keyed with
//! a per-process secret; they are valid for [`TOKEN_LIFETIME`].
//!
//! quiche itself enforces the 3× anti-amplification limit on unvalidated paths.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// How long a Retry token is accepted.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(10);
const TAG_LEN: usize = 16;

/// The per-process key for Retry tokens.
#[derive(Clone)]
pub(crate) struct RetryKey([u8; 32]);

impl RetryKey {
    /// A fresh random key.
    pub(crate) fn random() -> Self {
        RetryKey(rand::random())
    }

    /// The MAC over what a token binds: issue time, client address, odcid.
    fn mac(&self, issued: u64, peer: SocketAddr, odcid: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0).expect("any key length");
        mac.update(&issued.to_be_bytes());
        match peer.ip() {
            IpAddr::V4(v4) => mac.update(&v4.octets()),
            IpAddr::V6(v6) => mac.update(&v6.octets()),
        }
        mac.update(&peer.port().to_be_bytes());
        mac.update(odcid);
        mac
    }

    /// A token for a client at `peer` whose first Initial carried `odcid`.
    pub(crate) fn issue(&self, peer: SocketAddr, odcid: &[u8]) -> Vec<u8> {
        self.issue_at(now_secs(), peer, odcid)
    }

    fn issue_at(&self, issued: u64, peer: SocketAddr, odcid: &[u8]) -> Vec<u8> {
        let mut t = Vec::with_capacity(8 + 1 + odcid.len() + TAG_LEN);
        t.extend_from_slice(&issued.to_be_bytes());
        t.push(odcid.len() as u8);
        t.extend_from_slice(odcid);
        let full = self.mac(issued, peer, odcid).finalize().into_bytes();
        t.extend_from_slice(&full[..TAG_LEN]);
        t
    }

    /// The original destination connection id, when `token` is one of ours, fresh,
    /// and issued to `peer`.
    pub(crate) fn validate(&self, token: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        self.validate_at(now_secs(), token, peer)
    }

    fn validate_at(&self, now: u64, token: &[u8], peer: SocketAddr) -> Option<Vec<u8>> {
        let issued = u64::from_be_bytes(token.get(..8)?.try_into().ok()?);
        let len = usize::from(*token.get(8)?);
        let odcid = token.get(9..9 + len)?;
        let tag = token.get(9 + len..)?;
        if tag.len() != TAG_LEN || now.saturating_sub(issued) > TOKEN_LIFETIME.as_secs() {
            return None;
        }
        // Constant-time comparison of the truncated tag.
        self.mac(issued, peer, odcid)
            .verify_truncated_left(tag)
            .ok()
            .map(|()| odcid.to_vec())
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_bind_address_cid_and_time() {
        let k = RetryKey::random();
        let peer: SocketAddr = "192.0.2.1:4433".parse().unwrap();
        let odcid = [7u8; 16];
        let t = k.issue_at(1000, peer, &odcid);
        assert_eq!(k.validate_at(1005, &t, peer).as_deref(), Some(&odcid[..]));
        assert_eq!(k.validate_at(1011, &t, peer), None, "expired");
        let other: SocketAddr = "192.0.2.1:4434".parse().unwrap();
        assert_eq!(k.validate_at(1005, &t, other), None, "another address");
        let mut forged = t.clone();
        *forged.last_mut().unwrap() ^= 1;
        assert_eq!(k.validate_at(1005, &forged, peer), None, "bad tag");
        assert_eq!(
            RetryKey::random().validate_at(1005, &t, peer),
            None,
            "another key"
        );
        assert_eq!(k.validate_at(1005, &t[..5], peer), None, "truncated");
    }
}
