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

/// A node with at least one live connection.
#[derive(Debug, Clone)]
pub struct LiveNode {
    /// The run of the node daemon its lanes belong to (0 for a node without lanes).
    pub session: u64,
    /// Its connections by lane index: one per server core for a node that opens lanes.
    pub lanes: Vec<(u8, ConnRef)>,
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
    /// What it earned, as the ledger reports it (shared with its routes).
    pub earnings: Arc<turbo_dataplane::routes::NodeEarnings>,
    /// Its latest score.
    pub score: Score,
}

impl LiveNode {
    /// Adds (or replaces) the connection of lane `lane`; returns the one it replaced.
    fn join_lane(&mut self, lane: u8, conn: ConnRef) -> Vec<ConnRef> {
        let replaced = match self.lanes.iter_mut().find(|(l, _)| *l == lane) {
            Some((_, old)) => Some(std::mem::replace(old, conn)).filter(|o| *o != conn),
            None => {
                self.lanes.push((lane, conn));
                None
            }
        };
        replaced.into_iter().collect()
    }

    /// Whether the declared country was confirmed by GeoIP.
    pub fn country_verified(&self) -> bool {
        self.declared_country.is_some() && self.declared_country == self.geo_country
    }
}

/// A lane that may not join: its session does not hold the node (yet), and only lane
/// 0 takes a node over.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a lane of a session that does not hold the node")]
pub struct LaneRefused;

#[derive(Default)]
struct Inner {
    live: HashMap<Arc<str>, LiveNode>,
    stats: HashMap<Arc<str>, NodeStats>,
    /// Nodes caught cheating (canaries): kept connected, never picked.
    demoted: std::collections::HashSet<Arc<str>>,
    /// Why nodes' earnings are held, as the ledger says; told to those connected.
    holds: HashMap<Arc<str>, Arc<str>>,
    /// Traffic integrity tallies ([`crate::integrity`]).
    integrity: crate::integrity::Integrity,
    /// Suspects found by the integrity signals, not yet held in the ledger.
    unheld_suspects: Vec<(String, String)>,
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

    /// Adds an admitted connection of a node and returns the connections it replaces,
    /// for the caller to close. Another lane of the node's current session joins it
    /// (replacing only an older connection of the same lane, as after a NAT change);
    /// lane 0 or a hello without lanes, from another session, takes the node over and
    /// replaces every connection it had (newest wins).
    ///
    /// # Errors
    /// [`LaneRefused`] for lane 1 and up of a session that is not the node's current
    /// one: only lane 0 takes a node over, so the late lane of a replaced daemon can
    /// never evict the daemon that replaced it.
    pub fn admit(
        &self,
        node_id: &Arc<str>,
        hello: &Hello,
        peer: SocketAddr,
        conn: ConnRef,
    ) -> Result<Vec<ConnRef>, LaneRefused> {
        let declared = hello
            .country
            .as_deref()
            .and_then(|c| CountryCode::parse(c).ok());
        let geo = self.geoip.as_ref().and_then(|g| g.country(peer.ip()));
        let (session, lane) = hello.lane.map_or((0, 0), |l| (l.session, l.index));
        let now = Instant::now();
        let replaced = self.with(|i| {
            let live = i.live.get_mut(node_id);
            let current = live.as_ref().is_some_and(|l| l.session == session);
            match live {
                Some(live) if hello.lane.is_some() && current => {
                    live.peer = peer;
                    return Ok(live.join_lane(lane, conn));
                }
                _ if lane > 0 => return Err(LaneRefused),
                _ => {}
            }
            let stats = i
                .stats
                .entry(node_id.clone())
                .or_insert_with(|| NodeStats::new(now));
            stats.connected(now);
            let score = stats.score(now, self.weights);
            let fresh = LiveNode {
                session,
                lanes: vec![(lane, conn)],
                peer,
                country: geo.or(declared),
                declared_country: declared,
                geo_country: geo,
                connected_since: unix_now(),
                rtt: None,
                max_streams: hello.max_streams.max(1),
                active: Arc::default(),
                earnings: Arc::default(),
                score,
            };
            Ok(i.live
                .insert(node_id.clone(), fresh)
                .map(|old| old.lanes.into_iter().map(|(_, c)| c).collect())
                .unwrap_or_default())
        })?;
        info!(node = %node_id, %peer, lane, ?declared, ?geo, replaced = ?replaced, "node connected");
        self.publish();
        Ok(replaced)
    }

