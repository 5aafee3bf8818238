//! The data plane's only link to the control plane: messages.
//!
//! Cores send [`ToControl`] requests over an unbounded tokio channel (the control plane
//! runs on tokio) and await answers on oneshot channels (monoio's `sync` feature wakes a
//! parked io_uring core). Node routes flow the other way as an immutable
//! [`NodeTable`] snapshot that cores read without locks.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use turbo_proto::params::{CountryCode, ParamsError, UserParams};

pub use crate::routes::{ConnRef, NoRoute, NodeRoute, NodeTable, NodeTableHandle};
use turbo_proto::wire::control::{Hello, RejectCode};
use turbo_proto::RelayStatus;

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
    /// Too many failed authentications from this address: refused without a lookup.
    #[error("too many failed authentications")]
    RateLimited,
}

impl AuthDenied {
    /// A short label for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthDenied::BadKey => "bad_key",
            AuthDenied::NoCredits => "no_credits",
            AuthDenied::BadParams(_) => "bad_params",
            AuthDenied::Unavailable => "unavailable",
            AuthDenied::RateLimited => "rate_limited",
        }
    }
}

/// What the control plane tells a core about an accepted node.
#[derive(Debug, Clone)]
pub struct NodeAdmission {
    /// The node's id.
    pub node_id: Arc<str>,
}

/// Usage a core has relayed for one key and not yet reported. Bytes are counted on the
/// server, never taken from a node's report.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// Customer -> target bytes.
    pub up: u64,
    /// Target -> customer bytes.
    pub down: u64,
    /// Connections that closed.
    pub connections: u64,
    /// Bytes carried per node, each way; sums to `up` and `down`.
    pub nodes: Vec<NodeUsage>,
}

/// The bytes one node carried for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeUsage {
    /// The node.
    pub node: Arc<str>,
    /// Customer -> target bytes.
    pub up: u64,
    /// Target -> customer bytes.
    pub down: u64,
    /// Connections through it that closed.
    pub connections: u64,
}

impl NodeUsage {
    /// Both ways.
    pub fn bytes(&self) -> u64 {
        self.up.saturating_add(self.down)
    }
}

impl Usage {
    /// Whether there is nothing to report.
    pub fn is_empty(&self) -> bool {
        self.up == 0 && self.down == 0 && self.connections == 0
    }

    /// Total bytes.
    pub fn bytes(&self) -> u64 {
        self.up.saturating_add(self.down)
    }

    /// Adds `n` bytes carried by `node` in one direction.
    pub fn add(&mut self, node: &Arc<str>, n: u64, upstream: bool) {
        if upstream {
            self.up = self.up.saturating_add(n);
        } else {
            self.down = self.down.saturating_add(n);
        }
        let u = self.node(node);
        if upstream {
            u.up = u.up.saturating_add(n);
        } else {
            u.down = u.down.saturating_add(n);
        }
    }

    /// Counts one closed connection through `node`.
    pub fn add_connection(&mut self, node: &Arc<str>) {
        self.connections += 1;
        let u = self.node(node);
        u.connections += 1;
    }

    /// `node`'s entry, added if missing.
    fn node(&mut self, node: &Arc<str>) -> &mut NodeUsage {
        let i = match self
            .nodes
            .iter()
            .position(|u| Arc::ptr_eq(&u.node, node) || u.node == *node)
        {
            Some(i) => i,
            None => {
                self.nodes.push(NodeUsage {
                    node: node.clone(),
                    up: 0,
                    down: 0,
                    connections: 0,
                });
                self.nodes.len() - 1
            }
        };
        &mut self.nodes[i]
    }
}

