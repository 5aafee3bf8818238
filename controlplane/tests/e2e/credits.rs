//! Credits, leases and usage accounting against a real Redis: a dry key stops its
//! transfer, parallel connections are billed to the byte, revocations and top-ups
//! cross servers, a killed server's leases come back, a Redis outage behaves as
//! documented, and every connection leaves an exact feature record.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use turbo_controlplane::store::{RedisStore, Store};

use crate::fixtures::redis::Redis;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::targets::{self, FileServer};
use crate::fixtures::{curl, random_bytes, wait_for, Net, Options};

/// Fast lease turnover for tests: usage is checkpointed every 300 ms and idle leases
/// are released after 300 ms.
const FAST_LEASES: &str =
    "lease_ttl = \"2s\"\nlease_checkpoint = \"300ms\"\nlease_idle_release = \"300ms\"\n";

use crate::fixtures::CONNECTION_COST;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

/// Waits until no lease holds any of the key's credit.
fn settled(net: &Net) -> Value {
    wait_for("leases of the key to settle", || {
        let k = net.key_info();
        (u(&k, "leased") == 0).then_some(k)
    })
}

/// Opens a SOCKS5 tunnel to `target` with `key`; panics if refused.
fn tunnel(net: &Net, key: &str, target: SocketAddr) -> TcpStream {
    match socks::connect(net.socks, "e2e", key, "127.0.0.1", target.port()) {
        Connect::Open(s) => s,
        other => panic!("tunnel refused: {other:?}"),
    }
}

/// Sends an HTTP GET through a fresh tunnel and reads to EOF. Returns (bytes sent after
/// the handshake, bytes received after it). A refused tunnel counts as (0, 0).
fn get_through(net: &Net, key: &str, target: SocketAddr) -> (u64, u64) {
    let mut s = match socks::connect(net.socks, "e2e", key, "127.0.0.1", target.port()) {
        Connect::Open(s) => s,
        _ => return (0, 0),
    };
    let req = b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n";
    let sent = match s.write_all(req) {
        Ok(()) => req.len() as u64,
        Err(_) => 0,
    };
    let mut got = 0u64;
    let mut buf = [0u8; 64 * 1024];
    while let Ok(n) = s.read(&mut buf) {
        if n == 0 {
            break;
        }
        got += n as u64;
    }
    (sent, got)
}

fn dry_key_stops_the_transfer(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = FAST_LEASES.into();
    opts.credits = "1000000";
    let net = Net::start_with(opts);
    let target = FileServer::start(Arc::new(random_bytes(20 << 20, 3)));
    let out = net.dir.path().join("partial.bin");
    let url = format!("http://127.0.0.1:{}/big", target.addr.port());
    let res = curl(&[
        "-x",
        &net.proxy_url("socks5h"),
        "-o",
        &out.to_string_lossy(),
        &url,
    ]);
    assert!(
        !res.status.success(),
        "a 20 MB download on 1 MB of credit must stop"
    );
    let body = std::fs::metadata(&out).map_or(0, |m| m.len());
    let k = settled(&net);
    let used = u(&k, "bytes_up") + u(&k, "bytes_down");
    println!(
        "1 MB key: curl got {body} body bytes; billed {used}; balance {}",
        u(&k, "balance")
    );
    assert!(body <= 1_000_000, "delivered {body} > credit");
    assert_eq!(u(&k, "overdraft"), 0, "no byte beyond the credit");
    assert_eq!(
        used + u(&k, "balance"),
        1_000_000,
        "every credit byte accounted"
    );
    assert_eq!(
        u(&k, "balance"),
        0,
        "a transfer larger than the credit spends all of it"
    );
    let nodes = net.api_get("/api/nodes");
    assert_eq!(
        u(&nodes[0], "bytes_relayed"),
        used,
        "billed bytes are node bytes"
    );
}

fn parallel_connections_bill_to_the_byte(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = FAST_LEASES.into();
    opts.credits = "5000000";
    let net = Arc::new(Net::start_with(opts));
    let target = FileServer::start(Arc::new(random_bytes(200_000, 9))).addr;
    let workers: Vec<_> = (0..100)
        .map(|_| {
            let net = net.clone();
            std::thread::spawn(move || get_through(&net, &net.key, target))
        })
        .collect();
    let (mut sent, mut received) = (0, 0);
    for w in workers {
        let (s, r) = w.join().expect("worker");
        sent += s;
        received += r;
    }
    let k = settled(&net);
    let (up, down) = (u(&k, "bytes_up"), u(&k, "bytes_down"));
    println!(
        "100 connections on 5 MB: customers received {received}, billed down {down} up {up}, balance {}",
        u(&k, "balance")
    );
    assert_eq!(down, received, "every byte delivered is billed, once");
    assert!(
        up <= sent + 100 * CONNECTION_COST,
        "up {up} vs sent {sent} + costs"
    );
    assert!(up + down <= 5_000_000, "no double spend");
    assert_eq!(u(&k, "overdraft"), 0);
    assert_eq!(up + down + u(&k, "balance"), 5_000_000);
    assert!(received > 4_000_000, "the credit was usable: {received}");
    let nodes = net.api_get("/api/nodes");
    assert_eq!(u(&nodes[0], "bytes_relayed"), up + down);
}

