//! Canaries against a real server and nodes: a test build of the node that fabricates
//! its replies (`TURBO_NODE_FAULT=fabricate`: 64 KiB of its own junk, without dialing)
//! is caught in the first canary round that reaches it (rounds every second here),
//! demoted out of the route table and its earnings held with the reason, which
//! `turbo-node status` shows its runner; the honest nodes are untouched, and customers' requests afterwards all get the real content.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use crate::fixtures::postgres::Postgres;
use crate::fixtures::targets::{http_head, FileServer};
use crate::fixtures::{curl, random_bytes, wait_for, Net, Options};

const BODY: usize = 20_000;

/// A server with a ledger, one node and one canary at `url` serving `body` (`extra`:
/// more lines for its table), checked every second.
fn canary_net(pg: &Postgres, url: &str, body: &[u8], extra: &str) -> Net {
    let sha = hex::encode(Sha256::digest(body));
    let database = crate::payments::runtime().block_on(pg.database());
    let mut opts = Options::new("legacy");
    opts.config = format!(
        "ledger = \"{database}\"\ncanary_every = \"1s\"\n[[canaries]]\nurl = \"{url}\"\nsha256 = \"{sha}\"\n{extra}"
    );
    Net::start_with(opts)
}

/// Starts a test node with `fault` and waits until canaries demoted and held it:
/// its id and `GET /api/nodes/{id}`.
fn catch(net: &mut Net, fault: &str) -> (String, serde_json::Value) {
    let started = Instant::now();
    let cheat = net.add_faulty_node(fault, &[]);
    let caught = wait_for("the faulty node to be caught", || {
        let n = net.api_get(&format!("/api/nodes/{cheat}"));
        (n["demoted"] == true && n["hold"]["reason"].is_string()).then_some(n)
    });
    println!("caught {:?} after it connected", started.elapsed());
    (cheat, caught)
}

#[test]
fn a_node_that_fabricates_is_caught_and_its_earnings_held() {
    let pg = Postgres::start();
    let body = random_bytes(BODY, 11);
    let target = FileServer::start(Arc::new(body.clone())).addr;
    let url = format!("http://127.0.0.1:{}/f", target.port());
    let mut net = canary_net(&pg, &url, &body, "");
    let honest = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (cheat, caught) = catch(&mut net, "fabricate");
    let reason = caught["hold"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("canary") && reason.contains("other content"),
        "{reason}"
    );
    // The runner sees it too: the demoted node is still told, with the reason.
    wait_for("the held node's status to say why", || {
        let status = net.node_status(&cheat);
        status
            .lines()
            .any(|l| l.starts_with("held:") && l.contains(reason))
            .then_some(())
    });
    let main = net.node_status("main");
    assert!(
        main.contains("earnings:") && !main.contains("held:"),
        "{main}"
    );
    let fine = net.api_get(&format!("/api/nodes/{honest}"));
    assert_eq!(fine["demoted"], false);
    assert!(
        fine["hold"].is_null(),
        "the honest node is untouched: {fine}"
    );
    for _ in 0..5 {
        let out = curl(&["-s", "-f", "--proxy", &net.proxy_url("http"), &url]);
        assert_eq!(out.stdout, body, "customers get the real content");
    }
}

#[test]
fn a_node_that_answers_sooner_than_the_target_is_caught() {
    let pg = Postgres::start();
    let body = random_bytes(BODY, 12);
    let wait = Duration::from_millis(400);
    let target = FileServer::start_after(Arc::new(body.clone()), wait).addr;
    let url = format!("http://127.0.0.1:{}/slow", target.port());
    let mut net = canary_net(&pg, &url, &body, "takes = \"300ms\"\n");
    let honest = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    // The real answer, saved: the replaying node sends exactly it, without dialing.
    let saved = net.dir.path().join("replay.http");
    std::fs::write(&saved, [http_head(BODY).as_bytes(), &body].concat()).expect("save");
    let (_, caught) = catch(&mut net, &format!("replay:{}", saved.display()));
    let reason = caught["hold"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("faster than the network allows") && reason.contains("300 ms"),
        "{reason}"
    );
    let fine = net.api_get(&format!("/api/nodes/{honest}"));
    assert_eq!(
        fine["demoted"], false,
        "the honest node waits for the target"
    );
    assert!(fine["hold"].is_null(), "{fine}");
}
