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

pub mod control;

use std::net::SocketAddr;
use std::path::PathBuf;
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
    ) -> Result<Self, DataplaneError> {
        let _ = (config, control, nodes);
        todo!()
    }

    /// The bound addresses.
    pub fn addrs(&self) -> BoundAddrs {
        self.addrs
    }

    /// Stops accepting, tells every core to finish, and waits for the threads.
    pub fn shutdown(self) {
        todo!()
    }
}