fn revocation_and_top_up_cross_servers(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = FAST_LEASES.into();
    let a = Net::start_with(opts);
    let b = a.peer();
    let hold = targets::hold();

    // A top-up through A is usable on B.
    let (empty_key, empty_id) = a.create_key("0");
    match socks::connect(b.socks, "e2e", &empty_key, "127.0.0.1", hold.port()) {
        Connect::Refused(code) => assert_eq!(code, 2, "no credit: not allowed by ruleset"),
        other => panic!("an empty key must be refused, got {other:?}"),
    }
    a.api_post(
        &format!("/api/keys/{empty_id}/credits"),
        serde_json::json!({"credits": "1MB"}),
    );
    let started = Instant::now();
    wait_for("the top-up to reach server B", || {
        match socks::connect(b.socks, "e2e", &empty_key, "127.0.0.1", hold.port()) {
            Connect::Open(_) => Some(()),
            _ => None,
        }
    });
    println!("top-up usable on B after {:?}", started.elapsed());

    // A revocation through A closes B's open tunnel and refuses new ones within 1 s.
    let mut open = tunnel(&b, &b.key, hold);
    let mut line = [0u8; 6];
    open.read_exact(&mut line).expect("greeting");
    open.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    let revoked_at = Instant::now();
    a.api_post(&format!("/api/keys/{}/revoke", a.key_id), Value::Null);
    let mut buf = [0u8; 16];
    let closed = match open.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    };
    let took = revoked_at.elapsed();
    println!("open tunnel on B closed {took:?} after the revocation on A");
    assert!(
        closed,
        "the open tunnel on B must close within 1 s of the revocation"
    );
    match socks::authenticate(b.socks, "e2e", &b.key) {
        Err(status) => assert_ne!(status, 0),
        Ok(_) => panic!("a revoked key must be refused on B"),
    }
}

fn killed_server_leases_are_reclaimed(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = FAST_LEASES.into();
    opts.credits = "100MB";
    let mut a = Net::start_with(opts);
    let b = a.peer_with(Options {
        node: false,
        ..a.opts.clone()
    });
    let target = targets::send_then_hold(2_000_000);
    let mut t = tunnel(&a, &a.key, target);
    let mut got = vec![0u8; 2_000_000];
    t.read_exact(&mut got).expect("2 MB through A");
    let before = wait_for("A's checkpoint of the 2 MB", || {
        let k = a.key_info();
        (u(&k, "bytes_down") >= 2_000_000).then_some(k)
    });
    assert!(
        u(&before, "leased") > 0,
        "A holds a lease while the tunnel is open"
    );
    a.signal_server(libc::SIGKILL);
    let _ = a.server.wait();
    let killed = Instant::now();
    let k = wait_for("B to reclaim A's leases", || {
        let k = b.key_info();
        (u(&k, "leased") == 0).then_some(k)
    });
    println!(
        "A killed holding {} leased bytes; reclaimed after {:?}",
        u(&before, "leased"),
        killed.elapsed()
    );
    let used = u(&k, "bytes_up") + u(&k, "bytes_down");
    assert_eq!(
        u(&k, "bytes_down"),
        2_000_000,
        "billed exactly what was delivered"
    );
    assert_eq!(
        used + u(&k, "balance"),
        100_000_000,
        "the balance ends correct"
    );
}

fn redis_outage_keeps_leased_tunnels_and_fails_new_keys_closed(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = FAST_LEASES.into();
    let net = Net::start_with(opts);
    let (fresh_key, _) = net.create_key("1GB");
    let target = targets::endless();
    let mut t = tunnel(&net, &net.key, target);
    let mut buf = vec![0u8; 256 * 1024];
    t.read_exact(&mut buf).expect("bytes before the outage");
    redis.pause();
    // The open tunnel keeps going on its lease, then closes when the lease is spent.
    let mut after = 0u64;
    t.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    loop {
        match t.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => after += n as u64,
        }
    }
    println!(
        "during the outage the open tunnel relayed {after} more bytes on its lease, then closed"
    );
    assert!(after > 0, "a tunnel holding a lease keeps going");
    // A key this server never saw fails closed.
    let started = Instant::now();
    match socks::authenticate(net.socks, "e2e", &fresh_key) {
        Err(status) => assert_ne!(status, 0),
        Ok(_) => panic!("a new key must fail closed while Redis is down"),
    }
    println!("new key refused after {:?}", started.elapsed());
    redis.resume();
    let small = FileServer::start(Arc::new(vec![1; 10])).addr;
    wait_for("service to return with Redis", || {
        let (_, got) = get_through(&net, &fresh_key, small);
        (got > 0).then_some(())
    });
    // Usage reported while Redis was away was retried, not lost: the key was billed
    // at least what the client received.
    let k = settled(&net);
    assert!(u(&k, "bytes_down") >= 256 * 1024 + after);
    assert_eq!(u(&k, "overdraft"), 0);
}

