//! `--net veth`: two network namespaces, `tb-a-PID` (the entry side) and `tb-b-PID`
//! (the exit side), joined by a veth pair with MTU 1500, 10.77.0.1/24 on the entry end
//! and 10.77.0.2/24 on the exit end. See [`crate::topology`] for what runs where.
//!
//! Loopback never segments a GSO super-packet, and neither does a veth left at its
//! defaults: it advertises TSO and UDP segmentation offload, so a 64 KB GSO send crosses
//! it as one frame (checked: 100 sends of 40 × 1400 B counted 100 frames of 56 KB on the
//! link). So both ends get TSO and `tx-udp-segmentation` off, which makes the kernel cut
//! every GSO send into MTU-sized frames before the link (in software, where a NIC with
//! USO would do it in hardware), and GRO on, so the receiver re-merges them as a NIC's
//! NAPI does. The same probe then counts 4,000 frames of 1,428 B. Both namespaces get
//! `net.ipv4.tcp_tw_reuse=1`, the TIME_WAIT reuse the kernel grants loopback by default.
//!
//! [`Veth::create`] builds the pair and moves the calling thread into the entry side;
//! dropping the [`Veth`] moves it back and removes both namespaces, killing whatever
//! still runs inside. SIGINT, SIGTERM and SIGHUP are blocked and waited for on a
//! dedicated thread, which does the same removal before the process exits. Namespaces
//! left by a run that was killed outright (SIGKILL) are removed by the next run.

use std::fmt;
use std::fs::File;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::{bail, Context, Result};

use crate::setns;
use crate::topology::{NetKind, Topology};

/// The link's MTU.
pub const MTU: u32 = 1500;
/// How the link's offloads are set, for the printed note.
pub const OFFLOADS: &str = "TSO and UDP segmentation offload off (GSO sends are cut \
    into MTU-sized frames before the link), GRO on";

/// The link's network, which Turbo's node must be allowed to dial.
pub const SUBNET: &str = "10.77.0.0/24";
const ENTRY_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 1);
const EXIT_IP: Ipv4Addr = Ipv4Addr::new(10, 77, 0, 2);
const ENTRY_DEV: &str = "veth-a";
const EXIT_DEV: &str = "veth-b";
const PREFIXES: [&str; 2] = ["tb-a-", "tb-b-"];

/// The namespaces and the veth pair between them; removed on drop.
pub struct Veth {
    /// Entry then exit namespace names.
    names: Arc<[String; 2]>,
    /// The creating thread's namespace, to return to.
    home: File,
    /// Whether the namespaces are gone (the signal thread and drop both remove them).
    removed: Arc<Mutex<bool>>,
}

fn ns_path(name: &str) -> PathBuf {
    PathBuf::from("/var/run/netns").join(name)
}

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {program} (apt install iproute2 ethtool procps)"))?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Kills every process inside namespace `ns` except this one, then removes it.
fn remove_one(ns: &str) {
    if let Ok(pids) = run("ip", &["netns", "pids", ns]) {
        let me = std::process::id();
        for pid in pids
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            if pid != me {
                setns::kill(pid);
            }
        }
    }
    let _ = run("ip", &["netns", "del", ns]);
}

fn remove(names: &[String; 2], removed: &Mutex<bool>) {
    let mut removed = removed.lock().unwrap_or_else(PoisonError::into_inner);
    if !*removed {
        for ns in names.iter() {
            remove_one(ns);
        }
        *removed = true;
    }
}

/// Whether `pid` runs (a zombie does not: a killed run lingers as one until reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| Some(s.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

/// Removes namespaces left by earlier runs whose process is gone.
fn reap_stale() {
    let Ok(list) = run("ip", &["netns", "list"]) else {
        return;
    };
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let pid = PREFIXES.iter().find_map(|p| name.strip_prefix(p));
        if let Some(pid) = pid.and_then(|p| p.parse::<u32>().ok()) {
            if !alive(pid) {
                remove_one(name);
            }
        }
    }
}

impl Veth {
    /// Builds both namespaces and the pair, and moves the calling thread into the entry
    /// side. Call it from the main thread before any other thread is spawned (the
    /// termination signals are blocked for every thread spawned afterwards).
    ///
    /// # Errors
    /// When not root, or `ip`/`ethtool` are missing or refuse.
    pub fn create() -> Result<Veth> {
        reap_stale();
        let pid = std::process::id();
        let veth = Veth {
            names: Arc::new(PREFIXES.map(|p| format!("{p}{pid}"))),
            home: File::open("/proc/thread-self/ns/net").context("open this namespace")?,
            removed: Arc::new(Mutex::new(false)),
        };
        setns::block_termination().context("block termination signals")?;
        veth.watch_signals();
        veth.setup()
            .context("set up the veth namespaces (needs root)")?;
        setns::enter(&ns_path(&veth.names[0])).context("enter the entry namespace")?;
        Ok(veth)
    }

