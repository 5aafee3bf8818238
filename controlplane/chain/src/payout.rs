//! Runner payouts on chain: the ledger's [`PayoutSink`] as one ERC-20 transfer per
//! payout, from the treasury key.
//!
//! - **Signed before sent.** A payout's transaction is built (nonce, gas, fees), signed
//!   and stored in PostgreSQL (`chain_payouts`, one row per payout) before it is
//!   broadcast. Submitting the payout again (after a crash, a restart, a second run)
//!   re-broadcasts the same signed bytes: the same nonce and hash, so the chain takes it
//!   at most once. Nonces come from the stored rows and the chain's pending count,
//!   under a per-sender lock, so two payouts never share one.
//! - **Settled at depth.** A payout is paid once its receipt is `confirmations` deep
//!   and succeeded; not paid when it reverted, or when its nonce was used at that depth
//!   by another transaction (the operator's wallet spent it), so it can never land.
//!   Otherwise it is pending and re-broadcast. The gas of a mined transaction is
//!   reported as the payout's fee, in wei.
//! - The dollar is the token's unit: a payout of nano-USD pays whole token units
//!   (6 decimals: micro-dollars); the ledger rounds payouts down to them.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use alloy::eips::eip2718::Encodable2718;
use alloy::eips::BlockId;
use alloy::network::{EthereumWallet, NetworkTransactionBuilder, TransactionBuilder};
use alloy::primitives::{Address, B256, U256};
use alloy::providers::Provider;
use alloy::rpc::types::TransactionRequest;
use alloy::signers::local::PrivateKeySigner;
use deadpool_postgres::Pool;
use turbo_ledger::{PayoutOrder, PayoutOutcome, PayoutSink, SinkError};

use crate::amount;
use crate::rpc::Chain;
use crate::ChainError;

/// Why the treasury key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TreasuryError {
    /// The file cannot be read.
    #[error("treasury key file {0}: {1}")]
    Read(PathBuf, std::io::Error),
    /// Others than the owner may read or write the file.
    #[error("treasury key file {0} is readable by others (mode {1:o}): chmod 600 it")]
    Permissions(PathBuf, u32),
    /// The file does not hold a secp256k1 private key in hex.
    #[error("treasury key file {0} does not hold a private key (64 hex digits)")]
    NotAKey(PathBuf),
}

/// Reads the treasury's private key from `path` (hex, `0x` optional), which only its
/// owner may read.
///
/// # Errors
/// [`TreasuryError`].
pub fn load_treasury_key(path: &Path) -> Result<PrivateKeySigner, TreasuryError> {
    let meta = std::fs::metadata(path).map_err(|e| TreasuryError::Read(path.into(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TreasuryError::Permissions(path.into(), mode));
        }
    }
    #[cfg(not(unix))]
    let _ = meta;
    let text = std::fs::read_to_string(path).map_err(|e| TreasuryError::Read(path.into(), e))?;
    let hex = text.trim();
    let hex = hex.strip_prefix("0x").unwrap_or(hex);
    if hex.len() != 64 {
        return Err(TreasuryError::NotAKey(path.into()));
    }
    PrivateKeySigner::from_str(hex).map_err(|_| TreasuryError::NotAKey(path.into()))
}

/// A payout's transaction, as stored.
#[derive(Debug, Clone)]
struct StoredTx {
    nonce: u64,
    hash: B256,
    raw: Vec<u8>,
    status: String,
    fee_wei: Option<i64>,
}

/// The on-chain payout sink.
pub struct ChainPayouts {
    chain: Chain,
    pool: Pool,
    chain_id: u64,
    decimals: u8,
    confirmations: u64,
    wallet: EthereumWallet,
    sender: Address,
}

fn sink_error(why: impl ToString) -> SinkError {
    SinkError {
        sink: "chain",
        why: why.to_string(),
    }
}

impl ChainPayouts {
    /// Pays from `signer` on `chain` (the token's decimals are read from it), keeping
    /// its transactions in the ledger database `pool`.
    ///
    /// # Errors
    /// The chain's error, or [`ChainError::WrongChain`].
    pub async fn new(
        chain: Chain,
        pool: Pool,
        chain_id: u64,
        confirmations: u64,
        signer: PrivateKeySigner,
    ) -> Result<ChainPayouts, ChainError> {
        let actual = chain.chain_id().await?;
        if actual != chain_id {
            return Err(ChainError::WrongChain {
                configured: chain_id,
                actual,
            });
        }
        let decimals = chain.decimals().await?;
        amount::payout_step_nano(decimals)?;
        let sender = signer.address();
        Ok(ChainPayouts {
            chain,
            pool,
            chain_id,
            decimals,
            confirmations: confirmations.max(1),
            wallet: EthereumWallet::from(signer),
            sender,
        })
    }

