//! Hostile but well-formed admin input and scrapes: balances stop at the documented
//! maximum (2^53 − 1 bytes) with a 400, exact at the maximum on both stores; names with
//! control characters are refused; `/metrics` without the admin token shows no node.

use serde_json::{json, Value};

use crate::fixtures::redis::Redis;
use crate::fixtures::{Net, Options};

const MAX_BALANCE: u64 = (1 << 53) - 1;

/// An admin POST that may fail: (status, body).
fn post(net: &Net, path: &str, body: Value) -> (u16, Value) {
    let answer = ureq::post(&format!("{}{path}", net.api))
        .set("Authorization", &format!("Bearer {}", net.admin_token))
        .send_json(body);
    match answer {
        Ok(r) => (r.status(), r.into_json().expect("json")),
        Err(ureq::Error::Status(code, r)) => (code, r.into_json().unwrap_or(Value::Null)),
        Err(e) => panic!("api post {path}: {e}"),
    }
}

fn balances_stop_at_the_maximum(opts: Options) {
    let net = Net::start_with(Options {
        node: false,
        ..opts
    });
    let top_up = format!("/api/keys/{}/credits", net.key_id);
    let balance = net.key_info()["balance"].as_u64().expect("balance");
    let room = MAX_BALANCE - balance;
    for too_much in [
        json!({"credits": room + 1}),
        json!({"credits": u64::MAX}),
        json!({"credits": "18446744073709551616"}),
        json!({"credits": "9PB"}),
    ] {
        let (status, body) = post(&net, &top_up, too_much.clone());
        assert_eq!(status, 400, "{too_much}: {body}");
        assert!(body["error"].as_str().is_some(), "{body}");
    }
    // A JSON number past u64 is a bad request too, not a 422.
    let raw = ureq::post(&format!("{}{top_up}", net.api))
        .set("Authorization", &format!("Bearer {}", net.admin_token))
        .set("Content-Type", "application/json")
        .send_string(r#"{"credits": 18446744073709551616}"#);
    assert!(matches!(raw, Err(ureq::Error::Status(400, _))), "{raw:?}");
    assert_eq!(
        net.key_info()["balance"],
        balance,
        "refusals change nothing"
    );

    let (status, body) = post(&net, &top_up, json!({ "credits": room }));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        net.key_info()["balance"],
        MAX_BALANCE,
        "exact at the maximum"
    );
    let (status, _) = post(&net, &top_up, json!({"credits": 1}));
    assert_eq!(status, 400);

    let (status, _) = post(
        &net,
        "/api/keys",
        json!({"name": "big", "credits": MAX_BALANCE + 1}),
    );
    assert_eq!(status, 400);
    let (status, created) = post(
        &net,
        "/api/keys",
        json!({"name": "big", "credits": MAX_BALANCE}),
    );
    assert_eq!(status, 201);
    let id = created["id"].as_str().expect("id");
    assert_eq!(
        net.api_get(&format!("/api/keys/{id}"))["credits"],
        MAX_BALANCE
    );
    for name in ["a\nb", "\u{1b}[31mred", "tab\there", "nul\0"] {
        let (status, _) = post(&net, "/api/keys", json!({"name": name, "credits": 1}));
        assert_eq!(status, 400, "name {name:?}");
    }
}

#[test]
fn balances_stop_at_the_maximum_on_the_memory_store() {
    balances_stop_at_the_maximum(Options::new("io_uring"));
}

#[test]
fn balances_stop_at_the_maximum_on_redis() {
    let redis = Redis::start();
    balances_stop_at_the_maximum(Options::redis("io_uring", &redis));
}

#[test]
fn metrics_show_nodes_only_with_the_admin_token() {
    let net = Net::start("io_uring");
    let node = net.connected_nodes()[0]["id"]
        .as_str()
        .expect("node id")
        .to_owned();
    let public = net.metrics();
    assert!(public.contains("turbo_nodes_connected 1"), "{public}");
    assert!(!public.contains(&node), "a node id is public: {public}");
    assert!(!public.contains("turbo_node_score"), "{public}");
    let admin = ureq::get(&format!("{}/metrics", net.api))
        .set("Authorization", &format!("Bearer {}", net.admin_token))
        .call()
        .expect("metrics")
        .into_string()
        .expect("text");
    assert!(
        admin.contains(&format!("turbo_node_score{{node=\"{node}\"")),
        "{admin}"
    );
    assert_eq!(
        admin.matches("# EOF").count(),
        1,
        "one OpenMetrics document"
    );

    let mut opts = Options::new("io_uring");
    opts.config = "metrics_per_node = true\n".into();
    let open = Net::start_with(opts);
    let node = open.connected_nodes()[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    assert!(
        open.metrics().contains(&node),
        "the option shows nodes to all"
    );
}
