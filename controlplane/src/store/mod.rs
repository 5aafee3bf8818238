//! Where keys, balances, credit leases, node identities and usage live.
//!
//! Two backends sit behind one [`Store`] trait and pass one shared [`suite`]:
//! - [`MemoryStore`], the embedded default: it lives in this process and is lost on exit;
//! - [`RedisStore`], selected with `--store redis://host:port/db`, shared by every
//!   `turbo-server` that points at the same Redis. Its key schema is documented in
//!   [`redis`].
//!
//! **Balances are leased, not debited per byte.** A data-plane core reserves a chunk of
//! a key's balance ([`Store::lease`]), spends it locally, and reports usage on its next
//! lease call (at least once a second while traffic flows). A lease that is not renewed
//! before its TTL is reclaimed by [`Store::reclaim_expired`]: what it still held goes
//! back to the balance. Usage reported on an ended lease is charged to the balance
//! directly, so a slow server never loses bytes it relayed.

mod any;
pub mod detect;
mod memory;
pub mod redis;
mod snapshot;
pub mod suite;
pub mod suite_detect;

use std::future::Future;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseAnswer, LeaseRequest};

use crate::secrets::SecretHash;

pub use any::AnyStore;
pub use memory::MemoryStore;
pub use redis::RedisStore;

/// The part of the expired-lease buckets one server reclaims: bucket `b` when
/// `b % of == index`. Live servers share the buckets out by their rank in the fleet;
/// reclaiming is idempotent, so an overlap while the fleet changes costs nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This server's rank.
    pub index: u32,
    /// How many servers share.
    pub of: u32,
}

impl Share {
    /// Every bucket (one server, or tests).
    pub const ALL: Share = Share { index: 0, of: 1 };

    /// Whether bucket `b` is this share's.
    pub fn covers(self, b: u32) -> bool {
        b % self.of.max(1) == self.index
    }
}

/// The smallest lease granted while the balance allows it, in bytes.
pub const MIN_LEASE: u64 = 64 * 1024;

/// The largest balance (unleased credits plus leases) a key may hold, in bytes:
/// 2^53 − 1, about 9 PB. Every amount up to it is exact as a Redis Lua number (a
/// double), so both stores round-trip it exactly. Creating a key with more, or a top-up
/// that would take the balance past it, fails with [`StoreError::OverMaximum`] (HTTP
/// 400); lease returns move credit between `credits` and `leased` and never exceed it.
pub const MAX_BALANCE: u64 = (1 << 53) - 1;

/// A customer API key, without its secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// Stable id (`k_…`), safe to log.
    pub id: String,
    /// Operator-chosen label.
    pub name: String,
    /// Bytes the key may still relay that no lease holds.
    pub credits: u64,
    /// Bytes currently held by outstanding leases.
    pub leased: u64,
    /// Bytes relayed customer -> target.
    pub bytes_up: u64,
    /// Bytes relayed target -> customer.
    pub bytes_down: u64,
    /// Connections relayed.
    pub connections: u64,
    /// Bytes relayed on ended leases beyond what the balance still had.
    pub overdraft: u64,
    /// Revoked keys authorize nothing.
    pub revoked: bool,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// SHA-256 of the secret.
    #[serde(skip)]
    pub hash: SecretHash,
}

impl KeyRecord {
    /// Unspent balance: unleased credits plus what leases hold.
    pub fn balance(&self) -> u64 {
        self.credits.saturating_add(self.leased)
    }
}

/// A node identity created by an invite.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeRecord {
    /// Stable id (`n_…`).
    pub id: String,
    /// Bytes this node carried (counted on the server).
    pub bytes_carried: u64,
    /// Where the runner wants to be paid: set at invite time or through the API, never
    /// by the node itself.
    pub payout_address: Option<String>,
    /// The least the runner wants paid at once, nano-USD, when above the server's
    /// threshold (which applies otherwise).
    #[serde(default)]
    pub payout_threshold_nano: Option<i64>,
    /// Revoked nodes are refused and disconnected on every server.
    #[serde(default)]
    pub revoked: bool,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    /// SHA-256 of its token.
    #[serde(skip)]
    pub hash: SecretHash,
}

/// Store failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No key or node with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend is unreachable or failed.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The balance would exceed [`MAX_BALANCE`]; nothing changed.
    #[error("balance would exceed the maximum of {MAX_BALANCE} bytes (2^53 - 1)")]
    OverMaximum,
    /// A stored value does not read back (written by something else).
    #[error("stored value unreadable: {0}")]
    Corrupt(String),
}

