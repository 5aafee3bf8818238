//! A runner's pages: their nodes (online on any server, country, score with its L and
//! R parts, streams, bytes today, this month and in all, earnings with the ledger) and "add a node", which makes a node
//! owned by the runner and shows its join command once.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;

use super::auth::CsrfOnly;
use super::earnings::usd_micro;
use super::session::{self, Viewer};
use super::{human_bytes, render, WebError};
use crate::accounts::{Owned, Role};
use crate::api::{join_string, ApiState};
use crate::store::{Store, StoreError};

/// One node as the page lists it.
pub(crate) struct NodeRow {
    pub(crate) id: String,
    pub(crate) online: bool,
    pub(crate) country: String,
    /// Score S, and its latency (L) and reliability (R) parts.
    pub(crate) score: [String; 3],
    pub(crate) streams: String,
    pub(crate) today: String,
    pub(crate) month: String,
    pub(crate) carried: String,
    pub(crate) earned: String,
    pub(crate) revoked: bool,
    /// Why the server last refused it, while that is recent.
    pub(crate) refused: Option<String>,
}

#[derive(Template)]
#[template(path = "nodes.html")]
struct NodesPage {
    title: &'static str,
    viewer: Viewer,
    nodes: Vec<NodeRow>,
    join: Option<String>,
    money: bool,
}

/// The ledger's figures for one node: bytes today, this month, and earned in all.
async fn ledger_figures(money: &crate::money::Money, id: &str, today: i64) -> [String; 3] {
    let (day, month) = money.ledger.node_bytes(id, today).await.unwrap_or_default();
    let earned = money
        .ledger
        .earnings(id)
        .await
        .map(|e| usd_micro(e.earned_nano + e.bonus_nano))
        .unwrap_or_default();
    [human_bytes(day), human_bytes(month), earned]
}

/// The viewer's nodes as rows: online state and score from the presence every server
/// reports, so any server shows them alike.
pub(crate) async fn node_rows<S: Store>(
    st: &ApiState<S>,
    user_id: &str,
) -> Result<Vec<NodeRow>, WebError> {
    let ids = st.accounts.owned(user_id, Owned::Node).await?;
    let now = crate::store::now_unix();
    let presence = st.live.presence(Some(&ids), now).await?;
    let mut refusals = st.live.refusals(&ids).await?;
    let today = i64::try_from(now / 86_400).unwrap_or(0);
    let dash = || "—".to_owned();
    let mut rows = Vec::new();
    for id in ids {
        let node = match st.control.store.node(&id).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let [today, month, earned] = match &st.money {
            Some(m) => ledger_figures(m, &id, today).await,
            None => [dash(), dash(), String::new()],
        };
        let p = presence.get(&id);
        let part =
            |f: fn(&crate::live::Presence) -> f64| p.map_or_else(dash, |p| format!("{:.2}", f(p)));
        rows.push(NodeRow {
            online: p.is_some(),
            country: p.and_then(|p| p.country.clone()).unwrap_or_else(dash),
            score: [
                part(|p| p.score),
                part(|p| p.latency),
                part(|p| p.reliability),
            ],
            streams: p.map_or_else(dash, |p| format!("{} / {}", p.streams, p.max_streams)),
            today,
            month,
            carried: human_bytes(node.bytes_carried),
            earned,
            revoked: node.revoked,
            refused: refusals.remove(&id),
            id,
        });
    }
    Ok(rows)
}

async fn nodes_page<S: Store>(
    st: &ApiState<S>,
    viewer: Viewer,
    join: Option<String>,
) -> Result<Response, WebError> {
    let nodes = node_rows(st, &viewer.user.id).await?;
    Ok(render(NodesPage {
        title: "Nodes",
        viewer,
        nodes,
        join,
        money: st.money.is_some(),
    }))
}

/// `GET /nodes`.
pub(crate) async fn nodes<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Runner).await?;
    nodes_page(&st, viewer, None).await
}

/// `POST /nodes`: a new node owned by the viewer; its join command is shown once.
pub(crate) async fn add_node<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Runner).await?;
    session::check_csrf(&viewer.csrf, form.csrf())?;
    let (node, token) = st.control.store.create_node(None).await?;
    st.accounts
        .grant(&viewer.user.id, Owned::Node, &node.id)
        .await?;
    tracing::info!(user = %viewer.user.id, node = %node.id, "node added from the dashboard");
    let join = format!("turbo-node run --join {}", join_string(&st, token));
    nodes_page(&st, viewer, Some(join)).await
}