fn feature_records_match_their_connections(driver: &'static str) {
    let redis = Redis::start();
    let opts = Options::redis(driver, &redis);
    let net = Net::start_with(opts);
    let echo = targets::echo();
    let mut expected = Vec::new();
    for size in [1000usize, 50_000, 300_000] {
        let mut s = tunnel(&net, &net.key, echo);
        let data = random_bytes(size, size as u64);
        s.write_all(&data).expect("send");
        let mut back = vec![0u8; size];
        s.read_exact(&mut back).expect("echo");
        assert_eq!(back, data);
        drop(s);
        expected.push((size, echo.port(), "ok"));
    }
    let closed_port = crate::fixtures::free_port();
    match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", closed_port) {
        Connect::Refused(5) => {}
        other => panic!("expected connection refused, got {other:?}"),
    }
    expected.push((0, closed_port, "connection_refused"));
    let store = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let store = RedisStore::connect(&redis.url()).await.expect("redis");
            wait_for_records(&store, expected.len()).await
        });
    let node_id = net.api_get("/api/nodes")[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for rec in &store {
        let get = |k: &str| {
            rec.iter()
                .find(|(f, _)| f == k)
                .map(|(_, v)| v.as_str())
                .unwrap()
        };
        let (size, port, outcome) = expected
            .iter()
            .find(|(size, port, _)| {
                get("port") == port.to_string() && get("bytes_up") == size.to_string()
            })
            .unwrap_or_else(|| panic!("record matches no connection: {rec:?}"));
        assert_eq!(get("key"), net.key_id);
        assert_eq!(get("node"), node_id);
        assert_eq!(get("frontend"), "socks5");
        assert_eq!(get("bytes_down"), size.to_string());
        assert_eq!(get("outcome"), *outcome);
        assert_eq!(get("port"), port.to_string());
        if *size > 0 {
            assert!(get("reads_up").parse::<u64>().unwrap() >= 1);
            assert!(!get("connect_ms").is_empty());
        }
    }
    let m = net.metrics();
    assert!(
        m.contains("turbo_connections_total{frontend=\"socks5\",outcome=\"ok\"} 3"),
        "{m}"
    );
    assert!(m.contains("turbo_connect_seconds_bucket"));
    assert!(m.contains("turbo_nodes_connected 1"));
    assert!(m.contains("turbo_lease_grants_total"));
}

