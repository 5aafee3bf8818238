//! The Redis store against a private `redis-server`: the shared suite and failures.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;

/// A private `redis-server` on a free port; killed on drop.
pub(crate) struct Server {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Server {
    pub(crate) fn start() -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let dir = tempfile::tempdir().expect("tempdir");
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &dir.path().to_string_lossy()])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (scripts/setup)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(10));
        }
        Server {
            child,
            port,
            _dir: dir,
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    fn signal(&self, sig: i32) {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_store_passes_the_suite() {
    let server = Server::start();
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    crate::store::suite::run(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unresponsive_redis_is_an_error_not_a_hang() {
    let server = Server::start();
    let store = RedisStore::connect(&server.url()).await.expect("connect");
    let (k, _) = store.create_key("x", 1).await.expect("key");
    server.signal(libc::SIGSTOP);
    let started = Instant::now();
    let res = store.key(&k.id).await;
    assert!(matches!(res, Err(StoreError::Unavailable(_))), "{res:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(store.errors() > 0);
    server.signal(libc::SIGCONT);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(rec) = store.key(&k.id).await {
            assert_eq!(rec.credits, 1);
            break;
        }
        assert!(Instant::now() < deadline, "Redis did not come back");
    }
}

/// The same suite on a 3-master Redis Cluster (with replicas) on loopback: every
/// script and pipeline stays in one slot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_cluster_store_passes_the_suite() {
    let cluster = turbo_bench::redis_cluster::RedisCluster::start().expect("cluster");
    let store = RedisStore::connect(&cluster.seeds_url())
        .await
        .expect("connect");
    crate::store::suite::run(Arc::new(store)).await;
}
