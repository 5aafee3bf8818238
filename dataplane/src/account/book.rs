//! A small lease book behind a control channel, for unit tests: it keeps the store's
//! contract (grants never exceed the balance, a request seen twice, same lease and
//! sequence, is applied once, usage is charged from what the lease holds, a release
//! returns the rest, and an ended lease charges the key directly).

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use super::Accounts;
use crate::config::LeaseConfig;
use crate::control::{ControlReceiver, LeaseAnswer, LeaseError, LeaseRequest, ToControl};
use crate::testing::control;

/// The store's side of every lease of one key.
#[derive(Default)]
pub(crate) struct Book {
    pub(crate) balance: u64,
    pub(crate) held: HashMap<Arc<str>, u64>,
    pub(crate) applied: HashSet<(Arc<str>, u64)>,
    /// Every request, in arrival order (failed ones included).
    pub(crate) log: Vec<LeaseRequest>,
    /// Bytes the key was charged in total.
    pub(crate) charged: u64,
    /// Requests to fail before applying any.
    pub(crate) fail_next: u32,
    /// Leases to answer as ended.
    pub(crate) ended: HashSet<Arc<str>>,
    pub(crate) revoked: bool,
}

impl Book {
    fn answer(&mut self, r: &LeaseRequest) -> Result<LeaseAnswer, LeaseError> {
        self.log.push(r.clone());
        if self.fail_next > 0 {
            self.fail_next -= 1;
            return Err(LeaseError::Unavailable);
        }
        let first_time = self.applied.insert((r.lease_id.clone(), r.seq));
        if self.ended.contains(&r.lease_id) {
            if first_time {
                self.balance -= r.usage.bytes().min(self.balance);
                self.charged += r.usage.bytes();
            }
            return Ok(LeaseAnswer {
                ended: true,
                credits: self.balance,
                ..LeaseAnswer::default()
            });
        }
        let held = self.held.entry(r.lease_id.clone()).or_default();
        let mut granted = 0;
        if first_time {
            *held -= r.usage.bytes().min(*held);
            self.charged += r.usage.bytes();
            if r.release {
                self.balance += std::mem::take(held);
            } else {
                granted = r.want.min(self.balance);
                self.balance -= granted;
                *held += granted;
            }
        }
        Ok(LeaseAnswer {
            granted,
            held: *held,
            credits: self.balance,
            revoked: self.revoked,
            ended: false,
        })
    }
}

/// The lease book behind a control channel, with a signal on every request.
pub(crate) struct Store {
    pub(crate) book: Rc<RefCell<Book>>,
    pub(crate) seen: Rc<Notify>,
}

impl Store {
    pub(crate) fn start(balance: u64, mut rx: ControlReceiver) -> Store {
        let book = Rc::new(RefCell::new(Book {
            balance,
            ..Book::default()
        }));
        let seen = Rc::new(Notify::new());
        let (b, s) = (book.clone(), seen.clone());
        monoio::spawn(async move {
            while let Some(msg) = rx.recv().await {
                if let ToControl::Lease { request, reply } = msg {
                    let _ = reply.send(b.borrow_mut().answer(&request));
                    s.notify_waiters();
                }
            }
        });
        Store { book, seen }
    }

    /// Waits until the book satisfies `done`.
    pub(crate) async fn until(&self, done: impl Fn(&Book) -> bool) {
        loop {
            let next = self.seen.notified();
            if done(&self.book.borrow()) {
                return;
            }
            next.await;
        }
    }
}

pub(crate) fn leases(idle_release: Duration) -> LeaseConfig {
    LeaseConfig {
        server_id: "s1".into(),
        checkpoint: Duration::from_millis(20),
        idle_release,
    }
}

pub(crate) fn accounts(balance: u64, idle_release: Duration) -> (Accounts, Store) {
    let (handle, rx) = control();
    (
        Accounts::new((0, 1), leases(idle_release), handle, Arc::default()),
        Store::start(balance, rx),
    )
}
