//! Where pairing requests live: in memory (one server) or in Redis (every server on
//! it), each for as long as its code is valid.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:pair:dev:<sha256 of device code>` | string | the [`PairingRecord`] as JSON, expiring with the code |
//! | `turbo:pair:code:<user code>` | string | the device key, expiring with the code |
//!
//! A state change is a compare-and-set on the record as read, so two servers (or two
//! polls) never both approve, deny or spend one request.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::store::redis::events::Conn;
use redis::AsyncCommands;

use super::{PairingError, PairingRecord};

/// Replaces `KEYS[1]` with `ARGV[2]` (keeping its expiry) if it still holds `ARGV[1]`.
const SWAP_LUA: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
  return 1
end
return 0
";

/// A record and the exact text it was read as (the compare-and-set compares that).
#[derive(Debug, Clone)]
pub struct Stored {
    /// The request.
    pub record: PairingRecord,
    raw: String,
}

/// Pairing requests, in memory or in Redis.
pub enum Pairings {
    /// One server.
    Memory(Mutex<MemoryPairings>),
    /// Shared.
    Redis(Conn),
}

/// The in-memory tables; expired entries are dropped as they are met.
#[derive(Default)]
pub struct MemoryPairings {
    by_device: HashMap<String, String>,
    by_code: HashMap<String, String>,
}

/// The two lookups: a request by its device key, a device key by its user code.
#[derive(Clone, Copy)]
enum Table {
    Device,
    Code,
}

fn lock(m: &Mutex<MemoryPairings>) -> std::sync::MutexGuard<'_, MemoryPairings> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn unavailable(e: impl std::fmt::Display) -> PairingError {
    PairingError::Unavailable(e.to_string())
}

fn to_json(record: &PairingRecord) -> Result<String, PairingError> {
    serde_json::to_string(record).map_err(unavailable)
}

fn dev_key(device: &str) -> String {
    format!("turbo:pair:dev:{device}")
}

fn code_key(code: &str) -> String {
    format!("turbo:pair:code:{code}")
}

impl Pairings {
    /// The store next to `spec` (`memory` or a `redis://` URL).
    ///
    /// # Errors
    /// [`PairingError::Unavailable`] when Redis cannot be reached.
    pub async fn open(spec: &str) -> Result<Pairings, PairingError> {
        if spec == "memory" {
            return Ok(Pairings::Memory(Mutex::default()));
        }
        let (_, conn) = crate::store::redis::events::manager(spec)
            .await
            .map_err(unavailable)?;
        Ok(Pairings::Redis(conn))
    }

    /// Records a new request under `device` for `ttl`; `false` when its user code is
    /// taken (draw another).
    ///
    /// # Errors
    /// [`PairingError::Unavailable`].
    pub async fn create(
        &self,
        device: &str,
        record: &PairingRecord,
        ttl: Duration,
    ) -> Result<bool, PairingError> {
        let json = to_json(record)?;
        match self {
            Pairings::Memory(m) => {
                let mut m = lock(m);
                if m.by_code.contains_key(&record.user_code) {
                    return Ok(false);
                }
                m.by_code
                    .insert(record.user_code.clone(), device.to_owned());
                m.by_device.insert(device.to_owned(), json);
                Ok(true)
            }
            Pairings::Redis(conn) => {
                let mut conn = conn.clone();
                let opts = redis::SetOptions::default()
                    .conditional_set(redis::ExistenceCheck::NX)
                    .with_expiration(redis::SetExpiry::EX(ttl.as_secs().max(1)));
                let claimed: Option<String> = conn
                    .set_options(code_key(&record.user_code), device, opts)
                    .await
                    .map_err(unavailable)?;
                if claimed.is_none() {
                    return Ok(false);
                }
                conn.set_ex::<_, _, ()>(dev_key(device), json, ttl.as_secs().max(1))
                    .await
                    .map_err(unavailable)?;
                Ok(true)
            }
        }
    }

    /// The raw entry under `key` in `table`.
    async fn lookup(&self, table: Table, key: &str) -> Result<Option<String>, PairingError> {
        match self {
            Pairings::Memory(m) => {
                let m = lock(m);
                let map = match table {
                    Table::Device => &m.by_device,
                    Table::Code => &m.by_code,
                };
                Ok(map.get(key).cloned())
            }
            Pairings::Redis(conn) => {
                let name = match table {
                    Table::Device => dev_key(key),
                    Table::Code => code_key(key),
                };
                conn.clone().get(name).await.map_err(unavailable)
            }
        }
    }

