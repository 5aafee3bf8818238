//! The Redis [`super::Fleet`], shared by every server on one Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:{fleet}:servers` | hash | server id → [`Announcement`] as JSON |
//!
//! One key (one hash slot, `{fleet}`), so every command and script works on Redis
//! Cluster. Lapsed entries are filtered on read and swept by a script that deletes an
//! entry only if it is still the lapsed one it read.

use redis::{AsyncCommands, Script};

use super::{Announcement, FleetError};
use crate::store::redis::events::{self, Conn};

/// The fleet's hash.
pub(super) const SERVERS: &str = "turbo:{fleet}:servers";

/// Deletes each field `ARGV[2i-1]` whose value is still `ARGV[2i]`; returns how many.
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

fn unavailable(e: impl std::fmt::Display) -> FleetError {
    FleetError::Unavailable(e.to_string())
}

/// Announcements in Redis.
pub struct RedisFleet {
    conn: Conn,
    sweep: Script,
}

impl RedisFleet {
    /// Connects to `url` (one Redis or a cluster).
    ///
    /// # Errors
    /// [`FleetError::Unavailable`] when Redis cannot be reached.
    pub async fn connect(url: &str) -> Result<RedisFleet, FleetError> {
        let (_subscriptions, conn) = events::manager(url).await.map_err(unavailable)?;
        Ok(RedisFleet {
            conn,
            sweep: Script::new(SWEEP_LUA),
        })
    }

    pub(super) async fn announce(&self, a: &Announcement) -> Result<(), FleetError> {
        let json = serde_json::to_string(a).map_err(|e| FleetError::Encode(e.to_string()))?;
        let _: i64 = self
            .conn
            .clone()
            .hset(SERVERS, &a.id, json)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn raw(&self) -> Result<Vec<(String, String)>, FleetError> {
        self.conn
            .clone()
            .hgetall(SERVERS)
            .await
            .map_err(unavailable)
    }

    pub(super) async fn all(&self) -> Result<Vec<Announcement>, FleetError> {
        Ok(self
            .raw()
            .await?
            .into_iter()
            .filter_map(|(_, v)| serde_json::from_str(&v).ok())
            .collect())
    }

    pub(super) async fn sweep(&self, before_ms: u64) -> Result<u64, FleetError> {
        let lapsed = |v: &str| {
            serde_json::from_str::<Announcement>(v).map_or(true, |a| a.until_ms < before_ms)
        };
        let stale: Vec<(String, String)> = self
            .raw()
            .await?
            .into_iter()
            .filter(|(_, v)| lapsed(v))
            .collect();
        if stale.is_empty() {
            return Ok(0);
        }
        let mut call = self.sweep.key(SERVERS);
        for (id, v) in &stale {
            call.arg(id).arg(v);
        }
        call.invoke_async(&mut self.conn.clone())
            .await
            .map_err(unavailable)
    }
}
