//! The HTTP proxy front end: reads one request head with
//! [`turbo_proto::http::HttpHeadParser`], insists on `Proxy-Authorization`, and asks
//! the control plane about it.

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use turbo_proto::http::{response, HttpHeadParser, HttpProxyRequest};
use turbo_proto::status::proxy_status_value;

use super::{Handshake, HandshakeError, ReplyKind};
use crate::control::AuthDenied;
use crate::cores::Core;

/// Reads the request head and authorizes it.
///
/// # Errors
/// [`HandshakeError`]; the customer has been sent the matching HTTP error.
pub(super) async fn handshake(
    core: &Core,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<Handshake, HandshakeError> {
    let mut parser = HttpHeadParser::new(core.cfg.http_limits);
    let request = loop {
        let (res, buf) = stream.read(core.pool.empty()).await;
        let n = match res {
            Ok(n) => n,
            Err(e) => {
                core.pool.put(buf);
                return Err(e.into());
            }
        };
        if n == 0 {
            core.pool.put(buf);
            return Err(HandshakeError::Closed);
        }
        let parsed = parser.input(&buf[..n]);
        core.pool.put(buf);
        match parsed {
            Ok(Some(request)) => break request,
            Ok(None) => continue,
            Err(e) => {
                let details = e.to_string();
                send(stream, e.status(), e.proxy_error(), &details).await;
                return Err(e.into());
            }
        }
    };
    let (target, credentials, reply, mut pending) = match request {
        HttpProxyRequest::Connect {
            target,
            credentials,
        } => (target, credentials, ReplyKind::HttpConnect, Vec::new()),
        HttpProxyRequest::Forward {
            target,
            credentials,
            head,
        } => (target, credentials, ReplyKind::HttpForward, head),
    };
    pending.extend_from_slice(&parser.into_leftover());
    let Some(credentials) = credentials else {
        send(
            stream,
            407,
            "http_request_denied",
            "missing Proxy-Authorization",
        )
        .await;
        return Err(HandshakeError::NoCredentials);
    };
    let grant = match crate::auth::authorize(core, &credentials, peer).await {
        Ok(grant) => grant,
        Err(denied) => {
            let (status, error) = match &denied {
                AuthDenied::BadKey => (407, "http_request_denied"),
                AuthDenied::NoCredits => (402, "http_request_denied"),
                AuthDenied::BadParams(_) => (400, "http_request_error"),
                AuthDenied::Unavailable => (503, "proxy_internal_error"),
                AuthDenied::RateLimited => (429, "http_request_denied"),
            };
            send(stream, status, error, &denied.to_string()).await;
            return Err(denied.into());
        }
    };
    Ok(Handshake {
        grant,
        target,
        reply,
        pending,
    })
}

async fn send(stream: &mut TcpStream, status: u16, error: &str, details: &str) {
    let head = response(status, Some(&proxy_status_value(error, details)), &[]);
    let _ = stream.write_all(head).await;
}
