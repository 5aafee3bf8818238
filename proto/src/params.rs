//! Routing parameters carried in the proxy username.
//!
//! Two forms are accepted:
//! - the industry form `NAME-country-us-session-abc123-sesstime-10`: an account name,
//!   then `key-value` pairs separated by `-`;
//! - the original form `country=US,session=abc`: `key=value` pairs separated by `,`.
//!
//! Keys are case-insensitive. Unknown keys are refused (a typo must not silently route
//! to the wrong country).

use std::fmt;

/// An ISO 3166-1 alpha-2 country code, upper case, validated against the assigned list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    /// Parses a two-letter code in either case.
    ///
    /// # Errors
    /// [`ParamsError::UnknownCountry`] for anything that is not an assigned code.
    pub fn parse(s: &str) -> Result<Self, ParamsError> {
        let unknown = || ParamsError::UnknownCountry(s.to_owned());
        let &[a, b] = s.as_bytes() else {
            return Err(unknown());
        };
        let code = [a.to_ascii_uppercase(), b.to_ascii_uppercase()];
        if ISO_3166_ALPHA2.binary_search(&code).is_ok() {
            Ok(CountryCode(code))
        } else {
            Err(unknown())
        }
    }

    /// The upper-case code.
    pub fn as_str(&self) -> &str {
        // Only built from entries of the ASCII table below.
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

/// The officially assigned ISO 3166-1 alpha-2 codes (249), sorted for binary search.
static ISO_3166_ALPHA2: [[u8; 2]; 249] = [
    *b"AD", *b"AE", *b"AF", *b"AG", *b"AI", *b"AL", *b"AM", *b"AO", *b"AQ", *b"AR", *b"AS", *b"AT",
    *b"AU", *b"AW", *b"AX", *b"AZ", *b"BA", *b"BB", *b"BD", *b"BE", *b"BF", *b"BG", *b"BH", *b"BI",
    *b"BJ", *b"BL", *b"BM", *b"BN", *b"BO", *b"BQ", *b"BR", *b"BS", *b"BT", *b"BV", *b"BW", *b"BY",
    *b"BZ", *b"CA", *b"CC", *b"CD", *b"CF", *b"CG", *b"CH", *b"CI", *b"CK", *b"CL", *b"CM", *b"CN",
    *b"CO", *b"CR", *b"CU", *b"CV", *b"CW", *b"CX", *b"CY", *b"CZ", *b"DE", *b"DJ", *b"DK", *b"DM",
    *b"DO", *b"DZ", *b"EC", *b"EE", *b"EG", *b"EH", *b"ER", *b"ES", *b"ET", *b"FI", *b"FJ", *b"FK",
    *b"FM", *b"FO", *b"FR", *b"GA", *b"GB", *b"GD", *b"GE", *b"GF", *b"GG", *b"GH", *b"GI", *b"GL",
    *b"GM", *b"GN", *b"GP", *b"GQ", *b"GR", *b"GS", *b"GT", *b"GU", *b"GW", *b"GY", *b"HK", *b"HM",
    *b"HN", *b"HR", *b"HT", *b"HU", *b"ID", *b"IE", *b"IL", *b"IM", *b"IN", *b"IO", *b"IQ", *b"IR",
    *b"IS", *b"IT", *b"JE", *b"JM", *b"JO", *b"JP", *b"KE", *b"KG", *b"KH", *b"KI", *b"KM", *b"KN",
    *b"KP", *b"KR", *b"KW", *b"KY", *b"KZ", *b"LA", *b"LB", *b"LC", *b"LI", *b"LK", *b"LR", *b"LS",
    *b"LT", *b"LU", *b"LV", *b"LY", *b"MA", *b"MC", *b"MD", *b"ME", *b"MF", *b"MG", *b"MH", *b"MK",
    *b"ML", *b"MM", *b"MN", *b"MO", *b"MP", *b"MQ", *b"MR", *b"MS", *b"MT", *b"MU", *b"MV", *b"MW",
    *b"MX", *b"MY", *b"MZ", *b"NA", *b"NC", *b"NE", *b"NF", *b"NG", *b"NI", *b"NL", *b"NO", *b"NP",
    *b"NR", *b"NU", *b"NZ", *b"OM", *b"PA", *b"PE", *b"PF", *b"PG", *b"PH", *b"PK", *b"PL", *b"PM",
    *b"PN", *b"PR", *b"PS", *b"PT", *b"PW", *b"PY", *b"QA", *b"RE", *b"RO", *b"RS", *b"RU", *b"RW",
    *b"SA", *b"SB", *b"SC", *b"SD", *b"SE", *b"SG", *b"SH", *b"SI", *b"SJ", *b"SK", *b"SL", *b"SM",
    *b"SN", *b"SO", *b"SR", *b"SS", *b"ST", *b"SV", *b"SX", *b"SY", *b"SZ", *b"TC", *b"TD", *b"TF",
    *b"TG", *b"TH", *b"TJ", *b"TK", *b"TL", *b"TM", *b"TN", *b"TO", *b"TR", *b"TT", *b"TV", *b"TW",
    *b"TZ", *b"UA", *b"UG", *b"UM", *b"US", *b"UY", *b"UZ", *b"VA", *b"VC", *b"VE", *b"VG", *b"VI",
    *b"VN", *b"VU", *b"WF", *b"WS", *b"YE", *b"YT", *b"ZA", *b"ZM", *b"ZW",
];

impl fmt::Display for CountryCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Longest sticky-session lifetime a customer can ask for, in minutes.
pub const MAX_SESSTIME_MINUTES: u32 = 24 * 60;

/// Parameters parsed from a username.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserParams {
    /// The account label before the parameters (industry form); empty in the original
    /// form.
    pub account: String,
    /// Requested exit country.
    pub country: Option<CountryCode>,
    /// Sticky session id: 1 to 64 of `[A-Za-z0-9_]`.
    pub session: Option<String>,
    /// Sticky session lifetime in minutes, 1 to [`MAX_SESSTIME_MINUTES`].
    pub sesstime_minutes: Option<u32>,
}

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    /// The username is empty or longer than 255 bytes.
    #[error("username is empty or too long")]
    BadLength,
    /// A parameter key is not known.
    #[error("unknown parameter {0:?}")]
    UnknownKey(String),
    /// A key has no value.
    #[error("parameter {0:?} has no value")]
    MissingValue(String),
    /// A key appears twice.
    #[error("parameter {0:?} given twice")]
    Duplicate(String),
    /// Not an assigned ISO 3166-1 alpha-2 code.
    #[error("unknown country code {0:?}")]
    UnknownCountry(String),
    /// Session id is empty, too long or has characters outside `[A-Za-z0-9_]`.
    #[error("invalid session id")]
    BadSession,
    /// `sesstime` is not a number in range.
    #[error("invalid sesstime (1..={MAX_SESSTIME_MINUTES} minutes)")]
    BadSesstime,
    /// `sesstime` given without `session`.
    #[error("sesstime needs a session")]
    SesstimeWithoutSession,
    /// The account name has characters outside `[A-Za-z0-9_.]`.
    #[error("invalid account name")]
    BadAccount,
}

