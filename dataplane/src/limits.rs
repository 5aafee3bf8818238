//! Connection limits: how many customer connections the server, each listener and each
//! key may hold open, and how fast a key may open new ones. Shared by every core:
//! atomics for the server and listener gauges, a sharded map for keys (touched once
//! when a tunnel opens and once when it closes, never per byte). Every admission hands
//! back a slot that gives its place back when dropped, on whichever core that happens.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use turbo_proto::RelayStatus;

use crate::frontend::Frontend;

/// Limits on customer connections. Zero disables a limit.
#[derive(Debug, Clone)]
pub struct ConnLimits {
    /// Open customer connections on the whole server.
    pub max_conns: usize,
    /// Open customer connections per listener (SOCKS5, HTTP).
    pub max_conns_per_listener: usize,
    /// Open tunnels per key.
    pub max_conns_per_key: u32,
    /// New tunnels per key per second (a burst of one second's worth is allowed).
    pub new_conns_per_key_per_sec: u32,
    /// A tunnel with no byte in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// A tunnel direction holding bytes it cannot pass on for this long is cut.
    pub stall_timeout: Duration,
    /// Bytes of credit each tunnel costs once the node connected it.
    pub connection_cost: u64,
    /// Share of one node's streams one key may hold (0: no share). See
    /// [`crate::fairshare`].
    pub key_node_share: f64,
    /// Tunnels that moved no byte one key may hold (0: no cap).
    pub key_idle_tunnels: u32,
    /// A tunnel that moved no byte is cut after this long while its node is under
    /// pressure.
    pub idle_tunnel_timeout: Duration,
    /// New tunnels per second to one site (registrable domain or network) from all
    /// customers together (0: no cap).
    pub site_new_conns_per_sec: u32,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_conns: 100_000,
            max_conns_per_listener: 100_000,
            max_conns_per_key: 2_000,
            new_conns_per_key_per_sec: 500,
            idle_timeout: Duration::from_secs(300),
            stall_timeout: Duration::from_secs(30),
            connection_cost: 1000,
            key_node_share: 0.25,
            key_idle_tunnels: 64,
            idle_tunnel_timeout: Duration::from_secs(30),
            site_new_conns_per_sec: 1_000,
        }
    }
}

/// Refusals and closes per limit, for `/metrics`.
#[derive(Debug, Default)]
pub struct LimitCounters {
    /// Connections refused: the server was full.
    pub server: AtomicU64,
    /// Connections refused: their listener was full.
    pub listener: AtomicU64,
    /// Tunnels refused: their key had too many open.
    pub key_conns: AtomicU64,
    /// Tunnels refused: their key opened too many too fast.
    pub key_rate: AtomicU64,
    /// Customer handshakes cut at the handshake timeout.
    pub handshake_timeout: AtomicU64,
    /// Tunnels closed by the idle timeout.
    pub idle_timeout: AtomicU64,
    /// Tunnels cut because the customer stopped reading for the stall timeout.
    pub stalled_customer: AtomicU64,
    /// Tunnels cut because the node stopped accepting or reporting deliveries.
    pub stalled_node: AtomicU64,
    /// Tunnels refused: their key held its share of every eligible node.
    pub key_node_share: AtomicU64,
    /// Tunnels refused: their key held its cap of tunnels that moved no byte.
    pub key_idle_tunnels: AtomicU64,
    /// Tunnels refused by a verdict (suspended, throttled or blocked site).
    pub verdicts: AtomicU64,
    /// Tunnels refused by the per-site cap.
    pub site_cap: AtomicU64,
    /// Tunnels that never moved a byte, cut early because their node was under pressure.
    pub idle_pressure: Arc<AtomicU64>,
    /// Connections refused because the process was over its memory watermark.
    pub memory: AtomicU64,
    /// QUIC Initials answered with a Retry (address validation under load).
    pub quic_retries: AtomicU64,
    /// QUIC Initials dropped: too many handshakes in progress.
    pub quic_dropped: AtomicU64,
    /// QUIC Initials dropped: their token was forged, stale or for another address.
    pub quic_bad_token: AtomicU64,
    /// Stateless Resets sent for packets of connections this process does not have.
    pub quic_resets: AtomicU64,
}

