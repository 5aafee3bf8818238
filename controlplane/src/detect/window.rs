//! One key's traffic in one window, as a summary that servers build from the feature
//! records they read and that the scorer merges ([`Partial`]), and the features it
//! yields ([`Features`]). Sets and maps are capped, so a hostile key costs bounded memory.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::store::FeatureFields;

/// Most distinct targets, ports, sessions or nodes a summary remembers.
const CAP: usize = 512;
/// Arrival slots per window (for burstiness and the peak rate).
pub const SLOTS: usize = 20;
/// Log2 buckets of durations and connect times, in milliseconds.
const BUCKETS: usize = 24;
/// SMTP ports (nodes refuse them).
const SMTP_PORTS: [u16; 3] = [25, 465, 587];

/// Auth-shaped exchanges to one target: how many and their download sizes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Exchanges {
    /// Count.
    pub n: u64,
    /// Sum of download bytes.
    pub down: f64,
    /// Sum of squared download bytes.
    pub down_sq: f64,
}

/// A mergeable summary of one key's connections in one window.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Partial {
    /// Connections.
    pub conns: u64,
    /// Connections that did not end `ok`.
    pub failures: u64,
    /// Attempts to SMTP ports.
    pub smtp: u64,
    /// Customer → target bytes.
    pub bytes_up: u64,
    /// Target → customer bytes.
    pub bytes_down: u64,
    /// Connections per target (hex site identity).
    pub targets: BTreeMap<String, u64>,
    /// Connections per port.
    pub ports: BTreeMap<u16, u64>,
    /// Failed connections per port.
    pub failed_ports: BTreeSet<u16>,
    /// Session identities seen.
    pub sessions: BTreeSet<String>,
    /// Nodes that carried it.
    pub nodes: BTreeSet<String>,
    /// Small-upload, small-download exchanges per target.
    pub exchanges: BTreeMap<String, Exchanges>,
    /// Durations, log2 buckets of milliseconds.
    pub durations: Vec<u64>,
    /// Times to connect, log2 buckets of milliseconds.
    pub connects: Vec<u64>,
    /// Connection ends per arrival slot.
    pub slots: Vec<u64>,
}

fn field<'a>(fields: &'a FeatureFields, name: &str) -> &'a str {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn num(fields: &FeatureFields, name: &str) -> u64 {
    field(fields, name).parse().unwrap_or(0)
}

fn bucket(ms: u64) -> usize {
    (64 - ms.leading_zeros() as usize).min(BUCKETS - 1)
}

fn count_capped<K: Ord>(map: &mut BTreeMap<K, u64>, key: K, n: u64) {
    let len = map.len();
    if let Some(c) = map.get_mut(&key) {
        *c += n;
    } else if len < CAP {
        map.insert(key, n);
    }
}

fn insert_capped<K: Ord>(set: &mut BTreeSet<K>, key: K) {
    if set.len() < CAP {
        set.insert(key);
    }
}

/// The key and window end (Unix ms) of a record; `None` when it has no key.
pub fn record_key(fields: &FeatureFields) -> Option<(String, u64)> {
    let key = field(fields, "key");
    if key.is_empty() || key.len() > 64 {
        return None;
    }
    let end = num(fields, "start_ms").saturating_add(num(fields, "duration_ms"));
    Some((key.to_owned(), end))
}

