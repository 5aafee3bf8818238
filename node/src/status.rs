//! The runner's view of the node and its one control: connection state, server, bytes
//! today and this month, open streams and the score the server reports, and pausing.
//! Served on a Unix socket in the state directory (mode 0600 inside a 0700 directory,
//! so only the runner can open it): a client writes one command line (`status`,
//! `pause` or `resume`; none within half a second means `status`) and reads one JSON
//! report. `turbo-node status|pause|resume` and the tray are such clients.
//!
//! Pausing drains the node's connections (streams finish, within the shutdown grace)
//! and keeps it offline until resumed; the daemon keeps running.

use std::cell::{Cell, RefCell};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use serde::{Deserialize, Serialize};

use crate::usage::Usage;

/// What `turbo-node status` prints.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StatusReport {
    /// `connecting`, `connected`, `capped`, `paused` or `stopping`.
    pub state: String,
    /// Paused by the runner (it may still be draining).
    #[serde(default)]
    pub paused: bool,
    /// Why the server last refused the node, until it is admitted again.
    #[serde(default)]
    pub refused: Option<String>,
    /// The servers' `host:port`, comma-separated (two on a network of several).
    pub server: String,
    /// The node id the server gave.
    pub node_id: Option<String>,
    /// Bytes relayed today (UTC).
    pub bytes_today: u64,
    /// Bytes relayed this month (UTC).
    pub bytes_month: u64,
    /// The monthly cap, if any.
    pub monthly_cap: Option<u64>,
    /// Relay streams open now.
    pub active_streams: u64,
    /// The node's score as the server last reported it (0 to 1).
    pub score: Option<f64>,
    /// Datagrams sent in GSO batches since the node started.
    #[serde(default)]
    pub udp_gso_segments: u64,
    /// GSO batches the kernel refused (then sent one datagram at a time).
    #[serde(default)]
    pub udp_offload_fallbacks: u64,
    /// Connections (lanes) that are up, one per server core, on every server.
    #[serde(default)]
    pub lanes: u8,
    /// Earnings today and this month (UTC), nano-USD, as the server last reported them
    /// (`None` from a server without a ledger).
    #[serde(default)]
    pub earnings_nano: Option<(u64, u64)>,
    /// Why the server holds the node's earnings (unpaid, kept), if it does.
    #[serde(default)]
    pub held: Option<String>,
}

/// One lane's share of the status.
#[derive(Debug, Clone, Copy, Default)]
pub struct LaneStatus {
    /// Admitted by the server.
    pub connected: bool,
    /// Relay streams open on it.
    pub active: u64,
    /// Its batched UDP sender's counters.
    pub udp: turbo_quic::batch::Counters,
}

/// Clears a lane's status when its connection ends, however it ends.
pub struct LaneGuard<'a> {
    status: &'a Status,
    index: u16,
}

impl<'a> LaneGuard<'a> {
    /// Guards lane `index` of `status` ([`Status::set_lane`]).
    pub fn new(status: &'a Status, index: u16) -> Self {
        LaneGuard { status, index }
    }
}

impl Drop for LaneGuard<'_> {
    fn drop(&mut self) {
        self.status.set_lane(self.index, |l| {
            l.connected = false;
            l.active = 0;
        });
    }
}

/// The least time open streams get to finish when the runner pauses the node.
pub const PAUSE_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// Live status shared by the lanes' connections and the status socket.
#[derive(Debug, Default)]
pub struct Status {
    /// Current state name.
    pub state: Cell<&'static str>,
    /// Server address.
    pub server: RefCell<String>,
    /// Node id.
    pub node_id: RefCell<Option<String>>,
    /// Last score from the server.
    pub score: Cell<Option<f64>>,
    /// Last earnings from the server: (today, this month), nano-USD.
    pub earnings_nano: Cell<Option<(u64, u64)>>,
    /// Why the server holds the node's earnings, as it last said.
    pub held: RefCell<Option<String>>,
    /// Per lane: open streams and UDP counters.
    pub lanes: RefCell<Vec<LaneStatus>>,
    /// Why the server last refused the node (cleared when admitted).
    pub refusal: RefCell<Option<String>>,
    /// Paused by the runner.
    paused: Cell<bool>,
    /// Woken when `paused` changes.
    pause_changed: tokio::sync::Notify,
}

impl Status {
    /// Updates lane `index`'s status with `f` (lane `k` of the node's connection slot
    /// `s` is index `256 s + k`).
    pub fn set_lane(&self, index: u16, f: impl FnOnce(&mut LaneStatus)) {
        let mut lanes = self.lanes.borrow_mut();
        let i = usize::from(index);
        if lanes.len() <= i {
            lanes.resize(i + 1, LaneStatus::default());
        }
        f(&mut lanes[i]);
    }

