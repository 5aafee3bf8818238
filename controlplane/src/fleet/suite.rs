//! What every [`Fleet`] must do, run against the memory fleet and a real
//! `redis-server` (two fleets on one Redis stand for two servers).

use super::announce::{server_list, FleetHandle, Identity};
use super::{Announcement, Fleet};

fn entry(id: &str, until_ms: u64, draining: bool) -> Announcement {
    Announcement {
        id: id.into(),
        quic_addr: format!("{id}.example:8443"),
        pin: super::pin_hex(&[id.len() as u8; 32]),
        nodes: 3,
        streams: 12,
        draining,
        until_ms,
    }
}

/// `a` and `b` share one store (the same fleet for the memory backend).
async fn run(a: &Fleet, b: &Fleet) {
    let now = 1_000_000;
    a.announce(&entry("s1", now + 6_000, false))
        .await
        .expect("s1");
    b.announce(&entry("s2", now + 6_000, false))
        .await
        .expect("s2");
    b.announce(&entry("s3", now - 1, false)).await.expect("s3");
    let live = a.live(now).await.expect("live");
    let ids: Vec<&str> = live.iter().map(|x| x.id.as_str()).collect();
    assert_eq!(ids, ["s1", "s2"], "s3 has lapsed");
    assert_eq!(live[1], entry("s2", now + 6_000, false));

    // A refresh replaces the entry; draining is seen by the other server.
    b.announce(&entry("s2", now + 8_000, true))
        .await
        .expect("refresh");
    let live = a.live(now + 7_000).await.expect("live later");
    assert_eq!(live.len(), 1, "s1 lapsed at +6 s: {live:?}");
    assert!(live[0].draining);

    // The sweep removes what lapsed before its bound, and only that.
    assert_eq!(a.sweep(now).await.expect("sweep"), 1, "s3");
    assert_eq!(a.sweep(now).await.expect("again"), 0);
    assert_eq!(b.live(now).await.expect("live").len(), 2);
}

#[tokio::test]
async fn memory_fleet() {
    let fleet = Fleet::open("memory").await.expect("memory");
    run(&fleet, &fleet).await;
}

#[tokio::test]
async fn redis_fleet_shared_by_two_servers() {
    let server = crate::store::redis::tests::Server::start();
    let a = Fleet::open(&server.url()).await.expect("a");
    let b = Fleet::open(&server.url()).await.expect("b");
    run(&a, &b).await;
}

#[test]
fn nodes_get_live_servers_with_the_sender_first_and_bad_pins_left_out() {
    let mut bad = entry("s0", 9, false);
    bad.pin = "zz".into();
    let live = [bad, entry("s1", 9, true), entry("s2", 9, false)];
    let list = server_list(&live, "s2");
    let got: Vec<(&str, bool, bool)> = list
        .iter()
        .map(|s| (s.id.as_str(), s.sender, s.draining))
        .collect();
    assert_eq!(got, [("s2", true, false), ("s1", false, true)]);
    assert_eq!(list[1].pin, [2; 32]);
    assert_eq!(list[1].addr, "s1.example:8443");
    // A restarted server (new id, same address) hides its predecessor's entry; between
    // others on one address, the freshest wins.
    let mut before = entry("s7", 99, false);
    before.quic_addr = "s2.example:8443".into();
    let mut older = entry("s8", 5, false);
    older.quic_addr = "s1.example:8443".into();
    let live = [before, older, entry("s1", 9, false), entry("s2", 9, false)];
    let ids: Vec<String> = server_list(&live, "s2").into_iter().map(|s| s.id).collect();
    assert_eq!(ids, ["s2", "s1"]);
}

#[test]
fn live_servers_share_the_lease_buckets_by_rank() {
    use crate::store::Share;
    let live = [
        entry("s1", 9, false),
        entry("s2", 9, true),
        entry("s3", 9, false),
    ];
    assert_eq!(
        super::announce::reclaim_share(&live, "s3"),
        Share { index: 1, of: 2 },
        "s2 drains: two servers share"
    );
    assert_eq!(
        super::announce::reclaim_share(&live, "s1"),
        Share { index: 0, of: 2 }
    );
    assert_eq!(super::announce::reclaim_share(&live, "s2"), Share::ALL);
    assert_eq!(super::announce::reclaim_share(&[], "s1"), Share::ALL);
}

#[tokio::test]
async fn a_draining_server_says_so_and_the_data_plane_gets_the_list() {
    let servers = turbo_dataplane::servers::ServerListHandle::default();
    let me = Identity {
        id: "s9".into(),
        quic_addr: "[::1]:8443".into(),
        pin: [1; 32],
    };
    let fleet = Fleet::open("memory").await.expect("memory");
    let handle = FleetHandle::new(fleet, me, servers.clone());
    handle.set_load(2, 5);
    let live = handle.refresh().await.expect("refresh");
    assert_eq!(
        (live[0].nodes, live[0].streams, live[0].draining),
        (2, 5, false)
    );
    assert_eq!(servers.load().version, 1);
    handle.refresh().await.expect("same");
    assert_eq!(
        servers.load().version,
        1,
        "an unchanged list is not a new version"
    );
    handle.drain().await;
    let list = servers.load();
    assert_eq!(list.version, 2);
    assert!(list.servers[0].draining && list.servers[0].sender);
    assert!(handle.live().await.expect("live")[0].draining);
}

#[tokio::test]
async fn redis_cluster_fleet_shared_by_two_servers() {
    let cluster = turbo_bench::redis_cluster::RedisCluster::start().expect("cluster");
    let a = Fleet::open(&cluster.seeds_url()).await.expect("a");
    let b = Fleet::open(&cluster.seeds_url()).await.expect("b");
    run(&a, &b).await;
}
