//! Node quality: what the server measured about each node, and the score that decides
//! how much traffic it gets. Pure functions of the samples and the time given, so every
//! edge case is unit-tested.
//!
//! `S = w_L·L + w_R·R` (weights configurable, 0.6 and 0.4 by default).
//!
//! - **L, latency.** `L = 1 − (rtt − 10 ms) / 500 ms`, clamped to [0, 1], where `rtt` is
//!   the median of the last [`RTT_WINDOW`] samples of the connection's smoothed RTT
//!   (quiche path stats, sampled on every application ping). No sample yet: 0.5.
//! - **R, reliability.** `R = 0.5·C + 0.2·U + 0.15·D + 0.15·T`:
//!   - `C`, connect success: an asymmetric moving average of relay attempts that the
//!     node itself failed (gone, full, broken network) or passed. A failure takes away
//!     30% of it, a success gives back 5% of the distance to 1, so a failing node is
//!     demoted quickly and recovers slowly. Target faults (DNS errors, refused ports,
//!     policy refusals) and timeouts do not count, unless another node connected to the
//!     same target for the same request: such a *disputed* target failure counts as the
//!     node's own failure. Starts at 0.9.
//!   - `U`, uptime: the share of the last 24 h (or of the time since the server first
//!     saw the node) that it was connected.
//!   - `D`, stability: `1 / (1 + disconnects in the last 24 h / 4)`.
//!   - `T`, time to first byte: `1 − (median reply time − 50 ms) / 1950 ms`, clamped to
//!     [0, 1], over the last [`RTT_WINDOW`] successful attempts. No sample yet: 0.5.
//!
//! **Selection weight** `= S · C`: traffic is proportional to S among nodes that connect
//! (C near 1), and a node that keeps failing its connects is demoted at once (C falls
//! by 30% per failure) and climbs back slowly (5% of the way per success). The route
//! table keeps a floor weight so such a node still gets the odd request to recover.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use serde::Serialize;
use turbo_proto::RelayStatus;

/// Samples kept for medians.
pub const RTT_WINDOW: usize = 16;
/// The window of uptime and disconnect counting.
const DAY: Duration = Duration::from_secs(24 * 3600);

/// The weights of latency and reliability in the score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    /// Weight of L.
    pub latency: f64,
    /// Weight of R.
    pub reliability: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            latency: 0.6,
            reliability: 0.4,
        }
    }
}

/// A node's score with its parts.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Score {
    /// S.
    pub total: f64,
    /// Selection weight, S·C.
    pub weight: f64,
    /// L.
    pub latency: f64,
    /// R.
    pub reliability: f64,
    /// C, connect success.
    pub connect_success: f64,
    /// U, uptime share.
    pub uptime: f64,
    /// D, stability.
    pub stability: f64,
    /// T, first-byte time.
    pub first_byte: f64,
    /// Median RTT used for L, milliseconds.
    pub rtt_ms: Option<f64>,
}

/// `L` for a median RTT.
pub fn latency_score(rtt: Option<Duration>) -> f64 {
    match rtt {
        None => 0.5,
        Some(rtt) => (1.0 - (rtt.as_secs_f64() * 1000.0 - 10.0) / 500.0).clamp(0.0, 1.0),
    }
}

/// `T` for a median reply time.
pub fn first_byte_score(t: Option<Duration>) -> f64 {
    match t {
        None => 0.5,
        Some(t) => (1.0 - (t.as_secs_f64() * 1000.0 - 50.0) / 1950.0).clamp(0.0, 1.0),
    }
}

fn median(samples: &VecDeque<Duration>) -> Option<Duration> {
    if samples.is_empty() {
        return None;
    }
    let mut v: Vec<Duration> = samples.iter().copied().collect();
    v.sort_unstable();
    Some(v[v.len() / 2])
}

fn push(window: &mut VecDeque<Duration>, sample: Duration) {
    if window.len() == RTT_WINDOW {
        window.pop_front();
    }
    window.push_back(sample);
}

