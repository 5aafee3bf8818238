//! Secrets handed to customers and runners: API keys (`tk_…`) and node tokens
//! (`nt_…`). Each is 32 bytes from the OS CSPRNG, shown once, and stored only as its
//! SHA-256. A high-entropy secret needs no salt, and an unsalted hash can be the lookup
//! key; the final comparison still runs in constant time.

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// SHA-256 of a secret.
pub type SecretHash = [u8; 32];

/// A new random secret with `prefix` (`tk` or `nt`).
pub fn generate(prefix: &str) -> String {
    let bytes: [u8; 32] = rand::random();
    format!("{prefix}_{}", hex::encode(bytes))
}

/// The stored form of a secret.
pub fn hash(secret: &str) -> SecretHash {
    Sha256::digest(secret.as_bytes()).into()
}

/// Constant-time equality of two hashes.
pub fn same(a: &SecretHash, b: &SecretHash) -> bool {
    a.ct_eq(b).into()
}

/// Constant-time equality of two strings of possibly different length.
pub fn same_str(a: &str, b: &str) -> bool {
    same(&hash(a), &hash(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_unique_and_hash_stably() {
        let a = generate("tk");
        let b = generate("tk");
        assert_ne!(a, b);
        assert!(a.starts_with("tk_") && a.len() == 67);
        assert!(same(&hash(&a), &hash(&a)));
        assert!(!same(&hash(&a), &hash(&b)));
        assert!(same_str("x", "x") && !same_str("x", "y"));
    }
}
