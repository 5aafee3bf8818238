//! A customer's pages: their keys (create: the secret is shown once, with proxy lines
//! for curl, Python requests and Playwright; revoke), each key's balance (updated live
//! by [`super::live`]) and the last hour's per-minute usage from the ledger.

use std::collections::BTreeMap;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use axum::Form;
use serde::Deserialize;

use super::session::{self, Viewer};
use super::{human_bytes, render, see_other, WebError};
use crate::accounts::{Owned, Role};
use crate::api::ApiState;
use crate::store::{FeatureFields, KeyRecord, Store, StoreError};

/// Minutes of usage the chart shows.
const CHART_MINUTES: i64 = 60;

/// One key as the page lists it.
pub(crate) struct KeyRow {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) balance: u64,
    pub(crate) balance_text: String,
    pub(crate) used_text: String,
    pub(crate) revoked: bool,
}

/// A key just created: shown once.
pub(crate) struct NewKey {
    pub(crate) secret: String,
    pub(crate) curl: String,
    pub(crate) python: String,
    pub(crate) playwright: String,
}

/// One bar of the usage chart.
pub(crate) struct Bar {
    pub(crate) x: u32,
    pub(crate) y: u32,
    pub(crate) height: u32,
    pub(crate) label: String,
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    title: &'static str,
    viewer: Viewer,
    keys: Vec<KeyRow>,
    new_key: Option<NewKey>,
    chart: Option<Vec<Bar>>,
    chart_peak: String,
    outcomes: Vec<(String, u64)>,
    countries: Vec<(String, u64)>,
}

/// Closed connections the breakdowns look at (the newest, across all keys).
const RECENT_CONNECTIONS: usize = 2000;

/// The viewer's recent connections counted by outcome and by the country of the node
/// that carried them (while it is online, on any server), most frequent first.
async fn breakdowns<S: Store>(
    st: &ApiState<S>,
    keys: &[KeyRecord],
) -> (Vec<(String, u64)>, Vec<(String, u64)>) {
    let mine: std::collections::HashSet<&str> = keys.iter().map(|k| k.id.as_str()).collect();
    let records = st
        .control
        .store
        .recent_connections(RECENT_CONNECTIONS)
        .await
        .unwrap_or_default();
    let field = |r: &'_ FeatureFields, name: &str| {
        r.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_owned())
    };
    let records: Vec<_> = records
        .iter()
        .filter(|r| field(r, "key").is_some_and(|k| mine.contains(k.as_str())))
        .collect();
    let nodes: std::collections::BTreeSet<String> =
        records.iter().filter_map(|r| field(r, "node")).collect();
    let nodes: Vec<String> = nodes.into_iter().collect();
    let live = st
        .live
        .presence(Some(&nodes), crate::store::now_unix())
        .await
        .unwrap_or_default();
    let (mut outcomes, mut countries) = (BTreeMap::new(), BTreeMap::new());
    for r in records {
        let field = |name: &str| r.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        *outcomes
            .entry(field("outcome").unwrap_or("?").to_owned())
            .or_insert(0u64) += 1;
        let country = field("node")
            .and_then(|n| live.get(n))
            .and_then(|p| p.country.clone())
            .unwrap_or_else(|| "unknown".to_owned());
        *countries.entry(country).or_insert(0u64) += 1;
    }
    let sorted = |m: BTreeMap<String, u64>| {
        let mut v: Vec<(String, u64)> = m.into_iter().collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        v
    };
    (sorted(outcomes), sorted(countries))
}

fn row(k: &KeyRecord) -> KeyRow {
    KeyRow {
        id: k.id.clone(),
        name: k.name.clone(),
        balance: k.balance(),
        balance_text: human_bytes(k.balance()),
        used_text: human_bytes(k.bytes_up + k.bytes_down),
        revoked: k.revoked,
    }
}

