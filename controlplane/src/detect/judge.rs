//! From a key's window to a verdict: the strongest rule that fired (or the model's
//! outlier call), raised one step on the ladder when a verdict in force since before the
//! window did not stop the key, with its TTL, its features and what drove it. A window
//! that a verdict made after it began already answers gets no second one.

use serde::{Deserialize, Serialize};

use super::hbos::Model;
use super::rules::Hit;
use super::window::Features;
use super::DetectConfig;
use crate::store::detect::{Action, Verdict};

/// A scored window as the model's training history keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// Window start, Unix ms.
    pub w: u64,
    /// The key.
    pub k: String,
    /// Its features.
    pub f: [f64; 13],
    /// The rule that fired, if any (such windows are left out of training).
    pub rule: Option<String>,
}

/// What is known about the window being judged.
pub struct Window<'a> {
    /// The key.
    pub key_id: &'a str,
    /// Its start, Unix ms.
    pub start_ms: u64,
    /// The key's features in it.
    pub features: &'a Features,
    /// The rules it broke.
    pub hits: Vec<Hit>,
}

/// The verdict for `w`, if any. `active` are the key's verdicts in force now; `model`
/// the current model and its version.
pub fn judge(
    w: Window<'_>,
    model: Option<(u64, &Model)>,
    active: &[&Verdict],
    now_ms: u64,
    cfg: &DetectConfig,
) -> Option<Verdict> {
    let strongest = w.hits.into_iter().max_by_key(|h| h.action);
    let (reason, mut action, target, drivers) = match strongest {
        Some(h) => (h.rule.to_owned(), h.action, h.target, h.drivers),
        None => {
            let (_, m) = model?;
            let (score, parts) = m.score(&w.features.values);
            if score <= m.threshold {
                return None;
            }
            (
                "outlier".to_owned(),
                Action::Observe,
                None,
                Model::drivers(&parts),
            )
        }
    };
    // A verdict in force since before the window began did not stop the key: one
    // step up. One that came later already answers this window unless it is milder.
    let before = active.iter().filter(|v| v.created_unix_ms <= w.start_ms);
    if let Some(prev) = before.map(|v| v.action).max() {
        action = action.max(prev.escalated());
    }
    let covered = active.iter().any(|v| {
        v.action > action
            || (v.action == action && (action != Action::BlockTarget || v.target == target))
    });
    if covered {
        return None;
    }
    let ttl = cfg.ttl.as_millis() as u64
        * match action {
            Action::Observe | Action::Throttle => 1,
            Action::BlockTarget | Action::Suspend => 4,
        };
    Some(Verdict {
        id: super::verdicts::new_id(),
        key_id: w.key_id.to_owned(),
        action,
        reason,
        features: w.features.named(),
        drivers,
        target: if action == Action::BlockTarget {
            target
        } else {
            None
        },
        tunnels_per_sec: (action == Action::Throttle).then_some(cfg.throttle_tunnels_per_sec),
        bytes_per_sec: (action == Action::Throttle).then_some(cfg.throttle_bytes_per_sec),
        window_unix_ms: w.start_ms,
        created_unix_ms: now_ms,
        expires_at: now_ms + ttl,
        model_version: model.map_or(0, |(v, _)| v),
        lifted_unix_ms: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::detect::rules::Hit;

    fn hit(action: Action) -> Hit {
        Hit {
            rule: "smtp",
            action,
            target: Some("00000000000000aa".into()),
            drivers: vec!["smtp_attempts".into()],
        }
    }

    fn decide(action: Action, start_ms: u64, active: &[&Verdict]) -> Option<Verdict> {
        let features = Features { values: [1.0; 13] };
        let window = Window {
            key_id: "k_1",
            start_ms,
            features: &features,
            hits: vec![hit(action)],
        };
        judge(window, None, active, 10_000, &DetectConfig::default())
    }

    #[test]
    fn the_ladder_climbs_only_past_a_verdict_that_did_not_stop_the_key() {
        let first = decide(Action::Throttle, 1_000, &[]).expect("a verdict");
        assert_eq!(first.action, Action::Throttle);
        assert_eq!(first.tunnels_per_sec, Some(5));
        assert_eq!(first.expires_at, 10_000 + 15 * 60 * 1000);
        assert_eq!(first.target, None, "only a block names a site");
        // The next window began before the throttle existed: already answered.
        assert_eq!(decide(Action::Throttle, 5_000, &[&first]), None);
        // A window that began under the throttle and still broke the rule: suspend.
        let next = decide(Action::Throttle, 20_000, &[&first]).expect("escalated");
        assert_eq!(next.action, Action::Suspend);
        assert_eq!(next.expires_at, 10_000 + 4 * 15 * 60 * 1000);
        // A stronger rule is not covered by a milder verdict.
        let block = decide(Action::BlockTarget, 5_000, &[&first]).expect("stronger");
        assert_eq!(block.action, Action::BlockTarget);
        assert_eq!(block.target.as_deref(), Some("00000000000000aa"));
    }
}
