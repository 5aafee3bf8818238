//! The dashboard, served by `turbo-server` on `--api-listen`: pages rendered on the
//! server (askama templates in `controlplane/templates`), one small stylesheet and one
//! small script embedded in the binary, nothing from a CDN.
//!
//! - [`auth`]: sign-up, sign-in (throttled per email), sign-out.
//! - [`customer`]: a customer's keys (create, shown once with proxy lines; revoke),
//!   balances and per-minute usage.
//! - [`buy`]: buying credits with USDC (an invoice with its QR code and live status).
//! - [`runner`]: a runner's nodes and the "add a node" join command.
//! - [`earnings`]: one node's earnings by day, payouts and payout address.
//! - [`pair`]: approving or denying a node's pairing request.
//! - [`admin`]: the network overview.
//! - [`live`]: server-sent events with the viewer's balances and nodes.
//!
//! Every form carries a CSRF token; a resource of another user answers 404, as one
//! that does not exist. Pages send a strict Content-Security-Policy (same origin only).

use askama::Template;
use axum::http::header::{CONTENT_SECURITY_POLICY, LOCATION, X_CONTENT_TYPE_OPTIONS};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;

use crate::accounts::AccountError;
use crate::api::ApiState;
use crate::store::{Store, StoreError};

pub(crate) mod admin;
pub(crate) mod auth;
pub(crate) mod buy;
pub(crate) mod customer;
pub(crate) mod earnings;
pub(crate) mod live;
pub(crate) mod pair;
pub(crate) mod runner;
pub(crate) mod session;

/// Why a page failed.
#[derive(Debug, thiserror::Error)]
pub enum WebError {
    /// No session: go to the sign-in page.
    #[error("sign in first")]
    SignIn,
    /// A form without its CSRF token, or with a wrong one.
    #[error("this form has expired or did not come from this site: reload the page")]
    Csrf,
    /// Not there, or not the viewer's (the same answer, so ids leak nothing).
    #[error("not found")]
    NotFound,
    /// The viewer's role may not open this page.
    #[error("this page is not for your account")]
    Forbidden,
    /// Too many failed sign-ins for this email.
    #[error("too many failed sign-ins for this email: try again in 15 minutes")]
    Locked,
    /// No pending pairing request has this code.
    #[error("no pending pairing request has this code: check it, or run turbo-node pair again")]
    NoPairing,
    /// Too many wrong pairing codes.
    #[error("too many wrong pairing codes: try again in 15 minutes")]
    PairGuesses,
    /// Too many sign-ups from this address.
    #[error("too many sign-ups from your address: try again in 15 minutes")]
    SignUpsThrottled,
    /// Payments (USDC) are off on this server.
    #[error("payments are off on this server (no chain_rpc)")]
    PaymentsOff,
    /// The form's input is unusable (said in the message).
    #[error("{0}")]
    BadInput(String),
    /// The account store failed.
    #[error("{0}")]
    Accounts(#[from] AccountError),
    /// The main store failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A template failed to render (a bug).
    #[error("page rendering failed")]
    Render(#[from] askama::Error),
}

/// A plain error page.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    title: &'static str,
    message: String,
}

impl IntoResponse for WebError {
    fn into_response(self) -> Response {
        let (status, title) = match &self {
            WebError::SignIn => {
                return (StatusCode::SEE_OTHER, [(LOCATION, "/login")]).into_response();
            }
            WebError::Csrf => (StatusCode::FORBIDDEN, "Forbidden"),
            WebError::NotFound => (StatusCode::NOT_FOUND, "Not found"),
            WebError::Forbidden => (StatusCode::FORBIDDEN, "Forbidden"),
            WebError::Locked => (StatusCode::TOO_MANY_REQUESTS, "Sign-in locked"),
            WebError::SignUpsThrottled => (StatusCode::TOO_MANY_REQUESTS, "Slow down"),
            WebError::NoPairing => (StatusCode::NOT_FOUND, "No such pairing code"),
            WebError::PairGuesses => (StatusCode::TOO_MANY_REQUESTS, "Slow down"),
            WebError::BadInput(_) => (StatusCode::BAD_REQUEST, "Bad request"),
            WebError::PaymentsOff => (StatusCode::SERVICE_UNAVAILABLE, "Payments off"),
            WebError::Accounts(AccountError::EmailTaken | AccountError::BadEmail) => {
                (StatusCode::BAD_REQUEST, "Bad request")
            }
            WebError::Store(StoreError::NotFound(_)) => (StatusCode::NOT_FOUND, "Not found"),
            WebError::Accounts(_) | WebError::Store(_) | WebError::Render(_) => {
                tracing::warn!(error = %self, "dashboard page failed");
                (StatusCode::SERVICE_UNAVAILABLE, "Unavailable")
            }
        };
        let page = ErrorPage {
            title,
            message: self.to_string(),
        };
        (status, page_response(page.render())).into_response()
    }
}

/// A rendered page with the dashboard's security headers.
pub(crate) fn page_response(rendered: Result<String, askama::Error>) -> Response {
    match rendered {
        Ok(html) => {
            let mut r = Html(html).into_response();
            let h = r.headers_mut();
            h.insert(
                CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(
                    "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                     script-src 'self'; frame-ancestors 'none'; form-action 'self'",
                ),
            );
            h.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            r
        }
        Err(e) => WebError::Render(e).into_response(),
    }
}

/// Renders `page`.
pub(crate) fn render(page: impl Template) -> Response {
    page_response(page.render())
}

/// A redirect after a form (303, so the browser GETs the target).
pub(crate) fn see_other(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(LOCATION, to.to_owned())]).into_response()
}

const STYLE: &str = include_str!("../../assets/app.css");
const SCRIPT: &str = include_str!("../../assets/live.js");

/// The dashboard's routes.
pub fn router<S: Store>() -> Router<Arc<ApiState<S>>> {
    Router::new()
        .route("/", get(auth::home::<S>))
        .route(
            "/signup",
            get(auth::signup_form::<S>).post(auth::signup::<S>),
        )
        .route("/login", get(auth::login_form::<S>).post(auth::login::<S>))
        .route("/logout", post(auth::logout::<S>))
        .route(
            "/keys",
            get(customer::keys::<S>).post(customer::create_key::<S>),
        )
        .route("/keys/{id}/revoke", post(customer::revoke_key::<S>))
        .route(
            "/nodes",
            get(runner::nodes::<S>).post(runner::add_node::<S>),
        )
        .route("/buy", get(buy::form::<S>).post(buy::create::<S>))
        .route("/invoices/{id}", get(buy::show::<S>))
        .route("/nodes/{id}", get(earnings::show::<S>))
        .route("/nodes/{id}/payout", post(earnings::set_payout::<S>))
        .route("/admin", get(admin::overview::<S>))
        .route("/pair", get(pair::show::<S>))
        .route("/pair/approve", post(pair::approve::<S>))
        .route("/pair/deny", post(pair::deny::<S>))
        .route("/events", get(live::events::<S>))
        .route(
            "/static/app.css",
            get(|| async { ([("content-type", "text/css; charset=utf-8")], STYLE) }),
        )
        .route(
            "/static/live.js",
            get(|| async { ([("content-type", "text/javascript; charset=utf-8")], SCRIPT) }),
        )
}

/// Bytes as a short human figure (`1.5 GB`).
pub(crate) fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

impl From<crate::pairing::PairingError> for WebError {
    fn from(e: crate::pairing::PairingError) -> Self {
        WebError::Store(StoreError::Unavailable(e.to_string()))
    }
}
