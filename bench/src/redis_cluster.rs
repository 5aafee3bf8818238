//! A real Redis Cluster on loopback for tests and benches: three masters and three
//! replicas (`redis-server --cluster-enabled yes`), formed by `redis-cli --cluster
//! create`, on free ports, in a temporary directory, every process killed on drop.
//!
//! Everything here is synchronous and talks to the nodes through `redis-cli`, so a
//! plain `#[test]`, a tokio test (from `spawn_blocking`, or directly: start-up takes
//! about 2.2 s on 2 cores, a second of which `redis-cli --cluster create` sleeps) and a
//! bench can all use it. Readiness is polled with a deadline, never slept for:
//! [`RedisCluster::start`] returns once every node says `cluster_state:ok`, agrees
//! that all 16384 slots are served by three masters, and every replica's link to its
//! master is up, so a write acknowledged with `WAIT 1 …` survives a failover (which
//! takes about 2.5 s with `cluster-node-timeout` 1000). Every `redis-cli` call has a
//! time limit, so a stopped node cannot hang a caller.
//!
//! Each node gets its own cluster bus port (`--cluster-port`, Redis 7) instead of the
//! default port + 10000, which can fall outside the port range or onto a taken port.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::net::{free_port, wait_for_long};

/// The number of masters; each gets one replica.
const MASTERS: usize = 3;
/// Redis Cluster's hash slots.
const SLOTS: u16 = 16384;
/// How long start-up and failover may take before they fail.
const DEADLINE: Duration = Duration::from_secs(30);
/// How long one `redis-cli` call may take.
const CLI_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a starting node's first answer may take before the fixture looks whether
/// it exited.
const NODE_UP: Duration = Duration::from_millis(500);

/// One `redis-server` of the cluster.
struct Node {
    port: u16,
    child: Child,
    /// Killed by [`RedisCluster::kill_master`].
    killed: bool,
    /// The slots it served when it was killed.
    slots: Vec<(u16, u16)>,
}

/// A running 3-master, 3-replica Redis Cluster on 127.0.0.1.
pub struct RedisCluster {
    nodes: Vec<Node>,
    /// The ports of the masters as the cluster was created.
    masters: Vec<u16>,
    dir: tempfile::TempDir,
}

/// One line of `CLUSTER NODES`, as far as this fixture needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct NodeLine {
    id: String,
    port: u16,
    master: bool,
    /// Flagged `fail` or `fail?`, or not connected.
    down: bool,
    /// The master's id, for a replica.
    replica_of: Option<String>,
    /// Slot ranges served, inclusive (migration entries `[…]` left out).
    slots: Vec<(u16, u16)>,
}

impl NodeLine {
    fn serves(&self, slot: u16) -> bool {
        self.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
    }
}

/// Parses `CLUSTER NODES` output; lines it cannot read are skipped.
fn parse_nodes(text: &str) -> Vec<NodeLine> {
    text.lines().filter_map(parse_node_line).collect()
}

/// `<id> <ip:port@cport> <flags> <master> <ping> <pong> <epoch> <link> <slot> …`
fn parse_node_line(line: &str) -> Option<NodeLine> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 8 {
        return None;
    }
    let addr = f[1].split('@').next()?;
    let port = addr.rsplit(':').next()?.parse().ok()?;
    let flags: Vec<&str> = f[2].split(',').collect();
    let slots = f[8..]
        .iter()
        .filter(|s| !s.starts_with('['))
        .filter_map(|s| match s.split_once('-') {
            Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
            None => s.parse().ok().map(|n| (n, n)),
        })
        .collect();
    Some(NodeLine {
        id: f[0].to_owned(),
        port,
        master: flags.contains(&"master"),
        down: flags.iter().any(|x| x.starts_with("fail")) || f[7] != "connected",
        replica_of: (f[3] != "-").then(|| f[3].to_owned()),
        slots,
    })
}

/// The value of `field` in `INFO`- or `CLUSTER INFO`-style `field:value` lines.
fn info_field<'a>(text: &'a str, field: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

/// `redis-cli` under coreutils' `timeout`: a port that accepts and never answers (a
/// stopped node, or another program that took the port) must not hang the caller.
fn redis_cli_command(limit: Duration) -> Command {
    let mut cmd = Command::new("timeout");
    cmd.args([
        "-s",
        "KILL",
        &format!("{}s", limit.as_secs_f64()),
        "redis-cli",
    ]);
    cmd
}

/// Runs `redis-cli -p port args…` (for at most [`CLI_TIMEOUT`]); its trimmed output.
/// Error replies (`ERR …`) are output too: `redis-cli` exits 0 on them.
fn redis_cli(port: u16, args: &[&str]) -> Result<String> {
    redis_cli_within(port, args, CLI_TIMEOUT)
}

