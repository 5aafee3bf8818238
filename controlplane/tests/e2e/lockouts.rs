//! Lockouts aimed at others: failures from a shared address, or on one username from
//! many addresses, lock the attacker out (no more store lookups for guesses) without
//! locking out a valid key behind that address or under that username, including a
//! key created after the attack that no core has seen yet.

use crate::fixtures::socks::{authenticate_from, echo_from};
use crate::fixtures::{targets, Net, Options};

/// Five failures per window and core lock a subject out (the default is 20).
fn locking_net(driver: &'static str) -> Net {
    let mut opts = Options::new(driver);
    opts.config = "auth_fail_limit = 5\n".into();
    Net::start_with(opts)
}

const LOOKUPS: &str = "turbo_auth_lookups_total{result=\"control_plane\"}";
const LIMITED: &str = "turbo_auth_failures_total{reason=\"rate_limited\"}";

/// `n` wrong keys; `from(i)` and `user(i)` give each guess's address and username.
fn guess(net: &Net, n: usize, from: impl Fn(usize) -> String, user: impl Fn(usize) -> String) {
    for i in 0..n {
        let (_, status) =
            authenticate_from(&from(i), net.socks, &user(i), &format!("tk_wrong{i:06}"));
        assert_ne!(status, 0, "a wrong key is refused");
    }
}

/// Asserts that guesses by `attack` are refused without a store lookup, counted as
/// rate limited: the subject is locked out.
fn assert_locked(net: &Net, attack: impl Fn(&Net)) {
    let (lookups, limited) = (net.metric(LOOKUPS), net.metric(LIMITED));
    attack(net);
    assert_eq!(
        net.metric(LOOKUPS),
        lookups,
        "locked-out guesses cost no lookup"
    );
    assert!(
        net.metric(LIMITED) >= limited + 10.0,
        "the guesses were rate limited"
    );
}

fn shared_address_attacker_locks_out_no_valid_key(driver: &'static str) {
    let net = locking_net(driver);
    let echo = targets::echo();
    let office = "127.0.0.7";
    // A customer behind the office NAT has used its key before the attack.
    echo_from(office, net.socks, "e2e", &net.key, echo.port()).expect("before the attack");
    guess(&net, 60, |_| office.into(), |i| format!("user{i}"));
    assert_locked(&net, |net| {
        guess(net, 10, |_| office.into(), |i| format!("late{i}"))
    });
    // A colleague's key created after the attack, never seen by any core, and the
    // customer's own key both keep working from the locked address (on both cores).
    let (fresh, _) = net.create_key("1GB");
    for round in 0..8 {
        for key in [&fresh, &net.key] {
            echo_from(office, net.socks, "e2e", key, echo.port())
                .unwrap_or_else(|e| panic!("valid key refused in round {round}: {e}"));
        }
    }
    println!(
        "shared address: 60 failures locked it; a new and a known key were served 8 times each"
    );
}

fn many_address_label_attacker_locks_out_no_valid_key(driver: &'static str) {
    let net = locking_net(driver);
    let echo = targets::echo();
    // 60 addresses, one wrong key each, all on the label "alice".
    guess(
        &net,
        60,
        |i| format!("127.0.1.{}", i + 1),
        |_| "alice".into(),
    );
    assert_locked(&net, |net| {
        guess(
            net,
            10,
            |i| format!("127.0.2.{}", i + 1),
            |_| "alice".into(),
        )
    });
    // A new key using the label, from yet another address, is served; so is the
    // customer's own key under the label.
    let (fresh, _) = net.create_key("1GB");
    for round in 0..8 {
        for key in [&fresh, &net.key] {
            echo_from("127.0.3.1", net.socks, "alice", key, echo.port())
                .unwrap_or_else(|e| panic!("valid key refused in round {round}: {e}"));
        }
    }
    println!("label: 60 failures from 60 addresses locked it; a new and a known key were served");
}

crate::both_drivers!(
    shared_address_attacker_locks_out_no_valid_key,
    many_address_label_attacker_locks_out_no_valid_key,
);
