//! Node faults: a node that holds its QUIC connection but never answers a stream, and a
//! node that flaps. Customers keep being served, and the server keeps no stale state.

use std::time::Duration;

use crate::fixtures::{targets, wait_for, Net, Options};

#[test]
fn a_mute_node_times_out_and_traffic_moves_elsewhere() {
    let mut opts = Options::new("io_uring");
    opts.node = false;
    opts.node_liveness = "60s";
    opts.config = "connect_timeout = \"1s\"\n".into();
    let mut net = Net::start_with(opts);
    let good = net.add_node(&[]);
    let mute = net.add_node(&[]);
    let (_, child) = net.nodes.iter().find(|(id, _)| *id == mute).unwrap();
    // SAFETY: kill(2) on our own child.
    assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGSTOP) }, 0);
    let echo = targets::echo();
    let slow = |t: &Duration| *t >= Duration::from_secs(1);
    let info = |id: &str| net.node_info(id).unwrap();
    let weight = |id: &str| info(id)["score"]["weight"].as_f64().unwrap();
    // Until its score has fallen to a tenth of the good node's weight (each slow
    // request is one pick of the mute node, timed out and retried elsewhere). The API
    // shows the score the route table was last published with.
    let mut early = Vec::new();
    while early.len() < 60 && !(early.iter().any(slow) && weight(&mute) * 10.0 < weight(&good)) {
        early.push(net.echo_once(echo.port()));
    }
    let late: Vec<Duration> = (0..20).map(|_| net.echo_once(echo.port())).collect();
    let (first_slow, late_slow) = (
        early.iter().filter(|t| slow(t)).count(),
        late.iter().filter(|t| slow(t)).count(),
    );
    let (m, g) = (info(&mute), info(&good));
    println!(
        "mute node: {} requests all served; {first_slow} of the first {} waited for its \
         timeout and were retried, then {late_slow} of 20; score mute {} vs good {}",
        early.len() + 20,
        early.len(),
        m["score"]["weight"],
        g["score"]["weight"]
    );
    assert!(m["attempts_failed"].as_u64().unwrap() >= 1, "{m}");
    assert_eq!(
        g["attempts_ok"].as_u64().unwrap(),
        (early.len() + 20) as u64,
        "{g}"
    );
    // At a tenth of the weight the mute node gets about one request in eleven: 7 or
    // more of 20 happens 0.2% of the time (at parity, 6 or fewer happens 6%).
    assert!(late_slow <= 6, "traffic moved away from the mute node");
    assert!(m["score"]["weight"].as_f64() < g["score"]["weight"].as_f64());
}

#[test]
fn a_flapping_node_leaves_no_state_behind() {
    let mut opts = Options::new("io_uring");
    opts.node = false;
    let mut net = Net::start_with(opts);
    let steady = net.add_node(&[]);
    let echo = targets::echo();
    let baseline = net.metric("turbo_nodes_connected");
    assert_eq!(baseline, 1.0);
    // One node identity connecting and vanishing 100 times.
    let (id, join) = net.invite();
    let state = net.node_state(&id);
    for _ in 0..100 {
        let mut child = net.node_command(&join, &state).spawn().unwrap();
        wait_for("the flapping node to connect", || {
            net.node_info(&id)
                .filter(|n| n["connected"] == true)
                .map(|_| ())
        });
        child.kill().unwrap();
        child.wait().unwrap();
    }
    // The server notices the last loss at its liveness timeout at the latest.
    wait_for("the flapping node to be forgotten", || {
        (net.metric("turbo_nodes_connected") == 1.0).then_some(())
    });
    net.echo_once(echo.port());
    let nodes = net.api_get("/api/nodes");
    let listed = nodes.as_array().unwrap().len();
    // Streams and customer connections drain to zero once the last tunnel closes.
    wait_for("no open stream and no customer connection", || {
        let streams = net.node_info(&steady)?["active_streams"].as_u64()?;
        (streams == 0 && net.metric("turbo_customer_connections") == 0.0).then_some(())
    });
    let steady_streams = net.node_info(&steady).unwrap()["active_streams"]
        .as_u64()
        .unwrap();
    let flapper = net.node_info(&id).unwrap();
    println!(
        "100 flaps: {listed} nodes listed, 1 connected, steady node {steady_streams} open streams, flapper connected={}",
        flapper["connected"]
    );
    assert_eq!(listed, 2, "one entry per identity, not per connection");
    assert_eq!(flapper["connected"], false);
    assert_eq!(steady_streams, 0, "no stream left open");
}
