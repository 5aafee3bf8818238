//! Outcomes of a relay attempt, and how each is told to the customer.
//!
//! The node answers every relay stream with a [`RelayStatus`] before any byte flows.
//! The server may also fail a request itself ([`RelayStatus::NoNodes`] and friends). Each
//! status maps to exactly one SOCKS5 reply code and one HTTP status with an RFC 9209
//! `Proxy-Status` error type, so both front ends tell the same story.

use crate::socks5::Reply;

/// The typed outcome of a relay attempt. The discriminant is the wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RelayStatus {
    /// The node connected to the target; bytes follow.
    Ok = 0,
    /// The node's destination policy refused the target (private range, blocked port...).
    RefusedByPolicy = 1,
    /// The target's name did not resolve.
    DnsFailure = 2,
    /// The target refused the TCP connection.
    ConnectionRefused = 3,
    /// Connecting to the target timed out.
    Timeout = 4,
    /// The node has no route to the target's network.
    NetworkUnreachable = 5,
    /// The target host is unreachable.
    HostUnreachable = 6,
    /// The node is at its stream limit or is draining.
    NodeOverloaded = 7,
    /// The node could not parse the relay header.
    BadRequest = 8,
    /// Any other failure on the node.
    GeneralFailure = 9,
    /// Server side: no node is available for the request.
    NoNodes = 10,
    /// Server side: the chosen node went away before it answered.
    NodeGone = 11,
    /// Server side: the key has no credit left.
    NoCredits = 12,
    /// Server side: the key was revoked.
    KeyRevoked = 13,
    /// Server side: the credit store is unreachable and no lease covers the request.
    CreditUnavailable = 14,
    /// Server side: no node serves the requested country.
    CountryUnavailable = 15,
    /// Server side: the key has as many open connections as it may.
    KeyConnectionLimit = 16,
    /// Server side: the key opens new connections faster than it may.
    KeyRateLimit = 17,
    /// Server side: the server (or this listener) is at its connection limit.
    ServerBusy = 18,
    /// Server side: a verdict throttles the key (new tunnels per second).
    KeyThrottled = 19,
    /// Server side: a verdict suspends the key.
    KeySuspended = 20,
    /// Server side: a verdict blocks this target for the key.
    TargetBlocked = 21,
    /// Server side: the target receives as many new tunnels from the whole network as
    /// it may (the per-target cap across all customers).
    TargetCapped = 22,
}

impl RelayStatus {
    /// Decodes a wire code; unknown codes become [`RelayStatus::GeneralFailure`] so that a
    /// newer node never crashes an older server.
    pub fn from_code(code: u8) -> Self {
        use RelayStatus::*;
        match code {
            0 => Ok,
            1 => RefusedByPolicy,
            2 => DnsFailure,
            3 => ConnectionRefused,
            4 => Timeout,
            5 => NetworkUnreachable,
            6 => HostUnreachable,
            7 => NodeOverloaded,
            8 => BadRequest,
            10 => NoNodes,
            11 => NodeGone,
            12 => NoCredits,
            13 => KeyRevoked,
            14 => CreditUnavailable,
            15 => CountryUnavailable,
            16 => KeyConnectionLimit,
            17 => KeyRateLimit,
            18 => ServerBusy,
            19 => KeyThrottled,
            20 => KeySuspended,
            21 => TargetBlocked,
            22 => TargetCapped,
            _ => GeneralFailure,
        }
    }

    /// The wire code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Whether the failure is the target's (or the customer's) fault rather than the
    /// node's. Target faults must not count against a node's reliability and must not be
    /// retried on another node.
    pub fn is_target_fault(self) -> bool {
        use RelayStatus::*;
        matches!(
            self,
            RefusedByPolicy | DnsFailure | ConnectionRefused | HostUnreachable | BadRequest
        )
    }

    /// Whether the node itself failed the attempt (gone, full, broken network, internal
    /// error): such failures count against the node and are retried on another node.
    /// Timeouts are neither node nor target faults: they are not retried.
    pub fn is_node_fault(self) -> bool {
        use RelayStatus::*;
        matches!(
            self,
            NodeGone | NodeOverloaded | GeneralFailure | NetworkUnreachable
        )
    }

    /// The SOCKS5 reply code (RFC 1928 section 6) for this outcome.
    pub fn socks_reply(self) -> Reply {
        use RelayStatus::*;
        match self {
            Ok => Reply::Succeeded,
            RefusedByPolicy | NoCredits | KeyRevoked | KeyConnectionLimit | KeyRateLimit
            | KeyThrottled | KeySuspended | TargetBlocked | TargetCapped => Reply::NotAllowed,
            DnsFailure | HostUnreachable => Reply::HostUnreachable,
            ConnectionRefused => Reply::ConnectionRefused,
            Timeout => Reply::TtlExpired,
            NetworkUnreachable | CountryUnavailable => Reply::NetworkUnreachable,
            NodeOverloaded | BadRequest | GeneralFailure | NoNodes | NodeGone
            | CreditUnavailable | ServerBusy => Reply::GeneralFailure,
        }
    }

