//! `turbo-server store migrate`: moves a Redis store from key schema v1 (one
//! `turbo:key:{id}` per key, one `turbo:leases` set, one `turbo:usage` log, node byte
//! counts inside the lease script) to schema v2 ([`super::schema`], cluster-safe).
//!
//! It runs against the single Redis that holds v1 (v1 cannot run on a cluster). Each
//! step is idempotent and the whole is safe to run again after a crash:
//! - every key hash is renamed into its bucket (`RENAME` keeps every field, the
//!   applied-payment markers included);
//! - every lease hash is renamed into its key's bucket, and each live lease is added
//!   to the bucket's expiry set with its score;
//! - the v1 usage log is copied entry by entry into the bucket logs (the ledger keys
//!   usage records by server, lease, seq and node, so an entry it had already taken
//!   is recorded once), then deleted;
//! - `turbo:schema` is set to `2`.
//!
//! Servers of the old build must be stopped first (a v1 server would keep writing v1
//! names); servers of this build refuse a store whose keys are still v1.
//! `--dry-run` counts what would move and changes nothing.

use redis::AsyncCommands;
use serde::Serialize;

use super::{schema, RedisStore};
use crate::store::StoreError;

/// What a migration moved (or, in a dry run, would move).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Migration {
    /// Key hashes moved into their buckets.
    pub keys: u64,
    /// Lease hashes moved.
    pub leases: u64,
    /// Live leases added to their bucket's expiry set.
    pub live_leases: u64,
    /// Usage log entries copied.
    pub usage_entries: u64,
    /// The schema version found before.
    pub from_version: String,
    /// Whether anything was changed.
    pub dry_run: bool,
}

const V1_LEASES: &str = "turbo:leases";
const V1_USAGE: &str = "turbo:usage";

fn v1_key(id: &str) -> String {
    format!("turbo:key:{id}")
}

impl RedisStore {
    /// The schema version recorded in the store: `2`, or `1` when v1 names are there
    /// and no version is set, or `none` for an empty store.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn schema_version(&self) -> Result<String, StoreError> {
        let set: Option<String> = self
            .conn()
            .get(schema::VERSION_KEY)
            .await
            .map_err(|e| self.fail(e))?;
        if let Some(v) = set {
            return Ok(v);
        }
        let ids: Vec<String> = self.members("turbo:keys").await?;
        for id in ids.iter().take(100) {
            let v1: bool = self
                .conn()
                .exists(v1_key(id))
                .await
                .map_err(|e| self.fail(e))?;
            if v1 {
                return Ok("1".into());
            }
        }
        Ok(if ids.is_empty() { "none" } else { "2" }.into())
    }

    /// Marks an empty or v2 store as v2 (a new store starts on v2).
    ///
    /// # Errors
    /// [`StoreError::Corrupt`] when the store still holds v1 keys.
    pub async fn check_schema(&self) -> Result<(), StoreError> {
        match self.schema_version().await?.as_str() {
            "2" | "none" => {
                let _: () = self
                    .conn()
                    .set(schema::VERSION_KEY, schema::VERSION)
                    .await
                    .map_err(|e| self.fail(e))?;
                Ok(())
            }
            v => Err(StoreError::Corrupt(format!(
                "the store is on key schema v{v}; stop every server and run \
                 `turbo-server store migrate --store URL` (try --dry-run first)"
            ))),
        }
    }

    /// Migrates v1 names to v2; see the module documentation.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`]; a rerun continues where it stopped.
    pub async fn migrate_v1(&self, dry_run: bool) -> Result<Migration, StoreError> {
        let mut done = Migration {
            from_version: self.schema_version().await?,
            dry_run,
            ..Migration::default()
        };
        for id in self.members("turbo:keys").await? {
            done.keys += u64::from(
                self.move_name(&v1_key(&id), &schema::key(&id), dry_run)
                    .await?,
            );
        }
        self.migrate_leases(&mut done).await?;
        self.migrate_usage(&mut done).await?;
        if !dry_run {
            let _: () = self
                .conn()
                .set(schema::VERSION_KEY, schema::VERSION)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(done)
    }

    /// Renames `from` to `to` if `from` exists; whether it did (or would).
    async fn move_name(&self, from: &str, to: &str, dry_run: bool) -> Result<bool, StoreError> {
        let exists: bool = self.conn().exists(from).await.map_err(|e| self.fail(e))?;
        if exists && !dry_run {
            let _: () = self
                .conn()
                .rename(from, to)
                .await
                .map_err(|e| self.fail(e))?;
        }
        Ok(exists)
    }

    async fn migrate_leases(&self, done: &mut Migration) -> Result<(), StoreError> {
        let live: Vec<(String, f64)> = self
            .conn()
            .zrange_withscores(V1_LEASES, 0, -1)
            .await
            .map_err(|e| self.fail(e))?;
        let mut names: Vec<String> = Vec::new();
        {
            let mut conn = self.conn();
            let mut iter: redis::AsyncIter<'_, String> = conn
                .scan_match("turbo:lease:*")
                .await
                .map_err(|e| self.fail(e))?;
            while let Some(name) = futures_util::StreamExt::next(&mut iter).await {
                names.push(name.map_err(|e| self.fail(e))?);
            }
        }
        for name in names {
            let id = name.trim_start_matches("turbo:lease:").to_owned();
            let key: Option<String> = self
                .conn()
                .hget(&name, "key")
                .await
                .map_err(|e| self.fail(e))?;
            let Some(key) = key else { continue };
            let score = live.iter().find(|(l, _)| *l == id).map(|(_, s)| *s);
            if let (Some(score), false) = (score, done.dry_run) {
                let bucket = schema::bucket(&key);
                let _: i64 = self
                    .conn()
                    .zadd(schema::leases(bucket), &id, score)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
            done.live_leases += u64::from(score.is_some());
            let to = schema::lease(&key, &id);
            done.leases += u64::from(self.move_name(&name, &to, done.dry_run).await?);
        }
        if !done.dry_run {
            let _: i64 = self.conn().del(V1_LEASES).await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }

    async fn migrate_usage(&self, done: &mut Migration) -> Result<(), StoreError> {
        let mut from = "-".to_owned();
        loop {
            let page: redis::streams::StreamRangeReply = self
                .conn()
                .xrange_count(V1_USAGE, &from, "+", 1000)
                .await
                .map_err(|e| self.fail(e))?;
            let Some(last) = page.ids.last() else { break };
            from = format!("({}", last.id);
            for entry in &page.ids {
                done.usage_entries += 1;
                if done.dry_run {
                    continue;
                }
                let key: String = entry.get("key").unwrap_or_default();
                let fields: Vec<(String, String)> = entry
                    .map
                    .keys()
                    .filter_map(|f| Some((f.clone(), entry.get::<String>(f)?)))
                    .collect();
                let _: String = self
                    .conn()
                    .xadd(schema::usage(schema::bucket(&key)), "*", &fields)
                    .await
                    .map_err(|e| self.fail(e))?;
            }
        }
        if !done.dry_run {
            let _: i64 = self.conn().del(V1_USAGE).await.map_err(|e| self.fail(e))?;
        }
        Ok(())
    }
}
