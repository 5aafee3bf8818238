//! Hard rules: what is never normal, whatever the model says. Each names the action it
//! starts at on the ladder and the features that fired it. Rates are per minute (or per
//! second at the peak slot), so the rules do not depend on the window's length.

use super::window::{Exchanges, Features, Partial, SLOTS};
use super::DetectConfig;
use crate::store::detect::Action;

/// A rule that fired.
#[derive(Debug, Clone, PartialEq)]
pub struct Hit {
    /// Its name, the verdict's reason.
    pub rule: &'static str,
    /// Where it starts on the ladder.
    pub action: Action,
    /// The site a [`Action::BlockTarget`] blocks.
    pub target: Option<String>,
    /// The features that fired it.
    pub drivers: Vec<String>,
}

fn hit(rule: &'static str, action: Action, drivers: &[&str]) -> Hit {
    Hit {
        rule,
        action,
        target: None,
        drivers: drivers.iter().map(|d| (*d).to_owned()).collect(),
    }
}

/// Coefficient of variation of an exchange group's download sizes.
fn download_spread(e: &Exchanges) -> f64 {
    let n = e.n.max(1) as f64;
    let mean = e.down / n;
    let var = (e.down_sq / n - mean * mean).max(0.0);
    if mean > 0.0 {
        var.sqrt() / mean
    } else {
        0.0
    }
}

/// Every rule `p` (with features `f`) breaks, over a window of `window_ms`.
pub fn check(p: &Partial, f: &Features, window_ms: u64, cfg: &DetectConfig) -> Vec<Hit> {
    let minutes = window_ms as f64 / 60_000.0;
    let mut hits = Vec::new();
    if p.ports.len() >= cfg.sweep_ports || p.failed_ports.len() >= cfg.sweep_ports / 2 {
        hits.push(hit(
            "port_sweep",
            Action::Suspend,
            &["distinct_ports", "failure_ratio"],
        ));
    }
    if p.smtp >= cfg.smtp_attempts {
        hits.push(hit("smtp", Action::Throttle, &["smtp_attempts"]));
    }
    let stuffed = p
        .exchanges
        .iter()
        .filter(|(_, e)| e.n as f64 / minutes >= cfg.stuffing_per_min)
        .filter(|(_, e)| download_spread(e) < 0.2)
        .max_by_key(|(_, e)| e.n);
    if let Some((site, _)) = stuffed {
        let mut h = hit(
            "credential_stuffing",
            Action::BlockTarget,
            &["busiest_target_share", "conns_per_min"],
        );
        h.target = Some(site.clone());
        hits.push(h);
    }
    let slot_secs = window_ms as f64 / 1000.0 / SLOTS as f64;
    // The busiest fifth of the window: a page of a few connections is no burst.
    let span = (SLOTS / 5).max(1);
    let busiest = p.slots.windows(span).map(|w| w.iter().sum::<u64>()).max();
    let peak = busiest.unwrap_or(0) as f64 / (slot_secs * span as f64);
    if peak >= cfg.burst_per_sec {
        hits.push(hit(
            "connection_burst",
            Action::Throttle,
            &["burstiness", "conns_per_min"],
        ));
    }
    if p.sessions.len() >= cfg.shared_sessions {
        hits.push(hit("shared_key", Action::Throttle, &["sessions"]));
    }
    let up_per_min = p.bytes_up as f64 / minutes;
    if up_per_min >= cfg.exfil_bytes_per_min as f64 && f.values[4] >= 20f64.ln() {
        hits.push(hit("exfiltration", Action::Observe, &["up_down_log_ratio"]));
    }
    hits
}
