//! The USDC gateway against a real local EVM (anvil) and PostgreSQL: an invoice paid
//! and confirmed is credited once (replays and a crash between posting and crediting
//! included), a reorg before confirmation takes a payment back, mismatched payments
//! end in their documented states with the ledger summing to zero, and webhooks are
//! signed and retried until a receiver takes them.

mod fixtures;

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy::primitives::Address;
use bip32::{Prefix, XPrv};
use fixtures::{balances, Balances, Evm, Postgres};
use turbo_chain::rpc::Chain;
use turbo_chain::xpub::DepositKeys;
use turbo_chain::{Gateway, GatewayConfig, InvoiceView};
use turbo_ledger::{AccountRef, Asset, Ledger, Platform};

/// $1.00 per GB.
const PRICE: i64 = 1_000_000_000;
const USD: i64 = 1_000_000_000;
/// One dollar in the test token's units (6 decimals).
const UNITS: u64 = 1_000_000;

fn xpub() -> String {
    let path = "m/44'/60'/0'".parse().expect("path");
    let account = XPrv::derive_from_path(&[42u8; 64], &path).expect("account key");
    account.public_key().to_string(Prefix::XPUB)
}

struct Setup {
    evm: Evm,
    _pg: Postgres,
    ledger: Ledger,
    gateway: Gateway,
    balances: Arc<Balances>,
    payer: Address,
}

async fn setup(confirmations: u64) -> Setup {
    setup_on(confirmations, false).await
}

/// [`setup`], following the chain over a websocket when `ws`.
async fn setup_on(confirmations: u64, ws: bool) -> Setup {
    let pg = Postgres::start();
    let ledger = Ledger::connect(&pg.database().await).await.expect("ledger");
    let evm = Evm::start().await;
    let payer = evm.accounts[1];
    evm.mint(payer, 1_000 * UNITS).await;
    let url = if ws {
        evm.url.replace("http://", "ws://")
    } else {
        evm.url.clone()
    };
    let chain = Chain::connect(&url, evm.token, None).await.expect("chain");
    let config = GatewayConfig {
        chain_id: 31337,
        token: evm.token,
        confirmations,
        price_nano_per_gb: PRICE,
        deposit: DepositKeys::parse(&xpub()).expect("xpub"),
    };
    let balances = balances();
    let gateway = Gateway::start(chain, ledger.clone(), config, balances.clone())
        .await
        .expect("gateway");
    Setup {
        evm,
        _pg: pg,
        ledger,
        gateway,
        balances,
        payer,
    }
}

impl Setup {
    async fn invoice(&self, key: &str, usd: i64) -> (InvoiceView, Address) {
        let inv = self
            .gateway
            .create_invoice(key, usd * USD, None)
            .await
            .expect("invoice");
        let address = inv.address.parse().expect("address");
        (inv, address)
    }

    async fn status(&self, id: &str) -> String {
        self.gateway.tick().await.expect("tick");
        self.gateway.invoice(id).await.expect("show").status
    }

    async fn shown(&self, id: &str) -> InvoiceView {
        self.gateway.invoice(id).await.expect("show")
    }

    async fn key_bytes(&self, key: &str) -> i64 {
        self.ledger
            .balance(&AccountRef::key(key, Asset::Bytes))
            .await
            .expect("balance")
    }

    async fn assert_sound(&self) {
        let audit = self.ledger.audit().await.expect("audit");
        assert!(audit.is_sound(), "the ledger sums to zero: {audit:?}");
    }
}

#[tokio::test]
async fn an_invoice_paid_in_full_is_credited_once() {
    let s = setup(3).await;
    let (inv, address) = s.invoice("k1", 25).await;
    assert_eq!(
        (inv.amount.as_str(), inv.amount_units.as_str()),
        ("25", "25000000")
    );
    assert_eq!(inv.status, "new");
    assert_eq!(
        inv.uri,
        format!(
            "ethereum:{}@31337/transfer?address={}&uint256=25000000",
            inv.token, inv.address
        )
    );
    let (other, _) = s.invoice("k1", 25).await;
    assert_ne!(
        other.address, inv.address,
        "one deposit address per invoice"
    );

    s.evm.pay(s.payer, address, 25 * UNITS).await;
    assert_eq!(s.status(&inv.id).await, "seen");
    s.evm.mine(1).await;
    assert_eq!(
        s.status(&inv.id).await,
        "seen",
        "two confirmations of three"
    );
    s.evm.mine(1).await;
    assert_eq!(s.status(&inv.id).await, "credited");
    let shown = s.gateway.invoice(&inv.id).await.expect("show");
    assert_eq!(shown.paid_units, "25000000");
    assert_eq!(shown.credited_bytes, 25_000_000_000, "$25 at $1/GB");
    assert_eq!(s.balances.of("k1"), 25_000_000_000);
    assert_eq!(s.key_bytes("k1").await, 25_000_000_000);
    let revenue = AccountRef::platform(Platform::Revenue, Asset::NanoUsd);
    assert_eq!(s.ledger.balance(&revenue).await.expect("revenue"), 25 * USD);

    // More passes, and more blocks, change nothing.
    s.evm.mine(5).await;
    for _ in 0..3 {
        assert_eq!(s.gateway.tick().await.expect("tick").credited, 0);
    }
    assert_eq!(s.balances.of("k1"), 25_000_000_000);
    assert_eq!(s.key_bytes("k1").await, 25_000_000_000);
    s.assert_sound().await;
}

