//! The admin overview: users, keys, nodes (online on this server), relayed bytes, and
//! the ledger's reconciliation when there is one.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;

use super::session::{self, Viewer};
use super::{human_bytes, render, WebError};
use crate::accounts::Role;
use crate::api::ApiState;
use crate::store::Store;

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    title: &'static str,
    viewer: Viewer,
    users: usize,
    keys: usize,
    nodes: usize,
    online: usize,
    relayed: String,
    reconciliation: Option<String>,
}

/// `GET /admin`.
pub(crate) async fn overview<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let viewer = session::require(&*st.accounts, &headers).await?;
    if viewer.user.role != Role::Admin {
        return Err(WebError::Forbidden);
    }
    let users = st.accounts.list_users().await?.len();
    let keys = st.control.store.list_keys().await?;
    let nodes = st.control.store.list_nodes().await?;
    let relayed: u64 = keys.iter().map(|k| k.bytes_up + k.bytes_down).sum();
    let reconciliation = match &st.money {
        Some(m) => Some(match m.reconcile(&*st.control.store).await {
            Ok(r) if r.ok => "ok".to_owned(),
            Ok(r) => format!("mismatch of {} bytes", r.mismatch_bytes),
            Err(e) => format!("failed: {e}"),
        }),
        None => None,
    };
    Ok(render(AdminPage {
        title: "Network",
        viewer,
        users,
        keys: keys.len(),
        nodes: nodes.len(),
        online: st.control.live_nodes().len(),
        relayed: human_bytes(relayed),
        reconciliation,
    }))
}
