//! One QUIC connection to the server, from dial to close: TLS with the pinned (or
//! CA-verified) certificate, the hello on the control stream, pings and stats, a relay
//! task per server-opened stream (one customer tunnel each), and a graceful drain on
//! shutdown. A node keeps one connection per lane ([`Lane`]): lane `k` aims its Initial
//! at server core `k` (byte 0 of the connection ID it picks), so each server core
//! relays over a connection of its own.
//!
//! (The `session` of [`Lane`] is the id one node run gives all its lanes, not a
//! customer's sticky session.)

use std::{
    collections::HashSet, future::Future, net::SocketAddr, ops::ControlFlow, pin::Pin, rc::Rc,
    time::Duration,
};

use tokio::net::UdpSocket;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};
use turbo_proto::wire::control::{
    ControlDecoder, ControlMessage, Hello, NodeStats, RejectCode, Welcome,
};
use turbo_proto::wire::WIRE_VERSION;
use turbo_quic::batch::{Batcher, Pacer};

pub use turbo_proto::wire::control::Lane;

mod setup;
use setup::connect;
pub(crate) use setup::resolve_server;
pub(crate) use setup::{bind_udp, check_pin, quic_config};

use crate::conn::Conn;
use crate::servers::Slot;
use crate::{NodeConfig, NodeError, Shared};

const CONTROL: u64 = 0;
const STATS_EVERY: Duration = Duration::from_secs(10);

/// How a connection ended without a fatal error.
pub enum ConnectionEnd {
    /// The shutdown future resolved and the node drained.
    Shutdown,
    /// The monthly data cap was reached and the node drained.
    Capped,
    /// The connection was lost; `welcomed` says whether it had been admitted.
    Lost {
        /// Whether the server had accepted the hello.
        welcomed: bool,
    },
}

/// Runs one connection to the server, from dial to close. Must run inside a `LocalSet`.
///
/// # Errors
/// Fatal problems only: a wrong pin, a refused token, bad configuration.
pub async fn run(
    cfg: &NodeConfig,
    shared: &Rc<Shared>,
    slot: &Slot,
    lane: Lane,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<ConnectionEnd, NodeError> {
    let (socket, local, peer, conn) = connect(cfg, lane).await?;
    let status_lane = slot.status_lane(lane.index);
    let _lane_status = crate::status::LaneGuard::new(&shared.status, status_lane);
    info!(%peer, "connecting");
    let mut udp = Udp {
        sender: crate::udp::batcher(&socket, cfg.udp_offload)?,
        socket,
        local,
        pacer: Pacer::default(),
        recv_buf: vec![0u8; crate::udp::RECV_BUFFER],
    };
    let mut connection = Connection {
        cfg,
        shared,
        slot,
        lane,
        status_lane,
        conn,
        control: Control::new(),
        streams: NewStreams::default(),
        drain: None,
    };
    loop {
        match connection.turn(&mut udp).await? {
            ControlFlow::Break(end) => return Ok(end),
            ControlFlow::Continue(paced) => connection.wait(&mut udp, shutdown, paced).await,
        }
    }
}

/// The connection's UDP side: the socket, its batched sender and pacer, and the receive
/// buffer.
struct Udp {
    socket: UdpSocket,
    local: SocketAddr,
    sender: Batcher,
    pacer: Pacer,
    recv_buf: Vec<u8>,
}

impl Udp {
    /// Sends what quiche has ready; returns when the held-back packet is due, if any.
    async fn flush(&mut self, conn: &Conn) -> Option<std::time::Instant> {
        crate::udp::flush(conn, &self.socket, &mut self.sender, &mut self.pacer).await
    }
}

/// The control stream: the decoder, what waits to be sent, and the ping and stats
/// timers.
struct Control {
    decoder: ControlDecoder,
    out: Vec<u8>,
    hello_sent: bool,
    /// The server accepted the hello.
    welcomed: bool,
    ping_every: Duration,
    next_ping: Instant,
    next_stats: Instant,
    ping_seq: u64,
}

impl Control {
    fn new() -> Self {
        let ping_every = Duration::from_secs(1);
        Control {
            decoder: ControlDecoder::new(),
            out: Vec::new(),
            hello_sent: false,
            welcomed: false,
            ping_every,
            next_ping: Instant::now() + ping_every,
            next_stats: Instant::now() + STATS_EVERY,
            ping_seq: 0,
        }
    }

    fn queue(&mut self, m: ControlMessage) {
        m.encode(&mut self.out);
    }

    fn ping(&mut self) {
        self.ping_seq += 1;
        self.queue(ControlMessage::Ping { seq: self.ping_seq });
        self.next_ping = Instant::now() + self.ping_every;
    }
}

/// The server-opened relay streams (one customer tunnel each) seen so far:
/// bidirectional, ids 1, 5, 9, ... Their first bytes may arrive out of order, so
/// skipped ids are remembered as gaps (bounded: quiche refuses ids beyond the stream
/// limit we advertise).
struct NewStreams {
    next: u64,
    gaps: HashSet<u64>,
}

impl Default for NewStreams {
    fn default() -> Self {
        NewStreams {
            next: 1,
            gaps: HashSet::new(),
        }
    }
}

impl NewStreams {
    /// The readable streams not seen before, now marked as seen.
    fn take_fresh(&mut self, conn: &Conn) -> Vec<u64> {
        let fresh: Vec<u64> = conn
            .quic
            .borrow()
            .readable()
            .filter(|id| id % 4 == 1 && (*id >= self.next || self.gaps.contains(id)))
            .collect();
        for &id in &fresh {
            if id >= self.next {
                self.gaps.extend((self.next..id).step_by(4));
                self.next = id + 4;
            } else {
                self.gaps.remove(&id);
            }
        }
        fresh
    }
}

/// A drain under way: no new streams; the connection closes once the open ones end or
/// at `deadline`.
struct Drain {
    deadline: Instant,
    /// Started by the monthly data cap, not by shutdown.
    capped: bool,
}

impl Drain {
    fn end(&self) -> ConnectionEnd {
        if self.capped {
            ConnectionEnd::Capped
        } else {
            ConnectionEnd::Shutdown
        }
    }
}

/// One connection to the server between turns of its loop.
struct Connection<'a> {
    cfg: &'a NodeConfig,
    shared: &'a Rc<Shared>,
    slot: &'a Slot,
    lane: Lane,
    /// The lane's index in the status ([`Slot::status_lane`]).
    status_lane: u16,
    conn: Rc<Conn>,
    control: Control,
    streams: NewStreams,
    drain: Option<Drain>,
}