/// One call of the lease protocol: report usage, then reserve more credit or release
/// the rest. Requests carry a per-lease sequence number so that a retry after a lost
/// answer is applied at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseRequest {
    /// The key whose balance is leased.
    pub key_id: Arc<str>,
    /// The lease, chosen by the core (unique per server process).
    pub lease_id: Arc<str>,
    /// Sequence number within the lease, starting at 1.
    pub seq: u64,
    /// Bytes wanted on top of what the lease holds (0 for a pure checkpoint).
    pub want: u64,
    /// Usage since the previous request of this lease.
    pub usage: Usage,
    /// Return whatever the lease still holds and end it.
    pub release: bool,
}

/// The store's answer to a [`LeaseRequest`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LeaseAnswer {
    /// Bytes added to the lease by this request.
    pub granted: u64,
    /// Bytes the lease holds after it (the store's view).
    pub held: u64,
    /// The key's unleased balance after it.
    pub credits: u64,
    /// The key is revoked.
    pub revoked: bool,
    /// The lease had already ended (released, or reclaimed after expiry): its usage was
    /// charged to the balance directly and the core must start a new lease.
    pub ended: bool,
}

/// Why a lease request failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    /// The key no longer exists.
    #[error("unknown key")]
    UnknownKey,
    /// The store is unreachable; the request may or may not have been applied.
    #[error("store unavailable")]
    Unavailable,
}

/// What the abnormal-traffic dataset records about one closed customer connection.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    /// The customer's key id.
    pub key_id: Arc<str>,
    /// The node that carried it.
    pub node_id: Arc<str>,
    /// `socks5` or `http`.
    pub frontend: &'static str,
    /// The target port.
    pub target_port: u16,
    /// The target's site (registrable domain, or IPv4 /24 / IPv6 /48), hashed with the
    /// network's shared key ([`crate::site::SiteKey`]): comparable across servers,
    /// never readable as a name.
    pub target_id: u64,
    /// The customer's sticky-session id hashed the same way (0: no session).
    pub session_id: u64,
    /// When the customer connected, Unix milliseconds.
    pub started_unix_ms: u64,
    /// How long the connection lived.
    pub duration: Duration,
    /// From accept to the node's reply, if the node replied.
    pub time_to_connect: Option<Duration>,
    /// Customer -> target bytes.
    pub bytes_up: u64,
    /// Target -> customer bytes.
    pub bytes_down: u64,

    /// Reads (segments) customer -> target.
    pub reads_up: u64,
    /// Reads (segments) target -> customer.
    pub reads_down: u64,
    /// Mean gap between reads in either direction, microseconds.
    pub gap_mean_us: u64,
    /// Largest gap between reads, microseconds.
    pub gap_max_us: u64,
    /// Standard deviation of the gaps, microseconds.
    pub gap_std_us: u64,
    /// The customer's first upload was a TLS handshake record (a ClientHello).
    pub tls: bool,
    /// Bytes the customer sent after its first upload (counted by the server).
    pub uploaded_after_first: u64,
    /// How it ended.
    pub outcome: RelayStatus,
}

/// Changes to keys and nodes that every core must apply at once (from this server or,
/// through the store's PUB/SUB, from another one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyEvent {
    /// The node's token was revoked: close its connections (close code
    /// [`RejectCode::BadToken`], so the node stops retrying).
    NodeRevoked(Arc<str>),
    /// A newer connection of the same node identity took over: close this one (close
    /// code [`RejectCode::Replaced`]). Only the core that owns it acts.
    NodeReplaced {
        /// The node.
        node_id: Arc<str>,
        /// The connection to close.
        conn: ConnRef,
    },

    /// The key was revoked: forget it and close its connections.
    Revoked(Arc<str>),
    /// The key received credits: a dry account may lease again.
    ToppedUp(Arc<str>),
    /// A key with this tag ([`crate::known_keys::tag`]) was created.
    Created(crate::known_keys::KeyTag),
    /// A key's verdict restrictions changed: these replace them (empty: lifted).
    Policy {
        /// The key.
        key_id: Arc<str>,
        /// Its restrictions now.
        rules: Arc<[crate::policy::Restriction]>,
    },
    /// Events may have been missed: drop every cached answer.
    Resync,
}

