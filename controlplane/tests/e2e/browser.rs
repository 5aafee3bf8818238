//! The dashboard in a real headless Chromium: a customer signs up, creates a key (shown
//! once), and watches its balance and live throughput move while curl relays through
//! the key, without a reload; a runner adds a node with the join command the page
//! gives, watches it come online without a reload, and after the day's settlement
//! sees the day itemised on the node's page. Each flow saves a screenshot
//! under `target/screenshots/` and checks it is not blank.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::fixtures::browser::Browser;
use crate::fixtures::targets::FileServer;
use crate::fixtures::{curl, random_bytes, Net, Options};

const PASSWORD: &str = "correct horse battery";
const BODY: usize = 300_000;

/// Polls `f` every 100 ms for up to 30 s.
pub(crate) fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub(crate) fn sign_up(b: &Browser, api: &str, email: &str, runner: bool) {
    b.goto(&format!("{api}/signup"));
    b.fill("#email", email);
    b.fill("#password", PASSWORD);
    if runner {
        b.js("document.querySelector('input[value=runner]').click(); return 1");
    }
    b.click_button("Sign up");
    eventually("signing up to land", || {
        (!b.url().ends_with("/signup")).then_some(())
    });
}

/// Clicks `label` and waits for `css` on the page it leads to.
fn click_and_wait(b: &Browser, label: &str, css: &str) -> String {
    b.click_button(label);
    eventually(&format!("{css} after {label}"), || b.text(css))
}

#[test]
fn a_customer_watches_their_balance_move_live() {
    let net = Net::start("legacy");
    let target = FileServer::start(Arc::new(random_bytes(BODY, 3))).addr;
    let b = Browser::start();
    sign_up(&b, &net.api, "alice@example.com", false);
    assert!(b.url().ends_with("/keys"), "{}", b.url());
    b.fill("#name", "scraper");
    let secret = click_and_wait(&b, "Create key", "#secret");
    assert!(secret.starts_with("tk_"), "{secret}");
    let id = b.text("td code").expect("the key id");
    net.api_post(
        &format!("/api/keys/{id}/credits"),
        serde_json::json!({"credits": "10MB"}),
    );
    let cell = format!("[data-balance=\"{id}\"]");
    eventually("the top-up to show without a reload", || {
        (b.text(&cell)? == "10.0 MB").then_some(())
    });
    b.js("window.turboNoReload = 42; return 1");
    // The page's own curl line, as a customer would paste it.
    let lines = b.text("#curl-lines").expect("curl lines");
    let proxy = lines
        .split_whitespace()
        .find(|w| w.starts_with("http://user:"))
        .expect("an http proxy URL")
        .to_owned();
    assert!(
        proxy.contains(&secret) && proxy.ends_with(&net.http.to_string()),
        "{proxy}"
    );
    for _ in 0..3 {
        let out = curl(&[
            "-s",
            "-f",
            "--proxy",
            &proxy,
            &format!("http://127.0.0.1:{}/f", target.port()),
        ]);
        assert_eq!(out.stdout.len(), BODY, "relayed through the new key");
    }
    let shown = eventually("the balance to go down live", || {
        let t = b.text(&cell)?;
        (t != "10.0 MB").then_some(t)
    });
    assert!(shown.ends_with("MB") || shown.ends_with("KB"), "{shown}");
    let rate = b.text("#rate").expect("rate");
    assert_ne!(rate, "waiting for traffic", "the live chart moved");
    assert_eq!(b.js("return window.turboNoReload"), 42, "no reload");
    b.screenshot("customer-keys");
    // After a reload, the recent connections are counted by outcome and country.
    // Exactly the three fetches, all counted as one outcome (they all ended cleanly).
    let counted = eventually("the connections to be counted", || {
        b.goto(&format!("{}/keys", net.api));
        let rows = b.js(
            "return Array.from(document.querySelectorAll('#outcomes tbody tr'))\
             .map(r => [r.cells[0].textContent, Number(r.cells[1].textContent)])",
        );
        let rows = rows.as_array()?.clone();
        let total: u64 = rows.iter().filter_map(|r| r[1].as_u64()).sum();
        (total == 3).then_some(rows)
    });
    assert_eq!(
        counted.len(),
        1,
        "one outcome for three clean fetches: {counted:?}"
    );
    revocation_shows(&b, &net, &id);
    b.assert_no_console_errors();
}

