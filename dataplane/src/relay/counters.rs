//! Per-connection counters: bytes and reads each way, the gaps between reads (for the
//! feature record), the time to connect, and the halt flag that stops both pumps when
//! the key cannot pay, and the tunnel's idle mark until its first byte.

use std::cell::{Cell, OnceCell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::account::{Account, Exhausted};
use crate::fairshare::IdleTunnel;

/// What one relay moved, counted on the server: bytes and reads each way, and the
/// gaps between reads (for the feature record).
pub(super) struct Counters<'a> {
    pub(super) account: &'a Account,
    node: OnceCell<Arc<str>>,
    /// Upstream bytes billed: what the node reported delivered, at most `sent_up`.
    pub(super) up: Cell<u64>,

    /// Upstream bytes paid for and handed to the node, billed or not yet.
    pub(super) sent_up: Cell<u64>,
    pub(super) down: Cell<u64>,
    pub(super) reads_up: Cell<u64>,
    pub(super) reads_down: Cell<u64>,
    last_read: Cell<Option<Instant>>,
    gaps: Cell<u64>,
    gap_sum_us: Cell<f64>,
    gap_sq_sum_us: Cell<f64>,
    pub(super) gap_max_us: Cell<u64>,
    pub(super) connected_after: Cell<Option<Duration>>,
    /// Set when the key cannot pay any more: both pumps stop at their next read, after
    /// finishing any write of bytes already paid for.
    pub(super) halted: Cell<Option<Exhausted>>,
    halt: tokio::sync::Notify,
    /// Counts the tunnel as idle in its key's share until its first byte.
    idle: RefCell<Option<IdleTunnel>>,
    idle_marked: Cell<bool>,
    /// The customer's first upload looked like a TLS handshake record.
    tls: Cell<bool>,
    /// Bytes in the customer's first upload read (a ClientHello, over TLS).
    first_upload: Cell<u64>,
}

impl<'a> Counters<'a> {
    pub(super) fn new(account: &'a Account) -> Self {
        Counters {
            halted: Cell::new(None),
            halt: tokio::sync::Notify::new(),
            account,
            node: OnceCell::new(),
            up: Cell::new(0),
            sent_up: Cell::new(0),
            down: Cell::new(0),
            reads_up: Cell::new(0),
            reads_down: Cell::new(0),
            last_read: Cell::new(None),
            gaps: Cell::new(0),
            gap_sum_us: Cell::new(0.0),
            gap_sq_sum_us: Cell::new(0.0),
            gap_max_us: Cell::new(0),
            connected_after: Cell::new(None),
            idle: RefCell::new(None),
            idle_marked: Cell::new(false),
            tls: Cell::new(false),
            first_upload: Cell::new(0),
        }
    }

    /// Books `n` bytes as billed to the key and carried by the node.
    fn book(&self, n: u64, upstream: bool) {
        let bytes = if upstream { &self.up } else { &self.down };
        bytes.set(bytes.get() + n);
        if let Some(node) = self.node.get() {
            self.account.spent(node, n as usize, upstream);
        }
    }

    /// Counts one read (for the feature record's read counts and gaps); the tunnel has
    /// moved a byte, so it no longer counts as idle.
    fn note_read(&self, upstream: bool) {
        self.moved();
        let reads = if upstream {
            &self.reads_up
        } else {
            &self.reads_down
        };
        reads.set(reads.get() + 1);
        let now = Instant::now();
        if let Some(prev) = self.last_read.replace(Some(now)) {
            let gap = now.duration_since(prev).as_micros() as u64;
            self.gaps.set(self.gaps.get() + 1);
            self.gap_sum_us.set(self.gap_sum_us.get() + gap as f64);
            self.gap_sq_sum_us
                .set(self.gap_sq_sum_us.get() + (gap as f64) * (gap as f64));
            self.gap_max_us.set(self.gap_max_us.get().max(gap));
        }
    }

    /// How long no byte moved either way, counting from `opened` before the first.
    pub(super) fn idle_for(&self, opened: Instant) -> Duration {
        self.last_read.get().unwrap_or(opened).elapsed()
    }

    /// Counts the tunnel as idle (moved no byte) until its first byte.
    pub(super) fn idle_until_first_byte(&self, mark: IdleTunnel) {
        *self.idle.borrow_mut() = Some(mark);
        self.idle_marked.set(true);
    }

