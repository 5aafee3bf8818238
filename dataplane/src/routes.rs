//! The node table cores route with: an immutable snapshot published by the control
//! plane whenever nodes or their scores change, read by cores without locks.
//!
//! Selection is weighted random by score, within the requested country or over every
//! node: a prefix sum of weights per country and a binary search, O(log n) per pick.
//! A node at its stream limit, or one already tried for this request, is skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;
use turbo_proto::params::CountryCode;

/// Identifies one node QUIC connection on one core: `(core, connection serial)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnRef {
    /// Index of the core that owns the connection.
    pub core: usize,
    /// Serial number of the connection on that core.
    pub serial: u64,
}

/// Smallest weight a node keeps, so that a node with a poor score still gets the odd
/// request and can recover.
pub const MIN_WEIGHT: f64 = 0.01;
/// Random picks tried before falling back to a scan.
const PICK_TRIES: usize = 8;

/// One selectable node connection.
#[derive(Debug, Clone)]
pub struct NodeRoute {
    /// The node's id.
    pub node_id: Arc<str>,
    /// The node's country, if known.
    pub country: Option<CountryCode>,
    /// Its QUIC connections (one per lane, see [`turbo_proto::wire::control::Lane`]),
    /// sorted by core.
    pub conns: Arc<[ConnRef]>,
    /// Selection weight.
    pub weight: f64,
    /// The node's score S, as reported to it.
    pub score: f64,
    /// Concurrent streams the node accepts.
    pub max_streams: u32,
    /// Streams open now, counted by the cores (shared across snapshots).
    pub active: Arc<AtomicU32>,
    /// What the node earned, written by the control plane's ledger feeder and sent to
    /// the node with its score.
    pub earnings: Arc<NodeEarnings>,
}

/// A node's earnings as the ledger reports them, in nano-USD; `known` once reported.
#[derive(Debug, Default)]
pub struct NodeEarnings {
    /// Today (UTC) so far.
    pub today_nano: std::sync::atomic::AtomicU64,
    /// This month (UTC), today included.
    pub month_nano: std::sync::atomic::AtomicU64,
    /// Set once the ledger has reported.
    pub known: std::sync::atomic::AtomicBool,
}

impl NodeRoute {
    /// Whether the node can take another stream.
    pub fn has_capacity(&self) -> bool {
        self.active.load(Relaxed) < self.max_streams
    }

    /// The connection a customer accepted on `core` is relayed over: the node's lane on
    /// that core, so the customer stays where it was accepted, else its first one.
    /// `None` only for a route without connections.
    pub fn conn_for(&self, core: usize) -> Option<ConnRef> {
        self.conns
            .iter()
            .find(|c| c.core == core)
            .or_else(|| self.conns.first())
            .copied()
    }
}

/// Prefix sums of weights over a subset of routes.
#[derive(Debug, Clone, Default)]
struct Weighted {
    indices: Vec<u32>,
    cumulative: Vec<f64>,
}

impl Weighted {
    fn push(&mut self, index: usize, weight: f64) {
        let total = self.total();
        self.indices.push(index as u32);
        self.cumulative.push(total + weight.max(MIN_WEIGHT));
    }

    fn total(&self) -> f64 {
        self.cumulative.last().copied().unwrap_or(0.0)
    }

    /// The route index that `pick` (uniform over u64) lands on.
    fn pick(&self, pick: u64) -> Option<usize> {
        if self.indices.is_empty() {
            return None;
        }
        let unit = (pick >> 11) as f64 / (1u64 << 53) as f64;
        let x = unit * self.total();
        let at = self.cumulative.partition_point(|c| *c <= x);
        let at = at.min(self.indices.len() - 1);
        Some(self.indices[at] as usize)
    }
}

/// Why no node could be chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoRoute {
    /// No node is connected at all.
    NoNodes,
    /// No node in the requested country.
    CountryUnavailable,
    /// Nodes exist, but every one is full or was already tried.
    AllBusy,
    /// Eligible nodes have room, but the key holds its share of each
    /// ([`crate::fairshare`]).
    KeyShare,
}

/// An immutable snapshot of the selectable nodes.
#[derive(Debug, Clone, Default)]
pub struct NodeTable {
    routes: Vec<NodeRoute>,
    all: Weighted,
    by_country: HashMap<CountryCode, Weighted>,
    /// Why connected nodes' earnings are held (demoted ones too, which have no route).
    holds: HashMap<Arc<str>, Arc<str>>,
}

impl NodeTable {
    /// Builds a table (and its selection indices) from `routes`.
    pub fn new(mut routes: Vec<NodeRoute>) -> Self {
        routes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let mut all = Weighted::default();
        let mut by_country: HashMap<CountryCode, Weighted> = HashMap::new();
        for (i, r) in routes.iter().enumerate() {
            all.push(i, r.weight);
            if let Some(c) = r.country {
                by_country.entry(c).or_default().push(i, r.weight);
            }
        }
        NodeTable {
            routes,
            all,
            by_country,
            holds: HashMap::new(),
        }
    }

    /// This table, telling connected nodes why their earnings are held.
    #[must_use]
    pub fn with_holds(mut self, holds: HashMap<Arc<str>, Arc<str>>) -> Self {
        self.holds = holds;
        self
    }

    /// Why `node_id`'s earnings are held, if they are.
    pub fn hold(&self, node_id: &str) -> Option<&Arc<str>> {
        self.holds.get(node_id)
    }

    /// Every route, sorted by node id.
    pub fn routes(&self) -> &[NodeRoute] {
        &self.routes
    }

