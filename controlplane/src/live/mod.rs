//! Live state for the dashboard, shared by every server on one store:
//! - **presence**: which nodes are online, on which servers, with their score parts and
//!   open streams. Each server reports its own nodes ([`report`]); a node on two
//!   servers has an entry from each, read merged ([`holders`]); an entry its server
//!   stops refreshing goes stale at `until` and is ignored, then swept.
//! - **the feed**: what changed, published by the server that saw it and delivered to
//!   every server's `/events` ([`crate::web::live`]): usage ticks, nodes up and down,
//!   invoice states. Key revocations and top-ups travel on the store's own key events.
//! - **network claims** ([`crate::netlimit`]): which nodes hold a place on a network,
//!   and why a node was last refused, for its runner.
//!
//! The memory bus is the demo's (one server); the Redis bus shares both through Redis.
//! The feed is at-most-once (Redis PUB/SUB): a lost subscription sends
//! [`LiveEvent::Resync`], and pages re-read everything.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::store::StoreError;

mod holders;
mod memory;
mod redis;
pub mod report;
#[cfg(test)]
mod suite;

pub use memory::MemoryBus;
pub use redis::RedisBus;

/// Feed events a subscriber may fall behind by before it skips ahead.
const FEED_CAPACITY: usize = 1024;

/// A change pages follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveEvent {
    /// These keys' usage moved (one tick per server per second at most).
    Usage(Vec<String>),
    /// A node came online or went offline.
    Node {
        /// The node.
        id: String,
        /// Whether it is online now.
        online: bool,
    },
    /// An invoice's status changed.
    Invoice(String),
    /// Events may have been missed: re-read everything.
    Resync,
}

impl LiveEvent {
    /// The event as one line: `usage <id>…`, `node <id> up|down`, `invoice <id>`.
    pub fn encode(&self) -> String {
        match self {
            LiveEvent::Usage(ids) => format!("usage {}", ids.join(" ")),
            LiveEvent::Node { id, online } => {
                format!("node {id} {}", if *online { "up" } else { "down" })
            }
            LiveEvent::Invoice(id) => format!("invoice {id}"),
            LiveEvent::Resync => "resync".into(),
        }
    }

    /// Reads [`LiveEvent::encode`]'s line; `None` for anything else.
    pub fn decode(text: &str) -> Option<LiveEvent> {
        let mut words = text.split(' ');
        let event = match words.next()? {
            "usage" => LiveEvent::Usage(words.map(str::to_owned).collect()),
            "node" => {
                let id = words.next()?.to_owned();
                let online = match words.next()? {
                    "up" => true,
                    "down" => false,
                    _ => return None,
                };
                LiveEvent::Node { id, online }
            }
            "invoice" => LiveEvent::Invoice(words.next()?.to_owned()),
            "resync" => LiveEvent::Resync,
            _ => return None,
        };
        Some(event)
    }
}

/// One online node, as its server reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Presence {
    /// The server it is connected to (read back: every server holding it, by id,
    /// comma-separated).
    pub server: String,
    /// The country it is routed under.
    pub country: Option<String>,
    /// Its score S.
    pub score: f64,
    /// The latency part L.
    pub latency: f64,
    /// The reliability part R.
    pub reliability: f64,
    /// Streams open on it.
    pub streams: u32,
    /// Streams it accepts.
    pub max_streams: u32,
    /// Connected since, Unix seconds.
    pub since: u64,
    /// Unix seconds after which the entry is stale: its server stopped refreshing it.
    pub until: u64,
}

/// A node's claim of a place on a network ([`LiveBus::claim_network`]).
#[derive(Debug, Clone, Copy)]
pub struct NetworkClaim<'a> {
    /// The network: `v4:<address>` or `v6:<prefix>/64`.
    pub network: &'a str,
    /// The claiming node.
    pub node: &'a str,
    /// Most holders at once.
    pub limit: u32,
    /// Now, Unix ms: claims that lapsed by then do not count.
    pub now_ms: u64,
    /// Until when this claim holds, Unix ms.
    pub expires_ms: u64,
}

