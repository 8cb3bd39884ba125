//! Prometheus metrics of the gateway (docs/metrics.md). Label sets are bounded: close reasons
//! and error kinds only, never a session id.

use std::sync::Arc;

use earshot_store::StoreWriter;

use crate::engines::EnginePool;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The seed's buckets (0.05, 0.1, 0.2, 0.5, 1.0) with finer and longer ones around them; the
/// millisecond ones resolve the gateway's own share when the engine answers at once.
const LATENCY_BUCKETS: [f64; 17] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0,
    10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

/// Cheap to clone: every clone updates the same metrics.
#[derive(Clone, Debug)]
pub struct GatewayMetrics {
    pub audio_chunks_received: Counter,
    pub audio_bytes_received: Counter,
    pub latency: Histogram,
    pub connections_active: Gauge,
    pub connections_rejected: Counter,
    pub connections_refused: Family<ReasonLabel, Counter>,
    pub upgrade_failures: Counter,
    pub http_connections_active: Gauge,
    pub sessions_opened: Counter,
    pub sessions_closed: Family<ReasonLabel, Counter>,
    pub slow_down: Counter,
    pub read_pauses: Counter,
    pub buffer_limit: Counter,
    pub errors: Family<KindLabel, Counter>,
    pub first_partial: Histogram,
    pub final_latency: Histogram,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            audio_chunks_received: Counter::default(),
            audio_bytes_received: Counter::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            connections_active: Gauge::default(),
            connections_rejected: Counter::default(),
            connections_refused: Family::default(),
            upgrade_failures: Counter::default(),
            http_connections_active: Gauge::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Family::default(),
            slow_down: Counter::default(),
            read_pauses: Counter::default(),
            buffer_limit: Counter::default(),
            errors: Family::default(),
            first_partial: Histogram::new(LATENCY_BUCKETS),
            final_latency: Histogram::new(LATENCY_BUCKETS),
        }
    }
}

impl GatewayMetrics {
    /// Adds these metrics to `registry`, which may also hold an in-process engine's.
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stt_audio_chunks_received",
            "Audio frames received from clients",
            self.audio_chunks_received.clone(),
        );
        registry.register(
            "stt_audio_bytes_received",
            "Audio bytes received from clients",
            self.audio_bytes_received.clone(),
        );
        registry.register(
            "stt_latency_seconds",
            "Time from receiving the audio frame that holds a result's end to sending the result",
            self.latency.clone(),
        );
        registry.register(
            "stt_websocket_connections_active",
            "Open WebSocket sessions",
            self.connections_active.clone(),
        );
        registry.register(
            "stt_websocket_connections_rejected",
            "Upgrade requests refused with 503 because the gateway was at capacity",
            self.connections_rejected.clone(),
        );
        registry.register(
            "stt_connections_refused",
            "Connections refused before a session began, by reason (capacity, per_ip, shutdown, http_connections)",
            self.connections_refused.clone(),
        );
        registry.register(
            "stt_websocket_upgrade_failures",
            "Accepted upgrade requests whose connection failed before the WebSocket opened",
            self.upgrade_failures.clone(),
        );
        registry.register(
            "stt_http_connections_active",
            "Open HTTP connections not (yet) upgraded to a WebSocket",
            self.http_connections_active.clone(),
        );
        registry.register(
            "stt_sessions_opened",
            "WebSocket sessions opened",
            self.sessions_opened.clone(),
        );
        registry.register(
            "stt_sessions_closed",
            "WebSocket sessions closed, by reason",
            self.sessions_closed.clone(),
        );
        registry.register(
            "stt_slow_down",
            "slow_down messages sent (one per episode)",
            self.slow_down.clone(),
        );
        registry.register(
            "stt_read_pauses",
            "Times a session stopped reading its socket because its engine queue was full (TCP then pushes back on the client)",
            self.read_pauses.clone(),
        );
        registry.register(
            "stt_buffer_limit",
            "Sessions closed because their unsent audio passed the buffer limit",
            self.buffer_limit.clone(),
        );
        registry.register(
            "stt_errors",
            "Errors by kind (websocket, grpc, engine, store, internal)",
            self.errors.clone(),
        );
        registry.register(
            "stt_first_partial_seconds",
            "Time from receiving the audio where speech starts to sending its first partial",
            self.first_partial.clone(),
        );
        registry.register(
            "stt_final_latency_seconds",
            "Time from receiving the audio where speech ends to sending its final (includes the endpoint silence)",
            self.final_latency.clone(),
        );
    }

    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn connection_refused(&self, reason: &'static str) {
        self.connections_refused
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn session_closed(&self, reason: &'static str) {
        self.sessions_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }
}

