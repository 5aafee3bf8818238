//! A Turbo network of real processes on loopback: one server, one node, one key.

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

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
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
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

impl Network {
    /// Starts `turbo-server` and `turbo-node` from `bin_dir`.
    ///
    /// # Errors
    /// When a binary is missing or a process does not become ready.
    pub fn start(bin_dir: &Path, cores: usize) -> Result<Network> {
        Network::start_on(bin_dir, cores, false)
    }

    /// Like [`Network::start`], on a private Redis when `redis` is set.
    ///
    /// # Errors
    /// As [`Network::start`], or when redis-server cannot start.
    pub fn start_on(bin_dir: &Path, cores: usize, redis: bool) -> Result<Network> {
        Network::start_with(bin_dir, cores, redis, &[])
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
    ) -> Result<Network> {
        let bin = |name: &str| -> Result<PathBuf> {
            let p = bin_dir.join(name);
            if !p.exists() {
                bail!(
                    "{} missing: run `cargo build --release --bins`",
                    p.display()
                );
            }
            Ok(p)
        };
        let dir = tempfile::tempdir()?;
        let socks = format!("127.0.0.1:{}", free_port()?);
        let http = format!("127.0.0.1:{}", free_port()?);
        let quic = format!("127.0.0.1:{}", free_port()?);
        let api = format!("127.0.0.1:{}", free_port()?);
        let token = "bench-admin-token";
        let (redis, store) = if redis {
            let (child, url) = start_redis(dir.path())?;
            (Some(child), url)
        } else {
            (None, "memory".to_owned())
        };
        // The load generator is one key: lift the per-key limits.
        let config = dir.path().join("server.toml");
        std::fs::write(
            &config,
            "max_connections_per_key = 0\nnew_connections_per_key_per_sec = 0\nkey_node_share = 0\nkey_idle_tunnels = 0\n",
        )?;
        let server = Command::new(bin("turbo-server")?)
            .args(["run", "--socks-listen", &socks, "--http-listen", &http])
            .arg("--config")
            .arg(&config)
            .args(["--quic-listen", &quic, "--api-listen", &api])
            .args(["--cores", &cores.to_string(), "--admin-token", token])
            .args(["--store", &store])
            .arg("--data-dir")
            .arg(dir.path())
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("spawn turbo-server")?;
        let api = format!("http://{api}");
        wait_for("server", || {
            ureq::get(&format!("{api}/healthz")).call().ok()
        })?;
        let post = |path: &str, body: serde_json::Value| -> Result<serde_json::Value> {
            Ok(ureq::post(&format!("{api}{path}"))
                .set("Authorization", &format!("Bearer {token}"))
                .send_json(body)?
                .into_json()?)
        };
        let key = post(
            "/api/keys",
            serde_json::json!({"name": "bench", "credits": "1000TB"}),
        )?["key"]
            .as_str()
            .context("key")?
            .to_owned();
        let join = post("/api/nodes/invite", serde_json::json!({}))?["join"]
            .as_str()
            .context("join")?
            .to_owned();
        let node = Command::new(bin("turbo-node")?)
            .args(["run", "--join", &join, "--allow-cidr", "127.0.0.0/8"])
            .args(node_args)
            .env("TURBO_NODE_STATE", dir.path().join("node"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .context("spawn turbo-node")?;
        wait_for("node", || {
            let nodes: serde_json::Value = ureq::get(&format!("{api}/api/nodes"))
                .set("Authorization", &format!("Bearer {token}"))
                .call()
                .ok()?
                .into_json()
                .ok()?;
            nodes
                .as_array()?
                .iter()
                .any(|n| n["connected"] == true)
                .then_some(())
        })?;
        Ok(Network {
            server,
            node,
            socks,
            http,
            key,
            api,
            admin_token: token.to_owned(),
            redis,
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

/// utime + stime of `pid` from /proc, in seconds (0 where /proc is unavailable).
pub fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14th and 15th.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| f.get(*i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}
