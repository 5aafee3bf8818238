//! Connections to Redis shared by its users (the store, accounts, the live bus and
//! pairing): one managed connection with the same timeouts for all, and PUB/SUB
//! channels turned into broadcast channels: `turbo:events` (key and node events,
//! [`KeyEvent`]) and, for the dashboard, `turbo:live` ([`crate::live`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};
use turbo_dataplane::control::KeyEvent;

/// A managed connection to `url`'s Redis (reconnecting by itself; 2 s timeouts, two
/// retries); its client too, for subscriptions.
pub(crate) async fn manager(
    url: &str,
) -> Result<(redis::Client, redis::aio::ConnectionManager), redis::RedisError> {
    let client = redis::Client::open(url)?;
    let config = redis::aio::ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(2)))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_millis(500));
    let conn = redis::aio::ConnectionManager::new_with_config(client.clone(), config).await?;
    Ok((client, conn))
}

/// One subscribed channel: its name, how its messages read, and what to send after a
/// reconnection (events may have been missed meanwhile).
pub(crate) struct Channel<E> {
    /// The Redis channel.
    pub(crate) name: &'static str,
    /// A message's event, or `None` to ignore it.
    pub(crate) parse: fn(&str) -> Option<E>,
    /// Sent after the subscription was restored.
    pub(crate) resync: E,
}

/// `turbo:events` as [`KeyEvent`]s.
pub(crate) fn key_event(text: &str) -> Option<KeyEvent> {
    Some(match text.split_once(' ')? {
        ("revoke", id) => KeyEvent::Revoked(id.into()),
        ("credit", id) => KeyEvent::ToppedUp(id.into()),
        ("revoke-node", id) => KeyEvent::NodeRevoked(id.into()),
        ("create", tag) => KeyEvent::Created(u64::from_str_radix(tag, 16).ok()?),
        ("policy", rest) => {
            let (key, rules) = rest.split_once(' ').unwrap_or((rest, ""));
            crate::detect::policy::event(key, rules)?
        }
        _ => return None,
    })
}

/// Subscribes to `channel.name`; returns once the subscription is live, so nothing
/// published afterwards is missed.
pub(crate) async fn subscribe(
    client: &redis::Client,
    name: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(name).await?;
    Ok(pubsub)
}

/// Forwards `channel` into `events`, reconnecting after failures (then sending
/// `channel.resync`), until `stop` fires.
pub(crate) async fn subscriber<E: Clone + Send>(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    channel: Channel<E>,
    events: broadcast::Sender<E>,
    errors: Arc<AtomicU64>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = &mut stop => return,
                    msg = messages.next() => {
                        let Some(msg) = msg else { break };
                        let text: String = msg.get_payload().unwrap_or_default();
                        if let Some(event) = (channel.parse)(&text) {
                            let _ = events.send(event);
                        }
                    }
                }
            }
        }
        warn!(
            channel = channel.name,
            "Redis subscription lost; reconnecting"
        );
        loop {
            errors.fetch_add(1, Relaxed);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            let again = subscribe(&client, channel.name);
            match tokio::time::timeout(Duration::from_secs(2), again).await {
                Ok(Ok(p)) => {
                    pubsub = p;
                    backoff = Duration::from_millis(100);
                    debug!(channel = channel.name, "Redis subscription restored");
                    let _ = events.send(channel.resync.clone());
                    break;
                }
                Ok(Err(e)) => debug!(error = %e, "Redis resubscribe failed"),
                Err(_) => debug!("Redis resubscribe timed out"),
            }
        }
    }
}
