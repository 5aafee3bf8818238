//! The relay's two pumps over the in-memory server↔node pair. The test plays the
//! customer (in-memory pipes for the socket) and the node (the pair's client end,
//! reporting delivery as its control stream would), against the real pumps, counters
//! and credit accounts with a small lease book behind them: credit running out
//! mid-stream each way, a node that stops reporting delivery, a customer that stops
//! reading, half-close each way, and every byte billed once over a lossy path. No
//! sockets; each test runs in milliseconds.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use turbo_proto::wire::window::MAX_UNDELIVERED;
use turbo_quic::pair::{Loss, Pair, PairKick, PathConfig};
use turbo_quic::stream::Stream;

use super::counters::Counters;
use super::duplex::{relay_both_ways, PumpSetup};
use super::plan::{RelayError, Stalled};
use super::settle::settle_upload;
use crate::account::book::{accounts, Store};
use crate::account::{Accounts, Exhausted};
use crate::pool::{BufPool, CHUNK};
use crate::quic::conn::{record_delivery, Delivery};
use crate::quic::stream::RelayStream;
use crate::testing::block_on;
use crate::testing::pipe::Pipe;

/// The tunnel: the server's first bidirectional stream.
const TUNNEL: u64 = 1;
/// How long either side may hold the relay up, here.
const STALL: Duration = Duration::from_millis(150);
/// How long the relay waits for the node's last delivery report, here.
const GRACE: Duration = Duration::from_millis(200);
/// Bytes a customer's socket buffers.
const SOCKET: usize = 64 * 1024;

type NodePair = Pair<(), Delivery>;
type NodeStream = Stream<PairKick, ()>;

fn config(server: bool) -> quiche::Config {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).expect("config");
    c.set_application_protos(&[b"relay-test"]).expect("alpn");
    c.verify_peer(false);
    c.set_initial_max_data(32 << 20);
    c.set_initial_max_stream_data_bidi_local(2 << 20);
    c.set_initial_max_stream_data_bidi_remote(2 << 20);
    c.set_initial_max_streams_bidi(8);
    c.set_max_idle_timeout(10_000);
    turbo_quic::configure_paths(&mut c);
    if server {
        turbo_quic::pair::load_self_signed(&mut c);
    }
    c
}

/// A relay under test: the pair, the key's accounts and lease book, the customer's
/// two pipes, and the node's end of the tunnel.
struct Relay {
    pair: Rc<NodePair>,
    accounts: Accounts,
    store: Store,
    /// What the customer sends (the relay reads it).
    up: Pipe,
    /// What the customer receives (the relay writes it).
    down: Pipe,
    node: NodeStream,
    tunnel: RelayStream<PairKick>,
}

impl Relay {
    /// Connects the pair over `path`, drives it, gives the key `balance` bytes of
    /// credit, and opens the tunnel (one header byte, as the relay header does).
    async fn open(path: PathConfig, balance: u64, down_socket: usize) -> Relay {
        let pair = Rc::new(NodePair::connect(
            &mut config(false),
            &mut config(true),
            path,
        ));
        let driver = pair.clone();
        monoio::spawn(async move { driver.run(monoio::time::sleep).await });
        let tunnel = RelayStream::on(pair.server.clone(), TUNNEL);
        tunnel.send_all(b"H", false).await.expect("header");
        pair.arrived(&pair.client, TUNNEL).await;
        let node = Stream::new(pair.client.clone(), TUNNEL, 0x2);
        let mut header = [0u8; 1];
        assert_eq!(node.recv(&mut header).await.expect("header"), (1, false));
        let (accounts, store) = accounts(balance, Duration::from_secs(60));
        Relay {
            pair,
            accounts,
            store,
            up: Pipe::new(SOCKET),
            down: Pipe::new(down_socket),
            node,
            tunnel,
        }
    }

