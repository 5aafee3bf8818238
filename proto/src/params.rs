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
        todo!("{s}")
    }

    /// The upper-case code.
    pub fn as_str(&self) -> &str {
        todo!("{:?}", self.0)
    }
}

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
    todo!("{username}")
}
