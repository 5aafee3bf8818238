//! The backend chosen at start-up (`--store memory` or `--store redis://…`), behind the
//! same [`Store`] trait.

use tokio::sync::broadcast;
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseAnswer, LeaseRequest};

use super::{
    FeatureFields, KeyRecord, LeaseTerms, MemoryStore, NodeRecord, RedisStore, Share, Store,
    StoreError, UsageEntry,
};
use crate::secrets::SecretHash;

/// Either backend.
pub enum AnyStore {
    /// The embedded in-memory store.
    Memory(Box<MemoryStore>),
    /// A shared Redis.
    Redis(Box<RedisStore>),
}

impl AnyStore {
    /// Saves the memory store's snapshot (Redis persists by itself).
    pub fn save(&self) {
        if let AnyStore::Memory(m) = self {
            if let Err(e) = m.save() {
                tracing::warn!(error = %e, "could not save the memory store snapshot");
            }
        }
    }

    /// Opens the store named by `spec`: `memory`, or a `redis://` URL.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when Redis cannot be reached.
    pub async fn open(spec: &str) -> Result<AnyStore, StoreError> {
        AnyStore::open_in(spec, None).await
    }

    /// Like [`AnyStore::open`]; the memory store keeps its snapshot in `data_dir`.
    ///
    /// # Errors
    /// As [`AnyStore::open`], or when the memory snapshot cannot be read.
    pub async fn open_in(
        spec: &str,
        data_dir: Option<&std::path::Path>,
    ) -> Result<AnyStore, StoreError> {
        if spec == "memory" {
            Ok(AnyStore::Memory(Box::new(match data_dir {
                Some(dir) => MemoryStore::with_snapshot(dir.join("memory-store.json"))
                    .map_err(|e| StoreError::Unavailable(format!("memory snapshot: {e}")))?,
                None => MemoryStore::default(),
            })))
        } else {
            Ok(AnyStore::Redis(Box::new(RedisStore::connect(spec).await?)))
        }
    }
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            AnyStore::Memory($s) => $e,
            AnyStore::Redis($s) => $e,
        }
    };
}

impl Store for AnyStore {
    async fn create_key(
        &self,
        name: &str,
        credits: u64,
    ) -> Result<(KeyRecord, String), StoreError> {
        delegate!(self, s => s.create_key(name, credits).await)
    }
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        delegate!(self, s => s.list_keys().await)
    }
    async fn key(&self, id: &str) -> Result<KeyRecord, StoreError> {
        delegate!(self, s => s.key(id).await)
    }
    async fn key_by_hash(&self, hash: SecretHash) -> Result<Option<KeyRecord>, StoreError> {
        delegate!(self, s => s.key_by_hash(hash).await)
    }
    async fn add_credits(&self, id: &str, bytes: u64) -> Result<KeyRecord, StoreError> {
        delegate!(self, s => s.add_credits(id, bytes).await)
    }
    async fn add_credits_once(&self, id: &str, bytes: u64, op: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.add_credits_once(id, bytes, op).await)
    }
    async fn revoke_key(&self, id: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.revoke_key(id).await)
    }
    async fn lease(
        &self,
        terms: &LeaseTerms,
        request: &LeaseRequest,
    ) -> Result<LeaseAnswer, StoreError> {
        delegate!(self, s => s.lease(terms, request).await)
    }
    async fn usage_since(
        &self,
        cursor: &str,
        max: usize,
    ) -> Result<(Vec<UsageEntry>, String), StoreError> {
        delegate!(self, s => s.usage_since(cursor, max).await)
    }
    async fn usage_trim(&self, cursor: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.usage_trim(cursor).await)
    }
    async fn reclaim_expired(&self, share: Share) -> Result<u64, StoreError> {
        delegate!(self, s => s.reclaim_expired(share).await)
    }
    async fn record_connection(&self, record: &ConnRecord, max_len: u64) -> Result<(), StoreError> {
        delegate!(self, s => s.record_connection(record, max_len).await)
    }
    async fn recent_connections(&self, count: usize) -> Result<Vec<FeatureFields>, StoreError> {
        delegate!(self, s => s.recent_connections(count).await)
    }
    async fn create_node(
        &self,
        payout_address: Option<&str>,
    ) -> Result<(NodeRecord, String), StoreError> {
        delegate!(self, s => s.create_node(payout_address).await)
    }

    async fn node(&self, id: &str) -> Result<NodeRecord, StoreError> {
        delegate!(self, s => s.node(id).await)
    }

    async fn revoke_node(&self, id: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.revoke_node(id).await)
    }
    async fn node_by_token_hash(&self, hash: SecretHash) -> Result<Option<NodeRecord>, StoreError> {
        delegate!(self, s => s.node_by_token_hash(hash).await)
    }
    async fn set_node_payout(&self, id: &str, address: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.set_node_payout(id, address).await)
    }
    async fn set_node_threshold(&self, id: &str, nano: Option<i64>) -> Result<(), StoreError> {
        delegate!(self, s => s.set_node_threshold(id, nano).await)
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        delegate!(self, s => s.list_nodes().await)
    }
    async fn session_get(&self, key_id: &str, session: &str) -> Result<Option<String>, StoreError> {
        delegate!(self, s => s.session_get(key_id, session).await)
    }
    async fn session_put(
        &self,
        key_id: &str,
        session: &str,
        node_id: &str,
        ttl: std::time::Duration,
        replacing: Option<&str>,
    ) -> Result<String, StoreError> {
        delegate!(self, s => s.session_put(key_id, session, node_id, ttl, replacing).await)
    }
    fn events(&self) -> broadcast::Receiver<KeyEvent> {
        delegate!(self, s => s.events())
    }
    fn errors(&self) -> u64 {
        delegate!(self, s => s.errors())
    }
}

