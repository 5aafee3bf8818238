//! The money path end to end: a server with a PostgreSQL ledger, a node and a key;
//! parallel connections through the proxy; then the usage log has reached the ledger
//! exactly once: reconciliation is ok, bytes billed to the key = bytes credited to the
//! node = bytes the server relayed = bytes the store billed, and the per-minute rows
//! and the node's earnings say the same. The CLI prints the same reconciliation.

use std::io::{Read, Write};
use std::sync::Arc;

use serde_json::Value;

use crate::fixtures::postgres::Postgres;
use crate::fixtures::redis::Redis;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::targets::FileServer;
use crate::fixtures::{random_bytes, wait_for, Net, Options, CONNECTION_COST};

const CONNECTIONS: usize = 60;
const BODY: usize = 150_000;

fn ledger_url(pg: &Postgres) -> String {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(pg.database())
}

/// One GET through a fresh SOCKS5 tunnel, read to EOF; (sent, received).
fn get(net: &Net, target: std::net::SocketAddr) -> (u64, u64) {
    let Connect::Open(mut s) =
        socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", target.port())
    else {
        panic!("tunnel refused");
    };
    let req = b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n";
    s.write_all(req).expect("request");
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("response");
    (req.len() as u64, got.len() as u64)
}

fn n(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn billed_once(driver: &'static str, store: Option<&Redis>) {
    let pg = Postgres::start();
    let mut opts = match store {
        Some(r) => Options::redis(driver, r),
        None => Options::new(driver),
    };
    opts.config = format!(
        "lease_ttl = \"2s\"\nlease_checkpoint = \"300ms\"\nlease_idle_release = \"300ms\"\nledger = \"{}\"\n",
        ledger_url(&pg)
    );
    let net = Arc::new(Net::start_with(opts));
    let target = FileServer::start(Arc::new(random_bytes(BODY, 5))).addr;
    let workers: Vec<_> = (0..CONNECTIONS)
        .map(|_| {
            let net = net.clone();
            std::thread::spawn(move || get(&net, target))
        })
        .collect();
    let (up, down) = workers
        .into_iter()
        .map(|w| w.join().expect("client"))
        .fold((0, 0), |(u, d), (a, b)| (u + a, d + b));
    assert!(down >= (CONNECTIONS * BODY) as u64, "every body arrived");
    let key = wait_for("the key's leases to settle", || {
        let k = net.key_info();
        (n(&k, "leased") == 0).then_some(k)
    });
    let billed = n(&key, "bytes_up") + n(&key, "bytes_down");
    let cost = CONNECTIONS as u64 * CONNECTION_COST;
    assert_eq!(
        billed,
        up + down + cost,
        "the store billed the bytes the clients moved, plus the connection cost"
    );
    let r = wait_for("the ledger to reconcile with every byte", || {
        let r = net.api_get("/api/ledger/reconcile");
        (r["ok"] == Value::Bool(true) && n(&r, "node_credited_bytes") == billed).then_some(r)
    });
    assert_eq!(n(&r, "customer_debited_bytes"), billed);
    assert_eq!(
        n(&r, "relayed_bytes"),
        billed,
        "the relay's own count agrees"
    );
    assert_eq!((n(&r, "unsettled_bytes"), n(&r, "mismatch_bytes")), (0, 0));
    let node = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("node id")
        .to_owned();
    let earnings = net.api_get(&format!("/api/nodes/{node}/earnings"));
    assert_eq!(n(&earnings, "carried_bytes"), billed);
    let usage = net.api_get(&format!("/api/keys/{}/usage", net.key_id));
    let rows = usage["minutes"].as_array().expect("minutes");
    let per_minute: u64 = rows.iter().map(|m| n(m, "up") + n(m, "down")).sum();
    assert_eq!(per_minute, billed, "the per-minute rows hold every byte");
    let conns: u64 = rows.iter().map(|m| n(m, "conns")).sum();
    assert_eq!(conns, CONNECTIONS as u64);
    let printed: Value = serde_json::from_str(&net.cli(&["ledger", "reconcile"])).expect("json");
    assert_eq!(printed["ok"], Value::Bool(true));
    let dry: Value =
        serde_json::from_str(&net.cli(&["payouts", "run", "--dry-run"])).expect("json");
    assert_eq!(
        dry["planned"],
        serde_json::json!([]),
        "nothing earned before the day ends"
    );
}

fn billed_once_on_memory(driver: &'static str) {
    billed_once(driver, None);
}

fn billed_once_on_redis(driver: &'static str) {
    let redis = Redis::start();
    billed_once(driver, Some(&redis));
}

crate::both_drivers!(billed_once_on_memory, billed_once_on_redis);
