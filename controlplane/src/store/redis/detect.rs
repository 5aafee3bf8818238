//! The detector's state in Redis:
//!
//! | key | type | holds |
//! |---|---|---|
//! | `turbo:secret:<name>` | string | a shared 32-byte secret (hex), set once with `NX` |
//! | `turbo:conns` group `<group>` | consumer group | who has read which feature record |
//! | `turbo:detect:win:<ms>` | hash | `<key>\|<consumer>` → partial window summary (JSON), 1 day TTL |
//! | `turbo:detect:claim:<ms>` | string | the server scoring that window (`NX`), 1 day TTL |
//! | `turbo:detect:history` | list | scored windows (JSON), newest last, capped |
//! | `turbo:detect:models` | hash | version → model (JSON), the last ten |
//! | `turbo:detect:model-version` | string | the newest version (`INCR`) |
//! | `turbo:verdicts` | hash | verdict id → verdict (JSON) |
//!
//! Every command touches one key, so the schema is safe on a cluster.

use redis::streams::StreamReadReply;
use redis::AsyncCommands;

use super::{RedisStore, CONNS};
use crate::store::detect::{DetectStore, StreamEntry, Verdict};
use crate::store::StoreError;

const HISTORY: &str = "turbo:detect:history";
const MODELS: &str = "turbo:detect:models";
const MODEL_VERSION: &str = "turbo:detect:model-version";
const VERDICTS: &str = "turbo:verdicts";
/// Windows and claims live a day.
const DAY_SECS: u64 = 24 * 3600;
/// Models kept.
const MODELS_KEPT: u64 = 10;

impl RedisStore {
    async fn read_group(
        &self,
        group: &str,
        consumer: &str,
        from: &str,
        count: usize,
    ) -> Result<StreamReadReply, redis::RedisError> {
        redis::cmd("XREADGROUP")
            .arg("GROUP")
            .arg(group)
            .arg(consumer)
            .arg("COUNT")
            .arg(count.max(1))
            .arg("STREAMS")
            .arg(CONNS)
            .arg(from)
            .query_async(&mut self.conn())
            .await
    }
}

