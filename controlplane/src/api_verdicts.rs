//! The API's verdict routes (admin token): every verdict the detector made, one an
//! operator imposes by hand, and lifting one. A key's verdicts in force also show in
//! `GET /api/keys/{id}`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use crate::api::{check_admin, ApiError, ApiState};
use crate::detect::verdicts::{self, now_ms};
use crate::store::detect::{Action, Verdict};
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

/// The body of `POST /api/verdicts`.
#[derive(Deserialize)]
pub(crate) struct ManualVerdict {
    key_id: String,
    /// `suspend` or `throttle`.
    action: Action,
    /// How long it lasts. Defaults to the detector's verdict TTL.
    ttl_secs: Option<u64>,
    /// A throttle's new tunnels per second. Defaults to the detector's.
    tunnels_per_sec: Option<u32>,
    /// A throttle's bytes per second for the key's tunnels together. Defaults to the
    /// detector's.
    bytes_per_sec: Option<u64>,
}

/// The longest manual verdict: 30 days.
const MAX_MANUAL_TTL_SECS: u64 = 30 * 86_400;

/// `POST /api/verdicts`: an operator suspends or throttles a key by hand (reason
/// `manual`); enforced on every server like the detector's verdicts.
pub(crate) async fn impose<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Json(body): Json<ManualVerdict>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    if !matches!(body.action, Action::Suspend | Action::Throttle) {
        return Err(ApiError::BadRequest(
            "action: suspend or throttle (sites are blocked by the detector)".into(),
        ));
    }
    let defaults = &st.detect_defaults;
    let ttl = body.ttl_secs.unwrap_or(defaults.ttl.as_secs());
    if ttl == 0 || ttl > MAX_MANUAL_TTL_SECS {
        return Err(ApiError::BadRequest(format!(
            "ttl_secs: 1 to {MAX_MANUAL_TTL_SECS}"
        )));
    }
    st.control.store.key(&body.key_id).await?;
    let throttle = body.action == Action::Throttle;
    let now = now_ms();
    let verdict = Verdict {
        id: verdicts::new_id(),
        key_id: body.key_id,
        action: body.action,
        reason: "manual".into(),
        features: Default::default(),
        drivers: Vec::new(),
        target: None,
        tunnels_per_sec: throttle.then(|| {
            body.tunnels_per_sec
                .unwrap_or(defaults.throttle_tunnels_per_sec)
                .max(1)
        }),
        bytes_per_sec: throttle.then(|| {
            body.bytes_per_sec
                .unwrap_or(defaults.throttle_bytes_per_sec)
        }),
        window_unix_ms: now,
        created_unix_ms: now,
        expires_at: now + ttl * 1000,
        model_version: 0,
        lifted_unix_ms: None,
    };
    verdicts::record(&*st.control.store, &verdict).await?;
    Ok(Json(verdict_json(&verdict, now)))
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
