//! The paths every workload runs through, side by side in the same run: a direct TCP
//! connection (the physical limit), microsocks (a plain one-hop SOCKS5 server),
//! shadowsocks-rust `sslocal`→`ssserver` with aes-128-gcm (the best-known encrypted
//! two-hop relay), and Turbo (server + node over QUIC). A peer that is not installed is
//! skipped, with the command that installs it. Entry processes (microsocks, `sslocal`,
//! Turbo's server) start on the entry side, exit processes (`ssserver`, Turbo's node) on
//! the exit side of the run's [`Topology`].

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::measure::{self, Cpu};
use crate::net::{free_port, wait_for, Network};
use crate::socks::{self, Auth};
use crate::topology::Topology;

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

fn spawn(mut cmd: Command, args: &[&str]) -> io::Result<Child> {
    cmd.args(args)
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

/// Whether `program` is on the PATH (an exit-side `ip netns exec` would start even
/// without it).
fn installed(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

const INSTALL_MICROSOCKS: &str = "apt install microsocks (or scripts/install-peers)";
const INSTALL_SHADOWSOCKS: &str = "cargo install shadowsocks-rust (or scripts/install-peers)";

impl Peer {
    /// Starts `kind`, placed by `net`. `Ok(Err(why))` when it is not installed; `why`
    /// says how to install it.
    ///
    /// # Errors
    /// When an installed peer fails to start.
    pub fn start(
        kind: PeerKind,
        bin_dir: &Path,
        cores: usize,
        net: &Topology,
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
            PeerKind::Microsocks if !installed("microsocks") => {
                return Ok(Err(INSTALL_MICROSOCKS.into()))
            }
            PeerKind::Microsocks => peer.start_microsocks()?,
            PeerKind::Shadowsocks if !(installed("ssserver") && installed("sslocal")) => {
                return Ok(Err(INSTALL_SHADOWSOCKS.into()))
            }
            PeerKind::Shadowsocks => peer.start_shadowsocks(net)?,
            PeerKind::Turbo => {
                let args = ["--max-streams", "20000"];
                let net = Network::start_with(bin_dir, cores, false, &args, net)?;
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

    /// microsocks on the entry side, one hop to the target.
    fn start_microsocks(&mut self) -> Result<()> {
        let port = free_port()?;
        let args = ["-i", "127.0.0.1", "-p", &port.to_string()];
        let child = spawn(Command::new("microsocks"), &args).context(INSTALL_MICROSOCKS)?;
        self.procs.push(("microsocks", child));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        listening(addr)?;
        self.proxy = Some(addr);
        Ok(())
    }

    /// `ssserver` on the exit side, `sslocal` on the entry side.
    fn start_shadowsocks(&mut self, net: &Topology) -> Result<()> {
        let server = SocketAddr::new(net.exit_ip, net.free_exit_port()?);
        let local = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let common = ["-m", "aes-128-gcm", "-k", "turbo-bench-password"];
        let server_s = server.to_string();
        let args = [&["-s", &server_s][..], &common].concat();
        let ss = spawn(net.exit_command("ssserver"), &args).context(INSTALL_SHADOWSOCKS)?;
        self.procs.push(("ssserver", ss));
        let local_s = local.to_string();
        let args = [&["-b", &local_s, "-s", &server_s][..], &common].concat();
        let sl = spawn(Command::new("sslocal"), &args).context(INSTALL_SHADOWSOCKS)?;
        self.procs.push(("sslocal", sl));
        listening(server)?;
        listening(local)?;
        self.proxy = Some(local);
        Ok(())
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

    /// CPU used so far by the relaying processes of one role.
    pub fn cpu_of(&self, role: Role) -> Cpu {
        self.pids()
            .iter()
            .filter(|(r, _)| *r == role)
            .fold(Cpu::ZERO, |sum, (_, p)| sum.plus(measure::cpu(*p)))
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
