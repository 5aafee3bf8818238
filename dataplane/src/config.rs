//! The data plane's settings and start-up errors: what the control plane's config
//! layer hands over, already validated. It imports only the modules whose settings it
//! carries (limits, known keys, the reset key).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use turbo_proto::http::HttpLimits;

use crate::known_keys;
use crate::limits;
use crate::quic::reset::ResetKey;

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
    /// Keys the site and session identities of feature records; the servers of one
    /// network share it.
    pub site_key: crate::site::SiteKey,
    /// The network's live servers, told to every node (the control plane updates it).
    pub servers: crate::servers::ServerListHandle,
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
