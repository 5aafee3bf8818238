//! The Redis [`super::LiveBus`], shared by every server on one Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:presence` | hash | node id → `{"holders": {server id: Presence}}` as JSON: one [`Presence`] per server the node is connected to (a node keeps two servers); a bare [`Presence`] from older servers is read as one holder |
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

/// The holders of entry `v` (a holders map, or an older bare presence), without
/// `server` and those stale at `now` (Unix s). Shared by the two scripts below.
const HOLDERS_LUA: &str = r"
local function holders(v, server, now)
  local keep = {}
  if not v then return keep end
  local ok, e = pcall(cjson.decode, v)
  if (not ok) or type(e) ~= 'table' then return keep end
  local all = e.holders
  if type(all) ~= 'table' then
    all = {}
    if type(e.server) == 'string' then all[e.server] = e end
  end
  for s, p in pairs(all) do
    if s ~= server and type(p) == 'table' and (tonumber(p['until']) or 0) > now then
      keep[s] = p
    end
  end
  return keep
end
";

/// Server `ARGV[1]` at `ARGV[2]` (Unix s) holds the nodes `ARGV[3], ARGV[5], …` with
/// the presences (JSON) after each: sets its holder, keeps the others' fresh ones.
const REPORT_LUA: &str = r"
local now = tonumber(ARGV[2])
for i = 3, #ARGV, 2 do
  local keep = holders(redis.call('HGET', KEYS[1], ARGV[i]), ARGV[1], now)
  keep[ARGV[1]] = cjson.decode(ARGV[i + 1])
  redis.call('HSET', KEYS[1], ARGV[i], cjson.encode({holders = keep}))
end
return 0
";

/// Server `ARGV[1]` at `ARGV[2]` no longer holds the nodes `ARGV[3..]`; returns those
/// that no server holds any more (their entries deleted).
const GONE_LUA: &str = r"
local gone = {}
local now = tonumber(ARGV[2])
for i = 3, #ARGV do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    local keep = holders(v, ARGV[1], now)
    if next(keep) == nil then
      redis.call('HDEL', KEYS[1], ARGV[i])
      table.insert(gone, ARGV[i])
    else
      redis.call('HSET', KEYS[1], ARGV[i], cjson.encode({holders = keep}))
    end
  else
    table.insert(gone, ARGV[i])
  end
end
return gone
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
    put: Script,
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
            gone: Script::new(&format!("{HOLDERS_LUA}{GONE_LUA}")),
            put: Script::new(&format!("{HOLDERS_LUA}{REPORT_LUA}")),
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
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let mut gone = Vec::new();
        if !offline.is_empty() {
            let mut call = self.gone.key(PRESENCE);
            call.arg(server).arg(now).arg(offline);
            gone = call.invoke_async(&mut conn).await.map_err(unavailable)?;
        }
        if !online.is_empty() {
            let mut call = self.put.key(PRESENCE);
            call.arg(server).arg(now);
            for (id, p) in online {
                call.arg(id)
                    .arg(serde_json::to_string(p).map_err(unavailable)?);
            }
            let _: i64 = call.invoke_async(&mut conn).await.map_err(unavailable)?;
        }
        Ok(gone)
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
        now: u64,
    ) -> Result<HashMap<String, Presence>, StoreError> {
        let raw = self.raw(ids).await?;
        Ok(raw
            .into_iter()
            .filter_map(|(id, v)| Some((id, super::holders::read(&v, now)?)))
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
            .filter(|(_, v)| super::holders::read(v, 0).is_none_or(|p| p.until < before))
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