impl LimitCounters {
    /// `(limit, count)` pairs for export.
    pub fn all(&self) -> [(&'static str, u64); 18] {
        [
            ("server_connections", self.server.load(Relaxed)),
            ("listener_connections", self.listener.load(Relaxed)),
            ("key_connections", self.key_conns.load(Relaxed)),
            ("key_connection_rate", self.key_rate.load(Relaxed)),
            ("handshake_timeout", self.handshake_timeout.load(Relaxed)),
            ("idle_timeout", self.idle_timeout.load(Relaxed)),
            ("stalled_customer", self.stalled_customer.load(Relaxed)),
            ("stalled_node", self.stalled_node.load(Relaxed)),
            ("key_node_share", self.key_node_share.load(Relaxed)),
            ("key_idle_tunnels", self.key_idle_tunnels.load(Relaxed)),
            ("verdict", self.verdicts.load(Relaxed)),
            ("site_cap", self.site_cap.load(Relaxed)),
            ("idle_tunnel_pressure", self.idle_pressure.load(Relaxed)),
            ("memory", self.memory.load(Relaxed)),
            ("quic_retry", self.quic_retries.load(Relaxed)),
            ("quic_handshakes", self.quic_dropped.load(Relaxed)),
            ("quic_bad_token", self.quic_bad_token.load(Relaxed)),
            ("quic_stateless_reset", self.quic_resets.load(Relaxed)),
        ]
    }
}

const SHARDS: usize = 16;

#[derive(Debug)]
struct KeyState {
    open: u32,
    tokens: f64,
    last: Instant,
}

/// The shared gauges behind the limits.
#[derive(Debug)]
pub struct Gate {
    limits: ConnLimits,
    open: AtomicUsize,
    per_listener: [AtomicUsize; 2],
    keys: [Mutex<HashMap<Arc<str>, KeyState>>; SHARDS],
    hasher: RandomState,
    /// Set while the process is over its memory watermark: new connections are refused
    /// (open ones carry on), as an overload manager's first action.
    overloaded: std::sync::atomic::AtomicBool,
    /// Refusal counters.
    pub counters: LimitCounters,
    /// Per-key shares of node streams and idle tunnels.
    pub(crate) fair: Arc<crate::fairshare::FairShare>,
    /// Verdict restrictions and the per-site cap.
    pub policies: crate::policy::Policies,
}

/// A customer connection's place in the server and listener counts.
#[derive(Debug)]
pub struct ConnSlot {
    gate: Arc<Gate>,
    listener: usize,
}

/// A tunnel's place in its key's count.
#[derive(Debug)]
pub struct KeySlot {
    gate: Arc<Gate>,
    key: Arc<str>,
}

fn under(count: usize, max: usize) -> bool {
    max == 0 || count < max
}

impl Gate {
    /// A gate enforcing `limits`.
    pub fn new(limits: ConnLimits) -> Self {
        let counters = LimitCounters::default();
        let fair = crate::fairshare::FairShare::new(
            limits.key_node_share,
            limits.key_idle_tunnels,
            limits.idle_tunnel_timeout,
            counters.idle_pressure.clone(),
        );
        Gate {
            fair: Arc::new(fair),
            policies: crate::policy::Policies::new(limits.site_new_conns_per_sec),
            limits,
            open: AtomicUsize::new(0),
            per_listener: Default::default(),
            keys: Default::default(),
            hasher: RandomState::new(),
            overloaded: std::sync::atomic::AtomicBool::new(false),
            counters,
        }
    }

    /// The limits.
    pub fn limits(&self) -> &ConnLimits {
        &self.limits
    }

    /// Marks the process as over (or back under) its memory watermark.
    pub fn set_overloaded(&self, over: bool) {
        self.overloaded.store(over, Relaxed);
    }

    /// Whether new connections are refused for memory pressure.
    pub fn overloaded(&self) -> bool {
        self.overloaded.load(Relaxed)
    }

    /// Tunnels (of every key) that moved no byte past their grace, now.
    pub fn idle_tunnels(&self) -> u64 {
        self.fair.idle_tunnels()
    }

    /// Open customer connections now.
    pub fn open_connections(&self) -> usize {
        self.open.load(Relaxed)
    }

    /// Admits a freshly accepted connection, or says which limit it hit.
    pub(crate) fn admit_conn(
        self: &Arc<Self>,
        frontend: Frontend,
    ) -> Result<ConnSlot, RelayStatus> {
        let listener = frontend as usize;
        let total = self.open.fetch_add(1, Relaxed);
        let mine = self.per_listener[listener].fetch_add(1, Relaxed);
        let slot = ConnSlot {
            gate: self.clone(),
            listener,
        };
        if self.overloaded() {
            self.counters.memory.fetch_add(1, Relaxed);
            return Err(RelayStatus::ServerBusy);
        }
        if !under(total, self.limits.max_conns) {
            self.counters.server.fetch_add(1, Relaxed);
            return Err(RelayStatus::ServerBusy);
        }
        if !under(mine, self.limits.max_conns_per_listener) {
            self.counters.listener.fetch_add(1, Relaxed);
            return Err(RelayStatus::ServerBusy);
        }
        Ok(slot)
    }

