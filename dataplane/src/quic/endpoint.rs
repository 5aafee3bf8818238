//! A core's QUIC endpoint: its SO_REUSEPORT UDP socket, its connection table, and the
//! receive loop that routes each datagram to its connection, to the core that owns it,
//! or to a new connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;

use monoio::buf::IoBuf;
use monoio::net::udp::UdpSocket;
use tracing::debug;
use turbo_proto::wire::{window, ALPN};

use super::cid::{self, CID_LEN};
use turbo_quic::batch::{Batcher, Counters};

use super::conn::{self, NodeConn, MAX_DATAGRAM};
use super::retry::RetryKey;
use crate::cores::{Core, CoreMsg};
use crate::{DataplaneConfig, DataplaneError};

/// Most connections one core lets handshake at once, validated or not; Initials beyond
/// are dropped.
const MAX_HANDSHAKING: usize = 4096;

/// The QUIC side of one core.
pub(crate) struct QuicEndpoint {
    /// This core's UDP socket (all cores bind the same address).
    pub(crate) socket: UdpSocket,
    /// The bound address, used as the local side of every path.
    pub(crate) local: SocketAddr,
    config: RefCell<quiche::Config>,
    by_cid: RefCell<HashMap<Vec<u8>, Rc<NodeConn>>>,
    by_serial: RefCell<HashMap<u64, Rc<NodeConn>>>,
    next_serial: Cell<u64>,
    /// Connections accepted whose handshake has not finished.
    handshaking: Cell<usize>,
    retry_key: RetryKey,
    /// Batched output (GSO) for every connection of this core, and the quinn-udp state
    /// the receive loop reads through (GRO).
    batcher: RefCell<Batcher>,
    /// Batcher counters already added to the process-wide stats.
    reported: Cell<Counters>,
}

impl QuicEndpoint {
    /// The endpoint on `socket`. quinn-udp sets the socket up (UDP GRO where the kernel
    /// has it); with `offload` off, GRO is turned off again and every send is one
    /// datagram.
    ///
    /// # Errors
    /// When the socket cannot be set up.
    pub(crate) fn new(
        socket: UdpSocket,
        local: SocketAddr,
        config: quiche::Config,
        retry_key: RetryKey,
        offload: bool,
    ) -> std::io::Result<Self> {
        let batcher = Batcher::new(&borrowed(&socket), offload)?;
        if !offload {
            crate::sys::disable_gro(&socket)?;
        }
        Ok(QuicEndpoint {
            batcher: RefCell::new(batcher),
            reported: Cell::new(Counters::default()),
            handshaking: Cell::new(0),
            retry_key,
            socket,
            local,
            config: RefCell::new(config),
            by_cid: RefCell::new(HashMap::new()),
            by_serial: RefCell::new(HashMap::new()),
            next_serial: Cell::new(1),
        })
    }

    /// Sends what `conn` has ready and due through the core's batcher; returns when
    /// the packet `pacer` holds back is due, if any.
    ///
    /// # Errors
    /// `WouldBlock` when the socket is full (wait for it to be writable, then call again).
    pub(crate) fn flush(
        &self,
        conn: &mut turbo_quic::QuicConn,
        pacer: &mut turbo_quic::batch::Pacer,
    ) -> std::io::Result<Option<std::time::Instant>> {
        self.batcher
            .borrow_mut()
            .flush(conn, pacer, &borrowed(&self.socket))
    }

    /// Counter increases since the last call (for the process-wide stats).
    pub(crate) fn take_counters(&self) -> Counters {
        let now = self.batcher.borrow().counters;
        let before = self.reported.replace(now);
        Counters {
            gso_segments: now.gso_segments - before.gso_segments,
            offload_fallbacks: now.offload_fallbacks - before.offload_fallbacks,
        }
    }

    /// Reads one (possibly GRO-coalesced) batch of datagrams into `buf`.
    pub(crate) fn recv(
        &self,
        buf: &mut [u8],
        meta: &mut [quinn_udp::RecvMeta],
    ) -> std::io::Result<usize> {
        let fd = borrowed(&self.socket);
        self.batcher
            .borrow()
            .state()
            .recv((&fd).into(), &mut [std::io::IoSliceMut::new(buf)], meta)
    }

