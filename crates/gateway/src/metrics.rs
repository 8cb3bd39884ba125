//! Prometheus metrics of the gateway (docs/metrics.md). Label sets are bounded: close reasons
//! and error kinds only, never a session id.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The seed's buckets (0.05, 0.1, 0.2, 0.5, 1.0) with finer and longer ones around them.
const LATENCY_BUCKETS: [f64; 14] = [
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: &'static str,
}

pub struct GatewayMetrics {
    registry: Registry,
    pub audio_chunks_received: Counter,
    pub audio_bytes_received: Counter,
    pub latency: Histogram,
    pub connections_active: Gauge,
    pub connections_rejected: Counter,
    pub sessions_opened: Counter,
    pub sessions_closed: Family<ReasonLabel, Counter>,
    pub slow_down: Counter,
    pub buffer_limit: Counter,
    pub errors: Family<KindLabel, Counter>,
    pub first_partial: Histogram,
    pub final_latency: Histogram,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let metrics = Self {
            audio_chunks_received: Counter::default(),
            audio_bytes_received: Counter::default(),
            latency: Histogram::new(LATENCY_BUCKETS),
            connections_active: Gauge::default(),
            connections_rejected: Counter::default(),
            sessions_opened: Counter::default(),
            sessions_closed: Family::default(),
            slow_down: Counter::default(),
            buffer_limit: Counter::default(),
            errors: Family::default(),
            first_partial: Histogram::new(LATENCY_BUCKETS),
            final_latency: Histogram::new(LATENCY_BUCKETS),
            registry: Registry::default(),
        };
        registry.register(
            "stt_audio_chunks_received",
            "Audio frames received from clients",
            metrics.audio_chunks_received.clone(),
        );
        registry.register(
            "stt_audio_bytes_received",
            "Audio bytes received from clients",
            metrics.audio_bytes_received.clone(),
        );
        registry.register(
            "stt_latency_seconds",
            "Time from receiving the audio frame that holds a result's end to sending the result",
            metrics.latency.clone(),
        );
        registry.register(
            "stt_websocket_connections_active",
            "Open WebSocket sessions",
            metrics.connections_active.clone(),
        );
        registry.register(
            "stt_websocket_connections_rejected",
            "Upgrade requests refused with 503 because the gateway was at capacity",
            metrics.connections_rejected.clone(),
        );
        registry.register(
            "stt_sessions_opened",
            "WebSocket sessions opened",
            metrics.sessions_opened.clone(),
        );
        registry.register(
            "stt_sessions_closed",
            "WebSocket sessions closed, by reason",
            metrics.sessions_closed.clone(),
        );
        registry.register(
            "stt_slow_down",
            "slow_down messages sent (one per episode)",
            metrics.slow_down.clone(),
        );
        registry.register(
            "stt_buffer_limit",
            "Sessions closed because their unsent audio passed the buffer limit",
            metrics.buffer_limit.clone(),
        );
        registry.register(
            "stt_errors",
            "Errors by kind (websocket, grpc, engine, store)",
            metrics.errors.clone(),
        );
        registry.register(
            "stt_first_partial_seconds",
            "Time from receiving the audio where speech starts to sending its first partial",
            metrics.first_partial.clone(),
        );
        registry.register(
            "stt_final_latency_seconds",
            "Time from receiving the audio where speech ends to sending its final (includes the endpoint silence)",
            metrics.final_latency.clone(),
        );
        Self {
            registry,
            ..metrics
        }
    }
}

impl GatewayMetrics {
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&KindLabel { kind }).inc();
    }

    pub fn session_closed(&self, reason: &'static str) {
        self.sessions_closed
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The registry in Prometheus / OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        if let Err(err) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            tracing::error!(%err, "cannot encode metrics");
        }
        text
    }
}

/// When each recent audio frame arrived, by the audio time at its end, so that a result can
/// be timed from the arrival of the audio it covers. Bounded: old frames are forgotten.
#[derive(Debug, Default)]
pub struct ArrivalLog {
    frames: VecDeque<(u64, Instant)>,
}

const ARRIVALS_KEPT: usize = 1200;

impl ArrivalLog {
    pub fn record(&mut self, audio_end_ms: u64, at: Instant) {
        if self.frames.len() == ARRIVALS_KEPT {
            self.frames.pop_front();
        }
        self.frames.push_back((audio_end_ms, at));
    }

    /// When the frame holding audio time `audio_ms` arrived, if still remembered.
    pub fn arrival_of(&self, audio_ms: i64) -> Option<Instant> {
        let audio_ms = u64::try_from(audio_ms).unwrap_or(0);
        self.frames
            .iter()
            .find(|(end, _)| *end >= audio_ms)
            .map(|(_, at)| *at)
    }

    pub fn elapsed_since(&self, audio_ms: i64, now: Instant) -> Option<Duration> {
        self.arrival_of(audio_ms)
            .map(|at| now.saturating_duration_since(at))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_metric_names_are_exported() {
        let metrics = GatewayMetrics::default();
        metrics.audio_chunks_received.inc();
        metrics.latency.observe(0.12);
        metrics.session_closed("normal");
        metrics.error("engine");
        let text = metrics.encode();
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

    #[test]
    fn arrival_log_finds_the_frame_holding_an_audio_time() {
        let mut log = ArrivalLog::default();
        let start = Instant::now();
        log.record(100, start);
        log.record(200, start + Duration::from_millis(100));
        assert_eq!(
            log.arrival_of(150),
            Some(start + Duration::from_millis(100))
        );
        assert_eq!(log.arrival_of(0), Some(start));
        assert_eq!(log.arrival_of(250), None);
    }

    #[test]
    fn arrival_log_is_bounded() {
        let mut log = ArrivalLog::default();
        let now = Instant::now();
        for idx in 0..(ARRIVALS_KEPT as u64 * 2) {
            log.record(idx * 100, now);
        }
        assert_eq!(log.frames.len(), ARRIVALS_KEPT);
        assert_eq!(log.arrival_of(0), Some(now));
    }
}
