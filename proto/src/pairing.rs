//! Pairing a node with a runner's account, in the shape of the OAuth 2.0 device
//! authorization grant (RFC 8628): the user code a runner types, the answers a server
//! gives a node that polls, and the node's polling state machine. No I/O and no clock:
//! callers pass the time.
//!
//! The node asks the server for a device code (its secret) and a user code (what the
//! runner checks in the browser), polls with the device code every `interval`, and
//! stops at the first final answer: paired (with the join string), denied or expired.

use std::fmt;
use std::time::Duration;

/// The letters user codes are made of: consonants without look-alikes, so a code reads
/// unambiguously and spells no word (RFC 8628 §6.1).
pub const USER_CODE_ALPHABET: &[u8; 20] = b"BCDFGHJKLMNPQRSTVWXZ";
/// Letters in a user code (shown as two groups of four): 20^8, about 2^34.6 codes.
pub const USER_CODE_LEN: usize = 8;
/// Added to the polling interval each time the server says `slow_down` (RFC 8628
/// §3.5).
pub const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

/// Why a text is not a user code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UserCodeError {
    /// Not eight letters once dashes and spaces are dropped.
    #[error("a pairing code has {USER_CODE_LEN} letters, like BDFG-HJKL")]
    Length,
    /// A character outside [`USER_CODE_ALPHABET`].
    #[error("a pairing code uses only the letters BCDFGHJKLMNPQRSTVWXZ")]
    Letter,
}

/// A user code, in canonical form (upper case, no separators).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserCode(String);

impl UserCode {
    /// A code drawn from `random` bytes by rejection sampling (bytes of 240 and above
    /// are skipped, so every letter is equally likely); `None` when `random` runs out
    /// first (32 bytes are nearly always enough).
    pub fn from_random(random: &[u8]) -> Option<UserCode> {
        let letters: String = random
            .iter()
            .filter(|b| **b < 240)
            .take(USER_CODE_LEN)
            .map(|b| char::from(USER_CODE_ALPHABET[usize::from(*b % 20)]))
            .collect();
        (letters.len() == USER_CODE_LEN).then_some(UserCode(letters))
    }

    /// Reads a code as a runner may type it: any case, with dashes or spaces.
    ///
    /// # Errors
    /// [`UserCodeError`] saying what is wrong.
    pub fn parse(text: &str) -> Result<UserCode, UserCodeError> {
        let mut letters = String::with_capacity(USER_CODE_LEN);
        for c in text.chars().filter(|c| *c != '-' && !c.is_whitespace()) {
            if letters.len() == USER_CODE_LEN {
                return Err(UserCodeError::Length);
            }
            let c = c.to_ascii_uppercase();
            if !c.is_ascii() || !USER_CODE_ALPHABET.contains(&(c as u8)) {
                return Err(UserCodeError::Letter);
            }
            letters.push(c);
        }
        if letters.len() != USER_CODE_LEN {
            return Err(UserCodeError::Length);
        }
        Ok(UserCode(letters))
    }

    /// The canonical form: eight letters, no dash (what servers key records by).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserCode {
    /// `BDFG-HJKL`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (a, b) = self.0.split_at(USER_CODE_LEN / 2);
        write!(f, "{a}-{b}")
    }
}

/// What the server answers a node that polls with its device code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAnswer {
    /// The runner has not approved or denied yet.
    Pending,
    /// Polling too often: wait [`SLOW_DOWN_STEP`] longer between polls.
    SlowDown,
    /// The runner denied the request.
    Denied,
    /// The code expired, was used already, or never existed.
    Expired,
    /// Approved: the join string for the node (holds its token; shown only once).
    Paired(String),
}

impl PollAnswer {
    /// The RFC 8628 error code of an answer that is not [`PollAnswer::Paired`].
    pub fn error_code(&self) -> Option<&'static str> {
        Some(match self {
            PollAnswer::Pending => "authorization_pending",
            PollAnswer::SlowDown => "slow_down",
            PollAnswer::Denied => "access_denied",
            PollAnswer::Expired => "expired_token",
            PollAnswer::Paired(_) => return None,
        })
    }

    /// The answer an RFC 8628 error code stands for (`None` for any other text).
    pub fn from_error_code(code: &str) -> Option<PollAnswer> {
        Some(match code {
            "authorization_pending" => PollAnswer::Pending,
            "slow_down" => PollAnswer::SlowDown,
            "access_denied" => PollAnswer::Denied,
            "expired_token" | "invalid_grant" => PollAnswer::Expired,
            _ => return None,
        })
    }
}

/// Why pairing ended without a join string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PairingFailure {
    /// The runner pressed "Deny".
    #[error("the pairing request was denied in the browser")]
    Denied,
    /// Nobody approved it in time (or the code was used already).
    #[error("the pairing code expired before it was approved: run `turbo-node pair` again")]
    Expired,
}

