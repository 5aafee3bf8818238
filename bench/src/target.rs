//! Target servers on the exit side (127.0.0.1 on loopback, the exit namespace's address
//! with `--net veth`), serving until the process exits: an HTTP body server (for curl),
//! a byte source, a byte sink, an echo server and a holder of idle connections.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::topology::Topology;

/// Serves each connection on its own thread.
fn serve_each(net: &Topology, handler: fn(TcpStream)) -> std::io::Result<SocketAddr> {
    let listener = net.exit_listener()?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            thread::spawn(move || handler(conn));
        }
    });
    Ok(addr)
}

/// Starts an HTTP/1.1 server answering every request with `body`.
///
/// # Errors
/// When the listener cannot be bound.
pub fn serve_body(net: &Topology, body: Arc<Vec<u8>>) -> std::io::Result<SocketAddr> {
    let listener = net.exit_listener()?;
    let addr = listener.local_addr()?;
    thread::spawn(move || {
        for mut conn in listener.incoming().flatten() {
            let body = body.clone();
            thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match conn.read(&mut byte) {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                if conn.write_all(resp.as_bytes()).is_ok() {
                    let _ = conn.write_all(&body);
                }
            });
        }
    });
    Ok(addr)
}

/// Pattern bytes for the source: byte `i` of a stream is `PATTERN[i % len]`.
pub const PATTERN_LEN: usize = 64 * 1024;

/// The source's pattern.
pub fn pattern() -> Vec<u8> {
    (0..PATTERN_LEN).map(|i| (i * 31 % 251) as u8).collect()
}

/// A byte source: reads a little-endian `u64` N, writes N pattern bytes, closes.
///
/// # Errors
/// When the listener cannot be bound.
pub fn source(net: &Topology) -> std::io::Result<SocketAddr> {
    serve_each(net, |mut conn| {
        let mut n = [0u8; 8];
        if conn.read_exact(&mut n).is_err() {
            return;
        }
        let mut left = u64::from_le_bytes(n) as usize;
        let chunk = pattern();
        while left > 0 {
            let k = left.min(chunk.len());
            if conn.write_all(&chunk[..k]).is_err() {
                return;
            }
            left -= k;
        }
        let _ = conn.shutdown(Shutdown::Write);
    })
}

/// A byte sink: reads a little-endian `u64` N, then N bytes (or up to EOF), then
/// answers the count it received as a little-endian `u64`. (No half-close: not every
/// proxy relays one.)
///
/// # Errors
/// When the listener cannot be bound.
pub fn sink(net: &Topology) -> std::io::Result<SocketAddr> {
    serve_each(net, |mut conn| {
        let mut n = [0u8; 8];
        if conn.read_exact(&mut n).is_err() {
            return;
        }
        let want = u64::from_le_bytes(n);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        while total < want {
            let k = buf.len().min((want - total) as usize);
            match conn.read(&mut buf[..k]) {
                Ok(0) => break,
                Ok(n) => total += n as u64,
                Err(_) => return,
            }
        }
        let _ = conn.write_all(&total.to_le_bytes());
    })
}

/// Echoes every byte back until the client closes.
///
/// # Errors
/// When the listener cannot be bound.
pub fn echo(net: &Topology) -> std::io::Result<SocketAddr> {
    serve_each(net, |mut conn| {
        let _ = conn.set_nodelay(true);
        let mut buf = [0u8; 4096];
        loop {
            match conn.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if conn.write_all(&buf[..n]).is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Accepts connections and keeps them open, without a thread each; returns the
/// address and the held connections (drop them to close).
///
/// # Errors
/// When the listener cannot be bound.
pub fn hold(net: &Topology) -> std::io::Result<(SocketAddr, Arc<Mutex<Vec<TcpStream>>>)> {
    let listener = net.exit_listener()?;
    let addr = listener.local_addr()?;
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            if let Ok(mut v) = keep.lock() {
                v.push(conn);
            }
        }
    });
    Ok((addr, held))
}
