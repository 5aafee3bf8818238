//! The Linux tray: a StatusNotifierItem (with its dbusmenu) served by `ksni`, refreshed
//! from the status socket every second.

use std::time::Duration;

use ksni::menu::{MenuItem, StandardItem};
use ksni::TrayMethods;

use super::{view, TrayConfig, View};
use crate::status::{self, StatusReport};

struct TurboTray {
    config: TrayConfig,
    report: Option<StatusReport>,
}

impl TurboTray {
    fn view(&self) -> View {
        view(self.report.as_ref())
    }

    /// Sends `command` to the daemon and keeps the report it answers.
    fn command(&mut self, command: &str) {
        match status::command(&self.config.socket, command) {
            Ok(r) => self.report = Some(r),
            Err(e) => tracing::warn!(error = %e, command, "the node did not answer"),
        }
    }
}

fn label<T>(text: String) -> MenuItem<T> {
    MenuItem::Standard(StandardItem {
        label: text,
        enabled: false,
        ..Default::default()
    })
}

fn action<T>(text: &str, enabled: bool, run: impl Fn(&mut T) + Send + 'static) -> MenuItem<T> {
    MenuItem::Standard(StandardItem {
        label: text.into(),
        enabled,
        activate: Box::new(run),
        ..Default::default()
    })
}

impl ksni::Tray for TurboTray {
    fn id(&self) -> String {
        "turbo-node".into()
    }

    fn title(&self) -> String {
        self.view().title
    }

    fn icon_name(&self) -> String {
        self.view().icon.into()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        let v = self.view();
        ksni::ToolTip {
            title: v.title,
            description: v.today,
            ..Default::default()
        }
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        let v = self.view();
        let running = self.report.is_some();
        let toggle = if v.state == "paused" {
            action("Resume", running, |t: &mut Self| t.command("resume"))
        } else {
            action("Pause", running, |t: &mut Self| t.command("pause"))
        };
        let dashboard = self.config.dashboard.clone();
        vec![
            label(v.title),
            label(v.today),
            MenuItem::Separator,
            toggle,
            action("Open dashboard", dashboard.is_some(), move |_| {
                if let Some(url) = &dashboard {
                    crate::pair::open_browser(&format!("{url}/nodes"));
                }
            }),
            action("Quit", true, |_| std::process::exit(0)),
        ]
    }
}

/// Shows the tray until it is quit (the daemon keeps running).
///
/// # Errors
/// When there is no session D-Bus or no tray host (StatusNotifierWatcher) on it.
pub fn run(config: TrayConfig) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let report = status::query(&config.socket).ok();
        let socket = config.socket.clone();
        let handle = TurboTray { config, report }
            .spawn()
            .await
            .map_err(std::io::Error::other)?;
        loop {
            tokio::time::sleep(Duration::from_secs(1)).await;
            let socket = socket.clone();
            let report = tokio::task::spawn_blocking(move || status::query(&socket).ok())
                .await
                .unwrap_or(None);
            if handle.update(|t| t.report = report).await.is_none() {
                return Ok(());
            }
        }
    })
}
