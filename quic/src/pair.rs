//! An in-memory client↔server pair (after quinn's `Pair` and quiche's `Pipe`): two
//! quiche connections wrapped in [`Shared`] exactly as the server and node wrap theirs,
//! joined by a simulated path instead of sockets. Each direction has a latency and a
//! deterministic loss pattern; the path's clock is the `now` handed to
//! [`Pair::step`], so a test can deliver packets on its own schedule. quiche's own
//! timers (loss recovery, idle timeout) read the system clock, so [`Pair::run`]
//! waits for them in real time (milliseconds with the defaults).
//!
//! Stream tasks use [`crate::stream::Stream`] on [`Pair::client`] and [`Pair::server`],
//! on any single-threaded executor; [`Pair::run`] is their connection driver.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

use crate::stream::{Kick, Shared};
use crate::{QuicConn, ZcFactory, MAX_RECV_PAYLOAD};

/// Which datagrams a direction loses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Loss {
    /// None.
    #[default]
    None,
    /// Every `n`th datagram.
    EveryNth(u32),
    /// Each datagram with probability `permille`/1000, from a seeded generator (the
    /// same seed loses the same datagrams).
    Random {
        /// Loss probability in thousandths.
        permille: u32,
        /// Generator seed.
        seed: u64,
    },
    /// Every datagram (a cut path).
    All,
}

/// One direction of the simulated path.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathConfig {
    /// One-way delay.
    pub latency: Duration,
    /// Which datagrams are lost.
    pub loss: Loss,
}

/// Datagrams in flight one way, and what the direction lost.
struct Link {
    config: Cell<PathConfig>,
    in_flight: RefCell<VecDeque<(Instant, Vec<u8>)>>,
    sent: Cell<u64>,
    lost: Cell<u64>,
    rng: Cell<u64>,
}

impl Link {
    fn new(config: PathConfig) -> Link {
        let seed = match config.loss {
            Loss::Random { seed, .. } => seed,
            _ => 1,
        };
        Link {
            config: Cell::new(config),
            in_flight: RefCell::default(),
            sent: Cell::new(0),
            lost: Cell::new(0),
            rng: Cell::new(seed | 1),
        }
    }

    /// Whether the next datagram is lost.
    fn loses(&self) -> bool {
        let n = self.sent.get() + 1;
        self.sent.set(n);
        let lost = match self.config.get().loss {
            Loss::None => false,
            Loss::All => true,
            Loss::EveryNth(k) => k > 0 && n.is_multiple_of(u64::from(k)),
            Loss::Random { permille, .. } => {
                // xorshift64: deterministic and good enough to spread losses.
                let mut x = self.rng.get();
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                self.rng.set(x);
                x % 1000 < u64::from(permille)
            }
        };
        if lost {
            self.lost.set(self.lost.get() + 1);
        }
        lost
    }

    fn push(&self, now: Instant, datagram: Vec<u8>) {
        if !self.loses() {
            let at = now + self.config.get().latency;
            self.in_flight.borrow_mut().push_back((at, datagram));
        }
    }

    fn pop_due(&self, now: Instant) -> Option<Vec<u8>> {
        let mut q = self.in_flight.borrow_mut();
        match q.front() {
            Some((at, _)) if *at <= now => q.pop_front().map(|(_, d)| d),
            _ => None,
        }
    }

    fn next_due(&self) -> Option<Instant> {
        self.in_flight.borrow().front().map(|(at, _)| *at)
    }
}

/// The pair's driver handle: a stream task that queued data kicks it.
#[derive(Clone, Default)]
pub struct PairKick(Rc<KickState>);

