//! The embedded in-memory [`Store`]: the demo's default. One mutex guards all tables;
//! every operation is a short critical section, so each is atomic like the Redis
//! scripts it mirrors.
//!
//! With a snapshot file (`DATA_DIR/memory-store.json`, written by `turbo-server run`,
//! see [`super::snapshot`]), keys and node identities survive a restart, SIGKILL
//! included:
//! - every admin write (key created, top-up, revocation, node invited, payout address)
//!   returns only after a snapshot holding it is fsync'd, so an acknowledged write is
//!   never lost;
//! - balance changes from leases are written every second while something changed, and
//!   at shutdown after the leases are settled.
//!
//! On load, leases that were outstanding (a crash) go back to their keys' balances, as
//! Redis reclaims an expired lease; what a crash can lose is the usage of the last
//! second and the bytes relayed but not yet checkpointed, bounded like a lease.
//!
//! Amounts never wrap: balances stay within [`MAX_BALANCE`] (checked on create and
//! top-up) and counters saturate.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::broadcast;
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseAnswer, LeaseRequest};
use turbo_dataplane::known_keys;

use super::snapshot::{Snapshot, SnapshotFile};
use super::{
    feature_fields, now_unix, short_id, FeatureFields, KeyRecord, LeaseTerms, NodeRecord, Share,
    Store, StoreError, UsageEntry, MAX_BALANCE,
};
use crate::secrets::{self, SecretHash};

/// Where a lease stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaseStatus {
    Live,
    Ended,
}

#[derive(Debug)]
struct Lease {
    key_id: String,
    amount: u64,
    seq: u64,
    last_granted: u64,
    status: LeaseStatus,
    expires: Instant,
}

#[derive(Default)]
struct Tables {
    keys: HashMap<String, KeyRecord>,
    key_ids_by_hash: HashMap<SecretHash, String>,
    nodes: HashMap<String, NodeRecord>,
    node_ids_by_hash: HashMap<SecretHash, String>,
    leases: HashMap<String, Lease>,
    connections: VecDeque<FeatureFields>,
    /// The id the next feature record gets (ids increase from 0).
    connections_next: u64,
    sessions: HashMap<(String, String), (String, Instant)>,
    /// The usage log: (id, entry), ids increasing from 1.
    usage_log: VecDeque<(u64, UsageEntry)>,
    /// The id of the next usage log entry.
    usage_next: u64,
    /// Operations `add_credits_once` applied, as `"<key id> <op>"`.
    credit_ops: HashSet<String>,
    /// Bumped by every change to what the snapshot holds.
    generation: u64,
}

/// The tables and their snapshot file, shared with blocking snapshot writers.
#[derive(Default)]
struct Shared {
    tables: Mutex<Tables>,
    snapshot: Option<SnapshotFile>,
}

impl Shared {
    fn with<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }

    /// Writes the snapshot unless generation `upto` is already on disk. Blocks on IO.
    fn save_upto(&self, upto: u64) -> std::io::Result<()> {
        let Some(file) = &self.snapshot else {
            return Ok(());
        };
        file.write_through(upto, || {
            self.with(|t| {
                let snap = Snapshot {
                    keys: t
                        .keys
                        .values()
                        .map(|k| (hex::encode(k.hash), k.clone()))
                        .collect(),
                    nodes: t
                        .nodes
                        .values()
                        .map(|n| (hex::encode(n.hash), n.clone()))
                        .collect(),
                    usage_log: t.usage_log.iter().cloned().collect(),
                    usage_next: t.usage_next,
                    credit_ops: t.credit_ops.iter().cloned().collect(),
                };
                (t.generation, snap)
            })
        })
    }
}

/// The embedded in-memory store.
pub struct MemoryStore {
    shared: Arc<Shared>,
    events: broadcast::Sender<KeyEvent>,
    detect: Mutex<detect::DetectTables>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            shared: Arc::default(),
            events: broadcast::channel(1024).0,
            detect: Mutex::default(),
        }
    }
}

fn unhex(s: &str) -> Option<SecretHash> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