/// The outcome of one relay attempt on one node, for its reliability score.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The node tried.
    pub node_id: Arc<str>,
    /// What it answered (or the server-side failure).
    pub status: RelayStatus,
    /// From opening the stream to the node's reply.
    pub time_to_reply: Option<Duration>,
}

/// A target failure a node answered that another node did not reproduce: it connected
/// to the same target for the same request.
#[derive(Debug, Clone)]
pub struct DisputeRecord {
    /// The node that answered the target failure.
    pub node_id: Arc<str>,
    /// What it answered.
    pub status: RelayStatus,
    /// The node that then connected.
    pub disputed_by: Arc<str>,
}

/// The node a sticky session is pinned to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRoute {
    /// The node.
    pub node_id: Arc<str>,
    /// The session was pinned elsewhere before (that node is gone or failed).
    pub moved: bool,
}

/// Requests from data-plane cores to the control plane.
#[derive(Debug)]
pub enum ToControl {
    /// A customer presented a key: answer with its id or a refusal. Only the SHA-256 of
    /// the key crosses the channel.
    Authorize {
        /// SHA-256 of the presented API key.
        key_hash: [u8; 32],
        /// The customer's address.
        peer: SocketAddr,
        /// Where to answer.
        reply: oneshot::Sender<Result<Arc<str>, AuthDenied>>,
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
    /// Report usage and reserve or release credit.
    Lease {
        /// The request.
        request: LeaseRequest,
        /// Where to answer.
        reply: oneshot::Sender<Result<LeaseAnswer, LeaseError>>,
    },
    /// A relayed connection finished.
    ConnClosed(ConnRecord),
    /// One relay attempt ended (successfully or not) on a node.
    Attempt(AttemptRecord),
    /// A node's target failure was disputed by another node: count it as the node's own.
    Disputed(DisputeRecord),
    /// Which node serves this sticky session (pinning one if needed).
    Session {
        /// The customer's key.
        key_id: Arc<str>,
        /// The session id from the username.
        session: String,
        /// How long the pin lives.
        ttl: Duration,
        /// The requested country.
        country: Option<CountryCode>,
        /// Nodes that must not be (re)pinned: they failed this request.
        exclude: Vec<Arc<str>>,
        /// Where to answer.
        reply: oneshot::Sender<Result<SessionRoute, NoRoute>>,
    },
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

    /// Asks the control plane which key hashes to `key_hash`.
    pub async fn authorize(
        &self,
        key_hash: [u8; 32],
        peer: SocketAddr,
    ) -> Result<Arc<str>, AuthDenied> {
        let (reply, rx) = oneshot::channel();
        if !self.send(ToControl::Authorize {
            key_hash,
            peer,
            reply,
        }) {
            return Err(AuthDenied::Unavailable);
        }
        rx.await.unwrap_or(Err(AuthDenied::Unavailable))
    }

    /// Runs one lease request.
    pub async fn lease(&self, request: LeaseRequest) -> Result<LeaseAnswer, LeaseError> {
        let (reply, rx) = oneshot::channel();
        if !self.send(ToControl::Lease { request, reply }) {
            return Err(LeaseError::Unavailable);
        }
        rx.await.unwrap_or(Err(LeaseError::Unavailable))
    }

    /// Asks which node serves a sticky session.
    ///
    /// # Errors
    /// [`NoRoute`] when no node can serve it (or the control plane is gone).
    pub async fn session(
        &self,
        key_id: Arc<str>,
        session: String,
        ttl: Duration,
        country: Option<CountryCode>,
        exclude: Vec<Arc<str>>,
    ) -> Result<SessionRoute, NoRoute> {
        let (reply, rx) = oneshot::channel();
        if !self.send(ToControl::Session {
            key_id,
            session,
            ttl,
            country,
            exclude,
            reply,
        }) {
            return Err(NoRoute::NoNodes);
        }
        rx.await.unwrap_or(Err(NoRoute::NoNodes))
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
