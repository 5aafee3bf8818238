//! Fair shares: one key cannot take every stream of a node, cannot hoard tunnels that
//! move no byte, and its never-used tunnels are cut sooner when their node is nearly
//! full. Each refusal is the specific reply (SOCKS5 0x02, HTTP 429 with `Proxy-Status`
//! details) and shows in `/metrics`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Instant;

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{curl, targets, wait_for, Net, Options};

/// A network with one node taking `max_streams` streams and `config` on the server.
fn net(driver: &'static str, config: &str, max_streams: &str) -> Net {
    let mut opts = Options::new(driver);
    opts.node = false;
    opts.config = config.into();
    let mut net = Net::start_with(opts);
    net.add_node(&["--max-streams", max_streams]);
    net
}

fn open(net: &Net, key: &str, port: u16) -> TcpStream {
    socks::open(net.socks, key, port)
}

fn refused(net: &Net, key: &str, port: u16) -> u8 {
    match socks::connect(net.socks, "e2e", key, "127.0.0.1", port) {
        Connect::Refused(code) => code,
        other => panic!("tunnel not refused: {other:?}"),
    }
}

/// HTTP CONNECT with curl as `key`; returns the response head.
fn http_connect(proxy: SocketAddr, key: &str, port: u16) -> String {
    let out = curl(&[
        "-s",
        "-o",
        "/dev/null",
        "-D",
        "-",
        "-p",
        "-x",
        &format!("http://e2e:{key}@{proxy}"),
        &format!("http://127.0.0.1:{port}/"),
        "--max-time",
        "5",
    ]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn one_key_cannot_take_every_stream_of_a_node(driver: &'static str) {
    let net = net(driver, "key_node_share = 0.5\n", "8");
    let hold = targets::hold();
    let (other, _) = net.create_key("1GB");
    // Key A holds its share: 4 of the node's 8 streams.
    let a: Vec<TcpStream> = (0..4).map(|_| open(&net, &net.key, hold.port())).collect();
    assert_eq!(refused(&net, &net.key, hold.port()), 2, "SOCKS5 0x02");
    let head = http_connect(net.http, &net.key, hold.port());
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("error=connection_limit_reached"), "{head}");
    assert!(head.contains("key_node_share"), "{head}");
    // Key B is served by the same node, up to its own share.
    let b: Vec<TcpStream> = (0..4).map(|_| open(&net, &other, hold.port())).collect();
    let hits = net.metric("turbo_limit_hits_total{limit=\"key_node_share\"}");
    println!(
        "{driver}: node of 8 streams, share 0.5: key A holds {}, its 5th got 0x02 / 429 \
         key_node_share; key B opened {}; {hits} refusals counted",
        a.len(),
        b.len()
    );
    assert_eq!(hits, 2.0);
    drop(a);
    wait_for("key A's share to free up", || {
        matches!(
            socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", hold.port()),
            Connect::Open(_)
        )
        .then_some(())
    });
}

fn idle_tunnels_are_capped_per_key(driver: &'static str) {
    let net = net(driver, "key_idle_tunnels = 3\n", "1024");
    let echo = targets::echo();
    // Three tunnels that never send a byte (an echo target sends none either).
    let mut idle: Vec<TcpStream> = (0..3).map(|_| open(&net, &net.key, echo.port())).collect();
    wait_for("3 idle tunnels counted", || {
        (net.metric("turbo_idle_tunnels") == 3.0).then_some(())
    });
    assert_eq!(refused(&net, &net.key, echo.port()), 2, "SOCKS5 0x02");
    let head = http_connect(net.http, &net.key, echo.port());
    assert!(head.starts_with("HTTP/1.1 429"), "{head}");
    assert!(head.contains("key_idle_tunnels"), "{head}");
    // Another key is not affected.
    let (other, _) = net.create_key("1GB");
    let mut b = open(&net, &other, echo.port());
    b.write_all(b"hi").unwrap();
    let mut back = [0u8; 2];
    b.read_exact(&mut back).unwrap();
    // A tunnel that moves a byte is no longer idle: room for one more.
    idle[0].write_all(b"x").unwrap();
    idle[0].read_exact(&mut back[..1]).unwrap();
    wait_for("2 idle tunnels counted", || {
        (net.metric("turbo_idle_tunnels") == 2.0).then_some(())
    });
    idle.push(open(&net, &net.key, echo.port()));
    let hits = net.metric("turbo_limit_hits_total{limit=\"key_idle_tunnels\"}");
    println!("{driver}: idle cap 3: 4th tunnel got 0x02 / 429 key_idle_tunnels; {hits} counted");
    assert_eq!(hits, 2.0);
}

fn idle_tunnels_are_cut_sooner_under_pressure(driver: &'static str) {
    // Shares off; a node of 10 streams; the relay idle timeout stays at 300 s.
    let config = "key_node_share = 0\nidle_tunnel_timeout = \"1s\"\n";
    let net = net(driver, config, "10");
    let echo = targets::echo();
    // Nine never-used tunnels: the node is at 90% of its streams, under pressure.
    let started = Instant::now();
    let mut idle: Vec<TcpStream> = (0..9).map(|_| open(&net, &net.key, echo.port())).collect();
    for s in &idle {
        s.set_nonblocking(true).unwrap();
    }
    // One is cut, which takes the node out of pressure; the others stay.
    let closed = |idle: &mut Vec<TcpStream>| {
        idle.iter_mut()
            .filter_map(|s| match s.read(&mut [0u8; 1]) {
                Ok(0) => Some(()),
                Err(e) if e.kind() != std::io::ErrorKind::WouldBlock => Some(()),
                _ => None,
            })
            .count()
    };
    wait_for("an idle tunnel to be cut", || {
        (closed(&mut idle) >= 1).then_some(())
    });
    let took = started.elapsed();
    let cuts = net.metric("turbo_limit_hits_total{limit=\"idle_tunnel_pressure\"}");
    let active = net.connected_nodes()[0]["active_streams"].as_u64();
    println!(
        "{driver}: node at 9/10 streams: a never-used tunnel cut after {took:?} (relay idle \
         timeout 300 s); {cuts} counted; {active:?} streams left"
    );
    assert_eq!(cuts, 1.0, "cut until the node is out of pressure, no more");
    assert_eq!(active, Some(8));
    // The node serves again.
    net.echo_once(echo.port());
}

crate::both_drivers!(
    one_key_cannot_take_every_stream_of_a_node,
    idle_tunnels_are_capped_per_key,
    idle_tunnels_are_cut_sooner_under_pressure
);
