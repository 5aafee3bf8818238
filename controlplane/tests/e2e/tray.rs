//! The tray on Linux without a screen: a private session D-Bus (`dbus-daemon`) with a
//! small StatusNotifierWatcher (the part of a desktop that hosts tray items), a real
//! node daemon, and `turbo-node tray`. The test reads the item's title, icon and menu
//! over D-Bus as a desktop would, clicks Pause and sees the daemon drain and the title
//! change, clicks Resume and sees it come back, then quits the tray and sees the
//! daemon still running.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::zvariant::{OwnedValue, Value};

use crate::fixtures::{bin, wait_for, Net};

/// A private session bus; killed on drop.
struct Bus {
    child: Child,
    address: String,
    /// Its standard output, kept open.
    _stdout: BufReader<std::process::ChildStdout>,
}

impl Bus {
    fn start() -> Bus {
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon is installed (scripts/setup)");
        let mut line = String::new();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        stdout.read_line(&mut line).expect("the bus address");
        Bus {
            child,
            address: line.trim().to_owned(),
            _stdout: stdout,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The tray host's side: records the items that register.
#[derive(Clone, Default)]
struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    async fn register_status_notifier_item(&self, service: &str) {
        self.items.lock().expect("items").push(service.to_owned());
    }

    async fn register_status_notifier_host(&self, _service: &str) {}

    #[zbus(property)]
    async fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().expect("items").clone()
    }

    #[zbus(property)]
    async fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    async fn protocol_version(&self) -> i32 {
        0
    }
}

/// A dbusmenu layout node: id, properties, children.
type MenuNode = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);

/// One property of the tray item.
async fn item_property(conn: &zbus::Connection, item: &str, name: &str) -> String {
    let props = zbus::fdo::PropertiesProxy::builder(conn)
        .destination(item.to_owned())
        .expect("destination")
        .path("/StatusNotifierItem")
        .expect("path")
        .build()
        .await
        .expect("properties proxy");
    let iface = zbus::names::InterfaceName::from_static_str("org.kde.StatusNotifierItem")
        .expect("interface");
    let value = props.get(iface, name).await.expect("property");
    String::try_from(value).expect("a string property")
}

/// The menu's items: (id, label, enabled), in order.
async fn menu(conn: &zbus::Connection, item: &str) -> Vec<(i32, String, bool)> {
    let reply = conn
        .call_method(
            Some(item),
            "/MenuBar",
            Some("com.canonical.dbusmenu"),
            "GetLayout",
            &(0i32, -1i32, Vec::<String>::new()),
        )
        .await
        .expect("GetLayout");
    let (_, (_, _, children)): (u32, MenuNode) = reply.body().deserialize().expect("layout");
    children
        .into_iter()
        .map(|child| {
            let (id, props, _): MenuNode = child.try_into().expect("a menu item");
            let text = |k: &str| props.get(k).and_then(|v| String::try_from(v.clone()).ok());
            let enabled = props.get("enabled").and_then(|v| bool::try_from(v).ok());
            (
                id,
                text("label").unwrap_or_default(),
                enabled.unwrap_or(true),
            )
        })
        .collect()
}

async fn click(conn: &zbus::Connection, item: &str, id: i32) {
    conn.call_method(
        Some(item),
        "/MenuBar",
        Some("com.canonical.dbusmenu"),
        "Event",
        &(id, "clicked", Value::from(0i32), 0u32),
    )
    .await
    .expect("Event");
}

/// Polls `f` every 100 ms for up to 30 s.
async fn until<F: std::future::Future<Output = bool>>(what: &str, mut f: impl FnMut() -> F) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn node_state_word(state: &std::path::Path) -> String {
    let out = Command::new(bin("turbo-node"))
        .arg("status")
        .env("TURBO_NODE_STATE", state)
        .output()
        .expect("turbo-node status");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("state:"))
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

#[test]
fn the_tray_pauses_and_resumes_the_daemon_over_dbus() {
    let net = Net::start("legacy");
    let state = net.node_state("main");
    let bus = Bus::start();
    // Multi-threaded: the watcher answers the tray while the test thread waits.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let watcher = Watcher::default();
    let conn = rt
        .block_on(async {
            zbus::connection::Builder::address(bus.address.as_str())?
                .name("org.kde.StatusNotifierWatcher")?
                .serve_at("/StatusNotifierWatcher", watcher.clone())?
                .build()
                .await
        })
        .expect("the watcher on the bus");
    let mut tray = Command::new(bin("turbo-node"))
        .arg("tray")
        .env("TURBO_NODE_STATE", &state)
        .env("TURBO_NODE_CONFIG", state.join("no-such-node.toml"))
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::null())
        .spawn()
        .expect("turbo-node tray");
    let item = wait_for("the tray to register", || {
        watcher.items.lock().expect("items").first().cloned()
    });
    rt.block_on(async {
        until("the tray to show connected", || async {
            item_property(&conn, &item, "Title").await == "Turbo: connected"
        })
        .await;
        assert_eq!(
            item_property(&conn, &item, "IconName").await,
            "network-transmit-receive"
        );
        let items = menu(&conn, &item).await;
        let labels: Vec<&str> = items.iter().map(|(_, l, _)| l.as_str()).collect();
        assert_eq!(labels[0], "Turbo: connected", "{labels:?}");
        assert!(labels[1].starts_with("today: "), "{labels:?}");
        let dashboard = items
            .iter()
            .find(|(_, l, _)| l == "Open dashboard")
            .expect("item");
        assert!(!dashboard.2, "no dashboard address saved: disabled");
        let pause = items.iter().find(|(_, l, _)| l == "Pause").expect("Pause");
        click(&conn, &item, pause.0).await;
        until("the tray to show paused", || async {
            item_property(&conn, &item, "Title").await == "Turbo: paused"
        })
        .await;
    });
    wait_for("the daemon to drain and stay offline", || {
        (node_state_word(&state) == "paused" && net.connected_nodes().is_empty()).then_some(())
    });
    rt.block_on(async {
        let items = menu(&conn, &item).await;
        let resume = items
            .iter()
            .find(|(_, l, _)| l == "Resume")
            .expect("Resume");
        click(&conn, &item, resume.0).await;
        until("the tray to show connected again", || async {
            item_property(&conn, &item, "Title").await == "Turbo: connected"
        })
        .await;
    });
    assert!(!net.connected_nodes().is_empty(), "the daemon reconnected");
    let _ = tray.kill();
    let _ = tray.wait();
    assert_eq!(
        node_state_word(&state),
        "connected",
        "quitting the tray leaves the daemon"
    );
}
