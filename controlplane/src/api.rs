//! The HTTP API on `--api-listen`: key and node administration for operators (bearer
//! admin token, compared in constant time), and the unauthenticated `/healthz` and
//! Prometheus `/metrics` (the API listens on loopback by default). `/metrics` shows the
//! per-node series (`node` labels) only with the admin token, or to everyone with
//! `metrics_per_node = true`.
//!
//! Every write answers only once it is durable in the store. Credits are bytes, at most
//! [`MAX_BALANCE`] per key (2^53 − 1); a creation or top-up past it is refused with 400.
//! Bodies that are not valid JSON for the route are refused with 400.
//!
//! | route | does |
//! |---|---|
//! | `POST /api/keys` `{"name","credits"}` | creates a key; the only time the key is shown |
//! | `GET /api/keys` | lists keys (no secrets) |
//! | `GET /api/keys/{id}` | one key: balance, leased, usage |
//! | `POST /api/keys/{id}/credits` `{"credits"}` | adds credits; every server hears it |
//! | `POST /api/keys/{id}/revoke` | revokes; every server closes its connections |
//! | `POST /api/nodes/invite` `{"payout_address"}` (optional) | creates a node identity; returns its join string |
//! | `GET /api/nodes` | nodes with their server-counted bytes |
//! | `GET /api/nodes/{id}` | one node: identity, payout address, revoked, live connection |
//! | `POST /api/nodes/{id}/payout` `{"payout_address"}` | sets where the runner is paid |
//! | `POST /api/nodes/{id}/revoke` | revokes its token; every server closes its connection |
//!
//! | `GET /api/ledger/reconcile` | feeds and settles usage, then reconciles the ledger (JSON) |
//! | `POST /api/payouts/run` `{"dry_run"}` | pays nodes over the threshold, on chain or into the payout CSV (409 while the ledger does not reconcile) |
//! | `GET /api/nodes/{id}/earnings` | carried bytes, earned, bonus, paid, available (nano-USD), last days |
//! | `GET /api/keys/{id}/usage?from=&to=` | per-minute usage rows (minutes since the epoch; default the last day) |
//! | `POST /api/users` `{"email","role"}` | a dashboard account with a one-time password (shown once) |
//! | `GET /api/users` | dashboard accounts |
//!
//! The dashboard's pages (`/`, `/signup`, `/login`, `/keys`, `/nodes`, `/admin`,
//! `/events`) are served here too ([`crate::web`]).
//!
//! The money routes answer 503 on a server without `--ledger`.
//!
//! A node's payout address is only ever set here, never by the node's hello.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use turbo_proto::join::JoinString;

use crate::accounts::AccountError;
use crate::secrets;
use crate::service::ControlPlane;
use crate::size::parse_size;
use crate::store::{Store, StoreError, MAX_BALANCE};

/// What the API handlers share.
pub struct ApiState<S> {
    /// The control plane.
    pub control: Arc<ControlPlane<S>>,
    /// The admin bearer token.
    pub admin_token: String,
    /// Host nodes dial, for join strings.
    pub public_host: String,
    /// Port nodes dial.
    pub public_port: u16,
    /// SHA-256 of the server certificate.
    pub pin: [u8; 32],
    /// Show per-node series on `/metrics` without the admin token.
    pub metrics_per_node: bool,
    /// The money features, when the server has a ledger.
    pub money: Option<Arc<crate::money::Money>>,
    /// The USDC gateway, when the server has `chain_rpc`.
    pub payments: Option<Arc<turbo_chain::Gateway>>,
    /// Dashboard accounts.
    pub accounts: Arc<dyn crate::accounts::AccountStore>,
    /// Mark dashboard cookies `Secure` (the dashboard is served over TLS).
    pub secure_cookies: bool,
    /// The HTTP proxy's address as customers reach it (`host:port`), for proxy lines.
    pub proxy_http: String,
    /// The SOCKS5 proxy's address as customers reach it.
    pub proxy_socks: String,
    /// The price per GB invoices lock, as configured (`1.0`), for the buy page.
    pub price_per_gb: String,
    /// Node presence and the live feed, shared by the servers on one store.
    pub live: Arc<crate::live::LiveBus>,
    /// Pairing requests (nodes joining from the browser).
    pub pairings: Arc<crate::pairing::Pairings>,
    /// How long a pairing code waits for approval.
    pub pair_ttl: std::time::Duration,
    /// The detector's settings, the defaults of manual verdicts.
    pub detect_defaults: crate::detect::DetectConfig,
    /// The network's servers, this one's announcements ([`crate::fleet`]).
    pub fleet: Arc<crate::fleet::announce::FleetHandle>,
}

