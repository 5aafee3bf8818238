//! Verdicts applied at the proxy: what the control plane's detector decided about a key
//! (suspend it, throttle its new tunnels, block one site for it), each with an expiry,
//! and the per-site cap on new tunnels from the whole network. Checked once when a
//! tunnel opens, never per byte; a key with no restriction costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use turbo_proto::RelayStatus;

/// One restriction a verdict puts on a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restriction {
    /// The verdict's id (`v_…`), named in the refusal.
    pub verdict: Arc<str>,
    /// What it does.
    pub kind: RestrictionKind,
    /// When it ends, Unix milliseconds.
    pub expires_unix_ms: u64,
    /// The rule or feature that drove it (a short token).
    pub reason: Arc<str>,
}

/// What a restriction does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestrictionKind {
    /// No new tunnel.
    Suspend,
    /// At most this many new tunnels per second (a burst of one second's worth), and
    /// this many bytes per second over all of the key's tunnels (0: no byte limit).
    Throttle {
        /// New tunnels per second.
        tunnels_per_sec: u32,
        /// Bytes per second, both directions together, across the server.
        bytes_per_sec: u64,
    },
    /// No new tunnel to this site ([`crate::site::SiteKey::site`]).
    BlockTarget(u64),
}

/// Why a tunnel was refused by a restriction or a cap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The status the customer gets.
    pub status: RelayStatus,
    /// The `Proxy-Status` detail, naming the policy.
    pub detail: String,
}

#[derive(Debug)]
struct KeyRules {
    list: Arc<[Restriction]>,
    bucket: Mutex<(f64, Instant)>,
}

/// Every key's restrictions and the per-site cap, shared by all cores.
#[derive(Debug)]
pub struct Policies {
    any: AtomicBool,
    keys: RwLock<HashMap<Arc<str>, KeyRules>>,
    site_rate: u32,
    sites: Mutex<HashMap<u64, (f64, Instant)>>,
}

/// Sites remembered by the per-site cap before idle ones are forgotten.
const MAX_SITES: usize = 100_000;

impl Policies {
    /// No restriction yet; at most `site_rate` new tunnels per second to one site from
    /// this server (0: no cap).
    pub fn new(site_rate: u32) -> Self {
        Policies {
            any: AtomicBool::new(false),
            keys: RwLock::default(),
            site_rate,
            sites: Mutex::default(),
        }
    }

    /// Replaces `key`'s restrictions (an empty list lifts them all).
    pub fn set(&self, key: &Arc<str>, list: Arc<[Restriction]>) {
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if list.is_empty() {
            keys.remove(key);
        } else {
            let changed = keys.get(key).is_none_or(|r| r.list != list);
            if changed {
                let bucket = Mutex::new((f64::MAX, Instant::now()));
                keys.insert(key.clone(), KeyRules { list, bucket });
            }
        }
        self.any.store(!keys.is_empty(), Relaxed);
    }

    /// Whether any key has restrictions (one atomic load).
    pub fn any(&self) -> bool {
        self.any.load(Relaxed)
    }

    /// The byte limit in force on `key` and when it ends: `(bytes per second, Unix ms)`.
    pub fn byte_limit(&self, key: &str) -> Option<(u64, u64)> {
        byte_limit(&self.of(key)?)
    }

    /// The restrictions in force on `key` (expired ones included).
    pub fn of(&self, key: &str) -> Option<Arc<[Restriction]>> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(key).map(|r| r.list.clone())
    }

    /// Admits a new tunnel of `key` to `site` at `now_unix_ms`, or says which
    /// restriction or cap refused it.
    ///
    /// # Errors
    /// A [`Refusal`] naming the verdict or the cap.
    pub fn check(&self, key: &str, site: u64, now_unix_ms: u64) -> Result<(), Refusal> {
        if self.any.load(Relaxed) {
            self.check_key(key, site, now_unix_ms)?;
        }
        self.check_site(site)
    }

    fn check_key(&self, key: &str, site: u64, now_unix_ms: u64) -> Result<(), Refusal> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        let Some(rules) = keys.get(key) else {
            return Ok(());
        };
        let live = rules
            .list
            .iter()
            .filter(|r| r.expires_unix_ms > now_unix_ms);
        for r in live {
            let status = match r.kind {
                RestrictionKind::Suspend => RelayStatus::KeySuspended,
                RestrictionKind::BlockTarget(t) if t == site => RelayStatus::TargetBlocked,
                RestrictionKind::BlockTarget(_) => continue,
                RestrictionKind::Throttle {
                    tunnels_per_sec, ..
                } => {
                    if take_token(&rules.bucket, tunnels_per_sec) {
                        continue;
                    }
                    RelayStatus::KeyThrottled
                }
            };
            return Err(Refusal {
                status,
                detail: format!(
                    "{} by verdict {} ({})",
                    status.reason(),
                    r.verdict,
                    r.reason
                ),
            });
        }
        Ok(())
    }

    fn check_site(&self, site: u64) -> Result<(), Refusal> {
        if self.site_rate == 0 {
            return Ok(());
        }
        let rate = f64::from(self.site_rate);
        let mut sites = self.sites.lock().unwrap_or_else(|p| p.into_inner());
        if sites.len() >= MAX_SITES {
            let now = Instant::now();
            sites.retain(|_, (_, last)| now.duration_since(*last).as_secs_f64() < 1.0);
        }
        let (tokens, last) = sites.entry(site).or_insert((rate, Instant::now()));
        if refill(tokens, last, rate) {
            return Ok(());
        }
        Err(Refusal {
            status: RelayStatus::TargetCapped,
            detail: format!(
                "target_capped: over {} new tunnels/s to one site",
                self.site_rate
            ),
        })
    }
}

