//! Abuse detection on the `turbo:conns` feature stream, inside the control plane and
//! never on the data path.
//!
//! Every server reads the stream through one consumer group ([`task`]), so the servers
//! share the work and a restarted server resumes with what it had read but not written.
//! Each summarises its records per key and window ([`window::Partial`]) and writes the
//! summaries once the window is over; one server per window (whoever claims it) merges
//! them, computes the features, applies the hard rules ([`rules`]) and the outlier
//! model ([`hbos`]), and turns what fired into a verdict on the ladder observe →
//! throttle → block target → suspend ([`judge`]). Restrictions reach every server
//! through `turbo:events` ([`policy`]) and are enforced where tunnels open
//! (`turbo_dataplane::policy`). Verdicts expire by themselves and an admin can lift
//! them ([`verdicts`]). The model is retrained on the network's own scored windows on a
//! schedule, versioned and stored.

pub mod hbos;
pub mod judge;
pub mod policy;
pub mod rules;
pub mod task;
pub mod verdicts;
pub mod window;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::durations::humantime_serde_compat;

/// The detector's settings: the `[detect]` table of the server's config.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DetectConfig {
    /// Run the detector. Defaults to `true`.
    pub enabled: bool,
    /// Apply the hard rules; off, only the model judges (to measure it alone).
    /// Defaults to `true`.
    pub rules: bool,
    /// Length of a scoring window. Defaults to `60s`.
    #[serde(with = "humantime_serde_compat")]
    pub window: Duration,
    /// How long after a window ends its records are still awaited before the window is
    /// written, and again before it is scored. Defaults to `10s`.
    #[serde(with = "humantime_serde_compat")]
    pub grace: Duration,
    /// Distinct ports in one window that make a port sweep (half as many failed ones
    /// also do). Defaults to `20`.
    pub sweep_ports: usize,
    /// SMTP attempts (ports 25, 465, 587, refused by every node) in one window.
    /// Defaults to `3`.
    pub smtp_attempts: u64,
    /// Auth-shaped exchanges (100 B–8 KiB up, ≤ 32 KiB down, nearly identical answers)
    /// per minute to one site that make credential stuffing. Defaults to `60`.
    pub stuffing_per_min: f64,
    /// New connections per second in the busiest twentieth of a window that make a
    /// burst. Defaults to `50`.
    pub burst_per_sec: f64,
    /// Distinct sticky sessions in one window that make a shared key. Defaults to `100`.
    pub shared_sessions: usize,
    /// Upload per minute, at 20 times the download or more, that makes exfiltration.
    /// Defaults to `1048576` (1 MiB).
    pub exfil_bytes_per_min: u64,
    /// New tunnels per second a throttle allows. Defaults to `5`.
    pub throttle_tunnels_per_sec: u32,
    /// Bytes per second (both directions, all tunnels) a throttle allows a key on one
    /// server; 0 for no byte limit. Defaults to `1048576` (1 MiB/s).
    pub throttle_bytes_per_sec: u64,
    /// How long observations and throttles last; blocks and suspensions last four times
    /// as long. Defaults to `15m`.
    #[serde(with = "humantime_serde_compat")]
    pub ttl: Duration,
    /// Scored windows needed before a model is trained. Defaults to `200`.
    pub min_history: usize,
    /// Scored windows kept for training. Defaults to `20000`.
    pub history_cap: usize,
    /// How often the model is retrained. Defaults to `1h`.
    #[serde(with = "humantime_serde_compat")]
    pub retrain_every: Duration,
    /// Added to the training scores' 99.5th percentile to make the outlier threshold.
    /// Defaults to `3.0`.
    pub outlier_margin: f64,
}

impl Default for DetectConfig {
    fn default() -> Self {
        DetectConfig {
            enabled: true,
            rules: true,
            window: Duration::from_secs(60),
            grace: Duration::from_secs(10),
            sweep_ports: 20,
            smtp_attempts: 3,
            stuffing_per_min: 60.0,
            burst_per_sec: 50.0,
            shared_sessions: 100,
            exfil_bytes_per_min: 1 << 20,
            throttle_tunnels_per_sec: 5,
            throttle_bytes_per_sec: 1 << 20,
            ttl: Duration::from_secs(15 * 60),
            min_history: 200,
            history_cap: 20_000,
            retrain_every: Duration::from_secs(3600),
            outlier_margin: 3.0,
        }
    }
}

