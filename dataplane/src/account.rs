//! Per-core credit accounts. A core keeps one [`Account`] per API key that has traffic
//! on it. The account holds a lease of the key's balance from the control plane and
//! spends it locally, with no lock and no message per byte.
//!
//! - **Zero overdraft.** A relay takes bytes from the account *before* it reads
//!   ([`Account::take`]), sized to its buffer, and gives back what the read did not use.
//!   A core therefore never relays a byte that its lease does not cover.
//! - **Refill ahead.** When the balance falls under half of the last grant, the
//!   account's manager task asks for more. The size it asks for follows the traffic: it
//!   grows fourfold while leases last under a second and falls back to twice the
//!   last second's spend otherwise, between [`MIN_WANT`] and [`MAX_WANT`]. The store caps
//!   the grant by the balance (a small balance gets a small lease).
//! - **Checkpoints.** Usage (bytes each way, per node, and closed connections) is
//!   reported on every lease call and at least every `checkpoint` while it accrues, so a
//!   crash loses at most that much (and never more than the lease).
//! - **Release.** Once no connection has used the account for `idle_release`, the rest
//!   of the lease goes back to the key.
//! - **Dry and revoked keys.** When the store grants nothing and the lease is spent,
//!   every connection of the key on this core is closed ([`Account::closed`]); so is
//!   every connection of a key revoked anywhere.
//! - **Store down.** Requests that fail are retried unchanged (same sequence number),
//!   so they are applied at most once. Connections keep spending what the lease holds
//!   and close when it runs out.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tracing::{debug, info, warn};

use crate::config::LeaseConfig;
use crate::control::{ControlHandle, KeyEvent, LeaseAnswer, LeaseRequest, Usage};
use crate::stats::Stats;

/// Smallest lease asked for.
pub(crate) const MIN_WANT: u64 = 64 * 1024;
/// Largest lease asked for.
pub(crate) const MAX_WANT: u64 = 64 * 1024 * 1024;
/// Wait after a failed store request before the next one.
const RETRY_AFTER: Duration = Duration::from_millis(250);
/// A dry key is asked about again at most this often (or on a top-up event).
const DRY_RECHECK: Duration = Duration::from_secs(1);

/// Where an account stands with the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// No answer yet.
    Opening,
    /// The lease is live.
    Active,
    /// The store granted nothing: the key has no credit left.
    Dry,
    /// The key was revoked.
    Revoked,
    /// The store cannot be reached and the lease is spent.
    Unavailable,
}

/// Why an account cannot pay for more bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Exhausted {
    /// The key has no credit left.
    #[error("no credits left")]
    NoCredits,
    /// The key was revoked.
    #[error("key revoked")]
    Revoked,
    /// The store is unreachable and the lease is spent.
    #[error("credit store unavailable")]
    Unavailable,
}

/// One key's lease on one core.
pub(crate) struct Account {
    key_id: Arc<str>,
    /// Counters shared by all cores (bytes billed).
    stats: Arc<Stats>,
    balance: Cell<u64>,
    standing: Cell<Standing>,
    usage: RefCell<Usage>,
    connections: Cell<u32>,
    last_used: Cell<Instant>,
    last_grant: Cell<u64>,
    /// Wakes the manager task.
    wake: Notify,
    /// Wakes connections waiting for credit or for a reason to close.
    changed: Notify,
    /// A verdict's byte limit on this core: (bytes per second, until Unix ms).
    pace: Cell<Option<(f64, u64)>>,
    /// The pace's token bucket: (bytes, when last filled).
    bucket: Cell<(f64, Instant)>,
}

impl Account {
    fn new(key_id: Arc<str>, stats: Arc<Stats>) -> Self {
        Account {
            key_id,
            stats,
            balance: Cell::new(0),
            standing: Cell::new(Standing::Opening),
            usage: RefCell::new(Usage::default()),
            connections: Cell::new(0),
            last_used: Cell::new(Instant::now()),
            last_grant: Cell::new(0),
            wake: Notify::new(),
            changed: Notify::new(),
            pace: Cell::new(None),
            bucket: Cell::new((0.0, Instant::now())),
        }
    }

    fn exhausted(&self) -> Option<Exhausted> {
        match self.standing.get() {
            Standing::Revoked => Some(Exhausted::Revoked),
            Standing::Dry if self.balance.get() == 0 => Some(Exhausted::NoCredits),
            Standing::Unavailable if self.balance.get() == 0 => Some(Exhausted::Unavailable),
            _ => None,
        }
    }

