//! An invoice's status, worked out from what the chain shows (no I/O here): the
//! payments to its deposit address on the canonical chain, their confirmations and
//! whether each was credited yet.
//!
//! - No payment: `new`, or `expired` once its time is up.
//! - A payment with fewer confirmations than required: `seen`.
//! - All confirmed, some not credited yet: `confirmed` (the watcher credits at once).
//! - All credited: `paid_late` if any arrived in a block after the invoice expired,
//!   else `underpaid`, `overpaid` or `credited` by the total against the amount asked.
//!
//! Every payment is credited for what actually arrived, at the price locked when the
//! invoice was made, whatever the final status; the status tells the customer and the
//! operator how the payment compares with the invoice. A payment that a reorg removes
//! before its confirmations drops out of the list, so the invoice goes back to `new`
//! (or `expired`). A transfer to an address no invoice owns is never watched: it stays
//! on that address, for the operator to sweep, and touches no ledger.

use std::fmt;

/// Where an invoice stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InvoiceStatus {
    /// Waiting for a payment.
    New,
    /// A payment is on chain, not yet confirmed.
    Seen,
    /// Every payment is confirmed; crediting is under way.
    Confirmed,
    /// Paid in full and credited.
    Credited,
    /// Its time ran out with no payment.
    Expired,
    /// A payment arrived after it expired (credited for what arrived).
    PaidLate,
    /// Less than asked arrived (credited for what arrived).
    Underpaid,
    /// More than asked arrived (credited for what arrived).
    Overpaid,
}

impl InvoiceStatus {
    /// Every status, in the order above.
    pub const ALL: [InvoiceStatus; 8] = [
        InvoiceStatus::New,
        InvoiceStatus::Seen,
        InvoiceStatus::Confirmed,
        InvoiceStatus::Credited,
        InvoiceStatus::Expired,
        InvoiceStatus::PaidLate,
        InvoiceStatus::Underpaid,
        InvoiceStatus::Overpaid,
    ];

    /// Its name in the API, the database and webhooks.
    pub fn as_str(self) -> &'static str {
        match self {
            InvoiceStatus::New => "new",
            InvoiceStatus::Seen => "seen",
            InvoiceStatus::Confirmed => "confirmed",
            InvoiceStatus::Credited => "credited",
            InvoiceStatus::Expired => "expired",
            InvoiceStatus::PaidLate => "paid_late",
            InvoiceStatus::Underpaid => "underpaid",
            InvoiceStatus::Overpaid => "overpaid",
        }
    }

    /// The status named `name`.
    pub fn parse(name: &str) -> Option<InvoiceStatus> {
        Self::ALL.into_iter().find(|s| s.as_str() == name)
    }
}

impl fmt::Display for InvoiceStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an invoice asked for.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// Token units asked for.
    pub amount_units: u128,
    /// When it expires (Unix seconds).
    pub expires_at: i64,
    /// Confirmations a payment needs (1: in a block is enough).
    pub confirmations: u64,
}

/// One payment to an invoice's address on the canonical chain.
#[derive(Debug, Clone, Copy)]
pub struct Payment {
    /// Token units that arrived.
    pub units: u128,
    /// Its block's timestamp (Unix seconds).
    pub block_time: i64,
    /// Its block's confirmations (1 in the head block).
    pub confirmations: u64,
    /// Whether it was credited.
    pub credited: bool,
}

impl Payment {
    /// Whether it has enough confirmations to be credited.
    pub fn is_confirmed(&self, terms: &Terms) -> bool {
        self.confirmations >= terms.confirmations.max(1)
    }
}

/// The status of an invoice with `terms` and `payments` at `now` (Unix seconds).
pub fn status(terms: &Terms, payments: &[Payment], now: i64) -> InvoiceStatus {
    if payments.is_empty() {
        return if now > terms.expires_at {
            InvoiceStatus::Expired
        } else {
            InvoiceStatus::New
        };
    }
    if payments.iter().any(|p| !p.is_confirmed(terms)) {
        return InvoiceStatus::Seen;
    }
    if payments.iter().any(|p| !p.credited) {
        return InvoiceStatus::Confirmed;
    }
    if payments.iter().any(|p| p.block_time > terms.expires_at) {
        return InvoiceStatus::PaidLate;
    }
    let total: u128 = payments.iter().map(|p| p.units).sum();
    match total.cmp(&terms.amount_units) {
        std::cmp::Ordering::Less => InvoiceStatus::Underpaid,
        std::cmp::Ordering::Greater => InvoiceStatus::Overpaid,
        std::cmp::Ordering::Equal => InvoiceStatus::Credited,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use InvoiceStatus::*;

    const TERMS: Terms = Terms {
        amount_units: 100,
        expires_at: 1_000,
        confirmations: 3,
    };

    fn paid(units: u128, block_time: i64, confirmations: u64, credited: bool) -> Payment {
        Payment {
            units,
            block_time,
            confirmations,
            credited,
        }
    }

    #[test]
    fn statuses_follow_the_chain() {
        let cases: &[(&[Payment], i64, InvoiceStatus)] = &[
            (&[], 500, New),
            (&[], 1_001, Expired),
            (&[paid(100, 900, 1, false)], 950, Seen),
            (&[paid(100, 900, 2, false)], 2_000, Seen),
            (&[paid(100, 900, 3, false)], 950, Confirmed),
            (&[paid(100, 900, 3, true)], 950, Credited),
            (&[paid(100, 900, 30, true)], 5_000, Credited),
            (&[paid(60, 900, 3, true)], 950, Underpaid),
            (&[paid(160, 900, 3, true)], 950, Overpaid),
            (
                &[paid(60, 900, 5, true), paid(40, 950, 3, true)],
                990,
                Credited,
            ),
            (
                &[paid(60, 900, 5, true), paid(40, 950, 1, false)],
                990,
                Seen,
            ),
            (&[paid(100, 1_200, 3, true)], 1_300, PaidLate),
            (&[paid(10, 1_200, 3, true)], 1_300, PaidLate),
            (
                &[paid(60, 900, 5, true), paid(60, 1_100, 3, true)],
                1_300,
                PaidLate,
            ),
        ];
        for (payments, now, want) in cases {
            assert_eq!(
                status(&TERMS, payments, *now),
                *want,
                "{payments:?} at {now}"
            );
        }
    }

    #[test]
    fn one_confirmation_means_in_a_block() {
        let terms = Terms {
            confirmations: 0,
            ..TERMS
        };
        assert!(paid(1, 0, 1, false).is_confirmed(&terms));
        assert!(!paid(1, 0, 0, false).is_confirmed(&terms));
    }

    #[test]
    fn names_round_trip() {
        for s in InvoiceStatus::ALL {
            assert_eq!(InvoiceStatus::parse(s.as_str()), Some(s));
        }
        assert_eq!(InvoiceStatus::parse("paid"), None);
    }
}
