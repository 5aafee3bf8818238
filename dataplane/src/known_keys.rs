//! Which API keys exist, as 64-bit tags (the first 8 bytes of each key's SHA-256),
//! shared by every core and kept by the control plane (loaded from the store at start
//! and on a resync, extended by [`crate::control::KeyEvent::Created`] from any server).
//!
//! A core consults it only while a source address or a username is locked out by
//! failures: a presented key whose tag is known is still verified against the store
//! (a valid key is never refused for someone else's failures), while a guess, whose
//! tag matches with odds of about `keys / 2^64`, is refused without a lookup. The set
//! is a filter, never an authorization: revoked keys may stay in it until a resync.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, RwLock};

/// A key's tag: the first 8 bytes of its SHA-256, little-endian.
pub type KeyTag = u64;

/// The tag of a key hash.
pub fn tag(hash: &[u8; 32]) -> KeyTag {
    let mut b = [0u8; 8];
    b.copy_from_slice(&hash[..8]);
    KeyTag::from_le_bytes(b)
}

/// The tags of every existing key; cheap to clone (shared).
#[derive(Clone, Default)]
pub struct KnownKeys(Arc<RwLock<HashSet<KeyTag>>>);

impl fmt::Debug for KnownKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KnownKeys({} tags)", self.len())
    }
}

impl KnownKeys {
    /// Adds one key.
    pub fn insert(&self, tag: KeyTag) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(tag);
    }

    /// Replaces the whole set (after loading every key from the store).
    pub fn replace(&self, tags: impl IntoIterator<Item = KeyTag>) {
        let fresh: HashSet<KeyTag> = tags.into_iter().collect();
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = fresh;
    }

    /// Whether a key hashing to `hash` may exist.
    pub fn may_exist(&self, hash: &[u8; 32]) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&tag(hash))
    }

    /// Tags held.
    pub fn len(&self) -> usize {
        self.0.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no tag is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_filter_hashes() {
        let known = KnownKeys::default();
        let a = [1u8; 32];
        let mut b = [1u8; 32];
        b[0] = 2;
        known.insert(tag(&a));
        assert!(known.may_exist(&a));
        assert!(!known.may_exist(&b));
        known.replace([tag(&b)]);
        assert!(known.may_exist(&b) && !known.may_exist(&a));
        assert_eq!(known.len(), 1);
    }
}