    /// Stops routing customers to `node_id` (it failed a canary): it stays connected
    /// but leaves the route table. Returns whether it was not demoted yet.
    pub fn demote(&self, node_id: &str) -> bool {
        let fresh = self.with(|i| i.demoted.insert(node_id.into()));
        self.publish();
        fresh
    }

    /// Records why `node_id`'s earnings are held (`None`: they are not), so that it
    /// is told; republishes only on a change.
    pub fn set_hold(&self, node_id: &str, reason: Option<&str>) {
        let changed = self.with(|i| match reason {
            Some(r) if i.holds.get(node_id).map(|h| &**h) != Some(r) => {
                i.holds.insert(node_id.into(), r.into());
                true
            }
            Some(_) => false,
            None => i.holds.remove(node_id).is_some(),
        });
        if changed {
            self.publish();
        }
    }

    /// Replaces every hold with `holds` (node id to reason), as the ledger lists them,
    /// keeping those of suspects not yet held there.
    pub fn set_holds(&self, holds: HashMap<String, String>) {
        let changed = self.with(|i| {
            let mut next: HashMap<Arc<str>, Arc<str>> = holds
                .into_iter()
                .map(|(n, r)| (n.into(), r.into()))
                .collect();
            for (node, why) in &i.unheld_suspects {
                next.entry(node.as_str().into())
                    .or_insert_with(|| why.as_str().into());
            }
            let changed = next != i.holds;
            i.holds = next;
            changed
        });
        if changed {
            self.publish();
        }
    }

    /// Counts a closed connection in its node's integrity signals; a node that
    /// becomes a suspect is demoted at once, told why, and queued for a ledger hold
    /// ([`Registry::take_suspects`]). Returns the reason, then.
    pub fn note_connection(&self, record: &turbo_dataplane::control::ConnRecord) -> Option<String> {
        let why = self.with(|i| {
            let why = i.integrity.note(record)?;
            let node = record.node_id.to_string();
            i.unheld_suspects.push((node, why.clone()));
            Some(why)
        })?;
        self.demote(&record.node_id);
        self.set_hold(&record.node_id, Some(&why));
        Some(why)
    }

    /// The suspects found since the last call, with their reasons, to hold.
    pub fn take_suspects(&self) -> Vec<(String, String)> {
        self.with(|i| std::mem::take(&mut i.unheld_suspects))
    }

    /// Puts back a suspect whose ledger hold failed, to be tried again.
    pub fn hold_later(&self, node: String, why: String) {
        self.with(|i| i.unheld_suspects.push((node, why)));
    }

    /// Whether `node_id` was demoted.
    pub fn is_demoted(&self, node_id: &str) -> bool {
        self.with(|i| i.demoted.contains(node_id))
    }

    /// The address a live node connects from.
    pub fn peer(&self, node_id: &str) -> Option<SocketAddr> {
        self.with(|i| i.live.get(node_id).map(|l| l.peer))
    }

