//! One node's page for its runner: earnings (base and bonus, paid, available), the
//! last days itemised, payouts with their transaction ids, and the payout settings:
//! the address, and a threshold of the runner's own at or above the server's.

use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::session::{self, Viewer};
use super::{render, see_other, WebError};
use crate::accounts::Owned;
use crate::api::ApiState;
use crate::store::Store;

/// One rewarded day.
pub(crate) struct DayRow {
    pub(crate) date: String,
    pub(crate) carried: String,
    pub(crate) base: String,
    pub(crate) bonus: String,
}

/// One payout.
pub(crate) struct PayoutRow {
    pub(crate) amount: String,
    pub(crate) status: String,
    pub(crate) reference: String,
}

#[derive(Template)]
#[template(path = "node.html")]
struct NodePage {
    title: &'static str,
    viewer: Viewer,
    id: String,
    payout_address: String,
    /// The server's threshold.
    threshold: String,
    /// The runner's own threshold in dollars, or empty for the server's.
    own_threshold: String,
    money: Option<(String, String, String, String)>,
    /// Why the earnings are held, if they are.
    held: Option<String>,
    days: Vec<DayRow>,
    payouts: Vec<PayoutRow>,
}

/// Dollars from nano-USD, to the cent (rounded down).
pub(crate) fn usd(nano: i64) -> String {
    format!(
        "${}.{:02}",
        nano / 1_000_000_000,
        (nano % 1_000_000_000).abs() / 10_000_000
    )
}

/// Dollars from nano-USD, to the micro-dollar (rounded down): a runner's earnings
/// are small amounts, a day of a few GB is cents.
pub(crate) fn usd_micro(nano: i64) -> String {
    format!(
        "${}.{:06}",
        nano / 1_000_000_000,
        (nano % 1_000_000_000).abs() / 1_000
    )
}

/// `YYYY-MM-DD` of a day number (days since 1970-01-01).
fn date(day: i64) -> String {
    let (y, m, d) = turbo_ledger::civil(day);
    format!("{y:04}-{m:02}-{d:02}")
}

/// The viewer, who must own node `id` (or be an admin); 404 otherwise.
async fn owner(
    st: &ApiState<impl Store>,
    headers: &HeaderMap,
    id: &str,
) -> Result<Viewer, WebError> {
    let viewer = session::require(&*st.accounts, headers).await?;
    session::check_owner(&*st.accounts, &viewer, Owned::Node, id).await?;
    Ok(viewer)
}

/// `GET /nodes/{id}`.
pub(crate) async fn show<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, WebError> {
    let viewer = owner(&st, &headers, &id).await?;
    let node = st.control.store.node(&id).await?;
    let (mut money, mut days, mut payouts, mut threshold) =
        (None, Vec::new(), Vec::new(), String::new());
    let mut held = None;
    if let Some(m) = &st.money {
        threshold = usd(m.payout_threshold_nano);
        if let Ok(e) = m.ledger.earnings(&id).await {
            held = e.hold.map(|h| h.reason);
            money = Some((
                usd_micro(e.earned_nano),
                usd_micro(e.bonus_nano),
                usd_micro(e.paid_nano),
                usd_micro(e.available_nano),
            ));
            days = e
                .days
                .iter()
                .map(|d| DayRow {
                    date: date(d.day),
                    carried: super::human_bytes(u64::try_from(d.carried_bytes).unwrap_or(0)),
                    base: usd_micro(d.base_nano_usd),
                    bonus: usd_micro(d.bonus_nano_usd),
                })
                .collect();
        }
        payouts = m
            .ledger
            .payouts_of(&id)
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|p| PayoutRow {
                amount: usd_micro(p.amount_nano),
                status: p.status,
                reference: p.reference.unwrap_or_default(),
            })
            .collect();
    }
    Ok(render(NodePage {
        title: "Node",
        viewer,
        id,
        payout_address: node.payout_address.unwrap_or_default(),
        own_threshold: node
            .payout_threshold_nano
            .map(turbo_chain::amount::format_usd)
            .unwrap_or_default(),
        threshold,
        money,
        held,
        days,
        payouts,
    }))
}

/// The payout settings form.
#[derive(Deserialize)]
pub(crate) struct PayoutForm {
    payout_address: String,
    /// Dollars; empty for the server's threshold.
    #[serde(default)]
    payout_threshold: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// Most a runner may ask to wait for before a payout, nano-USD ($100,000).
const MAX_OWN_THRESHOLD_NANO: i64 = 100_000 * 1_000_000_000;

/// The runner's threshold from the form: `None` for the server's; refused below the
/// server's or above [`MAX_OWN_THRESHOLD_NANO`].
fn own_threshold(text: &str, server_nano: i64) -> Result<Option<i64>, WebError> {
    let text = text.trim().trim_start_matches('$');
    if text.is_empty() {
        return Ok(None);
    }
    let refuse = || {
        WebError::BadInput(format!(
            "the payout threshold is a dollar amount from {} to {}",
            usd(server_nano),
            usd(MAX_OWN_THRESHOLD_NANO)
        ))
    };
    let nano = turbo_chain::amount::parse_usd(text).map_err(|_| refuse())?;
    if nano < server_nano || nano > MAX_OWN_THRESHOLD_NANO {
        return Err(refuse());
    }
    Ok(Some(nano))
}

/// `POST /nodes/{id}/payout`: sets where the runner is paid, and from how much.
pub(crate) async fn set_payout<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<PayoutForm>,
) -> Result<Response, WebError> {
    let viewer = owner(&st, &headers, &id).await?;
    session::check_csrf(&viewer.csrf, form.csrf.as_deref())?;
    let address = form.payout_address.trim();
    if !crate::api::valid_payout_address(address) {
        return Err(WebError::BadInput(crate::api::PAYOUT_ADDRESS_RULE.into()));
    }
    let server_nano = st.money.as_ref().map_or(0, |m| m.payout_threshold_nano);
    let threshold = own_threshold(&form.payout_threshold, server_nano)?;
    st.control.store.set_node_payout(&id, address).await?;
    st.control.store.set_node_threshold(&id, threshold).await?;
    tracing::info!(user = %viewer.user.id, node = %id, ?threshold, "payout settings set from the dashboard");
    Ok(see_other(&format!("/nodes/{id}")))
}

#[cfg(test)]
mod tests {
    #[test]
    fn days_are_dates() {
        assert_eq!(super::date(0), "1970-01-01");
        assert_eq!(super::date(20_790), "2026-12-03");
        assert_eq!(super::date(11_016), "2000-02-29");
        assert_eq!(super::usd(25_000_000_500), "$25.00");
        assert_eq!(super::usd(1_990_000_000), "$1.99");
        assert_eq!(super::usd_micro(90_123), "$0.000090");
        assert_eq!(super::usd_micro(25_000_000_500), "$25.000000");
        let server = 20_000_000_000;
        assert_eq!(super::own_threshold(" ", server).ok(), Some(None));
        assert_eq!(
            super::own_threshold("$50", server).ok(),
            Some(Some(50_000_000_000))
        );
        for bad in ["10", "abc", "-5", "100001", "1e9"] {
            assert!(super::own_threshold(bad, server).is_err(), "{bad}");
        }
    }
}