    /// The live connection with this serial, if any.
    pub(crate) fn conn(&self, serial: u64) -> Option<Rc<NodeConn>> {
        self.by_serial.borrow().get(&serial).cloned()
    }

    /// Every live connection.
    pub(crate) fn all(&self) -> Vec<Rc<NodeConn>> {
        self.by_serial.borrow().values().cloned().collect()
    }

    /// One accepted connection finished (or abandoned) its handshake.
    pub(crate) fn handshake_over(&self) {
        self.handshaking
            .set(self.handshaking.get().saturating_sub(1));
    }

    /// Forgets a closed connection.
    pub(crate) fn remove(&self, conn: &NodeConn) {
        self.by_serial.borrow_mut().remove(&conn.serial);
        let mut by_cid = self.by_cid.borrow_mut();
        for id in conn.cids.borrow().iter() {
            by_cid.remove(id);
        }
    }
}

/// Builds the quiche server configuration shared by every node connection of a core.
///
/// # Errors
/// [`DataplaneError::Tls`] when the certificate or key cannot be loaded.
pub(crate) fn server_config(cfg: &DataplaneConfig) -> Result<quiche::Config, DataplaneError> {
    let tls = |what: &str, e: quiche::Error| DataplaneError::Tls(format!("{what}: {e}"));
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION).map_err(|e| tls("config", e))?;
    let cert = cfg.cert_chain.to_string_lossy();
    let key = cfg.private_key.to_string_lossy();
    c.load_cert_chain_from_pem_file(&cert)
        .map_err(|e| tls(&format!("certificate {cert}"), e))?;
    c.load_priv_key_from_pem_file(&key)
        .map_err(|e| tls(&format!("private key {key}"), e))?;
    c.set_application_protos(&[ALPN])
        .map_err(|e| tls("alpn", e))?;
    c.verify_peer(false);
    c.set_max_idle_timeout(cfg.node_liveness.as_millis() as u64);
    turbo_quic::configure_paths(&mut c);
    cfg.congestion_control.apply(&mut c);
    // Node -> server data (target -> customer): per relay stream and per connection.
    // A stream nobody drains holds at most STREAM_WINDOW of the shared window.
    c.set_initial_max_data(window::CONNECTION_WINDOW);
    c.set_max_connection_window(window::CONNECTION_WINDOW);
    c.set_initial_max_stream_data_bidi_local(window::STREAM_WINDOW_INITIAL);
    c.set_max_stream_window(window::STREAM_WINDOW);
    // Node-initiated streams: only the control stream.
    c.set_initial_max_stream_data_bidi_remote(64 << 10);
    c.set_initial_max_streams_bidi(4);
    c.set_initial_max_streams_uni(0);
    c.set_disable_active_migration(false);
    Ok(c)
}

/// Routes one datagram: to a known connection, to the core that owns its connection
/// id, or to a new connection when it is an Initial.
pub(crate) fn dispatch(core: &Rc<Core>, pkt: &mut [u8], from: SocketAddr) {
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
                core.send_to_core(
                    owner,
                    CoreMsg::Datagram {
                        data: pkt.to_vec(),
                        from,
                    },
                )
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
        let mut out = vec![0u8; MAX_DATAGRAM];
        if let Ok(n) = quiche::negotiate_version(&hdr.scid, &hdr.dcid, &mut out) {
            let core = core.clone();
            monoio::spawn(async move {
                let _ = core.quic.socket.send_to(out.slice(..n), from).await;
            });
        }
        return;
    }
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
                core.send_to_core(
                    owner,
                    CoreMsg::Datagram {
                        data: pkt.to_vec(),
                        from,
                    },
                );
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
        send_retry(core, &hdr, from);
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
    monoio::spawn(conn::drive(core.clone(), conn));
}

/// Answers a tokenless Initial with a Retry that carries a token for `from`.
fn send_retry(core: &Rc<Core>, hdr: &quiche::Header<'_>, from: SocketAddr) {
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
fn send_reset(core: &Rc<Core>, dcid: &[u8], received: usize, from: SocketAddr) {
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

/// The socket's fd, borrowed for one call.
fn borrowed(socket: &UdpSocket) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd belongs to `socket`, which outlives the returned borrow.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) }
}
