//! The embedded in-memory [`Store`]: the demo's default. One mutex guards all tables;
//! every operation is a short critical section, so each is atomic like the Redis
//! scripts it mirrors.
//!
//! With a snapshot file (`DATA_DIR/memory-store.json`, written by `turbo-server run`),
//! keys and node identities survive a restart: the file is rewritten atomically every
//! second while something changed, and at shutdown after the leases are settled. On
//! load, leases that were outstanding (a crash) go back to their keys' balances, as
//! Redis reclaims an expired lease; what a crash can lose is the usage of the last
//! second and the bytes relayed but not yet checkpointed, bounded like a lease.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use tokio::sync::broadcast;
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseAnswer, LeaseRequest};

use super::{
    feature_fields, grant_size, now_unix, short_id, FeatureFields, KeyRecord, LeaseTerms,
    NodeRecord, Store, StoreError,
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
    sessions: HashMap<(String, String), (String, Instant)>,
}

/// The embedded in-memory store.
pub struct MemoryStore {
    tables: Mutex<Tables>,
    events: broadcast::Sender<KeyEvent>,
    snapshot: Option<std::path::PathBuf>,
    dirty: std::sync::atomic::AtomicBool,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore {
            tables: Mutex::new(Tables::default()),
            events: broadcast::channel(1024).0,
            snapshot: None,
            dirty: std::sync::atomic::AtomicBool::new(false),
        }
    }
}

/// What the snapshot file holds: records with their secrets' hashes (hex).
#[derive(serde::Serialize, serde::Deserialize, Default)]
struct Snapshot {
    keys: Vec<(String, KeyRecord)>,
    nodes: Vec<(String, NodeRecord)>,
}

fn unhex(s: &str) -> Option<SecretHash> {
    let v = hex::decode(s).ok()?;
    v.try_into().ok()
}

impl MemoryStore {
    fn with<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }

    /// Like [`MemoryStore::with`], for changes to what the snapshot holds (keys,
    /// balances, usage, nodes): the next [`MemoryStore::save`] writes them. Lookups,
    /// sessions and connection records do not make the snapshot dirty.
    fn change<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        self.with(f)
    }

    /// A store kept in `path`: loaded from it when it exists (outstanding leases go
    /// back to their keys), saved by [`MemoryStore::save`].
    ///
    /// # Errors
    /// When the file exists but cannot be read or parsed.
    pub fn with_snapshot(path: std::path::PathBuf) -> std::io::Result<Self> {
        let mut store = MemoryStore {
            snapshot: Some(path.clone()),
            ..MemoryStore::default()
        };
        let snap: Snapshot = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Snapshot::default(),
            Err(e) => return Err(e),
        };
        let t = store.tables.get_mut().unwrap_or_else(|p| p.into_inner());
        for (hash, mut k) in snap.keys {
            let Some(hash) = unhex(&hash) else { continue };
            k.hash = hash;
            k.credits += k.leased;
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
        Ok(store)
    }

    /// Writes the snapshot (atomically, owner-only) if anything changed since the last
    /// save. A no-op without a snapshot file.
    ///
    /// # Errors
    /// When the file cannot be written.
    pub fn save(&self) -> std::io::Result<()> {
        let Some(path) = &self.snapshot else {
            return Ok(());
        };
        if !self.dirty.swap(false, std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        let snap = {
            let t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
            Snapshot {
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
            }
        };
        let bytes = serde_json::to_vec(&snap).map_err(std::io::Error::other)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        {
            use std::io::Write;
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
            let mut f = opts.open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, path)
    }
}

fn lease_in(
    t: &mut Tables,
    terms: &LeaseTerms,
    req: &LeaseRequest,
) -> Result<LeaseAnswer, StoreError> {
    let key_id = req.key_id.to_string();
    let Tables {
        keys,
        nodes,
        leases,
        ..
    } = t;
    let key = keys
        .get_mut(&key_id)
        .ok_or_else(|| StoreError::NotFound(key_id.clone()))?;
    let lease = leases.get_mut(&*req.lease_id);
    if let Some(l) = &lease {
        if req.seq <= l.seq {
            return Ok(LeaseAnswer {
                granted: l.last_granted,
                held: l.amount,
                credits: key.credits,
                revoked: key.revoked,
                ended: l.status == LeaseStatus::Ended,
            });
        }
    }
    let ended = lease
        .as_ref()
        .is_some_and(|l| l.status == LeaseStatus::Ended);
    let mut amount = lease.as_ref().map_or(0, |l| l.amount);
    let spent = req.usage.bytes();
    let from_lease = spent.min(amount);
    amount -= from_lease;
    key.leased -= from_lease;
    let rest = spent - from_lease;
    let charged = rest.min(key.credits);
    key.credits -= charged;
    key.overdraft += rest - charged;
    key.bytes_up += req.usage.up;
    key.bytes_down += req.usage.down;
    key.connections += req.usage.connections;
    for (node, bytes) in &req.usage.nodes {
        if let Some(n) = nodes.get_mut(&**node) {
            n.bytes_carried += bytes;
        }
    }
    let mut granted = 0;
    let status = if req.release || ended {
        key.credits += amount;
        key.leased -= amount;
        amount = 0;
        LeaseStatus::Ended
    } else {
        if !key.revoked {
            granted = grant_size(req.want, key.credits);
        }
        key.credits -= granted;
        key.leased += granted;
        amount += granted;
        LeaseStatus::Live
    };
    leases.insert(
        req.lease_id.to_string(),
        Lease {
            key_id,
            amount,
            seq: req.seq,
            last_granted: granted,
            status,
            expires: Instant::now() + terms.ttl,
        },
    );
    Ok(LeaseAnswer {
        granted,
        held: amount,
        credits: key.credits,
        revoked: key.revoked,
        ended,
    })
}

