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
#![warn(missing_docs)]

mod account;
mod auth;
pub mod control;
mod cores;
mod customer;
mod fairshare;
pub mod known_keys;
pub mod limits;
mod pool;
mod quic;

pub use quic::reset::ResetKey;
mod relay;
pub mod routes;
mod signal;
mod sockets;
pub mod stats;
mod sys;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use turbo_proto::http::HttpLimits;

/// Which monoio driver the cores run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriverChoice {
    /// io_uring when the kernel supports it, else legacy.
    #[default]
    Auto,
    /// io_uring; start-up fails without it.
    IoUring,
    /// The legacy (epoll) driver.
    Legacy,
}

/// Data-plane settings, already validated by the control plane's config layer.
#[derive(Debug, Clone)]
pub struct DataplaneConfig {
    /// SOCKS5 listener; `None` disables it.
    pub socks_listen: Option<SocketAddr>,
    /// HTTP proxy listener; `None` disables it.
    pub http_listen: Option<SocketAddr>,
    /// UDP address for node QUIC connections.
    pub quic_listen: SocketAddr,
    /// Number of cores (runtimes) to run.
    pub cores: usize,
    /// Driver selection.
    pub driver: DriverChoice,
    /// PEM certificate chain presented to nodes.
    pub cert_chain: PathBuf,
    /// PEM private key for `cert_chain`.
    pub private_key: PathBuf,
    /// A customer handshake (SOCKS5 or HTTP head, including auth) must finish within this.
    pub handshake_timeout: Duration,
    /// How long a node may take to resolve and connect to a target.
    pub connect_timeout: Duration,
    /// A node that is silent this long is dropped (QUIC idle timeout).
    pub node_liveness: Duration,
    /// HTTP head limits.
    pub http_limits: HttpLimits,
    /// Authorization cache and failure limits.
    pub auth: AuthConfig,
    /// Credit lease behaviour.
    pub lease: LeaseConfig,
    /// Destination rules pushed to every node after its welcome.
    pub node_policy: turbo_proto::wire::control::NodePolicy,
    /// Customer connection limits.
    pub limits: limits::ConnLimits,
    /// On shutdown, how long open tunnels may go on after the listeners close.
    pub shutdown_grace: Duration,
    /// Handshaking node connections per core beyond which new ones must validate their
    /// address with a Retry first (0: always).
    pub quic_retry_threshold: usize,
    /// Derives every connection's stateless reset token; keep it across restarts.
    pub stateless_reset_key: ResetKey,
    /// Receive node datagrams in GRO batches where the kernel offers it.
    pub udp_offload: bool,
    /// The congestion controller of node connections.
    pub congestion_control: turbo_quic::CongestionControl,
}

/// How cores cache authorization answers and limit failures.
#[derive(Debug, Clone)]
pub struct AuthConfig {
    /// A known key is trusted this long without asking again (revocations still apply
    /// at once).
    pub ttl: Duration,
    /// An unknown or revoked key is refused this long without asking again.
    pub negative_ttl: Duration,
    /// Failed authentications a source IP, or a username, may make per window (per
    /// core) before it is locked out: then only keys that exist are looked up.
    pub fail_limit: u32,
    /// The failure-counting window.
    pub fail_window: Duration,
    /// Tags of the keys that exist (kept by the control plane).
    pub known_keys: known_keys::KnownKeys,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            ttl: Duration::from_secs(30),
            negative_ttl: Duration::from_secs(5),
            fail_limit: 20,
            fail_window: Duration::from_secs(60),
            known_keys: known_keys::KnownKeys::default(),
        }
    }
}

/// How cores hold credit leases.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// This server's id, which names its leases.
    pub server_id: Arc<str>,
    /// Usage is reported at least this often while it accrues.
    pub checkpoint: Duration,
    /// A lease unused this long goes back to the key.
    pub idle_release: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            server_id: format!("s{:08x}", rand::random::<u32>()).into(),
            checkpoint: Duration::from_secs(1),
            idle_release: Duration::from_secs(5),
        }
    }
}

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

/// Start-up failures of the data plane.
#[derive(Debug, thiserror::Error)]
pub enum DataplaneError {
    /// A listener could not be bound.
    #[error("bind {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// io_uring was required but is unavailable.
    #[error("io_uring requested but not available on this kernel")]
    NoIoUring,
    /// The TLS certificate or key could not be loaded.
    #[error("TLS setup: {0}")]
    Tls(String),
    /// A core thread or runtime could not be started.
    #[error("start core {core}: {source}")]
    Runtime {
        /// Core index.
        core: usize,
        /// The error.
        source: std::io::Error,
    },
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
        let (udp, quic_addr) = sockets::udp_sockets(config.quic_listen, count)?;
        let socks = config
            .socks_listen
            .map(|a| sockets::tcp_listeners(a, count))
            .transpose()?;
        let http = config
            .http_listen
            .map(|a| sockets::tcp_listeners(a, count))
            .transpose()?;
        let addrs = BoundAddrs {
            socks: socks.as_ref().map(|s| s.1),
            http: http.as_ref().map(|h| h.1),
            quic: quic_addr,
        };
        let mut socks = socks.map(|s| s.0.into_iter());
        let mut http = http.map(|h| h.0.into_iter());
        let (senders, receivers): (Vec<_>, Vec<_>) = (0..count)
            .map(|_| tokio::sync::mpsc::unbounded_channel())
            .unzip();
        let inboxes: Arc<[cores::CoreSender]> = senders.into();
        let config = Arc::new(config);
        let retry_key = quic::retry::RetryKey::random();
        let mut threads = Vec::with_capacity(count);
        for ((index, inbox), udp) in receivers.into_iter().enumerate().zip(udp) {
            let seed = cores::CoreSeed {
                index,
                cfg: config.clone(),
                control: control.clone(),
                nodes: nodes.clone(),
                peers: inboxes.clone(),
                inbox,
                key_events: key_events.subscribe(),
                stats: stats.clone(),
                gate: gate.clone(),
                sockets: cores::CoreSockets {
                    socks: socks.as_mut().and_then(Iterator::next),
                    http: http.as_mut().and_then(Iterator::next),
                    udp,
                },
                quic_local: quic_addr,
                retry_key: retry_key.clone(),
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
