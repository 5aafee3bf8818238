//! The detector's task on each server: read the feature stream through the consumer
//! group, summarise per key and window, write a window's summaries once it is over and
//! only then acknowledge its records, and score the windows this server claims.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast::error::RecvError;
use tracing::{debug, info, warn};
use turbo_dataplane::control::KeyEvent;

use super::hbos::Model;
use super::judge::{judge, HistoryRow, Window};
use super::verdicts::{self, now_ms};
use super::window::{record_key, Features, Partial};
use super::{rules, DetectConfig};
use crate::store::detect::DetectStore;
use crate::store::{Store, StoreError};

/// The consumer group every server joins.
pub const GROUP: &str = "detect";
/// Records read per call.
const BATCH: usize = 1000;
/// History rows read for a key's usual rate.
const RECENT_ROWS: usize = 2000;

/// A stored model with when it was trained.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredModel {
    trained_unix_ms: u64,
    model: Model,
}

/// One server's detector.
pub struct Detector<S> {
    store: Arc<S>,
    cfg: DetectConfig,
    /// This server's stable consumer name (it resumes its pending records by it).
    consumer: String,
    partials: BTreeMap<u64, HashMap<String, Partial>>,
    unacked: BTreeMap<u64, Vec<String>>,
    pending_done: bool,
    next_window: u64,
    model: Option<(u64, Model, u64)>,
    status: Arc<super::Status>,
}

