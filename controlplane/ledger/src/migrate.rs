//! The ledger's schema, embedded and applied in order at start-up. Each migration runs
//! in one transaction with its version row, under an advisory lock, so servers starting
//! together apply it once.

use tokio_postgres::Client;

use crate::LedgerError;

/// Key of the advisory lock that serialises migrations.
const MIGRATION_LOCK: i64 = 0x7475_7262_6f4c_6564; // "turboLed"

/// The migrations, in order; version `i + 1` is `MIGRATIONS[i]`.
const MIGRATIONS: &[&str] = &[
    r"
CREATE TABLE accounts (
    id bigserial PRIMARY KEY,
    code text NOT NULL,
    asset text NOT NULL CHECK (asset IN ('bytes', 'nano_usd')),
    balance bigint NOT NULL DEFAULT 0,
    UNIQUE (code, asset)
);
CREATE TABLE transactions (
    id bigserial PRIMARY KEY,
    idempotency_key text NOT NULL UNIQUE,
    kind text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE entries (
    id bigserial PRIMARY KEY,
    transaction_id bigint NOT NULL REFERENCES transactions (id),
    account_id bigint NOT NULL REFERENCES accounts (id),
    amount bigint NOT NULL CHECK (amount <> 0),
    balance_after bigint NOT NULL
);
CREATE INDEX entries_by_account ON entries (account_id, id);
CREATE INDEX entries_by_transaction ON entries (transaction_id);
",
    r"
CREATE TABLE usage_records (
    server text NOT NULL,
    lease text NOT NULL,
    seq bigint NOT NULL,
    node text NOT NULL,
    key_id text NOT NULL,
    minute bigint NOT NULL,
    up bigint NOT NULL CHECK (up >= 0),
    down bigint NOT NULL CHECK (down >= 0),
    conns bigint NOT NULL CHECK (conns >= 0),
    settlement bigint,
    PRIMARY KEY (server, lease, seq, node)
);
CREATE INDEX usage_unsettled ON usage_records (key_id, node) WHERE settlement IS NULL;
CREATE TABLE settlements (
    id bigserial PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE usage_minute (
    key_id text NOT NULL,
    node text NOT NULL,
    minute bigint NOT NULL,
    up bigint NOT NULL,
    down bigint NOT NULL,
    conns bigint NOT NULL,
    PRIMARY KEY (key_id, node, minute)
);
",
    r"
CREATE TABLE reward_policies (
    version serial PRIMARY KEY,
    policy text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE transactions ADD COLUMN policy integer REFERENCES reward_policies (version);
CREATE TABLE node_days (
    node text NOT NULL,
    day bigint NOT NULL,
    online_seconds bigint NOT NULL CHECK (online_seconds BETWEEN 0 AND 86400),
    PRIMARY KEY (node, day)
);
CREATE TABLE reward_carry (
    node text PRIMARY KEY,
    carry bigint NOT NULL CHECK (carry >= 0 AND carry < 1000000000)
);
CREATE TABLE reward_days (
    node text NOT NULL,
    day bigint NOT NULL,
    carried_bytes bigint NOT NULL,
    policy integer NOT NULL REFERENCES reward_policies (version),
    base_nano bigint NOT NULL,
    stability_nano bigint NOT NULL,
    streak_nano bigint NOT NULL,
    PRIMARY KEY (node, day, carried_bytes)
);
CREATE INDEX usage_minute_by_node ON usage_minute (node, minute);
CREATE TABLE payouts (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    address text NOT NULL,
    amount_nano bigint NOT NULL CHECK (amount_nano > 0),
    status text NOT NULL CHECK (status IN ('reserved', 'confirmed', 'voided')),
    sink text NOT NULL,
    reference text,
    created_at timestamptz NOT NULL DEFAULT now(),
    settled_at timestamptz
);
CREATE INDEX payouts_open ON payouts (id) WHERE status = 'reserved';
",
    r"
CREATE TABLE feed_cursors (
    name text PRIMARY KEY,
    cursor text NOT NULL
);
",
    r"
CREATE INDEX usage_minute_by_minute ON usage_minute (minute);
",
    // The USDC gateway's tables (crate turbo-chain). Token amounts are decimal text:
    // exact integers that may not fit 64 bits.
    r"
CREATE SEQUENCE deposit_index MINVALUE 0 START 0;
CREATE TABLE invoices (
    id text PRIMARY KEY,
    key_id text NOT NULL,
    chain_id bigint NOT NULL,
    token text NOT NULL,
    address text NOT NULL UNIQUE,
    address_index bigint NOT NULL UNIQUE,
    usd_nano bigint NOT NULL CHECK (usd_nano > 0),
    amount_units text NOT NULL,
    decimals integer NOT NULL,
    price_nano_per_gb bigint NOT NULL CHECK (price_nano_per_gb > 0),
    confirmations bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    status text NOT NULL DEFAULT 'new'
);
CREATE INDEX invoices_by_key ON invoices (key_id);
CREATE TABLE chain_payments (
    chain_id bigint NOT NULL,
    tx_hash text NOT NULL,
    log_index bigint NOT NULL,
    invoice_id text NOT NULL REFERENCES invoices (id),
    payer text NOT NULL,
    amount_units text NOT NULL,
    block_number bigint NOT NULL,
    block_hash text NOT NULL,
    block_time bigint NOT NULL,
    canonical boolean NOT NULL DEFAULT true,
    credited_nano bigint,
    credited_bytes bigint,
    store_applied boolean NOT NULL DEFAULT false,
    PRIMARY KEY (chain_id, tx_hash, log_index)
);
CREATE INDEX chain_payments_by_invoice ON chain_payments (invoice_id);
CREATE TABLE chain_blocks (
    chain_id bigint NOT NULL,
    number bigint NOT NULL,
    hash text NOT NULL,
    parent_hash text NOT NULL,
    PRIMARY KEY (chain_id, number)
);
CREATE TABLE webhook_events (
    id bigserial PRIMARY KEY,
    invoice_id text NOT NULL,
    body text NOT NULL,
    attempts integer NOT NULL DEFAULT 0,
    next_attempt timestamptz NOT NULL DEFAULT now(),
    delivered_at timestamptz,
    last_error text
);
CREATE INDEX webhook_events_due ON webhook_events (next_attempt) WHERE delivered_at IS NULL;
",
    r"
ALTER TABLE accounts DROP CONSTRAINT accounts_asset_check;
ALTER TABLE accounts ADD CONSTRAINT accounts_asset_check
    CHECK (asset IN ('bytes', 'nano_usd', 'gas_wei'));
ALTER TABLE payouts DROP CONSTRAINT payouts_status_check;
ALTER TABLE payouts ADD CONSTRAINT payouts_status_check
    CHECK (status IN ('reserved', 'submitted', 'confirmed', 'voided'));
ALTER TABLE payouts ADD COLUMN fee_wei bigint CHECK (fee_wei >= 0);
DROP INDEX payouts_open;
CREATE INDEX payouts_open ON payouts (id) WHERE status IN ('reserved', 'submitted');
CREATE TABLE chain_payouts (
    payout_id bigint PRIMARY KEY REFERENCES payouts (id),
    chain_id bigint NOT NULL,
    sender text NOT NULL,
    nonce bigint NOT NULL CHECK (nonce >= 0),
    tx_hash text NOT NULL UNIQUE,
    raw_tx bytea NOT NULL,
    units text NOT NULL,
    status text NOT NULL CHECK (status IN ('signed', 'confirmed', 'reverted', 'replaced')),
    block bigint,
    fee_wei bigint,
    created_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (chain_id, sender, nonce)
);
",
    r"
CREATE TABLE node_holds (
    id bigserial PRIMARY KEY,
    node text NOT NULL,
    reason text NOT NULL,
    held_at timestamptz NOT NULL DEFAULT now(),
    released_at timestamptz
);
CREATE UNIQUE INDEX node_holds_open ON node_holds (node) WHERE released_at IS NULL;
",
];

/// Applies the migrations `client`'s database lacks.
///
/// # Errors
/// [`LedgerError::Query`], or [`LedgerError::SchemaTooNew`] when the database is ahead.
pub(crate) async fn run(client: &mut Client) -> Result<(), LedgerError> {
    client
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS ledger_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now()
            )",
        )
        .await?;
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    let current: i32 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM ledger_migrations",
            &[],
        )
        .await?
        .get(0);
    let known = MIGRATIONS.len() as i32;
    if current > known {
        return Err(LedgerError::SchemaTooNew(current));
    }
    for (version, sql) in (1..).zip(MIGRATIONS).skip(current as usize) {
        tx.batch_execute(sql).await?;
        tx.execute(
            "INSERT INTO ledger_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
        tracing::info!(version, "ledger schema migrated");
    }
    tx.commit().await?;
    Ok(())
}