impl super::detect::DetectStore for AnyStore {
    async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        delegate!(self, s => s.shared_secret(name).await)
    }
    async fn conns_read(
        &self,
        group: &str,
        consumer: &str,
        pending: bool,
        count: usize,
    ) -> Result<Vec<super::detect::StreamEntry>, StoreError> {
        delegate!(self, s => s.conns_read(group, consumer, pending, count).await)
    }
    async fn conns_ack(&self, group: &str, ids: &[String]) -> Result<(), StoreError> {
        delegate!(self, s => s.conns_ack(group, ids).await)
    }
    async fn window_put(
        &self,
        window_ms: u64,
        parts: &[(String, String)],
    ) -> Result<(), StoreError> {
        delegate!(self, s => s.window_put(window_ms, parts).await)
    }
    async fn window_parts(&self, window_ms: u64) -> Result<Vec<(String, String)>, StoreError> {
        delegate!(self, s => s.window_parts(window_ms).await)
    }
    async fn window_claim(&self, window_ms: u64, owner: &str) -> Result<bool, StoreError> {
        delegate!(self, s => s.window_claim(window_ms, owner).await)
    }
    async fn history_push(&self, rows: &[String], cap: usize) -> Result<(), StoreError> {
        delegate!(self, s => s.history_push(rows, cap).await)
    }
    async fn history(&self, max: usize) -> Result<Vec<String>, StoreError> {
        delegate!(self, s => s.history(max).await)
    }
    async fn model_put(&self, model: &str) -> Result<u64, StoreError> {
        delegate!(self, s => s.model_put(model).await)
    }
    async fn model_latest(&self) -> Result<Option<(u64, String)>, StoreError> {
        delegate!(self, s => s.model_latest().await)
    }
    async fn verdict_put(&self, verdict: &super::detect::Verdict) -> Result<(), StoreError> {
        delegate!(self, s => s.verdict_put(verdict).await)
    }
    async fn verdicts(&self) -> Result<Vec<super::detect::Verdict>, StoreError> {
        delegate!(self, s => s.verdicts().await)
    }
    async fn publish_policy(&self, key_id: &str, rules: &str) -> Result<(), StoreError> {
        delegate!(self, s => s.publish_policy(key_id, rules).await)
    }
}