    /// `None` once the tunnel moved a byte; else how soon it may be cut for idling
    /// (`Some(None)`: only at the relay idle timeout, its node is not under pressure).
    pub(super) fn idle_cut_after(&self) -> Option<Option<Duration>> {
        self.idle.borrow().as_ref().map(IdleTunnel::cut_after)
    }

    /// Counts the tunnel as idle in its key's share, if it never moved a byte.
    pub(super) fn count_idle(&self) {
        if let Some(mark) = self.idle.borrow().as_ref() {
            mark.count();
        }
    }

    /// Counts a cut of this never-used tunnel under pressure.
    pub(super) fn note_pressure_cut(&self) {
        if let Some(mark) = self.idle.borrow().as_ref() {
            mark.note_cut();
        }
    }

    /// Names the node that carries the bytes from now on.
    pub(super) fn carried_by(&self, node: Arc<str>) {
        let _ = self.node.set(node);
    }

    /// Stops both pumps (at their next read) because the key cannot pay.
    pub(super) fn halt(&self, why: Exhausted) {
        if self.halted.get().is_none() {
            self.halted.set(Some(why));
        }
        self.halt.notify_waiters();
    }

    /// Resolves once [`Counters::halt`] was called.
    pub(super) async fn halted(&self) {
        loop {
            let wait = self.halt.notified();
            if self.halted.get().is_some() {
                return;
            }
            wait.await;
        }
    }

    /// `n` paid upstream bytes were read from the customer and go to the node; they are
    /// billed once the node reports them delivered ([`Counters::delivered_up_to`]).
    pub(super) fn add_up(&self, n: usize) {
        self.note_read(true);
        self.sent_up.set(self.sent_up.get() + n as u64);
    }

    /// Looks at the customer's first upload (once): a TLS handshake record (content
    /// type 22, version 3.x) marks the tunnel as TLS. Costs nothing after the first.
    pub(super) fn note_upload(&self, data: &[u8]) {
        if self.reads_up.get() == 0 && self.first_upload.get() == 0 {
            self.tls
                .set(matches!(data, [0x16, 0x03, minor, ..] if *minor <= 0x04));
            self.first_upload.set(data.len() as u64);
        }
    }

    /// Whether the tunnel carried TLS, and how many bytes the customer sent after its
    /// first upload (after the ClientHello, over TLS): counted here, not as the node
    /// reports them.
    pub(super) fn tls_upload(&self) -> (bool, u64) {
        let after = self.sent_up.get().saturating_sub(self.first_upload.get());
        (self.tls.get(), after)
    }

    /// The tunnel moved a byte: it stops counting as idle.
    fn moved(&self) {
        if self.idle_marked.get() {
            self.idle_marked.set(false);
            self.idle.borrow_mut().take();
        }
    }

    /// Paid upstream bytes sent without a customer read (an HTTP head).
    pub(super) fn add_up_head(&self, n: usize) {
        self.moved();
        self.sent_up.set(self.sent_up.get() + n as u64);
    }

    /// The node reports `delivered` upstream bytes written to the target: bills what is
    /// new, never more than was sent.
    pub(super) fn delivered_up_to(&self, delivered: u64) {
        let billable = delivered.min(self.sent_up.get());
        let new = billable.saturating_sub(self.up.get());
        if new > 0 {
            self.book(new, true);
        }
    }

    /// Paid upstream bytes the node never reported delivered (given back at the end).
    pub(super) fn undelivered_up(&self) -> u64 {
        self.sent_up.get().saturating_sub(self.up.get())
    }

    /// Bills `n` downstream bytes (paid, and about to be written to the customer).
    pub(super) fn add_down(&self, n: usize) {
        self.note_read(false);
        self.book(n as u64, false);
    }

    /// Bills the per-tunnel connection cost, carried by the node like traffic (not in
    /// the byte counts of the feature record).
    pub(super) fn connection_cost(&self, n: u64) {
        if let Some(node) = self.node.get() {
            self.account.spent(node, n as usize, true);
        }
    }

    /// Mean and standard deviation of the gaps between reads, in microseconds.
    pub(super) fn gap_stats(&self) -> (u64, u64) {
        let n = self.gaps.get();
        if n == 0 {
            return (0, 0);
        }
        let mean = self.gap_sum_us.get() / n as f64;
        let var = (self.gap_sq_sum_us.get() / n as f64 - mean * mean).max(0.0);
        (mean as u64, var.sqrt() as u64)
    }
}
