//! The API's verdict routes (admin token): every verdict the detector made, and lifting
//! one. A key's verdicts in force also show in `GET /api/keys/{id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde_json::Value;

use crate::api::{check_admin, ApiError, ApiState};
use crate::detect::verdicts::{self, now_ms};
use crate::store::detect::Verdict;
use crate::store::Store;

/// A verdict as the API shows it: its stored fields plus whether it is in force.
pub(crate) fn verdict_json(v: &Verdict, now: u64) -> Value {
    let mut json = serde_json::to_value(v).unwrap_or(Value::Null);
    if let Value::Object(map) = &mut json {
        map.insert("in_force".into(), Value::Bool(v.in_force(now)));
    }
    json
}

/// The verdicts of `key_id`, newest first.
pub(crate) async fn of_key<S: Store>(store: &S, key_id: &str) -> Result<Vec<Value>, ApiError> {
    let now = now_ms();
    let mut mine: Vec<Verdict> = store
        .verdicts()
        .await?
        .into_iter()
        .filter(|v| v.key_id == key_id)
        .collect();
    mine.sort_by_key(|v| std::cmp::Reverse(v.created_unix_ms));
    Ok(mine.iter().map(|v| verdict_json(v, now)).collect())
}

/// `GET /api/verdicts`: every verdict kept, newest first.
pub(crate) async fn list<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let now = now_ms();
    let mut all = st.control.store.verdicts().await?;
    all.sort_by_key(|v| std::cmp::Reverse(v.created_unix_ms));
    Ok(Json(Value::Array(
        all.iter().map(|v| verdict_json(v, now)).collect(),
    )))
}

/// `POST /api/verdicts/{id}/lift`: ends a verdict now; its key's other verdicts stay.
pub(crate) async fn lift<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let lifted = verdicts::lift(&*st.control.store, &id).await?;
    Ok(Json(verdict_json(&lifted, now_ms())))
}

/// `GET /api/detector`: what this server's detector has done (records read, windows
/// scored, verdicts made, model version).
pub(crate) async fn status<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    Ok(Json(st.control.detect.json()))
}
