//! Traffic integrity signals against a real server, nodes, HTTPS target (`openssl
//! s_server`) and curl: a test node build that garbles TLS (`tamper-tls`: one byte of
//! the target's ServerHello flipped) makes every customer handshake through it fail,
//! so its customers close right after the handshake. Once it and the honest node have
//! carried 50 TLS tunnels each, it is demoted and its earnings held with the reason,
//! which its `turbo-node status` shows; the honest node is untouched, and customers'
//! HTTPS requests afterwards all succeed.

use crate::fixtures::postgres::Postgres;
use crate::fixtures::targets::TlsTarget;
use crate::fixtures::{curl, wait_for, Net, Options};

/// The most HTTPS requests sent before the tampering node must have been caught.
const MOST_REQUESTS: usize = 400;

#[test]
fn a_node_that_garbles_tls_is_demoted_and_held() {
    let pg = Postgres::start();
    let database = crate::payments::runtime().block_on(pg.database());
    let mut opts = Options::new("legacy");
    opts.config = format!("ledger = \"{database}\"\n");
    let mut net = Net::start_with(opts);
    let honest = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let target = TlsTarget::start(net.dir.path());
    let cheat = net.add_faulty_node("tamper-tls", &[]);
    let url = format!("https://127.0.0.1:{}/", target.addr.port());
    let proxy = net.proxy_url("socks5h");
    let https = || {
        let out = curl(&[
            "-k",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--proxy",
            &proxy,
            &url,
        ]);
        out.stdout == b"200"
    };
    let (mut served, mut broken, mut caught) = (0, 0, false);
    for sent in 1..=MOST_REQUESTS {
        if https() {
            served += 1;
        } else {
            broken += 1;
        }
        if sent % 10 == 0 && net.api_get(&format!("/api/nodes/{cheat}"))["demoted"] == true {
            caught = true;
            break;
        }
    }
    println!("caught after {served} served and {broken} broken requests");
    assert!(caught, "demoted within {MOST_REQUESTS} requests");
    assert!(
        served >= 50 && broken >= 50,
        "{served} served, {broken} broken"
    );

    let reason = wait_for("the suspect's earnings to be held", || {
        let n = net.api_get(&format!("/api/nodes/{cheat}"));
        n["hold"]["reason"].as_str().map(str::to_owned)
    });
    assert!(
        reason.contains("TLS connections closed right after the handshake"),
        "{reason}"
    );
    let fine = net.api_get(&format!("/api/nodes/{honest}"));
    assert_eq!(fine["demoted"], false, "{fine}");
    assert!(fine["hold"].is_null(), "{fine}");
    for _ in 0..10 {
        assert!(https(), "only the honest node serves now");
    }
    wait_for("the suspect's status to say why", || {
        let status = net.node_status(&cheat);
        status
            .contains("closed right after the handshake")
            .then_some(())
    });
}