/// Either bus, chosen with the store.
pub enum LiveBus {
    /// In this process only.
    Memory(MemoryBus),
    /// Shared through Redis.
    Redis(RedisBus),
}

impl LiveBus {
    /// The bus for the store named by `spec`: `memory`, or a `redis://` URL.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn open(spec: &str) -> Result<LiveBus, StoreError> {
        if spec == "memory" {
            Ok(LiveBus::Memory(MemoryBus::default()))
        } else {
            Ok(LiveBus::Redis(RedisBus::connect(spec).await?))
        }
    }

    /// The feed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        match self {
            LiveBus::Memory(b) => b.subscribe(),
            LiveBus::Redis(b) => b.subscribe(),
        }
    }

    /// Sends `event` to every server's subscribers (this one's included).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn publish(&self, event: &LiveEvent) -> Result<(), StoreError> {
        match self {
            LiveBus::Memory(b) => {
                b.publish(event);
                Ok(())
            }
            LiveBus::Redis(b) => b.publish(event).await,
        }
    }

    /// Records `server`'s online nodes and removes `server` from the holders of the
    /// `offline` ones, at Unix second `now`; returns those of them that no server holds
    /// any more (a node still on another server stays online).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn report(
        &self,
        server: &str,
        online: &[(String, Presence)],
        offline: &[String],
        now: u64,
    ) -> Result<Vec<String>, StoreError> {
        match self {
            LiveBus::Memory(b) => Ok(b.report(server, online, offline, now)),
            LiveBus::Redis(b) => b.report(server, online, offline, now).await,
        }
    }

    /// The online nodes among `ids` at Unix second `now` (`None`: all of them).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn presence(
        &self,
        ids: Option<&[String]>,
        now: u64,
    ) -> Result<HashMap<String, Presence>, StoreError> {
        let all = match self {
            LiveBus::Memory(b) => b.presence(ids, now),
            LiveBus::Redis(b) => b.presence(ids, now).await?,
        };
        Ok(all.into_iter().filter(|(_, p)| p.until > now).collect())
    }

    /// Claims a place for `claim.node` on its network (refreshing its own claim), if
    /// fewer than `claim.limit` other nodes hold one; whether it did.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn claim_network(&self, claim: &NetworkClaim<'_>) -> Result<bool, StoreError> {
        match self {
            LiveBus::Memory(b) => Ok(b.claim_network(claim)),
            LiveBus::Redis(b) => b.claim_network(claim).await,
        }
    }

    /// Gives up `node`'s claim on `network`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn release_network(&self, network: &str, node: &str) -> Result<(), StoreError> {
        match self {
            LiveBus::Memory(b) => {
                b.release_network(network, node);
                Ok(())
            }
            LiveBus::Redis(b) => b.release_network(network, node).await,
        }
    }

    /// Notes why `node` was refused, for its runner's pages, for `ttl`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn note_refusal(
        &self,
        node: &str,
        why: &str,
        ttl: std::time::Duration,
    ) -> Result<(), StoreError> {
        match self {
            LiveBus::Memory(b) => {
                b.note_refusal(node, why, ttl);
                Ok(())
            }
            LiveBus::Redis(b) => b.note_refusal(node, why, ttl).await,
        }
    }

    /// The noted refusals of `ids`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn refusals(&self, ids: &[String]) -> Result<HashMap<String, String>, StoreError> {
        match self {
            LiveBus::Memory(b) => Ok(b.refusals(ids)),
            LiveBus::Redis(b) => b.refusals(ids).await,
        }
    }

    /// Removes entries stale since before `before` (their server died); returns how
    /// many.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    pub async fn sweep(&self, before: u64) -> Result<u64, StoreError> {
        match self {
            LiveBus::Memory(b) => Ok(b.sweep(before)),
            LiveBus::Redis(b) => b.sweep(before).await,
        }
    }
}
