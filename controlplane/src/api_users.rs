//! The API's account routes (admin token): `POST /api/users {"email", "role"}` makes a
//! dashboard account with a one-time password (returned once, stored only as its
//! argon2id hash); `GET /api/users` lists accounts (no hashes).

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::accounts::{password, AccountError, Role};
use crate::api::{check_admin, ApiError, ApiState};
use crate::store::Store;

/// `POST /api/users` body.
#[derive(Deserialize)]
pub(crate) struct NewUser {
    email: String,
    role: String,
}

/// `POST /api/users`.
pub(crate) async fn create<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    body: Result<Json<NewUser>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    check_admin(&st, &headers)?;
    let Json(body) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let role = Role::parse(&body.role)
        .ok_or_else(|| ApiError::BadRequest("role is customer, runner or admin".into()))?;
    let one_time = password::generate();
    let hash = password::hash(&one_time)
        .await
        .map_err(|e| AccountError::Unavailable(e.to_string()))?;
    let user = st.accounts.create_user(&body.email, role, hash).await?;
    tracing::info!(user = %user.id, role = role.as_str(), "account created by the operator");
    Ok((
        StatusCode::CREATED,
        Json(
            json!({"id": user.id, "email": user.email, "role": role.as_str(), "password": one_time}),
        ),
    ))
}

/// `GET /api/users`.
pub(crate) async fn list<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    check_admin(&st, &headers)?;
    let users = st.accounts.list_users().await?;
    Ok(Json(Value::Array(
        users
            .iter()
            .map(|u| json!({"id": u.id, "email": u.email, "role": u.role.as_str(), "created_unix": u.created}))
            .collect(),
    )))
}
