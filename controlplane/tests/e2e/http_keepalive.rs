//! Plain HTTP carries one request per customer connection: a pipelined request with
//! another key's `Proxy-Authorization` (or none) never reaches the target and is not
//! billed to the first key; `Host` comes from the absolute-form URL; the customer is
//! told `Connection: close`, so a keep-alive client opens a new connection.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use base64::Engine;

use crate::fixtures::targets::KeepAliveServer;
use crate::fixtures::CONNECTION_COST;
use crate::fixtures::{curl, wait_for, Net};

fn basic(key: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("e2e:{key}"))
}

fn pipelined_requests_after_the_first_are_dropped(driver: &'static str) {
    let net = Net::start(driver);
    let (other_key, other_id) = net.create_key("1GB");
    let target = KeepAliveServer::start();
    let port = target.addr.port();
    let first = format!(
        "GET http://127.0.0.1:{port}/one HTTP/1.1\r\nHost: spoofed.example\r\n\
         Proxy-Authorization: Basic {}\r\n\r\n",
        basic(&net.key)
    );
    let second = format!(
        "GET http://127.0.0.1:{port}/two HTTP/1.1\r\nHost: 127.0.0.1\r\n\
         Proxy-Authorization: Basic {}\r\n\r\n",
        basic(&other_key)
    );
    let third = format!("GET http://127.0.0.1:{port}/three HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");

    let mut customer = TcpStream::connect(net.http).expect("connect");
    customer
        .set_read_timeout(Some(Duration::from_secs(20)))
        .expect("timeout");
    customer
        .write_all(format!("{first}{second}{third}").as_bytes())
        .expect("write");
    let mut answer = Vec::new();
    customer
        .read_to_end(&mut answer)
        .expect("the proxy closes after the first response");
    let answer = String::from_utf8_lossy(&answer).into_owned();
    assert_eq!(answer.matches("HTTP/1.1 200").count(), 1, "{answer}");
    assert!(answer.contains("\r\nConnection: close\r\n"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

    let received = target.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let expected =
        format!("GET /one HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    assert_eq!(
        received[0], expected,
        "only the first request reached the target, its Host from the URL"
    );

    // The first key pays for exactly its own request and response; the other key for
    // nothing.
    let info = wait_for("the first key's usage", || {
        let k = net.key_info();
        (k["connections"] == 1).then_some(k)
    });
    assert_eq!(info["bytes_up"], expected.len() as u64 + CONNECTION_COST);
    let response = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
    assert_eq!(
        info["bytes_down"],
        response.len(),
        "the added header is not billed"
    );
    let other = net.api_get(&format!("/api/keys/{other_id}"));
    assert_eq!(
        (other["bytes_up"].as_u64(), other["connections"].as_u64()),
        (Some(0), Some(0))
    );
    println!(
        "3 pipelined requests: 1 forwarded ({} bytes up billed), 2 dropped",
        expected.len()
    );
}

fn keep_alive_clients_reconnect_per_request(driver: &'static str) {
    let net = Net::start(driver);
    let target = KeepAliveServer::start();
    let port = target.addr.port();
    let out = curl(&[
        "-sS",
        "-x",
        &format!("http://e2e:{}@{}", net.key, net.http),
        &format!("http://127.0.0.1:{port}/a"),
        &format!("http://127.0.0.1:{port}/b"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout, b"okok");
    let received = target.received();
    assert_eq!(
        received.len(),
        2,
        "one connection per request: {received:?}"
    );
    assert!(received[0].starts_with("GET /a ") && received[1].starts_with("GET /b "));
    assert!(received
        .iter()
        .all(|r| r.matches("GET ").count() == 1 && !r.to_ascii_lowercase().contains("proxy-")));
}

crate::both_drivers!(
    pipelined_requests_after_the_first_are_dropped,
    keep_alive_clients_reconnect_per_request
);
