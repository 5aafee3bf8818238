//! The API's node routes (admin token): every node of the network with its live state
//! as the whole fleet sees it. `connected` (and `here`) say the node is attached to the
//! server that answers, which then shows its own view; `online` says it is attached
//! to any server of the fleet, and a node attached only to others shows the presence
//! they report in the shared store (`servers` names every server holding it).

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::{json, Value};

use crate::api::{check_admin, ApiError, ApiState};
use crate::live::Presence;
use crate::service::LiveNode;
use crate::store::{NodeRecord, Store};

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Every node's presence in the fleet; empty when the store cannot say (the local
/// view still answers).
async fn fleet_presence<S>(st: &ApiState<S>) -> HashMap<String, Presence> {
    match st.live.presence(None, unix_now()).await {
        Ok(all) => all,
        Err(e) => {
            tracing::debug!(error = %e, "fleet presence unavailable");
            HashMap::new()
        }
    }
}

/// `GET /api/nodes`: every node of the network.
pub(crate) async fn list_nodes<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let live = st.control.live_nodes();
    let fleet = fleet_presence(&st).await;
    let nodes: Vec<Value> = st
        .control
        .store
        .list_nodes()
        .await?
        .iter()
        .map(|n| node_json(&st, n, live.get(n.id.as_str()), fleet.get(&n.id)))
        .collect();
    Ok(Json(Value::Array(nodes)))
}

/// `GET /api/nodes/{id}`: one node, with its held earnings when there is a ledger.
pub(crate) async fn get_node<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let node = st.control.store.node(&id).await?;
    let live = st.control.live_nodes();
    let fleet = fleet_presence(&st).await;
    let mut v = node_json(&st, &node, live.get(id.as_str()), fleet.get(&id));
    if let Some(m) = &st.money {
        let hold = m
            .ledger
            .hold_of(&id)
            .await
            .map_err(crate::money::MoneyError::from)?;
        v["hold"] = json!(hold);
    }
    Ok(Json(v))
}

/// A node as the API shows it: its identity, its live connection on this server
/// (`l`), and its presence in the fleet (`f`, every server holding it).
pub(crate) fn node_json<S: Store>(
    st: &ApiState<S>,
    n: &NodeRecord,
    l: Option<&LiveNode>,
    f: Option<&Presence>,
) -> Value {
    let code = |c: Option<turbo_proto::params::CountryCode>| c.map(|c| c.to_string());
    let (ok, failed, disputed) = st.control.registry.attempts(&n.id);
    let servers: Vec<&str> = f
        .map(|p| p.server.split(',').filter(|s| !s.is_empty()).collect())
        .unwrap_or_default();
    json!({
        "id": n.id,
        "revoked": n.revoked,
        "connected": l.is_some(),
        "here": l.is_some(),
        "online": l.is_some() || f.is_some(),
        "servers": servers,
        "country": l.and_then(|l| code(l.country)).or_else(|| f.and_then(|f| f.country.clone())),
        "declared_country": l.and_then(|l| code(l.declared_country)),
        "geoip_country": l.and_then(|l| code(l.geo_country)),
        "country_verified": l.is_some_and(|l| l.country_verified()),
        "peer": l.map(|l| l.peer.to_string()),
        "connected_since": l.map(|l| l.connected_since).or_else(|| f.map(|f| f.since)),
        "rtt_ms": l.and_then(|l| l.rtt).map(|r| r.as_secs_f64() * 1000.0),
        "score": match (l, f) {
            (Some(l), _) => json!(l.score),
            // Another server's report: S and its L and R parts.
            (None, Some(f)) => json!({"total": f.score, "latency": f.latency, "reliability": f.reliability}),
            (None, None) => Value::Null,
        },
        "active_streams": l.map(|l| u64::from(l.active.load(std::sync::atomic::Ordering::Relaxed)))
            .or_else(|| f.map(|f| u64::from(f.streams))),
        "max_streams": l.map(|l| u64::from(l.max_streams)).or_else(|| f.map(|f| u64::from(f.max_streams))),
        "lanes": l.map(|l| l.lanes.len()),
        "attempts_ok": ok,
        "attempts_failed": failed,
        "attempts_disputed": disputed,
        "demoted": st.control.registry.is_demoted(&n.id),
        "bytes_relayed": n.bytes_carried,
        "payout_address": n.payout_address,
        "created_unix": n.created_unix,
    })
}
