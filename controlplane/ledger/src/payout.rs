//! Payouts, in three steps. A run picks the nodes whose available balance (their
//! nano-USD account: reserved money has left it) reaches the threshold and that have a
//! payout address. For each it **reserves** the amount into payout clearing (one
//! posting, with the payout row, in one transaction), **submits** it to a
//! [`PayoutSink`] (status `submitted`, with the sink's reference), and later
//! **finishes** it from the sink's [`PayoutOutcome`]: confirmed (clearing → paid out)
//! or voided (clearing → back to the node), with the gas the sink spent as its own leg
//! (treasury → fees, in wei).
//!
//! Open payouts (`reserved` or `submitted`, e.g. left by a crash, or waiting for chain
//! confirmations) are finished at the start and end of every run and by
//! [`Ledger::settle_open_payouts`]; a sink pays an order at most once however often it
//! is submitted, so a restart never pays twice. Runs refuse to start while
//! reconciliation fails, and one run at a time holds the payout lock.

use std::collections::{BTreeMap, BTreeSet};

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

/// What became of a submitted payout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PayoutOutcome {
    /// Paid for good (on chain: at the required depth).
    Paid {
        /// The sink's reference (a transaction hash, a file line).
        reference: String,
        /// Gas the payment cost, in wei (0 off chain).
        fee_wei: i64,
    },
    /// Not paid, and it never will be (never handed over, reverted, or its nonce
    /// taken by another transaction): the money goes back to the node.
    NotPaid {
        /// Gas spent anyway, in wei (a reverted transfer burns gas).
        fee_wei: i64,
    },
    /// Not settled yet; asked again later.
    Pending,
}

/// Where payouts go: a file an operator pays from, or the chain.
pub trait PayoutSink {
    /// The sink's name, stored with each payout.
    fn name(&self) -> &'static str;
    /// The step amounts are paid in, in nano-USD (a 6-decimal token pays whole micro
    /// dollars: 1000). Payouts are rounded down to it; the rest stays on the node.
    fn step_nano(&self) -> i64 {
        1
    }
    /// Hands `order` over to be paid, at most once per order id: a second call for
    /// the same order pays nothing more and returns the same reference. An error means
    /// nothing was handed over (the payout is voided).
    fn submit(
        &self,
        order: &PayoutOrder,
    ) -> impl std::future::Future<Output = Result<String, SinkError>> + Send;
    /// Where `order` stands (also for one a crash left before or after `submit`).
    fn outcome(
        &self,
        order: &PayoutOrder,
    ) -> impl std::future::Future<Output = Result<PayoutOutcome, SinkError>> + Send;
}

/// What a payout run did (or, dry, would do).
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
pub struct PayoutRun {
    /// (node, nano-USD) paid, or that would be.
    pub planned: Vec<(String, i64)>,
    /// Payouts confirmed by this run.
    pub confirmed: u64,
    /// Payouts voided by this run (their money is back on the node).
    pub voided: u64,
    /// Of those confirmed or voided, the ones earlier runs had left open.
    pub resolved: u64,
    /// Payouts still open (submitted, waiting for the sink) when the run ended.
    pub pending: u64,
}

/// What one pass over the open payouts did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct OpenPayouts {
    /// Confirmed.
    pub confirmed: u64,
    /// Voided.
    pub voided: u64,
    /// Still open.
    pub pending: u64,
}

