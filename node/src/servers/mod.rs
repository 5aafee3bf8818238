//! The node's servers: a network may run several `turbo-server`s, each of which tells
//! its nodes the live list ([`turbo_proto::wire::control::ControlMessage::Servers`]).
//! The supervisor here keeps the node connected to two of them ([`choice::WANT`]),
//! chosen by its own RTT probes ([`probe`]: QUIC handshake time), and moves a
//! connection when its server drains, stops answering for [`FAIL_AFTER`], or refuses
//! the node. Each connection is a [`Slot`] running the usual lanes
//! ([`crate::run_lanes`]) to one server. A node on a one-server network (the demo)
//! keeps its one connection, as before the list existed.
//!
//! Trust: the join string's server is checked against the join pin; every other server
//! against the pin in the list, which came over such a pinned connection.

use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future;
use std::pin::pin;
use std::rc::Rc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};
use turbo_proto::wire::control::ServerInfo;

use crate::{NodeConfig, NodeError, Shared};

pub mod choice;
pub mod probe;
mod slot;

pub use slot::Slot;

/// A server none of whose lanes is admitted for this long counts as failing.
pub const FAIL_AFTER: Duration = Duration::from_secs(4);
/// How long a failing server is not dialled again (unless it is the only one).
pub const FAIL_FOR: Duration = Duration::from_secs(30);
/// How often each server is probed again.
const REPROBE_EVERY: Duration = Duration::from_secs(300);
/// New connections wait this long at most for probes under way.
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// A slot whose lanes run.
struct Running {
    slot: Rc<Slot>,
    stop: watch::Sender<bool>,
    /// Being left: its lanes drain and it does not count as connected.
    retired: bool,
}

/// Probe results by server id: the handshake time, or `None` when it failed.
type Rtts = Rc<RefCell<HashMap<String, Option<Duration>>>>;

struct Supervisor<'a> {
    config: &'a NodeConfig,
    shared: &'a Rc<Shared>,
    running: Vec<Running>,
    tasks: JoinSet<(u8, Result<(), NodeError>)>,
    rtts: Rtts,
    /// When each server was last probed.
    probed: HashMap<String, Instant>,
    /// Failing servers, until when.
    failing: HashMap<String, Instant>,
    stopping: bool,
}

/// Runs the node's server connections until `shutdown` (every slot drains) or a fatal
/// error.
///
/// # Errors
/// Fatal errors only ([`NodeError::is_fatal`]).
pub(crate) async fn run(
    config: &NodeConfig,
    shared: &Rc<Shared>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError> {
    let mut sup = Supervisor {
        config,
        shared,
        running: Vec::new(),
        tasks: JoinSet::new(),
        rtts: Rtts::default(),
        probed: HashMap::new(),
        failing: HashMap::new(),
        stopping: false,
    };
    sup.start(config.clone(), None);
    let mut shutdown = pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = shutdown.as_mut(), if !sup.stopping => sup.stop_all(),
            _ = shared.fleet_changed.notified() => {}
            _ = tick.tick() => {}
            done = sup.tasks.join_next() => match done {
                None if sup.stopping => return Ok(()),
                None => sup.start(config.clone(), None),
                Some(Ok((number, result))) => sup.ended(number, result)?,
                Some(Err(e)) => warn!(error = %e, "server slot task failed"),
            },
        }
        if !sup.stopping {
            sup.rebalance();
        }
    }
}

/// The config for dialling `server`: its address and pin, the rest as given.
fn target_config(config: &NodeConfig, server: &ServerInfo) -> Option<NodeConfig> {
    let (host, port) = server.addr.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut cfg = config.clone();
    cfg.join.host = host.to_owned();
    cfg.join.port = port.parse().ok().filter(|p| *p != 0)?;
    cfg.join.pin = Some(server.pin);
    Some(cfg)
}

