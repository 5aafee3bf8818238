//! Durability of admin writes on the memory store: whatever the API acknowledged
//! survives a SIGKILL of the server right after the answer, with no graceful save.

use std::time::Instant;

use serde_json::json;

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{targets, wait_for, Net, Options};

#[test]
fn acknowledged_admin_writes_survive_sigkill() {
    let mut net = Net::start_with(Options::new("io_uring"));
    let echo = targets::echo();
    let snapshot = net.dir.path().join("server/memory-store.json");
    // A key in use well before the crash: its revocation is the write under test.
    let (doomed, doomed_id) = net.create_key("1GB");
    net.echo_once(echo.port());
    assert!(matches!(
        socks::connect(net.socks, "e2e", &doomed, "127.0.0.1", echo.port()),
        Connect::Open(_)
    ));
    wait_for("the doomed key in the snapshot", || {
        let text = std::fs::read_to_string(&snapshot).ok()?;
        text.contains(&doomed_id).then_some(())
    });

    // Four acknowledged writes, then SIGKILL at once.
    let (fresh, fresh_id) = net.create_key("2GB");
    let (node_id, join) = net.invite();
    let topped = net.api_post(
        &format!("/api/keys/{}/credits", net.key_id),
        json!({"credits": "1TB"}),
    );
    let balance = topped["balance"].as_u64().expect("balance");
    net.api_post(&format!("/api/keys/{doomed_id}/revoke"), json!(null));
    // restart_server sends SIGKILL first: no graceful save runs.
    let acked = Instant::now();
    net.restart_server();
    println!(
        "SIGKILL right after the last acknowledgement; serving again {:?} later",
        acked.elapsed()
    );

    let fresh_info = net.api_get(&format!("/api/keys/{fresh_id}"));
    assert_eq!(
        fresh_info["balance"], 2_000_000_000u64,
        "the new key survived"
    );
    // The top-up survived; at most the echo's 8 bytes were billed after its answer.
    let after = net.key_info()["balance"].as_u64().expect("balance");
    assert!(
        after <= balance && balance - after <= 8,
        "balance {after}, acknowledged {balance}"
    );
    assert_eq!(
        net.api_get(&format!("/api/keys/{doomed_id}"))["revoked"],
        true
    );
    match socks::connect(net.socks, "e2e", &doomed, "127.0.0.1", echo.port()) {
        Connect::AuthFailed(_) => {}
        other => panic!("a revoked key authenticated after the restart: {other:?}"),
    }
    // The invited node joins with its join string; the new key relays through it.
    let child = net
        .node_command(&join, &net.node_state(&node_id))
        .spawn()
        .expect("spawn turbo-node");
    net.nodes.push((node_id.clone(), child));
    wait_for("the invited node to connect", || {
        net.node_info(&node_id)
            .filter(|n| n["connected"] == true)
            .map(|_| ())
    });
    match socks::connect(net.socks, "e2e", &fresh, "127.0.0.1", echo.port()) {
        Connect::Open(_) => {}
        other => panic!("the new key is not served after the restart: {other:?}"),
    }
}
