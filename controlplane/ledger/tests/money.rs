//! Rewards, reconciliation and payouts against a real PostgreSQL: a day rewarded twice
//! posts once, late bytes are rewarded alone, remainders carry across days, a week of
//! uptime and traffic earns both bonuses as their own legs, payouts are confirmed into
//! the CSV an operator pays from, a failed sink voids and returns the funds, and
//! payouts refuse to run on a ledger that does not reconcile.

mod fixtures;

use std::collections::BTreeMap;

use fixtures::Postgres;
use turbo_ledger::{
    AccountRef, Asset, CsvSink, Ledger, LedgerError, Platform, RewardPolicy, Rewarded, UsageRecord,
};

const DAY: i64 = 20_000;
const GB: i64 = 1_000_000_000;

fn usage(node: &str, day: i64, seq: i64, bytes: i64) -> UsageRecord {
    UsageRecord {
        server: "s1".into(),
        lease: format!("{node}-{day}"),
        seq,
        node: node.into(),
        key_id: "k1".into(),
        minute: day * 1440 + seq % 1440,
        up: bytes / 4,
        down: bytes - bytes / 4,
        conns: 1,
    }
}

async fn carried(ledger: &Ledger, records: &[UsageRecord]) {
    ledger.record_usage(records).await.expect("record");
    while ledger.settle(500).await.expect("settle").records > 0 {}
}

async fn earned(ledger: &Ledger, node: &str) -> i64 {
    ledger
        .balance(&AccountRef::node(node, Asset::NanoUsd))
        .await
        .expect("balance")
}

async fn ledger(pg: &Postgres) -> Ledger {
    Ledger::connect(&pg.database().await).await.expect("ledger")
}

