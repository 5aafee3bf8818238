//! One QUIC session with the server, from dial to close: TLS with the pinned (or
//! CA-verified) certificate, the hello on the control stream, pings and stats, a relay
//! task per server-opened stream, and a graceful drain on shutdown. A node runs one
//! session per lane ([`Lane`]): lane `k` aims its Initial at server core `k` (byte 0
//! of the connection ID it picks), so each server core relays over its own connection.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::rc::Rc;
use std::time::Duration;

use sha2::Digest as _;
use subtle::ConstantTimeEq;
use tokio::net::UdpSocket;
use tokio::time::{sleep, sleep_until, Instant};
use tracing::{info, warn};
use turbo_proto::wire::control::{ControlDecoder, ControlMessage, Hello, NodeStats, RejectCode};
use turbo_proto::wire::{window, ALPN, WIRE_VERSION};

pub use turbo_proto::wire::control::Lane;

use crate::conn::Conn;
use crate::{NodeConfig, NodeError, Shared};

const CONTROL: u64 = 0;
const STATS_EVERY: Duration = Duration::from_secs(10);
const UDP_BUFFER: usize = 4 << 20;

/// A UDP socket with large buffers (the kernel caps them at rmem_max / wmem_max).
fn bind_udp(peer: SocketAddr, local: Option<std::net::IpAddr>) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.set_nonblocking(true)?;
    let any: SocketAddr = match local {
        Some(ip) => (ip, 0).into(),
        None if peer.is_ipv6() => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        None => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    sock.bind(&any.into())?;
    UdpSocket::from_std(sock.into())
}

/// How a session ended without a fatal error.
pub enum SessionEnd {
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

fn quic_config(cfg: &NodeConfig) -> Result<quiche::Config, NodeError> {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION)?;
    c.set_application_protos(&[ALPN])?;
    match (&cfg.join.pin, &cfg.ca_file) {
        (Some(_), _) => c.verify_peer(false), // The pin is checked before any byte is sent.
        (None, Some(ca)) => {
            c.verify_peer(true);
            c.load_verify_locations_from_file(&ca.to_string_lossy())?;
        }
        (None, None) => return Err(NodeError::NoTrustAnchor),
    }
    c.set_max_idle_timeout(30_000);
    turbo_quic::configure_paths(&mut c);
    cfg.congestion_control.apply(&mut c);
    // Server -> node data (customer -> target): a stream whose target stops reading
    // holds at most STREAM_WINDOW of the shared window.
    c.set_initial_max_data(window::CONNECTION_WINDOW);
    c.set_max_connection_window(window::CONNECTION_WINDOW);
    c.set_initial_max_stream_data_bidi_local(1 << 20);
    c.set_initial_max_stream_data_bidi_remote(window::STREAM_WINDOW_INITIAL);
    c.set_max_stream_window(window::STREAM_WINDOW);
    c.set_initial_max_streams_bidi(u64::from(cfg.max_streams));
    c.set_initial_max_streams_uni(0);
    #[cfg(feature = "fault-injection")]
    if crate::fault::current() == crate::fault::Fault::OkNeverReadHugeWindows {
        c.set_initial_max_data(1 << 40);
        c.set_initial_max_stream_data_bidi_remote(1 << 40);
        c.set_max_stream_window(1 << 40);
        c.set_max_connection_window(1 << 40);
    }
    Ok(c)
}

