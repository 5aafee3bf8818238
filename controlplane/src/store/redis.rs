//! The Redis [`Store`], shared by every `turbo-server` pointing at the same Redis.
//!
//! Key schema v2 (cluster-safe; every name is in [`schema`]). Connect with
//! `redis://host:port/db` (one Redis) or `redis-cluster://host:port,…` (seed nodes).
//!
//! Every change to balances runs as one Lua script (lease, reclaim, top-up), so
//! concurrent servers never double-spend. Lua numbers are doubles: balances stay within
//! [`MAX_BALANCE`] (2^53 − 1, exact as a double), scripts write every number with
//! `string.format('%.0f')` (Lua's own conversion prints `1e+17`), and counters move with
//! `HINCRBY` on the decimal strings the server sent, so every amount round-trips exactly.
//!
//! Durability is Redis's: an acknowledged admin write survives a Redis crash only with
//! `appendonly yes` and `appendfsync always` (with `everysec`, up to a second of writes
//! can be lost). [`RedisStore::connect`] reads both settings and warns when they differ.
//! The clock is Redis's own (`TIME`). Scripts name the keys they touch, except the
//! reclaim script, which derives lease and key names of its bucket from the bucket's
//! hash-tagged prefix (same slot).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use crate::store::redis::events::Conn;
use redis::{AsyncCommands, Script};
use tokio::sync::{broadcast, oneshot};
use tracing::{debug, warn};
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseAnswer, LeaseRequest};

use super::{
    feature_fields, now_unix, short_id, FeatureFields, KeyRecord, LeaseTerms, NodeRecord, Share,
    Store, StoreError, UsageEntry, MAX_BALANCE, MIN_LEASE,
};
use crate::secrets::{self, SecretHash};

mod credits;
mod detect;
pub(crate) mod events;
mod lua;
pub mod migrate;
mod records;
pub mod schema;
mod usage;
use events::{subscriber, Channel};
use lua::{LEASE_LUA, NODE_CARRIED_LUA, RECLAIM_LUA, SESSION_LUA, SET_NODE_FIELD_LUA};
use records::{parse_key, parse_node};

const EVENTS: &str = "turbo:events";
const CONNS: &str = "turbo:conns";
/// About how many entries the usage log keeps when no ledger trims it.
const USAGE_LOG_MAX_LEN: u64 = 10_000_000;

/// The Redis backend.
pub struct RedisStore {
    conn: Conn,
    lease_script: Script,
    reclaim_script: Script,
    events: broadcast::Sender<KeyEvent>,
    errors: Arc<AtomicU64>,
    _stop_subscriber: oneshot::Sender<()>,
}

fn unavailable(e: redis::RedisError) -> StoreError {
    StoreError::Unavailable(e.to_string())
}

fn key_name(id: &str) -> String {
    schema::key(id)
}

fn node_name(id: &str) -> String {
    schema::node(id)
}

impl RedisStore {
    /// Connects to `url` (`redis://…` or `redis-cluster://seed,…`) and subscribes to
    /// key events; returns once the subscription is live, so no event published
    /// afterwards is missed. A new store is marked as key schema v2.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached;
    /// [`StoreError::Corrupt`] when the store is on schema v1 ([`migrate`]).
    pub async fn connect(url: &str) -> Result<RedisStore, StoreError> {
        let store = RedisStore::connect_any_schema(url).await?;
        store.check_schema().await?;
        Ok(store)
    }

