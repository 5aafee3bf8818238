//! The usage log on Redis: one stream per bucket ([`schema::usage`]) that the lease
//! script appends to, read after a composite cursor (`v2:` and one stream id per
//! bucket; `XRANGE` from just past each, buckets in turn from one that the cursor
//! picks) and trimmed up to it (`XTRIM MINID`). Any
//! other cursor (the ledger's first, or one from the one-stream schema v1) reads every
//! bucket from its start: the ledger keys usage records by (server, lease, seq, node),
//! so an entry read twice is recorded once.

use redis::AsyncCommands;

use super::{schema, RedisStore};
use crate::store::{StoreError, UsageEntry};

/// The prefix of a composite cursor.
const CURSOR_PREFIX: &str = "v2:";

/// Each bucket's position in `cursor` (`0`: from the start).
fn positions(cursor: &str) -> Vec<String> {
    let start = || vec!["0".to_owned(); schema::BUCKETS as usize];
    let Some(ids) = cursor.strip_prefix(CURSOR_PREFIX) else {
        return start();
    };
    let ids: Vec<String> = ids.split(',').map(str::to_owned).collect();
    if ids.len() == schema::BUCKETS as usize && ids.iter().all(|id| is_stream_id(id)) {
        ids
    } else {
        start()
    }
}

/// `0` or `ms-seq`.
fn is_stream_id(id: &str) -> bool {
    id == "0"
        || id
            .split_once('-')
            .is_some_and(|(ms, seq)| ms.parse::<u64>().is_ok() && seq.parse::<u64>().is_ok())
}

fn cursor_of(positions: &[String]) -> String {
    format!("{CURSOR_PREFIX}{}", positions.join(","))
}

impl RedisStore {
    pub(super) async fn usage_log_since(
        &self,
        cursor: &str,
        max: usize,
    ) -> Result<(Vec<UsageEntry>, String), StoreError> {
        let mut at = positions(cursor);
        let mut entries = Vec::new();
        // Greedy from a start that moves with the cursor: a bucket busier than `max`
        // cannot keep the others waiting.
        let first = schema::bucket(cursor);
        for b in (0..schema::BUCKETS).map(|i| (first + i) % schema::BUCKETS) {
            if entries.len() >= max {
                break;
            }
            let pos = &mut at[b as usize];
            let start = if pos == "0" {
                "-".to_owned()
            } else {
                format!("({pos}")
            };
            let reply: redis::streams::StreamRangeReply = self
                .conn()
                .xrange_count(schema::usage(b), start, "+", max - entries.len())
                .await
                .map_err(|e| self.fail(e))?;
            if let Some(last) = reply.ids.last() {
                pos.clone_from(&last.id);
            }
            entries.extend(reply.ids.iter().filter_map(usage_entry));
        }
        Ok((entries, cursor_of(&at)))
    }

    pub(super) async fn usage_log_trim(&self, cursor: &str) -> Result<(), StoreError> {
        for (b, pos) in (0..schema::BUCKETS).zip(positions(cursor)) {
            // MINID keeps ids at or above it: the id just after the cursor.
            let Some((ms, seq)) = pos.split_once('-') else {
                continue;
            };
            let seq: u64 = seq.parse().unwrap_or(u64::MAX - 1);
            let _: i64 = redis::cmd("XTRIM")
                .arg(schema::usage(b))
                .arg("MINID")
                .arg(format!("{ms}-{}", seq + 1))
                .query_async(&mut self.conn())
                .await
                .map_err(|e| self.fail(e))?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_foreign_ones_start_over() {
        let mut at = positions("0");
        assert!(at.iter().all(|p| p == "0"));
        at[3] = "1700000000000-4".into();
        assert_eq!(positions(&cursor_of(&at)), at);
        for foreign in ["1700000000000-4", "v2:1-1", "v2:x", ""] {
            assert!(positions(foreign).iter().all(|p| p == "0"), "{foreign}");
        }
    }
}
