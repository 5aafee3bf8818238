//! Thread-per-core data plane of Turbo.
//!
//! One monoio runtime per core (io_uring where the kernel has it, the legacy epoll
//! driver otherwise). Each core owns SO_REUSEPORT customer listeners (SOCKS5, HTTP) and
//! a quiche endpoint for nodes. A customer connection is handshaken on the core that
//! accepted it, then moved once to the core that owns its node's QUIC connection, where
//! it becomes one bidirectional QUIC stream.
//!
//! The data plane talks to the control plane only through [`control`] messages and
//! reads node routes from a lock-free [`control::NodeTable`] snapshot.
//!
//! # Module order
//! No module imports one that imports it back. From the leaves up (each line may use
//! the lines above it):
//! 1. `sys`, `signal`, `pool`, `frontend`, `known_keys`, `routes`, `servers`; in `quic`: `cid`,
//!    `retry`, `reset`, `control_state`.
//! 2. `fairshare` (routes), `limits` (fairshare, frontend), `control` (routes,
//!    known keys), `stats` (control), `config` (limits, known keys, reset key),
//!    `sockets` (config), `links` (what a core shares with the others: config,
//!    control, limits, stats).
//! 3. `account` (credit leases: config, control) and `auth` (the authorization cache:
//!    config, control, stats), each a handle built with what it needs.
//! 4. `quic`: `conn` → `stream`, `endpoint` → `core` (the core's QUIC side: endpoint,
//!    settings, control, routes, gate, stats, datagram channel to other cores) →
//!    `control_stream` → `driver` → `dispatch` → `gro`.
//! 5. `relay`: `plan` (the job and its errors), `counters`, `pumps`, `core` (the core's
//!    relays: accounts, gate, routes, buffers, the QUIC side, hand-off channel to other
//!    cores), `dispute`, `settle`, then the relay itself.
//! 6. `customer` (front ends: `handshake`, `socks`, `http`; it takes the relay and auth
//!    handles).
//! 7. `cores` builds the handles of each core and runs its loops; the crate root binds
//!    the sockets and starts the cores.
#![warn(missing_docs)]

mod account;
mod auth;
mod config;
pub mod control;
mod cores;
mod customer;
mod fairshare;
mod frontend;
pub mod known_keys;
pub mod limits;
mod links;
pub mod policy;
mod pool;
mod quic;

pub use config::{AuthConfig, DataplaneConfig, DataplaneError, DriverChoice, LeaseConfig};
pub use quic::reset::ResetKey;
mod relay;
pub mod routes;
pub mod servers;
mod signal;
pub mod site;
mod sockets;
pub mod stats;
mod sys;
#[cfg(test)]
mod testing;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

/// Addresses actually bound (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct BoundAddrs {
    /// SOCKS5 listener.
    pub socks: Option<SocketAddr>,
    /// HTTP listener.
    pub http: Option<SocketAddr>,
    /// QUIC endpoint.
    pub quic: SocketAddr,
}

/// Binds every core's sockets: one SO_REUSEPORT UDP socket and (where enabled) one
/// SOCKS5 and one HTTP listener per core.
fn bind(
    config: &DataplaneConfig,
    count: usize,
) -> Result<(BoundAddrs, Vec<cores::CoreSockets>), DataplaneError> {
    let (udp, quic) = sockets::udp_sockets(config.quic_listen, count)?;
    let listeners =
        |addr: Option<SocketAddr>| addr.map(|a| sockets::tcp_listeners(a, count)).transpose();
    let (socks, http) = (
        listeners(config.socks_listen)?,
        listeners(config.http_listen)?,
    );
    let addrs = BoundAddrs {
        socks: socks.as_ref().map(|s| s.1),
        http: http.as_ref().map(|h| h.1),
        quic,
    };
    let mut socks = socks.map(|s| s.0.into_iter());
    let mut http = http.map(|h| h.0.into_iter());
    let sockets = udp
        .into_iter()
        .map(|udp| cores::CoreSockets {
            socks: socks.as_mut().and_then(Iterator::next),
            http: http.as_mut().and_then(Iterator::next),
            udp,
        })
        .collect();
    Ok((addrs, sockets))
}

