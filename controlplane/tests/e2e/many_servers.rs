//! Many servers on one store (issue 18), here a 3-master Redis Cluster with replicas:
//! every server announces itself, each of ten nodes keeps
//! connections to two different servers, and when a server dies its nodes go on
//! serving through the other one at once, then reconnect to a second live server. A
//! server that stops with SIGTERM announces that it drains first.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use turbo_bench::redis_cluster::RedisCluster;

use crate::fixtures::targets::FileServer;
use crate::fixtures::{curl, random_bytes, wait_for, Net, Options};

/// The nodes' countries: each node is the only one of its country, so a customer
/// reaches one chosen node.
const COUNTRIES: [&str; 10] = ["us", "de", "fr", "gb", "nl", "se", "jp", "br", "ca", "au"];

/// The server ids `net`'s `GET /api/servers` lists, with their draining flags.
fn fleet(net: &Net) -> Vec<(String, bool)> {
    let body = net.api_get("/api/servers");
    body["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["draining"] == true,
            )
        })
        .collect()
}

/// Which of `servers` node `id` is attached to now: `here` in the server's node list
/// (`connected` from a server that lists only its own nodes).
fn attached(servers: &[&Net], id: &str) -> Vec<usize> {
    (0..servers.len())
        .filter(|i| {
            servers[*i]
                .node_info(id)
                .is_some_and(|n| n.get("here").unwrap_or(&n["connected"]) == &Value::Bool(true))
        })
        .collect()
}

/// GETs `url` through `net`'s SOCKS5 front end as a customer asking for `country`;
/// the body length when served.
fn get_via(net: &Net, country: &str, url: &str) -> Option<usize> {
    let proxy = format!("socks5h://e2e-country-{country}:{}@{}", net.key, net.socks);
    let out = curl(&["--max-time", "5", "-x", &proxy, "-o", "-", url]);
    out.status.success().then_some(out.stdout.len())
}

fn three_servers(driver: &'static str, cluster: &RedisCluster) -> [Net; 3] {
    let mut opts = Options::new(driver);
    opts.store = cluster.seeds_url();
    opts.node = false;
    opts.node_liveness = "2s";
    let a = Net::start_with(opts.clone());
    let b = a.peer_with(opts.clone());
    let c = a.peer_with(opts);
    let nets = [a, b, c];
    wait_for("every server sees three announced", || {
        nets.iter().all(|n| fleet(n).len() == 3).then_some(())
    });
    nets
}

fn nodes_keep_two_servers_and_survive_one(driver: &'static str) {
    let cluster = RedisCluster::start().expect("cluster");
    let mut nets = three_servers(driver, &cluster);
    let ids: Vec<String> = COUNTRIES
        .iter()
        .enumerate()
        .map(|(i, country)| nets[i % 3].add_node(&["--country", country]))
        .collect();
    each_on_two_servers(&nets, &ids);
    let target = FileServer::start(Arc::new(random_bytes(5_000, 18)));
    let url = format!("http://127.0.0.1:{}/", target.addr.port());

    // SIGKILL server A: every node still serves through a surviving server it is on.
    let killed = Instant::now();
    nets[0].server.kill().expect("kill server A");
    let _ = nets[0].server.wait();
    let survivors: Vec<&Net> = nets[1..].iter().collect();
    for (id, country) in ids.iter().zip(COUNTRIES) {
        let via = attached(&survivors, id);
        let served = via
            .iter()
            .any(|i| get_via(survivors[*i], country, &url) == Some(5_000));
        assert!(
            served,
            "node {id} ({country}) serves through {via:?} after A died"
        );
    }
    let took = killed.elapsed();
    println!("every node served a customer {took:?} after server A died");
    assert!(
        took < Duration::from_secs(2),
        "within the node liveness (2 s): {took:?}"
    );

    // Then every node reconnects: both survivors hold it.
    for id in &ids {
        wait_for(&format!("node {id} on both surviving servers"), || {
            (attached(&survivors, id).len() == 2).then_some(())
        });
    }
    println!(
        "every node on both survivors {:?} after A died",
        killed.elapsed()
    );
    for (i, id) in ids.iter().enumerate() {
        // The runner's view: connected, to both survivors.
        let status = wait_for(&format!("node {id}'s status names both survivors"), || {
            let status = nets[i % 3].node_status(id);
            let both = survivors
                .iter()
                .all(|n| status.contains(&n.quic.to_string()));
            (both && status.contains("state:          connected")).then_some(status)
        });
        assert!(!status.contains(&nets[0].quic.to_string()), "{status}");
    }
    wait_for("A leaves the announced fleet", || {
        (fleet(survivors[0]).len() == 2).then_some(())
    });
    for (id, country) in ids.iter().zip(COUNTRIES) {
        for net in &survivors {
            assert_eq!(get_via(net, country, &url), Some(5_000), "node {id}");
        }
    }
    draining_is_announced(&mut nets);
}

/// Waits until every node of `ids` is attached to two different servers of `nets`,
/// and checks what the servers announce as their load.
fn each_on_two_servers(nets: &[Net; 3], ids: &[String]) {
    let all: Vec<&Net> = nets.iter().collect();
    for id in ids {
        let on = wait_for(&format!("node {id} on two servers"), || {
            Some(attached(&all, id)).filter(|on| on.len() == 2)
        });
        println!("node {id} is on servers {on:?}");
    }
    let loads: Vec<u64> = wait_for("announced loads to count the nodes", || {
        let loads: Vec<u64> = nets.iter().flat_map(fleet_loads).map(|(_, n)| n).collect();
        (loads.iter().sum::<u64>() >= 3 * 2 * ids.len() as u64).then_some(loads)
    });
    // Three servers each list three announcements: every node counted twice, each time.
    assert!(loads.iter().all(|n| *n <= ids.len() as u64), "{loads:?}");
}

/// Each server's announced (id, attached nodes).
fn fleet_loads(net: &Net) -> Vec<(String, u64)> {
    let body = net.api_get("/api/servers");
    body["servers"]
        .as_array()
        .expect("servers")
        .iter()
        .map(|s| {
            (
                s["id"].as_str().expect("id").to_owned(),
                s["nodes"].as_u64().expect("nodes"),
            )
        })
        .collect()
}

/// SIGTERM on server C: B sees C announced as draining before C's entry lapses, and
/// the nodes leave C.
fn draining_is_announced(nets: &mut [Net; 3]) {
    let c_id = nets[2].api_get("/api/servers")["this"]
        .as_str()
        .expect("this")
        .to_owned();
    nets[2].signal_server(libc::SIGTERM);
    wait_for("C announced as draining", || {
        fleet(&nets[1])
            .iter()
            .any(|(id, draining)| *id == c_id && *draining)
            .then_some(())
    });
    wait_for("C exits", || nets[2].server.try_wait().ok().flatten());
}

crate::both_drivers!(nodes_keep_two_servers_and_survive_one);
