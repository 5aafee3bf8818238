//! What every [`LiveBus`] must do, run against the memory bus and a real
//! `redis-server` (two buses on one Redis stand for two servers).

use std::time::Duration;

use super::{LiveBus, LiveEvent, NetworkClaim, Presence};

fn entry(server: &str, streams: u32, until: u64) -> Presence {
    Presence {
        server: server.into(),
        country: Some("us".into()),
        score: 0.75,
        latency: 0.5,
        reliability: 1.0,
        streams,
        max_streams: 64,
        since: 1_000,
        until,
    }
}

async fn next(rx: &mut tokio::sync::broadcast::Receiver<LiveEvent>) -> LiveEvent {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("an event within 5 s")
        .expect("the feed is open")
}

/// `a` and `b` share one store (the same bus for the memory backend).
async fn run(a: &LiveBus, b: &LiveBus) {
    // The feed reaches subscribers of both.
    let (mut rx_a, mut rx_b) = (a.subscribe(), b.subscribe());
    let events = [
        LiveEvent::Usage(vec!["k1".into(), "k2".into()]),
        LiveEvent::Node {
            id: "n1".into(),
            online: true,
        },
        LiveEvent::Invoice("inv_1".into()),
    ];
    for e in &events {
        a.publish(e).await.expect("publish");
    }
    for e in &events {
        assert_eq!(&next(&mut rx_a).await, e);
        assert_eq!(&next(&mut rx_b).await, e);
    }

    // Presence written by one is read by the other; stale entries are not online.
    let now = 10_000;
    let online = [
        ("n1".to_owned(), entry("s-a", 3, now + 10)),
        ("n2".to_owned(), entry("s-a", 0, now - 1)),
    ];
    a.report("s-a", &online, &[], now).await.expect("report");
    let ids = ["n1".to_owned(), "n2".to_owned(), "n3".to_owned()];
    let seen = b.presence(Some(&ids), now).await.expect("presence");
    assert_eq!(seen.len(), 1, "n2 is stale, n3 unknown: {seen:?}");
    assert_eq!(seen["n1"], online[0].1);
    assert_eq!(b.presence(None, now).await.expect("all").len(), 1);
    assert!(b.presence(Some(&[]), now).await.expect("none").is_empty());

    // n1 is on server b too (a node keeps two servers): read merged; a's "offline"
    // leaves it online on b, and only b's makes it gone.
    let on_b = entry("s-b", 1, now + 20);
    let gone = b
        .report("s-b", &[("n1".into(), on_b.clone())], &[], now)
        .await
        .expect("report b");
    assert!(gone.is_empty());
    let both = &a.presence(None, now).await.expect("presence")["n1"];
    assert_eq!(both.server, "s-a,s-b");
    assert_eq!(
        (both.streams, both.until),
        (4, now + 20),
        "summed; the last to lapse"
    );
    let gone = a.report("s-a", &[], &["n1".into()], now).await.expect("a");
    assert!(gone.is_empty(), "still on b: {gone:?}");
    let seen = a.presence(None, now).await.expect("presence");
    assert_eq!(seen["n1"], on_b);
    let gone = b.report("s-b", &[], &["n1".into()], now).await.expect("b");
    assert_eq!(gone, ["n1"]);
    assert!(a.presence(None, now).await.expect("presence").is_empty());

    // The sweep removes entries stale before its bound, and only those.
    a.report(
        "s-a",
        &[("n4".into(), entry("s-a", 0, now + 100))],
        &[],
        now,
    )
    .await
    .expect("report");
    assert_eq!(b.sweep(now).await.expect("sweep"), 1, "n2 is swept");
    assert_eq!(b.sweep(now).await.expect("sweep again"), 0);
    assert_eq!(a.presence(None, now).await.expect("presence").len(), 1);
    claims(a, b).await;
}

fn claim<'a>(
    network: &'a str,
    node: &'a str,
    limit: u32,
    now: u64,
    until: u64,
) -> NetworkClaim<'a> {
    NetworkClaim {
        network,
        node,
        limit,
        now_ms: now,
        expires_ms: until,
    }
}

