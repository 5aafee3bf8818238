//! The Redis [`super::LiveBus`], shared by every server on one Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:presence` | hash | node id → [`Presence`] as JSON, written by the node's server |
//! | `turbo:live` | pub/sub channel | [`LiveEvent::encode`] lines |
//! | `turbo:net:<network>` | sorted set | nodes holding a place on the network, scored by claim expiry (Unix ms) |
//! | `turbo:refused:<node>` | string | why the node was last refused, expiring |
//!
//! Every command names its one key, so both work on Redis Cluster.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use crate::store::redis::events::Conn;
use redis::{AsyncCommands, Script};
use tokio::sync::{broadcast, oneshot};

use super::{LiveEvent, NetworkClaim, Presence, FEED_CAPACITY};
use crate::store::redis::events::{self, subscriber, Channel};
use crate::store::StoreError;

const FEED: &str = "turbo:live";
const PRESENCE: &str = "turbo:presence";

/// Deletes the nodes `ARGV[2..]` that server `ARGV[1]` holds (or whose entry is
/// unreadable); returns how many.
const GONE_LUA: &str = r"
local n = 0
for i = 2, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local ok, p = pcall(cjson.decode, v)
    if (not ok) or type(p) ~= 'table' or p.server == ARGV[1] then
      redis.call('HDEL', KEYS[1], ARGV[i])
      n = n + 1
    end
  end
end
return n
";

/// Deletes each field `ARGV[2i-1]` whose value is still `ARGV[2i]` (stale as read, not
/// refreshed since); returns how many.
const SWEEP_LUA: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
";

/// Claims a place for node `ARGV[1]` on network set `KEYS[1]` until `ARGV[4]` (ms), if
/// it holds one already or fewer than `ARGV[2]` others do at `ARGV[3]` (ms); 1 if so.
const CLAIM_LUA: &str = r"
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('ZSCORE', KEYS[1], ARGV[1]) or redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[2]) then
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  redis.call('PEXPIRE', KEYS[1], math.max(1, tonumber(ARGV[4]) - tonumber(ARGV[3])))
  return 1
end
return 0
";

/// Feed and presence in Redis.
pub struct RedisBus {
    conn: Conn,
    feed: broadcast::Sender<LiveEvent>,
    gone: Script,
    sweep: Script,
    claim: Script,
    _stop_subscriber: oneshot::Sender<()>,
}

fn unavailable(e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

impl RedisBus {
    /// Connects to `url` and subscribes to the feed; returns once the subscription is
    /// live.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<RedisBus, StoreError> {
        let (client, conn) = events::manager(url).await.map_err(unavailable)?;
        let pubsub = events::subscribe(&client, FEED)
            .await
            .map_err(unavailable)?;
        let feed = broadcast::channel(FEED_CAPACITY).0;
        let (stop, stopped) = oneshot::channel();
        let channel = Channel {
            name: FEED,
            parse: LiveEvent::decode,
            resync: LiveEvent::Resync,
        };
        let errors = Arc::new(AtomicU64::new(0));
        tokio::spawn(subscriber(
            client,
            pubsub,
            channel,
            feed.clone(),
            errors,
            stopped,
        ));
        Ok(RedisBus {
            conn,
            feed,
            gone: Script::new(GONE_LUA),
            sweep: Script::new(SWEEP_LUA),
            claim: Script::new(CLAIM_LUA),
            _stop_subscriber: stop,
        })
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.feed.subscribe()
    }

    pub(super) async fn publish(&self, event: &LiveEvent) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .publish(FEED, event.encode())
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn report(
        &self,
        server: &str,
        online: &[(String, Presence)],
        offline: &[String],
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        if !offline.is_empty() {
            let mut call = self.gone.key(PRESENCE);
            call.arg(server).arg(offline);
            let _: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
        }
        if !online.is_empty() {
            let fields: Vec<(&str, String)> = online
                .iter()
                .map(|(id, p)| Ok((id.as_str(), serde_json::to_string(p)?)))
                .collect::<Result<_, serde_json::Error>>()
                .map_err(unavailable)?;
            let () = conn
                .hset_multiple(PRESENCE, &fields)
                .await
                .map_err(unavailable)?;
        }
        Ok(())
    }

    /// Raw entries: `ids`' (or all), as stored.
    async fn raw(&self, ids: Option<&[String]>) -> Result<Vec<(String, String)>, StoreError> {
        let mut conn = self.conn.clone();
        Ok(match ids {
            None => conn.hgetall(PRESENCE).await.map_err(unavailable)?,
            Some([]) => Vec::new(),
            Some(ids) => {
                let values: Vec<Option<String>> = redis::cmd("HMGET")
                    .arg(PRESENCE)
                    .arg(ids)
                    .query_async(&mut conn)
                    .await
                    .map_err(unavailable)?;
                ids.iter()
                    .cloned()
                    .zip(values)
                    .filter_map(|(id, v)| Some((id, v?)))
                    .collect()
            }
        })
    }

    pub(super) async fn presence(
        &self,
        ids: Option<&[String]>,
    ) -> Result<HashMap<String, Presence>, StoreError> {
        let raw = self.raw(ids).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(id, v)| Some((id, serde_json::from_str(&v).ok()?)))
            .collect())
    }

    pub(super) async fn claim_network(&self, c: &NetworkClaim<'_>) -> Result<bool, StoreError> {
        let mut call = self.claim.key(format!("turbo:net:{}", c.network));
        call.arg(c.node)
            .arg(c.limit)
            .arg(c.now_ms)
            .arg(c.expires_ms);
        let claimed: i64 = call
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)?;
        Ok(claimed == 1)
    }

    pub(super) async fn release_network(
        &self,
        network: &str,
        node: &str,
    ) -> Result<(), StoreError> {
        let _: i64 = self
            .conn
            .clone()
            .zrem(format!("turbo:net:{network}"), node)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(super) async fn note_refusal(
        &self,
        node: &str,
        why: &str,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        self.conn
            .clone()
            .set_ex(format!("turbo:refused:{node}"), why, ttl.as_secs().max(1))
            .await
            .map_err(unavailable)
    }

    pub(super) async fn refusals(
        &self,
        ids: &[String],
    ) -> Result<HashMap<String, String>, StoreError> {
        let mut out = HashMap::new();
        let mut conn = self.conn.clone();
        // One key per node (they may live on different cluster slots).
        for id in ids {
            let why: Option<String> = conn
                .get(format!("turbo:refused:{id}"))
                .await
                .map_err(unavailable)?;
            if let Some(why) = why {
                out.insert(id.clone(), why);
            }
        }
        Ok(out)
    }

    pub(super) async fn sweep(&self, before: u64) -> Result<u64, StoreError> {
        let stale: Vec<(String, String)> = self
            .raw(None)
            .await?
            .into_iter()
            .filter(|(_, v)| serde_json::from_str::<Presence>(v).map_or(true, |p| p.until < before))
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let mut call = self.sweep.key(PRESENCE);
        for (id, v) in &stale {
            call.arg(id).arg(v);
        }
        call.invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
