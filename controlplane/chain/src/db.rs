//! The gateway's rows beside the ledger: invoices, the payments seen to their deposit
//! addresses (one per chain, transaction and log index), the recent block headers the
//! follower checks parent hashes against, and the webhook outbox.

use std::collections::HashMap;
use std::str::FromStr;

use alloy::primitives::{Address, B256};
use deadpool_postgres::Pool;
use tokio_postgres::{GenericClient, Row};

use crate::rpc::{BlockRef, TransferLog};
use crate::ChainError;

/// Invoices created longer ago than this are no longer watched.
const WATCH_DAYS: i32 = 30;

/// One invoice, as stored.
#[derive(Debug, Clone)]
pub(crate) struct InvoiceRow {
    pub(crate) id: String,
    pub(crate) key_id: String,
    pub(crate) chain_id: u64,
    pub(crate) token: String,
    pub(crate) address: String,
    pub(crate) usd_nano: i64,
    pub(crate) amount_units: u128,
    pub(crate) confirmations: u64,
    /// Unix seconds.
    pub(crate) expires_at: i64,
    pub(crate) status: String,
}

/// What a new invoice is made of.
pub(crate) struct NewInvoice<'a> {
    pub(crate) id: &'a str,
    pub(crate) key_id: &'a str,
    pub(crate) chain_id: u64,
    pub(crate) token: Address,
    pub(crate) address: Address,
    pub(crate) index: i64,
    pub(crate) usd_nano: i64,
    pub(crate) amount_units: u128,
    pub(crate) decimals: u8,
    pub(crate) price_nano_per_gb: i64,
    pub(crate) confirmations: u64,
    pub(crate) ttl_secs: i64,
}

/// One payment to an invoice, with what crediting it needs.
#[derive(Debug, Clone)]
pub(crate) struct PaymentRow {
    pub(crate) tx_hash: String,
    pub(crate) log_index: i64,
    pub(crate) invoice_id: String,
    pub(crate) key_id: String,
    pub(crate) units: u128,
    pub(crate) decimals: u8,
    pub(crate) price_nano_per_gb: i64,
    pub(crate) block_number: u64,
    pub(crate) block_time: i64,
    pub(crate) canonical: bool,
    pub(crate) credited_bytes: Option<i64>,
    pub(crate) store_applied: bool,
}

pub(crate) fn hex_address(a: Address) -> String {
    format!("{a:#x}")
}

pub(crate) fn hex_hash(h: B256) -> String {
    format!("{h:#x}")
}

fn units(text: &str) -> Result<u128, ChainError> {
    u128::from_str(text).map_err(|_| ChainError::Corrupt(format!("token amount {text:?}")))
}

const INVOICE_COLUMNS: &str = "id, key_id, chain_id, token, address, usd_nano, amount_units, \
     confirmations, extract(epoch from expires_at)::bigint, status";

fn invoice_row(r: &Row) -> Result<InvoiceRow, ChainError> {
    Ok(InvoiceRow {
        id: r.get(0),
        key_id: r.get(1),
        chain_id: r.get::<_, i64>(2) as u64,
        token: r.get(3),
        address: r.get(4),
        usd_nano: r.get(5),
        amount_units: units(r.get(6))?,
        confirmations: r.get::<_, i64>(7) as u64,
        expires_at: r.get(8),
        status: r.get(9),
    })
}

/// The next deposit address index.
pub(crate) async fn next_index(db: &impl GenericClient) -> Result<i64, ChainError> {
    let row = db.query_one("SELECT nextval('deposit_index')", &[]).await?;
    Ok(row.get(0))
}

pub(crate) async fn insert_invoice(
    db: &impl GenericClient,
    i: &NewInvoice<'_>,
) -> Result<(), ChainError> {
    db.execute(
        "INSERT INTO invoices (id, key_id, chain_id, token, address, address_index, usd_nano, \
         amount_units, decimals, price_nano_per_gb, confirmations, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, \
                 now() + make_interval(secs => $12::bigint))",
        &[
            &i.id,
            &i.key_id,
            &(i.chain_id as i64),
            &hex_address(i.token),
            &hex_address(i.address),
            &i.index,
            &i.usd_nano,
            &i.amount_units.to_string(),
            &i32::from(i.decimals),
            &i.price_nano_per_gb,
            &(i.confirmations as i64),
            &i.ttl_secs,
        ],
    )
    .await?;
    Ok(())
}

pub(crate) async fn invoice(db: &impl GenericClient, id: &str) -> Result<InvoiceRow, ChainError> {
    let sql = format!("SELECT {INVOICE_COLUMNS} FROM invoices WHERE id = $1");
    let row = db
        .query_opt(&sql, &[&id])
        .await?
        .ok_or_else(|| ChainError::NoInvoice(id.into()))?;
    invoice_row(&row)
}