/// Parses a proxy username into routing parameters.
///
/// # Errors
/// [`ParamsError`] describing the first problem found.
pub fn parse_username(username: &str) -> Result<UserParams, ParamsError> {
    if username.is_empty() || username.len() > 255 {
        return Err(ParamsError::BadLength);
    }
    let mut params = UserParams::default();
    if username.contains('=') {
        // Original form: `key=value,key=value`.
        for pair in username.split(',') {
            match pair.split_once('=') {
                Some((key, value)) => params.set(key, value)?,
                None if pair.is_empty() => return Err(ParamsError::UnknownKey(String::new())),
                None => return Err(ParamsError::MissingValue(pair.to_owned())),
            }
        }
    } else {
        // Industry form: `account-key-value-key-value`.
        let mut tokens = username.split('-');
        let account = tokens.next().unwrap_or_default();
        if account.is_empty()
            || !account
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.'))
        {
            return Err(ParamsError::BadAccount);
        }
        params.account = account.to_owned();
        while let Some(key) = tokens.next() {
            let Some(value) = tokens.next() else {
                return Err(ParamsError::MissingValue(key.to_owned()));
            };
            params.set(key, value)?;
        }
    }
    if params.sesstime_minutes.is_some() && params.session.is_none() {
        return Err(ParamsError::SesstimeWithoutSession);
    }
    Ok(params)
}

