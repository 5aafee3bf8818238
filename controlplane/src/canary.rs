//! Canaries: every `canary_every`, each server fetches each canary URL through every
//! node connected to it, the way a customer would (its own HTTP proxy, a
//! platform-owned canary key, a sticky session pinned to the node), and compares what
//! came back with the URL's content: its configured SHA-256, or else what at least two
//! other nodes agree it is. A node that answers with other content (altered or
//! fabricated) is demoted (it leaves the route table) and its earnings are held in the
//! ledger with the reason, which the admin sees in `GET /api/nodes/{id}` and the runner
//! on the node's page. A node that merely fails to connect is not judged: targets and
//! networks fail honestly.
//!
//! A target may also say how long it `takes`: the operator's canary endpoint waits on
//! purpose before it answers. A node whose answer comes back sooner than that, even
//! with the right content, never reached the target (it replayed a copy, or made the
//! answer up): it answered faster than the network allows, and is caught the same way.
//!
//! Canary traffic is billed to the canary key, never to a customer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::money::Money;
use crate::service::ControlPlane;
use crate::store::Store;

/// One canary target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct CanaryTarget {
    /// A public `http://` or `https://` URL.
    pub url: String,
    /// Hex SHA-256 of its content; without it, the content is what at least two nodes
    /// agree on.
    #[serde(default)]
    pub sha256: Option<String>,
    /// The least time the target takes to answer (e.g. `"300ms"`: it waits that long
    /// on purpose); an answer through a node that comes sooner is caught. Defaults to
    /// none (no timing check).
    #[serde(default, with = "crate::config::optional_duration")]
    pub takes: Option<Duration>,
}

impl CanaryTarget {
    /// Whether the settings are usable: an http(s) URL, a hex SHA-256 if any, and
    /// `takes` well within a fetch's timeout.
    pub fn is_valid(&self) -> bool {
        let hex = |h: &String| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit());
        (self.url.starts_with("http://") || self.url.starts_with("https://"))
            && self.sha256.as_ref().is_none_or(hex)
            && self.takes.is_none_or(|t| t <= Duration::from_secs(10))
    }
}

/// The most of a canary's body read.
const MAX_BODY: u64 = 8 << 20;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(15);

/// What one fetch through one node gave.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Fetched {
    /// A body with this SHA-256 (hex) and length, whose response head arrived after
    /// this long.
    Body(String, u64, Duration),
    /// A reply that is not HTTP (garbled or fabricated).
    Garbled(String),
    /// No answer (refused, timed out, no route): not judged.
    Failed,
}

/// The canary runner of one server.
pub struct Canaries<S> {
    /// The control plane (nodes, sessions, demotion).
    pub control: Arc<ControlPlane<S>>,
    /// The ledger holds are kept in, when the server has one.
    pub money: Option<Arc<Money>>,
    /// The targets.
    pub targets: Vec<CanaryTarget>,
    /// This server's HTTP proxy.
    pub proxy: SocketAddr,
    /// The canary key: id and secret.
    pub key: (String, String),
}

fn fetch(proxy: SocketAddr, secret: &str, session: &str, url: &str) -> Fetched {
    use base64::Engine;
    let Ok(proxy) = ureq::Proxy::new(format!("http://{proxy}")) else {
        return Fetched::Failed;
    };
    let agent = ureq::AgentBuilder::new()
        .proxy(proxy)
        .timeout(FETCH_TIMEOUT)
        .redirects(0)
        .build();
    let credentials = format!("canary-session-{session}:{secret}");
    let auth = base64::engine::general_purpose::STANDARD.encode(credentials);
    let request = agent
        .get(url)
        .set("Proxy-Authorization", &format!("Basic {auth}"));
    let started = std::time::Instant::now();
    match request.call() {
        Ok(r) => {
            let answered = started.elapsed();
            let mut body = Vec::new();
            let mut reader = std::io::Read::take(r.into_reader(), MAX_BODY);
            let read = std::io::Read::read_to_end(&mut reader, &mut body);
            match read {
                Ok(n) => Fetched::Body(hex::encode(Sha256::digest(&body)), n as u64, answered),
                Err(e) => Fetched::Garbled(format!("body unreadable: {e}")),
            }
        }
        // The proxy's own refusals and the target's own errors are not the node's doing.
        Err(ureq::Error::Status(..)) => Fetched::Failed,
        Err(ureq::Error::Transport(t)) => match t.kind() {
            ureq::ErrorKind::BadStatus | ureq::ErrorKind::BadHeader => {
                Fetched::Garbled(format!("not HTTP: {t}"))
            }
            _ => Fetched::Failed,
        },
    }
}