/// The byte limit among `rules`: (bytes per second, until Unix ms).
pub fn byte_limit(rules: &[Restriction]) -> Option<(u64, u64)> {
    rules.iter().find_map(|r| match r.kind {
        RestrictionKind::Throttle { bytes_per_sec, .. } if bytes_per_sec > 0 => {
            Some((bytes_per_sec, r.expires_unix_ms))
        }
        _ => None,
    })
}

/// Refills a token bucket of `rate` per second (burst `rate`) and takes one token.
fn refill(tokens: &mut f64, last: &mut Instant, rate: f64) -> bool {
    let now = Instant::now();
    *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * rate).min(rate);
    *last = now;
    if *tokens < 1.0 {
        return false;
    }
    *tokens -= 1.0;
    true
}

fn take_token(bucket: &Mutex<(f64, Instant)>, per_sec: u32) -> bool {
    let mut b = bucket.lock().unwrap_or_else(|p| p.into_inner());
    let (tokens, last) = &mut *b;
    refill(tokens, last, f64::from(per_sec.max(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(kind: RestrictionKind, expires_unix_ms: u64) -> Restriction {
        Restriction {
            verdict: "v_1".into(),
            kind,
            expires_unix_ms,
            reason: "port_sweep".into(),
        }
    }

    #[test]
    fn suspend_refuses_until_it_expires_and_names_the_verdict() {
        let p = Policies::new(0);
        let key: Arc<str> = "k_1".into();
        p.set(&key, vec![rule(RestrictionKind::Suspend, 1_000)].into());
        let refusal = p.check("k_1", 7, 999).unwrap_err();
        assert_eq!(refusal.status, RelayStatus::KeySuspended);
        assert_eq!(refusal.detail, "key_suspended by verdict v_1 (port_sweep)");
        assert!(p.check("k_1", 7, 1_000).is_ok(), "expired");
        assert!(p.check("k_2", 7, 999).is_ok(), "another key");
        p.set(&key, Arc::from(Vec::new()));
        assert!(p.check("k_1", 7, 999).is_ok(), "lifted");
    }

    #[test]
    fn a_blocked_site_is_refused_and_others_pass() {
        let p = Policies::new(0);
        p.set(
            &"k".into(),
            vec![rule(RestrictionKind::BlockTarget(9), u64::MAX)].into(),
        );
        assert_eq!(
            p.check("k", 9, 0).unwrap_err().status,
            RelayStatus::TargetBlocked
        );
        assert!(p.check("k", 8, 0).is_ok());
    }

    #[test]
    fn throttle_allows_its_rate_then_refuses() {
        let p = Policies::new(0);
        let throttle = RestrictionKind::Throttle {
            tunnels_per_sec: 3,
            bytes_per_sec: 0,
        };
        p.set(&"k".into(), vec![rule(throttle, u64::MAX)].into());
        let admitted = (0..10).filter(|_| p.check("k", 1, 0).is_ok()).count();
        assert_eq!(admitted, 3);
    }

    #[test]
    fn the_site_cap_counts_every_key() {
        let p = Policies::new(5);
        let admitted = (0..20)
            .filter(|i| p.check(&format!("k{i}"), 42, 0).is_ok())
            .count();
        assert_eq!(admitted, 5);
        assert!(p.check("k", 43, 0).is_ok(), "another site");
    }
}
