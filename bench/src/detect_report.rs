//! The detector evaluation's figures: per pattern, recall (attack windows with traffic
//! that a verdict judged or that fell under one made before they ended) and precision
//! (the key's verdicts that judged attack windows, over all its verdicts), the first
//! action and when it came; and the false-positive rate on normal customers (verdicts
//! over windows with traffic).

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
    /// Of those, acted on: judged by a verdict, or under one made before they ended.
    pub covered: usize,
    /// Verdicts on its keys that judged attack windows.
    pub on_attack: usize,
    /// Verdicts on its keys in all (warm-up included).
    pub verdicts: usize,
    /// Its first action after the attack started, the windows it took (1: the first
    /// attack window was judged) and the seconds.
    pub first_action: Option<(String, u64, f64)>,
}

impl Row {
    /// Attack windows acted on over attack windows with traffic.
    pub fn recall(&self) -> f64 {
        self.covered as f64 / self.windows.max(1) as f64
    }

    /// Verdicts on attack windows over all the key's verdicts.
    pub fn precision(&self) -> f64 {
        if self.verdicts == 0 {
            return 1.0;
        }
        self.on_attack as f64 / self.verdicts as f64
    }
}

/// Each pattern's row, abuse and normal alike.
pub fn rows(o: &Outcome) -> Vec<Row> {
    let mut by_pattern: BTreeMap<Pattern, Row> = BTreeMap::new();
    let attack_window = o.attack_from_ms / o.window_ms;
    for seen in &o.customers {
        let pattern = seen.pattern;
        let mine: Vec<&Value> = o
            .verdicts
            .iter()
            .filter(|v| v["key_id"] == seen.key_id.as_str())
            .collect();
        let judged = |v: &Value| v["window_unix_ms"].as_u64().unwrap_or(0) / o.window_ms;
        let created = |v: &Value| v["created_unix_ms"].as_u64().unwrap_or(u64::MAX);
        let counted: Vec<u64> = seen
            .windows
            .iter()
            .copied()
            .filter(|w| !pattern.is_abuse() || *w >= attack_window)
            .collect();
        let covered = counted
            .iter()
            .filter(|&&w| {
                let end_ms = (w + 1) * o.window_ms;
                mine.iter()
                    .any(|v| judged(v) == w || (judged(v) < w && created(v) <= end_ms))
            })
            .count();
        let on_attack = mine.iter().filter(|v| judged(v) >= attack_window).count();
        let first = mine
            .iter()
            .filter(|v| judged(v) >= attack_window)
            .min_by_key(|v| created(v))
            .map(|v| {
                let after = created(v).saturating_sub(o.attack_from_ms);
                let action = v["action"].as_str().unwrap_or("?").to_owned();
                (action, judged(v) - attack_window + 1, after as f64 / 1000.0)
            });
        let row = by_pattern.entry(pattern).or_insert(Row {
            pattern,
            windows: 0,
            covered: 0,
            on_attack: 0,
            verdicts: 0,
            first_action: None,
        });
        row.windows += counted.len();
        row.covered += covered;
        row.on_attack += on_attack;
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
        "| pattern | windows | acted on | verdicts | precision | recall | first action | windows to act | seconds to act |\n|---|---|---|---|---|---|---|---|---|\n",
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
            "| {} | {} | {} | {} | {:.2} | {:.2} | {action} | {windows} | {secs} |",
            r.pattern.name(),
            r.windows,
            r.covered,
            r.verdicts,
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