/// What the server measured about one node (kept across its reconnects).
#[derive(Debug, Clone)]
pub struct NodeStats {
    rtts: VecDeque<Duration>,
    replies: VecDeque<Duration>,
    connect_success: f64,
    first_seen: Instant,
    connected_since: Option<Instant>,
    /// Connected intervals that ended within the last day: (start, end).
    past: VecDeque<(Instant, Instant)>,
    disconnects: VecDeque<Instant>,
    /// Attempts the node passed / failed (for the API).
    pub attempts_ok: u64,
    /// Attempts the node failed itself (disputed target failures included).
    pub attempts_failed: u64,
    /// Target failures it answered that another node did not reproduce.
    pub attempts_disputed: u64,
    /// Bytes this server relayed through the node.
    pub bytes_carried: u64,
}

impl NodeStats {
    /// A node first seen (and connected) at `now`.
    pub fn new(now: Instant) -> Self {
        NodeStats {
            rtts: VecDeque::new(),
            replies: VecDeque::new(),
            connect_success: 0.9,
            first_seen: now,
            connected_since: Some(now),
            past: VecDeque::new(),
            disconnects: VecDeque::new(),
            attempts_ok: 0,
            attempts_failed: 0,
            attempts_disputed: 0,
            bytes_carried: 0,
        }
    }

    /// A smoothed-RTT sample.
    pub fn record_rtt(&mut self, rtt: Duration) {
        push(&mut self.rtts, rtt);
    }

    /// The outcome of one relay attempt on this node.
    pub fn record_attempt(&mut self, status: RelayStatus, reply_time: Option<Duration>) {
        if status == RelayStatus::Ok {
            self.connect_success += 0.05 * (1.0 - self.connect_success);
            self.attempts_ok += 1;
            if let Some(t) = reply_time {
                push(&mut self.replies, t);
            }
        } else if status.is_node_fault() {
            self.connect_success *= 0.7;
            self.attempts_failed += 1;
        }
    }

    /// A target failure this node answered was disputed: another node connected to the
    /// same target for the same request. It counts as the node's own failure.
    pub fn record_disputed(&mut self) {
        self.connect_success *= 0.7;
        self.attempts_failed += 1;
        self.attempts_disputed += 1;
    }

    /// The node connected again.
    pub fn connected(&mut self, now: Instant) {
        if self.connected_since.is_none() {
            self.connected_since = Some(now);
        }
    }

    /// The node disconnected.
    pub fn disconnected(&mut self, now: Instant) {
        if let Some(since) = self.connected_since.take() {
            self.past.push_back((since, now));
            self.disconnects.push_back(now);
        }
    }

    /// Whether it is connected now.
    pub fn is_connected(&self) -> bool {
        self.connected_since.is_some()
    }

    fn forget_before(&mut self, horizon: Instant) {
        while self.past.front().is_some_and(|(_, end)| *end < horizon) {
            self.past.pop_front();
        }
        while self.disconnects.front().is_some_and(|t| *t < horizon) {
            self.disconnects.pop_front();
        }
    }

