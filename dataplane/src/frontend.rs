//! The customer-facing protocols: which one a listener speaks, and how a customer is
//! told the outcome of their request in it (a SOCKS5 reply, `200 Connection
//! Established`, or an HTTP error with an RFC 9209 `Proxy-Status`). A leaf module.

use turbo_proto::http::response;
use turbo_proto::socks5::{encode_reply, Reply};
use turbo_proto::status::proxy_status_value;
use turbo_proto::RelayStatus;

/// Which protocol a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Frontend {
    /// SOCKS5 (RFC 1928/1929).
    Socks,
    /// HTTP proxy (CONNECT and absolute-form).
    Http,
}

/// The protocol the customer is waiting for an answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReplyKind {
    /// SOCKS5 CONNECT.
    Socks,
    /// HTTP CONNECT.
    HttpConnect,
    /// Absolute-form HTTP request: the target's response is the answer.
    HttpForward,
}

impl ReplyKind {
    /// The front end's name in records and metrics.
    pub(crate) fn frontend(self) -> &'static str {
        match self {
            ReplyKind::Socks => "socks5",
            ReplyKind::HttpConnect | ReplyKind::HttpForward => "http",
        }
    }

    /// Bytes to send once the node connected, if any. `moved_to` names the new node of a
    /// sticky session whose pinned node was gone; HTTP CONNECT reports it in
    /// `Proxy-Status`.
    pub(crate) fn success(self, moved_to: Option<&str>) -> Option<Vec<u8>> {
        match self {
            ReplyKind::Socks => {
                let mut out = Vec::with_capacity(10);
                encode_reply(Reply::Succeeded, None, &mut out);
                Some(out)
            }
            ReplyKind::HttpConnect => {
                let status = moved_to.map(|node| {
                    format!("turbo; next-hop=\"{node}\"; details=\"session_node_gone: session moved to a new node\"")
                });
                Some(response(200, status.as_deref(), &[]))
            }
            ReplyKind::HttpForward => None,
        }
    }

    /// Bytes that tell the customer the request failed with `status`.
    pub(crate) fn failure(self, status: RelayStatus, details: &str) -> Vec<u8> {
        match self {
            ReplyKind::Socks => {
                let mut out = Vec::with_capacity(10);
                encode_reply(status.socks_reply(), None, &mut out);
                out
            }
            ReplyKind::HttpConnect | ReplyKind::HttpForward => {
                let error = status.proxy_error().unwrap_or("proxy_internal_error");
                let details = if details.is_empty() {
                    status.reason()
                } else {
                    details
                };
                response(
                    status.http_status(),
                    Some(&proxy_status_value(error, details)),
                    &[],
                )
            }
        }
    }
}
