//! `GET /events`: the viewer's live figures as server-sent events. Each second the
//! viewer's keys' balances and bytes used (`balances`) and nodes' online state and
//! streams (`nodes`) are read from the store (shared by every server on one Redis) and
//! sent when they changed. An event is produced only when the browser takes the last
//! one, so a slow browser skips ahead to the newest figures instead of queueing them.
//! A comment every 15 s keeps idle connections open.

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
    last: (Value, Value),
    queued: Option<Value>,
    first: bool,
}

impl<S: Store> Watch<S> {
    /// The viewer's keys: id → {balance, used}.
    async fn balances(&self) -> Value {
        let keys = super::customer::owned_keys(&self.st, &self.viewer.user.id)
            .await
            .unwrap_or_default();
        let map: serde_json::Map<String, Value> = keys
            .iter()
            .map(|k| {
                (
                    k.id.clone(),
                    json!({"balance": k.balance(), "used": k.bytes_up + k.bytes_down}),
                )
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

    /// The next event: figures that changed since the last one sent (the first pass
    /// sends both).
    async fn next(mut self) -> (Event, Self) {
        if let Some(nodes) = self.queued.take() {
            let event = Event::default().event("nodes").data(nodes.to_string());
            self.last.1 = nodes;
            return (event, self);
        }
        loop {
            if !std::mem::replace(&mut self.first, false) {
                tokio::time::sleep(EVERY).await;
            }
            let (balances, nodes) = (self.balances().await, self.nodes().await);
            if balances != self.last.0 {
                let event = Event::default()
                    .event("balances")
                    .data(balances.to_string());
                self.last.0 = balances;
                if nodes != self.last.1 {
                    self.queued = Some(nodes);
                }
                return (event, self);
            }
            if nodes != self.last.1 {
                let event = Event::default().event("nodes").data(nodes.to_string());
                self.last.1 = nodes;
                return (event, self);
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
        last: (Value::Null, Value::Null),
        queued: None,
        first: true,
    };
    let events = stream::unfold(watch, |w| async move {
        let (event, w) = w.next().await;
        Some((Ok(event), w))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}