impl Partial {
    /// Adds one record that ended at `offset` into a window of `window_ms`.
    pub fn add(&mut self, fields: &FeatureFields, offset_ms: u64, window_ms: u64) {
        if self.durations.is_empty() {
            self.durations = vec![0; BUCKETS];
            self.connects = vec![0; BUCKETS];
            self.slots = vec![0; SLOTS];
        }
        let port = num(fields, "port") as u16;
        let failed = field(fields, "outcome") != "ok";
        let (up, down) = (num(fields, "bytes_up"), num(fields, "bytes_down"));
        let target = field(fields, "target").chars().take(16).collect::<String>();
        self.conns += 1;
        self.failures += u64::from(failed);
        self.smtp += u64::from(SMTP_PORTS.contains(&port));
        self.bytes_up = self.bytes_up.saturating_add(up);
        self.bytes_down = self.bytes_down.saturating_add(down);
        count_capped(&mut self.targets, target.clone(), 1);
        count_capped(&mut self.ports, port, 1);
        if failed {
            insert_capped(&mut self.failed_ports, port);
        }
        let session = field(fields, "session");
        if !session.trim_start_matches('0').is_empty() {
            insert_capped(&mut self.sessions, session.chars().take(16).collect());
        }
        insert_capped(
            &mut self.nodes,
            field(fields, "node").chars().take(40).collect(),
        );
        if !failed && (100..=8192).contains(&up) && down <= 32 * 1024 {
            let len = self.exchanges.len();
            if len < CAP || self.exchanges.contains_key(&target) {
                let e = self.exchanges.entry(target).or_default();
                e.n += 1;
                e.down += down as f64;
                e.down_sq += (down as f64) * (down as f64);
            }
        }
        self.durations[bucket(num(fields, "duration_ms"))] += 1;
        if let Ok(ms) = field(fields, "connect_ms").parse::<u64>() {
            self.connects[bucket(ms)] += 1;
        }
        let slot = (offset_ms.saturating_mul(SLOTS as u64) / window_ms.max(1)) as usize;
        self.slots[slot.min(SLOTS - 1)] += 1;
    }

    /// Adds another server's summary of the same key and window.
    pub fn merge(&mut self, other: &Partial) {
        if self.durations.is_empty() {
            *self = other.clone();
            return;
        }
        self.conns += other.conns;
        self.failures += other.failures;
        self.smtp += other.smtp;
        self.bytes_up = self.bytes_up.saturating_add(other.bytes_up);
        self.bytes_down = self.bytes_down.saturating_add(other.bytes_down);
        for (t, n) in &other.targets {
            count_capped(&mut self.targets, t.clone(), *n);
        }
        for (p, n) in &other.ports {
            count_capped(&mut self.ports, *p, *n);
        }
        for p in &other.failed_ports {
            insert_capped(&mut self.failed_ports, *p);
        }
        for s in &other.sessions {
            insert_capped(&mut self.sessions, s.clone());
        }
        for n in &other.nodes {
            insert_capped(&mut self.nodes, n.clone());
        }
        for (t, e) in &other.exchanges {
            let mine = self.exchanges.entry(t.clone()).or_default();
            mine.n += e.n;
            mine.down += e.down;
            mine.down_sq += e.down_sq;
        }
        let add = |a: &mut Vec<u64>, b: &Vec<u64>| a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
        add(&mut self.durations, &other.durations);
        add(&mut self.connects, &other.connects);
        add(&mut self.slots, &other.slots);
    }
}

/// Milliseconds at quantile `q` of a log2 histogram (the bucket's upper bound).
fn quantile(hist: &[u64], q: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let want = (total as f64 * q).ceil() as u64;
    let mut seen = 0;
    for (i, n) in hist.iter().enumerate() {
        seen += n;
        if seen >= want {
            return ((1u64 << i) - 1) as f64;
        }
    }
    ((1u64 << (hist.len() - 1)) - 1) as f64
}

/// Names of [`Features::values`], in order.
pub const NAMES: [&str; 13] = [
    "conns_per_min",
    "distinct_targets",
    "distinct_ports",
    "failure_ratio",
    "up_down_log_ratio",
    "duration_p50_vs_network",
    "duration_p95_vs_network",
    "connect_p50_vs_network",
    "burstiness",
    "busiest_target_share",
    "nodes",
    "sessions",
    "drift",
];

/// One key's features in one window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Features {
    /// Values by [`NAMES`].
    pub values: [f64; 13],
}

/// Feature indices that measure the network more than the customer (durations and
/// connect times): taken relative to the window's median over all keys, so that a
/// slower network does not make every key an outlier.
const NETWORK_RELATIVE: [usize; 3] = [5, 6, 7];

