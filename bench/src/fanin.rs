//! Node fan-in: many node connections to one server. The nodes are in-harness: the
//! real `turbo_node` library (QUIC, pinning, hello, pings), many sessions on one
//! current-thread runtime, each with its own node token and UDP socket, on the exit
//! side of the run's topology. Reports the server's RSS per connected node (a
//! difference of steady states, the nodes held until the second reading) and its CPU
//! while they all idle. Run it on a freshly started network: a server that has just
//! relayed bulk traffic may hand memory back while the nodes connect.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use turbo_node::NodeConfig;
use turbo_proto::join::JoinString;

use crate::figure::{cpu_percent, per_item, Sample};
use crate::measure;
use crate::net::Network;

/// Result of the fan-in workload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct FanIn {
    /// Node connections established.
    pub nodes: usize,
    /// Server RSS growth per node, bytes, or why there is no figure.
    pub server_rss_per_node: Sample,
    /// Server CPU while every node idles (pings only), percent of one core.
    pub server_idle_cpu_percent: Sample,
    /// Time until all nodes were connected.
    pub connect_all_secs: f64,
}

/// Connects `n` in-harness nodes to `net`'s server, measures, and disconnects them.
///
/// # Errors
/// When invitations fail or the nodes do not all connect.
pub fn node_fan_in(net: &Network, n: usize, idle: Duration) -> Result<FanIn> {
    let joins = (0..n)
        .map(|_| -> Result<JoinString> {
            let v: serde_json::Value = ureq::post(&format!("{}/api/nodes/invite", net.api))
                .set("Authorization", &format!("Bearer {}", net.admin_token))
                .send_json(serde_json::json!({}))?
                .into_json()?;
            let join = v["join"].as_str().context("join")?;
            JoinString::parse(join).context("join string")
        })
        .collect::<Result<Vec<_>>>()?;
    let already = net.connected_nodes()?;
    let server = net.server.id();
    let rss0 = measure::settle(server);
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = Instant::now();
    let topology = net.topology().clone();
    let nodes = std::thread::spawn(move || -> Result<()> {
        // The nodes' UDP sockets belong where this thread is: the exit side.
        topology.enter_exit().context("enter the exit side")?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            let mut tasks = Vec::new();
            for join in joins {
                let mut rx = stop_rx.clone();
                tasks.push(tokio::task::spawn_local(async move {
                    let stop = async move {
                        let _ = rx.wait_for(|s| *s).await;
                    };
                    turbo_node::run(NodeConfig::new(join), stop).await
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        });
        Ok(())
    });
    crate::net::wait_for_long("every node to connect", Duration::from_secs(120), || {
        (net.connected_nodes().ok()? >= already + n).then_some(())
    })?;
    let connect_all_secs = started.elapsed().as_secs_f64();
    let rss1 = measure::settle(server);
    let cpu0 = measure::cpu(server);
    let t0 = Instant::now();
    // Not a synchronisation: the idle period whose CPU is the figure.
    std::thread::sleep(idle);
    let cpu = measure::cpu(server).since(cpu0);
    let wall = t0.elapsed().as_secs_f64();
    let _ = stop_tx.send(true);
    nodes
        .join()
        .map_err(|_| anyhow::anyhow!("node thread panicked"))??;
    Ok(FanIn {
        nodes: n,
        server_rss_per_node: per_item(rss0, rss1, n),
        server_idle_cpu_percent: cpu_percent(cpu, wall),
        connect_all_secs,
    })
}
