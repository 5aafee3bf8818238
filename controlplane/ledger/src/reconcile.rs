//! Reconciliation: do the bytes billed to customers, the bytes credited to nodes, the
//! usage recorded and the bytes the servers say they relayed agree, and does the
//! ledger itself hold? Printed by `turbo-server ledger reconcile`, and a gate: payouts
//! refuse to run while it is not `ok`.

use serde::Serialize;

use crate::{Ledger, LedgerError};

/// What [`Ledger::reconcile`] found. Bytes are totals since the ledger began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Reconciliation {
    /// Bytes debited from customer keys.
    pub customer_debited_bytes: u64,
    /// Bytes credited to nodes.
    pub node_credited_bytes: u64,
    /// Bytes in usage records (settled or not).
    pub recorded_bytes: u64,
    /// Bytes in usage records not settled yet.
    pub unsettled_bytes: u64,
    /// Bytes one server counted as relayed (per closed connection), when given.
    pub relayed_bytes: Option<u64>,
    /// Bytes in that server's usage records, when given.
    pub server_recorded_bytes: Option<u64>,
    /// The sum of every disagreement: debited vs credited, settled records vs
    /// credited, and (when given) one server's relayed bytes vs its records.
    pub mismatch_bytes: u64,
    /// The ledger's own invariants hold ([`crate::Audit::is_sound`]).
    pub ledger_sound: bool,
    /// No mismatch and a sound ledger.
    pub ok: bool,
}

impl Ledger {
    /// Reconciles the ledger with its usage records and, when given, with the bytes
    /// the servers relayed. Settle first: unsettled records are counted apart and are
    /// not a mismatch.
    ///
    /// # Errors
    /// Database errors.
    pub async fn reconcile(
        &self,
        relayed_bytes: Option<u64>,
    ) -> Result<Reconciliation, LedgerError> {
        self.reconcile_with(None, relayed_bytes).await
    }

    /// Like [`Ledger::reconcile`], comparing the bytes server `server` relayed since it
    /// started (its own count) with its usage records.
    ///
    /// # Errors
    /// Database errors.
    pub async fn reconcile_server(
        &self,
        server: &str,
        relayed: u64,
    ) -> Result<Reconciliation, LedgerError> {
        self.reconcile_with(Some(server), Some(relayed)).await
    }

    async fn reconcile_with(
        &self,
        server: Option<&str>,
        relayed_bytes: Option<u64>,
    ) -> Result<Reconciliation, LedgerError> {
        let audit = self.audit().await?;
        let client = self.pool.get().await?;
        let sum = |sql: &'static str| {
            let client = &client;
            async move {
                let v: i64 = client.query_one(sql, &[]).await?.get(0);
                Ok::<u64, LedgerError>(v.unsigned_abs())
            }
        };
        // Usage postings only: bytes a key bought (a payment) are credits, not traffic.
        let debited = sum("SELECT coalesce(sum(e.amount), 0)::bigint FROM entries e
             JOIN accounts a ON a.id = e.account_id
             JOIN transactions t ON t.id = e.transaction_id
             WHERE a.asset = 'bytes' AND a.code LIKE 'key:%' AND t.kind = 'usage'")
        .await?;
        let credited = sum("SELECT coalesce(sum(balance), 0)::bigint FROM accounts
             WHERE asset = 'bytes' AND code LIKE 'node:%'")
        .await?;
        let recorded = sum("SELECT coalesce(sum(up + down), 0)::bigint FROM usage_records").await?;
        let unsettled = sum(
            "SELECT coalesce(sum(up + down), 0)::bigint FROM usage_records WHERE settlement IS NULL",
        )
        .await?;
        let settled = recorded - unsettled;
        let server_recorded = match server {
            Some(s) => {
                let v: i64 = client
                    .query_one(
                        "SELECT coalesce(sum(up + down), 0)::bigint FROM usage_records WHERE server = $1",
                        &[&s],
                    )
                    .await?
                    .get(0);
                Some(v.unsigned_abs())
            }
            None => None,
        };
        let mine = server_recorded.unwrap_or(recorded);
        let mismatch = debited.abs_diff(credited)
            + settled.abs_diff(credited)
            + relayed_bytes.map_or(0, |r| r.abs_diff(mine));
        let sound = audit.is_sound();
        Ok(Reconciliation {
            customer_debited_bytes: debited,
            node_credited_bytes: credited,
            recorded_bytes: recorded,
            unsettled_bytes: unsettled,
            relayed_bytes,
            server_recorded_bytes: server_recorded,
            mismatch_bytes: mismatch,
            ledger_sound: sound,
            ok: mismatch == 0 && sound,
        })
    }
}
