//! The runner's controls and the node's life cycle, end to end: SMTP and blocked
//! domains refused, rules pushed by the server, the bandwidth cap, the monthly cap,
//! `join` then `run` with nothing else, `status`, pausing and resuming, and a server
//! restart.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Instant;

use crate::fixtures::redis::Redis;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{bin, random_bytes, targets, wait_for, Net, Options};

fn open(net: &Net, host: &str, port: u16) -> TcpStream {
    match socks::connect(net.socks, "e2e", &net.key, host, port) {
        Connect::Open(s) => s,
        other => panic!("{host}:{port} refused: {other:?}"),
    }
}

fn refusal(net: &Net, host: &str, port: u16) -> u8 {
    match socks::connect(net.socks, "e2e", &net.key, host, port) {
        Connect::Refused(code) => code,
        other => panic!("{host}:{port} should be refused: {other:?}"),
    }
}

fn echo_round_trip(s: &mut TcpStream) {
    let msg = random_bytes(4096, 3);
    s.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

/// `turbo-node status` for a node whose state is in `state`.
fn node_status(state: &std::path::Path) -> String {
    let out = Command::new(bin("turbo-node"))
        .arg("status")
        .env("TURBO_NODE_STATE", state)
        .output()
        .expect("turbo-node status");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The number after `label` in `status` output.
fn status_number(text: &str, label: &str) -> u64 {
    let line = text.lines().find(|l| l.starts_with(label)).expect(label);
    line[label.len()..]
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no number in {line:?}"))
}

#[test]
fn smtp_blocked_domains_and_server_rules_are_refused() {
    let echo = targets::echo();
    let mut opts = Options::new("io_uring");
    opts.node = false;
    // The server tightens the policy: one more port, and 127.0.0.3 although the runner
    // allowed all of 127/8.
    opts.config = format!(
        "node_block_ports = [{}]\nnode_block_cidrs = [\"127.0.0.3/32\"]\nnode_block_domains = [\"pushed.test\"]\n",
        echo.port() + 1
    );
    let mut net = Net::start_with(opts);
    net.add_node(&["--block-domain", "blocked.test", "--block-port", "8025"]);

    for port in [25, 465, 587, 8025, echo.port() + 1] {
        assert_eq!(refusal(&net, "127.0.0.1", port), 2, "port {port}");
    }
    for host in [
        "blocked.test",
        "www.blocked.test",
        "pushed.test",
        "a.pushed.test",
    ] {
        assert_eq!(refusal(&net, host, echo.port()), 2, "{host}");
    }
    assert_eq!(
        refusal(&net, "127.0.0.3", echo.port()),
        2,
        "server-pushed range"
    );
    // Not over-broad: a name that merely ends the same way, and the echo itself.
    let mut s = open(&net, "127.0.0.1", echo.port());
    echo_round_trip(&mut s);
    assert_ne!(refusal(&net, "notblocked.test", echo.port()), 2);
}

/// Downloads `len` bytes through the proxy; returns the rate in bytes/s.
fn download_rate(net: &Net, port: u16, len: usize) -> f64 {
    let mut s = open(net, "127.0.0.1", port);
    let started = Instant::now();
    let mut buf = vec![0u8; len];
    s.read_exact(&mut buf).unwrap();
    assert_eq!(buf, random_bytes(len, len as u64));
    len as f64 / started.elapsed().as_secs_f64()
}

/// Uploads `len` bytes through the proxy to a target that answers after EOF; returns
/// the rate in bytes/s.
fn upload_rate(net: &Net, port: u16, len: usize) -> f64 {
    let mut s = open(net, "127.0.0.1", port);
    let started = Instant::now();
    s.write_all(&random_bytes(len, 9)).unwrap();
    s.shutdown(Shutdown::Write).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert_eq!(answer.trim(), format!("received {len} bytes"));
    len as f64 / started.elapsed().as_secs_f64()
}

#[test]
fn bandwidth_cap_holds_in_both_directions() {
    const RATE: f64 = 1_000_000.0;
    const LEN: usize = 5_000_000;
    let (source, sink) = (targets::send_then_hold(LEN), targets::count_until_eof());
    let mut opts = Options::new("io_uring");
    opts.node = false;
    let mut net = Net::start_with(opts);
    net.add_node(&["--max-rate", "1MB"]);
    let net = &net;
    let (down, up) = std::thread::scope(|s| {
        let down = s.spawn(|| download_rate(net, source.port(), LEN));
        let up = s.spawn(|| upload_rate(net, sink.port(), LEN));
        (down.join().unwrap(), up.join().unwrap())
    });
    println!("cap 1 MB/s: down {down:.0} B/s, up {up:.0} B/s over {LEN} bytes each");
    for (dir, rate) in [("down", down), ("up", up)] {
        assert!((rate - RATE).abs() / RATE < 0.10, "{dir}: {rate:.0} B/s");
    }
}

#[test]
fn monthly_cap_stops_new_streams() {
    let source = targets::send_then_hold(400_000);
    let mut opts = Options::new("io_uring");
    opts.node = false;
    let mut net = Net::start_with(opts);
    let id = net.add_node(&["--monthly-cap", "300KB"]);
    // The cap is hard: the stream that crosses it is cut (after the shutdown grace,
    // 0 s here) rather than allowed to run on.
    let mut s = open(&net, "127.0.0.1", source.port());
    let mut got = Vec::new();
    let _ = s.read_to_end(&mut got);
    assert!(
        got.len() < 400_000,
        "the stream ran past the cap: {}",
        got.len()
    );
    assert_eq!(got, random_bytes(400_000, 400_000)[..got.len()]);
    // Over the cap: the node tells the server it drains and leaves the pool.
    wait_for("the capped node to leave", || {
        net.node_info(&id)
            .filter(|n| n["connected"] == false)
            .map(|_| ())
    });
    let code = refusal(&net, "127.0.0.1", source.port());
    assert_eq!(code, 1, "no node left to carry the stream");
    let status = node_status(&net.node_state(&id));
    assert!(status.contains("state:          capped"), "{status}");
    let month = status_number(&status, "this month:");
    assert!(month >= 300_000 && month >= got.len() as u64, "{status}");
    println!(
        "monthly cap 300 KB: customer got {} bytes, node counted {month}",
        got.len()
    );
    assert!(status.contains("of 300000 bytes"), "{status}");
}

#[test]
fn join_then_run_with_nothing_else_and_status() {
    let mut opts = Options::new("io_uring");
    opts.node = false;
    let net = Net::start_with(opts);
    // The payout address comes from the invite; a node's own `--payout-address` is
    // never applied by its hello.
    let invite = net.api_post(
        "/api/nodes/invite",
        serde_json::json!({"payout_address": "0xFEEDbeef01"}),
    );
    let id = invite["node_id"].as_str().unwrap().to_owned();
    let join = invite["join"].as_str().unwrap().to_owned();
    let home = tempfile::tempdir().unwrap();
    let config = home.path().join("config/turbo/node.toml");
    let state = home.path().join("state");
    let node = |args: &[&str]| {
        let mut c = Command::new(bin("turbo-node"));
        c.args(args)
            .env("TURBO_NODE_CONFIG", &config)
            .env("TURBO_NODE_STATE", &state)
            .env_remove("TURBO_ALLOW_CIDR");
        c
    };
    let out = node(&[
        "join",
        &join,
        "--country",
        "de",
        "--payout-address",
        "0xIgnoredByTheServer",
    ])
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o600,
        "the saved config holds the node token: owner-only"
    );

    let mut child = node(&["run"]).stdin(Stdio::null()).spawn().unwrap();
    let info = wait_for("the joined node to connect", || {
        net.node_info(&id).filter(|n| n["connected"] == true)
    });
    assert_eq!(info["country"], "DE");
    assert_eq!(info["payout_address"], "0xFEEDbeef01");

    let status = wait_for("a score in turbo-node status", || {
        let s = node_status(&state);
        (!s.contains("not reported yet")).then_some(s)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(status.contains("state:          connected"), "{status}");
    assert!(
        status.contains(&format!("node id:        {id}")),
        "{status}"
    );
    assert!(status.contains(&net.quic_addr().to_string()), "{status}");
    assert!(status.contains("active streams: 0"), "{status}");
    println!("{status}");
}

#[test]
fn node_reconnects_after_a_server_restart() {
    let redis = Redis::start();
    let echo = targets::echo();
    let mut net = Net::start_with(Options::redis("io_uring", &redis));
    echo_round_trip(&mut open(&net, "127.0.0.1", echo.port()));
    let pid = net.node.as_ref().expect("node").id();
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before = fds();
    for _ in 0..3 {
        let t = std::time::Instant::now();
        net.restart_server();
        net.wait_nodes(1);
        // The new process (same data dir, same reset key) answered the node's first
        // packet with a Stateless Reset, so the node did not wait for its idle timeout.
        let resets = net.metric("turbo_limit_hits_total{limit=\"quic_stateless_reset\"}");
        println!(
            "server restarted: node back after {:?}, {resets} stateless resets sent",
            t.elapsed()
        );
        assert!(resets >= 1.0, "no stateless reset was sent");
        for _ in 0..5 {
            echo_round_trip(&mut open(&net, "127.0.0.1", echo.port()));
        }
    }
    // Nothing leaks across reconnects: the old sockets are gone.
    let after = fds();
    assert!(
        after <= before,
        "node file descriptors grew from {before} to {after}"
    );
}

/// `turbo-node pause|resume` for the node whose state is in `state`: what it printed.
fn pause_command(state: &std::path::Path, word: &str) -> String {
    let out = Command::new(bin("turbo-node"))
        .arg(word)
        .env("TURBO_NODE_STATE", state)
        .output()
        .expect("turbo-node");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pause_drains_the_node_and_resume_brings_it_back() {
    let net = Net::start("legacy");
    let target = targets::echo();
    let state = net.node_state("main");
    let mut before = open(&net, "127.0.0.1", target.port());
    echo_round_trip(&mut before);
    assert!(pause_command(&state, "pause").starts_with("paused"));
    // The open stream finishes its work while the node drains.
    echo_round_trip(&mut before);
    drop(before);
    wait_for("the node to go offline, paused", || {
        let s = node_status(&state);
        (s.contains("state:          paused") && net.connected_nodes().is_empty()).then_some(())
    });
    let code = refusal(&net, "127.0.0.1", target.port());
    assert_ne!(code, 0, "no node while paused");
    assert_eq!(pause_command(&state, "resume").trim(), "resumed");
    wait_for("the node to reconnect", || {
        (!net.connected_nodes().is_empty()).then_some(())
    });
    echo_round_trip(&mut open(&net, "127.0.0.1", target.port()));
}
