//! Latency bookkeeping of one streaming session, free of I/O and clocks so that it is tested
//! deterministically.
//!
//! - **Result latency**: for each audio frame sent, ending at audio time `t`, the time from
//!   sending it to receiving the first result with `end_ms >= t`. A frame counts only when that
//!   result also starts at or before `t` (the result covers it); frames of silence, which no
//!   result covers, are counted apart rather than charged the wait for the next utterance.
//! - **First partial**: from sending the frame where an utterance's speech starts
//!   (`speech_started.at_ms`) to its first partial.
//! - **Final latency**: from sending the frame where an utterance's speech ends
//!   (`speech_ended.at_ms`) to its final; includes the endpoint silence.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct LatencyTracker {
    /// Frames sent that no result has reached yet: (audio end ms, sent at).
    pending: VecDeque<(u64, Instant)>,
    /// Every frame sent, for speech-start and speech-end lookups (bounded by the stream).
    sent: Vec<(u64, Instant)>,
    awaiting_first_partial: Option<u64>,
    awaiting_final: Option<u64>,
    /// Between `speech_started` and the utterance's final.
    in_speech: bool,
    pub result_latency: Vec<Duration>,
    pub first_partial: Vec<Duration>,
    pub final_latency: Vec<Duration>,
    /// Frames no result covered (silence between utterances).
    pub uncovered_frames: u64,
}

/// The parts of a result the bookkeeping needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultSpan {
    pub start_ms: u64,
    pub end_ms: u64,
    pub is_final: bool,
}

impl LatencyTracker {
    /// A frame whose audio ends at `audio_end_ms` (from the start of the stream) was sent.
    pub fn frame_sent(&mut self, audio_end_ms: u64, at: Instant) {
        self.pending.push_back((audio_end_ms, at));
        self.sent.push((audio_end_ms, at));
    }

    pub fn speech_started(&mut self, at_ms: u64) {
        self.awaiting_first_partial = Some(at_ms);
        self.in_speech = true;
    }

    pub fn speech_ended(&mut self, at_ms: u64) {
        self.awaiting_final = Some(at_ms);
    }

    pub fn result(&mut self, span: ResultSpan, now: Instant) {
        while let Some(&(frame_end, sent_at)) = self.pending.front() {
            if frame_end > span.end_ms {
                break;
            }
            self.pending.pop_front();
            // The frame's audio is [frame_end - frame length, frame_end]; it is covered if the
            // result starts before the frame ends.
            if span.start_ms < frame_end {
                self.result_latency
                    .push(now.saturating_duration_since(sent_at));
            } else {
                self.uncovered_frames += 1;
            }
        }
        if span.is_final {
            if let Some(at) = self.awaiting_final.take()
                && let Some(sent_at) = self.sent_at(at)
            {
                self.final_latency
                    .push(now.saturating_duration_since(sent_at));
            }
            self.awaiting_first_partial = None;
            self.in_speech = false;
        } else if let Some(at) = self.awaiting_first_partial.take()
            && let Some(sent_at) = self.sent_at(at)
        {
            self.first_partial
                .push(now.saturating_duration_since(sent_at));
        }
    }

    /// The end of the stream: a final after `close` answers everything sent (the speech end is
    /// the end of the audio when no `speech_ended` came).
    pub fn closing(&mut self) {
        if self.in_speech
            && self.awaiting_final.is_none()
            && let Some(&(last, _)) = self.sent.last()
        {
            self.awaiting_final = Some(last);
        }
    }

    /// When the frame holding audio time `audio_ms` was sent.
    fn sent_at(&self, audio_ms: u64) -> Option<Instant> {
        let idx = self.sent.partition_point(|&(end, _)| end < audio_ms);
        self.sent.get(idx).map(|&(_, at)| at)
    }

