//! Setting a connection up: the UDP socket, quiche's configuration (the node's flow
//! control windows, the trust anchor), the QUIC handshake aimed at a server core, and
//! the pin check once the handshake is done. Also used by the RTT probes
//! ([`crate::servers`]).

use std::{net::SocketAddr, rc::Rc};

use sha2::Digest as _;
use subtle::ConstantTimeEq;
use tokio::net::UdpSocket;
use turbo_proto::wire::{window, ALPN};

use super::Lane;
use crate::conn::Conn;
use crate::{NodeConfig, NodeError};

const UDP_BUFFER: usize = 4 << 20;

/// A UDP socket with large buffers (the kernel caps them at rmem_max / wmem_max).
pub(crate) fn bind_udp(
    peer: SocketAddr,
    local: Option<std::net::IpAddr>,
) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(peer), Type::DGRAM, Some(Protocol::UDP))?;
    let _ = sock.set_recv_buffer_size(UDP_BUFFER);
    let _ = sock.set_send_buffer_size(UDP_BUFFER);
    sock.set_nonblocking(true)?;
    let any: SocketAddr = match local {
        Some(ip) => (ip, 0).into(),
        None if peer.is_ipv6() => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        None => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
    };
    sock.bind(&any.into())?;
    UdpSocket::from_std(sock.into())
}

/// quiche's configuration for connections to the server of `cfg`.
pub(crate) fn quic_config(cfg: &NodeConfig) -> Result<quiche::Config, NodeError> {
    let mut c = quiche::Config::new(quiche::PROTOCOL_VERSION)?;
    c.set_application_protos(&[ALPN])?;
    match (&cfg.join.pin, &cfg.ca_file) {
        (Some(_), _) => c.verify_peer(false), // The pin is checked before any byte is sent.
        (None, Some(ca)) => {
            c.verify_peer(true);
            c.load_verify_locations_from_file(&ca.to_string_lossy())?;
        }
        (None, None) => return Err(NodeError::NoTrustAnchor),
    }
    c.set_max_idle_timeout(30_000);
    turbo_quic::configure_paths(&mut c);
    cfg.congestion_control.apply(&mut c);
    // Server -> node data (customer -> target): a stream whose target stops reading
    // holds at most STREAM_WINDOW of the shared window.
    c.set_initial_max_data(window::CONNECTION_WINDOW);
    c.set_max_connection_window(window::CONNECTION_WINDOW);
    c.set_initial_max_stream_data_bidi_local(1 << 20);
    c.set_initial_max_stream_data_bidi_remote(window::STREAM_WINDOW_INITIAL);
    c.set_max_stream_window(window::STREAM_WINDOW);
    c.set_initial_max_streams_bidi(u64::from(cfg.max_streams));
    c.set_initial_max_streams_uni(0);
    #[cfg(feature = "fault-injection")]
    if crate::fault::current() == crate::fault::Fault::OkNeverReadHugeWindows {
        c.set_initial_max_data(1 << 40);
        c.set_initial_max_stream_data_bidi_remote(1 << 40);
        c.set_max_stream_window(1 << 40);
        c.set_max_connection_window(1 << 40);
    }
    Ok(c)
}

/// Resolves the server, binds the UDP socket and starts the QUIC handshake, aiming the
/// Initial at server core `lane.index`. Returns the socket, its local address, the
/// server's address and the connection.
/// The server address of `cfg`'s join string, resolved (the first answer).
///
/// # Errors
/// [`NodeError`] when the name does not resolve.
pub(crate) async fn resolve_server(cfg: &NodeConfig) -> Result<SocketAddr, NodeError> {
    let server = cfg.join.server_addr();
    let first = tokio::net::lookup_host(&server).await?.next();
    first.ok_or(NodeError::Resolve(server))
}

pub(super) async fn connect(
    cfg: &NodeConfig,
    lane: Lane,
) -> Result<(UdpSocket, SocketAddr, SocketAddr, Rc<Conn>), NodeError> {
    let peer = resolve_server(cfg).await?;
    let socket = bind_udp(peer, cfg.bind)?;
    let local = socket.local_addr()?;
    let mut qcfg = quic_config(cfg)?;
    let scid: [u8; 16] = rand::random();
    let mut dcid: [u8; 16] = rand::random();
    dcid[0] = lane.index;
    let quic = quiche::connect_with_dcid_and_buffer_factory::<turbo_quic::ZcFactory>(
        Some(&cfg.join.host),
        &quiche::ConnectionId::from_ref(&scid),
        &quiche::ConnectionId::from_ref(&dcid),
        local,
        peer,
        &mut qcfg,
    )?;
    Ok((
        socket,
        local,
        peer,
        Rc::new(Conn::new(quic, Default::default())),
    ))
}

/// Checks the server's certificate against the pin, when there is one.
pub(crate) fn check_pin(cfg: &NodeConfig, conn: &Conn) -> Result<(), NodeError> {
    let Some(pin) = cfg.join.pin else {
        return Ok(()); // Verified against the CA by BoringSSL.
    };
    let quic = conn.quic.borrow();
    let der = quic.peer_cert().ok_or(NodeError::PinMismatch)?;
    let got: [u8; 32] = sha2::Sha256::digest(der).into();
    if bool::from(got.ct_eq(&pin)) {
        Ok(())
    } else {
        Err(NodeError::PinMismatch)
    }
}
