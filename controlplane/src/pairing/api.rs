//! The node's side of pairing over HTTP: `POST /api/pair/start` issues a device code
//! and a user code; `POST /api/pair/poll` answers `authorization_pending`,
//! `access_denied`, `expired_token` (RFC 8628 error codes, status 400) or, once, the
//! join string of a node made for the runner who approved.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use turbo_proto::pairing::{PollAnswer, UserCode};

use super::{device_key, printable, PairingError, PairingRecord, PairingState};
use crate::accounts::{AccountError, Owned};
use crate::api::{join_string, ApiState};
use crate::store::{now_unix, Store, StoreError};

/// Seconds between polls a node is told to wait.
pub const POLL_INTERVAL_SECS: u64 = 2;
/// Pairing requests one address may start per 15 minutes.
const MAX_STARTS_PER_IP: u32 = 30;

/// A pairing call that failed.
#[derive(Debug, thiserror::Error)]
pub enum PairApiError {
    /// The body is not the JSON asked for.
    #[error("{0}")]
    BadRequest(String),
    /// Too many pairing requests from this address.
    #[error("too many pairing requests from your address: try again in 15 minutes")]
    TooMany,
    /// The pairing, account or node store failed.
    #[error("{0}")]
    Unavailable(String),
}

impl From<PairingError> for PairApiError {
    fn from(e: PairingError) -> Self {
        PairApiError::Unavailable(e.to_string())
    }
}

impl From<AccountError> for PairApiError {
    fn from(e: AccountError) -> Self {
        PairApiError::Unavailable(e.to_string())
    }
}

impl From<StoreError> for PairApiError {
    fn from(e: StoreError) -> Self {
        PairApiError::Unavailable(e.to_string())
    }
}

impl IntoResponse for PairApiError {
    fn into_response(self) -> Response {
        let (status, code) = match &self {
            PairApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            PairApiError::TooMany => (StatusCode::TOO_MANY_REQUESTS, "slow_down"),
            PairApiError::Unavailable(_) => {
                (StatusCode::SERVICE_UNAVAILABLE, "temporarily_unavailable")
            }
        };
        let body = json!({"error": code, "error_description": self.to_string()});
        (status, Json(body)).into_response()
    }
}

/// What a node says of itself.
#[derive(Deserialize)]
pub(crate) struct StartRequest {
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    os: String,
}

/// A poll.
#[derive(Deserialize)]
pub(crate) struct PollRequest {
    device_code: String,
}

/// `POST /api/pair/start`.
pub(crate) async fn start<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Result<Json<StartRequest>, JsonRejection>,
) -> Result<Response, PairApiError> {
    let Json(req) = body.map_err(|e| PairApiError::BadRequest(e.body_text()))?;
    let subject = format!("pairstart:{}", peer.ip());
    if st.accounts.throttle_hit(&subject).await? > MAX_STARTS_PER_IP {
        return Err(PairApiError::TooMany);
    }
    st.pairings.sweep(now_unix());
    let device_code = hex::encode(rand::random::<[u8; 32]>());
    let device = device_key(&device_code);
    let ttl = st.pair_ttl;
    let country = st
        .control
        .geoip()
        .and_then(|g| g.country(peer.ip()))
        .map(|c| c.to_string());
    for _ in 0..8 {
        let code = UserCode::from_random(&rand::random::<[u8; 32]>())
            .ok_or_else(|| PairApiError::Unavailable("no randomness".into()))?;
        let record = PairingRecord {
            user_code: code.as_str().to_owned(),
            hostname: printable(&req.hostname, 64),
            os: printable(&req.os, 32),
            ip: peer.ip().to_string(),
            country: country.clone(),
            expires: now_unix() + ttl.as_secs(),
            state: PairingState::Pending,
        };
        if st.pairings.create(&device, &record, ttl).await? {
            tracing::info!(code = %code, ip = %peer.ip(), hostname = %record.hostname, "pairing requested");
            return Ok(Json(json!({
                "device_code": device_code,
                "user_code": code.to_string(),
                "verification_uri": "/pair",
                "verification_uri_complete": format!("/pair?code={code}"),
                "expires_in": ttl.as_secs(),
                "interval": POLL_INTERVAL_SECS,
            }))
            .into_response());
        }
    }
    Err(PairApiError::Unavailable("no free pairing code".into()))
}

/// A waiting or final answer that is not a join string.
fn waiting(answer: &PollAnswer) -> Response {
    let code = answer.error_code().unwrap_or("expired_token");
    (StatusCode::BAD_REQUEST, Json(json!({"error": code}))).into_response()
}

/// `POST /api/pair/poll`.
pub(crate) async fn poll<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    body: Result<Json<PollRequest>, JsonRejection>,
) -> Result<Response, PairApiError> {
    let Json(req) = body.map_err(|e| PairApiError::BadRequest(e.body_text()))?;
    let device = device_key(&req.device_code);
    let Some(seen) = st.pairings.by_device(&device, now_unix()).await? else {
        return Ok(waiting(&PollAnswer::Expired));
    };
    let user_id = match &seen.record.state {
        PairingState::Pending => return Ok(waiting(&PollAnswer::Pending)),
        PairingState::Denied => return Ok(waiting(&PollAnswer::Denied)),
        PairingState::Consumed { .. } => return Ok(waiting(&PollAnswer::Expired)),
        PairingState::Approved { user_id } => user_id.clone(),
    };
    // Spend the code before making the node: of two racing polls, one gets a node.
    let mut spent = seen.record.clone();
    spent.state = PairingState::Consumed {
        node_id: String::new(),
    };
    if !st.pairings.swap(&device, &seen, &spent).await? {
        return Ok(waiting(&PollAnswer::Expired));
    }
    let (node, token) = st.control.store.create_node(None).await?;
    st.accounts.grant(&user_id, Owned::Node, &node.id).await?;
    tracing::info!(user = %user_id, node = %node.id, hostname = %seen.record.hostname, "node paired");
    Ok(Json(json!({"join": join_string(&st, token), "node_id": node.id})).into_response())
}

/// How long a pairing code waits for approval when the config does not say.
pub const DEFAULT_TTL: Duration = Duration::from_secs(600);
