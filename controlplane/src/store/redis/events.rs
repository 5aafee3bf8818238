//! Connections to Redis shared by its users (the store, accounts, the live bus and
//! pairing): one connection with the same timeouts for all (to one Redis, or to a
//! Redis Cluster through its seed nodes), and PUB/SUB
//! channels turned into broadcast channels: `turbo:events` (key and node events,
//! [`KeyEvent`]) and, for the dashboard, `turbo:live` ([`crate::live`]).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};
use turbo_dataplane::control::KeyEvent;

/// The URL scheme of a Redis Cluster: `redis-cluster://host:port[,host:port…]` names
/// seed nodes (`rediss-cluster://` with TLS).
const CLUSTER_SCHEMES: [(&str, &str); 2] = [
    ("redis-cluster://", "redis://"),
    ("rediss-cluster://", "rediss://"),
];

/// Whether `url` names a Redis Cluster.
pub(crate) fn is_cluster(url: &str) -> bool {
    CLUSTER_SCHEMES.iter().any(|(s, _)| url.starts_with(s))
}

/// The seed node URLs of a cluster URL, or `url` itself for one Redis.
pub(crate) fn seeds(url: &str) -> Vec<String> {
    for (scheme, plain) in CLUSTER_SCHEMES {
        if let Some(rest) = url.strip_prefix(scheme) {
            return rest
                .split(',')
                .filter(|s| !s.is_empty())
                .map(|s| format!("{plain}{s}"))
                .collect();
        }
    }
    vec![url.to_owned()]
}

/// A connection to the store: one Redis (a managed, reconnecting connection) or a
/// Redis Cluster (the client library follows `MOVED`/`ASK` redirections, resharding
/// and failover). Every script and pipeline keeps its keys in one hash slot, so both
/// run the same commands.
#[derive(Clone)]
pub enum Conn {
    /// One Redis.
    Single(redis::aio::ConnectionManager),
    /// A Redis Cluster.
    Cluster(redis::cluster_async::ClusterConnection),
}

impl redis::aio::ConnectionLike for Conn {
    fn req_packed_command<'a>(
        &'a mut self,
        cmd: &'a redis::Cmd,
    ) -> redis::RedisFuture<'a, redis::Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<redis::Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where subscriptions are made: the seed nodes, tried in turn. Classic (not sharded)
/// PUB/SUB: in a cluster a `PUBLISH` on any node reaches the subscribers of every
/// node, which is what control events need (every server hears every revocation).
/// Sharded PUB/SUB would keep a channel inside one shard, and the volume (a few
/// events per second) does not need it.
#[derive(Clone)]
pub(crate) struct Subscriptions {
    seeds: Vec<redis::Client>,
}

/// 2 s timeouts, two retries: one Redis, or a cluster's seed nodes.
const TIMEOUT: Duration = Duration::from_secs(2);

/// A connection to `url` (one Redis, or `redis-cluster://` seeds), and where to
/// subscribe.
pub(crate) async fn manager(url: &str) -> Result<(Subscriptions, Conn), redis::RedisError> {
    let seeds = seeds(url);
    let clients = seeds
        .iter()
        .map(|s| redis::Client::open(s.as_str()))
        .collect::<Result<Vec<_>, _>>()?;
    let conn = if is_cluster(url) {
        let cluster = redis::cluster::ClusterClient::builder(seeds)
            .connection_timeout(TIMEOUT)
            .response_timeout(TIMEOUT)
            .retries(4)
            .build()?;
        Conn::Cluster(cluster.get_async_connection().await?)
    } else {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(TIMEOUT))
            .set_response_timeout(Some(TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(Duration::from_millis(500));
        let client = clients[0].clone();
        Conn::Single(redis::aio::ConnectionManager::new_with_config(client, config).await?)
    };
    Ok((Subscriptions { seeds: clients }, conn))
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
    source: &Subscriptions,
    name: &str,
) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut last = None;
    for client in &source.seeds {
        match client.get_async_pubsub().await {
            Ok(mut pubsub) => match pubsub.subscribe(name).await {
                Ok(()) => return Ok(pubsub),
                Err(e) => last = Some(e),
            },
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        redis::RedisError::from((redis::ErrorKind::InvalidClientConfig, "no seed node"))
    }))
}

/// Forwards `channel` into `events`, reconnecting after failures (then sending
/// `channel.resync`), until `stop` fires.
pub(crate) async fn subscriber<E: Clone + Send>(
    client: Subscriptions,
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