/// The content `results` agree on: the hash at least two nodes returned, if one hash
/// has more such nodes than any other.
fn consensus(results: &HashMap<String, Fetched>) -> Option<String> {
    let mut votes: HashMap<&str, usize> = HashMap::new();
    for f in results.values() {
        if let Fetched::Body(hash, ..) = f {
            *votes.entry(hash).or_default() += 1;
        }
    }
    let mut ranked: Vec<(&str, usize)> = votes.into_iter().filter(|(_, n)| *n >= 2).collect();
    ranked.sort_by_key(|r| std::cmp::Reverse(r.1));
    match ranked.as_slice() {
        [(hash, n), rest @ ..] if rest.first().is_none_or(|(_, m)| m < n) => {
            Some((*hash).to_owned())
        }
        _ => None,
    }
}

/// Why `fetched` is not an honest answer from `target`, whose content is `expected`:
/// other content, garbage, or an answer sooner than the target ever gives one.
fn verdict(target: &CanaryTarget, expected: &str, fetched: &Fetched) -> Option<String> {
    let url = &target.url;
    match fetched {
        Fetched::Body(hash, len, _) if hash != expected => Some(format!(
            "canary {url}: answered {len} bytes of other content (sha256 {}…, expected {}…)",
            &hash[..12],
            &expected[..12.min(expected.len())]
        )),
        Fetched::Body(_, _, after) => target.takes.filter(|takes| after < takes).map(|takes| {
            format!(
                "canary {url}: answered in {} ms, faster than the network allows (the \
                 target takes {} ms): it never reached the target",
                after.as_millis(),
                takes.as_millis()
            )
        }),
        Fetched::Garbled(why) => Some(format!("canary {url}: answered garbage ({why})")),
        Fetched::Failed => None,
    }
}

