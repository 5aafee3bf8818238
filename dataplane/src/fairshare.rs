//! Fair shares of node streams between keys, shared by every core. Without them one key
//! holding a node's whole stream limit in idle tunnels locks every other key out of it.
//!
//! - **Per node.** A key may hold at most `key_node_share` of a node's streams
//!   (`max_streams`), at least one. Routing skips nodes where the key holds its share;
//!   when every eligible node is at the key's share the request is refused with
//!   SOCKS5 0x02 / HTTP 429 `key_node_share`.
//! - **Network.** The key's open tunnels over all nodes are capped by the existing
//!   `max_connections_per_key` ([`crate::limits`]).
//! - **Idle tunnels.** A tunnel that has moved no byte for [`IDLE_GRACE`] since its node
//!   connected is *idle* (the grace lets a burst of fresh tunnels send their first
//!   bytes). A key may hold at most `key_idle_tunnels` of them; beyond, new tunnels are
//!   refused with SOCKS5 0x02 / HTTP 429 `key_idle_tunnels`. Under pressure (its node
//!   at [`PRESSURE_PERCENT`]% of its streams or more) an idle tunnel is cut after
//!   `idle_tunnel_timeout` instead of the relay idle timeout.
//!
//! One sharded map of keys, touched when a tunnel opens, when it moves its first byte,
//! and when it closes; never per byte after that.

use std::cell::Cell;
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use turbo_proto::RelayStatus;

use crate::routes::NodeRoute;

const SHARDS: usize = 16;
/// A tunnel that moved no byte this long after its node connected counts as idle.
pub(crate) const IDLE_GRACE: Duration = Duration::from_secs(1);
/// Share of a node's streams in use, in percent, from which idle tunnels on it are cut
/// sooner.
pub(crate) const PRESSURE_PERCENT: u32 = 90;

/// Why a key may not open another tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ShareRefusal {
    /// The key holds its share of every eligible node's streams.
    #[error("key_node_share: the key holds its share of every eligible node's streams")]
    NodeShare,
    /// The key holds as many tunnels that moved no byte as it may.
    #[error("key_idle_tunnels: the key holds as many tunnels that moved no byte as it may")]
    IdleTunnels,
}

impl ShareRefusal {
    /// The status the customer is answered with (SOCKS5 0x02, HTTP 429).
    pub(crate) fn status(self) -> RelayStatus {
        RelayStatus::KeyConnectionLimit
    }
}

#[derive(Debug, Default)]
struct KeyShare {
    /// Streams the key holds per node.
    nodes: HashMap<Arc<str>, u32>,
    /// Tunnels of the key that moved no byte yet.
    idle: u32,
}

/// The per-key counts behind the shares.
#[derive(Debug)]
pub(crate) struct FairShare {
    node_share: f64,
    idle_cap: u32,
    idle_cut: Duration,
    /// Idle tunnels cut under pressure (shared with the limit counters).
    pressure_cuts: Arc<AtomicU64>,
    /// Idle tunnels of every key, now.
    idle_now: AtomicU64,
    keys: [Mutex<HashMap<Arc<str>, KeyShare>>; SHARDS],
    hasher: RandomState,
}