    /// Whether any lane, to any server, is admitted.
    pub fn any_connected(&self) -> bool {
        self.lanes.borrow().iter().any(|l| l.connected)
    }

    /// Pauses (drain, then stay offline) or resumes the node.
    pub fn set_paused(&self, paused: bool) {
        self.paused.set(paused);
        self.pause_changed.notify_waiters();
    }

    /// How long open streams may finish when the node drains: at least
    /// [`PAUSE_GRACE`] for a pause (the runner wants their traffic to end gently),
    /// `shutdown_grace` otherwise.
    pub fn drain_grace(&self, shutdown_grace: std::time::Duration) -> std::time::Duration {
        if self.paused.get() {
            shutdown_grace.max(PAUSE_GRACE)
        } else {
            shutdown_grace
        }
    }

    /// Whether the runner paused the node.
    pub fn paused(&self) -> bool {
        self.paused.get()
    }

    /// Resolves once the node is paused (at once if it is).
    pub async fn until_paused(&self, paused: bool) {
        loop {
            let changed = self.pause_changed.notified();
            if self.paused.get() == paused {
                return;
            }
            changed.await;
        }
    }

    /// A snapshot for printing.
    pub fn report(&self, usage: &Usage) -> StatusReport {
        let (today, month) = usage.totals();
        let lanes = self.lanes.borrow();
        StatusReport {
            state: self.state.get().to_owned(),
            paused: self.paused.get(),
            refused: self.refusal.borrow().clone(),
            server: self.server.borrow().clone(),
            node_id: self.node_id.borrow().clone(),
            bytes_today: today,
            bytes_month: month,
            monthly_cap: usage.cap(),
            active_streams: lanes.iter().map(|l| l.active).sum(),
            score: self.score.get(),
            earnings_nano: self.earnings_nano.get(),
            held: self.held.borrow().clone(),
            udp_gso_segments: lanes.iter().map(|l| l.udp.gso_segments).sum(),
            udp_offload_fallbacks: lanes.iter().map(|l| l.udp.offload_fallbacks).sum(),
            lanes: lanes.iter().filter(|l| l.connected).count() as u8,
        }
    }
}

/// The status socket's path in `state_dir`.
pub fn socket_path(state_dir: &Path) -> PathBuf {
    state_dir.join("status.sock")
}

/// Serves status reports on the socket until the task is dropped.
#[cfg(unix)]
pub async fn serve(path: PathBuf, status: Rc<Status>, usage: Rc<Usage>) {
    if let Some(dir) = path.parent() {
        if crate::files::private_dir(dir).is_err() {
            return;
        }
    }
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, path = %path.display(), "no status socket");
            return;
        }
    };
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
    }
    while let Ok((s, _)) = listener.accept().await {
        // One client at a time: each costs at most the command timeout.
        answer(s, &status, &usage).await;
    }
}

/// Reads one command from `s`, applies it, and writes the report.
#[cfg(unix)]
async fn answer(mut s: tokio::net::UnixStream, status: &Status, usage: &Usage) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
    let mut line = String::new();
    {
        let mut reader = tokio::io::BufReader::new((&mut s).take(64));
        let read = reader.read_line(&mut line);
        let _ = tokio::time::timeout(std::time::Duration::from_millis(500), read).await;
    }
    match line.trim() {
        "pause" => status.set_paused(true),
        "resume" => status.set_paused(false),
        _ => {}
    }
    let report = status.report(usage);
    if let Ok(mut text) = serde_json::to_vec(&report) {
        text.push(b'\n');
        let _ = s.write_all(&text).await;
    }
}

/// Reads one report from the socket.
///
/// # Errors
/// When the node is not running (no socket) or answers garbage.
pub fn query(path: &Path) -> std::io::Result<StatusReport> {
    command(path, "status")
}

/// Sends `command` (`status`, `pause` or `resume`) and reads the report after it.
///
/// # Errors
/// When the node is not running (no socket) or answers garbage.
#[cfg(unix)]
pub fn command(path: &Path, command: &str) -> std::io::Result<StatusReport> {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(path)?;
    s.write_all(format!("{command}\n").as_bytes())?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    serde_json::from_str(&text).map_err(std::io::Error::other)
}

/// Status is served on a Unix socket; Windows builds do not serve it yet.
#[cfg(not(unix))]
pub async fn serve(_path: PathBuf, _status: Rc<Status>, _usage: Rc<Usage>) {}

/// Status is served on a Unix socket; Windows builds do not serve it yet.
///
/// # Errors
/// Always, on Windows.
#[cfg(not(unix))]
pub fn command(_path: &Path, _command: &str) -> std::io::Result<StatusReport> {
    Err(std::io::Error::other(
        "turbo-node status is not available on Windows yet",
    ))
}
