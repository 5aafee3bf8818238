//! Node selection end to end: country targeting, sticky sessions (pinned in Redis),
//! retries away from a broken node, and what the API reports about each node.

use std::sync::Arc;

use serde_json::Value;

use crate::fixtures::redis::Redis;
use crate::fixtures::socks::{self, Connect};
use crate::fixtures::targets::FileServer;
use crate::fixtures::{curl, random_bytes, wait_for, Net, Options};

fn bytes_of(net: &Net, id: &str) -> u64 {
    net.node_info(id)
        .and_then(|n| n["bytes_relayed"].as_u64())
        .unwrap_or(0)
}

/// GETs `url` through the SOCKS5 front end with `user`; returns the body length.
fn socks_get(net: &Net, user: &str, url: &str) -> Option<usize> {
    let proxy = format!("socks5h://{user}:{}@{}", net.key, net.socks);
    let out = curl(&["-x", &proxy, "-o", "-", url]);
    out.status.success().then_some(out.stdout.len())
}

fn network_of_three(driver: &'static str, redis: Option<&Redis>) -> (Net, [String; 3]) {
    let mut opts = match redis {
        Some(r) => Options::redis(driver, r),
        None => Options::new(driver),
    };
    opts.node = false;
    opts.node_liveness = "2s";
    opts.config = "lease_checkpoint = \"300ms\"\n".into();
    let mut net = Net::start_with(opts);
    let us1 = net.add_node(&["--country", "US"]);
    let us2 = net.add_node(&["--country", "us"]);
    let de = net.add_node(&["--country", "DE"]);
    (net, [us1, us2, de])
}

fn country_targeting(driver: &'static str) {
    let (net, [us1, us2, de]) = network_of_three(driver, None);
    let target = FileServer::start(Arc::new(random_bytes(10_000, 1)));
    let url = format!("http://127.0.0.1:{}/", target.addr.port());
    for _ in 0..20 {
        assert_eq!(socks_get(&net, "alice-country-de", &url), Some(10_000));
    }
    let de_bytes = wait_for("DE node's bytes", || {
        let b = bytes_of(&net, &de);
        (b >= 20 * 10_000).then_some(b)
    });
    assert_eq!(
        bytes_of(&net, &us1) + bytes_of(&net, &us2),
        0,
        "no DE request left DE"
    );
    println!("20 requests with -country-de: DE node carried {de_bytes} bytes, US nodes 0");

    match socks::connect(
        net.socks,
        "alice-country-fr",
        &net.key,
        "127.0.0.1",
        target.addr.port(),
    ) {
        Connect::Refused(code) => assert_eq!(code, 3, "SOCKS5: network unreachable"),
        other => panic!("FR must be refused, got {other:?}"),
    }
    let out = curl(&[
        "-x",
        &format!("http://alice-country-fr:{}@{}", net.key, net.http),
        "-D",
        "-",
        "-o",
        "/dev/null",
        &url,
    ]);
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(head.starts_with("HTTP/1.1 503"), "{head}");
    assert!(head.contains("country_unavailable"), "{head}");
    let nodes = net.api_get("/api/nodes");
    let de_info = nodes
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["id"] == de.as_str())
        .unwrap();
    assert_eq!(de_info["country"], "DE");
    assert_eq!(
        de_info["country_verified"], false,
        "no GeoIP: declared, unverified"
    );
    assert!(de_info["score"]["total"].as_f64().unwrap() > 0.0);
    println!(
        "GET /api/nodes (three-node network):\n{}",
        serde_json::to_string_pretty(&nodes).unwrap()
    );
}

