//! The control plane's unit tests: admissions, leases and key events over a memory
//! store.

use super::*;
use crate::store::MemoryStore;
use turbo_dataplane::control::{control_channel, ControlHandle, Usage};

fn hello(token: &str) -> Hello {
    Hello {
        version: 1,
        token: token.into(),
        agent: "test".into(),
        country: Some("de".into()),
        payout_address: None,
        max_streams: 10,
        lane: None,
    }
}

fn start() -> (
    Arc<MemoryStore>,
    NodeTableHandle,
    Arc<ControlPlane<MemoryStore>>,
    ControlHandle,
    broadcast::Receiver<KeyEvent>,
) {
    let store = Arc::new(MemoryStore::default());
    let table = NodeTableHandle::default();
    let (events, events_rx) = broadcast::channel(16);
    let cp = Arc::new(ControlPlane::new(
        store.clone(),
        table.clone(),
        events,
        ControlSettings::default(),
    ));
    let (handle, rx) = control_channel();
    tokio::spawn(cp.clone().serve(rx));
    tokio::spawn(cp.clone().forward_key_events());
    (store, table, cp, handle, events_rx)
}

#[tokio::test]
async fn authorizes_by_hash_and_runs_leases() {
    let (store, _, _, handle, mut events) = start();
    let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
    let (key, secret) = store.create_key("a", 1000).await.expect("key");
    let id = handle
        .authorize(secrets::hash(&secret), peer)
        .await
        .expect("grant");
    assert_eq!(&*id, key.id);
    assert_eq!(
        handle.authorize(secrets::hash("tk_nope"), peer).await,
        Err(AuthDenied::BadKey)
    );
    let mut usage = Usage::default();
    usage.add(&"n_x".into(), 10, true);
    let first = LeaseRequest {
        key_id: id.clone(),
        lease_id: "s/0/1".into(),
        seq: 1,
        want: 600,
        usage: Usage::default(),
        release: false,
    };
    let ans = handle.lease(first.clone()).await.expect("lease");
    assert_eq!((ans.granted, ans.credits), (600, 400));
    let release = LeaseRequest {
        seq: 2,
        want: 0,
        usage,
        release: true,
        ..first
    };
    let ans = handle.lease(release).await.expect("release");
    assert_eq!((ans.held, ans.credits), (0, 990));
    let unknown = LeaseRequest {
        key_id: "k_gone".into(),
        lease_id: "s/0/2".into(),
        seq: 1,
        want: 1,
        usage: Usage::default(),
        release: false,
    };
    assert_eq!(handle.lease(unknown).await, Err(LeaseError::UnknownKey));
    store.revoke_key(&key.id).await.expect("revoke");
    assert_eq!(
        events.recv().await.expect("event"),
        KeyEvent::Revoked(key.id.as_str().into()),
        "revocations reach the cores"
    );
    assert_eq!(
        handle.authorize(secrets::hash(&secret), peer).await,
        Err(AuthDenied::BadKey)
    );
}

#[tokio::test]
async fn admits_nodes_and_tracks_them_in_order() {
    let (store, table, cp, handle, _) = start();
    let peer: SocketAddr = "[::1]:9".parse().expect("addr");
    let (node, token) = store.create_node(None).await.expect("node");
    let conn = ConnRef { core: 1, serial: 7 };
    assert_eq!(
        handle.admit_node(hello("nt_bad"), peer, conn).await.err(),
        Some(RejectCode::BadToken)
    );
    let adm = handle
        .admit_node(hello(&token), peer, conn)
        .await
        .expect("admit");
    assert_eq!(&*adm.node_id, node.id);
    assert_eq!(
        table.load().routes()[0].country.map(|c| c.to_string()),
        Some("DE".into())
    );
    handle.send(ToControl::NodeRtt {
        node_id: adm.node_id.clone(),
        rtt: Duration::from_millis(12),
    });
    // A NodeGone for another connection of the same node keeps the route.
    handle.send(ToControl::NodeGone {
        node_id: adm.node_id.clone(),
        conn: ConnRef { core: 0, serial: 7 },
    });
    // Node messages are handled in order: this answer proves the ones above ran.
    let (_, other) = store.create_node(None).await.expect("node");
    let mut h = hello(&other);
    h.country = Some("not-a-country".into());
    handle
        .admit_node(h, peer, ConnRef { core: 0, serial: 1 })
        .await
        .expect("admit");
    assert_eq!(table.load().routes().len(), 2);
    let live = cp.live_nodes();
    assert_eq!(live[&adm.node_id].rtt, Some(Duration::from_millis(12)));
    assert!(
        live.values().any(|n| n.country.is_none()),
        "a bad country is ignored"
    );
    handle.send(ToControl::NodeGone {
        node_id: adm.node_id.clone(),
        conn,
    });
    let (_, third) = store.create_node(None).await.expect("node");
    handle
        .admit_node(hello(&third), peer, ConnRef { core: 0, serial: 2 })
        .await
        .expect("admit");
    assert!(!cp.live_nodes().contains_key(&adm.node_id));
}