#[tokio::test]
async fn a_payment_is_followed_over_a_websocket() {
    let s = setup_on(2, true).await;
    let (inv, address) = s.invoice("k1", 7).await;
    s.evm.pay(s.payer, address, 7 * UNITS).await;
    s.evm.mine(1).await;
    assert_eq!(s.status(&inv.id).await, "credited");
    assert_eq!(s.balances.of("k1"), 7_000_000_000);
    s.assert_sound().await;
}

#[tokio::test]
async fn a_crash_between_posting_and_crediting_credits_once_on_restart() {
    let s = setup(1).await;
    let (inv, address) = s.invoice("k1", 5).await;
    s.evm.pay(s.payer, address, 5 * UNITS).await;
    assert_eq!(s.status(&inv.id).await, "credited");
    // Put the payment back where a crash would leave it: the posting done but not
    // recorded, the key's balance already added to.
    let client = s.ledger.pool().get().await.expect("db");
    client
        .execute(
            "UPDATE chain_payments SET credited_bytes = NULL, credited_nano = NULL, \
             store_applied = false",
            &[],
        )
        .await
        .expect("rewind");
    let report = s.gateway.tick().await.expect("tick");
    assert_eq!(
        report.credited, 1,
        "the payment is credited again, as a replay"
    );
    assert_eq!(
        s.balances.of("k1"),
        5_000_000_000,
        "the key's balance is added to once"
    );
    assert_eq!(*s.balances.calls.lock().expect("lock"), 2);
    assert_eq!(
        s.key_bytes("k1").await,
        5_000_000_000,
        "the ledger posting is replayed"
    );
    s.assert_sound().await;
}

#[tokio::test]
async fn a_key_the_store_refuses_holds_up_no_other_payment() {
    let s = setup(1).await;
    *s.balances.refuse.lock().expect("lock") = Some("gone".into());
    let (bad, bad_addr) = s.invoice("gone", 3).await;
    let (good, good_addr) = s.invoice("k1", 4).await;
    s.evm.pay(s.payer, bad_addr, 3 * UNITS).await;
    s.evm.pay(s.payer, good_addr, 4 * UNITS).await;
    let report = s.gateway.tick().await.expect("tick");
    assert_eq!((report.credited, report.deferred), (1, 1), "{report:?}");
    assert_eq!(s.shown(&good.id).await.status, "credited");
    assert_eq!(
        s.shown(&bad.id).await.status,
        "confirmed",
        "posted, balance pending"
    );
    assert_eq!(s.balances.of("k1"), 4_000_000_000);
    // The store takes it again: credited once, the posting not doubled.
    *s.balances.refuse.lock().expect("lock") = None;
    assert_eq!(s.status(&bad.id).await, "credited");
    assert_eq!(s.balances.of("gone"), 3_000_000_000);
    assert_eq!(s.key_bytes("gone").await, 3_000_000_000);
    s.assert_sound().await;
}

#[tokio::test]
async fn a_reorg_before_confirmation_takes_the_payment_back() {
    let s = setup(3).await;
    let (inv, address) = s.invoice("k1", 10).await;
    assert_eq!(s.status(&inv.id).await, "new");
    let before = s.evm.snapshot().await;
    s.evm.pay(s.payer, address, 10 * UNITS).await;
    s.evm.mine(1).await;
    assert_eq!(s.status(&inv.id).await, "seen");
    // The payment's branch loses: a longer branch without it replaces it.
    s.evm.revert(before).await;
    s.evm.mine(4).await;
    let report = s.gateway.tick().await.expect("tick");
    assert!(report.reorgs >= 1, "the follower saw the reorg: {report:?}");
    let shown = s.gateway.invoice(&inv.id).await.expect("show");
    assert_eq!(shown.status, "new", "the invoice goes back");
    assert_eq!(shown.paid_units, "0");
    assert_eq!(s.balances.of("k1"), 0, "nothing credited");
    assert_eq!(s.key_bytes("k1").await, 0);

    // The real payment afterwards credits once.
    s.evm.pay(s.payer, address, 10 * UNITS).await;
    s.evm.mine(2).await;
    assert_eq!(s.status(&inv.id).await, "credited");
    assert_eq!(s.balances.of("k1"), 10_000_000_000);
    assert_eq!(s.key_bytes("k1").await, 10_000_000_000);
    s.assert_sound().await;
}

