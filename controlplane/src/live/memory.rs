//! The in-process [`super::LiveBus`]: one server, so the feed is a broadcast channel
//! and presence a map.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::broadcast;

use super::{LiveEvent, Presence};

/// Feed and presence in memory.
pub struct MemoryBus {
    feed: broadcast::Sender<LiveEvent>,
    presence: Mutex<HashMap<String, Presence>>,
}

impl Default for MemoryBus {
    fn default() -> Self {
        MemoryBus {
            feed: broadcast::channel(super::redis::FEED_CAPACITY).0,
            presence: Mutex::default(),
        }
    }
}

impl MemoryBus {
    fn with<R>(&self, f: impl FnOnce(&mut HashMap<String, Presence>) -> R) -> R {
        f(&mut self.presence.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(super) fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.feed.subscribe()
    }

    pub(super) fn publish(&self, event: &LiveEvent) {
        let _ = self.feed.send(event.clone());
    }

    pub(super) fn report(&self, server: &str, online: &[(String, Presence)], offline: &[String]) {
        self.with(|map| {
            for id in offline {
                if map.get(id).is_some_and(|p| p.server == server) {
                    map.remove(id);
                }
            }
            for (id, p) in online {
                map.insert(id.clone(), p.clone());
            }
        });
    }

    pub(super) fn presence(&self, ids: Option<&[String]>) -> HashMap<String, Presence> {
        self.with(|map| match ids {
            None => map.clone(),
            Some(ids) => ids
                .iter()
                .filter_map(|id| Some((id.clone(), map.get(id)?.clone())))
                .collect(),
        })
    }

    pub(super) fn sweep(&self, before: u64) -> u64 {
        self.with(|map| {
            let n = map.len();
            map.retain(|_, p| p.until >= before);
            (n - map.len()) as u64
        })
    }
}
