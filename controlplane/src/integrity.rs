//! Traffic integrity signals per node, from the feature records of this server's own
//! customer connections (what the server counted, never what a node says). Two
//! signals, each a share of a node's tunnels that look wrong:
//! - **TLS closed right after the handshake**: of its TLS tunnels (the customer's
//!   first upload was a handshake record), those in which the customer sent at most
//!   [`AFTER_HELLO`] bytes after its ClientHello: an alert, not a request. Clients do
//!   that when the certificate is wrong or the handshake came back garbled, which is
//!   what a node that intercepts or tampers with TLS causes.
//! - **Download sizes far from other nodes' on the same target**: of its completed
//!   tunnels to targets that at least [`MIN_PEERS`] nodes served recently, those whose
//!   download is over twice (plus [`SLACK`]) or under half (minus it) the median of
//!   the nodes' typical sizes there: a node that pads, injects or truncates.
//!
//! Targets differ, so a node is judged against the other nodes of the same server over
//! the same period, never against a fixed figure:
//! - its selection weight is scaled by `1 - excess` for each signal, the excess of its
//!   share over the others';
//! - with [`MIN_TUNNELS`] judged tunnels on each side, a share of at least
//!   [`SUSPECT_SHARE`] that is [`SUSPECT_EXCESS`] above the others', seen with at
//!   least [`MIN_KEYS`] different customers, makes it a suspect, once: the registry
//!   demotes it and the money loop holds its earnings, with the reason. (One
//!   customer pinned to a node by a sticky session, scanning TLS or fetching big
//!   files, never makes it a suspect alone.)
//!
//! Counts halve when a node passes [`WINDOW`] judged tunnels, so the signals follow
//! the recent past. At most [`MAX_TARGETS`] targets are remembered, the oldest dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use turbo_dataplane::control::ConnRecord;
use turbo_proto::RelayStatus;

/// Bytes after the ClientHello up to which a TLS tunnel counts as closed right after
/// the handshake (an alert is 7 to 31 bytes; a Finished and the smallest request are
/// more).
pub const AFTER_HELLO: u64 = 128;
/// Judged tunnels a node, and the others together, need before a node can be a suspect.
pub const MIN_TUNNELS: u32 = 50;
/// A suspect's share of wrong-looking tunnels is at least this.
pub const SUSPECT_SHARE: f64 = 0.5;
/// ... and at least this much above the other nodes' share.
pub const SUSPECT_EXCESS: f64 = 0.4;
/// Different customers whose tunnels through a node must have looked wrong before it
/// can be a suspect.
pub const MIN_KEYS: usize = 3;
/// Nodes that must have served a target recently before its downloads are judged.
pub const MIN_PEERS: usize = 3;
/// Bytes of leeway on top of the factor of two, so small pages are not judged on noise.
pub const SLACK: u64 = 4096;
/// Counts halve past this many judged tunnels of one node.
const WINDOW: u32 = 400;
/// Recent downloads remembered per target.
const SAMPLES: usize = 64;
/// Targets remembered.
const MAX_TARGETS: usize = 10_000;

/// One node's judged tunnels, and those that looked wrong.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    judged: u32,
    wrong: u32,
}

impl Tally {
    fn share(self) -> f64 {
        if self.judged == 0 {
            0.0
        } else {
            f64::from(self.wrong) / f64::from(self.judged)
        }
    }
}

