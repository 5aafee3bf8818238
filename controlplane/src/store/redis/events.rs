//! Key events from every server: the `turbo:events` subscriber.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};
use turbo_dataplane::control::KeyEvent;

use super::EVENTS;

/// Forwards `turbo:events` into `events`, reconnecting after failures (then sending
/// [`KeyEvent::Resync`], since events may have been missed), until `stop` fires.
pub(super) async fn subscriber(
    client: redis::Client,
    mut pubsub: redis::aio::PubSub,
    events: broadcast::Sender<KeyEvent>,
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
                        let event = match text.split_once(' ') {
                            Some(("revoke", id)) => KeyEvent::Revoked(id.into()),
                            Some(("credit", id)) => KeyEvent::ToppedUp(id.into()),
                            Some(("revoke-node", id)) => KeyEvent::NodeRevoked(id.into()),
                            Some(("create", tag)) => match u64::from_str_radix(tag, 16) {
                                Ok(tag) => KeyEvent::Created(tag),
                                Err(_) => continue,
                            },
                            _ => continue,
                        };
                        let _ = events.send(event);
                    }
                }
            }
        }
        warn!("Redis event subscription lost; reconnecting");
        loop {
            errors.fetch_add(1, Relaxed);
            tokio::select! {
                _ = &mut stop => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(2));
            let again = async {
                let mut p = client.get_async_pubsub().await?;
                p.subscribe(EVENTS).await?;
                Ok::<_, redis::RedisError>(p)
            };
            match tokio::time::timeout(Duration::from_secs(2), again).await {
                Ok(Ok(p)) => {
                    pubsub = p;
                    backoff = Duration::from_millis(100);
                    debug!("Redis event subscription restored");
                    let _ = events.send(KeyEvent::Resync);
                    break;
                }
                Ok(Err(e)) => debug!(error = %e, "Redis resubscribe failed"),
                Err(_) => debug!("Redis resubscribe timed out"),
            }
        }
    }
}
