//! Sign-up, sign-in and sign-out. Sign-in is throttled per email: after
//! [`MAX_LOGIN_FAILURES`] wrong passwords within 15 minutes, that email cannot sign in
//! (even with the right password) until the window ends. A wrong email and a wrong
//! password get the same answer, after the same argon2 work. Sign-up is throttled per
//! client address: [`MAX_SIGNUPS_PER_IP`] attempts per 15 minutes, counted before any
//! argon2 work, so a flood of sign-ups costs the server little.

use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::extract::{ConnectInfo, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Form;
use serde::Deserialize;

use super::session;
use super::{render, see_other, WebError};
use crate::accounts::{password, Role, MAX_LOGIN_FAILURES, MAX_SIGNUPS_PER_IP};
use crate::api::ApiState;
use crate::store::Store;

/// The sign-up or sign-in page.
#[derive(Template)]
#[template(path = "auth.html")]
struct AuthPage<'a> {
    title: &'a str,
    action: &'a str,
    signup: bool,
    csrf: String,
    email: String,
    error: Option<String>,
}

/// Credentials as the forms post them.
#[derive(Deserialize)]
pub(crate) struct Credentials {
    email: String,
    password: String,
    #[serde(default)]
    role: Option<String>,
    #[serde(default)]
    csrf: Option<String>,
}

/// `GET /`: the viewer's landing page, or the sign-in page.
pub(crate) async fn home<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    match session::viewer(&*st.accounts, &headers).await? {
        Some(v) => Ok(see_other(session::landing(v.user.role))),
        None => Ok(see_other("/login")),
    }
}

fn auth_page(
    st: &ApiState<impl Store>,
    headers: &HeaderMap,
    signup: bool,
    email: String,
    error: Option<(StatusCode, String)>,
) -> Response {
    let (csrf, cookie) = session::form_token(headers, st.secure_cookies);
    let (status, error) = match error {
        Some((s, e)) => (s, Some(e)),
        None => (StatusCode::OK, None),
    };
    let page = AuthPage {
        title: if signup { "Sign up" } else { "Sign in" },
        action: if signup { "/signup" } else { "/login" },
        signup,
        csrf,
        email,
        error,
    };
    let mut r = (status, render(page)).into_response();
    if let Some(c) = cookie {
        r.headers_mut().append(SET_COOKIE, c);
    }
    r
}

/// `GET /signup`.
pub(crate) async fn signup_form<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Response {
    auth_page(&st, &headers, true, String::new(), None)
}

/// `GET /login`.
pub(crate) async fn login_form<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Response {
    auth_page(&st, &headers, false, String::new(), None)
}

/// `POST /signup`: a customer or runner account, signed in at once.
pub(crate) async fn signup<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Result<Response, WebError> {
    session::check_form(&headers, form.csrf.as_deref())?;
    let subject = format!("signup:{}", peer.ip());
    if st.accounts.throttle_hit(&subject).await? > MAX_SIGNUPS_PER_IP {
        tracing::info!(peer = %peer.ip(), "sign-up throttled");
        return Err(WebError::SignUpsThrottled);
    }
    let role = match form.role.as_deref().unwrap_or("customer") {
        "customer" => Role::Customer,
        "runner" => Role::Runner,
        _ => return Err(WebError::BadInput("choose customer or runner".into())),
    };
    let refuse = |why: String| {
        Ok(auth_page(
            &st,
            &headers,
            true,
            form.email.clone(),
            Some((StatusCode::BAD_REQUEST, why)),
        ))
    };
    let hash = match password::hash(&form.password).await {
        Ok(h) => h,
        Err(e) => return refuse(e.to_string()),
    };
    let user = match st.accounts.create_user(&form.email, role, hash).await {
        Ok(u) => u,
        Err(
            e @ (crate::accounts::AccountError::EmailTaken
            | crate::accounts::AccountError::BadEmail),
        ) => return refuse(e.to_string()),
        Err(e) => return Err(e.into()),
    };
    tracing::info!(user = %user.id, role = role.as_str(), "account created");
    let cookies = session::start(&*st.accounts, &user, st.secure_cookies).await?;
    Ok((cookies, see_other(session::landing(role))).into_response())
}

/// `POST /login`.
pub(crate) async fn login<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<Credentials>,
) -> Result<Response, WebError> {
    session::check_form(&headers, form.csrf.as_deref())?;
    let email = form.email.trim().to_ascii_lowercase();
    let subject = format!("login:{email}");
    if st.accounts.throttle_count(&subject).await? >= MAX_LOGIN_FAILURES {
        return Err(WebError::Locked);
    }
    let user = st.accounts.user_by_email(&email).await?;
    let decoy = password::decoy().await;
    let stored = user.as_ref().map_or(decoy, |u| u.password_hash.as_str());
    let matches = password::verify(&form.password, stored).await && user.is_some();
    let Some(user) = user.filter(|_| matches) else {
        let failures = st.accounts.throttle_hit(&subject).await?;
        tracing::info!(failures, "failed sign-in");
        let why = (
            StatusCode::UNAUTHORIZED,
            "wrong email or password".to_owned(),
        );
        return Ok(auth_page(&st, &headers, false, form.email, Some(why)));
    };
    let cookies = session::start(&*st.accounts, &user, st.secure_cookies).await?;
    Ok((cookies, see_other(session::landing(user.role))).into_response())
}

/// The CSRF field of a signed-in form.
#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: Option<String>,
}

impl CsrfOnly {
    /// The posted token.
    pub(crate) fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /logout`.
pub(crate) async fn logout<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<CsrfOnly>,
) -> Result<Response, WebError> {
    let viewer = session::require(&*st.accounts, &headers).await?;
    session::check_csrf(&viewer.csrf, form.csrf())?;
    st.accounts.drop_session(&viewer.token_hash).await?;
    let gone = session::set_cookie(session::SESSION_COOKIE, "", 0, st.secure_cookies);
    Ok(([(SET_COOKIE, gone)], see_other("/login")).into_response())
}
