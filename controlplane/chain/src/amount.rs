//! Exact amounts: decimal dollars as written in config and requests, nano-USD in the
//! ledger, token base units on chain, and the bytes a payment buys. Integers only; a
//! conversion that cannot be exact rounds in the customer's favour where it charges
//! (an invoice asks for whole token units, rounded up from the dollar amount) and in
//! the platform's where it credits nothing that did not arrive (bytes round down).

use turbo_ledger::BYTES_PER_GB;

/// nano-USD in a dollar.
pub const NANO_PER_USD: i128 = 1_000_000_000;

/// Why an amount is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    /// Not a plain decimal number such as `25` or `1.5`.
    #[error("{0:?} is not a decimal amount of dollars")]
    NotDecimal(String),
    /// More than nine decimal places (below a nano-dollar).
    #[error("{0:?} has more than 9 decimal places")]
    TooPrecise(String),
    /// Zero, or above the largest amount accepted.
    #[error("{0:?} is out of range (above 0, at most $1,000,000)")]
    OutOfRange(String),
    /// The token's decimals are above 36.
    #[error("a token with {0} decimals is not supported")]
    Decimals(u8),
}

/// The largest dollar amount accepted anywhere (an invoice or a price per GB).
const MAX_USD: i128 = 1_000_000;

/// Parses a positive decimal dollar amount (`"25"`, `"0.10"`) into nano-USD.
///
/// # Errors
/// [`AmountError`] saying what is wrong with it.
pub fn parse_usd(text: &str) -> Result<i64, AmountError> {
    let t = text.trim();
    let (whole, frac) = t.split_once('.').unwrap_or((t, ""));
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() && frac.is_empty() || !digits(whole) || !digits(frac) {
        return Err(AmountError::NotDecimal(text.into()));
    }
    if frac.len() > 9 {
        return Err(AmountError::TooPrecise(text.into()));
    }
    let out_of_range = || AmountError::OutOfRange(text.into());
    let whole: i128 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| out_of_range())?
    };
    let frac_nano: i128 = format!("{frac:0<9}").parse().unwrap_or(0);
    let nano = whole
        .checked_mul(NANO_PER_USD)
        .and_then(|w| w.checked_add(frac_nano))
        .ok_or_else(out_of_range)?;
    if nano <= 0 || nano > MAX_USD * NANO_PER_USD {
        return Err(out_of_range());
    }
    i64::try_from(nano).map_err(|_| out_of_range())
}

/// Formats nano-USD as dollars with the trailing zeros trimmed (`25`, `0.1`).
pub fn format_usd(nano: i64) -> String {
    let (sign, n) = if nano < 0 {
        ("-", -i128::from(nano))
    } else {
        ("", i128::from(nano))
    };
    let (whole, frac) = (n / NANO_PER_USD, n % NANO_PER_USD);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:09}");
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

fn scale(decimals: u8) -> Result<u128, AmountError> {
    if decimals > 36 {
        return Err(AmountError::Decimals(decimals));
    }
    Ok(10u128.pow(u32::from(decimals)))
}

/// The token units an invoice for `nano` nano-USD asks for, with a token of
/// `decimals` (one unit of a USD stablecoin is worth 10^-decimals dollars), rounded
/// up to a whole unit.
///
/// # Errors
/// [`AmountError::Decimals`].
pub fn usd_to_units(nano: i64, decimals: u8) -> Result<u128, AmountError> {
    let nano = u128::try_from(nano).map_err(|_| AmountError::OutOfRange(nano.to_string()))?;
    let num = nano * scale(decimals)?;
    Ok(num.div_ceil(NANO_PER_USD as u128))
}

/// What `units` token units are worth in nano-USD, rounded down.
///
/// # Errors
/// [`AmountError::Decimals`], or [`AmountError::OutOfRange`] for an amount beyond
/// what the ledger holds.
pub fn units_to_usd(units: u128, decimals: u8) -> Result<i64, AmountError> {
    let scale = scale(decimals)?;
    let out_of_range = || AmountError::OutOfRange(units.to_string());
    let nano = units
        .checked_mul(NANO_PER_USD as u128)
        .ok_or_else(out_of_range)?
        / scale;
    i64::try_from(nano).map_err(|_| out_of_range())
}