impl MemoryStore {
    fn with<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        self.shared.with(f)
    }

    /// Like [`MemoryStore::with`], for changes to what the snapshot holds (keys,
    /// balances, usage, nodes); also returns the change's generation, for
    /// [`MemoryStore::persist`]. Lookups, sessions and connection records are not
    /// changes.
    fn change<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> (R, u64) {
        self.with(|t| {
            t.generation += 1;
            (f(t), t.generation)
        })
    }

    /// Returns once generation `upto` is durably in the snapshot (at once without a
    /// snapshot file). The write runs on a blocking thread.
    async fn persist(&self, upto: u64) -> Result<(), StoreError> {
        if self.shared.snapshot.is_none() {
            return Ok(());
        }
        let shared = self.shared.clone();
        tokio::task::spawn_blocking(move || shared.save_upto(upto))
            .await
            .map_err(|e| StoreError::Unavailable(format!("snapshot writer: {e}")))?
            .map_err(|e| {
                tracing::warn!(error = %e, "could not write the memory store snapshot");
                StoreError::Unavailable(format!("snapshot not written: {e}"))
            })
    }

    /// A store kept in `path`: loaded from it when it exists (outstanding leases go
    /// back to their keys), written by every admin change and by [`MemoryStore::save`].
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn with_snapshot(path: std::path::PathBuf) -> std::io::Result<Self> {
        let (file, snap) = SnapshotFile::open(path)?;
        let mut t = Tables::default();
        for (hash, mut k) in snap.keys {
            let Some(hash) = unhex(&hash) else { continue };
            k.hash = hash;
            k.credits = k.credits.saturating_add(k.leased);
            k.leased = 0;
            t.key_ids_by_hash.insert(hash, k.id.clone());
            t.keys.insert(k.id.clone(), k);
        }
        for (hash, mut n) in snap.nodes {
            let Some(hash) = unhex(&hash) else { continue };
            n.hash = hash;
            t.node_ids_by_hash.insert(hash, n.id.clone());
            t.nodes.insert(n.id.clone(), n);
        }
        t.usage_log = snap.usage_log.into();
        t.usage_next = snap.usage_next;
        t.credit_ops = snap.credit_ops.into_iter().collect();
        Ok(MemoryStore {
            shared: Arc::new(Shared {
                tables: Mutex::new(t),
                snapshot: Some(file),
            }),
            ..MemoryStore::default()
        })
    }

    /// Writes the snapshot (atomically, durably, owner-only) if anything changed since
    /// the last write. A no-op without a snapshot file. Blocks on file IO.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self) -> std::io::Result<()> {
        let upto = self.with(|t| t.generation);
        self.shared.save_upto(upto)
    }
}

impl Store for MemoryStore {
    async fn create_key(
        &self,
        name: &str,
        credits: u64,
    ) -> Result<(KeyRecord, String), StoreError> {
        if credits > MAX_BALANCE {
            return Err(StoreError::OverMaximum);
        }
        let secret = secrets::generate("tk");
        let rec = KeyRecord {
            id: short_id("k"),
            name: name.to_owned(),
            credits,
            leased: 0,
            bytes_up: 0,
            bytes_down: 0,
            connections: 0,
            overdraft: 0,
            revoked: false,
            created_unix: now_unix(),
            hash: secrets::hash(&secret),
        };
        let ((), generation) = self.change(|t| {
            t.key_ids_by_hash.insert(rec.hash, rec.id.clone());
            t.keys.insert(rec.id.clone(), rec.clone());
        });
        self.persist(generation).await?;
        let _ = self
            .events
            .send(KeyEvent::Created(known_keys::tag(&rec.hash)));
        Ok((rec, secret))
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let mut keys: Vec<_> = self.with(|t| t.keys.values().cloned().collect());
        keys.sort_by_key(|k| (k.created_unix, k.id.clone()));
        Ok(keys)
    }

    async fn key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        self.with(|t| t.keys.get(id).cloned())
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    async fn key_by_hash(&self, hash: SecretHash) -> Result<Option<KeyRecord>, StoreError> {
        Ok(self.with(|t| {
            let id = t.key_ids_by_hash.get(&hash)?;
            t.keys
                .get(id)
                .filter(|k| secrets::same(&k.hash, &hash))
                .cloned()
        }))
    }

    async fn add_credits(&self, id: &str, bytes: u64) -> Result<KeyRecord, StoreError> {
        let (rec, generation) = self.change(|t| top_up(t, id, bytes));
        let rec = rec?;
        self.persist(generation).await?;
        let _ = self.events.send(KeyEvent::ToppedUp(id.into()));
        Ok(rec)
    }

