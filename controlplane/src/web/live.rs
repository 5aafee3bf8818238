//! `GET /events`: the viewer's live figures as server-sent events. The feed every
//! server publishes ([`crate::live`]: usage ticks, nodes up and down, invoice states)
//! and the store's key events (revocations, top-ups) are fanned out to each viewer: an
//! event about one of the viewer's keys, nodes or invoices marks that category stale,
//! and a stale category is re-read (store, presence, payments database) and sent when
//! it changed, as `balances`, `nodes` or `invoices`.
//!
//! The server never waits for a browser: an event is produced only when the browser
//! took the previous one, and a viewer that falls behind the feed (it lagged the
//! broadcast) re-reads everything once, skipping what it missed. A comment every 15 s
//! keeps idle connections open. The feed is at-most-once (Redis PUB/SUB), so every
//! [`RESYNC`] the categories are re-read anyway.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::broadcast::{self, error::RecvError};
use turbo_dataplane::control::KeyEvent;

use super::session::{self, Viewer};
use super::WebError;
use crate::accounts::Owned;
use crate::api::ApiState;
use crate::live::LiveEvent;
use crate::store::Store;

/// How often every category is re-read without an event.
const RESYNC: Duration = Duration::from_secs(30);
/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The categories, in the order of [`Watch::last`] and [`Watch::stale`].
const NAMES: [&str; 3] = ["balances", "nodes", "invoices"];
const BALANCES: usize = 0;
const NODES: usize = 1;
const INVOICES: usize = 2;

/// What the viewer owns, re-read with each refresh.
#[derive(Default)]
struct Mine {
    keys: HashSet<String>,
    nodes: Vec<String>,
    invoices: Vec<String>,
}

struct Watch<S> {
    st: Arc<ApiState<S>>,
    viewer: Viewer,
    mine: Mine,
    /// The last figures sent, by category.
    last: [Value; 3],
    /// Categories to re-read.
    stale: [bool; 3],
    /// Changed figures not yet sent.
    queued: VecDeque<Event>,
    feed: broadcast::Receiver<LiveEvent>,
    key_events: broadcast::Receiver<KeyEvent>,
    resync: tokio::time::Interval,
}