/// Runs one session. Must run inside a `LocalSet`.
///
/// # Errors
/// Fatal problems only: a wrong pin, a refused token, bad configuration.
pub async fn run(
    cfg: &NodeConfig,
    shared: &Rc<Shared>,
    lane: Lane,
    shutdown: &mut Pin<&mut impl Future<Output = ()>>,
) -> Result<SessionEnd, NodeError> {
    let server = cfg.join.server_addr();
    let peer: SocketAddr = tokio::net::lookup_host(&server)
        .await?
        .next()
        .ok_or_else(|| NodeError::Resolve(server.clone()))?;
    let socket = bind_udp(peer, cfg.bind)?;
    let local = socket.local_addr()?;
    let mut qcfg = quic_config(cfg)?;
    let scid: [u8; 16] = rand::random();
    let mut dcid: [u8; 16] = rand::random();
    dcid[0] = lane.index;
    let quic = quiche::connect_with_dcid_and_buffer_factory::<turbo_quic::ZcFactory>(
        Some(&cfg.join.host),
        &quiche::ConnectionId::from_ref(&scid),
        &quiche::ConnectionId::from_ref(&dcid),
        local,
        peer,
        &mut qcfg,
    )?;
    let conn = Rc::new(Conn::new(quic, Default::default()));
    let _lane_status = crate::status::LaneGuard::new(&shared.status, lane.index);
    info!(%peer, "connecting");

    let mut decoder = ControlDecoder::new();
    let mut control_out: Vec<u8> = Vec::new();
    let mut hello_sent = false;
    let mut welcomed = false;
    let mut ping_every = Duration::from_secs(1);
    let mut next_ping = Instant::now() + ping_every;
    let mut next_stats = Instant::now() + STATS_EVERY;
    let mut ping_seq = 0u64;
    let mut next_stream_id = 1u64;
    let mut gaps: std::collections::HashSet<u64> = Default::default();
    let mut drain_deadline: Option<Instant> = None;
    let mut capped = false;
    let mut recv_buf = vec![0u8; crate::udp::RECV_BUFFER];
    let mut sender = crate::udp::batcher(&socket, cfg.udp_offload)?;
    let mut pacer = turbo_quic::batch::Pacer::default();
    let mut paced: Option<std::time::Instant>;
    let queue = |out: &mut Vec<u8>, m: ControlMessage| m.encode(out);

    loop {
        let established = conn.quic.borrow().is_established();
        if established && !hello_sent {
            check_pin(cfg, &conn)?;
            queue(
                &mut control_out,
                ControlMessage::Hello(Hello {
                    version: WIRE_VERSION,
                    token: cfg.join.token.clone(),
                    agent: format!("turbo-node/{}", env!("CARGO_PKG_VERSION")),
                    country: cfg.country.clone(),
                    payout_address: cfg.payout_address.clone(),
                    max_streams: cfg.max_streams,
                    lane: Some(lane),
                }),
            );
            hello_sent = true;
        }
        if established {
            top_up_connection_ids(&conn);
        }
        if hello_sent {
            let mut buf = [0u8; 2048];
            loop {
                let r = conn.quic.borrow_mut().stream_recv(CONTROL, &mut buf);
                match r {
                    Ok((n, _)) => decoder.push(&buf[..n]),
                    Err(_) => break,
                }
            }
            while let Some(msg) = decoder
                .next_message()
                .map_err(|e| NodeError::Protocol(e.to_string()))?
            {
                match msg {
                    ControlMessage::Welcome(w) => {
                        info!(node_id = %w.node_id, lanes = w.lanes, "admitted by server");
                        welcomed = true;
                        shared.lanes.set(w.lanes);
                        shared.lanes_changed.notify_one();
                        shared.status.set_lane(lane.index, |l| l.connected = true);
                        if lane.index == 0 {
                            shared.status.state.set("connected");
                        }
                        *shared.status.node_id.borrow_mut() = Some(w.node_id.clone());
                        ping_every = Duration::from_millis(w.ping_interval_ms.clamp(100, 60_000));
                        next_ping = Instant::now() + ping_every;
                    }
                    ControlMessage::Reject { code, message } => {
                        if code == RejectCode::BadToken {
                            return Err(NodeError::Rejected(message));
                        }
                        warn!(?code, %message, "server refused the node");
                    }
                    ControlMessage::Ping { seq } => {
                        queue(&mut control_out, ControlMessage::Pong { seq })
                    }
                    ControlMessage::Drain { grace_ms } => info!(grace_ms, "server is draining"),
                    ControlMessage::Policy(p) => {
                        let rules = crate::guard::ServerRules {
                            ports: p.ports,
                            nets: p.nets.iter().filter_map(|n| n.parse().ok()).collect(),
                            domains: p.domains,
                        };
                        info!(?rules, "server destination rules applied");
                        shared.policy.set_server_rules(rules);
                    }
                    ControlMessage::Score { milli } => {
                        shared.status.score.set(Some(f64::from(milli) / 1000.0));
                    }
                    _ => {}
                }
            }
            // New relay streams: server-initiated bidirectional, ids 1, 5, 9, ... Their
            // first bytes may arrive out of order, so skipped ids are remembered as gaps
            // (bounded: quiche refuses ids beyond the stream limit we advertise).
            let fresh: Vec<u64> = conn
                .quic
                .borrow()
                .readable()
                .filter(|id| id % 4 == 1 && (*id >= next_stream_id || gaps.contains(id)))
                .collect();
            for id in fresh {
                if id >= next_stream_id {
                    gaps.extend((next_stream_id..id).step_by(4));
                    next_stream_id = id + 4;
                } else {
                    gaps.remove(&id);
                }
                tokio::task::spawn_local(crate::relay::serve(
                    conn.clone(),
                    id,
                    shared.clone(),
                    u64::from(cfg.max_streams),
                ));
                if !shared.carrying.replace(true) {
                    // The first stream: open the other lanes now.
                    tracing::debug!("first relay stream: the other lanes may open");
                    shared.lanes_changed.notify_one();
                }
            }
            control_out.append(&mut conn.driver.outbox.borrow_mut());
            if !control_out.is_empty() {
                let r = conn
                    .quic
                    .borrow_mut()
                    .stream_send(CONTROL, &control_out, false);
                if let Ok(n) = r {
                    control_out.drain(..n);
                }
            }
        }
        conn.wake_ready();
        shared
            .status
            .set_lane(lane.index, |l| l.active = conn.driver.active.get());
        if welcomed && drain_deadline.is_none() && shared.usage.capped() {
            warn!(cap = ?shared.usage.cap(), "monthly data cap reached: no new streams until next month");
            capped = true;
            conn.driver.draining.set(true);
            queue(
                &mut control_out,
                ControlMessage::Drain {
                    grace_ms: cfg.shutdown_grace.as_millis() as u64,
                },
            );
            drain_deadline = Some(Instant::now() + cfg.shutdown_grace);
        }
        if let Some(deadline) = drain_deadline {
            if conn.driver.active.get() == 0 || Instant::now() >= deadline {
                let _ = conn.quic.borrow_mut().close(true, 0, b"shutdown");
                crate::udp::flush(&conn, &socket, &mut sender, &mut pacer).await;
                conn.mark_closed();
                info!("shut down");
                return Ok(if capped {
                    SessionEnd::Capped
                } else {
                    SessionEnd::Shutdown
                });
            }
        }
        paced = crate::udp::flush(&conn, &socket, &mut sender, &mut pacer).await;
        shared
            .status
            .set_lane(lane.index, |l| l.udp = sender.counters);
        if conn.quic.borrow().is_closed() {
            conn.mark_closed();
            if drain_deadline.is_some() {
                return Ok(if capped {
                    SessionEnd::Capped
                } else {
                    SessionEnd::Shutdown
                });
            }
            let q = conn.quic.borrow();
            warn!(
                timed_out = q.is_timed_out(),
                peer_error = ?q.peer_error().map(|e| String::from_utf8_lossy(&e.reason).into_owned()),
                "connection closed"
            );
            if let Some(e) = q.peer_error() {
                // A revoked token, or another daemon with this token took over:
                // reconnecting would not help (and would fight the other daemon).
                let fatal = [RejectCode::BadToken, RejectCode::Replaced];
                if e.is_app && fatal.iter().any(|c| *c as u64 == e.error_code) {
                    return Err(NodeError::Rejected(
                        String::from_utf8_lossy(&e.reason).into_owned(),
                    ));
                }
            }
            return Ok(SessionEnd::Lost { welcomed });
        }
        let timeout = conn
            .quic
            .borrow()
            .timeout()
            .unwrap_or(Duration::from_secs(60));
        tokio::select! {
            r = socket.readable() => {
                if r.is_ok() {
                    // Drain the burst before doing anything else, so the socket buffer
                    // does not overflow while quiche works.
                    crate::udp::recv_ready(&conn, &socket, &sender, &mut recv_buf, local);
                }
            }
            _ = conn.driver.wake.notified() => {}
            // The held packet is due: the next turn of the loop sends it.
            _ = sleep_until(paced.map_or_else(Instant::now, Instant::from_std)), if paced.is_some() => {}
            _ = sleep(timeout) => conn.quic.borrow_mut().on_timeout(),
            _ = sleep_until(next_ping), if welcomed => {
                ping_seq += 1;
                queue(&mut control_out, ControlMessage::Ping { seq: ping_seq });
                next_ping = Instant::now() + ping_every;
            }
            _ = sleep_until(next_stats), if welcomed => {
                queue(&mut control_out, ControlMessage::Stats(NodeStats {
                    active_streams: conn.driver.active.get(),
                    total_streams: conn.driver.total.get(),
                    bytes_from_targets: conn.driver.from_targets.get(),
                    bytes_to_targets: conn.driver.to_targets.get(),
                }));
                next_stats = Instant::now() + STATS_EVERY;
            }
            _ = shutdown.as_mut(), if drain_deadline.is_none() => {
                shared.status.state.set("stopping");
                info!(grace = ?cfg.shutdown_grace, "draining");
                conn.driver.draining.set(true);
                queue(&mut control_out, ControlMessage::Drain { grace_ms: cfg.shutdown_grace.as_millis() as u64 });
                drain_deadline = Some(Instant::now() + cfg.shutdown_grace);
            }
        }
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

fn check_pin(cfg: &NodeConfig, conn: &Conn) -> Result<(), NodeError> {
    let Some(pin) = cfg.join.pin else {
        return Ok(()); // Verified against the CA by BoringSSL.
    };
    let quic = conn.quic.borrow();
    let der = quic.peer_cert().ok_or(NodeError::PinMismatch)?;
    let got: [u8; 32] = sha2::Sha256::digest(der).into();
    if bool::from(got.ct_eq(&pin)) {
        Ok(())
    } else {
        Err(NodeError::PinMismatch)
    }
}
