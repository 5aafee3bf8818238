//! Lease operations per second through [`RedisStore`], on one private `redis-server`
//! and on a real 3-master, 3-replica Redis Cluster ([`RedisCluster`]), both on
//! loopback: many tokio tasks each run leases over many keys (a grant, checkpoints
//! that book usage through a node and ask for more, a release), one [`Store::lease`]
//! call per operation. Prints the median of the rounds' operations per second and
//! the p50/p99 latency of every operation of every counted round.
//!
//! `cargo bench -p turbo-controlplane --bench leases [-- --tasks N --keys N --rounds N
//! --round 3s]`. Client and servers share the machine's cores, so the figures are a
//! ceiling of this machine, not of Redis.
//!
//! Baseline (2026-12-04, 2 cores, quiet, defaults: 128 tasks, 2,000 keys, 16 nodes,
//! usage log on, schema v2):
//!
//! | backend | lease ops/s (median of 5) | p50 | p99 |
//! |---|---|---|---|
//! | one `redis-server` | 29,000 | 4.3 ms | 8.0 ms |
//! | Redis Cluster, 3 masters + 3 replicas | 21,000 | 5.8 ms | 14.8 ms |
//!
//! On one 2-core machine the cluster cannot gain: its six servers, replication and
//! the client share the same two cores, and the client routes each call by slot. The
//! figure says what a cluster costs per operation, not what it scales to.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use hdrhistogram::Histogram;
use turbo_bench::net::{free_port, wait_for};
use turbo_bench::redis_cluster::RedisCluster;
use turbo_controlplane::store::{LeaseTerms, RedisStore, Store};
use turbo_dataplane::control::{LeaseRequest, NodeUsage, Usage};

/// Lease operations per second on one Redis and on a Redis Cluster.
#[derive(Parser, Debug)]
struct Args {
    /// Concurrent tasks, each running one lease at a time.
    #[arg(long, default_value_t = 128)]
    tasks: usize,
    /// Customer keys the tasks lease from (each lease picks one at random).
    #[arg(long, default_value_t = 2000)]
    keys: usize,
    /// Node identities that usage is booked through.
    #[arg(long, default_value_t = 16)]
    nodes: usize,
    /// Counted rounds; the figure is their median.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The length of a round (one uncounted warm-up round of a second comes first).
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    round: Duration,
    /// Passed by `cargo bench`.
    #[arg(long, hide = true)]
    bench: bool,
}

/// Requests per lease: a grant, checkpoints, a release.
const SEQ_PER_LEASE: u64 = 9;
const WANT: u64 = 1 << 20;
const UP: u64 = 256 << 10;
const DOWN: u64 = 512 << 10;

/// A private `redis-server` on a free port; killed on drop.
struct Redis {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Result<Redis> {
        let dir = tempfile::tempdir()?;
        let port = free_port()?;
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .context("spawn redis-server (scripts/setup)")?;
        let redis = Redis {
            child,
            port,
            _dir: dir,
        };
        wait_for("redis-server", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        })?;
        Ok(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one backend did.
struct Outcome {
    per_round: Vec<f64>,
    latency: Histogram<u64>,
    errors: u64,
}

/// One task's lease in progress, and a xorshift for its choices.
struct Leaser {
    task: usize,
    rng: u64,
    key: Arc<str>,
    lease: Arc<str>,
    leases: u64,
    seq: u64,
}

impl Leaser {
    fn new(task: usize) -> Leaser {
        Leaser {
            task,
            rng: 0x9e37_79b9_7f4a_7c15 ^ (task as u64 + 1).wrapping_mul(0xbf58_476d_1ce4_e5b9),
            key: Arc::from(""),
            lease: Arc::from(""),
            leases: 0,
            seq: 0,
        }
    }

    fn pick(&mut self, n: usize) -> usize {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng % n as u64) as usize
    }

    /// The next request: a new lease's grant, a checkpoint, or the release.
    fn next(&mut self, keys: &[Arc<str>], nodes: &[Arc<str>]) -> LeaseRequest {
        if self.seq == SEQ_PER_LEASE {
            self.seq = 0;
        }
        if self.seq == 0 {
            self.key = keys[self.pick(keys.len())].clone();
            self.leases += 1;
            self.lease = Arc::from(format!("bench-{}-{}", self.task, self.leases));
        }
        self.seq += 1;
        let usage = if self.seq == 1 {
            Usage::default()
        } else {
            let node = nodes[self.pick(nodes.len())].clone();
            Usage {
                up: UP,
                down: DOWN,
                connections: 2,
                nodes: vec![NodeUsage {
                    node,
                    up: UP,
                    down: DOWN,
                    connections: 2,
                }],
            }
        };
        let release = self.seq == SEQ_PER_LEASE;
        LeaseRequest {
            key_id: self.key.clone(),
            lease_id: self.lease.clone(),
            seq: self.seq,
            want: if release { 0 } else { WANT },
            usage,
            release,
        }
    }
}

/// Runs `args.tasks` tasks for `length`; returns operations per second, the latency of
/// every operation in µs, and the failures with the first one's message.
async fn round(
    store: &Arc<RedisStore>,
    keys: &Arc<Vec<Arc<str>>>,
    nodes: &Arc<Vec<Arc<str>>>,
    leasers: &mut Vec<Leaser>,
    length: Duration,
) -> Result<(f64, Histogram<u64>, u64, Option<String>)> {
    let terms = Arc::new(LeaseTerms {
        owner: "bench/0".into(),
        ttl: Duration::from_secs(60),
        usage_log: true,
    });
    let start = Instant::now();
    let deadline = start + length;
    let mut handles = Vec::with_capacity(leasers.len());
    for mut leaser in leasers.drain(..) {
        let (store, keys, nodes, terms) =
            (store.clone(), keys.clone(), nodes.clone(), terms.clone());
        handles.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut ops, mut errors, mut first) = (0u64, 0u64, None);
            while Instant::now() < deadline {
                let req = leaser.next(&keys, &nodes);
                let t = Instant::now();
                match store.lease(&terms, &req).await {
                    Ok(_) => ops += 1,
                    Err(e) => {
                        errors += 1;
                        first.get_or_insert_with(|| e.to_string());
                        // Start a new lease rather than retry a broken one.
                        leaser.seq = 0;
                    }
                }
                hist.saturating_record(t.elapsed().as_micros() as u64);
            }
            anyhow::Ok((leaser, hist, ops, errors, first))
        }));
    }
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let (mut ops, mut errors, mut first) = (0u64, 0u64, None);
    for h in handles {
        let (leaser, h, o, e, f) = h.await??;
        leasers.push(leaser);
        hist.add(h)?;
        ops += o;
        errors += e;
        if first.is_none() {
            first = f;
        }
    }
    Ok((
        ops as f64 / start.elapsed().as_secs_f64(),
        hist,
        errors,
        first,
    ))
}

