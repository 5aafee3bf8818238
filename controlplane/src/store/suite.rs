//! The behaviour every [`Store`] backend must have. The memory store runs it in its unit
//! tests; the Redis store runs it against a real `redis-server`.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use turbo_dataplane::control::{ConnRecord, KeyEvent, LeaseRequest, Usage};
use turbo_proto::RelayStatus;

use super::{KeyRecord, LeaseTerms, Store, StoreError, MAX_BALANCE, MIN_LEASE};
use crate::secrets;

fn terms(ttl: Duration) -> LeaseTerms {
    LeaseTerms {
        owner: "suite/0".into(),
        ttl,
        usage_log: true,
    }
}

fn request(key: &KeyRecord, lease: &str, seq: u64, want: u64, usage: Usage) -> LeaseRequest {
    LeaseRequest {
        key_id: key.id.as_str().into(),
        lease_id: lease.into(),
        seq,
        want,
        usage,
        release: false,
    }
}

async fn next_event(rx: &mut broadcast::Receiver<KeyEvent>, want: &KeyEvent) {
    let wait = async {
        loop {
            match rx.recv().await {
                Ok(ev) if &ev == want => return,
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => panic!("event stream closed"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .unwrap_or_else(|_| panic!("no {want:?} event within 5s"));
}

/// Runs the whole suite against `store` (which must be empty).
///
/// # Panics
/// On the first behaviour that differs.
pub async fn run<S: Store>(store: Arc<S>) {
    keys_and_nodes(&*store).await;
    payments_credit_once(&*store).await;
    leases_book_usage_exactly_once(&*store).await;
    usage_log_takes_each_checkpoint_once(&*store).await;
    events_reach_subscribers(&*store).await;
    node_identities(&*store).await;
    expired_leases_are_reclaimed(&*store).await;
    concurrent_leases_never_overspend(store.clone()).await;
    balances_stop_at_the_maximum(&*store).await;
    amounts_near_the_maximum_are_exact(&*store).await;
    feature_records_keep_order(&*store).await;
    sessions_pin_once(&*store).await;
    super::suite_detect::run(&*store).await;
}

/// A payment's credits are added once per operation id, whoever retries.
async fn payments_credit_once<S: Store>(store: &S) {
    let (k, _) = store.create_key("payer", 100).await.expect("create");
    let op = "chain:31337:0xabc:0";
    assert_eq!(store.add_credits_once(&k.id, 50, op).await, Ok(true));
    assert_eq!(
        store.add_credits_once(&k.id, 50, op).await,
        Ok(false),
        "a replay adds nothing"
    );
    assert_eq!(
        store
            .add_credits_once(&k.id, 7, "chain:31337:0xabc:1")
            .await,
        Ok(true)
    );
    assert_eq!(store.key(&k.id).await.expect("key").credits, 157);
    assert!(matches!(
        store.add_credits_once("k_missing", 1, op).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.add_credits_once(&k.id, MAX_BALANCE, "too-much").await,
        Err(StoreError::OverMaximum)
    );
    assert_eq!(
        store.add_credits_once(&k.id, 1, "too-much").await,
        Ok(true),
        "a refused operation was not marked applied"
    );
}

async fn sessions_pin_once<S: Store>(store: &S) {
    let hour = Duration::from_secs(3600);
    assert_eq!(store.session_get("k_s", "abc").await, Ok(None));
    let first = store.session_put("k_s", "abc", "n_1", hour, None).await;
    assert_eq!(first.as_deref(), Ok("n_1"));
    let racing = store.session_put("k_s", "abc", "n_2", hour, None).await;
    assert_eq!(racing.as_deref(), Ok("n_1"), "the first pin wins");
    let stale = store
        .session_put("k_s", "abc", "n_3", hour, Some("n_9"))
        .await;
    assert_eq!(
        stale.as_deref(),
        Ok("n_1"),
        "replacing a pin that moved fails"
    );
    let moved = store
        .session_put("k_s", "abc", "n_2", hour, Some("n_1"))
        .await;
    assert_eq!(moved.as_deref(), Ok("n_2"));
    assert_eq!(
        store.session_get("k_s", "abc").await,
        Ok(Some("n_2".into()))
    );
    assert_eq!(
        store.session_get("k_other", "abc").await,
        Ok(None),
        "per key"
    );
}

async fn keys_and_nodes<S: Store>(store: &S) {
    let (k, secret) = store.create_key("alice", 1000).await.expect("create");
    assert!(secret.starts_with("tk_"));
    assert_eq!((k.credits, k.leased), (1000, 0));
    let found = store
        .key_by_hash(secrets::hash(&secret))
        .await
        .expect("lookup");
    assert_eq!(found.map(|f| f.id), Some(k.id.clone()));
    let miss = store.key_by_hash(secrets::hash("tk_wrong")).await;
    assert_eq!(miss, Ok(None));
    assert_eq!(store.key(&k.id).await.expect("by id").name, "alice");
    assert!(matches!(
        store.key("k_missing").await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.add_credits("k_missing", 1).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.add_credits(&k.id, 24).await.expect("top-up").credits,
        1024
    );
    assert!(store
        .list_keys()
        .await
        .expect("list")
        .iter()
        .any(|l| l.id == k.id));

    let (n, token) = store.create_node(None).await.expect("node");
    assert!(token.starts_with("nt_"));
    let found = store
        .node_by_token_hash(secrets::hash(&token))
        .await
        .expect("node");
    assert_eq!(found.map(|f| f.id), Some(n.id.clone()));
    assert_eq!(
        store.node_by_token_hash(secrets::hash("nt_x")).await,
        Ok(None)
    );
    assert!(store
        .list_nodes()
        .await
        .expect("nodes")
        .iter()
        .any(|l| l.id == n.id));
}

/// Node payout addresses come from the operator; revocation is kept and announced.
async fn node_identities<S: Store>(store: &S) {
    let mut rx = store.events();
    let (n, token) = store.create_node(Some("0xPayMe")).await.expect("node");
    assert_eq!(n.payout_address.as_deref(), Some("0xPayMe"));
    let got = store.node(&n.id).await.expect("node by id");
    assert_eq!(
        (got.payout_address.as_deref(), got.revoked),
        (Some("0xPayMe"), false)
    );
    assert!(matches!(
        store.node("n_none").await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_node_payout(&n.id, "0xOther")
        .await
        .expect("payout");
    let got = store.node(&n.id).await.expect("node by id");
    assert_eq!(got.payout_address.as_deref(), Some("0xOther"));
    assert!(matches!(
        store.set_node_payout("n_none", "x").await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(got.payout_threshold_nano, None, "the server's by default");
    store
        .set_node_threshold(&n.id, Some(50_000_000_000))
        .await
        .expect("threshold");
    let got = store.node(&n.id).await.expect("node");
    assert_eq!(got.payout_threshold_nano, Some(50_000_000_000));
    store.set_node_threshold(&n.id, None).await.expect("reset");
    assert_eq!(
        store.node(&n.id).await.expect("node").payout_threshold_nano,
        None
    );
    assert!(matches!(
        store.set_node_threshold("n_none", None).await,
        Err(StoreError::NotFound(_))
    ));

    store.revoke_node(&n.id).await.expect("revoke");
    next_event(&mut rx, &KeyEvent::NodeRevoked(n.id.as_str().into())).await;
    let found = store
        .node_by_token_hash(secrets::hash(&token))
        .await
        .expect("lookup")
        .expect("still there");
    assert!(found.revoked, "the lookup shows the revocation");
    assert!(store.node(&n.id).await.expect("node").revoked);
    store
        .revoke_node(&n.id)
        .await
        .expect("revoking twice is fine");
    assert!(matches!(
        store.revoke_node("n_none").await,
        Err(StoreError::NotFound(_))
    ));
}

async fn usage_log_takes_each_checkpoint_once<S: Store>(store: &S) {
    let t = terms(Duration::from_secs(60));
    let (k, _) = store.create_key("logged", 10_000).await.expect("key");
    let (a, b): (Arc<str>, Arc<str>) = ("n_log_a".into(), "n_log_b".into());
    let mut usage = Usage::default();
    usage.add(&a, 300, true);
    usage.add(&b, 200, false);
    usage.add_connection(&a);
    let first = request(&k, "l_log", 1, 1000, usage);
    store.lease(&t, &first).await.expect("lease");
    store.lease(&t, &first).await.expect("retried");
    let mut second = request(&k, "l_log", 2, 0, Usage::default());
    second.usage.add(&a, 7, false);
    store.lease(&t, &second).await.expect("checkpoint");
    let (all, cursor) = store
        .usage_since(super::USAGE_LOG_START, 10_000)
        .await
        .expect("log");
    let mine: Vec<_> = all.iter().filter(|e| e.key_id == k.id).collect();
    let shape: Vec<_> = mine
        .iter()
        .map(|e| (e.seq, e.node.as_str(), e.up, e.down, e.connections))
        .collect();
    assert_eq!(
        shape,
        [
            (1, "n_log_a", 300, 0, 1),
            (1, "n_log_b", 0, 200, 0),
            (2, "n_log_a", 0, 7, 0)
        ],
        "one entry per node per applied checkpoint; the retry adds none"
    );
    assert!(mine
        .iter()
        .all(|e| e.owner == "suite/0" && e.lease == "l_log"));
    let (rest, same) = store.usage_since(&cursor, 10).await.expect("after");
    assert!(
        rest.is_empty() && same == cursor,
        "nothing after the cursor"
    );
    store.usage_trim(&cursor).await.expect("trim");
    let (left, _) = store
        .usage_since(super::USAGE_LOG_START, 10_000)
        .await
        .expect("log");
    assert!(left.is_empty(), "trimmed up to the cursor");
}

async fn leases_book_usage_exactly_once<S: Store>(store: &S) {
    let t = terms(Duration::from_secs(60));
    let (k, _) = store.create_key("lessee", 1000).await.expect("key");
    let (n, _) = store.create_node(None).await.expect("node");
    let node: Arc<str> = n.id.as_str().into();

    let first = store
        .lease(&t, &request(&k, "l_a", 1, 10_000, Usage::default()))
        .await
        .expect("lease");
    assert_eq!((first.granted, first.held, first.credits), (1000, 1000, 0));
    assert!(!first.revoked && !first.ended);
    assert_eq!(store.key(&k.id).await.expect("key").balance(), 1000);

    let mut usage = Usage::default();
    usage.add(&node, 300, true);
    usage.add(&node, 200, false);
    usage.connections = 1;
    let second = request(&k, "l_a", 2, 0, usage.clone());
    let ans = store.lease(&t, &second).await.expect("checkpoint");
    assert_eq!((ans.granted, ans.held, ans.credits), (0, 500, 0));
    let again = store.lease(&t, &second).await.expect("retry");
    assert_eq!(again, ans, "a retried request is applied once");
    let rec = store.key(&k.id).await.expect("key");
    assert_eq!(
        (rec.bytes_up, rec.bytes_down, rec.connections),
        (300, 200, 1)
    );
    assert_eq!((rec.credits, rec.leased), (0, 500));

    let mut release = request(&k, "l_a", 3, 0, Usage::default());
    release.usage.add(&node, 100, false);
    release.release = true;
    let ans = store.lease(&t, &release).await.expect("release");
    assert_eq!((ans.held, ans.credits), (0, 400));
    let again = store.lease(&t, &release).await.expect("again");
    assert_eq!((again.granted, again.held, again.credits), (0, 0, 400));

    let mut late = request(&k, "l_a", 4, 5000, Usage::default());
    late.usage.add(&node, 50, true);
    let ans = store.lease(&t, &late).await.expect("late usage");
    assert!(ans.ended, "usage on an ended lease is charged directly");
    assert_eq!((ans.granted, ans.credits), (0, 350));

    let rec = store.key(&k.id).await.expect("key");
    assert_eq!((rec.bytes_up, rec.bytes_down), (350, 300));
    assert_eq!(rec.balance() + rec.bytes_up + rec.bytes_down, 1000);
    let carried = store.list_nodes().await.expect("nodes");
    let carried = carried.iter().find(|x| x.id == n.id).expect("node");
    assert_eq!(
        carried.bytes_carried, 650,
        "every billed byte is a node byte"
    );

    grants_are_sized_by_the_balance(store, &t).await;
}

/// Grants: at most a quarter of a big balance, the minimum of a small one, none for a
/// key that does not exist.
async fn grants_are_sized_by_the_balance<S: Store>(store: &S, t: &LeaseTerms) {
    let (big, _) = store.create_key("big", 100 << 20).await.expect("key");
    let ans = store
        .lease(t, &request(&big, "l_big", 1, 1 << 40, Usage::default()))
        .await
        .expect("lease");
    assert_eq!(ans.granted, 25 << 20, "at most a quarter of the balance");
    let (small, _) = store
        .create_key("small", MIN_LEASE + 10)
        .await
        .expect("key");
    let ans = store
        .lease(t, &request(&small, "l_small", 1, 1 << 40, Usage::default()))
        .await
        .expect("lease");
    assert_eq!(ans.granted, MIN_LEASE, "small balances lease the minimum");
    let missing = LeaseRequest {
        key_id: "k_missing".into(),
        ..request(&small, "l_x", 1, 1, Usage::default())
    };
    assert!(matches!(
        store.lease(t, &missing).await,
        Err(StoreError::NotFound(_))
    ));
}

async fn events_reach_subscribers<S: Store>(store: &S) {
    let t = terms(Duration::from_secs(60));
    let mut rx = store.events();
    let (k, secret) = store.create_key("evented", 10).await.expect("key");
    let tag = turbo_dataplane::known_keys::tag(&secrets::hash(&secret));
    next_event(&mut rx, &KeyEvent::Created(tag)).await;
    store.add_credits(&k.id, 5).await.expect("top-up");
    next_event(&mut rx, &KeyEvent::ToppedUp(k.id.as_str().into())).await;
    store.revoke_key(&k.id).await.expect("revoke");
    next_event(&mut rx, &KeyEvent::Revoked(k.id.as_str().into())).await;
    let rec = store
        .key_by_hash(secrets::hash(&secret))
        .await
        .expect("lookup")
        .expect("still there");
    assert!(rec.revoked);
    let ans = store
        .lease(&t, &request(&k, "l_rev", 1, 10, Usage::default()))
        .await
        .expect("lease");
    assert!(ans.revoked);
    assert_eq!(ans.granted, 0, "a revoked key is granted nothing");
}

async fn expired_leases_are_reclaimed<S: Store>(store: &S) {
    let (k, _) = store.create_key("crashy", 4000).await.expect("key");
    let live = terms(Duration::from_secs(60));
    let dead = terms(Duration::ZERO);
    store
        .lease(&live, &request(&k, "l_live", 1, 1000, Usage::default()))
        .await
        .expect("live lease");
    store
        .lease(&dead, &request(&k, "l_dead", 1, 1000, Usage::default()))
        .await
        .expect("dying lease");
    assert_eq!(store.key(&k.id).await.expect("key").credits, 2000);
    assert!(
        store
            .reclaim_expired(super::Share::ALL)
            .await
            .expect("reclaim")
            >= 1
    );
    let rec = store.key(&k.id).await.expect("key");
    assert_eq!((rec.credits, rec.leased), (3000, 1000));
    // The dead lease's owner comes back late: its usage is charged, nothing granted.
    let mut late = request(&k, "l_dead", 2, 1000, Usage::default());
    late.usage.up = 10;
    let ans = store.lease(&live, &late).await.expect("late");
    assert!(ans.ended);
    assert_eq!((ans.granted, ans.credits), (0, 2990));
}

async fn concurrent_leases_never_overspend<S: Store>(store: Arc<S>) {
    let t = terms(Duration::from_secs(60));
    let total = 1_000_000;
    let (k, _) = store.create_key("contended", total).await.expect("key");
    let mut tasks = Vec::new();
    for i in 0..64 {
        let (store, t, k) = (store.clone(), t.clone(), k.clone());
        tasks.push(tokio::spawn(async move {
            let mut got = 0;
            for seq in 1..=8 {
                let req = request(&k, &format!("l_c{i}"), seq, 40_000, Usage::default());
                got += store.lease(&t, &req).await.expect("lease").granted;
            }
            got
        }));
    }
    let mut granted = 0;
    for task in tasks {
        granted += task.await.expect("task");
    }
    let rec = store.key(&k.id).await.expect("key");
    assert!(granted <= total, "granted {granted} of {total}");
    assert_eq!(rec.leased, granted);
    assert_eq!(rec.credits + granted, total, "no double spend");
}

async fn balances_stop_at_the_maximum<S: Store>(store: &S) {
    let over = store.create_key("over", MAX_BALANCE + 1).await;
    assert_eq!(over.err(), Some(StoreError::OverMaximum));
    let (k, _) = store.create_key("max", MAX_BALANCE).await.expect("max");
    assert_eq!(store.key(&k.id).await.expect("key").credits, MAX_BALANCE);
    for more in [1, 1 << 53, 1 << 63, u64::MAX] {
        let res = store.add_credits(&k.id, more).await;
        assert_eq!(res.err(), Some(StoreError::OverMaximum), "+{more}");
    }
    assert_eq!(store.key(&k.id).await.expect("key").balance(), MAX_BALANCE);

    // A top-up while a lease is out counts the lease: the balance stops at the maximum
    // and the lease's return lands exactly on it (it used to wrap).
    let t = terms(Duration::from_secs(60));
    let (k, _) = store
        .create_key("leased-max", 10_000_000)
        .await
        .expect("key");
    let ans = store
        .lease(&t, &request(&k, "l_max", 1, 1 << 26, Usage::default()))
        .await
        .expect("lease");
    assert_eq!(ans.granted, 2_500_000);
    let rec = store
        .add_credits(&k.id, MAX_BALANCE - 10_000_000)
        .await
        .expect("top-up to the maximum");
    assert_eq!(
        (rec.credits, rec.leased),
        (MAX_BALANCE - 2_500_000, 2_500_000)
    );
    let res = store.add_credits(&k.id, 1).await;
    assert_eq!(res.err(), Some(StoreError::OverMaximum));
    let mut release = request(&k, "l_max", 2, 0, Usage::default());
    release.release = true;
    let ans = store.lease(&t, &release).await.expect("release");
    assert_eq!((ans.held, ans.credits), (0, MAX_BALANCE));
    let rec = store.key(&k.id).await.expect("key");
    assert_eq!(
        (rec.credits, rec.leased, rec.balance()),
        (MAX_BALANCE, 0, MAX_BALANCE)
    );
}

async fn amounts_near_the_maximum_are_exact<S: Store>(store: &S) {
    let t = terms(Duration::from_secs(60));
    let start = MAX_BALANCE - 12_345;
    let (k, _) = store.create_key("near-max", start).await.expect("key");
    let (n, _) = store.create_node(None).await.expect("node");
    let node: Arc<str> = n.id.as_str().into();
    let first = store
        .lease(&t, &request(&k, "l_near", 1, 1 << 26, Usage::default()))
        .await
        .expect("lease");
    assert_eq!(first.granted, 1 << 26);
    assert_eq!(first.credits, start - (1 << 26), "odd amounts stay exact");
    let mut usage = Usage::default();
    usage.add(&node, 1_234_567, true);
    usage.add(&node, 1, false);
    let mut release = request(&k, "l_near", 2, 0, usage);
    release.release = true;
    let ans = store.lease(&t, &release).await.expect("release");
    assert_eq!(ans.credits, start - 1_234_568);
    let rec = store.key(&k.id).await.expect("key");
    assert_eq!(
        (rec.credits, rec.leased, rec.bytes_up, rec.bytes_down),
        (start - 1_234_568, 0, 1_234_567, 1)
    );
    // Reclaimed leases return exactly too.
    let dead = terms(Duration::ZERO);
    store
        .lease(
            &dead,
            &request(&k, "l_near_dead", 1, 1 << 26, Usage::default()),
        )
        .await
        .expect("dying lease");
    assert!(
        store
            .reclaim_expired(super::Share::ALL)
            .await
            .expect("reclaim")
            >= 1
    );
    let rec = store.key(&k.id).await.expect("key");
    assert_eq!((rec.credits, rec.leased), (start - 1_234_568, 0));
}

async fn feature_records_keep_order<S: Store>(store: &S) {
    for port in [1001u16, 1002, 1003] {
        let rec = ConnRecord {
            key_id: "k_f".into(),
            node_id: "n_f".into(),
            frontend: "socks5",
            target_port: port,
            target_id: 0xab,
            session_id: 0,
            started_unix_ms: 1,
            duration: Duration::from_millis(20),
            time_to_connect: Some(Duration::from_millis(3)),
            bytes_up: 10,
            bytes_down: u64::from(port),
            reads_up: 1,
            reads_down: 2,
            gap_mean_us: 5,
            gap_max_us: 9,
            gap_std_us: 2,
            tls: port == 1003,
            uploaded_after_first: 7,
            outcome: RelayStatus::Ok,
        };
        store.record_connection(&rec, 1000).await.expect("xadd");
    }
    let recent = store.recent_connections(2).await.expect("read");
    let ports: Vec<&str> = recent
        .iter()
        .map(|f| {
            f.iter()
                .find(|(k, _)| k == "port")
                .map(|(_, v)| v.as_str())
                .expect("port")
        })
        .collect();
    assert_eq!(ports, ["1002", "1003"]);
    let last = &recent[1];
    let get = |name: &str| last.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    assert_eq!(get("bytes_down").as_deref(), Some("1003"));
    assert_eq!(get("outcome").as_deref(), Some("ok"));
    assert_eq!(get("connect_ms").as_deref(), Some("3"));
    assert_eq!(get("tls").as_deref(), Some("1"));
    assert_eq!(get("target").as_deref(), Some("00000000000000ab"));
    assert_eq!(get("up_after_first").as_deref(), Some("7"));
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn memory_store_passes_the_suite() {
        super::run(std::sync::Arc::new(super::super::MemoryStore::default())).await;
    }
}
