//! Routing of received datagrams: to a connection of this core, to the core that owns
//! the connection id, or into a new connection (with a Retry first under load, a
//! version negotiation or a stateless reset where they are due).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use monoio::buf::IoBuf;
use tokio::sync::mpsc;
use tracing::debug;

use super::cid::{self, CID_LEN};
use super::conn::{NodeConn, MAX_DATAGRAM};
use super::core::{ForwardedDatagram, QuicCore};
use super::driver;

/// Most connections one core lets handshake at once, validated or not; Initials beyond
/// are dropped.
const MAX_HANDSHAKING: usize = 4096;

/// Routes one datagram: to a known connection, to the core that owns its connection
/// id, or to a new connection when it is an Initial.
pub(crate) fn dispatch(core: &Rc<QuicCore>, pkt: &mut [u8], from: SocketAddr) {
    let ep = &core.quic;
    let Ok(hdr) = quiche::Header::from_slice(pkt, CID_LEN) else {
        debug!(%from, "dropping datagram without a QUIC header");
        return;
    };
    tracing::trace!(%from, core = core.index, ty = ?hdr.ty, "datagram");
    let known = ep.by_cid.borrow().get(hdr.dcid.as_ref()).cloned();
    if let Some(conn) = known {
        conn.deliver(pkt, from, ep.local);
        return;
    }
    if hdr.ty != quiche::Type::Initial {
        match cid::owner(&hdr.dcid, core.cores()) {
            Some(owner) if owner != core.index => {
                debug!(%from, owner, "forwarding datagram to its owning core");
                core.forward_to(owner, pkt.to_vec(), from)
            }
            _ => {
                debug!(%from, "datagram for unknown connection");
                if hdr.ty == quiche::Type::Short {
                    send_reset(core, &hdr.dcid, pkt.len(), from);
                }
            }
        }
        return;
    }
    if !quiche::version_is_supported(hdr.version) {
        negotiate_version(core, &hdr, from);
        return;
    }
    accept_initial(core, &hdr, pkt, from);
}

/// Answers an Initial of a version quiche does not speak with a version negotiation.
fn negotiate_version(core: &Rc<QuicCore>, hdr: &quiche::Header<'_>, from: SocketAddr) {
    let mut out = vec![0u8; MAX_DATAGRAM];
    if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
        let core = core.clone();
        monoio::spawn(async move {
            let _ = core.quic.socket.send_to(out.slice(..n), from).await;
        });
    }
}

/// Takes an Initial: validates its Retry token if it has one (or asks for one when
/// too many connections are handshaking), then opens the connection and starts its
/// driver.
fn accept_initial(core: &Rc<QuicCore>, hdr: &quiche::Header<'_>, pkt: &mut [u8], from: SocketAddr) {
    let ep = &core.quic;
    let counters = &core.gate.counters;
    let token = hdr.token.as_deref().unwrap_or(&[]);
    let validated = if token.is_empty() {
        None
    } else {
        let Some(odcid) = ep.retry_key.validate(token, from) else {
            debug!(%from, "dropping an Initial with an invalid token");
            counters.quic_bad_token.fetch_add(1, Relaxed);
            return;
        };
        // The core that sent the Retry named itself in the new connection id.
        match cid::owner(&hdr.dcid, core.cores()) {
            Some(owner) if owner != core.index => {
                core.forward_to(owner, pkt.to_vec(), from);
                return;
            }
            Some(_) => Some(odcid),
            None => return,
        }
    };
    let handshaking = ep.handshaking.get();
    if handshaking >= MAX_HANDSHAKING {
        counters.quic_dropped.fetch_add(1, Relaxed);
        return;
    }
    if validated.is_none() && handshaking >= core.cfg.quic_retry_threshold {
        send_retry(core, hdr, from);
        return;
    }
    let (scid, odcid) = match &validated {
        Some(_) => (hdr.dcid.to_vec(), hdr.dcid.to_vec()),
        None => (cid::generate(core.index).to_vec(), hdr.dcid.to_vec()),
    };
    let token = core.cfg.stateless_reset_key.token(&scid);
    ep.config
        .borrow_mut()
        .set_stateless_reset_token(Some(token));
    let accepted = quiche::accept_with_buf_factory::<turbo_quic::ZcFactory>(
        &quiche::ConnectionId::from_ref(&scid),
        validated
            .as_deref()
            .map(quiche::ConnectionId::from_ref)
            .as_ref(),
        ep.local,
        from,
        &mut ep.config.borrow_mut(),
    );
    let quic = match accepted {
        Ok(q) => q,
        Err(e) => {
            debug!(%from, error = %e, "refusing initial");
            return;
        }
    };
    let serial = ep.next_serial.get();
    ep.next_serial.set(serial + 1);
    ep.handshaking.set(handshaking + 1);
    let conn = Rc::new(NodeConn::new(
        serial,
        quic,
        from,
        vec![scid.to_vec(), odcid.clone()],
    ));
    {
        let mut by_cid = ep.by_cid.borrow_mut();
        by_cid.insert(scid.to_vec(), conn.clone());
        by_cid.insert(odcid, conn.clone());
    }
    ep.by_serial.borrow_mut().insert(serial, conn.clone());
    debug!(%from, serial, "new node connection");
    conn.deliver(pkt, from, ep.local);
    monoio::spawn(driver::drive(core.clone(), conn));
}

/// Answers a tokenless Initial with a Retry that carries a token for `from`.
fn send_retry(core: &Rc<QuicCore>, hdr: &quiche::Header<'_>, from: SocketAddr) {
    let new_scid = cid::generate(core.index);
    let token = core.quic.retry_key.issue(from, &hdr.dcid);
    let mut out = vec![0u8; MAX_DATAGRAM];
    let written = quiche::retry(
        &hdr.scid,
        &hdr.dcid,
        &quiche::ConnectionId::from_ref(&new_scid),
        &token,
        hdr.version,
        &mut out,
    );
    if let Ok(n) = written {
        core.gate.counters.quic_retries.fetch_add(1, Relaxed);
        let core = core.clone();
        monoio::spawn(async move {
            let _ = core.quic.socket.send_to(out.slice(..n), from).await;
        });
    }
}

/// Answers a packet for a connection this process does not have with a Stateless Reset
/// (only for connection ids of our shape, and never larger than the packet).
fn send_reset(core: &Rc<QuicCore>, dcid: &[u8], received: usize, from: SocketAddr) {
    if dcid.len() != CID_LEN {
        return;
    }
    let Some(reset) = core.cfg.stateless_reset_key.reset_for(dcid, received) else {
        return;
    };
    core.gate.counters.quic_resets.fetch_add(1, Relaxed);
    let core = core.clone();
    monoio::spawn(async move {
        let _ = core.quic.socket.send_to(reset, from).await;
    });
}

/// Routes the datagrams other cores pass to this one, until they are all gone.
pub(crate) async fn forwarded(
    core: Rc<QuicCore>,
    mut inbox: mpsc::UnboundedReceiver<ForwardedDatagram>,
) {
    while let Some(mut d) = inbox.recv().await {
        dispatch(&core, &mut d.data, d.from);
    }
}
