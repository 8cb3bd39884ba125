//! A session's latency bookkeeping: when each recent audio frame arrived, so that a result is
//! timed from the arrival of the audio it covers, and the speech onsets and ends still waiting
//! for their first partial and final.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use crate::metrics::GatewayMetrics;

/// When each recent audio frame arrived, by the audio time at its end. Bounded: old frames are
/// forgotten.
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

/// Feeds `stt_latency_seconds`, `stt_first_partial_seconds` and `stt_final_latency_seconds`.
#[derive(Debug, Default)]
pub struct LatencyTracker {
    arrivals: ArrivalLog,
    /// Audio time of the current utterance's onset until its first partial is sent.
    awaiting_first_partial: Option<i64>,
    /// Audio time where the current utterance's speech ended, until its final is sent.
    awaiting_final: Option<i64>,
}

impl LatencyTracker {
    /// An audio frame ending at `audio_end_ms` arrived now.
    pub fn audio(&mut self, audio_end_ms: u64, now: Instant) {
        self.arrivals.record(audio_end_ms, now);
    }

    pub fn speech_started(&mut self, at_ms: i64) {
        self.awaiting_first_partial = Some(at_ms);
    }

    pub fn speech_ended(&mut self, at_ms: i64) {
        self.awaiting_final = Some(at_ms);
    }

    /// A result covering audio up to `end_ms` is being sent now.
    pub fn result(&mut self, end_ms: i64, is_final: bool, now: Instant, metrics: &GatewayMetrics) {
        if let Some(latency) = self.arrivals.elapsed_since(end_ms, now) {
            metrics.latency.observe(latency.as_secs_f64());
        }
        let (awaiting, histogram) = if is_final {
            (self.awaiting_final.take(), &metrics.final_latency)
        } else {
            (self.awaiting_first_partial.take(), &metrics.first_partial)
        };
        if let Some(latency) = awaiting.and_then(|at| self.arrivals.elapsed_since(at, now)) {
            histogram.observe(latency.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::encode;
    use prometheus_client::registry::Registry;

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

    #[test]
    fn first_partial_and_final_are_timed_once_per_utterance() {
        let metrics = GatewayMetrics::default();
        let mut registry = Registry::default();
        metrics.register(&mut registry);
        let mut tracker = LatencyTracker::default();
        let start = Instant::now();
        tracker.audio(100, start);
        tracker.audio(200, start + Duration::from_millis(100));
        tracker.speech_started(50);
        let later = start + Duration::from_millis(300);
        tracker.result(200, false, later, &metrics);
        tracker.result(200, false, later, &metrics);
        tracker.speech_ended(180);
        tracker.result(200, true, later, &metrics);
        let text = encode(&registry);
        assert!(text.contains("stt_latency_seconds_count 3"), "{text}");
        assert!(text.contains("stt_first_partial_seconds_count 1"), "{text}");
        assert!(text.contains("stt_final_latency_seconds_count 1"), "{text}");
        // The onset at 50 ms arrived with the first frame, 300 ms before the partial.
        assert!(text.contains("stt_first_partial_seconds_sum 0.3"), "{text}");
    }
}