    async fn add_credits_once(&self, id: &str, bytes: u64, op: &str) -> Result<bool, StoreError> {
        // Per key, as the Redis store keeps them (a field of the key's hash).
        let marker = format!("{id} {op}");
        let (applied, generation) = self.change(|t| {
            if !t.keys.contains_key(id) {
                return Err(StoreError::NotFound(id.to_owned()));
            }
            if t.credit_ops.contains(&marker) {
                return Ok(false);
            }
            top_up(t, id, bytes)?;
            t.credit_ops.insert(marker);
            Ok(true)
        });
        let applied = applied?;
        // Persisted even when nothing changed now: the first call may have returned
        // before its snapshot was written (a crash); this one returns once it is.
        self.persist(generation).await?;
        if applied {
            let _ = self.events.send(KeyEvent::ToppedUp(id.into()));
        }
        Ok(applied)
    }

    async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        let (found, generation) = self.change(|t| {
            let k = t
                .keys
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            k.revoked = true;
            Ok::<_, StoreError>(())
        });
        found?;
        // Servers drop the key at once, even if the snapshot write below fails.
        let _ = self.events.send(KeyEvent::Revoked(id.into()));
        self.persist(generation).await
    }

    async fn lease(
        &self,
        terms: &LeaseTerms,
        request: &LeaseRequest,
    ) -> Result<LeaseAnswer, StoreError> {
        self.change(|t| lease::lease_in(t, terms, request)).0
    }

    async fn usage_since(
        &self,
        cursor: &str,
        max: usize,
    ) -> Result<(Vec<UsageEntry>, String), StoreError> {
        let after: u64 = cursor.parse().unwrap_or(0);
        Ok(self.with(|t| {
            let entries: Vec<(u64, UsageEntry)> = t
                .usage_log
                .iter()
                .filter(|(id, _)| *id > after)
                .take(max)
                .cloned()
                .collect();
            let next = entries.last().map_or(after, |(id, _)| *id);
            (
                entries.into_iter().map(|(_, e)| e).collect(),
                next.to_string(),
            )
        }))
    }

    async fn usage_trim(&self, cursor: &str) -> Result<(), StoreError> {
        let upto: u64 = cursor.parse().unwrap_or(0);
        self.change(|t| t.usage_log.retain(|(id, _)| *id > upto));
        Ok(())
    }

    async fn reclaim_expired(&self, share: Share) -> Result<u64, StoreError> {
        // One bucket, 0: the memory store has one server.
        if !share.covers(0) {
            return Ok(0);
        }
        let now = Instant::now();
        let reclaimed = self.with(|t| {
            let mut reclaimed = 0;
            for lease in t.leases.values_mut() {
                if lease.status == LeaseStatus::Live && lease.expires <= now {
                    if let Some(k) = t.keys.get_mut(&lease.key_id) {
                        k.credits = k.credits.saturating_add(lease.amount);
                        k.leased = k.leased.saturating_sub(lease.amount);
                    }
                    lease.amount = 0;
                    lease.status = LeaseStatus::Ended;
                    reclaimed += 1;
                }
            }
            if reclaimed > 0 {
                t.generation += 1;
            }
            reclaimed
        });
        Ok(reclaimed)
    }

    async fn record_connection(&self, record: &ConnRecord, max_len: u64) -> Result<(), StoreError> {
        let fields = feature_fields(record);
        self.with(|t| {
            t.connections.push_back(fields);
            t.connections_next += 1;
            while t.connections.len() as u64 > max_len.max(1) {
                t.connections.pop_front();
            }
        });
        Ok(())
    }

    async fn recent_connections(&self, count: usize) -> Result<Vec<FeatureFields>, StoreError> {
        Ok(self.with(|t| {
            let skip = t.connections.len().saturating_sub(count);
            t.connections.iter().skip(skip).cloned().collect()
        }))
    }

    async fn create_node(
        &self,
        payout_address: Option<&str>,
    ) -> Result<(NodeRecord, String), StoreError> {
        let token = secrets::generate("nt");
        let rec = NodeRecord {
            id: short_id("n"),
            bytes_carried: 0,
            payout_address: payout_address.map(str::to_owned),
            payout_threshold_nano: None,
            revoked: false,
            created_unix: now_unix(),
            hash: secrets::hash(&token),
        };
        let ((), generation) = self.change(|t| {
            t.node_ids_by_hash.insert(rec.hash, rec.id.clone());
            t.nodes.insert(rec.id.clone(), rec.clone());
        });
        self.persist(generation).await?;
        Ok((rec, token))
    }

    async fn node(&self, id: &str) -> Result<NodeRecord, StoreError> {
        self.with(|t| t.nodes.get(id).cloned())
            .ok_or_else(|| StoreError::NotFound(id.to_owned()))
    }

    async fn revoke_node(&self, id: &str) -> Result<(), StoreError> {
        let (found, generation) = self.change(|t| {
            let n = t
                .nodes
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            n.revoked = true;
            Ok::<_, StoreError>(())
        });
        found?;
        self.persist(generation).await?;
        let _ = self.events.send(KeyEvent::NodeRevoked(id.into()));
        Ok(())
    }

    async fn node_by_token_hash(&self, hash: SecretHash) -> Result<Option<NodeRecord>, StoreError> {
        Ok(self.with(|t| {
            let id = t.node_ids_by_hash.get(&hash)?;
            t.nodes
                .get(id)
                .filter(|n| secrets::same(&n.hash, &hash))
                .cloned()
        }))
    }

    async fn set_node_payout(&self, id: &str, address: &str) -> Result<(), StoreError> {
        let same = self.with(|t| {
            let n = t.nodes.get(id);
            n.is_some_and(|n| n.payout_address.as_deref() == Some(address))
        });
        if same {
            // Every node hello repeats it: nothing to write.
            return Ok(());
        }
        let (found, generation) = self.change(|t| {
            let n = t
                .nodes
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            n.payout_address = Some(address.to_owned());
            Ok(())
        });
        found?;
        self.persist(generation).await
    }

    async fn set_node_threshold(&self, id: &str, nano: Option<i64>) -> Result<(), StoreError> {
        let (found, generation) = self.change(|t| {
            let n = t
                .nodes
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            n.payout_threshold_nano = nano.filter(|n| *n > 0);
            Ok(())
        });
        found?;
        self.persist(generation).await
    }

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut nodes: Vec<_> = self.with(|t| t.nodes.values().cloned().collect());
        nodes.sort_by_key(|n| (n.created_unix, n.id.clone()));
        Ok(nodes)
    }

    async fn session_get(&self, key_id: &str, session: &str) -> Result<Option<String>, StoreError> {
        let now = Instant::now();
        Ok(self.with(|t| {
            t.sessions
                .get(&(key_id.to_owned(), session.to_owned()))
                .filter(|(_, until)| *until > now)
                .map(|(node, _)| node.clone())
        }))
    }

    async fn session_put(
        &self,
        key_id: &str,
        session: &str,
        node_id: &str,
        ttl: std::time::Duration,
        replacing: Option<&str>,
    ) -> Result<String, StoreError> {
        let now = Instant::now();
        Ok(self.with(|t| {
            if t.sessions.len() > 100_000 {
                t.sessions.retain(|_, (_, until)| *until > now);
            }
            let slot = (key_id.to_owned(), session.to_owned());
            let current = t
                .sessions
                .get(&slot)
                .filter(|(_, until)| *until > now)
                .map(|(n, _)| n.clone());
            match current {
                Some(c) if Some(c.as_str()) != replacing => c,
                _ => {
                    t.sessions.insert(slot, (node_id.to_owned(), now + ttl));
                    node_id.to_owned()
                }
            }
        }))
    }

    fn events(&self) -> broadcast::Receiver<KeyEvent> {
        self.events.subscribe()
    }
}

mod detect;
mod lease;
#[cfg(test)]
mod tests;

/// Adds `bytes` to key `id`'s credits, within [`MAX_BALANCE`].
fn top_up(t: &mut Tables, id: &str, bytes: u64) -> Result<KeyRecord, StoreError> {
    let k = t
        .keys
        .get_mut(id)
        .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
    let after = k.balance().checked_add(bytes);
    if after.is_none_or(|b| b > MAX_BALANCE) {
        return Err(StoreError::OverMaximum);
    }
    k.credits += bytes;
    Ok(k.clone())
}
