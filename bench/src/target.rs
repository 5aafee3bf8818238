//! A byte source: an HTTP/1.1 server that answers every request with the same body.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::thread;

/// Starts the server on 127.0.0.1; it serves until the process exits.
///
/// # Errors
/// When the listener cannot be bound.
pub fn serve_body(body: Arc<Vec<u8>>) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
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
