//! Canaries against a real server and nodes: a test build of the node that fabricates
//! its replies (`TURBO_NODE_FAULT=fabricate`: 64 KiB of its own junk, without dialing)
//! is caught in the first canary round that reaches it (rounds every second here),
//! demoted out of the route table and its earnings held with the reason; the honest
//! nodes are untouched, and customers' requests afterwards all get the real content.

use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::fixtures::postgres::Postgres;
use crate::fixtures::targets::FileServer;
use crate::fixtures::{curl, random_bytes, wait_for, Net, Options};

const BODY: usize = 20_000;

#[test]
fn a_node_that_fabricates_is_caught_and_its_earnings_held() {
    let pg = Postgres::start();
    let rt = crate::payments::runtime();
    let body = random_bytes(BODY, 11);
    let sha = hex::encode(Sha256::digest(&body));
    let target = FileServer::start(Arc::new(body.clone())).addr;
    let url = format!("http://127.0.0.1:{}/f", target.port());
    let mut opts = Options::new("legacy");
    opts.config = format!(
        "ledger = \"{}\"\ncanary_every = \"1s\"\n[[canaries]]\nurl = \"{url}\"\nsha256 = \"{sha}\"\n",
        rt.block_on(pg.database())
    );
    let mut net = Net::start_with(opts);
    let honest = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let started = Instant::now();
    let cheat = net.add_faulty_node("fabricate", &[]);
    let caught = wait_for("the fabricating node to be caught", || {
        let n = net.api_get(&format!("/api/nodes/{cheat}"));
        (n["demoted"] == true && n["hold"]["reason"].is_string()).then_some(n)
    });
    println!("caught {:?} after it connected", started.elapsed());
    let reason = caught["hold"]["reason"].as_str().expect("reason");
    assert!(
        reason.contains("canary") && reason.contains("other content"),
        "{reason}"
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
