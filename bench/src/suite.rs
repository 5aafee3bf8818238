//! The standard suite: every workload through every available path, interleaved run by
//! run, every run kept. Produces a [`Report`] (see [`crate::report`]). Idle tunnels run
//! first, on freshly started processes, and node fan-in on a network of its own, so
//! that memory differences are not disturbed by memory the bulk runs leave behind.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::conditions::Conditions;
use crate::figure::Sample;
use crate::peers::{Peer, PeerKind, Role};
use crate::target;
use crate::topology::Topology;
use crate::veth;
use crate::workload::{self, Direction};

pub use crate::report::{run_and_report, Better, Cdf, Report, Row};
pub use crate::single::{bulk_only, idle_only, BulkJob};

/// What to run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    /// Directory holding `turbo-server` and `turbo-node`.
    pub bin_dir: PathBuf,
    /// Server cores.
    pub cores: usize,
    /// Runs per workload and path (median reported).
    pub runs: usize,
    /// Bytes per bulk run.
    pub bulk_bytes: u64,
    /// Closed-loop duration per connection-rate run.
    pub rate_duration: Duration,
    /// Open-loop duration per latency run.
    pub latency_duration: Duration,
    /// Idle tunnels to open (capped by the file-descriptor limit).
    pub idle_tunnels: usize,
    /// Concurrencies of the connection-rate workload.
    pub concurrency: Vec<usize>,
    /// In-harness nodes for the fan-in workload.
    pub fan_in_nodes: usize,
    /// How long the fan-in nodes idle while the server's CPU is read.
    pub fan_in_idle: Duration,
    /// Where the entry and exit sides sit. Defaults to loopback.
    pub net: Topology,
    /// Refuse to run on a busy machine instead of warning.
    pub refuse_busy: bool,
}

impl Config {
    /// The standard suite.
    pub fn full(bin_dir: PathBuf) -> Self {
        Config {
            bin_dir,
            cores: 2,
            runs: 5,
            bulk_bytes: 512 << 20,
            rate_duration: Duration::from_secs(3),
            latency_duration: Duration::from_secs(3),
            idle_tunnels: 10_000,
            concurrency: vec![64, 256],
            fan_in_nodes: 1000,
            fan_in_idle: Duration::from_secs(10),
            net: Topology::loopback(),
            refuse_busy: false,
        }
    }

    /// Every workload once, small: checks that everything completes and is sane.
    pub fn quick(bin_dir: PathBuf) -> Self {
        Config {
            bin_dir,
            cores: 2,
            runs: 1,
            // Enough for every relay's CPU to clear the 20 ms schedstat floor.
            bulk_bytes: 32 << 20,
            rate_duration: Duration::from_millis(300),
            latency_duration: Duration::from_millis(300),
            // Enough for the growth to stand clear of the RSS readings' wobble.
            idle_tunnels: 400,
            concurrency: vec![8, 64],
            fan_in_nodes: 20,
            fan_in_idle: Duration::from_millis(500),
            net: Topology::loopback(),
            refuse_busy: false,
        }
    }
}

#[derive(Default)]
struct Rows(Vec<Row>, Vec<Cdf>);

impl Rows {
    fn push(&mut self, workload: &str, metric: &str, better: Better, peer: PeerKind, v: Sample) {
        let row = match self
            .0
            .iter_mut()
            .find(|r| r.workload == workload && r.metric == metric)
        {
            Some(r) => r,
            None => {
                self.0.push(Row {
                    workload: workload.into(),
                    metric: metric.into(),
                    better,
                    figures: Default::default(),
                    samples: Default::default(),
                    turbo_vs_best: None,
                });
                self.0.last_mut().expect("just pushed")
            }
        };
        row.samples.entry(peer.name()).or_default().push(v);
    }

    /// Keeps the latest latency distribution of `workload` on `peer`.
    fn cdf(&mut self, workload: &str, peer: PeerKind, points: Vec<(f64, u64)>) {
        self.1
            .retain(|(w, p, _)| !(w == workload && *p == peer.name()));
        self.1.push((workload.to_owned(), peer.name(), points));
    }

    fn value(&mut self, workload: &str, metric: &str, better: Better, peer: PeerKind, v: f64) {
        self.push(workload, metric, better, peer, Sample::Value(v));
    }

    fn finish(mut self) -> Vec<Row> {
        for r in &mut self.0 {
            r.finish();
        }
        self.0
    }

