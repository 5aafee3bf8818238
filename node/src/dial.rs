//! Opening the target connection for a relay stream: port check, resolution with the
//! system resolver, the policy check on EVERY resolved address (so a name that also
//! resolves somewhere private is refused as a whole), then a connect to exactly an
//! address that passed. Failures come back as the typed [`RelayStatus`] the server
//! shows the customer.

use std::io::ErrorKind;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use turbo_proto::{RelayStatus, TargetAddr};

use crate::guard::DestinationPolicy;

/// A failed dial: the status for the server and a detail message.
pub type DialError = (RelayStatus, String);

/// Maps a connect error to a relay status.
pub fn status_of(e: &std::io::Error) -> RelayStatus {
    match e.kind() {
        ErrorKind::ConnectionRefused => RelayStatus::ConnectionRefused,
        ErrorKind::TimedOut => RelayStatus::Timeout,
        ErrorKind::NetworkUnreachable => RelayStatus::NetworkUnreachable,
        ErrorKind::HostUnreachable => RelayStatus::HostUnreachable,
        // ENETUNREACH / EHOSTUNREACH on Linux, for std versions that map them to Other.
        _ => match e.raw_os_error() {
            Some(101) => RelayStatus::NetworkUnreachable,
            Some(113) => RelayStatus::HostUnreachable,
            _ => RelayStatus::GeneralFailure,
        },
    }
}

/// Resolves, checks and connects within `limit`.
///
/// # Errors
/// A [`DialError`] with the status to report.
pub async fn dial(
    target: &TargetAddr,
    limit: Duration,
    policy: &DestinationPolicy,
) -> Result<TcpStream, DialError> {
    let deadline = Instant::now() + limit;
    let refused = |e: crate::guard::PolicyDenied| (RelayStatus::RefusedByPolicy, e.to_string());
    policy.check_port(target.port()).map_err(refused)?;
    let addrs: Vec<SocketAddr> = match target {
        TargetAddr::Ip(a) => vec![*a],
        TargetAddr::Domain { host, port } => {
            match timeout_at(deadline, tokio::net::lookup_host((host.as_str(), *port))).await {
                Err(_) => return Err((RelayStatus::Timeout, "DNS timeout".into())),
                Ok(Err(e)) => return Err((RelayStatus::DnsFailure, e.to_string())),
                Ok(Ok(it)) => it.collect(),
            }
        }
    };
    if addrs.is_empty() {
        return Err((RelayStatus::DnsFailure, "no addresses".into()));
    }
    for a in &addrs {
        policy.check(*a).map_err(refused)?;
    }
    let mut last = (RelayStatus::GeneralFailure, "no address tried".to_owned());
    for a in addrs {
        match timeout_at(deadline, TcpStream::connect(a)).await {
            Ok(Ok(s)) => {
                let _ = s.set_nodelay(true);
                return Ok(s);
            }
            Ok(Err(e)) => last = (status_of(&e), format!("{a}: {e}")),
            Err(_) => return Err((RelayStatus::Timeout, format!("connect to {a} timed out"))),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_io_errors() {
        let e = std::io::Error::from(ErrorKind::ConnectionRefused);
        assert_eq!(status_of(&e), RelayStatus::ConnectionRefused);
        assert_eq!(
            status_of(&std::io::Error::from_raw_os_error(101)),
            RelayStatus::NetworkUnreachable
        );
        assert_eq!(
            status_of(&std::io::Error::from_raw_os_error(113)),
            RelayStatus::HostUnreachable
        );
        assert_eq!(
            status_of(&std::io::Error::other("x")),
            RelayStatus::GeneralFailure
        );
    }

    #[tokio::test]
    async fn refuses_before_connecting_and_reports_refusals() {
        let policy = DestinationPolicy::default();
        let t = TargetAddr::Ip("127.0.0.1:9".parse().expect("a"));
        let err = dial(&t, Duration::from_secs(1), &policy).await.err();
        assert_eq!(err.map(|e| e.0), Some(RelayStatus::RefusedByPolicy));
        // localhost resolves to loopback: refused after resolution.
        let t = TargetAddr::domain("localhost", 80).expect("t");
        let err = dial(&t, Duration::from_secs(1), &policy).await.err();
        assert_eq!(err.map(|e| e.0), Some(RelayStatus::RefusedByPolicy));
        // Allowed, but nothing listens: connection refused.
        let lab = DestinationPolicy::new(vec!["127.0.0.0/8".parse().expect("n")]);
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("a")
            .port();
        let t = TargetAddr::Ip(SocketAddr::from(([127, 0, 0, 1], port)));
        let err = dial(&t, Duration::from_secs(1), &lab).await.err();
        assert_eq!(err.map(|e| e.0), Some(RelayStatus::ConnectionRefused));
    }
}
