//! A runner's pages: their nodes (online on this server, country, score, streams,
//! bytes carried, earnings with the ledger) and "add a node", which makes a node
//! owned by the runner and shows its join command once.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;

use super::auth::CsrfOnly;
use super::earnings::usd;
use super::session::{self, Viewer};
use super::{human_bytes, render, WebError};
use crate::accounts::{Owned, Role};
use crate::api::{join_string, node_json, ApiState};
use crate::store::{Store, StoreError};

/// One node as the page lists it.
pub(crate) struct NodeRow {
    pub(crate) id: String,
    pub(crate) online: bool,
    pub(crate) country: String,
    pub(crate) score: String,
    pub(crate) streams: String,
    pub(crate) carried: String,
    pub(crate) earned: String,
    pub(crate) revoked: bool,
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

/// The viewer's nodes as rows.
pub(crate) async fn node_rows<S: Store>(
    st: &ApiState<S>,
    user_id: &str,
) -> Result<Vec<NodeRow>, WebError> {
    let live = st.control.live_nodes();
    let mut rows = Vec::new();
    for id in st.accounts.owned(user_id, Owned::Node).await? {
        let node = match st.control.store.node(&id).await {
            Ok(n) => n,
            Err(StoreError::NotFound(_)) => continue,
            Err(e) => return Err(e.into()),
        };
        let v = node_json(st, &node, live.get(id.as_str()));
        let earned = match &st.money {
            Some(m) => m
                .ledger
                .earnings(&id)
                .await
                .map(|e| usd(e.earned_nano + e.bonus_nano))
                .unwrap_or_default(),
            None => String::new(),
        };
        rows.push(NodeRow {
            online: v["connected"] == true,
            country: v["country"].as_str().unwrap_or("—").to_owned(),
            score: v["score"]
                .as_f64()
                .map_or("—".into(), |s| format!("{s:.2}")),
            streams: v["active_streams"]
                .as_u64()
                .map_or("—".into(), |s| s.to_string()),
            carried: human_bytes(node.bytes_carried),
            earned,
            revoked: node.revoked,
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
