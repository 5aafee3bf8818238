//! The task that drives one node connection until it closes: control-stream
//! processing, waking relay streams, packet output through the core's batcher, and
//! quiche's timers. Then it unregisters the connection everywhere.

use std::rc::Rc;
use std::time::Instant;

use tracing::{debug, info, Instrument};

use super::conn::NodeConn;
use super::control_stream;
use super::core::QuicCore;
use super::endpoint::QuicEndpoint;

/// Drives `conn` until it is closed: processes the control stream, wakes streams,
/// sends packets and runs quiche's timers. Then unregisters it everywhere.
pub(crate) async fn drive(core: Rc<QuicCore>, conn: Rc<NodeConn>) {
    let span = tracing::info_span!("node", serial = conn.serial, peer = %conn.peer.get());
    async {
        loop {
            control_stream::process(&core, &conn);
            conn.wake_ready();
            let paced = flush_packets(&conn, &core.quic).await;
            let (closed, draining, timeout) = {
                let q = conn.quic.borrow();
                if conn.handshaking.get() && q.is_established() {
                    conn.handshaking.set(false);
                    core.quic.handshake_over();
                }
                (q.is_closed(), q.is_draining(), q.timeout())
            };
            if closed || draining {
                conn.mark_closed();
                core.forget_node(&conn);
            }
            if closed {
                break;
            }
            // The packet held back by pacing is due: the next turn sends it.
            let due = paced.map(|at| at.saturating_duration_since(Instant::now()));
            let timeout = match (timeout, due) {
                (Some(t), Some(d)) if d < t => Some(d),
                (None, Some(d)) => Some(d),
                (t, _) => t,
            };
            match timeout {
                Some(t) => {
                    monoio::select! {
                        _ = conn.driver.wait() => {}
                        _ = monoio::time::sleep(t) => conn.quic.borrow_mut().on_timeout(),
                    }
                }
                None => conn.driver.wait().await,
            }
        }
        let q = conn.quic.borrow();
        let timed_out = q.is_timed_out();
        let peer_error = q
            .peer_error()
            .map(|e| String::from_utf8_lossy(&e.reason).into_owned());
        let lived_ms = conn.accepted_at.elapsed().as_millis() as u64;
        // A node's RTT probe (a handshake, then "probe") is routine: debug only.
        if conn.node_id.borrow().is_none() && peer_error.as_deref() == Some("probe") {
            tracing::debug!(lived_ms, "node probe closed");
        } else {
            info!(timed_out, ?peer_error, lived_ms, "node connection closed");
        }
    }
    .instrument(span)
    .await;
    if conn.handshaking.replace(false) {
        core.quic.handshake_over();
    }
    core.quic.remove(&conn);
}

/// Sends every packet quiche has ready and due, in GSO batches where the kernel
/// offers them, waiting for socket space when the socket is full. Returns when the
/// packet held back by pacing is due, if any.
async fn flush_packets(conn: &NodeConn, ep: &QuicEndpoint) -> Option<Instant> {
    loop {
        let sent = ep.flush(&mut conn.quic.borrow_mut(), &mut conn.pacer.borrow_mut());
        match sent {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if let Err(e) = ep.socket.writable(false).await {
                    debug!(error = %e, "udp writable failed");
                    return conn.pacer.borrow().due();
                }
            }
            Ok(due) => return due,
            Err(_) => return conn.pacer.borrow().due(),
        }
    }
}