impl DetectStore for RedisStore {
    async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        let key = format!("turbo:secret:{name}");
        let fresh = hex::encode(rand::random::<[u8; 32]>());
        let _: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(&fresh)
            .arg("NX")
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        let stored: String = self.conn().get(&key).await.map_err(|e| self.fail(e))?;
        hex::decode(stored.trim())
            .ok()
            .and_then(|v| v.try_into().ok())
            .ok_or_else(|| StoreError::Corrupt(format!("{key} is not 32 bytes of hex")))
    }

    async fn conns_read(
        &self,
        group: &str,
        consumer: &str,
        pending: bool,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let from = if pending { "0" } else { ">" };
        let reply = match self.read_group(group, consumer, from, count).await {
            Err(e) if e.code() == Some("NOGROUP") => {
                let created: Result<(), _> = redis::cmd("XGROUP")
                    .arg("CREATE")
                    .arg(CONNS)
                    .arg(group)
                    .arg("$")
                    .arg("MKSTREAM")
                    .query_async(&mut self.conn())
                    .await;
                if let Err(e) = created {
                    if e.code() != Some("BUSYGROUP") {
                        return Err(self.fail(e));
                    }
                }
                self.read_group(group, consumer, from, count).await
            }
            other => other,
        }
        .map_err(|e| self.fail(e))?;
        let entries = reply.keys.into_iter().flat_map(|k| k.ids);
        Ok(entries
            .map(|entry| {
                let fields = entry
                    .map
                    .iter()
                    .filter_map(|(k, v)| Some((k.clone(), redis::from_redis_value_ref(v).ok()?)))
                    .collect();
                (entry.id, fields)
            })
            .collect())
    }

    async fn conns_ack(&self, group: &str, ids: &[String]) -> Result<(), StoreError> {
        for chunk in ids.chunks(500) {
            let _: u64 = self
                .conn()
                .xack(CONNS, group, chunk)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    async fn window_put(
        &self,
        window_ms: u64,
        parts: &[(String, String)],
    ) -> Result<(), StoreError> {
        if parts.is_empty() {
            return Ok(());
        }
        let key = format!("turbo:detect:win:{window_ms}");
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(&key, parts)
            .ignore()
            .expire(&key, DAY_SECS as i64)
            .ignore();
        let _: () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn window_parts(&self, window_ms: u64) -> Result<Vec<(String, String)>, StoreError> {
        self.hgetall(&format!("turbo:detect:win:{window_ms}")).await
    }

    async fn window_claim(&self, window_ms: u64, owner: &str) -> Result<bool, StoreError> {
        let set: Option<String> = redis::cmd("SET")
            .arg(format!("turbo:detect:claim:{window_ms}"))
            .arg(owner)
            .arg("NX")
            .arg("EX")
            .arg(DAY_SECS)
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(set.is_some())
    }

    async fn history_push(&self, rows: &[String], cap: usize) -> Result<(), StoreError> {
        if rows.is_empty() {
            return Ok(());
        }
        let mut pipe = redis::pipe();
        pipe.atomic()
            .rpush(HISTORY, rows)
            .ignore()
            .ltrim(HISTORY, -(cap.max(1) as isize), -1)
            .ignore();
        let _: () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }

    async fn history(&self, max: usize) -> Result<Vec<String>, StoreError> {
        self.conn()
            .lrange(HISTORY, -(max.max(1) as isize), -1)
            .await
            .map_err(|e| self.fail(e))
    }

    async fn model_put(&self, model: &str) -> Result<u64, StoreError> {
        let version: u64 = self
            .conn()
            .incr(MODEL_VERSION, 1)
            .await
            .map_err(|e| self.fail(e))?;
        let mut pipe = redis::pipe();
        pipe.hset(MODELS, version, model).ignore();
        if version > MODELS_KEPT {
            pipe.hdel(MODELS, version - MODELS_KEPT).ignore();
        }
        let _: () = pipe
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(version)
    }

    async fn model_latest(&self) -> Result<Option<(u64, String)>, StoreError> {
        let version: Option<u64> = self
            .conn()
            .get(MODEL_VERSION)
            .await
            .map_err(|e| self.fail(e))?;
        let Some(version) = version else {
            return Ok(None);
        };
        let model: Option<String> = self
            .conn()
            .hget(MODELS, version)
            .await
            .map_err(|e| self.fail(e))?;
        Ok(model.map(|m| (version, m)))
    }

    async fn verdict_put(&self, verdict: &Verdict) -> Result<(), StoreError> {
        let json = serde_json::to_string(verdict)
            .map_err(|e| StoreError::Corrupt(format!("verdict: {e}")))?;
        let _: () = self
            .conn()
            .hset(VERDICTS, &verdict.id, json)
            .await
            .map_err(|e| self.fail(e))?;
        let horizon = verdict.created_unix_ms.saturating_sub(DAY_SECS * 1000);
        let stale: Vec<String> = self
            .verdicts()
            .await?
            .into_iter()
            .filter(|v| v.expires_at < horizon)
            .map(|v| v.id)
            .collect();
        if !stale.is_empty() {
            let _: () = self
                .conn()
                .hdel(VERDICTS, stale)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    async fn verdicts(&self) -> Result<Vec<Verdict>, StoreError> {
        let all = self.hgetall(VERDICTS).await?;
        Ok(all
            .into_iter()
            .filter_map(|(_, json)| serde_json::from_str(&json).ok())
            .collect())
    }

    async fn publish_policy(&self, key_id: &str, rules: &str) -> Result<(), StoreError> {
        self.publish(&format!("policy {key_id} {rules}")).await
    }
}