impl Ledger {
    /// Pays every node with an address in `addresses` whose available balance is at
    /// least `threshold_nano`, through `sink`; with `dry_run`, only says what it would
    /// pay. `gate` must be a fresh, `ok` reconciliation.
    ///
    /// # Errors
    /// [`LedgerError::Unreconciled`] when the gate is not ok,
    /// [`LedgerError::PayoutRunning`] while another run holds the lock; database
    /// errors (a payout interrupted by one stays open and is finished later).
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
        let lock = self
            .payout_lock()
            .await?
            .ok_or(LedgerError::PayoutRunning)?;
        let run = self.pay_nodes(threshold_nano, addresses, sink, false).await;
        release(lock).await;
        run
    }

    /// Finishes the open payouts `sink` can settle now. Does nothing (and says so with
    /// `None`) while a payout run holds the lock: that run finishes them.
    ///
    /// # Errors
    /// Database errors.
    pub async fn settle_open_payouts(
        &self,
        sink: &impl PayoutSink,
    ) -> Result<Option<OpenPayouts>, LedgerError> {
        let Some(lock) = self.payout_lock().await? else {
            return Ok(None);
        };
        let settled = self.finish_open(sink).await.map(|(open, _)| open);
        release(lock).await;
        settled.map(Some)
    }

    /// Takes the payout lock, or `None` when another run holds it. The lock is the
    /// connection's, so a killed server releases it.
    async fn payout_lock(&self) -> Result<Option<deadpool_postgres::Object>, LedgerError> {
        let lock = self.pool.get().await?;
        let got: bool = lock
            .query_one("SELECT pg_try_advisory_lock($1)", &[&PAYOUT_LOCK])
            .await?
            .get(0);
        Ok(got.then_some(lock))
    }

    /// Finishes open payouts, then pays (or, dry, plans) each node over the threshold,
    /// then finishes what the sink settled at once.
    async fn pay_nodes(
        &self,
        threshold_nano: i64,
        addresses: &BTreeMap<String, String>,
        sink: &impl PayoutSink,
        dry_run: bool,
    ) -> Result<PayoutRun, LedgerError> {
        let mut run = PayoutRun::default();
        if !dry_run {
            let (earlier, _) = self.finish_open(sink).await?;
            run.resolved = earlier.confirmed + earlier.voided;
            run.confirmed = earlier.confirmed;
            run.voided = earlier.voided;
        }
        let step = sink.step_nano().max(1);
        let mut new = BTreeSet::new();
        // Held nodes keep their balance and are not paid until released.
        let held = self.held_nodes().await?;
        for (node, address) in addresses.iter().filter(|(n, _)| !held.contains_key(*n)) {
            let available = self
                .balance(&AccountRef::node(node, Asset::NanoUsd))
                .await?;
            let amount = available - available.rem_euclid(step);
            if amount < threshold_nano.max(1) || address.is_empty() {
                continue;
            }
            run.planned.push((node.clone(), amount));
            if dry_run {
                continue;
            }
            let order = self.reserve(node, address, amount, sink.name()).await?;
            new.insert(order.id);
            if !self.submit(&order, sink).await? {
                run.voided += 1;
            }
        }
        if !dry_run {
            let (now, finished) = self.finish_open(sink).await?;
            run.confirmed += now.confirmed;
            run.voided += now.voided;
            run.pending = now.pending;
            run.resolved += finished.iter().filter(|id| !new.contains(id)).count() as u64;
        }
        Ok(run)
    }

    /// Submits `order`: `submitted` with the sink's reference (true), or voided when
    /// the sink refused it (false).
    async fn submit(
        &self,
        order: &PayoutOrder,
        sink: &impl PayoutSink,
    ) -> Result<bool, LedgerError> {
        match sink.submit(order).await {
            Ok(reference) => {
                self.pool
                    .get()
                    .await?
                    .execute(
                        "UPDATE payouts SET status = 'submitted', reference = $2
                         WHERE id = $1 AND status = 'reserved'",
                        &[&order.id, &reference],
                    )
                    .await?;
                Ok(true)
            }
            Err(e) => {
                tracing::warn!(payout = order.id, node = %order.node, error = %e, "payout refused by the sink; voided");
                self.finish_payout(order, &PayoutOutcome::NotPaid { fee_wei: 0 })
                    .await?;
                Ok(false)
            }
        }
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

    /// Finishes an open payout once: confirmed (clearing → paid out) or voided
    /// (clearing → back to the node), with the gas as its own posting. Nothing for
    /// [`PayoutOutcome::Pending`].
    async fn finish_payout(
        &self,
        order: &PayoutOrder,
        outcome: &PayoutOutcome,
    ) -> Result<(), LedgerError> {
        let (to, status, step, reference, fee_wei) = match outcome {
            PayoutOutcome::Pending => return Ok(()),
            PayoutOutcome::Paid { reference, fee_wei } => (
                AccountRef::platform(Platform::PaidOut, Asset::NanoUsd),
                "confirmed",
                "confirm",
                Some(reference.as_str()),
                *fee_wei,
            ),
            PayoutOutcome::NotPaid { fee_wei } => (
                AccountRef::node(&order.node, Asset::NanoUsd),
                "voided",
                "void",
                None,
                *fee_wei,
            ),
        };
        let mut postings = vec![Posting {
            key: format!("payout:{}:{step}", order.id),
            kind: format!("payout_{step}"),
            legs: move_legs(clearing(), to, order.amount_nano),
        }];
        if fee_wei > 0 {
            postings.push(Posting {
                key: format!("payout:{}:gas", order.id),
                kind: "payout_gas".into(),
                legs: move_legs(
                    AccountRef::platform(Platform::Treasury, Asset::GasWei),
                    AccountRef::platform(Platform::Fees, Asset::GasWei),
                    fee_wei,
                ),
            });
        }
        let all_legs: Vec<Leg> = postings.iter().flat_map(|p| p.legs.clone()).collect();
        let ids = self.ensure_accounts(&all_legs).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let open = tx
            .execute(
                "UPDATE payouts SET status = $2, reference = coalesce($3, reference),
                        fee_wei = $4, settled_at = now()
                 WHERE id = $1 AND status IN ('reserved', 'submitted')",
                &[&order.id, &status, &reference, &fee_wei],
            )
            .await?;
        if open == 1 {
            for posting in &postings {
                post_in(&tx, posting, &ids).await?;
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Asks `sink` about every open payout of its own and finishes those it settled;
    /// returns the counts and the ids finished.
    async fn finish_open(
        &self,
        sink: &impl PayoutSink,
    ) -> Result<(OpenPayouts, Vec<i64>), LedgerError> {
        let rows = self
            .pool
            .get()
            .await?
            .query(
                "SELECT id, node, address, amount_nano FROM payouts
                 WHERE status IN ('reserved', 'submitted') AND sink = $1 ORDER BY id",
                &[&sink.name()],
            )
            .await?;
        let mut open = OpenPayouts::default();
        let mut finished = Vec::new();
        for r in rows {
            let order = PayoutOrder {
                id: r.get(0),
                node: r.get(1),
                address: r.get(2),
                amount_nano: r.get(3),
            };
            let outcome = sink.outcome(&order).await.unwrap_or_else(|e| {
                tracing::warn!(payout = order.id, error = %e, "cannot tell where a payout stands; left open");
                PayoutOutcome::Pending
            });
            match outcome {
                PayoutOutcome::Pending => open.pending += 1,
                PayoutOutcome::Paid { .. } => open.confirmed += 1,
                PayoutOutcome::NotPaid { .. } => open.voided += 1,
            }
            if outcome != PayoutOutcome::Pending {
                self.finish_payout(&order, &outcome).await?;
                finished.push(order.id);
            }
        }
        Ok((open, finished))
    }
}

/// Releases the payout lock; a lock on a broken connection is dropped rather than
/// pooled.
async fn release(lock: deadpool_postgres::Object) {
    let unlocked = lock
        .execute("SELECT pg_advisory_unlock($1)", &[&PAYOUT_LOCK])
        .await;
    if unlocked.is_err() {
        let _ = deadpool_postgres::Object::take(lock);
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
