//! Peers that follow the protocol but behave badly: customers that stop reading, a
//! node that says "connected" and never reads, uploads past the credit, and tunnels
//! opened only to connect. Other customers keep being served, the server's memory stays
//! flat, and only bytes that reached the target are billed.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::Ordering::SeqCst;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::targets::{self, FileServer};
use crate::fixtures::{curl, random_bytes, wait_for, Net, Options};

use crate::fixtures::CONNECTION_COST;

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {v}"))
}

fn key_info(net: &Net, id: &str) -> Value {
    net.api_get(&format!("/api/keys/{id}"))
}

/// Waits until none of key `id`'s credit is leased out, and returns it.
fn settled(net: &Net, id: &str) -> Value {
    wait_for("leases of the key to settle", || {
        let k = key_info(net, id);
        (u(&k, "leased") == 0).then_some(k)
    })
}

fn open(net: &Net, key: &str, target: SocketAddr) -> TcpStream {
    socks::open(net.socks, key, target.port())
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS");
    kb * 1024
}

/// One curl download of `url` through the node; its time, or `None` on failure.
fn victim_download(net: &Net, key: &str, url: &str, len: usize) -> Option<Duration> {
    let proxy = format!("socks5h://victim:{key}@{}", net.socks);
    let started = Instant::now();
    let out = curl(&["-sS", "--max-time", "20", "-x", &proxy, "-o", "-", url]);
    (out.status.success() && out.stdout.len() == len).then(|| started.elapsed())
}

fn percentile(times: &mut [Duration], p: f64) -> Duration {
    times.sort();
    times[((times.len() - 1) as f64 * p).round() as usize]
}

fn stalled_customers_do_not_freeze_the_node(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.config = "relay_stall_timeout = \"10s\"\n".into();
    let net = Net::start_with(opts);
    let (victim_key, _) = net.create_key("10GB");
    let small = FileServer::start(Arc::new(random_bytes(256 << 10, 1))).addr;
    let url = format!("http://127.0.0.1:{}/f", small.port());
    let mut unloaded: Vec<Duration> = (0..20)
        .map(|_| victim_download(&net, &victim_key, &url, 256 << 10).expect("unloaded"))
        .collect();
    // The attacker: 100 downloads of 16 MiB that it never reads.
    let big = FileServer::start(Arc::new(random_bytes(16 << 20, 2))).addr;
    let stalled: Vec<TcpStream> = (0..100)
        .map(|_| {
            let mut s = open(&net, &net.key, big);
            socket2::SockRef::from(&s)
                .set_recv_buffer_size(4096)
                .unwrap();
            s.write_all(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
            s
        })
        .collect();
    wait_for("the attacker's tunnels to fill up", || {
        (u(&net.key_info(), "bytes_down") > 100 * (1 << 20)).then_some(())
    });
    let served: Vec<Option<Duration>> = (0..20)
        .map(|_| victim_download(&net, &victim_key, &url, 256 << 10))
        .collect();
    let mut loaded: Vec<Duration> = served.iter().flatten().copied().collect();
    println!(
        "victim with 100 stalled tunnels on its node: {}/20 served, p50 {:?} p99 {:?} \
         (unloaded p50 {:?} p99 {:?})",
        loaded.len(),
        percentile(&mut loaded, 0.5),
        percentile(&mut loaded, 0.99),
        percentile(&mut unloaded, 0.5),
        percentile(&mut unloaded, 0.99),
    );
    assert_eq!(loaded.len(), 20, "every victim download is served");
    wait_for("the stalled tunnels to be cut", || {
        let cut = net.metric("turbo_limit_hits_total{limit=\"stalled_customer\"}");
        (cut >= 100.0).then_some(())
    });
    drop(stalled);
}

fn a_node_that_never_reads_is_cut_and_bills_nothing(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    opts.config = "relay_stall_timeout = \"2s\"\n".into();
    let mut net = Net::start_with(opts);
    let liar = net.add_faulty_node("ok-never-read-huge-windows", &[]);
    let (sink, counts) = targets::sink();
    let pid = net.server.id();
    let rss_before = rss_bytes(pid);
    let uploads: Vec<_> = (0..10)
        .map(|_| {
            let mut s = open(&net, &net.key, sink);
            std::thread::spawn(move || {
                let chunk = vec![7u8; 64 << 10];
                let mut pushed = 0u64;
                while s.write_all(&chunk).is_ok() {
                    pushed += chunk.len() as u64;
                }
                pushed
            })
        })
        .collect();
    let pushed: u64 = uploads.into_iter().map(|t| t.join().unwrap()).sum();
    let rss_after = rss_bytes(pid);
    let k = settled(&net, &net.key_id);
    let node = net.node_info(&liar).expect("node");
    println!(
        "node that never reads (huge windows): customers pushed {pushed} B before the cut, \
         target got {} B, billed up {} B (+{} B connection cost), server RSS {} -> {} MiB, \
         node attempts failed {}",
        counts.bytes.load(SeqCst),
        u(&k, "bytes_up") - 10 * CONNECTION_COST,
        10 * CONNECTION_COST,
        rss_before >> 20,
        rss_after >> 20,
        node["attempts_failed"],
    );
    assert_eq!(counts.bytes.load(SeqCst), 0, "the liar never dialed");
    assert_eq!(
        u(&k, "bytes_up"),
        10 * CONNECTION_COST,
        "bytes the node never delivered are not billed"
    );
    assert!(
        rss_after < rss_before + (64 << 20),
        "server memory stays flat: {rss_before} -> {rss_after}"
    );
    assert!(net.metric("turbo_limit_hits_total{limit=\"stalled_node\"}") >= 10.0);
    assert!(
        u(&node, "attempts_failed") >= 10,
        "held against the node: {node}"
    );
}

fn uploads_past_the_credit_reach_the_target(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.credits = "1000000";
    let net = Net::start_with(opts);
    let (sink, counts) = targets::sink();
    let mut s = open(&net, &net.key, sink);
    let data = random_bytes(5_000_000, 3);
    let _ = s.write_all(&data);
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    wait_for("the target to see the end of the upload", || {
        (counts.ended.load(SeqCst) == 1).then_some(())
    });
    let k = settled(&net, &net.key_id);
    let billed = u(&k, "bytes_up") - CONNECTION_COST;
    let got = counts.bytes.load(SeqCst);
    println!("upload of 5 MB on 1 MB of credit: target got {got} B, billed {billed} B");
    assert_eq!(got, billed, "every billed upstream byte reached the target");
    assert_eq!(u(&k, "balance"), 0, "the credit was used");
    assert_eq!(u(&k, "bytes_up") + u(&k, "bytes_down"), 1_000_000);
}

fn connecting_alone_costs_credit(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.credits = "5000";
    let net = Net::start_with(opts);
    let echo = targets::echo();
    let opened = (0..40)
        .filter(|_| {
            matches!(
                socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", echo.port()),
                Connect::Open(_)
            )
        })
        .count();
    let k = settled(&net, &net.key_id);
    println!(
        "40 bare connects on 5,000 B of credit: {opened} opened, balance {}",
        u(&k, "balance")
    );
    assert_eq!(opened, 5, "each tunnel costs {CONNECTION_COST} B of credit");
    assert_eq!(u(&k, "balance"), 0);
}

crate::both_drivers!(
    stalled_customers_do_not_freeze_the_node,
    a_node_that_never_reads_is_cut_and_bills_nothing,
    uploads_past_the_credit_reach_the_target,
    connecting_alone_costs_credit,
);
