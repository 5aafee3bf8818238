//! The authorization cache and failure limiter against a key table answering on the
//! control channel: what is asked, how often, and what a locked-out source still gets.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use turbo_proto::Credentials;

use super::*;
use crate::control::{AuthDenied, ControlReceiver, ToControl};
use crate::known_keys::{tag, KnownKeys};
use crate::testing::{block_on, control, until};

/// The control plane's key table: SHA-256 of a key -> its id.
struct Keys {
    table: RefCell<HashMap<KeyHash, Arc<str>>>,
    /// Answer every lookup "store unavailable".
    down: Cell<bool>,
    /// Hold answers until released.
    held: Cell<bool>,
    release: Notify,
    /// Lookups received.
    asked: Cell<usize>,
}

impl Keys {
    fn start(mut rx: ControlReceiver, keys: &[(&str, &str)]) -> Rc<Keys> {
        let table = keys
            .iter()
            .map(|(k, id)| (hash(k), Arc::<str>::from(*id)))
            .collect();
        let this = Rc::new(Keys {
            table: RefCell::new(table),
            down: Cell::new(false),
            held: Cell::new(false),
            release: Notify::new(),
            asked: Cell::new(0),
        });
        let keys = this.clone();
        monoio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                let ToControl::Authorize {
                    key_hash, reply, ..
                } = msg
                else {
                    continue;
                };
                keys.asked.set(keys.asked.get() + 1);
                let keys = keys.clone();
                monoio::spawn(async move {
                    while keys.held.get() {
                        keys.release.notified().await;
                    }
                    let answer = if keys.down.get() {
                        Err(AuthDenied::Unavailable)
                    } else {
                        keys.table
                            .borrow()
                            .get(&key_hash)
                            .cloned()
                            .ok_or(AuthDenied::BadKey)
                    };
                    let _ = reply.send(answer);
                });
            }
        });
        this
    }
}

fn hash(key: &str) -> KeyHash {
    Sha256::digest(key.as_bytes()).into()
}

fn creds(user: &str, key: &str) -> Credentials {
    Credentials {
        username: user.to_owned(),
        password: key.to_owned(),
    }
}

fn peer(last: u8) -> SocketAddr {
    SocketAddr::from(([203, 0, 113, last], 40_000))
}

fn cache(fail_limit: u32, known: KnownKeys) -> (AuthCache, ControlReceiver) {
    let (handle, rx) = control();
    let settings = AuthConfig {
        ttl: Duration::from_secs(30),
        negative_ttl: Duration::from_secs(5),
        fail_limit,
        fail_window: Duration::from_secs(60),
        known_keys: known,
    };
    (
        AuthCache::new(settings, handle, Arc::new(Stats::default())),
        rx,
    )
}

#[test]
fn a_valid_key_is_looked_up_once_and_its_parameters_parsed() {
    block_on(async {
        let (auth, rx) = cache(20, KnownKeys::default());
        let keys = Keys::start(rx, &[("sk_good", "key-1")]);
        for _ in 0..3 {
            let grant = auth
                .authorize(&creds("alice-country-us", "sk_good"), peer(1))
                .await
                .expect("granted");
            assert_eq!(&*grant.key_id, "key-1");
            assert_eq!(
                grant.params.country.map(|c| c.to_string()).as_deref(),
                Some("US")
            );
        }
        assert_eq!(
            keys.asked.get(),
            1,
            "answered from the cache after the first"
        );
    });
}

#[test]
fn concurrent_first_lookups_share_one_request() {
    block_on(async {
        let (auth, rx) = cache(20, KnownKeys::default());
        let keys = Keys::start(rx, &[("sk_good", "key-1")]);
        keys.held.set(true);
        let auth = Rc::new(auth);
        let tasks: Vec<_> = (0..5)
            .map(|i| {
                let auth = auth.clone();
                monoio::spawn(async move { auth.authorize(&creds("u", "sk_good"), peer(i)).await })
            })
            .collect();
        // Let every task reach its lookup (four of them join the first), then answer.
        until(|| auth.stats.auth_cache_coalesced.load(Relaxed) == 4).await;
        keys.held.set(false);
        keys.release.notify_waiters();
        for t in tasks {
            assert_eq!(&*t.await.expect("granted").key_id, "key-1");
        }
        assert_eq!(keys.asked.get(), 1, "one store lookup for five connections");
    });
}

