//! Where keys, balances, node tokens and usage live.
//!
//! Data model (the Redis backend of the control-plane issue keeps the same shape):
//! - **key**: `id`, `name`, SHA-256 of the secret, `credits` (bytes left), `bytes_up`,
//!   `bytes_down`, `connections`, `revoked`, `created_unix`. Looked up by hash.
//! - **node**: `id`, SHA-256 of its token, `bytes_carried`, `created_unix`. Looked up by
//!   token hash.
//!
//! [`MemoryStore`] is the embedded default: it lives in this process and is lost on
//! exit. Every backend passes [`suite::run`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::secrets::{self, SecretHash};

/// A customer API key, without its secret.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct KeyRecord {
    /// Stable id (`k_…`), safe to log.
    pub id: String,
    /// Operator-chosen label.
    pub name: String,
    /// Bytes the key may still relay.
    pub credits: u64,
    /// Bytes relayed customer -> target.
    pub bytes_up: u64,
    /// Bytes relayed target -> customer.
    pub bytes_down: u64,
    /// Connections relayed.
    pub connections: u64,
    /// Revoked keys authorize nothing.
    pub revoked: bool,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    #[serde(skip)]
    hash: SecretHash,
}

/// A node identity created by an invite.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct NodeRecord {
    /// Stable id (`n_…`).
    pub id: String,
    /// Bytes this node carried (counted on the server).
    pub bytes_carried: u64,
    /// Creation time, Unix seconds.
    pub created_unix: u64,
    #[serde(skip)]
    hash: SecretHash,
}

/// Store failures.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// No key or node with that id.
    #[error("not found: {0}")]
    NotFound(String),
    /// The backend is unreachable.
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

