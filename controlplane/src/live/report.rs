//! Each server's reporter: once a second it writes its nodes' presence (all of them
//! every [`REFRESH_EVERY`] ticks, and at once when one comes or goes), publishes nodes
//! up and down and the keys whose usage moved, refreshes its nodes' network claims
//! ([`crate::netlimit`]), and once a minute sweeps entries their server stopped
//! refreshing.

use std::collections::HashMap;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{LiveBus, LiveEvent, Presence};
use crate::service::{ControlPlane, LiveNode};
use crate::store::Store;

/// How often the reporter runs.
const TICK: Duration = Duration::from_secs(1);
/// Every how many ticks all entries are rewritten (streams and scores refreshed).
const REFRESH_EVERY: u64 = 3;
/// How long an entry stays valid without a refresh, seconds.
pub const VALID_FOR: u64 = 10;
/// Every how many ticks stale entries are swept.
const SWEEP_EVERY: u64 = 60;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A live node's entry, valid until `until`.
pub fn presence_of(server: &str, node: &LiveNode, until: u64) -> Presence {
    Presence {
        server: server.to_owned(),
        country: node.country.map(|c| c.to_string()),
        score: node.score.total,
        latency: node.score.latency,
        reliability: node.score.reliability,
        streams: node.active.load(Relaxed),
        max_streams: node.max_streams,
        since: node.connected_since,
        until,
    }
}

/// What the last successful report held.
#[derive(Default)]
struct Reported {
    online: std::collections::HashSet<String>,
}

impl Reported {
    /// Writes this tick's presence; returns the nodes that came, and those that left
    /// this server and are on no other.
    async fn tick(
        &mut self,
        bus: &LiveBus,
        server: &str,
        live: &HashMap<Arc<str>, LiveNode>,
        refresh_all: bool,
    ) -> Result<(Vec<String>, Vec<String>), crate::store::StoreError> {
        let now = unix_now();
        let until = now + VALID_FOR;
        let up: Vec<String> = live
            .keys()
            .filter(|id| !self.online.contains(&***id))
            .map(|id| id.to_string())
            .collect();
        let down: Vec<String> = self
            .online
            .iter()
            .filter(|id| !live.contains_key(id.as_str()))
            .cloned()
            .collect();
        if up.is_empty() && down.is_empty() && !refresh_all {
            return Ok((up, down));
        }
        let entries: Vec<(String, Presence)> = live
            .iter()
            .map(|(id, n)| (id.to_string(), presence_of(server, n, until)))
            .collect();
        // Only nodes no other server holds went down.
        let gone = bus.report(server, &entries, &down, now).await?;
        self.online = live.keys().map(|id| id.to_string()).collect();
        Ok((up, gone))
    }
}

/// Runs the reporter of `server` for as long as the server runs.
pub async fn run<S: Store>(control: Arc<ControlPlane<S>>, bus: Arc<LiveBus>, server: Arc<str>) {
    let mut every = tokio::time::interval(TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reported = Reported::default();
    for n in 0u64.. {
        every.tick().await;
        let live = control.live_nodes();
        match reported
            .tick(&bus, &server, &live, n % REFRESH_EVERY == 0)
            .await
        {
            Ok((up, down)) => {
                let changes = up.into_iter().map(|id| (id, true));
                for (id, online) in changes.chain(down.into_iter().map(|id| (id, false))) {
                    publish(&bus, LiveEvent::Node { id, online }).await;
                }
            }
            Err(e) => debug!(error = %e, "presence report failed; retried next tick"),
        }
        if n % REFRESH_EVERY == 0 {
            refresh_claims(&control, &live).await;
        }
        let touched = control.take_touched_keys();
        if !touched.is_empty() {
            publish(&bus, LiveEvent::Usage(touched)).await;
        }
        if n % SWEEP_EVERY == SWEEP_EVERY - 1 {
            match bus.sweep(unix_now().saturating_sub(SWEEP_EVERY)).await {
                Ok(0) => {}
                Ok(swept) => debug!(swept, "swept stale presence"),
                Err(e) => debug!(error = %e, "presence sweep failed"),
            }
        }
    }
}

/// Keeps this server's nodes' network claims from lapsing ([`crate::netlimit`]).
async fn refresh_claims<S: Store>(control: &ControlPlane<S>, live: &HashMap<Arc<str>, LiveNode>) {
    for (id, node) in live {
        match control.claim_network(id, node.peer.ip()).await {
            Ok(true) => {}
            Ok(false) => tracing::warn!(node = %id, "a connected node lost its network claim"),
            Err(e) => debug!(error = %e, "network claim not refreshed"),
        }
    }
}

async fn publish(bus: &LiveBus, event: LiveEvent) {
    if let Err(e) = bus.publish(&event).await {
        debug!(error = %e, ?event, "live event not published");
    }
}
