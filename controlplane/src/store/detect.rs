//! What the abuse detector ([`crate::detect`]) keeps in the store, beside [`super::Store`]:
//! its consumer group on the feature stream, the per-window partial summaries that
//! servers merge, the history its model trains on, the versioned models, and the
//! verdicts with the restrictions they put on keys. One concern, one trait; both
//! backends implement it and the same suite tests them.

use std::collections::BTreeMap;
use std::future::Future;

use serde::{Deserialize, Serialize};

use super::{FeatureFields, StoreError};

/// A feature record read through the consumer group: its stream id and fields.
pub type StreamEntry = (String, FeatureFields);

/// What a verdict does to its key, mildest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Logged and shown; nothing enforced.
    Observe,
    /// New tunnels per second limited.
    Throttle,
    /// One site blocked for the key.
    BlockTarget,
    /// No new tunnel at all.
    Suspend,
}

impl Action {
    /// The next step of the ladder (suspend stays suspend).
    pub fn escalated(self) -> Action {
        match self {
            Action::Observe => Action::Throttle,
            Action::Throttle | Action::BlockTarget => Action::Suspend,
            Action::Suspend => Action::Suspend,
        }
    }

    /// Its name in the API and logs.
    pub fn name(self) -> &'static str {
        match self {
            Action::Observe => "observe",
            Action::Throttle => "throttle",
            Action::BlockTarget => "block_target",
            Action::Suspend => "suspend",
        }
    }
}

/// One decision about one key in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Verdict {
    /// `v_…`.
    pub id: String,
    /// The key it restricts.
    pub key_id: String,
    /// What it does.
    pub action: Action,
    /// The rule that fired, or `outlier` for the model.
    pub reason: String,
    /// The window's features (name → value).
    pub features: BTreeMap<String, f64>,
    /// The features that drove it, strongest first.
    pub drivers: Vec<String>,
    /// The site a [`Action::BlockTarget`] blocks (hex identity).
    pub target: Option<String>,
    /// New tunnels per second a [`Action::Throttle`] allows.
    pub tunnels_per_sec: Option<u32>,
    /// Bytes per second a [`Action::Throttle`] allows the key's tunnels together.
    #[serde(default)]
    pub bytes_per_sec: Option<u64>,
    /// The window it judged, Unix milliseconds of its start.
    pub window_unix_ms: u64,
    /// When it was made, Unix milliseconds.
    pub created_unix_ms: u64,
    /// When it ends, Unix milliseconds.
    pub expires_at: u64,
    /// The model version that scored the window (0: rules only).
    pub model_version: u64,
    /// Set when an admin lifted it: when, Unix milliseconds.
    pub lifted_unix_ms: Option<u64>,
}

impl Verdict {
    /// Whether it restricts its key at `now_unix_ms`.
    pub fn in_force(&self, now_unix_ms: u64) -> bool {
        self.lifted_unix_ms.is_none() && self.expires_at > now_unix_ms
    }
}

/// The detector's state in the store.
pub trait DetectStore: Send + Sync {
    /// A 32-byte secret that every server of the network shares, created by the first
    /// that asks (`name` tells secrets apart).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn shared_secret(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<[u8; 32], StoreError>> + Send;
    /// Up to `count` feature records for `consumer` of consumer group `group`: the ones
    /// it was given before and has not acknowledged when `pending`, else new ones.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn conns_read(
        &self,
        group: &str,
        consumer: &str,
        pending: bool,
        count: usize,
    ) -> impl Future<Output = Result<Vec<StreamEntry>, StoreError>> + Send;
    /// Acknowledges records of `group` (their windows are written).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn conns_ack(
        &self,
        group: &str,
        ids: &[String],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Writes (or rewrites) one server's partial summaries of window `window_ms`, by
    /// field (`<key id>|<consumer>`).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn window_put(
        &self,
        window_ms: u64,
        parts: &[(String, String)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every partial summary of window `window_ms`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn window_parts(
        &self,
        window_ms: u64,
    ) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;
    /// Claims the scoring of window `window_ms` for `owner`: true for exactly one caller.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn window_claim(
        &self,
        window_ms: u64,
        owner: &str,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;
    /// Appends scored windows to the training history, keeping the newest `cap`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn history_push(
        &self,
        rows: &[String],
        cap: usize,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
    /// The newest `max` history rows.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn history(&self, max: usize) -> impl Future<Output = Result<Vec<String>, StoreError>> + Send;
    /// Stores a model; returns its version (1, 2, …). The last ten versions are kept.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn model_put(&self, model: &str) -> impl Future<Output = Result<u64, StoreError>> + Send;
    /// The newest model and its version.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn model_latest(
        &self,
    ) -> impl Future<Output = Result<Option<(u64, String)>, StoreError>> + Send;
    /// Stores (or replaces) a verdict.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn verdict_put(&self, verdict: &Verdict)
        -> impl Future<Output = Result<(), StoreError>> + Send;
    /// Every verdict kept (those ended more than a day ago are forgotten).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn verdicts(&self) -> impl Future<Output = Result<Vec<Verdict>, StoreError>> + Send;
    /// Tells every server that `key_id`'s restrictions are now `rules` (the text of
    /// [`crate::detect::policy`]).
    ///
    /// # Errors
    /// [`StoreError::Unavailable`].
    fn publish_policy(
        &self,
        key_id: &str,
        rules: &str,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;
}
