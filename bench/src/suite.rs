//! The standard suite: every workload through every available path, interleaved run by
//! run, medians reported. Produces a [`Report`] (markdown table, JSON).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{ensure, Result};

use crate::net::Offload;
use crate::peers::{Peer, PeerKind, Role};
use crate::target;
use crate::topology::Topology;
use crate::veth::{self, Wire};
use crate::workload::{self, Direction};

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
        }
    }

    /// Every workload once, small: checks that everything completes and is sane.
    pub fn quick(bin_dir: PathBuf) -> Self {
        Config {
            bin_dir,
            cores: 2,
            runs: 1,
            bulk_bytes: 8 << 20,
            rate_duration: Duration::from_millis(300),
            latency_duration: Duration::from_millis(300),
            idle_tunnels: 100,
            concurrency: vec![8, 64],
            fan_in_nodes: 20,
            fan_in_idle: Duration::from_millis(500),
            net: Topology::loopback(),
        }
    }
}

/// Whether bigger is better for a metric.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Better {
    /// Throughput, rates.
    Higher,
    /// Latency, CPU, memory.
    Lower,
}

/// One table row: a metric of one workload, the median per path.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Row {
    /// Workload name.
    pub workload: String,
    /// Metric and unit.
    pub metric: String,
    /// Direction of goodness.
    pub better: Better,
    /// Median per path name; absent where the path was skipped or does not apply.
    pub values: BTreeMap<&'static str, f64>,
    /// Every run's value per path.
    pub samples: BTreeMap<&'static str, Vec<f64>>,
}

/// The suite's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// The configuration.
    pub config: Config,
    /// Paths that ran.
    pub peers: Vec<&'static str>,
    /// Skipped paths, with the command that installs them.
    pub skipped: Vec<(&'static str, String)>,
    /// The rows, in table order.
    pub rows: Vec<Row>,
    /// Latency distributions of the last run: (workload, path, (quantile, µs) points).
    pub cdfs: Vec<Cdf>,
    /// Frames on the veth link after the workloads (veth only).
    pub wire: Option<Wire>,
    /// Turbo's UDP offload counters after the workloads (before node fan-in).
    pub offload: Option<Offload>,
}

#[derive(Default)]
struct Rows(Vec<Row>, Vec<Cdf>);