#[derive(Default)]
struct KickState {
    kicked: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

impl Kick for PairKick {
    fn kick(&self) {
        self.0.kicked.set(true);
        if let Some(w) = self.0.waker.borrow_mut().take() {
            w.wake();
        }
    }
}

/// One end of the pair, with `X` as each stream's extra state (what the code under
/// test keeps beside a stream; the server's relay keeps the node's delivery reports).
pub type End<X = ()> = Rc<Shared<PairKick, X>>;

/// A client and a server joined by a simulated path; `XC` and `XS` are the stream
/// extras of the client and server ends.
pub struct Pair<XC = (), XS = ()> {
    /// The client end (the node's side in Turbo).
    pub client: End<XC>,
    /// The server end.
    pub server: End<XS>,
    to_server: Link,
    to_client: Link,
    kick: PairKick,
    /// Tasks waiting for a peer's stream to arrive ([`Pair::arrived`]).
    arrivals: RefCell<Vec<Waker>>,
    client_addr: SocketAddr,
    server_addr: SocketAddr,
}

impl<XC: Default, XS: Default> Pair<XC, XS> {
    /// Connects a client with `client` to a server with `server` (which must hold a
    /// certificate) over a path with `path` each way, and completes the handshake.
    ///
    /// # Panics
    /// When quiche refuses the configurations or the handshake cannot complete.
    pub fn connect(
        client: &mut quiche::Config,
        server: &mut quiche::Config,
        path: PathConfig,
    ) -> Self {
        let client_addr = SocketAddr::from(([10, 0, 0, 2], 40_000));
        let server_addr = SocketAddr::from(([10, 0, 0, 1], 443));
        let scid = [0xc1; 16];
        let c: QuicConn = quiche::connect_with_buffer_factory::<ZcFactory>(
            Some("localhost"),
            &quiche::ConnectionId::from_ref(&scid),
            client_addr,
            server_addr,
            client,
        )
        .expect("client connection");
        let sid = [0x5e; 16];
        let s: QuicConn = quiche::accept_with_buf_factory::<ZcFactory>(
            &quiche::ConnectionId::from_ref(&sid),
            None,
            server_addr,
            client_addr,
            server,
        )
        .expect("server connection");
        let kick = PairKick::default();
        let pair = Pair {
            client: Rc::new(Shared::new(c, kick.clone())),
            server: Rc::new(Shared::new(s, kick.clone())),
            to_server: Link::new(path),
            to_client: Link::new(path),
            kick,
            arrivals: RefCell::default(),
            client_addr,
            server_addr,
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !(pair.client.quic.borrow().is_established()
            && pair.server.quic.borrow().is_established())
        {
            assert!(Instant::now() < deadline, "handshake did not complete");
            let now = Instant::now();
            if !pair.step(now) {
                let wait = pair.next_deadline().map_or(Duration::from_millis(1), |t| {
                    t.saturating_duration_since(Instant::now())
                });
                std::thread::sleep(wait.min(Duration::from_millis(5)));
            }
        }
        pair
    }

    /// Changes the path one way (`to_server` or back) from now on.
    pub fn set_path(&self, to_server: bool, path: PathConfig) {
        let link = if to_server {
            &self.to_server
        } else {
            &self.to_client
        };
        link.config.set(path);
    }

    /// Datagrams lost so far: (to the server, to the client).
    pub fn lost(&self) -> (u64, u64) {
        (self.to_server.lost.get(), self.to_client.lost.get())
    }

    /// One round at path time `now`: each end sends what it has onto the path, the
    /// path delivers what is due, quiche timers that expired fire, and stream tasks
    /// that can go on are woken. Returns whether anything moved.
    pub fn step(&self, now: Instant) -> bool {
        let mut moved = send_all(&self.client, &self.to_server, now);
        moved |= send_all(&self.server, &self.to_client, now);
        moved |= self.deliver(
            &self.to_server,
            &self.server,
            self.client_addr,
            self.server_addr,
            now,
        );
        moved |= self.deliver(
            &self.to_client,
            &self.client,
            self.server_addr,
            self.client_addr,
            now,
        );
        if moved {
            for w in self.arrivals.borrow_mut().drain(..) {
                w.wake();
            }
        }
        moved |= fire_timers(&self.client);
        moved |= fire_timers(&self.server);
        moved
    }

    fn deliver<X: Default>(
        &self,
        link: &Link,
        to: &End<X>,
        from: SocketAddr,
        at: SocketAddr,
        now: Instant,
    ) -> bool {
        let mut any = false;
        while let Some(mut d) = link.pop_due(now) {
            let _ = to
                .quic
                .borrow_mut()
                .recv(&mut d, quiche::RecvInfo { from, to: at });
            any = true;
        }
        any
    }

    /// Waits until the peer's stream `id` has reached `end` (it carries data or its
    /// FIN, or was reset), or the connection closed: the moment a server or node would
    /// see it in quiche's readable streams and give it a task.
    pub async fn arrived<X: Default>(&self, end: &End<X>, id: u64) {
        poll_fn(|cx| {
            let q = end.quic.borrow();
            if q.stream_readable(id) || q.is_closed() {
                return Poll::Ready(());
            }
            self.arrivals.borrow_mut().push(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }

    /// The earliest moment something is due: a datagram's arrival or a quiche timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        let now = Instant::now();
        [
            self.to_server.next_due(),
            self.to_client.next_due(),
            self.client.quic.borrow().timeout().map(|t| now + t),
            self.server.quic.borrow().timeout().map(|t| now + t),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Drives both connections in real time until both are closed: steps while
    /// anything moves, then waits for a stream task's kick or the next deadline
    /// (`sleep` is the executor's timer).
    pub async fn run<S: Future<Output = ()>>(&self, sleep: impl Fn(Duration) -> S) {
        while !(self.client.is_closed() && self.server.is_closed()) {
            while self.step(Instant::now()) {}
            self.kick.0.kicked.set(false);
            let wait = self.next_deadline().map_or(Duration::from_millis(50), |t| {
                t.saturating_duration_since(Instant::now())
            });
            let mut timer = pin!(sleep(wait));
            poll_fn(|cx| {
                if self.kick.0.kicked.get() {
                    return Poll::Ready(());
                }
                *self.kick.0.waker.borrow_mut() = Some(cx.waker().clone());
                timer.as_mut().poll(cx)
            })
            .await;
        }
    }
}

/// Fires `end`'s expired quiche timer and wakes the stream tasks that can go on;
/// returns whether a timer fired.
fn fire_timers<X: Default>(end: &End<X>) -> bool {
    let fired = end.quic.borrow().timeout() == Some(Duration::ZERO);
    if fired {
        end.quic.borrow_mut().on_timeout();
    }
    end.wake_ready();
    if end.quic.borrow().is_closed() {
        end.mark_closed();
    }
    fired
}

/// Sends every datagram `end` has ready onto `link`.
fn send_all<X: Default>(end: &End<X>, link: &Link, now: Instant) -> bool {
    let mut buf = [0u8; MAX_RECV_PAYLOAD];
    let mut any = false;
    loop {
        let sent = end.quic.borrow_mut().send(&mut buf);
        match sent {
            Ok((n, _)) => {
                link.push(now, buf[..n].to_vec());
                any = true;
            }
            Err(_) => return any,
        }
    }
}

/// Loads a fresh self-signed certificate for `localhost` into `config`, the server
/// side of a pair.
///
/// # Panics
/// When the certificate cannot be made or quiche refuses it.
pub fn load_self_signed(config: &mut quiche::Config) {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).expect("cert");
    // quiche loads PEM from files only; they are read at once and the folder removed.
    let dir = tempfile::tempdir().expect("tempdir");
    let (crt, key) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&crt, cert.cert.pem()).expect("write cert");
    std::fs::write(&key, cert.key_pair.serialize_pem()).expect("write key");
    config
        .load_cert_chain_from_pem_file(crt.to_str().expect("path"))
        .expect("chain");
    config
        .load_priv_key_from_pem_file(key.to_str().expect("path"))
        .expect("key");
}
