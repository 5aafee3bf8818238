//! Who is looking: the session cookie (`turbo_session`, 32 random bytes; the store
//! keeps only its SHA-256), the CSRF token each session carries into its forms, and
//! the double-submit token (`turbo_form`) that guards the sign-up and sign-in forms
//! before there is a session. Cookies are HttpOnly, SameSite=Lax, Path=/, and Secure
//! when the dashboard is served over TLS (`web_secure_cookies`).

use axum::http::header::{COOKIE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderValue};

use super::WebError;
use crate::accounts::{AccountStore, Owned, Role, User, WebSession, SESSION_TTL_SECS};
use crate::secrets;

/// The session cookie.
pub(crate) const SESSION_COOKIE: &str = "turbo_session";
/// The anonymous forms' double-submit cookie.
pub(crate) const FORM_COOKIE: &str = "turbo_form";

/// A signed-in user and their session.
#[derive(Debug, Clone)]
pub(crate) struct Viewer {
    /// Who.
    pub(crate) user: User,
    /// The session's CSRF token (every form carries it).
    pub(crate) csrf: String,
    /// The hash the session is stored under.
    pub(crate) token_hash: String,
}

/// A fresh random token (64 hex digits).
pub(crate) fn token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The stored form of a cookie value.
pub(crate) fn token_hash(value: &str) -> String {
    hex::encode(secrets::hash(value))
}

/// The value of cookie `name`, if the request has it.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure when `secure`;
/// `max_age` 0 deletes it.
pub(crate) fn set_cookie(name: &str, value: &str, max_age: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    let text = format!("{name}={value}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Lax{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Headers that start a session for `user` (the cookie), and the session's hash.
///
/// # Errors
/// The store's error.
pub(crate) async fn start(
    accounts: &dyn AccountStore,
    user: &User,
    secure: bool,
) -> Result<HeaderMap, WebError> {
    let value = token();
    let session = WebSession {
        user_id: user.id.clone(),
        csrf: token(),
    };
    accounts.put_session(&token_hash(&value), &session).await?;
    let mut headers = HeaderMap::new();
    headers.append(
        SET_COOKIE,
        set_cookie(SESSION_COOKIE, &value, SESSION_TTL_SECS, secure),
    );
    headers.append(SET_COOKIE, set_cookie(FORM_COOKIE, "", 0, secure));
    Ok(headers)
}

/// The signed-in viewer, if the request carries a live session.
///
/// # Errors
/// The store's error.
pub(crate) async fn viewer(
    accounts: &dyn AccountStore,
    headers: &HeaderMap,
) -> Result<Option<Viewer>, WebError> {
    let Some(value) = cookie(headers, SESSION_COOKIE).filter(|v| v.len() == 64) else {
        return Ok(None);
    };
    let hash = token_hash(value);
    let Some(session) = accounts.session(&hash).await? else {
        return Ok(None);
    };
    match accounts.user(&session.user_id).await {
        Ok(user) => Ok(Some(Viewer {
            user,
            csrf: session.csrf,
            token_hash: hash,
        })),
        Err(crate::accounts::AccountError::NoUser) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The viewer, or [`WebError::SignIn`].
///
/// # Errors
/// [`WebError::SignIn`] without a session; the store's error.
pub(crate) async fn require(
    accounts: &dyn AccountStore,
    headers: &HeaderMap,
) -> Result<Viewer, WebError> {
    viewer(accounts, headers).await?.ok_or(WebError::SignIn)
}

/// The viewer, whose role must be `role` or admin.
///
/// # Errors
/// [`WebError::SignIn`] without a session, [`WebError::Forbidden`] for another role.
pub(crate) async fn require_role(
    accounts: &dyn AccountStore,
    headers: &HeaderMap,
    role: Role,
) -> Result<Viewer, WebError> {
    let viewer = require(accounts, headers).await?;
    if viewer.user.role == role || viewer.user.role == Role::Admin {
        Ok(viewer)
    } else {
        Err(WebError::Forbidden)
    }
}

/// Checks that `viewer` owns `what` `id` (admins own everything).
///
/// # Errors
/// [`WebError::NotFound`] otherwise: the same answer as for one that does not exist.
pub(crate) async fn check_owner(
    accounts: &dyn AccountStore,
    viewer: &Viewer,
    what: Owned,
    id: &str,
) -> Result<(), WebError> {
    let owner = accounts.owner_of(what, id).await?;
    if owner.as_deref() == Some(viewer.user.id.as_str()) || viewer.user.role == Role::Admin {
        Ok(())
    } else {
        Err(WebError::NotFound)
    }
}

/// Where `role` lands after signing in.
pub(crate) fn landing(role: Role) -> &'static str {
    match role {
        Role::Customer => "/keys",
        Role::Runner => "/nodes",
        Role::Admin => "/admin",
    }
}

/// Checks a form's CSRF token against the expected one, in constant time.
///
/// # Errors
/// [`WebError::Csrf`] when it is missing or wrong.
pub(crate) fn check_csrf(expected: &str, given: Option<&str>) -> Result<(), WebError> {
    match given {
        Some(g) if !expected.is_empty() && secrets::same_str(expected, g) => Ok(()),
        _ => Err(WebError::Csrf),
    }
}

/// The anonymous forms' token: the request's `turbo_form` cookie, or a new one (with
/// the header that sets it).
pub(crate) fn form_token(headers: &HeaderMap, secure: bool) -> (String, Option<HeaderValue>) {
    match cookie(headers, FORM_COOKIE).filter(|v| v.len() == 64) {
        Some(v) => (v.to_owned(), None),
        None => {
            let v = token();
            let header = set_cookie(FORM_COOKIE, &v, 3600, secure);
            (v, Some(header))
        }
    }
}

/// Checks an anonymous form's token against its `turbo_form` cookie.
///
/// # Errors
/// [`WebError::Csrf`].
pub(crate) fn check_form(headers: &HeaderMap, given: Option<&str>) -> Result<(), WebError> {
    let expected = cookie(headers, FORM_COOKIE).unwrap_or_default();
    check_csrf(expected, given)
}