/// Counts one open thing in a gauge for as long as it lives, whatever way it ends (a panic or
/// a cancelled task included).
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: &Gauge) -> Self {
        gauge.inc();
        Self(gauge.clone())
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `registry` in Prometheus / OpenMetrics text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if let Err(err) = prometheus_client::encoding::text::encode(&mut text, registry) {
        tracing::error!(%err, "cannot encode metrics");
    }
    text
}

/// The content type of [`encode`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `GET /metrics` alone: for `--metrics-listen`, and for an engine run on its own.
pub fn metrics_router(registry: Arc<Registry>) -> axum::Router {
    axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let registry = registry.clone();
            async move {
                (
                    [(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)],
                    encode(&registry),
                )
            }
        }),
    )
}

/// The transcript store's writer, read at each scrape: queued writes, retries and health show
/// a store outage while it happens, not only when sessions start failing.
#[derive(Debug)]
pub struct StoreCollector(pub StoreWriter);

impl Collector for StoreCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let stats = self.0.stats();
        encode_gauge(
            &mut encoder,
            "stt_store_pending_writes",
            "Store writes queued or being retried (bounded; sessions report an error when full)",
            stats.pending as i64,
        )?;
        encode_gauge(
            &mut encoder,
            "stt_store_pending_bytes",
            "About how many bytes the pending store writes hold (bounded at 64 MiB)",
            stats.pending_bytes as i64,
        )?;
        encode_gauge(
            &mut encoder,
            "stt_store_up",
            "1 when the last store write succeeded, 0 from a failed attempt until the next success",
            i64::from(stats.healthy),
        )?;
        encode_counter(
            &mut encoder,
            "stt_store_writes",
            "Store writes applied",
            stats.applied,
        )?;
        encode_counter(
            &mut encoder,
            "stt_store_write_retries",
            "Failed store write attempts that were retried",
            stats.retries,
        )?;
        encode_counter(
            &mut encoder,
            "stt_store_writes_rejected",
            "Store writes refused because the write queue was full",
            stats.rejected_full,
        )?;
        encode_counter(
            &mut encoder,
            "stt_store_writes_discarded",
            "Store writes given up after an error no retry can fix (each is logged)",
            stats.discarded,
        )
    }
}

/// The engines' health as the gateway last saw it.
#[derive(Debug)]
pub struct EnginePoolCollector(pub Arc<EnginePool>);

impl Collector for EnginePoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        encode_gauge(
            &mut encoder,
            "stt_engines_configured",
            "Engines the gateway was given",
            self.0.len() as i64,
        )?;
        encode_gauge(
            &mut encoder,
            "stt_engines_serving",
            "Engines that reported SERVING at the last health check (every 2 s)",
            self.0.serving_count() as i64,
        )
    }
}

fn encode_gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

fn encode_counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let counter = ConstCounter::new(value);
    counter.encode(encoder.encode_descriptor(name, help, None, counter.metric_type())?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_metric_names_are_exported() {
        let metrics = GatewayMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        metrics.audio_chunks_received.inc();
        metrics.latency.observe(0.12);
        metrics.session_closed("normal");
        metrics.error("engine");
        let text = encode(&registry);
        assert!(text.contains("stt_audio_chunks_received_total 1"), "{text}");
        assert!(
            text.contains("stt_latency_seconds_bucket{le=\"0.2\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stt_sessions_closed_total{reason=\"normal\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("stt_errors_total{kind=\"engine\"} 1"),
            "{text}"
        );
    }
}
