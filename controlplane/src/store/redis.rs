//! Placeholder while the Redis backend is written (replaced before commit).
#![allow(missing_docs, clippy::all)]
use super::*;
use crate::secrets::SecretHash;
use tokio::sync::broadcast;
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseAnswer, LeaseRequest};
pub struct RedisStore;
fn no<T>() -> Result<T, StoreError> {
    Err(StoreError::Unavailable("stub".into()))
}
impl RedisStore {
    pub async fn connect(_: &str) -> Result<Self, StoreError> {
        no()
    }
}
impl Store for RedisStore {
    async fn create_key(&self, _: &str, _: u64) -> Result<(KeyRecord, String), StoreError> {
        no()
    }
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        no()
    }
    async fn key(&self, _: &str) -> Result<KeyRecord, StoreError> {
        no()
    }
    async fn key_by_hash(&self, _: SecretHash) -> Result<Option<KeyRecord>, StoreError> {
        no()
    }
    async fn add_credits(&self, _: &str, _: u64) -> Result<KeyRecord, StoreError> {
        no()
    }
    async fn revoke_key(&self, _: &str) -> Result<(), StoreError> {
        no()
    }
    async fn lease(&self, _: &LeaseTerms, _: &LeaseRequest) -> Result<LeaseAnswer, StoreError> {
        no()
    }
    async fn reclaim_expired(&self) -> Result<u64, StoreError> {
        no()
    }
    async fn record_connection(&self, _: &ConnRecord, _: u64) -> Result<(), StoreError> {
        no()
    }
    async fn recent_connections(&self, _: usize) -> Result<Vec<FeatureFields>, StoreError> {
        no()
    }
    async fn create_node(&self) -> Result<(NodeRecord, String), StoreError> {
        no()
    }
    async fn node_by_token_hash(&self, _: SecretHash) -> Result<Option<NodeRecord>, StoreError> {
        no()
    }
    async fn list_nodes(&self) -> Result<Vec<NodeRecord>, StoreError> {
        no()
    }
    fn events(&self) -> broadcast::Receiver<KeyEvent> {
        broadcast::channel(1).1
    }
}
