//! The detector's state in the embedded store: one process, so the consumer group is a
//! cursor and a pending set per consumer, and everything else plain maps.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use super::MemoryStore;
use crate::store::detect::{DetectStore, StreamEntry, Verdict};
use crate::store::StoreError;

/// Models kept.
const MODELS_KEPT: usize = 10;
/// Verdicts are forgotten this long after they end.
const VERDICT_KEEP_MS: u64 = 24 * 3600 * 1000;

#[derive(Default)]
pub(super) struct DetectTables {
    secrets: HashMap<String, [u8; 32]>,
    /// The id of the next record each group delivers.
    cursors: HashMap<String, u64>,
    /// Delivered, unacknowledged records by (group, consumer).
    pending: HashMap<(String, String), BTreeMap<u64, crate::store::FeatureFields>>,
    windows: HashMap<u64, BTreeMap<String, String>>,
    claimed: HashSet<u64>,
    history: VecDeque<String>,
    models: BTreeMap<u64, String>,
    verdicts: BTreeMap<String, Verdict>,
}

impl MemoryStore {
    fn detect<R>(&self, f: impl FnOnce(&mut DetectTables) -> R) -> R {
        let mut d = self.detect.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut d)
    }

    /// New records for a group: those after its cursor (a new group starts at the end).
    /// Takes the tables' lock, then the detector's (the only nesting).
    fn deliver(&self, group: &str, count: usize) -> Vec<(u64, crate::store::FeatureFields)> {
        self.with(|t| {
            let first = t.connections_next - t.connections.len() as u64;
            self.detect(|d| {
                let cursor = d
                    .cursors
                    .entry(group.to_owned())
                    .or_insert(t.connections_next);
                let from = (*cursor).max(first);
                let out: Vec<_> = t
                    .connections
                    .iter()
                    .skip((from - first) as usize)
                    .take(count)
                    .enumerate()
                    .map(|(i, f)| (from + i as u64, f.clone()))
                    .collect();
                *cursor = from + out.len() as u64;
                out
            })
        })
    }
}

impl DetectStore for MemoryStore {
    async fn shared_secret(&self, name: &str) -> Result<[u8; 32], StoreError> {
        Ok(self.detect(|d| {
            *d.secrets
                .entry(name.to_owned())
                .or_insert_with(rand::random)
        }))
    }

    async fn conns_read(
        &self,
        group: &str,
        consumer: &str,
        pending: bool,
        count: usize,
    ) -> Result<Vec<StreamEntry>, StoreError> {
        let who = (group.to_owned(), consumer.to_owned());
        if pending {
            return Ok(self.detect(|d| {
                d.pending.get(&who).map_or_else(Vec::new, |p| {
                    p.iter()
                        .take(count)
                        .map(|(id, f)| (id.to_string(), f.clone()))
                        .collect()
                })
            }));
        }
        let fresh = self.deliver(group, count);
        Ok(self.detect(|d| {
            let p = d.pending.entry(who).or_default();
            fresh
                .into_iter()
                .map(|(id, f)| {
                    p.insert(id, f.clone());
                    (id.to_string(), f)
                })
                .collect()
        }))
    }

    async fn conns_ack(&self, group: &str, ids: &[String]) -> Result<(), StoreError> {
        self.detect(|d| {
            for ((g, _), p) in d.pending.iter_mut() {
                if g == group {
                    for id in ids.iter().filter_map(|i| i.parse::<u64>().ok()) {
                        p.remove(&id);
                    }
                }
            }
        });
        Ok(())
    }

    async fn window_put(
        &self,
        window_ms: u64,
        parts: &[(String, String)],
    ) -> Result<(), StoreError> {
        self.detect(|d| {
            let w = d.windows.entry(window_ms).or_default();
            w.extend(parts.iter().cloned());
            // Windows older than a day are of no further use.
            let horizon = window_ms.saturating_sub(VERDICT_KEEP_MS);
            d.windows.retain(|&start, _| start >= horizon);
            d.claimed.retain(|&start| start >= horizon);
        });
        Ok(())
    }

    async fn window_parts(&self, window_ms: u64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(self.detect(|d| {
            d.windows
                .get(&window_ms)
                .map_or_else(Vec::new, |w| w.clone().into_iter().collect())
        }))
    }

    async fn window_claim(&self, window_ms: u64, _owner: &str) -> Result<bool, StoreError> {
        Ok(self.detect(|d| d.claimed.insert(window_ms)))
    }

    async fn history_push(&self, rows: &[String], cap: usize) -> Result<(), StoreError> {
        self.detect(|d| {
            d.history.extend(rows.iter().cloned());
            while d.history.len() > cap {
                d.history.pop_front();
            }
        });
        Ok(())
    }

    async fn history(&self, max: usize) -> Result<Vec<String>, StoreError> {
        Ok(self.detect(|d| {
            let skip = d.history.len().saturating_sub(max);
            d.history.iter().skip(skip).cloned().collect()
        }))
    }

    async fn model_put(&self, model: &str) -> Result<u64, StoreError> {
        Ok(self.detect(|d| {
            let version = d.models.keys().next_back().map_or(1, |v| v + 1);
            d.models.insert(version, model.to_owned());
            while d.models.len() > MODELS_KEPT {
                d.models.pop_first();
            }
            version
        }))
    }

    async fn model_latest(&self) -> Result<Option<(u64, String)>, StoreError> {
        Ok(self.detect(|d| d.models.last_key_value().map(|(v, m)| (*v, m.clone()))))
    }

    async fn verdict_put(&self, verdict: &Verdict) -> Result<(), StoreError> {
        self.detect(|d| {
            d.verdicts.insert(verdict.id.clone(), verdict.clone());
            let horizon = verdict.created_unix_ms.saturating_sub(VERDICT_KEEP_MS);
            d.verdicts.retain(|_, v| v.expires_at >= horizon);
        });
        Ok(())
    }

    async fn verdicts(&self) -> Result<Vec<Verdict>, StoreError> {
        Ok(self.detect(|d| d.verdicts.values().cloned().collect()))
    }

    async fn publish_policy(&self, key_id: &str, rules: &str) -> Result<(), StoreError> {
        if let Some(event) = crate::detect::policy::event(key_id, rules) {
            let _ = self.events.send(event);
        }
        Ok(())
    }
}
