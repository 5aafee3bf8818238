//! Traffic integrity signals per node, from the feature records of this server's own
//! customer connections (never from what a node says).
//!
//! The signal: of a node's TLS tunnels (the customer's first upload was a handshake
//! record), the share in which the customer sent almost nothing after its ClientHello
//! (at most [`AFTER_HELLO`] bytes: an alert, not a request), i.e. closed right after
//! the handshake. Browsers and curl do that when the certificate is wrong or the
//! handshake came back garbled: what a node that intercepts or tampers with TLS
//! causes. Targets differ, so a node is judged against the other nodes of the same
//! server over the same period, not against a fixed figure:
//! - its selection weight is scaled by `1 - excess`, the excess of its share over the
//!   others' (a small excess costs a little traffic);
//! - at [`MIN_TLS`] tunnels on each side, a share of at least [`SUSPECT_SHARE`] that
//!   is [`SUSPECT_EXCESS`] above the others' makes it a suspect, once: the registry
//!   demotes it and the money loop holds its earnings with the reason.
//!
//! Counts halve when a node passes [`WINDOW`] TLS tunnels, so the signal follows the
//! recent past.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use turbo_dataplane::control::ConnRecord;

/// Bytes after the ClientHello below which a TLS tunnel counts as closed right after
/// the handshake (an alert is 7 to 31 bytes; a Finished and the smallest request are
/// more).
pub const AFTER_HELLO: u64 = 128;
/// TLS tunnels a node, and the others together, need before a node can be a suspect.
pub const MIN_TLS: u32 = 50;
/// A suspect's share of tunnels closed right after the handshake is at least this.
pub const SUSPECT_SHARE: f64 = 0.5;
/// ... and at least this much above the other nodes' share.
pub const SUSPECT_EXCESS: f64 = 0.4;
/// Counts halve past this many TLS tunnels of one node.
const WINDOW: u32 = 400;

/// One node's TLS tunnels, and those closed right after the handshake.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    tls: u32,
    cut: u32,
}

impl Tally {
    fn share(self) -> f64 {
        if self.tls == 0 {
            0.0
        } else {
            f64::from(self.cut) / f64::from(self.tls)
        }
    }
}

/// The tallies of every node seen, and the suspects found.
#[derive(Debug, Default)]
pub struct Integrity {
    tallies: HashMap<Arc<str>, Tally>,
    suspects: HashSet<Arc<str>>,
}

impl Integrity {
    /// Counts `record`; the reason, the first time its node becomes a suspect.
    pub fn note(&mut self, record: &ConnRecord) -> Option<String> {
        if !record.tls {
            return None;
        }
        let t = self.tallies.entry(record.node_id.clone()).or_default();
        t.tls += 1;
        t.cut += u32::from(record.uploaded_after_first <= AFTER_HELLO);
        if t.tls > WINDOW {
            t.tls /= 2;
            t.cut /= 2;
        }
        let (mine, others) = self.split(&record.node_id);
        let suspect = mine.tls >= MIN_TLS
            && others.tls >= MIN_TLS
            && mine.share() >= SUSPECT_SHARE
            && mine.share() - others.share() >= SUSPECT_EXCESS;
        (suspect && self.suspects.insert(record.node_id.clone())).then(|| {
            format!(
                "{:.0}% of its customers' TLS connections closed right after the handshake \
                 ({} of {}; other nodes: {:.0}%)",
                mine.share() * 100.0,
                mine.cut,
                mine.tls,
                others.share() * 100.0
            )
        })
    }

    /// The factor on `node`'s selection weight: `1 - excess` of its share over the
    /// others', once both sides have [`MIN_TLS`] tunnels; else 1.
    pub fn weight_factor(&self, node: &str) -> f64 {
        let (mine, others) = self.split(node);
        if mine.tls < MIN_TLS || others.tls < MIN_TLS {
            return 1.0;
        }
        (1.0 - (mine.share() - others.share()).max(0.0)).max(0.0)
    }

    /// `node`'s tally, and the other nodes' summed.
    fn split(&self, node: &str) -> (Tally, Tally) {
        let mut others = Tally::default();
        for (id, t) in &self.tallies {
            if &**id != node {
                others.tls += t.tls;
                others.cut += t.cut;
            }
        }
        (self.tallies.get(node).copied().unwrap_or_default(), others)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use turbo_proto::RelayStatus;

    use super::*;

    fn tunnel(node: &str, tls: bool, after: u64) -> ConnRecord {
        ConnRecord {
            key_id: "k".into(),
            node_id: node.into(),
            frontend: "socks5",
            target_port: 443,
            started_unix_ms: 0,
            duration: Duration::from_millis(30),
            time_to_connect: None,
            bytes_up: 600 + after,
            bytes_down: 4000,
            reads_up: 2,
            reads_down: 2,
            gap_mean_us: 0,
            gap_max_us: 0,
            gap_std_us: 0,
            tls,
            uploaded_after_first: after,
            outcome: RelayStatus::Ok,
        }
    }

    #[test]
    fn a_node_whose_tls_customers_give_up_is_a_suspect_once() {
        let mut i = Integrity::default();
        let mut reasons = Vec::new();
        for n in 0..60u64 {
            // The honest node: one tunnel in ten is a quick give-up, as real ones are.
            reasons.extend(i.note(&tunnel("honest", true, if n % 10 == 0 { 7 } else { 900 })));
            // Plain HTTP counts for neither side.
            reasons.extend(i.note(&tunnel("tamper", false, 0)));
            reasons.extend(i.note(&tunnel("tamper", true, 24)));
        }
        assert_eq!(reasons.len(), 1, "told once: {reasons:?}");
        assert!(
            reasons[0].starts_with("100% of its customers' TLS connections closed right")
                && reasons[0].contains("50 of 50; other nodes: 10%"),
            "{}",
            reasons[0]
        );
        assert!(i.weight_factor("tamper") < 0.2);
        assert!((i.weight_factor("honest") - 1.0).abs() < 1e-9);
    }

    #[test]
    fn nobody_is_judged_without_enough_tunnels_or_alone() {
        let mut i = Integrity::default();
        for _ in 0..500 {
            assert_eq!(
                i.note(&tunnel("alone", true, 0)),
                None,
                "no others to compare"
            );
        }
        assert_eq!(i.weight_factor("alone"), 1.0);
        for _ in 0..49 {
            assert_eq!(i.note(&tunnel("other", true, 900)), None);
        }
        assert_eq!(i.weight_factor("alone"), 1.0, "49 are not enough");
        let tally = i.tallies["alone"];
        assert!(tally.tls <= WINDOW && tally.tls > WINDOW / 2, "{tally:?}");
    }
}
