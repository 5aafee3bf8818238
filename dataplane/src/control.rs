//! The data plane's only link to the control plane: messages.
//!
//! Cores send [`ToControl`] requests over an unbounded tokio channel (the control plane
//! runs on tokio) and await answers on oneshot channels (monoio's `sync` feature wakes a
//! parked io_uring core). Node routes flow the other way as an immutable
//! [`NodeTable`] snapshot that cores read without locks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::{mpsc, oneshot};
use turbo_proto::params::{CountryCode, ParamsError, UserParams};
use turbo_proto::wire::control::{Hello, RejectCode};
use turbo_proto::{Credentials, RelayStatus};

/// Identifies one node QUIC connection on one core: `(core, connection serial)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// Index of the core that owns the connection.
    pub core: usize,
    /// Serial number of the connection on that core.
    pub serial: u64,
}

/// A customer's right to use the network, as decided by the control plane.
#[derive(Debug, Clone)]
pub struct AuthGrant {
    /// Stable id of the API key (never the key itself).
    pub key_id: Arc<str>,
    /// Routing parameters parsed from the username.
    pub params: UserParams,
}

/// Why a customer was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthDenied {
    /// The key is unknown or revoked.
    #[error("invalid credentials")]
    BadKey,
    /// The key has no credits left.
    #[error("no credits left")]
    NoCredits,
    /// The username parameters are invalid.
    #[error("invalid username parameters: {0}")]
    BadParams(#[from] ParamsError),
    /// The control plane could not decide (store down, shutting down).
    #[error("authorization unavailable")]
    Unavailable,
}

/// What the control plane tells a core about an accepted node.
#[derive(Debug, Clone)]
pub struct NodeAdmission {
    /// The node's id.
    pub node_id: Arc<str>,
}

/// Why a connection ended and how much it moved: the basis of billing and of node pay.
/// Bytes are counted on the server.
#[derive(Debug, Clone)]
pub struct UsageRecord {
    /// The customer's key id.
    pub key_id: Arc<str>,
    /// The node that carried the bytes.
    pub node_id: Arc<str>,
    /// The target port.
    pub target_port: u16,
    /// Customer -> target bytes.
    pub bytes_up: u64,
    /// Target -> customer bytes.
    pub bytes_down: u64,
    /// How long the connection lived.
    pub duration: Duration,
    /// The node's answer to the relay header.
    pub outcome: RelayStatus,
}

/// Requests from data-plane cores to the control plane.
#[derive(Debug)]
pub enum ToControl {
    /// A customer presented credentials: answer with a grant or a refusal.
    Authorize {
        /// Username and API key.
        credentials: Credentials,
        /// The customer's address.
        peer: SocketAddr,
        /// Where to answer.
        reply: oneshot::Sender<Result<AuthGrant, AuthDenied>>,
    },
    /// A node sent its hello: admit it (and add it to the [`NodeTable`]) or refuse.
    NodeHello {
        /// The hello, including the token.
        hello: Hello,
        /// The node's public address as seen by the server.
        peer: SocketAddr,
        /// Where the connection lives.
        conn: ConnRef,
        /// Where to answer.
        reply: oneshot::Sender<Result<NodeAdmission, RejectCode>>,
    },
    /// A node connection closed: remove its route.
    NodeGone {
        /// The node.
        node_id: Arc<str>,
        /// The connection that closed (a node may have reconnected on another one).
        conn: ConnRef,
    },
    /// The smoothed RTT of a node connection was sampled.
    NodeRtt {
        /// The node.
        node_id: Arc<str>,
        /// quiche's smoothed RTT.
        rtt: Duration,
    },
    /// A relayed connection finished.
    Usage(UsageRecord),
}

/// Sending half used by cores. Cheap to clone; never blocks.
#[derive(Debug, Clone)]
pub struct ControlHandle {
    tx: mpsc::UnboundedSender<ToControl>,
}

/// Receiving half, owned by the control plane.
pub type ControlReceiver = mpsc::UnboundedReceiver<ToControl>;

/// Creates the channel between the data plane and the control plane.
pub fn control_channel() -> (ControlHandle, ControlReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    (ControlHandle { tx }, rx)
}

impl ControlHandle {
    /// Sends a message; returns `false` if the control plane is gone.
    pub fn send(&self, msg: ToControl) -> bool {
        self.tx.send(msg).is_ok()
    }

    /// Asks the control plane to authorize a customer.
    pub async fn authorize(
        &self,
        credentials: Credentials,
        peer: SocketAddr,
    ) -> Result<AuthGrant, AuthDenied> {
        let (reply, rx) = oneshot::channel();
        if !self.send(ToControl::Authorize {
            credentials,
            peer,
            reply,
        }) {
            return Err(AuthDenied::Unavailable);
        }
        rx.await.unwrap_or(Err(AuthDenied::Unavailable))
    }

    /// Asks the control plane to admit a node.
    pub async fn admit_node(
        &self,
        hello: Hello,
        peer: SocketAddr,
        conn: ConnRef,
    ) -> Result<NodeAdmission, RejectCode> {
        let (reply, rx) = oneshot::channel();
        if !self.send(ToControl::NodeHello {
            hello,
            peer,
            conn,
            reply,
        }) {
            return Err(RejectCode::Unavailable);
        }
        rx.await.unwrap_or(Err(RejectCode::Unavailable))
    }
}

/// One selectable node connection.
#[derive(Debug, Clone)]
pub struct NodeRoute {
    /// The node's id.
    pub node_id: Arc<str>,
    /// The node's country, if known.
    pub country: Option<CountryCode>,
    /// Where its QUIC connection lives.
    pub conn: ConnRef,
}

/// An immutable snapshot of the selectable nodes, published by the control plane.
#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    /// All selectable routes.
    pub routes: Vec<NodeRoute>,
}

impl NodeTable {
    /// Picks a node for a request, uniformly among those matching `country`.
    /// `pick` is a random number used for the choice.
    pub fn choose(&self, country: Option<CountryCode>, pick: u64) -> Option<&NodeRoute> {
        let matching = |r: &&NodeRoute| country.is_none() || r.country == country;
        let count = self.routes.iter().filter(matching).count();
        if count == 0 {
            return None;
        }
        self.routes
            .iter()
            .filter(matching)
            .nth((pick % count as u64) as usize)
    }
}

/// Shared, lock-free handle on the current [`NodeTable`].
pub type NodeTableHandle = Arc<ArcSwap<NodeTable>>;