async fn wait_for_records(store: &RedisStore, n: usize) -> Vec<Vec<(String, String)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let recs = store.recent_connections(n).await.expect("xrange");
        if recs.len() == n {
            return recs;
        }
        assert!(Instant::now() < deadline, "only {} records", recs.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn unknown_key_burst_is_coalesced_and_limited(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = "auth_fail_limit = 1000000\n".into();
    let net = Arc::new(Net::start_with(opts));
    let burst = |net: &Arc<Net>| {
        let workers: Vec<_> = (0..1000)
            .map(|_| {
                let net = net.clone();
                std::thread::spawn(move || {
                    socks::authenticate(net.socks, "e2e", "tk_unknown").err()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("worker"))
            .filter(|status| status.is_some_and(|s| s != 0))
            .count()
    };
    let refused = burst(&net);
    assert_eq!(refused, 1000, "every unknown-key connection is refused");
    let lookups = net.metric("turbo_auth_lookups_total{result=\"control_plane\"}");
    println!("1000 connections with one unknown key: {lookups} control-plane lookups");
    assert!(lookups <= 4.0, "{lookups} lookups for one unknown key");
}

fn failed_auth_is_rate_limited_per_ip(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = "auth_fail_limit = 5\nauth_negative_ttl = \"1ms\"\n".into();
    let net = Net::start_with(opts);
    for i in 0..40 {
        let _ = socks::authenticate(net.socks, "e2e", &format!("tk_guess{i}"));
    }
    let limited = net.metric("turbo_auth_failures_total{reason=\"rate_limited\"}");
    let lookups = net.metric("turbo_auth_lookups_total{result=\"control_plane\"}");
    println!("40 guesses from one IP: {lookups} lookups, {limited} refused without one");
    assert!(
        limited >= 20.0,
        "guesses beyond the limit are refused without a lookup"
    );
    assert!(lookups <= 10.0);
    // The real key from the same address is refused while limited: that is the price of
    // the limit, and it ends with the window.
    let resp = curl(&[
        "-x",
        &format!("http://e2e:tk_wrong@{}", net.http),
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://127.0.0.1:1/",
    ]);
    assert_eq!(String::from_utf8_lossy(&resp.stdout), "429");
}

fn graceful_shutdown_settles_leases(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = "lease_ttl = \"60s\"\nshutdown_grace = \"500ms\"\n".into();
    opts.credits = "100MB";
    let mut net = Net::start_with(opts);
    let target = targets::send_then_hold(500_000);
    let mut t = tunnel(&net, &net.key, target);
    let mut got = vec![0u8; 500_000];
    t.read_exact(&mut got).expect("bytes");
    let leased = |r: &Redis, id: &str| -> u64 {
        r.cli(&[
            "HGET",
            &turbo_controlplane::store::redis::schema::key(id),
            "leased",
        ])
        .and_then(|v| v.parse().ok())
        .expect("leased field")
    };
    assert!(leased(&redis, &net.key_id) > 0, "a lease is out");
    net.signal_server(libc::SIGTERM);
    let status = net.server.wait().expect("server exits");
    assert!(status.success(), "clean exit on SIGTERM: {status:?}");
    assert_eq!(
        leased(&redis, &net.key_id),
        0,
        "every lease settled before exit"
    );
    let field = |f: &str| -> u64 {
        redis
            .cli(&[
                "HGET",
                &turbo_controlplane::store::redis::schema::key(&net.key_id),
                f,
            ])
            .and_then(|v| v.parse().ok())
            .expect("field")
    };
    assert_eq!(field("bytes_down"), 500_000);
    assert_eq!(field("credits") + 500_000 + CONNECTION_COST, 100_000_000);
}

fn keys_are_managed_from_the_cli(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let net = Net::start_with(opts);
    let key = net.cli(&["keys", "create", "--name", "cli", "--credits", "1MB"]);
    assert!(key.starts_with("tk_"));
    let list = net.cli(&["keys", "list"]);
    let listed: Vec<Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    assert!(!list.contains("tk_"), "listing never shows a key");
    let id = listed
        .iter()
        .find(|k| k["name"] == "cli")
        .and_then(|k| k["id"].as_str())
        .expect("listed")
        .to_owned();
    let topped: Value =
        serde_json::from_str(&net.cli(&["keys", "top-up", &id, "--credits", "2MB"])).unwrap();
    assert_eq!(u(&topped, "balance"), 3_000_000);
    let revoked: Value = serde_json::from_str(&net.cli(&["keys", "revoke", &id])).unwrap();
    assert_eq!(revoked["revoked"], true);
    let shown: Value = serde_json::from_str(&net.cli(&["keys", "show", &id])).unwrap();
    assert_eq!(shown["revoked"], true);
    assert_eq!(u(&shown, "balance"), 3_000_000);
}

crate::both_drivers!(dry_key_stops_the_transfer);

mod io_uring_only {
    #[test]
    fn parallel_connections_bill_to_the_byte() {
        super::parallel_connections_bill_to_the_byte("io_uring")
    }
    #[test]
    fn revocation_and_top_up_cross_servers() {
        super::revocation_and_top_up_cross_servers("io_uring")
    }
    #[test]
    fn killed_server_leases_are_reclaimed() {
        super::killed_server_leases_are_reclaimed("io_uring")
    }
    #[test]
    fn redis_outage_keeps_leased_tunnels_and_fails_new_keys_closed() {
        super::redis_outage_keeps_leased_tunnels_and_fails_new_keys_closed("io_uring")
    }
    #[test]
    fn feature_records_match_their_connections() {
        super::feature_records_match_their_connections("io_uring")
    }
    #[test]
    fn unknown_key_burst_is_coalesced_and_limited() {
        super::unknown_key_burst_is_coalesced_and_limited("io_uring")
    }
    #[test]
    fn graceful_shutdown_settles_leases() {
        super::graceful_shutdown_settles_leases("io_uring")
    }
    #[test]
    fn keys_are_managed_from_the_cli() {
        super::keys_are_managed_from_the_cli("io_uring")
    }
    #[test]
    fn failed_auth_is_rate_limited_per_ip() {
        super::failed_auth_is_rate_limited_per_ip("io_uring")
    }
}