    /// Relays until both directions end (or the relay fails), settles the upload,
    /// and returns the outcome, the bytes billed each way and why credit ran out.
    async fn run(&self) -> Outcome {
        let key: Arc<str> = "k1".into();
        let guard = self.accounts.attach(&key);
        let counters = Counters::new(&guard);
        counters.carried_by("n1".into());
        let pool = BufPool::default();
        let setup = PumpSetup {
            pool: &pool,
            stall: STALL,
            idle_timeout: Duration::from_secs(10),
            pending: &[],
            body: None,
        };
        let (mut rd, mut wr) = (self.up.clone(), self.down.clone());
        let ends = (Vec::new(), false, &mut None);
        let result =
            relay_both_ways(setup, &self.tunnel, (&mut rd, &mut wr), ends, &counters).await;
        settle_upload(&self.tunnel, &counters, GRACE).await;
        let outcome = Outcome {
            result,
            up: counters.up.get(),
            down: counters.down.get(),
            sent_up: counters.sent_up.get(),
            halted: counters.halted.get(),
        };
        drop(counters);
        drop(guard);
        self.accounts.settle_all(Duration::from_secs(5)).await;
        outcome
    }

    /// What the lease book charged the key in total.
    fn charged(&self) -> u64 {
        self.store.book.borrow().charged
    }

    /// The customer sends `data` (then its FIN when `end`), in the background.
    fn customer_sends(&self, data: Vec<u8>, end: bool) {
        let up = self.up.clone();
        monoio::spawn(async move {
            up.write(&data).await;
            if end {
                up.end();
            }
        });
    }
}

/// How one relay ended.
struct Outcome {
    result: Result<(), RelayError>,
    /// Upstream bytes billed (reported delivered by the node).
    up: u64,
    /// Downstream bytes billed.
    down: u64,
    /// Upstream bytes handed to the node.
    sent_up: u64,
    halted: Option<Exhausted>,
}

/// Distinct bytes, so a lost, doubled or reordered chunk shows.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i % 251) as u8 ^ seed.wrapping_mul((i / 251) as u8))
        .collect()
}

/// The node reads the upload until its FIN, reporting each delivery (when `report`)
/// as its control stream would; returns what arrived.
async fn node_reads(pair: &NodePair, node: &NodeStream, report: bool) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let Ok((n, fin)) = node.recv(&mut buf).await else {
            return got;
        };
        got.extend_from_slice(&buf[..n]);
        if report {
            record_delivery(&pair.server, TUNNEL, got.len() as u64, fin);
        }
        if fin {
            return got;
        }
    }
}

#[test]
fn credit_running_out_mid_upload_ends_it_after_the_last_paid_byte() {
    block_on(async {
        let relay = Relay::open(PathConfig::default(), 200_000, SOCKET).await;
        let data = pattern(600_000, 3);
        relay.customer_sends(data.clone(), false);
        let (outcome, got) =
            futures_join(relay.run(), node_reads(&relay.pair, &relay.node, true)).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result.err());
        assert_eq!(outcome.halted, Some(Exhausted::NoCredits));
        assert_eq!(
            got.len(),
            200_000,
            "the node gets exactly the paid bytes, then a FIN"
        );
        assert_eq!(got[..], data[..200_000]);
        assert_eq!((outcome.up, outcome.down), (200_000, 0));
        assert_eq!(relay.charged(), 200_000, "every byte charged once");
    });
}

#[test]
fn credit_running_out_mid_download_delivers_only_the_paid_bytes() {
    block_on(async {
        let relay = Relay::open(PathConfig::default(), 150_000, 16 << 20).await;
        let data = pattern(500_000, 5);
        let node_sends = async {
            let _ = relay.node.send_all(&data, true).await;
        };
        let outcome = beside(relay.run(), node_sends).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result.err());
        assert_eq!(outcome.halted, Some(Exhausted::NoCredits));
        let got = relay.down.take(usize::MAX).await;
        assert_eq!(
            got.len(),
            150_000,
            "the customer gets exactly the paid bytes"
        );
        assert_eq!(got[..], data[..150_000]);
        assert_eq!((outcome.up, outcome.down), (0, 150_000));
        assert_eq!(relay.charged(), 150_000);
    });
}

