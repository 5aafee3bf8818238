//! Sans-IO core of Turbo.
//!
//! This crate owns every byte format Turbo speaks and nothing else: no sockets, no
//! clock, no runtime. Drivers (`turbo-dataplane`, `turbo-node`) feed bytes in and write
//! out what the state machines hand back. Everything here is deterministic and fuzzable.
//!
//! - [`socks5`]: the SOCKS5 server handshake (RFC 1928 + RFC 1929 username/password).
//! - [`http`]: the HTTP proxy request head (`CONNECT` and absolute-form requests).
//! - [`http_body`]: one plain-HTTP request per connection (where its body ends, and
//!   `Connection: close` in the response).
//! - [`params`]: the parameters customers put in their proxy username.
//! - [`wire`]: the versioned server<->node protocol (control stream + relay streams).
//! - [`join`]: the join string that tells a node where its server is and how to trust it.
//! - [`status`]: mapping of relay outcomes to SOCKS5 reply codes and HTTP statuses with
//!   RFC 9209 `Proxy-Status`.
#![warn(missing_docs)]

pub mod http;
pub mod http_body;
pub mod join;
pub mod pairing;
pub mod params;
pub mod reach;
pub mod size;
pub mod socks5;
pub mod status;
pub mod target;
pub mod wire;

pub use status::RelayStatus;
pub use target::TargetAddr;

/// A username/password pair as sent by a customer (SOCKS5 RFC 1929 or HTTP Basic).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The proxy username: account name plus routing parameters (see [`params`]).
    pub username: String,
    /// The proxy password: the customer's API key. Never logged.
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}
