//! The usage log on Redis: the `turbo:usage` stream the lease script appends to, read
//! after a cursor (`XRANGE` from just past it) and trimmed up to it (`XTRIM MINID`).

use redis::AsyncCommands;

use super::{RedisStore, USAGE_LOG};
use crate::store::{StoreError, UsageEntry, USAGE_LOG_START};

impl RedisStore {
    pub(super) async fn usage_log_since(
        &self,
        cursor: &str,
        max: usize,
    ) -> Result<(Vec<UsageEntry>, String), StoreError> {
        let start = if cursor == USAGE_LOG_START {
            "-".to_owned()
        } else {
            format!("({cursor}")
        };
        let reply: redis::streams::StreamRangeReply = self
            .conn()
            .xrange_count(USAGE_LOG, start, "+", max)
            .await
            .map_err(|e| self.fail(e))?;
        let next = reply.ids.last().map_or(cursor.to_owned(), |e| e.id.clone());
        let entries = reply.ids.iter().filter_map(usage_entry).collect();
        Ok((entries, next))
    }

    pub(super) async fn usage_log_trim(&self, cursor: &str) -> Result<(), StoreError> {
        // MINID keeps ids at or above it: the id just after the cursor.
        let Some((ms, seq)) = cursor.split_once('-') else {
            return Ok(());
        };
        let seq: u64 = seq.parse().unwrap_or(u64::MAX - 1);
        let _: i64 = redis::cmd("XTRIM")
            .arg(USAGE_LOG)
            .arg("MINID")
            .arg(format!("{ms}-{}", seq + 1))
            .query_async(&mut self.conn())
            .await
            .map_err(|e| self.fail(e))?;
        Ok(())
    }
}

/// A usage log entry from its stream fields (`None` for one that is not ours).
fn usage_entry(e: &redis::streams::StreamId) -> Option<UsageEntry> {
    let text = |f: &str| e.get::<String>(f);
    let num = |f: &str| text(f)?.parse::<u64>().ok();
    Some(UsageEntry {
        owner: text("owner")?,
        lease: text("lease")?,
        seq: num("seq")?,
        node: text("node")?,
        key_id: text("key")?,
        minute: text("minute")?.parse().ok()?,
        up: num("up")?,
        down: num("down")?,
        connections: num("conns")?,
    })
}