/// As [`redis_cli`], for at most `limit`.
fn redis_cli_within(port: u16, args: &[&str], limit: Duration) -> Result<String> {
    let out = redis_cli_command(limit)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("run redis-cli (apt install redis-tools)")?;
    if !out.status.success() {
        bail!(
            "redis-cli -p {port} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl RedisCluster {
    /// Starts six nodes, forms the cluster with `redis-cli --cluster create
    /// --cluster-replicas 1` and waits until it is whole (see the module doc).
    ///
    /// # Errors
    /// When `redis-server` or `redis-cli` is missing, a node does not start, or the
    /// cluster is not whole within 30 s; the error quotes the nodes' logs.
    pub fn start() -> Result<RedisCluster> {
        let dir = tempfile::tempdir()?;
        let mut cluster = RedisCluster {
            nodes: Vec::with_capacity(2 * MASTERS),
            masters: Vec::new(),
            dir,
        };
        for _ in 0..2 * MASTERS {
            let node = cluster.spawn_node()?;
            cluster.nodes.push(node);
        }
        for i in 0..cluster.nodes.len() {
            cluster.wait_node_up(i)?;
        }
        let addrs: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let out = redis_cli_command(DEADLINE)
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("run redis-cli --cluster create")?;
        if !out.status.success() {
            bail!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        cluster.wait("the cluster to be whole", || cluster.whole())?;
        let first = cluster.nodes[0].port;
        let mut masters: Vec<u16> = parse_nodes(&redis_cli(first, &["CLUSTER", "NODES"])?)
            .into_iter()
            .filter(|n| n.master)
            .map(|n| n.port)
            .collect();
        masters.sort_unstable();
        cluster.masters = masters;
        Ok(cluster)
    }

    fn spawn_node(&self) -> Result<Node> {
        let port = free_port()?;
        let bus = loop {
            let p = free_port()?;
            if p != port {
                break p;
            }
        };
        self.spawn_node_at(port, bus)
    }

    /// Starts a node on `port` with its cluster bus on `bus`.
    fn spawn_node_at(&self, port: u16, bus: u16) -> Result<Node> {
        let dir = self.dir.path().join(port.to_string());
        std::fs::create_dir_all(&dir)?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--cluster-enabled",
                "yes",
                "--cluster-port",
                &bus.to_string(),
            ])
            .args(["--cluster-config-file", "nodes.conf"])
            .args(["--cluster-node-timeout", "1000"])
            .args(["--save", "", "--appendonly", "no"])
            // Replicas sync at once (the diskless default waits 5 s for more).
            .args(["--repl-diskless-sync-delay", "0"])
            .arg("--dir")
            .arg(&dir)
            .args(["--logfile", "redis.log"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .context("spawn redis-server (apt install redis-server)")?;
        Ok(Node {
            port,
            child,
            killed: false,
            slots: Vec::new(),
        })
    }

    /// Waits until node `i` answers as itself (its pid). A node that exited (its port was taken
    /// between [`free_port`] and its bind, by a test running alongside) is started
    /// again on other ports, a few times.
    fn wait_node_up(&mut self, i: usize) -> Result<()> {
        for _ in 0..5 {
            let node = &mut self.nodes[i];
            let up = wait_for_long("a node to answer", DEADLINE, || {
                // Ours, not another test's node that got the port first.
                let info =
                    redis_cli_within(node.port, &["INFO", "server"], NODE_UP).unwrap_or_default();
                if info_field(&info, "process_id") == Some(&node.child.id().to_string()) {
                    return Some(true);
                }
                let exited = node.child.try_wait().ok().flatten().is_some();
                exited.then_some(false)
            })
            .with_context(|| self.logs())?;
            if up {
                return Ok(());
            }
            let node = self.spawn_node()?;
            self.nodes[i] = node;
        }
        bail!("redis-server kept exiting at start-up: {}", self.logs())
    }

    /// Polls `f` until `Some`, for at most [`DEADLINE`]; on timeout the error carries
    /// the tail of every node's log.
    fn wait<T>(&self, what: &str, f: impl FnMut() -> Option<T>) -> Result<T> {
        wait_for_long(what, DEADLINE, f).with_context(|| self.logs())
    }

    fn logs(&self) -> String {
        let mut all = String::new();
        for n in &self.nodes {
            let path = self.dir.path().join(n.port.to_string()).join("redis.log");
            let log = std::fs::read_to_string(path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(8).collect();
            all.push_str(&format!("--- node {} ---\n", n.port));
            for l in tail.into_iter().rev() {
                all.push_str(l);
                all.push('\n');
            }
        }
        all
    }

    fn live(&self) -> impl Iterator<Item = u16> + '_ {
        self.nodes.iter().filter(|n| !n.killed).map(|n| n.port)
    }

    /// Every live node says `cluster_state:ok` with every slot served, and sees three
    /// healthy masters covering all slots, each with a live replica whose replication
    /// link is up.
    fn whole(&self) -> Option<()> {
        for port in self.live() {
            let info = redis_cli(port, &["CLUSTER", "INFO"]).ok()?;
            if info_field(&info, "cluster_state") != Some("ok")
                || info_field(&info, "cluster_slots_ok") != Some("16384")
            {
                return None;
            }
            let nodes = parse_nodes(&redis_cli(port, &["CLUSTER", "NODES"]).ok()?);
            let masters: Vec<&NodeLine> = nodes
                .iter()
                .filter(|n| n.master && !n.down && !n.slots.is_empty())
                .collect();
            let covered: u32 = masters
                .iter()
                .flat_map(|m| &m.slots)
                .map(|&(a, b)| u32::from(b - a) + 1)
                .sum();
            if masters.len() != MASTERS || covered != u32::from(SLOTS) {
                return None;
            }
            for m in masters {
                let replica = nodes
                    .iter()
                    .find(|r| r.replica_of.as_deref() == Some(&m.id) && !r.down)?;
                let rinfo = redis_cli(replica.port, &["INFO", "replication"]).ok()?;
                if info_field(&rinfo, "master_link_status") != Some("up") {
                    return None;
                }
            }
        }
        Some(())
    }

    /// The cluster as seen by the first live node.
    fn view(&self) -> Result<Vec<NodeLine>> {
        let port = self.live().next().context("every node was killed")?;
        Ok(parse_nodes(&redis_cli(port, &["CLUSTER", "NODES"])?))
    }

    /// The seed URL of the masters the cluster was created with (less any killed):
    /// `redis-cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`.
    pub fn seeds_url(&self) -> String {
        let seeds: Vec<String> = self
            .masters
            .iter()
            .filter(|&&p| self.nodes.iter().any(|n| n.port == p && !n.killed))
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis-cluster://{}", seeds.join(","))
    }

    /// The ports of all six nodes, killed ones included, in start order.
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(|n| n.port).collect()
    }

    /// The port of the master serving hash slot `slot`, by `CLUSTER NODES`.
    ///
    /// # Errors
    /// When no live node answers or none serves the slot.
    pub fn master_for_slot(&self, slot: u16) -> Result<u16> {
        self.view()?
            .into_iter()
            .find(|n| n.master && !n.down && n.serves(slot))
            .map(|n| n.port)
            .with_context(|| format!("no master serves slot {slot}"))
    }

    /// The port of the master serving `key` (`CLUSTER KEYSLOT`).
    ///
    /// # Errors
    /// As [`RedisCluster::master_for_slot`].
    pub fn master_for_key(&self, key: &str) -> Result<u16> {
        let port = self.live().next().context("every node was killed")?;
        let out = redis_cli(port, &["CLUSTER", "KEYSLOT", key])?;
        let slot = out
            .parse()
            .with_context(|| format!("CLUSTER KEYSLOT {key}: {out}"))?;
        self.master_for_slot(slot)
    }

    /// Kills (SIGKILL) the master on `port`; its replica takes over after about
    /// `cluster-node-timeout` (1 s), see [`RedisCluster::wait_failover`].
    ///
    /// # Errors
    /// When `port` is not a live master.
    pub fn kill_master(&mut self, port: u16) -> Result<()> {
        let slots = self
            .view()?
            .into_iter()
            .find(|n| n.port == port && n.master && !n.down)
            .map(|n| n.slots)
            .with_context(|| format!("127.0.0.1:{port} is not a live master"))?;
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port == port && !n.killed)
            .with_context(|| format!("no live node on port {port}"))?;
        node.child.kill()?;
        node.child.wait()?;
        node.killed = true;
        node.slots = slots;
        Ok(())
    }

    /// Waits until another node serves the slots the master killed on `port` served,
    /// as every live node sees it, and every live node says `cluster_state:ok` again;
    /// returns the new master's port (the promoted replica).
    ///
    /// # Errors
    /// When `port` was not killed by [`RedisCluster::kill_master`], or the failover
    /// does not happen within 30 s.
    pub fn wait_failover(&self, port: u16) -> Result<u16> {
        let slots = self
            .nodes
            .iter()
            .find(|n| n.port == port && n.killed)
            .map(|n| n.slots.clone())
            .with_context(|| format!("127.0.0.1:{port} was not killed as a master"))?;
        let (first, _) = *slots.first().context("the killed master served no slot")?;
        self.wait("a replica to take over", || {
            let mut promoted = None;
            for live in self.live() {
                let info = redis_cli(live, &["CLUSTER", "INFO"]).ok()?;
                if info_field(&info, "cluster_state") != Some("ok") {
                    return None;
                }
                let nodes = parse_nodes(&redis_cli(live, &["CLUSTER", "NODES"]).ok()?);
                let new = nodes
                    .iter()
                    .find(|n| n.master && !n.down && n.serves(first))?;
                let all = slots.iter().all(|&(a, b)| new.serves(a) && new.serves(b));
                if new.port == port || !all || promoted.is_some_and(|p| p != new.port) {
                    return None;
                }
                promoted = Some(new.port);
            }
            promoted
        })
    }

    /// Runs `redis-cli -p port args…` against one node, for at most 5 s; its trimmed
    /// output (error replies included, as text).
    ///
    /// # Errors
    /// When `redis-cli` cannot run or cannot connect.
    pub fn cli(&self, port: u16, args: &[&str]) -> Result<String> {
        redis_cli(port, args)
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for n in self.nodes.iter_mut().filter(|n| !n.killed) {
            let _ = n.child.kill();
            let _ = n.child.wait();
        }
    }
}

#[cfg(test)]
mod tests;