fn sticky_sessions(driver: &'static str) {
    let redis = Redis::start();
    let (mut net, ids) = network_of_three(driver, Some(&redis));
    let target = FileServer::start(Arc::new(random_bytes(1000, 2)));
    let url = format!("http://127.0.0.1:{}/", target.addr.port());
    for _ in 0..50 {
        assert_eq!(socks_get(&net, "bob-session-abc", &url), Some(1000));
    }
    let pinned = wait_for("the session's bytes to be booked", || {
        let carried: Vec<(String, u64)> = ids
            .iter()
            .map(|id| (id.clone(), bytes_of(&net, id)))
            .collect();
        let total: u64 = carried.iter().map(|(_, b)| b).sum();
        (total >= 50 * 1000).then_some(carried)
    });
    let users: Vec<_> = pinned.iter().filter(|(_, b)| *b > 0).collect();
    assert_eq!(
        users.len(),
        1,
        "50 requests of one session used one node: {pinned:?}"
    );
    let pinned_id = users[0].0.clone();
    let pin_key = format!("turbo:session:{}:abc", net.key_id);
    assert_eq!(
        redis.cli(&["GET", &pin_key]).as_deref(),
        Some(pinned_id.as_str())
    );
    let ttl: i64 = redis.cli(&["PTTL", &pin_key]).unwrap().parse().unwrap();
    assert!(
        ttl > 9 * 60_000 && ttl <= 10 * 60_000,
        "default 10 minutes: {ttl}"
    );

    // After its TTL the session is pinned afresh.
    redis.cli(&["PEXPIRE", &pin_key, "1"]).unwrap();
    wait_for("the pin to expire", || {
        redis.cli(&["EXISTS", &pin_key]).filter(|v| v == "0")
    });
    assert_eq!(
        socks_get(&net, "bob-session-abc-sesstime-3", &url),
        Some(1000)
    );
    let ttl: i64 = redis.cli(&["PTTL", &pin_key]).unwrap().parse().unwrap();
    assert!(ttl > 2 * 60_000 && ttl <= 3 * 60_000, "sesstime-3: {ttl}");

    // When the pinned node disconnects, the session moves and the move is reported.
    let pinned_now = redis.cli(&["GET", &pin_key]).unwrap();
    net.kill_node(&pinned_now);
    wait_for("the server to notice the node is gone", || {
        net.node_info(&pinned_now)
            .filter(|n| n["connected"] == false)
            .map(|_| ())
    });
    let out = curl(&[
        "-x",
        &format!("http://bob-session-abc:{}@{}", net.key, net.http),
        "--proxytunnel",
        "-D",
        "-",
        "-o",
        "/dev/null",
        &url,
    ]);
    let head = String::from_utf8_lossy(&out.stdout);
    assert!(
        head.contains("session_node_gone"),
        "the move is reported: {head}"
    );
    let moved_to = redis.cli(&["GET", &pin_key]).unwrap();
    assert_ne!(moved_to, pinned_now);
    assert!(
        head.contains(&moved_to),
        "Proxy-Status names the new node: {head}"
    );
    assert!(net.metric("turbo_session_moves_total") >= 1.0);
    println!("session moved from {pinned_now} to {moved_to}; CONNECT said:\n{head}");
}

