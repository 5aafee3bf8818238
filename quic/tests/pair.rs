//! The stream adapter both ends share, over the in-memory pair: half-close each way,
//! every byte through a lossy path, flow control holding a writer whose reader stopped,
//! resets with their code, a cut path failing both ends' streams, and a path that
//! delivers on the test's own clock. No sockets; each test runs in milliseconds.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use turbo_quic::pair::{Loss, Pair, PathConfig};
use turbo_quic::stream::{Stream, StreamError};

/// A client-initiated stream.
const STREAM: u64 = 0;
/// A server-initiated stream (how Turbo's server opens a tunnel to a node).
const TUNNEL: u64 = 1;
const ABORT: u64 = 0x77;

fn config(server: bool, stream_window: u64, idle_ms: u64) -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).expect("config");
    c.set_application_protos(&[b"pair-test"]).expect("alpn");
    c.verify_peer(false);
    c.set_initial_max_data(16 << 20);
    c.set_initial_max_stream_data_bidi_local(stream_window);
    c.set_initial_max_stream_data_bidi_remote(stream_window);
    c.set_initial_max_streams_bidi(8);
    c.set_max_idle_timeout(idle_ms);
    turbo_quic::configure_paths(&mut c);
    if server {
        turbo_quic::pair::load_self_signed(&mut c);
    }
    c
}

fn pair(path: PathConfig, stream_window: u64, idle_ms: u64) -> Rc<Pair> {
    let (mut c, mut s) = (
        config(false, stream_window, idle_ms),
        config(true, stream_window, idle_ms),
    );
    Rc::new(Pair::connect(&mut c, &mut s, path))
}

/// Runs `test` beside the pair's driver on one thread; ends when `test` does.
fn run<F: std::future::Future<Output = ()>>(pair: Rc<Pair>, test: impl FnOnce(Rc<Pair>) -> F) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let driver = pair.clone();
        let driver = tokio::task::spawn_local(async move { driver.run(tokio::time::sleep).await });
        tokio::time::timeout(Duration::from_secs(20), test(pair))
            .await
            .expect("test finished in time");
        driver.abort();
    });
}

fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 31 % 251) as u8).collect()
}

/// Reads to the FIN.
async fn read_all(s: &Stream<turbo_quic::pair::PairKick>) -> Result<Vec<u8>, StreamError> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let (n, fin) = s.recv(&mut buf).await?;
        out.extend_from_slice(&buf[..n]);
        if fin {
            return Ok(out);
        }
    }
}

#[test]
fn each_direction_half_closes_on_its_own() {
    let p = pair(PathConfig::default(), 1 << 20, 5_000);
    run(p, |p| async move {
        let mut server = Stream::new(p.server.clone(), TUNNEL, ABORT);
        let down = pattern(100_000);
        server
            .send_all(&down, true)
            .await
            .expect("server sends and finishes");
        p.arrived(&p.client, TUNNEL).await;
        let mut client = Stream::new(p.client.clone(), TUNNEL, ABORT);
        assert_eq!(read_all(&client).await.expect("client reads"), down);
        // The server's half is closed; the client's still carries bytes.
        let up = pattern(50_000);
        client
            .send_all(&up, true)
            .await
            .expect("client sends after the server's FIN");
        assert_eq!(read_all(&server).await.expect("server reads"), up);
        client.finish();
        server.finish();
    });
}

#[test]
fn a_lossy_path_delivers_every_byte_in_order() {
    let path = PathConfig {
        latency: Duration::from_millis(2),
        loss: Loss::Random {
            permille: 30,
            seed: 7,
        },
    };
    let p = pair(path, 1 << 20, 5_000);
    run(p, |p| async move {
        let mut server = Stream::new(p.server.clone(), TUNNEL, ABORT);
        server.send_all(b"GET", true).await.expect("request");
        p.arrived(&p.client, TUNNEL).await;
        let mut client = Stream::new(p.client.clone(), TUNNEL, ABORT);
        assert_eq!(read_all(&client).await.expect("request arrives"), b"GET");
        let body = pattern(1 << 20);
        client.send_all(&body, true).await.expect("client sends");
        assert_eq!(read_all(&server).await.expect("server reads"), body);
        let (up, down) = p.lost();
        assert!(up > 10, "the path lost datagrams ({up} up, {down} down)");
        client.finish();
        server.finish();
    });
}