/// One latency distribution: workload, path, and (quantile, µs) points.
pub type Cdf = (String, &'static str, Vec<(f64, u64)>);

impl Rows {
    fn push(&mut self, workload: &str, metric: &str, better: Better, peer: PeerKind, v: f64) {
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
                    values: BTreeMap::new(),
                    samples: BTreeMap::new(),
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

    fn finish(mut self) -> Vec<Row> {
        for r in &mut self.0 {
            for (peer, s) in &r.samples {
                let mut s = s.clone();
                s.sort_by(f64::total_cmp);
                r.values.insert(peer, s[s.len() / 2]);
            }
        }
        self.0
    }

    fn median(&self, workload: &str, metric: &str, peer: PeerKind) -> Option<f64> {
        let r = self
            .0
            .iter()
            .find(|r| r.workload == workload && r.metric == metric)?;
        let mut s = r.samples.get(peer.name())?.clone();
        s.sort_by(f64::total_cmp);
        s.get(s.len() / 2).copied()
    }
}

/// Open file descriptors allowed, raised to the hard limit.
fn raise_fd_limit() -> u64 {
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

/// The lines under a result: which net, the frames on the link, Turbo's offload
/// counters.
fn notes(net: &Topology, wire: Option<Wire>, offload: Option<Offload>) -> String {
    let mut out = net.describe() + "\n";
    for line in [wire.map(|w| w.to_string()), offload.map(|o| o.to_string())] {
        out += &line.map_or(String::new(), |l| l + "\n");
    }
    out
}

/// One bulk workload for [`bulk_only`].
pub struct BulkJob {
    /// Parallel connections.
    pub conns: usize,
    /// Bytes per run over all connections.
    pub bytes: u64,
    /// Direction.
    pub dir: Direction,
    /// Runs per path.
    pub runs: usize,
    /// Server cores.
    pub cores: usize,
    /// Where the entry and exit sides sit.
    pub net: Topology,
}

/// Runs one bulk workload through Turbo and shadowsocks-rust (when installed), runs
/// interleaved; returns one line per path with median MiB/s and relay CPU s/GB.
///
/// # Errors
/// When a path fails to start or loses bytes.
pub fn bulk_only(bin_dir: &std::path::Path, job: &BulkJob) -> Result<String> {
    let (source, sink) = (target::source(&job.net)?, target::sink(&job.net)?);
    let mut peers = Vec::new();
    for kind in [PeerKind::Shadowsocks, PeerKind::Turbo] {
        if let Ok(p) = Peer::start(kind, bin_dir, job.cores, &job.net)? {
            peers.push(p);
        }
    }
    let mut results: Vec<[Vec<f64>; 4]> = vec![Default::default(); peers.len()];
    for _ in 0..job.runs {
        for (p, [speed, cpu, entry, exit]) in peers.iter().zip(results.iter_mut()) {
            let b = workload::bulk(p, source, sink, job.dir, job.conns, job.bytes)?;
            speed.push(b.mib_s);
            cpu.push(b.cpu_s_per_gb);
            entry.push(b.entry_cpu_s_per_gb);
            exit.push(b.exit_cpu_s_per_gb);
        }
    }
    let mut out = format!(
        "{:?}, {} conns, {} MiB\n",
        job.dir,
        job.conns,
        job.bytes >> 20
    );
    for (p, [speed, cpu, entry, exit]) in peers.iter().zip(results) {
        let median = crate::curl::median;
        out += &format!(
            "{:<18} {:>8.0} MiB/s  {:>5.2} CPU s/GB (entry {:.2}, exit {:.2})  runs: {:?}\n",
            p.kind.name(),
            median(speed.clone()),
            median(cpu),
            median(entry),
            median(exit),
            speed.iter().map(|v| v.round()).collect::<Vec<_>>()
        );
    }
    let offload = peers
        .iter()
        .find_map(Peer::turbo)
        .and_then(|t| t.offload().ok());
    Ok(out + &notes(&job.net, veth::wire(&job.net), offload))
}

/// Holds `tunnels` idle tunnels through Turbo and shadowsocks-rust (when installed);
/// returns one line per process with its RSS growth per tunnel.
///
/// # Errors
/// When a path fails to start or a tunnel cannot be opened.
pub fn idle_only(bin_dir: &std::path::Path, net: &Topology, tunnels: usize) -> Result<String> {
    let fds = raise_fd_limit();
    let tunnels = tunnels.min((fds.saturating_sub(512) / 2) as usize);
    let mut out = format!("{tunnels} idle tunnels, RSS growth per tunnel\n");
    for kind in [PeerKind::Shadowsocks, PeerKind::Turbo] {
        let Ok(peer) = Peer::start(kind, bin_dir, 2, net)? else {
            continue;
        };
        let idle = workload::idle_tunnels(&peer, net, tunnels)?;
        for (role, bytes) in idle.rss_per_tunnel {
            out += &format!("{:<18} {role:?}: {bytes:.0} B\n", kind.name());
        }
    }
    Ok(out + &net.describe())
}

/// Runs the suite; `progress` is told each step.
///
/// # Errors
/// When Turbo cannot start, or a workload fails outright (bytes lost, a tunnel refused).
pub fn run(cfg: &Config, progress: &dyn Fn(&str)) -> Result<Report> {
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
    let mut rows = Rows::default();
    bulk_rows(cfg, &peers, source, sink, &mut rows, progress)?;
    rate_rows(cfg, &peers, echo, &mut rows, progress)?;
    idle_rows(net, &peers, tunnels, &mut rows, progress)?;
    let turbo = peers.iter().find_map(Peer::turbo);
    let offload = turbo.and_then(|t| t.offload().ok());
    let wire = veth::wire(net);
    if let Some(t) = turbo {
        fan_in_rows(cfg, t, &mut rows, progress)?;
    }
    Ok(Report {
        config: Config {
            idle_tunnels: tunnels,
            ..cfg.clone()
        },
        peers: peers.iter().map(|p| p.kind.name()).collect(),
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
            let mine = idle.rss_per_tunnel.iter().filter(|(r, _)| *r == role);
            if mine.clone().next().is_some() {
                let b: f64 = mine.map(|(_, b)| b).sum();
                let metric = format!("RSS/tunnel bytes, {name}");
                rows.push(&workload, &metric, Better::Lower, p.kind, b);
            }
        }
        let total: f64 = idle.rss_per_tunnel.iter().map(|(_, b)| b).sum();
        let metric = "RSS/tunnel bytes, total";
        rows.push(&workload, metric, Better::Lower, p.kind, total);
    }
    Ok(())
}

fn fan_in_rows(
    cfg: &Config,
    turbo: &crate::net::Network,
    rows: &mut Rows,
    progress: &dyn Fn(&str),
) -> Result<()> {
    progress(&format!("node fan-in: {} nodes", cfg.fan_in_nodes));
    let f = crate::fanin::node_fan_in(turbo, cfg.fan_in_nodes, cfg.fan_in_idle)?;
    let workload = format!("node fan-in ({} QUIC nodes)", f.nodes);
    for (metric, v) in [
        ("server RSS/node bytes", f.server_rss_per_node),
        ("server idle CPU %", f.server_idle_cpu_percent),
        ("seconds to connect all", f.connect_all_secs),
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
                    rows.push(&workload, "MiB/s", Better::Higher, p.kind, b.mib_s);
                    if p.kind != PeerKind::Direct {
                        let cpu = "relay CPU s/GB";
                        rows.push(&workload, cpu, Better::Lower, p.kind, b.cpu_s_per_gb);
                    }
                    if p.split_roles() {
                        let (entry, exit) = (b.entry_cpu_s_per_gb, b.exit_cpu_s_per_gb);
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
            self.push(workload, &metric, Better::Lower, peer, v as f64);
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
                rows.push(&workload, "conns/s", Better::Higher, p.kind, r.conns_per_s);
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
            rows.push(workload, rate, Better::Higher, p.kind, r.conns_per_s);
            rows.percentiles(workload, "", p.kind, &r);
        }
    }
    Ok(())
}

impl Report {
    /// The markdown table: one column per path, then Turbo against the best other
    /// proxy (ratio > 1 means Turbo is better).
    pub fn markdown(&self) -> String {
        let mut out = String::from("| workload | metric |");
        for p in &self.peers {
            out += &format!(" {p} |");
        }
        out += " turbo vs best proxy |\n|---|---|";
        for _ in &self.peers {
            out += "---:|";
        }
        out += "---:|\n";
        for r in &self.rows {
            out += &format!("| {} | {} |", r.workload, r.metric);
            for p in &self.peers {
                match r.values.get(p) {
                    Some(v) if *v >= 100.0 => out += &format!(" {v:.0} |"),
                    Some(v) => out += &format!(" {v:.2} |"),
                    None => out += " — |",
                }
            }
            out += &format!(
                " {} |\n",
                self.vs_best(r).map_or("—".into(), |x| format!("{x:.2}×"))
            );
        }
        for (p, why) in &self.skipped {
            out += &format!("\n{p}: skipped (not installed: {why})");
        }
        out + "\n" + &notes(&self.config.net, self.wire, self.offload)
    }

    /// Turbo's value against the best proxy peer (microsocks, shadowsocks), as a
    /// goodness ratio: above 1 means Turbo is better.
    pub fn vs_best(&self, r: &Row) -> Option<f64> {
        let turbo = *r.values.get(PeerKind::Turbo.name())?;
        let others = [PeerKind::Microsocks, PeerKind::Shadowsocks]
            .iter()
            .filter_map(|k| r.values.get(k.name()).copied());
        let best = match r.better {
            Better::Higher => {
                others.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.max(v))))?
            }
            Better::Lower => {
                others.fold(None, |b: Option<f64>, v| Some(b.map_or(v, |b| b.min(v))))?
            }
        };
        Some(match r.better {
            Better::Higher => turbo / best,
            Better::Lower => best / turbo,
        })
    }
}

/// Runs the suite with a progress bar on stderr, prints the table, and writes
/// `report.json` and `report.md` under `out_dir`.
///
/// # Errors
/// As [`run`], or when the files cannot be written.
pub fn run_and_report(cfg: &Config, out_dir: &std::path::Path) -> Result<Report> {
    let bar = indicatif::ProgressBar::new_spinner();
    bar.enable_steady_tick(Duration::from_millis(200));
    let report = run(cfg, &|step| bar.set_message(step.to_owned()))?;
    bar.finish_and_clear();
    let table = report.markdown();
    println!("{table}");
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(
        out_dir.join("report.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out_dir.join("report.md"), &table)?;
    crate::plot::throughput(&report, &out_dir.join("throughput.svg"))?;
    crate::plot::latency_cdfs(&report, &out_dir.join("latency-cdf.svg"))?;
    eprintln!(
        "wrote {0}/report.{{json,md}}, {0}/throughput.svg, {0}/latency-cdf.svg",
        out_dir.display()
    );
    Ok(report)
}
