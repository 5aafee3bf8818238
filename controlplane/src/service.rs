//! The control plane's answer to the data plane: authorizes customers, runs credit
//! leases against the store, admits nodes and keeps the registry of connected nodes,
//! publishes the [`NodeTable`] snapshot the cores route with, relays key events to the
//! cores, reclaims expired leases, and writes one feature record per closed connection.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tracing::{debug, info, warn};
use turbo_dataplane::control::{
    AuthDenied, ConnRecord, ConnRef, ControlReceiver, KeyEvent, LeaseAnswer, LeaseError,
    LeaseRequest, NoRoute, NodeAdmission, NodeTableHandle, SessionRoute, ToControl,
};
use turbo_dataplane::known_keys::{self, KnownKeys};
use turbo_proto::params::CountryCode;
use turbo_proto::wire::control::{Hello, RejectCode};

use crate::geoip::GeoIp;
use crate::live::LiveBus;
use crate::metrics::Metrics;
use crate::netlimit::NetworkLimit;
pub use crate::registry::LiveNode;
use crate::registry::Registry;
use crate::scoring::Weights;
use crate::secrets;
use crate::store::{LeaseTerms, Store, StoreError};

/// Control-plane settings that are not the data plane's.
#[derive(Clone)]
pub struct ControlSettings {
    /// Lease owner (server id) and TTL.
    pub lease: LeaseTerms,
    /// Approximate cap on the feature-record stream.
    pub stream_max_len: u64,
    /// Score weights.
    pub weights: Weights,
    /// GeoIP database for node countries.
    pub geoip: Option<Arc<GeoIp>>,
    /// Tags of the existing keys, shared with the data plane's lockout check; kept
    /// here from the store and its key events.
    pub known_keys: KnownKeys,
    /// Nodes admitted per network.
    pub network_limit: NetworkLimit,
}

impl Default for ControlSettings {
    fn default() -> Self {
        ControlSettings {
            lease: LeaseTerms {
                owner: "local".into(),
                ttl: Duration::from_secs(30),
                usage_log: false,
            },
            stream_max_len: 1_000_000,
            weights: Weights::default(),
            geoip: None,
            known_keys: KnownKeys::default(),
            network_limit: NetworkLimit {
                per_network: 1,
                strict: false,
            },
        }
    }
}

/// Shared control-plane state.
pub struct ControlPlane<S> {
    /// The store.
    pub store: Arc<S>,
    /// The node registry.
    pub registry: Registry,
    key_events: broadcast::Sender<KeyEvent>,
    settings: ControlSettings,
    metrics: std::sync::OnceLock<Arc<Metrics>>,
    /// Where nodes claim their network ([`crate::netlimit`]); none: no limit.
    live: std::sync::OnceLock<Arc<LiveBus>>,
    /// Keys whose lease moved since [`ControlPlane::take_touched_keys`] last ran.
    touched: std::sync::Mutex<HashSet<Arc<str>>>,
    /// What this server's abuse detector has done.
    pub detect: Arc<crate::detect::Status>,
    /// The expired-lease buckets this server reclaims (index << 32 | of), set from
    /// the fleet; every bucket until then.
    reclaim_share: std::sync::atomic::AtomicU64,
}

impl<S: Store> ControlPlane<S> {
    /// A control plane over `store`, publishing routes into `table` and key events
    /// into `key_events`.
    pub fn new(
        store: Arc<S>,
        table: NodeTableHandle,
        key_events: broadcast::Sender<KeyEvent>,
        settings: ControlSettings,
    ) -> Self {
        ControlPlane {
            store,
            registry: Registry::new(table, settings.weights, settings.geoip.clone()),
            key_events,
            settings,
            metrics: std::sync::OnceLock::new(),
            touched: std::sync::Mutex::default(),
            live: std::sync::OnceLock::new(),
            detect: Arc::default(),
            reclaim_share: std::sync::atomic::AtomicU64::new(1),
        }
    }

    /// Sets the expired-lease buckets this server reclaims (its rank in the fleet).
    pub fn set_reclaim_share(&self, share: crate::store::Share) {
        let packed = (u64::from(share.index) << 32) | u64::from(share.of.max(1));
        self.reclaim_share
            .store(packed, std::sync::atomic::Ordering::Relaxed);
    }

