//! The registry of nodes this server knows: the live ones (where their connection is,
//! their country and limits), what was measured about each (kept across reconnects),
//! their scores, and the [`NodeTable`] snapshot the cores route with, republished on
//! every change of membership and on every rescoring tick.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tracing::info;
use turbo_dataplane::control::{
    AttemptRecord, ConnRef, DisputeRecord, NodeRoute, NodeTable, NodeTableHandle,
};
use turbo_proto::params::CountryCode;
use turbo_proto::wire::control::Hello;

use crate::scoring::{NodeStats, Score, Weights};

/// A node with a live connection.
#[derive(Debug, Clone)]
pub struct LiveNode {
    /// Where its connection lives.
    pub conn: ConnRef,
    /// Its public address.
    pub peer: SocketAddr,
    /// The country it is routed under: GeoIP's answer, else the declared one.
    pub country: Option<CountryCode>,
    /// The country the node declared (`--country`).
    pub declared_country: Option<CountryCode>,
    /// GeoIP's country for its public address, when a database is configured.
    pub geo_country: Option<CountryCode>,
    /// Connected since, Unix seconds.
    pub connected_since: u64,
    /// Last smoothed RTT sample.
    pub rtt: Option<Duration>,
    /// Concurrent streams it accepts.
    pub max_streams: u32,
    /// Streams open on it now (counted by the cores).
    pub active: Arc<AtomicU32>,
    /// Its latest score.
    pub score: Score,
}

impl LiveNode {
    /// Whether the declared country was confirmed by GeoIP.
    pub fn country_verified(&self) -> bool {
        self.declared_country.is_some() && self.declared_country == self.geo_country
    }
}

#[derive(Default)]
struct Inner {
    live: HashMap<Arc<str>, LiveNode>,
    stats: HashMap<Arc<str>, NodeStats>,
}

/// Node registry and route publisher.
pub struct Registry {
    inner: Mutex<Inner>,
    table: NodeTableHandle,
    weights: Weights,
    geoip: Option<Arc<crate::geoip::GeoIp>>,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Registry {
    /// An empty registry publishing into `table`.
    pub fn new(
        table: NodeTableHandle,
        weights: Weights,
        geoip: Option<Arc<crate::geoip::GeoIp>>,
    ) -> Self {
        Registry {
            inner: Mutex::new(Inner::default()),
            table,
            weights,
            geoip,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut inner)
    }

    /// The snapshot cores route with.
    pub fn table(&self) -> Arc<NodeTable> {
        self.table.load_full()
    }

    /// Connected nodes, by id.
    pub fn live(&self) -> HashMap<Arc<str>, LiveNode> {
        self.with(|i| i.live.clone())
    }

    /// Number of connected nodes.
    pub fn live_count(&self) -> usize {
        self.with(|i| i.live.len())
    }

    /// Adds an admitted node. A node identity has one live connection: an older one is
    /// replaced (newest wins, as after a NAT change) and returned, for the caller to
    /// close.
    pub fn admit(
        &self,
        node_id: &Arc<str>,
        hello: &Hello,
        peer: SocketAddr,
        conn: ConnRef,
    ) -> Option<ConnRef> {
        let declared = hello
            .country
            .as_deref()
            .and_then(|c| CountryCode::parse(c).ok());
        let geo = self.geoip.as_ref().and_then(|g| g.country(peer.ip()));
        let country = geo.or(declared);
        let now = Instant::now();
        let replaced = self.with(|i| {
            let stats = i
                .stats
                .entry(node_id.clone())
                .or_insert_with(|| NodeStats::new(now));
            stats.connected(now);
            let score = stats.score(now, self.weights);
            i.live
                .insert(
                    node_id.clone(),
                    LiveNode {
                        conn,
                        peer,
                        country,
                        declared_country: declared,
                        geo_country: geo,
                        connected_since: unix_now(),
                        rtt: None,
                        max_streams: hello.max_streams.max(1),
                        active: Arc::default(),
                        score,
                    },
                )
                .map(|old| old.conn)
                .filter(|old| *old != conn)
        });
        info!(node = %node_id, %peer, ?declared, ?geo, replaced = ?replaced, "node connected");
        self.publish();
        replaced
    }

    /// Removes a node whose connection `conn` closed; returns whether it was live
    /// there (a node may have reconnected on another connection meanwhile).
    pub fn gone(&self, node_id: &Arc<str>, conn: ConnRef) -> bool {
        let removed = self.with(|i| {
            if i.live.get(node_id).is_some_and(|n| n.conn == conn) {
                i.live.remove(node_id);
                if let Some(s) = i.stats.get_mut(node_id) {
                    s.disconnected(Instant::now());
                }
                true
            } else {
                false
            }
        });
        if removed {
            info!(node = %node_id, "node disconnected");
            self.publish();
        }
        removed
    }

    /// A smoothed-RTT sample of a node's connection.
    pub fn rtt(&self, node_id: &Arc<str>, rtt: Duration) {
        self.with(|i| {
            if let Some(n) = i.live.get_mut(node_id) {
                n.rtt = Some(rtt);
            }
            if let Some(s) = i.stats.get_mut(node_id) {
                s.record_rtt(rtt);
            }
        });
    }

    /// The outcome of one relay attempt.
    pub fn attempt(&self, rec: &AttemptRecord) {
        self.with(|i| {
            if let Some(s) = i.stats.get_mut(&rec.node_id) {
                s.record_attempt(rec.status, rec.time_to_reply);
            }
        });
    }

    /// A target failure of `rec.node_id` that another node did not reproduce.
    pub fn disputed(&self, rec: &DisputeRecord) {
        tracing::debug!(node = %rec.node_id, by = %rec.disputed_by, status = rec.status.reason(), "target failure disputed");
        self.with(|i| {
            if let Some(s) = i.stats.get_mut(&rec.node_id) {
                s.record_disputed();
            }
        });
    }

    /// Recomputes every live node's score and republishes the table.
    pub fn rescore(&self) {
        self.publish();
    }

    /// Bytes a closed connection moved through `node_id` (this server's count).
    pub fn carried(&self, node_id: &str, bytes: u64) {
        self.with(|i| {
            if let Some(s) = i.stats.get_mut(node_id) {
                s.bytes_carried += bytes;
            }
        });
    }

    /// Bytes this server relayed through `node_id` since it started.
    pub fn bytes_carried(&self, node_id: &str) -> u64 {
        self.with(|i| i.stats.get(node_id).map_or(0, |s| s.bytes_carried))
    }

    /// Attempts a node passed, failed, and of those failed, disputed target failures.
    pub fn attempts(&self, node_id: &str) -> (u64, u64, u64) {
        self.with(|i| {
            i.stats.get(node_id).map_or((0, 0, 0), |s| {
                (s.attempts_ok, s.attempts_failed, s.attempts_disputed)
            })
        })
    }

    fn publish(&self) {
        let now = Instant::now();
        let routes = self.with(|i| {
            let Inner { live, stats } = i;
            live.iter_mut()
                .map(|(id, n)| {
                    if let Some(s) = stats.get_mut(id) {
                        n.score = s.score(now, self.weights);
                    }
                    NodeRoute {
                        node_id: id.clone(),
                        country: n.country,
                        conn: n.conn,
                        weight: n.score.weight,
                        score: n.score.total,
                        max_streams: n.max_streams,
                        active: n.active.clone(),
                    }
                })
                .collect::<Vec<_>>()
        });
        self.table.store(Arc::new(NodeTable::new(routes)));
    }
}