/// Starts this server's canaries when the config names targets: a canary key of its
/// own, fetching through its own HTTP proxy (`proxy`; none: no canaries).
///
/// # Errors
/// The canary key could not be created.
pub(crate) fn start<S: Store>(
    runtime: &tokio::runtime::Runtime,
    cfg: &crate::config::ServerConfig,
    control: &Arc<ControlPlane<S>>,
    money: Option<Arc<Money>>,
    proxy: Option<SocketAddr>,
    server_id: &str,
) -> Result<(), crate::store::StoreError> {
    let Some(mut proxy) = proxy.filter(|_| !cfg.canaries.is_empty()) else {
        return Ok(());
    };
    if proxy.ip().is_unspecified() {
        proxy.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let name = format!("canary {server_id}");
    let (key, secret) = runtime.block_on(control.store.create_key(&name, 1 << 40))?;
    let canaries = Canaries {
        control: control.clone(),
        money,
        targets: cfg.canaries.clone(),
        proxy,
        key: (key.id, secret),
    };
    runtime.spawn(canaries.run(cfg.canary_every));
    tracing::info!(targets = cfg.canaries.len(), every = ?cfg.canary_every, "canaries on");
    Ok(())
}

impl<S: Store> Canaries<S> {
    /// Fetches `url` through `node`, pinning the canary session to it first; `None`
    /// when the session did not stay on it (the node left, or was full).
    async fn through(&self, node: &str, url: &str) -> Option<Fetched> {
        let session = node.replace(|c: char| !c.is_ascii_alphanumeric(), "_");
        let store = &self.control.store;
        let key = &self.key.0;
        let current = store.session_get(key, &session).await.ok()?;
        let ttl = Duration::from_secs(120);
        let pinned = store
            .session_put(key, &session, node, ttl, current.as_deref())
            .await
            .ok()?;
        if pinned != node {
            return None;
        }
        let (proxy, secret, url) = (self.proxy, self.key.1.clone(), url.to_owned());
        let pinned_session = session.clone();
        let answer =
            tokio::task::spawn_blocking(move || fetch(proxy, &secret, &pinned_session, &url));
        let fetched = answer.await.ok()?;
        let still = store.session_get(key, &session).await.ok()?;
        (still.as_deref() == Some(node)).then_some(fetched)
    }

    /// Demotes `node` and holds its earnings for `why`.
    async fn catch(&self, node: &str, why: &str) {
        if self.control.registry.demote(node) {
            tracing::warn!(node, why, "node failed a canary: demoted");
        }
        if let Some(m) = &self.money {
            match m.ledger.hold(node, why).await {
                Ok(_) => self.control.registry.set_hold(node, Some(why)),
                Err(e) => tracing::warn!(node, error = %e, "could not hold the node's earnings"),
            }
        }
    }

    /// One round: every target through every live node.
    pub async fn round(&self) {
        let nodes: Vec<String> = self
            .control
            .live_nodes()
            .keys()
            .filter(|id| !self.control.registry.is_demoted(id))
            .map(|id| id.to_string())
            .collect();
        for target in &self.targets {
            let mut results = HashMap::new();
            for node in &nodes {
                if let Some(f) = self.through(node, &target.url).await {
                    results.insert(node.clone(), f);
                }
            }
            let Some(expected) = target.sha256.clone().or_else(|| consensus(&results)) else {
                tracing::debug!(url = %target.url, "no canary content agreed yet");
                continue;
            };
            for (node, fetched) in &results {
                if let Some(why) = verdict(target, &expected, fetched) {
                    self.catch(node, &why).await;
                }
            }
        }
    }

    /// Runs a round every `every`, for as long as the server runs.
    pub async fn run(self, every: Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            self.round().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(h: &str) -> Fetched {
        Fetched::Body(h.repeat(16), 10, Duration::from_millis(500))
    }

    fn target(takes: Option<u64>) -> CanaryTarget {
        CanaryTarget {
            url: "u".into(),
            sha256: None,
            takes: takes.map(Duration::from_millis),
        }
    }

    #[test]
    fn the_content_is_what_two_nodes_agree_on() {
        let mut r: HashMap<String, Fetched> = HashMap::new();
        r.insert("a".into(), body("aaaa"));
        assert_eq!(consensus(&r), None, "one node is not enough");
        r.insert("b".into(), body("aaaa"));
        r.insert("c".into(), body("bbbb"));
        r.insert("d".into(), Fetched::Failed);
        assert_eq!(consensus(&r), Some("aaaa".repeat(16)));
        r.insert("e".into(), body("bbbb"));
        assert_eq!(consensus(&r), None, "a tie decides nothing");
    }

    #[test]
    fn only_other_content_is_judged() {
        let (good, t) = ("aaaa".repeat(16), target(None));
        assert_eq!(verdict(&t, &good, &body("aaaa")), None);
        assert!(verdict(&t, &good, &body("bbbb")).is_some_and(|w| w.contains("other content")));
        assert!(verdict(&t, &good, &Fetched::Garbled("x".into())).is_some());
        assert_eq!(
            verdict(&t, &good, &Fetched::Failed),
            None,
            "failures are not fraud"
        );
    }

    #[test]
    fn an_answer_sooner_than_the_target_gives_one_is_caught() {
        let good = "aaaa".repeat(16);
        assert_eq!(verdict(&target(Some(400)), &good, &body("aaaa")), None);
        let why = verdict(&target(Some(600)), &good, &body("aaaa")).expect("caught");
        assert!(
            why.contains("answered in 500 ms") && why.contains("takes 600 ms"),
            "{why}"
        );
    }
}