/// Network claims: `limit` holders at a time, a holder refreshes its own, releases and
/// lapsed claims free the place; refusals are kept for their runner.
async fn claims(a: &LiveBus, b: &LiveBus) {
    let (now, until) = (1_000_000, 1_015_000);
    let net = "v4:203.0.113.9";
    assert!(a
        .claim_network(&claim(net, "n1", 1, now, until))
        .await
        .expect("claim"));
    assert!(a
        .claim_network(&claim(net, "n1", 1, now + 1, until + 1))
        .await
        .expect("refresh"));
    assert!(!b
        .claim_network(&claim(net, "n2", 1, now, until))
        .await
        .expect("taken"));
    assert!(b
        .claim_network(&claim(net, "n2", 2, now, until))
        .await
        .expect("limit 2"));
    assert!(b
        .claim_network(&claim("v4:198.51.100.1", "n3", 1, now, until))
        .await
        .expect("other net"));
    a.release_network(net, "n1").await.expect("release");
    assert!(b
        .claim_network(&claim(net, "n4", 2, now, until))
        .await
        .expect("freed"));
    assert!(
        b.claim_network(&claim(net, "n5", 2, until + 2, until + 9_000))
            .await
            .expect("lapsed"),
        "claims past their expiry do not count"
    );
    b.note_refusal(
        "n5",
        "another node already runs on this network",
        Duration::from_secs(60),
    )
    .await
    .expect("note");
    let ids = ["n5".to_owned(), "n6".to_owned()];
    let refused = a.refusals(&ids).await.expect("refusals");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused["n5"], "another node already runs on this network");
}

#[test]
fn events_read_back_and_junk_is_ignored() {
    for e in [
        LiveEvent::Usage(vec!["k1".into()]),
        LiveEvent::Node {
            id: "n".into(),
            online: false,
        },
        LiveEvent::Invoice("i".into()),
        LiveEvent::Resync,
    ] {
        assert_eq!(LiveEvent::decode(&e.encode()), Some(e));
    }
    for junk in ["", "node", "node n sideways", "invoice", "payday x"] {
        assert_eq!(LiveEvent::decode(junk), None, "{junk:?}");
    }
}

#[tokio::test]
async fn memory_bus() {
    let bus = LiveBus::open("memory").await.expect("memory");
    run(&bus, &bus).await;
}

#[tokio::test]
async fn redis_cluster_bus_shared_by_two_servers() {
    let cluster = turbo_bench::redis_cluster::RedisCluster::start().expect("cluster");
    let a = LiveBus::open(&cluster.seeds_url()).await.expect("a");
    let b = LiveBus::open(&cluster.seeds_url()).await.expect("b");
    run(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_bus_shared_by_two_servers() {
    let server = crate::store::redis::tests::Server::start();
    let a = LiveBus::open(&server.url()).await.expect("a");
    let b = LiveBus::open(&server.url()).await.expect("b");
    run(&a, &b).await;
}

#[tokio::test]
async fn an_entry_from_an_older_server_reads_as_one_holder() {
    let server = crate::store::redis::tests::Server::start();
    let bus = LiveBus::open(&server.url()).await.expect("bus");
    let old = entry("s-old", 2, 10_050);
    let client = ::redis::Client::open(server.url()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("conn");
    let json = serde_json::to_string(&old).expect("json");
    let () = ::redis::AsyncCommands::hset(&mut conn, "turbo:presence", "n9", json)
        .await
        .expect("hset");
    let seen = bus.presence(None, 10_000).await.expect("presence");
    assert_eq!(seen["n9"], old);
    let gone = bus
        .report(
            "s-new",
            &[("n9".into(), entry("s-new", 1, 10_060))],
            &[],
            10_000,
        )
        .await
        .expect("report");
    assert!(gone.is_empty());
    let merged = &bus.presence(None, 10_000).await.expect("presence")["n9"];
    assert_eq!((merged.server.as_str(), merged.streams), ("s-new,s-old", 3));
}