    /// The expired-lease buckets this server reclaims.
    pub fn reclaim_share(&self) -> crate::store::Share {
        let packed = self
            .reclaim_share
            .load(std::sync::atomic::Ordering::Relaxed);
        crate::store::Share {
            index: (packed >> 32) as u32,
            of: packed as u32,
        }
    }

    /// Attaches the metrics (once the data plane, which they also read, is running).
    pub fn set_metrics(&self, metrics: Arc<Metrics>) {
        let _ = self.metrics.set(metrics);
    }

    /// The metrics, if attached.
    pub fn metrics(&self) -> Option<&Arc<Metrics>> {
        self.metrics.get()
    }

    /// Attaches the live bus nodes claim their network on.
    pub fn set_live(&self, live: Arc<LiveBus>) {
        let _ = self.live.set(live);
    }

    /// Claims (or refreshes) `node`'s place on `peer`'s network; whether it may stay.
    pub async fn claim_network(
        &self,
        node: &str,
        peer: std::net::IpAddr,
    ) -> Result<bool, StoreError> {
        let Some(live) = self.live.get() else {
            return Ok(true);
        };
        let now_ms = crate::store::now_unix() * 1000;
        self.settings
            .network_limit
            .claim(live, peer, node, now_ms)
            .await
    }

    /// The GeoIP database, when configured.
    pub fn geoip(&self) -> Option<&Arc<GeoIp>> {
        self.settings.geoip.as_ref()
    }

    /// Connected nodes, by id.
    pub fn live_nodes(&self) -> HashMap<Arc<str>, LiveNode> {
        self.registry.live()
    }

    /// The keys whose usage or lease moved since the last call (for live pages).
    pub fn take_touched_keys(&self) -> Vec<String> {
        let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
        touched.drain().map(|k| k.to_string()).collect()
    }

    /// Number of connected nodes.
    pub fn live_count(&self) -> usize {
        self.registry.live_count()
    }

