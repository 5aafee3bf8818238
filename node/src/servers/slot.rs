//! One of the node's server connections ("slots"): the server it aims at, its lanes,
//! and what its connections learn that the supervisor ([`super`]) acts on (admitted,
//! down since when, the server drains).

use std::cell::{Cell, RefCell};
use std::time::Instant;

/// Lanes of one server, and their state.
#[derive(Debug)]
pub struct Slot {
    /// The slot's number: its lanes show in the status as `256 × number + lane`.
    pub number: u8,
    /// The server's id, once a server list named it (the join string does not).
    pub server: RefCell<Option<String>>,
    /// Its `host:port`.
    pub addr: String,
    /// Lanes the server asked for in its latest welcome (its core count).
    pub lanes: Cell<u8>,
    /// The slot has carried a stream: an idle node keeps one lane per server, so that
    /// a server's thousands of idle nodes cost one connection each.
    pub carrying: Cell<bool>,
    /// Signalled when a welcome arrives, so that missing lanes are opened.
    pub lanes_changed: tokio::sync::Notify,
    /// Lanes admitted now.
    up: Cell<u32>,
    /// Since when no lane is admitted (`None` while one is).
    down_since: Cell<Option<Instant>>,
    /// The server said it drains.
    pub draining: Cell<bool>,
    /// The supervisor is leaving this server (the node itself goes on).
    pub retired: Cell<bool>,
}

impl Slot {
    /// Slot `number` aiming at `addr` (server `server`, if known).
    pub fn new(number: u8, addr: String, server: Option<String>) -> Self {
        Slot {
            number,
            server: RefCell::new(server),
            addr,
            lanes: Cell::new(1),
            carrying: Cell::new(false),
            lanes_changed: tokio::sync::Notify::new(),
            up: Cell::new(0),
            down_since: Cell::new(Some(Instant::now())),
            draining: Cell::new(false),
            retired: Cell::new(false),
        }
    }

    /// The status index of lane `lane`.
    pub fn status_lane(&self, lane: u8) -> u16 {
        u16::from(self.number) * 256 + u16::from(lane)
    }

    /// A lane was admitted.
    pub fn lane_up(&self) {
        self.up.set(self.up.get() + 1);
        self.down_since.set(None);
    }

    /// An admitted lane's connection ended.
    pub fn lane_down(&self) {
        self.up.set(self.up.get().saturating_sub(1));
        if self.up.get() == 0 {
            self.down_since.set(Some(Instant::now()));
        }
    }

    /// Whether a lane is admitted.
    pub fn is_up(&self) -> bool {
        self.up.get() > 0
    }

    /// Since when no lane is admitted.
    pub fn down_since(&self) -> Option<Instant> {
        self.down_since.get()
    }
}
