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
    // The node hears today's earnings at the base rate ($0.10/GB, truncated to a
    // nano-USD) with its score.
    let nano = billed / 10;
    let want = format!(
        "${}.{:06} today",
        nano / 1_000_000_000,
        nano % 1_000_000_000 / 1000
    );
    wait_for("the node's status to show today's earnings", || {
        net.node_status("main")
            .lines()
            .any(|l| l.starts_with("earnings:") && l.contains(&want))
            .then_some(())
    });
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

/// Two servers on one Redis and one ledger, each with a node; 1,000 connections spread
/// over both at random; server A SIGKILLed part-way. Afterwards the ledger reconciles,
/// bills the key exactly what the store billed it and credits the nodes as much, and
/// replaying every usage record twice changes nothing.
fn a_killed_server_loses_no_money(driver: &'static str) {
    const TOTAL: usize = 1000;
    let pg = Postgres::start();
    let url = ledger_url(&pg);
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.credits = "10GB";
    opts.config = format!(
        "lease_ttl = \"2s\"\nlease_checkpoint = \"300ms\"\nlease_idle_release = \"300ms\"\nledger = \"{url}\"\n"
    );
    let a = Arc::new(std::sync::Mutex::new(Net::start_with(opts)));
    let b = Arc::new(a.lock().unwrap().peer());
    let (a_socks, key) = {
        let a = a.lock().unwrap();
        (a.socks, a.key.clone())
    };
    let target = FileServer::start(Arc::new(random_bytes(20_000, 8))).addr;
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let kill_at = 200 + (std::process::id() as usize % 400);
    let workers: Vec<_> = (0..8)
        .map(|w| {
            let (b, key, done) = (b.clone(), key.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seed = 0x9e37_79b9_7f4a_7c15u64 ^ w as u64;
                for _ in 0..TOTAL / 8 {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    let at = if seed & 1 == 0 { a_socks } else { b.socks };
                    // curl: a connection to the killed server fails cleanly.
                    let _ = crate::fixtures::curl(&[
                        "-s",
                        "-o",
                        "/dev/null",
                        "--max-time",
                        "20",
                        "-x",
                        &format!("socks5h://e2e:{key}@{at}"),
                        &format!("http://127.0.0.1:{}/f", target.port()),
                    ]);
                    done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    wait_for("connections before the kill", || {
        (done.load(std::sync::atomic::Ordering::Relaxed) >= kill_at).then_some(())
    });
    {
        let mut a = a.lock().unwrap();
        a.signal_server(libc::SIGKILL);
        let _ = a.server.wait();
    }
    for w in workers {
        w.join().expect("client");
    }
    let key_info = wait_for("A's leases to be reclaimed", || {
        let k = b.key_info();
        (n(&k, "leased") == 0).then_some(k)
    });
    let billed = n(&key_info, "bytes_up") + n(&key_info, "bytes_down");
    let r = wait_for("the ledger to reconcile with the store", || {
        let r = b.api_get("/api/ledger/reconcile");
        (r["ok"] == Value::Bool(true) && n(&r, "customer_debited_bytes") == billed).then_some(r)
    });
    assert_eq!(
        n(&r, "node_credited_bytes"),
        billed,
        "billed = carried, to the byte"
    );
    let carried: u64 = b
        .api_get("/api/nodes")
        .as_array()
        .expect("nodes")
        .iter()
        .map(|n| n["bytes_relayed"].as_u64().unwrap_or(0))
        .sum();
    assert_eq!(carried, billed, "the store's node counters agree");
    let replayed = replay_twice(&url);
    assert_eq!(replayed, 0, "no replayed record is new");
    let again = b.api_get("/api/ledger/reconcile");
    assert_eq!(again["ok"], Value::Bool(true));
    assert_eq!(
        n(&again, "node_credited_bytes"),
        billed,
        "replays changed nothing"
    );
    println!("{TOTAL} connections, A killed after {kill_at}: {billed} bytes billed = carried");
}

/// Reads every usage record from the ledger and records them all again, twice; returns
/// how many were new.
fn replay_twice(url: &str) -> u64 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls).await.expect("pg");
        tokio::spawn(conn);
        let rows = client
            .query("SELECT server, lease, seq, node, key_id, minute, up, down, conns FROM usage_records", &[])
            .await
            .expect("records");
        let records: Vec<turbo_ledger::UsageRecord> = rows
            .iter()
            .map(|r| turbo_ledger::UsageRecord {
                server: r.get(0),
                lease: r.get(1),
                seq: r.get(2),
                node: r.get(3),
                key_id: r.get(4),
                minute: r.get(5),
                up: r.get(6),
                down: r.get(7),
                conns: r.get(8),
            })
            .collect();
        assert!(records.len() > 10, "{} records", records.len());
        let ledger = turbo_ledger::Ledger::connect(url).await.expect("ledger");
        let mut new = 0;
        for _ in 0..2 {
            new += ledger.record_usage(&records).await.expect("replay");
            assert_eq!(ledger.settle(100_000).await.expect("settle").records, 0);
        }
        new
    })
}

fn billed_once_on_memory(driver: &'static str) {
    billed_once(driver, None);
}

fn billed_once_on_redis(driver: &'static str) {
    let redis = Redis::start();
    billed_once(driver, Some(&redis));
}

crate::both_drivers!(
    billed_once_on_memory,
    billed_once_on_redis,
    a_killed_server_loses_no_money
);