/// The viewer's keys, newest last; keys deleted from the store are skipped.
pub(crate) async fn owned_keys<S: Store>(
    st: &ApiState<S>,
    user_id: &str,
) -> Result<Vec<KeyRecord>, WebError> {
    let mut keys = Vec::new();
    for id in st.accounts.owned(user_id, Owned::Key).await? {
        match st.control.store.key(&id).await {
            Ok(k) => keys.push(k),
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    keys.sort_by_key(|k| (k.created_unix, k.id.clone()));
    Ok(keys)
}

/// The last hour's bytes per minute over `keys`, as bars, with the peak's label; `None`
/// without a ledger.
async fn usage_chart<S: Store>(st: &ApiState<S>, keys: &[KeyRecord]) -> Option<(Vec<Bar>, String)> {
    let money = st.money.as_ref()?;
    let now = (crate::store::now_unix() / 60) as i64;
    let from = now - CHART_MINUTES + 1;
    let mut per_minute: BTreeMap<i64, u64> = BTreeMap::new();
    for k in keys {
        let rows = money.ledger.key_usage(&k.id, from, now + 1).await.ok()?;
        for r in rows {
            let minute = r["minute"].as_i64().unwrap_or(0);
            let bytes = r["up"].as_u64().unwrap_or(0) + r["down"].as_u64().unwrap_or(0);
            *per_minute.entry(minute).or_default() += bytes;
        }
    }
    let peak = per_minute.values().copied().max().unwrap_or(0).max(1);
    let bars = (from..=now)
        .map(|m| {
            let bytes = per_minute.get(&m).copied().unwrap_or(0);
            let height = (bytes as u128 * 100 / u128::from(peak)) as u32;
            Bar {
                x: ((m - from) * 10) as u32,
                y: 100 - height,
                height,
                label: human_bytes(bytes),
            }
        })
        .collect();
    Some((bars, human_bytes(peak)))
}

async fn keys_page<S: Store>(
    st: &ApiState<S>,
    viewer: Viewer,
    new_key: Option<NewKey>,
) -> Result<Response, WebError> {
    let keys = owned_keys(st, &viewer.user.id).await?;
    let chart = usage_chart(st, &keys).await;
    let (outcomes, countries) = breakdowns(st, &keys).await;
    let (chart, chart_peak) = match chart {
        Some((bars, peak)) => (Some(bars), peak),
        None => (None, String::new()),
    };
    Ok(render(KeysPage {
        title: "Keys",
        viewer,
        keys: keys.iter().map(row).collect(),
        new_key,
        chart,
        chart_peak,
        outcomes,
        countries,
    }))
}

/// `GET /keys`.
pub(crate) async fn keys<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Customer).await?;
    keys_page(&st, viewer, None).await
}

/// The create-key form.
#[derive(Deserialize)]
pub(crate) struct CreateKey {
    #[serde(default)]
    name: String,
    #[serde(default)]
    csrf: Option<String>,
}

/// `POST /keys`: a key owned by the viewer, shown once.
pub(crate) async fn create_key<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Form(form): Form<CreateKey>,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Customer).await?;
    session::check_csrf(&viewer.csrf, form.csrf.as_deref())?;
    let name = form.name.trim();
    let name = if name.is_empty() { "key" } else { name };
    if name.len() > 64 || name.chars().any(char::is_control) {
        return Err(WebError::BadInput(
            "a key name has 1 to 64 printable characters".into(),
        ));
    }
    let (rec, secret) = st.control.store.create_key(name, 0).await?;
    st.accounts
        .grant(&viewer.user.id, Owned::Key, &rec.id)
        .await?;
    tracing::info!(user = %viewer.user.id, key = %rec.id, "key created from the dashboard");
    let new_key = proxy_lines(&st, &secret);
    keys_page(&st, viewer, Some(new_key)).await
}

/// Copy-paste lines for a new key.
fn proxy_lines<S>(st: &ApiState<S>, secret: &str) -> NewKey {
    let http = format!("http://user:{secret}@{}", st.proxy_http);
    let socks = format!("socks5h://user:{secret}@{}", st.proxy_socks);
    NewKey {
        secret: secret.to_owned(),
        curl: format!("curl -x {http} https://example.com"),
        python: format!(
            "requests.get(\"https://example.com\", proxies={{\"https\": \"{http}\", \"http\": \"{http}\"}})"
        ),
        playwright: format!(
            "browser = playwright.chromium.launch(proxy={{\"server\": \"http://{}\", \"username\": \"user\", \"password\": \"{secret}\"}})",
            st.proxy_http
        ),
    }
    .with_socks(&socks)
}

impl NewKey {
    fn with_socks(mut self, socks: &str) -> NewKey {
        self.curl = format!("{}\ncurl -x {socks} https://example.com", self.curl);
        self
    }
}

/// `POST /keys/{id}/revoke`: only the key's owner (or an admin).
pub(crate) async fn revoke_key<S: Store>(
    State(st): State<Arc<ApiState<S>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(form): Form<super::auth::CsrfOnly>,
) -> Result<Response, WebError> {
    let viewer = session::require_role(&*st.accounts, &headers, Role::Customer).await?;
    session::check_csrf(&viewer.csrf, form.csrf())?;
    session::check_owner(&*st.accounts, &viewer, Owned::Key, &id).await?;
    st.control.store.revoke_key(&id).await?;
    tracing::info!(user = %viewer.user.id, key = %id, "key revoked from the dashboard");
    Ok(see_other("/keys"))
}
