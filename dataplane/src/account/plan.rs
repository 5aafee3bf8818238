//! What an account's manager does next (release, ask for more, or checkpoint) and how
//! much it asks for: pure decisions over the account's state.

use std::time::{Duration, Instant};

use super::{Account, Book, Standing, DRY_RECHECK, MAX_WANT, MIN_WANT};

/// What the manager decided to do this round.
pub(super) struct Plan {
    pub(super) want: u64,
    pub(super) release: bool,
}

pub(super) fn plan(
    book: &Book,
    a: &Account,
    last_report: Instant,
    dry_since: Option<Instant>,
) -> Option<Plan> {
    let idle = a.connections.get() == 0 && a.last_used.get().elapsed() >= book.leases.idle_release;
    if book.shutting_down.get() || idle || a.standing.get() == Standing::Revoked {
        return Some(Plan {
            want: 0,
            release: true,
        });
    }
    let low = a.balance.get() < (a.last_grant.get() / 2).max(1);
    let may_ask = match a.standing.get() {
        Standing::Dry => dry_since.is_none_or(|t| t.elapsed() >= DRY_RECHECK),
        _ => true,
    };
    if low && may_ask && a.connections.get() > 0 {
        return Some(Plan {
            want: 1,
            release: false,
        });
    }
    let due = last_report.elapsed() >= book.leases.checkpoint;
    (due && !a.usage.borrow().is_empty()).then_some(Plan {
        want: 0,
        release: false,
    })
}

/// Sizes the next ask from how fast the last grant went.
pub(super) fn next_want(last_want: u64, granted_at: Instant, spent_since: u64) -> u64 {
    if granted_at.elapsed() < Duration::from_secs(1) {
        (last_want * 4).clamp(MIN_WANT, MAX_WANT)
    } else {
        (spent_since * 2).clamp(MIN_WANT, MAX_WANT)
    }
}
