//! The server's side of a node's control stream (client bidirectional stream 0):
//! admission (hello -> control plane -> welcome/reject), pings, stats and drain.

use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tracing::{info, warn};
use turbo_proto::wire::control::{ControlMessage, NodePolicy, RejectCode, Welcome};
use turbo_proto::wire::WIRE_VERSION;

use super::conn::NodeConn;
use super::core::QuicCore;
use crate::control::{ConnRef, ToControl};

/// The control stream's id.
pub(crate) const CONTROL_STREAM: u64 = 0;
/// A node must send its hello this soon after connecting.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);
/// Minimum spacing of RTT reports to the control plane.
const RTT_REPORT_EVERY: Duration = Duration::from_secs(2);
/// Application error codes in CONNECTION_CLOSE.
const CLOSE_PROTOCOL: u64 = 0x100;

/// Reads and answers control messages, refuses streams the node must not open, and
/// writes queued control output. Called by the connection driver on every wake-up.
pub(crate) fn process(core: &Rc<QuicCore>, conn: &Rc<NodeConn>) {
    if !conn.quic.borrow().is_established() {
        return;
    }
    let mut buf = [0u8; 2048];
    loop {
        let res = conn.quic.borrow_mut().stream_recv(CONTROL_STREAM, &mut buf);
        match res {
            Ok((n, fin)) => {
                conn.control.borrow_mut().decoder.push(&buf[..n]);
                if fin {
                    protocol_close(conn, b"control stream finished");
                    break;
                }
            }
            Err(quiche::Error::Done) | Err(quiche::Error::InvalidStreamState(_)) => break,
            Err(_) => {
                protocol_close(conn, b"control stream reset");
                break;
            }
        }
    }
    loop {
        let next = conn.control.borrow_mut().decoder.next_message();
        match next {
            Ok(Some(msg)) => handle(core, conn, msg),
            Ok(None) => break,
            Err(e) => {
                warn!(error = %e, "malformed control message");
                protocol_close(conn, b"malformed control message");
                break;
            }
        }
    }
    refuse_node_streams(conn);
    let mut cs = conn.control.borrow_mut();
    let mut quic = conn.quic.borrow_mut();
    if !cs.out.is_empty() {
        match quic.stream_send(CONTROL_STREAM, &cs.out, false) {
            Ok(n) => {
                cs.out.drain(..n);
            }
            Err(quiche::Error::Done) => {}
            Err(_) => {
                let _ = quic.close(true, CLOSE_PROTOCOL, b"control stream broken");
            }
        }
    }
    if cs.out.is_empty() {
        if let Some((code, reason)) = cs.close_after_flush.take() {
            let _ = quic.close(true, code, reason);
        }
    }
    if !cs.hello_received && conn.accepted_at.elapsed() > HELLO_DEADLINE {
        let _ = quic.close(true, CLOSE_PROTOCOL, b"no hello");
    }
}

fn protocol_close(conn: &NodeConn, reason: &'static [u8]) {
    let _ = conn.quic.borrow_mut().close(true, CLOSE_PROTOCOL, reason);
}

/// Nodes may only open the control stream; anything else is shut down.
fn refuse_node_streams(conn: &NodeConn) {
    let mut quic = conn.quic.borrow_mut();
    let foreign: Vec<u64> = quic
        .readable()
        .filter(|id| id % 4 == 0 && *id != CONTROL_STREAM)
        .collect();
    for id in foreign {
        let _ = quic.stream_shutdown(id, quiche::Shutdown::Read, CLOSE_PROTOCOL);
        let _ = quic.stream_shutdown(id, quiche::Shutdown::Write, CLOSE_PROTOCOL);
    }
}

fn handle(core: &Rc<QuicCore>, conn: &Rc<NodeConn>, msg: ControlMessage) {
    let first = !conn.control.borrow().hello_received;
    match msg {
        ControlMessage::Hello(hello) if first => {
            conn.control.borrow_mut().hello_received = true;
            if hello.version < WIRE_VERSION {
                reject(conn, RejectCode::Version, "unsupported wire version");
                return;
            }
            if hello
                .lane
                .is_some_and(|l| usize::from(l.index) >= core.cores())
            {
                reject(conn, RejectCode::Protocol, "lane beyond the server's cores");
                return;
            }
            admit(core, conn, hello);
        }
        _ if first => protocol_close(conn, b"hello must come first"),
        ControlMessage::Hello(_) => protocol_close(conn, b"duplicate hello"),
        ControlMessage::Ping { seq } => {
            conn.control
                .borrow_mut()
                .queue(&ControlMessage::Pong { seq });
            report_rtt(core, conn);
            send_score(core, conn);
            send_servers(core, conn);
        }
        ControlMessage::Pong { .. }
        | ControlMessage::Unknown { .. }
        | ControlMessage::Score { .. }
        | ControlMessage::Earnings { .. }
        | ControlMessage::Held { .. }
        | ControlMessage::Servers(_)
        | ControlMessage::Policy(_) => {}
        ControlMessage::Stats(stats) => conn.control.borrow_mut().stats = stats,
        ControlMessage::Delivered {
            stream,
            bytes,
            done,
        } => conn.delivered(stream, bytes, done),
        ControlMessage::Drain { grace_ms } => {
            info!(grace_ms, "node is draining");
            conn.control.borrow_mut().draining = true;
            core.forget_node(conn);
        }
        ControlMessage::Welcome(_) | ControlMessage::Reject { .. } => {
            protocol_close(conn, b"server-only message")
        }
    }
}

