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
    _dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    loop {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        if UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
}

fn wait_for<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + Duration::from_secs(30);
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
        let server = Command::new(bin("turbo-server")?)
            .args(["run", "--socks-listen", &socks, "--http-listen", &http])
            .args(["--quic-listen", &quic, "--api-listen", &api])
            .args(["--cores", &cores.to_string(), "--admin-token", token])
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
            _dir: dir,
        })
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
