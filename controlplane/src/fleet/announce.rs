//! This server's side of the fleet: it announces itself every
//! [`super::ANNOUNCE_EVERY`], reads the live list back, hands it to the data plane
//! (which tells the nodes) and serves it to `GET /api/servers`. On shutdown it
//! announces `draining` before the data plane stops.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};
use tracing::{debug, info, warn};
use turbo_dataplane::servers::ServerListHandle;
use turbo_proto::wire::control::{ServerInfo, MAX_SERVERS};

use super::{pin_hex, Announcement, Fleet, FleetError, ANNOUNCE_EVERY, TTL};
use crate::api::{check_admin, ApiError, ApiState};
use crate::store::StoreError;

/// Who this server is, for its announcements.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The server's id.
    pub id: String,
    /// Where nodes dial it, `host:port`.
    pub quic_addr: String,
    /// Its certificate's SHA-256.
    pub pin: [u8; 32],
}

/// This server's fleet: the shared list, its own load and draining flag, and the list
/// the data plane tells nodes.
pub struct FleetHandle {
    fleet: Fleet,
    me: Identity,
    draining: AtomicBool,
    nodes: AtomicU32,
    streams: AtomicU64,
    servers: ServerListHandle,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `host:port`, with brackets around an IPv6 host.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

impl FleetHandle {
    /// A handle on `fleet` for the server `me`, publishing to `servers`.
    pub fn new(fleet: Fleet, me: Identity, servers: ServerListHandle) -> Self {
        FleetHandle {
            fleet,
            me,
            draining: AtomicBool::new(false),
            nodes: AtomicU32::new(0),
            streams: AtomicU64::new(0),
            servers,
        }
    }

    /// This server's id.
    pub fn id(&self) -> &str {
        &self.me.id
    }

    /// Sets the load the next announcement carries.
    pub fn set_load(&self, nodes: u32, streams: u64) {
        self.nodes.store(nodes, Relaxed);
        self.streams.store(streams, Relaxed);
    }

    fn announcement(&self, now: u64) -> Announcement {
        Announcement {
            id: self.me.id.clone(),
            quic_addr: self.me.quic_addr.clone(),
            pin: pin_hex(&self.me.pin),
            nodes: self.nodes.load(Relaxed),
            streams: self.streams.load(Relaxed),
            draining: self.draining.load(Relaxed),
            until_ms: now + TTL.as_millis() as u64,
        }
    }

    /// Announces this server, reads the live list back and hands it to the data plane.
    ///
    /// # Errors
    /// [`FleetError`] when the store fails (the data plane keeps its last list).
    pub async fn refresh(&self) -> Result<Vec<Announcement>, FleetError> {
        let now = now_ms();
        self.fleet.announce(&self.announcement(now)).await?;
        let live = self.fleet.live(now).await?;
        let list = server_list(&live, &self.me.id);
        if turbo_dataplane::servers::publish(&self.servers, list) {
            debug!(servers = live.len(), "server list changed");
        }
        Ok(live)
    }

    /// The live fleet.
    ///
    /// # Errors
    /// [`FleetError::Unavailable`].
    pub async fn live(&self) -> Result<Vec<Announcement>, FleetError> {
        self.fleet.live(now_ms()).await
    }

    /// Announces that this server drains (its nodes move to other servers), at once.
    pub async fn drain(&self) {
        self.draining.store(true, Relaxed);
        match self.refresh().await {
            Ok(_) => info!(server = %self.me.id, "announced draining"),
            Err(e) => warn!(error = %e, "could not announce draining"),
        }
    }