/// An API failure, rendered as `{"error": ...}`.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Missing or wrong bearer token.
    #[error("unauthorized")]
    Unauthorized,
    /// The request body is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A money route on a server without a ledger.
    #[error("money features are off: start the server with --ledger postgres://...")]
    MoneyOff,
    /// The ledger failed or refused.
    #[error("{0}")]
    Money(#[from] crate::money::MoneyError),
    /// An invoice route on a server without `chain_rpc`.
    #[error("payments are off: set chain_rpc (with the ledger) to take USDC")]
    PaymentsOff,
    /// The gateway failed or refused.
    #[error("{0}")]
    Payments(#[from] turbo_chain::ChainError),
    /// The account store failed or refused.
    #[error("{0}")]
    Accounts(#[from] crate::accounts::AccountError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Store(StoreError::NotFound(_)) => StatusCode::NOT_FOUND,
            ApiError::Store(StoreError::OverMaximum) => StatusCode::BAD_REQUEST,
            ApiError::Store(StoreError::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Store(StoreError::Corrupt(_)) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::MoneyOff => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Money(crate::money::MoneyError::Ledger(
                turbo_ledger::LedgerError::Unreconciled(_)
                | turbo_ledger::LedgerError::PayoutRunning,
            )) => StatusCode::CONFLICT,
            ApiError::Money(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::PaymentsOff => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Payments(e) => crate::api_payments::status(e),
            ApiError::Accounts(e) => match e {
                AccountError::EmailTaken | AccountError::BadEmail => StatusCode::BAD_REQUEST,
                AccountError::NoUser => StatusCode::NOT_FOUND,
                AccountError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
        };
        (status, Json(json!({ "error": self.to_string() }))).into_response()
    }
}

pub(crate) fn check_admin<S>(state: &ApiState<S>, headers: &HeaderMap) -> Result<(), ApiError> {
    let given = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    if secrets::same_str(given.trim(), &state.admin_token) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}

/// Credits as a byte count or a size string.
#[derive(Deserialize)]
#[serde(untagged)]
enum Credits {
    Bytes(u64),
    Text(String),
}

impl Credits {
    /// The amount in bytes, at most [`MAX_BALANCE`].
    fn bytes(self) -> Result<u64, ApiError> {
        let bytes = match self {
            Credits::Bytes(b) => b,
            Credits::Text(t) => parse_size(&t).map_err(|e| ApiError::BadRequest(e.to_string()))?,
        };
        if bytes > MAX_BALANCE {
            return Err(ApiError::BadRequest(format!(
                "credits must be at most {MAX_BALANCE} bytes (2^53 - 1)"
            )));
        }
        Ok(bytes)
    }
}

/// The body, or 400 naming what is wrong with it.
fn body<T>(json: Result<Json<T>, JsonRejection>) -> Result<T, ApiError> {
    json.map(|Json(t)| t)
        .map_err(|e| ApiError::BadRequest(e.body_text()))
}

/// A key name: 1 to 64 bytes, no control characters.
fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.len() > 64 || name.chars().any(char::is_control) {
        return Err(ApiError::BadRequest(
            "name must be 1 to 64 bytes without control characters".into(),
        ));
    }
    Ok(())
}

#[derive(Deserialize)]
struct NewKey {
    name: String,
    credits: Credits,
}

/// `POST /api/nodes/invite` and `POST /api/nodes/{id}/payout`.
#[derive(Deserialize, Default)]
struct Payout {
    payout_address: Option<String>,
}

/// What a payout address must be (the API and the dashboard say it alike).
pub(crate) const PAYOUT_ADDRESS_RULE: &str =
    "payout_address must be 1 to 128 printable ASCII characters";

/// Whether `a` is a payout address the store takes.
pub(crate) fn valid_payout_address(a: &str) -> bool {
    !a.is_empty() && a.len() <= 128 && a.chars().all(|c| c.is_ascii_graphic())
}

impl Payout {
    /// The address, if given, checked with [`valid_payout_address`].
    fn checked(self) -> Result<Option<String>, ApiError> {
        match self.payout_address {
            Some(a) if !valid_payout_address(&a) => {
                Err(ApiError::BadRequest(PAYOUT_ADDRESS_RULE.into()))
            }
            other => Ok(other),
        }
    }
}

#[derive(Deserialize)]
struct TopUp {
    credits: Credits,
}

fn key_json(k: &crate::store::KeyRecord) -> Value {
    json!({
        "id": k.id,
        "name": k.name,
        "balance": k.balance(),
        "credits": k.credits,
        "leased": k.leased,
        "bytes_up": k.bytes_up,
        "bytes_down": k.bytes_down,
        "connections": k.connections,
        "overdraft": k.overdraft,
        "revoked": k.revoked,
        "created_unix": k.created_unix,
    })
}

/// Builds the router.
pub fn router<S: Store>(state: Arc<ApiState<S>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        .route("/metrics", get(metrics::<S>))
        .route("/api/keys", post(create_key::<S>).get(list_keys::<S>))
        .route("/api/keys/{id}", get(get_key::<S>))
        .route("/api/keys/{id}/credits", post(top_up::<S>))
        .route("/api/keys/{id}/revoke", post(revoke::<S>))
        .route(
            "/api/verdicts",
            get(crate::api_verdicts::list::<S>).post(crate::api_verdicts::impose::<S>),
        )
        .route("/api/detector", get(crate::api_verdicts::status::<S>))
        .route(
            "/api/verdicts/{id}/lift",
            post(crate::api_verdicts::lift::<S>),
        )
        .route("/api/nodes/invite", post(invite::<S>))
        .route("/api/nodes", get(crate::api_nodes::list_nodes::<S>))
        .route("/api/servers", get(crate::fleet::announce::list::<S>))
        .route("/api/nodes/{id}", get(crate::api_nodes::get_node::<S>))
        .route("/api/nodes/{id}/payout", post(set_payout::<S>))
        .route("/api/nodes/{id}/revoke", post(revoke_node::<S>))
        .route(
            "/api/ledger/reconcile",
            get(crate::api_money::reconcile::<S>),
        )
        .route("/api/payouts/run", post(crate::api_money::payouts::<S>))
        .route("/api/pair/start", post(crate::pairing::api::start::<S>))
        .route("/api/pair/poll", post(crate::pairing::api::poll::<S>))
        .route(
            "/api/users",
            post(crate::api_users::create::<S>).get(crate::api_users::list::<S>),
        )
        .route("/api/invoices", post(crate::api_payments::create::<S>))
        .route("/api/invoices/{id}", get(crate::api_payments::show::<S>))
        .route("/api/nodes/{id}/hold", post(crate::api_money::hold::<S>))
        .route(
            "/api/nodes/{id}/release",
            post(crate::api_money::release::<S>),
        )
        .route(
            "/api/nodes/{id}/earnings",
            get(crate::api_money::earnings::<S>),
        )
        .route(
            "/api/keys/{id}/usage",
            get(crate::api_money::key_usage::<S>),
        )
        .merge(crate::web::router::<S>())
        .with_state(state)
}

async fn create_key<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    json: Result<Json<NewKey>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_admin(&st, &headers)?;
    let body = body(json)?;
    let credits = body.credits.bytes()?;
    check_name(&body.name)?;
    let (rec, key) = st.control.store.create_key(&body.name, credits).await?;
    st.control.key_created(&rec.hash);
    Ok((
        StatusCode::CREATED,
        Json(json!({ "key": key, "id": rec.id, "name": rec.name, "credits": rec.credits })),
    ))
}

async fn list_keys<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let keys = st.control.store.list_keys().await?;
    Ok(Json(Value::Array(keys.iter().map(key_json).collect())))
}