    /// The request of `device`, unless it expired at `now` (Unix seconds).
    ///
    /// # Errors
    /// [`PairingError::Unavailable`].
    pub async fn by_device(&self, device: &str, now: u64) -> Result<Option<Stored>, PairingError> {
        let raw = self.lookup(Table::Device, device).await?;
        Ok(raw.and_then(|raw| {
            let record: PairingRecord = serde_json::from_str(&raw).ok()?;
            (record.expires > now).then_some(Stored { record, raw })
        }))
    }

    /// The device key and request of user code `code` (canonical), unless expired.
    ///
    /// # Errors
    /// [`PairingError::Unavailable`].
    pub async fn by_code(
        &self,
        code: &str,
        now: u64,
    ) -> Result<Option<(String, Stored)>, PairingError> {
        let device = self.lookup(Table::Code, code).await?;
        let Some(device) = device else {
            return Ok(None);
        };
        Ok(self.by_device(&device, now).await?.map(|s| (device, s)))
    }

    /// Replaces the request of `device` with `next` if it is still `seen`; whether it
    /// was.
    ///
    /// # Errors
    /// [`PairingError::Unavailable`].
    pub async fn swap(
        &self,
        device: &str,
        seen: &Stored,
        next: &PairingRecord,
    ) -> Result<bool, PairingError> {
        let json = to_json(next)?;
        match self {
            Pairings::Memory(m) => {
                let mut m = lock(m);
                match m.by_device.get_mut(device) {
                    Some(current) if *current == seen.raw => {
                        *current = json;
                        Ok(true)
                    }
                    _ => Ok(false),
                }
            }
            Pairings::Redis(conn) => {
                let swapped: i64 = redis::Script::new(SWAP_LUA)
                    .key(dev_key(device))
                    .arg(&seen.raw)
                    .arg(json)
                    .invoke_async(&mut conn.clone())
                    .await
                    .map_err(unavailable)?;
                Ok(swapped == 1)
            }
        }
    }

    /// Drops expired requests from memory (Redis expires them by itself).
    pub fn sweep(&self, now: u64) {
        if let Pairings::Memory(m) = self {
            let mut m = lock(m);
            m.by_device.retain(|_, raw| {
                serde_json::from_str::<PairingRecord>(raw).is_ok_and(|r| r.expires > now)
            });
            let live: std::collections::HashSet<String> = m.by_device.keys().cloned().collect();
            m.by_code.retain(|_, device| live.contains(device));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pairing::PairingState;

    fn record(code: &str, expires: u64) -> PairingRecord {
        PairingRecord {
            user_code: code.into(),
            hostname: "desk".into(),
            os: "linux".into(),
            ip: "192.0.2.7".into(),
            country: Some("de".into()),
            expires,
            state: PairingState::Pending,
        }
    }

    /// What both stores must do.
    async fn suite(p: &Pairings) {
        let ttl = Duration::from_secs(60);
        let now = 1_000;
        assert!(p
            .create("dev1", &record("BDFGHJKL", now + 60), ttl)
            .await
            .expect("create"));
        assert!(
            !p.create("dev2", &record("BDFGHJKL", now + 60), ttl)
                .await
                .expect("dup"),
            "a user code is taken once"
        );
        let (device, seen) = p
            .by_code("BDFGHJKL", now)
            .await
            .expect("get")
            .expect("found");
        assert_eq!(device, "dev1");
        assert_eq!(seen.record.state, PairingState::Pending);
        assert!(
            p.by_code("BDFGHJKL", now + 60)
                .await
                .expect("get")
                .is_none(),
            "expired"
        );
        assert!(p.by_device("nope", now).await.expect("get").is_none());

        let mut approved = seen.record.clone();
        approved.state = PairingState::Approved {
            user_id: "u_1".into(),
        };
        let mut denied = seen.record.clone();
        denied.state = PairingState::Denied;
        assert!(p.swap("dev1", &seen, &approved).await.expect("swap"));
        assert!(
            !p.swap("dev1", &seen, &denied).await.expect("swap again"),
            "a decision is taken once"
        );
        let now_seen = p.by_device("dev1", now).await.expect("get").expect("found");
        assert_eq!(now_seen.record, approved);
    }

    #[tokio::test]
    async fn memory_pairings() {
        let p = Pairings::open("memory").await.expect("memory");
        suite(&p).await;
        p.sweep(2_000);
        assert!(
            p.by_code("BDFGHJKL", 0).await.expect("get").is_none(),
            "swept"
        );
    }

    #[tokio::test]
    async fn redis_cluster_pairings() {
        let cluster = turbo_bench::redis_cluster::RedisCluster::start().expect("cluster");
        let p = Pairings::open(&cluster.seeds_url()).await.expect("redis");
        suite(&p).await;
    }

    #[tokio::test]
    async fn redis_pairings() {
        let server = crate::store::redis::tests::Server::start();
        let p = Pairings::open(&server.url()).await.expect("redis");
        suite(&p).await;
    }
}
