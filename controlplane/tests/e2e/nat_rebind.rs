//! A node whose NAT mapping changes keeps working: packets from the new source port may
//! land on another core, which forwards them to the owner by the core id in the
//! connection ID.

use std::io::{Read, Write};

use crate::fixtures::nat::Nat;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{random_bytes, targets, Net, Options};

fn echo_once(s: &mut std::net::TcpStream, seed: u64) {
    let msg = random_bytes(2048, seed);
    s.write_all(&msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, msg);
}

fn nat_rebinding_keeps_the_node(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let nat = Nat::start(net.quic_addr());
    let join = net.cli(&["nodes", "invite"]);
    let server = net.quic_addr().to_string();
    let join = join.replace(&server, &nat.addr.to_string());
    net.start_node_with_join(&join);
    net.wait_nodes(1);
    let echo = targets::echo();
    let open = || match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", echo.port()) {
        Connect::Open(s) => s,
        other => panic!("refused: {other:?}"),
    };
    let mut long_lived = open();
    echo_once(&mut long_lived, 1);
    // With 2 cores, each new port has an even chance of hashing to the other core;
    // 8 rebinds exercise the forwarding path with probability 1 - 2^-8.
    for round in 0..8u64 {
        let port = nat.rebind();
        echo_once(&mut long_lived, 10 + round);
        let mut fresh = open();
        echo_once(&mut fresh, 100 + round);
        println!("{driver}: rebound to port {port}: tunnels still work");
    }
    assert_eq!(net.connected_nodes().len(), 1);
}

// Known open problem (see the issue note): the first rebind works, including packets
// forwarded from the core they landed on to the owning core (debug log "forwarding
// datagram to its owning core"); after the second path change the quiche connection
// idles out. Run with `cargo test -- --ignored nat_rebinding`.
mod io_uring {
    #[test]
    #[ignore = "second NAT rebind idles the connection out; under investigation"]
    fn nat_rebinding_keeps_the_node() {
        super::nat_rebinding_keeps_the_node("io_uring")
    }
}
mod legacy {
    #[test]
    #[ignore = "second NAT rebind idles the connection out; under investigation"]
    fn nat_rebinding_keeps_the_node() {
        super::nat_rebinding_keeps_the_node("legacy")
    }
}
