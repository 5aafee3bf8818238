//! Thread-per-core runtime: one monoio runtime per core, each with its own listeners,
//! QUIC endpoint and buffer pool, and an inbox for messages from other cores (customer
//! hand-offs, forwarded datagrams, shutdown).

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use monoio::net::udp::UdpSocket;
use monoio::net::TcpListener;
use std::time::Duration;

use tokio::sync::{broadcast, mpsc};
use tracing::{info, warn, Instrument};
use turbo_proto::wire::control::RejectCode;

use crate::account::Accounts;
use crate::auth::AuthCache;
use crate::control::{ControlHandle, KeyEvent, NodeTableHandle, ToControl};
use crate::customer::{self, Frontend};
use crate::pool::BufPool;
use crate::quic::conn::NodeConn;
use crate::quic::endpoint::{self, QuicEndpoint};
use crate::relay::{self, RelayJob};
use crate::stats::Stats;
use crate::{DataplaneConfig, DataplaneError, DriverChoice};

/// Messages a core accepts from other threads.
pub(crate) enum CoreMsg {
    /// Relay this customer connection over one of this core's node connections.
    Relay(Box<RelayJob<std::net::TcpStream>>),
    /// A datagram for one of this core's connections that arrived on another core.
    Datagram {
        /// The datagram.
        data: Vec<u8>,
        /// Its source.
        from: SocketAddr,
    },
    /// Stop accepting customers and tell nodes the server is draining; open tunnels
    /// carry on.
    Drain {
        /// The grace period the nodes are told about, in milliseconds.
        grace_ms: u64,
    },
    /// Close node connections and stop.
    Shutdown,
}

/// Sending side of a core's inbox.
pub(crate) type CoreSender = mpsc::UnboundedSender<CoreMsg>;

/// Everything a core owns. Shared by the core's tasks through `Rc`.
pub(crate) struct Core {
    /// This core's index.
    pub(crate) index: usize,
    /// Data-plane settings.
    pub(crate) cfg: Arc<DataplaneConfig>,
    /// Link to the control plane.
    pub(crate) control: ControlHandle,
    /// Current node routes.
    pub(crate) nodes: NodeTableHandle,
    /// Inboxes of every core, by index.
    peers: Arc<[CoreSender]>,
    /// This core's QUIC endpoint.
    pub(crate) quic: QuicEndpoint,
    /// This core's relay buffers.
    pub(crate) pool: BufPool,
    /// This core's authorization cache.
    pub(crate) auth: AuthCache,
    /// This core's credit accounts.
    pub(crate) accounts: Accounts,
    /// Counters shared by all cores.
    pub(crate) stats: Arc<Stats>,
    /// Connection limits shared by all cores.
    pub(crate) gate: Arc<crate::limits::Gate>,
    /// Set when the server drains: the listeners close.
    draining: std::cell::Cell<bool>,
    drain: tokio::sync::Notify,
}

impl Core {
    /// Number of cores.
    pub(crate) fn cores(&self) -> usize {
        self.peers.len()
    }

    /// Sends a message to another core. A core that is gone is shutting down; the
    /// message is dropped (a customer connection in it is closed by its drop).
    pub(crate) fn send_to_core(&self, core: usize, msg: CoreMsg) {
        if let Some(tx) = self.peers.get(core) {
            let _ = tx.send(msg);
        }
    }

    /// Tells the control plane that a node connection can no longer take streams.
    pub(crate) fn forget_node(&self, conn: &NodeConn) {
        let node_id = conn.node_id.borrow().clone();
        let mut cs = conn.control.borrow_mut();
        if let (Some(node_id), false) = (node_id, cs.gone_reported) {
            cs.gone_reported = true;
            self.control.send(ToControl::NodeGone {
                node_id,
                conn: crate::control::ConnRef {
                    core: self.index,
                    serial: conn.serial,
                },
            });
        }
    }
}

/// The sockets one core serves, bound on the main thread.
pub(crate) struct CoreSockets {
    pub(crate) socks: Option<std::net::TcpListener>,
    pub(crate) http: Option<std::net::TcpListener>,
    pub(crate) udp: std::net::UdpSocket,
}

/// Everything a core thread needs to start.
pub(crate) struct CoreSeed {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<DataplaneConfig>,
    pub(crate) control: ControlHandle,
    pub(crate) nodes: NodeTableHandle,
    pub(crate) peers: Arc<[CoreSender]>,
    pub(crate) inbox: mpsc::UnboundedReceiver<CoreMsg>,
    pub(crate) key_events: broadcast::Receiver<KeyEvent>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) gate: Arc<crate::limits::Gate>,
    pub(crate) sockets: CoreSockets,
    pub(crate) quic_local: SocketAddr,
    pub(crate) retry_key: crate::quic::retry::RetryKey,
}

/// Whether this core will run io_uring.
///
/// # Errors
/// [`DataplaneError::NoIoUring`] when io_uring is required but missing.
pub(crate) fn use_io_uring(choice: DriverChoice) -> Result<bool, DataplaneError> {
    let available = monoio::utils::detect_uring();
    match choice {
        DriverChoice::Auto => Ok(available),
        DriverChoice::IoUring if available => Ok(true),
        DriverChoice::IoUring => Err(DataplaneError::NoIoUring),
        DriverChoice::Legacy => Ok(false),
    }
}

/// Runs one core to completion on the current thread.
pub(crate) fn run_core(seed: CoreSeed, uring: bool) -> std::io::Result<()> {
    let index = seed.index;
    if uring {
        let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
            .with_entries(4096)
            .enable_timer()
            .build()?;
        info!(core = index, driver = "io_uring", "core started");
        rt.block_on(core_main(seed))
    } else {
        let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()?;
        info!(core = index, driver = "legacy", "core started");
        rt.block_on(core_main(seed))
    }
}

