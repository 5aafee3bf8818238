//! The control plane's answer to the data plane: authorizes customers, admits nodes,
//! keeps the registry of connected nodes, publishes the [`NodeTable`] snapshot the cores
//! route with, and books usage.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{debug, info, warn};
use turbo_dataplane::control::{
    AuthDenied, AuthGrant, ConnRef, ControlReceiver, NodeAdmission, NodeRoute, NodeTable,
    NodeTableHandle, ToControl, UsageRecord,
};
use turbo_proto::params::{parse_username, CountryCode};
use turbo_proto::wire::control::{Hello, RejectCode};
use turbo_proto::Credentials;

use crate::secrets;
use crate::store::Store;

/// A node with a live connection.
#[derive(Debug, Clone)]
pub struct LiveNode {
    /// Where its connection lives.
    pub conn: ConnRef,
    /// Its public address.
    pub peer: SocketAddr,
    /// Declared country (validated code), if any.
    pub country: Option<CountryCode>,
    /// Connected since, Unix seconds.
    pub connected_since: u64,
    /// Last smoothed RTT.
    pub rtt: Option<Duration>,
}

/// Shared control-plane state.
pub struct ControlPlane<S> {
    /// The store.
    pub store: Arc<S>,
    live: Mutex<HashMap<Arc<str>, LiveNode>>,
    table: NodeTableHandle,
}

impl<S: Store> ControlPlane<S> {
    /// A control plane over `store`, publishing routes into `table`.
    pub fn new(store: Arc<S>, table: NodeTableHandle) -> Self {
        ControlPlane {
            store,
            live: Mutex::new(HashMap::new()),
            table,
        }
    }