impl Store for MemoryStore {
    async fn create_key(
        &self,
        name: &str,
        credits: u64,
    ) -> Result<(KeyRecord, String), StoreError> {
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
        self.change(|t| {
            t.key_ids_by_hash.insert(rec.hash, rec.id.clone());
            t.keys.insert(rec.id.clone(), rec.clone());
        });
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
        let rec = self.change(|t| {
            let k = t
                .keys
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            k.credits = k.credits.saturating_add(bytes);
            Ok(k.clone())
        })?;
        let _ = self.events.send(KeyEvent::ToppedUp(id.into()));
        Ok(rec)
    }

    async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        self.change(|t| {
            let k = t
                .keys
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            k.revoked = true;
            Ok::<_, StoreError>(())
        })?;
        let _ = self.events.send(KeyEvent::Revoked(id.into()));
        Ok(())
    }

    async fn lease(
        &self,
        terms: &LeaseTerms,
        request: &LeaseRequest,
    ) -> Result<LeaseAnswer, StoreError> {
        self.change(|t| lease_in(t, terms, request))
    }

    async fn reclaim_expired(&self) -> Result<u64, StoreError> {
        let now = Instant::now();
        let reclaimed = self.with(|t| {
            let mut reclaimed = 0;
            for lease in t.leases.values_mut() {
                if lease.status == LeaseStatus::Live && lease.expires <= now {
                    if let Some(k) = t.keys.get_mut(&lease.key_id) {
                        k.credits += lease.amount;
                        k.leased -= lease.amount;
                    }
                    lease.amount = 0;
                    lease.status = LeaseStatus::Ended;
                    reclaimed += 1;
                }
            }
            reclaimed
        });
        if reclaimed > 0 {
            self.dirty.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(reclaimed)
    }

    async fn record_connection(&self, record: &ConnRecord, max_len: u64) -> Result<(), StoreError> {
        let fields = feature_fields(record);
        self.with(|t| {
            t.connections.push_back(fields);
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

    async fn create_node(&self) -> Result<(NodeRecord, String), StoreError> {
        let token = secrets::generate("nt");
        let rec = NodeRecord {
            id: short_id("n"),
            bytes_carried: 0,
            payout_address: None,
            created_unix: now_unix(),
            hash: secrets::hash(&token),
        };
        self.change(|t| {
            t.node_ids_by_hash.insert(rec.hash, rec.id.clone());
            t.nodes.insert(rec.id.clone(), rec.clone());
        });
        Ok((rec, token))
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
        self.change(|t| {
            let n = t
                .nodes
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            n.payout_address = Some(address.to_owned());
            Ok(())
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn snapshot_keeps_keys_and_nodes_and_returns_leases() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("memory-store.json");
        let store = MemoryStore::with_snapshot(path.clone()).expect("new");
        let (key, secret) = store.create_key("alice", 1000).await.expect("key");
        let (node, token) = store.create_node().await.expect("node");
        // A lease outstanding at the snapshot (as after a crash).
        store.change(|t| {
            let k = t.keys.get_mut(&key.id).expect("key");
            k.credits -= 300;
            k.leased += 300;
        });
        store.save().expect("save");
        // Lookups leave the snapshot clean: nothing is rewritten for them.
        store
            .key_by_hash(secrets::hash(&secret))
            .await
            .expect("lookup");
        assert!(!store.dirty.load(std::sync::atomic::Ordering::Relaxed));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = MemoryStore::with_snapshot(path).expect("load");
        let k = back
            .key_by_hash(secrets::hash(&secret))
            .await
            .expect("lookup")
            .expect("kept");
        assert_eq!(
            (k.id.as_str(), k.credits, k.leased),
            (key.id.as_str(), 1000, 0)
        );
        let n = back
            .node_by_token_hash(secrets::hash(&token))
            .await
            .expect("lookup")
            .expect("kept");
        assert_eq!(n.id, node.id);
    }
}
