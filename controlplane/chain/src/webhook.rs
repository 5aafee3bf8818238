//! Webhooks: each invoice status change is queued in the database in the same
//! transaction that changes the status, then POSTed to `webhook_url` as JSON with
//!
//! - `Turbo-Event-Id`: the event's id (a receiver de-duplicates on it; a retry
//!   carries the same id and body),
//! - `Turbo-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//!   `"<event id>.<t>.<body>"` with `webhook_secret` ([`verify`] checks one).
//!
//! A delivery that fails (no answer, or not 2xx) is retried with doubling backoff,
//! from [`WebhookConfig::first_retry`] up to an hour, and given up after
//! [`MAX_ATTEMPTS`].

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::json;
use sha2::Sha256;
use tracing::{info, warn};

use crate::db::InvoiceRow;
use crate::invoice::InvoiceStatus;
use crate::{amount, ChainError};

/// Deliveries of one event before it is given up.
pub const MAX_ATTEMPTS: i32 = 12;
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// Where events go.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// The receiver.
    pub url: String,
    /// The shared secret the signature is keyed with.
    pub secret: String,
    /// The wait before the first retry (doubling after). Defaults to 1 s.
    pub first_retry: Duration,
}

/// The JSON body of a status change.
pub(crate) fn event_body(inv: &InvoiceRow, status: InvoiceStatus, paid_units: u128) -> String {
    json!({
        "type": "invoice.status",
        "invoice_id": inv.id,
        "key_id": inv.key_id,
        "status": status.as_str(),
        "amount": amount::format_usd(inv.usd_nano),
        "amount_units": inv.amount_units.to_string(),
        "paid_units": paid_units.to_string(),
        "address": inv.address,
        "chain_id": inv.chain_id,
    })
    .to_string()
}

fn mac(secret: &str, event_id: i64, t: i64, body: &str) -> Hmac<Sha256> {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(format!("{event_id}.{t}.").as_bytes());
    mac.update(body.as_bytes());
    mac
}

/// The `Turbo-Signature` header for an event.
pub fn sign(secret: &str, event_id: i64, t: i64, body: &str) -> String {
    let tag = mac(secret, event_id, t, body).finalize().into_bytes();
    format!("t={t},v1={}", hex::encode(tag))
}

/// Whether `header` is a valid `Turbo-Signature` for the event (compared in constant
/// time). Receivers should also refuse a `t` far from their clock.
pub fn verify(secret: &str, event_id: i64, body: &str, header: &str) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", value)) => t = value.parse::<i64>().ok(),
            Some(("v1", value)) => v1 = hex::decode(value).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    mac(secret, event_id, t, body).verify_slice(&v1).is_ok()
}

/// The wait after `attempts` failed deliveries.
fn backoff(first: Duration, attempts: i32) -> Duration {
    let doublings = u32::try_from(attempts.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    first.saturating_mul(1 << doublings).min(MAX_BACKOFF)
}

/// Delivers the events that are due; returns how many were delivered.
///
/// # Errors
/// The database's error (a failed delivery is recorded, not returned).
pub async fn deliver_due(
    pool: &deadpool_postgres::Pool,
    config: &WebhookConfig,
    http: &reqwest::Client,
) -> Result<u64, ChainError> {
    let client = pool.get().await?;
    let due = client
        .query(
            "SELECT id, body, attempts FROM webhook_events \
             WHERE delivered_at IS NULL AND attempts < $1 AND next_attempt <= now() \
             ORDER BY id LIMIT 100",
            &[&MAX_ATTEMPTS],
        )
        .await?;
    let mut delivered = 0;
    for row in due {
        let (id, body, attempts): (i64, String, i32) = (row.get(0), row.get(1), row.get(2));
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let sent = http
            .post(&config.url)
            .header("content-type", "application/json")
            .header("Turbo-Event-Id", id.to_string())
            .header("Turbo-Signature", sign(&config.secret, id, t, &body))
            .timeout(Duration::from_secs(10))
            .body(body)
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status())),
            Err(e) => Some(e.to_string()),
        };
        match failure {
            None => {
                client
                    .execute(
                        "UPDATE webhook_events SET delivered_at = now(), attempts = attempts + 1 \
                         WHERE id = $1",
                        &[&id],
                    )
                    .await?;
                info!(event = id, "webhook delivered");
                delivered += 1;
            }
            Some(why) => {
                let wait = backoff(config.first_retry, attempts + 1);
                warn!(event = id, attempt = attempts + 1, error = %why, retry_in = ?wait, "webhook failed");
                client
                    .execute(
                        "UPDATE webhook_events SET attempts = attempts + 1, last_error = $2, \
                         next_attempt = now() + make_interval(secs => $3::float8) WHERE id = $1",
                        &[&id, &why, &wait.as_secs_f64()],
                    )
                    .await?;
            }
        }
    }
    Ok(delivered)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_only_for_its_event_body_and_secret() {
        let header = sign("s3cret", 7, 1_700_000_000, r#"{"a":1}"#);
        assert!(verify("s3cret", 7, r#"{"a":1}"#, &header));
        assert!(!verify("s3cret", 8, r#"{"a":1}"#, &header), "another event");
        assert!(!verify("s3cret", 7, r#"{"a":2}"#, &header), "another body");
        assert!(!verify("other", 7, r#"{"a":1}"#, &header), "another secret");
        let moved = header.replace("t=1700000000", "t=1700000001");
        assert!(!verify("s3cret", 7, r#"{"a":1}"#, &moved), "another time");
        for junk in ["", "t=1", "v1=00", "t=x,v1=zz"] {
            assert!(!verify("s3cret", 7, r#"{"a":1}"#, junk), "{junk}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        let first = Duration::from_secs(1);
        let waits: Vec<u64> = (1..=4).map(|n| backoff(first, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8]);
        assert_eq!(backoff(first, 40), MAX_BACKOFF);
    }
}
