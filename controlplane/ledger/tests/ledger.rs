//! The ledger against a real PostgreSQL: postings balance, replays are no-ops, a key
//! can't be reused for other legs, and concurrent posters that touch the same accounts
//! in every order neither deadlock nor lose a posting; the ledger sums to zero.

mod fixtures;

use fixtures::Postgres;
use turbo_ledger::{AccountRef, Asset, Ledger, LedgerError, Leg, Platform, Posted, Posting};

fn usage(key: &str, customer: &str, node: &str, bytes: i64, price: i64) -> Posting {
    let revenue = AccountRef::platform(Platform::Revenue, Asset::NanoUsd);
    Posting {
        key: key.into(),
        kind: "usage".into(),
        legs: vec![
            Leg {
                account: AccountRef::key(customer, Asset::Bytes),
                amount: -bytes,
            },
            Leg {
                account: AccountRef::node(node, Asset::Bytes),
                amount: bytes,
            },
            Leg {
                account: AccountRef::key(customer, Asset::NanoUsd),
                amount: -price,
            },
            Leg {
                account: revenue,
                amount: price,
            },
        ],
    }
}

async fn assert_sums_to_zero(ledger: &Ledger) {
    for (asset, sum) in ledger.totals().await.expect("totals") {
        assert_eq!(sum, 0, "{asset} balances sum to {sum}");
    }
}

#[tokio::test]
async fn a_replay_is_a_no_op_and_returns_the_original() {
    let pg = Postgres::start();
    let ledger = Ledger::connect(&pg.database().await).await.expect("ledger");
    let p = usage("usage:k1:n1:lease7:1", "k1", "n1", 1_000_000, 250);
    let first = ledger.post(&p).await.expect("post");
    assert!(matches!(first, Posted::New(_)));
    for _ in 0..3 {
        assert_eq!(
            ledger.post(&p).await.expect("replay"),
            Posted::Replayed(first.id())
        );
    }
    let node = AccountRef::node("n1", Asset::Bytes);
    assert_eq!(ledger.balance(&node).await.expect("balance"), 1_000_000);
    let customer = AccountRef::key("k1", Asset::NanoUsd);
    assert_eq!(ledger.balance(&customer).await.expect("balance"), -250);
    assert_sums_to_zero(&ledger).await;
    // A second connect (another server starting) finds the schema in place.
    Ledger::connect(&pg.database().await)
        .await
        .expect("fresh db");
}

#[tokio::test]
async fn unbalanced_malformed_and_reused_keys_are_refused() {
    let pg = Postgres::start();
    let ledger = Ledger::connect(&pg.database().await).await.expect("ledger");
    let mut lopsided = usage("u1", "k1", "n1", 100, 5);
    lopsided.legs[1].amount = 99;
    match ledger.post(&lopsided).await {
        Err(LedgerError::Unbalanced { asset, sum, .. }) => {
            assert_eq!((asset, sum), (Asset::Bytes, -1));
        }
        other => panic!("{other:?}"),
    }
    let mut one_leg = usage("u2", "k1", "n1", 100, 5);
    one_leg.legs.truncate(1);
    assert!(matches!(
        ledger.post(&one_leg).await,
        Err(LedgerError::Malformed { .. })
    ));
    let no_key = usage("", "k1", "n1", 100, 5);
    assert!(matches!(
        ledger.post(&no_key).await,
        Err(LedgerError::Malformed { .. })
    ));
    ledger
        .post(&usage("u3", "k1", "n1", 100, 5))
        .await
        .expect("post");
    let other_legs = usage("u3", "k1", "n1", 101, 5);
    match ledger.post(&other_legs).await {
        Err(LedgerError::KeyReused(key)) => assert_eq!(key, "u3"),
        other => panic!("{other:?}"),
    }
    let node = AccountRef::node("n1", Asset::Bytes);
    assert_eq!(ledger.balance(&node).await.expect("balance"), 100);
    assert_sums_to_zero(&ledger).await;
}

/// Four posters, each posting 150 transfers among the same accounts (platform revenue
/// in every one) with the legs in a different order per poster, and each replaying
/// every other poster's keys: no deadlock, no lost or doubled posting, balances exact,
/// and every account's last entry carries its balance (the audit).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_posters_neither_deadlock_nor_lose_a_posting() {
    const POSTERS: u64 = 4;
    const EACH: u64 = 150;
    let pg = Postgres::start();
    let ledger = Ledger::connect(&pg.database().await).await.expect("ledger");
    let posting = |poster: u64, i: u64| {
        let customer = format!("k{}", i % 3);
        let node = format!("n{}", (i + poster) % 3);
        let mut p = usage(
            &format!("p{poster}:{i}"),
            &customer,
            &node,
            1000 + i as i64,
            7,
        );
        p.legs.rotate_left((poster as usize + i as usize) % 4);
        p
    };
    let mut tasks = Vec::new();
    for poster in 0..POSTERS {
        let ledger = ledger.clone();
        tasks.push(tokio::spawn(async move {
            let mut new = 0u64;
            for i in 0..EACH {
                if let Posted::New(_) = ledger.post(&posting(poster, i)).await? {
                    new += 1;
                }
                // Replay another poster's posting, which may or may not exist yet.
                let other = (poster + 1) % POSTERS;
                if let Posted::New(_) = ledger.post(&posting(other, i)).await? {
                    new += 1;
                }
            }
            Ok::<u64, LedgerError>(new)
        }));
    }
    let mut new = 0;
    for t in tasks {
        new += t.await.expect("poster task").expect("postings");
    }
    assert_eq!(new, POSTERS * EACH, "every posting exactly once");
    let revenue = AccountRef::platform(Platform::Revenue, Asset::NanoUsd);
    let revenue_balance = ledger.balance(&revenue).await.expect("balance");
    assert_eq!(revenue_balance, (POSTERS * EACH * 7) as i64);
    let carried: i64 = (0..POSTERS)
        .flat_map(|p| (0..EACH).map(move |i| (p, i)))
        .map(|(_, i)| 1000 + i as i64)
        .sum();
    let mut nodes = 0;
    for n in 0..3 {
        nodes += ledger
            .balance(&AccountRef::node(&format!("n{n}"), Asset::Bytes))
            .await
            .expect("balance");
    }
    assert_eq!(nodes, carried, "bytes carried by nodes = bytes billed");
    assert_sums_to_zero(&ledger).await;
    let audit = ledger.audit().await.expect("audit");
    assert_eq!(audit.transactions, POSTERS * EACH);
    assert!(audit.is_sound(), "{audit:?}");
}
