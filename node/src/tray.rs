//! `turbo-node tray`: the node in the desktop's tray, a thin view over the daemon's
//! owner-only status socket ([`crate::status`]). It shows the state (connected,
//! paused, capped or offline) and today's bytes and earnings, and its menu pauses or
//! resumes the daemon, opens the dashboard, or quits the tray. The tray is its own
//! process: quitting it never stops the daemon.
//!
//! Linux only for now: a StatusNotifierItem on the session D-Bus (KDE, GNOME with the
//! AppIndicator extension, XFCE, …), through `ksni`. Built with the `tray` feature.

use std::path::PathBuf;

use crate::status::StatusReport;

/// What the tray shows for one report (or `None`: the daemon is not running).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct View {
    /// `connected`, `paused`, `capped` or `offline`.
    pub state: &'static str,
    /// The item's title.
    pub title: String,
    /// A freedesktop icon name for the state.
    pub icon: &'static str,
    /// Today's bytes and earnings, one line.
    pub today: String,
}

/// The tray's view of `report`.
pub fn view(report: Option<&StatusReport>) -> View {
    let state = match report {
        None => "offline",
        Some(r) if r.paused || r.state == "paused" => "paused",
        Some(r) if r.state == "capped" => "capped",
        Some(r) if r.state == "connected" => "connected",
        Some(_) => "offline",
    };
    let icon = match state {
        "connected" => "network-transmit-receive",
        "paused" => "media-playback-pause",
        "capped" => "dialog-warning",
        _ => "network-offline",
    };
    let today = match report {
        None => "the node is not running".to_owned(),
        Some(r) => {
            let earned = r.earnings_nano.map_or(String::new(), |(today, _)| {
                format!(
                    ", ${}.{:06}",
                    today / 1_000_000_000,
                    today % 1_000_000_000 / 1000
                )
            });
            let held = r
                .held
                .as_ref()
                .map_or(String::new(), |why| format!(" (earnings held: {why})"));
            format!("today: {} bytes{earned}{held}", r.bytes_today)
        }
    };
    View {
        state,
        title: format!("Turbo: {state}"),
        icon,
        today,
    }
}

/// Where the tray finds the daemon and the dashboard.
#[derive(Debug, Clone)]
pub struct TrayConfig {
    /// The daemon's status socket.
    pub socket: PathBuf,
    /// The dashboard's address, when known (saved by `turbo-node pair`).
    pub dashboard: Option<String>,
}

#[cfg(all(target_os = "linux", feature = "tray"))]
mod linux;
#[cfg(all(target_os = "linux", feature = "tray"))]
pub use linux::run;

/// Without the tray feature (or off Linux), says so.
///
/// # Errors
/// Always.
#[cfg(not(all(target_os = "linux", feature = "tray")))]
pub fn run(_config: TrayConfig) -> std::io::Result<()> {
    Err(std::io::Error::other(
        "this turbo-node has no tray: it needs Linux and the `tray` feature \
         (macOS and Windows trays are not built yet)",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_read_plainly() {
        assert_eq!(view(None).state, "offline");
        let mut r = StatusReport {
            state: "connected".into(),
            bytes_today: 1234,
            earnings_nano: Some((90_000, 1)),
            ..Default::default()
        };
        let v = view(Some(&r));
        assert_eq!(
            (v.state, v.title.as_str()),
            ("connected", "Turbo: connected")
        );
        assert_eq!(v.today, "today: 1234 bytes, $0.000090");
        r.paused = true;
        r.state = "stopping".into();
        assert_eq!(view(Some(&r)).state, "paused", "draining after a pause");
        r.paused = false;
        r.state = "capped".into();
        assert_eq!(view(Some(&r)).icon, "dialog-warning");
        r.state = "connecting".into();
        assert_eq!(view(Some(&r)).state, "offline");
        r.held = Some("failed a canary".into());
        assert_eq!(
            view(Some(&r)).today,
            "today: 1234 bytes, $0.000090 (earnings held: failed a canary)"
        );
    }
}