    /// Connected nodes, by id.
    pub fn live_nodes(&self) -> HashMap<Arc<str>, LiveNode> {
        self.live.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn update_live(&self, f: impl FnOnce(&mut HashMap<Arc<str>, LiveNode>)) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut live);
        let mut routes: Vec<NodeRoute> = live
            .iter()
            .map(|(id, n)| NodeRoute {
                node_id: id.clone(),
                country: n.country,
                conn: n.conn,
            })
            .collect();
        routes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        self.table.store(Arc::new(NodeTable { routes }));
    }

    /// Serves data-plane requests until every sender is gone.
    pub async fn serve(self: Arc<Self>, mut rx: ControlReceiver) {
        while let Some(msg) = rx.recv().await {
            self.handle(msg).await;
        }
    }

    async fn handle(&self, msg: ToControl) {
        match msg {
            ToControl::Authorize {
                credentials, reply, ..
            } => {
                let _ = reply.send(self.authorize(credentials).await);
            }
            ToControl::NodeHello {
                hello,
                peer,
                conn,
                reply,
            } => {
                let _ = reply.send(self.admit(hello, peer, conn).await);
            }
            ToControl::NodeGone { node_id, conn } => {
                self.update_live(|live| {
                    if live.get(&node_id).is_some_and(|n| n.conn == conn) {
                        live.remove(&node_id);
                        info!(node = %node_id, "node disconnected");
                    }
                });
            }
            ToControl::NodeRtt { node_id, rtt } => {
                let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(n) = live.get_mut(&node_id) {
                    n.rtt = Some(rtt);
                }
            }
            ToControl::Usage(usage) => self.book(usage).await,
        }
    }

    async fn authorize(&self, credentials: Credentials) -> Result<AuthGrant, AuthDenied> {
        let params = parse_username(&credentials.username)?;
        let key = self
            .store
            .key_by_hash(secrets::hash(&credentials.password))
            .await
            .map_err(|_| AuthDenied::Unavailable)?
            .filter(|k| !k.revoked)
            .ok_or(AuthDenied::BadKey)?;
        if key.credits == 0 {
            return Err(AuthDenied::NoCredits);
        }
        Ok(AuthGrant {
            key_id: key.id.into(),
            params,
        })
    }

    async fn admit(
        &self,
        hello: Hello,
        peer: SocketAddr,
        conn: ConnRef,
    ) -> Result<NodeAdmission, RejectCode> {
        let node = self
            .store
            .node_by_token_hash(secrets::hash(&hello.token))
            .await
            .map_err(|_| RejectCode::Unavailable)?
            .ok_or_else(|| {
                warn!(%peer, "node presented an unknown token");
                RejectCode::BadToken
            })?;
        let country = hello
            .country
            .as_deref()
            .and_then(|c| CountryCode::parse(c).ok());
        let node_id: Arc<str> = node.id.into();
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.update_live(|live| {
            live.insert(
                node_id.clone(),
                LiveNode {
                    conn,
                    peer,
                    country,
                    connected_since: since,
                    rtt: None,
                },
            );
        });
        info!(node = %node_id, %peer, country = ?country, "node connected");
        Ok(NodeAdmission { node_id })
    }

    async fn book(&self, u: UsageRecord) {
        let bytes = u.bytes_up + u.bytes_down;
        debug!(key = %u.key_id, node = %u.node_id, up = u.bytes_up, down = u.bytes_down, outcome = u.outcome.reason(), "usage");
        if let Err(e) = self.store.debit(&u.key_id, u.bytes_up, u.bytes_down).await {
            warn!(error = %e, key = %u.key_id, "could not book usage");
        }
        if bytes > 0 {
            if let Err(e) = self.store.add_node_bytes(&u.node_id, bytes).await {
                warn!(error = %e, node = %u.node_id, "could not book node bytes");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;
    use turbo_dataplane::control::control_channel;
    use turbo_proto::RelayStatus;

    fn hello(token: &str) -> Hello {
        Hello {
            version: 1,
            token: token.into(),
            agent: "test".into(),
            country: Some("de".into()),
            payout_address: None,
            max_streams: 10,
        }
    }

    #[tokio::test]
    async fn authorizes_admits_and_books_through_the_channel() {
        let store = Arc::new(MemoryStore::default());
        let table = NodeTableHandle::default();
        let cp = Arc::new(ControlPlane::new(store.clone(), table.clone()));
        let (handle, rx) = control_channel();
        tokio::spawn(cp.clone().serve(rx));
        let peer: SocketAddr = "127.0.0.1:1".parse().expect("addr");
        let (key, secret) = store.create_key("a", 1000).await.expect("key");
        let creds = |user: &str, pass: &str| Credentials {
            username: user.into(),
            password: pass.into(),
        };
        let grant = handle
            .authorize(creds("alice-country-us", &secret), peer)
            .await
            .expect("grant");
        assert_eq!(&*grant.key_id, key.id);
        assert_eq!(
            grant.params.country.map(|c| c.to_string()),
            Some("US".into())
        );
        assert_eq!(
            handle
                .authorize(creds("alice", "tk_nope"), peer)
                .await
                .err(),
            Some(AuthDenied::BadKey)
        );
        assert!(matches!(
            handle
                .authorize(creds("alice-country-zz", &secret), peer)
                .await,
            Err(AuthDenied::BadParams(_))
        ));

        let (node, token) = store.create_node().await.expect("node");
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
        let routes = table.load().routes.clone();
        assert_eq!(routes.len(), 1);
        assert_eq!(routes[0].country.map(|c| c.to_string()), Some("DE".into()));

        handle.send(ToControl::Usage(UsageRecord {
            key_id: grant.key_id.clone(),
            node_id: adm.node_id.clone(),
            target_port: 80,
            bytes_up: 400,
            bytes_down: 600,
            duration: Duration::from_millis(5),
            outcome: RelayStatus::Ok,
        }));
        // A NodeGone for another connection of the same node keeps the route.
        handle.send(ToControl::NodeGone {
            node_id: adm.node_id.clone(),
            conn: ConnRef { core: 0, serial: 7 },
        });
        // Messages are handled in order: this answer proves the two above were processed,
        // and the usage drained the key.
        assert_eq!(
            handle.authorize(creds("alice", &secret), peer).await.err(),
            Some(AuthDenied::NoCredits)
        );
        assert_eq!(table.load().routes.len(), 1);
        handle.send(ToControl::NodeGone {
            node_id: adm.node_id.clone(),
            conn,
        });
        let _ = handle.authorize(creds("alice", &secret), peer).await;
        assert!(table.load().routes.is_empty());
        let nodes = store.list_nodes().await.expect("nodes");
        assert_eq!(nodes[0].bytes_carried, 1000);
    }

    #[tokio::test]
    async fn records_rtt_and_refuses_revoked_keys() {
        let store = Arc::new(MemoryStore::default());
        let table = NodeTableHandle::default();
        let cp = Arc::new(ControlPlane::new(store.clone(), table.clone()));
        let (handle, rx) = control_channel();
        tokio::spawn(cp.clone().serve(rx));
        let peer: SocketAddr = "[::1]:9".parse().expect("addr");
        let (_, token) = store.create_node().await.expect("node");
        let mut h = hello(&token);
        h.country = Some("not-a-country".into());
        let adm = handle
            .admit_node(h, peer, ConnRef { core: 0, serial: 1 })
            .await
            .expect("admit");
        assert_eq!(
            table.load().routes[0].country,
            None,
            "bad country is ignored"
        );
        handle.send(ToControl::NodeRtt {
            node_id: adm.node_id.clone(),
            rtt: Duration::from_millis(12),
        });
        let (key, secret) = store.create_key("b", 10).await.expect("key");
        store.revoke_key(&key.id).await.expect("revoke");
        let creds = Credentials {
            username: "bob".into(),
            password: secret,
        };
        // Answered after the RTT sample: the channel is handled in order.
        assert_eq!(
            handle.authorize(creds, peer).await.err(),
            Some(AuthDenied::BadKey)
        );
        let live = cp.live_nodes();
        assert_eq!(live[&adm.node_id].rtt, Some(Duration::from_millis(12)));
        assert_eq!(live[&adm.node_id].peer, peer);
    }
}