/// Invoices still watched on `chain_id`, oldest first.
pub(crate) async fn watched(
    db: &impl GenericClient,
    chain_id: u64,
) -> Result<Vec<InvoiceRow>, ChainError> {
    let sql = format!(
        "SELECT {INVOICE_COLUMNS} FROM invoices WHERE chain_id = $1 \
         AND created_at > now() - make_interval(days => $2) ORDER BY created_at"
    );
    let rows = db.query(&sql, &[&(chain_id as i64), &WATCH_DAYS]).await?;
    rows.iter().map(invoice_row).collect()
}

/// The highest block the follower recorded.
pub(crate) async fn last_block(
    db: &impl GenericClient,
    chain_id: u64,
) -> Result<Option<(u64, B256)>, ChainError> {
    let row = db
        .query_opt(
            "SELECT number, hash FROM chain_blocks WHERE chain_id = $1 \
             ORDER BY number DESC LIMIT 1",
            &[&(chain_id as i64)],
        )
        .await?;
    row.map(|r| Ok((r.get::<_, i64>(0) as u64, hash(r.get(1))?)))
        .transpose()
}

/// The recorded hash of block `number`.
pub(crate) async fn block_hash(
    db: &impl GenericClient,
    chain_id: u64,
    number: u64,
) -> Result<Option<B256>, ChainError> {
    let row = db
        .query_opt(
            "SELECT hash FROM chain_blocks WHERE chain_id = $1 AND number = $2",
            &[&(chain_id as i64), &(number as i64)],
        )
        .await?;
    row.map(|r| hash(r.get(0))).transpose()
}

fn hash(text: &str) -> Result<B256, ChainError> {
    B256::from_str(text).map_err(|_| ChainError::Corrupt(format!("block hash {text:?}")))
}

