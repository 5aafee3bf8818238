//! The harness's own SOCKS5 client (RFC 1928/1929): CONNECT to an IP target, with or
//! without username/password authentication.

use std::io::{Error, ErrorKind, Read, Result, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};

/// Credentials for RFC 1929 authentication.
#[derive(Debug, Clone)]
pub struct Auth {
    /// Username (Turbo: the parameter string).
    pub user: String,
    /// Password (Turbo: the API key).
    pub pass: String,
}

fn fail(what: &str) -> Error {
    Error::new(ErrorKind::ConnectionRefused, what.to_owned())
}

/// Opens a tunnel to `target` through the SOCKS5 proxy at `proxy`.
///
/// # Errors
/// I/O errors, or a refusal (as `ConnectionRefused` naming the reply code).
pub fn connect(proxy: SocketAddr, auth: Option<&Auth>, target: SocketAddr) -> Result<TcpStream> {
    let mut s = TcpStream::connect(proxy)?;
    s.set_nodelay(true)?;
    let method = if auth.is_some() { 2 } else { 0 };
    // One step at a time, as common clients do (some servers drop pipelined bytes).
    s.write_all(&[5, 1, method])?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m)?;
    if m != [5, method] {
        return Err(fail("proxy refused the method"));
    }
    if let Some(a) = auth {
        let mut out = vec![1, a.user.len() as u8];
        out.extend_from_slice(a.user.as_bytes());
        out.push(a.pass.len() as u8);
        out.extend_from_slice(a.pass.as_bytes());
        s.write_all(&out)?;
        s.read_exact(&mut m)?;
        if m[1] != 0 {
            return Err(fail("authentication failed"));
        }
    }
    let mut out = Vec::with_capacity(22);
    match target.ip() {
        IpAddr::V4(v4) => {
            out.extend_from_slice(&[5, 1, 0, 1]);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.extend_from_slice(&[5, 1, 0, 4]);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
    s.write_all(&out)?;
    let mut head = [0u8; 4];
    s.read_exact(&mut head)?;
    if head[1] != 0 {
        return Err(fail(&format!("CONNECT refused with reply {}", head[1])));
    }
    let rest = match head[3] {
        1 => 6,
        4 => 18,
        3 => {
            let mut l = [0u8; 1];
            s.read_exact(&mut l)?;
            usize::from(l[0]) + 2
        }
        _ => return Err(fail("bad address type in reply")),
    };
    let mut skip = [0u8; 258];
    s.read_exact(&mut skip[..rest])?;
    Ok(s)
}
