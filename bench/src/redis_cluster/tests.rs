//! The fixture against real `redis-server`s: writes survive a master's death.

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};

use super::{parse_node_line, NodeLine, RedisCluster};

/// Pipes `script` (one command a line) into `redis-cli -c -p port`, which follows
/// `MOVED` redirections and stays on the node it was sent to, so a `WAIT` after a
/// write runs on the master that took the write.
fn cli_cluster(port: u16, script: &str) -> Result<String> {
    let mut child = Command::new("redis-cli")
        .args(["-c", "-h", "127.0.0.1", "-p", &port.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("redis-cli stdin")?
        .write_all(script.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(out.status.success(), "redis-cli -c failed");
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn acknowledged_writes_survive_a_failover() -> Result<()> {
    let t0 = Instant::now();
    let mut cluster = RedisCluster::start()?;
    eprintln!("cluster whole in {:?}", t0.elapsed());
    let keys: Vec<String> = (0..60).map(|i| format!("key:{i}")).collect();
    let mut script = String::new();
    for k in &keys {
        script.push_str(&format!("SET {k} value-of-{k}\nWAIT 1 1000\n"));
    }
    let out = cli_cluster(cluster.ports()[0], &script)?;
    let replies: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("-> Redirected"))
        .collect();
    ensure!(
        replies.len() == 2 * keys.len() && replies.chunks(2).all(|r| r == ["OK", "1"]),
        "each SET acknowledged by one replica; got:\n{out}"
    );

    let victim = cluster.master_for_key(&keys[0])?;
    let mut on_victim = Vec::new();
    for k in &keys {
        if cluster.master_for_key(k)? == victim {
            on_victim.push(k);
        }
    }
    ensure!(on_victim.len() < keys.len(), "keys spread over the masters");

    let t1 = Instant::now();
    cluster.kill_master(victim)?;
    let promoted = cluster.wait_failover(victim)?;
    eprintln!("failover from {victim} to {promoted} in {:?}", t1.elapsed());
    ensure!(promoted != victim && cluster.ports().contains(&promoted));
    ensure!(cluster.master_for_key(&keys[0])? == promoted);
    ensure!(!cluster.seeds_url().contains(&format!(":{victim}")));

    for k in &on_victim {
        let v = cluster.cli(promoted, &["GET", k])?;
        ensure!(v == format!("value-of-{k}"), "{k} on {promoted}: {v}");
    }
    let mut gets = String::new();
    for k in &keys {
        gets.push_str(&format!("GET {k}\n"));
    }
    let out = cli_cluster(promoted, &gets)?;
    let values: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with("-> Redirected"))
        .collect();
    let want: Vec<String> = keys.iter().map(|k| format!("value-of-{k}")).collect();
    ensure!(
        values == want,
        "every key readable after the failover:\n{out}"
    );
    Ok(())
}

#[test]
fn cluster_nodes_lines_parse() {
    let line = "07c3 127.0.0.1:30004@31004 master,fail? - 0 1426238316232 8 connected \
                0-5460 5462 [5461->-e7d1eecc]";
    assert_eq!(
        parse_node_line(line),
        Some(NodeLine {
            id: "07c3".into(),
            port: 30004,
            master: true,
            down: true,
            replica_of: None,
            slots: vec![(0, 5460), (5462, 5462)],
        })
    );
    let replica = "e7d1 127.0.0.1:30005@31005 myself,slave 07c3 0 0 9 connected";
    let r = parse_node_line(replica).expect("parses");
    assert!(!r.master && !r.down && r.slots.is_empty());
    assert_eq!(r.replica_of.as_deref(), Some("07c3"));
    assert!(parse_node_line("garbage").is_none());
}

#[test]
fn a_node_whose_port_was_taken_starts_again_elsewhere() -> Result<()> {
    // A listener that accepts and never answers: redis-server cannot bind, and a
    // redis-cli without a time limit would wait on it forever.
    let held = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken = held.local_addr()?.port();
    let mut cluster = RedisCluster {
        nodes: Vec::new(),
        masters: Vec::new(),
        dir: tempfile::tempdir()?,
    };
    let node = cluster.spawn_node_at(taken, crate::net::free_port()?)?;
    cluster.nodes.push(node);
    cluster.wait_node_up(0)?;
    let port = cluster.nodes[0].port;
    ensure!(port != taken);
    ensure!(cluster.cli(port, &["PING"])? == "PONG");
    Ok(())
}
