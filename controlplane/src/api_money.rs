//! The API's money routes (admin token): reconciliation, payouts, a node's earnings
//! and a key's usage per minute. They answer 503 on a server without a ledger.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::api::{check_admin, ApiError, ApiState};
use crate::money::{Money, MoneyError};
use crate::store::Store;

/// The money features, or 503.
fn money<S>(state: &ApiState<S>) -> Result<&Arc<Money>, ApiError> {
    state.money.as_ref().ok_or(ApiError::MoneyOff)
}

/// `GET /api/ledger/reconcile`.
pub(crate) async fn reconcile<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&state, &headers)?;
    let r = money(&state)?.reconcile(&*state.control.store).await?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

/// `POST /api/payouts/run` body.
#[derive(Deserialize, Default)]
pub(crate) struct PayoutRequest {
    #[serde(default)]
    dry_run: bool,
}

/// `POST /api/payouts/run`.
pub(crate) async fn payouts<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    body: Result<Json<PayoutRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&state, &headers)?;
    let req = body.map(|Json(b)| b).unwrap_or_default();
    let run = money(&state)?
        .payouts(&*state.control.store, req.dry_run)
        .await?;
    let planned: Vec<Value> = run
        .planned
        .iter()
        .map(|(node, nano)| json!({ "node": node, "amount_nano_usd": nano }))
        .collect();
    Ok(Json(json!({
        "dry_run": req.dry_run,
        "planned": planned,
        "confirmed": run.confirmed,
        "voided": run.voided,
        "resolved": run.resolved,
        "pending": run.pending,
    })))
}

/// The money features, for an admin call about node `id`, which must exist.
async fn admin_node<'a, S: Store>(
    state: &'a ApiState<S>,
    headers: &HeaderMap,
    id: &str,
) -> Result<&'a Arc<Money>, ApiError> {
    check_admin(state, headers)?;
    state.control.store.node(id).await?;
    money(state)
}

/// `GET /api/nodes/{id}/earnings`.
pub(crate) async fn earnings<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let e = admin_node(&state, &headers, &id)
        .await?
        .earnings(&id)
        .await
        .map_err(MoneyError::from)?;
    Ok(Json(e))
}

/// `POST /api/nodes/{id}/hold` body.
#[derive(Deserialize)]
pub(crate) struct HoldRequest {
    reason: String,
}

/// `POST /api/nodes/{id}/hold`: holds the node's earnings (unpaid, kept) for `reason`.
pub(crate) async fn hold<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<HoldRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let ledger = &admin_node(&state, &headers, &id).await?.ledger;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let reason = req.reason.trim();
    if reason.is_empty() || reason.len() > 500 {
        return Err(ApiError::BadRequest("reason: 1 to 500 characters".into()));
    }
    let new = ledger.hold(&id, reason).await.map_err(MoneyError::from)?;
    let hold = ledger.hold_of(&id).await.map_err(MoneyError::from)?;
    if let Some(h) = &hold {
        state.control.registry.set_hold(&id, Some(&h.reason));
    }
    Ok(Json(json!({"node": id, "new": new, "hold": hold})))
}

/// `POST /api/nodes/{id}/release`: releases the node's hold; its earnings are payable
/// again.
pub(crate) async fn release<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let released = admin_node(&state, &headers, &id)
        .await?
        .ledger
        .release_hold(&id)
        .await
        .map_err(MoneyError::from)?;
    state.control.registry.set_hold(&id, None);
    Ok(Json(json!({"node": id, "released": released})))
}

/// `GET /api/keys/{id}/usage` query.
#[derive(Deserialize)]
pub(crate) struct UsageRange {
    from: Option<i64>,
    to: Option<i64>,
}

/// `GET /api/keys/{id}/usage?from=&to=` (minutes since the epoch; default: the last
/// day).
pub(crate) async fn key_usage<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(range): Query<UsageRange>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&state, &headers)?;
    state.control.store.key(&id).await?;
    let now = (crate::store::now_unix() / 60) as i64;
    let to = range.to.unwrap_or(now + 1);
    let from = range.from.unwrap_or(to - 1440);
    if from > to || to - from > 31 * 1440 {
        return Err(ApiError::BadRequest(
            "from must be before to, at most 31 days apart (minutes since the epoch)".into(),
        ));
    }
    let rows = money(&state)?
        .ledger
        .key_usage(&id, from, to)
        .await
        .map_err(MoneyError::from)?;
    Ok(Json(
        json!({ "key": id, "from": from, "to": to, "minutes": rows }),
    ))
}
