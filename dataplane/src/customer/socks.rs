//! The SOCKS5 front end: drives [`turbo_proto::socks5::Socks5Handshake`] over the
//! customer socket and asks the control plane about the credentials.

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use turbo_proto::socks5::{Socks5Handshake, Socks5Step};

use super::handshake::{Handshake, HandshakeError};
use crate::auth::AuthCache;
use crate::frontend::ReplyKind;
use crate::relay::core::RelayCore;

/// Runs the SOCKS5 handshake up to the CONNECT request.
///
/// # Errors
/// [`HandshakeError`]; the customer has been sent the matching reply.
pub(super) async fn handshake(
    core: &RelayCore,
    auth: &AuthCache,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<Handshake, HandshakeError> {
    let mut hs = Socks5Handshake::new();
    let mut input: Option<Vec<u8>> = None;
    let mut grant = None;
    loop {
        let step = hs.input(input.as_deref().unwrap_or(&[]));
        if let Some(buf) = input.take() {
            core.pool.put(buf);
        }
        write_out(stream, hs.take_output()).await?;
        match step? {
            Socks5Step::NeedInput => {
                let (res, buf) = stream.read(core.pool.empty()).await;
                if res? == 0 {
                    core.pool.put(buf);
                    return Err(HandshakeError::Closed);
                }
                input = Some(buf);
            }
            Socks5Step::Credentials(credentials) => {
                let decision = auth.authorize(&credentials, peer).await;
                hs.auth_result(decision.is_ok());
                write_out(stream, hs.take_output()).await?;
                grant = Some(decision?);
            }
            Socks5Step::Connect(target) => {
                // The handshake only offers username/password, so a grant exists here.
                let grant = grant.ok_or(HandshakeError::Closed)?;
                return Ok(Handshake {
                    grant,
                    target,
                    reply: ReplyKind::Socks,
                    pending: hs.into_leftover(),
                    body: None,
                    response: None,
                });
            }
        }
    }
}

async fn write_out(stream: &mut TcpStream, out: Vec<u8>) -> std::io::Result<()> {
    if !out.is_empty() {
        let (res, _) = stream.write_all(out).await;
        res?;
    }
    Ok(())
}
