//! Buying credits: `/buy` makes an invoice for one of the viewer's keys (the USDC
//! gateway must be on), and `/invoices/{id}` shows it to its owner only: the amount,
//! the deposit address, the EIP-681 request as a QR code a wallet scans, and the
//! status, which [`super::live`] updates as the chain moves.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use base64::Engine;
use serde::Deserialize;

use super::customer::owned_keys;
use super::session::{self, Viewer};
use super::{render, see_other, WebError};
use crate::accounts::{Owned, Role};
use crate::api::ApiState;
use crate::store::Store;

#[derive(Template)]
#[template(path = "buy.html")]
struct BuyPage {
    title: &'static str,
    viewer: Viewer,
    payments: bool,
    keys: Vec<(String, String)>,
    price: String,
}

#[derive(Template)]
#[template(path = "invoice.html")]
struct InvoicePage {
    title: &'static str,
    viewer: Viewer,
    invoice: turbo_chain::InvoiceView,
    qr: String,
    credited: String,
}

/// `GET /buy`.
pub(crate) async fn form<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Customer).await?;
    let keys = owned_keys(&st, &viewer.user.id)
        .await?
        .into_iter()
        .filter(|k| !k.revoked)
        .map(|k| (k.id, k.name))
        .collect();
    Ok(render(BuyPage {
        title: "Buy credits",
        viewer,
        payments: st.payments.is_some(),
        keys,
        price: st.price_per_gb.clone(),
    }))
}

/// The buy form.
#[derive(Deserialize)]
pub(crate) struct Buy {
    key: String,
    usd: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /buy`: an invoice for one of the viewer's keys.
pub(crate) async fn create<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<Buy>,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Customer).await?;
    session::check_csrf(&viewer.csrf, form.csrf.as_deref())?;
    let gateway = st.payments.as_ref().ok_or(WebError::PaymentsOff)?;
    session::check_owner(&*st.accounts, &viewer, Owned::Key, &form.key).await?;
    let usd =
        turbo_chain::amount::parse_usd(&form.usd).map_err(|e| WebError::BadInput(e.to_string()))?;
    let invoice = gateway
        .create_invoice(&form.key, usd, None)
        .await
        .map_err(|e| WebError::BadInput(e.to_string()))?;
    st.accounts
        .grant(&viewer.user.id, Owned::Invoice, &invoice.id)
        .await?;
    Ok(see_other(&format!("/invoices/{}", invoice.id)))
}

/// An SVG QR code of `text`, as a `data:` URL for an `<img>`.
fn qr_data_url(text: &str) -> String {
    let svg = qrcode::QrCode::new(text.as_bytes())
        .map(|code| {
            code.render::<qrcode::render::svg::Color<'_>>()
                .min_dimensions(220, 220)
                .build()
        })
        .unwrap_or_default();
    let b64 = base64::engine::general_purpose::STANDARD.encode(svg);
    format!("data:image/svg+xml;base64,{b64}")
}

/// `GET /invoices/{id}`: the owner's invoice.
pub(crate) async fn show<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Customer).await?;
    session::check_owner(&*st.accounts, &viewer, Owned::Invoice, &id).await?;
    let gateway = st.payments.as_ref().ok_or(WebError::PaymentsOff)?;
    let invoice = gateway.invoice(&id).await.map_err(|_| WebError::NotFound)?;
    Ok(render(InvoicePage {
        title: "Invoice",
        viewer,
        qr: qr_data_url(&invoice.uri),
        credited: super::human_bytes(u64::try_from(invoice.credited_bytes).unwrap_or(0)),
        invoice,
    }))
}
