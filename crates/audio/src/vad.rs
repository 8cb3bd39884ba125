//! Voice activity: per-frame speech probabilities from earshot, and an endpointing state machine over them.

use std::time::Duration;

use crate::AudioError;

/// Samples per VAD frame: earshot consumes exactly 256 samples at 16 kHz.
pub const VAD_FRAME_SAMPLES: usize = 256;

/// Duration of one VAD frame (256 samples at 16 kHz).
pub const VAD_FRAME: Duration = Duration::from_millis(16);

/// How far below the threshold a score must fall to count as silence once an utterance has started. Speech
/// probabilities wobble around the threshold in quiet syllables; without this margin such wobbles would keep
/// restarting the trailing-silence count or, with a short endpoint, chop the utterance.
pub const HYSTERESIS: f32 = 0.15;

/// Start time of a VAD frame, measured from the start of the stream.
pub fn frame_start_time(frame: u64) -> Duration {
    // u32 frames would cover 2 years; saturating beyond that keeps this total.
    VAD_FRAME.saturating_mul(u32::try_from(frame).unwrap_or(u32::MAX))
}

/// Number of whole VAD frames needed to cover `duration`, rounding up so a configured duration is never cut short.
pub fn frames_covering(duration: Duration) -> u64 {
    let frame_nanos = VAD_FRAME.as_nanos();
    u64::try_from(duration.as_nanos().div_ceil(frame_nanos)).unwrap_or(u64::MAX)
}

/// Per-stream voice activity detector: frames arbitrary-length 16 kHz input into 256-sample frames for earshot and
/// returns one speech probability per completed frame (leftover samples are kept for the next call).
pub struct VoiceActivityDetector {
    // Boxed because the detector carries about 10 KiB of state, which is too much to move around on the stack.
    detector: Box<earshot::Detector>,
    partial_frame: Vec<f32>,
}

impl Default for VoiceActivityDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl VoiceActivityDetector {
    pub fn new() -> Self {
        VoiceActivityDetector {
            detector: earshot::Detector::default_boxed(),
            partial_frame: Vec::with_capacity(VAD_FRAME_SAMPLES),
        }
    }

    /// Appends one score in [0, 1] to `scores` for every frame completed by `samples`.
    pub fn push(&mut self, samples: &[f32], scores: &mut Vec<f32>) {
        let mut remaining = samples;
        while !remaining.is_empty() {
            let wanted = VAD_FRAME_SAMPLES - self.partial_frame.len();
            let taken = wanted.min(remaining.len());
            // earshot expects [-1, 1] (it debug-asserts so) and would propagate NaN into its recurrent state forever.
            self.partial_frame
                .extend(remaining[..taken].iter().map(|&sample| {
                    if sample.is_nan() {
                        0.0
                    } else {
                        sample.clamp(-1.0, 1.0)
                    }
                }));
            remaining = &remaining[taken..];
            if self.partial_frame.len() == VAD_FRAME_SAMPLES {
                let score = self.detector.predict_f32(&self.partial_frame);
                scores.push(if score.is_nan() {
                    0.0
                } else {
                    score.clamp(0.0, 1.0)
                });
                self.partial_frame.clear();
            }
        }
    }

    /// Number of samples waiting for the next frame to complete.
    pub fn buffered_samples(&self) -> usize {
        self.partial_frame.len()
    }

    /// Forgets all history, for reuse on an unrelated stream.
    pub fn reset(&mut self) {
        self.detector.reset();
        self.partial_frame.clear();
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct EndpointConfig {
    /// Speech probability that counts as speech; must lie strictly between 0 and 1. Default 0.5.
    pub threshold: f32,
    /// Speech must last this long to start an utterance (default 96 ms); shorter blips are ignored. Zero means a
    /// single speech frame starts one.
    pub min_speech: Duration,
    /// Trailing silence that ends an utterance (default 500 ms); at least one frame (16 ms).
    pub endpoint_silence: Duration,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            threshold: 0.5,
            min_speech: Duration::from_millis(96),
            endpoint_silence: Duration::from_millis(500),
        }
    }
}