/// What the node does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Poll again after this long.
    PollIn(Duration),
    /// Paired: save this join string.
    Done(String),
    /// Stop: pairing failed.
    Failed(PairingFailure),
}

/// The node's side of pairing: when to poll, and when to stop.
#[derive(Debug, Clone)]
pub struct Poller {
    interval: Duration,
    expires_after: Duration,
}

impl Poller {
    /// Polls every `interval` (at least a second) until `expires_after` has passed
    /// since the code was issued.
    pub fn new(interval: Duration, expires_after: Duration) -> Poller {
        Poller {
            interval: interval.max(Duration::from_secs(1)),
            expires_after,
        }
    }

    /// The wait before the first poll.
    pub fn first(&self) -> Next {
        Next::PollIn(self.interval)
    }

    /// The next step after `answer`, `elapsed` after the code was issued.
    pub fn on_answer(&mut self, answer: PollAnswer, elapsed: Duration) -> Next {
        match answer {
            PollAnswer::Paired(join) => return Next::Done(join),
            PollAnswer::Denied => return Next::Failed(PairingFailure::Denied),
            PollAnswer::Expired => return Next::Failed(PairingFailure::Expired),
            PollAnswer::SlowDown => self.interval += SLOW_DOWN_STEP,
            PollAnswer::Pending => {}
        }
        if elapsed > self.expires_after {
            return Next::Failed(PairingFailure::Expired);
        }
        Next::PollIn(self.interval)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_read_back_in_any_form() {
        let code = UserCode::parse("bdfg-hjkl").expect("code");
        assert_eq!(code.as_str(), "BDFGHJKL");
        assert_eq!(code.to_string(), "BDFG-HJKL");
        assert_eq!(UserCode::parse(" BDFG HJKL "), Ok(code.clone()));
        assert_eq!(UserCode::parse(&code.to_string()), Ok(code));
        for (bad, why) in [
            ("", UserCodeError::Length),
            ("BDFG-HJK", UserCodeError::Length),
            ("BDFG-HJKLM", UserCodeError::Length),
            ("BDFG-HJKA", UserCodeError::Letter),
            ("BDFG-HJK1", UserCodeError::Letter),
            ("BDFG-HJKÉ", UserCodeError::Letter),
        ] {
            assert_eq!(UserCode::parse(bad), Err(why), "{bad:?}");
        }
    }

    #[test]
    fn random_codes_use_every_letter_evenly() {
        let mut counts = [0u32; 20];
        let all: Vec<u8> = (0..240u8).collect();
        for chunk in all.chunks(8) {
            let code = UserCode::from_random(chunk).expect("8 usable bytes");
            for c in code.as_str().bytes() {
                let i = USER_CODE_ALPHABET
                    .iter()
                    .position(|a| *a == c)
                    .expect("letter");
                counts[i] += 1;
            }
        }
        assert!(counts.iter().all(|n| *n == 12), "{counts:?}");
        assert_eq!(UserCode::from_random(&[250; 32]), None, "all rejected");
    }

    #[test]
    fn error_codes_round_trip() {
        for a in [
            PollAnswer::Pending,
            PollAnswer::SlowDown,
            PollAnswer::Denied,
            PollAnswer::Expired,
        ] {
            let code = a.error_code().expect("code");
            assert_eq!(PollAnswer::from_error_code(code), Some(a));
        }
        assert_eq!(PollAnswer::Paired("j".into()).error_code(), None);
        assert_eq!(PollAnswer::from_error_code("nope"), None);
    }

    #[test]
    fn the_poller_waits_slows_down_and_stops() {
        let second = Duration::from_secs(1);
        let mut p = Poller::new(Duration::from_secs(2), Duration::from_secs(600));
        assert_eq!(p.first(), Next::PollIn(2 * second));
        assert_eq!(
            p.on_answer(PollAnswer::Pending, 2 * second),
            Next::PollIn(2 * second)
        );
        assert_eq!(
            p.on_answer(PollAnswer::SlowDown, 4 * second),
            Next::PollIn(7 * second)
        );
        assert_eq!(
            p.on_answer(PollAnswer::Pending, 11 * second),
            Next::PollIn(7 * second)
        );
        assert_eq!(
            p.on_answer(PollAnswer::Pending, 601 * second),
            Next::Failed(PairingFailure::Expired),
            "past the expiry, no more polls"
        );
        assert_eq!(
            p.on_answer(PollAnswer::Paired("turbo://t@h:1".into()), 5 * second),
            Next::Done("turbo://t@h:1".into())
        );
        assert_eq!(
            p.on_answer(PollAnswer::Denied, second),
            Next::Failed(PairingFailure::Denied)
        );
        assert_eq!(
            Poller::new(Duration::ZERO, second).first(),
            Next::PollIn(second),
            "at least a second between polls"
        );
    }
}