impl DetectConfig {
    /// Checks the values that would make the detector misbehave.
    ///
    /// # Errors
    /// A sentence naming the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.window < Duration::from_millis(500) || self.window > Duration::from_secs(3600) {
            return Err("detect.window must be between 500ms and 1h".into());
        }
        if self.grace >= self.window * 4 {
            return Err("detect.grace must be under four windows".into());
        }
        if self.sweep_ports < 2 || self.smtp_attempts == 0 || self.shared_sessions == 0 {
            return Err("detect thresholds must be positive (sweep_ports at least 2)".into());
        }
        if !(self.stuffing_per_min > 0.0 && self.burst_per_sec > 0.0) {
            return Err("detect.stuffing_per_min and burst_per_sec must be positive".into());
        }
        if self.throttle_tunnels_per_sec == 0 || self.ttl.is_zero() {
            return Err("detect.throttle_tunnels_per_sec and ttl must be positive".into());
        }
        if self.min_history < 2 || self.history_cap < self.min_history {
            return Err("detect.min_history must be at least 2 and at most history_cap".into());
        }
        if !self.outlier_margin.is_finite() || self.outlier_margin < 0.0 {
            return Err("detect.outlier_margin must be a non-negative number".into());
        }
        Ok(())
    }
}

/// What one server's detector has done, for `GET /api/detector`.
#[derive(Debug, Default)]
pub struct Status {
    /// Feature records read.
    pub records: AtomicU64,
    /// Windows this server scored.
    pub windows_scored: AtomicU64,
    /// Every window that started before this one has been scored (by some server),
    /// Unix ms.
    pub scored_before_ms: AtomicU64,
    /// Verdicts this server made.
    pub verdicts: AtomicU64,
    /// The model version in use (0: none yet).
    pub model_version: AtomicU64,
}

impl Status {
    /// As JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "records": self.records.load(Relaxed),
            "windows_scored": self.windows_scored.load(Relaxed),
            "scored_before_ms": self.scored_before_ms.load(Relaxed),
            "verdicts": self.verdicts.load(Relaxed),
            "model_version": self.model_version.load(Relaxed),
        })
    }
}

/// Learns the network's shared site key from the store and, when enabled, starts this
/// server's detector; returns the key for the data plane's feature records.
///
/// # Errors
/// When the store cannot be reached or the consumer name cannot be kept.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    cfg: &crate::config::ServerConfig,
    control: &std::sync::Arc<crate::service::ControlPlane<crate::store::AnyStore>>,
) -> Result<turbo_dataplane::site::SiteKey, crate::server::ServerError> {
    use crate::store::detect::DetectStore;
    let secret = runtime.block_on(control.store.shared_secret("site"))?;
    if cfg.detect.enabled {
        let consumer = consumer_name(&cfg.data_dir)?;
        let detector = task::Detector::new(
            control.store.clone(),
            cfg.detect.clone(),
            consumer,
            control.detect.clone(),
        );
        runtime.spawn(detector.run());
    }
    Ok(turbo_dataplane::site::SiteKey::new(&secret))
}

/// This server's consumer name in the group, kept in `DATA_DIR/detector-id` so that a
/// restart resumes the records it had read but not written.
fn consumer_name(data_dir: &std::path::Path) -> Result<String, crate::server::ServerError> {
    let path = data_dir.join("detector-id");
    let io = |source| crate::server::ServerError::Io {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(name) if !name.trim().is_empty() => Ok(name.trim().to_owned()),
        Ok(_) => Err(io(std::io::Error::other("empty detector id"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let name = format!("d{:016x}", rand::random::<u64>());
            std::fs::write(&path, &name).map_err(io)?;
            Ok(name)
        }
        Err(e) => Err(io(e)),
    }
}