async fn core_main(seed: CoreSeed) -> std::io::Result<()> {
    let quic_socket = UdpSocket::from_std(seed.sockets.udp)?;
    let udp_offload = seed.cfg.udp_offload;
    let config = endpoint::server_config(&seed.cfg).map_err(std::io::Error::other)?;
    let core = Rc::new(Core {
        index: seed.index,
        cfg: seed.cfg,
        control: seed.control,
        nodes: seed.nodes,
        peers: seed.peers,
        quic: QuicEndpoint::new(
            quic_socket,
            seed.quic_local,
            config,
            seed.retry_key,
            udp_offload,
        )?,
        pool: BufPool::default(),
        auth: AuthCache::default(),
        accounts: Accounts::default(),
        stats: seed.stats,
        gate: seed.gate,
        draining: std::cell::Cell::new(false),
        drain: tokio::sync::Notify::new(),
    });
    monoio::spawn(key_events(core.clone(), seed.key_events));
    for (listener, frontend) in [
        (seed.sockets.socks, Frontend::Socks),
        (seed.sockets.http, Frontend::Http),
    ] {
        if let Some(l) = listener {
            let l = TcpListener::from_std(l)?;
            monoio::spawn(accept_loop(core.clone(), l, frontend));
        }
    }
    monoio::spawn(crate::quic::gro::recv_loop(core.clone()));
    let mut inbox = seed.inbox;
    while let Some(msg) = inbox.recv().await {
        match msg {
            CoreMsg::Relay(job) => {
                let span = job.plan.span.clone();
                match job.stream.set_nonblocking(true) {
                    Ok(()) => {}
                    Err(e) => {
                        warn!(error = %e, "could not adopt handed-off connection");
                        continue;
                    }
                }
                match (*job)
                    .map_stream(monoio::net::TcpStream::from_std)
                    .transpose()
                {
                    Ok(job) => {
                        monoio::spawn(relay::run(core.clone(), job).instrument(span));
                    }
                    Err(e) => warn!(error = %e, "could not adopt handed-off connection"),
                }
            }
            CoreMsg::Datagram { mut data, from } => {
                endpoint::dispatch(&core, &mut data, from);
            }
            CoreMsg::Drain { grace_ms } => start_drain(&core, grace_ms),
            CoreMsg::Shutdown => break,
        }
    }
    core.accounts.settle_all(Duration::from_secs(2)).await;
    close_all(&core).await;
    Ok(())
}

/// Closes this core's listeners and tells every node connection the server drains.
fn start_drain(core: &Core, grace_ms: u64) {
    core.draining.set(true);
    core.drain.notify_waiters();
    for conn in core.quic.all() {
        conn.control
            .borrow_mut()
            .queue(&turbo_proto::wire::control::ControlMessage::Drain { grace_ms });
        conn.driver.notify();
    }
}

/// Resolves once the core drains.
async fn drain_started(core: &Core) {
    loop {
        let notified = core.drain.notified();
        if core.draining.get() {
            return;
        }
        notified.await;
    }
}

/// Closes every node connection and gives the drivers a moment to send the close.
async fn close_all(core: &Rc<Core>) {
    let conns = core.quic.all();
    for conn in &conns {
        let _ = conn
            .quic
            .borrow_mut()
            .close(true, 0, b"server shutting down");
        conn.driver.notify();
    }
    // Let each driver run once to put its CONNECTION_CLOSE on the wire.
    for _ in 0..4 {
        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
        if conns
            .iter()
            .all(|c| c.quic.borrow().is_closed() || c.quic.borrow().is_draining())
        {
            break;
        }
    }
}

/// Applies key events (revocations, top-ups) from the control plane.
async fn key_events(core: Rc<Core>, mut rx: broadcast::Receiver<KeyEvent>) {
    loop {
        let event = match rx.recv().await {
            Ok(e) => e,
            Err(broadcast::error::RecvError::Lagged(_)) => KeyEvent::Resync,
            Err(broadcast::error::RecvError::Closed) => return,
        };
        core.auth.apply(&event);
        core.accounts.apply(&event);
        close_node_conns(&core, &event);
    }
}

/// Closes the node connections a node event names: every connection of a revoked
/// node, or the one connection a newer one replaced. Their routes go at once.
fn close_node_conns(core: &Core, event: &KeyEvent) {
    let (node_id, only, code, reason): (_, _, _, &[u8]) = match event {
        KeyEvent::NodeRevoked(id) => (id, None, RejectCode::BadToken, b"node revoked"),
        KeyEvent::NodeReplaced { node_id, conn } if conn.core == core.index => (
            node_id,
            Some(conn.serial),
            RejectCode::Replaced,
            b"replaced by a newer connection with the same node token",
        ),
        _ => return,
    };
    for conn in core.quic.all() {
        let same_node = conn.node_id.borrow().as_ref() == Some(node_id);
        if !same_node || only.is_some_and(|s| s != conn.serial) {
            continue;
        }
        info!(node = %node_id, serial = conn.serial, ?code, "closing node connection");
        core.forget_node(&conn);
        let _ = conn.quic.borrow_mut().close(true, code as u64, reason);
        conn.driver.notify();
    }
}

async fn accept_loop(core: Rc<Core>, listener: TcpListener, frontend: Frontend) {
    loop {
        let accepted = monoio::select! {
            r = listener.accept() => r,
            _ = drain_started(&core) => return,
        };
        match accepted {
            Ok((stream, peer)) => {
                monoio::spawn(customer::serve(core.clone(), stream, peer, frontend));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                monoio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
