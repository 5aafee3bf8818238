//! Postings: balanced, idempotent transactions. A posting first records its key (a
//! second poster of the same key waits for the first and then finds it), then updates
//! its accounts in id order, so two postings never wait on each other in a cycle.

use std::collections::BTreeMap;

use crate::{AccountRef, Asset, Ledger, LedgerError};

/// Account ids by (code, asset).
pub(crate) type AccountIds = BTreeMap<(String, Asset), i64>;

/// Longest idempotency key.
const MAX_KEY: usize = 200;

/// One leg: `amount` (signed) into `account`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leg {
    /// The account.
    pub account: AccountRef,
    /// Credit (positive) or debit (negative), in the account's asset.
    pub amount: i64,
}

/// A transaction to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Posting {
    /// Unique per posting: a retry with the same key is a no-op.
    pub key: String,
    /// What it records (`usage`, `reward`, `payout`, …).
    pub kind: String,
    /// Its legs; they sum to zero per asset.
    pub legs: Vec<Leg>,
}

/// The outcome of [`Ledger::post`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Posted {
    /// Posted now, as this transaction id.
    New(i64),
    /// Posted before under the same key: the original transaction id.
    Replayed(i64),
}

impl Posted {
    /// The transaction id.
    pub fn id(self) -> i64 {
        match self {
            Posted::New(id) | Posted::Replayed(id) => id,
        }
    }
}

impl Posting {
    /// Checks the key, the legs, and that the legs sum to zero per asset.
    pub(crate) fn validate(&self) -> Result<(), LedgerError> {
        let malformed = |why| LedgerError::Malformed {
            key: self.key.chars().take(MAX_KEY).collect(),
            why,
        };
        if self.key.is_empty() || self.key.len() > MAX_KEY {
            return Err(malformed("the key must have 1 to 200 bytes"));
        }
        if self.legs.len() < 2 {
            return Err(malformed("a posting needs at least two legs"));
        }
        if self.legs.iter().any(|l| l.amount == 0) {
            return Err(malformed("a leg of zero"));
        }
        let accounts: std::collections::BTreeSet<_> = self
            .legs
            .iter()
            .map(|l| (l.account.code(), l.account.asset))
            .collect();
        if accounts.len() != self.legs.len() {
            return Err(malformed("an account in two legs"));
        }
        let mut sums: BTreeMap<Asset, i128> = BTreeMap::new();
        for leg in &self.legs {
            *sums.entry(leg.account.asset).or_default() += i128::from(leg.amount);
        }
        match sums.into_iter().find(|(_, sum)| *sum != 0) {
            Some((asset, sum)) => Err(LedgerError::Unbalanced {
                key: self.key.clone(),
                asset,
                sum,
            }),
            None => Ok(()),
        }
    }

    /// The legs as `(code, asset, amount)`, sorted, for comparing with a stored posting.
    fn canonical(&self) -> Vec<(String, String, i64)> {
        let mut legs: Vec<_> = self
            .legs
            .iter()
            .map(|l| {
                let asset = l.account.asset.name().to_owned();
                (l.account.code().to_owned(), asset, l.amount)
            })
            .collect();
        legs.sort();
        legs
    }
}

impl Ledger {
    /// Posts `posting` exactly once.
    ///
    /// # Errors
    /// [`LedgerError::Malformed`] or [`LedgerError::Unbalanced`] before touching the
    /// database; [`LedgerError::KeyReused`] when the key holds a different posting;
    /// [`LedgerError::Unavailable`] or [`LedgerError::Query`] otherwise (nothing was
    /// posted, and a retry with the same key is safe).
    pub async fn post(&self, posting: &Posting) -> Result<Posted, LedgerError> {
        posting.validate()?;
        let ids = self.ensure_accounts(&posting.legs).await?;
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        match post_in(&tx, posting, &ids).await? {
            Some(id) => {
                tx.commit().await?;
                Ok(Posted::New(id))
            }
            None => {
                drop(tx);
                self.replayed(posting).await
            }
        }
    }

    /// Creates the accounts `legs` name that do not exist yet (in a transaction of
    /// their own, so no posting holds an account lock while another creates one), and
    /// returns every account's id.
    pub(crate) async fn ensure_accounts(&self, legs: &[Leg]) -> Result<AccountIds, LedgerError> {
        let (codes, assets) = account_columns(legs);
        let client = self.pool.get().await?;
        client
            .execute(
                "INSERT INTO accounts (code, asset)
                 SELECT * FROM unnest($1::text[], $2::text[]) ORDER BY 1, 2
                 ON CONFLICT (code, asset) DO NOTHING",
                &[&codes, &assets],
            )
            .await?;
        account_ids(&**client, legs).await
    }

