//! A node is routable the moment the API lists it: the cores' routing snapshot is
//! republished when a node joins (not on the next periodic rescore), and a connection
//! the control plane admitted takes relay streams even before that admission reaches
//! the core that owns it. Each new node is the only one of its country, and a request
//! for that country goes out as soon as `GET /api/nodes/{id}` says it is connected.

use std::sync::Arc;

use crate::fixtures::targets::FileServer;
use crate::fixtures::{curl, random_bytes, Net, Options};

fn listed_nodes_are_routable_at_once(driver: &'static str) {
    let mut opts = Options::new(driver);
    opts.node = false;
    let mut net = Net::start_with(opts);
    let body = random_bytes(1000, 3);
    let target = FileServer::start(Arc::new(body.clone()));
    let url = format!("http://127.0.0.1:{}/", target.addr.port());
    for country in ["DE", "FR", "JP", "BR", "CA"] {
        let id = net.add_node(&["--country", country]);
        let user = format!("join-country-{}", country.to_lowercase());
        let proxy = format!("socks5h://{user}:{}@{}", net.key, net.socks);
        let out = curl(&["-sS", "--max-time", "10", "-x", &proxy, "-o", "-", &url]);
        assert!(
            out.status.success(),
            "node {id} ({country}) is listed but not routable: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.stdout, body, "node {id} ({country})");
    }
}

crate::both_drivers!(listed_nodes_are_routable_at_once);
