//! What a front end's handshake yields (who, where to, how to answer, what to send
//! first) and how it can fail. Shared by the SOCKS5 and HTTP front ends.

use turbo_proto::TargetAddr;

use crate::control::{AuthDenied, AuthGrant};
use crate::frontend::ReplyKind;

/// The result of a successful front-end handshake.
pub(crate) struct Handshake {
    /// Who the customer is.
    pub(crate) grant: AuthGrant,
    /// Where they want to go.
    pub(crate) target: TargetAddr,
    /// How to answer them once the node replies.
    pub(crate) reply: ReplyKind,
    /// Bytes to send upstream before relaying (rewritten HTTP head and what arrived of
    /// its body, or SOCKS5 early data).
    pub(crate) pending: Vec<u8>,
    /// Plain HTTP: where the rest of the request's body ends (nothing after it goes
    /// upstream). `None` relays until the customer closes.
    pub(crate) body: Option<turbo_proto::http_body::BodyEnd>,
    /// Plain HTTP: follows the target's response, to close once it is complete.
    pub(crate) response: Option<turbo_proto::http_body::ResponseEnd>,
}

/// Why a handshake ended without a relay. The customer has already been answered.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HandshakeError {
    /// The socket failed.
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    /// The customer closed the connection mid-handshake.
    #[error("closed during handshake")]
    Closed,
    /// The SOCKS5 handshake was malformed or refused.
    #[error("socks5: {0}")]
    Socks(#[from] turbo_proto::socks5::Socks5Error),
    /// The HTTP head was malformed.
    #[error("http: {0}")]
    Http(#[from] turbo_proto::http::HttpError),
    /// The HTTP request carried no `Proxy-Authorization`.
    #[error("no credentials")]
    NoCredentials,
    /// The HTTP request's chunked body was malformed.
    #[error("http body: {0}")]
    Body(#[from] turbo_proto::http_body::BodyError),
    /// The control plane refused the credentials.
    #[error("denied: {0}")]
    Denied(#[from] AuthDenied),
    /// The handshake did not finish in time.
    #[error("handshake timed out")]
    Timeout,
}
