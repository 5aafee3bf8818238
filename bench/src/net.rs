//! A Turbo network of real processes: one server (entry side), one node (exit side),
//! one key. On loopback both sides are 127.0.0.1; see [`crate::topology`] for veth.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::topology::Topology;

/// A running server + node.
pub struct Network {
    /// The server process.
    pub server: Child,
    /// The node process.
    pub node: Child,
    /// SOCKS5 address.
    pub socks: String,
    /// HTTP proxy address.
    pub http: String,
    /// A customer key with plenty of credits.
    pub key: String,
    /// The API base URL.
    pub api: String,
    /// The admin token.
    pub admin_token: String,
    redis: Option<Child>,
    topology: Topology,
    _dir: tempfile::TempDir,
}

/// Starts a private `redis-server` on a free port; returns it and its URL.
fn start_redis(dir: &Path) -> Result<(Child, String)> {
    let port = free_port()?;
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .spawn()
        .context("spawn redis-server (apt install redis-server)")?;
    wait_for("redis", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).ok()
    })?;
    Ok((child, format!("redis://127.0.0.1:{port}/0")))
}

/// A port free for both TCP and UDP on 127.0.0.1.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port() -> Result<u16> {
    free_port_at(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

/// A port free for both TCP and UDP on `ip`, in the calling thread's namespace.
///
/// # Errors
/// When no socket can be bound.
pub fn free_port_at(ip: IpAddr) -> Result<u16> {
    loop {
        let port = TcpListener::bind((ip, 0))?.local_addr()?.port();
        if UdpSocket::bind((ip, port)).is_ok() {
            return Ok(port);
        }
    }
}

/// Polls `f` until it returns `Some`, for at most 30 s.
///
/// # Errors
/// When it never does.
pub fn wait_for<T>(what: &str, f: impl FnMut() -> Option<T>) -> Result<T> {
    wait_for_long(what, Duration::from_secs(30), f)
}

/// Polls `f` until it returns `Some`, for at most `limit`.
///
/// # Errors
/// When it never does.
pub fn wait_for_long<T>(
    what: &str,
    limit: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(v) = f() {
            return Ok(v);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    bail!("timed out waiting for {what}")
}

/// The admin token of every bench server.
const ADMIN_TOKEN: &str = "bench-admin-token";

/// The server's listeners: customer-facing ones on 127.0.0.1 (the clients are on the
/// entry side with it), the QUIC one on the entry address, which invites point nodes at.
struct Listen {
    socks: String,
    http: String,
    quic: String,
    api: String,
}

impl Listen {
    fn pick(net: &Topology) -> Result<Listen> {
        let local = |port: u16| format!("127.0.0.1:{port}");
        Ok(Listen {
            socks: local(free_port()?),
            http: local(free_port()?),
            quic: SocketAddr::new(net.entry_ip, free_port_at(net.entry_ip)?).to_string(),
            api: local(free_port()?),
        })
    }
}

fn binary(bin_dir: &Path, name: &str) -> Result<PathBuf> {
    let p = bin_dir.join(name);
    if !p.exists() {
        bail!(
            "{} missing: run `cargo build --release --bins`",
            p.display()
        );
    }
    Ok(p)
}

/// Starts `turbo-server` on the entry side and waits for its API.
fn start_server(
    bin_dir: &Path,
    dir: &Path,
    at: &Listen,
    cores: usize,
    store: &str,
    extra_toml: &str,
) -> Result<Child> {
    // The load generator is one key: lift the per-key limits.
    let config = dir.join("server.toml");
    std::fs::write(
        &config,
        format!("max_connections_per_key = 0\nnew_connections_per_key_per_sec = 0\nkey_node_share = 0\nkey_idle_tunnels = 0\n{extra_toml}"),
    )?;
    let server = Command::new(binary(bin_dir, "turbo-server")?)
        .args([
            "run",
            "--socks-listen",
            &at.socks,
            "--http-listen",
            &at.http,
        ])
        .arg("--config")
        .arg(&config)
        .args(["--quic-listen", &at.quic, "--api-listen", &at.api])
        .args(["--cores", &cores.to_string(), "--admin-token", ADMIN_TOKEN])
        .args(["--store", store])
        .arg("--data-dir")
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("spawn turbo-server")?;
    let api = format!("http://{}", at.api);
    let up = wait_for("server", || {
        ureq::get(&format!("{api}/healthz")).call().ok().map(drop)
    });
    kill_unless(server, up)
}

/// `child` when `up` is Ok; otherwise kills it and returns the error.
fn kill_unless(mut child: Child, up: Result<()>) -> Result<Child> {
    if up.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    up.map(|()| child)
}

/// POSTs `body` to the admin API at `api`.
fn post(api: &str, path: &str, body: serde_json::Value) -> Result<serde_json::Value> {
    Ok(ureq::post(&format!("{api}{path}"))
        .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
        .send_json(body)?
        .into_json()?)
}

/// Starts `turbo-node` on the exit side with a fresh invitation, and waits until the
/// server lists a connected node.
fn start_node(
    bin_dir: &Path,
    dir: &Path,
    api: &str,
    net: &Topology,
    args: &[&str],
) -> Result<Child> {
    let join = post(api, "/api/nodes/invite", serde_json::json!({}))?["join"]
        .as_str()
        .context("join")?
        .to_owned();
    let node = net
        .exit_command(binary(bin_dir, "turbo-node")?)
        .args(["run", "--join", &join, "--allow-cidr", &net.allow_cidr()])
        .args(args)
        .env("TURBO_NODE_STATE", dir.join("node"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .context("spawn turbo-node")?;
    let up = wait_for("node", || {
        let nodes: serde_json::Value = ureq::get(&format!("{api}/api/nodes"))
            .set("Authorization", &format!("Bearer {ADMIN_TOKEN}"))
            .call()
            .ok()?
            .into_json()
            .ok()?;
        nodes
            .as_array()?
            .iter()
            .any(|n| n["connected"] == true)
            .then_some(())
    });
    kill_unless(node, up)
}

impl Network {
    /// Starts `turbo-server` and `turbo-node` from `bin_dir`, placed by `net`.
    ///
    /// # Errors
    /// When a binary is missing or a process does not become ready.
    pub fn start(bin_dir: &Path, cores: usize, net: &Topology) -> Result<Network> {
        Network::start_on(bin_dir, cores, false, net)
    }

    /// Like [`Network::start`], on a private Redis when `redis` is set.
    ///
    /// # Errors
    /// As [`Network::start`], or when redis-server cannot start.
    pub fn start_on(bin_dir: &Path, cores: usize, redis: bool, net: &Topology) -> Result<Network> {
        Network::start_with(bin_dir, cores, redis, &[], net)
    }

    /// Like [`Network::start_on`], with extra `turbo-node run` arguments.
    ///
    /// # Errors
    /// As [`Network::start_on`].
    pub fn start_with(
        bin_dir: &Path,
        cores: usize,
        redis: bool,
        node_args: &[&str],
        net: &Topology,
    ) -> Result<Network> {
        Network::start_configured(bin_dir, cores, redis, node_args, net, "")
    }

    /// Like [`Network::start_with`], with `extra_toml` appended to the server's config.
    ///
    /// # Errors
    /// As [`Network::start_on`].
    pub fn start_configured(
        bin_dir: &Path,
        cores: usize,
        redis: bool,
        node_args: &[&str],
        net: &Topology,
        extra_toml: &str,
    ) -> Result<Network> {
        let dir = tempfile::tempdir()?;
        let at = Listen::pick(net)?;
        let (redis, store) = if redis {
            let (child, url) = start_redis(dir.path())?;
            (Some(child), url)
        } else {
            (None, "memory".to_owned())
        };
        let mut server = start_server(bin_dir, dir.path(), &at, cores, &store, extra_toml)?;
        let api = format!("http://{}", at.api);
        let ready = post(
            &api,
            "/api/keys",
            serde_json::json!({"name": "bench", "credits": "1000TB"}),
        )
        .and_then(|v| Ok(v["key"].as_str().context("key")?.to_owned()))
        .and_then(|key| Ok((key, start_node(bin_dir, dir.path(), &api, net, node_args)?)));
        let (key, node) = match ready {
            Ok(v) => v,
            Err(e) => {
                let _ = server.kill();
                let _ = server.wait();
                return Err(e);
            }
        };
        Ok(Network {
            server,
            node,
            socks: at.socks,
            http: at.http,
            key,
            api,
            admin_token: ADMIN_TOKEN.to_owned(),
            redis,
            topology: net.clone(),
            _dir: dir,
        })
    }

    /// Creates a key through the API; returns its secret.
    ///
    /// # Errors
    /// When the API refuses.
    pub fn create_key(&self, credits: &str) -> Result<String> {
        let v: serde_json::Value = ureq::post(&format!("{}/api/keys", self.api))
            .set("Authorization", &format!("Bearer {}", self.admin_token))
            .send_json(serde_json::json!({"name": "bench", "credits": credits}))?
            .into_json()?;
        Ok(v["key"].as_str().context("key")?.to_owned())
    }

    /// How many nodes the API reports connected.
    ///
    /// # Errors
    /// When the API does not answer.
    pub fn connected_nodes(&self) -> Result<usize> {
        let nodes: serde_json::Value = ureq::get(&format!("{}/api/nodes", self.api))
            .set("Authorization", &format!("Bearer {}", self.admin_token))
            .call()?
            .into_json()?;
        Ok(nodes
            .as_array()
            .context("node list")?
            .iter()
            .filter(|n| n["connected"] == true)
            .count())
    }

    /// CPU seconds (user + system) used so far by the server and the node.
    pub fn cpu_seconds(&self) -> f64 {
        cpu_seconds(self.server.id()) + cpu_seconds(self.node.id())
    }

    /// Where the server and node sit.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// The UDP offload counters so far: the server's from `/metrics`, the node's from
    /// its status socket.
    ///
    /// # Errors
    /// When either does not answer.
    pub fn offload(&self) -> Result<Offload> {
        let text = ureq::get(&format!("{}/metrics", self.api))
            .set("Authorization", &format!("Bearer {}", self.admin_token))
            .call()?
            .into_string()?;
        let metric = |name: &str| -> u64 {
            text.lines()
                .filter_map(|l| l.split_once(' '))
                .find(|(n, _)| n.strip_suffix("_total").unwrap_or(n) == name)
                .and_then(|(_, v)| v.trim().parse::<f64>().ok())
                .map_or(0, |v| v as u64)
        };
        let socket = turbo_node::status::socket_path(&self._dir.path().join("node"));
        let node = turbo_node::status::query(&socket).context("node status")?;
        Ok(Offload {
            server_gso_segments: metric("turbo_udp_gso_segments"),
            server_gro_segments: metric("turbo_udp_gro_segments"),
            server_fallbacks: metric("turbo_udp_offload_fallbacks"),
            node_gso_segments: node.udp_gso_segments,
            node_fallbacks: node.udp_offload_fallbacks,
        })
    }
}

/// Turbo's batched-UDP counters, cumulative since the processes started.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct Offload {
    /// Datagrams the server sent in GSO batches of more than one.
    pub server_gso_segments: u64,
    /// Datagrams the server received in GRO batches of more than one.
    pub server_gro_segments: u64,
    /// GSO batches the kernel refused the server.
    pub server_fallbacks: u64,
    /// Datagrams the node sent in GSO batches of more than one.
    pub node_gso_segments: u64,
    /// GSO batches the kernel refused the node.
    pub node_fallbacks: u64,
}

impl std::fmt::Display for Offload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "turbo UDP offload: server {} datagrams sent in GSO batches, {} received in \
             GRO batches, {} fallbacks; node {} sent in GSO batches, {} fallbacks",
            self.server_gso_segments,
            self.server_gro_segments,
            self.server_fallbacks,
            self.node_gso_segments,
            self.node_fallbacks
        )
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        let _ = self.node.kill();
        let _ = self.server.kill();
        let _ = self.node.wait();
        let _ = self.server.wait();
        if let Some(r) = self.redis.as_mut() {
            let _ = r.kill();
            let _ = r.wait();
        }
    }
}

/// CPU seconds `pid` has used so far (see [`crate::measure::cpu`]).
pub fn cpu_seconds(pid: u32) -> f64 {
    crate::measure::cpu(pid).ns as f64 / 1e9
}
