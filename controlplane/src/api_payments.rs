//! The API's invoice routes (admin token): create an invoice for a key, and show one
//! with its current status. They answer 503 on a server without `chain_rpc`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::Deserialize;
use turbo_chain::{ChainError, Gateway, InvoiceView};

use crate::api::{check_admin, ApiError, ApiState};
use crate::store::Store;

/// The gateway, or 503.
fn gateway<S>(state: &ApiState<S>) -> Result<&Arc<Gateway>, ApiError> {
    state.payments.as_ref().ok_or(ApiError::PaymentsOff)
}

/// The HTTP status of a gateway error.
pub(crate) fn status(e: &ChainError) -> StatusCode {
    match e {
        ChainError::NoInvoice(_) => StatusCode::NOT_FOUND,
        ChainError::Amount(_) | ChainError::Ttl => StatusCode::BAD_REQUEST,
        ChainError::Rpc(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// `POST /api/invoices` body: the key to credit, and dollars as a decimal (a JSON
/// number or string).
#[derive(Deserialize)]
pub(crate) struct NewInvoice {
    key_id: String,
    usd: crate::config::UsdAmount,
    /// Seconds the invoice stays open; defaults to an hour.
    #[serde(default)]
    ttl_seconds: Option<i64>,
}

/// `POST /api/invoices`.
pub(crate) async fn create<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    body: Result<Json<NewInvoice>, JsonRejection>,
) -> Result<Json<InvoiceView>, ApiError> {
    check_admin(&state, &headers)?;
    let Json(req) = body.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let gateway = gateway(&state)?;
    // The key must exist (404 otherwise) before an address is handed out for it.
    state.control.store.key(&req.key_id).await?;
    let usd = req.usd.nano().map_err(ChainError::from)?;
    let invoice = gateway
        .create_invoice(&req.key_id, usd, req.ttl_seconds)
        .await?;
    tracing::info!(invoice = %invoice.id, key = %req.key_id, usd = %invoice.amount, "invoice created");
    Ok(Json(invoice))
}

/// `GET /api/invoices/{id}`.
pub(crate) async fn show<S: Store>(
    State(state): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<InvoiceView>, ApiError> {
    check_admin(&state, &headers)?;
    Ok(Json(gateway(&state)?.invoice(&id).await?))
}
