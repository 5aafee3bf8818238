//! Which servers a node keeps connections to: a pure function of what it knows (the
//! announced servers, its own RTT probes, which servers drain or keep failing) and
//! which it is connected to now, so that the rules are unit-tested without sockets.
//!
//! - Keep [`WANT`] connections to different servers when the network has that many
//!   usable ones (one with a one-server network, exactly as before).
//! - A usable server is neither draining nor failing. Connections to unusable ones
//!   are retired, except the last one when nothing else is usable (a lone server that
//!   restarts is reconnected to, as before).
//! - Dial the lowest RTT first; an unprobed server comes after every probed one.
//! - Move a connection to a better server only for a large gain (half the RTT and at
//!   least [`SWAP_GAIN`] less), so that probe noise never makes a node flap.

use std::time::Duration;

/// Connections a node keeps, to as many different servers.
pub const WANT: usize = 2;
/// The least RTT gain that moves a connection to a closer server.
pub const SWAP_GAIN: Duration = Duration::from_millis(50);

/// A server the node knows of.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The server's id.
    pub id: &'a str,
    /// The node's last RTT probe of it, if any.
    pub rtt: Option<Duration>,
    /// It announced it drains.
    pub draining: bool,
    /// The node's connections to it kept failing lately (dead, or refusing).
    pub failing: bool,
}

impl Candidate<'_> {
    fn usable(&self) -> bool {
        !self.draining && !self.failing
    }
}

/// What to change.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Servers to connect to, best first.
    pub dial: Vec<String>,
    /// Connected servers to leave.
    pub retire: Vec<String>,
}

/// Sort key: probed servers by RTT, then unprobed ones, ties by id.
fn rank(c: &Candidate<'_>) -> (bool, Duration, String) {
    (
        c.rtt.is_none(),
        c.rtt.unwrap_or(Duration::MAX),
        c.id.to_owned(),
    )
}