impl<S: Store> Watch<S> {
    /// The viewer's keys: id → {balance, used, revoked}.
    async fn balances(&self) -> Value {
        let keys = super::customer::owned_keys(&self.st, &self.viewer.user.id)
            .await
            .unwrap_or_default();
        let map: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| {
                let figures = json!({
                    "balance": k.balance(),
                    "used": k.bytes_up + k.bytes_down,
                    "revoked": k.revoked,
                });
                (k.id.clone(), figures)
            })
            .collect();
        Value::Object(map)
    }

    /// The viewer's nodes, from the presence of every server: id → {online, streams,
    /// country, score, latency, reliability}.
    async fn nodes(&self) -> Value {
        let now = crate::store::now_unix();
        let presence = self
            .st
            .live
            .presence(Some(&self.mine.nodes), now)
            .await
            .unwrap_or_default();
        let refusals = self
            .st
            .live
            .refusals(&self.mine.nodes)
            .await
            .unwrap_or_default();
        let map: serde_json::Map<String, Value> = self
            .mine
            .nodes
            .iter()
            .map(|id| {
                let p = presence.get(id);
                let figures = json!({
                    "online": p.is_some(),
                    "refused": refusals.get(id),
                    "streams": p.map(|p| format!("{} / {}", p.streams, p.max_streams)),
                    "country": p.and_then(|p| p.country.clone()),
                    "score": p.map(|p| format!("{:.2}", p.score)),
                    "latency": p.map(|p| format!("{:.2}", p.latency)),
                    "reliability": p.map(|p| format!("{:.2}", p.reliability)),
                });
                (id.clone(), figures)
            })
            .collect();
        Value::Object(map)
    }

    /// The viewer's invoices: id → {status, paid_units, credited}.
    async fn invoices(&self) -> Value {
        let Some(gateway) = &self.st.payments else {
            return Value::Null;
        };
        let mut map = serde_json::Map::new();
        for id in &self.mine.invoices {
            if let Ok(inv) = gateway.invoice(id).await {
                let credited = super::human_bytes(u64::try_from(inv.credited_bytes).unwrap_or(0));
                let figures = json!({"status": inv.status, "paid_units": inv.paid_units, "credited": credited});
                map.insert(id.clone(), figures);
            }
        }
        Value::Object(map)
    }

    /// Re-reads what the viewer owns.
    async fn refresh_mine(&mut self) {
        let owned = |kind| self.st.accounts.owned(&self.viewer.user.id, kind);
        let (keys, nodes, invoices) = (
            owned(Owned::Key).await,
            owned(Owned::Node).await,
            owned(Owned::Invoice).await,
        );
        self.mine = Mine {
            keys: keys.unwrap_or_default().into_iter().collect(),
            nodes: nodes.unwrap_or_default(),
            invoices: invoices.unwrap_or_default(),
        };
    }

    /// Re-reads the stale categories and queues those that changed.
    async fn refresh(&mut self) {
        self.refresh_mine().await;
        for (i, name) in NAMES.iter().enumerate() {
            if !std::mem::take(&mut self.stale[i]) {
                continue;
            }
            let figures = match i {
                BALANCES => self.balances().await,
                NODES => self.nodes().await,
                _ => self.invoices().await,
            };
            if self.last[i] != figures {
                self.queued
                    .push_back(Event::default().event(*name).data(figures.to_string()));
                self.last[i] = figures;
            }
        }
    }

    /// Marks what a feed event concerns.
    fn on_feed(&mut self, event: Result<LiveEvent, RecvError>) {
        match event {
            Ok(LiveEvent::Usage(ids)) => {
                self.stale[BALANCES] |= ids.iter().any(|id| self.mine.keys.contains(id));
            }
            Ok(LiveEvent::Node { id, .. }) => self.stale[NODES] |= self.mine.nodes.contains(&id),
            Ok(LiveEvent::Invoice(id)) => {
                self.stale[INVOICES] |= self.mine.invoices.contains(&id);
            }
            // Missed events (lagged or resubscribed): skip ahead to the newest figures.
            Ok(LiveEvent::Resync) | Err(RecvError::Lagged(_)) => self.stale = [true; 3],
            Err(RecvError::Closed) => {}
        }
    }

    /// Marks what a key event concerns.
    fn on_key_event(&mut self, event: Result<KeyEvent, RecvError>) {
        match event {
            Ok(KeyEvent::Revoked(id) | KeyEvent::ToppedUp(id)) => {
                self.stale[BALANCES] |= self.mine.keys.contains(&*id);
            }
            // A key created elsewhere may be the viewer's.
            Ok(KeyEvent::Created(_)) => self.stale[BALANCES] = true,
            Ok(KeyEvent::NodeRevoked(id)) => {
                self.stale[NODES] |= self.mine.nodes.iter().any(|n| **n == *id);
            }
            Ok(KeyEvent::NodeReplaced { .. } | KeyEvent::Policy { .. })
            | Err(RecvError::Closed) => {}
            Ok(KeyEvent::Resync) | Err(RecvError::Lagged(_)) => self.stale = [true; 3],
        }
    }

    /// Waits for at least one event, then takes every event already waiting, so a
    /// burst costs one refresh.
    async fn wait(&mut self) {
        tokio::select! {
            e = self.feed.recv() => self.on_feed(e),
            e = self.key_events.recv() => self.on_key_event(e),
            _ = self.resync.tick() => self.stale = [true; 3],
        }
        loop {
            match self.feed.try_recv() {
                Ok(e) => self.on_feed(Ok(e)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.on_feed(Err(RecvError::Lagged(n)));
                }
                Err(_) => break,
            }
        }
        loop {
            match self.key_events.try_recv() {
                Ok(e) => self.on_key_event(Ok(e)),
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.on_key_event(Err(RecvError::Lagged(n)));
                }
                Err(_) => break,
            }
        }
    }

    /// The next event to send.
    async fn next(mut self) -> (Event, Self) {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return (event, self);
            }
            if self.stale.contains(&true) {
                self.refresh().await;
            } else {
                self.wait().await;
            }
        }
    }
}

/// `GET /events`.
pub(crate) async fn events<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, WebError> {
    let viewer = session::require(&*st.accounts, &headers).await?;
    let mut resync = tokio::time::interval(RESYNC);
    resync.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    resync.reset();
    let watch = Watch {
        feed: st.live.subscribe(),
        key_events: st.control.store.events(),
        st,
        viewer,
        mine: Mine::default(),
        last: [Value::Bool(false), Value::Bool(false), Value::Bool(false)],
        stale: [true; 3],
        queued: VecDeque::new(),
        resync,
    };
    let events = stream::unfold(watch, |w| async move {
        let (event, w) = w.next().await;
        Some((Ok(event), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