    /// The treasury's address (where the token and the gas come from).
    pub fn sender(&self) -> Address {
        self.sender
    }

    /// The signed transaction of payout `id`, if there is one.
    async fn stored(&self, id: i64) -> Result<Option<StoredTx>, SinkError> {
        let client = self.pool.get().await.map_err(sink_error)?;
        let row = client
            .query_opt(
                "SELECT nonce, tx_hash, raw_tx, status, fee_wei FROM chain_payouts
                 WHERE payout_id = $1",
                &[&id],
            )
            .await
            .map_err(sink_error)?;
        row.map(|r| {
            let hash = B256::from_str(r.get::<_, &str>(1)).map_err(sink_error)?;
            Ok(StoredTx {
                nonce: r.get::<_, i64>(0) as u64,
                hash,
                raw: r.get(2),
                status: r.get(3),
                fee_wei: r.get(4),
            })
        })
        .transpose()
    }

    /// The transfer paying `order`, for gas estimation and signing.
    fn transfer(&self, order: &PayoutOrder) -> Result<TransactionRequest, SinkError> {
        let to = Address::from_str(order.address.trim())
            .map_err(|_| sink_error(format!("{:?} is not an address", order.address)))?;
        if to == Address::ZERO {
            return Err(sink_error("refusing to pay the zero address"));
        }
        let units = amount::units_for_payout(order.amount_nano, self.decimals)
            .ok_or_else(|| sink_error("the amount is not a whole number of token units"))?;
        Ok(TransactionRequest::default()
            .with_from(self.sender)
            .with_to(self.chain.token())
            .with_input(Chain::transfer_call(to, U256::from(units)))
            .with_chain_id(self.chain_id))
    }