/// Divides each network-relative feature (plus one) by its median over `all` (plus
/// one), turning milliseconds into a ratio to the window's typical key.
pub fn relative_to_network(all: &mut [Features]) {
    for i in NETWORK_RELATIVE {
        let mut values: Vec<f64> = all.iter().map(|f| f.values[i]).collect();
        values.sort_by(f64::total_cmp);
        let median = values.get(values.len() / 2).copied().unwrap_or(0.0);
        for f in all.iter_mut() {
            f.values[i] = (f.values[i] + 1.0) / (median + 1.0);
        }
    }
}

impl Features {
    /// The features of `p` over a window of `window_ms`; `usual_per_min` is the key's
    /// usual connections per minute (its drift reference), if it has a history.
    pub fn of(p: &Partial, window_ms: u64, usual_per_min: Option<f64>) -> Features {
        let minutes = window_ms as f64 / 60_000.0;
        let conns = p.conns.max(1) as f64;
        let per_min = p.conns as f64 / minutes;
        let mean = p.slots.iter().sum::<u64>() as f64 / SLOTS as f64;
        let var = p
            .slots
            .iter()
            .map(|&n| (n as f64 - mean).powi(2))
            .sum::<f64>()
            / SLOTS as f64;
        let busiest = p.targets.values().max().copied().unwrap_or(0) as f64;
        let drift = usual_per_min.map_or(0.0, |u| ((per_min + 1.0) / (u + 1.0)).ln());
        Features {
            values: [
                per_min,
                p.targets.len() as f64,
                p.ports.len() as f64,
                p.failures as f64 / conns,
                ((p.bytes_up as f64 + 1.0) / (p.bytes_down as f64 + 1.0)).ln(),
                quantile(&p.durations, 0.5),
                quantile(&p.durations, 0.95),
                quantile(&p.connects, 0.5),
                if mean > 0.0 { var.sqrt() / mean } else { 0.0 },
                busiest / conns,
                p.nodes.len() as f64,
                p.sessions.len() as f64,
                drift,
            ],
        }
    }

    /// The features as name → value.
    pub fn named(&self) -> BTreeMap<String, f64> {
        NAMES
            .iter()
            .zip(self.values)
            .map(|(n, v)| ((*n).to_owned(), (v * 1000.0).round() / 1000.0))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(port: u16, target: &str, session: &str, up: u64, down: u64) -> FeatureFields {
        [
            ("key", "k_1"),
            ("node", "n_1"),
            ("port", &port.to_string()),
            ("target", target),
            ("session", session),
            ("start_ms", "1000"),
            ("duration_ms", "40"),
            ("connect_ms", "3"),
            ("bytes_up", &up.to_string()),
            ("bytes_down", &down.to_string()),
            (
                "outcome",
                if port == 25 {
                    "refused_by_policy"
                } else {
                    "ok"
                },
            ),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
    }

    #[test]
    fn summaries_merge_as_if_one_server_read_everything() {
        let records = [
            rec(443, "aa", "0000000000000000", 500, 250),
            rec(443, "aa", "00000000000000s1", 500, 250),
            rec(25, "bb", "00000000000000s2", 0, 0),
            rec(80, "cc", "00000000000000s1", 300, 40_000),
        ];
        let mut whole = Partial::default();
        let (mut a, mut b) = (Partial::default(), Partial::default());
        for (i, r) in records.iter().enumerate() {
            whole.add(r, 100 * i as u64, 2_000);
            if i % 2 == 0 { &mut a } else { &mut b }.add(r, 100 * i as u64, 2_000);
        }
        a.merge(&b);
        assert_eq!(a, whole);
        assert_eq!((whole.conns, whole.failures, whole.smtp), (4, 1, 1));
        assert_eq!(whole.sessions.len(), 2, "no session is not a session");
        assert_eq!(whole.exchanges["aa"].n, 2, "small up, small down");
        let f = Features::of(&whole, 2_000, None);
        assert_eq!(f.values[0], 120.0, "4 connections in 2 s: 120 per minute");
        assert_eq!(f.values[1], 3.0);
        assert_eq!(f.values[9], 0.5, "the busiest site had half");
        assert_eq!(record_key(&records[0]), Some(("k_1".to_owned(), 1040)));
    }
}
