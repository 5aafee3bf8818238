//! The in-process [`super::LiveBus`]: one server, so the feed is a broadcast channel
//! and presence a map.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::{LiveEvent, NetworkClaim, Presence};

/// One node's presence on each server holding it.
type Holders = HashMap<String, Presence>;

/// Feed and presence in memory.
pub struct MemoryBus {
    feed: broadcast::Sender<LiveEvent>,
    /// node → server → its presence there.
    presence: Mutex<HashMap<String, Holders>>,
    /// network → node → claim expiry (Unix ms).
    claims: Mutex<HashMap<String, HashMap<String, u64>>>,
    /// node → (why, until).
    refusals: Mutex<HashMap<String, (String, std::time::Instant)>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus {
            feed: broadcast::channel(super::FEED_CAPACITY).0,
            presence: Mutex::default(),
            claims: Mutex::default(),
            refusals: Mutex::default(),
        }
    }
}

impl MemoryBus {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Holders>) -> R) -> R {
        f(&mut self.presence.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.feed.subscribe()
    }

    pub(super) fn publish(&self, event: &LiveEvent) {
        let _ = self.feed.send(event.clone());
    }

    /// As [`super::LiveBus::report`].
    pub(super) fn report(
        &self,
        server: &str,
        online: &[(String, Presence)],
        offline: &[String],
        now: u64,
    ) -> Vec<String> {
        self.with(|map| {
            let mut gone = Vec::new();
            for id in offline {
                let holders = map.entry(id.clone()).or_default();
                holders.remove(server);
                holders.retain(|_, p| p.until > now);
                if holders.is_empty() {
                    map.remove(id);
                    gone.push(id.clone());
                }
            }
            for (id, p) in online {
                let holders = map.entry(id.clone()).or_default();
                holders.retain(|s, q| s != server && q.until > now);
                holders.insert(server.to_owned(), p.clone());
            }
            gone
        })
    }

    pub(super) fn presence(&self, ids: Option<&[String]>, now: u64) -> HashMap<String, Presence> {
        let merged = |h: &Holders| super::holders::merge(h.values(), now);
        self.with(|map| match ids {
            None => map
                .iter()
                .filter_map(|(id, h)| Some((id.clone(), merged(h)?)))
                .collect(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| Some((id.clone(), merged(map.get(id)?)?)))
                .collect(),
        })
    }

    pub(super) fn claim_network(&self, c: &NetworkClaim<'_>) -> bool {
        let mut claims = lock(&self.claims);
        let holders = claims.entry(c.network.to_owned()).or_default();
        holders.retain(|_, until| *until > c.now_ms);
        if holders.contains_key(c.node) || holders.len() < c.limit as usize {
            holders.insert(c.node.to_owned(), c.expires_ms);
            return true;
        }
        false
    }

    pub(super) fn release_network(&self, network: &str, node: &str) {
        if let Some(holders) = lock(&self.claims).get_mut(network) {
            holders.remove(node);
        }
    }

    pub(super) fn note_refusal(&self, node: &str, why: &str, ttl: std::time::Duration) {
        let until = std::time::Instant::now() + ttl;
        lock(&self.refusals).insert(node.to_owned(), (why.to_owned(), until));
    }

    pub(super) fn refusals(&self, ids: &[String]) -> HashMap<String, String> {
        let now = std::time::Instant::now();
        let mut refusals = lock(&self.refusals);
        refusals.retain(|_, (_, until)| *until > now);
        ids.iter()
            .filter_map(|id| Some((id.clone(), refusals.get(id)?.0.clone())))
            .collect()
    }

    pub(super) fn sweep(&self, before: u64) -> u64 {
        self.with(|map| {
            let n = map.len();
            map.retain(|_, h| h.values().any(|p| p.until >= before));
            (n - map.len()) as u64
        })
    }
}
