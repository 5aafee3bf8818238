//! The credit accounts against a small lease book that keeps the store's contract:
//! grants never exceed the balance, a request seen twice (same lease and sequence) is
//! applied once, usage is charged from what the lease holds, a release returns the
//! rest, and an ended lease charges the key directly.

use std::sync::Arc;
use std::time::Duration;

use super::book::accounts;
use super::*;
use crate::control::NodeUsage;
use crate::testing::block_on;

/// Takes and books credit until the key runs dry; returns the bytes relayed.
async fn spend_all(a: &Account, node: &Arc<str>) -> (u64, Exhausted) {
    let mut total = 0u64;
    loop {
        match a.take(16 * 1024).await {
            Ok(n) => {
                a.spent(node, n, false);
                total += n as u64;
            }
            Err(e) => return (total, e),
        }
    }
}

#[test]
fn spends_exactly_the_balance_and_reports_every_byte() {
    block_on(async {
        let (accounts, store) = accounts(300_000, Duration::from_secs(60));
        let key: Arc<str> = "k1".into();
        let node: Arc<str> = "n1".into();
        let guard = accounts.attach(&key);
        let (relayed, why) = spend_all(&guard, &node).await;
        assert_eq!(why, Exhausted::NoCredits);
        assert_eq!(
            relayed, 300_000,
            "no byte beyond the balance, none left unused"
        );
        drop(guard);
        accounts.settle_all(Duration::from_secs(5)).await;
        let book = store.book.borrow();
        assert_eq!(
            book.charged, 300_000,
            "every relayed byte was reported once"
        );
        assert_eq!(book.balance, 0);
        assert!(
            book.log.last().is_some_and(|r| r.release),
            "the lease was released"
        );
        let per_node: u64 = book
            .log
            .iter()
            .flat_map(|r| &r.usage.nodes)
            .map(NodeUsage::bytes)
            .sum();
        assert_eq!(per_node, 300_000, "per-node usage sums to the bytes");
    });
}

#[test]
fn a_failed_request_is_retried_unchanged_and_applied_once() {
    block_on(async {
        let (accounts, store) = accounts(1 << 20, Duration::from_secs(60));
        store.book.borrow_mut().fail_next = 1;
        let key: Arc<str> = "k1".into();
        let guard = accounts.attach(&key);
        // Nothing is leased while the store is away: the first connection is refused.
        assert_eq!(guard.ready().await, Err(Exhausted::Unavailable));
        store.until(|b| b.log.len() >= 2).await;
        {
            let book = store.book.borrow();
            let (first, retry) = (&book.log[0], &book.log[1]);
            assert_eq!(
                (first.lease_id.clone(), first.seq),
                (retry.lease_id.clone(), retry.seq)
            );
            assert_eq!(first.want, retry.want);
            let granted_once = (1 << 20) - retry.want.min(1 << 20);
            assert_eq!(book.balance, granted_once);
        }
        let again = accounts.attach(&key);
        assert_eq!(
            again.ready().await,
            Ok(()),
            "the lease is live once the store is back"
        );
    });
}

#[test]
fn revocation_closes_connections_and_releases_the_lease() {
    block_on(async {
        let (accounts, store) = accounts(1 << 20, Duration::from_secs(60));
        let key: Arc<str> = "k1".into();
        let guard = accounts.attach(&key);
        guard.ready().await.expect("leased");
        accounts.apply(&KeyEvent::Revoked(key.clone()));
        assert_eq!(guard.closed().await, Exhausted::Revoked);
        assert_eq!(guard.take(1).await, Err(Exhausted::Revoked));
        drop(guard);
        store.until(|b| b.log.iter().any(|r| r.release)).await;
        let book = store.book.borrow();
        assert_eq!(
            book.balance,
            1 << 20,
            "the unspent lease went back to the key"
        );
    });
}

#[test]
fn an_idle_lease_goes_back_to_the_key() {
    block_on(async {
        let (accounts, store) = accounts(1 << 20, Duration::from_millis(30));
        let key: Arc<str> = "k1".into();
        let node: Arc<str> = "n1".into();
        let guard = accounts.attach(&key);
        let n = guard.take(5_000).await.expect("credit");
        guard.spent(&node, n, true);
        drop(guard);
        store.until(|b| b.log.iter().any(|r| r.release)).await;
        let book = store.book.borrow();
        assert_eq!(book.charged, n as u64);
        assert_eq!(book.balance, (1 << 20) - n as u64);
        assert!(book.held.values().all(|h| *h == 0));
    });
}

#[test]
fn an_ended_lease_is_replaced_and_its_usage_charged_once() {
    block_on(async {
        let (accounts, store) = accounts(1 << 30, Duration::from_secs(60));
        let key: Arc<str> = "k1".into();
        let node: Arc<str> = "n1".into();
        let guard = accounts.attach(&key);
        guard.ready().await.expect("leased");
        let first: Arc<str> = store.book.borrow().log[0].lease_id.clone();
        store.book.borrow_mut().ended.insert(first.clone());
        // Spend past half the grant so the account asks again, on the ended lease.
        let grant = store.book.borrow().log[0].want;
        let mut spent = 0u64;
        while spent < grant {
            let n = guard.take(16 * 1024).await.expect("credit");
            guard.spent(&node, n, false);
            spent += n as u64;
        }
        store
            .until(|b| b.log.iter().any(|r| r.lease_id != first && r.seq == 1))
            .await;
        let renewed = store
            .book
            .borrow()
            .log
            .iter()
            .find(|r| r.lease_id != first)
            .map(|r| r.lease_id.clone())
            .expect("a new lease");
        assert!(
            renewed.starts_with(&*first) && renewed.contains('+'),
            "{renewed}"
        );
        drop(guard);
        accounts.settle_all(Duration::from_secs(5)).await;
        assert_eq!(
            store.book.borrow().charged,
            spent,
            "usage charged once across both leases"
        );
    });
}
