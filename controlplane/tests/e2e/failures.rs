//! Refusals: wrong keys, unsupported commands, and targets the node's policy forbids.

use crate::fixtures::socks::{self, Connect};
use crate::fixtures::targets;
use crate::fixtures::{curl, Net, Options};

fn wrong_key_refused(driver: &'static str) {
    let net = Net::start(driver);
    let target = targets::echo();
    // SOCKS5: RFC 1929 status 1.
    match socks::connect(net.socks, "e2e", "tk_wrong", "127.0.0.1", target.port()) {
        Connect::AuthFailed(status) => assert_eq!(status, 1),
        other => panic!("wrong key was not refused: {other:?}"),
    }
    // HTTP: 407 with a Proxy-Status reason.
    let url = format!("http://127.0.0.1:{}/", target.port());
    let proxy = format!("http://e2e:tk_wrong@{}", net.http);
    let out = curl(&["-i", "-x", &proxy, &url]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 407"), "got {text}");
    assert!(
        text.contains("proxy-status: turbo; error=http_request_denied"),
        "got {text}"
    );
    // No credentials at all: 407 asking for Basic.
    let proxy = format!("http://{}", net.http);
    let out = curl(&["-i", "-x", &proxy, &url]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 407"), "got {text}");
    assert!(text.contains("proxy-authenticate: basic"), "got {text}");
}

fn unknown_command_refused(driver: &'static str) {
    let net = Net::start(driver);
    for cmd in [2u8, 3, 9] {
        let mut s = socks::authenticate(net.socks, "e2e", &net.key).expect("auth");
        let code = socks::request(&mut s, cmd, "example.com", 80);
        assert_eq!(code, 7, "command {cmd:#x} must get reply 0x07");
    }
}

fn policy_refuses_loopback_by_default(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.allow.clear();
    let net = Net::start_with(opts);
    let target = targets::echo();
    match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", target.port()) {
        Connect::Refused(code) => assert_eq!(code, 2, "policy refusal is reply 0x02"),
        other => panic!("loopback target was not refused: {other:?}"),
    }
    let url = format!("http://localhost:{}/", target.port());
    let out = curl(&["-i", "-p", "-x", &net.proxy_url("http"), &url]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 403"), "got {text}");
    assert!(
        text.contains("error=destination_ip_prohibited"),
        "got {text}"
    );
}

fn no_node_answers_503(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let net = Net::start_with(opts);
    let out = curl(&["-i", "-x", &net.proxy_url("http"), "http://127.0.0.1:9/"]);
    let text = String::from_utf8_lossy(&out.stdout).to_ascii_lowercase();
    assert!(text.starts_with("http/1.1 503"), "got {text}");
    assert!(text.contains("proxy-status: turbo; error="), "got {text}");
    match socks::connect(net.socks, "e2e", &net.key, "127.0.0.1", 9) {
        Connect::Refused(code) => assert_eq!(code, 1),
        other => panic!("expected general failure, got {other:?}"),
    }
}

crate::both_drivers!(
    wrong_key_refused,
    unknown_command_refused,
    policy_refuses_loopback_by_default,
    no_node_answers_503,
);
