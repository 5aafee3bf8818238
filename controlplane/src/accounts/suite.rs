//! The behaviour every [`AccountStore`] must have, run on the memory store (with its
//! file) and on a real `redis-server`.

use super::memory::MemoryAccounts;
use super::redis::RedisAccounts;
use super::{AccountError, AccountStore, Owned, Role, WebSession, MAX_LOGIN_FAILURES};

async fn suite(store: &dyn AccountStore) {
    let a = store
        .create_user(" Alice@Example.COM ", Role::Customer, "h1".into())
        .await
        .expect("alice");
    assert_eq!(a.email, "alice@example.com", "trimmed, lower-cased");
    assert!(matches!(
        store
            .create_user("alice@example.com", Role::Runner, "h2".into())
            .await,
        Err(AccountError::EmailTaken)
    ));
    assert!(matches!(
        store
            .create_user("not-an-email", Role::Runner, "h".into())
            .await,
        Err(AccountError::BadEmail)
    ));
    let b = store
        .create_user("login:bob@example.com", Role::Runner, "h3".into())
        .await
        .expect("bob");
    assert_eq!(store.user(&a.id).await.expect("a"), a);
    assert!(matches!(
        store.user("u_nope").await,
        Err(AccountError::NoUser)
    ));
    assert_eq!(
        store
            .user_by_email("ALICE@example.com")
            .await
            .expect("by email"),
        Some(a.clone())
    );
    assert_eq!(
        store
            .user_by_email("carol@example.com")
            .await
            .expect("none"),
        None
    );
    let ids: Vec<String> = store
        .list_users()
        .await
        .expect("list")
        .into_iter()
        .map(|u| u.id)
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&a.id) && ids.contains(&b.id));

    ownership(store, &a.id, &b.id).await;
    sessions_and_throttle(store, &a.id).await;
}

async fn ownership(store: &dyn AccountStore, a: &str, b: &str) {
    let a = store.user(a).await.expect("a");
    let b = store.user(b).await.expect("b");
    store.grant(&a.id, Owned::Key, "k_1").await.expect("grant");
    store.grant(&a.id, Owned::Key, "k_2").await.expect("grant");
    store.grant(&b.id, Owned::Node, "n_1").await.expect("grant");
    assert!(matches!(
        store.grant("u_nope", Owned::Key, "k_3").await,
        Err(AccountError::NoUser)
    ));
    assert_eq!(
        store.owned(&a.id, Owned::Key).await.expect("owned"),
        ["k_1", "k_2"]
    );
    assert!(store
        .owned(&a.id, Owned::Node)
        .await
        .expect("owned")
        .is_empty());
    assert_eq!(
        store.owner_of(Owned::Node, "n_1").await.expect("owner"),
        Some(b.id.clone())
    );
    assert_eq!(
        store.owner_of(Owned::Key, "n_1").await.expect("owner"),
        None,
        "kinds apart"
    );
}

async fn sessions_and_throttle(store: &dyn AccountStore, a: &str) {
    let a = store.user(a).await.expect("a");
    let session = WebSession {
        user_id: a.id.clone(),
        csrf: "c".repeat(32),
    };
    store.put_session("hash1", &session).await.expect("put");
    assert_eq!(store.session("hash1").await.expect("get"), Some(session));
    assert_eq!(store.session("hash2").await.expect("get"), None);
    store.drop_session("hash1").await.expect("drop");
    assert_eq!(store.session("hash1").await.expect("get"), None);

    assert_eq!(
        store
            .throttle_count("login:bob@example.com")
            .await
            .expect("n"),
        0
    );
    for i in 1..=MAX_LOGIN_FAILURES {
        assert_eq!(
            store
                .throttle_hit("login:Bob@example.com")
                .await
                .expect("fail"),
            i
        );
    }
    assert_eq!(
        store
            .throttle_count("login:bob@example.com")
            .await
            .expect("n"),
        MAX_LOGIN_FAILURES
    );
    assert_eq!(
        store
            .throttle_count("login:alice@example.com")
            .await
            .expect("n"),
        0,
        "per email"
    );
}

#[tokio::test]
async fn memory_accounts_pass_the_suite_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("accounts.json");
    let store = MemoryAccounts::open(Some(path.clone())).expect("open");
    suite(&store).await;
    drop(store);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o077, 0, "owner-only");
    }
    let again = MemoryAccounts::open(Some(path)).expect("reopen");
    let alice = again
        .user_by_email("alice@example.com")
        .await
        .expect("get")
        .expect("kept");
    assert_eq!(
        again.owned(&alice.id, Owned::Key).await.expect("owned"),
        ["k_1", "k_2"]
    );
    assert_eq!(again.session("hash1").await.expect("get"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_accounts_pass_the_suite() {
    let cluster = turbo_bench::redis_cluster::RedisCluster::start().expect("cluster");
    let store = RedisAccounts::connect(&cluster.seeds_url())
        .await
        .expect("connect");
    suite(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_accounts_pass_the_suite() {
    let server = crate::store::redis::tests::Server::start();
    let store = RedisAccounts::connect(&server.url())
        .await
        .expect("connect");
    suite(&store).await;
}