impl<S: Store + DetectStore + 'static> Detector<S> {
    /// A detector reading as `consumer`.
    pub fn new(
        store: Arc<S>,
        cfg: DetectConfig,
        consumer: String,
        status: Arc<super::Status>,
    ) -> Self {
        let window = cfg.window.as_millis() as u64;
        Detector {
            store,
            consumer,
            partials: BTreeMap::new(),
            unacked: BTreeMap::new(),
            pending_done: false,
            // The window before this one may still be unscored (a restart).
            next_window: (now_ms() / window).saturating_sub(1) * window,
            model: None,
            status,
            cfg,
        }
    }

    fn window_ms(&self) -> u64 {
        self.cfg.window.as_millis() as u64
    }

    /// Runs until the process ends.
    pub async fn run(mut self) {
        let mut events = self.store.events();
        let tick = (self.cfg.window / 8).clamp(Duration::from_millis(50), Duration::from_secs(1));
        let mut every = tokio::time::interval(tick);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // Restrictions in force are published again now and then: a server that just
        // started (or missed an event) learns them all; repeating one changes nothing.
        let mut republish =
            tokio::time::interval((self.cfg.window * 5).max(Duration::from_secs(10)));
        info!(consumer = %self.consumer, window = ?self.cfg.window, "abuse detector running");
        loop {
            tokio::select! {
                _ = every.tick() => {
                    if let Err(e) = self.step().await {
                        warn!(error = %e, "detector step failed; retrying");
                    }
                }
                _ = republish.tick() => {
                    if let Err(e) = verdicts::publish_all(&*self.store).await {
                        warn!(error = %e, "could not publish the verdicts' restrictions");
                    }
                }
                event = events.recv() => match event {
                    Ok(KeyEvent::Resync) | Err(RecvError::Lagged(_)) => {
                        if let Err(e) = verdicts::publish_all(&*self.store).await {
                            warn!(error = %e, "could not restore the verdicts' restrictions");
                        }
                    }
                    Err(RecvError::Closed) => return,
                    Ok(_) => {}
                },
            }
        }
    }

    /// One pass: read, write what is over, score what is due.
    ///
    /// # Errors
    /// [`StoreError`] from the store; the next pass retries.
    pub async fn step(&mut self) -> Result<(), StoreError> {
        self.read().await?;
        self.flush(now_ms()).await?;
        self.score_due(now_ms()).await
    }

    async fn read(&mut self) -> Result<(), StoreError> {
        for _ in 0..20 {
            let pending = !self.pending_done;
            let batch = self
                .store
                .conns_read(GROUP, &self.consumer, pending, BATCH)
                .await?;
            if pending && batch.len() < BATCH {
                self.pending_done = true;
            }
            let done = batch.len() < BATCH;
            self.status.records.fetch_add(batch.len() as u64, Relaxed);
            self.take(batch);
            if done && self.pending_done {
                break;
            }
        }
        Ok(())
    }

    fn take(&mut self, batch: Vec<(String, crate::store::FeatureFields)>) {
        let w = self.window_ms();
        for (id, fields) in batch {
            let window = record_key(&fields).map(|(key, end)| (key, end / w * w, end % w));
            // A record without a key, or one for a window already scored, is
            // acknowledged with the next window written.
            let Some((key, start, offset)) = window.filter(|(_, s, _)| *s >= self.next_window)
            else {
                self.unacked.entry(self.next_window).or_default().push(id);
                continue;
            };
            let part = self
                .partials
                .entry(start)
                .or_default()
                .entry(key)
                .or_default();
            part.add(&fields, offset, w);
            self.unacked.entry(start).or_default().push(id);
        }
    }

    async fn flush(&mut self, now: u64) -> Result<(), StoreError> {
        let (w, grace) = (self.window_ms(), self.cfg.grace.as_millis() as u64);
        let over: Vec<u64> = self
            .unacked
            .keys()
            .chain(self.partials.keys())
            .copied()
            .filter(|start| start + w + grace <= now)
            .collect();
        for start in over {
            if let Some(parts) = self.partials.remove(&start) {
                let fields: Vec<(String, String)> = parts
                    .iter()
                    .filter_map(|(key, p)| {
                        Some((
                            format!("{key}|{}", self.consumer),
                            serde_json::to_string(p).ok()?,
                        ))
                    })
                    .collect();
                self.store.window_put(start, &fields).await?;
            }
            if let Some(ids) = self.unacked.remove(&start) {
                self.store.conns_ack(GROUP, &ids).await?;
            }
        }
        Ok(())
    }

    async fn score_due(&mut self, now: u64) -> Result<(), StoreError> {
        let (w, grace) = (self.window_ms(), self.cfg.grace.as_millis() as u64);
        while self.next_window + w + 2 * grace <= now {
            let start = self.next_window;
            if self.store.window_claim(start, &self.consumer).await? {
                self.score(start).await?;
                self.status.windows_scored.fetch_add(1, Relaxed);
            }
            self.next_window += w;
            self.status
                .scored_before_ms
                .store(self.next_window, Relaxed);
        }
        Ok(())
    }

    /// Merges window `start`'s summaries, judges every key in it, keeps the rows for
    /// training and records the verdicts.
    async fn score(&mut self, start: u64) -> Result<(), StoreError> {
        let w = self.window_ms();
        let mut keys: BTreeMap<String, Partial> = BTreeMap::new();
        for (field, json) in self.store.window_parts(start).await? {
            let key = field.split('|').next().unwrap_or_default().to_owned();
            if let Ok(part) = serde_json::from_str::<Partial>(&json) {
                keys.entry(key).or_default().merge(&part);
            }
        }
        if keys.is_empty() {
            return Ok(());
        }
        self.refresh_model().await?;
        let usual = self.usual_rates().await?;
        let all = self.store.verdicts().await?;
        let now = now_ms();
        let model = self.model.as_ref().map(|(v, m, _)| (*v, m));
        let (mut rows, mut made) = (Vec::new(), Vec::new());
        let mut features: Vec<Features> = keys
            .iter()
            .map(|(key, part)| Features::of(part, w, usual.get(key).copied()))
            .collect();
        super::window::relative_to_network(&mut features);
        for ((key, part), features) in keys.iter().zip(features) {
            let hits = if self.cfg.rules {
                rules::check(part, &features, w, &self.cfg)
            } else {
                Vec::new()
            };
            let rule = hits.first().map(|h| h.rule.to_owned());
            let active: Vec<_> = all
                .iter()
                .filter(|v| v.key_id == *key && v.in_force(now))
                .collect();
            let window = Window {
                key_id: key,
                start_ms: start,
                features: &features,
                hits,
            };
            if let Some(v) = judge(window, model, &active, now, &self.cfg) {
                made.push(v);
            }
            rows.push(HistoryRow {
                w: start,
                k: key.clone(),
                f: features.values,
                rule,
            });
        }
        let rows: Vec<String> = rows
            .iter()
            .filter_map(|r| serde_json::to_string(r).ok())
            .collect();
        self.store.history_push(&rows, self.cfg.history_cap).await?;
        for v in &made {
            verdicts::record(&*self.store, v).await?;
            self.status.verdicts.fetch_add(1, Relaxed);
        }
        debug!(
            window = start,
            keys = keys.len(),
            verdicts = made.len(),
            "window scored"
        );
        Ok(())
    }

    /// Each key's mean connections per minute over the recent history.
    async fn usual_rates(&self) -> Result<HashMap<String, f64>, StoreError> {
        let mut sums: HashMap<String, (f64, f64)> = HashMap::new();
        for row in self.store.history(RECENT_ROWS).await? {
            if let Ok(r) = serde_json::from_str::<HistoryRow>(&row) {
                let s = sums.entry(r.k).or_default();
                s.0 += r.f[0];
                s.1 += 1.0;
            }
        }
        Ok(sums.into_iter().map(|(k, (sum, n))| (k, sum / n)).collect())
    }

    /// Loads the newest stored model, and retrains when it is older than
    /// `retrain_every` (or missing) and the history is long enough.
    async fn refresh_model(&mut self) -> Result<(), StoreError> {
        if let Some((version, json)) = self.store.model_latest().await? {
            if self.model.as_ref().is_none_or(|(v, _, _)| *v != version) {
                if let Ok(stored) = serde_json::from_str::<StoredModel>(&json) {
                    self.model = Some((version, stored.model, stored.trained_unix_ms));
                    self.status.model_version.store(version, Relaxed);
                }
            }
        }
        let now = now_ms();
        let stale = self.model.as_ref().is_none_or(|(_, _, at)| {
            now.saturating_sub(*at) >= self.cfg.retrain_every.as_millis() as u64
        });
        if stale {
            self.retrain(now).await?;
        }
        Ok(())
    }

    async fn retrain(&mut self, now: u64) -> Result<(), StoreError> {
        let rows: Vec<[f64; 13]> = self
            .store
            .history(self.cfg.history_cap)
            .await?
            .iter()
            .filter_map(|r| serde_json::from_str::<HistoryRow>(r).ok())
            .filter(|r| r.rule.is_none())
            .map(|r| r.f)
            .collect();
        if rows.len() < self.cfg.min_history {
            return Ok(());
        }
        let Some(model) = Model::fit(&rows, self.cfg.outlier_margin) else {
            return Ok(());
        };
        let stored = StoredModel {
            trained_unix_ms: now,
            model,
        };
        let json =
            serde_json::to_string(&stored).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let version = self.store.model_put(&json).await?;
        info!(
            version,
            windows = rows.len(),
            threshold = stored.model.threshold,
            "detector model trained"
        );
        self.model = Some((version, stored.model, now));
        self.status.model_version.store(version, Relaxed);
        Ok(())
    }
}