impl FairShare {
    /// Shares of `node_share` (0 or ≥ 1: none) and `idle_cap` idle tunnels (0: none);
    /// idle tunnels on a node under pressure are cut after `idle_cut`.
    pub(crate) fn new(
        node_share: f64,
        idle_cap: u32,
        idle_cut: Duration,
        pressure_cuts: Arc<AtomicU64>,
    ) -> Self {
        FairShare {
            node_share,
            idle_cap,
            idle_cut,
            pressure_cuts,
            idle_now: AtomicU64::new(0),
            keys: Default::default(),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, HashMap<Arc<str>, KeyShare>> {
        let shard = &self.keys[self.hasher.hash_one(key) as usize % SHARDS];
        shard.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Most streams one key may hold on a node that accepts `max_streams`.
    pub(crate) fn node_cap(&self, max_streams: u32) -> u32 {
        if self.node_share <= 0.0 || self.node_share >= 1.0 {
            return max_streams;
        }
        ((f64::from(max_streams) * self.node_share) as u32).max(1)
    }

    fn held(&self, key: &str, node: &str) -> u32 {
        self.shard(key)
            .get(key)
            .and_then(|k| k.nodes.get(node).copied())
            .unwrap_or(0)
    }

    /// Whether `key` may open another stream on `route`.
    pub(crate) fn has_room(&self, key: &str, route: &NodeRoute) -> bool {
        self.held(key, &route.node_id) < self.node_cap(route.max_streams)
    }

    /// Takes a place in `key`'s share of `route`, given back when the slot drops.
    ///
    /// # Errors
    /// [`ShareRefusal::NodeShare`] when the key holds its share already.
    pub(crate) fn claim(
        self: &Arc<Self>,
        key: &Arc<str>,
        route: &NodeRoute,
    ) -> Result<NodeShare, ShareRefusal> {
        let cap = self.node_cap(route.max_streams);
        let mut map = self.shard(key);
        let held = map
            .entry(key.clone())
            .or_default()
            .nodes
            .entry(route.node_id.clone())
            .or_insert(0);
        if *held >= cap {
            return Err(ShareRefusal::NodeShare);
        }
        *held += 1;
        Ok(NodeShare {
            fair: self.clone(),
            key: key.clone(),
            node: route.node_id.clone(),
        })
    }

    /// Whether `key` may open another tunnel, given its idle ones.
    ///
    /// # Errors
    /// [`ShareRefusal::IdleTunnels`] when it holds its cap of idle tunnels.
    pub(crate) fn check_idle(&self, key: &str) -> Result<(), ShareRefusal> {
        let idle = self.shard(key).get(key).map_or(0, |k| k.idle);
        if self.idle_cap != 0 && idle >= self.idle_cap {
            return Err(ShareRefusal::IdleTunnels);
        }
        Ok(())
    }

    /// A mark for a freshly connected tunnel of `key` on `route`, dropped at its first
    /// byte or when it closes. It counts as idle once [`IdleTunnel::count`] is called
    /// (after [`IDLE_GRACE`]).
    pub(crate) fn idle(self: &Arc<Self>, key: &Arc<str>, route: &NodeRoute) -> IdleTunnel {
        IdleTunnel {
            fair: self.clone(),
            key: key.clone(),
            route: route.clone(),
            counted: Cell::new(false),
        }
    }

    /// Idle tunnels of every key now.
    pub(crate) fn idle_tunnels(&self) -> u64 {
        self.idle_now.load(Relaxed)
    }

    fn release(&self, key: &Arc<str>, f: impl FnOnce(&mut KeyShare)) {
        let mut map = self.shard(key);
        if let Some(k) = map.get_mut(key) {
            f(k);
            if k.idle == 0 && k.nodes.is_empty() {
                map.remove(key);
            }
        }
    }
}

/// A stream's place in its key's share of one node.
#[derive(Debug)]
pub(crate) struct NodeShare {
    fair: Arc<FairShare>,
    key: Arc<str>,
    node: Arc<str>,
}

impl Drop for NodeShare {
    fn drop(&mut self) {
        let node = &self.node;
        self.fair.release(&self.key, |k| {
            if let Some(n) = k.nodes.get_mut(node) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    k.nodes.remove(node);
                }
            }
        });
    }
}

/// An open tunnel that has moved no byte yet; dropping it ends that.
#[derive(Debug)]
pub(crate) struct IdleTunnel {
    fair: Arc<FairShare>,
    key: Arc<str>,
    route: NodeRoute,
    counted: Cell<bool>,
}

impl IdleTunnel {
    /// Counts the tunnel as idle in its key's share (once).
    pub(crate) fn count(&self) {
        if !self.counted.replace(true) {
            self.fair
                .shard(&self.key)
                .entry(self.key.clone())
                .or_default()
                .idle += 1;
            self.fair.idle_now.fetch_add(1, Relaxed);
        }
    }

