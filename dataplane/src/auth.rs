//! Customer authorization on a core: username parameters are parsed here, the key is
//! hashed here, and a per-core cache answers repeat customers without a message to the
//! control plane.
//!
//! - A known key is cached for `auth_ttl`; an unknown or revoked one for
//!   `auth_negative_ttl`. A [`KeyEvent::Revoked`] drops a key's entries at once.
//! - Concurrent first lookups of the same key on one core share one control-plane
//!   request, so a burst of connections with one unknown key costs at most one store
//!   lookup per core.
//! - Failures are counted per source IP and per username. One with `auth_fail_limit`
//!   failures inside `auth_fail_window` is locked out: a presented key is then refused
//!   without any lookup unless it is one this core has seen valid (even past its cache
//!   TTL) or its tag is among the keys that exist ([`crate::known_keys`]), in which
//!   case it is verified as usual. So stuffing from one address, or against one
//!   account name from many, costs no lookups once locked, and a valid key, even one
//!   new to the core behind a shared NAT, is never refused for someone else's
//!   failures. Each repeat offence doubles the lockout, from one window up to
//!   [`MAX_LOCKOUT_WINDOWS`] windows.
//! - When the control plane cannot decide (store down), nothing is cached and the
//!   customer is refused: new keys fail closed.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Instant;

use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use turbo_proto::params::parse_username;
use turbo_proto::Credentials;

use crate::config::AuthConfig;
use crate::control::{AuthDenied, AuthGrant, ControlHandle, KeyEvent};
use crate::stats::Stats;

/// Entries beyond this are not cached (expired ones are swept first).
const MAX_ENTRIES: usize = 100_000;
/// Source addresses tracked for failures beyond this are not tracked.
const MAX_TRACKED_IPS: usize = 100_000;

/// The longest lockout, in windows (a repeat offender's lockout doubles up to this).
pub(crate) const MAX_LOCKOUT_WINDOWS: u32 = 64;

type KeyHash = [u8; 32];
type Answer = Result<Arc<str>, AuthDenied>;

struct Entry {
    answer: Answer,
    until: Instant,
}

/// One lookup in flight, shared by every connection that presented the same key.
#[derive(Default)]
struct Pending {
    done: Notify,
    answer: RefCell<Option<Answer>>,
}

/// Who failed: a source address, or an account name (hashed, so entries stay small).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Subject {
    Ip(IpAddr),
    User(u64),
}

struct Failures {
    count: u32,
    window_start: Instant,
    /// Lockouts so far; each doubles the next one.
    strikes: u32,
    locked_until: Option<Instant>,
}

/// A core's authorization cache and failure limiter.
pub(crate) struct AuthCache {
    /// TTLs, failure limits and the known-key tags.
    settings: AuthConfig,
    /// Where lookups go.
    control: ControlHandle,
    /// Counters of hits, misses and refusals.
    stats: Arc<Stats>,
    entries: RefCell<HashMap<KeyHash, Entry>>,
    pending: RefCell<HashMap<KeyHash, Rc<Pending>>>,
    failures: RefCell<HashMap<Subject, Failures>>,
    user_hasher: std::collections::hash_map::RandomState,
}

impl AuthCache {
    /// An empty cache that asks `control` and counts into `stats`.
    pub(crate) fn new(settings: AuthConfig, control: ControlHandle, stats: Arc<Stats>) -> Self {
        AuthCache {
            settings,
            control,
            stats,
            entries: RefCell::default(),
            pending: RefCell::default(),
            failures: RefCell::default(),
            user_hasher: std::collections::hash_map::RandomState::default(),
        }
    }

    /// Authorizes `credentials` from `peer`.
    ///
    /// # Errors
    /// [`AuthDenied`], already counted in the stats.
    pub(crate) async fn authorize(
        &self,
        credentials: &Credentials,
        peer: SocketAddr,
    ) -> Result<AuthGrant, AuthDenied> {
        let result = self.decide(credentials, peer).await;
        if let Err(denied) = &result {
            self.stats.auth_failure(denied);
            if matches!(denied, AuthDenied::BadKey | AuthDenied::BadParams(_)) {
                self.record_failure(Subject::Ip(peer.ip()));
                self.record_failure(self.user_subject(&credentials.username));
            }
        }
        result
    }

    async fn decide(
        &self,
        credentials: &Credentials,
        peer: SocketAddr,
    ) -> Result<AuthGrant, AuthDenied> {
        let hash: KeyHash = Sha256::digest(credentials.password.as_bytes()).into();
        let locked = self.is_locked(Subject::Ip(peer.ip()))
            || self.is_locked(self.user_subject(&credentials.username));
        if locked {
            // Someone failed too often from this address or with this username: a key
            // the core has seen valid passes (revocations still remove it at once), one
            // that exists is verified below, and a guess is refused without a lookup.
            if let Some(key_id) = self.known_good(&hash) {
                let params = parse_username(&credentials.username)?;
                return Ok(AuthGrant { key_id, params });
            }
            if !self.settings.known_keys.may_exist(&hash) {
                return Err(AuthDenied::RateLimited);
            }
        }
        let params = parse_username(&credentials.username)?;
        let key_id = self.lookup(hash, peer).await?;
        Ok(AuthGrant { key_id, params })
    }

