//! One node per network, decided by the server from the address it sees: in strict
//! mode on loopback the first node is admitted, a second from 127.0.0.1 is refused
//! with a message its runner sees in `turbo-node status` and on the dashboard, and a
//! node from another address (127.0.0.2) is admitted; in the default mode loopback is
//! exempt and all three are admitted.

use std::process::Command;

use crate::fixtures::web::WebClient;
use crate::fixtures::{bin, wait_for, Net, Options};

const PASSWORD: &str = "correct horse battery";

/// Three nodes of one runner: two from 127.0.0.1, one from 127.0.0.2; their ids.
fn three_nodes(net: &mut Net, runner: &mut WebClient) -> Vec<String> {
    let mut ids = Vec::new();
    for bind in ["127.0.0.1", "127.0.0.1", "127.0.0.2"] {
        let page = runner.submit("/nodes", "/nodes", &[]);
        let at = page.body.find("--join ").expect("join command") + "--join ".len();
        let join = page.body[at..at + page.body[at..].find('<').expect("end")].to_owned();
        let known = runner.get("/nodes").body;
        let id = known
            .match_indices("<code>n_")
            .map(|(i, _)| {
                let from = i + "<code>".len();
                known[from..from + known[from..].find('<').expect("end")].to_owned()
            })
            .find(|id| !ids.contains(id))
            .expect("the new node");
        let child = net
            .node_command(&join, &net.node_state(&id))
            .args(["--bind", bind])
            .spawn()
            .expect("turbo-node run");
        net.nodes.push((id.clone(), child));
        if ids.is_empty() {
            // The first one holds 127.0.0.1 before the second asks.
            wait_for("the first node", || {
                (net.connected_nodes().len() == 1).then_some(())
            });
        }
        ids.push(id);
    }
    ids
}

fn connected(net: &Net) -> Vec<String> {
    let mut ids: Vec<String> = net
        .connected_nodes()
        .iter()
        .filter_map(|n| n["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

#[test]
fn a_second_node_on_one_network_is_refused_in_strict_mode() {
    let mut net = Net::start_with(Options {
        node: false,
        config: "nodes_per_network_strict = true\n".into(),
        ..Options::new("legacy")
    });
    let mut carol = WebClient::new(&net.api);
    carol.sign_up("carol@example.com", PASSWORD, "runner");
    let ids = three_nodes(&mut net, &mut carol);
    let mut want = vec![ids[0].clone(), ids[2].clone()];
    want.sort();
    wait_for("the first and the third node", || {
        (connected(&net) == want).then_some(())
    });
    let refused = "refused:        another node already runs on this network";
    wait_for("the second node's runner to see why", || {
        let out = Command::new(bin("turbo-node"))
            .arg("status")
            .env("TURBO_NODE_STATE", net.node_state(&ids[1]))
            .output()
            .expect("status");
        String::from_utf8_lossy(&out.stdout)
            .contains(refused)
            .then_some(())
    });
    let page = carol.get("/nodes").body;
    assert!(
        page.contains(&format!(
            "data-online=\"{}\">refused: another node already runs on this network",
            ids[1]
        )),
        "{page}"
    );
    assert_eq!(connected(&net), want, "still refused");
}

#[test]
fn loopback_is_exempt_by_default() {
    let mut net = Net::start_with(Options {
        node: false,
        ..Options::new("legacy")
    });
    let mut carol = WebClient::new(&net.api);
    carol.sign_up("carol@example.com", PASSWORD, "runner");
    let mut ids = three_nodes(&mut net, &mut carol);
    ids.sort();
    wait_for("all three nodes", || (connected(&net) == ids).then_some(()));
}