/// The operations the control plane needs from a store.
pub trait Store: Send + Sync + 'static {
    /// Creates a key with `credits` bytes; returns it and its secret (shown once).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn create_key(
        &self,
        name: &str,
        credits: u64,
    ) -> impl Future<Output = Result<(KeyRecord, String), StoreError>> + Send;
    /// Every key.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn list_keys(&self) -> impl Future<Output = Result<Vec<KeyRecord>, StoreError>> + Send;
    /// The key whose secret hashes to `hash`, compared in constant time.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn key_by_hash(
        &self,
        hash: SecretHash,
    ) -> impl Future<Output = Result<Option<KeyRecord>, StoreError>> + Send;
    /// Adds credits to a key.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn add_credits(
        &self,
        id: &str,
        bytes: u64,
    ) -> impl Future<Output = Result<KeyRecord, StoreError>> + Send;
    /// Revokes a key.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn revoke_key(&self, id: &str) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Records one finished connection: debits `up + down` (saturating at zero).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn debit(
        &self,
        key_id: &str,
        up: u64,
        down: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Creates a node identity; returns it and its token (shown once).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn create_node(&self) -> impl Future<Output = Result<(NodeRecord, String), StoreError>> + Send;
    /// The node whose token hashes to `hash`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn node_by_token_hash(
        &self,
        hash: SecretHash,
    ) -> impl Future<Output = Result<Option<NodeRecord>, StoreError>> + Send;
    /// Every node identity.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn list_nodes(&self) -> impl Future<Output = Result<Vec<NodeRecord>, StoreError>> + Send;
    /// Adds bytes carried by a node.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] or [`StoreError::Unavailable`].
    fn add_node_bytes(
        &self,
        id: &str,
        bytes: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn short_id(prefix: &str) -> String {
    let b: [u8; 8] = rand::random();
    format!("{prefix}_{}", hex::encode(b))
}

#[derive(Default)]
struct Tables {
    keys: HashMap<String, KeyRecord>,
    key_ids_by_hash: HashMap<SecretHash, String>,
    nodes: HashMap<String, NodeRecord>,
    node_ids_by_hash: HashMap<SecretHash, String>,
}

/// The embedded in-memory store.
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    fn with<R>(&self, f: impl FnOnce(&mut Tables) -> R) -> R {
        let mut t = self.tables.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut t)
    }
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
            bytes_up: 0,
            bytes_down: 0,
            connections: 0,
            revoked: false,
            created_unix: now_unix(),
            hash: secrets::hash(&secret),
        };
        self.with(|t| {
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
        self.with(|t| {
            let k = t
                .keys
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            k.credits = k.credits.saturating_add(bytes);
            Ok(k.clone())
        })
    }

    async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        self.with(|t| {
            let k = t
                .keys
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            k.revoked = true;
            Ok(())
        })
    }

    async fn debit(&self, key_id: &str, up: u64, down: u64) -> Result<(), StoreError> {
        self.with(|t| {
            let k = t
                .keys
                .get_mut(key_id)
                .ok_or_else(|| StoreError::NotFound(key_id.to_owned()))?;
            k.credits = k.credits.saturating_sub(up.saturating_add(down));
            k.bytes_up = k.bytes_up.saturating_add(up);
            k.bytes_down = k.bytes_down.saturating_add(down);
            k.connections = k.connections.saturating_add(1);
            Ok(())
        })
    }

    async fn create_node(&self) -> Result<(NodeRecord, String), StoreError> {
        let token = secrets::generate("nt");
        let rec = NodeRecord {
            id: short_id("n"),
            bytes_carried: 0,
            created_unix: now_unix(),
            hash: secrets::hash(&token),
        };
        self.with(|t| {
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

    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        let mut nodes: Vec<_> = self.with(|t| t.nodes.values().cloned().collect());
        nodes.sort_by_key(|n| (n.created_unix, n.id.clone()));
        Ok(nodes)
    }

    async fn add_node_bytes(&self, id: &str, bytes: u64) -> Result<(), StoreError> {
        self.with(|t| {
            let n = t
                .nodes
                .get_mut(id)
                .ok_or_else(|| StoreError::NotFound(id.to_owned()))?;
            n.bytes_carried = n.bytes_carried.saturating_add(bytes);
            Ok(())
        })
    }
}

/// The behaviour every [`Store`] backend must have.
pub mod suite {
    use super::*;

    /// Runs the whole suite against `store` (which must be empty).
    ///
    /// # Panics
    /// On the first behaviour that differs.
    pub async fn run<S: Store>(store: &S) {
        let (k, secret) = store.create_key("alice", 1000).await.expect("create");
        assert!(secret.starts_with("tk_"));
        assert_eq!(k.credits, 1000);
        let found = store
            .key_by_hash(secrets::hash(&secret))
            .await
            .expect("lookup");
        assert_eq!(found.as_ref().map(|k| &k.id), Some(&k.id));
        assert!(store
            .key_by_hash(secrets::hash("tk_wrong"))
            .await
            .expect("lookup")
            .is_none());
        store.debit(&k.id, 300, 200).await.expect("usage");
        let after = store
            .key_by_hash(secrets::hash(&secret))
            .await
            .expect("x")
            .expect("k");
        assert_eq!(
            (
                after.credits,
                after.bytes_up,
                after.bytes_down,
                after.connections
            ),
            (500, 300, 200, 1)
        );
        store.debit(&k.id, 10_000, 0).await.expect("usage");
        let drained = store
            .key_by_hash(secrets::hash(&secret))
            .await
            .expect("x")
            .expect("k");
        assert_eq!(drained.credits, 0, "debits saturate at zero");
        assert_eq!(
            store.add_credits(&k.id, 42).await.expect("topup").credits,
            42
        );
        assert!(matches!(
            store.add_credits("k_missing", 1).await,
            Err(StoreError::NotFound(_))
        ));
        store.revoke_key(&k.id).await.expect("revoke");
        let revoked = store
            .key_by_hash(secrets::hash(&secret))
            .await
            .expect("x")
            .expect("k");
        assert!(revoked.revoked);
        assert_eq!(store.list_keys().await.expect("list").len(), 1);

        let (n, token) = store.create_node().await.expect("node");
        assert!(token.starts_with("nt_"));
        let found = store
            .node_by_token_hash(secrets::hash(&token))
            .await
            .expect("lookup");
        assert_eq!(found.map(|f| f.id), Some(n.id.clone()));
        store.add_node_bytes(&n.id, 77).await.expect("bytes");
        let listed = store.list_nodes().await.expect("list");
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].bytes_carried, 77);
    }
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_suite() {
        super::suite::run(&super::MemoryStore::default()).await;
    }
}