/// Creates the keys and nodes, warms up, then runs the counted rounds.
async fn measure(url: &str, args: &Args) -> Result<Outcome> {
    let store = Arc::new(RedisStore::connect(url).await.context("connect")?);
    let mut keys = Vec::with_capacity(args.keys);
    for i in 0..args.keys {
        let (rec, _) = store
            .create_key(&format!("bench-{i}"), 1 << 50)
            .await
            .context("create_key")?;
        keys.push(Arc::<str>::from(rec.id));
    }
    let mut nodes = Vec::with_capacity(args.nodes);
    for _ in 0..args.nodes {
        let (rec, _) = store.create_node(None).await.context("create_node")?;
        nodes.push(Arc::<str>::from(rec.id));
    }
    let (keys, nodes) = (Arc::new(keys), Arc::new(nodes));
    let mut leasers: Vec<Leaser> = (0..args.tasks).map(Leaser::new).collect();

    let (ops, _, errors, first) =
        round(&store, &keys, &nodes, &mut leasers, Duration::from_secs(1)).await?;
    if ops == 0.0 {
        bail!(
            "every lease operation failed ({errors}): {}",
            first.unwrap_or_default()
        );
    }
    let mut outcome = Outcome {
        per_round: Vec::new(),
        latency: Histogram::new_with_bounds(1, 60_000_000, 3)?,
        errors: 0,
    };
    for _ in 0..args.rounds {
        let (ops, hist, errors, first) =
            round(&store, &keys, &nodes, &mut leasers, args.round).await?;
        if let Some(e) = first {
            eprintln!("  {errors} failed operations, the first: {e}");
        }
        outcome.per_round.push(ops);
        outcome.latency.add(hist)?;
        outcome.errors += errors;
    }
    Ok(outcome)
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s.get(s.len() / 2).copied().unwrap_or(0.0)
}

fn report(name: &str, outcome: &Result<Outcome>) {
    match outcome {
        Ok(o) => {
            let rounds: Vec<String> = o.per_round.iter().map(|r| format!("{r:.0}")).collect();
            println!(
                "{name:<28} {:>9.0} ops/s  p50 {:>6.2} ms  p99 {:>6.2} ms  errors {}  rounds [{}]",
                median(&o.per_round),
                o.latency.value_at_quantile(0.5) as f64 / 1000.0,
                o.latency.value_at_quantile(0.99) as f64 / 1000.0,
                o.errors,
                rounds.join(", ")
            );
        }
        Err(e) => println!("{name:<28} failed: {e:#}"),
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    println!(
        "lease operations: {} tasks over {} keys and {} nodes, {} rounds of {:?} (median), \
         {} cores shared by client and servers",
        args.tasks,
        args.keys,
        args.nodes,
        args.rounds,
        args.round,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    let single = Redis::start()?;
    let url = format!("redis://127.0.0.1:{}/0", single.port);
    let outcome = rt.block_on(measure(&url, &args));
    report("redis (one server)", &outcome);
    drop(single);

    let outcome = match RedisCluster::start() {
        Ok(cluster) => rt.block_on(measure(&cluster.seeds_url(), &args)),
        Err(e) => Err(e.context("start the Redis Cluster")),
    };
    report("redis cluster (3 masters)", &outcome);
    Ok(())
}
