//! Buying credits with USDC end to end: a server with the ledger and a local EVM
//! (anvil, the test token deployed), a key with almost no credit; the CLI makes a $25
//! invoice, a funded account pays it, the confirmations are mined, and the key's
//! balance and the ledger show the credit once; the customer then relays with it.

use std::sync::Arc;

use alloy::primitives::Address;
use bip32::{Prefix, XPrv};
use serde_json::Value;

use crate::fixtures::evm::Evm;
use crate::fixtures::postgres::Postgres;
use crate::fixtures::targets::FileServer;
use crate::fixtures::{random_bytes, wait_for, Net, Options};

/// One dollar in the test token's units (6 decimals).
pub(crate) const UNITS: u64 = 1_000_000;
const BODY: usize = 200_000;

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

pub(crate) fn xpub() -> String {
    let path = "m/44'/60'/0'".parse().expect("path");
    let account = XPrv::derive_from_path(&[9u8; 64], &path).expect("account key");
    account.public_key().to_string(Prefix::XPUB)
}

/// Server config for payments on `evm` with the ledger at `ledger` (2 confirmations,
/// $1/GB).
pub(crate) fn chain_config(ledger: &str, evm: &Evm) -> String {
    format!(
        "ledger = \"{ledger}\"\nchain_rpc = \"{}\"\nchain_id = 31337\nusdc_contract = \"{}\"\n\
         confirmations = 2\nprice_usd_per_gb = 1.0\ndeposit_xpub = \"{}\"\n",
        evm.url,
        evm.token,
        xpub()
    )
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// One GET through the HTTP proxy; the body's length, or `None` when refused.
fn fetch(net: &Net, target: std::net::SocketAddr) -> Option<usize> {
    let out = crate::fixtures::curl(&[
        "-s",
        "-f",
        "--proxy",
        &net.proxy_url("http"),
        &format!("http://127.0.0.1:{}/f", target.port()),
    ]);
    out.status.success().then_some(out.stdout.len())
}

#[test]
fn a_paid_invoice_buys_traffic_once() {
    let rt = runtime();
    let pg = Postgres::start();
    let evm = rt.block_on(Evm::start());
    let payer = evm.accounts[1];
    rt.block_on(evm.mint(payer, 100 * UNITS));
    let mut opts = Options::new("legacy");
    opts.credits = "10KB";
    opts.config = format!(
        "lease_checkpoint = \"300ms\"\nlease_idle_release = \"300ms\"\n{}",
        chain_config(&rt.block_on(pg.database()), &evm)
    );
    let net = Net::start_with(opts);
    let target = FileServer::start(Arc::new(random_bytes(BODY, 8))).addr;
    assert_eq!(
        fetch(&net, target),
        None,
        "10 KB of credit buys no 200 KB body"
    );
    let settled = || {
        let k = net.key_info();
        (n(&k, "leased") == 0).then_some(n(&k, "balance"))
    };
    let before = wait_for("the key's leases to settle", settled);

    let invoice: Value = serde_json::from_str(&net.cli(&[
        "invoices",
        "create",
        "--key",
        &net.key_id,
        "--usd",
        "25",
    ]))
    .expect("invoice json");
    for field in [
        "id",
        "address",
        "token",
        "chain_id",
        "amount",
        "amount_units",
        "expires_at",
        "status",
        "uri",
    ] {
        assert!(!invoice[field].is_null(), "{field} in {invoice}");
    }
    assert_eq!(invoice["amount_units"], "25000000");
    assert_eq!(invoice["status"], "new");
    let id = invoice["id"].as_str().expect("id").to_owned();
    let address: Address = invoice["address"]
        .as_str()
        .expect("address")
        .parse()
        .expect("0x");

    rt.block_on(evm.pay(payer, address, 25 * UNITS));
    rt.block_on(evm.mine(1));
    let shown = wait_for("the invoice to be credited", || {
        let v: Value = serde_json::from_str(&net.cli(&["invoices", "show", &id])).ok()?;
        (v["status"] == "credited").then_some(v)
    });
    assert_eq!(shown["credited_bytes"], 25_000_000_000_i64);
    let balance = wait_for("the key's leases to settle", settled);
    assert_eq!(balance - before, 25_000_000_000, "the key's balance, once");
    rt.block_on(evm.mine(3));
    let later: Value = serde_json::from_str(&net.cli(&["invoices", "show", &id])).expect("json");
    assert_eq!(
        (&later["status"], &later["credited_bytes"]),
        (&shown["status"], &shown["credited_bytes"])
    );
    assert_eq!(
        fetch(&net, target),
        Some(BODY),
        "the customer relays with what it bought"
    );
    let after = wait_for("the key's leases to settle", settled);
    // The relay's last checkpoint reaches the ledger a moment after the lease settles.
    let reconcile = wait_for("the ledger to reconcile", || {
        let r = net.api_get("/api/ledger/reconcile");
        (r["ok"] == true).then_some(r)
    });
    assert_eq!(reconcile["mismatch_bytes"], 0, "{reconcile}");
    assert!(after < balance, "the traffic was billed");
}

/// The treasury key in an owner-only file under `dir`.
fn write_key(
    dir: &std::path::Path,
    key: &alloy::signers::local::PrivateKeySigner,
) -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("treasury.key");
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(&path)
        .and_then(|mut f| std::io::Write::write_all(&mut f, hex::encode(key.to_bytes()).as_bytes()))
        .expect("key file");
    path
}