    /// Announces every [`ANNOUNCE_EVERY`], taking the load from `load` and handing
    /// each live list read back to `on_live`, until the runtime stops; sweeps lapsed
    /// announcements now and then.
    pub async fn run(
        self: Arc<Self>,
        load: impl Fn() -> (u32, u64) + Send + 'static,
        on_live: impl Fn(&[Announcement]) + Send + 'static,
    ) {
        let mut tick = tokio::time::interval(ANNOUNCE_EVERY);
        let mut turns = 0u64;
        loop {
            tick.tick().await;
            let (nodes, streams) = load();
            self.set_load(nodes, streams);
            match self.refresh().await {
                Ok(live) => on_live(&live),
                Err(e) => warn!(error = %e, "fleet announcement failed"),
            }
            turns += 1;
            if turns.is_multiple_of(30) {
                let before = now_ms().saturating_sub(Duration::from_secs(60).as_millis() as u64);
                if let Err(e) = self.fleet.sweep(before).await {
                    debug!(error = %e, "fleet sweep failed");
                }
            }
        }
    }
}

/// This server's share of the expired-lease buckets: its rank among the live servers
/// that do not drain ([`crate::store::Share`]); every bucket when it is not among them
/// (draining, or not read back yet).
pub fn reclaim_share(live: &[Announcement], me: &str) -> crate::store::Share {
    let serving: Vec<&str> = live
        .iter()
        .filter(|a| !a.draining)
        .map(|a| a.id.as_str())
        .collect();
    match serving.iter().position(|id| *id == me) {
        Some(index) => crate::store::Share {
            index: index as u32,
            of: serving.len() as u32,
        },
        None => crate::store::Share::ALL,
    }
}

/// What nodes are told: the live servers with a readable pin, `me` marked as the
/// sender, at most [`MAX_SERVERS`] (this one always among them). One server per
/// address: a server restarted on the same address replaces its predecessor's entry
/// (which lingers until it lapses), and otherwise the freshest entry wins.
pub fn server_list(live: &[Announcement], me: &str) -> Vec<ServerInfo> {
    let mut by_addr: std::collections::HashMap<&str, &Announcement> = Default::default();
    for a in live {
        let slot = by_addr.entry(a.quic_addr.as_str()).or_insert(a);
        let newer = (a.id == me, a.until_ms) > (slot.id == me, slot.until_ms);
        if newer {
            *slot = a;
        }
    }
    let mut list: Vec<ServerInfo> = by_addr
        .into_values()
        .filter_map(|a| {
            Some(ServerInfo {
                id: a.id.clone(),
                addr: a.quic_addr.clone(),
                pin: a.pin_bytes()?,
                draining: a.draining,
                sender: a.id == me,
            })
        })
        .collect();
    list.sort_by(|a, b| (!a.sender, &a.id).cmp(&(!b.sender, &b.id)));
    list.truncate(MAX_SERVERS);
    list
}

/// `GET /api/servers` (admin): this server's id and the live fleet.
pub(crate) async fn list<S>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let live = st
        .fleet
        .live()
        .await
        .map_err(|e| ApiError::Store(StoreError::Unavailable(e.to_string())))?;
    Ok(Json(json!({ "this": st.fleet.id(), "servers": live })))
}

/// Opens the fleet next to the store and starts announcing server `id` (reached at
/// `cfg`'s public address, with certificate `pin`), with its load from `control`'s
/// live nodes. The returned handle's list goes to the data plane.
///
/// # Errors
/// [`crate::server::ServerError::Store`] when the store cannot be reached.
pub fn start(
    runtime: &tokio::runtime::Runtime,
    cfg: &crate::config::ServerConfig,
    control: &Arc<crate::service::ControlPlane<crate::store::AnyStore>>,
    id: &str,
    pin: [u8; 32],
) -> Result<Arc<FleetHandle>, crate::server::ServerError> {
    let me = Identity {
        id: id.to_owned(),
        quic_addr: cfg.public_addr(),
        pin,
    };
    if cfg.store != "memory" && cfg.public_addr.is_none() {
        warn!(
            quic_addr = %me.quic_addr,
            "public_addr is not set: other servers' nodes are told to dial this address"
        );
    }
    let fleet = runtime
        .block_on(Fleet::open(&cfg.store))
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let handle = Arc::new(FleetHandle::new(fleet, me, ServerListHandle::default()));
    let (control, c2, me) = (control.clone(), control.clone(), id.to_owned());
    let on_live = move |live: &[Announcement]| c2.set_reclaim_share(reclaim_share(live, &me));
    let load = move || {
        let live = control.live_nodes();
        let streams = live
            .values()
            .map(|n| u64::from(n.active.load(Relaxed)))
            .sum();
        (u32::try_from(live.len()).unwrap_or(u32::MAX), streams)
    };
    // The first announcement before nodes can connect, so their welcome has a list.
    let (first, h) = (handle.clone(), handle.clone());
    if let Err(e) = runtime.block_on(first.refresh()) {
        warn!(error = %e, "first fleet announcement failed");
    }
    runtime.spawn(h.run(load, on_live));
    Ok(handle)
}

impl FleetHandle {
    /// The list the data plane tells nodes.
    pub fn servers(&self) -> ServerListHandle {
        self.servers.clone()
    }
}
