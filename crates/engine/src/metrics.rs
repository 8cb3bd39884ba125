//! Prometheus metrics of the engine (docs/metrics.md): streams, model calls, batch sizes and
//! inference time. Every metric is a cheap atomic that the recognizer thread updates directly;
//! label sets are bounded (window kind only).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::batcher::Priority;

/// From a short partial on a GPU to a long final on a small CPU.
const INFERENCE_BUCKETS: [f64; 13] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0, 2.0, 5.0,
];
const BATCH_SIZE_BUCKETS: [f64; 8] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0];
const QUEUE_WAIT_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WindowLabel {
    pub kind: &'static str,
}

impl WindowLabel {
    pub fn of(priority: Priority) -> Self {
        let kind = match priority {
            Priority::Final => "final",
            Priority::Partial => "partial",
        };
        Self { kind }
    }
}

/// Cheap to clone: every clone updates the same metrics.
#[derive(Clone, Debug)]
pub struct EngineMetrics {
    /// Streams admitted and not yet ended; the batcher also reads it (it never waits for more
    /// windows than there are streams).
    pub streams_active: Gauge,
    pub streams_refused: Counter,
    /// Model calls (batches).
    pub batches: Counter,
    /// Windows decoded, by kind (partial or final).
    pub windows: Family<WindowLabel, Counter>,
    /// Windows dropped before decoding because their stream had ended.
    pub windows_skipped: Counter,
    /// Wall time the recognizer spent in model calls; its rate is the model's utilisation.
    pub model_busy_seconds: Counter<f64, AtomicU64>,
    pub inference_seconds: Histogram,
    pub batch_size: Histogram,
    pub queue_wait_seconds: Histogram,
}

impl Default for EngineMetrics {
    fn default() -> Self {
        Self {
            streams_active: Gauge::default(),
            streams_refused: Counter::default(),
            batches: Counter::default(),
            windows: Family::default(),
            windows_skipped: Counter::default(),
            model_busy_seconds: Counter::default(),
            inference_seconds: Histogram::new(INFERENCE_BUCKETS),
            batch_size: Histogram::new(BATCH_SIZE_BUCKETS),
            queue_wait_seconds: Histogram::new(QUEUE_WAIT_BUCKETS),
        }
    }
}

impl EngineMetrics {
    /// Adds these metrics to `registry` (the engine's own, or the one `earshot serve` shares
    /// with the gateway).
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "stt_engine_streams_active",
            "Recognition streams open on the engine",
            self.streams_active.clone(),
        );
        registry.register(
            "stt_engine_streams_refused",
            "Streams refused with RESOURCE_EXHAUSTED because the engine was at capacity",
            self.streams_refused.clone(),
        );
        registry.register(
            "stt_engine_batches",
            "Model calls (each decodes a batch of windows)",
            self.batches.clone(),
        );
        registry.register(
            "stt_engine_windows",
            "Audio windows decoded, by kind (partial or final)",
            self.windows.clone(),
        );
        registry.register(
            "stt_engine_windows_skipped",
            "Windows dropped before decoding because their stream had ended",
            self.windows_skipped.clone(),
        );
        registry.register(
            "stt_engine_model_busy_seconds",
            "Time the recognizer spent in model calls; rate() of it is the model's utilisation",
            self.model_busy_seconds.clone(),
        );
        registry.register(
            "stt_engine_inference_seconds",
            "Duration of one model call (a whole batch)",
            self.inference_seconds.clone(),
        );
        registry.register(
            "stt_engine_batch_size",
            "Windows decoded together in one model call",
            self.batch_size.clone(),
        );
        registry.register(
            "stt_engine_queue_wait_seconds",
            "Time a window waited for the model, from ready to the start of its model call",
            self.queue_wait_seconds.clone(),
        );
    }

    /// Windows decoded so far, all kinds together.
    pub fn windows_decoded(&self) -> u64 {
        [Priority::Final, Priority::Partial]
            .into_iter()
            .map(|priority| self.windows.get_or_create(&WindowLabel::of(priority)).get())
            .sum()
    }
}
