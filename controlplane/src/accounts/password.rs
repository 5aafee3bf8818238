//! Passwords: argon2id with the crate's recommended parameters (19 MiB, 2 passes),
//! hashed and verified on the blocking pool so a sign-in never stalls the runtime.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;

/// Shortest password accepted at sign-up.
pub const MIN_LEN: usize = 10;
/// Longest password accepted (argon2 takes any length; this bounds the work).
pub const MAX_LEN: usize = 256;

/// Why a password is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// Too short or too long.
    #[error("a password has {MIN_LEN} to {MAX_LEN} characters")]
    Length,
    /// Hashing failed (never expected).
    #[error("password hashing failed")]
    Hashing,
}

/// Checks `password`'s length.
///
/// # Errors
/// [`PasswordError::Length`].
pub fn check(password: &str) -> Result<(), PasswordError> {
    let n = password.chars().count();
    if (MIN_LEN..=MAX_LEN).contains(&n) {
        Ok(())
    } else {
        Err(PasswordError::Length)
    }
}

/// The argon2id PHC string of `password`, with a fresh salt.
///
/// # Errors
/// [`PasswordError`].
pub async fn hash(password: &str) -> Result<String, PasswordError> {
    check(password)?;
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|_| PasswordError::Hashing)
    })
    .await
    .map_err(|_| PasswordError::Hashing)?
}

/// Whether `password` matches the PHC string `stored` (constant time inside argon2).
/// An unparsable `stored` never matches.
pub async fn verify(password: &str, stored: &str) -> bool {
    if password.len() > MAX_LEN * 4 {
        return false;
    }
    let (password, stored) = (password.to_owned(), stored.to_owned());
    tokio::task::spawn_blocking(move || {
        PasswordHash::new(&stored)
            .map(|h| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &h)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// A hash of a random password, verified for unknown emails so that a sign-in with one
/// takes as long as with a known one.
pub async fn decoy() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    if let Some(h) = DECOY.get() {
        return h;
    }
    let h = hash(&generate()).await.unwrap_or_default();
    DECOY.get_or_init(|| h)
}

/// A one-time password for `users create`: 20 characters from a 56-symbol alphabet
/// without look-alikes (about 116 bits).
pub fn generate() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20)
        .map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_are_argon2id() {
        let h = hash("correct horse battery").await.expect("hash");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify("correct horse battery", &h).await);
        assert!(!verify("correct horse batterz", &h).await);
        assert!(!verify("x", "not a phc string").await);
        assert_ne!(
            hash("correct horse battery").await.expect("hash"),
            h,
            "salted"
        );
        assert_eq!(hash("short").await, Err(PasswordError::Length));
        assert!(decoy().await.starts_with("$argon2id$"));
        let one_time = generate();
        assert_eq!(one_time.len(), 20);
        assert!(check(&one_time).is_ok());
    }
}