#[test]
fn a_revoked_key_is_dropped_from_the_cache_at_once() {
    block_on(async {
        let (auth, rx) = cache(20, KnownKeys::default());
        let keys = Keys::start(rx, &[("sk_good", "key-1")]);
        auth.authorize(&creds("u", "sk_good"), peer(1))
            .await
            .expect("granted");
        keys.table.borrow_mut().clear();
        auth.apply(&KeyEvent::Revoked("key-1".into()));
        let denied = auth.authorize(&creds("u", "sk_good"), peer(1)).await;
        assert!(matches!(denied, Err(AuthDenied::BadKey)), "{denied:?}");
        assert_eq!(keys.asked.get(), 2, "asked again after the revocation");
    });
}

#[test]
fn a_locked_out_source_costs_no_lookups_but_valid_keys_still_pass() {
    block_on(async {
        let known = KnownKeys::default();
        let (auth, rx) = cache(3, known.clone());
        let keys = Keys::start(rx, &[("sk_good", "key-1"), ("sk_new", "key-2")]);
        known.insert(tag(&hash("sk_new")));
        auth.authorize(&creds("u", "sk_good"), peer(9))
            .await
            .expect("granted");
        for i in 0..3 {
            let denied = auth
                .authorize(&creds("u", &format!("sk_guess{i}")), peer(1))
                .await;
            assert!(matches!(denied, Err(AuthDenied::BadKey)), "{denied:?}");
        }
        let asked = keys.asked.get();
        let locked = auth.authorize(&creds("v", "sk_guess9"), peer(1)).await;
        assert!(matches!(locked, Err(AuthDenied::RateLimited)), "{locked:?}");
        assert_eq!(
            keys.asked.get(),
            asked,
            "a guess from a locked source is not looked up"
        );
        // A key this core has seen valid passes without a lookup.
        let good = auth.authorize(&creds("v", "sk_good"), peer(1)).await;
        assert_eq!(&*good.expect("known good passes").key_id, "key-1");
        assert_eq!(keys.asked.get(), asked);
        // A key that exists (its tag is known) is verified as usual.
        let new = auth.authorize(&creds("v", "sk_new"), peer(1)).await;
        assert_eq!(&*new.expect("existing key passes").key_id, "key-2");
        assert_eq!(keys.asked.get(), asked + 1);
        // Another source is not locked.
        let other = auth.authorize(&creds("w", "sk_guess10"), peer(2)).await;
        assert!(matches!(other, Err(AuthDenied::BadKey)), "{other:?}");
    });
}

#[test]
fn a_store_outage_fails_closed_and_is_not_cached() {
    block_on(async {
        let (auth, rx) = cache(20, KnownKeys::default());
        let keys = Keys::start(rx, &[("sk_good", "key-1")]);
        keys.down.set(true);
        let denied = auth.authorize(&creds("u", "sk_good"), peer(1)).await;
        assert!(matches!(denied, Err(AuthDenied::Unavailable)), "{denied:?}");
        keys.down.set(false);
        let granted = auth.authorize(&creds("u", "sk_good"), peer(1)).await;
        assert_eq!(
            &*granted.expect("granted once the store is back").key_id,
            "key-1"
        );
        assert_eq!(keys.asked.get(), 2);
    });
}

#[test]
fn malformed_parameters_are_refused_without_a_lookup() {
    block_on(async {
        let (auth, rx) = cache(20, KnownKeys::default());
        let keys = Keys::start(rx, &[("sk_good", "key-1")]);
        let denied = auth
            .authorize(&creds("u-country-zzzz", "sk_good"), peer(1))
            .await;
        assert!(
            matches!(denied, Err(AuthDenied::BadParams(_))),
            "{denied:?}"
        );
        assert_eq!(keys.asked.get(), 0);
    });
}
