//! Payouts, in two phases. A run picks the nodes whose available balance (their
//! nano-USD account: reserved money has left it) reaches the threshold and that have a
//! payout address; for each it reserves the amount into payout clearing (one posting,
//! with the payout row, in one transaction), hands it to a [`PayoutSink`], and then
//! either confirms it (clearing → paid out) or voids it (clearing → back to the node).
//! A payout left reserved by a crash is resolved at the start of the next run by asking
//! the sink whether it was paid. Runs refuse to start while reconciliation fails.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use crate::posting::post_in;
use crate::{AccountRef, Asset, Ledger, LedgerError, Leg, Platform, Posting, Reconciliation};

/// Key of the advisory lock that serialises payout runs.
const PAYOUT_LOCK: i64 = 0x7475_7262_6f50_6179; // "turboPay"

/// One payout handed to a sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayoutOrder {
    /// The payout's id (unique; a sink uses it to pay once).
    pub id: i64,
    /// The node paid.
    pub node: String,
    /// Where to pay (the node's `--payout-address`).
    pub address: String,
    /// How much, in nano-USD.
    pub amount_nano: i64,
}

/// Why a sink did not pay.
#[derive(Debug, thiserror::Error)]
#[error("payout sink {sink}: {why}")]
pub struct SinkError {
    /// The sink's name.
    pub sink: &'static str,
    /// What went wrong.
    pub why: String,
}

/// Where payouts go: a file an operator pays from, or the chain.
pub trait PayoutSink {
    /// The sink's name, stored with each payout.
    fn name(&self) -> &'static str;
    /// Pays `order` once; returns the sink's reference for it.
    fn pay(
        &self,
        order: &PayoutOrder,
    ) -> impl std::future::Future<Output = Result<String, SinkError>> + Send;
    /// Whether `order` was paid (after a crash between paying and confirming): its
    /// reference, or `None` when it was not.
    fn paid(
        &self,
        order: &PayoutOrder,
    ) -> impl std::future::Future<Output = Result<Option<String>, SinkError>> + Send;
}

/// A CSV file, one line per payout (`id,node,address,amount_nano_usd,amount_usd`), for
/// an operator to pay by hand. Appending a line is paying.
#[derive(Debug, Clone)]
pub struct CsvSink {
    /// The file.
    pub path: PathBuf,
}

impl CsvSink {
    fn error(why: impl ToString) -> SinkError {
        SinkError {
            sink: "csv",
            why: why.to_string(),
        }
    }
}

impl PayoutSink for CsvSink {
    fn name(&self) -> &'static str {
        "csv"
    }

    async fn pay(&self, order: &PayoutOrder) -> Result<String, SinkError> {
        let usd = format!(
            "{}.{:09}",
            order.amount_nano / 1_000_000_000,
            order.amount_nano % 1_000_000_000
        );
        let line = format!(
            "{},{},{},{},{usd}\n",
            order.id, order.node, order.address, order.amount_nano
        );
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)
            .map_err(Self::error)?;
        f.write_all(line.as_bytes()).map_err(Self::error)?;
        f.sync_data().map_err(Self::error)?;
        Ok(format!("csv:{}#{}", self.path.display(), order.id))
    }

    async fn paid(&self, order: &PayoutOrder) -> Result<Option<String>, SinkError> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Self::error(e)),
        };
        let prefix = format!("{},", order.id);
        Ok(text
            .lines()
            .any(|l| l.starts_with(&prefix))
            .then(|| format!("csv:{}#{}", self.path.display(), order.id)))
    }
}

/// What a payout run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PayoutRun {
    /// (node, nano-USD) paid, or that would be.
    pub planned: Vec<(String, i64)>,
    /// Payouts confirmed.
    pub confirmed: u64,
    /// Payouts voided (their money is back on the node).
    pub voided: u64,
    /// Payouts left reserved by an earlier run and resolved now.
    pub resolved: u64,
}