    /// Like [`RedisStore::connect`] on a store of any schema (to migrate it).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn connect_any_schema(url: &str) -> Result<RedisStore, StoreError> {
        let (client, conn) = events::manager(url).await.map_err(unavailable)?;
        let (events, _) = broadcast::channel(1024);
        let errors = Arc::new(AtomicU64::new(0));
        let pubsub = events::subscribe(&client, EVENTS)
            .await
            .map_err(unavailable)?;
        let (stop, stopped) = oneshot::channel();
        let channel = Channel {
            name: EVENTS,
            parse: events::key_event,
            resync: KeyEvent::Resync,
        };
        tokio::spawn(subscriber(
            client,
            pubsub,
            channel,
            events.clone(),
            errors.clone(),
            stopped,
        ));
        check_persistence(&conn).await;
        Ok(RedisStore {
            conn,
            lease_script: Script::new(LEASE_LUA),
            reclaim_script: Script::new(RECLAIM_LUA),
            events,
            errors,
            _stop_subscriber: stop,
        })
    }

    fn conn(&self) -> Conn {
        self.conn.clone()
    }

    /// Counts a failure and converts it.
    fn fail(&self, e: redis::RedisError) -> StoreError {
        self.errors.fetch_add(1, Relaxed);
        unavailable(e)
    }

    async fn publish(&self, event: &str) -> Result<(), StoreError> {
        let _: i64 = self
            .conn()
            .publish(EVENTS, event)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn hgetall(&self, name: &str) -> Result<Vec<(String, String)>, StoreError> {
        self.conn().hgetall(name).await.map_err(|e| self.fail(e))
    }

    async fn load_key(&self, id: &str) -> Result<Option<KeyRecord>, StoreError> {
        let fields = self.hgetall(&key_name(id)).await?;
        Ok(parse_key(id, &fields))
    }

    async fn load_node(&self, id: &str) -> Result<Option<NodeRecord>, StoreError> {
        let fields = self.hgetall(&node_name(id)).await?;
        Ok(parse_node(id, &fields))
    }

    /// Sets one field of an existing node (`NotFound` when there is none).
    async fn set_node_field(&self, id: &str, field: &str, value: &str) -> Result<(), StoreError> {
        let done: i64 = Script::new(SET_NODE_FIELD_LUA)
            .key(node_name(id))
            .arg(field)
            .arg(value)
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        if done < 0 {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        Ok(())
    }

    /// Adds a new record's `id` to the id set `set`, then writes its secret lookup
    /// `lookup` (last: a record is usable only once complete).
    async fn index(&self, id: &str, set: &str, lookup: &str) -> Result<(), StoreError> {
        let _: i64 = self.conn().sadd(set, id).await.map_err(|e| self.fail(e))?;
        let _: () = self
            .conn()
            .set(lookup, id)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    /// Adds carried bytes to the nodes' display counters (after an applied
    /// checkpoint; the ledger's usage records are the exact count).
    async fn count_carried(&self, nodes: &[turbo_dataplane::control::NodeUsage]) {
        for u in nodes.iter().filter(|u| u.up + u.down > 0) {
            let added: Result<i64, _> = Script::new(NODE_CARRIED_LUA)
                .key(node_name(&u.node))
                .arg(u.up + u.down)
                .invoke_async(&mut self.conn())
                .await;
            if let Err(e) = added {
                debug!(node = %u.node, error = %e, "node byte counter not updated");
            }
        }
    }

    async fn members(&self, set: &str) -> Result<Vec<String>, StoreError> {
        self.conn().smembers(set).await.map_err(|e| self.fail(e))
    }
}

/// Warns unless Redis runs with `appendonly yes` and `appendfsync always`, the settings
/// under which an acknowledged admin write survives a Redis crash. Never fails: managed
/// Redis often refuses `CONFIG`, and `everysec` is a legitimate trade-off.
async fn check_persistence(conn: &Conn) {
    let get = |name: &'static str| {
        let mut conn = conn.clone();
        async move {
            let pair: Result<Vec<String>, _> = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query_async(&mut conn)
                .await;
            pair.map(|p| p.get(1).cloned().unwrap_or_default())
        }
    };
    match (get("appendonly").await, get("appendfsync").await) {
        (Ok(aof), Ok(fsync)) if aof == "yes" && fsync == "always" => {
            debug!("Redis persistence: appendonly yes, appendfsync always");
        }
        (Ok(aof), Ok(fsync)) => warn!(
            appendonly = %aof,
            appendfsync = %fsync,
            "Redis may lose acknowledged writes in a crash: set appendonly yes and \
             appendfsync always (everysec can lose up to a second)"
        ),
        (Err(e), _) | (_, Err(e)) => warn!(
            error = %e,
            "could not read Redis persistence settings (CONFIG GET); make sure \
             appendonly yes and appendfsync always are set"
        ),
    }
}

impl Store for RedisStore {
    async fn create_key(
        &self,
        name: &str,
        credits: u64,
    ) -> Result<(KeyRecord, String), StoreError> {
        if credits > MAX_BALANCE {
            return Err(StoreError::OverMaximum);
        }
        let secret = secrets::generate("tk");
        let rec = KeyRecord {
            id: short_id("k"),
            name: name.to_owned(),
            credits,
            leased: 0,
            bytes_up: 0,
            bytes_down: 0,
            connections: 0,
            overdraft: 0,
            revoked: false,
            created_unix: now_unix(),
            hash: secrets::hash(&secret),
        };
        let hash_hex = hex::encode(rec.hash);
        // Three slots: the record, the id set, then the lookup that makes it usable.
        let _: () = self
            .conn()
            .hset_multiple(
                key_name(&rec.id),
                &[
                    ("name", rec.name.clone()),
                    ("hash", hash_hex.clone()),
                    ("credits", credits.to_string()),
                    ("leased", "0".into()),
                    ("bytes_up", "0".into()),
                    ("bytes_down", "0".into()),
                    ("connections", "0".into()),
                    ("overdraft", "0".into()),
                    ("revoked", "0".into()),
                    ("created", rec.created_unix.to_string()),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        self.index(&rec.id, "turbo:keys", &format!("turbo:keyhash:{hash_hex}"))
            .await?;
        let tag = turbo_dataplane::known_keys::tag(&rec.hash);
        self.publish(&format!("create {tag:016x}")).await?;
        Ok((rec, secret))
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut keys = Vec::new();
        for id in self.members("turbo:keys").await? {
            keys.extend(self.load_key(&id).await?);
        }
        keys.sort_by_key(|k| (k.created_unix, k.id.clone()));
        Ok(keys)
    }

    async fn key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        self.load_key(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    async fn key_by_hash(&self, hash: SecretHash) -> Result<Option<KeyRecord>, StoreError> {
        let id: Option<String> = self
            .conn()
            .get(format!("turbo:keyhash:{}", hex::encode(hash)))
            .await
            .map_err(|e| self.fail(e))?;
        let Some(id) = id else { return Ok(None) };
        Ok(self
            .load_key(&id)
            .await?
            .filter(|k| secrets::same(&k.hash, &hash)))
    }

    async fn add_credits(&self, id: &str, bytes: u64) -> Result<KeyRecord, StoreError> {
        self.top_up(id, bytes).await
    }

    async fn add_credits_once(&self, id: &str, bytes: u64, op: &str) -> Result<bool, StoreError> {
        self.top_up_once(id, bytes, op).await
    }

    async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        let name = key_name(id);
        let exists: bool = self.conn().exists(&name).await.map_err(|e| self.fail(e))?;
        if !exists {
            return Err(StoreError::NotFound(id.to_owned()));
        }
        let _: i64 = self
            .conn()
            .hset(&name, "revoked", 1)
            .await
            .map_err(|e| self.fail(e))?;
        self.publish(&format!("revoke {id}")).await
    }

    async fn lease(
        &self,
        terms: &LeaseTerms,
        request: &LeaseRequest,
    ) -> Result<LeaseAnswer, StoreError> {
        let bucket = schema::bucket(&request.key_id);
        let mut inv = self.lease_script.prepare_invoke();
        inv.key(key_name(&request.key_id))
            .key(schema::lease(&request.key_id, &request.lease_id))
            .key(schema::leases(bucket))
            .key(schema::usage(bucket));
        inv.arg(&*request.lease_id)
            .arg(&terms.owner)
            .arg(request.seq)
            .arg(request.want)
            .arg(terms.ttl.as_millis() as u64)
            .arg(request.usage.up)
            .arg(request.usage.down)
            .arg(request.usage.connections)
            .arg(if request.release { "1" } else { "0" })
            .arg(MIN_LEASE)
            .arg(&*request.key_id)
            .arg(if terms.usage_log { "1" } else { "0" })
            .arg(USAGE_LOG_MAX_LEN);
        for u in &request.usage.nodes {
            inv.arg(&*u.node).arg(u.up).arg(u.down).arg(u.connections);
        }
        let out: Result<Vec<i64>, _> = inv.invoke_async(&mut self.conn()).await;
        let v = match out {
            Ok(v) => v,
            Err(e) if e.to_string().contains("NOKEY") => {
                return Err(StoreError::NotFound(request.key_id.to_string()))
            }
            Err(e) => return Err(self.fail(e)),
        };
        let at = |i: usize| v.get(i).copied().unwrap_or(0).max(0) as u64;
        if at(5) == 1 {
            self.count_carried(&request.usage.nodes).await;
        }
        Ok(LeaseAnswer {
            granted: at(0),
            held: at(1),
            credits: at(2),
            revoked: at(3) == 1,
            ended: at(4) == 1,
        })
    }

    async fn usage_since(
        &self,
        cursor: &str,
        max: usize,
    ) -> Result<(Vec<UsageEntry>, String), StoreError> {
        self.usage_log_since(cursor, max).await
    }

    async fn usage_trim(&self, cursor: &str) -> Result<(), StoreError> {
        self.usage_log_trim(cursor).await
    }

    async fn reclaim_expired(&self, share: Share) -> Result<u64, StoreError> {
        let mut reclaimed = 0;
        for bucket in (0..schema::BUCKETS).filter(|b| share.covers(*b)) {
            let n: u64 = self
                .reclaim_script
                .key(schema::leases(bucket))
                .arg(schema::prefix(bucket))
                .invoke_async(&mut self.conn())
                .await
                .map_err(|e| self.fail(e))?;
            reclaimed += n;
        }
        Ok(reclaimed)
    }

    async fn record_connection(&self, record: &ConnRecord, max_len: u64) -> Result<(), StoreError> {
        let fields = feature_fields(record);
        let mut cmd = redis::cmd("XADD");
        cmd.arg(CONNS)
            .arg("MAXLEN")
            .arg("~")
            .arg(max_len.max(1))
            .arg("*");
        for (k, v) in &fields {
            cmd.arg(k).arg(v);
        }
        let _: String = cmd
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn recent_connections(&self, count: usize) -> Result<Vec<FeatureFields>, StoreError> {
        let raw: Vec<(String, Vec<String>)> = redis::cmd("XREVRANGE")
            .arg(CONNS)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(count)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(raw
            .into_iter()
            .rev()
            .map(|(_, flat)| {
                flat.chunks(2)
                    .filter_map(|kv| Some((kv.first()?.clone(), kv.get(1)?.clone())))
                    .collect()
            })
            .collect())
    }

    async fn create_node(
        &self,
        payout_address: Option<&str>,
    ) -> Result<(NodeRecord, String), StoreError> {
        let token = secrets::generate("nt");
        let rec = NodeRecord {
            id: short_id("n"),
            bytes_carried: 0,
            payout_address: payout_address.map(str::to_owned),
            payout_threshold_nano: None,
            revoked: false,
            created_unix: now_unix(),
            hash: secrets::hash(&token),
        };
        let hash_hex = hex::encode(rec.hash);
        let _: () = self
            .conn()
            .hset_multiple(
                node_name(&rec.id),
                &[
                    ("hash", hash_hex.clone()),
                    ("bytes_carried", "0".into()),
                    ("created", rec.created_unix.to_string()),
                    ("payout", payout_address.unwrap_or_default().to_owned()),
                    ("revoked", "0".into()),
                ],
            )
            .await
            .map_err(|e| self.fail(e))?;
        self.index(
            &rec.id,
            "turbo:nodes",
            &format!("turbo:nodehash:{hash_hex}"),
        )
        .await?;
        Ok((rec, token))
    }

    async fn node(&self, id: &str) -> Result<NodeRecord, StoreError> {
        self.load_node(id)
            .await?
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    async fn revoke_node(&self, id: &str) -> Result<(), StoreError> {
        self.set_node_field(id, "revoked", "1").await?;
        self.publish(&format!("revoke-node {id}")).await
    }

    async fn node_by_token_hash(&self, hash: SecretHash) -> Result<Option<NodeRecord>, StoreError> {
        let id: Option<String> = self
            .conn()
            .get(format!("turbo:nodehash:{}", hex::encode(hash)))
            .await
            .map_err(|e| self.fail(e))?;
        let Some(id) = id else { return Ok(None) };
        Ok(self
            .load_node(&id)
            .await?
            .filter(|n| secrets::same(&n.hash, &hash)))
    }

    async fn set_node_payout(&self, id: &str, address: &str) -> Result<(), StoreError> {
        self.set_node_field(id, "payout", address).await
    }

    async fn set_node_threshold(&self, id: &str, nano: Option<i64>) -> Result<(), StoreError> {
        let value = nano.filter(|n| *n > 0).unwrap_or(0).to_string();
        self.set_node_field(id, "payout_min", &value).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut nodes = Vec::new();
        for id in self.members("turbo:nodes").await? {
            nodes.extend(self.load_node(&id).await?);
        }
        nodes.sort_by_key(|n| (n.created_unix, n.id.clone()));
        Ok(nodes)
    }

    async fn session_get(&self, key_id: &str, session: &str) -> Result<Option<String>, StoreError> {
        self.conn()
            .get(format!("turbo:session:{key_id}:{session}"))
            .await
            .map_err(|e| self.fail(e))
    }

    async fn session_put(
        &self,
        key_id: &str,
        session: &str,
        node_id: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> Result<String, StoreError> {
        Script::new(SESSION_LUA)
            .key(format!("turbo:session:{key_id}:{session}"))
            .arg(node_id)
            .arg(ttl.as_millis().max(1) as u64)
            .arg(replacing.unwrap_or(""))
            .invoke_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))
    }

    fn events(&self) -> broadcast::Receiver<KeyEvent> {
        self.events.subscribe()
    }

    fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod migrate_tests;

#[cfg(test)]
mod failover_tests;
