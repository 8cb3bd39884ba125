//! One stream's recognition state, without I/O: audio in, windows to decode and results out.
//!
//! Audio is resampled to 16 kHz and feeds two things at once: the incremental log-mel front-end
//! and the voice-activity endpointer. An utterance opens when speech starts (with a little
//! pre-roll) and closes after trailing silence, at `max_utterance` (cut at the quietest recent
//! point), on `finalize`, or at the end of the stream. Utterances are contiguous and never
//! overlap, so finals neither lose nor repeat words at their boundaries. While an utterance is
//! open, a partial window is due every `chunk` of new audio. Silence is never decoded.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use earshot_audio::resample::StreamResampler;
use earshot_audio::vad::{
    EndpointConfig, EndpointEvent, Endpointer, VAD_FRAME_SAMPLES, VoiceActivityDetector,
};
use earshot_audio::{AudioError, AudioFormat, TARGET_SAMPLE_RATE, pcm};
use earshot_model::mel::{HOP_LENGTH, LogMelStream};
use earshot_model::{RecognitionRequest, Transcript, WindowKind};

use crate::batcher::Priority;

const SAMPLES_PER_MS: u64 = TARGET_SAMPLE_RATE as u64 / 1000;
/// Audio kept before the detected speech onset: the detector needs a few frames to be sure.
const PRE_ROLL: Duration = Duration::from_millis(200);
/// Audio history kept while nobody speaks.
const IDLE_HISTORY: Duration = Duration::from_millis(1500);
/// Silence kept after the last speech frame so that the model hears the word end.
const TAIL: Duration = Duration::from_millis(150);
/// Where a too-long utterance may be cut: the quietest point in this much recent audio.
const CUT_SEARCH: Duration = Duration::from_secs(3);
/// Finals waiting for the model beyond which the stream stops reading audio (backpressure).
const MAX_PENDING_FINALS: usize = 3;
/// Audio goes through the front-end and the endpointer at most this much at a time, with the
/// max-utterance check after each step: a request of any size is cut exactly like a stream of
/// small ones, so no window grows past `max_utterance` (nor past what the model sees).
const STEP: Duration = Duration::from_millis(100);
const STEP_SAMPLES: usize = (STEP.as_millis() as u64 * SAMPLES_PER_MS) as usize;

/// Per-stream settings, from the engine defaults and the stream's RecognitionConfig.
#[derive(Debug, Clone)]
pub struct SessionSettings {
    pub chunk: Duration,
    pub endpoint_silence: Duration,
    pub max_utterance: Duration,
    pub interim_results: bool,
    pub voice_activity_events: bool,
    pub engine_events: bool,
}

