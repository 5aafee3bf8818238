//! RTT probes: the time a QUIC handshake with a server takes, from this node's
//! network. The probe checks the server's pin, then closes at once (the server sees a
//! connection that never says hello, and forgets it). Nothing is relayed.

use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use tokio::time::{timeout, Instant};

use crate::conn::Conn;
use crate::connection::{bind_udp, check_pin, quic_config};
use crate::{NodeConfig, NodeError};

/// How long a probe may take before the server counts as unreachable.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

/// The handshake time to the server of `cfg` (its join host, port and pin).
///
/// # Errors
/// [`NodeError`] when it cannot be resolved or reached, or its pin is wrong.
pub async fn handshake_rtt(cfg: &NodeConfig) -> Result<Duration, NodeError> {
    let peer = crate::connection::resolve_server(cfg).await?;
    let socket = bind_udp(peer, cfg.bind)?;
    let local = socket.local_addr()?;
    let mut qcfg = quic_config(cfg)?;
    let (scid, dcid): ([u8; 16], [u8; 16]) = (rand::random(), rand::random());
    let quic = quiche::connect_with_dcid_and_buffer_factory::<turbo_quic::ZcFactory>(
        Some(&cfg.join.host),
        &quiche::ConnectionId::from_ref(&scid),
        &quiche::ConnectionId::from_ref(&dcid),
        local,
        peer,
        &mut qcfg,
    )?;
    let conn = Rc::new(Conn::new(quic, Default::default()));
    let started = Instant::now();
    let done = timeout(PROBE_TIMEOUT, handshake(&socket, &conn, local)).await;
    let rtt = started.elapsed();
    let checked = match done {
        Ok(Ok(())) => check_pin(cfg, &conn).map(|()| rtt),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(NodeError::Protocol(format!(
            "no handshake within {PROBE_TIMEOUT:?}"
        ))),
    };
    let _ = conn.quic.borrow_mut().close(true, 0, b"probe");
    let mut out = vec![0u8; 1500];
    while let Ok((n, info)) = conn.quic.borrow_mut().send(&mut out) {
        let _ = socket.try_send_to(&out[..n], info.to);
    }
    checked
}

/// Drives the handshake until it is established (or the connection closes).
async fn handshake(
    socket: &tokio::net::UdpSocket,
    conn: &Conn,
    local: SocketAddr,
) -> Result<(), NodeError> {
    let mut out = vec![0u8; 1500];
    let mut buf = vec![0u8; 65_536];
    loop {
        loop {
            let sent = conn.quic.borrow_mut().send(&mut out);
            match sent {
                Ok((n, info)) => {
                    socket.send_to(&out[..n], info.to).await?;
                }
                Err(quiche::Error::Done) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if conn.quic.borrow().is_established() {
            return Ok(());
        }
        if conn.quic.borrow().is_closed() {
            return Err(NodeError::Protocol("closed during the handshake".into()));
        }
        let wait = conn.quic.borrow().timeout().unwrap_or(PROBE_TIMEOUT);
        match timeout(wait, socket.recv_from(&mut buf)).await {
            Ok(r) => {
                let (n, from) = r?;
                let info = quiche::RecvInfo { from, to: local };
                let _ = conn.quic.borrow_mut().recv(&mut buf[..n], info);
            }
            Err(_) => conn.quic.borrow_mut().on_timeout(),
        }
    }
}
