//! Usage in, exactly once. The data plane's usage checkpoints arrive as
//! [`UsageRecord`]s, each unique by (server, lease, seq, node): recording one twice is a
//! no-op. A settler claims unsettled records (`FOR UPDATE SKIP LOCKED`, so several
//! settlers take disjoint batches), and in the same transaction posts one balanced
//! posting of bytes (each key debited, each node credited) and adds the records to the
//! per-minute table charts and payouts read. A settler killed mid-way rolls back whole;
//! settling again finds nothing left.

use std::collections::BTreeMap;

use crate::posting::{account_ids, post_in};
use crate::{AccountRef, Asset, Ledger, LedgerError, Leg, Posting};

/// One usage checkpoint of one key through one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageRecord {
    /// The server that relayed it.
    pub server: String,
    /// The credit lease it was reported under.
    pub lease: String,
    /// The checkpoint's sequence number within the lease.
    pub seq: i64,
    /// The node that carried it.
    pub node: String,
    /// The customer key billed for it.
    pub key_id: String,
    /// The minute it was relayed in (minutes since the Unix epoch).
    pub minute: i64,
    /// Customer → target bytes.
    pub up: i64,
    /// Target → customer bytes.
    pub down: i64,
    /// Connections that closed.
    pub conns: i64,
}

/// What one [`Ledger::settle`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Settled {
    /// Records settled.
    pub records: u64,
    /// Bytes moved from keys to nodes.
    pub bytes: u64,
}

/// Totals of one (key, node) pair, or of one (key, node, minute).
#[derive(Default)]
struct Sums {
    up: i64,
    down: i64,
    conns: i64,
}

impl Ledger {
    /// Records usage checkpoints; those already recorded are ignored. Returns how many
    /// were new.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] for negative counts; otherwise database errors
    /// (nothing recorded; a retry is safe).
    pub async fn record_usage(&self, records: &[UsageRecord]) -> Result<u64, LedgerError> {
        check_records(records)?;
        let client = self.pool.get().await?;
        insert_records(&**client, records).await
    }

    /// Where the feeder `name` stands in the store's usage log (`"0"` before it began).
    ///
    /// # Errors
    /// Database errors.
    pub async fn feed_cursor(&self, name: &str) -> Result<String, LedgerError> {
        let row = self
            .pool
            .get()
            .await?
            .query_opt("SELECT cursor FROM feed_cursors WHERE name = $1", &[&name])
            .await?;
        Ok(row.map_or_else(|| "0".to_owned(), |r| r.get(0)))
    }

    /// Records `records`, read from the usage log between cursors `from` and `to`, and
    /// moves feeder `name`'s cursor from `from` to `to`, in one transaction: a feeder
    /// killed half-way records nothing and reads the same entries again. `false` when
    /// another feeder moved the cursor first (nothing recorded; read again from its
    /// cursor).
    ///
    /// # Errors
    /// As [`Ledger::record_usage`].
    pub async fn record_fed(
        &self,
        name: &str,
        from: &str,
        to: &str,
        records: &[UsageRecord],
    ) -> Result<bool, LedgerError> {
        check_records(records)?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute(
            "INSERT INTO feed_cursors (name, cursor) VALUES ($1, '0') ON CONFLICT DO NOTHING",
            &[&name],
        )
        .await?;
        let moved = tx
            .execute(
                "UPDATE feed_cursors SET cursor = $3 WHERE name = $1 AND cursor = $2",
                &[&name, &from, &to],
            )
            .await?;
        if moved != 1 {
            return Ok(false);
        }
        insert_records(&*tx, records).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// Settles up to `limit` unsettled records in one transaction.
    ///
    /// # Errors
    /// Database errors: the transaction rolls back whole, and the records stay
    /// unsettled for the next call.
    pub async fn settle(&self, limit: i64) -> Result<Settled, LedgerError> {
        loop {
            match self.settle_batch(limit).await? {
                Batch::Settled(s) => return Ok(s),
                // New keys or nodes: their accounts are created in a transaction of
                // their own (no settler creates one while holding others), then again.
                Batch::NeedsAccounts(legs) => {
                    self.ensure_accounts(&legs).await?;
                }
            }
        }
    }

    /// Claims a batch and settles it, unless one of its accounts does not exist yet.
    async fn settle_batch(&self, limit: i64) -> Result<Batch, LedgerError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let id: i64 = tx
            .query_one("INSERT INTO settlements DEFAULT VALUES RETURNING id", &[])
            .await?
            .get(0);
        let rows = tx
            .query(
                "UPDATE usage_records SET settlement = $1
                 WHERE (server, lease, seq, node) IN (
                     SELECT server, lease, seq, node FROM usage_records
                     WHERE settlement IS NULL LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING key_id, node, minute, up, down, conns",
                &[&id, &limit],
            )
            .await?;
        if rows.is_empty() {
            return Ok(Batch::Settled(Settled::default()));
        }
        let (pairs, minutes) = sums(&rows);
        let legs = usage_legs(&pairs);
        let bytes = legs.iter().map(|l| l.amount.max(0)).sum::<i64>();
        if !legs.is_empty() {
            let ids = account_ids(&*tx, &legs).await?;
            if ids.len() < legs.len() {
                return Ok(Batch::NeedsAccounts(legs));
            }
            let posting = Posting {
                key: format!("settle:{id}"),
                kind: "usage".into(),
                legs,
            };
            post_in(&tx, &posting, &ids).await?;
        }
        // After the accounts, in key order: the second lock order every settler shares.
        upsert_minutes(&tx, &minutes).await?;
        tx.commit().await?;
        Ok(Batch::Settled(Settled {
            records: rows.len() as u64,
            bytes: bytes as u64,
        }))
    }
}

/// Inserts `records` (those already there are skipped); returns how many were new.
async fn insert_records(
    client: &impl tokio_postgres::GenericClient,
    records: &[UsageRecord],
) -> Result<u64, LedgerError> {
    let column = |f: fn(&UsageRecord) -> i64| records.iter().map(f).collect::<Vec<i64>>();
    let text = |f: fn(&UsageRecord) -> &str| records.iter().map(f).collect::<Vec<&str>>();
    let new = client
        .execute(
            "INSERT INTO usage_records
             (server, lease, seq, node, key_id, minute, up, down, conns)
             SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[],
                 $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::bigint[])
             ON CONFLICT DO NOTHING",
            &[
                &text(|r| &r.server),
                &text(|r| &r.lease),
                &column(|r| r.seq),
                &text(|r| &r.node),
                &text(|r| &r.key_id),
                &column(|r| r.minute),
                &column(|r| r.up),
                &column(|r| r.down),
                &column(|r| r.conns),
            ],
        )
        .await?;
    Ok(new)
}