    /// Admits a new tunnel for `key`, or says which limit it hit.
    pub(crate) fn admit_key(self: &Arc<Self>, key: &Arc<str>) -> Result<KeySlot, RelayStatus> {
        let shard = &self.keys[self.hasher.hash_one(&**key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        let rate = f64::from(self.limits.new_conns_per_key_per_sec);
        let now = Instant::now();
        let st = map.entry(key.clone()).or_insert(KeyState {
            open: 0,
            tokens: rate,
            last: now,
        });
        if self.limits.max_conns_per_key != 0 && st.open >= self.limits.max_conns_per_key {
            self.counters.key_conns.fetch_add(1, Relaxed);
            return Err(RelayStatus::KeyConnectionLimit);
        }
        if rate > 0.0 {
            let elapsed = now.duration_since(st.last).as_secs_f64();
            st.tokens = (st.tokens + elapsed * rate).min(rate);
            st.last = now;
            if st.tokens < 1.0 {
                self.counters.key_rate.fetch_add(1, Relaxed);
                return Err(RelayStatus::KeyRateLimit);
            }
            st.tokens -= 1.0;
        }
        st.open += 1;
        Ok(KeySlot {
            gate: self.clone(),
            key: key.clone(),
        })
    }
}

impl Gate {
    /// Counts a refusal by a fair share.
    pub(crate) fn count_share_refusal(&self, why: crate::fairshare::ShareRefusal) {
        let counter = match why {
            crate::fairshare::ShareRefusal::NodeShare => &self.counters.key_node_share,
            crate::fairshare::ShareRefusal::IdleTunnels => &self.counters.key_idle_tunnels,
        };
        counter.fetch_add(1, Relaxed);
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.gate.open.fetch_sub(1, Relaxed);
        self.gate.per_listener[self.listener].fetch_sub(1, Relaxed);
    }
}

impl Drop for KeySlot {
    fn drop(&mut self) {
        let gate = &self.gate;
        let shard = &gate.keys[gate.hasher.hash_one(&*self.key) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(st) = map.get_mut(&self.key) {
            st.open = st.open.saturating_sub(1);
            // Forget idle keys whose bucket is full again, so the map stays small.
            let refilled = st.tokens
                + st.last.elapsed().as_secs_f64()
                    * f64::from(gate.limits.new_conns_per_key_per_sec)
                >= f64::from(gate.limits.new_conns_per_key_per_sec);
            if st.open == 0 && refilled {
                map.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(limits: ConnLimits) -> Arc<Gate> {
        Arc::new(Gate::new(limits))
    }

    #[test]
    fn server_and_listener_limits_hold_and_free_on_drop() {
        let g = gate(ConnLimits {
            max_conns: 3,
            max_conns_per_listener: 2,
            ..ConnLimits::default()
        });
        let a = g.admit_conn(Frontend::Socks).unwrap();
        let _b = g.admit_conn(Frontend::Socks).unwrap();
        assert_eq!(
            g.admit_conn(Frontend::Socks).unwrap_err(),
            RelayStatus::ServerBusy
        );
        let _c = g.admit_conn(Frontend::Http).unwrap();
        assert_eq!(
            g.admit_conn(Frontend::Http).unwrap_err(),
            RelayStatus::ServerBusy
        );
        drop(a);
        assert_eq!(g.open_connections(), 2);
        assert!(g.admit_conn(Frontend::Socks).is_ok());
        assert_eq!(
            g.counters.server.load(Relaxed) + g.counters.listener.load(Relaxed),
            2
        );
    }

    #[test]
    fn key_limits_count_open_tunnels_and_rate() {
        let g = gate(ConnLimits {
            max_conns_per_key: 2,
            new_conns_per_key_per_sec: 3,
            ..ConnLimits::default()
        });
        let k: Arc<str> = "k_1".into();
        let a = g.admit_key(&k).unwrap();
        let _b = g.admit_key(&k).unwrap();
        assert_eq!(
            g.admit_key(&k).unwrap_err(),
            RelayStatus::KeyConnectionLimit
        );
        drop(a);
        // The third token of the burst; the fourth new tunnel within a second is too fast.
        let _c = g.admit_key(&k).unwrap();
        drop(_c);
        assert_eq!(g.admit_key(&k).unwrap_err(), RelayStatus::KeyRateLimit);
        // Another key is unaffected.
        assert!(g.admit_key(&"k_2".into()).is_ok());
    }
}