    /// Frames still waiting for a result (audio the server has not answered).
    pub fn unanswered_frames(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(base: Instant, ms: u64) -> Instant {
        base + Duration::from_millis(ms)
    }

    fn span(start_ms: u64, end_ms: u64, is_final: bool) -> ResultSpan {
        ResultSpan {
            start_ms,
            end_ms,
            is_final,
        }
    }

    /// Frames of 100 ms sent in real time: frame ending at `t` ms is sent at `t`.
    fn realtime(tracker: &mut LatencyTracker, base: Instant, until_ms: u64) {
        for end in (100..=until_ms).step_by(100) {
            tracker.frame_sent(end, at(base, end));
        }
    }

    #[test]
    fn each_frame_is_timed_to_the_first_result_reaching_it() {
        let base = Instant::now();
        let mut tracker = LatencyTracker::default();
        realtime(&mut tracker, base, 600);
        // A partial covering 0..300 arrives at 450 ms: frames 100, 200, 300.
        tracker.result(span(0, 300, false), at(base, 450));
        // A partial covering 0..600 at 700 ms: frames 400, 500, 600.
        tracker.result(span(0, 600, false), at(base, 700));
        let ms: Vec<u64> = tracker
            .result_latency
            .iter()
            .map(|d| d.as_millis() as u64)
            .collect();
        assert_eq!(ms, vec![350, 250, 150, 300, 200, 100]);
        assert_eq!(tracker.unanswered_frames(), 0);
    }

    #[test]
    fn a_result_whose_end_falls_inside_a_frame_leaves_that_frame_waiting() {
        let base = Instant::now();
        let mut tracker = LatencyTracker::default();
        realtime(&mut tracker, base, 300);
        tracker.result(span(0, 250, false), at(base, 400));
        assert_eq!(tracker.result_latency.len(), 2);
        assert_eq!(tracker.unanswered_frames(), 1);
        tracker.result(span(0, 300, true), at(base, 500));
        assert_eq!(tracker.result_latency[2], Duration::from_millis(200));
    }

    #[test]
    fn silence_that_no_result_covers_is_not_charged_to_latency() {
        let base = Instant::now();
        let mut tracker = LatencyTracker::default();
        realtime(&mut tracker, base, 1000);
        // Speech from 600 ms; frames 100..600 were silence.
        tracker.result(span(600, 1000, false), at(base, 1100));
        assert_eq!(tracker.uncovered_frames, 6);
        assert_eq!(tracker.result_latency.len(), 4);
        assert_eq!(tracker.result_latency[0], Duration::from_millis(400));
    }

    #[test]
    fn first_partial_and_final_latency_from_the_speech_events() {
        let base = Instant::now();
        let mut tracker = LatencyTracker::default();
        realtime(&mut tracker, base, 2000);
        tracker.speech_started(250);
        tracker.result(span(250, 600, false), at(base, 700));
        tracker.result(span(250, 900, false), at(base, 1000));
        tracker.speech_ended(1200);
        tracker.result(span(250, 1200, true), at(base, 1900));
        // Speech started in the frame ending at 300 (sent at 300): first partial at 700.
        assert_eq!(tracker.first_partial, vec![Duration::from_millis(400)]);
        // Speech ended in the frame ending at 1200: final at 1900.
        assert_eq!(tracker.final_latency, vec![Duration::from_millis(700)]);
    }

    #[test]
    fn a_final_forced_by_close_is_timed_from_the_last_frame() {
        let base = Instant::now();
        let mut tracker = LatencyTracker::default();
        realtime(&mut tracker, base, 500);
        tracker.speech_started(0);
        tracker.result(span(0, 300, false), at(base, 400));
        tracker.closing();
        tracker.result(span(0, 500, true), at(base, 800));
        assert_eq!(tracker.final_latency, vec![Duration::from_millis(300)]);
    }

    #[test]
    fn nothing_to_time_when_no_speech_is_pending_at_close() {
        let base = Instant::now();
        let mut tracker = LatencyTracker::default();
        realtime(&mut tracker, base, 300);
        tracker.closing();
        tracker.result(span(0, 0, true), at(base, 500));
        assert!(tracker.final_latency.is_empty());
    }
}
