//! A node's presence when several servers hold it (a node keeps connections to two
//! servers, [`crate::fleet`]): each server reports its own [`Presence`], and readers
//! see one, merged: the servers joined, streams summed, the longest-held connection's
//! score, fresh until the last holder's entry lapses.

use std::collections::HashMap;

use serde::Deserialize;

use super::Presence;

/// What the store keeps per node: every holder, or one bare presence (older servers).
#[derive(Deserialize)]
#[serde(untagged)]
enum Stored {
    Holders { holders: HashMap<String, Presence> },
    One(Presence),
}

/// Reads a stored entry: its holders fresh at `now` (Unix s) merged, or all of them
/// merged when none is (a stale entry, to be dropped or swept); `None` if unreadable.
pub(super) fn read(v: &str, now: u64) -> Option<Presence> {
    match serde_json::from_str(v).ok()? {
        Stored::One(p) => Some(p),
        Stored::Holders { holders } => merge(holders.values(), now),
    }
}

/// Merges the presences of one node on several servers, as [`read`] does.
pub(super) fn merge<'a>(all: impl Iterator<Item = &'a Presence>, now: u64) -> Option<Presence> {
    let all: Vec<&Presence> = all.collect();
    let fresh: Vec<&Presence> = all.iter().copied().filter(|p| p.until > now).collect();
    let mut use_: Vec<&Presence> = if fresh.is_empty() { all } else { fresh };
    use_.sort_by(|a, b| (a.since, &a.server).cmp(&(b.since, &b.server)));
    let first = *use_.first()?;
    let mut servers: Vec<&str> = use_.iter().map(|p| p.server.as_str()).collect();
    servers.sort_unstable();
    Some(Presence {
        server: servers.join(","),
        streams: use_.iter().map(|p| p.streams).sum(),
        max_streams: use_.iter().map(|p| p.max_streams).max().unwrap_or(0),
        until: use_.iter().map(|p| p.until).max().unwrap_or(0),
        ..first.clone()
    })
}
