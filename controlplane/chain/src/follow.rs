//! One pass of the chain follower: new blocks in order, each checked against the
//! parent hash recorded for the block before it (a mismatch is a reorg: walk back to
//! the last block both agree on, forget what came after, and take the new branch),
//! the token's transfers to watched deposit addresses recorded per block, confirmed
//! payments credited exactly once, and invoice statuses brought up to date.

use std::collections::HashMap;
use std::str::FromStr;
use std::time::{SystemTime, UNIX_EPOCH};

use alloy::primitives::Address;
use serde::Serialize;
use tracing::{error, info, warn};
use turbo_ledger::{AccountRef, Asset, Leg, Platform, Posting};

use crate::db::{self, PaymentRow};
use crate::invoice::{self, InvoiceStatus, Terms};
use crate::rpc::TransferLog;
use crate::{amount, webhook, ChainError, Gateway};

/// Most blocks one pass reads (a follower far behind catches up over several).
const MAX_BLOCKS_PER_TICK: u64 = 256;
/// Recorded block headers kept below the head, for reorg checks.
const KEEP_BLOCKS: u64 = 512;

/// What one [`Gateway::tick`] did.
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct TickReport {
    /// The chain's head.
    pub head: u64,
    /// Blocks recorded.
    pub blocks: u64,
    /// Reorgs rolled back.
    pub reorgs: u64,
    /// Payments to watched addresses recorded.
    pub payments: u64,
    /// Payments credited (posted and added to the key's balance).
    pub credited: u64,
    /// Payments posted whose balance add the store refused this pass (retried).
    pub deferred: u64,
    /// Invoices whose status changed.
    pub changed_invoices: Vec<String>,
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The posting of one payment: the dollars that arrived on chain become revenue,
/// and the bytes they bought go to the key. Zero legs are left out.
fn purchase(op: &str, key_id: &str, nano: i64, bytes: i64) -> Option<Posting> {
    let mut legs = Vec::new();
    if nano > 0 {
        legs.push(Leg {
            account: AccountRef::platform(Platform::ChainInflow, Asset::NanoUsd),
            amount: -nano,
        });
        legs.push(Leg {
            account: AccountRef::platform(Platform::Revenue, Asset::NanoUsd),
            amount: nano,
        });
    }
    if bytes > 0 {
        legs.push(Leg {
            account: AccountRef::platform(Platform::Traffic, Asset::Bytes),
            amount: -bytes,
        });
        legs.push(Leg {
            account: AccountRef::key(key_id, Asset::Bytes),
            amount: bytes,
        });
    }
    (!legs.is_empty()).then(|| Posting {
        key: op.into(),
        kind: "chain_payment".into(),
        legs,
    })
}

impl Gateway {
    /// One pass: follow the chain to its head, credit what is confirmed, and update
    /// invoice statuses (queuing their webhook events).
    ///
    /// # Errors
    /// The chain's or the database's error; the next pass picks up where this one
    /// stopped.
    pub async fn tick(&self) -> Result<TickReport, ChainError> {
        let mut report = TickReport {
            head: self.chain.head().await?,
            ..TickReport::default()
        };
        self.follow(&mut report).await?;
        self.credit(&mut report).await?;
        self.update_statuses(&mut report).await?;
        Ok(report)
    }

    /// Watched deposit addresses and their invoices.
    async fn watched_addresses(&self) -> Result<HashMap<Address, String>, ChainError> {
        let client = self.ledger.pool().get().await?;
        let rows = db::watched(&**client, self.config.chain_id).await?;
        rows.into_iter()
            .map(|r| {
                let a = Address::from_str(&r.address)
                    .map_err(|_| ChainError::Corrupt(format!("address {:?}", r.address)))?;
                Ok((a, r.id))
            })
            .collect()
    }

    async fn follow(&self, report: &mut TickReport) -> Result<(), ChainError> {
        let chain_id = self.config.chain_id;
        let head = report.head;
        let watched = self.watched_addresses().await?;
        let addresses: Vec<Address> = watched.keys().copied().collect();
        let mut client = self.ledger.pool().get().await?;
        let mut next = match db::last_block(&**client, chain_id).await? {
            Some((n, _)) => n + 1,
            // Recorded at start-up; only a wiped table gets here.
            None => head,
        };
        let mut budget = MAX_BLOCKS_PER_TICK;
        while next <= head && budget > 0 {
            budget -= 1;
            let Some(block) = self.chain.block(next).await? else {
                break;
            };
            let parent = match next {
                0 => None,
                n => db::block_hash(&**client, chain_id, n - 1).await?,
            };
            if parent.is_some_and(|p| p != block.parent) {
                next = self.roll_back(next - 1, report).await? + 1;
                continue;
            }
            let logs = if addresses.is_empty() {
                Vec::new()
            } else {
                self.chain.transfers_to(block.hash, &addresses).await?
            };
            let payments: Vec<(String, TransferLog)> = logs
                .into_iter()
                .filter_map(|t| watched.get(&t.to).map(|id| (id.clone(), t)))
                .collect();
            report.payments += payments.len() as u64;
            let tx = client.transaction().await?;
            db::record_block(&*tx, chain_id, &block, &payments).await?;
            tx.commit().await?;
            report.blocks += 1;
            next += 1;
        }
        db::prune_blocks(&**client, chain_id, head, KEEP_BLOCKS).await
    }

    /// A reorg replaced recorded blocks from `from` down: finds the last block the
    /// chain and the record agree on, forgets everything after it, and returns it.
    async fn roll_back(&self, from: u64, report: &mut TickReport) -> Result<u64, ChainError> {
        let chain_id = self.config.chain_id;
        let client = self.ledger.pool().get().await?;
        let mut keep = from;
        loop {
            let Some(recorded) = db::block_hash(&**client, chain_id, keep).await? else {
                break;
            };
            let on_chain = self.chain.block(keep).await?.map(|b| b.hash);
            if on_chain == Some(recorded) || keep == 0 {
                break;
            }
            keep -= 1;
        }
        let credited = db::orphan_after(&**client, chain_id, keep).await?;
        report.reorgs += 1;
        warn!(
            chain_id,
            depth = from - keep + 1,
            keep,
            "chain reorganised: rolled back"
        );
        for payment in credited {
            error!(
                chain_id,
                payment,
                "a reorg deeper than the confirmations removed a credited payment: it stays \
                 credited (never twice); check the deposit address by hand"
            );
        }
        Ok(keep)
    }

    async fn credit(&self, report: &mut TickReport) -> Result<(), ChainError> {
        let chain_id = self.config.chain_id;
        let client = self.ledger.pool().get().await?;
        for p in db::to_credit(&**client, chain_id, report.head).await? {
            let op = format!("chain:{chain_id}:{}:{}", p.tx_hash, p.log_index);
            let bytes = match p.credited_bytes {
                Some(bytes) => bytes,
                None => self.post_payment(&client, &p, &op).await?,
            };
            // One key the store refuses (deleted, at its maximum) must not hold up
            // every payment after it: it is retried on the next pass.
            if let Err(why) = self.credits.add_once(&p.key_id, bytes as u64, &op).await {
                warn!(invoice = %p.invoice_id, key = %p.key_id, %op, error = %why,
                      "payment posted but not yet added to the key's balance: retrying");
                report.deferred += 1;
                continue;
            }
            db::mark_applied(&**client, chain_id, &p).await?;
            info!(invoice = %p.invoice_id, key = %p.key_id, bytes, %op, "payment credited");
            report.credited += 1;
        }
        Ok(())
    }

    /// Posts a confirmed payment to the ledger (a replay finds the original) and
    /// records it; returns the bytes it bought.
    async fn post_payment(
        &self,
        client: &tokio_postgres::Client,
        p: &PaymentRow,
        op: &str,
    ) -> Result<i64, ChainError> {
        let nano = amount::units_to_usd(p.units, p.decimals)?;
        let bytes = amount::bytes_for(nano, p.price_nano_per_gb);
        if let Some(posting) = purchase(op, &p.key_id, nano, bytes) {
            self.ledger.post(&posting).await?;
        }
        db::mark_credited(client, self.config.chain_id, p, nano, bytes).await?;
        Ok(bytes)
    }

    async fn update_statuses(&self, report: &mut TickReport) -> Result<(), ChainError> {
        let client = self.ledger.pool().get().await?;
        let now = now_secs();
        let mut all_payments = db::payments_of_watched(&**client, self.config.chain_id).await?;
        for inv in db::watched(&**client, self.config.chain_id).await? {
            let terms = Terms {
                amount_units: inv.amount_units,
                expires_at: inv.expires_at,
                confirmations: inv.confirmations,
            };
            let payments: Vec<invoice::Payment> = all_payments
                .remove(&inv.id)
                .unwrap_or_default()
                .iter()
                // A credited payment stays counted even if a deep reorg removed it.
                .filter(|p| p.canonical || p.credited_bytes.is_some())
                .map(|p| invoice::Payment {
                    units: p.units,
                    block_time: p.block_time,
                    confirmations: if p.canonical {
                        (report.head + 1).saturating_sub(p.block_number)
                    } else {
                        u64::MAX
                    },
                    credited: p.store_applied,
                })
                .collect();
            let status = invoice::status(&terms, &payments, now);
            if inv.status == status.as_str() {
                continue;
            }
            let paid: u128 = payments.iter().map(|p| p.units).sum();
            let body = || webhook::event_body(&inv, status, paid);
            if db::set_status(self.ledger.pool(), &inv.id, status.as_str(), body).await? {
                info!(invoice = %inv.id, from = %inv.status, to = %status, "invoice status");
                report.changed_invoices.push(inv.id.clone());
            }
        }
        Ok(())
    }
}

impl InvoiceStatus {
    /// Whether crediting is over for this status (nothing more is expected).
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            InvoiceStatus::Credited
                | InvoiceStatus::PaidLate
                | InvoiceStatus::Underpaid
                | InvoiceStatus::Overpaid
        )
    }
}
