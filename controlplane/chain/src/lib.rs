//! Buy credits with USDC (any ERC-20 stablecoin), tested against a real local EVM.
//!
//! - [`Gateway::create_invoice`] gives each invoice its own deposit address, derived
//!   from the operator's extended **public** key ([`xpub`]), and locks the price per GB.
//! - [`Gateway::tick`] follows the chain ([`follow`]): it checks every new block's
//!   parent hash against the one it recorded (it never trusts `removed` flags), rolls
//!   back what a reorg replaced, records the token's `Transfer` logs to watched
//!   addresses, credits confirmed payments exactly once (the payment's chain, tx hash
//!   and log index are the ledger's idempotency key and the key balance's operation
//!   id), and moves invoices through their [`invoice::InvoiceStatus`].
//! - Each status change is queued for the webhook ([`webhook`]) in the same
//!   transaction, and POSTed signed with HMAC-SHA256, retried with backoff.
//! - Runner payouts go on chain through [`payout::ChainPayouts`], the ledger's payout
//!   sink: one ERC-20 transfer per payout from the treasury key, signed and stored
//!   before it is sent, so a restart never pays twice.
//! - Sweeping: the deposit addresses belong to the operator's wallet (the seed behind
//!   `deposit_xpub`); the operator moves funds from them with that wallet. The server
//!   holds no deposit key and sends nothing from them.

pub mod amount;
mod db;
mod follow;
pub mod invoice;
pub mod payout;
pub mod rpc;
pub mod webhook;
pub mod xpub;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use alloy::primitives::Address;
use serde::Serialize;
use turbo_ledger::{Ledger, LedgerError};

pub use crate::follow::TickReport;
use crate::invoice::InvoiceStatus;
use crate::rpc::{Chain, RpcError};
use crate::xpub::{DepositKeys, XpubError};

