//! Keyed identities for feature records: a target's site ([`turbo_proto::reach`]) and a
//! customer's session id, each as the first 8 bytes of an HMAC-SHA256 under a key that
//! the servers of one network share. Records can be compared site by site and session
//! by session, across servers, without the stream becoming a browsing log.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use turbo_proto::reach::{reach, ReachBuf};
use turbo_proto::target::{TargetAddr, MAX_DOMAIN_LEN};

/// The shared key, ready to hash with.
#[derive(Clone)]
pub struct SiteKey {
    keyed: Hmac<Sha256>,
}

impl std::fmt::Debug for SiteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SiteKey(..)")
    }
}

impl SiteKey {
    /// A key from 32 secret bytes.
    pub fn new(secret: &[u8; 32]) -> Self {
        SiteKey {
            keyed: Hmac::new_from_slice(secret).expect("HMAC takes any key length"),
        }
    }

    /// A random key (a single server with nothing to agree with).
    pub fn random() -> Self {
        Self::new(&rand::random())
    }

    /// The identity of the site `target` belongs to (its port is not part of it).
    pub fn site(&self, target: &TargetAddr) -> u64 {
        let mut buf: ReachBuf = [0; MAX_DOMAIN_LEN];
        let mut mac = self.keyed.clone();
        reach(target, &mut buf).write_to(&mut |bytes| mac.update(bytes));
        first_eight(mac)
    }

    /// The identity of a sticky-session id (0 for none).
    pub fn session(&self, session: Option<&str>) -> u64 {
        let Some(session) = session else {
            return 0;
        };
        let mut mac = self.keyed.clone();
        mac.update(b"s");
        mac.update(session.as_bytes());
        first_eight(mac).max(1)
    }
}

fn first_eight(mac: Hmac<Sha256>) -> u64 {
    let out = mac.finalize().into_bytes();
    let mut eight = [0u8; 8];
    eight.copy_from_slice(&out[..8]);
    u64::from_le_bytes(eight)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_site_one_identity_and_keys_differ() {
        let key = SiteKey::new(&[7; 32]);
        let a = TargetAddr::domain("www.Example.com", 443).unwrap();
        let b = TargetAddr::domain("api.example.com", 80).unwrap();
        let c = TargetAddr::domain("example.org", 443).unwrap();
        assert_eq!(key.site(&a), key.site(&b));
        assert_ne!(key.site(&a), key.site(&c));
        assert_ne!(SiteKey::new(&[8; 32]).site(&a), key.site(&a));
        assert_eq!(key.session(None), 0);
        assert_ne!(key.session(Some("a")), key.session(Some("b")));
    }
}
