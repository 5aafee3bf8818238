//! The money: a double-entry ledger on PostgreSQL, the system of record for what
//! customers are billed, what nodes earn and what is paid out.
//!
//! - Amounts are integers: bytes for traffic, nano-USD for money ([`Asset`]).
//! - Every [`Posting`] is a transaction whose legs sum to zero per asset, under a unique
//!   idempotency key: posting it again is a no-op that returns the original
//!   ([`Posted::Replayed`]), and reusing a key for different legs is refused.
//! - Accounts are created in their own short transaction, then a posting updates them in
//!   account-id order, so concurrent postings never deadlock; each entry stores the
//!   account's balance after it.
//! - So the balances of all accounts of an asset always sum to zero ([`Ledger::totals`]).
#![warn(missing_docs)]

mod account;
mod csv_sink;
mod earnings;
mod holds;
mod migrate;
mod payout;
mod policy;
mod posting;
mod reconcile;
mod rewards;
mod settle;

pub use account::{AccountRef, Asset, Platform};
pub use csv_sink::CsvSink;
pub use earnings::{civil, month_start, DayEarnings, Earnings, PayoutView};
pub use holds::Hold;
pub use payout::{OpenPayouts, PayoutOrder, PayoutOutcome, PayoutRun, PayoutSink, SinkError};
pub use policy::{DayReward, PolicyError, RewardPolicy, StabilityTier, BYTES_PER_GB};
pub use posting::{Leg, Posted, Posting};
pub use reconcile::Reconciliation;
pub use rewards::Rewarded;
pub use settle::{Settled, UsageRecord};

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;

/// Most connections a ledger keeps to PostgreSQL.
const POOL_SIZE: usize = 16;

/// Errors of the ledger.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The database URL does not parse.
    #[error("invalid ledger URL: {0}")]
    Url(tokio_postgres::Error),
    /// The connection pool could not be built.
    #[error("ledger connection pool: {0}")]
    Pool(deadpool_postgres::BuildError),
    /// No connection could be taken from the pool (the database is down or full).
    #[error("ledger database unavailable: {0}")]
    Unavailable(#[from] deadpool_postgres::PoolError),
    /// A query failed.
    #[error("ledger query failed: {0}")]
    Query(#[from] tokio_postgres::Error),
    /// The legs of a posting do not sum to zero for this asset.
    #[error("posting {key} does not balance: {asset} legs sum to {sum}")]
    Unbalanced {
        /// The posting's idempotency key.
        key: String,
        /// The asset that does not balance.
        asset: Asset,
        /// What its legs sum to.
        sum: i128,
    },
    /// A posting without legs, with a zero leg, or with a key that is empty or too long.
    #[error("malformed posting {key}: {why}")]
    Malformed {
        /// The posting's idempotency key.
        key: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The idempotency key was already used by a posting with other legs.
    #[error("idempotency key {0} was already used for a different posting")]
    KeyReused(String),
    /// A reward policy with a rate out of range.
    #[error("reward policy: {0}")]
    Policy(#[from] crate::policy::PolicyError),
    /// Payouts refuse to run while reconciliation finds a mismatch (of these bytes) or
    /// an unsound ledger.
    #[error("ledger does not reconcile ({0} bytes mismatched): payouts refused")]
    Unreconciled(u64),
    /// Another payout run holds the payout lock (on this or another server).
    #[error("another payout run is in progress")]
    PayoutRunning,
    /// No reward policy has this version.
    #[error("no reward policy version {0}")]
    UnknownPolicy(i32),
    /// The schema in the database is newer than this build.
    #[error("ledger schema version {0} is newer than this build knows")]
    SchemaTooNew(i32),
}

/// What [`Ledger::audit`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Audit {
    /// Transactions posted.
    pub transactions: u64,
    /// Transactions whose entries do not sum to zero for some asset.
    pub unbalanced_transactions: u64,
    /// Accounts whose balance is not the sum of their entries, or not the balance after
    /// their last entry.
    pub stale_balances: u64,
    /// Assets whose balances do not sum to zero.
    pub nonzero_assets: u64,
}

impl Audit {
    /// No invariant is broken.
    pub fn is_sound(&self) -> bool {
        self.unbalanced_transactions == 0 && self.stale_balances == 0 && self.nonzero_assets == 0
    }
}

/// A handle on the ledger database: a connection pool, cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    pool: Pool,
}

impl Ledger {
    /// Connects to `url` (`postgres://…`) and brings the schema up to date.
    ///
    /// # Errors
    /// [`LedgerError`] when the URL is invalid, the database unreachable, or the schema
    /// newer than this build.
    pub async fn connect(url: &str) -> Result<Ledger, LedgerError> {
        let config: tokio_postgres::Config = url.parse().map_err(LedgerError::Url)?;
        let manager = Manager::from_config(
            config,
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .build()
            .map_err(LedgerError::Pool)?;
        let ledger = Ledger { pool };
        migrate::run(&mut *ledger.pool.get().await?).await?;
        Ok(ledger)
    }

    /// The connection pool, for the crates that keep their tables beside the ledger's
    /// (the USDC gateway).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// The balance of `account` (0 for an account never posted to).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Query`].
    pub async fn balance(&self, account: &AccountRef) -> Result<i64, LedgerError> {
        let client = self.pool.get().await?;
        let row = client
            .query_opt(
                "SELECT balance FROM accounts WHERE code = $1 AND asset = $2",
                &[&account.code(), &account.asset.name()],
            )
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    /// Checks the ledger's invariants in the database (see [`Audit`]).
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Query`].
    pub async fn audit(&self) -> Result<Audit, LedgerError> {
        let client = self.pool.get().await?;
        let count = |sql: &'static str| {
            let client = &client;
            async move {
                let n: i64 = client.query_one(sql, &[]).await?.get(0);
                Ok::<u64, LedgerError>(n.max(0) as u64)
            }
        };
        Ok(Audit {
            transactions: count("SELECT count(*) FROM transactions").await?,
            unbalanced_transactions: count(
                "SELECT count(*) FROM (
                    SELECT e.transaction_id FROM entries e JOIN accounts a ON a.id = e.account_id
                    GROUP BY e.transaction_id, a.asset HAVING sum(e.amount) <> 0) t",
            )
            .await?,
            stale_balances: count(
                "SELECT count(*) FROM accounts a WHERE a.balance <> coalesce(
                    (SELECT e.balance_after FROM entries e WHERE e.account_id = a.id
                     ORDER BY e.id DESC LIMIT 1), 0)
                 OR a.balance <> coalesce(
                    (SELECT sum(e.amount) FROM entries e WHERE e.account_id = a.id), 0)",
            )
            .await?,
            nonzero_assets: count(
                "SELECT count(*) FROM (
                    SELECT asset FROM accounts GROUP BY asset HAVING sum(balance) <> 0) t",
            )
            .await?,
        })
    }

    /// The sum of all balances, per asset: always 0 for a sound ledger.
    ///
    /// # Errors
    /// [`LedgerError::Unavailable`] or [`LedgerError::Query`].
    pub async fn totals(&self) -> Result<Vec<(String, i128)>, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT asset, sum(balance)::text FROM accounts GROUP BY asset ORDER BY asset",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let sum: String = r.get(1);
                (r.get(0), sum.parse().unwrap_or(i128::MAX))
            })
            .collect())
    }
}
