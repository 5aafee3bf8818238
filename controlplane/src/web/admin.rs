//! The admin's pages: the network overview (users, keys, nodes, nodes online on any
//! server, bytes relayed, throughput, revenue, payouts due and the ledger's
//! reconciliation) and the lists of users, keys and nodes.

use std::sync::Arc;

use askama::Template;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::Response;
use turbo_ledger::{AccountRef, Asset, Platform};

use super::earnings::usd;
use super::session::{self, Viewer};
use super::{human_bytes, render, WebError};
use crate::accounts::Role;
use crate::api::ApiState;
use crate::store::Store;

/// One row of a list: its cells.
pub(crate) type Row = Vec<String>;

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    title: &'static str,
    viewer: Viewer,
    figures: Vec<(&'static str, String)>,
    users: Vec<Row>,
    keys: Vec<Row>,
    nodes: Vec<Row>,
}

/// Minutes the throughput figure averages over.
const THROUGHPUT_MINUTES: i64 = 5;

/// The ledger's figures: throughput (all servers, as settled), revenue, payouts due (nodes at or over the threshold) and
/// reconciliation.
async fn money_figures<S: Store>(
    st: &ApiState<S>,
    node_ids: &[String],
) -> Vec<(&'static str, String)> {
    let Some(m) = &st.money else {
        return vec![("Ledger", "off (no --ledger)".into())];
    };
    let revenue = m
        .ledger
        .balance(&AccountRef::platform(Platform::Revenue, Asset::NanoUsd))
        .await
        .map_or_else(|e| e.to_string(), usd);
    let mut due = (0, 0i64);
    for id in node_ids {
        let available = m
            .ledger
            .balance(&AccountRef::node(id, Asset::NanoUsd))
            .await
            .unwrap_or(0);
        if available >= m.payout_threshold_nano {
            due = (due.0 + 1, due.1 + available);
        }
    }
    let now_minute = i64::try_from(crate::store::now_unix() / 60).unwrap_or(0);
    let throughput = m
        .ledger
        .throughput(now_minute, THROUGHPUT_MINUTES)
        .await
        .map_or_else(|e| e.to_string(), |b| format!("{}/s", human_bytes(b)));
    let reconciliation = match m.reconcile(&*st.control.store).await {
        Ok(r) if r.ok => "ok".to_owned(),
        Ok(r) => format!("mismatch of {} bytes", r.mismatch_bytes),
        Err(e) => format!("failed: {e}"),
    };
    vec![
        ("Throughput, last 5 min", throughput),
        ("Revenue", revenue),
        ("Payouts due", format!("{} nodes, {}", due.0, usd(due.1))),
        ("Ledger", reconciliation),
    ]
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
    let users = st.accounts.list_users().await?;
    let keys = st.control.store.list_keys().await?;
    let nodes = st.control.store.list_nodes().await?;
    let live = st.live.presence(None, crate::store::now_unix()).await?;
    let relayed: u64 = keys.iter().map(|k| k.bytes_up + k.bytes_down).sum();
    let node_ids: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
    let mut figures = vec![
        ("Users", users.len().to_string()),
        ("Keys", keys.len().to_string()),
        ("Nodes", nodes.len().to_string()),
        ("Nodes online", live.len().to_string()),
        ("Relayed", human_bytes(relayed)),
    ];
    figures.extend(money_figures(&st, &node_ids).await);
    let users = users
        .iter()
        .map(|u| vec![u.email.clone(), u.role.as_str().into(), u.id.clone()])
        .collect();
    let keys = keys
        .iter()
        .map(|k| {
            let state = if k.revoked { "revoked" } else { "active" };
            vec![
                k.name.clone(),
                k.id.clone(),
                human_bytes(k.balance()),
                state.into(),
            ]
        })
        .collect();
    let nodes = nodes
        .iter()
        .map(|n| {
            let state = match (n.revoked, live.contains_key(&n.id)) {
                (true, _) => "revoked",
                (false, true) => "online",
                (false, false) => "offline",
            };
            vec![n.id.clone(), state.into(), human_bytes(n.bytes_carried)]
        })
        .collect();
    Ok(render(AdminPage {
        title: "Network",
        viewer,
        figures,
        users,
        keys,
        nodes,
    }))
}
