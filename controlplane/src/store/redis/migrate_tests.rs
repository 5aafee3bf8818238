//! `turbo-server store migrate` on a store written with key schema v1 by hand.

use std::sync::Arc;

use redis::AsyncCommands;
use turbo_dataplane::control::{LeaseRequest, Usage};

use super::tests::Server;
use super::*;

/// A v1 store: key `k_v1` (900 credits, 100 leased by live lease `l_v1` seq 1, an
/// applied payment marker), an expired live lease `l_old` (50 held), one usage entry.
async fn write_v1(url: &str) {
    let client = redis::Client::open(url).expect("url");
    let mut c = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let key = [
        ("name", "old"),
        ("hash", "00"),
        ("credits", "850"),
        ("leased", "150"),
        ("bytes_up", "0"),
        ("bytes_down", "0"),
        ("connections", "0"),
        ("overdraft", "0"),
        ("revoked", "0"),
        ("created", "1"),
        ("op:pay-1", "1"),
    ];
    let _: () = c.hset_multiple("turbo:key:k_v1", &key).await.expect("key");
    let _: () = c.sadd("turbo:keys", "k_v1").await.expect("keys");
    let _: () = c.set("turbo:keyhash:00", "k_v1").await.expect("lookup");
    for (lease, amount, expires) in [("l_v1", "100", 4_000_000_000_000u64), ("l_old", "50", 1)] {
        let fields = [
            ("key", "k_v1".to_owned()),
            ("owner", "old/0".to_owned()),
            ("amount", amount.to_owned()),
            ("seq", "1".to_owned()),
            ("granted", amount.to_owned()),
            ("status", "live".to_owned()),
            ("expires", expires.to_string()),
        ];
        let name = format!("turbo:lease:{lease}");
        let _: () = c.hset_multiple(&name, &fields).await.expect("lease");
        let _: () = c.zadd("turbo:leases", lease, expires).await.expect("live");
    }
    let entry = [
        ("owner", "old/0"),
        ("lease", "l_v1"),
        ("seq", "1"),
        ("node", "n_a"),
        ("key", "k_v1"),
        ("minute", "1"),
        ("up", "5"),
        ("down", "6"),
        ("conns", "1"),
    ];
    let _: String = c.xadd("turbo:usage", "*", &entry).await.expect("usage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_store_is_refused_then_migrated_exactly() {
    let server = Server::start();
    write_v1(&server.url()).await;
    let refused = RedisStore::connect(&server.url()).await.err();
    assert!(
        matches!(&refused, Some(StoreError::Corrupt(m)) if m.contains("store migrate")),
        "{:?}",
        refused.map(|e| e.to_string())
    );

    let store = RedisStore::connect_any_schema(&server.url())
        .await
        .expect("connect");
    let dry = store.migrate_v1(true).await.expect("dry run");
    assert_eq!(
        (dry.keys, dry.leases, dry.live_leases, dry.usage_entries),
        (1, 2, 2, 1)
    );
    assert_eq!(
        store.schema_version().await.expect("version"),
        "1",
        "dry run changes nothing"
    );

    let done = store.migrate_v1(false).await.expect("migrate");
    assert_eq!((done.keys, done.leases, done.usage_entries), (1, 2, 1));
    let again = store.migrate_v1(false).await.expect("rerun");
    assert_eq!((again.keys, again.leases, again.usage_entries), (0, 0, 0));
    let store = Arc::new(RedisStore::connect(&server.url()).await.expect("v2 now"));

    let key = store.key("k_v1").await.expect("moved key");
    assert_eq!((key.credits, key.leased, key.balance()), (850, 150, 1000));
    assert!(
        !store
            .add_credits_once("k_v1", 1, "pay-1")
            .await
            .expect("marker"),
        "an applied payment stays applied"
    );
    // The expired lease is reclaimed from its bucket; the live one goes on.
    assert_eq!(store.reclaim_expired(Share::ALL).await.expect("reclaim"), 1);
    let terms = LeaseTerms {
        owner: "new/0".into(),
        ttl: Duration::from_secs(60),
        usage_log: true,
    };
    let mut usage = Usage::default();
    usage.add(&"n_a".into(), 30, false);
    let request = LeaseRequest {
        key_id: "k_v1".into(),
        lease_id: "l_v1".into(),
        seq: 2,
        want: 0,
        usage,
        release: true,
    };
    let answer = store.lease(&terms, &request).await.expect("release");
    assert_eq!(answer.credits, 850 + 50 + 70, "held 100, spent 30");
    let (entries, _) = store
        .usage_since(crate::store::USAGE_LOG_START, 100)
        .await
        .expect("log");
    let seqs: Vec<_> = entries.iter().map(|e| (e.lease.as_str(), e.seq)).collect();
    assert_eq!(seqs, [("l_v1", 1), ("l_v1", 2)], "the v1 entry was copied");
}
