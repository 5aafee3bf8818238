//! The fleet: which `turbo-server`s of one network are alive, where nodes reach them
//! and how loaded they are. Each server announces itself in the shared store every
//! [`ANNOUNCE_EVERY`] ([`announce`]): its id, the public QUIC address nodes dial, its
//! certificate pin, its attached nodes and open streams, and whether it is draining.
//! An announcement lapses [`TTL`] after it was written, so a server that dies leaves
//! the list within about three intervals. The list goes to `GET /api/servers` and,
//! through the data plane ([`turbo_dataplane::servers`]), to every node, which keeps
//! connections to two servers.
//!
//! The memory fleet is the demo's (one server, in-process); the Redis fleet is shared
//! by every server on one Redis or Redis Cluster (all its keys in one hash slot).

use serde::{Deserialize, Serialize};

pub mod announce;
mod memory;
mod redis;
#[cfg(test)]
mod suite;

pub use memory::MemoryFleet;
pub use redis::RedisFleet;

/// How often a server announces itself.
pub const ANNOUNCE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// How long an announcement lasts without a refresh (about three intervals).
pub const TTL: std::time::Duration = std::time::Duration::from_millis(6_500);

/// Why the fleet could not be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FleetError {
    /// The shared store could not be reached or refused the command.
    #[error("fleet store unavailable: {0}")]
    Unavailable(String),
    /// An announcement could not be encoded.
    #[error("fleet announcement not encodable: {0}")]
    Encode(String),
}

/// One server as it announces itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Announcement {
    /// The server's id (`s` + 8 hex digits, new on every start).
    pub id: String,
    /// The public QUIC address nodes dial, `host:port` (IPv6 in brackets).
    pub quic_addr: String,
    /// SHA-256 of its certificate, 64 hex digits (as in join strings).
    pub pin: String,
    /// Nodes attached to it now.
    pub nodes: u32,
    /// Relay streams open on it now.
    pub streams: u64,
    /// It is shutting down: nodes should move to another server.
    pub draining: bool,
    /// Unix ms after which the announcement has lapsed.
    pub until_ms: u64,
}

impl Announcement {
    /// The pin as bytes; `None` if it is not 64 hex digits.
    pub fn pin_bytes(&self) -> Option<[u8; 32]> {
        let mut out = [0u8; 32];
        if self.pin.len() != 64 {
            return None;
        }
        for (i, pair) in self.pin.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).ok()?;
            out[i] = u8::from_str_radix(hex, 16).ok()?;
        }
        Some(out)
    }
}

/// `pin` as 64 lowercase hex digits.
pub fn pin_hex(pin: &[u8; 32]) -> String {
    pin.iter().map(|b| format!("{b:02x}")).collect()
}

/// Either fleet, chosen with the store.
pub enum Fleet {
    /// In this process only (the demo's one server).
    Memory(MemoryFleet),
    /// Shared through Redis.
    Redis(RedisFleet),
}

impl Fleet {
    /// The fleet for the store named by `spec`: `memory`, or a Redis URL.
    ///
    /// # Errors
    /// [`FleetError::Unavailable`] when Redis cannot be reached.
    pub async fn open(spec: &str) -> Result<Fleet, FleetError> {
        if spec == "memory" {
            Ok(Fleet::Memory(MemoryFleet::default()))
        } else {
            Ok(Fleet::Redis(RedisFleet::connect(spec).await?))
        }
    }

    /// Writes (or refreshes) `a`, replacing the server's earlier announcement.
    ///
    /// # Errors
    /// [`FleetError`] when the store fails.
    pub async fn announce(&self, a: &Announcement) -> Result<(), FleetError> {
        match self {
            Fleet::Memory(f) => {
                f.announce(a);
                Ok(())
            }
            Fleet::Redis(f) => f.announce(a).await,
        }
    }

    /// The announcements that have not lapsed at `now_ms`, by id.
    ///
    /// # Errors
    /// [`FleetError::Unavailable`].
    pub async fn live(&self, now_ms: u64) -> Result<Vec<Announcement>, FleetError> {
        let mut all = match self {
            Fleet::Memory(f) => f.all(),
            Fleet::Redis(f) => f.all().await?,
        };
        all.retain(|a| a.until_ms > now_ms);
        all.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(all)
    }

    /// Removes announcements lapsed before `before_ms`; returns how many.
    ///
    /// # Errors
    /// [`FleetError::Unavailable`].
    pub async fn sweep(&self, before_ms: u64) -> Result<u64, FleetError> {
        match self {
            Fleet::Memory(f) => Ok(f.sweep(before_ms)),
            Fleet::Redis(f) => f.sweep(before_ms).await,
        }
    }
}