/// The plan for a node connected to `connected` (server ids) that knows `known`. A
/// connected server missing from `known` is kept: its connection is the evidence (the
/// caller lists a connected server that left the list and is down as failing).
pub fn plan(known: &[Candidate<'_>], connected: &[&str]) -> Plan {
    let find = |id: &str| known.iter().find(|c| c.id == id);
    let (mut keep, mut retire): (Vec<&str>, Vec<&str>) = connected
        .iter()
        .partition(|id| find(id).is_none_or(Candidate::usable));
    let mut spare: Vec<&Candidate<'_>> = known
        .iter()
        .filter(|c| c.usable() && !connected.contains(&c.id))
        .collect();
    spare.sort_by_key(|c| rank(c));
    if keep.is_empty() && spare.is_empty() {
        // Nothing else to go to: stay with what we have.
        if let Some(last) = retire.pop() {
            keep.push(last);
        }
    }
    let mut dial: Vec<String> = spare
        .iter()
        .take(WANT.saturating_sub(keep.len()))
        .map(|c| c.id.to_owned())
        .collect();
    if dial.is_empty() && keep.len() >= WANT {
        if let Some((worst, best)) = swap(&keep, &spare, find) {
            retire.push(worst);
            dial.push(best.to_owned());
        }
    }
    Plan {
        dial,
        retire: retire.into_iter().map(str::to_owned).collect(),
    }
}

/// The kept server to leave for the best spare one, if the gain is large.
fn swap<'a>(
    keep: &[&'a str],
    spare: &[&Candidate<'a>],
    find: impl Fn(&str) -> Option<&'a Candidate<'a>>,
) -> Option<(&'a str, &'a str)> {
    let best = spare.first()?;
    let best_rtt = best.rtt?;
    let (worst, worst_rtt) = keep
        .iter()
        .filter_map(|id| Some((*id, find(id)?.rtt?)))
        .max_by_key(|(_, rtt)| *rtt)?;
    let gain = worst_rtt.saturating_sub(best_rtt);
    (best_rtt * 2 <= worst_rtt && gain >= SWAP_GAIN).then_some((worst, best.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    fn c(id: &str, rtt: Option<Duration>) -> Candidate<'_> {
        Candidate {
            id,
            rtt,
            draining: false,
            failing: false,
        }
    }

    fn plan_of(known: &[Candidate<'_>], connected: &[&str]) -> (Vec<String>, Vec<String>) {
        let p = plan(known, connected);
        (p.dial, p.retire)
    }

    #[test]
    fn a_fresh_node_dials_the_two_closest_servers() {
        let known = [c("a", ms(40)), c("b", ms(5)), c("c", ms(12)), c("d", None)];
        assert_eq!(plan_of(&known, &[]), (vec!["b".into(), "c".into()], vec![]));
    }

    #[test]
    fn a_node_on_its_join_server_adds_the_closest_other_one() {
        let known = [c("a", ms(40)), c("b", ms(5)), c("c", ms(12))];
        assert_eq!(plan_of(&known, &["a"]), (vec!["b".into()], vec![]));
    }

    #[test]
    fn a_one_server_network_keeps_one_connection() {
        let known = [c("a", ms(3))];
        assert_eq!(plan_of(&known, &["a"]), (vec![], vec![]));
        assert_eq!(plan_of(&known, &[]), (vec!["a".into()], vec![]));
    }

    #[test]
    fn a_lone_server_that_drains_or_fails_is_kept() {
        let draining = [Candidate {
            draining: true,
            ..c("a", ms(3))
        }];
        assert_eq!(plan_of(&draining, &["a"]), (vec![], vec![]));
        let failing = [Candidate {
            failing: true,
            ..c("a", ms(3))
        }];
        assert_eq!(plan_of(&failing, &["a"]), (vec![], vec![]));
    }

    #[test]
    fn a_draining_or_dead_server_is_replaced_by_the_next_closest() {
        let known = [
            Candidate {
                draining: true,
                ..c("a", ms(2))
            },
            c("b", ms(5)),
            c("c", ms(9)),
            c("d", ms(30)),
        ];
        assert_eq!(
            plan_of(&known, &["a", "b"]),
            (vec!["c".into()], vec!["a".into()])
        );
        let known = [
            c("a", ms(2)),
            Candidate {
                failing: true,
                ..c("b", ms(5))
            },
            c("c", ms(9)),
        ];
        assert_eq!(
            plan_of(&known, &["a", "b"]),
            (vec!["c".into()], vec!["b".into()])
        );
    }

    #[test]
    fn failing_servers_are_not_dialled_and_both_gone_means_two_new_ones() {
        let dead = |id| Candidate {
            failing: true,
            ..c(id, ms(1))
        };
        let known = [dead("a"), dead("b"), c("c", ms(50)), c("d", ms(60))];
        let (dial, mut retire) = plan_of(&known, &["a", "b"]);
        retire.sort();
        assert_eq!(dial, ["c", "d"]);
        assert_eq!(retire, ["a", "b"]);
    }

    #[test]
    fn a_connected_server_missing_from_the_list_is_kept() {
        let known = [c("b", ms(5)), c("c", ms(6))];
        assert_eq!(plan_of(&known, &["gone"]), (vec!["b".into()], vec![]));
    }

    #[test]
    fn only_a_large_gain_moves_a_connection() {
        let known = [c("a", ms(10)), c("b", ms(30)), c("c", ms(16))];
        assert_eq!(plan_of(&known, &["a", "b"]), (vec![], vec![]), "14 ms gain");
        let known = [c("a", ms(10)), c("b", ms(80)), c("c", ms(20))];
        assert_eq!(
            plan_of(&known, &["a", "b"]),
            (vec!["c".into()], vec!["b".into()])
        );
        let known = [c("a", ms(10)), c("b", ms(80)), c("c", None)];
        assert_eq!(plan_of(&known, &["a", "b"]), (vec![], vec![]), "unprobed");
    }
}