impl Connection<'_> {
    /// One turn: control stream and new streams, wake the relays, start or finish a
    /// drain, send. Breaks with how the connection ended; continues with when the
    /// held-back packet is due.
    async fn turn(
        &mut self,
        udp: &mut Udp,
    ) -> Result<ControlFlow<ConnectionEnd, Option<std::time::Instant>>, NodeError> {
        self.exchange_control()?;
        self.conn.wake_ready();
        let active = self.conn.driver.active.get();
        self.shared
            .status
            .set_lane(self.status_lane, |l| l.active = active);
        if self.control.welcomed && self.drain.is_none() && self.shared.usage.capped() {
            warn!(cap = ?self.shared.usage.cap(), "monthly data cap reached: no new streams until next month");
            self.begin_drain(true);
        }
        if let Some(drain) = &self.drain {
            if self.conn.driver.active.get() == 0 || Instant::now() >= drain.deadline {
                let end = drain.end();
                let _ = self.conn.quic.borrow_mut().close(true, 0, b"shutdown");
                udp.flush(&self.conn).await;
                self.conn.mark_closed();
                info!("shut down");
                return Ok(ControlFlow::Break(end));
            }
        }
        let paced = udp.flush(&self.conn).await;
        let counters = udp.sender.counters;
        self.shared
            .status
            .set_lane(self.status_lane, |l| l.udp = counters);
        if self.conn.quic.borrow().is_closed() {
            return self.closed().map(ControlFlow::Break);
        }
        Ok(ControlFlow::Continue(paced))
    }

    /// Sends the hello once the handshake is done, then reads the control stream,
    /// accepts new relay streams and writes what the control stream has queued.
    fn exchange_control(&mut self) -> Result<(), NodeError> {
        let established = self.conn.quic.borrow().is_established();
        if established && !self.control.hello_sent {
            check_pin(self.cfg, &self.conn)?;
            self.control
                .queue(ControlMessage::Hello(hello(self.cfg, self.lane)));
            self.control.hello_sent = true;
        }
        if established {
            top_up_connection_ids(&self.conn);
        }
        if self.control.hello_sent {
            self.read_control()?;
            self.accept_streams();
            self.write_control();
        }
        Ok(())
    }

    fn read_control(&mut self) -> Result<(), NodeError> {
        let mut buf = [0u8; 2048];
        loop {
            let r = self.conn.quic.borrow_mut().stream_recv(CONTROL, &mut buf);
            match r {
                Ok((n, _)) => self.control.decoder.push(&buf[..n]),
                Err(_) => break,
            }
        }
        while let Some(msg) = self
            .control
            .decoder
            .next_message()
            .map_err(|e| NodeError::Protocol(e.to_string()))?
        {
            self.on_control(msg)?;
        }
        Ok(())
    }

    fn on_control(&mut self, msg: ControlMessage) -> Result<(), NodeError> {
        match msg {
            ControlMessage::Welcome(w) => self.on_welcome(&w),
            ControlMessage::Reject { code, message } => {
                if code == RejectCode::BadToken {
                    return Err(NodeError::Rejected(message));
                }
                warn!(?code, %message, "server refused the node");
                self.shared.status.refusal.replace(Some(message));
            }
            ControlMessage::Ping { seq } => self.control.queue(ControlMessage::Pong { seq }),
            ControlMessage::Drain { grace_ms } => {
                info!(grace_ms, "server is draining");
                self.slot.draining.set(true);
                self.shared.fleet_changed.notify_one();
            }
            ControlMessage::Servers(list) => self.on_servers(list),
            ControlMessage::Policy(p) => {
                let rules = crate::guard::ServerRules {
                    ports: p.ports,
                    nets: p.nets.iter().filter_map(|n| n.parse().ok()).collect(),
                    domains: p.domains,
                };
                info!(?rules, "server destination rules applied");
                self.shared.policy.set_server_rules(rules);
            }
            ControlMessage::Score { milli } => {
                self.shared
                    .status
                    .score
                    .set(Some(f64::from(milli) / 1000.0));
            }
            ControlMessage::Earnings {
                today_nano,
                month_nano,
            } => {
                let earnings = Some((today_nano, month_nano));
                self.shared.status.earnings_nano.set(earnings);
            }
            ControlMessage::Held { reason } => {
                let held = (!reason.is_empty()).then_some(reason);
                *self.shared.status.held.borrow_mut() = held;
            }
            _ => {}
        }
        Ok(())
    }

    fn on_welcome(&mut self, w: &Welcome) {
        info!(node_id = %w.node_id, lanes = w.lanes, "admitted by server");
        self.control.welcomed = true;
        let shared = self.shared;
        shared.status.refusal.take();
        self.slot.lane_up();
        self.slot.draining.set(false);
        self.slot.lanes.set(w.lanes);
        self.slot.lanes_changed.notify_one();
        shared
            .status
            .set_lane(self.status_lane, |l| l.connected = true);
        if self.lane.index == 0 {
            shared.status.state.set("connected");
        }
        *shared.status.node_id.borrow_mut() = Some(w.node_id.clone());
        self.control.ping_every = Duration::from_millis(w.ping_interval_ms.clamp(100, 60_000));
        self.control.next_ping = Instant::now() + self.control.ping_every;
    }

    /// The network's server list: kept for the supervisor, which also learns here which
    /// server this slot reached.
    fn on_servers(&mut self, list: Vec<turbo_proto::wire::control::ServerInfo>) {
        if let Some(me) = list.iter().find(|s| s.sender) {
            self.slot.server.replace(Some(me.id.clone()));
        }
        tracing::debug!(servers = list.len(), "server list");
        self.shared.fleet.replace(Some(list));
        self.shared.fleet_changed.notify_one();
    }

    /// Starts a relay task for each new server-opened stream.
    fn accept_streams(&mut self) {
        for id in self.streams.take_fresh(&self.conn) {
            tokio::task::spawn_local(crate::relay::serve(
                self.conn.clone(),
                id,
                self.shared.clone(),
                u64::from(self.cfg.max_streams),
            ));
            if !self.slot.carrying.replace(true) {
                // The first stream: open the other lanes now.
                tracing::debug!("first relay stream: the other lanes may open");
                self.slot.lanes_changed.notify_one();
            }
        }
    }

    /// Sends what is queued for the control stream, the relays' reports included, as
    /// far as flow control allows.
    fn write_control(&mut self) {
        let out = &mut self.control.out;
        out.append(&mut self.conn.driver.outbox.borrow_mut());
        if !out.is_empty() {
            let r = self.conn.quic.borrow_mut().stream_send(CONTROL, out, false);
            if let Ok(n) = r {
                out.drain(..n);
            }
        }
    }

    /// Refuses new streams and tells the server, which stops opening them; the
    /// connection closes once the open streams end or the grace runs out.
    fn begin_drain(&mut self, capped: bool) {
        let grace = self.shared.status.drain_grace(self.cfg.shutdown_grace);
        self.conn.driver.draining.set(true);
        self.control.queue(ControlMessage::Drain {
            grace_ms: grace.as_millis() as u64,
        });
        self.drain = Some(Drain {
            deadline: Instant::now() + grace,
            capped,
        });
    }

    /// The connection closed: how it ended, or the fatal error the server closed it
    /// with.
    fn closed(&self) -> Result<ConnectionEnd, NodeError> {
        self.conn.mark_closed();
        if let Some(drain) = &self.drain {
            return Ok(drain.end());
        }
        let q = self.conn.quic.borrow();
        warn!(
            timed_out = q.is_timed_out(),
            peer_error = ?q.peer_error().map(|e| String::from_utf8_lossy(&e.reason).into_owned()),
            "connection closed"
        );
        if let Some(e) = q.peer_error() {
            // A revoked token, or another daemon with this token took over:
            // reconnecting would not help (and would fight the other daemon).
            let fatal = [RejectCode::BadToken, RejectCode::Replaced];
            let reason = String::from_utf8_lossy(&e.reason).into_owned();
            if e.is_app && fatal.iter().any(|c| *c as u64 == e.error_code) {
                return Err(NodeError::Rejected(reason));
            }
            if e.is_app && e.error_code == RejectCode::NetworkTaken as u64 {
                self.shared.status.refusal.replace(Some(reason));
            }
        }
        Ok(ConnectionEnd::Lost {
            welcomed: self.control.welcomed,
        })
    }

    /// Waits for the next event: datagrams, a relay's kick, the paced packet, quiche's
    /// timer, a ping or stats tick, or shutdown.
    async fn wait(
        &mut self,
        udp: &mut Udp,
        shutdown: &mut Pin<&mut impl Future<Output = ()>>,
        paced: Option<std::time::Instant>,
    ) {
        let timeout = self
            .conn
            .quic
            .borrow()
            .timeout()
            .unwrap_or(Duration::from_secs(60));
        let welcomed = self.control.welcomed;
        tokio::select! {
            r = udp.socket.readable() => {
                if r.is_ok() {
                    // Drain the burst before doing anything else, so the socket buffer
                    // does not overflow while quiche works.
                    crate::udp::recv_ready(&self.conn, &udp.socket, &udp.sender, &mut udp.recv_buf, udp.local);
                }
            }
            _ = self.conn.driver.wake.notified() => {}
            // The held packet is due: the next turn of the loop sends it.
            _ = sleep_until(paced.map_or_else(Instant::now, Instant::from_std)), if paced.is_some() => {}
            _ = sleep(timeout) => self.conn.quic.borrow_mut().on_timeout(),
            _ = sleep_until(self.control.next_ping), if welcomed => self.control.ping(),
            _ = sleep_until(self.control.next_stats), if welcomed => self.queue_stats(),
            _ = shutdown.as_mut(), if self.drain.is_none() => {
                if !self.slot.retired.get() {
                    self.shared.status.state.set("stopping");
                }
                info!(grace = ?self.cfg.shutdown_grace, "draining");
                self.begin_drain(false);
            }
        }
    }

    fn queue_stats(&mut self) {
        let d = &self.conn.driver;
        self.control.queue(ControlMessage::Stats(NodeStats {
            active_streams: d.active.get(),
            total_streams: d.total.get(),
            bytes_from_targets: d.from_targets.get(),
            bytes_to_targets: d.to_targets.get(),
        }));
        self.control.next_stats = Instant::now() + STATS_EVERY;
    }
}

impl Drop for Connection<'_> {
    fn drop(&mut self) {
        if self.control.welcomed {
            self.slot.lane_down();
            self.shared.fleet_changed.notify_one();
        }
    }
}

/// The hello this node sends on `lane`.
fn hello(cfg: &NodeConfig, lane: Lane) -> Hello {
    Hello {
        version: WIRE_VERSION,
        token: cfg.join.token.clone(),
        agent: format!("turbo-node/{}", env!("CARGO_PKG_VERSION")),
        country: cfg.country.clone(),
        payout_address: cfg.payout_address.clone(),
        max_streams: cfg.max_streams,
        lane: Some(lane),
    }
}

/// Keeps spare connection IDs issued to the server: when our NAT rebinds, the server
/// must answer on the new path with an ID not in use on the old one, and each path
/// change consumes one.
fn top_up_connection_ids(conn: &Conn) {
    let mut q = conn.quic.borrow_mut();
    while q.scids_left() > 0 {
        let cid: [u8; 16] = rand::random();
        if q.new_scid(&quiche::ConnectionId::from_ref(&cid), rand::random(), true)
            .is_err()
        {
            break;
        }
    }
}