/// One signal: every node's tally, and their sum (so that judging a node costs the
/// same with ten nodes as with ten thousand).
#[derive(Debug, Default)]
struct Signal {
    tallies: HashMap<Arc<str>, Tally>,
    total: Tally,
    /// Per node, up to [`MIN_KEYS`] customers whose tunnels looked wrong.
    wrong_keys: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl Signal {
    /// Counts one judged tunnel of `node`, for customer `key`.
    fn count(&mut self, node: &Arc<str>, key: &Arc<str>, wrong: bool) {
        if wrong {
            let keys = self.wrong_keys.entry(node.clone()).or_default();
            if keys.len() < MIN_KEYS {
                keys.insert(key.clone());
            }
        }
        let t = self.tallies.entry(node.clone()).or_default();
        let before = *t;
        t.judged += 1;
        t.wrong += u32::from(wrong);
        if t.judged > WINDOW {
            t.judged /= 2;
            t.wrong /= 2;
        }
        self.total.judged = self.total.judged - before.judged + t.judged;
        self.total.wrong = self.total.wrong - before.wrong + t.wrong;
    }

    /// `node`'s tally, and the other nodes' summed.
    fn split(&self, node: &str) -> (Tally, Tally) {
        let mine = self.tallies.get(node).copied().unwrap_or_default();
        let others = Tally {
            judged: self.total.judged - mine.judged,
            wrong: self.total.wrong - mine.wrong,
        };
        (mine, others)
    }

    /// Whether `node` is a suspect now: its tally and the others', if so.
    fn suspect(&self, node: &str) -> Option<(Tally, Tally)> {
        let (mine, others) = self.split(node);
        let customers = self.wrong_keys.get(node).map_or(0, HashSet::len);
        (mine.judged >= MIN_TUNNELS
            && others.judged >= MIN_TUNNELS
            && customers >= MIN_KEYS
            && mine.share() >= SUSPECT_SHARE
            && mine.share() - others.share() >= SUSPECT_EXCESS)
            .then_some((mine, others))
    }

    /// `1 - excess` of `node`'s share over the others', once both sides have
    /// [`MIN_TUNNELS`]; else 1.
    fn weight_factor(&self, node: &str) -> f64 {
        let (mine, others) = self.split(node);
        if mine.judged < MIN_TUNNELS || others.judged < MIN_TUNNELS {
            return 1.0;
        }
        (1.0 - (mine.share() - others.share()).max(0.0)).max(0.0)
    }
}

/// The signals of every node seen, the recent downloads per target, and the suspects
/// found.
#[derive(Debug, Default)]
pub struct Integrity {
    tls: Signal,
    downloads: Signal,
    targets: HashMap<u64, VecDeque<(Arc<str>, u64)>>,
    target_order: VecDeque<u64>,
    suspects: HashSet<Arc<str>>,
}

impl Integrity {
    /// Counts `record`; the reason, the first time its node becomes a suspect.
    pub fn note(&mut self, record: &ConnRecord) -> Option<String> {
        let node = &record.node_id;
        if record.tls {
            let cut = record.uploaded_after_first <= AFTER_HELLO;
            self.tls.count(node, &record.key_id, cut);
        }
        if record.outcome == RelayStatus::Ok {
            if let Some(typical) = self.typical_download(record) {
                let d = record.bytes_down;
                let far = d > typical * 2 + SLACK || d * 2 + SLACK < typical;
                self.downloads.count(node, &record.key_id, far);
            }
            self.remember(record);
        }
        if self.suspects.contains(node) {
            return None;
        }
        let why = if let Some((mine, others)) = self.tls.suspect(node) {
            describe(
                mine,
                others,
                "customers' TLS connections closed right after the handshake",
            )
        } else {
            let (mine, others) = self.downloads.suspect(node)?;
            describe(
                mine,
                others,
                "downloads were far from other nodes' on the same targets",
            )
        };
        self.suspects.insert(node.clone());
        Some(why)
    }

    /// The factor on `node`'s selection weight: `1 - excess` for each signal.
    pub fn weight_factor(&self, node: &str) -> f64 {
        self.tls.weight_factor(node) * self.downloads.weight_factor(node)
    }

    /// The median of the typical download sizes of the nodes that recently served
    /// `record`'s target, when at least [`MIN_PEERS`] did.
    fn typical_download(&self, record: &ConnRecord) -> Option<u64> {
        let samples = self.targets.get(&record.target_id)?;
        let mut by_node: HashMap<&str, Vec<u64>> = HashMap::new();
        for (node, bytes) in samples {
            by_node.entry(node).or_default().push(*bytes);
        }
        if by_node.len() < MIN_PEERS {
            return None;
        }
        let mut typical: Vec<u64> = by_node.into_values().map(median).collect();
        Some(median(std::mem::take(&mut typical)))
    }

    /// Keeps `record`'s download among its target's recent ones.
    fn remember(&mut self, record: &ConnRecord) {
        let samples = self.targets.entry(record.target_id).or_insert_with(|| {
            self.target_order.push_back(record.target_id);
            VecDeque::with_capacity(SAMPLES)
        });
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back((record.node_id.clone(), record.bytes_down));
        while self.targets.len() > MAX_TARGETS {
            match self.target_order.pop_front() {
                Some(oldest) => self.targets.remove(&oldest),
                None => break,
            };
        }
    }
}

/// The lower median of `values` (not empty).
fn median(mut values: Vec<u64>) -> u64 {
    values.sort_unstable();
    values[(values.len() - 1) / 2]
}

fn describe(mine: Tally, others: Tally, what: &str) -> String {
    format!(
        "{:.0}% of its {what} ({} of {}; other nodes: {:.0}%)",
        mine.share() * 100.0,
        mine.wrong,
        mine.judged,
        others.share() * 100.0
    )
}

#[cfg(test)]
#[path = "integrity_tests.rs"]
mod tests;
