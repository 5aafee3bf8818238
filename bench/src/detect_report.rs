//! The detector evaluation's figures: per pattern, the windows flagged among the
//! key's windows with traffic (recall over its attack windows, precision over all its
//! flagged windows), the first action and when it came; and the false-positive rate on
//! normal customers.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use crate::detect::{Outcome, Pattern};

/// One pattern's figures.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// The pattern.
    pub pattern: Pattern,
    /// Its windows with traffic (attack windows only, for abuse).
    pub windows: usize,
    /// Of those, flagged by a verdict.
    pub flagged: usize,
    /// Verdicts on its keys in all (warm-up included).
    pub verdicts: usize,
    /// Its first action after the attack started, and the windows it took (1: the
    /// first attack window was judged).
    pub first_action: Option<(String, u64, f64)>,
}

impl Row {
    /// Flagged attack windows over attack windows with traffic.
    pub fn recall(&self) -> f64 {
        self.flagged as f64 / self.windows.max(1) as f64
    }

    /// Verdicts on attack windows over all the key's verdicts.
    pub fn precision(&self) -> f64 {
        if self.verdicts == 0 {
            return 1.0;
        }
        self.flagged as f64 / self.verdicts as f64
    }
}

/// Each pattern's row, abuse and normal alike.
pub fn rows(o: &Outcome) -> Vec<Row> {
    let mut by_pattern: BTreeMap<Pattern, Row> = BTreeMap::new();
    let attack_window = o.attack_from_ms / o.window_ms;
    for seen in &o.customers {
        let (pattern, key, windows) = (&seen.pattern, &seen.key_id, &seen.windows);
        let mine: Vec<&Value> = o
            .verdicts
            .iter()
            .filter(|v| v["key_id"] == key.as_str())
            .collect();
        let judged = |v: &Value| v["window_unix_ms"].as_u64().unwrap_or(0) / o.window_ms;
        let counted: Vec<u64> = windows
            .iter()
            .copied()
            .filter(|w| !pattern.is_abuse() || *w >= attack_window)
            .collect();
        let flagged = mine
            .iter()
            .filter(|v| !pattern.is_abuse() || judged(v) >= attack_window)
            .count();
        let first = mine
            .iter()
            .filter(|v| judged(v) >= attack_window)
            .min_by_key(|v| v["created_unix_ms"].as_u64().unwrap_or(u64::MAX))
            .map(|v| {
                let after = v["created_unix_ms"]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(o.attack_from_ms);
                let action = v["action"].as_str().unwrap_or("?").to_owned();
                (action, judged(v) - attack_window + 1, after as f64 / 1000.0)
            });
        let row = by_pattern.entry(*pattern).or_insert(Row {
            pattern: *pattern,
            windows: 0,
            flagged: 0,
            verdicts: 0,
            first_action: None,
        });
        row.windows += counted.len();
        row.flagged += flagged;
        row.verdicts += mine.len();
        if row.first_action.is_none() {
            row.first_action = first;
        }
    }
    by_pattern.into_values().collect()
}

/// Flagged normal windows over normal windows with traffic.
pub fn false_positive_rate(rows: &[Row]) -> (usize, usize, f64) {
    let normal = rows.iter().filter(|r| !r.pattern.is_abuse());
    let (flagged, windows) = normal.fold((0, 0), |(f, w), r| (f + r.verdicts, w + r.windows));
    (flagged, windows, flagged as f64 / windows.max(1) as f64)
}

/// Why normal customers were flagged: reason (and drivers) → count.
pub fn false_positive_reasons(o: &Outcome) -> BTreeMap<String, usize> {
    let normal: Vec<&str> = o
        .customers
        .iter()
        .filter(|s| !s.pattern.is_abuse())
        .map(|s| s.key_id.as_str())
        .collect();
    let mut reasons = BTreeMap::new();
    for v in &o.verdicts {
        if normal.iter().any(|k| v["key_id"] == *k) {
            let why = format!("{} {}", v["reason"].as_str().unwrap_or("?"), v["drivers"]);
            *reasons.entry(why).or_insert(0) += 1;
        }
    }
    reasons
}

/// The table `turbo-bench detect` prints.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from(
        "| pattern | windows | flagged | precision | recall | first action | windows to act | seconds to act |\n|---|---|---|---|---|---|---|---|\n",
    );
    for r in rows.iter().filter(|r| r.pattern.is_abuse()) {
        let (action, windows, secs) = r
            .first_action
            .clone()
            .map_or(("none".into(), "-".into(), "-".into()), |(a, w, s)| {
                (a, w.to_string(), format!("{s:.1}"))
            });
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.2} | {action} | {windows} | {secs} |",
            r.pattern.name(),
            r.windows,
            r.flagged,
            r.precision(),
            r.recall()
        );
    }
    let (flagged, windows, rate) = false_positive_rate(rows);
    let _ = writeln!(
        out,
        "\nnormal customers: {flagged} of {windows} windows flagged (false-positive rate {:.2}%)",
        rate * 100.0
    );
    out
}