    /// Builds, signs and stores `order`'s transaction on the next free nonce. Nothing
    /// is stored (and nothing can be sent) when the transfer would revert.
    async fn sign_new(&self, order: &PayoutOrder) -> Result<StoredTx, SinkError> {
        let provider = self.chain.provider();
        let tx = self.transfer(order)?;
        let gas = provider
            .estimate_gas(tx.clone())
            .await
            .map_err(|e| sink_error(format!("the transfer would fail: {e}")))?;
        let fees = provider.estimate_eip1559_fees().await.map_err(sink_error)?;
        let pending = provider
            .get_transaction_count(self.sender)
            .pending()
            .await
            .map_err(sink_error)?;
        let mut client = self.pool.get().await.map_err(sink_error)?;
        let db = client.transaction().await.map_err(sink_error)?;
        let sender = self.sender.to_string();
        let chain_id = self.chain_id as i64;
        db.execute(
            "SELECT pg_advisory_xact_lock(hashtext('turbo-payout-nonce:' || $1))",
            &[&sender],
        )
        .await
        .map_err(sink_error)?;
        let stored_next: i64 = db
            .query_one(
                "SELECT coalesce(max(nonce) + 1, 0) FROM chain_payouts
                 WHERE chain_id = $1 AND sender = $2",
                &[&chain_id, &sender],
            )
            .await
            .map_err(sink_error)?
            .get(0);
        let nonce = pending.max(stored_next as u64);
        let signed = tx
            .with_nonce(nonce)
            .with_gas_limit(gas + gas / 5)
            .with_max_fee_per_gas(fees.max_fee_per_gas)
            .with_max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            .build(&self.wallet)
            .await
            .map_err(sink_error)?;
        let raw = signed.encoded_2718();
        let hash = *signed.tx_hash();
        let units = amount::units_for_payout(order.amount_nano, self.decimals).unwrap_or(0);
        db.execute(
            "INSERT INTO chain_payouts
                 (payout_id, chain_id, sender, nonce, tx_hash, raw_tx, units, status)
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'signed')",
            &[
                &order.id,
                &chain_id,
                &sender,
                &(nonce as i64),
                &hash.to_string(),
                &raw,
                &units.to_string(),
            ],
        )
        .await
        .map_err(sink_error)?;
        db.commit().await.map_err(sink_error)?;
        tracing::info!(payout = order.id, nonce, tx = %hash, "payout signed");
        Ok(StoredTx {
            nonce,
            hash,
            raw,
            status: "signed".into(),
            fee_wei: None,
        })
    }

    /// Sends signed bytes; a refusal (already known, nonce used) is only logged: where
    /// the payout stands is read from the chain afterwards.
    async fn broadcast(&self, tx: &StoredTx) {
        if let Err(e) = self.chain.provider().send_raw_transaction(&tx.raw).await {
            tracing::debug!(tx = %tx.hash, error = %e, "broadcast refused");
        }
    }

    /// Records a final state of payout `id`.
    async fn record(
        &self,
        id: i64,
        status: &str,
        block: Option<u64>,
        fee_wei: i64,
    ) -> Result<(), SinkError> {
        self.pool
            .get()
            .await
            .map_err(sink_error)?
            .execute(
                "UPDATE chain_payouts SET status = $2, block = $3, fee_wei = $4
                 WHERE payout_id = $1",
                &[&id, &status, &block.map(|b| b as i64), &fee_wei],
            )
            .await
            .map_err(sink_error)?;
        Ok(())
    }

    /// Reads where `tx` stands on chain (see the module's doc).
    async fn settle(&self, id: i64, tx: &StoredTx) -> Result<PayoutOutcome, SinkError> {
        let provider = self.chain.provider();
        // The head first: a nonce used at a depth below it was used before the receipt
        // is asked for, so "no receipt" then really means "replaced".
        let head = self.chain.head().await.map_err(sink_error)?;
        let receipt = provider
            .get_transaction_receipt(tx.hash)
            .await
            .map_err(sink_error)?;
        if let Some(r) = receipt {
            let Some(block) = r.block_number else {
                return Ok(PayoutOutcome::Pending);
            };
            if head + 1 < block + self.confirmations {
                return Ok(PayoutOutcome::Pending);
            }
            let fee = u128::from(r.gas_used)
                .checked_mul(r.effective_gas_price)
                .and_then(|f| i64::try_from(f).ok())
                .ok_or_else(|| sink_error("the gas fee does not fit the ledger"))?;
            return Ok(if r.status() {
                self.record(id, "confirmed", Some(block), fee).await?;
                PayoutOutcome::Paid {
                    reference: tx.hash.to_string(),
                    fee_wei: fee,
                }
            } else {
                self.record(id, "reverted", Some(block), fee).await?;
                tracing::warn!(payout = id, tx = %tx.hash, "payout transfer reverted");
                PayoutOutcome::NotPaid { fee_wei: fee }
            });
        }
        if head + 1 >= self.confirmations {
            let deep = BlockId::number(head + 1 - self.confirmations);
            let used = provider
                .get_transaction_count(self.sender)
                .block_id(deep)
                .await
                .map_err(sink_error)?;
            if used > tx.nonce {
                self.record(id, "replaced", None, 0).await?;
                tracing::warn!(
                    payout = id,
                    nonce = tx.nonce,
                    "payout nonce used by another transaction"
                );
                return Ok(PayoutOutcome::NotPaid { fee_wei: 0 });
            }
        }
        self.broadcast(tx).await;
        Ok(PayoutOutcome::Pending)
    }
}

impl PayoutSink for ChainPayouts {
    fn name(&self) -> &'static str {
        "chain"
    }

    fn step_nano(&self) -> i64 {
        amount::payout_step_nano(self.decimals).unwrap_or(1)
    }

    async fn submit(&self, order: &PayoutOrder) -> Result<String, SinkError> {
        let tx = match self.stored(order.id).await? {
            Some(tx) => tx,
            None => self.sign_new(order).await?,
        };
        if tx.status == "signed" {
            self.broadcast(&tx).await;
        }
        Ok(tx.hash.to_string())
    }

    async fn outcome(&self, order: &PayoutOrder) -> Result<PayoutOutcome, SinkError> {
        let Some(tx) = self.stored(order.id).await? else {
            return Ok(PayoutOutcome::NotPaid { fee_wei: 0 });
        };
        let fee_wei = tx.fee_wei.unwrap_or(0);
        match tx.status.as_str() {
            "confirmed" => Ok(PayoutOutcome::Paid {
                reference: tx.hash.to_string(),
                fee_wei,
            }),
            "reverted" | "replaced" => Ok(PayoutOutcome::NotPaid { fee_wei }),
            _ => self.settle(order.id, &tx).await,
        }
    }
}