    fn setup(&self) -> Result<()> {
        let [a, b] = &*self.names;
        run("ip", &["netns", "add", a])?;
        run("ip", &["netns", "add", b])?;
        let mtu = MTU.to_string();
        run(
            "ip",
            &[
                "-n", a, "link", "add", ENTRY_DEV, "mtu", &mtu, "type", "veth", "peer", "name",
                EXIT_DEV, "mtu", &mtu, "netns", b,
            ],
        )?;
        for (ns, dev, ip) in [(a, ENTRY_DEV, ENTRY_IP), (b, EXIT_DEV, EXIT_IP)] {
            run(
                "ip",
                &["-n", ns, "addr", "add", &format!("{ip}/24"), "dev", dev],
            )?;
            run("ip", &["-n", ns, "link", "set", dev, "up"])?;
            run("ip", &["-n", ns, "link", "set", "lo", "up"])?;
            let offloads = ["tso", "off", "tx-udp-segmentation", "off", "gro", "on"];
            let ethtool = [&["netns", "exec", ns, "ethtool", "-K", dev][..], &offloads].concat();
            run("ip", &ethtool)?;
            // What the default (2) grants loopback only: without it the connection-rate
            // workloads run out of ephemeral ports to TIME_WAIT within seconds.
            let reuse = "net.ipv4.tcp_tw_reuse=1";
            run("ip", &["netns", "exec", ns, "sysctl", "-qw", reuse])?;
        }
        Ok(())
    }

    /// Starts the thread that removes the namespaces on SIGINT, SIGTERM or SIGHUP and
    /// exits with 128 + the signal.
    fn watch_signals(&self) {
        let (names, removed) = (self.names.clone(), self.removed.clone());
        std::thread::spawn(move || {
            let Ok(sig) = setns::wait_termination() else {
                return;
            };
            eprintln!(
                "turbo-bench: signal {sig}, removing {} and {}",
                names[0], names[1]
            );
            remove(&names, &removed);
            std::process::exit(128 + sig);
        });
    }

    /// Where each side sits.
    pub fn topology(&self) -> Topology {
        Topology {
            kind: NetKind::Veth,
            entry_ip: IpAddr::V4(ENTRY_IP),
            exit_ip: IpAddr::V4(EXIT_IP),
            entry_ns: Some(self.names[0].clone()),
            exit_ns: Some(self.names[1].clone()),
        }
    }
}

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = setns::enter_file(&self.home);
        remove(&self.names, &self.removed);
    }
}

/// Frames and bytes that crossed the link, each way, since it was created.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Wire {
    /// Frames from the entry side to the exit side.
    pub to_exit_frames: u64,
    /// Their bytes.
    pub to_exit_bytes: u64,
    /// Frames from the exit side to the entry side.
    pub to_entry_frames: u64,
    /// Their bytes.
    pub to_entry_bytes: u64,
}

/// The link's counters, read on the entry end; `None` on loopback.
pub fn wire(topo: &Topology) -> Option<Wire> {
    let ns = topo.entry_ns.as_deref()?;
    let json = run(
        "ip",
        &["-j", "-s", "-n", ns, "link", "show", "dev", ENTRY_DEV],
    )
    .ok()?;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    let stats = &v.get(0)?["stats64"];
    let n = |dir: &str, what: &str| stats[dir][what].as_u64().unwrap_or(0);
    Some(Wire {
        to_exit_frames: n("tx", "packets"),
        to_exit_bytes: n("tx", "bytes"),
        to_entry_frames: n("rx", "packets"),
        to_entry_bytes: n("rx", "bytes"),
    })
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let avg = |bytes: u64, frames: u64| bytes / frames.max(1);
        write!(
            f,
            "on the link: entry→exit {} frames, {} B average; exit→entry {} frames, {} B average",
            self.to_exit_frames,
            avg(self.to_exit_bytes, self.to_exit_frames),
            self.to_entry_frames,
            avg(self.to_entry_bytes, self.to_entry_frames)
        )
    }
}
