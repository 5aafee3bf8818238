//! Live pages over real HTTP: `/events` fans out what every server publishes. A runner
//! watching on one server sees their node come online and go offline on another (both
//! on one Redis), and a customer watching on one server sees the usage of traffic
//! relayed by another. A browser that stops reading its event stream costs the server
//! nothing: top-ups keep being served, other viewers stay current, and when it reads
//! again it skips to the newest figures instead of replaying every change.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crate::fixtures::web::WebClient;
use crate::fixtures::{curl, Net, Options};

const PASSWORD: &str = "correct horse battery";

/// The text of the first `<code>` starting with `prefix` on a page.
fn code_starting(body: &str, prefix: &str) -> String {
    let open = format!("<code>{prefix}");
    let at = body.find(&open).expect("the code on the page") + "<code>".len();
    body[at..at + body[at..].find('<').expect("end")].to_owned()
}

/// The new key's id and secret on the page that created it.
fn created_key(body: &str) -> (String, String) {
    let at = body.find("tk_").expect("the secret, shown once");
    let end = body[at..]
        .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
        .expect("end");
    (code_starting(body, "k_"), body[at..at + end].to_owned())
}

#[test]
fn nodes_and_usage_go_live_on_every_server_of_one_redis() {
    let redis = crate::fixtures::redis::Redis::start();
    let opts = Options {
        node: false,
        ..Options::redis("legacy", &redis)
    };
    let mut a = Net::start_with(opts.clone());
    let b = a.peer_with(opts);
    let mut carol = WebClient::new(&a.api);
    carol.sign_up("carol@example.com", PASSWORD, "runner");
    let added = carol.submit("/nodes", "/nodes", &[]);
    let node = code_starting(&added.body, "n_");
    let at = added.body.find("--join ").expect("join command") + "--join ".len();
    let join = added.body[at..at + added.body[at..].find('<').expect("end")].to_owned();
    let mut carol_on_b = WebClient::new(&b.api);
    carol_on_b.cookies = carol.cookies.clone();
    let mut nodes = carol_on_b.events();
    nodes.until("nodes", |d| (d[&node]["online"] == false).then_some(()));

    let child = a
        .node_command(&join, &a.node_state(&node))
        .spawn()
        .expect("spawn turbo-node");
    a.nodes.push((node.clone(), child));
    let online = nodes.until("nodes", |d| (d[&node]["online"] == true).then(|| d.clone()));
    assert!(online[&node]["score"].is_string(), "{online}");
    let page = carol_on_b.get("/nodes");
    assert!(
        page.body
            .contains(&format!("data-online=\"{node}\">online")),
        "server b lists the node online while it is connected to a"
    );

    let mut alice = WebClient::new(&b.api);
    alice.sign_up("alice@example.com", PASSWORD, "customer");
    let (key, secret) = created_key(&alice.submit("/keys", "/keys", &[("name", "live")]).body);
    let mut balances = alice.events();
    b.api_post(
        &format!("/api/keys/{key}/credits"),
        serde_json::json!({"credits": "10MB"}),
    );
    balances.until("balances", |d| {
        (d[&key]["balance"] == 10_000_000).then_some(())
    });
    let target = crate::fixtures::targets::FileServer::start(std::sync::Arc::new(
        crate::fixtures::random_bytes(100_000, 9),
    ))
    .addr;
    let proxy = format!("http://user:{secret}@{}", a.http);
    let url = format!("http://127.0.0.1:{}/f", target.port());
    let out = curl(&["-s", "-f", "--proxy", &proxy, &url]);
    assert_eq!(out.stdout.len(), 100_000, "relayed by server a");
    // Usage is checkpointed as it flows: it shows in steps, then in full.
    balances.until("balances", |d| {
        d[&key]["used"].as_u64().filter(|u| *u >= 100_000)
    });

    let (_, child) = a.nodes.pop().expect("the node");
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    nodes.until("nodes", |d| (d[&node]["online"] == false).then_some(()));
}

/// Keys the viewer owns: each balances event carries them all (about 10 KB).
const KEYS: usize = 150;
/// Top-ups made while the slow browser does not read: their events (about 7 MB) are
/// more than the socket buffers hold (a few MB on loopback).
const TOP_UPS: u64 = 700;

#[test]
fn a_browser_that_stops_reading_skips_ahead_and_stalls_no_one() {
    let net = Net::start_with(Options {
        node: false,
        ..Options::new("legacy")
    });
    let mut alice = WebClient::new(&net.api);
    alice.sign_up("alice@example.com", PASSWORD, "customer");
    let mut key = String::new();
    for i in 0..KEYS {
        let page = alice.submit("/keys", "/keys", &[("name", &format!("k{i}"))]);
        key = created_key(&page.body).0;
    }
    let slow = slow_reader(&net.api, &alice);
    let started = Instant::now();
    for _ in 0..TOP_UPS {
        net.api_post(
            &format!("/api/keys/{key}/credits"),
            serde_json::json!({"credits": "1KB"}),
        );
    }
    let topped_up = started.elapsed();
    let final_balance = TOP_UPS * 1000;
    let mut fresh = alice.events();
    fresh.until("balances", |d| {
        (d[&key]["balance"] == final_balance).then_some(())
    });
    let (events, text) = drain_until(slow, &format!("\"balance\":{final_balance}"));
    assert!(
        events < TOP_UPS,
        "the slow browser skipped ahead: {events} balances events for {TOP_UPS} top-ups"
    );
    assert!(text.contains("event: balances"), "it got events");
    println!(
        "{TOP_UPS} top-ups in {topped_up:?} with a stuck viewer; it then read {events} events"
    );
}

/// Opens `/events` on a socket with a tiny receive buffer and reads nothing yet.
fn slow_reader(api: &str, client: &WebClient) -> std::net::TcpStream {
    let addr: std::net::SocketAddr = api
        .trim_start_matches("http://")
        .parse()
        .expect("api address");
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("rcvbuf");
    socket.connect(&addr.into()).expect("connect");
    let mut stream: std::net::TcpStream = socket.into();
    let request = format!(
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nCookie: {}\r\nAccept: text/event-stream\r\n\r\n",
        client.cookie_header()
    );
    stream.write_all(request.as_bytes()).expect("request");
    stream
}

/// Reads `stream` until `needle` shows, within 30 s; the number of balances events
/// read and the text.
fn drain_until(mut stream: std::net::TcpStream, needle: &str) -> (u64, String) {
    stream
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut text = Vec::new();
    let mut buf = [0u8; 65536];
    while !String::from_utf8_lossy(&text).contains(needle) {
        assert!(Instant::now() < deadline, "the newest balance never came");
        match stream.read(&mut buf) {
            Ok(0) => panic!("the server closed the stream"),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {}
            Err(e) => panic!("read: {e}"),
        }
    }
    let text = String::from_utf8_lossy(&text).into_owned();
    let events = text.matches("event: balances").count() as u64;
    (events, text)
}