impl UserParams {
    /// Applies one `key`/`value` pair.
    fn set(&mut self, key: &str, value: &str) -> Result<(), ParamsError> {
        let duplicate = |name: &str| Err(ParamsError::Duplicate(name.to_owned()));
        if key.eq_ignore_ascii_case("country") {
            if self.country.is_some() {
                return duplicate("country");
            }
            self.country = Some(CountryCode::parse(value)?);
        } else if key.eq_ignore_ascii_case("session") {
            if self.session.is_some() {
                return duplicate("session");
            }
            if value.is_empty()
                || value.len() > 64
                || !value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_')
            {
                return Err(ParamsError::BadSession);
            }
            self.session = Some(value.to_owned());
        } else if key.eq_ignore_ascii_case("sesstime") {
            if self.sesstime_minutes.is_some() {
                return duplicate("sesstime");
            }
            if value.is_empty() || value.len() > 9 || !value.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ParamsError::BadSesstime);
            }
            match value.parse::<u32>() {
                Ok(m) if (1..=MAX_SESSTIME_MINUTES).contains(&m) => {
                    self.sesstime_minutes = Some(m);
                }
                _ => return Err(ParamsError::BadSesstime),
            }
        } else {
            return Err(ParamsError::UnknownKey(key.to_owned()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cc(s: &str) -> Option<CountryCode> {
        Some(CountryCode::parse(s).unwrap())
    }

    #[test]
    fn table_is_sorted_and_complete() {
        assert!(ISO_3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO_3166_ALPHA2
            .iter()
            .all(|c| c.iter().all(u8::is_ascii_uppercase)));
        for ok in [
            "us", "US", "gb", "De", "AX", "ZW", "AD", "SS", "BQ", "CW", "SX",
        ] {
            assert!(CountryCode::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "UK", "EU", "XK", "ZZ", "AA", "", "U", "USA", "u\u{e9}", "1A",
        ] {
            assert_eq!(
                CountryCode::parse(bad),
                Err(ParamsError::UnknownCountry(bad.to_owned()))
            );
        }
        assert_eq!(CountryCode::parse("us").unwrap().as_str(), "US");
        assert_eq!(CountryCode::parse("gB").unwrap().to_string(), "GB");
    }

    #[test]
    fn industry_form() {
        assert_eq!(
            parse_username("NAME-country-us-session-abc123-sesstime-10"),
            Ok(UserParams {
                account: "NAME".into(),
                country: cc("US"),
                session: Some("abc123".into()),
                sesstime_minutes: Some(10),
            })
        );
        assert_eq!(
            parse_username("alice"),
            Ok(UserParams {
                account: "alice".into(),
                ..UserParams::default()
            })
        );
        assert_eq!(
            parse_username("a.b_c-COUNTRY-De-Session-X_1"),
            Ok(UserParams {
                account: "a.b_c".into(),
                country: cc("DE"),
                session: Some("X_1".into()),
                sesstime_minutes: None,
            })
        );
        assert_eq!(
            parse_username("bob-session-s-sesstime-1440").map(|p| p.sesstime_minutes),
            Ok(Some(MAX_SESSTIME_MINUTES))
        );
    }

    #[test]
    fn original_form() {
        assert_eq!(
            parse_username("country=US,session=abc"),
            Ok(UserParams {
                account: String::new(),
                country: cc("US"),
                session: Some("abc".into()),
                sesstime_minutes: None,
            })
        );
        assert_eq!(
            parse_username("Session=a,SESSTIME=5").map(|p| p.sesstime_minutes),
            Ok(Some(5))
        );
        assert_eq!(
            parse_username("country=US,session"),
            Err(ParamsError::MissingValue("session".into()))
        );
        assert_eq!(
            parse_username("country=US,"),
            Err(ParamsError::UnknownKey(String::new()))
        );
        assert_eq!(
            parse_username("city=paris"),
            Err(ParamsError::UnknownKey("city".into()))
        );
        assert_eq!(
            parse_username("country=us,country=de"),
            Err(ParamsError::Duplicate("country".into()))
        );
    }

    #[test]
    fn errors() {
        use ParamsError::*;
        let long = format!("a-session-{}", "s".repeat(250));
        let cases: Vec<(&str, ParamsError)> = vec![
            ("", BadLength),
            (&long, BadLength),
            ("al!ce", BadAccount),
            ("-country-us", BadAccount),
            ("al ice-country-us", BadAccount),
            ("alice-country", MissingValue("country".into())),
            ("alice-country-us-session", MissingValue("session".into())),
            ("alice-city-paris", UnknownKey("city".into())),
            ("alice--x", UnknownKey(String::new())),
            ("alice-country-us-Country-de", Duplicate("country".into())),
            ("alice-session-a-session-b", Duplicate("session".into())),
            (
                "alice-session-a-sesstime-1-sesstime-2",
                Duplicate("sesstime".into()),
            ),
            ("alice-country-zz", UnknownCountry("zz".into())),
            ("alice-country-usa", UnknownCountry("usa".into())),
            ("alice-session-", BadSession),
            ("alice-session-a.b", BadSession),
            ("alice-session-a b", BadSession),
            ("alice-sesstime-5", SesstimeWithoutSession),
            ("alice-session-a-sesstime-0", BadSesstime),
            ("alice-session-a-sesstime-1441", BadSesstime),
            ("alice-session-a-sesstime-+5", BadSesstime),
            ("alice-session-a-sesstime-", BadSesstime),
            ("alice-session-a-sesstime-99999999999999", BadSesstime),
            ("alice-session-a-sesstime-x", BadSesstime),
        ];
        for (input, err) in cases {
            assert_eq!(parse_username(input), Err(err), "{input}");
        }
        let max_session = format!("a-session-{}", "s".repeat(64));
        assert!(parse_username(&max_session).is_ok());
        let too_long = format!("a-session-{}", "s".repeat(65));
        assert_eq!(parse_username(&too_long), Err(BadSession));
        assert!(parse_username(&"a".repeat(255)).is_ok());
        assert_eq!(parse_username(&"a".repeat(256)), Err(BadLength));
    }
}
