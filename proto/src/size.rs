//! Byte sizes as operators write them: `10GB` (10^9), `1.5GiB` (2^30), `500MB`, `1024`.

/// A size that could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid size {0:?}: use a number with an optional unit (B, KB, MB, GB, TB, KiB, MiB, GiB, TiB)")]
pub struct SizeError(pub String);

/// Parses a size into bytes.
///
/// # Errors
/// [`SizeError`] for anything that is not a non-negative number with a known unit.
pub fn parse_size(s: &str) -> Result<u64, SizeError> {
    let err = || SizeError(s.to_owned());
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" | "k" => 1_000,
        "mb" | "m" => 1_000_000,
        "gb" | "g" => 1_000_000_000,
        "tb" | "t" => 1_000_000_000_000,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "tib" => 1 << 40,
        _ => return Err(err()),
    };
    // Whole numbers are exact (no detour through a double); overflow is an error.
    if !num.contains('.') {
        let whole: u64 = num.parse().map_err(|_| err())?;
        return whole.checked_mul(mult).ok_or_else(err);
    }
    let value: f64 = num.parse().map_err(|_| err())?;
    let bytes = (value * mult as f64).round();
    // 2^64 itself is out of range: `u64::MAX as f64` rounds up to it.
    if !bytes.is_finite() || bytes < 0.0 || bytes >= u64::MAX as f64 {
        return Err(err());
    }
    Ok(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10GB"), Ok(10_000_000_000));
        assert_eq!(parse_size("1.5GiB"), Ok(1_610_612_736));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert_eq!(parse_size(" 2 kib "), Ok(2048));
        assert!(parse_size("ten").is_err());
        assert!(parse_size("1XB").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn whole_numbers_are_exact_and_overflow_is_refused() {
        assert_eq!(parse_size("9007199254740993"), Ok(9_007_199_254_740_993));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
        assert!(parse_size("18446744073709551616").is_err());
        assert!(parse_size("18446744073709551616.0").is_err());
        assert!(parse_size("20000000TB").is_err());
        assert_eq!(parse_size("1.5KB"), Ok(1500));
    }
}