/// A fresh ledger with the default reward policy adopted, and its version.
async fn with_policy(pg: &Postgres) -> (Ledger, i32) {
    let ledger = ledger(pg).await;
    let version = ledger
        .adopt_policy(&RewardPolicy::default())
        .await
        .expect("policy");
    (ledger, version)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_day_is_rewarded_once_and_late_bytes_alone() {
    let pg = Postgres::start();
    let (ledger, version) = with_policy(&pg).await;
    assert_eq!(
        ledger
            .adopt_policy(&RewardPolicy::default())
            .await
            .expect("same"),
        version
    );
    carried(
        &ledger,
        &[usage("n1", DAY, 1, 3 * GB), usage("n2", DAY, 1, GB / 2)],
    )
    .await;
    let first = ledger.reward_day(DAY, version).await.expect("reward");
    assert_eq!(first.nodes, 2);
    assert_eq!(first.base_nano, 300_000_000 + 50_000_000);
    assert_eq!(
        ledger.reward_day(DAY, version).await.expect("again"),
        Rewarded::default()
    );
    // Late usage of the same day: only the new bytes are rewarded.
    carried(&ledger, &[usage("n1", DAY, 2, GB)]).await;
    let late = ledger.reward_day(DAY, version).await.expect("late");
    assert_eq!((late.nodes, late.base_nano), (1, 100_000_000));
    assert_eq!(earned(&ledger, "n1").await, 400_000_000);
    assert_eq!(earned(&ledger, "n2").await, 50_000_000);
    let audit = ledger.audit().await.expect("audit");
    assert!(audit.is_sound(), "{audit:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remainders_carry_across_days() {
    let pg = Postgres::start();
    let (ledger, version) = with_policy(&pg).await;
    // 15 bytes a day at 0.1 nano-USD per byte: 1.5 nano-USD, every day.
    for day in DAY..DAY + 4 {
        carried(&ledger, &[usage("n1", day, 1, 15)]).await;
        ledger.reward_day(day, version).await.expect("reward");
    }
    assert_eq!(
        earned(&ledger, "n1").await,
        6,
        "4 × 1.5 nano-USD, nothing rounded away"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_week_online_with_traffic_earns_both_bonuses_as_their_own_legs() {
    let pg = Postgres::start();
    let (ledger, version) = with_policy(&pg).await;
    for day in DAY - 6..=DAY {
        ledger
            .record_uptime("n1", day, 86_400)
            .await
            .expect("uptime");
        ledger
            .record_uptime("n2", day, 43_200)
            .await
            .expect("uptime");
        carried(
            &ledger,
            &[usage("n1", day, 1, 10 * GB), usage("n2", day, 1, 10 * GB)],
        )
        .await;
    }
    let r = ledger.reward_day(DAY, version).await.expect("reward");
    // n1: 7 days at 100% uptime (+10%) and a 7-day streak (+5%); n2: 50% uptime, same
    // streak (+5%).
    assert_eq!(r.base_nano, 2 * GB);
    assert_eq!(r.stability_nano, 100_000_000);
    assert_eq!(r.streak_nano, 2 * 50_000_000);
    assert_eq!(earned(&ledger, "n1").await, GB + 100_000_000 + 50_000_000);
    assert_eq!(earned(&ledger, "n2").await, GB + 50_000_000);
    let expense = ledger
        .balance(&AccountRef::platform(
            Platform::RewardsExpense,
            Asset::NanoUsd,
        ))
        .await
        .expect("expense");
    assert_eq!(expense, -(2 * GB + 200_000_000));
    assert!(
        ledger.record_uptime("n1", DAY, 90_000).await.is_err(),
        "more than a day"
    );
}

async fn funded(pg: &Postgres) -> (Ledger, BTreeMap<String, String>) {
    let (ledger, version) = with_policy(pg).await;
    carried(
        &ledger,
        &[
            usage("rich", DAY, 1, 250 * GB),
            usage("poor", DAY, 1, 10 * GB),
        ],
    )
    .await;
    ledger.reward_day(DAY, version).await.expect("reward");
    let addresses = [("rich", "0xR1CH"), ("poor", "0xP00R")]
        .map(|(n, a)| (n.to_owned(), a.to_owned()))
        .into();
    (ledger, addresses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_over_the_threshold_are_confirmed_into_the_csv() {
    let pg = Postgres::start();
    let (ledger, addresses) = funded(&pg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = CsvSink {
        path: dir.path().join("payouts.csv"),
    };
    let threshold = 20 * GB; // $20
    let gate = ledger.reconcile(None).await.expect("reconcile");
    assert!(gate.ok, "{gate:?}");
    let dry = ledger
        .run_payouts(&gate, threshold, &addresses, &sink, true)
        .await
        .expect("dry");
    assert_eq!(dry.planned, vec![("rich".to_owned(), 25 * GB)]);
    assert_eq!(
        (dry.confirmed, earned(&ledger, "rich").await),
        (0, 25 * GB),
        "dry runs pay nothing"
    );
    let run = ledger
        .run_payouts(&gate, threshold, &addresses, &sink, false)
        .await
        .expect("run");
    assert_eq!((run.confirmed, run.voided), (1, 0));
    assert_eq!(earned(&ledger, "rich").await, 0);
    assert_eq!(
        earned(&ledger, "poor").await,
        GB,
        "under the threshold: kept"
    );
    let csv = std::fs::read_to_string(&sink.path).expect("csv");
    assert_eq!(csv, "1,rich,0xR1CH,25000000000,25.000000000\n");
    let paid = ledger
        .balance(&AccountRef::platform(Platform::PaidOut, Asset::NanoUsd))
        .await
        .expect("paid");
    assert_eq!(paid, 25 * GB);
    let again = ledger
        .run_payouts(&gate, threshold, &addresses, &sink, false)
        .await
        .expect("again");
    assert_eq!(again.confirmed, 0, "nothing left to pay");
    assert!(ledger.audit().await.expect("audit").is_sound());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sink_voids_the_payout_and_returns_the_funds() {
    let pg = Postgres::start();
    let (ledger, addresses) = funded(&pg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    // A directory cannot be appended to: the sink fails.
    let sink = CsvSink {
        path: dir.path().to_owned(),
    };
    let gate = ledger.reconcile(None).await.expect("reconcile");
    let run = ledger
        .run_payouts(&gate, 20 * GB, &addresses, &sink, false)
        .await
        .expect("run");
    assert_eq!((run.confirmed, run.voided), (0, 1));
    assert_eq!(
        earned(&ledger, "rich").await,
        25 * GB,
        "the money is back on the node"
    );
    let clearing = ledger
        .balance(&AccountRef::platform(
            Platform::PayoutClearing,
            Asset::NanoUsd,
        ))
        .await
        .expect("clearing");
    assert_eq!(clearing, 0);
    assert!(ledger.audit().await.expect("audit").is_sound());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payouts_refuse_to_run_on_a_ledger_that_does_not_reconcile() {
    let pg = Postgres::start();
    let (ledger, addresses) = funded(&pg).await;
    let recorded = 260 * GB as u64;
    let ok = ledger.reconcile(Some(recorded)).await.expect("reconcile");
    assert!(ok.ok && ok.mismatch_bytes == 0, "{ok:?}");
    assert_eq!(
        (ok.customer_debited_bytes, ok.node_credited_bytes),
        (recorded, recorded)
    );
    let off = ledger
        .reconcile(Some(recorded + 5))
        .await
        .expect("reconcile");
    assert_eq!((off.ok, off.mismatch_bytes), (false, 5));
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = CsvSink {
        path: dir.path().join("payouts.csv"),
    };
    let refused = ledger
        .run_payouts(&off, 20 * GB, &addresses, &sink, false)
        .await;
    assert!(
        matches!(refused, Err(LedgerError::Unreconciled(5))),
        "{refused:?}"
    );
    assert_eq!(earned(&ledger, "rich").await, 25 * GB);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_payout_runs_pay_once() {
    let pg = Postgres::start();
    let (ledger, addresses) = funded(&pg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("payouts.csv");
    let gate = ledger.reconcile(None).await.expect("reconcile");
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (ledger, addresses, gate) = (ledger.clone(), addresses.clone(), gate);
            let sink = CsvSink { path: path.clone() };
            tokio::spawn(async move {
                ledger
                    .run_payouts(&gate, 20 * GB, &addresses, &sink, false)
                    .await
            })
        })
        .collect();
    let mut confirmed = 0;
    for r in runs {
        match r.await.expect("run") {
            Ok(run) => confirmed += run.confirmed,
            Err(LedgerError::PayoutRunning) => {}
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(confirmed, 1, "one payout among four racing runs");
    let csv = std::fs::read_to_string(&path).expect("csv");
    assert_eq!(csv.lines().count(), 1, "{csv}");
    assert_eq!(earned(&ledger, "rich").await, 0);
    let paid = ledger
        .balance(&AccountRef::platform(Platform::PaidOut, Asset::NanoUsd))
        .await
        .expect("paid");
    assert_eq!(paid, 25 * GB);
    assert!(ledger.audit().await.expect("audit").is_sound());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_node_keeps_its_earnings_unpaid_until_released() {
    let pg = Postgres::start();
    let (ledger, addresses) = funded(&pg).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let sink = CsvSink {
        path: dir.path().join("payouts.csv"),
    };
    assert!(ledger.hold("rich", "altered a canary").await.expect("hold"));
    assert!(
        !ledger.hold("rich", "another reason").await.expect("again"),
        "one open hold; its first reason stands"
    );
    let hold = ledger
        .hold_of("rich")
        .await
        .expect("hold_of")
        .expect("held");
    assert_eq!(hold.reason, "altered a canary");
    let gate = ledger.reconcile(None).await.expect("reconcile");
    let run = ledger
        .run_payouts(&gate, 20 * GB, &addresses, &sink, false)
        .await
        .expect("run");
    assert!(run.planned.is_empty(), "held: not paid {run:?}");
    let earnings = ledger.earnings("rich").await.expect("earnings");
    assert_eq!(earnings.available_nano, 25 * GB, "held, not deleted");
    assert_eq!(earnings.hold, Some(hold));
    assert!(ledger.release_hold("rich").await.expect("release"));
    assert!(!ledger.release_hold("rich").await.expect("again"));
    let run = ledger
        .run_payouts(&gate, 20 * GB, &addresses, &sink, false)
        .await
        .expect("run");
    assert_eq!(run.planned, vec![("rich".to_owned(), 25 * GB)]);
    assert_eq!(earned(&ledger, "rich").await, 0, "paid once released");
}
