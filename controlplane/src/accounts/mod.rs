//! Dashboard accounts: users (email, argon2id password hash, role), what each owns
//! (customer keys, runner nodes), browser sessions and the sign-in throttle.
//!
//! One trait, [`AccountStore`], two backends chosen by `--store` like the main store:
//! [`memory::MemoryAccounts`] (the demo's default; users and ownership are kept in
//! `DATA_DIR/accounts.json`, owner-only, and sessions live as long as the process) and
//! [`redis::RedisAccounts`] (shared by every server on one Redis, so a session made on
//! one server works on all). The same suite tests both.
//!
//! Secrets: passwords are stored only as argon2id PHC strings; a session is known by
//! the SHA-256 of its cookie value, never the value itself.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

pub mod memory;
pub mod password;
pub mod redis;
#[cfg(test)]
mod suite;

/// Failed sign-ins for one email that lock its sign-in.
pub const MAX_LOGIN_FAILURES: u32 = 20;
/// Sign-ups one IP address may make per window.
pub const MAX_SIGNUPS_PER_IP: u32 = 10;
/// How long failed sign-ins are remembered (and a lock lasts), in seconds.
pub const LOGIN_WINDOW_SECS: u64 = 15 * 60;
/// How long a browser session lives without use, in seconds.
pub const SESSION_TTL_SECS: u64 = 7 * 24 * 3600;

/// What went wrong with an account operation.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// Another user has this email.
    #[error("an account with this email exists")]
    EmailTaken,
    /// No user with that id.
    #[error("no such user")]
    NoUser,
    /// Not an email address this server accepts.
    #[error("not a valid email address")]
    BadEmail,
    /// The backend failed.
    #[error("account store unavailable: {0}")]
    Unavailable(String),
}

/// What a user may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Owns API keys and their balance.
    Customer,
    /// Owns nodes and their earnings.
    Runner,
    /// Sees the whole network.
    Admin,
}

impl Role {
    /// Its name (`customer`, `runner`, `admin`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Customer => "customer",
            Role::Runner => "runner",
            Role::Admin => "admin",
        }
    }

    /// The role named `s`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "customer" => Some(Role::Customer),
            "runner" => Some(Role::Runner),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// A dashboard user.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// `u_…`.
    pub id: String,
    /// Lower-cased, trimmed.
    pub email: String,
    /// What the user may do.
    pub role: Role,
    /// The argon2id PHC string of the password.
    pub password_hash: String,
    /// Unix seconds.
    pub created: u64,
}

impl User {
    /// A new user with a fresh id, created now; `email` must be normalised.
    pub(crate) fn new(email: String, role: Role, password_hash: String) -> User {
        User {
            id: format!("u_{:016x}", rand::random::<u64>()),
            email,
            role,
            password_hash,
            created: crate::store::now_unix(),
        }
    }
}

/// What a user can own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Owned {
    /// An API key (customers).
    Key,
    /// A node (runners).
    Node,
    /// An invoice (customers).
    Invoice,
}

impl Owned {
    fn as_str(self) -> &'static str {
        match self {
            Owned::Key => "key",
            Owned::Node => "node",
            Owned::Invoice => "invoice",
        }
    }
}

/// A signed-in browser.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebSession {
    /// Who.
    pub user_id: String,
    /// The token every form of this session carries.
    pub csrf: String,
}

/// A boxed future of an account operation.
pub type AccountFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, AccountError>> + Send + 'a>>;

/// Where accounts live.
pub trait AccountStore: Send + Sync + 'static {
    /// Creates a user; [`AccountError::EmailTaken`] when the email is in use.
    fn create_user<'a>(
        &'a self,
        email: &'a str,
        role: Role,
        hash: String,
    ) -> AccountFuture<'a, User>;
    /// The user `id`; [`AccountError::NoUser`] when there is none.
    fn user<'a>(&'a self, id: &'a str) -> AccountFuture<'a, User>;
    /// The user with this (normalised) email.
    fn user_by_email<'a>(&'a self, email: &'a str) -> AccountFuture<'a, Option<User>>;
    /// Every user, oldest first.
    fn list_users(&self) -> AccountFuture<'_, Vec<User>>;
    /// Records that `user_id` owns `what` `id`.
    fn grant<'a>(&'a self, user_id: &'a str, what: Owned, id: &'a str) -> AccountFuture<'a, ()>;
    /// The ids of the `what`s `user_id` owns.
    fn owned<'a>(&'a self, user_id: &'a str, what: Owned) -> AccountFuture<'a, Vec<String>>;
    /// Who owns `what` `id`, if anyone.
    fn owner_of<'a>(&'a self, what: Owned, id: &'a str) -> AccountFuture<'a, Option<String>>;
    /// Stores a session under the hash of its cookie value, for
    /// [`SESSION_TTL_SECS`].
    fn put_session<'a>(
        &'a self,
        token_hash: &'a str,
        session: &'a WebSession,
    ) -> AccountFuture<'a, ()>;
    /// The live session with this cookie hash.
    fn session<'a>(&'a self, token_hash: &'a str) -> AccountFuture<'a, Option<WebSession>>;
    /// Ends a session.
    fn drop_session<'a>(&'a self, token_hash: &'a str) -> AccountFuture<'a, ()>;
    /// Counts one attempt of `subject` (`login:<email>` for a failed sign-in,
    /// `signup:<ip>` for a sign-up); returns its attempts within [`LOGIN_WINDOW_SECS`]
    /// of the first.
    fn throttle_hit<'a>(&'a self, subject: &'a str) -> AccountFuture<'a, u32>;
    /// The attempts of `subject` in the current window.
    fn throttle_count<'a>(&'a self, subject: &'a str) -> AccountFuture<'a, u32>;
}

/// `email` trimmed and lower-cased, if it looks like an address (one `@`, a dot in
/// the domain, printable ASCII, at most 254 characters).
///
/// # Errors
/// [`AccountError::BadEmail`].
pub fn normalise_email(email: &str) -> Result<String, AccountError> {
    let e = email.trim().to_ascii_lowercase();
    let printable = e.bytes().all(|b| b.is_ascii_graphic());
    let ok = match e.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
        }
        None => false,
    };
    if ok && printable && e.len() <= 254 {
        Ok(e)
    } else {
        Err(AccountError::BadEmail)
    }
}
