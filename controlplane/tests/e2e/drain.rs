//! SIGTERM drains the server: the listeners close, open tunnels finish within the grace
//! period, every lease is settled; the restarted server takes its node back within
//! seconds, and the balance is exact.

use std::io::Read;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::fixtures::redis::Redis;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{random_bytes, targets, wait_for, Net, Options};

const CHUNKS: usize = 5;
const CHUNK: usize = 100_000;

fn drain_lets_open_tunnels_finish(driver: &'static str) {
    let redis = Redis::start();
    let mut opts = Options::redis(driver, &redis);
    opts.config = "shutdown_grace = \"20s\"\n".into();
    opts.credits = "100MB";
    let mut net = Net::start_with(opts);
    let slow = targets::trickle(CHUNKS, CHUNK, Duration::from_millis(300));
    let tunnels: Vec<TcpStream> = (0..3)
        .map(
            |_| match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", slow.port()) {
                Connect::Open(s) => s,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    let mut first = [0u8; 1];
    for mut t in &tunnels {
        t.read_exact(&mut first).unwrap();
    }
    let sigterm = Instant::now();
    net.signal_server(libc::SIGTERM);
    // New customers are turned away at once (the listeners are closed)...
    wait_for("the listeners to close", || {
        TcpStream::connect(net.socks).is_err().then_some(())
    });
    // ...while the open tunnels run to their end.
    let expect = random_bytes(CHUNKS * CHUNK, 11);
    for mut t in tunnels {
        let mut rest = Vec::new();
        t.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len() + 1, CHUNKS * CHUNK, "the tunnel completed");
        assert_eq!(rest, expect[1..]);
        // The customer closes its side too: the tunnel is over.
    }
    let status = net.server.wait().unwrap();
    let drained = sigterm.elapsed();
    assert!(
        drained < Duration::from_secs(20),
        "the server waited for the grace period although every tunnel ended"
    );
    assert!(status.success(), "{status:?}");
    let leased: u64 = redis
        .cli(&[
            "HGET",
            &turbo_controlplane::store::redis::schema::key(&net.key_id),
            "leased",
        ])
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(leased, 0, "every lease settled");

    let restarted = Instant::now();
    net.restart_server();
    net.wait_nodes(1);
    let back = restarted.elapsed();
    let echo = targets::echo();
    assert!(matches!(
        socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", echo.port()),
        Connect::Open(_)
    ));
    let k = net.key_info();
    let u = |f: &str| k[f].as_u64().unwrap_or_else(|| panic!("{f} in {k}"));
    assert_eq!(u("bytes_down"), (3 * CHUNKS * CHUNK) as u64);
    assert_eq!(
        u("bytes_up") + u("bytes_down") + u("balance"),
        100_000_000,
        "{k}"
    );
    println!(
        "{driver}: SIGTERM with 3 tunnels mid-transfer: all completed, exit after {drained:?}; \
         node back {back:?} after the restart; balance exact ({} used)",
        u("bytes_up") + u("bytes_down")
    );
}

crate::both_drivers!(drain_lets_open_tunnels_finish);

#[test]
fn the_memory_store_survives_a_restart() {
    let mut net = Net::start_with(Options::new("io_uring"));
    let echo = targets::echo();
    let served = |net: &Net| {
        matches!(
            socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", echo.port()),
            Connect::Open(_)
        )
    };
    assert!(served(&net));
    let before = net.key_info();
    // SIGTERM: a clean stop that settles leases and writes the snapshot.
    net.signal_server(libc::SIGTERM);
    assert!(net.server.wait().unwrap().success());
    net.restart_server();
    // The same node token is accepted again, and the same key still works.
    net.wait_nodes(1);
    assert!(served(&net));
    let after = net.key_info();
    let used =
        |k: &serde_json::Value| k["bytes_up"].as_u64().unwrap() + k["bytes_down"].as_u64().unwrap();
    assert_eq!(
        after["balance"].as_u64().unwrap() + used(&after) - used(&before),
        before["balance"].as_u64().unwrap(),
        "balance carried over exactly: {before} -> {after}"
    );
    println!(
        "memory store restart: key and node token kept; balance {} -> {}",
        before["balance"], after["balance"]
    );
}
