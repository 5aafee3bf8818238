//! The API router's own tests: admin routes need the token.
use super::*;
use crate::store::MemoryStore;

#[tokio::test]
async fn admin_routes_need_the_token() {
    let control = Arc::new(ControlPlane::new(
        Arc::new(MemoryStore::default()),
        Default::default(),
        tokio::sync::broadcast::channel(4).0,
        Default::default(),
    ));
    let state = Arc::new(ApiState {
        control,
        admin_token: "secret-admin".into(),
        public_host: "127.0.0.1".into(),
        public_port: 8443,
        pin: [7; 32],
        metrics_per_node: false,
        money: None,
        payments: None,
        accounts: Arc::new(crate::accounts::memory::MemoryAccounts::open(None).expect("accounts")),
        secure_cookies: false,
        proxy_http: "127.0.0.1:8080".into(),
        proxy_socks: "127.0.0.1:1080".into(),
        price_per_gb: "1.0".into(),
        live: Arc::new(crate::live::LiveBus::Memory(Default::default())),
        pairings: Arc::new(crate::pairing::Pairings::Memory(Default::default())),
        pair_ttl: crate::pairing::api::DEFAULT_TTL,
        detect_defaults: Default::default(),
        fleet: Arc::new(crate::fleet::announce::FleetHandle::new(
            crate::fleet::Fleet::Memory(Default::default()),
            crate::fleet::announce::Identity {
                id: "s1".into(),
                quic_addr: "127.0.0.1:8443".into(),
                pin: [7; 32],
            },
            Default::default(),
        )),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
        )
        .await
    });
    let base = format!("http://{addr}");
    let result = tokio::task::spawn_blocking(move || {
        let health = ureq::get(&format!("{base}/healthz"))
            .call()
            .expect("health");
        assert_eq!(health.status(), 200);
        let denied = ureq::get(&format!("{base}/api/nodes")).call();
        assert!(matches!(denied, Err(ureq::Error::Status(401, _))));
        let wrong = ureq::get(&format!("{base}/api/nodes"))
            .set("Authorization", "Bearer nope")
            .call();
        assert!(matches!(wrong, Err(ureq::Error::Status(401, _))));
        let denied = ureq::get(&format!("{base}/api/servers")).call();
        assert!(matches!(denied, Err(ureq::Error::Status(401, _))));
        let fleet: Value = ureq::get(&format!("{base}/api/servers"))
            .set("Authorization", "Bearer secret-admin")
            .call()
            .expect("servers")
            .into_json()
            .expect("json");
        assert_eq!(fleet["this"], "s1");
        let off = ureq::get(&format!("{base}/api/ledger/reconcile"))
            .set("Authorization", "Bearer secret-admin")
            .call();
        assert!(
            matches!(off, Err(ureq::Error::Status(503, _))),
            "money routes without a ledger: 503"
        );
        let created: Value = ureq::post(&format!("{base}/api/keys"))
            .set("Authorization", "Bearer secret-admin")
            .send_json(json!({"name": "a", "credits": "1.5GiB"}))
            .expect("create")
            .into_json()
            .expect("json");
        assert_eq!(created["credits"], 1_610_612_736u64);
        assert!(created["key"].as_str().expect("key").starts_with("tk_"));
        let invite: Value = ureq::post(&format!("{base}/api/nodes/invite"))
            .set("Authorization", "Bearer secret-admin")
            .call()
            .expect("invite")
            .into_json()
            .expect("json");
        let join = JoinString::parse(invite["join"].as_str().expect("join")).expect("parse");
        assert_eq!(join.pin, Some([7; 32]));
        assert_eq!(join.port, 8443);
    });
    result.await.expect("client");
}
