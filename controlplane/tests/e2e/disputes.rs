//! Routing by evidence: a node's target failure ("connection refused") is checked on a
//! second node. A node that lies is disputed and demoted while every customer is
//! served; honest nodes whose refusals are reproduced keep their score.

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::{free_port, targets, wait_for, Net, Options};

fn two_nodes(driver: &'static str, liar: bool) -> (Net, String, String) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let first = net.add_node(&[]);
    let second = if liar {
        net.add_faulty_node("refuse-all", &[])
    } else {
        net.add_node(&[])
    };
    (net, first, second)
}

fn a_lying_node_is_disputed_and_demoted(driver: &'static str) {
    let (net, honest, liar) = two_nodes(driver, true);
    let echo = targets::echo();
    // Every request is served: a "refused" from the liar is retried on the honest node.
    for _ in 0..100 {
        net.echo_once(echo.port());
    }
    // Scores are republished every second, and on every change of membership (a lane
    // joining), which can catch the attempts' reports still on their way: wait for the
    // demotion itself.
    let (l, h) = wait_for(
        "the liar's weight to fall below half the honest node's",
        || {
            let (l, h) = (net.node_info(&liar)?, net.node_info(&honest)?);
            let (lw, hw) = (
                l["score"]["weight"].as_f64()?,
                h["score"]["weight"].as_f64()?,
            );
            (lw < hw / 2.0).then_some((l, h))
        },
    );
    let disputed = l["attempts_disputed"].as_u64().unwrap();
    let metric = net.metric("turbo_refusal_checks_total{result=\"disputed\"}");
    println!(
        "{driver}: 100/100 served; liar disputed {disputed} times, weight {} (C {}) vs honest {} (C {})",
        l["score"]["weight"], l["score"]["connect_success"], h["score"]["weight"],
        h["score"]["connect_success"]
    );
    assert!(disputed >= 1, "{l}");
    assert_eq!(l["attempts_failed"].as_u64(), Some(disputed), "{l}");
    assert_eq!(metric, disputed as f64);
    assert_eq!(h["attempts_ok"].as_u64(), Some(100), "{h}");
    assert_eq!(h["attempts_failed"].as_u64(), Some(0), "{h}");
    let (lw, hw) = (
        l["score"]["weight"].as_f64().unwrap(),
        h["score"]["weight"].as_f64().unwrap(),
    );
    assert!(lw < hw / 2.0, "the liar is demoted: {lw} vs {hw}");
}

fn honest_refusals_are_confirmed_and_cost_nothing(driver: &'static str) {
    let (net, a, b) = two_nodes(driver, false);
    // A port nothing listens on: every node really gets "connection refused".
    let closed = free_port();
    for _ in 0..20 {
        match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", closed) {
            Connect::Refused(5) => {}
            other => panic!("expected SOCKS5 0x05 connection refused, got {other:?}"),
        }
    }
    let confirmed = net.metric("turbo_refusal_checks_total{result=\"confirmed\"}");
    let disputed = net.metric("turbo_refusal_checks_total{result=\"disputed\"}");
    let (ia, ib) = (net.node_info(&a).unwrap(), net.node_info(&b).unwrap());
    println!(
        "{driver}: 20 real refusals, {confirmed} confirmed on the other node, {disputed} disputed; \
         C {} and {}",
        ia["score"]["connect_success"], ib["score"]["connect_success"]
    );
    assert_eq!(
        confirmed, 20.0,
        "every refusal was checked on the other node"
    );
    assert_eq!(disputed, 0.0);
    for info in [ia, ib] {
        assert_eq!(info["attempts_failed"].as_u64(), Some(0), "{info}");
        assert_eq!(info["attempts_disputed"].as_u64(), Some(0), "{info}");
        assert_eq!(
            info["score"]["connect_success"].as_f64(),
            Some(0.9),
            "{info}"
        );
    }
}

crate::both_drivers!(
    a_lying_node_is_disputed_and_demoted,
    honest_refusals_are_confirmed_and_cost_nothing
);