    fn cached(&self, hash: &KeyHash) -> Option<Answer> {
        let entries = self.entries.borrow();
        let e = entries.get(hash)?;
        (e.until > Instant::now()).then(|| e.answer.clone())
    }

    async fn lookup(&self, hash: KeyHash, peer: SocketAddr) -> Answer {
        if let Some(answer) = self.cached(&hash) {
            self.stats.auth_cache_hits.fetch_add(1, Relaxed);
            return answer;
        }
        let shared = self.pending.borrow().get(&hash).cloned();
        if let Some(p) = shared {
            self.stats.auth_cache_coalesced.fetch_add(1, Relaxed);
            loop {
                let done = p.done.notified();
                if let Some(answer) = p.answer.borrow().clone() {
                    return answer;
                }
                done.await;
            }
        }
        self.stats.auth_cache_misses.fetch_add(1, Relaxed);
        let p = Rc::new(Pending::default());
        self.pending.borrow_mut().insert(hash, p.clone());
        let answer = self.control.authorize(hash, peer).await;
        self.pending.borrow_mut().remove(&hash);
        let ttl = match &answer {
            Ok(_) => Some(self.settings.ttl),
            Err(AuthDenied::BadKey) => Some(self.settings.negative_ttl),
            Err(_) => None,
        };
        if let Some(ttl) = ttl {
            self.insert(hash, answer.clone(), Instant::now() + ttl);
        }
        *p.answer.borrow_mut() = Some(answer.clone());
        p.done.notify_waiters();
        answer
    }

    fn insert(&self, hash: KeyHash, answer: Answer, until: Instant) {
        let mut entries = self.entries.borrow_mut();
        if entries.len() >= MAX_ENTRIES {
            let now = Instant::now();
            entries.retain(|_, e| e.until > now);
        }
        if entries.len() < MAX_ENTRIES {
            entries.insert(hash, Entry { answer, until });
        }
    }

    /// Applies a key event to the cache.
    pub(crate) fn apply(&self, event: &KeyEvent) {
        match event {
            KeyEvent::Revoked(id) => self
                .entries
                .borrow_mut()
                .retain(|_, e| !matches!(&e.answer, Ok(k) if k == id)),
            KeyEvent::Resync => self.entries.borrow_mut().clear(),
            KeyEvent::ToppedUp(_)
            | KeyEvent::Created(_)
            | KeyEvent::NodeRevoked(_)
            | KeyEvent::NodeReplaced { .. }
            | KeyEvent::Policy { .. } => {}
        }
    }

    fn known_good(&self, hash: &KeyHash) -> Option<Arc<str>> {
        match &self.entries.borrow().get(hash)?.answer {
            Ok(key_id) => Some(key_id.clone()),
            Err(_) => None,
        }
    }

    fn user_subject(&self, username: &str) -> Subject {
        use std::hash::BuildHasher;
        Subject::User(self.user_hasher.hash_one(username))
    }

    fn is_locked(&self, who: Subject) -> bool {
        self.failures
            .borrow()
            .get(&who)
            .and_then(|f| f.locked_until)
            .is_some_and(|until| until > Instant::now())
    }

    fn record_failure(&self, who: Subject) {
        let mut failures = self.failures.borrow_mut();
        let window = self.settings.fail_window;
        let forget_after = window * MAX_LOCKOUT_WINDOWS * 2;
        let now = Instant::now();
        if failures.len() >= MAX_TRACKED_IPS {
            failures.retain(|_, f| {
                let last = f
                    .locked_until
                    .map_or(f.window_start, |u| u.max(f.window_start));
                now.saturating_duration_since(last) < forget_after
            });
        }
        let fresh = || Failures {
            count: 0,
            window_start: now,
            strikes: 0,
            locked_until: None,
        };
        if failures.len() >= MAX_TRACKED_IPS && !failures.contains_key(&who) {
            return;
        }
        let f = failures.entry(who).or_insert_with(fresh);
        if now.duration_since(f.window_start) >= window {
            f.count = 0;
            f.window_start = now;
        }
        f.count = f.count.saturating_add(1);
        if f.count >= self.settings.fail_limit && f.locked_until.is_none_or(|u| u <= now) {
            f.strikes = f.strikes.saturating_add(1);
            let windows = 1u32 << (f.strikes - 1).min(MAX_LOCKOUT_WINDOWS.trailing_zeros());
            f.locked_until = Some(now + window * windows);
            f.count = 0;
            f.window_start = now;
        }
    }
}

#[cfg(test)]
mod tests;