/// A revocation by the operator shows on the keys page without a reload.
fn revocation_shows(b: &Browser, net: &Net, id: &str) {
    net.api_post(&format!("/api/keys/{id}/revoke"), serde_json::json!({}));
    eventually("the revocation to show", || {
        (b.text(&format!("[data-state=\"{id}\"]"))? == "revoked").then_some(())
    });
}

#[test]
fn a_runner_watches_their_node_come_online_and_sees_its_earnings() {
    let pg = crate::fixtures::postgres::Postgres::start();
    let rt = crate::payments::runtime();
    let ledger_url = rt.block_on(pg.database());
    let mut net = Net::start_with(Options {
        node: false,
        config: format!("ledger = \"{ledger_url}\"\n"),
        ..Options::new("legacy")
    });
    let b = Browser::start();
    b.goto(&format!("{}/login", net.api));
    b.js("console.error('console probe'); return 1");
    let probe = b.console_errors();
    assert!(
        format!("{probe:?}").contains("console probe"),
        "the console is read: {probe:?}"
    );
    sign_up(&b, &net.api, "carol@example.com", true);
    assert!(b.url().ends_with("/nodes"), "{}", b.url());
    let command = click_and_wait(&b, "Add a node", "#join-command");
    let join = command
        .strip_prefix("turbo-node run --join ")
        .expect("the command")
        .to_owned();
    let id = b.text("td code").expect("the node id");
    let cell = format!("[data-online=\"{id}\"]");
    assert_eq!(b.text(&cell).as_deref(), Some("offline"));
    b.js("window.turboNoReload = 7; return 1");
    let node = net
        .node_command(&join, &net.node_state(&id))
        .spawn()
        .expect("spawn turbo-node");
    net.nodes.push((id.clone(), node));
    eventually("the node to show online without a reload", || {
        (b.text(&cell)? == "online").then_some(())
    });
    let score = b.text(&format!("[data-score=\"{id}\"]")).expect("score");
    assert!(score.parse::<f64>().is_ok(), "a live score: {score}");
    assert_eq!(b.js("return window.turboNoReload"), 7, "no reload");
    b.screenshot("runner-nodes");
    b.assert_no_console_errors();
    let carried = carry_and_settle(&net, &id);
    rewarded_day_shows(&b, &net, &rt, &ledger_url, &id, carried);
}

/// Relays three bodies through the runner's node and waits for the ledger to hold
/// every byte of them; returns the bytes the node carried.
fn carry_and_settle(net: &Net, node: &str) -> u64 {
    let target = FileServer::start(Arc::new(random_bytes(BODY, 4))).addr;
    for _ in 0..3 {
        let out = curl(&[
            "-s",
            "-f",
            "--proxy",
            &net.proxy_url("http"),
            &format!("http://127.0.0.1:{}/f", target.port()),
        ]);
        assert_eq!(out.stdout.len(), BODY, "relayed through the runner's node");
    }
    eventually("the ledger to settle the node's bytes", || {
        let r = net.api_get("/api/ledger/reconcile");
        let e = net.api_get(&format!("/api/nodes/{node}/earnings"));
        let carried = e["carried_bytes"].as_u64()?;
        let settled = r["ok"] == true && r["unsettled_bytes"] == 0;
        (settled && carried >= 3 * BODY as u64).then_some(carried)
    })
}