fn broken_node_is_avoided(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let healthy = net.add_node(&[]);
    // A node that cannot open a single TCP socket: every connect fails on the node
    // itself (EMFILE), which is the node's fault, not the target's.
    let broken = net.add_node(&[]);
    net.starve_node_of_fds(&broken);
    let target = FileServer::start(Arc::new(random_bytes(2000, 3)));
    let url = format!("http://127.0.0.1:{}/", target.addr.port());
    for i in 0..40 {
        assert_eq!(
            socks_get(&net, "carol", &url),
            Some(2000),
            "request {i} failed while a healthy node exists"
        );
    }
    let info = |id: &str| -> Value { net.node_info(id).unwrap() };
    let score = |v: &Value| v["score"]["total"].as_f64().unwrap_or(0.0);
    // Scores are republished every second and on membership changes (a lane joining),
    // which can catch the attempts' reports still on their way: wait for the demotion
    // itself: the broken node's weight a small fraction of the healthy one's.
    // Each failure takes 30% of the broken node's connect success, but a demoted node
    // is picked less often: keep the requests coming until it is demoted (40 requests
    // are not always enough by themselves).
    let (good, bad) = wait_for("the broken node's demotion", || {
        assert_eq!(
            socks_get(&net, "carol", &url),
            Some(2000),
            "a request failed"
        );
        let (g, b) = (info(&healthy), info(&broken));
        let weight = |v: &Value| v["score"]["weight"].as_f64();
        let demoted = weight(&b)? * 10.0 < weight(&g)?;
        (b["attempts_failed"].as_u64()? > 0 && demoted).then_some((g, b))
    });
    println!(
        "healthy node: score {:.3}, {} ok; broken node: score {:.3}, {} failed, {} ok",
        score(&good),
        good["attempts_ok"],
        score(&bad),
        bad["attempts_failed"],
        bad["attempts_ok"]
    );
    assert_eq!(bad["attempts_ok"], 0);
    assert!(score(&bad) < score(&good), "the broken node's score drops");
    assert!(bad["score"]["connect_success"].as_f64().unwrap() < 0.7);
    // Demoted: it now gets (almost) no traffic.
    let failed_before = bad["attempts_failed"].as_u64().unwrap();
    for _ in 0..40 {
        assert_eq!(socks_get(&net, "carol", &url), Some(2000));
    }
    let failed_after = wait_for("attempts booked", || {
        info(&broken)["attempts_failed"].as_u64()
    });
    println!(
        "after demotion: {} of 40 requests tried the broken node",
        failed_after - failed_before
    );
    // Its weight is the 0.01 floor against about 1: P(more than 5 of 40) < 1e-6.
    assert!(failed_after - failed_before <= 5);
}

fn countries_come_from_geoip(driver: &'static str) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("countries.mmdb");
    turbo_controlplane::geoip::writer::write_country_db(
        &db,
        &[
            ("127.0.0.2/32".parse().unwrap(), "US"),
            ("127.0.0.3/32".parse().unwrap(), "DE"),
        ],
    )
    .unwrap();
    let mut opts = Options::new(driver);
    opts.node = false;
    opts.config = format!("geoip = \"{}\"\n", db.display());
    let mut net = Net::start_with(opts);
    let honest = net.add_node(&["--bind", "127.0.0.2", "--country", "US"]);
    let liar = net.add_node(&["--bind", "127.0.0.3", "--country", "FR"]);
    let unknown = net.add_node(&["--bind", "127.0.0.4", "--country", "JP"]);
    let info = |id: &str| net.node_info(id).unwrap();
    let (h, l, u) = (info(&honest), info(&liar), info(&unknown));
    assert_eq!(
        (h["country"].as_str(), h["country_verified"].as_bool()),
        (Some("US"), Some(true))
    );
    assert_eq!(l["country"], "DE", "GeoIP wins over a false declaration");
    assert_eq!(
        (
            l["declared_country"].as_str(),
            l["country_verified"].as_bool()
        ),
        (Some("FR"), Some(false))
    );
    assert_eq!(
        u["country"], "JP",
        "no GeoIP answer: the declared country, unverified"
    );
    assert_eq!(u["country_verified"], false);
    let target = FileServer::start(Arc::new(random_bytes(5000, 4)));
    let url = format!("http://127.0.0.1:{}/", target.addr.port());
    for _ in 0..10 {
        assert_eq!(socks_get(&net, "dan-country-de", &url), Some(5000));
    }
    wait_for("DE bytes", || {
        (bytes_of(&net, &liar) >= 50_000).then_some(())
    });
    assert_eq!(bytes_of(&net, &honest) + bytes_of(&net, &unknown), 0);
    assert!(
        matches!(
            socks::connect(
                net.socks,
                "dan-country-fr",
                &net.key,
                "127.0.0.1",
                target.addr.port()
            ),
            Connect::Refused(3)
        ),
        "the false FR declaration is not routable as FR"
    );
}

mod io_uring {
    #[test]
    fn countries_come_from_geoip() {
        super::countries_come_from_geoip("io_uring")
    }
    #[test]
    fn country_targeting() {
        super::country_targeting("io_uring")
    }
    #[test]
    fn sticky_sessions() {
        super::sticky_sessions("io_uring")
    }
    #[test]
    fn broken_node_is_avoided() {
        super::broken_node_is_avoided("io_uring")
    }
}