/// Who holds a lease and for how long it lives without renewal.
#[derive(Debug, Clone)]
pub struct LeaseTerms {
    /// The holder (`server-id/core`), recorded with the lease.
    pub owner: String,
    /// The lease is reclaimed when not renewed for this long.
    pub ttl: Duration,
    /// Append each applied checkpoint's usage, per node, to the usage log (on when a
    /// ledger takes it in; off, nothing is logged).
    pub usage_log: bool,
}

/// One node's share of one applied usage checkpoint: what the ledger takes in. Unique
/// by (owner, lease, seq, node); the log may repeat an entry, never change it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UsageEntry {
    /// The server that relayed it (the lease's owner).
    pub owner: String,
    /// The credit lease it was reported under.
    pub lease: String,
    /// The checkpoint's sequence number.
    pub seq: u64,
    /// The node that carried it.
    pub node: String,
    /// The key billed.
    pub key_id: String,
    /// When the store applied it, in minutes since the Unix epoch.
    pub minute: i64,
    /// Customer -> target bytes.
    pub up: u64,
    /// Target -> customer bytes.
    pub down: u64,
    /// Connections through the node that closed.
    pub connections: u64,
}

/// Where a reader of the usage log stands: the id of the last entry it took (`"0"`
/// before the first).
pub const USAGE_LOG_START: &str = "0";

/// One field list of a connection feature record, in stream order.
pub type FeatureFields = Vec<(String, String)>;

/// The operations the control plane needs from a store.
pub trait Store: detect::DetectStore + Send + Sync + 'static {
    /// Creates a key with `credits` bytes; returns it and its secret (shown once).
    /// Durable when it returns (the memory store has written its snapshot).
    ///
    /// # Errors
    /// [`StoreError::OverMaximum`] above [`MAX_BALANCE`], or
    /// [`StoreError::Unavailable`].
    fn create_key(
        &self,
        name: &str,
        credits: u64,
    ) -> impl Future<Output = Result<(KeyRecord, String), StoreError>> + Send;
    /// Every key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn list_keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;
    /// One key by id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn key(&self, id: &str) -> impl Future<Output = Result<KeyRecord, StoreError>> + Send;
    /// The key whose secret hashes to `hash`, compared in constant time.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn key_by_hash(
        &self,
        hash: SecretHash,
    ) -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send;
    /// Adds credits to a key and tells every server ([`KeyEvent::ToppedUp`]). Durable
    /// when it returns.
    ///
    /// # Errors
    /// [`StoreError::OverMaximum`] when the balance would pass [`MAX_BALANCE`] (nothing
    /// is added), [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn add_credits(
        &self,
        id: &str,
        bytes: u64,
    ) -> impl Future<Output = Result<KeyRecord, StoreError>> + Send;
    /// Adds credits to a key once per operation `op` (a payment's identity): a
    /// second call with the same `op` adds nothing and returns `false`. Tells every
    /// server as [`Store::add_credits`] does. Durable when it returns.
    ///
    /// # Errors
    /// As [`Store::add_credits`].
    fn add_credits_once(
        &self,
        id: &str,
        bytes: u64,
        op: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Revokes a key and tells every server ([`KeyEvent::Revoked`]). Durable when it
    /// returns.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn revoke_key(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Applies one lease request atomically: books its usage (key totals and node
    /// bytes), then grants up to `want` more (never more than the unleased balance, and
    /// at most a quarter of it above [`MIN_LEASE`]) or releases what the lease holds.
    /// A request whose `seq` was already applied changes nothing and gets the same
    /// grant again.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] (no such key) or [`StoreError::Unavailable`].
    fn lease(
        &self,
        terms: &LeaseTerms,
        request: &LeaseRequest,
    ) -> impl Future<Output = Result<LeaseAnswer, StoreError>> + Send;
    /// Usage log entries after `cursor`, oldest first, at most `max`, and the cursor
    /// after the last one returned (`cursor` itself when there are none).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn usage_since(
        &self,
        cursor: &str,
        max: usize,
    ) -> impl Future<Output = Result<(Vec<UsageEntry>, String), StoreError>> + Send;
    /// Forgets the usage log up to and including `cursor` (the ledger has it).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn usage_trim(&self, cursor: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Ends every lease of `share`'s buckets whose TTL passed, returning what it held
    /// to its key's balance. Returns the number of leases reclaimed.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn reclaim_expired(&self, share: Share)
        -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// Appends one feature record per closed connection (bounded to about `max_len`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn record_connection(
        &self,
        record: &ConnRecord,
        max_len: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The newest `count` feature records, oldest first.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn recent_connections(
        &self,
        count: usize,
    ) -> impl Future<Output = Result<Vec<FeatureFields>, StoreError>> + Send;
    /// Creates a node identity, with the runner's payout address if already known;
    /// returns it and its token (shown once). Durable when it returns.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn create_node(
        &self,
        payout_address: Option<&str>,
    ) -> impl Future<Output = Result<(NodeRecord, String), StoreError>> + Send;
    /// One node identity by id.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn node(&self, id: &str) -> impl Future<Output = Result<NodeRecord, StoreError>> + Send;
    /// Revokes a node's token and tells every server ([`KeyEvent::NodeRevoked`]), which
    /// closes its connections. Revoking twice is not an error.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn revoke_node(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The node whose token hashes to `hash` (revoked ones included: the caller
    /// refuses them).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn node_by_token_hash(
        &self,
        hash: SecretHash,
    ) -> impl Future<Output = Result<Option<NodeRecord>, StoreError>> + Send;
    /// Records where a node's runner wants to be paid.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn set_node_payout(
        &self,
        id: &str,
        address: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Sets the least a node's runner wants paid at once (`None`: the server's
    /// threshold).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn set_node_threshold(
        &self,
        id: &str,
        nano: Option<i64>,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every node identity.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn list_nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, StoreError>> + Send;
    /// The node a key's sticky session is pinned to, if the pin is alive.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn session_get(
        &self,
        key_id: &str,
        session: &str,
    ) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;
    /// Pins a session to `node_id` for `ttl`, only if the pin is absent or still points
    /// at `replacing` (compare-and-set, so concurrent servers agree on one node).
    /// Returns the node the session is pinned to afterwards.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn session_put(
        &self,
        key_id: &str,
        session: &str,
        node_id: &str,
        ttl: Duration,
        replacing: Option<&str>,
    ) -> impl Future<Output = Result<String, StoreError>> + Send;
    /// Key and node events from every server sharing this store (this one included).
    fn events(&self) -> broadcast::Receiver<KeyEvent>;
    /// Failed backend calls so far.
    fn errors(&self) -> u64 {
        0
    }
}

