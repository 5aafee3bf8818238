//! One workload on its own, through Turbo and shadowsocks-rust, for profiling and
//! quick comparisons (`turbo-bench bulk`, `turbo-bench idle`); the suite is the
//! reference. Figures obey the suite's rules (see [`crate::figure`]).

use std::path::Path;

use anyhow::Result;

use crate::figure::{Figure, Sample};
use crate::peers::{Peer, PeerKind};
use crate::report::notes;
use crate::target;
use crate::topology::Topology;
use crate::veth;
use crate::workload::{self, Direction};

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
/// interleaved; returns one line per path with MiB/s and relay CPU s/GB, each as the
/// median with min–max.
///
/// # Errors
/// When a path fails to start or loses bytes.
pub fn bulk_only(bin_dir: &Path, job: &BulkJob) -> Result<String> {
    let (source, sink) = (target::source(&job.net)?, target::sink(&job.net)?);
    let mut peers = Vec::new();
    for kind in [PeerKind::Shadowsocks, PeerKind::Turbo] {
        if let Ok(p) = Peer::start(kind, bin_dir, job.cores, &job.net)? {
            peers.push(p);
        }
    }
    let mut results: Vec<[Vec<Sample>; 4]> = vec![Default::default(); peers.len()];
    for _ in 0..job.runs {
        for (p, [speed, cpu, entry, exit]) in peers.iter().zip(results.iter_mut()) {
            let b = workload::bulk(p, source, sink, job.dir, job.conns, job.bytes)?;
            speed.push(Sample::Value(b.mib_s));
            cpu.push(b.cpu_per_gb());
            entry.push(b.entry_cpu_per_gb());
            exit.push(b.exit_cpu_per_gb());
        }
    }
    let mut out = format!(
        "{:?}, {} conns, {} MiB\n",
        job.dir,
        job.conns,
        job.bytes >> 20
    );
    for (p, [speed, cpu, entry, exit]) in peers.iter().zip(results) {
        let [speed, cpu, entry, exit] = [speed, cpu, entry, exit].map(|s| Figure::of(&s).cell());
        out += &format!(
            "{:<18} {speed} MiB/s; CPU s/GB {cpu} (entry {entry}, exit {exit})\n",
            p.kind.name(),
        );
    }
    let offload = peers
        .iter()
        .find_map(Peer::turbo)
        .and_then(|t| t.offload().ok());
    Ok(out + &notes(&job.net, veth::wire(&job.net), offload))
}

/// Holds `tunnels` idle tunnels through Turbo and shadowsocks-rust (when installed);
/// returns one line per process with its RSS growth per tunnel (or why there is none).
///
/// # Errors
/// When a path fails to start or a tunnel cannot be opened.
pub fn idle_only(bin_dir: &Path, net: &Topology, tunnels: usize) -> Result<String> {
    let fds = crate::suite::raise_fd_limit();
    let tunnels = tunnels.min((fds.saturating_sub(512) / 2) as usize);
    let mut out = format!("{tunnels} idle tunnels, RSS growth per tunnel\n");
    for kind in [PeerKind::Shadowsocks, PeerKind::Turbo] {
        let Ok(peer) = Peer::start(kind, bin_dir, 2, net)? else {
            continue;
        };
        let idle = workload::idle_tunnels(&peer, net, tunnels)?;
        for (role, s) in idle.rss_per_tunnel {
            let v = match s {
                Sample::Value(b) => format!("{b:.0} B"),
                Sample::Unmeasured(why) => why,
            };
            out += &format!("{:<18} {role:?}: {v}\n", kind.name());
        }
    }
    Ok(out + &net.describe())
}