    /// Takes up to `max` bytes of credit, waiting for a refill when the lease is spent.
    ///
    /// # Errors
    /// [`Exhausted`] when no more credit will come.
    pub(crate) async fn take(&self, max: usize) -> Result<usize, Exhausted> {
        loop {
            let changed = self.changed.notified();
            if self.standing.get() == Standing::Revoked {
                return Err(Exhausted::Revoked);
            }
            let b = self.balance.get();
            if b > 0 {
                let n = b.min(max as u64);
                self.balance.set(b - n);
                if b - n < self.last_grant.get() / 2 {
                    self.wake.notify_one();
                }
                return Ok(n as usize);
            }
            if let Some(e) = self.exhausted() {
                return Err(e);
            }
            self.wake.notify_one();
            changed.await;
        }
    }

    /// Pays for `n` bytes already in hand: returns how many are paid for (all of them,
    /// or fewer when the key cannot pay for more) and, if fewer, why.
    pub(crate) async fn pay(&self, n: usize) -> (usize, Option<Exhausted>) {
        let mut got = 0;
        while got < n {
            match self.take(n - got).await {
                Ok(k) => got += k,
                Err(e) => return (got, Some(e)),
            }
        }
        self.keep_pace(n).await;
        (n, None)
    }

    /// Takes exactly `n` bytes of credit (for data that is already in hand).
    ///
    /// # Errors
    /// [`Exhausted`]; whatever was taken is given back.
    pub(crate) async fn take_exact(&self, n: usize) -> Result<(), Exhausted> {
        let mut got = 0;
        while got < n {
            match self.take(n - got).await {
                Ok(k) => got += k,
                Err(e) => {
                    self.give_back(got);
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// Returns credit taken but not used.
    pub(crate) fn give_back(&self, n: usize) {
        self.balance
            .set(self.balance.get().saturating_add(n as u64));
    }

    /// Books `n` relayed bytes carried by `node`.
    pub(crate) fn spent(&self, node: &Arc<str>, n: usize, upstream: bool) {
        self.usage.borrow_mut().add(node, n as u64, upstream);
        self.stats
            .billed_bytes
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        self.last_used.set(Instant::now());
    }

    /// Counts one finished customer connection through `node` (once per connection,
    /// on the core where it ended).
    pub(crate) fn connection_done(&self, node: &Arc<str>) {
        self.usage.borrow_mut().add_connection(node);
    }

    /// Waits until this key's connections must close.
    pub(crate) async fn closed(&self) -> Exhausted {
        loop {
            let changed = self.changed.notified();
            if let Some(e) = self.exhausted() {
                return e;
            }
            changed.await;
        }
    }

    /// Checks that the key can pay for a new connection, waiting for the first lease.
    ///
    /// # Errors
    /// [`Exhausted`].
    pub(crate) async fn ready(&self) -> Result<(), Exhausted> {
        let n = self.take(1).await?;
        self.give_back(n);
        Ok(())
    }

    fn set_standing(&self, s: Standing) {
        self.standing.set(s);
        self.changed.notify_waiters();
    }
}

/// A connection's hold on an account; closing it counts the connection.
pub(crate) struct AccountGuard {
    account: Rc<Account>,
}

impl std::ops::Deref for AccountGuard {
    type Target = Account;
    fn deref(&self) -> &Account {
        &self.account
    }
}

impl Drop for AccountGuard {
    fn drop(&mut self) {
        let a = &self.account;
        a.connections.set(a.connections.get() - 1);
        a.last_used.set(Instant::now());
        a.wake.notify_one();
    }
}

/// The accounts of one core: a cheap handle, cloned into each account's manager.
#[derive(Clone)]
pub(crate) struct Accounts {
    book: Rc<Book>,
}

/// What the accounts of one core share.
struct Book {
    /// This core's index, part of every lease id.
    core: usize,
    /// How many cores share a key's byte limit.
    cores: usize,
    /// Lease ids, checkpoint and idle release.
    leases: LeaseConfig,
    /// Where lease requests go.
    control: ControlHandle,
    /// Counters shared by all cores.
    stats: Arc<Stats>,
    map: RefCell<HashMap<Arc<str>, Rc<Account>>>,
    serial: Cell<u64>,
    shutting_down: Cell<bool>,
    managers: Cell<usize>,
    managers_done: Notify,
}

impl Accounts {
    /// The accounts of core `core`, leasing through `control`.
    pub(crate) fn new(
        (core, cores): (usize, usize),
        leases: LeaseConfig,
        control: ControlHandle,
        stats: Arc<Stats>,
    ) -> Self {
        Accounts {
            book: Rc::new(Book {
                core,
                cores,
                leases,
                control,
                stats,
                map: RefCell::default(),
                serial: Cell::new(0),
                shutting_down: Cell::new(false),
                managers: Cell::new(0),
                managers_done: Notify::new(),
            }),
        }
    }

    /// The account of `key_id` on this core, opened (and its manager started) if needed.
    pub(crate) fn attach(&self, key_id: &Arc<str>) -> AccountGuard {
        let book = &self.book;
        let existing = book.map.borrow().get(key_id).cloned();
        let account = existing.unwrap_or_else(|| {
            let a = Rc::new(Account::new(key_id.clone(), book.stats.clone()));
            book.map.borrow_mut().insert(key_id.clone(), a.clone());
            book.serial.set(book.serial.get() + 1);
            let lease_id: Arc<str> = format!(
                "{}/{}/{}",
                book.leases.server_id,
                book.core,
                book.serial.get()
            )
            .into();
            book.managers.set(book.managers.get() + 1);
            monoio::spawn(manage(book.clone(), a.clone(), lease_id));
            a
        });
        account.connections.set(account.connections.get() + 1);
        account.last_used.set(Instant::now());
        AccountGuard { account }
    }

    /// This core's share of a key's byte limit: the limit over the cores.
    pub(crate) fn core_share(&self, limit: Option<(u64, u64)>) -> Option<(f64, u64)> {
        let cores = self.book.cores.max(1) as f64;
        limit.map(|(rate, until)| (rate as f64 / cores, until))
    }

    /// Applies a key event.
    pub(crate) fn apply(&self, event: &KeyEvent) {
        let map = self.book.map.borrow();
        match event {
            KeyEvent::Revoked(id) => {
                if let Some(a) = map.get(id) {
                    info!(key = %id, "key revoked: closing its connections");
                    a.set_standing(Standing::Revoked);
                    a.wake.notify_one();
                }
            }
            KeyEvent::ToppedUp(id) => {
                if let Some(a) = map.get(id) {
                    if a.standing.get() == Standing::Dry {
                        a.standing.set(Standing::Opening);
                        a.wake.notify_one();
                    }
                }
            }
            KeyEvent::Policy { key_id, rules } => {
                if let Some(a) = map.get(key_id) {
                    a.set_pace(self.core_share(crate::policy::byte_limit(rules)));
                }
            }
            KeyEvent::Resync
            | KeyEvent::Created(_)
            | KeyEvent::NodeRevoked(_)
            | KeyEvent::NodeReplaced { .. } => {}
        }
    }

    /// Releases every lease, waiting up to `limit` for the store to confirm.
    pub(crate) async fn settle_all(&self, limit: Duration) {
        let book = &self.book;
        book.shutting_down.set(true);
        for a in book.map.borrow().values() {
            a.wake.notify_one();
        }
        let wait = async {
            while book.managers.get() > 0 {
                let done = book.managers_done.notified();
                if book.managers.get() == 0 {
                    break;
                }
                done.await;
            }
        };
        if monoio::time::timeout(limit, wait).await.is_err() {
            warn!(
                leases = book.managers.get(),
                "leases not settled before shutdown; the store reclaims them after their TTL"
            );
        }
    }
}

use plan::{next_want, plan};

/// An account manager's state between lease calls.
struct Manager {
    book: Rc<Book>,
    a: Rc<Account>,
    lease_id: Arc<str>,
    seq: u64,
    last_report: Instant,
    dry_since: Option<Instant>,
    last_want: u64,
    granted_at: Instant,
    spent_at_grant: u64,
    spent_total: u64,
}

/// What became of a lease call.
enum Outcome {
    /// Keep managing.
    Continue,
    /// The lease is released (or left to expire): the manager ends.
    Done,
}

/// The account's manager: talks to the control plane for it until it is released.
async fn manage(book: Rc<Book>, a: Rc<Account>, lease_id: Arc<str>) {
    let mut m = Manager {
        book,
        a,
        lease_id,
        seq: 0,
        last_report: Instant::now(),
        dry_since: None,
        last_want: MIN_WANT / 4,
        granted_at: Instant::now() - Duration::from_secs(60),
        spent_at_grant: 0,
        spent_total: 0,
    };
    let mut unanswered: Option<LeaseRequest> = None;
    let mut first = true;
    loop {
        if !first {
            let tick = m.book.leases.checkpoint.min(DRY_RECHECK) / 2;
            let _ = monoio::time::timeout(tick, m.a.wake.notified()).await;
        }
        first = false;
        let request = match unanswered.take() {
            Some(r) => r,
            None => match m.next_request().await {
                Some(r) => r,
                None => continue,
            },
        };
        match m.book.control.lease(request.clone()).await {
            Ok(answer) => {
                if let Outcome::Done = m.answered(&request, &answer) {
                    return;
                }
            }
            Err(e) => {
                debug!(key = %m.a.key_id, error = %e, "lease request failed; retrying unchanged");
                let a = &m.a;
                if a.balance.get() == 0
                    && matches!(a.standing.get(), Standing::Opening | Standing::Active)
                {
                    a.set_standing(Standing::Unavailable);
                }
                unanswered = Some(request);
                if m.book.shutting_down.get() {
                    // Shutting down with the store away: leave the lease to expire.
                    finish(&m.book);
                    return;
                }
                monoio::time::sleep(RETRY_AFTER).await;
            }
        }
    }
}

impl Manager {
    /// The next lease call this round, if one is due.
    async fn next_request(&mut self) -> Option<LeaseRequest> {
        let p = plan(&self.book, &self.a, self.last_report, self.dry_since)?;
        if p.release {
            close_for_release(&self.book, &self.a).await;
        }
        let usage = std::mem::take(&mut *self.a.usage.borrow_mut());
        self.spent_total += usage.bytes();
        let want = if p.want > 0 {
            let spent = self.spent_total - self.spent_at_grant;
            self.last_want = next_want(self.last_want, self.granted_at, spent);
            self.last_want
        } else {
            0
        };
        self.seq += 1;
        Some(LeaseRequest {
            key_id: self.a.key_id.clone(),
            lease_id: self.lease_id.clone(),
            seq: self.seq,
            want,
            usage,
            release: p.release,
        })
    }

    /// Applies the store's answer to `request`.
    fn answered(&mut self, request: &LeaseRequest, answer: &LeaseAnswer) -> Outcome {
        let (a, book) = (&self.a, &self.book);
        self.last_report = Instant::now();
        if request.release {
            debug!(key = %a.key_id, lease = %self.lease_id, "lease released");
            finish(book);
            return Outcome::Done;
        }
        if answer.ended {
            // The store reclaimed the lease while we were away (its credit went back to
            // the key): drop what we held and open a new one.
            warn!(key = %a.key_id, lease = %self.lease_id, "lease had expired; opening a new one");
            a.balance.set(0);
            book.serial.set(book.serial.get() + 1);
            self.lease_id = format!("{}+{}", self.lease_id, book.serial.get()).into();
            self.seq = 0;
            a.wake.notify_one();
            return Outcome::Continue;
        }
        apply(a, answer, &mut self.dry_since);
        if answer.granted > 0 {
            self.granted_at = Instant::now();
            self.spent_at_grant = self.spent_total;
        }
        Outcome::Continue
    }
}

/// Before a release: no new connection may join, no more credit may be taken, and the
/// connections still open are closed, so that the release reports every byte.
async fn close_for_release(book: &Book, a: &Rc<Account>) {
    {
        let mut map = book.map.borrow_mut();
        if map.get(&a.key_id).is_some_and(|m| Rc::ptr_eq(m, a)) {
            map.remove(&a.key_id);
        }
    }
    a.balance.set(0);
    if a.standing.get() != Standing::Revoked {
        a.set_standing(Standing::Unavailable);
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    while a.connections.get() > 0 && Instant::now() < deadline {
        let _ = monoio::time::timeout(Duration::from_millis(100), a.wake.notified()).await;
    }
}

fn apply(a: &Account, answer: &LeaseAnswer, dry_since: &mut Option<Instant>) {
    a.balance
        .set(a.balance.get().saturating_add(answer.granted));
    if answer.granted > 0 {
        a.last_grant.set(answer.granted);
    }
    let standing = if answer.revoked {
        Standing::Revoked
    } else if answer.granted == 0 && a.balance.get() == 0 && answer.credits == 0 {
        *dry_since = Some(Instant::now());
        Standing::Dry
    } else {
        *dry_since = None;
        Standing::Active
    };
    a.set_standing(standing);
}

fn finish(book: &Book) {
    let m = book;
    m.managers.set(m.managers.get() - 1);
    m.managers_done.notify_waiters();
}

#[cfg(test)]
pub(crate) mod book;
mod pace;
mod plan;
#[cfg(test)]
mod tests;
