//! Connection limits end to end: per key (open tunnels, new-tunnel rate), per server,
//! the relay idle timeout and the HTTP head limits. Each refusal is the specific reply
//! (SOCKS5 code, HTTP status with `Proxy-Status`) and shows in `/metrics`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{curl, targets, wait_for, Net, Options};

fn net_with(config: &str) -> Net {
    let mut opts = Options::new("io_uring");
    opts.config = config.into();
    Net::start_with(opts)
}

fn connect(net: &Net, port: u16) -> Connect {
    socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", port)
}

/// HTTP CONNECT with curl; returns the status code and the response headers.
fn http_connect(net: &Net, port: u16) -> (String, String) {
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-p",
        "-x",
        &net.proxy_url("http"),
        &format!("http://127.0.0.1:{port}/"),
        "--max-time",
        "5",
    ]);
    let head = String::from_utf8_lossy(&out.stdout).into_owned();
    let code = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    (code, head)
}

#[test]
fn per_key_open_tunnels_are_capped() {
    let net = net_with("max_connections_per_key = 3\n");
    let hold = targets::hold();
    let open: Vec<TcpStream> = (0..3)
        .map(|_| match connect(&net, hold.port()) {
            Connect::Open(s) => s,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(
        matches!(connect(&net, hold.port()), Connect::Refused(2)),
        "SOCKS5 0x02"
    );
    let (code, head) = http_connect(&net, hold.port());
    assert_eq!(code, "429", "{head}");
    assert!(head.contains("error=connection_limit_reached"), "{head}");
    drop(open);
    let hits = room_again(&net, hold.port(), "key_connections");
    println!("per-key cap 3: 4th SOCKS5 tunnel got 0x02, HTTP got 429; {hits} hits counted");
}

/// A refused SOCKS5 client: the server closes before answering the greeting.
fn assert_socks_closed_at_once(net: &Net) {
    let mut s = TcpStream::connect(net.socks).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(&[5, 1, 2]);
    let mut buf = [0u8; 8];
    assert!(
        matches!(s.read(&mut buf), Ok(0) | Err(_)),
        "SOCKS5 is closed at once"
    );
}

/// Waits until a tunnel to `port` opens again (the slots came back), then checks
/// that `limit` counted the two refusals; returns the count.
fn room_again(net: &Net, port: u16, limit: &str) -> f64 {
    wait_for("a slot to free up", || {
        matches!(connect(net, port), Connect::Open(_)).then_some(())
    });
    let hits = net.metric(&format!("turbo_limit_hits_total{{limit=\"{limit}\"}}"));
    assert!(hits >= 2.0, "{limit}: {hits}");
    hits
}

#[test]
fn per_key_new_tunnel_rate_is_capped() {
    let net = net_with("new_connections_per_key_per_sec = 5\n");
    let echo = targets::echo();
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..30 {
        match connect(&net, echo.port()) {
            Connect::Open(_) => ok += 1,
            Connect::Refused(2) => refused += 1,
            other => panic!("{other:?}"),
        }
    }
    let hits = net.metric("turbo_limit_hits_total{limit=\"key_connection_rate\"}");
    println!("5 new tunnels/s per key: 30 quick attempts -> {ok} opened, {refused} refused (0x02)");
    assert!(ok >= 5 && refused > 0, "{ok} opened, {refused} refused");
    assert_eq!(hits, refused as f64);
}

#[test]
fn server_connection_cap_refuses_new_connections() {
    let net = net_with("max_connections = 4\nhandshake_timeout = \"30s\"\n");
    // Four connections sitting in their handshake fill the server.
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(net.socks).unwrap())
        .collect();
    wait_for("4 open customer connections", || {
        (net.metric("turbo_customer_connections") == 4.0).then_some(())
    });
    let mut s = TcpStream::connect(net.http).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    s.read_to_string(&mut got).unwrap();
    assert!(got.starts_with("HTTP/1.1 503 "), "{got}");
    assert!(got.contains("error=connection_limit_reached"), "{got}");
    assert_socks_closed_at_once(&net);
    drop(idle);
    let hits = room_again(&net, targets::echo().port(), "server_connections");
    println!("server cap 4: HTTP got 503, SOCKS5 closed; {hits} hits counted");
}

#[test]
fn idle_tunnels_are_closed_and_busy_ones_are_not() {
    let net = net_with("relay_idle_timeout = \"1s\"\n");
    let echo = targets::echo();
    let Connect::Open(mut idle) = connect(&net, echo.port()) else {
        panic!("refused")
    };
    let Connect::Open(mut busy) = connect(&net, echo.port()) else {
        panic!("refused")
    };
    idle.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let started = Instant::now();
    // The busy one echoes every 300 ms for 3 s and stays open.
    while started.elapsed() < Duration::from_secs(3) {
        busy.write_all(b"x").unwrap();
        let mut b = [0u8; 1];
        busy.read_exact(&mut b).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    }
    let mut buf = [0u8; 8];
    let r = idle.read(&mut buf);
    assert!(
        matches!(r, Ok(0) | Err(_)),
        "the idle tunnel was closed: {r:?}"
    );
    let hits = net.metric("turbo_limit_hits_total{limit=\"idle_timeout\"}");
    println!("idle timeout 1 s: idle tunnel closed, busy tunnel alive after 3 s; {hits} counted");
    assert_eq!(hits, 1.0);
}

#[test]
fn http_head_limits_are_configurable() {
    let net = net_with("http_max_headers = 10\nhttp_max_head_bytes = 1024\n");
    let mut headers = Vec::new();
    for i in 0..20 {
        headers.extend(["-H".to_owned(), format!("X-N{i}: v")]);
    }
    let mut args: Vec<&str> = vec!["-s", "-o", "/dev/null", "-w", "%{http_code}", "-x"];
    let proxy = net.proxy_url("http");
    args.push(&proxy);
    args.extend(headers.iter().map(String::as_str));
    args.push("http://127.0.0.1:9/");
    let out = curl(&args);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");
    let big = format!("X-Big: {}", "a".repeat(2000));
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-x",
        &proxy,
        "-H",
        &big,
        "http://127.0.0.1:9/",
    ]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "431");
}

#[test]
fn memory_pressure_refuses_new_connections() {
    // A watermark far below any real RSS: the overload manager trips at its first tick.
    let net = net_with("overload_memory_bytes = 1000000\n");
    let echo = targets::echo();
    let (code, head) = wait_for("the overload manager to trip", || {
        let (code, head) = http_connect(&net, echo.port());
        (code == "503").then_some((code, head))
    });
    assert!(head.contains("error=connection_limit_reached"), "{head}");
    assert_socks_closed_at_once(&net);
    let hits = net.metric("turbo_limit_hits_total{limit=\"memory\"}");
    println!("memory watermark 1 MB: new connections refused ({code}), {hits} counted");
    assert!(hits >= 2.0);
}

#[test]
fn quic_retry_validates_node_addresses() {
    // Threshold 0: every node connection must first echo a Retry token.
    let net = net_with("quic_retry_threshold = 0\n");
    let echo = targets::echo();
    // A node behind Retry still carries traffic.
    net.echo_once(echo.port());
    let retries = net.metric("turbo_limit_hits_total{limit=\"quic_retry\"}");
    let bad = net.metric("turbo_limit_hits_total{limit=\"quic_bad_token\"}");
    println!(
        "Retry always on: node connected after {retries} Retry, {bad} bad tokens; relay works"
    );
    assert!(retries >= 1.0);
    assert_eq!(bad, 0.0);
}