    /// The original of a posting whose key is taken: the same legs, or
    /// [`LedgerError::KeyReused`].
    async fn replayed(&self, posting: &Posting) -> Result<Posted, LedgerError> {
        let client = self.pool.get().await?;
        let rows = client
            .query(
                "SELECT t.id, a.code, a.asset, e.amount
                 FROM transactions t
                 JOIN entries e ON e.transaction_id = t.id
                 JOIN accounts a ON a.id = e.account_id
                 WHERE t.idempotency_key = $1",
                &[&posting.key],
            )
            .await?;
        let Some(first) = rows.first() else {
            return Err(LedgerError::KeyReused(posting.key.clone()));
        };
        let id: i64 = first.get(0);
        let mut stored: Vec<(String, String, i64)> = rows
            .iter()
            .map(|r| (r.get(1), r.get(2), r.get(3)))
            .collect();
        stored.sort();
        if stored == posting.canonical() {
            Ok(Posted::Replayed(id))
        } else {
            Err(LedgerError::KeyReused(posting.key.clone()))
        }
    }
}

/// Posts `posting` inside `tx`, whose accounts are in `ids`: records the key, then
/// updates the accounts in id order (the lock order every posting shares) and writes
/// an entry per leg with the balance after it. `None` when the key is taken.
///
/// # Errors
/// [`LedgerError::Query`]; an account missing from `ids` is a
/// [`LedgerError::Malformed`] posting.
pub(crate) async fn post_in(
    tx: &tokio_postgres::Transaction<'_>,
    posting: &Posting,
    ids: &AccountIds,
) -> Result<Option<i64>, LedgerError> {
    let inserted = tx
        .query_opt(
            "INSERT INTO transactions (idempotency_key, kind) VALUES ($1, $2)
             ON CONFLICT (idempotency_key) DO NOTHING RETURNING id",
            &[&posting.key, &posting.kind],
        )
        .await?;
    let Some(row) = inserted else {
        return Ok(None);
    };
    let tx_id: i64 = row.get(0);
    let mut legs = Vec::with_capacity(posting.legs.len());
    for l in &posting.legs {
        let id = ids
            .get(&(l.account.code().to_owned(), l.account.asset))
            .ok_or_else(|| LedgerError::Malformed {
                key: posting.key.clone(),
                why: "an account that does not exist",
            })?;
        legs.push((*id, l.amount));
    }
    legs.sort_by_key(|(id, _)| *id);
    if legs.windows(2).any(|w| w[0].0 == w[1].0) {
        return Err(LedgerError::Malformed {
            key: posting.key.clone(),
            why: "an account in two legs",
        });
    }
    let (accounts, amounts): (Vec<i64>, Vec<i64>) = legs.into_iter().unzip();
    // Lock the accounts in id order (the order every posting shares), then update them
    // and write the entries with the balance after each, in three statements.
    tx.execute(
        "SELECT id FROM accounts WHERE id = ANY($1) ORDER BY id FOR UPDATE",
        &[&accounts],
    )
    .await?;
    tx.execute(
        "WITH moved AS (
             UPDATE accounts a SET balance = a.balance + d.amount
             FROM unnest($2::bigint[], $3::bigint[]) AS d (id, amount)
             WHERE a.id = d.id
             RETURNING a.id, d.amount, a.balance)
         INSERT INTO entries (transaction_id, account_id, amount, balance_after)
         SELECT $1, id, amount, balance FROM moved ORDER BY id",
        &[&tx_id, &accounts, &amounts],
    )
    .await?;
    Ok(Some(tx_id))
}

/// The distinct accounts of `legs`, as two columns (codes, assets), sorted.
fn account_columns(legs: &[Leg]) -> (Vec<&str>, Vec<&'static str>) {
    let wanted: std::collections::BTreeSet<(&str, &'static str)> = legs
        .iter()
        .map(|l| (l.account.code(), l.account.asset.name()))
        .collect();
    wanted.into_iter().unzip()
}

/// The ids of the accounts `legs` name that exist (through `client`, which may be a
/// transaction: this takes no lock).
///
/// # Errors
/// [`LedgerError::Query`].
pub(crate) async fn account_ids(
    client: &impl tokio_postgres::GenericClient,
    legs: &[Leg],
) -> Result<AccountIds, LedgerError> {
    let (codes, assets) = account_columns(legs);
    let rows = client
        .query(
            "SELECT a.id, a.code, a.asset FROM accounts a
             JOIN unnest($1::text[], $2::text[]) AS w (code, asset)
               ON a.code = w.code AND a.asset = w.asset",
            &[&codes, &assets],
        )
        .await?;
    let mut ids = BTreeMap::new();
    for r in rows {
        let asset = match r.get::<_, &str>(2) {
            "bytes" => Asset::Bytes,
            "gas_wei" => Asset::GasWei,
            _ => Asset::NanoUsd,
        };
        ids.insert((r.get::<_, String>(1), asset), r.get::<_, i64>(0));
    }
    Ok(ids)
}
