//! A node that carries traffic keeps one QUIC connection (lane) per server core (an
//! idle one keeps one), and the server treats them as one node: customers are relayed
//! on the lane of the core that accepted them, with no hand-off between cores, while
//! the API, routing and the node's stream limit see a single node. A node held to one
//! lane (`--max-lanes 1`) still works, through hand-offs. The server in these tests runs
//! 2 cores.

use std::io::{Read, Write};
use std::net::TcpStream;

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{targets, wait_for, Net, Options};

const CONNECTIONS: u64 = 40;

fn echo(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).expect("write");
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

fn tunnel(net: &Net, user: &str, key: &str, port: u16) -> Connect {
    socks::connect(net.socks, user, key, "127.0.0.1", port)
}

/// `CONNECTIONS` short tunnels as `user`; returns the hand-offs they caused.
fn handoffs_over_many_tunnels(net: &Net, user: &str, port: u16) -> f64 {
    let before = net.metric("turbo_relay_handoffs_total");
    for i in 0..CONNECTIONS {
        match tunnel(net, user, &net.key, port) {
            Connect::Open(mut s) => echo(&mut s, format!("tunnel {i}").as_bytes()),
            other => panic!("tunnel {i} refused: {other:?}"),
        }
    }
    net.metric("turbo_relay_handoffs_total") - before
}

fn lanes_of(net: &Net, id: &str) -> u64 {
    net.node_info(id)
        .and_then(|n| n["lanes"].as_u64())
        .unwrap_or(0)
}

/// One tunnel through `id` (routed by `user`'s country): its first stream makes the
/// node open its other lane. Waits for both lanes.
fn open_lanes(net: &Net, id: &str, user: &str, port: u16) {
    match tunnel(net, user, &net.key, port) {
        Connect::Open(mut s) => echo(&mut s, b"first stream"),
        other => panic!("first tunnel refused: {other:?}"),
    }
    wait_for("both lanes of the node", || {
        (lanes_of(net, id) == 2).then_some(())
    });
}

fn a_node_has_a_lane_per_core(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let echo_server = targets::echo();
    let port = echo_server.port();
    let id = net.add_node(&["--country", "DE"]);
    assert_eq!(lanes_of(&net, &id), 1, "an idle node keeps one lane");
    open_lanes(&net, &id, "lanes-country-de", port);
    assert_eq!(net.connected_nodes().len(), 1, "two lanes, one node");
    assert_eq!(net.metric("turbo_nodes_connected"), 1.0);

    // Customers land on either core by the kernel's hash; each is relayed on the lane
    // of its own core.
    let handoffs = handoffs_over_many_tunnels(&net, "lanes-country-de", port);
    assert_eq!(handoffs, 0.0, "no customer moved between cores");

    // The stream limit is the node's, across lanes: three tunnels (of three keys, so
    // that no key's fair share gets in the way) fill it, a fourth is refused.
    let small = net.add_node(&["--country", "JP", "--max-streams", "3"]);
    open_lanes(&net, &small, "lanes-country-jp", port);
    let keys: Vec<String> = (0..4).map(|_| net.create_key("1GB").0).collect();
    let mut held: Vec<TcpStream> = keys[..3]
        .iter()
        .map(|k| match tunnel(&net, "lanes-country-jp", k, port) {
            Connect::Open(mut s) => {
                echo(&mut s, b"held");
                s
            }
            other => panic!("refused below the limit: {other:?}"),
        })
        .collect();
    match tunnel(&net, "lanes-country-jp", &keys[3], port) {
        Connect::Refused(code) => println!("{driver}: 4th tunnel refused with 0x{code:02x}"),
        other => panic!("a 4th stream over two lanes of a 3-stream node: {other:?}"),
    }
    held.pop();
    wait_for("a free stream on the node", || {
        match tunnel(&net, "lanes-country-jp", &keys[3], port) {
            Connect::Open(mut s) => {
                echo(&mut s, b"after");
                Some(())
            }
            _ => None,
        }
    });
    drop(held);

    // A node held to one lane: the customers accepted on the other core move there.
    let single = net.add_node(&["--country", "FR", "--max-lanes", "1"]);
    let handoffs = handoffs_over_many_tunnels(&net, "lanes-country-fr", port);
    println!("{driver}: one lane: {handoffs} of {CONNECTIONS} customers handed off");
    assert_eq!(
        lanes_of(&net, &single),
        1,
        "--max-lanes 1 holds after traffic"
    );
    assert!(
        handoffs > 0.0,
        "with 2 cores, some of {CONNECTIONS} customers land on the core without the lane"
    );
    net.kill_node(&id);
    wait_for("the two-lane node gone", || {
        (lanes_of(&net, &id) == 0).then_some(())
    });
    assert_eq!(net.connected_nodes().len(), 2);
}

crate::both_drivers!(a_node_has_a_lane_per_core);
