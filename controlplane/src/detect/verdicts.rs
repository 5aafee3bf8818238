//! Verdicts after they are made: telling every server what a key's verdicts in force
//! restrict, lifting one (an admin), and restoring every key's restrictions on a
//! server that starts or missed events.

use tracing::info;

use super::policy;
use crate::store::detect::{DetectStore, Verdict};
use crate::store::StoreError;

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A fresh verdict id, `v_` and 12 hex digits.
pub fn new_id() -> String {
    format!("v_{:012x}", rand::random::<u64>() >> 16)
}

/// Publishes `key_id`'s restrictions from the verdicts in `all`.
///
/// # Errors
/// [`StoreError::Unavailable`].
pub async fn publish_key<S: DetectStore>(
    store: &S,
    all: &[Verdict],
    key_id: &str,
) -> Result<(), StoreError> {
    let mine: Vec<&Verdict> = all.iter().filter(|v| v.key_id == key_id).collect();
    store
        .publish_policy(key_id, &policy::text(&mine, now_ms()))
        .await
}

/// Stores `verdict` and publishes its key's restrictions.
///
/// # Errors
/// [`StoreError::Unavailable`].
pub async fn record<S: DetectStore>(store: &S, verdict: &Verdict) -> Result<(), StoreError> {
    store.verdict_put(verdict).await?;
    info!(
        verdict = %verdict.id,
        key = %verdict.key_id,
        action = verdict.action.name(),
        reason = %verdict.reason,
        drivers = ?verdict.drivers,
        expires_at = verdict.expires_at,
        "verdict"
    );
    publish_key(store, &store.verdicts().await?, &verdict.key_id).await
}

/// Lifts verdict `id` and publishes its key's remaining restrictions; returns it.
///
/// # Errors
/// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
pub async fn lift<S: DetectStore>(store: &S, id: &str) -> Result<Verdict, StoreError> {
    let mut all = store.verdicts().await?;
    let Some(v) = all.iter_mut().find(|v| v.id == id) else {
        return Err(StoreError::NotFound(id.to_owned()));
    };
    if v.lifted_unix_ms.is_none() {
        v.lifted_unix_ms = Some(now_ms());
        store.verdict_put(v).await?;
        info!(verdict = %v.id, key = %v.key_id, action = v.action.name(), "verdict lifted");
    }
    let lifted = v.clone();
    publish_key(store, &all, &lifted.key_id).await?;
    Ok(lifted)
}

/// Publishes the restrictions of every key with a verdict in force (a server that
/// starts, or that missed events, learns them all).
///
/// # Errors
/// [`StoreError::Unavailable`].
pub async fn publish_all<S: DetectStore>(store: &S) -> Result<usize, StoreError> {
    let all = store.verdicts().await?;
    let now = now_ms();
    let mut keys: Vec<&str> = all
        .iter()
        .filter(|v| v.in_force(now))
        .map(|v| v.key_id.as_str())
        .collect();
    keys.sort_unstable();
    keys.dedup();
    for key in &keys {
        publish_key(store, &all, key).await?;
    }
    Ok(keys.len())
}
