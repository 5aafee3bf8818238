//! `/pair`: a runner approves or denies a node's pairing request ([`crate::pairing`]).
//! The page shows what the device said of itself (hostname, OS), the address it asked
//! from and that address's country, so the runner can tell it is their machine.
//!
//! Codes are guessable in principle (about 2^34.6 of them), so wrong codes count
//! against the viewer: after [`MAX_PAIR_GUESSES`] in 15 minutes every lookup answers
//! 429 until the window ends.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;
use turbo_proto::pairing::UserCode;

use super::session::{self, Viewer};
use super::{render, WebError};
use crate::accounts::Role;
use crate::api::ApiState;
use crate::pairing::{PairingState, Stored};
use crate::store::{now_unix, Store};

/// Wrong codes a viewer may try per 15 minutes.
pub(crate) const MAX_PAIR_GUESSES: u32 = 20;

/// A pending request as the page shows it.
pub(crate) struct DeviceView {
    code: String,
    hostname: String,
    os: String,
    ip: String,
    country: String,
    minutes_left: u64,
}

#[derive(Template)]
#[template(path = "pair.html")]
struct PairPage {
    title: &'static str,
    viewer: Viewer,
    request: Option<DeviceView>,
    outcome: Option<String>,
}

/// `?code=`.
#[derive(Deserialize)]
pub(crate) struct CodeQuery {
    #[serde(default)]
    code: Option<String>,
}

/// An approve or deny form.
#[derive(Deserialize)]
pub(crate) struct Decision {
    #[serde(default)]
    code: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// The pending request with user code `text`, counting a wrong code against `viewer`.
async fn find<S: Store>(
    st: &ApiState<S>,
    viewer: &Viewer,
    text: &str,
) -> Result<(String, Stored), WebError> {
    let subject = format!("pairguess:{}", viewer.user.id);
    if st.accounts.throttle_count(&subject).await? >= MAX_PAIR_GUESSES {
        return Err(WebError::PairGuesses);
    }
    let found = match UserCode::parse(text) {
        Ok(code) => st.pairings.by_code(code.as_str(), now_unix()).await?,
        Err(_) => None,
    };
    match found {
        Some((device, s)) if s.record.state == PairingState::Pending => Ok((device, s)),
        _ => {
            let guesses = st.accounts.throttle_hit(&subject).await?;
            tracing::info!(user = %viewer.user.id, guesses, "wrong pairing code");
            Err(WebError::NoPairing)
        }
    }
}

fn view(s: &Stored) -> DeviceView {
    let r = &s.record;
    let code =
        UserCode::parse(&r.user_code).map_or_else(|_| r.user_code.clone(), |c| c.to_string());
    DeviceView {
        code,
        hostname: r.hostname.clone(),
        os: r.os.clone(),
        ip: r.ip.clone(),
        country: r.country.clone().unwrap_or_else(|| "unknown".into()),
        minutes_left: r.expires.saturating_sub(now_unix()).div_ceil(60),
    }
}

/// `GET /pair[?code=…]`.
pub(crate) async fn show<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Query(q): Query<CodeQuery>,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Runner).await?;
    let request = match q.code.as_deref().map(str::trim).filter(|c| !c.is_empty()) {
        Some(code) => Some(view(&find(&st, &viewer, code).await?.1)),
        None => None,
    };
    Ok(render(PairPage {
        title: "Pair a node",
        viewer,
        request,
        outcome: None,
    }))
}

/// Moves the request with code `form.code` from pending to `next`, and says so with
/// `outcome` (given the device's hostname).
async fn decide<S: Store>(
    st: &ApiState<S>,
    headers: &HeaderMap,
    form: &Decision,
    next: impl FnOnce(&Viewer) -> PairingState,
    outcome: impl FnOnce(&str) -> String,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, headers, Role::Runner).await?;
    session::check_csrf(&viewer.csrf, form.csrf.as_deref())?;
    let (device, seen) = find(st, &viewer, &form.code).await?;
    let mut record = seen.record.clone();
    record.state = next(&viewer);
    if !st.pairings.swap(&device, &seen, &record).await? {
        // Decided meanwhile (another tab or server): no longer pending.
        return Err(WebError::NoPairing);
    }
    tracing::info!(user = %viewer.user.id, hostname = %seen.record.hostname, state = ?record.state, "pairing decided");
    Ok(render(PairPage {
        title: "Pair a node",
        viewer,
        request: None,
        outcome: Some(outcome(&seen.record.hostname)),
    }))
}

/// `POST /pair/approve`.
pub(crate) async fn approve<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<Decision>,
) -> Result<Response, WebError> {
    let approved = |v: &Viewer| PairingState::Approved {
        user_id: v.user.id.clone(),
    };
    decide(&st, &headers, &form, approved, |host| {
        format!("Approved: {host} joins as your node within seconds, and shows under Nodes.")
    })
    .await
}

/// `POST /pair/deny`.
pub(crate) async fn deny<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<Decision>,
) -> Result<Response, WebError> {
    decide(
        &st,
        &headers,
        &form,
        |_| PairingState::Denied,
        |host| format!("Denied: {host} was told, and gets no token."),
    )
    .await
}