/// Tells the node its score as the control plane last published it, its earnings
/// once the ledger has reported them, and whether they are held (a demoted node has no
/// route, but still hears of its hold).
fn send_score(core: &QuicCore, conn: &NodeConn) {
    let Some(node_id) = conn.node_id.borrow().clone() else {
        return;
    };
    let table = core.nodes.load();
    let mut control = conn.control.borrow_mut();
    if let Some(route) = table.get(&node_id) {
        let milli = (route.score.clamp(0.0, 1.0) * 1000.0).round() as u32;
        control.queue(&ControlMessage::Score { milli });
        let e = &route.earnings;
        if e.known.load(Relaxed) {
            control.queue(&ControlMessage::Earnings {
                today_nano: e.today_nano.load(Relaxed),
                month_nano: e.month_nano.load(Relaxed),
            });
        }
    }
    let hold = table.hold(&node_id);
    if hold.is_some() || control.told_held {
        control.queue(&ControlMessage::Held {
            reason: hold.map(|r| r.to_string()).unwrap_or_default(),
        });
        control.told_held = hold.is_some();
    }
}

/// Tells an admitted node the network's server list, unless it has this version.
fn send_servers(core: &QuicCore, conn: &NodeConn) {
    if conn.node_id.borrow().is_none() {
        return;
    }
    let list = core.cfg.servers.load();
    let mut control = conn.control.borrow_mut();
    if list.version == 0 || control.told_servers == list.version {
        return;
    }
    control.told_servers = list.version;
    control.queue(&ControlMessage::Servers(list.servers.clone()));
}

fn reject(conn: &NodeConn, code: RejectCode, message: &'static str) {
    let mut cs = conn.control.borrow_mut();
    cs.queue(&ControlMessage::Reject {
        code,
        message: message.to_owned(),
    });
    cs.close_after_flush = Some((code as u64, message.as_bytes()));
}

fn admit(core: &Rc<QuicCore>, conn: &Rc<NodeConn>, hello: turbo_proto::wire::control::Hello) {
    let (core, conn) = (core.clone(), conn.clone());
    monoio::spawn(async move {
        let conn_ref = ConnRef {
            core: core.index,
            serial: conn.serial,
        };
        let agent = hello.agent.clone();
        match core
            .control
            .admit_node(hello, conn.peer.get(), conn_ref)
            .await
        {
            Ok(admission) => {
                info!(node = %admission.node_id, %agent, "node admitted");
                *conn.node_id.borrow_mut() = Some(admission.node_id.clone());
                let liveness = core.cfg.node_liveness;
                conn.control
                    .borrow_mut()
                    .queue(&ControlMessage::Welcome(Welcome {
                        version: WIRE_VERSION,
                        node_id: admission.node_id.to_string(),
                        ping_interval_ms: (liveness.as_millis() as u64 / 4).max(100),
                        liveness_timeout_ms: liveness.as_millis() as u64,
                        lanes: u8::try_from(core.cores()).unwrap_or(u8::MAX),
                    }));
                send_servers(&core, &conn);
                if core.cfg.node_policy != NodePolicy::default() {
                    conn.control
                        .borrow_mut()
                        .queue(&ControlMessage::Policy(core.cfg.node_policy.clone()));
                }
                if conn.is_closed() {
                    // Closed while the control plane decided: retract the route.
                    core.forget_node(&conn);
                }
            }
            Err(code) => {
                let why = match code {
                    RejectCode::BadToken => "node rejected: token unknown or revoked",
                    RejectCode::Unavailable => "node rejected for now: retry later",
                    RejectCode::NetworkTaken => "another node already runs on this network",
                    _ => "node rejected",
                };
                warn!(?code, why, "node rejected");
                reject(&conn, code, why);
            }
        }
        conn.driver.notify();
    });
}

fn report_rtt(core: &QuicCore, conn: &NodeConn) {
    let now = Instant::now();
    let due = conn
        .control
        .borrow()
        .last_rtt_report
        .is_none_or(|t| now.duration_since(t) >= RTT_REPORT_EVERY);
    let Some(node_id) = conn.node_id.borrow().clone() else {
        return;
    };
    if !due {
        return;
    }
    conn.control.borrow_mut().last_rtt_report = Some(now);
    if let Some(path) = conn.quic.borrow().path_stats().next() {
        core.control.send(ToControl::NodeRtt {
            node_id,
            rtt: path.rtt,
        });
    }
}