    /// How long the tunnel may stay idle now: `idle_tunnel_timeout` while its node is
    /// under pressure, else `None` (the relay idle timeout applies).
    pub(crate) fn cut_after(&self) -> Option<Duration> {
        under_pressure(&self.route).then_some(self.fair.idle_cut)
    }

    /// Counts that the tunnel was cut under pressure.
    pub(crate) fn note_cut(&self) {
        self.fair.pressure_cuts.fetch_add(1, Relaxed);
    }
}

impl Drop for IdleTunnel {
    fn drop(&mut self) {
        if self.counted.get() {
            self.fair.idle_now.fetch_sub(1, Relaxed);
            self.fair
                .release(&self.key, |k| k.idle = k.idle.saturating_sub(1));
        }
    }
}

/// Whether `route` is busy enough that idle tunnels on it are cut sooner.
pub(crate) fn under_pressure(route: &NodeRoute) -> bool {
    let (active, max) = (route.active.load(Relaxed), route.max_streams);
    u64::from(active) * 100 >= u64::from(max) * u64::from(PRESSURE_PERCENT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::ConnRef;

    fn route(id: &str, max_streams: u32) -> NodeRoute {
        NodeRoute {
            node_id: id.into(),
            country: None,
            conns: Arc::new([ConnRef { core: 0, serial: 1 }]),
            weight: 1.0,
            score: 1.0,
            max_streams,
            active: Arc::default(),
            earnings: Arc::default(),
        }
    }

    #[test]
    fn a_key_holds_at_most_its_share_of_a_node() {
        let fair = Arc::new(FairShare::new(
            0.25,
            0,
            Duration::from_secs(1),
            Arc::default(),
        ));
        let (a, b): (Arc<str>, Arc<str>) = ("k_a".into(), "k_b".into());
        let n = route("n1", 8);
        assert_eq!(fair.node_cap(8), 2);
        assert_eq!(fair.node_cap(1), 1, "at least one");
        let one = fair.claim(&a, &n).unwrap();
        let _two = fair.claim(&a, &n).unwrap();
        assert!(!fair.has_room(&a, &n));
        assert_eq!(fair.claim(&a, &n).unwrap_err(), ShareRefusal::NodeShare);
        assert!(fair.has_room(&b, &n), "another key is unaffected");
        assert!(fair.has_room(&a, &route("n2", 8)), "another node too");
        drop(one);
        assert!(fair.has_room(&a, &n));
        let none = FairShare::new(0.0, 0, Duration::from_secs(1), Arc::default());
        assert_eq!(none.node_cap(8), 8, "0 disables");
    }

    #[test]
    fn idle_tunnels_are_capped_until_they_move_a_byte() {
        let fair = Arc::new(FairShare::new(
            0.0,
            2,
            Duration::from_secs(1),
            Arc::default(),
        ));
        let (a, n): (Arc<str>, _) = ("k_a".into(), route("n1", 10));
        let first = fair.idle(&a, &n);
        let _second = fair.idle(&a, &n);
        assert_eq!(fair.check_idle(&a), Ok(()), "not counted before the grace");
        first.count();
        first.count();
        _second.count();
        assert_eq!(fair.idle_tunnels(), 2);
        assert_eq!(first.cut_after(), None);
        n.active.store(9, Relaxed);
        assert_eq!(first.cut_after(), Some(Duration::from_secs(1)), "pressure");
        assert_eq!(fair.check_idle(&a), Err(ShareRefusal::IdleTunnels));
        assert_eq!(fair.check_idle("k_b"), Ok(()));
        drop(first);
        assert_eq!(fair.check_idle(&a), Ok(()));
        drop(_second);
        assert!(fair.shard(&a).get(&a).is_none(), "empty keys are forgotten");
    }

    #[test]
    fn pressure_starts_at_ninety_percent() {
        let r = route("n1", 10);
        r.active.store(8, Relaxed);
        assert!(!under_pressure(&r));
        r.active.store(9, Relaxed);
        assert!(under_pressure(&r));
    }
}