/// Runs the day's settlement (as the server does after midnight UTC) and checks the
/// runner's node page itemises it: the day, its bytes, base ($0.10/GB) and bonus.
fn rewarded_day_shows(
    b: &Browser,
    net: &Net,
    rt: &tokio::runtime::Runtime,
    ledger_url: &str,
    node: &str,
    carried: u64,
) {
    let ledger = rt
        .block_on(turbo_ledger::Ledger::connect(ledger_url))
        .expect("ledger");
    let version = rt
        .block_on(ledger.adopt_policy(&turbo_ledger::RewardPolicy::default()))
        .expect("the server's policy");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let today = (now / 86_400) as i64;
    let rewarded = rt
        .block_on(ledger.reward_day(today, version))
        .expect("reward the day");
    assert_eq!(rewarded.nodes, 1, "{rewarded:?}");
    b.goto(&format!("{}/nodes/{node}", net.api));
    let row = eventually("the rewarded day", || {
        let cells = b.js("const r = document.querySelector('table tbody tr'); \
             return r ? Array.from(r.cells).map(c => c.textContent) : null");
        cells.as_array().cloned()
    });
    let (y, m, d) = turbo_ledger::civil(today);
    let nano = carried / 10;
    let base = format!(
        "${}.{:06}",
        nano / 1_000_000_000,
        nano % 1_000_000_000 / 1000
    );
    assert_eq!(row[0], format!("{y:04}-{m:02}-{d:02}"), "{row:?}");
    assert_eq!(row[2], base.as_str(), "base at $0.10/GB: {row:?}");
    assert!(
        row[3].as_str().is_some_and(|t| t.starts_with('$')),
        "{row:?}"
    );
    let shown = b.text("#available").expect("available");
    assert!(shown.starts_with('$') && shown != "$0.000000", "{shown}");
    b.screenshot("runner-earnings");
    b.assert_no_console_errors();
}

#[test]
fn a_customer_buys_credits_and_watches_the_invoice_turn_credited() {
    use crate::fixtures::evm::Evm;
    use crate::fixtures::postgres::Postgres;
    use crate::fixtures::web::WebClient;
    use crate::payments::{chain_config, runtime, UNITS};

    let rt = runtime();
    let pg = Postgres::start();
    let evm = rt.block_on(Evm::start());
    let payer = evm.accounts[1];
    rt.block_on(evm.mint(payer, 100 * UNITS));
    let mut opts = Options::new("legacy");
    opts.node = false;
    opts.config = chain_config(&rt.block_on(pg.database()), &evm);
    let net = Net::start_with(opts);
    let b = Browser::start();
    sign_up(&b, &net.api, "alice@example.com", false);
    b.fill("#name", "wallet");
    click_and_wait(&b, "Create key", "#secret");
    let key = b.text("td code").expect("the key id");
    b.goto(&format!("{}/buy", net.api));
    b.fill("#usd", "25");
    click_and_wait(&b, "Create invoice", "#address");
    let url = b.url();
    let id = url.rsplit('/').next().expect("invoice id").to_owned();
    assert!(id.starts_with("inv_"), "{url}");
    let cell = format!("[data-invoice=\"{id}\"]");
    assert_eq!(b.text(&cell).as_deref(), Some("new"));
    let qr =
        b.js("const i = document.querySelector('img.qr'); return i.complete && i.naturalWidth");
    assert!(
        qr.as_u64().is_some_and(|w| w > 0),
        "the QR code renders: {qr}"
    );
    let address = b.text("#address").expect("deposit address");

    let mut mallory = WebClient::new(&net.api);
    mallory.sign_up("mallory@example.com", PASSWORD, "customer");
    assert_eq!(
        mallory.get(&format!("/invoices/{id}")).status,
        404,
        "not hers"
    );
    let csrf = mallory.get("/buy").csrf().expect("csrf");
    let foreign = mallory.post("/buy", &[("key", &key), ("usd", "5"), ("csrf", &csrf)]);
    assert_eq!(foreign.status, 404, "no invoice for another's key");

    b.js("window.turboNoReload = 25; return 1");
    rt.block_on(evm.pay(payer, address.parse().expect("address"), 25 * UNITS));
    rt.block_on(evm.mine(1));
    eventually("the invoice to turn credited without a reload", || {
        (b.text(&cell)? == "credited").then_some(())
    });
    eventually("the credited bytes to show", || {
        (b.text(&format!("[data-credited=\"{id}\"]"))? == "25.0 GB").then_some(())
    });
    assert_eq!(b.js("return window.turboNoReload"), 25, "no reload");
    b.screenshot("customer-invoice");
    b.assert_no_console_errors();
    let balance = net.api_get(&format!("/api/keys/{key}"))["balance"].as_u64();
    assert_eq!(balance, Some(25_000_000_000), "$25 at $1/GB, once");
}