/// Refuses negative counts.
fn check_records(records: &[UsageRecord]) -> Result<(), LedgerError> {
    match records
        .iter()
        .find(|r| r.up < 0 || r.down < 0 || r.conns < 0)
    {
        Some(bad) => Err(LedgerError::Malformed {
            key: format!("{}:{}:{}", bad.server, bad.lease, bad.seq),
            why: "negative usage",
        }),
        None => Ok(()),
    }
}

/// What one claimed batch came to.
enum Batch {
    /// Settled (or nothing to settle).
    Settled(Settled),
    /// Rolled back: these legs' accounts must be created first.
    NeedsAccounts(Vec<Leg>),
}

/// Totals per (key, node) and per (key, node, minute) of claimed records.
type PairSums = BTreeMap<(String, String), Sums>;
/// Totals per (key, node, minute).
type MinuteSums = BTreeMap<(String, String, i64), Sums>;

fn sums(rows: &[tokio_postgres::Row]) -> (PairSums, MinuteSums) {
    let mut pairs = PairSums::new();
    let mut minutes = MinuteSums::new();
    for r in rows {
        let (key, node, minute): (String, String, i64) = (r.get(0), r.get(1), r.get(2));
        let (up, down, conns): (i64, i64, i64) = (r.get(3), r.get(4), r.get(5));
        for s in [
            pairs.entry((key.clone(), node.clone())).or_default(),
            minutes
                .entry((key.clone(), node.clone(), minute))
                .or_default(),
        ] {
            s.up += up;
            s.down += down;
            s.conns += conns;
        }
    }
    (pairs, minutes)
}

/// The pairs' bytes: each key debited, each node credited, one leg per account (the
/// per-pair detail is in the per-minute table).
fn usage_legs(pairs: &BTreeMap<(String, String), Sums>) -> Vec<Leg> {
    let mut keys: BTreeMap<&str, i64> = BTreeMap::new();
    let mut nodes: BTreeMap<&str, i64> = BTreeMap::new();
    for ((key, node), s) in pairs {
        let bytes = s.up + s.down;
        *keys.entry(key).or_default() += bytes;
        *nodes.entry(node).or_default() += bytes;
    }
    let debits = keys.into_iter().map(|(k, b)| Leg {
        account: AccountRef::key(k, Asset::Bytes),
        amount: -b,
    });
    let credits = nodes.into_iter().map(|(n, b)| Leg {
        account: AccountRef::node(n, Asset::Bytes),
        amount: b,
    });
    debits.chain(credits).filter(|l| l.amount != 0).collect()
}

/// Adds settled records to the per-minute table, in one statement (rows in key order).
async fn upsert_minutes(
    tx: &tokio_postgres::Transaction<'_>,
    minutes: &BTreeMap<(String, String, i64), Sums>,
) -> Result<(), LedgerError> {
    let keys: Vec<&str> = minutes.keys().map(|(k, _, _)| k.as_str()).collect();
    let nodes: Vec<&str> = minutes.keys().map(|(_, n, _)| n.as_str()).collect();
    let at: Vec<i64> = minutes.keys().map(|(_, _, m)| *m).collect();
    let up: Vec<i64> = minutes.values().map(|s| s.up).collect();
    let down: Vec<i64> = minutes.values().map(|s| s.down).collect();
    let conns: Vec<i64> = minutes.values().map(|s| s.conns).collect();
    tx.execute(
        "INSERT INTO usage_minute (key_id, node, minute, up, down, conns)
         SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[],
             $5::bigint[], $6::bigint[]) ORDER BY 1, 2, 3
         ON CONFLICT (key_id, node, minute) DO UPDATE SET
           up = usage_minute.up + EXCLUDED.up,
           down = usage_minute.down + EXCLUDED.down,
           conns = usage_minute.conns + EXCLUDED.conns",
        &[&keys, &nodes, &at, &up, &down, &conns],
    )
    .await?;
    Ok(())
}
