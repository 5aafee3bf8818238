//! Where each process of a bench run sits: the *entry* side (the load generator and its
//! clients, Turbo's server, `sslocal`, microsocks, Redis, curl) and the *exit* side
//! (Turbo's node, `ssserver`, the target servers). On loopback (`--net loopback`, the
//! default) both are this process's namespace and 127.0.0.1. With `--net veth` they are
//! the two namespaces of a [`crate::veth::Veth`] pair, so every path crosses a link with
//! MTU 1500 exactly once: server→node QUIC, sslocal→ssserver TCP, microsocks→target and
//! direct client→target TCP.
//!
//! The entry side is the calling thread's namespace: [`crate::veth::Veth::create`] moves
//! the main thread into it, and processes and threads spawned from there inherit it.
//! Exit-side processes start through `ip netns exec`, and exit-side sockets are bound on
//! a short-lived thread moved into the exit namespace ([`Topology::in_exit`]).

use std::ffi::OsStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::path::PathBuf;
use std::process::Command;

/// Which network a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, clap::ValueEnum)]
pub enum NetKind {
    /// Everything on 127.0.0.1 in one namespace.
    Loopback,
    /// Two network namespaces joined by a veth pair, MTU 1500.
    Veth,
}

/// The placement of a run's two sides; cheap to clone (the namespaces themselves are
/// owned by [`crate::veth::Veth`]).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Topology {
    /// Loopback or veth.
    pub kind: NetKind,
    /// Where entry-side listeners that the exit side dials bind (Turbo's QUIC port).
    pub entry_ip: IpAddr,
    /// Where exit-side listeners bind (`ssserver`, the targets).
    pub exit_ip: IpAddr,
    /// The exit side's namespace name, for veth.
    pub exit_ns: Option<String>,
    /// The entry side's namespace name, for veth.
    pub entry_ns: Option<String>,
}

impl Default for Topology {
    fn default() -> Self {
        Topology::loopback()
    }
}

impl Topology {
    /// Both sides on 127.0.0.1 in this namespace.
    pub fn loopback() -> Self {
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Topology {
            kind: NetKind::Loopback,
            entry_ip: lo,
            exit_ip: lo,
            exit_ns: None,
            entry_ns: None,
        }
    }

    /// The CIDR Turbo's node must be allowed to dial (it refuses private ranges by
    /// default): the targets' network.
    pub fn allow_cidr(&self) -> String {
        match self.kind {
            NetKind::Loopback => "127.0.0.0/8".into(),
            NetKind::Veth => crate::veth::SUBNET.into(),
        }
    }

    /// A command that runs `program` on the exit side.
    pub fn exit_command(&self, program: impl AsRef<OsStr>) -> Command {
        match &self.exit_ns {
            None => Command::new(program),
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
        }
    }

    /// The exit namespace's bind file, for veth.
    fn exit_ns_path(&self) -> Option<PathBuf> {
        let ns = self.exit_ns.as_ref()?;
        Some(PathBuf::from("/var/run/netns").join(ns))
    }

    /// Moves the calling thread to the exit side (nothing to do on loopback).
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn enter_exit(&self) -> io::Result<()> {
        match self.exit_ns_path() {
            None => Ok(()),
            Some(path) => crate::setns::enter(&path),
        }
    }

    /// Runs `f` on the exit side: on a thread moved into the exit namespace for veth,
    /// in place on loopback. Sockets `f` creates stay on the exit side.
    ///
    /// # Errors
    /// When the namespace cannot be entered.
    pub fn in_exit<T: Send>(&self, f: impl FnOnce() -> T + Send) -> io::Result<T> {
        if self.exit_ns.is_none() {
            return Ok(f());
        }
        std::thread::scope(|s| {
            s.spawn(|| {
                self.enter_exit()?;
                Ok(f())
            })
            .join()
            .map_err(|_| io::Error::other("exit-side thread panicked"))?
        })
    }

    /// A TCP listener on the exit side, on a port the kernel picks.
    ///
    /// # Errors
    /// When it cannot be bound.
    pub fn exit_listener(&self) -> io::Result<TcpListener> {
        let ip = self.exit_ip;
        self.in_exit(|| TcpListener::bind((ip, 0)))?
    }

    /// A port free for TCP and UDP on the exit side's address.
    ///
    /// # Errors
    /// When no socket can be bound.
    pub fn free_exit_port(&self) -> anyhow::Result<u16> {
        let ip = self.exit_ip;
        self.in_exit(|| crate::net::free_port_at(ip))?
    }

    /// The line printed under every result: which net was used.
    pub fn describe(&self) -> String {
        match (&self.entry_ns, &self.exit_ns) {
            (Some(a), Some(b)) => format!(
                "net: veth, {a} ({}) ⇄ {b} ({}), MTU {}, {}",
                self.entry_ip,
                self.exit_ip,
                crate::veth::MTU,
                crate::veth::OFFLOADS
            ),
            _ => "net: loopback, 127.0.0.1 (GSO super-packets cross unsegmented)".into(),
        }
    }
}
