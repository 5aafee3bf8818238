//! Prometheus metrics served on `GET /metrics` (OpenMetrics text, via
//! `prometheus-client`). Control-plane events update the registry's metrics directly;
//! the data plane's relaxed atomic counters, the store's error count and the number of
//! connected nodes are read at scrape time by a collector.
//!
//! Per-node series (`turbo_node_*`, labelled with node id and country) sit in a
//! registry of their own, rendered only when the caller may see them (the admin token,
//! or `metrics_per_node = true`); the aggregate series are public.

use std::fmt;
use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use turbo_dataplane::control::ConnRecord;
use turbo_dataplane::stats::Stats;

type Labels = Vec<(&'static str, &'static str)>;

/// The metrics the control plane updates.
pub struct Metrics {
    registry: Registry,
    per_node: Registry,
    connections: Family<Labels, Counter>,
    bytes: Family<Labels, Counter>,
    connect_seconds: Histogram,
    /// Lease requests that granted credit.
    pub lease_grants: Counter,
    /// Bytes granted by leases.
    pub lease_granted_bytes: Counter,
    /// Lease requests the store could not serve.
    pub lease_failures: Counter,
    /// Leases reclaimed after their TTL.
    pub leases_reclaimed: Counter,
    /// Feature records that could not be written.
    pub records_dropped: Counter,
    /// Sticky sessions moved to a new node because theirs was gone or failed.
    pub session_moves: Counter,
}

/// Values read at scrape time.
pub struct Sources {
    /// Data-plane counters.
    pub stats: Arc<Stats>,
    /// Connection limits and their counters.
    pub gate: Arc<turbo_dataplane::limits::Gate>,
    /// Failed store calls so far.
    pub store_errors: Box<dyn Fn() -> u64 + Send + Sync>,
    /// Connected nodes now, with their scores.
    pub nodes: NodeSource,
}

/// Reads the connected nodes at scrape time.
pub type NodeSource = Arc<dyn Fn() -> Vec<NodeSample> + Send + Sync>;

/// The per-node series, read at scrape time.
struct NodeSeries(NodeSource);

impl fmt::Debug for NodeSeries {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("NodeSeries")
    }
}

/// One live node as exported.
pub struct NodeSample {
    /// Node id.
    pub id: String,
    /// Routed country, or empty.
    pub country: String,
    /// S, L and R.
    pub score: crate::scoring::Score,
    /// Streams open now.
    pub active_streams: u32,
    /// Bytes this server relayed through it.
    pub bytes_carried: u64,
}

impl fmt::Debug for Sources {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Sources")
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        self.encode_auth(&mut encoder)?;
        let s = &self.stats;
        encode_labelled_counters(
            &mut encoder,
            "turbo_refusal_checks",
            "Target failures checked on a second node: disputed (it connected) or confirmed",
            "result",
            [
                ("disputed", load(&s.refusals_disputed)),
                ("confirmed", load(&s.refusals_confirmed)),
            ],
        )?;
        for (name, help, v) in self.plain_counters() {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            ConstCounter::new(v).encode(e)?;
        }
        encode_labelled_counters(
            &mut encoder,
            "turbo_limit_hits",
            "Connections refused or closed by a limit, by limit",
            "limit",
            self.gate.counters.all(),
        )?;
        self.encode_gauges(&mut encoder)
    }
}

impl Sources {
    /// Refused authentications by reason, then lookups by how they were answered.
    fn encode_auth(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        encode_labelled_counters(
            encoder,
            "turbo_auth_failures",
            "Customer authentications refused, by reason",
            "reason",
            self.stats.auth_failures(),
        )?;
        let s = &self.stats;
        encode_labelled_counters(
            encoder,
            "turbo_auth_lookups",
            "Customer authentications by how they were answered",
            "result",
            [
                ("cache_hit", load(&s.auth_cache_hits)),
                ("control_plane", load(&s.auth_cache_misses)),
                ("coalesced", load(&s.auth_cache_coalesced)),
            ],
        )
    }

    /// The unlabelled counters: (name, help, value).
    fn plain_counters(&self) -> [(&'static str, &'static str, u64); 6] {
        let s = &self.stats;
        [
            (
                "turbo_credit_closes",
                "Connections closed because their key ran dry or was revoked",
                load(&s.credit_closes),
            ),
            (
                "turbo_relay_handoffs",
                "Customer connections moved to another core: their node had no lane on the core that accepted them",
                load(&s.relay_handoffs),
            ),
            (
                "turbo_udp_gro_segments",
                "Datagrams from nodes received in GRO batches of more than one",
                load(&s.udp_gro_segments),
            ),
            (
                "turbo_udp_gso_segments",
                "Datagrams to nodes sent in GSO batches of more than one",
                load(&s.udp_gso_segments),
            ),
            (
                "turbo_udp_offload_fallbacks",
                "GSO batches the kernel refused and that were resent one datagram at a time",
                load(&s.udp_offload_fallbacks),
            ),
            (
                "turbo_store_errors",
                "Failed calls to the store (Redis errors)",
                (self.store_errors)(),
            ),
        ]
    }