impl Ledger {
    /// Pays every node with an address in `addresses` whose available balance is at
    /// least `threshold_nano`, through `sink`; with `dry_run`, only says what it would
    /// pay. `gate` must be a fresh, `ok` reconciliation.
    ///
    /// # Errors
    /// [`LedgerError::Unreconciled`] when the gate is not ok; database errors (a
    /// payout interrupted by one stays reserved and is resolved by the next run).
    pub async fn run_payouts(
        &self,
        gate: &Reconciliation,
        threshold_nano: i64,
        addresses: &BTreeMap<String, String>,
        sink: &impl PayoutSink,
        dry_run: bool,
    ) -> Result<PayoutRun, LedgerError> {
        if !gate.ok {
            return Err(LedgerError::Unreconciled(gate.mismatch_bytes));
        }
        if dry_run {
            return self.pay_nodes(threshold_nano, addresses, sink, true).await;
        }
        // One run at a time across every server on this ledger: two runs would both
        // reserve a node's whole balance, or one would void a payout the other is
        // paying. The lock is the connection's, so a killed server releases it.
        let lock = self.pool.get().await?;
        let got: bool = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PAYOUT_LOCK])
            .await?
            .get(0);
        if !got {
            return Err(LedgerError::PayoutRunning);
        }
        let run = self.pay_nodes(threshold_nano, addresses, sink, false).await;
        let unlocked = lock
            .execute("SELECT pg_advisory_unlock($1)", &[&PAYOUT_LOCK])
            .await;
        if unlocked.is_err() {
            // The lock is held by a broken connection: drop it rather than pool it.
            let _ = deadpool_postgres::Object::take(lock);
        }
        run
    }

    /// Resolves earlier runs' reserved payouts, then pays (or, dry, plans) each node
    /// over the threshold.
    async fn pay_nodes(
        &self,
        threshold_nano: i64,
        addresses: &BTreeMap<String, String>,
        sink: &impl PayoutSink,
        dry_run: bool,
    ) -> Result<PayoutRun, LedgerError> {
        let mut run = PayoutRun::default();
        if !dry_run {
            run.resolved = self.resolve_reserved(sink).await?;
        }
        for (node, address) in addresses {
            let available = self
                .balance(&AccountRef::node(node, Asset::NanoUsd))
                .await?;
            if available < threshold_nano.max(1) || address.is_empty() {
                continue;
            }
            run.planned.push((node.clone(), available));
            if dry_run {
                continue;
            }
            let order = self.reserve(node, address, available, sink.name()).await?;
            match sink.pay(&order).await {
                Ok(reference) => {
                    self.finish_payout(&order, Some(&reference)).await?;
                    run.confirmed += 1;
                }
                Err(e) => {
                    tracing::warn!(payout = order.id, node = %order.node, error = %e, "payout failed; voided");
                    self.finish_payout(&order, None).await?;
                    run.voided += 1;
                }
            }
        }
        Ok(run)
    }

    /// Moves `amount` from the node into payout clearing and records the payout.
    async fn reserve(
        &self,
        node: &str,
        address: &str,
        amount: i64,
        sink: &str,
    ) -> Result<PayoutOrder, LedgerError> {
        let legs = move_legs(AccountRef::node(node, Asset::NanoUsd), clearing(), amount);
        let ids = self.ensure_accounts(&legs).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let id: i64 = tx
            .query_one(
                "INSERT INTO payouts (node, address, amount_nano, status, sink)
                 VALUES ($1, $2, $3, 'reserved', $4) RETURNING id",
                &[&node, &address, &amount, &sink],
            )
            .await?
            .get(0);
        let posting = Posting {
            key: format!("payout:{id}:reserve"),
            kind: "payout_reserve".into(),
            legs,
        };
        post_in(&tx, &posting, &ids).await?;
        tx.commit().await?;
        Ok(PayoutOrder {
            id,
            node: node.to_owned(),
            address: address.to_owned(),
            amount_nano: amount,
        })
    }

    /// Confirms a paid payout (clearing → paid out) or voids an unpaid one (clearing →
    /// back to the node), once.
    async fn finish_payout(
        &self,
        order: &PayoutOrder,
        reference: Option<&str>,
    ) -> Result<(), LedgerError> {
        let (to, status, step) = match reference {
            Some(_) => (
                AccountRef::platform(Platform::PaidOut, Asset::NanoUsd),
                "confirmed",
                "confirm",
            ),
            None => (
                AccountRef::node(&order.node, Asset::NanoUsd),
                "voided",
                "void",
            ),
        };
        let legs = move_legs(clearing(), to, order.amount_nano);
        let ids = self.ensure_accounts(&legs).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let open = tx
            .execute(
                "UPDATE payouts SET status = $2, reference = $3, settled_at = now()
                 WHERE id = $1 AND status = 'reserved'",
                &[&order.id, &status, &reference],
            )
            .await?;
        if open == 1 {
            let posting = Posting {
                key: format!("payout:{}:{step}", order.id),
                kind: format!("payout_{step}"),
                legs,
            };
            post_in(&tx, &posting, &ids).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Resolves payouts an earlier run left reserved: confirmed when the sink paid
    /// them, voided when it did not.
    async fn resolve_reserved(&self, sink: &impl PayoutSink) -> Result<u64, LedgerError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, node, address, amount_nano FROM payouts WHERE status = 'reserved' AND sink = $1",
                &[&sink.name()],
            )
            .await?;
        let mut resolved = 0;
        for r in rows {
            let order = PayoutOrder {
                id: r.get(0),
                node: r.get(1),
                address: r.get(2),
                amount_nano: r.get(3),
            };
            match sink.paid(&order).await {
                Ok(reference) => self.finish_payout(&order, reference.as_deref()).await?,
                Err(e) => {
                    tracing::warn!(payout = order.id, error = %e, "cannot tell whether a reserved payout was paid; left reserved");
                    continue;
                }
            }
            resolved += 1;
        }
        Ok(resolved)
    }
}

fn clearing() -> AccountRef {
    AccountRef::platform(Platform::PayoutClearing, Asset::NanoUsd)
}

/// Legs moving `amount` from `from` to `to`.
fn move_legs(from: AccountRef, to: AccountRef, amount: i64) -> Vec<Leg> {
    vec![
        Leg {
            account: from,
            amount: -amount,
        },
        Leg {
            account: to,
            amount,
        },
    ]
}