    /// Removes a connection of a node that closed, and the node once its last lane is
    /// gone; returns whether the connection was live (it may have been replaced).
    pub fn gone(&self, node_id: &Arc<str>, conn: ConnRef) -> bool {
        let (removed, last) = self.with(|i| {
            let Some(live) = i.live.get_mut(node_id) else {
                return (false, false);
            };
            let before = live.lanes.len();
            live.lanes.retain(|(_, c)| *c != conn);
            let removed = live.lanes.len() < before;
            let last = live.lanes.is_empty();
            if last {
                i.live.remove(node_id);
                if let Some(s) = i.stats.get_mut(node_id) {
                    s.disconnected(Instant::now());
                }
            }
            (removed, last)
        });
        if last {
            info!(node = %node_id, "node disconnected");
        }
        if removed {
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
        let (routes, holds) = self.with(|i| {
            let Inner {
                live,
                stats,
                demoted,
                holds,
                integrity,
                ..
            } = i;
            let held = holds
                .iter()
                .filter(|(id, _)| live.contains_key(*id))
                .map(|(id, why)| (id.clone(), why.clone()))
                .collect::<HashMap<_, _>>();
            let routes = live
                .iter_mut()
                .filter(|(id, _)| !demoted.contains(*id))
                .map(|(id, n)| {
                    if let Some(s) = stats.get_mut(id) {
                        n.score = s.score(now, self.weights);
                    }
                    let mut conns: Vec<ConnRef> = n.lanes.iter().map(|(_, c)| *c).collect();
                    conns.sort_by_key(|c| (c.core, c.serial));
                    NodeRoute {
                        node_id: id.clone(),
                        country: n.country,
                        conns: conns.into(),
                        weight: n.score.weight * integrity.weight_factor(id),
                        score: n.score.total,
                        max_streams: n.max_streams,
                        active: n.active.clone(),
                        earnings: n.earnings.clone(),
                    }
                })
                .collect::<Vec<_>>();
            (routes, held)
        });
        self.table
            .store(Arc::new(NodeTable::new(routes).with_holds(holds)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use turbo_proto::wire::control::Lane;

    fn hello(lane: Option<(u64, u8)>) -> Hello {
        Hello {
            version: 1,
            token: "t".into(),
            agent: "test".into(),
            country: None,
            payout_address: None,
            max_streams: 8,
            lane: lane.map(|(session, index)| Lane { session, index }),
        }
    }

    fn conn(core: usize, serial: u64) -> ConnRef {
        ConnRef { core, serial }
    }

    fn route_conns(r: &Registry, id: &str) -> Vec<ConnRef> {
        r.table()
            .get(id)
            .map(|n| n.conns.to_vec())
            .unwrap_or_default()
    }

    #[test]
    fn lanes_of_one_session_are_one_node() {
        let r = Registry::new(NodeTableHandle::default(), Weights::default(), None);
        let id: Arc<str> = "n1".into();
        let peer: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        assert_eq!(
            r.admit(&id, &hello(Some((7, 1))), peer, conn(1, 1)),
            Err(LaneRefused),
            "lane 1 waits for lane 0"
        );
        assert_eq!(
            r.admit(&id, &hello(Some((7, 0))), peer, conn(0, 1)),
            Ok(vec![])
        );
        assert_eq!(
            r.admit(&id, &hello(Some((7, 1))), peer, conn(1, 1)),
            Ok(vec![])
        );
        assert_eq!(route_conns(&r, "n1"), [conn(0, 1), conn(1, 1)]);
        assert_eq!(r.table().routes().len(), 1, "one node, two lanes");
        // A NAT change: lane 1 reconnects and replaces only its own old connection.
        let replaced = r.admit(&id, &hello(Some((7, 1))), peer, conn(1, 2));
        assert_eq!(replaced, Ok(vec![conn(1, 1)]));
        assert_eq!(route_conns(&r, "n1"), [conn(0, 1), conn(1, 2)]);
        // The replaced connection closing later changes nothing.
        assert!(!r.gone(&id, conn(1, 1)));
        assert!(r.gone(&id, conn(0, 1)));
        assert_eq!(route_conns(&r, "n1"), [conn(1, 2)]);
        assert!(r.gone(&id, conn(1, 2)));
        assert_eq!(r.live_count(), 0);
    }

    #[test]
    fn another_session_or_a_node_without_lanes_takes_over() {
        let r = Registry::new(NodeTableHandle::default(), Weights::default(), None);
        let id: Arc<str> = "n1".into();
        let peer: SocketAddr = "192.0.2.1:4000".parse().expect("addr");
        let admit = |lane, c| r.admit(&id, &hello(lane), peer, c).expect("admitted");
        admit(Some((7, 0)), conn(0, 1));
        admit(Some((7, 1)), conn(1, 1));
        // A second daemon's lane 1 may not evict the first; its lane 0 takes over.
        assert_eq!(
            r.admit(&id, &hello(Some((8, 1))), peer, conn(1, 5)),
            Err(LaneRefused)
        );
        let mut replaced = admit(Some((8, 0)), conn(0, 5));
        replaced.sort_by_key(|c| c.core);
        assert_eq!(replaced, [conn(0, 1), conn(1, 1)]);
        assert_eq!(route_conns(&r, "n1"), [conn(0, 5)]);
        // The replaced daemon's late lane 1 is refused too.
        assert_eq!(
            r.admit(&id, &hello(Some((7, 1))), peer, conn(1, 6)),
            Err(LaneRefused)
        );
        // Without lanes, a second hello always replaces (as before lanes existed).
        assert_eq!(admit(None, conn(0, 9)), [conn(0, 5)]);
        assert_eq!(admit(None, conn(1, 9)), [conn(0, 9)]);
        assert_eq!(route_conns(&r, "n1"), [conn(1, 9)]);
    }
}
