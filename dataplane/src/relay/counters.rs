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
    pub(super) up: Cell<u64>,
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
}

impl<'a> Counters<'a> {
    pub(super) fn new(account: &'a Account) -> Self {
        Counters {
            halted: Cell::new(None),
            halt: tokio::sync::Notify::new(),
            account,
            node: OnceCell::new(),
            up: Cell::new(0),
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
        }
    }

    fn read(&self, n: usize, upstream: bool) {
        if self.idle_marked.get() && n > 0 {
            self.idle_marked.set(false);
            self.idle.borrow_mut().take();
        }
        let (bytes, reads) = if upstream {
            (&self.up, &self.reads_up)
        } else {
            (&self.down, &self.reads_down)
        };
        bytes.set(bytes.get() + n as u64);
        reads.set(reads.get() + 1);
        if let Some(node) = self.node.get() {
            self.account.spent(node, n, upstream);
        }
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

    pub(super) fn add_up(&self, n: usize) {
        self.read(n, true);
    }

    pub(super) fn add_down(&self, n: usize) {
        self.read(n, false);
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