    /// The HTTP status code for this outcome.
    pub fn http_status(self) -> u16 {
        use RelayStatus::*;
        match self {
            Ok => 200,
            RefusedByPolicy => 403,
            Timeout => 504,
            NodeOverloaded | NoNodes | CreditUnavailable | CountryUnavailable | ServerBusy => 503,
            KeyConnectionLimit | KeyRateLimit | KeyThrottled | KeySuspended | TargetBlocked
            | TargetCapped => 429,
            NoCredits => 402,
            KeyRevoked => 407,
            DnsFailure | ConnectionRefused | NetworkUnreachable | HostUnreachable | BadRequest
            | GeneralFailure | NodeGone => 502,
        }
    }

    /// The RFC 9209 proxy error type, or `None` for success.
    pub fn proxy_error(self) -> Option<&'static str> {
        use RelayStatus::*;
        Some(match self {
            Ok => return None,
            RefusedByPolicy => "destination_ip_prohibited",
            DnsFailure => "dns_error",
            ConnectionRefused => "connection_refused",
            Timeout => "connection_timeout",
            NetworkUnreachable => "destination_ip_unroutable",
            HostUnreachable => "destination_unavailable",
            NodeOverloaded => "connection_limit_reached",
            BadRequest => "http_request_error",
            GeneralFailure => "proxy_internal_error",
            NoNodes => "destination_unavailable",
            NodeGone => "connection_terminated",
            NoCredits | KeyRevoked => "http_request_denied",
            CreditUnavailable => "proxy_internal_error",
            CountryUnavailable => "destination_unavailable",
            KeyConnectionLimit | KeyRateLimit | ServerBusy | KeyThrottled | TargetCapped => {
                "connection_limit_reached"
            }
            KeySuspended | TargetBlocked => "http_request_denied",
        })
    }

    /// A short machine-readable reason used in `Proxy-Status` `details` and in logs.
    pub fn reason(self) -> &'static str {
        use RelayStatus::*;
        match self {
            Ok => "ok",
            RefusedByPolicy => "refused_by_policy",
            DnsFailure => "dns_failure",
            ConnectionRefused => "connection_refused",
            Timeout => "timeout",
            NetworkUnreachable => "network_unreachable",
            HostUnreachable => "host_unreachable",
            NodeOverloaded => "node_overloaded",
            BadRequest => "bad_request",
            GeneralFailure => "general_failure",
            NoNodes => "no_nodes",
            NodeGone => "node_gone",
            NoCredits => "no_credits",
            KeyRevoked => "key_revoked",
            CreditUnavailable => "credit_unavailable",
            CountryUnavailable => "country_unavailable",
            KeyConnectionLimit => "key_connection_limit",
            KeyRateLimit => "key_rate_limit",
            ServerBusy => "server_busy",
            KeyThrottled => "key_throttled",
            KeySuspended => "key_suspended",
            TargetBlocked => "target_blocked",
            TargetCapped => "target_capped",
        }
    }
}

/// Formats an RFC 9209 `Proxy-Status` header value for a failure:
/// `turbo; error=<type>; details="<details>"`.
///
/// `details` is sanitised to printable ASCII without quotes or backslashes.
pub fn proxy_status_value(error: &str, details: &str) -> String {
    let clean: String = details
        .chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .filter(|c| *c != '"' && *c != '\\')
        .take(200)
        .collect();
    format!("turbo; error={error}; details=\"{clean}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip() {
        for code in 0..=22u8 {
            let s = RelayStatus::from_code(code);
            if code != 9 {
                assert_eq!(s.code(), code);
            }
        }
        assert_eq!(RelayStatus::from_code(200), RelayStatus::GeneralFailure);
    }

    #[test]
    fn policy_maps_to_not_allowed_and_403() {
        let s = RelayStatus::RefusedByPolicy;
        assert_eq!(s.socks_reply(), Reply::NotAllowed);
        assert_eq!(s.http_status(), 403);
        assert_eq!(s.proxy_error(), Some("destination_ip_prohibited"));
    }

    #[test]
    fn proxy_status_is_sanitised() {
        assert_eq!(
            proxy_status_value("dns_error", "bad \"name\"\r\n"),
            "turbo; error=dns_error; details=\"bad name\""
        );
    }
}