    fn median(&self, workload: &str, metric: &str, peer: PeerKind) -> Option<f64> {
        let r = self
            .0
            .iter()
            .find(|r| r.workload == workload && r.metric == metric)?;
        crate::figure::Figure::of(r.samples.get(peer.name())?).median()
    }
}

/// Open file descriptors allowed, raised to the hard limit.
pub(crate) fn raise_fd_limit() -> u64 {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit on this process with a valid struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) != 0 {
            return 1024;
        }
        l.rlim_cur = l.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &l);
    }
    l.rlim_cur
}

/// Runs the suite; `progress` is told each step. The machine's conditions are read
/// before the first step (a busy machine is warned about, or refused when
/// `cfg.refuse_busy`) and its load average at every step.
///
/// # Errors
/// When Turbo cannot start, or a workload fails outright (bytes lost, a tunnel refused).
pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Report> {
    let conditions = RefCell::new(Conditions::now(cfg.refuse_busy)?);
    let progress = &|step: &str| {
        conditions.borrow_mut().sample();
        progress(step);
    };
    let fds = raise_fd_limit();
    let tunnels = cfg.idle_tunnels.min((fds.saturating_sub(512) / 2) as usize);
    let net = &cfg.net;
    let (source, sink, echo) = (target::source(net)?, target::sink(net)?, target::echo(net)?);
    let mut peers = Vec::new();
    let mut skipped = Vec::new();
    for kind in PeerKind::ALL {
        match Peer::start(kind, &cfg.bin_dir, cfg.cores, net)? {
            Ok(p) => peers.push(p),
            Err(why) => skipped.push((kind.name(), why)),
        }
    }
    // Idle tunnels first, on fresh processes; their rows go after the others.
    let mut idle = Rows::default();
    idle_rows(net, &peers, tunnels, &mut idle, progress)?;
    let mut rows = Rows::default();
    bulk_rows(cfg, &peers, source, sink, &mut rows, progress)?;
    rate_rows(cfg, &peers, echo, &mut rows, progress)?;
    rows.0.extend(idle.0);
    let turbo = peers.iter().any(|p| p.kind == PeerKind::Turbo);
    let offload = peers
        .iter()
        .find_map(Peer::turbo)
        .and_then(|t| t.offload().ok());
    let wire = veth::wire(net);
    let names = peers.iter().map(|p| p.kind.name()).collect();
    drop(peers);
    // The fan-in's node threads raise the load average by themselves.
    conditions.borrow_mut().freeze();
    if turbo {
        fan_in_rows(cfg, &mut rows, progress)?;
    }
    progress("done");
    let mut conditions = conditions.into_inner();
    conditions.finish();
    Ok(Report {
        config: Config {
            idle_tunnels: tunnels,
            ..cfg.clone()
        },
        conditions,
        peers: names,
        skipped,
        cdfs: rows.1.clone(),
        rows: rows.finish(),
        wire,
        offload,
    })
}

fn idle_rows(
    net: &Topology,
    peers: &[Peer],
    tunnels: usize,
    rows: &mut Rows,
    progress: &dyn Fn(&str),
) -> Result<()> {
    for p in peers.iter().filter(|p| p.kind != PeerKind::Direct) {
        progress(&format!("idle tunnels: {} x {tunnels}", p.kind.name()));
        let idle = workload::idle_tunnels(p, net, tunnels)?;
        let workload = format!("idle tunnels ({tunnels} held)");
        for (role, name) in [(Role::Entry, "entry (server)"), (Role::Exit, "exit (node)")] {
            // One process per role on every path.
            if let Some((_, s)) = idle.rss_per_tunnel.iter().find(|(r, _)| *r == role) {
                let metric = format!("RSS/tunnel bytes, {name}");
                rows.push(&workload, &metric, Better::Lower, p.kind, s.clone());
            }
        }
        let metric = "RSS/tunnel bytes, total";
        rows.push(&workload, metric, Better::Lower, p.kind, idle.total());
    }
    Ok(())
}

/// Node fan-in on a Turbo network of its own, started for it: the server's memory
/// baseline is not disturbed by what the earlier workloads left behind.
fn fan_in_rows(cfg: &Config, rows: &mut Rows, progress: &dyn Fn(&str)) -> Result<()> {
    progress(&format!("node fan-in: {} nodes", cfg.fan_in_nodes));
    let turbo = crate::net::Network::start_with(&cfg.bin_dir, cfg.cores, false, &[], &cfg.net)?;
    let f = crate::fanin::node_fan_in(&turbo, cfg.fan_in_nodes, cfg.fan_in_idle)?;
    let workload = format!("node fan-in ({} QUIC nodes)", f.nodes);
    for (metric, v) in [
        ("server RSS/node bytes", f.server_rss_per_node),
        ("server idle CPU %", f.server_idle_cpu_percent),
        ("seconds to connect all", Sample::Value(f.connect_all_secs)),
    ] {
        rows.push(&workload, metric, Better::Lower, PeerKind::Turbo, v);
    }
    Ok(())
}

