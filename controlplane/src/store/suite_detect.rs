//! The shared suite's part for [`DetectStore`]: the consumer group (new records, pending
//! ones re-read after a restart, acknowledgements), windows and their one-time claim,
//! the capped history, model versions, verdicts, the shared secret, and policy events.

use std::time::Duration;

use turbo_dataplane::control::{ConnRecord, KeyEvent};
use turbo_dataplane::policy::RestrictionKind;
use turbo_proto::RelayStatus;

use super::detect::{Action, Verdict};
use super::Store;

fn record(port: u16) -> ConnRecord {
    ConnRecord {
        key_id: "k_d".into(),
        node_id: "n_d".into(),
        frontend: "http",
        target_port: port,
        target_id: 1,
        session_id: 2,
        started_unix_ms: 1,
        duration: Duration::from_millis(5),
        time_to_connect: None,
        bytes_up: 1,
        bytes_down: 2,
        reads_up: 1,
        reads_down: 1,
        gap_mean_us: 0,
        gap_max_us: 0,
        gap_std_us: 0,
        tls: false,
        uploaded_after_first: 0,
        outcome: RelayStatus::Ok,
    }
}

fn ports(entries: &[(String, super::FeatureFields)]) -> Vec<String> {
    let port = |f: &super::FeatureFields| {
        f.iter()
            .find(|(k, _)| k == "port")
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    entries.iter().map(|(_, f)| port(f)).collect()
}

/// Runs the detector's part of the suite.
///
/// # Panics
/// On the first behaviour that differs.
pub async fn run<S: Store>(store: &S) {
    consumer_group_delivers_once_and_keeps_pending(store).await;
    windows_history_models(store).await;
    verdicts_and_policy_events(store).await;
    let a = store.shared_secret("t").await.expect("secret");
    assert_eq!(store.shared_secret("t").await.expect("secret"), a);
    assert_ne!(store.shared_secret("u").await.expect("secret"), a);
}

async fn consumer_group_delivers_once_and_keeps_pending<S: Store>(store: &S) {
    // The group starts at the stream's end: what came before is not delivered.
    store
        .record_connection(&record(7000), 1000)
        .await
        .expect("xadd");
    assert!(store
        .conns_read("g", "c1", false, 10)
        .await
        .expect("read")
        .is_empty());
    for port in [7001, 7002, 7003] {
        store
            .record_connection(&record(port), 1000)
            .await
            .expect("xadd");
    }
    let first = store.conns_read("g", "c1", false, 2).await.expect("read");
    assert_eq!(ports(&first), ["7001", "7002"]);
    let second = store.conns_read("g", "c2", false, 10).await.expect("read");
    assert_eq!(
        ports(&second),
        ["7003"],
        "another consumer gets the rest, once"
    );
    assert!(store
        .conns_read("g", "c1", false, 10)
        .await
        .expect("read")
        .is_empty());
    // A restarted c1 re-reads what it had not acknowledged.
    let pending = store
        .conns_read("g", "c1", true, 10)
        .await
        .expect("pending");
    assert_eq!(ports(&pending), ["7001", "7002"]);
    store
        .conns_ack("g", &[first[0].0.clone()])
        .await
        .expect("ack");
    let pending = store
        .conns_read("g", "c1", true, 10)
        .await
        .expect("pending");
    assert_eq!(ports(&pending), ["7002"]);
}

async fn windows_history_models<S: Store>(store: &S) {
    let parts = [
        ("k|a".to_owned(), "1".to_owned()),
        ("k|b".to_owned(), "2".to_owned()),
    ];
    store.window_put(60_000, &parts).await.expect("put");
    store
        .window_put(60_000, &[("k|a".to_owned(), "3".to_owned())])
        .await
        .expect("rewrite");
    let mut got = store.window_parts(60_000).await.expect("parts");
    got.sort();
    assert_eq!(
        got,
        [
            ("k|a".to_owned(), "3".to_owned()),
            ("k|b".to_owned(), "2".to_owned())
        ]
    );
    assert!(store.window_parts(120_000).await.expect("parts").is_empty());
    assert!(store.window_claim(60_000, "a").await.expect("claim"));
    assert!(
        !store.window_claim(60_000, "b").await.expect("claim"),
        "claimed once"
    );
    let rows: Vec<String> = (0..5).map(|i| i.to_string()).collect();
    store.history_push(&rows, 3).await.expect("push");
    assert_eq!(store.history(10).await.expect("history"), ["2", "3", "4"]);
    assert_eq!(store.history(2).await.expect("history"), ["3", "4"]);
    assert_eq!(store.model_latest().await.expect("model"), None);
    for i in 1..=12u64 {
        assert_eq!(store.model_put(&format!("m{i}")).await.expect("model"), i);
    }
    assert_eq!(
        store.model_latest().await.expect("model"),
        Some((12, "m12".to_owned()))
    );
}

async fn verdicts_and_policy_events<S: Store>(store: &S) {
    let mut rx = store.events();
    let v = Verdict {
        id: "v_suite".into(),
        key_id: "k_v".into(),
        action: Action::Suspend,
        reason: "port_sweep".into(),
        features: [("distinct_ports".to_owned(), 40.0)].into(),
        drivers: vec!["distinct_ports".into()],
        target: None,
        tunnels_per_sec: None,
        bytes_per_sec: None,
        window_unix_ms: 0,
        created_unix_ms: crate::detect::verdicts::now_ms(),
        expires_at: u64::MAX / 2,
        model_version: 0,
        lifted_unix_ms: None,
    };
    crate::detect::verdicts::record(store, &v)
        .await
        .expect("record");
    assert_eq!(
        store.verdicts().await.expect("verdicts"),
        std::slice::from_ref(&v)
    );
    let wait = async {
        loop {
            if let Ok(KeyEvent::Policy { key_id, rules }) = rx.recv().await {
                if &*key_id == "k_v" {
                    return rules;
                }
            }
        }
    };
    let rules = tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("policy event");
    assert_eq!(rules.len(), 1);
    assert_eq!(rules[0].kind, RestrictionKind::Suspend);
    let lifted = crate::detect::verdicts::lift(store, "v_suite")
        .await
        .expect("lift");
    assert!(lifted.lifted_unix_ms.is_some());
    assert!(!store.verdicts().await.expect("verdicts")[0].in_force(0));
    assert!(crate::detect::verdicts::lift(store, "v_none")
        .await
        .is_err());
}