/// The fields of a feature record, in the order they are written.
pub fn feature_fields(r: &ConnRecord) -> FeatureFields {
    let f = |k: &str, v: String| (k.to_owned(), v);
    vec![
        f("key", r.key_id.to_string()),
        f("node", r.node_id.to_string()),
        f("frontend", r.frontend.to_owned()),
        f("port", r.target_port.to_string()),
        f("target", format!("{:016x}", r.target_id)),
        f("session", format!("{:016x}", r.session_id)),
        f("start_ms", r.started_unix_ms.to_string()),
        f("duration_ms", r.duration.as_millis().to_string()),
        f(
            "connect_ms",
            r.time_to_connect
                .map_or(String::new(), |d| d.as_millis().to_string()),
        ),
        f("bytes_up", r.bytes_up.to_string()),
        f("bytes_down", r.bytes_down.to_string()),
        f("reads_up", r.reads_up.to_string()),
        f("reads_down", r.reads_down.to_string()),
        f("gap_mean_us", r.gap_mean_us.to_string()),
        f("gap_max_us", r.gap_max_us.to_string()),
        f("gap_std_us", r.gap_std_us.to_string()),
        f("tls", u8::from(r.tls).to_string()),
        f("up_after_first", r.uploaded_after_first.to_string()),
        f("outcome", r.outcome.reason().to_owned()),
    ]
}

/// How much a lease request may be granted: `want`, capped by the unleased balance and,
/// above [`MIN_LEASE`], by a quarter of it, so that a small balance is leased in small
/// pieces and several servers share what is left.
pub fn grant_size(want: u64, credits: u64) -> u64 {
    want.min(credits).min((credits / 4).max(MIN_LEASE))
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

pub(crate) fn short_id(prefix: &str) -> String {
    let b: [u8; 8] = rand::random();
    format!("{prefix}_{}", hex::encode(b))
}