/// Ticks until invoice `id` has `status` (its expiry is on the wall clock).
async fn until_status(s: &Setup, id: &str, status: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while s.status(id).await != status {
        assert!(Instant::now() < deadline, "invoice never became {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn mismatched_payments_end_in_their_documented_states() {
    let s = setup(1).await;
    let (under, under_addr) = s.invoice("k1", 10).await;
    let (over, over_addr) = s.invoice("k2", 10).await;
    let (split, split_addr) = s.invoice("k3", 10).await;
    let late = s
        .gateway
        .create_invoice("k4", 10 * USD, Some(1))
        .await
        .expect("invoice");
    let late_addr: Address = late.address.parse().expect("address");

    s.evm.pay(s.payer, under_addr, 4 * UNITS).await;
    s.evm.pay(s.payer, over_addr, 15 * UNITS).await;
    s.evm
        .pay_twice(s.payer, split_addr, 6 * UNITS, 4 * UNITS)
        .await;
    // A payment to an address no invoice owns: not watched, never credited.
    s.evm
        .pay(s.payer, Address::repeat_byte(0x77), 3 * UNITS)
        .await;
    until_status(&s, &late.id, "expired").await;
    s.evm.pay(s.payer, late_addr, 10 * UNITS).await;
    s.gateway.tick().await.expect("tick");

    let (u, o, p, l) = (
        s.shown(&under.id).await,
        s.shown(&over.id).await,
        s.shown(&split.id).await,
        s.shown(&late.id).await,
    );
    assert_eq!(
        (u.status.as_str(), u.credited_bytes),
        ("underpaid", 4_000_000_000)
    );
    assert_eq!(
        (o.status.as_str(), o.credited_bytes),
        ("overpaid", 15_000_000_000)
    );
    assert_eq!(
        (p.status.as_str(), p.credited_bytes),
        ("credited", 10_000_000_000)
    );
    assert_eq!(p.paid_units, "10000000", "two payments in one transaction");
    assert_eq!(
        (l.status.as_str(), l.credited_bytes),
        ("paid_late", 10_000_000_000)
    );
    for (key, bytes) in [("k1", 4), ("k2", 15), ("k3", 10), ("k4", 10)] {
        assert_eq!(s.balances.of(key) as i64, bytes * 1_000_000_000, "{key}");
        assert_eq!(s.key_bytes(key).await, bytes * 1_000_000_000, "{key}");
    }
    let inflow = AccountRef::platform(Platform::ChainInflow, Asset::NanoUsd);
    assert_eq!(
        s.ledger.balance(&inflow).await.expect("inflow"),
        -39 * USD,
        "only payments to invoices entered the ledger"
    );
    s.assert_sound().await;
}

/// One request the webhook receiver got.
#[derive(Debug, Clone)]
struct Received {
    event_id: i64,
    signature: String,
    body: String,
}

/// A webhook receiver on a real socket that answers 500 to its first `fail` requests
/// and 200 after.
fn receiver(fail: usize) -> (String, Arc<std::sync::Mutex<Vec<Received>>>) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream);
            let (mut length, mut event_id, mut signature) = (0, 0, String::new());
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
                let (name, value) = line.split_once(':').unwrap_or(("", ""));
                let value = value.trim();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "turbo-event-id" => event_id = value.parse().unwrap_or(0),
                    "turbo-signature" => signature = value.to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0u8; length];
            let _ = reader.read_exact(&mut body);
            let n = {
                let mut got = seen.lock().expect("lock");
                got.push(Received {
                    event_id,
                    signature,
                    body: String::from_utf8_lossy(&body).into_owned(),
                });
                got.len()
            };
            let status = if n <= fail {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let mut stream = reader.into_inner();
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, got)
}

#[tokio::test]
async fn webhooks_are_signed_and_retried_until_taken() {
    use turbo_chain::webhook::{deliver_due, verify, WebhookConfig};
    let s = setup(1).await;
    let (url, got) = receiver(2);
    let config = WebhookConfig {
        url,
        secret: "whsec_test".into(),
        first_retry: Duration::from_millis(100),
    };
    let http = reqwest::Client::new();
    let (inv, address) = s.invoice("k1", 2).await;
    s.evm.pay(s.payer, address, 2 * UNITS).await;
    assert_eq!(s.status(&inv.id).await, "credited");
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut delivered = 0;
    while delivered == 0 {
        assert!(Instant::now() < deadline, "the event was never taken");
        delivered = deliver_due(s.ledger.pool(), &config, &http)
            .await
            .expect("deliver");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let got = got.lock().expect("lock").clone();
    assert_eq!(
        got.len(),
        3,
        "two failures, then taken on the third attempt"
    );
    for r in &got {
        assert_eq!(
            (r.event_id, &r.body),
            (got[0].event_id, &got[0].body),
            "a retry is the same event"
        );
        assert!(
            verify("whsec_test", r.event_id, &r.body, &r.signature),
            "signed"
        );
        assert!(!verify("another", r.event_id, &r.body, &r.signature));
    }
    let event: serde_json::Value = serde_json::from_str(&got[0].body).expect("json");
    assert_eq!(event["invoice_id"], inv.id.as_str());
    assert_eq!(event["status"], "credited");
    assert_eq!(
        deliver_due(s.ledger.pool(), &config, &http)
            .await
            .expect("deliver"),
        0,
        "a delivered event is not sent again"
    );
}