    /// Open customer connections, idle tunnels and connected nodes, now.
    fn encode_gauges(&self, encoder: &mut DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let gauges = [
            (
                "turbo_customer_connections",
                "Customer connections open now",
                self.gate.open_connections() as i64,
            ),
            (
                "turbo_idle_tunnels",
                "Tunnels that have moved no byte since their node connected (past a 1 s grace)",
                self.gate.idle_tunnels() as i64,
            ),
            (
                "turbo_nodes_connected",
                "Nodes with a live QUIC connection",
                (self.nodes)().len() as i64,
            ),
        ];
        for (name, help, v) in gauges {
            let e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            ConstGauge::new(v).encode(e)?;
        }
        Ok(())
    }
}

fn load(a: &std::sync::atomic::AtomicU64) -> u64 {
    a.load(std::sync::atomic::Ordering::Relaxed)
}

/// A counter family with one series per `(label value, count)`.
fn encode_labelled_counters(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    label: &'static str,
    series: impl IntoIterator<Item = (&'static str, u64)>,
) -> Result<(), fmt::Error> {
    let mut e = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, v) in series {
        let labels: Labels = vec![(label, value)];
        ConstCounter::new(v).encode(e.encode_family(&labels)?)?;
    }
    Ok(())
}

impl Collector for NodeSeries {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let nodes = (self.0)();
        type Pick = fn(&NodeSample) -> f64;
        let per_node: [(&str, &str, Pick); 6] = [
            (
                "turbo_node_bytes_carried",
                "Bytes this server relayed through the node",
                |n| n.bytes_carried as f64,
            ),
            ("turbo_node_score", "Node score S = wL*L + wR*R", |n| {
                n.score.total
            }),
            ("turbo_node_latency_score", "Node latency score L", |n| {
                n.score.latency
            }),
            (
                "turbo_node_reliability_score",
                "Node reliability score R",
                |n| n.score.reliability,
            ),
            (
                "turbo_node_connect_success",
                "Node connect-success average C",
                |n| n.score.connect_success,
            ),
            (
                "turbo_node_active_streams",
                "Streams open on the node",
                |n| f64::from(n.active_streams),
            ),
        ];
        for (name, help, pick) in per_node {
            let mut e = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for n in &nodes {
                let labels = vec![("node", n.id.as_str()), ("country", n.country.as_str())];
                ConstGauge::new(pick(n)).encode(e.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl Metrics {
    /// A registry with every metric, reading `sources` at scrape time.
    pub fn new(sources: Sources) -> Self {
        let mut registry = Registry::default();
        let connections = Family::<Labels, Counter>::default();
        registry.register(
            "turbo_connections",
            "Relayed customer connections, by front end and outcome",
            connections.clone(),
        );
        let bytes = Family::<Labels, Counter>::default();
        registry.register(
            "turbo_relayed_bytes",
            "Bytes relayed for customers, by direction",
            bytes.clone(),
        );
        let connect_seconds = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        registry.register(
            "turbo_connect_seconds",
            "Time from customer accept to the node's reply",
            connect_seconds.clone(),
        );
        let m = Metrics {
            connections,
            bytes,
            connect_seconds,
            lease_grants: Counter::default(),
            lease_granted_bytes: Counter::default(),
            lease_failures: Counter::default(),
            leases_reclaimed: Counter::default(),
            records_dropped: Counter::default(),
            session_moves: Counter::default(),
            registry,
            per_node: Registry::default(),
        };
        let mut m = m;
        for (name, help, c) in [
            (
                "turbo_lease_grants",
                "Lease requests that granted credit",
                &m.lease_grants,
            ),
            (
                "turbo_lease_granted_bytes",
                "Bytes of credit granted by leases",
                &m.lease_granted_bytes,
            ),
            (
                "turbo_lease_failures",
                "Lease requests the store could not serve",
                &m.lease_failures,
            ),
            (
                "turbo_leases_reclaimed",
                "Leases reclaimed after their TTL",
                &m.leases_reclaimed,
            ),
            (
                "turbo_feature_records_dropped",
                "Connection feature records that could not be written",
                &m.records_dropped,
            ),
            (
                "turbo_session_moves",
                "Sticky sessions moved to a new node because theirs was gone or failed",
                &m.session_moves,
            ),
        ] {
            let c = c.clone();
            m.registry.register(name, help, c);
        }
        m.per_node
            .register_collector(Box::new(NodeSeries(sources.nodes.clone())));
        m.registry.register_collector(Box::new(sources));
        m
    }

    /// Counts one closed connection.
    pub fn connection_closed(&self, r: &ConnRecord) {
        let labels: Labels = vec![("frontend", r.frontend), ("outcome", r.outcome.reason())];
        self.connections.get_or_create(&labels).inc();
        if r.bytes_up > 0 {
            self.bytes
                .get_or_create(&vec![("direction", "up")])
                .inc_by(r.bytes_up);
        }
        if r.bytes_down > 0 {
            self.bytes
                .get_or_create(&vec![("direction", "down")])
                .inc_by(r.bytes_down);
        }
        if let Some(t) = r.time_to_connect {
            self.connect_seconds.observe(t.as_secs_f64());
        }
    }

    /// The OpenMetrics text; with `per_node`, the per-node series too.
    pub fn render(&self, per_node: bool) -> String {
        use prometheus_client::encoding::text::{encode_eof, encode_registry};
        let mut out = String::new();
        let mut encode = || {
            encode_registry(&mut out, &self.registry)?;
            if per_node {
                encode_registry(&mut out, &self.per_node)?;
            }
            encode_eof(&mut out)
        };
        if encode().is_err() {
            out.clear();
        }
        out
    }
}