/// A runner is paid on chain: a server with `treasury_key_file` (owner-only), a node
/// invited with a payout address and $25.0000005 earned; `POST /api/payouts/run` pays
/// it $25 in the token from the treasury once, the sub-micro-dollar dust stays, and a
/// second run pays nothing.
#[test]
fn a_runner_is_paid_on_chain_once() {
    use alloy::primitives::U256;
    use alloy::providers::Provider;
    use alloy::signers::local::PrivateKeySigner;

    let rt = runtime();
    let pg = Postgres::start();
    let evm = rt.block_on(Evm::start());
    let treasury = PrivateKeySigner::random();
    let funded: Result<Value, _> = rt.block_on(evm.provider.raw_request(
        "anvil_setBalance".into(),
        (treasury.address(), U256::from(10u128.pow(20))),
    ));
    funded.expect("gas for the treasury");
    rt.block_on(evm.mint(treasury.address(), 100 * UNITS));
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = write_key(dir.path(), &treasury);
    let ledger_url = rt.block_on(pg.database());
    let mut opts = Options::new("legacy");
    opts.node = false;
    opts.config = format!(
        "ledger = \"{ledger_url}\"\nchain_rpc = \"{}\"\nchain_id = 31337\n\
         usdc_contract = \"{}\"\nconfirmations = 1\ndeposit_xpub = \"{}\"\n\
         treasury_key_file = \"{}\"\n",
        evm.url,
        evm.token,
        xpub(),
        key_file.display()
    );
    let net = Net::start_with(opts);
    let runner = PrivateKeySigner::random().address();
    let invite = net.api_post(
        "/api/nodes/invite",
        serde_json::json!({"payout_address": runner.to_string()}),
    );
    let node = invite["node_id"].as_str().expect("node id").to_owned();
    let earned = 25_000_000_500_i64;
    let ledger = rt
        .block_on(turbo_ledger::Ledger::connect(&ledger_url))
        .expect("ledger");
    rt.block_on(ledger.post(&crate::fixtures::evm::reward_posting(&node, earned)))
        .expect("reward");

    let run = net.api_post("/api/payouts/run", serde_json::json!({}));
    assert_eq!(
        run["planned"],
        serde_json::json!([{"node": node, "amount_nano_usd": 25_000_000_000_i64}])
    );
    assert_eq!(n(&run, "confirmed") + n(&run, "pending"), 1, "{run}");
    let chain = rt
        .block_on(turbo_chain::rpc::Chain::connect(&evm.url, evm.token, None))
        .expect("chain");
    let paid = wait_for("the runner's transfer to confirm", || {
        let e = net.api_get(&format!("/api/nodes/{node}/earnings"));
        (e["paid_nano_usd"] == 25_000_000_000_i64).then_some(e)
    });
    assert_eq!(paid["available_nano_usd"], 500, "the dust stays: {paid}");
    let balance = rt.block_on(chain.balance_of(runner)).expect("balance");
    assert_eq!(balance, U256::from(25 * UNITS), "paid in the token, once");
    let again = net.api_post("/api/payouts/run", serde_json::json!({}));
    assert_eq!(again["planned"], serde_json::json!([]), "{again}");
    rt.block_on(evm.mine(2));
    let balance = rt.block_on(chain.balance_of(runner)).expect("balance");
    assert_eq!(balance, U256::from(25 * UNITS));
    let audit = rt.block_on(ledger.audit()).expect("audit");
    assert!(audit.is_sound(), "{audit:?}");
}
