//! A core's QUIC endpoint: its SO_REUSEPORT UDP socket, its connection table, and the
//! receive loop that routes each datagram to its connection, to the core that owns it,
//! or to a new connection.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;

use monoio::net::udp::UdpSocket;
use turbo_proto::wire::{window, ALPN};

use turbo_quic::batch::{Batcher, Counters};

use super::conn::NodeConn;
use super::retry::RetryKey;
use crate::config::{DataplaneConfig, DataplaneError};

/// The QUIC side of one core.
pub(crate) struct QuicEndpoint {
    /// This core's UDP socket (all cores bind the same address).
    pub(crate) socket: UdpSocket,
    /// The bound address, used as the local side of every path.
    pub(crate) local: SocketAddr,
    pub(super) config: RefCell<quiche::Config>,
    pub(super) by_cid: RefCell<HashMap<Vec<u8>, Rc<NodeConn>>>,
    pub(super) by_serial: RefCell<HashMap<u64, Rc<NodeConn>>>,
    pub(super) next_serial: Cell<u64>,
    /// Connections accepted whose handshake has not finished.
    pub(super) handshaking: Cell<usize>,
    pub(super) retry_key: RetryKey,
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

/// The socket's fd, borrowed for one call.
fn borrowed(socket: &UdpSocket) -> std::os::fd::BorrowedFd<'_> {
    use std::os::fd::AsRawFd;
    // SAFETY: the fd belongs to `socket`, which outlives the returned borrow.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(socket.as_raw_fd()) }
}
