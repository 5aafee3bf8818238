//! The HTTP proxy front end: reads one request head with
//! [`turbo_proto::http::HttpHeadParser`], insists on `Proxy-Authorization`, and asks
//! the control plane about it. An absolute-form request is the only one its connection
//! carries: what follows its body is never forwarded (see [`turbo_proto::http_body`]).

use std::net::SocketAddr;

use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use turbo_proto::http::{response, HttpHeadParser, HttpProxyRequest};
use turbo_proto::http_body::{BodyEnd, ResponseEnd};
use turbo_proto::status::proxy_status_value;

use super::handshake::{Handshake, HandshakeError};
use crate::auth::AuthCache;
use crate::control::AuthDenied;
use crate::frontend::ReplyKind;
use crate::relay::core::RelayCore;

/// Reads the request head and authorizes it.
///
/// # Errors
/// [`HandshakeError`]; the customer has been sent the matching HTTP error.
pub(super) async fn handshake(
    core: &RelayCore,
    auth: &AuthCache,
    stream: &mut TcpStream,
    peer: SocketAddr,
) -> Result<Handshake, HandshakeError> {
    let (request, leftover) = read_request(core, stream).await?;
    let (target, credentials, reply, mut pending, mut body) = match request {
        HttpProxyRequest::Connect {
            target,
            credentials,
        } => (
            target,
            credentials,
            ReplyKind::HttpConnect,
            Vec::new(),
            None,
        ),
        HttpProxyRequest::Forward {
            target,
            credentials,
            head,
            body,
        } => (
            target,
            credentials,
            ReplyKind::HttpForward,
            head,
            Some(BodyEnd::new(body)),
        ),
    };
    let response = body
        .is_some()
        .then(|| ResponseEnd::new(pending.starts_with(b"HEAD ")));
    let ours = match body.as_mut().map(|b| b.scan(&leftover)) {
        None => leftover.len(),
        Some(Ok(n)) => n,
        Some(Err(e)) => {
            send(stream, 400, "http_request_error", &e.to_string()).await;
            return Err(e.into());
        }
    };
    // A pipelined request after this one is dropped: it is never forwarded.
    pending.extend_from_slice(&leftover[..ours]);
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
    let grant = match auth.authorize(&credentials, peer).await {
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
        body,
        response,
    })
}

/// Reads one request head; returns it with the bytes that followed it.
async fn read_request(
    core: &RelayCore,
    stream: &mut TcpStream,
) -> Result<(HttpProxyRequest, Vec<u8>), HandshakeError> {
    let mut parser = HttpHeadParser::new(core.cfg.http_limits);
    loop {
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
            Ok(Some(request)) => return Ok((request, parser.into_leftover())),
            Ok(None) => continue,
            Err(e) => {
                let details = e.to_string();
                send(stream, e.status(), e.proxy_error(), &details).await;
                return Err(e.into());
            }
        }
    }
}

async fn send(stream: &mut TcpStream, status: u16, error: &str, details: &str) {
    let head = response(status, Some(&proxy_status_value(error, details)), &[]);
    let _ = stream.write_all(head).await;
}