/// What went wrong in the gateway.
#[derive(Debug, thiserror::Error)]
pub enum ChainError {
    /// A chain call failed.
    #[error(transparent)]
    Rpc(#[from] RpcError),
    /// The database failed.
    #[error("payments database: {0}")]
    Db(#[from] tokio_postgres::Error),
    /// No database connection was available.
    #[error("payments database unavailable: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// The ledger refused a posting.
    #[error(transparent)]
    Ledger(#[from] LedgerError),
    /// The deposit key is unusable.
    #[error(transparent)]
    Xpub(#[from] XpubError),
    /// An amount is unusable.
    #[error(transparent)]
    Amount(#[from] amount::AmountError),
    /// No invoice has this id.
    #[error("no invoice {0:?}")]
    NoInvoice(String),
    /// The chain is not the configured one.
    #[error("chain_rpc serves chain {actual}, but chain_id is {configured}")]
    WrongChain {
        /// `chain_id` in the config.
        configured: u64,
        /// What the endpoint says.
        actual: u64,
    },
    /// A stored row does not parse (hand-edited or from a newer build).
    #[error("payments database holds a malformed {0}")]
    Corrupt(String),
    /// The treasury key (for payouts) is unusable.
    #[error(transparent)]
    Treasury(#[from] payout::TreasuryError),
    /// An invoice's validity is outside what is accepted.
    #[error("ttl_seconds must be 1..=604800")]
    Ttl,
}

/// Where paid bytes go: the key balances of the control plane's store. `add_once`
/// adds `bytes` to `key_id` unless operation `op` was applied before.
pub trait CreditSink: Send + Sync {
    /// Adds `bytes` to `key_id` once per `op`.
    fn add_once<'a>(
        &'a self,
        key_id: &'a str,
        bytes: u64,
        op: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;
}

/// The gateway's settings (from the server's config).
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// The chain the token lives on.
    pub chain_id: u64,
    /// The token contract.
    pub token: Address,
    /// Confirmations a payment needs (1: in a block).
    pub confirmations: u64,
    /// Price per GB in nano-USD, locked into each invoice.
    pub price_nano_per_gb: i64,
    /// The deposit keys.
    pub deposit: DepositKeys,
}

/// Invoices live this long unless the request says otherwise.
pub const DEFAULT_TTL_SECS: i64 = 3600;

/// The gateway: invoices, the chain follower and crediting.
pub struct Gateway {
    chain: Chain,
    ledger: Ledger,
    config: GatewayConfig,
    decimals: u8,
    credits: Arc<dyn CreditSink>,
}

/// An invoice as the API shows it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct InvoiceView {
    /// Its id.
    pub id: String,
    /// The key it credits.
    pub key_id: String,
    /// Where to pay.
    pub address: String,
    /// The token contract.
    pub token: String,
    /// The chain.
    pub chain_id: u64,
    /// Dollars asked, as a decimal.
    pub amount: String,
    /// Token units asked, as a decimal integer.
    pub amount_units: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// Where it stands.
    pub status: String,
    /// An EIP-681 payment request a wallet can scan.
    pub uri: String,
    /// Token units received on the canonical chain.
    pub paid_units: String,
    /// Bytes credited to the key.
    pub credited_bytes: i64,
}

impl Gateway {
    /// Starts the gateway on `chain`, checking the chain id and reading the token's
    /// decimals.
    ///
    /// # Errors
    /// [`ChainError::WrongChain`], or the chain's error.
    pub async fn start(
        chain: Chain,
        ledger: Ledger,
        config: GatewayConfig,
        credits: Arc<dyn CreditSink>,
    ) -> Result<Gateway, ChainError> {
        let actual = chain.chain_id().await?;
        if actual != config.chain_id {
            return Err(ChainError::WrongChain {
                configured: config.chain_id,
                actual,
            });
        }
        let decimals = chain.decimals().await?;
        amount::usd_to_units(1, decimals)?;
        // The first start records the head: payments can only come to invoices made
        // from now on, and the follower goes on from here.
        let client = ledger.pool().get().await?;
        if db::last_block(&**client, config.chain_id).await?.is_none() {
            let head = chain.head().await?;
            if let Some(block) = chain.block(head).await? {
                db::record_block(&**client, config.chain_id, &block, &[]).await?;
            }
        }
        drop(client);
        Ok(Gateway {
            chain,
            ledger,
            config,
            decimals,
            credits,
        })
    }

    /// The token's decimals.
    pub fn decimals(&self) -> u8 {
        self.decimals
    }

    /// Makes an invoice for `usd_nano` credited to `key_id`, valid for `ttl_secs`.
    ///
    /// # Errors
    /// [`ChainError::Ttl`], or the database's error.
    pub async fn create_invoice(
        &self,
        key_id: &str,
        usd_nano: i64,
        ttl_secs: Option<i64>,
    ) -> Result<InvoiceView, ChainError> {
        let ttl_secs = ttl_secs.unwrap_or(DEFAULT_TTL_SECS);
        if !(1..=604_800).contains(&ttl_secs) {
            return Err(ChainError::Ttl);
        }
        let amount_units = amount::usd_to_units(usd_nano, self.decimals)?;
        let client = self.ledger.pool().get().await?;
        let index = db::next_index(&**client).await?;
        let index32 = u32::try_from(index).map_err(|_| XpubError::Index(u32::MAX))?;
        let address = self.config.deposit.address(index32)?;
        let id = format!("inv_{:016x}", rand::random::<u64>());
        let new = db::NewInvoice {
            id: &id,
            key_id,
            chain_id: self.config.chain_id,
            token: self.chain.token(),
            address,
            index,
            usd_nano,
            amount_units,
            decimals: self.decimals,
            price_nano_per_gb: self.config.price_nano_per_gb,
            confirmations: self.config.confirmations,
            ttl_secs,
        };
        db::insert_invoice(&**client, &new).await?;
        self.invoice(&id).await
    }

    /// The invoice `id`, with its current status.
    ///
    /// # Errors
    /// [`ChainError::NoInvoice`], or the database's error.
    pub async fn invoice(&self, id: &str) -> Result<InvoiceView, ChainError> {
        let client = self.ledger.pool().get().await?;
        let row = db::invoice(&**client, id).await?;
        let payments = db::payments_of(&**client, id).await?;
        let paid: u128 = payments
            .iter()
            .filter(|p| p.canonical)
            .map(|p| p.units)
            .sum();
        let credited: i64 = payments.iter().filter_map(|p| p.credited_bytes).sum();
        let uri = format!(
            "ethereum:{}@{}/transfer?address={}&uint256={}",
            row.token, row.chain_id, row.address, row.amount_units
        );
        Ok(InvoiceView {
            id: row.id,
            key_id: row.key_id,
            address: row.address,
            token: row.token,
            chain_id: row.chain_id,
            amount: amount::format_usd(row.usd_nano),
            amount_units: row.amount_units.to_string(),
            expires_at: row.expires_at,
            status: InvoiceStatus::parse(&row.status)
                .map_or(row.status.clone(), |s| s.as_str().into()),
            uri,
            paid_units: paid.to_string(),
            credited_bytes: credited,
        })
    }
}
