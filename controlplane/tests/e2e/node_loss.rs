//! A node that stops or dies must not leave customer connections hanging.

use std::io::Read;
use std::time::{Duration, Instant};

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{targets, Net, Options};

/// Opens `n` tunnels through the node to a target that holds them open, and returns
/// them once each has seen the target's greeting.
fn open_tunnels(net: &Net, n: usize) -> Vec<std::net::TcpStream> {
    let target = targets::hold();
    (0..n)
        .map(|_| {
            let Connect::Open(mut s) =
                socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", target.port())
            else {
                panic!("tunnel refused");
            };
            let mut hello = [0u8; 6];
            s.read_exact(&mut hello).unwrap();
            assert_eq!(&hello, b"hello\n");
            s
        })
        .collect()
}

/// Waits for every tunnel to end (EOF or reset); returns the time the last one took.
fn wait_closed(tunnels: Vec<std::net::TcpStream>, since: Instant, limit: Duration) -> Duration {
    let mut slowest = Duration::ZERO;
    for mut s in tunnels {
        s.set_read_timeout(Some(limit + Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 64];
        let r = s.read(&mut buf);
        assert!(
            matches!(r, Ok(0))
                || matches!(&r, Err(e) if e.kind() != std::io::ErrorKind::WouldBlock && e.kind() != std::io::ErrorKind::TimedOut),
            "tunnel still open after node loss: {r:?}"
        );
        slowest = slowest.max(since.elapsed());
    }
    slowest
}

fn node_sigterm_closes_tunnels(driver: &'static str) {
    let mut net = Net::start(driver);
    let tunnels = open_tunnels(&net, 5);
    let since = Instant::now();
    net.signal_node(libc::SIGTERM);
    let took = wait_closed(tunnels, since, Duration::from_secs(1));
    println!("{driver}: SIGTERM -> all tunnels closed in {took:?}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

fn node_sigkill_closes_tunnels(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node_liveness = "2s";
    let mut net = Net::start_with(opts);
    let tunnels = open_tunnels(&net, 5);
    let since = Instant::now();
    net.signal_node(libc::SIGKILL);
    let took = wait_closed(tunnels, since, Duration::from_secs(2));
    println!("{driver}: SIGKILL -> all tunnels closed in {took:?} (liveness 2s)");
    assert!(took < Duration::from_secs(3), "took {took:?}");
    // The dead node leaves the API's connected list.
    net.wait_nodes(0);
}

crate::both_drivers!(node_sigterm_closes_tunnels, node_sigkill_closes_tunnels);
