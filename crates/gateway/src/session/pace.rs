//! How fast a client sends audio: more than `max_pace` times real time over a sliding window
//! is refused (`too_fast`), so that one sender cannot take an engine's whole capacity.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

/// The window over which the pace is measured.
pub const PACE_WINDOW: Duration = Duration::from_secs(10);

/// The window is kept in this many buckets (memory is bounded whatever the frame rate).
const BUCKETS: u64 = 40;

#[derive(Debug)]
pub struct PaceMeter {
    /// Audio allowed within any window, in ms; `None` when the limit is off.
    allowed_ms: Option<u64>,
    start: Instant,
    /// (bucket index since `start`, audio ms received in it).
    buckets: VecDeque<(u64, u64)>,
    in_window_ms: u64,
}

impl PaceMeter {
    /// `max_pace` ≤ 0 turns the limit off.
    pub fn new(max_pace: f64, now: Instant) -> Self {
        let allowed_ms =
            (max_pace > 0.0).then(|| (max_pace * PACE_WINDOW.as_millis() as f64) as u64);
        Self {
            allowed_ms,
            start: now,
            buckets: VecDeque::new(),
            in_window_ms: 0,
        }
    }

    /// Records `audio_ms` of audio received now; false when the window now holds more audio
    /// than the pace allows.
    pub fn record(&mut self, audio_ms: u64, now: Instant) -> bool {
        let Some(allowed_ms) = self.allowed_ms else {
            return true;
        };
        let bucket_len = PACE_WINDOW.as_millis() as u64 / BUCKETS;
        let bucket = now.saturating_duration_since(self.start).as_millis() as u64 / bucket_len;
        while let Some(&(oldest, ms)) = self.buckets.front() {
            if oldest + BUCKETS > bucket {
                break;
            }
            self.in_window_ms -= ms;
            self.buckets.pop_front();
        }
        match self.buckets.back_mut() {
            Some((last, ms)) if *last == bucket => *ms += audio_ms,
            _ => self.buckets.push_back((bucket, audio_ms)),
        }
        self.in_window_ms += audio_ms;
        self.in_window_ms <= allowed_ms
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_time_and_bursts_within_the_allowance_pass() {
        let start = Instant::now();
        let mut meter = PaceMeter::new(4.0, start);
        // 40 s at once (a reconnect's backlog) is within 4x over 10 s.
        assert!(meter.record(40_000, start));
        // Then real time for a minute.
        for step in 1..=600u64 {
            assert!(meter.record(100, start + Duration::from_millis(10_000 + step * 100)));
        }
    }

    #[test]
    fn sustained_fast_audio_is_refused() {
        let start = Instant::now();
        let mut meter = PaceMeter::new(4.0, start);
        // 5x real time: 500 ms of audio every 100 ms.
        let refused_at = (1..=200u64)
            .find(|step| !meter.record(500, start + Duration::from_millis(step * 100)))
            .expect("refused");
        assert!((75..=85).contains(&refused_at), "{refused_at}");
    }

    #[test]
    fn old_audio_leaves_the_window() {
        let start = Instant::now();
        let mut meter = PaceMeter::new(1.0, start);
        assert!(meter.record(10_000, start));
        assert!(!meter.record(1, start + Duration::from_secs(5)));
        assert!(meter.record(9_000, start + Duration::from_secs(11)));
    }

    #[test]
    fn zero_turns_the_limit_off() {
        let start = Instant::now();
        let mut meter = PaceMeter::new(0.0, start);
        assert!(meter.record(u64::MAX / 2, start));
    }
}
