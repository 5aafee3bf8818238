//! Traffic integrity signals against a real server, real nodes, real targets and real
//! clients, with three customers taking turns (one customer alone never makes a
//! suspect):
//! - a test node build that garbles TLS (`tamper-tls`: one byte of the target's
//!   ServerHello flipped) makes every HTTPS handshake through it fail (curl and
//!   `openssl s_server`), so its customers close right after the handshake;
//! - a test node build that pads downloads (`pad-download`: 64 KiB of its own after
//!   the target's last byte) returns far more than two honest nodes on the same
//!   target.
//!
//! Each is demoted and its earnings held with the reason, which its `turbo-node
//! status` shows; the honest nodes are untouched, and customers afterwards get only
//! honest answers.

use std::io::{Read, Write};
use std::sync::Arc;

use crate::fixtures::postgres::Postgres;
use crate::fixtures::targets::{http_head, FileServer, TlsTarget};
use crate::fixtures::{curl, random_bytes, socks, wait_for, Net, Options};

/// The most requests sent before the faulty node must have been caught.
const MOST_REQUESTS: usize = 600;

/// A server with a ledger and its own node, and three customers' key secrets.
fn integrity_net(pg: &Postgres) -> (Net, Vec<String>) {
    let database = crate::payments::runtime().block_on(pg.database());
    let mut opts = Options::new("legacy");
    opts.config = format!("ledger = \"{database}\"\n");
    let net = Net::start_with(opts);
    let mut keys = vec![net.key.clone()];
    keys.extend((0..2).map(|_| net.create_key("1GB").0));
    (net, keys)
}

/// Sends requests with `request(customer)` (true: an honest answer) until `node` is
/// demoted; how many were honest and how many not.
fn until_demoted(net: &Net, node: &str, mut request: impl FnMut(usize) -> bool) -> (u32, u32) {
    let (mut honest, mut not) = (0, 0);
    for sent in 1..=MOST_REQUESTS {
        if request(sent % 3) {
            honest += 1;
        } else {
            not += 1;
        }
        if sent % 10 == 0 && net.api_get(&format!("/api/nodes/{node}"))["demoted"] == true {
            println!("caught after {honest} honest and {not} other answers");
            return (honest, not);
        }
    }
    panic!("{node} not demoted within {MOST_REQUESTS} requests ({honest} honest, {not} not)");
}

/// Waits for `node`'s hold, checks its reason says `what`, and that its runner sees it.
fn held_for(net: &Net, node: &str, what: &str) {
    let reason = wait_for("the suspect's earnings to be held", || {
        let n = net.api_get(&format!("/api/nodes/{node}"));
        n["hold"]["reason"].as_str().map(str::to_owned)
    });
    assert!(reason.contains(what), "{reason}");
    wait_for("the suspect's status to say why", || {
        net.node_status(node).contains(what).then_some(())
    });
}

fn untouched(net: &Net, node: &str) {
    let fine = net.api_get(&format!("/api/nodes/{node}"));
    assert_eq!(fine["demoted"], false, "{fine}");
    assert!(fine["hold"].is_null(), "{fine}");
}

#[test]
fn a_node_that_garbles_tls_is_demoted_and_held() {
    let pg = Postgres::start();
    let (mut net, keys) = integrity_net(&pg);
    let honest = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let target = TlsTarget::start(net.dir.path());
    let cheat = net.add_faulty_node("tamper-tls", &[]);
    let url = format!("https://127.0.0.1:{}/", target.addr.port());
    let https = |customer: usize| {
        let proxy = format!("socks5h://e2e:{}@{}", keys[customer], net.socks);
        let out = curl(&[
            "-k",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--proxy",
            &proxy,
            &url,
        ]);
        out.stdout == b"200"
    };
    let (served, broken) = until_demoted(&net, &cheat, https);
    assert!(
        served >= 50 && broken >= 50,
        "{served} served, {broken} broken"
    );
    held_for(
        &net,
        &cheat,
        "TLS connections closed right after the handshake",
    );
    untouched(&net, &honest);
    for customer in 0..9 {
        assert!(https(customer % 3), "only the honest node serves now");
    }
}

#[test]
fn a_node_that_pads_downloads_is_demoted_and_held() {
    const BODY: usize = 20_000;
    let pg = Postgres::start();
    let (mut net, keys) = integrity_net(&pg);
    let body = random_bytes(BODY, 21);
    let target = FileServer::start(Arc::new(body)).addr;
    let honest = vec![
        net.connected_nodes()[0]["id"]
            .as_str()
            .expect("id")
            .to_owned(),
        net.add_node(&[]),
    ];
    let cheat = net.add_faulty_node("pad-download", &[]);
    let exact = (http_head(BODY).len() + BODY) as u64;
    let fetch = |customer: usize| -> u64 {
        let socks::Connect::Open(mut s) = socks::connect(
            net.socks,
            "e2e",
            &keys[customer],
            "127.0.0.1",
            target.port(),
        ) else {
            panic!("the customer was not served");
        };
        s.write_all(b"GET /f HTTP/1.1\r\nHost: t\r\n\r\n")
            .expect("request");
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read to the end");
        got.len() as u64
    };
    let (exact_answers, padded) = until_demoted(&net, &cheat, |c| fetch(c) == exact);
    assert!(
        exact_answers >= 50 && padded >= 50,
        "{exact_answers} exact, {padded} padded"
    );
    held_for(
        &net,
        &cheat,
        "downloads were far from other nodes' on the same targets",
    );
    for node in &honest {
        untouched(&net, node);
    }
    for customer in 0..9 {
        assert_eq!(fetch(customer % 3), exact, "only honest nodes serve now");
    }
}