    /// The ids of the connected nodes, sorted.
    pub fn node_ids(&self) -> impl Iterator<Item = Arc<str>> + '_ {
        self.routes.iter().map(|r| r.node_id.clone())
    }

    /// The route of `node_id`, if it is connected.
    pub fn get(&self, node_id: &str) -> Option<&NodeRoute> {
        self.routes
            .binary_search_by(|r| (*r.node_id).cmp(node_id))
            .ok()
            .map(|i| &self.routes[i])
    }

    /// Picks a node by weight among those in `country` (or all), skipping full nodes
    /// and those in `exclude`. `pick` is a fresh random number; further ones are
    /// derived from it.
    ///
    /// # Errors
    /// [`NoRoute`] saying why nothing could be chosen.
    pub fn choose(
        &self,
        country: Option<CountryCode>,
        pick: u64,
        exclude: &[Arc<str>],
    ) -> Result<&NodeRoute, NoRoute> {
        self.choose_where(country, pick, exclude, |_| true)
    }

    /// As [`NodeTable::choose`], among the routes `allowed` accepts as well.
    ///
    /// # Errors
    /// [`NoRoute`] saying why nothing could be chosen.
    pub fn choose_where(
        &self,
        country: Option<CountryCode>,
        pick: u64,
        exclude: &[Arc<str>],
        allowed: impl Fn(&NodeRoute) -> bool,
    ) -> Result<&NodeRoute, NoRoute> {
        if self.routes.is_empty() {
            return Err(NoRoute::NoNodes);
        }
        let set = match country {
            Some(c) => self.by_country.get(&c).ok_or(NoRoute::CountryUnavailable)?,
            None => &self.all,
        };
        let usable =
            |r: &NodeRoute| r.has_capacity() && !exclude.contains(&r.node_id) && allowed(r);
        let mut x = pick;
        for _ in 0..PICK_TRIES {
            if let Some(r) = set.pick(x).map(|i| &self.routes[i]) {
                if usable(r) {
                    return Ok(r);
                }
            }
            // splitmix64 step: a new uniform number from the last.
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x = z ^ (z >> 31);
        }
        set.indices
            .iter()
            .map(|i| &self.routes[*i as usize])
            .find(|r| usable(r))
            .ok_or(NoRoute::AllBusy)
    }
}

/// Shared, lock-free handle on the current [`NodeTable`].
pub type NodeTableHandle = Arc<ArcSwap<NodeTable>>;

#[cfg(test)]
mod tests {
    use super::*;

    fn route(id: &str, country: &str, weight: f64) -> NodeRoute {
        NodeRoute {
            node_id: id.into(),
            country: CountryCode::parse(country).ok(),
            conns: Arc::new([ConnRef { core: 0, serial: 1 }]),
            weight,
            score: weight,
            max_streams: 100,
            active: Arc::default(),
            earnings: Arc::default(),
        }
    }

    /// A deterministic stream of picks (xorshift64*).
    fn picks(seed: u64) -> impl Iterator<Item = u64> {
        let mut x = seed;
        std::iter::repeat_with(move || {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        })
    }

    fn counts(table: &NodeTable, n: usize, seed: u64) -> HashMap<String, usize> {
        let mut c = HashMap::new();
        for p in picks(seed).take(n) {
            let r = table.choose(None, p, &[]).expect("route");
            *c.entry(r.node_id.to_string()).or_default() += 1;
        }
        c
    }

    #[test]
    fn equal_nodes_split_evenly_and_weights_are_proportional() {
        let equal = NodeTable::new(vec![route("a", "US", 0.5), route("b", "US", 0.5)]);
        let c = counts(&equal, 1000, 42);
        // Binomial(1000, 0.5): sd 15.8; 4 sd either side.
        assert!((437..=563).contains(&c["a"]), "{c:?}");
        let skewed = NodeTable::new(vec![route("a", "US", 0.75), route("b", "US", 0.25)]);
        let c = counts(&skewed, 1000, 7);
        // Binomial(1000, 0.75): sd 13.7.
        assert!((695..=805).contains(&c["a"]), "{c:?}");
    }

    #[test]
    fn country_full_nodes_and_exclusions() {
        let t = NodeTable::new(vec![
            route("us1", "US", 1.0),
            route("us2", "US", 1.0),
            route("de1", "DE", 1.0),
        ]);
        let de = CountryCode::parse("DE").ok();
        for p in picks(1).take(100) {
            assert_eq!(&*t.choose(de, p, &[]).expect("de").node_id, "de1");
        }
        let fr = CountryCode::parse("FR").ok();
        assert_eq!(
            t.choose(fr, 1, &[]).err(),
            Some(NoRoute::CountryUnavailable)
        );
        assert_eq!(
            t.choose(de, 1, &["de1".into()]).err(),
            Some(NoRoute::AllBusy)
        );
        let us = CountryCode::parse("US").ok();
        t.get("us1").expect("us1").active.store(100, Relaxed);
        for p in picks(3).take(50) {
            assert_eq!(&*t.choose(us, p, &[]).expect("us").node_id, "us2");
        }
        assert_eq!(
            NodeTable::default().choose(None, 1, &[]).err(),
            Some(NoRoute::NoNodes)
        );
        assert!(t.get("nope").is_none());
    }

    #[test]
    fn a_zero_score_keeps_a_trickle() {
        let t = NodeTable::new(vec![route("good", "US", 1.0), route("bad", "US", 0.0)]);
        let c = counts(&t, 10_000, 9);
        let bad = c.get("bad").copied().unwrap_or(0);
        // Expected 10000 × 0.01/1.01 ≈ 99 (sd ≈ 10): 4 sd either side.
        assert!((59..=139).contains(&bad), "{bad}");
    }
}