    /// Serves data-plane requests until every sender is gone. Store-bound requests run
    /// concurrently; node registry updates are applied in order.
    pub async fn serve(self: Arc<Self>, mut rx: ControlReceiver) {
        while let Some(msg) = rx.recv().await {
            match msg {
                ToControl::Authorize {
                    key_hash, reply, ..
                } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(me.authorize(key_hash).await);
                    });
                }
                ToControl::Lease { request, reply } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let _ = reply.send(me.lease(&request).await);
                    });
                }
                ToControl::ConnClosed(record) => {
                    let me = self.clone();
                    tokio::spawn(async move { me.record(record).await });
                }
                ToControl::Session {
                    key_id,
                    session,
                    ttl,
                    country,
                    exclude,
                    reply,
                } => {
                    let me = self.clone();
                    tokio::spawn(async move {
                        let answer = me.session(&key_id, &session, ttl, country, &exclude).await;
                        let _ = reply.send(answer);
                    });
                }
                other => self.handle(other).await,
            }
        }
    }

    /// Forwards the store's key events (from every server) to this server's cores.
    /// Also keeps the known-key tags: loaded once subscribed (so no creation is
    /// missed), extended by [`KeyEvent::Created`], reloaded after a resync.
    pub async fn forward_key_events(self: Arc<Self>) {
        let mut rx = self.store.events();
        self.reload_known_keys().await;
        loop {
            let ev = match rx.recv().await {
                Ok(ev) => ev,
                Err(broadcast::error::RecvError::Lagged(_)) => KeyEvent::Resync,
                Err(broadcast::error::RecvError::Closed) => return,
            };
            debug!(event = ?ev, "key event");
            match &ev {
                KeyEvent::Created(tag) => self.settings.known_keys.insert(*tag),
                KeyEvent::Resync => self.reload_known_keys().await,
                KeyEvent::Revoked(_)
                | KeyEvent::ToppedUp(_)
                | KeyEvent::NodeRevoked(_)
                | KeyEvent::NodeReplaced { .. }
                | KeyEvent::Policy { .. } => {}
            }
            let _ = self.key_events.send(ev);
        }
    }

    /// Adds a key created through this server's API to the known-key tags at once, so
    /// it is never mistaken for a guess here, even before its creation event arrives.
    pub fn key_created(&self, hash: &secrets::SecretHash) {
        self.settings.known_keys.insert(known_keys::tag(hash));
    }

    /// Replaces the known-key tags with every key in the store (kept as they are when
    /// the store cannot list them).
    async fn reload_known_keys(&self) {
        match self.store.list_keys().await {
            Ok(keys) => {
                let tags = keys.iter().map(|k| known_keys::tag(&k.hash));
                self.settings.known_keys.replace(tags);
                debug!(keys = keys.len(), "known-key tags loaded");
            }
            Err(e) => warn!(error = %e, "could not load the known keys"),
        }
    }

    /// Rescores nodes and republishes the route table every `every`.
    pub async fn rescore_nodes(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            self.registry.rescore();
        }
    }

    /// Reclaims expired leases (of any server sharing the store) every `every`.
    pub async fn reclaim_leases(self: Arc<Self>, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match self.store.reclaim_expired(self.reclaim_share()).await {
                Ok(0) => {}
                Ok(n) => {
                    info!(leases = n, "reclaimed expired leases");
                    if let Some(m) = self.metrics() {
                        m.leases_reclaimed.inc_by(n);
                    }
                }
                Err(e) => debug!(error = %e, "lease reclaim failed"),
            }
        }
    }

    async fn handle(&self, msg: ToControl) {
        match msg {
            ToControl::NodeHello {
                hello,
                peer,
                conn,
                reply,
            } => {
                let _ = reply.send(self.admit(hello, peer, conn).await);
            }
            ToControl::NodeGone { node_id, conn } => {
                let peer = self.registry.peer(&node_id);
                // Released here, in order with admissions: a release run later could
                // drop the claim of the node's next connection.
                if self.registry.gone(&node_id, conn) && self.registry.peer(&node_id).is_none() {
                    if let (Some(live), Some(peer)) = (self.live.get(), peer) {
                        let limit = self.settings.network_limit;
                        let me = &self.settings.lease.owner;
                        limit.release(live, peer.ip(), &node_id, me).await;
                    }
                }
            }
            ToControl::NodeRtt { node_id, rtt } => self.registry.rtt(&node_id, rtt),
            ToControl::Attempt(rec) => self.registry.attempt(&rec),
            ToControl::Disputed(rec) => self.registry.disputed(&rec),
            ToControl::Authorize { .. }
            | ToControl::Lease { .. }
            | ToControl::ConnClosed(_)
            | ToControl::Session { .. } => {}
        }
    }

    /// Which key hashes to `key_hash`: unknown and revoked keys are refused alike.
    async fn authorize(&self, key_hash: [u8; 32]) -> Result<Arc<str>, AuthDenied> {
        let key = self
            .store
            .key_by_hash(key_hash)
            .await
            .map_err(|_| AuthDenied::Unavailable)?
            .filter(|k| !k.revoked && secrets::same(&k.hash, &key_hash))
            .ok_or(AuthDenied::BadKey)?;
        // Heals a missed creation event.
        self.settings.known_keys.insert(known_keys::tag(&key_hash));
        Ok(key.id.into())
    }

    async fn lease(&self, request: &LeaseRequest) -> Result<LeaseAnswer, LeaseError> {
        let result = self.store.lease(&self.settings.lease, request).await;
        let metrics = self.metrics();
        match result {
            Ok(answer) => {
                if answer.granted > 0 || request.usage.bytes() > 0 {
                    let mut touched = self.touched.lock().unwrap_or_else(|p| p.into_inner());
                    touched.insert(request.key_id.clone());
                }
                if let (Some(m), true) = (metrics, answer.granted > 0) {
                    m.lease_grants.inc();
                    m.lease_granted_bytes.inc_by(answer.granted);
                }
                debug!(key = %request.key_id, lease = %request.lease_id, seq = request.seq, granted = answer.granted, used = request.usage.bytes(), release = request.release, "lease");
                Ok(answer)
            }
            Err(e) => {
                if let Some(m) = metrics {
                    m.lease_failures.inc();
                }
                warn!(key = %request.key_id, error = %e, "lease request failed");
                Err(match e {
                    StoreError::NotFound(_) => LeaseError::UnknownKey,
                    StoreError::Unavailable(_)
                    | StoreError::OverMaximum
                    | StoreError::Corrupt(_) => LeaseError::Unavailable,
                })
            }
        }
    }

    /// The node serving a sticky session: the pinned one while it is live, in the
    /// requested country and not excluded; else a new pick, pinned in the store with
    /// compare-and-set so that every server agrees, and reported as a move. With the
    /// store down, the request is served unpinned rather than refused.
    async fn session(
        &self,
        key_id: &str,
        session: &str,
        ttl: Duration,
        country: Option<CountryCode>,
        exclude: &[Arc<str>],
    ) -> Result<SessionRoute, NoRoute> {
        let table = self.registry.table();
        let usable = |node: &str| {
            table.get(node).is_some_and(|r| {
                (country.is_none() || r.country == country) && !exclude.iter().any(|e| &**e == node)
            })
        };
        let pinned = match self.store.session_get(key_id, session).await {
            Ok(p) => p,
            Err(e) => {
                warn!(error = %e, "session store unavailable; serving unpinned");
                let r = table.choose(country, rand::random(), exclude)?;
                return Ok(SessionRoute {
                    node_id: r.node_id.clone(),
                    moved: false,
                });
            }
        };
        if let Some(node) = &pinned {
            if usable(node) {
                return Ok(SessionRoute {
                    node_id: node.as_str().into(),
                    moved: false,
                });
            }
        }
        let pick = table
            .choose(country, rand::random(), exclude)?
            .node_id
            .clone();
        let winner = self
            .store
            .session_put(key_id, session, &pick, ttl, pinned.as_deref())
            .await
            .unwrap_or_else(|_| pick.to_string());
        let node_id: Arc<str> = if usable(&winner) { winner.into() } else { pick };
        let moved = pinned.is_some();
        if moved {
            info!(key = key_id, session, from = ?pinned, to = %node_id, "sticky session moved");
            if let Some(m) = self.metrics() {
                m.session_moves.inc();
            }
        }
        Ok(SessionRoute { node_id, moved })
    }

    async fn record(&self, record: ConnRecord) {
        self.registry
            .carried(&record.node_id, record.bytes_up + record.bytes_down);
        if let Some(why) = self.registry.note_connection(&record) {
            tracing::warn!(node = %record.node_id, why, "traffic integrity: node demoted");
        }
        if let Some(m) = self.metrics() {
            m.connection_closed(&record);
        }
        if let Err(e) = self
            .store
            .record_connection(&record, self.settings.stream_max_len)
            .await
        {
            if let Some(m) = self.metrics() {
                m.records_dropped.inc();
            }
            debug!(error = %e, "feature record dropped");
        }
    }

    async fn admit(
        &self,
        hello: Hello,
        peer: SocketAddr,
        conn: ConnRef,
    ) -> Result<NodeAdmission, RejectCode> {
        let node = self
            .store
            .node_by_token_hash(secrets::hash(&hello.token))
            .await
            .map_err(|_| RejectCode::Unavailable)?
            .ok_or_else(|| {
                warn!(%peer, "node presented an unknown token");
                RejectCode::BadToken
            })?;
        if node.revoked {
            warn!(%peer, node = %node.id, "node presented a revoked token");
            return Err(RejectCode::BadToken);
        }
        if hello.payout_address.is_some() && hello.payout_address != node.payout_address {
            // Only the operator sets it (invite, API): a hello never does.
            info!(node = %node.id, "payout address in the hello ignored");
        }
        if !self
            .claim_network(&node.id, peer.ip())
            .await
            .map_err(|_| RejectCode::Unavailable)?
        {
            return Err(RejectCode::NetworkTaken);
        }
        let node_id: Arc<str> = node.id.into();
        let replaced = self
            .registry
            .admit(&node_id, &hello, peer, conn)
            .map_err(|e| {
                info!(node = %node_id, lane = ?hello.lane, "{e}: refused until lane 0 holds the node");
                RejectCode::Unavailable
            })?;
        for old in replaced {
            info!(node = %node_id, ?old, new = ?conn, "newer connection replaces the node's old one");
            let _ = self.key_events.send(KeyEvent::NodeReplaced {
                node_id: node_id.clone(),
                conn: old,
            });
        }
        Ok(NodeAdmission { node_id })
    }
}

#[cfg(test)]
#[path = "service_tests.rs"]
mod tests;