    /// The score at `now`.
    pub fn score(&mut self, now: Instant, w: Weights) -> Score {
        let horizon = now.checked_sub(DAY).unwrap_or(self.first_seen);
        self.forget_before(horizon);
        let start = horizon.max(self.first_seen);
        let window = now.saturating_duration_since(start);
        let mut up: Duration = self
            .past
            .iter()
            .map(|(s, e)| e.saturating_duration_since((*s).max(start)))
            .sum();
        if let Some(since) = self.connected_since {
            up += now.saturating_duration_since(since.max(start));
        }
        let uptime = if window.is_zero() {
            1.0
        } else {
            (up.as_secs_f64() / window.as_secs_f64()).clamp(0.0, 1.0)
        };
        let stability = 1.0 / (1.0 + self.disconnects.len() as f64 / 4.0);
        let rtt = median(&self.rtts);
        let latency = latency_score(rtt);
        let first_byte = first_byte_score(median(&self.replies));
        let reliability =
            0.5 * self.connect_success + 0.2 * uptime + 0.15 * stability + 0.15 * first_byte;
        let total = w.latency * latency + w.reliability * reliability;
        Score {
            total,
            weight: total * self.connect_success,
            latency,
            reliability,
            connect_success: self.connect_success,
            uptime,
            stability,
            first_byte,
            rtt_ms: rtt.map(|r| r.as_secs_f64() * 1000.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn latency_edges() {
        assert_eq!(latency_score(Some(ms(10))), 1.0);
        assert_eq!(latency_score(Some(ms(0))), 1.0, "below 10 ms is capped");
        assert!((latency_score(Some(ms(500))) - 0.02).abs() < 1e-9);
        assert_eq!(latency_score(Some(ms(510))), 0.0);
        assert_eq!(
            latency_score(Some(ms(5000))),
            0.0,
            "beyond 510 ms is capped"
        );
        assert!((latency_score(Some(ms(260))) - 0.5).abs() < 1e-9);
        assert_eq!(latency_score(None), 0.5, "no samples: neutral");
        assert_eq!(first_byte_score(Some(ms(20))), 1.0);
        assert_eq!(first_byte_score(Some(ms(3000))), 0.0);
        assert_eq!(first_byte_score(None), 0.5);
    }

    #[test]
    fn median_not_one_sample() {
        let now = Instant::now();
        let mut s = NodeStats::new(now);
        for r in [20, 22, 21, 400, 19] {
            s.record_rtt(ms(r));
        }
        let score = s.score(now, Weights::default());
        assert_eq!(
            score.rtt_ms,
            Some(21.0),
            "one 400 ms spike does not move the median"
        );
    }

    #[test]
    fn failures_demote_fast_and_recover_slowly() {
        let now = Instant::now();
        let mut s = NodeStats::new(now);
        let w = Weights::default();
        let fresh = s.score(now, w).reliability;
        for _ in 0..5 {
            s.record_attempt(RelayStatus::NodeGone, None);
        }
        let failed = s.score(now, w).reliability;
        assert!(failed < fresh - 0.3, "{fresh} -> {failed}");
        for _ in 0..5 {
            s.record_attempt(RelayStatus::Ok, Some(ms(30)));
        }
        let after = s.score(now, w);
        assert!(
            after.connect_success < 0.4,
            "five successes undo little: {after:?}"
        );
        // Target faults and timeouts do not count against the node.
        let before = s.score(now, w).connect_success;
        s.record_attempt(RelayStatus::DnsFailure, None);
        s.record_attempt(RelayStatus::ConnectionRefused, None);
        s.record_attempt(RelayStatus::Timeout, None);
        assert_eq!(s.score(now, w).connect_success, before);
    }

    #[test]
    fn disputed_target_failures_demote_like_node_failures() {
        let now = Instant::now();
        let w = Weights::default();
        let (mut liar, mut honest) = (NodeStats::new(now), NodeStats::new(now));
        for _ in 0..10 {
            // Both answered "refused"; only the liar's answer was disputed.
            liar.record_attempt(RelayStatus::ConnectionRefused, None);
            liar.record_disputed();
            honest.record_attempt(RelayStatus::ConnectionRefused, None);
        }
        let (l, h) = (liar.score(now, w), honest.score(now, w));
        assert!(l.connect_success < 0.03, "{l:?}");
        assert_eq!(h.connect_success, 0.9, "reproduced refusals cost nothing");
        assert!(l.weight < h.weight / 10.0, "{l:?} vs {h:?}");
        assert_eq!((liar.attempts_failed, liar.attempts_disputed), (10, 10));
        assert_eq!(honest.attempts_failed, 0);
    }

    #[test]
    fn uptime_and_stability() {
        let t0 = Instant::now();
        let mut s = NodeStats::new(t0);
        s.disconnected(t0 + Duration::from_secs(60));
        s.connected(t0 + Duration::from_secs(120));
        let score = s.score(t0 + Duration::from_secs(240), Weights::default());
        assert!((score.uptime - 0.75).abs() < 1e-9, "{score:?}");
        assert!((score.stability - 0.8).abs() < 1e-9);
        let w = Weights {
            latency: 1.0,
            reliability: 0.0,
        };
        assert_eq!(
            s.score(t0, w).total,
            s.score(t0, w).latency,
            "weights apply"
        );
    }
}
