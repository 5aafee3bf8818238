//! Node identities end to end: `GET /api/nodes/{id}`, revoking a node (API and CLI;
//! on one server and across two servers sharing Redis), one live connection per node
//! token (newest wins, the old daemon is told and stops), and payout addresses that
//! only the operator sets.

use std::fs::File;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Child;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::fixtures::redis::Redis;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{targets, wait_for, Net, Options};

/// How soon a revoked or replaced node connection must be closed.
const CLOSE_BOUND: Duration = Duration::from_secs(5);

/// A node started by hand, its log in a file.
struct LoggedNode {
    child: Child,
    log: PathBuf,
}

impl LoggedNode {
    fn start(net: &Net, join: &str, name: &str, args: &[&str]) -> LoggedNode {
        let log = net.dir.path().join(format!("{name}.log"));
        let file = File::create(&log).expect("log file");
        let child = net
            .node_command(join, &net.dir.path().join(name))
            .args(args)
            .stderr(file)
            .spawn()
            .expect("spawn turbo-node");
        LoggedNode { child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits for the process to exit; returns whether it failed.
    fn wait_exit(&mut self, what: &str) -> bool {
        let status = wait_for(what, || self.child.try_wait().expect("try_wait"));
        !status.success()
    }

    fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for LoggedNode {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn node(net: &Net, id: &str) -> serde_json::Value {
    net.api_get(&format!("/api/nodes/{id}"))
}

fn wait_connected(net: &Net, id: &str) {
    wait_for(&format!("node {id} to connect"), || {
        (node(net, id)["connected"] == true).then_some(())
    });
}

fn invite(net: &Net, payout: &str) -> (String, String) {
    let v = net.api_post("/api/nodes/invite", json!({ "payout_address": payout }));
    (
        v["node_id"].as_str().expect("id").to_owned(),
        v["join"].as_str().expect("join").to_owned(),
    )
}

fn open_tunnel(net: &Net, port: u16) -> std::net::TcpStream {
    match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", port) {
        Connect::Open(mut s) => {
            s.write_all(b"ping").expect("write");
            let mut back = [0u8; 4];
            s.read_exact(&mut back).expect("echo");
            s
        }
        other => panic!("not served: {other:?}"),
    }
}

/// Revokes `id` through `revoke` and checks that `node_proc` is closed at once and
/// stops, with the reason in its log, and that its open tunnel ends.
fn revoke_and_check(
    node_proc: &mut LoggedNode,
    tunnel: &mut std::net::TcpStream,
    revoke: impl FnOnce(),
) -> Duration {
    let started = Instant::now();
    revoke();
    assert!(
        node_proc.wait_exit("the revoked node to stop"),
        "exit status is an error"
    );
    let took = started.elapsed();
    let log = node_proc.log();
    assert!(took < CLOSE_BOUND, "closed after {took:?}: {log}");
    // Lane 0 is closed with "node revoked"; a lane that was connecting at that moment
    // is refused with "token unknown or revoked". Either way the node says why.
    assert!(log.contains("revoked"), "node log says why: {log}");
    tunnel.set_read_timeout(Some(CLOSE_BOUND)).expect("timeout");
    let mut buf = [0u8; 16];
    let ended = matches!(tunnel.read(&mut buf), Ok(0) | Err(_));
    assert!(ended, "the revoked node's tunnel ended");
    took
}

/// The token is refused after a revocation; the new process says why and stops.
fn token_is_refused(net: &Net, join: &str, id: &str) {
    let mut again = LoggedNode::start(net, join, "again", &[]);
    assert!(again.wait_exit("the revoked token to be refused"));
    let log = again.log();
    assert!(log.contains("rejected"), "{log}");
    assert_eq!(node(net, id)["connected"], false);
}

fn revoked_node_is_closed_and_refused(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let net = Net::start_with(opts);
    let echo = targets::echo();
    let unknown = ureq::get(&format!("{}/api/nodes/n_0000", net.api))
        .set("Authorization", &format!("Bearer {}", net.admin_token))
        .call();
    assert!(
        matches!(unknown, Err(ureq::Error::Status(404, _))),
        "{unknown:?}"
    );

    let (id, join) = invite(&net, "0xInvitePayout");
    let mut proc = LoggedNode::start(&net, &join, "first", &[]);
    wait_connected(&net, &id);
    let shown = node(&net, &id);
    assert_eq!(shown["payout_address"], "0xInvitePayout");
    assert_eq!(shown["revoked"], false);
    assert!(net.cli(&["nodes", "show", &id]).contains(&id));

    let mut tunnel = open_tunnel(&net, echo.port());
    let took = revoke_and_check(&mut proc, &mut tunnel, || {
        let out = net.cli(&["nodes", "revoke", &id]);
        assert!(out.contains("\"revoked\":true"), "{out}");
    });
    println!("revoked through the CLI: node connection closed in {took:?}");
    let shown = node(&net, &id);
    assert_eq!(
        (shown["revoked"].as_bool(), shown["connected"].as_bool()),
        (Some(true), Some(false))
    );
    token_is_refused(&net, &join, &id);
    assert!(matches!(
        socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", echo.port()),
        Connect::Refused(_)
    ));
}

fn revocation_reaches_every_server(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.node = false;
    let a = Net::start_with(opts.clone());
    let b = a.peer_with(opts);
    let echo = targets::echo();
    // Invited on B, so the node dials B; revoked on A.
    let (id, join) = invite(&b, "0xB");
    let mut proc = LoggedNode::start(&b, &join, "on-b", &[]);
    wait_connected(&b, &id);
    assert_eq!(
        node(&a, &id)["connected"],
        false,
        "A knows the identity, not the connection"
    );
    let mut tunnel = open_tunnel(&b, echo.port());
    let took = revoke_and_check(&mut proc, &mut tunnel, || {
        a.api_post(&format!("/api/nodes/{id}/revoke"), json!(null));
    });
    println!("revoked on server A: the node's connection to server B closed in {took:?}");
    assert_eq!(node(&b, &id)["revoked"], true);
    token_is_refused(&b, &join, &id);
}

fn one_live_connection_per_node_token(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let net = Net::start_with(opts);
    let echo = targets::echo();
    let (id, join) = invite(&net, "0xOperatorChose");
    let mut first = LoggedNode::start(&net, &join, "first", &[]);
    wait_connected(&net, &id);
    let mut second = LoggedNode::start(&net, &join, "second", &["--payout-address", "0xThief"]);
    let started = Instant::now();
    // Newest wins: the first daemon is told it was replaced, and stops.
    assert!(first.wait_exit("the replaced node to stop"));
    let took = started.elapsed();
    let log = first.log();
    assert!(log.contains("replaced by a newer connection"), "{log}");
    wait_connected(&net, &id);
    assert!(second.running(), "the newest connection stays");
    assert_eq!(net.connected_nodes().len(), 1);
    for _ in 0..10 {
        net.echo_once(echo.port());
    }
    let shown = node(&net, &id);
    assert_eq!(
        shown["payout_address"], "0xOperatorChose",
        "a hello never sets it"
    );
    assert_eq!(
        second.log().matches("admitted by server").count(),
        2,
        "one admission per lane (one lane per server core), no flapping"
    );

    let set = net.api_post(
        &format!("/api/nodes/{id}/payout"),
        json!({ "payout_address": "0xNew" }),
    );
    assert_eq!(set["payout_address"], "0xNew");
    let out = net.cli(&["nodes", "payout", &id, "0xCli"]);
    assert!(out.contains("0xCli"), "{out}");
    println!("same token twice: old connection closed in {took:?}; 10/10 relayed on the new one");
}

crate::both_drivers!(
    revoked_node_is_closed_and_refused,
    revocation_reaches_every_server,
    one_live_connection_per_node_token
);
