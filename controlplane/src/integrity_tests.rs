//! The integrity signals on made-up records: who becomes a suspect, when, and why.

use std::time::Duration;

use turbo_proto::RelayStatus;

use super::*;

/// A TLS tunnel (or not) with `after` bytes uploaded after the first read, for one of
/// four customers in turn.
fn tunnel(node: &str, tls: bool, after: u64) -> ConnRecord {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let customer = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 4;
    ConnRecord {
        key_id: format!("k{customer}").into(),
        node_id: node.into(),
        frontend: "socks5",
        target_port: 443,
        target_id: 1,
        session_id: 0,
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

fn download(node: &str, target: u64, bytes: u64) -> ConnRecord {
    ConnRecord {
        target_id: target,
        bytes_down: bytes,
        ..tunnel(node, false, 100)
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
    let tally = i.tls.tallies["alone"];
    assert!(
        tally.judged <= WINDOW && tally.judged > WINDOW / 2,
        "{tally:?}"
    );
    let summed = i.tls.tallies.values().fold(Tally::default(), |a, t| Tally {
        judged: a.judged + t.judged,
        wrong: a.wrong + t.wrong,
    });
    assert_eq!(i.tls.total, summed, "the running sum follows the halvings");
}

#[test]
fn a_node_whose_downloads_differ_from_its_peers_on_the_same_targets_is_a_suspect() {
    let mut i = Integrity::default();
    let mut reasons = Vec::new();
    for n in 0..80u64 {
        let target = n % 4;
        // Honest sizes vary a little from one download to the next.
        let size = 20_000 + target * 1000 + (n % 3) * 500;
        reasons.extend(i.note(&download("a", target, size)));
        reasons.extend(i.note(&download("b", target, size + 300)));
        reasons.extend(i.note(&download("padder", target, size + 65_536)));
    }
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(
        reasons[0].contains("downloads were far from other nodes' on the same targets"),
        "{}",
        reasons[0]
    );
    assert!(i.suspects.contains("padder") && i.suspects.len() == 1);
    assert!(i.weight_factor("a") > 0.99 && i.weight_factor("padder") < 0.2);
}

#[test]
fn one_customer_alone_makes_no_suspect() {
    let mut i = Integrity::default();
    for _ in 0..100 {
        i.note(&tunnel("honest", true, 900));
        let scanner = ConnRecord {
            key_id: "scanner".into(),
            ..tunnel("pinned", true, 7)
        };
        assert_eq!(i.note(&scanner), None, "a TLS scanner pinned to one node");
    }
    assert!(i.weight_factor("pinned") < 0.2, "it still loses weight");
}

#[test]
fn two_nodes_cannot_judge_each_other_and_targets_are_bounded() {
    let mut i = Integrity::default();
    for n in 0..200u64 {
        assert_eq!(i.note(&download("a", 7, 20_000)), None);
        assert_eq!(
            i.note(&download("b", 7, 90_000 + n)),
            None,
            "no majority of two"
        );
    }
    for target in 0..(MAX_TARGETS as u64 + 50) {
        i.note(&download("a", 1000 + target, 10));
    }
    assert_eq!(i.targets.len(), MAX_TARGETS);
    assert_eq!(i.target_order.len(), MAX_TARGETS);
}