async fn get_key<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let mut json = key_json(&st.control.store.key(&id).await?);
    let verdicts = crate::api_verdicts::of_key(&*st.control.store, &id).await?;
    json["verdicts"] = Value::Array(verdicts);
    Ok(Json(json))
}

async fn top_up<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    json: Result<Json<TopUp>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let bytes = body(json)?.credits.bytes()?;
    let rec = st.control.store.add_credits(&id, bytes).await?;
    tracing::info!(key = %id, bytes, "credits added");
    Ok(Json(key_json(&rec)))
}

async fn revoke<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    st.control.store.revoke_key(&id).await?;
    tracing::info!(key = %id, "key revoked");
    Ok(Json(key_json(&st.control.store.key(&id).await?)))
}

async fn metrics<S: Store>(State(st): State<Arc<ApiState<S>>>, headers: HeaderMap) -> Response {
    let per_node = st.metrics_per_node || check_admin(&st, &headers).is_ok();
    let body = st
        .control
        .metrics()
        .map(|m| m.render(per_node))
        .unwrap_or_default();
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
        .into_response()
}

async fn invite<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_admin(&st, &headers)?;
    // The body is optional: an empty one (or `null`) invites without a payout address.
    let payout = if body.iter().all(u8::is_ascii_whitespace) {
        Payout::default()
    } else {
        serde_json::from_slice::<Option<Payout>>(&body)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?
            .unwrap_or_default()
    }
    .checked()?;
    let (node, token) = st.control.store.create_node(payout.as_deref()).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "join": join_string(&st, token), "node_id": node.id })),
    ))
}

/// The join string a node with `token` starts with.
pub(crate) fn join_string<S>(st: &ApiState<S>, token: String) -> String {
    JoinString {
        token,
        host: st.public_host.clone(),
        port: st.public_port,
        pin: Some(st.pin),
    }
    .to_string()
}

async fn set_payout<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Payout>,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let address = body
        .checked()?
        .ok_or_else(|| ApiError::BadRequest("payout_address is required".into()))?;
    st.control.store.set_node_payout(&id, &address).await?;
    tracing::info!(node = %id, "payout address set");
    crate::api_nodes::get_node(State(st), Path(id), headers).await
}

async fn revoke_node<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    st.control.store.revoke_node(&id).await?;
    tracing::info!(node = %id, "node revoked");
    let node = st.control.store.node(&id).await?;
    Ok(Json(crate::api_nodes::node_json(&st, &node, None, None)))
}

#[cfg(test)]
#[path = "api_tests.rs"]
mod tests;