fn bulk_rows(
    cfg: &Config,
    peers: &[Peer],
    source: SocketAddr,
    sink: SocketAddr,
    rows: &mut Rows,
    progress: &dyn Fn(&str),
) -> Result<()> {
    for (dir, name) in [
        (Direction::Download, "download"),
        (Direction::Upload, "upload"),
    ] {
        for conns in [1, 8] {
            let workload = format!("bulk {name}, {conns} conn");
            for run in 0..cfg.runs {
                for p in peers {
                    progress(&format!("{workload}: {} run {}", p.kind.name(), run + 1));
                    let b = workload::bulk(p, source, sink, dir, conns, cfg.bulk_bytes)?;
                    rows.value(&workload, "MiB/s", Better::Higher, p.kind, b.mib_s);
                    if p.kind != PeerKind::Direct {
                        let cpu = "relay CPU s/GB";
                        rows.push(&workload, cpu, Better::Lower, p.kind, b.cpu_per_gb());
                    }
                    if p.split_roles() {
                        let (entry, exit) = (b.entry_cpu_per_gb(), b.exit_cpu_per_gb());
                        let metric = "entry (server) CPU s/GB";
                        rows.push(&workload, metric, Better::Lower, p.kind, entry);
                        let metric = "exit (node) CPU s/GB";
                        rows.push(&workload, metric, Better::Lower, p.kind, exit);
                    }
                }
            }
        }
    }
    Ok(())
}

impl Rows {
    /// One row per percentile of `r`, named `{prefix}p50 µs` and so on.
    fn percentiles(&mut self, workload: &str, prefix: &str, peer: PeerKind, r: &workload::Rate) {
        let p = r.latency_us;
        for (q, v) in [("p50", p.p50), ("p99", p.p99), ("p99.9", p.p999)] {
            let metric = format!("{prefix}{q} µs");
            self.value(workload, &metric, Better::Lower, peer, v as f64);
        }
    }
}

fn rate_rows(
    cfg: &Config,
    peers: &[Peer],
    echo: SocketAddr,
    rows: &mut Rows,
    progress: &dyn Fn(&str),
) -> Result<()> {
    for &c in &cfg.concurrency {
        let workload = format!("connect+64B echo, concurrency {c}");
        for run in 0..cfg.runs {
            for p in peers {
                progress(&format!("{workload}: {} run {}", p.kind.name(), run + 1));
                let r = workload::conn_rate(p, echo, c, cfg.rate_duration)?;
                ensure!(
                    r.failed == 0,
                    "{}: {} of {} connections failed",
                    p.kind.name(),
                    r.failed,
                    r.failed + r.completed
                );
                rows.value(&workload, "conns/s", Better::Higher, p.kind, r.conns_per_s);
                rows.cdf(&workload, p.kind, r.cdf.clone());
                rows.percentiles(&workload, "TTFB ", p.kind, &r);
            }
        }
    }
    open_loop_rows(cfg, peers, echo, rows, progress)
}

fn open_loop_rows(
    cfg: &Config,
    peers: &[Peer],
    echo: SocketAddr,
    rows: &mut Rows,
    progress: &dyn Fn(&str),
) -> Result<()> {
    let base = format!("connect+64B echo, concurrency {}", cfg.concurrency[0]);
    let workload = "open loop at 50% of max";
    for run in 0..cfg.runs {
        for p in peers {
            let max = rows.median(&base, "conns/s", p.kind).unwrap_or(100.0);
            progress(&format!("{workload}: {} run {}", p.kind.name(), run + 1));
            let r =
                workload::open_loop(p, echo, max / 2.0, cfg.latency_duration, cfg.concurrency[0])?;
            ensure!(
                r.failed == 0,
                "{}: {} requests failed under load",
                p.kind.name(),
                r.failed
            );
            let rate = "rate conns/s";
            rows.value(workload, rate, Better::Higher, p.kind, r.conns_per_s);
            rows.percentiles(workload, "", p.kind, &r);
        }
    }
    Ok(())
}