/// One unbounded channel per core: the senders, shared, and the receivers.
fn channels<T>(
    count: usize,
) -> (
    Arc<[mpsc::UnboundedSender<T>]>,
    Vec<mpsc::UnboundedReceiver<T>>,
) {
    let (senders, receivers): (Vec<_>, Vec<_>) =
        (0..count).map(|_| mpsc::unbounded_channel()).unzip();
    (senders.into(), receivers)
}

/// A running data plane.
pub struct Dataplane {
    addrs: BoundAddrs,
    grace: Duration,
    stats: Arc<stats::Stats>,
    gate: Arc<limits::Gate>,
    inboxes: Arc<[cores::CoreSender]>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Dataplane {
    /// Binds every listener and starts one runtime thread per core.
    ///
    /// # Errors
    /// [`DataplaneError`] when a listener cannot be bound, TLS material cannot be
    /// loaded, or a runtime cannot start.
    pub fn start(
        config: DataplaneConfig,
        control: control::ControlHandle,
        nodes: control::NodeTableHandle,
        key_events: &tokio::sync::broadcast::Sender<control::KeyEvent>,
    ) -> Result<Self, DataplaneError> {
        let stats = Arc::new(stats::Stats::default());
        let gate = Arc::new(limits::Gate::new(config.limits.clone()));
        let count = config.cores.clamp(1, 255);
        let uring = cores::use_io_uring(config.driver)?;
        // Fail fast on bad TLS material instead of inside every core.
        quic::endpoint::server_config(&config)?;
        let (addrs, sockets) = bind(&config, count)?;
        let (inboxes, controls) = channels(count);
        let (handoffs, handoff_inboxes) = channels(count);
        let (forward, datagram_inboxes) = channels(count);
        let config = Arc::new(config);
        let retry_key = quic::retry::RetryKey::random();
        let mut threads = Vec::with_capacity(count);
        let receivers = controls
            .into_iter()
            .zip(handoff_inboxes)
            .zip(datagram_inboxes);
        for ((index, ((control_inbox, handoff_inbox), datagrams)), sockets) in
            receivers.enumerate().zip(sockets)
        {
            let seed = cores::CoreSeed {
                handles: cores::CoreHandles {
                    index,
                    cfg: config.clone(),
                    control: control.clone(),
                    nodes: nodes.clone(),
                    handoffs: handoffs.clone(),
                    forward: forward.clone(),
                    stats: stats.clone(),
                    gate: gate.clone(),
                    quic_local: addrs.quic,
                    retry_key: retry_key.clone(),
                },
                inboxes: cores::CoreInboxes {
                    control: control_inbox,
                    handoffs: handoff_inbox,
                    datagrams,
                },
                key_events: key_events.subscribe(),
                sockets,
            };
            let handle = std::thread::Builder::new()
                .name(format!("turbo-core-{index}"))
                .spawn(move || {
                    if let Err(e) = cores::run_core(seed, uring) {
                        tracing::error!(core = index, error = %e, "core failed");
                    }
                })
                .map_err(|source| DataplaneError::Runtime {
                    core: index,
                    source,
                })?;
            threads.push(handle);
        }
        tracing::info!(
            cores = count,
            driver = if uring { "io_uring" } else { "legacy" },
            socks = ?addrs.socks,
            http = ?addrs.http,
            quic = %addrs.quic,
            "data plane started"
        );
        Ok(Dataplane {
            grace: config.shutdown_grace,
            addrs,
            stats,
            gate,
            inboxes,
            threads,
        })
    }

    /// The data plane's counters.
    pub fn stats(&self) -> Arc<stats::Stats> {
        self.stats.clone()
    }

    /// The connection limits and their counters.
    pub fn gate(&self) -> Arc<limits::Gate> {
        self.gate.clone()
    }

    /// The bound addresses.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Drains: stops accepting, tells nodes, and lets open tunnels finish for the
    /// grace period. Then settles every credit lease, closes node connections, and
    /// waits for the core threads.
    pub fn shutdown(self) {
        let grace_ms = self.grace.as_millis() as u64;
        for tx in self.inboxes.iter() {
            let _ = tx.send(cores::CoreMsg::Drain { grace_ms });
        }
        let deadline = std::time::Instant::now() + self.grace;
        while self.gate.open_connections() > 0 && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::info!(
            cut = self.gate.open_connections(),
            "drained; closing what is left"
        );
        for tx in self.inboxes.iter() {
            let _ = tx.send(cores::CoreMsg::Shutdown);
        }
        for t in self.threads {
            let _ = t.join();
        }
    }
}
