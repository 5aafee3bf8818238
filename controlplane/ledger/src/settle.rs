//! Usage in, exactly once. The data plane's usage checkpoints arrive as
//! [`UsageRecord`]s, each unique by (server, lease, seq, node): recording one twice is a
//! no-op. A settler claims unsettled records (`FOR UPDATE SKIP LOCKED`, so several
//! settlers take disjoint batches), and in the same transaction posts one balanced
//! posting of bytes (each key debited, each node credited) and adds the records to the
//! per-minute table charts and payouts read. A settler killed mid-way rolls back whole;
//! settling again finds nothing left.

use std::collections::BTreeMap;

use crate::posting::post_in;
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
        if let Some(bad) = records
            .iter()
            .find(|r| r.up < 0 || r.down < 0 || r.conns < 0)
        {
            return Err(LedgerError::Malformed {
                key: format!("{}:{}:{}", bad.server, bad.lease, bad.seq),
                why: "negative usage",
            });
        }
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let insert = tx
            .prepare(
                "INSERT INTO usage_records
                 (server, lease, seq, node, key_id, minute, up, down, conns)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
            )
            .await?;
        let mut new = 0;
        for r in records {
            new += tx
                .execute(
                    &insert,
                    &[
                        &r.server, &r.lease, &r.seq, &r.node, &r.key_id, &r.minute, &r.up, &r.down,
                        &r.conns,
                    ],
                )
                .await?;
        }
        tx.commit().await?;
        Ok(new)
    }

    /// Settles up to `limit` unsettled records in one transaction.
    ///
    /// # Errors
    /// Database errors: the transaction rolls back whole, and the records stay
    /// unsettled for the next call.
    pub async fn settle(&self, limit: i64) -> Result<Settled, LedgerError> {
        self.ensure_usage_accounts(limit).await?;
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
            return Ok(Settled::default());
        }
        let mut pairs: BTreeMap<(String, String), Sums> = BTreeMap::new();
        let mut minutes: BTreeMap<(String, String, i64), Sums> = BTreeMap::new();
        for r in &rows {
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
        let legs = usage_legs(&pairs);
        let bytes = legs.iter().map(|l| l.amount.max(0)).sum::<i64>();
        if !legs.is_empty() {
            let ids = self.ensure_accounts(&legs).await?;
            let posting = Posting {
                key: format!("settle:{id}"),
                kind: "usage".into(),
                legs,
            };
            post_in(&tx, &posting, &ids).await?;
        }
        // After the accounts, in key order: the second lock order every settler shares.
        for ((key, node, minute), s) in &minutes {
            tx.execute(
                "INSERT INTO usage_minute (key_id, node, minute, up, down, conns)
                 VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (key_id, node, minute) DO UPDATE SET
                   up = usage_minute.up + EXCLUDED.up,
                   down = usage_minute.down + EXCLUDED.down,
                   conns = usage_minute.conns + EXCLUDED.conns",
                &[key, node, minute, &s.up, &s.down, &s.conns],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(Settled {
            records: rows.len() as u64,
            bytes: bytes as u64,
        })
    }

    /// Creates the byte accounts of the keys and nodes with unsettled records, outside
    /// the settling transaction (no settler creates an account while holding others).
    async fn ensure_usage_accounts(&self, limit: i64) -> Result<(), LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT DISTINCT key_id, node FROM usage_records
                 WHERE settlement IS NULL LIMIT $1",
                &[&limit],
            )
            .await?;
        drop(client);
        let pairs: BTreeMap<(String, String), Sums> = rows
            .iter()
            .map(|r| {
                (
                    (r.get(0), r.get(1)),
                    Sums {
                        up: 1,
                        ..Sums::default()
                    },
                )
            })
            .collect();
        self.ensure_accounts(&usage_legs(&pairs)).await?;
        Ok(())
    }
}

/// Each pair's bytes: debited from the key, credited to the node.
fn usage_legs(pairs: &BTreeMap<(String, String), Sums>) -> Vec<Leg> {
    let mut legs = Vec::with_capacity(pairs.len() * 2);
    for ((key, node), s) in pairs {
        let bytes = s.up + s.down;
        if bytes == 0 {
            continue;
        }
        legs.push(Leg {
            account: AccountRef::key(key, Asset::Bytes),
            amount: -bytes,
        });
        legs.push(Leg {
            account: AccountRef::node(node, Asset::Bytes),
            amount: bytes,
        });
    }
    legs
}
