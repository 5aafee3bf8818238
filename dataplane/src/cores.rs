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
use tracing::{info, warn};
use turbo_proto::wire::control::RejectCode;

use crate::account::Accounts;
use crate::auth::AuthCache;
use crate::config::{DataplaneConfig, DataplaneError, DriverChoice};
use crate::control::{ControlHandle, KeyEvent, NodeTableHandle};
use crate::customer;
use crate::frontend::Frontend;
use crate::links::CoreLinks;
use crate::pool::BufPool;
use crate::quic::core::{DatagramSender, ForwardedDatagram, QuicCore};
use crate::quic::endpoint::{self, QuicEndpoint};
use crate::relay::core::{Handoff, HandoffSender, RelayCore};
use crate::stats::Stats;

/// Messages a core accepts from the main thread.
pub(crate) enum CoreMsg {
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

/// What one core runs: its QUIC side, its relays and its authorization cache, each a
/// handle of its own, plus the drain state of its listeners.
struct Core {
    /// This core's index.
    index: usize,
    /// The node connections.
    quic: Rc<QuicCore>,
    /// The customer relays (and the credit accounts in them).
    relay: Rc<RelayCore>,
    /// This core's authorization cache.
    auth: Rc<AuthCache>,
    /// Set when the server drains: the listeners close.
    draining: std::cell::Cell<bool>,
    drain: tokio::sync::Notify,
}

/// The sockets one core serves, bound on the main thread.
pub(crate) struct CoreSockets {
    pub(crate) socks: Option<std::net::TcpListener>,
    pub(crate) http: Option<std::net::TcpListener>,
    pub(crate) udp: std::net::UdpSocket,
}

/// The inboxes of one core: from the main thread, and from other cores' relays and
/// QUIC sides.
pub(crate) struct CoreInboxes {
    pub(crate) control: mpsc::UnboundedReceiver<CoreMsg>,
    pub(crate) handoffs: mpsc::UnboundedReceiver<Handoff>,
    pub(crate) datagrams: mpsc::UnboundedReceiver<ForwardedDatagram>,
}

/// Everything a core thread needs to start.
pub(crate) struct CoreSeed {
    pub(crate) handles: CoreHandles,
    pub(crate) inboxes: CoreInboxes,
    pub(crate) key_events: broadcast::Receiver<KeyEvent>,
    pub(crate) sockets: CoreSockets,
}

/// The shared handles a core is built from.
pub(crate) struct CoreHandles {
    pub(crate) index: usize,
    pub(crate) cfg: Arc<DataplaneConfig>,
    pub(crate) control: ControlHandle,
    pub(crate) nodes: NodeTableHandle,
    pub(crate) handoffs: Arc<[HandoffSender]>,
    pub(crate) forward: Arc<[DatagramSender]>,
    pub(crate) stats: Arc<Stats>,
    pub(crate) gate: Arc<crate::limits::Gate>,
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
    let index = seed.handles.index;
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

/// Builds the core's handles from its seed.
fn assemble(seed: &CoreHandles, socket: UdpSocket) -> std::io::Result<Core> {
    let config = endpoint::server_config(&seed.cfg).map_err(std::io::Error::other)?;
    let endpoint = QuicEndpoint::new(
        socket,
        seed.quic_local,
        config,
        seed.retry_key.clone(),
        seed.cfg.udp_offload,
    )?;
    let links = CoreLinks {
        index: seed.index,
        cfg: seed.cfg.clone(),
        control: seed.control.clone(),
        nodes: seed.nodes.clone(),
        gate: seed.gate.clone(),
        stats: seed.stats.clone(),
    };
    let quic = Rc::new(QuicCore {
        links: links.clone(),
        quic: endpoint,
        forward: seed.forward.clone(),
    });
    let accounts = Accounts::new(
        (seed.index, seed.cfg.cores),
        seed.cfg.lease.clone(),
        seed.control.clone(),
        seed.stats.clone(),
    );
    let relay = Rc::new(RelayCore {
        links,
        accounts,
        pool: BufPool::default(),
        quic: quic.clone(),
        handoffs: seed.handoffs.clone(),
    });
    let auth = AuthCache::new(
        seed.cfg.auth.clone(),
        seed.control.clone(),
        seed.stats.clone(),
    );
    Ok(Core {
        index: seed.index,
        quic,
        relay,
        auth: Rc::new(auth),
        draining: std::cell::Cell::new(false),
        drain: tokio::sync::Notify::new(),
    })
}

async fn core_main(seed: CoreSeed) -> std::io::Result<()> {
    let CoreSeed {
        handles,
        inboxes,
        key_events: events,
        sockets,
    } = seed;
    let core = Rc::new(assemble(&handles, UdpSocket::from_std(sockets.udp)?)?);
    monoio::spawn(key_events(core.clone(), events));
    for (listener, frontend) in [
        (sockets.socks, Frontend::Socks),
        (sockets.http, Frontend::Http),
    ] {
        if let Some(l) = listener {
            let l = TcpListener::from_std(l)?;
            monoio::spawn(accept_loop(core.clone(), l, frontend));
        }
    }
    monoio::spawn(crate::quic::gro::recv_loop(core.quic.clone()));
    monoio::spawn(crate::quic::dispatch::forwarded(
        core.quic.clone(),
        inboxes.datagrams,
    ));
    monoio::spawn(crate::relay::adopt_handoffs(
        core.relay.clone(),
        inboxes.handoffs,
    ));
    let mut inbox = inboxes.control;
    while let Some(msg) = inbox.recv().await {
        match msg {
            CoreMsg::Drain { grace_ms } => start_drain(&core, grace_ms),
            CoreMsg::Shutdown => break,
        }
    }
    core.relay.accounts.settle_all(Duration::from_secs(2)).await;
    close_all(&core).await;
    Ok(())
}

/// Closes this core's listeners and tells every node connection the server drains.
fn start_drain(core: &Core, grace_ms: u64) {
    core.draining.set(true);
    core.drain.notify_waiters();
    for conn in core.quic.quic.all() {
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
    let conns = core.quic.quic.all();
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
        if let KeyEvent::Policy { key_id, rules } = &event {
            core.relay.gate.policies.set(key_id, rules.clone());
        }
        core.auth.apply(&event);
        core.relay.accounts.apply(&event);
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
    for conn in core.quic.quic.all() {
        let same_node = conn.node_id.borrow().as_ref() == Some(node_id);
        if !same_node || only.is_some_and(|s| s != conn.serial) {
            continue;
        }
        info!(node = %node_id, serial = conn.serial, ?code, "closing node connection");
        core.quic.forget_node(&conn);
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
                monoio::spawn(customer::serve(
                    core.relay.clone(),
                    core.auth.clone(),
                    stream,
                    peer,
                    frontend,
                ));
            }
            Err(e) => {
                // EMFILE and friends: back off briefly instead of spinning.
                warn!(error = %e, "accept failed");
                monoio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
}
