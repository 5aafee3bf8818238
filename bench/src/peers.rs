//! The paths every workload runs through, side by side in the same run: a direct TCP
//! connection (the physical limit), microsocks (a plain one-hop SOCKS5 server),
//! shadowsocks-rust `sslocal`→`ssserver` with aes-128-gcm (the best-known encrypted
//! two-hop relay), and Turbo (server + node over QUIC). A peer that is not installed is
//! skipped, with the command that installs it.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::net::{free_port, wait_for, Network};
use crate::socks::{self, Auth};

/// Which path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum PeerKind {
    /// Straight to the target.
    Direct,
    /// microsocks, one hop, no encryption.
    Microsocks,
    /// shadowsocks-rust, two hops, aes-128-gcm.
    Shadowsocks,
    /// Turbo: server, QUIC/TLS, node.
    Turbo,
}

impl PeerKind {
    /// Every path, in table order.
    pub const ALL: [PeerKind; 4] = [
        PeerKind::Direct,
        PeerKind::Microsocks,
        PeerKind::Shadowsocks,
        PeerKind::Turbo,
    ];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Direct => "direct",
            PeerKind::Microsocks => "microsocks",
            PeerKind::Shadowsocks => "shadowsocks-rust",
            PeerKind::Turbo => "turbo",
        }
    }
}

/// Where a relaying process sits on the path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Role {
    /// Accepts the client's connection (the "server" side of a proxy).
    Entry,
    /// Connects to the target (the node, for Turbo).
    Exit,
}

/// A started path.
pub struct Peer {
    /// Which one.
    pub kind: PeerKind,
    proxy: Option<SocketAddr>,
    auth: Option<Auth>,
    /// Processes that relay (measured for CPU and RSS), with a role name each.
    procs: Vec<(&'static str, Child)>,
    turbo: Option<Network>,
}

fn spawn(program: &str, args: &[&str]) -> io::Result<Child> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
}

fn listening(addr: SocketAddr) -> Result<()> {
    wait_for(&format!("a listener on {addr}"), || {
        TcpStream::connect(addr).ok()
    })?;
    Ok(())
}

impl Peer {
    /// Starts `kind`. `Ok(Err(why))` when it is not installed; `why` says how to
    /// install it.
    ///
    /// # Errors
    /// When an installed peer fails to start.
    pub fn start(
        kind: PeerKind,
        bin_dir: &Path,
        cores: usize,
    ) -> Result<std::result::Result<Peer, String>> {
        let mut peer = Peer {
            kind,
            proxy: None,
            auth: None,
            procs: Vec::new(),
            turbo: None,
        };
        match kind {
            PeerKind::Direct => {}
            PeerKind::Microsocks => {
                let port = free_port()?;
                let child = match spawn("microsocks", &["-i", "127.0.0.1", "-p", &port.to_string()])
                {
                    Ok(c) => c,
                    Err(_) => {
                        return Ok(Err(
                            "apt install microsocks (or scripts/install-peers)".into()
                        ))
                    }
                };
                peer.procs.push(("microsocks", child));
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                listening(addr)?;
                peer.proxy = Some(addr);
            }
            PeerKind::Shadowsocks => {
                let (server, local) = (free_port()?, free_port()?);
                let (server, local) = (
                    SocketAddr::from(([127, 0, 0, 1], server)),
                    SocketAddr::from(([127, 0, 0, 1], local)),
                );
                let pass = "turbo-bench-password";
                let common = ["-m", "aes-128-gcm", "-k", pass];
                let ss = match spawn(
                    "ssserver",
                    &[&["-s", &server.to_string()][..], &common].concat(),
                ) {
                    Ok(c) => c,
                    Err(_) => {
                        return Ok(Err(
                            "cargo install shadowsocks-rust (or scripts/install-peers)".into(),
                        ))
                    }
                };
                peer.procs.push(("ssserver", ss));
                let sl = spawn(
                    "sslocal",
                    &[
                        &["-b", &local.to_string(), "-s", &server.to_string()][..],
                        &common,
                    ]
                    .concat(),
                )
                .context("spawn sslocal (cargo install shadowsocks-rust)")?;
                peer.procs.push(("sslocal", sl));
                listening(server)?;
                listening(local)?;
                peer.proxy = Some(local);
            }
            PeerKind::Turbo => {
                let net = Network::start_with(bin_dir, cores, false, &["--max-streams", "20000"])?;
                peer.proxy = Some(net.socks.parse()?);
                peer.auth = Some(Auth {
                    user: "bench".into(),
                    pass: net.key.clone(),
                });
                peer.turbo = Some(net);
            }
        }
        Ok(Ok(peer))
    }

    /// Opens a connection to `target` along this path.
    ///
    /// # Errors
    /// I/O errors and proxy refusals.
    pub fn connect(&self, target: SocketAddr) -> io::Result<TcpStream> {
        match self.proxy {
            None => {
                let s = TcpStream::connect(target)?;
                s.set_nodelay(true)?;
                Ok(s)
            }
            Some(proxy) => socks::connect(proxy, self.auth.as_ref(), target),
        }
    }

    /// The relaying processes' pids with their roles (none for direct): `entry` is
    /// the process the client talks to (microsocks, sslocal, turbo-server), `exit` the
    /// one that dials the target (ssserver, turbo-node; microsocks is both).
    pub fn pids(&self) -> Vec<(Role, u32)> {
        let mut v: Vec<_> = self
            .procs
            .iter()
            .map(|(name, c)| {
                let role = if *name == "ssserver" {
                    Role::Exit
                } else {
                    Role::Entry
                };
                (role, c.id())
            })
            .collect();
        if let Some(net) = &self.turbo {
            v.push((Role::Entry, net.server.id()));
            v.push((Role::Exit, net.node.id()));
        }
        v
    }

    /// The Turbo network behind this path, if it is Turbo.
    pub fn turbo(&self) -> Option<&Network> {
        self.turbo.as_ref()
    }

    /// CPU seconds used so far by the relaying processes.
    pub fn cpu_seconds(&self) -> f64 {
        self.pids()
            .iter()
            .map(|(_, p)| crate::net::cpu_seconds(*p))
            .sum()
    }

    /// CPU seconds used so far by the relaying processes of one role.
    pub fn cpu_seconds_of(&self, role: Role) -> f64 {
        self.pids()
            .iter()
            .filter(|(r, _)| *r == role)
            .map(|(_, p)| crate::net::cpu_seconds(*p))
            .sum()
    }

    /// Whether separate processes take the entry and exit roles (shadowsocks-rust's
    /// sslocal and ssserver, Turbo's server and node).
    pub fn split_roles(&self) -> bool {
        let pids = self.pids();
        pids.iter().any(|(r, _)| *r == Role::Entry) && pids.iter().any(|(r, _)| *r == Role::Exit)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Resident set size of `pid`, bytes (0 where /proc is unavailable).
pub fn rss_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map_or(0, |kib| kib * 1024)
}
