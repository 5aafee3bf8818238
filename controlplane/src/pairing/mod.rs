//! Pairing a node with a runner's account from the browser (RFC 8628 shape; the codes
//! and the node's side are in [`turbo_proto::pairing`]):
//! 1. the node posts `/api/pair/start` and gets a device code (its secret) and a user
//!    code;
//! 2. the runner, signed in, opens `/pair?code=…`, sees the device's hostname, OS and
//!    the country its address maps to, and approves or denies ([`crate::web::pair`]);
//! 3. the node polls `/api/pair/poll`; the first poll after approval creates the node,
//!    owned by that runner, and answers its join string. A code is used once, expires
//!    after `pair_code_ttl`, and every server on one Redis shares the requests.
//!
//! Requests are kept by the SHA-256 of their device code, so the store never holds a
//! secret a node could be impersonated with.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod api;
mod store;

pub use store::{Pairings, Stored};

/// Where a pairing request stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum PairingState {
    /// Waiting for the runner.
    Pending,
    /// Approved by this user; the node's next poll makes the node.
    Approved {
        /// The runner who approved.
        user_id: String,
    },
    /// Denied in the browser.
    Denied,
    /// The node got its join string: the code is spent.
    Consumed {
        /// The node made for it.
        node_id: String,
    },
}

/// One pairing request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PairingRecord {
    /// The user code, canonical (eight letters).
    pub user_code: String,
    /// The device's hostname, as it says.
    pub hostname: String,
    /// Its operating system, as it says.
    pub os: String,
    /// The address it asked from.
    pub ip: String,
    /// That address's country (GeoIP), when known.
    pub country: Option<String>,
    /// Unix seconds after which the request is void.
    pub expires: u64,
    /// Where it stands.
    #[serde(flatten)]
    pub state: PairingState,
}

/// Pairing failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// The store failed.
    #[error("pairing store unavailable: {0}")]
    Unavailable(String),
}

/// The key a request is kept under: hex SHA-256 of its device code.
pub fn device_key(device_code: &str) -> String {
    hex::encode(Sha256::digest(device_code.as_bytes()))
}

/// `text` cut to `max` characters of printable ASCII (hostnames and OS names are shown
/// to runners: nothing else gets through).
pub fn printable(text: &str, max: usize) -> String {
    let cleaned: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect();
    match cleaned.trim() {
        "" => "unknown".into(),
        t => t.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_text_is_printable_and_short() {
        assert_eq!(printable("desk-01", 64), "desk-01");
        assert_eq!(printable("<b>\u{202e}evil\n</b>", 64), "<b>evil</b>");
        assert_eq!(printable("   ", 64), "unknown");
        assert_eq!(printable(&"x".repeat(100), 64).len(), 64);
        assert_eq!(device_key("abc").len(), 64);
    }

    #[test]
    fn records_read_back() {
        let rec = PairingRecord {
            user_code: "BDFGHJKL".into(),
            hostname: "desk".into(),
            os: "linux".into(),
            ip: "192.0.2.1".into(),
            country: None,
            expires: 99,
            state: PairingState::Approved {
                user_id: "u_1".into(),
            },
        };
        let text = serde_json::to_string(&rec).expect("json");
        assert!(text.contains("\"state\":\"approved\""), "{text}");
        assert_eq!(
            serde_json::from_str::<PairingRecord>(&text).expect("back"),
            rec
        );
    }
}
