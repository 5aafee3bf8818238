//! `GET /events`: the viewer's live figures as server-sent events. Each second the
//! viewer's keys' balances and bytes used (`balances`), nodes' online state and streams
//! (`nodes`) and invoices' status (`invoices`) are read from the store (shared by every
//! server on one Redis) and the payments database, and sent when they changed. An event is produced only when the browser takes the last
//! one, so a slow browser skips ahead to the newest figures instead of queueing them.
//! A comment every 15 s keeps idle connections open.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};

use super::session::{self, Viewer};
use super::WebError;
use crate::accounts::Owned;
use crate::api::ApiState;
use crate::store::Store;

/// How often figures are read.
const EVERY: Duration = Duration::from_secs(1);
/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

struct Watch<S> {
    st: Arc<ApiState<S>>,
    viewer: Viewer,
    /// The last figures sent, by event name.
    last: [Value; 3],
    /// Changed figures not yet sent.
    queued: VecDeque<Event>,
    first: bool,
}

/// The events, in the order of [`Watch::last`].
const NAMES: [&str; 3] = ["balances", "nodes", "invoices"];

impl<S: Store> Watch<S> {
    /// The viewer's keys: id → {balance, used}.
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

    /// The viewer's nodes: id → {online, streams}.
    async fn nodes(&self) -> Value {
        let ids = self
            .st
            .accounts
            .owned(&self.viewer.user.id, Owned::Node)
            .await
            .unwrap_or_default();
        let live = self.st.control.live_nodes();
        let map: serde_json::Map<String, Value> = ids
            .into_iter()
            .map(|id| {
                let l = live.get(id.as_str());
                let streams = l.map(|l| l.active.load(std::sync::atomic::Ordering::Relaxed));
                (id, json!({"online": l.is_some(), "streams": streams}))
            })
            .collect();
        Value::Object(map)
    }

    /// The viewer's invoices: id → {status, paid_units}.
    async fn invoices(&self) -> Value {
        let Some(gateway) = &self.st.payments else {
            return Value::Null;
        };
        let ids = self
            .st
            .accounts
            .owned(&self.viewer.user.id, Owned::Invoice)
            .await
            .unwrap_or_default();
        let mut map = serde_json::Map::new();
        for id in ids {
            if let Ok(inv) = gateway.invoice(&id).await {
                let credited = super::human_bytes(u64::try_from(inv.credited_bytes).unwrap_or(0));
                let figures = json!({"status": inv.status, "paid_units": inv.paid_units, "credited": credited});
                map.insert(id, figures);
            }
        }
        Value::Object(map)
    }

    /// The next event: figures that changed since they were last sent (the first pass
    /// sends all).
    async fn next(mut self) -> (Event, Self) {
        loop {
            if let Some(event) = self.queued.pop_front() {
                return (event, self);
            }
            if !std::mem::replace(&mut self.first, false) {
                tokio::time::sleep(EVERY).await;
            }
            let now = [
                self.balances().await,
                self.nodes().await,
                self.invoices().await,
            ];
            for ((name, last), figures) in NAMES.iter().zip(&mut self.last).zip(now) {
                if *last != figures {
                    self.queued
                        .push_back(Event::default().event(*name).data(figures.to_string()));
                    *last = figures;
                }
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
    let watch = Watch {
        st,
        viewer,
        last: [Value::Bool(false), Value::Bool(false), Value::Bool(false)],
        queued: VecDeque::new(),
        first: true,
    };
    let events = stream::unfold(watch, |w| async move {
        let (event, w) = w.next().await;
        Some((Ok(event), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