/// The smallest step a token of `decimals` pays in, in nano-USD: 1000 for 6 decimals
/// (one micro-dollar), 1 from 9 decimals up.
///
/// # Errors
/// [`AmountError::Decimals`].
pub fn payout_step_nano(decimals: u8) -> Result<i64, AmountError> {
    scale(decimals)?;
    Ok(10i64.pow(9u32.saturating_sub(u32::from(decimals))))
}

/// The token units that pay exactly `nano` nano-USD, or `None` when `nano` is not a
/// whole number of units (not a multiple of [`payout_step_nano`]) or not positive.
pub fn units_for_payout(nano: i64, decimals: u8) -> Option<u128> {
    let nano = u128::try_from(nano).ok().filter(|n| *n > 0)?;
    let scale = scale(decimals).ok()?;
    let num = nano.checked_mul(scale)?;
    (num % NANO_PER_USD as u128 == 0).then(|| num / NANO_PER_USD as u128)
}

/// The bytes `nano` nano-USD buys at `price` nano-USD per GB, rounded down.
pub fn bytes_for(nano: i64, price_per_gb: i64) -> i64 {
    if nano <= 0 || price_per_gb <= 0 {
        return 0;
    }
    let bytes = i128::from(nano) * BYTES_PER_GB / i128::from(price_per_gb);
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_parse_exactly() {
        for (text, nano) in [
            ("25", 25_000_000_000),
            ("1.0", 1_000_000_000),
            ("0.10", 100_000_000),
            (".5", 500_000_000),
            ("0.000000001", 1),
            (" 3.25 ", 3_250_000_000),
            ("1000000", 1_000_000_000_000_000),
        ] {
            assert_eq!(parse_usd(text), Ok(nano), "{text}");
        }
        for bad in ["", ".", "-1", "1e3", "1,5", "abc", "1.2.3", "0x10"] {
            assert!(
                matches!(parse_usd(bad), Err(AmountError::NotDecimal(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            parse_usd("0.0000000001"),
            Err(AmountError::TooPrecise(_))
        ));
        for bad in ["0", "0.000", "1000000.01", "99999999999999999999999999"] {
            assert!(
                matches!(parse_usd(bad), Err(AmountError::OutOfRange(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn dollars_format_back() {
        for (nano, text) in [
            (25_000_000_000, "25"),
            (100_000_000, "0.1"),
            (1, "0.000000001"),
        ] {
            assert_eq!(format_usd(nano), text);
            assert_eq!(parse_usd(text), Ok(nano));
        }
    }

    #[test]
    fn units_round_up_when_charged_and_down_when_credited() {
        // USDC: 6 decimals.
        assert_eq!(usd_to_units(25_000_000_000, 6), Ok(25_000_000));
        assert_eq!(
            usd_to_units(1, 6),
            Ok(1),
            "a fraction of a unit asks for a unit"
        );
        assert_eq!(units_to_usd(25_000_000, 6), Ok(25_000_000_000));
        assert_eq!(
            units_to_usd(1, 18),
            Ok(0),
            "below a nano-dollar credits nothing"
        );
        assert_eq!(usd_to_units(1_000_000_000, 18), Ok(10u128.pow(18)));
        assert!(units_to_usd(u128::MAX, 6).is_err());
        assert_eq!(usd_to_units(1, 40), Err(AmountError::Decimals(40)));
    }

    #[test]
    fn payouts_are_whole_units() {
        assert_eq!(payout_step_nano(6), Ok(1000));
        assert_eq!(payout_step_nano(18), Ok(1));
        assert_eq!(units_for_payout(25_000_000_000, 6), Some(25_000_000));
        assert_eq!(
            units_for_payout(25_000_000_001, 6),
            None,
            "not a whole unit"
        );
        assert_eq!(units_for_payout(1, 18), Some(1_000_000_000));
        assert_eq!(units_for_payout(0, 6), None);
        assert_eq!(units_for_payout(-1000, 6), None);
    }

    #[test]
    fn bytes_follow_the_locked_price() {
        // $25 at $1.00/GB is 25 GB.
        assert_eq!(bytes_for(25_000_000_000, 1_000_000_000), 25_000_000_000);
        // $1 at $3/GB: 333,333,333 bytes, rounded down.
        assert_eq!(bytes_for(1_000_000_000, 3_000_000_000), 333_333_333);
        assert_eq!(bytes_for(0, 1), 0);
        assert_eq!(bytes_for(5, 0), 0);
    }
}