/// Records `block` and the payments in it (a payment seen before, in a block a reorg
/// removed, moves to this one).
pub(crate) async fn record_block(
    db: &impl GenericClient,
    chain_id: u64,
    block: &BlockRef,
    payments: &[(String, TransferLog)],
) -> Result<(), ChainError> {
    db.execute(
        "INSERT INTO chain_blocks (chain_id, number, hash, parent_hash) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (chain_id, number) DO UPDATE SET hash = $3, parent_hash = $4",
        &[
            &(chain_id as i64),
            &(block.number as i64),
            &hex_hash(block.hash),
            &hex_hash(block.parent),
        ],
    )
    .await?;
    for (invoice_id, t) in payments {
        db.execute(
            "INSERT INTO chain_payments (chain_id, tx_hash, log_index, invoice_id, payer, \
             amount_units, block_number, block_hash, block_time) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (chain_id, tx_hash, log_index) DO UPDATE SET canonical = true, \
             block_number = $7, block_hash = $8, block_time = $9",
            &[
                &(chain_id as i64),
                &hex_hash(t.tx),
                &(t.log_index as i64),
                invoice_id,
                &hex_address(t.from),
                &t.value.to_string(),
                &(block.number as i64),
                &hex_hash(block.hash),
                &(block.time as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

/// Forgets the blocks after `keep` (a reorg replaced them) and marks the payments in
/// them as off the canonical chain. Returns the credited payments among them.
pub(crate) async fn orphan_after(
    db: &impl GenericClient,
    chain_id: u64,
    keep: u64,
) -> Result<Vec<String>, ChainError> {
    let (chain, keep) = (chain_id as i64, keep as i64);
    db.execute(
        "DELETE FROM chain_blocks WHERE chain_id = $1 AND number > $2",
        &[&chain, &keep],
    )
    .await?;
    let rows = db
        .query(
            "UPDATE chain_payments SET canonical = false \
             WHERE chain_id = $1 AND block_number > $2 AND canonical \
             RETURNING tx_hash || ':' || log_index, credited_bytes IS NOT NULL",
            &[&chain, &keep],
        )
        .await?;
    Ok(rows
        .iter()
        .filter(|r| r.get::<_, bool>(1))
        .map(|r| r.get(0))
        .collect())
}

/// Forgets recorded blocks more than `depth` below `head`.
pub(crate) async fn prune_blocks(
    db: &impl GenericClient,
    chain_id: u64,
    head: u64,
    depth: u64,
) -> Result<(), ChainError> {
    let below = head.saturating_sub(depth) as i64;
    db.execute(
        "DELETE FROM chain_blocks WHERE chain_id = $1 AND number < $2",
        &[&(chain_id as i64), &below],
    )
    .await?;
    Ok(())
}

const PAYMENT_COLUMNS: &str = "p.tx_hash, p.log_index, p.invoice_id, i.key_id, p.amount_units, \
     i.decimals, i.price_nano_per_gb, p.block_number, p.block_time, p.canonical, \
     p.credited_bytes, p.store_applied";

fn payment_row(r: &Row) -> Result<PaymentRow, ChainError> {
    let decimals: i32 = r.get(5);
    Ok(PaymentRow {
        tx_hash: r.get(0),
        log_index: r.get(1),
        invoice_id: r.get(2),
        key_id: r.get(3),
        units: units(r.get(4))?,
        decimals: u8::try_from(decimals).map_err(|_| ChainError::Corrupt("decimals".into()))?,
        price_nano_per_gb: r.get(6),
        block_number: r.get::<_, i64>(7) as u64,
        block_time: r.get(8),
        canonical: r.get(9),
        credited_bytes: r.get(10),
        store_applied: r.get(11),
    })
}

/// The payments to one invoice (those a reorg removed included).
pub(crate) async fn payments_of(
    db: &impl GenericClient,
    invoice_id: &str,
) -> Result<Vec<PaymentRow>, ChainError> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM chain_payments p JOIN invoices i ON i.id = p.invoice_id \
         WHERE p.invoice_id = $1 ORDER BY p.block_number, p.log_index"
    );
    let rows = db.query(&sql, &[&invoice_id]).await?;
    rows.iter().map(payment_row).collect()
}

/// The payments to every invoice still watched on `chain_id` (those a reorg removed
/// included), by invoice: one query however many invoices are watched.
pub(crate) async fn payments_of_watched(
    db: &impl GenericClient,
    chain_id: u64,
) -> Result<HashMap<String, Vec<PaymentRow>>, ChainError> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM chain_payments p JOIN invoices i ON i.id = p.invoice_id \
         WHERE i.chain_id = $1 AND i.created_at > now() - make_interval(days => $2) \
         ORDER BY p.block_number, p.log_index"
    );
    let rows = db.query(&sql, &[&(chain_id as i64), &WATCH_DAYS]).await?;
    let mut by_invoice: HashMap<String, Vec<PaymentRow>> = HashMap::new();
    for r in &rows {
        let p = payment_row(r)?;
        by_invoice.entry(p.invoice_id.clone()).or_default().push(p);
    }
    Ok(by_invoice)
}

/// Canonical payments on `chain_id` with at least `confirmations` at `head` whose
/// credit is not finished (not posted, or not yet applied to the key's balance).
pub(crate) async fn to_credit(
    db: &impl GenericClient,
    chain_id: u64,
    head: u64,
) -> Result<Vec<PaymentRow>, ChainError> {
    let sql = format!(
        "SELECT {PAYMENT_COLUMNS} FROM chain_payments p JOIN invoices i ON i.id = p.invoice_id \
         WHERE p.chain_id = $1 AND p.canonical AND NOT p.store_applied \
         AND $2 - p.block_number + 1 >= greatest(i.confirmations, 1) \
         ORDER BY p.block_number, p.log_index"
    );
    let rows = db
        .query(&sql, &[&(chain_id as i64), &(head as i64)])
        .await?;
    rows.iter().map(payment_row).collect()
}

/// Records that a payment was posted to the ledger as `nano` and `bytes`.
pub(crate) async fn mark_credited(
    db: &impl GenericClient,
    chain_id: u64,
    p: &PaymentRow,
    nano: i64,
    bytes: i64,
) -> Result<(), ChainError> {
    db.execute(
        "UPDATE chain_payments SET credited_nano = $4, credited_bytes = $5 \
         WHERE chain_id = $1 AND tx_hash = $2 AND log_index = $3",
        &[&(chain_id as i64), &p.tx_hash, &p.log_index, &nano, &bytes],
    )
    .await?;
    Ok(())
}

/// Records that a payment's bytes reached the key's balance.
pub(crate) async fn mark_applied(
    db: &impl GenericClient,
    chain_id: u64,
    p: &PaymentRow,
) -> Result<(), ChainError> {
    db.execute(
        "UPDATE chain_payments SET store_applied = true \
         WHERE chain_id = $1 AND tx_hash = $2 AND log_index = $3",
        &[&(chain_id as i64), &p.tx_hash, &p.log_index],
    )
    .await?;
    Ok(())
}

/// Sets an invoice's status and queues the webhook event in the same transaction;
/// a status that did not change queues nothing.
pub(crate) async fn set_status(
    pool: &Pool,
    invoice_id: &str,
    status: &str,
    event: impl FnOnce() -> String,
) -> Result<bool, ChainError> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    let changed = tx
        .execute(
            "UPDATE invoices SET status = $2 WHERE id = $1 AND status <> $2",
            &[&invoice_id, &status],
        )
        .await?
        == 1;
    if changed {
        tx.execute(
            "INSERT INTO webhook_events (invoice_id, body) VALUES ($1, $2)",
            &[&invoice_id, &event()],
        )
        .await?;
    }
    tx.commit().await?;
    Ok(changed)
}
