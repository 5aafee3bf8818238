//! The conditions a run was measured under, from `/proc`: CPU model, cores, kernel,
//! the load average before and during the run, and any build or other bench running
//! beside it. A busy machine is warned about loudly (or refused, on request) and the
//! warning goes into the report.

use anyhow::{bail, Result};

/// Where and under what load a report was measured.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Conditions {
    /// `model name` from /proc/cpuinfo.
    pub cpu_model: String,
    /// Online cores.
    pub cores: usize,
    /// Kernel release.
    pub kernel: String,
    /// 1-minute load average when the run started.
    pub load_before: f64,
    /// 1-minute load averages read between workloads (up to the node fan-in).
    pub load_during: Vec<f64>,
    /// Builds or other benches seen running (pid and command).
    pub others: Vec<String>,
    /// Warnings: a high load, other work running.
    pub warnings: Vec<String>,
    /// Set once the bench's own load dominates the load average (the node fan-in
    /// runs a thousand node threads): later samples would only measure the bench.
    #[serde(skip)]
    frozen: bool,
}

/// The 1-minute load average (0 where /proc is unavailable).
pub fn load1() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// Our own pid and our ancestors' (`cargo test` runs this harness: it is not "another
/// build").
fn ancestry() -> Vec<u32> {
    let mut pids = vec![std::process::id()];
    while let Some(ppid) = std::fs::read_to_string(format!("/proc/{}/stat", pids[pids.len() - 1]))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .filter(|p: &u32| *p > 1 && !pids.contains(p))
    {
        pids.push(ppid);
    }
    pids
}

/// Other processes named cargo, rustc or turbo-bench, not ours.
fn others() -> Vec<String> {
    let mine = ancestry();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        let comm = comm.trim();
        if ["cargo", "rustc", "turbo-bench"].contains(&comm) && !mine.contains(&pid) {
            out.push(format!("{pid} {comm}"));
        }
    }
    out
}

impl Conditions {
    /// Reads the machine and its load now. With `refuse_busy`, a busy machine is an
    /// error; otherwise it is warned about on stderr and in the report.
    ///
    /// # Errors
    /// When `refuse_busy` and the load average exceeds half the cores, or a build or
    /// another bench is running.
    pub fn now(refuse_busy: bool) -> Result<Conditions> {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map_or("unknown".into(), |(_, m)| m.trim().to_owned());
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map_or("unknown".into(), |k| k.trim().to_owned());
        let mut c = Conditions {
            cpu_model,
            cores,
            kernel,
            load_before: load1(),
            others: others(),
            ..Conditions::default()
        };
        if c.load_before > c.cores as f64 / 2.0 {
            c.warnings.push(format!(
                "load average {:.2} at the start on {} cores: figures are not from a quiet machine",
                c.load_before, c.cores
            ));
        }
        if !c.others.is_empty() {
            c.warnings.push(format!(
                "other builds or benches running: {}",
                c.others.join(", ")
            ));
        }
        for w in &c.warnings {
            eprintln!("\n!!! WARNING: {w} !!!\n");
        }
        if refuse_busy && !c.warnings.is_empty() {
            bail!(
                "refusing to bench on a busy machine: {}",
                c.warnings.join("; ")
            );
        }
        Ok(c)
    }

    /// Notes the load average now, between workloads, and any build or other bench
    /// that started since the run did.
    pub fn sample(&mut self) {
        if self.frozen {
            return;
        }
        self.load_during.push(load1());
        for other in others() {
            if !self.others.contains(&other) {
                let w = format!("a build or another bench started during the run: {other}");
                eprintln!("\n!!! WARNING: {w} !!!\n");
                self.warnings.push(w);
                self.others.push(other);
            }
        }
    }

    /// Stops sampling the load average: from here on the bench itself is the load.
    pub fn freeze(&mut self) {
        self.sample();
        self.frozen = true;
    }

    /// Warns when the load seen during the run was high; called once at the end.
    pub fn finish(&mut self) {
        let peak = self.load_during.iter().copied().fold(0.0, f64::max);
        // The harness itself keeps up to all cores busy; more than that is someone else.
        if peak > self.cores as f64 * 1.5 {
            let w = format!("load average reached {peak:.2} during the run");
            eprintln!("\n!!! WARNING: {w} !!!\n");
            self.warnings.push(w);
        }
    }

    /// One line for the report: machine, kernel, loads, warnings.
    pub fn describe(&self) -> String {
        let (lo, hi) = self
            .load_during
            .iter()
            .fold((f64::INFINITY, 0.0f64), |(l, h), v| (l.min(*v), h.max(*v)));
        let during = if self.load_during.is_empty() {
            "n/a".into()
        } else {
            format!("{lo:.2}–{hi:.2}")
        };
        let mut out = format!(
            "machine: {} ({} cores), kernel {}; load average {:.2} before, {during} between workloads",
            self.cpu_model, self.cores, self.kernel, self.load_before
        );
        for w in &self.warnings {
            out += &format!("\n**WARNING: {w}**");
        }
        out
    }
}