#[test]
fn a_reader_that_stops_holds_the_writer_at_its_window() {
    const WINDOW: u64 = 64 * 1024;
    let p = pair(PathConfig::default(), WINDOW, 5_000);
    run(p, |p| async move {
        let mut server = Stream::new(p.server.clone(), STREAM, ABORT);
        let accepted = Rc::new(Cell::new(0u64));
        let writer = {
            let (p, accepted) = (p.clone(), accepted.clone());
            tokio::task::spawn_local(async move {
                let mut client = Stream::new(p.client.clone(), STREAM, ABORT);
                for chunk in pattern(1 << 20).chunks(4096) {
                    client.send_all(chunk, false).await.expect("send");
                    accepted.set(accepted.get() + chunk.len() as u64);
                }
                client.send_all(&[], true).await.expect("fin");
                client.finish();
            })
        };
        // Nobody reads at the server: the writer stops once the stream window is full.
        loop {
            let blocked = accepted.get() > 0
                && p.client
                    .quic
                    .borrow_mut()
                    .stream_capacity(STREAM)
                    .is_ok_and(|c| c == 0);
            if blocked {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        assert!(
            accepted.get() <= WINDOW + 4096,
            "{} bytes accepted past a {WINDOW}-byte window",
            accepted.get()
        );
        // Reading frees the window and the writer finishes.
        assert_eq!(
            read_all(&server).await.expect("server reads"),
            pattern(1 << 20)
        );
        writer.await.expect("writer");
        server.finish();
    });
}

#[test]
fn a_dropped_stream_resets_the_peer_with_its_code() {
    let p = pair(PathConfig::default(), 1 << 20, 5_000);
    run(p, |p| async move {
        let server = Stream::new(p.server.clone(), TUNNEL, ABORT);
        server.send_all(b"partial", false).await.expect("send");
        drop(server);
        p.arrived(&p.client, TUNNEL).await;
        let client = Stream::new(p.client.clone(), TUNNEL, ABORT);
        let mut buf = [0u8; 64];
        let got = loop {
            match client.recv(&mut buf).await {
                Ok(_) => continue,
                Err(e) => break e,
            }
        };
        assert_eq!(got, StreamError::Reset(ABORT));
    });
}

#[test]
fn a_cut_path_fails_both_ends_streams() {
    let p = pair(PathConfig::default(), 1 << 20, 300);
    run(p, |p| async move {
        let server = Stream::new(p.server.clone(), TUNNEL, ABORT);
        server.send_all(b"hello", false).await.expect("send");
        p.arrived(&p.client, TUNNEL).await;
        let client = Stream::new(p.client.clone(), TUNNEL, ABORT);
        let mut buf = [0u8; 64];
        assert_eq!(client.recv(&mut buf).await, Ok((5, false)));
        let cut = PathConfig {
            latency: Duration::ZERO,
            loss: Loss::All,
        };
        p.set_path(true, cut);
        p.set_path(false, cut);
        assert_eq!(client.recv(&mut buf).await, Err(StreamError::ConnClosed));
        assert_eq!(server.recv(&mut buf).await, Err(StreamError::ConnClosed));
        assert!(
            p.client.quic.borrow().is_timed_out(),
            "closed by the idle timeout"
        );
    });
}

#[test]
fn the_path_delivers_on_the_test_clock() {
    let p = pair(PathConfig::default(), 1 << 20, 60_000);
    let hour = Duration::from_secs(3600);
    p.set_path(
        true,
        PathConfig {
            latency: hour,
            loss: Loss::None,
        },
    );
    p.client
        .quic
        .borrow_mut()
        .stream_send(STREAM, b"late", true)
        .expect("queue");
    let now = Instant::now();
    p.step(now);
    assert!(
        !p.server.quic.borrow().stream_readable(STREAM),
        "not yet delivered"
    );
    p.step(now + hour);
    assert!(
        p.server.quic.borrow().stream_readable(STREAM),
        "delivered at the test's clock"
    );
}