/// What the session tells its client.
#[derive(Debug, Clone, PartialEq)]
pub enum SessionOutput {
    SpeechStarted {
        at: Duration,
    },
    SpeechEnded {
        at: Duration,
    },
    Result(RecognitionResult),
    /// A non-fatal notice; `code` is stable and machine-readable.
    EngineEvent {
        code: &'static str,
        message: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct RecognitionResult {
    pub text: String,
    pub is_final: bool,
    pub confidence: f32,
    pub stability: f32,
    pub start: Duration,
    pub end: Duration,
    pub segment: u32,
    pub words: Vec<ResultWord>,
    pub from_finalize: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultWord {
    pub word: String,
    pub start: Duration,
    pub end: Duration,
    pub confidence: f32,
}

/// A window handed to the model; `finish` needs it back with the transcript.
#[derive(Debug, Clone)]
pub struct DecodeTicket {
    pub priority: Priority,
    segment: u32,
    start_frame: u64,
    end_frame: u64,
    from_finalize: bool,
}

/// A closed utterance waiting for its final decode, in mel frames (10 ms).
#[derive(Debug, Clone)]
struct PendingFinal {
    segment: u32,
    start_frame: u64,
    end_frame: u64,
    from_finalize: bool,
    /// Partials were shown for it, so a final must follow even if the text came out empty.
    partials_sent: bool,
    /// Words of the last partial shown, for the stability of a partial still in flight.
    previous_partial_words: Vec<String>,
}

#[derive(Debug, Clone)]
struct OpenUtterance {
    segment: u32,
    start_frame: u64,
    /// Mel frames covered by the last partial scheduled for it.
    partial_frames_end: u64,
    previous_partial_words: Vec<String>,
    partials_sent: bool,
    /// Tokens of the last partial, and the prefix that the last two partials agreed on. The
    /// next partial takes the agreed prefix as given (local agreement), so its decoder only
    /// runs for the words after it.
    last_partial_tokens: Vec<u32>,
    agreed_tokens: Vec<u32>,
    agreed_probs: Vec<f32>,
}

impl OpenUtterance {
    fn new(segment: u32, start_frame: u64) -> Self {
        Self {
            segment,
            start_frame,
            partial_frames_end: start_frame,
            previous_partial_words: Vec::new(),
            partials_sent: false,
            last_partial_tokens: Vec::new(),
            agreed_tokens: Vec::new(),
            agreed_probs: Vec::new(),
        }
    }

    fn record_partial_tokens(&mut self, tokens: &[u32], probs: &[f32]) {
        let agreed = self
            .last_partial_tokens
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count();
        self.agreed_tokens = tokens[..agreed].to_vec();
        self.agreed_probs = probs.iter().take(agreed).copied().collect();
        self.last_partial_tokens = tokens.to_vec();
    }
}

pub struct Session {
    settings: SessionSettings,
    format: AudioFormat,
    resampler: StreamResampler,
    detector: VoiceActivityDetector,
    endpointer: Endpointer,
    mel: LogMelStream,
    scores: Vec<f32>,
    /// VAD scores of recent frames, to find a cut point.
    recent_scores: VecDeque<(u64, f32)>,
    input_samples: u64,
    samples_16k: u64,
    utterance: Option<OpenUtterance>,
    pending_finals: VecDeque<PendingFinal>,
    next_segment: u32,
    /// Audio before this mel frame belongs to utterances already closed.
    consumed_frame: u64,
    outputs: Vec<SessionOutput>,
    ended: bool,
}

impl Session {
    pub fn new(
        format: AudioFormat,
        settings: SessionSettings,
        mel_filters: Arc<[f32]>,
        n_mels: usize,
    ) -> Result<Self, AudioError> {
        let endpoint_config = EndpointConfig {
            endpoint_silence: settings.endpoint_silence,
            ..EndpointConfig::default()
        };
        endpoint_config.validate()?;
        Ok(Self {
            resampler: StreamResampler::new(format.sample_rate)?,
            detector: VoiceActivityDetector::new(),
            endpointer: Endpointer::new(endpoint_config),
            mel: LogMelStream::new(mel_filters, n_mels),
            scores: Vec::new(),
            recent_scores: VecDeque::new(),
            input_samples: 0,
            samples_16k: 0,
            utterance: None,
            pending_finals: VecDeque::new(),
            next_segment: 0,
            consumed_frame: 0,
            outputs: Vec::new(),
            ended: false,
            settings,
            format,
        })
    }

    /// Audio received so far, at the client's rate.
    pub fn audio_duration(&self) -> Duration {
        Duration::from_secs_f64(self.input_samples as f64 / f64::from(self.format.sample_rate))
    }

    /// Decodes and consumes one request's audio bytes.
    pub fn push_audio(&mut self, bytes: &[u8]) -> Result<(), AudioError> {
        let samples = self.decode(bytes)?;
        self.push_samples(&samples);
        Ok(())
    }

    /// One request's audio bytes as samples at the client's rate, for [`Session::push_samples`].
    pub fn decode(&self, bytes: &[u8]) -> Result<Vec<f32>, AudioError> {
        pcm::decode_samples(bytes, self.format.encoding)
    }

    /// Samples at the client's rate per second: a caller pushing a large request in pieces sizes
    /// them with this.
    pub fn input_rate(&self) -> u32 {
        self.format.sample_rate
    }

    /// Consumes decoded samples: resampling, endpointing and the max-utterance cut, in
    /// [`STEP`]s. Pushing a request's samples in several pieces gives the same result as at once.
    pub fn push_samples(&mut self, samples: &[f32]) {
        if self.ended || samples.is_empty() {
            return;
        }
        self.input_samples += samples.len() as u64;
        let resampled = self.resampler.process(samples);
        self.consume_16k(&resampled);
    }

    fn consume_16k(&mut self, samples: &[f32]) {
        for step in samples.chunks(STEP_SAMPLES) {
            self.consume_step(step);
        }
    }

    /// At most [`STEP`] of audio: endpointing, then the max-utterance cut.
    fn consume_step(&mut self, samples: &[f32]) {
        if samples.is_empty() {
            return;
        }
        self.samples_16k += samples.len() as u64;
        self.mel.push(samples);
        self.scores.clear();
        self.detector.push(samples, &mut self.scores);
        let scores = std::mem::take(&mut self.scores);
        for &score in &scores {
            let frame = self.endpointer.frames_seen();
            self.recent_scores.push_back((frame, score));
            if let Some(event) = self.endpointer.push_score(score) {
                self.on_endpoint(event);
            }
        }
        self.scores = scores;
        let keep_vad_frames = duration_to_vad_frames(CUT_SEARCH) + 1;
        while self.recent_scores.len() as u64 > keep_vad_frames {
            self.recent_scores.pop_front();
        }
        self.cut_if_too_long();
        self.discard_unneeded_audio();
    }

    fn on_endpoint(&mut self, event: EndpointEvent) {
        match event {
            EndpointEvent::SpeechStarted { frame } => {
                let onset = vad_frame_to_mel_frame(frame);
                let start = onset
                    .saturating_sub(duration_to_mel_frames(PRE_ROLL))
                    .max(self.consumed_frame);
                self.utterance = Some(OpenUtterance::new(self.next_segment, start));
                self.next_segment += 1;
                self.emit_voice_event(SessionOutput::SpeechStarted {
                    at: mel_frames_to_duration(onset),
                });
            }
            EndpointEvent::SpeechEnded { frame } => {
                let end = vad_frame_to_mel_frame(frame) + duration_to_mel_frames(TAIL);
                self.close_utterance(end, false);
                self.emit_voice_event(SessionOutput::SpeechEnded {
                    at: mel_frames_to_duration(vad_frame_to_mel_frame(frame)),
                });
            }
        }
    }

    fn emit_voice_event(&mut self, event: SessionOutput) {
        if self.settings.voice_activity_events {
            self.outputs.push(event);
        }
    }

    /// Closes the open utterance at `end_frame` (clamped to the audio heard) and queues its final.
    fn close_utterance(&mut self, end_frame: u64, from_finalize: bool) -> bool {
        let Some(utterance) = self.utterance.take() else {
            return false;
        };
        let end_frame = end_frame.clamp(utterance.start_frame, self.heard_frames());
        self.consumed_frame = end_frame;
        self.pending_finals.push_back(PendingFinal {
            segment: utterance.segment,
            start_frame: utterance.start_frame,
            end_frame,
            from_finalize,
            partials_sent: utterance.partials_sent,
            previous_partial_words: utterance.previous_partial_words,
        });
        true
    }

    /// Mel frames whose centre lies in audio already received.
    fn heard_frames(&self) -> u64 {
        self.samples_16k / HOP_LENGTH as u64
    }

    /// Runs after every step. It cuts once the next step could take the utterance past
    /// `max_utterance`, and never later than `max_utterance` after its start: closed by
    /// silence, a cut, `finalize` or the end of the stream, no utterance is ever longer.
    fn cut_if_too_long(&mut self) {
        let Some(utterance) = &self.utterance else {
            return;
        };
        let heard = self.heard_frames();
        let max_frames = duration_to_mel_frames(self.settings.max_utterance);
        let length = heard.saturating_sub(utterance.start_frame);
        if length + duration_to_mel_frames(STEP) <= max_frames {
            return;
        }
        // Cut in the quietest recent frame, but leave at least a second in the utterance.
        let earliest = utterance.start_frame + duration_to_mel_frames(Duration::from_secs(1));
        let latest = (utterance.start_frame + max_frames).min(heard);
        let cut = self
            .recent_scores
            .iter()
            .map(|&(frame, score)| (vad_frame_to_mel_frame(frame) + 1, score))
            .filter(|&(mel_frame, _)| {
                mel_frame > earliest && mel_frame < heard && mel_frame <= latest
            })
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(latest, |(mel_frame, _)| mel_frame);
        let segment = utterance.segment;
        tracing::debug!(
            segment,
            cut_frame = cut,
            "utterance reached max length; cutting"
        );
        if self.settings.engine_events {
            self.outputs.push(SessionOutput::EngineEvent {
                code: "utterance_split",
                message: format!(
                    "speech went on for {:?} without a pause; segment {segment} was cut at {:?}",
                    self.settings.max_utterance,
                    mel_frames_to_duration(cut)
                ),
            });
        }
        self.close_utterance(cut, false);
        // Speech goes on: the next utterance starts exactly at the cut.
        self.utterance = Some(OpenUtterance::new(self.next_segment, cut));
        self.next_segment += 1;
    }

    /// Turns everything heard so far into a final now. Always answered by a final carrying
    /// `from_finalize`, with empty text when there was nothing to say.
    pub fn finalize(&mut self) {
        let heard = self.heard_frames();
        if let Some(EndpointEvent::SpeechEnded { frame }) = self.endpointer.force_end() {
            self.emit_voice_event(SessionOutput::SpeechEnded {
                at: mel_frames_to_duration(vad_frame_to_mel_frame(frame)),
            });
        }
        if !self.close_utterance(heard, true) {
            // Nothing open: answer with an empty final once the queued ones are out.
            self.pending_finals.push_back(PendingFinal {
                segment: self.next_segment,
                start_frame: heard,
                end_frame: heard,
                from_finalize: true,
                partials_sent: false,
                previous_partial_words: Vec::new(),
            });
            self.next_segment += 1;
        }
    }

    /// No more audio: flushes the resampler and the front-end and closes any open utterance.
    pub fn end_of_stream(&mut self) {
        if self.ended {
            return;
        }
        let tail = self.resampler.flush();
        self.consume_16k(&tail);
        self.mel.flush();
        self.ended = true;
        if let Some(EndpointEvent::SpeechEnded { frame }) = self.endpointer.force_end() {
            self.emit_voice_event(SessionOutput::SpeechEnded {
                at: mel_frames_to_duration(vad_frame_to_mel_frame(frame)),
            });
        }
        let heard = self.heard_frames();
        self.close_utterance(heard, false);
    }

    /// Too many finals are waiting for the model: stop reading audio until they drain.
    pub fn is_backlogged(&self) -> bool {
        self.pending_finals.len() >= MAX_PENDING_FINALS
    }

    /// Nothing left to decode (after `end_of_stream`, the stream may end).
    pub fn is_drained(&self) -> bool {
        self.pending_finals.is_empty() && self.utterance.is_none()
    }

    pub fn take_outputs(&mut self) -> Vec<SessionOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// The next window to decode, if one is due: the oldest closed utterance first, else a
    /// partial of the open utterance once `chunk` of new audio has arrived.
    pub fn next_window(&mut self) -> Option<(DecodeTicket, Option<RecognitionRequest>)> {
        if let Some(pending) = self.pending_finals.front() {
            let ticket = DecodeTicket {
                priority: Priority::Final,
                segment: pending.segment,
                start_frame: pending.start_frame,
                end_frame: pending.end_frame,
                from_finalize: pending.from_finalize,
            };
            // Finals decode freely: they must not inherit a partial's mistakes.
            let request = (pending.end_frame > pending.start_frame).then(|| {
                RecognitionRequest::new(
                    self.mel.raw_frames(pending.start_frame, pending.end_frame),
                    WindowKind::Final,
                )
            });
            return Some((ticket, request));
        }
        if !self.settings.interim_results {
            return None;
        }
        let computed = self.mel.frames_computed();
        let utterance = self.utterance.as_mut()?;
        if computed < utterance.partial_frames_end + duration_to_mel_frames(self.settings.chunk) {
            return None;
        }
        utterance.partial_frames_end = computed;
        let ticket = DecodeTicket {
            priority: Priority::Partial,
            segment: utterance.segment,
            start_frame: utterance.start_frame,
            end_frame: computed,
            from_finalize: false,
        };
        let request = RecognitionRequest {
            raw_log_mel: self.mel.raw_frames(utterance.start_frame, computed),
            kind: WindowKind::Partial,
            prefix_tokens: utterance.agreed_tokens.clone(),
            prefix_probs: utterance.agreed_probs.clone(),
        };
        Some((ticket, Some(request)))
    }

    /// Takes the model's answer for `ticket` (None for an empty window).
    pub fn finish(&mut self, ticket: DecodeTicket, transcript: Option<Transcript>) {
        let transcript = transcript
            .filter(|t| !t.is_probably_silence())
            .unwrap_or_default();
        match ticket.priority {
            Priority::Final => self.finish_final(ticket, transcript),
            Priority::Partial => self.finish_partial(ticket, transcript),
        }
        self.discard_unneeded_audio();
    }

    fn finish_final(&mut self, ticket: DecodeTicket, transcript: Transcript) {
        let Some(pending) = self.pending_finals.pop_front() else {
            return;
        };
        debug_assert_eq!(pending.segment, ticket.segment);
        if transcript.stopped_by_loop_guard && self.settings.engine_events {
            self.outputs.push(SessionOutput::EngineEvent {
                code: "repetition_removed",
                message: format!(
                    "the model repeated itself in segment {}; the repeats were removed",
                    ticket.segment
                ),
            });
        }
        if transcript.text.is_empty() && !pending.from_finalize && !pending.partials_sent {
            return;
        }
        let start = mel_frames_to_duration(ticket.start_frame);
        let words = transcript
            .words
            .into_iter()
            .map(|word| ResultWord {
                word: word.word,
                start: start + word.start,
                end: start + word.end,
                confidence: word.confidence,
            })
            .collect();
        self.outputs.push(SessionOutput::Result(RecognitionResult {
            text: transcript.text,
            is_final: true,
            confidence: transcript.confidence,
            stability: 1.0,
            start,
            end: mel_frames_to_duration(ticket.end_frame),
            segment: ticket.segment,
            words,
            from_finalize: ticket.from_finalize,
        }));
    }

    fn finish_partial(&mut self, ticket: DecodeTicket, transcript: Transcript) {
        if transcript.text.is_empty() {
            return;
        }
        // The utterance may have closed while this partial was decoded; its final has not been
        // decoded yet (one window in flight per stream), so the partial still comes first.
        let (previous_words, partials_sent) = match self
            .utterance
            .as_mut()
            .filter(|u| u.segment == ticket.segment)
        {
            Some(open) => {
                open.record_partial_tokens(&transcript.tokens, &transcript.token_probs);
                (&mut open.previous_partial_words, &mut open.partials_sent)
            }
            None => match self
                .pending_finals
                .iter_mut()
                .find(|p| p.segment == ticket.segment)
            {
                Some(pending) => (
                    &mut pending.previous_partial_words,
                    &mut pending.partials_sent,
                ),
                // Its final is out: finals are never followed by their partials.
                None => return,
            },
        };
        let words: Vec<String> = transcript
            .text
            .split_whitespace()
            .map(normalise_word)
            .collect();
        let stability = prefix_agreement(previous_words, &words);
        *previous_words = words;
        *partials_sent = true;
        self.outputs.push(SessionOutput::Result(RecognitionResult {
            text: transcript.text,
            is_final: false,
            confidence: transcript.confidence,
            stability,
            start: mel_frames_to_duration(ticket.start_frame),
            end: mel_frames_to_duration(ticket.end_frame),
            segment: ticket.segment,
            words: Vec::new(),
            from_finalize: false,
        }));
    }

    /// Keeps only the log-mel frames still needed: bounded memory however long the stream.
    fn discard_unneeded_audio(&mut self) {
        let needed_from = self
            .pending_finals
            .front()
            .map(|p| p.start_frame)
            .or_else(|| self.utterance.as_ref().map(|u| u.start_frame))
            .unwrap_or_else(|| {
                // Idle: keep enough history for the pre-roll of a speech onset that the
                // detector confirms only after `min_speech`.
                self.heard_frames()
                    .saturating_sub(duration_to_mel_frames(IDLE_HISTORY))
            });
        self.mel.discard_before(needed_from);
    }
}

/// Fraction of `current`'s words that the previous partial already had, in order, at its start.
fn prefix_agreement(previous: &[String], current: &[String]) -> f32 {
    if current.is_empty() {
        return 0.0;
    }
    let common = previous
        .iter()
        .zip(current)
        .take_while(|(a, b)| a == b)
        .count();
    common as f32 / current.len() as f32
}

fn normalise_word(word: &str) -> String {
    word.chars()
        .filter(|c| c.is_alphanumeric() || *c == '\'')
        .flat_map(char::to_lowercase)
        .collect()
}

fn vad_frame_to_mel_frame(frame: u64) -> u64 {
    frame * VAD_FRAME_SAMPLES as u64 / HOP_LENGTH as u64
}

fn duration_to_mel_frames(duration: Duration) -> u64 {
    duration.as_millis() as u64 * SAMPLES_PER_MS / HOP_LENGTH as u64
}

fn duration_to_vad_frames(duration: Duration) -> u64 {
    duration.as_millis() as u64 * SAMPLES_PER_MS / VAD_FRAME_SAMPLES as u64
}

fn mel_frames_to_duration(frames: u64) -> Duration {
    Duration::from_millis(frames * HOP_LENGTH as u64 / SAMPLES_PER_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use earshot_audio::Encoding;
    use earshot_model::mel::mel_filters;

    const N_MELS: usize = 80;

    fn settings() -> SessionSettings {
        SessionSettings {
            chunk: Duration::from_millis(300),
            endpoint_silence: Duration::from_millis(500),
            max_utterance: Duration::from_secs(15),
            interim_results: true,
            voice_activity_events: true,
            engine_events: true,
        }
    }

    fn session(settings: SessionSettings) -> Session {
        let format = AudioFormat {
            sample_rate: 16_000,
            encoding: Encoding::PcmInt16,
        };
        Session::new(format, settings, Arc::from(mel_filters(N_MELS)), N_MELS).unwrap()
    }

    fn jfk() -> Vec<f32> {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/fixtures/speech/wav/jfk.wav");
        earshot_audio::wav::read_wav(&path).unwrap().samples
    }

    /// Answers every due window at once with a deterministic text naming its length in frames.
    fn answer_all(session: &mut Session) -> Vec<DecodeTicket> {
        let mut answered = Vec::new();
        while let Some((ticket, request)) = session.next_window() {
            let transcript = request.map(|request| Transcript {
                text: format!("window of {} frames", request.raw_log_mel.len() / N_MELS),
                confidence: 0.9,
                ..Default::default()
            });
            answered.push(ticket.clone());
            session.finish(ticket, transcript);
        }
        answered
    }

    /// Streams `samples` in 100 ms chunks, answering windows as they come due.
    fn stream(session: &mut Session, samples: &[f32]) -> Vec<DecodeTicket> {
        let mut answered = Vec::new();
        for chunk in samples.chunks(1600) {
            session.push_audio(&pcm::encode_pcm16(chunk)).unwrap();
            answered.extend(answer_all(session));
        }
        answered
    }

    fn results(outputs: &[SessionOutput]) -> Vec<&RecognitionResult> {
        outputs
            .iter()
            .filter_map(|o| match o {
                SessionOutput::Result(r) => Some(r),
                _ => None,
            })
            .collect()
    }

    fn finals(outputs: &[SessionOutput]) -> Vec<&RecognitionResult> {
        results(outputs)
            .into_iter()
            .filter(|r| r.is_final)
            .collect()
    }

    #[test]
    fn silence_is_never_decoded() {
        let mut session = session(settings());
        let answered = stream(&mut session, &vec![0.0; 16_000 * 5]);
        session.end_of_stream();
        assert!(answer_all(&mut session).is_empty());
        assert!(answered.is_empty());
        assert!(session.is_drained());
        assert!(session.take_outputs().is_empty());
    }

    #[test]
    fn speech_gets_partials_then_contiguous_finals() {
        let mut session = session(settings());
        let mut audio = jfk();
        audio.extend(vec![0.0; 16_000]);
        let answered = stream(&mut session, &audio);
        session.end_of_stream();
        answer_all(&mut session);
        let outputs = session.take_outputs();
        let results = results(&outputs);
        let finals: Vec<_> = results.iter().filter(|r| r.is_final).collect();
        assert!(finals.len() >= 2, "jfk.wav has pauses: {finals:?}");
        for pair in finals.windows(2) {
            assert!(pair[1].start >= pair[0].end, "finals overlap: {pair:?}");
            assert!(pair[1].segment > pair[0].segment);
        }
        assert!(finals[0].start < Duration::from_millis(600));
        assert!(finals.last().unwrap().end > Duration::from_millis(10_000));
        // Every final was preceded by at least one partial of its segment.
        for final_result in &finals {
            assert!(
                results
                    .iter()
                    .any(|r| !r.is_final && r.segment == final_result.segment),
                "no partial for segment {}",
                final_result.segment
            );
        }
        // Partials of one utterance grow by at least one chunk each time.
        let partial_ends: Vec<_> = answered
            .iter()
            .filter(|t| t.priority == Priority::Partial)
            .collect();
        for pair in partial_ends.windows(2) {
            if pair[0].segment == pair[1].segment {
                assert!(pair[1].end_frame >= pair[0].end_frame + 30);
            }
        }
        let started = outputs
            .iter()
            .filter(|o| matches!(o, SessionOutput::SpeechStarted { .. }))
            .count();
        let ended = outputs
            .iter()
            .filter(|o| matches!(o, SessionOutput::SpeechEnded { .. }))
            .count();
        assert_eq!(started, ended);
        assert_eq!(started, finals.len());
    }

    #[test]
    fn long_speech_is_cut_at_max_utterance_without_gaps() {
        let mut session = session(SessionSettings {
            max_utterance: Duration::from_secs(2),
            endpoint_silence: Duration::from_millis(2000),
            ..settings()
        });
        stream(&mut session, &jfk());
        session.end_of_stream();
        answer_all(&mut session);
        let outputs = session.take_outputs();
        let finals = finals(&outputs);
        assert!(finals.len() >= 4, "{finals:?}");
        assert!(outputs.iter().any(
            |o| matches!(o, SessionOutput::EngineEvent { code, .. } if *code == "utterance_split")
        ));
        for result in &finals {
            assert!(
                result.end - result.start <= Duration::from_secs(2),
                "{result:?}"
            );
        }
    }

    /// Like [`answer_all`], checking that no window handed to the model is over `max_frames`.
    fn answer_all_within(session: &mut Session, max_frames: u64) {
        while let Some((ticket, request)) = session.next_window() {
            let transcript = request.map(|request| {
                let frames = request.raw_log_mel.len() / N_MELS;
                assert!(frames as u64 <= max_frames, "a window of {frames} frames");
                Transcript {
                    text: format!("window of {frames} frames"),
                    confidence: 0.9,
                    ..Default::default()
                }
            });
            session.finish(ticket, transcript);
        }
    }

    fn final_spans(session: &mut Session) -> Vec<(Duration, Duration, u32)> {
        finals(&session.take_outputs())
            .iter()
            .map(|r| (r.start, r.end, r.segment))
            .collect()
    }

    #[test]
    fn one_huge_request_is_cut_like_a_stream_and_loses_no_audio() {
        let settings = SessionSettings {
            max_utterance: Duration::from_secs(5),
            // Longer than any pause in the recording: only cuts end its utterances.
            endpoint_silence: Duration::from_millis(5000),
            ..settings()
        };
        let max_frames = duration_to_mel_frames(settings.max_utterance);
        let mut audio = Vec::new();
        while audio.len() < 16_000 * 40 {
            audio.extend(jfk());
        }
        let audio_end = Duration::from_millis(audio.len() as u64 / SAMPLES_PER_MS);

        let mut whole = session(settings.clone());
        whole.push_audio(&pcm::encode_pcm16(&audio)).unwrap();
        answer_all_within(&mut whole, max_frames);
        whole.end_of_stream();
        answer_all_within(&mut whole, max_frames);
        let whole_finals = final_spans(&mut whole);

        let mut streamed = session(settings.clone());
        stream(&mut streamed, &audio);
        streamed.end_of_stream();
        answer_all(&mut streamed);
        assert_eq!(whole_finals, final_spans(&mut streamed));

        assert!(whole_finals.len() >= 8, "{whole_finals:?}");
        for &(start, end, segment) in &whole_finals {
            assert!(
                end - start <= settings.max_utterance,
                "segment {segment} runs from {start:?} to {end:?}"
            );
        }
        // Contiguous from the first onset to the very end: not a sample of speech is lost.
        assert!(
            whole_finals[0].0 < Duration::from_secs(1),
            "{whole_finals:?}"
        );
        for pair in whole_finals.windows(2) {
            assert_eq!(pair[1].0, pair[0].1, "a gap between segments: {pair:?}");
        }
        assert_eq!(whole_finals.last().unwrap().1, audio_end);
    }

    #[test]
    fn finalize_without_speech_is_answered_by_an_empty_final() {
        let mut session = session(settings());
        stream(&mut session, &vec![0.0; 16_000]);
        session.finalize();
        answer_all(&mut session);
        let outputs = session.take_outputs();
        let results = results(&outputs);
        assert_eq!(results.len(), 1);
        assert!(results[0].is_final && results[0].from_finalize && results[0].text.is_empty());
    }

    #[test]
    fn finalize_mid_speech_closes_the_utterance_at_once() {
        let mut session = session(settings());
        stream(&mut session, &jfk()[..16_000 * 5]);
        session.take_outputs();
        session.finalize();
        answer_all(&mut session);
        let outputs = session.take_outputs();
        let finals = finals(&outputs);
        let answer = finals.last().expect("a final");
        assert!(answer.from_finalize);
        assert!(!answer.text.is_empty());
        assert!(answer.end >= Duration::from_millis(4_900));
    }

    #[test]
    fn a_partial_decoded_while_its_utterance_closed_still_precedes_the_final() {
        let mut session = session(settings());
        let held = hold_first_partial(&mut session);
        session.finalize();
        session.take_outputs();
        session.finish(held, Some(late_transcript()));
        answer_all(&mut session);
        let outputs = session.take_outputs();
        let results = results(&outputs);
        assert_eq!(results.len(), 2, "{results:?}");
        assert!(!results[0].is_final && results[0].text == "late");
        assert!(results[1].is_final);
    }

    #[test]
    fn a_partial_arriving_after_its_final_is_dropped() {
        let mut session = session(settings());
        let held = hold_first_partial(&mut session);
        session.finalize();
        answer_all(&mut session);
        session.take_outputs();
        session.finish(held, Some(late_transcript()));
        assert!(results(&session.take_outputs()).is_empty());
    }

    /// Speaks until a partial is due and returns its ticket unanswered.
    fn hold_first_partial(session: &mut Session) -> DecodeTicket {
        for chunk in jfk().chunks(1600) {
            session.push_audio(&pcm::encode_pcm16(chunk)).unwrap();
            if let Some((ticket, _)) = session.next_window() {
                assert_eq!(ticket.priority, Priority::Partial);
                return ticket;
            }
        }
        panic!("no partial came due")
    }

    fn late_transcript() -> Transcript {
        Transcript {
            text: "late".into(),
            ..Default::default()
        }
    }

    #[test]
    fn unanswered_finals_make_the_stream_stop_reading() {
        let mut session = session(settings());
        let audio = jfk();
        for _ in 0..MAX_PENDING_FINALS {
            for chunk in audio[..16_000 * 2].chunks(1600) {
                session.push_audio(&pcm::encode_pcm16(chunk)).unwrap();
            }
            session.finalize();
        }
        assert!(session.is_backlogged());
        answer_all(&mut session);
        assert!(!session.is_backlogged());
    }

    #[test]
    fn memory_stays_bounded_over_a_long_silence() {
        let mut session = session(settings());
        let chunk = pcm::encode_pcm16(&[0.0; 1600]);
        for _ in 0..10 * 60 * 10 {
            session.push_audio(&chunk).unwrap();
        }
        let retained = session.mel.frames_computed() - session.mel.first_retained_frame();
        assert!(
            retained <= duration_to_mel_frames(IDLE_HISTORY) + 10,
            "{retained}"
        );
    }

    #[test]
    fn rejects_audio_that_is_not_whole_samples() {
        let mut session = session(settings());
        assert!(session.push_audio(&[0, 0, 0]).is_err());
    }

    #[test]
    fn stability_is_the_share_of_words_already_agreed() {
        let words = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(prefix_agreement(&[], &words("hello world")), 0.0);
        assert_eq!(
            prefix_agreement(&words("hello world"), &words("hello world again")),
            2.0 / 3.0
        );
        assert_eq!(
            prefix_agreement(&words("hello there"), &words("hello world")),
            0.5
        );
    }

    #[test]
    fn frame_conversions_round_trip() {
        assert_eq!(duration_to_mel_frames(Duration::from_millis(300)), 30);
        assert_eq!(mel_frames_to_duration(30), Duration::from_millis(300));
        assert_eq!(vad_frame_to_mel_frame(10), 16);
        assert_eq!(duration_to_vad_frames(Duration::from_millis(160)), 10);
    }

    #[test]
    fn word_normalisation_ignores_case_and_punctuation() {
        assert_eq!(normalise_word("Hello,"), "hello");
        assert_eq!(normalise_word("don't"), "don't");
    }
}
