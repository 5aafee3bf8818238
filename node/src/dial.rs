//! Opening the TCP connection to a relay stream's target: port and domain checks, resolution
//! (the system resolver in production), the policy check on EVERY resolved address (so
//! a name that also resolves somewhere private is refused as a whole), then Happy
//! Eyeballs (RFC 8305) over exactly the addresses that passed: families interleaved,
//! attempts started 250 ms apart or as soon as the previous one fails, first to connect
//! wins. Failures come back as a [`DialError`], which maps to the typed [`RelayStatus`]
//! the server shows the customer.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Duration;

use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::net::TcpStream;
use tokio::time::{sleep_until, timeout_at, Instant};
use turbo_proto::{RelayStatus, TargetAddr};

use crate::guard::{DestinationPolicy, PolicyDenied};

/// Why a relay stream's target could not be connected. The message is the detail the
/// node sends the server along with [`DialError::status`].
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The destination policy refuses the target's port, its name or one of its addresses.
    #[error(transparent)]
    Refused(#[from] PolicyDenied),
    /// The target's name did not resolve before the deadline.
    #[error("DNS timeout")]
    DnsTimeout {
        /// The name.
        host: String,
    },
    /// The resolver failed for the target's name.
    #[error("{source}")]
    Dns {
        /// The name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// The target's name resolved to no address at all.
    #[error("no addresses")]
    NoAddresses {
        /// The name.
        host: String,
    },
    /// Every attempt failed: the last attempt's address and error.
    #[error("{addr}: {source}")]
    Connect {
        /// The address of the last failed attempt.
        addr: SocketAddr,
        /// Its connect error.
        source: std::io::Error,
    },
    /// No attempt connected before the deadline.
    #[error("connect timed out")]
    ConnectTimeout {
        /// Attempts started by then.
        attempts: usize,
    },
    /// Connecting was asked with no address to try (a caller bug: resolution never
    /// returns an empty list).
    #[error("no address tried")]
    NoAddress,
}

/// Whose fault a failed dial was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Blame {
    /// The target: its name, its host or the network on the way to it.
    Target,
    /// The node's destination policy (the runner's, the server's or the defaults).
    Policy,
    /// The node itself: its sockets or its code.
    Internal,
}

impl DialError {
    /// The relay status the node answers the server with.
    pub fn status(&self) -> RelayStatus {
        match self {
            DialError::Refused(_) => RelayStatus::RefusedByPolicy,
            DialError::DnsTimeout { .. } | DialError::ConnectTimeout { .. } => RelayStatus::Timeout,
            DialError::Dns { .. } | DialError::NoAddresses { .. } => RelayStatus::DnsFailure,
            DialError::Connect { source, .. } => status_of(source),
            DialError::NoAddress => RelayStatus::GeneralFailure,
        }
    }

    /// Whose fault the failure was: a connect error that is not about the target
    /// (out of file descriptors, say) is the node's.
    pub fn blame(&self) -> Blame {
        match self {
            DialError::Refused(_) => Blame::Policy,
            DialError::Connect { source, .. }
                if status_of(source) == RelayStatus::GeneralFailure =>
            {
                Blame::Internal
            }
            DialError::DnsTimeout { .. }
            | DialError::Dns { .. }
            | DialError::NoAddresses { .. }
            | DialError::Connect { .. }
            | DialError::ConnectTimeout { .. } => Blame::Target,
            DialError::NoAddress => Blame::Internal,
        }
    }
}

/// Delay between connection attempts (RFC 8305 section 5).
const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Name resolution.
pub trait Resolve {
    /// Every address of `host`, with `port`.
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + 'a>>;
}

/// The operating system's resolver (`getaddrinfo`, honouring `/etc/hosts`).
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> Pin<Box<dyn Future<Output = std::io::Result<Vec<SocketAddr>>> + 'a>> {
        Box::pin(async move { Ok(tokio::net::lookup_host((host, port)).await?.collect()) })
    }
}

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

/// Checks the target's port and name, resolves it, and checks every address.
///
/// # Errors
/// [`DialError::Refused`], or a DNS failure or timeout.
pub async fn resolve_checked(
    target: &TargetAddr,
    deadline: Instant,
    policy: &DestinationPolicy,
    resolver: &dyn Resolve,
) -> Result<Vec<SocketAddr>, DialError> {
    policy.check_port(target.port())?;
    let addrs: Vec<SocketAddr> = match target {
        TargetAddr::Ip(a) => vec![*a],
        TargetAddr::Domain { host, port } => {
            policy.check_domain(host)?;
            let addrs = match timeout_at(deadline, resolver.resolve(host, *port)).await {
                Err(_) => return Err(DialError::DnsTimeout { host: host.clone() }),
                Ok(Err(source)) => {
                    return Err(DialError::Dns {
                        host: host.clone(),
                        source,
                    })
                }
                Ok(Ok(a)) => a,
            };
            if addrs.is_empty() {
                return Err(DialError::NoAddresses { host: host.clone() });
            }
            addrs
        }
    };
    for a in &addrs {
        policy.check(*a)?;
    }
    Ok(addrs)
}

/// RFC 8305 order: alternate families, starting with the first address's family.
fn interleave(addrs: Vec<SocketAddr>) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (mut a, mut b): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|x| x.is_ipv6() == first_v6);
    a.reverse();
    b.reverse();
    let mut out = Vec::with_capacity(a.len() + b.len());
    while let Some(x) = a.pop() {
        out.push(x);
        if let Some(y) = b.pop() {
            out.push(y);
        }
    }
    out.extend(b.into_iter().rev());
    out
}

/// Races connections to `addrs` Happy-Eyeballs style until one connects.
///
/// # Errors
/// The last failure ([`DialError::Connect`]), or [`DialError::ConnectTimeout`] at
/// `deadline`.
pub async fn connect_racing(
    addrs: Vec<SocketAddr>,
    deadline: Instant,
) -> Result<TcpStream, DialError> {
    let order = interleave(addrs);
    let mut next = 0;
    let mut racing = FuturesUnordered::new();
    let mut last = DialError::NoAddress;
    let mut next_start = Instant::now();
    loop {
        if next < order.len() && (racing.is_empty() || Instant::now() >= next_start) {
            let a = order[next];
            next += 1;
            racing.push(async move { (a, TcpStream::connect(a).await) });
            next_start = Instant::now() + ATTEMPT_DELAY;
        }
        if racing.is_empty() {
            return Err(last);
        }
        tokio::select! {
            Some((a, r)) = racing.next() => match r {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    return Ok(s);
                }
                Err(source) => {
                    last = DialError::Connect { addr: a, source };
                    next_start = Instant::now();
                }
            },
            _ = sleep_until(next_start), if next < order.len() => {}
            _ = sleep_until(deadline) => {
                return Err(DialError::ConnectTimeout { attempts: next });
            }
        }
    }
}

/// Resolves, checks and connects within `limit`.
///
/// # Errors
/// A [`DialError`]; its [`DialError::status`] is the status to report.
pub async fn dial(
    target: &TargetAddr,
    limit: Duration,
    policy: &DestinationPolicy,
    resolver: &dyn Resolve,
) -> Result<TcpStream, DialError> {
    let deadline = Instant::now() + limit;
    let addrs = resolve_checked(target, deadline, policy, resolver).await?;
    connect_racing(addrs, deadline).await
}

#[cfg(test)]
mod tests;