impl Supervisor<'_> {
    /// Starts a slot with `cfg`'s server (`server`, when its id is known).
    fn start(&mut self, cfg: NodeConfig, server: Option<String>) {
        let number = (0..=u8::MAX)
            .find(|n| self.running.iter().all(|r| r.slot.number != *n))
            .unwrap_or(u8::MAX);
        let slot = Rc::new(Slot::new(number, cfg.join.server_addr(), server));
        info!(server = %slot.addr, id = ?slot.server.borrow(), slot = number, "connecting to server");
        let (stop, stopped) = watch::channel(false);
        let (shared, s) = (self.shared.clone(), slot.clone());
        self.tasks.spawn_local(async move {
            let mut stopped = stopped;
            let stop = async move {
                let _ = stopped.wait_for(|s| *s).await;
            };
            (
                number,
                crate::run_lanes(Rc::new(cfg), &shared, s, stop).await,
            )
        });
        self.running.push(Running {
            slot,
            stop,
            retired: false,
        });
        self.show_servers();
    }

    fn stop_all(&mut self) {
        self.stopping = true;
        for r in &self.running {
            let _ = r.stop.send(true);
        }
    }

    /// Slot `number` ended: a fatal error ends the node, except a wrong pin from a
    /// server the list named (that server counts as failing).
    fn ended(&mut self, number: u8, result: Result<(), NodeError>) -> Result<(), NodeError> {
        let Some(i) = self.running.iter().position(|r| r.slot.number == number) else {
            return result;
        };
        let r = self.running.swap_remove(i);
        self.show_servers();
        let id = r.slot.server.borrow().clone();
        match (result, id) {
            (Err(NodeError::PinMismatch), Some(id)) if self.shared.fleet.borrow().is_some() => {
                warn!(server = %id, "server certificate does not match its pin: leaving it");
                self.failing.insert(id, Instant::now() + FAIL_FOR);
                Ok(())
            }
            (result, _) => result,
        }
    }

    /// What the status shows as the server: every running slot's address.
    fn show_servers(&self) {
        let addrs: Vec<&str> = self.running.iter().map(|r| r.slot.addr.as_str()).collect();
        *self.shared.status.server.borrow_mut() = addrs.join(", ");
    }

    /// Probes servers not probed lately; whether a probe begun within
    /// [`PROBE_WAIT`] is still under way. With one server there is nothing to choose:
    /// no probe.
    fn probe(&mut self, list: &[ServerInfo]) -> bool {
        let now = Instant::now();
        let mut pending = false;
        if list.iter().filter(|s| !s.draining).count() < 2 {
            return false;
        }
        for server in list.iter().filter(|s| !s.draining) {
            let last = self.probed.get(&server.id).copied();
            // A failed probe is tried again after FAIL_FOR, a good one after a while.
            let failed = self.rtts.borrow().get(&server.id) == Some(&None);
            let again = if failed { FAIL_FOR } else { REPROBE_EVERY };
            if last.is_some_and(|t| now - t < again) {
                let waiting = !self.rtts.borrow().contains_key(&server.id);
                pending |= waiting && last.is_some_and(|t| now - t < PROBE_WAIT);
                continue;
            }
            let Some(cfg) = target_config(self.config, server) else {
                continue;
            };
            self.probed.insert(server.id.clone(), now);
            self.rtts.borrow_mut().remove(&server.id);
            pending = true;
            let (rtts, id) = (self.rtts.clone(), server.id.clone());
            tokio::task::spawn_local(async move {
                let rtt = probe::handshake_rtt(&cfg).await;
                if let Err(e) = &rtt {
                    info!(server = %id, error = %e, "server probe failed");
                }
                rtts.borrow_mut().insert(id, rtt.ok());
            });
        }
        pending
    }

    /// Marks servers whose slot has had no admitted lane for [`FAIL_AFTER`].
    fn note_failures(&mut self) {
        let now = Instant::now();
        for r in &self.running {
            let down = r.slot.down_since().map(Instant::from_std);
            if let (Some(since), Some(id)) = (down, r.slot.server.borrow().as_ref()) {
                if now - since >= FAIL_AFTER && !self.failing.contains_key(id) {
                    warn!(server = %id, "server unreachable or refusing: moving on");
                    self.failing.insert(id.clone(), now + FAIL_FOR);
                }
            }
        }
        self.failing.retain(|_, until| *until > now);
    }

    /// Applies [`choice::plan`] to the latest list: retires and dials slots.
    fn rebalance(&mut self) {
        let Some(list) = self.shared.fleet.borrow().clone() else {
            return;
        };
        self.note_failures();
        if self.probe(&list) {
            return;
        }
        let plan = self.plan(&list);
        for r in self.running.iter_mut() {
            let id = r.slot.server.borrow().clone();
            if id.is_some_and(|id| plan.retire.contains(&id)) && !r.retired {
                info!(server = %r.slot.addr, "leaving server");
                r.retired = true;
                r.slot.retired.set(true);
                let _ = r.stop.send(true);
            }
        }
        for id in plan.dial {
            let server = list.iter().find(|s| s.id == id);
            if let Some(cfg) = server.and_then(|s| target_config(self.config, s)) {
                self.start(cfg, Some(id));
            }
        }
    }

    fn plan(&self, list: &[ServerInfo]) -> choice::Plan {
        let rtts = self.rtts.borrow();
        let ids: Vec<(Option<String>, bool, bool)> = self
            .running
            .iter()
            .map(|r| {
                (
                    r.slot.server.borrow().clone(),
                    r.retired,
                    r.slot.draining.get(),
                )
            })
            .collect();
        let busy = |id: &str| {
            ids.iter()
                .any(|(s, retired, draining)| s.as_deref() == Some(id) && (*retired || *draining))
        };
        // Another id at an address a slot already uses (a server restarted there):
        // never a second slot to one endpoint.
        let taken = |s: &ServerInfo| {
            self.running
                .iter()
                .any(|r| r.slot.addr == s.addr && r.slot.server.borrow().as_deref() != Some(&s.id))
        };
        let mut known: Vec<choice::Candidate<'_>> = list
            .iter()
            .map(|s| choice::Candidate {
                id: &s.id,
                rtt: rtts.get(&s.id).copied().flatten(),
                draining: s.draining || busy(&s.id) || taken(s),
                failing: self.failing.contains_key(&s.id)
                    || rtts.get(&s.id).is_some_and(Option::is_none),
            })
            .collect();
        // Connected servers the list no longer names (they died, or their entry
        // lapsed): kept while up, left once failing.
        for (id, _, draining) in &ids {
            let Some(id) = id.as_deref() else { continue };
            if list.iter().all(|s| s.id != id) {
                known.push(choice::Candidate {
                    id,
                    rtt: None,
                    draining: *draining,
                    failing: self.failing.contains_key(id),
                });
            }
        }
        let connected: Vec<&str> = ids
            .iter()
            .filter(|(_, retired, _)| !retired)
            .filter_map(|(id, ..)| id.as_deref())
            .collect();
        choice::plan(&known, &connected)
    }
}