#[test]
fn a_node_that_stops_reporting_delivery_stalls_the_upload_and_is_not_paid() {
    block_on(async {
        let relay = Relay::open(PathConfig::default(), 64 << 20, SOCKET).await;
        relay.customer_sends(pattern(3 * MAX_UNDELIVERED as usize, 7), false);
        let node_reads = async {
            node_reads(&relay.pair, &relay.node, false).await;
        };
        let outcome = beside(relay.run(), node_reads).await;
        assert!(
            matches!(outcome.result, Err(RelayError::Stalled(Stalled::Node))),
            "{:?}",
            outcome.result.err()
        );
        assert!(
            (MAX_UNDELIVERED..=MAX_UNDELIVERED + CHUNK as u64).contains(&outcome.sent_up),
            "the relay stops feeding a node {MAX_UNDELIVERED} bytes ahead of its reports \
             (sent {})",
            outcome.sent_up
        );
        assert_eq!(outcome.up, 0, "nothing reported delivered, nothing billed");
        assert_eq!(relay.charged(), 0, "unreported bytes are not charged");
        assert_eq!(
            relay.store.book.borrow().balance,
            64 << 20,
            "the key's whole balance is back"
        );
    });
}

#[test]
fn a_customer_that_stops_reading_stalls_the_download() {
    block_on(async {
        let relay = Relay::open(PathConfig::default(), 64 << 20, SOCKET).await;
        let node_sends = async {
            let _ = relay.node.send_all(&pattern(1 << 20, 9), true).await;
        };
        let outcome = beside(relay.run(), node_sends).await;
        assert!(
            matches!(outcome.result, Err(RelayError::Stalled(Stalled::Customer))),
            "{:?}",
            outcome.result.err()
        );
        assert_eq!(relay.down.queued(), SOCKET, "the socket buffer is full");
        assert!(
            outcome.down <= (SOCKET + CHUNK) as u64,
            "billed {}",
            outcome.down
        );
        assert_eq!(relay.charged(), outcome.down);
    });
}

#[test]
fn each_direction_half_closes_on_its_own() {
    block_on(async {
        let relay = Relay::open(PathConfig::default(), 1 << 20, SOCKET).await;
        relay.customer_sends(b"hello".to_vec(), true);
        let node_side = async {
            let got = node_reads(&relay.pair, &relay.node, true).await;
            // The upload ended; the download goes on until the node's own FIN.
            relay
                .node
                .send_all(b"world, later", true)
                .await
                .expect("node sends");
            got
        };
        let customer_reads = relay.down.read_to_end();
        let ((outcome, uploaded), downloaded) =
            futures_join(futures_join(relay.run(), node_side), customer_reads).await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result.err());
        assert_eq!(uploaded, b"hello");
        assert_eq!(downloaded, b"world, later");
        assert!(relay.down.ended(), "the customer got the node's FIN");
        assert_eq!((outcome.up, outcome.down), (5, 12));
        assert_eq!(relay.charged(), 17);
    });
}

#[test]
fn every_byte_arrives_and_is_billed_once_over_a_lossy_path() {
    block_on(async {
        let lossy = PathConfig {
            latency: Duration::from_millis(1),
            loss: Loss::Random {
                permille: 30,
                seed: 11,
            },
        };
        let relay = Relay::open(lossy, 64 << 20, SOCKET).await;
        let (up, down) = (pattern(1 << 20, 13), pattern(1 << 20, 17));
        relay.customer_sends(up.clone(), true);
        let node_side = async {
            let sending = relay.node.send_all(&down, true);
            let (sent, got) =
                futures_join(sending, node_reads(&relay.pair, &relay.node, true)).await;
            sent.expect("node sends");
            got
        };
        let ((outcome, uploaded), downloaded) = futures_join(
            futures_join(relay.run(), node_side),
            relay.down.read_to_end(),
        )
        .await;
        assert!(outcome.result.is_ok(), "{:?}", outcome.result.err());
        assert!(uploaded == up, "upload intact");
        assert!(downloaded == down, "download intact");
        let (to_server, to_client) = relay.pair.lost();
        assert!(
            to_server > 0 && to_client > 0,
            "the path lost datagrams both ways"
        );
        assert_eq!(relay.charged(), 2 << 20, "billed exactly once");
    });
}

/// Runs `relay` with `node` beside it, until the relay ends (the node's part is
/// dropped if it has not finished).
async fn beside<T>(
    relay: impl std::future::Future<Output = T>,
    node: impl std::future::Future<Output = ()>,
) -> T {
    let node = async {
        node.await;
        std::future::pending::<T>().await
    };
    monoio::select! {
        t = relay => t,
        t = node => t,
    }
}

/// Runs two futures to completion side by side.
async fn futures_join<A, B>(
    a: impl std::future::Future<Output = A>,
    b: impl std::future::Future<Output = B>,
) -> (A, B) {
    monoio::join!(a, b)
}