impl EndpointConfig {
    pub fn validate(&self) -> Result<(), AudioError> {
        if !(self.threshold > 0.0 && self.threshold < 1.0) {
            return Err(AudioError::InvalidEndpointConfig {
                reason: format!(
                    "threshold {} must be strictly between 0 and 1",
                    self.threshold
                ),
            });
        }
        if self.endpoint_silence < VAD_FRAME {
            return Err(AudioError::InvalidEndpointConfig {
                reason: format!(
                    "endpoint_silence {:?} is shorter than one VAD frame ({:?})",
                    self.endpoint_silence, VAD_FRAME
                ),
            });
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointEvent {
    /// `frame` is the index (in VAD frames since stream start) of the FIRST speech frame of the run that started the
    /// utterance (not the frame at which min_speech was reached).
    SpeechStarted { frame: u64 },
    /// `frame` is the index of the first non-speech frame after the last speech frame, emitted once
    /// endpoint_silence of non-speech has followed it.
    SpeechEnded { frame: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No utterance; `speech_run` counts consecutive speech frames starting at `run_start`.
    Idle { run_start: u64, speech_run: u64 },
    Speaking {
        start: u64,
        last_speech: u64,
        silence_run: u64,
    },
}

const IDLE: State = State::Idle {
    run_start: 0,
    speech_run: 0,
};

/// Pure state machine over frame scores; deterministic; no clocks.
///
/// While idle a frame is speech when its score reaches `threshold`, and an utterance starts after `min_speech` of
/// consecutive speech frames. While speaking a frame only counts as silence when it falls below
/// `threshold - HYSTERESIS`, so one dip does not chop the utterance; `endpoint_silence` of such frames in a row ends
/// it.
#[derive(Debug, Clone)]
pub struct Endpointer {
    config: EndpointConfig,
    min_speech_frames: u64,
    endpoint_silence_frames: u64,
    state: State,
    frames_seen: u64,
    last_speech_frame: Option<u64>,
}

impl Endpointer {
    /// Takes the config as given; call [`EndpointConfig::validate`] first on client-supplied values. An invalid
    /// config still behaves sanely: durations shorter than a frame count as one frame.
    pub fn new(config: EndpointConfig) -> Self {
        Endpointer {
            min_speech_frames: frames_covering(config.min_speech).max(1),
            endpoint_silence_frames: frames_covering(config.endpoint_silence).max(1),
            config,
            state: IDLE,
            frames_seen: 0,
            last_speech_frame: None,
        }
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.config
    }

    /// Changes the trailing silence that ends an utterance; applies from the next frame, counting silence already
    /// seen (so shortening it below the current silence ends the utterance at the next silent frame).
    pub fn set_endpoint_silence(&mut self, endpoint_silence: Duration) {
        self.config.endpoint_silence = endpoint_silence;
        self.endpoint_silence_frames = frames_covering(endpoint_silence).max(1);
    }

    /// Consumes the score of the next frame (frame indices are implicit, counted from 0).
    pub fn push_score(&mut self, score: f32) -> Option<EndpointEvent> {
        let frame = self.frames_seen;
        self.frames_seen += 1;
        match self.state {
            State::Idle {
                run_start,
                speech_run,
            } => {
                if score >= self.config.threshold {
                    let run_start = if speech_run == 0 { frame } else { run_start };
                    let speech_run = speech_run + 1;
                    if speech_run >= self.min_speech_frames {
                        self.state = State::Speaking {
                            start: run_start,
                            last_speech: frame,
                            silence_run: 0,
                        };
                        self.last_speech_frame = Some(frame);
                        return Some(EndpointEvent::SpeechStarted { frame: run_start });
                    }
                    self.state = State::Idle {
                        run_start,
                        speech_run,
                    };
                } else {
                    self.state = IDLE;
                }
                None
            }
            State::Speaking {
                start,
                last_speech,
                silence_run,
            } => {
                // NaN fails this comparison, so it counts as silence rather than keeping an utterance open forever.
                if score >= self.release_threshold() {
                    self.state = State::Speaking {
                        start,
                        last_speech: frame,
                        silence_run: 0,
                    };
                    self.last_speech_frame = Some(frame);
                    return None;
                }
                let silence_run = silence_run + 1;
                if silence_run >= self.endpoint_silence_frames {
                    self.state = IDLE;
                    return Some(EndpointEvent::SpeechEnded {
                        frame: last_speech + 1,
                    });
                }
                self.state = State::Speaking {
                    start,
                    last_speech,
                    silence_run,
                };
                None
            }
        }
    }

    /// Score below which a frame counts as silence during an utterance. Kept at least half the threshold so that a
    /// low threshold does not make the release point zero, which would never end an utterance.
    fn release_threshold(&self) -> f32 {
        (self.config.threshold - HYSTERESIS).max(self.config.threshold * 0.5)
    }

    pub fn is_speaking(&self) -> bool {
        matches!(self.state, State::Speaking { .. })
    }

    pub fn frames_seen(&self) -> u64 {
        self.frames_seen
    }

    /// Frame index where the current utterance's speech started, if speaking.
    pub fn speech_start_frame(&self) -> Option<u64> {
        match self.state {
            State::Speaking { start, .. } => Some(start),
            State::Idle { .. } => None,
        }
    }

    /// Index of the last frame that counted as speech in the current or most recent utterance (for trimming
    /// trailing silence), if there has been one. Speech frames of a run too short to start an utterance do not count.
    pub fn last_speech_frame(&self) -> Option<u64> {
        self.last_speech_frame
    }

    /// Forces the end of the current utterance (finalize / max length / end of stream). If speaking, returns
    /// `SpeechEnded` at `last_speech_frame + 1`, the same place a natural endpoint would report, so that trailing
    /// silence is trimmed alike. Always returns to idle, dropping any speech run that had not yet started an
    /// utterance; frame counting continues.
    pub fn force_end(&mut self) -> Option<EndpointEvent> {
        let event = match self.state {
            State::Speaking { last_speech, .. } => Some(EndpointEvent::SpeechEnded {
                frame: last_speech + 1,
            }),
            State::Idle { .. } => None,
        };
        self.state = IDLE;
        event
    }

    /// Returns to the state of a new stream (frame counting restarts at 0).
    pub fn reset(&mut self) {
        self.state = IDLE;
        self.frames_seen = 0;
        self.last_speech_frame = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wav::read_wav;
    use std::path::Path;

    const JFK_PATH: &str = "/work/shared/speech/wav/jfk.wav";

    fn ms(milliseconds: u64) -> Duration {
        Duration::from_millis(milliseconds)
    }

    /// 96 ms min speech = 6 frames, 480 ms endpoint = 30 frames: whole frames so "exactly" is unambiguous.
    fn config() -> EndpointConfig {
        EndpointConfig {
            threshold: 0.5,
            min_speech: ms(96),
            endpoint_silence: ms(480),
        }
    }

    /// Pushes `scores` and returns each event with the index of the frame whose push produced it.
    fn run(endpointer: &mut Endpointer, scores: &[f32]) -> Vec<(u64, EndpointEvent)> {
        scores
            .iter()
            .filter_map(|&score| {
                let frame = endpointer.frames_seen();
                endpointer.push_score(score).map(|event| (frame, event))
            })
            .collect()
    }

    fn repeat(score: f32, frames: usize) -> Vec<f32> {
        vec![score; frames]
    }

    fn concat(parts: &[Vec<f32>]) -> Vec<f32> {
        parts.concat()
    }

    fn load_jfk() -> Option<crate::wav::WavAudio> {
        let path = Path::new(JFK_PATH);
        if !path.exists() {
            println!("skipping: {JFK_PATH} is absent");
            return None;
        }
        let audio = read_wav(path).expect("jfk.wav should be readable");
        assert_eq!(
            audio.sample_rate, 16_000,
            "jfk.wav is expected to be 16 kHz"
        );
        Some(audio)
    }

    #[test]
    fn frame_constants_agree() {
        assert_eq!(
            VAD_FRAME,
            Duration::from_secs_f64(
                VAD_FRAME_SAMPLES as f64 / f64::from(crate::TARGET_SAMPLE_RATE)
            )
        );
        assert_eq!(frames_covering(ms(96)), 6);
        assert_eq!(frames_covering(ms(500)), 32);
        assert_eq!(frames_covering(Duration::ZERO), 0);
        assert!(frames_covering(Duration::MAX) > 1_000_000_000_000_000);
        assert_eq!(frame_start_time(10), ms(160));
    }

    #[test]
    fn default_config_is_valid() {
        let config = EndpointConfig::default();
        assert_eq!(config.threshold, 0.5);
        assert_eq!(config.min_speech, ms(96));
        assert_eq!(config.endpoint_silence, ms(500));
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn rejects_threshold_outside_open_unit_interval() {
        for threshold in [0.0, 1.0, -0.1, 1.5, f32::NAN, f32::INFINITY] {
            let config = EndpointConfig {
                threshold,
                ..EndpointConfig::default()
            };
            let error = config.validate().unwrap_err();
            assert!(
                error.to_string().contains("threshold"),
                "{threshold}: {error}"
            );
        }
    }

    #[test]
    fn rejects_endpoint_silence_shorter_than_a_frame() {
        let config = EndpointConfig {
            endpoint_silence: ms(15),
            ..EndpointConfig::default()
        };
        let error = config.validate().unwrap_err();
        assert!(error.to_string().contains("endpoint_silence"), "{error}");
        let config = EndpointConfig {
            endpoint_silence: ms(16),
            min_speech: Duration::ZERO,
            ..EndpointConfig::default()
        };
        assert_eq!(config.validate(), Ok(()));
    }

    #[test]
    fn starts_only_after_min_speech() {
        let mut endpointer = Endpointer::new(config());
        let events = run(&mut endpointer, &concat(&[repeat(0.0, 10), repeat(0.9, 6)]));
        assert_eq!(
            events,
            vec![(15, EndpointEvent::SpeechStarted { frame: 10 })]
        );
        assert!(endpointer.is_speaking());
        assert_eq!(endpointer.speech_start_frame(), Some(10));
        assert_eq!(endpointer.last_speech_frame(), Some(15));
    }

    #[test]
    fn ignores_blips_shorter_than_min_speech() {
        let mut endpointer = Endpointer::new(config());
        let scores = concat(&[
            repeat(0.9, 5),
            repeat(0.1, 1),
            repeat(0.9, 3),
            repeat(0.1, 4),
            repeat(0.9, 5),
            repeat(0.0, 40),
        ]);
        assert_eq!(run(&mut endpointer, &scores), vec![]);
        assert!(!endpointer.is_speaking());
        assert_eq!(endpointer.last_speech_frame(), None);
        assert_eq!(endpointer.frames_seen(), scores.len() as u64);
    }

    #[test]
    fn speech_started_reports_first_frame_of_run() {
        let mut endpointer = Endpointer::new(config());
        // A short blip at 3..5 must not become the start; the run beginning at frame 8 does.
        let scores = concat(&[
            repeat(0.0, 3),
            repeat(0.8, 2),
            repeat(0.0, 3),
            repeat(0.8, 20),
        ]);
        let events = run(&mut endpointer, &scores);
        assert_eq!(
            events,
            vec![(13, EndpointEvent::SpeechStarted { frame: 8 })]
        );
    }

    #[test]
    fn ends_after_exactly_endpoint_silence() {
        let mut endpointer = Endpointer::new(config());
        let scores = concat(&[repeat(0.9, 20), repeat(0.0, 29)]);
        let events = run(&mut endpointer, &scores);
        assert_eq!(events, vec![(5, EndpointEvent::SpeechStarted { frame: 0 })]);
        assert!(
            endpointer.is_speaking(),
            "29 silent frames (464 ms) must not end a 480 ms endpoint"
        );
        assert_eq!(
            endpointer.push_score(0.0),
            Some(EndpointEvent::SpeechEnded { frame: 20 })
        );
        assert!(!endpointer.is_speaking());
        assert_eq!(endpointer.speech_start_frame(), None);
        assert_eq!(endpointer.last_speech_frame(), Some(19));
    }

    #[test]
    fn rounds_endpoint_silence_up_to_whole_frames() {
        // 500 ms is 31.25 frames: the utterance ends at the 32nd silent frame, never before 500 ms have passed.
        let mut endpointer = Endpointer::new(EndpointConfig::default());
        let events = run(
            &mut endpointer,
            &concat(&[repeat(0.9, 10), repeat(0.0, 40)]),
        );
        assert_eq!(
            events,
            vec![
                (5, EndpointEvent::SpeechStarted { frame: 0 }),
                (41, EndpointEvent::SpeechEnded { frame: 10 })
            ]
        );
    }

    #[test]
    fn dip_shorter_than_endpoint_silence_does_not_end_utterance() {
        let mut endpointer = Endpointer::new(config());
        let scores = concat(&[
            repeat(0.9, 10),
            repeat(0.0, 29),
            repeat(0.9, 10),
            repeat(0.0, 30),
        ]);
        let events = run(&mut endpointer, &scores);
        assert_eq!(
            events,
            vec![
                (5, EndpointEvent::SpeechStarted { frame: 0 }),
                (78, EndpointEvent::SpeechEnded { frame: 49 })
            ]
        );
    }

    #[test]
    fn scores_just_below_threshold_keep_an_utterance_going() {
        let mut endpointer = Endpointer::new(config());
        // 0.4 is below the 0.5 start threshold but above the 0.35 release threshold.
        let scores = concat(&[repeat(0.9, 10), repeat(0.4, 100)]);
        let events = run(&mut endpointer, &scores);
        assert_eq!(events, vec![(5, EndpointEvent::SpeechStarted { frame: 0 })]);
        assert!(endpointer.is_speaking());
        assert_eq!(endpointer.last_speech_frame(), Some(109));
        // ...and a score of 0.34 counts as silence.
        let events = run(&mut endpointer, &repeat(0.34, 30));
        assert_eq!(
            events,
            vec![(139, EndpointEvent::SpeechEnded { frame: 110 })]
        );
    }

    #[test]
    fn scores_just_below_threshold_do_not_start_an_utterance() {
        let mut endpointer = Endpointer::new(config());
        assert_eq!(run(&mut endpointer, &repeat(0.49, 100)), vec![]);
        assert!(!endpointer.is_speaking());
    }

    #[test]
    fn low_threshold_keeps_a_usable_release_point() {
        let mut endpointer = Endpointer::new(EndpointConfig {
            threshold: 0.1,
            ..config()
        });
        let scores = concat(&[repeat(0.2, 6), repeat(0.04, 30)]);
        let events = run(&mut endpointer, &scores);
        assert_eq!(
            events,
            vec![
                (5, EndpointEvent::SpeechStarted { frame: 0 }),
                (35, EndpointEvent::SpeechEnded { frame: 6 })
            ]
        );
    }

    #[test]
    fn nan_scores_count_as_silence() {
        let mut endpointer = Endpointer::new(config());
        let scores = concat(&[repeat(f32::NAN, 10), repeat(0.9, 6), repeat(f32::NAN, 30)]);
        let events = run(&mut endpointer, &scores);
        assert_eq!(
            events,
            vec![
                (15, EndpointEvent::SpeechStarted { frame: 10 }),
                (45, EndpointEvent::SpeechEnded { frame: 16 })
            ]
        );
    }

    #[test]
    fn force_end_while_speaking_ends_after_last_speech_frame() {
        let mut endpointer = Endpointer::new(config());
        run(&mut endpointer, &concat(&[repeat(0.9, 12), repeat(0.0, 3)]));
        assert!(endpointer.is_speaking());
        assert_eq!(
            endpointer.force_end(),
            Some(EndpointEvent::SpeechEnded { frame: 12 })
        );
        assert!(!endpointer.is_speaking());
        assert_eq!(endpointer.frames_seen(), 15);
        assert_eq!(endpointer.force_end(), None);
        // Frame counting continues, and a new utterance needs min_speech again.
        let events = run(&mut endpointer, &repeat(0.9, 6));
        assert_eq!(
            events,
            vec![(20, EndpointEvent::SpeechStarted { frame: 15 })]
        );
    }

    #[test]
    fn force_end_while_idle_returns_nothing_and_drops_pending_run() {
        let mut endpointer = Endpointer::new(config());
        assert_eq!(endpointer.force_end(), None);
        run(&mut endpointer, &repeat(0.9, 4));
        assert_eq!(endpointer.force_end(), None);
        // The 4-frame run was dropped, so 2 more speech frames are not enough.
        assert_eq!(run(&mut endpointer, &repeat(0.9, 2)), vec![]);
        assert_eq!(
            run(&mut endpointer, &repeat(0.9, 4)),
            vec![(9, EndpointEvent::SpeechStarted { frame: 4 })]
        );
    }

    #[test]
    fn set_endpoint_silence_takes_effect() {
        let mut endpointer = Endpointer::new(config());
        run(
            &mut endpointer,
            &concat(&[repeat(0.9, 10), repeat(0.0, 10)]),
        );
        assert!(endpointer.is_speaking());
        // 10 silent frames already seen; a 160 ms (10-frame) endpoint ends at the next silent frame.
        endpointer.set_endpoint_silence(ms(160));
        assert_eq!(endpointer.config().endpoint_silence, ms(160));
        assert_eq!(
            endpointer.push_score(0.0),
            Some(EndpointEvent::SpeechEnded { frame: 10 })
        );
        // The shorter endpoint applies to later utterances too.
        let events = run(&mut endpointer, &concat(&[repeat(0.9, 6), repeat(0.0, 10)]));
        assert_eq!(
            events,
            vec![
                (26, EndpointEvent::SpeechStarted { frame: 21 }),
                (36, EndpointEvent::SpeechEnded { frame: 27 })
            ]
        );
        // Lengthening it keeps the utterance open.
        endpointer.set_endpoint_silence(Duration::from_secs(2));
        let events = run(
            &mut endpointer,
            &concat(&[repeat(0.9, 6), repeat(0.0, 100)]),
        );
        assert_eq!(
            events,
            vec![(42, EndpointEvent::SpeechStarted { frame: 37 })]
        );
        assert!(endpointer.is_speaking());
    }

    #[test]
    fn zero_min_speech_starts_on_a_single_frame() {
        let mut endpointer = Endpointer::new(EndpointConfig {
            min_speech: Duration::ZERO,
            ..config()
        });
        assert_eq!(
            run(&mut endpointer, &[0.0, 0.9]),
            vec![(1, EndpointEvent::SpeechStarted { frame: 1 })]
        );
    }

    #[test]
    fn reset_restarts_frame_counting() {
        let mut endpointer = Endpointer::new(config());
        run(&mut endpointer, &repeat(0.9, 10));
        endpointer.reset();
        assert_eq!(endpointer.frames_seen(), 0);
        assert!(!endpointer.is_speaking());
        assert_eq!(endpointer.last_speech_frame(), None);
    }

    #[test]
    fn detector_frames_input_of_any_length() {
        let mut detector = VoiceActivityDetector::new();
        let mut scores = Vec::new();
        detector.push(&[], &mut scores);
        detector.push(&[0.0; 255], &mut scores);
        assert!(scores.is_empty());
        assert_eq!(detector.buffered_samples(), 255);
        detector.push(&[0.0; 1], &mut scores);
        assert_eq!(scores.len(), 1);
        detector.push(&vec![0.0; 256 * 3 + 10], &mut scores);
        assert_eq!(scores.len(), 4);
        assert_eq!(detector.buffered_samples(), 10);
        detector.reset();
        assert_eq!(detector.buffered_samples(), 0);
    }

    #[test]
    fn detector_scores_do_not_depend_on_chunking() {
        let signal: Vec<f32> = (0..16_000)
            .map(|index| ((index as f32) * 0.37).sin() * 0.3)
            .collect();
        let mut whole = Vec::new();
        VoiceActivityDetector::new().push(&signal, &mut whole);
        let mut chunked = Vec::new();
        let mut detector = VoiceActivityDetector::new();
        for chunk in signal.chunks(7) {
            detector.push(chunk, &mut chunked);
        }
        assert_eq!(whole, chunked);
    }

    #[test]
    fn detector_tolerates_out_of_range_and_nan_samples() {
        let mut detector = VoiceActivityDetector::new();
        let mut scores = Vec::new();
        let wild: Vec<f32> = (0..2_048)
            .map(|index| match index % 4 {
                0 => f32::NAN,
                1 => 5.0,
                2 => f32::NEG_INFINITY,
                _ => 0.1,
            })
            .collect();
        detector.push(&wild, &mut scores);
        detector.push(&vec![0.0; 2_048], &mut scores);
        assert_eq!(scores.len(), 16);
        assert!(
            scores.iter().all(|score| (0.0..=1.0).contains(score)),
            "{scores:?}"
        );
    }

    #[test]
    fn digital_silence_scores_below_half() {
        let mut detector = VoiceActivityDetector::new();
        let mut scores = Vec::new();
        detector.push(&vec![0.0; 16_000 * 3], &mut scores);
        let worst = scores.iter().copied().fold(0.0f32, f32::max);
        println!(
            "digital silence: {} frames, highest score {worst}",
            scores.len()
        );
        assert!(worst < 0.5, "silence scored {worst}");
    }

    /// Frames whose energy is within 20 dB of the loudest frame are taken as "during speech": jfk.wav is a clean
    /// recording, so loud frames are speech.
    #[test]
    fn detector_scores_real_speech_above_half() {
        let Some(audio) = load_jfk() else { return };
        let mut detector = VoiceActivityDetector::new();
        let mut scores = Vec::new();
        detector.push(&audio.samples, &mut scores);
        let frame_energies: Vec<f32> = audio
            .samples
            .chunks_exact(VAD_FRAME_SAMPLES)
            .map(|frame| {
                frame.iter().map(|sample| sample * sample).sum::<f32>() / frame.len() as f32
            })
            .collect();
        assert_eq!(frame_energies.len(), scores.len());
        let loudest = frame_energies.iter().copied().fold(0.0f32, f32::max);
        let loud_frames: Vec<usize> = (0..scores.len())
            .filter(|&index| frame_energies[index] > loudest * 0.01)
            .collect();
        let confident = loud_frames
            .iter()
            .filter(|&&index| scores[index] > 0.5)
            .count();
        let mean_score = scores.iter().sum::<f32>() / scores.len() as f32;
        println!(
            "jfk.wav: {} frames, {} loud, {confident} of them scored > 0.5; mean score {mean_score:.3}",
            scores.len(),
            loud_frames.len()
        );
        assert!(
            confident * 2 > loud_frames.len(),
            "only {confident} of {} loud frames scored above 0.5",
            loud_frames.len()
        );
    }

    #[test]
    fn endpointer_finds_utterances_in_jfk() {
        let Some(audio) = load_jfk() else { return };
        let mut detector = VoiceActivityDetector::new();
        let mut scores = Vec::new();
        detector.push(&audio.samples, &mut scores);
        let mut endpointer = Endpointer::new(EndpointConfig::default());
        let mut utterances = Vec::new();
        let mut events: Vec<EndpointEvent> = scores
            .iter()
            .filter_map(|&score| endpointer.push_score(score))
            .collect();
        events.extend(endpointer.force_end());
        let mut open_start = None;
        for event in events {
            match event {
                EndpointEvent::SpeechStarted { frame } => {
                    assert_eq!(open_start, None, "two starts in a row");
                    open_start = Some(frame);
                }
                EndpointEvent::SpeechEnded { frame } => {
                    let start = open_start.take().expect("end without start");
                    assert!(start < frame);
                    utterances.push((start, frame));
                }
            }
        }
        let total_frames = scores.len() as u64;
        for (start, end) in &utterances {
            println!(
                "utterance: frames {start}..{end} = {:.2}s..{:.2}s",
                frame_start_time(*start).as_secs_f32(),
                frame_start_time(*end).as_secs_f32()
            );
            assert!(*end <= total_frames);
        }
        assert!(!utterances.is_empty(), "no utterance found in jfk.wav");
    }
}
