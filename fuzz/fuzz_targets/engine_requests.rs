//! One engine stream driven by a sequence of `StreamingRecognizeRequest`s, as the service drives
//! it: the first request's checks (session_id, audio_config, recognition_config), then audio,
//! `finalize` and misplaced configs, with at most one window in flight, answered at times the
//! input chooses by a fake recogniser, until the half-close drains the stream.
//!
//! Checked: no panic (debug assertions on); refusals are INVALID_ARGUMENT with short one-line
//! messages; finals have strictly increasing segments and never overlap or exceed
//! `max_utterance`; no partial follows its final; every `finalize` is answered by exactly one
//! final; nothing claims audio that was not sent; a backlogged stream always has a window to
//! decode (else the service would wait forever); the drained stream holds nothing.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use earshot_audio::{AudioFormat, Encoding, pcm};
use earshot_engine::EngineConfig;
use earshot_engine::batcher::Priority;
use earshot_engine::service::fuzzing::{check_later_request, open_stream};
use earshot_engine::session::{DecodeTicket, RecognitionResult, Session, SessionOutput};
use earshot_model::mel::mel_filters;
use earshot_model::{RecognitionRequest, Transcript, WindowKind, WordTiming};
use earshot_proto::{AudioConfig, RecognitionConfig, StreamingRecognizeRequest};
use libfuzzer_sys::fuzz_target;

/// whisper-tiny.en's mel bins.
const N_MELS: usize = 80;
/// Audio generated per input at most, so that one run stays well under a second.
const MAX_AUDIO: Duration = Duration::from_secs(30);
const MAX_PIECE_MS: u16 = 6_000;
const COMMON_RATES: [i32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

fn filters() -> Arc<[f32]> {
    static FILTERS: OnceLock<Arc<[f32]>> = OnceLock::new();
    FILTERS
        .get_or_init(|| Arc::from(mel_filters(N_MELS)))
        .clone()
}

/// Real speech (16 kHz), so that utterances open, get partials, close and get cut.
fn speech() -> &'static [f32] {
    static SPEECH: OnceLock<Vec<f32>> = OnceLock::new();
    SPEECH.get_or_init(|| {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/speech/wav/jfk.wav"
        );
        earshot_audio::wav::read_wav(std::path::Path::new(path))
            .expect("the speech fixture")
            .samples
    })
}

#[derive(Arbitrary, Debug)]
struct Input {
    /// The engine's `--max-utterance`, 2 to 28 s.
    max_utterance_secs: u8,
    first: FirstRequest,
    steps: Vec<Step>,
    /// Half-close at the end (else the client just stops).
    half_close: bool,
}

#[derive(Arbitrary, Debug)]
struct FirstRequest {
    session_id: SessionId,
    audio_config: Option<AudioConfigChoice>,
    recognition_config: Option<RecognitionConfigChoice>,
    audio: Audio,
    finalize: bool,
}

#[derive(Arbitrary, Debug)]
enum SessionId {
    Unset,
    Plain(u16),
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct AudioConfigChoice {
    sample_rate: Rate,
    channels: Channels,
    encoding: EncodingName,
}

#[derive(Arbitrary, Debug)]
enum Rate {
    Common(u8),
    Supported(u16),
    Any(i32),
}

#[derive(Arbitrary, Debug)]
enum Channels {
    Unset,
    Mono,
    Any(i32),
}

#[derive(Arbitrary, Debug)]
enum EncodingName {
    Unset,
    Int16,
    Float32,
    LowerCase(bool),
    Any(String),
}

#[derive(Arbitrary, Debug)]
struct RecognitionConfigChoice {
    chunk_ms: Millis,
    endpoint_ms: Millis,
    interim_results: Option<bool>,
    voice_activity_events: bool,
    language: Language,
    engine_events: bool,
}

#[derive(Arbitrary, Debug)]
enum Millis {
    Unset,
    /// Inside the allowed range.
    Allowed(u16),
    Any(i32),
}

#[derive(Arbitrary, Debug)]
enum Language {
    Unset,
    English,
    Any(String),
}

#[derive(Arbitrary, Debug)]
enum Audio {
    None,
    /// Whatever bytes, possibly not whole samples (the stream then ends with INVALID_ARGUMENT).
    Bytes(Vec<u8>),
    Speech {
        offset_ms: u16,
        length_ms: u16,
    },
    Silence {
        length_ms: u16,
    },
    Tone {
        hz: u16,
        amplitude: u8,
        length_ms: u16,
    },
    Noise {
        seed: u32,
        amplitude: u8,
        length_ms: u16,
    },
}

#[derive(Arbitrary, Debug)]
enum Step {
    Request {
        audio: Audio,
        finalize: bool,
        misplaced_config: MisplacedConfig,
    },
    /// The model answers the window in flight.
    Answer,
}

#[derive(Arbitrary, Debug)]
enum MisplacedConfig {
    None,
    Audio,
    Recognition,
}

/// Renders audio descriptions as the bytes a client would send.
struct AudioSource {
    rate: u32,
    encoding: Encoding,
    generated: Duration,
}

impl AudioSource {
    fn bytes(&mut self, audio: &Audio) -> Vec<u8> {
        let (length_ms, sample): (u16, Box<dyn Fn(usize) -> f32>) = match audio {
            Audio::None => return Vec::new(),
            Audio::Bytes(bytes) => return bytes.clone(),
            Audio::Speech {
                offset_ms,
                length_ms,
            } => {
                let speech = speech();
                let offset = usize::from(*offset_ms) * 16 % speech.len();
                let rate = self.rate as usize;
                // The recording at the client's rate, by nearest sample: pitch and timing kept.
                let sample =
                    move |index: usize| speech[(offset + index * 16_000 / rate) % speech.len()];
                (*length_ms, Box::new(sample))
            }
            Audio::Silence { length_ms } => (*length_ms, Box::new(|_| 0.0)),
            Audio::Tone {
                hz,
                amplitude,
                length_ms,
            } => {
                let (hz, amplitude, rate) = (
                    f32::from(*hz),
                    f32::from(*amplitude) / 255.0,
                    self.rate as f32,
                );
                let sample = move |index: usize| {
                    amplitude * (std::f32::consts::TAU * hz * index as f32 / rate).sin()
                };
                (*length_ms, Box::new(sample))
            }
            Audio::Noise {
                seed,
                amplitude,
                length_ms,
            } => {
                let (seed, amplitude) = (*seed, f32::from(*amplitude) / 255.0);
                let sample = move |index: usize| {
                    // A counter hashed (xorshift-multiply): deterministic white noise.
                    let mut x = (index as u32).wrapping_mul(0x9E37_79B9) ^ seed;
                    x ^= x >> 16;
                    x = x.wrapping_mul(0x85EB_CA6B);
                    x ^= x >> 13;
                    amplitude * (x as f32 / u32::MAX as f32 * 2.0 - 1.0)
                };
                (*length_ms, Box::new(sample))
            }
        };
        let wanted = Duration::from_millis(u64::from(length_ms % MAX_PIECE_MS));
        let length = wanted.min(MAX_AUDIO.saturating_sub(self.generated));
        self.generated += length;
        let n_samples = (length.as_secs_f64() * f64::from(self.rate)) as usize;
        let samples: Vec<f32> = (0..n_samples).map(sample).collect();
        match self.encoding {
            Encoding::PcmInt16 => pcm::encode_pcm16(&samples),
            Encoding::Float32 => pcm::encode_f32(&samples),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let defaults = EngineConfig {
        max_utterance: Duration::from_secs(2 + u64::from(input.max_utterance_secs % 27)),
        ..EngineConfig::default()
    };
    defaults.validate().expect("valid engine settings");

    let first = first_request(&input.first);
    // The format the client declared, to render its audio in (16 kHz PCM if it declared nonsense,
    // which the engine refuses anyway).
    let format = first
        .audio_config
        .as_ref()
        .and_then(|c| AudioFormat::from_declared(c.sample_rate, c.channels, &c.encoding).ok())
        .unwrap_or(AudioFormat {
            sample_rate: 16_000,
            encoding: Encoding::PcmInt16,
        });
    let mut source = AudioSource {
        rate: format.sample_rate,
        encoding: format.encoding,
        generated: Duration::ZERO,
    };
    let first = StreamingRecognizeRequest {
        audio_content: source.bytes(&input.first.audio),
        ..first
    };

    let (session_id, session) = match open_stream(&defaults, filters(), N_MELS, &first) {
        Ok(opened) => opened,
        Err(status) => {
            check_refusal(&status);
            return;
        }
    };
    if first.session_id.is_empty() {
        assert_eq!(session_id.len(), 36, "a generated id: {session_id:?}");
    } else {
        assert_eq!(session_id, first.session_id);
    }
    let settings = first.recognition_config.clone().unwrap_or_default();
    let mut stream = Stream {
        session,
        in_flight: None,
        checker: Checker {
            max_utterance: defaults.max_utterance,
            max_window_frames: defaults.max_utterance.as_millis() as usize / 10,
            interim_results: settings.interim_results.unwrap_or(true),
            voice_activity_events: settings.voice_activity_events,
            engine_events: settings.engine_events,
            finalizes: 0,
            finals_from_finalize: 0,
            last_segment: None,
            last_final: None,
            speaking: false,
            last_voice_event: Duration::ZERO,
        },
    };

    if !stream.push(&first.audio_content, first.finalize) {
        return;
    }
    stream.schedule();
    for step in &input.steps {
        match step {
            Step::Answer => stream.answer(),
            Step::Request {
                audio,
                finalize,
                misplaced_config,
            } => {
                // The service stops reading while the stream is backlogged.
                while stream.session.is_backlogged() {
                    assert!(
                        stream.in_flight.is_some(),
                        "backlogged with no window to decode: the stream would stall"
                    );
                    stream.answer();
                    stream.schedule();
                }
                let request = StreamingRecognizeRequest {
                    audio_content: source.bytes(audio),
                    finalize: *finalize,
                    audio_config: matches!(misplaced_config, MisplacedConfig::Audio)
                        .then(AudioConfig::default),
                    recognition_config: matches!(misplaced_config, MisplacedConfig::Recognition)
                        .then(RecognitionConfig::default),
                    ..Default::default()
                };
                match check_later_request(&request) {
                    Ok(()) => assert!(request.audio_config.is_none()),
                    Err(status) => {
                        check_refusal(&status);
                        return;
                    }
                }
                if !stream.push(&request.audio_content, request.finalize) {
                    return;
                }
            }
        }
        stream.schedule();
    }
    if !input.half_close {
        return;
    }
    stream.session.end_of_stream();
    stream.collect_outputs();
    loop {
        stream.schedule();
        if stream.in_flight.is_none() {
            break;
        }
        stream.answer();
    }
    assert!(
        stream.session.is_drained(),
        "a drained stream holds utterances"
    );
    assert!(stream.session.next_window().is_none());
    assert_eq!(
        stream.checker.finals_from_finalize, stream.checker.finalizes,
        "each finalize is answered by one final"
    );
});

fn first_request(choice: &FirstRequest) -> StreamingRecognizeRequest {
    let session_id = match &choice.session_id {
        SessionId::Unset => String::new(),
        SessionId::Plain(number) => format!("session-{number}"),
        SessionId::Any(text) => text.clone(),
    };
    let audio_config = choice.audio_config.as_ref().map(|config| AudioConfig {
        sample_rate: match config.sample_rate {
            Rate::Common(index) => COMMON_RATES[usize::from(index) % COMMON_RATES.len()],
            Rate::Supported(offset) => 8_000 + i32::from(offset) % 40_001,
            Rate::Any(rate) => rate,
        },
        channels: match config.channels {
            Channels::Unset => 0,
            Channels::Mono => 1,
            Channels::Any(channels) => channels,
        },
        encoding: match &config.encoding {
            EncodingName::Unset => String::new(),
            EncodingName::Int16 => "PCM_INT16".into(),
            EncodingName::Float32 => "FLOAT32".into(),
            EncodingName::LowerCase(false) => "pcm_int16".into(),
            EncodingName::LowerCase(true) => "float32".into(),
            EncodingName::Any(name) => name.clone(),
        },
    });
    let millis = |choice: &Millis, low: i32, high: i32| match choice {
        Millis::Unset => 0,
        Millis::Allowed(value) => low + i32::from(*value) % (high - low + 1),
        Millis::Any(value) => *value,
    };
    let recognition_config = choice
        .recognition_config
        .as_ref()
        .map(|config| RecognitionConfig {
            chunk_ms: millis(&config.chunk_ms, 100, 1_000),
            endpoint_ms: millis(&config.endpoint_ms, 100, 5_000),
            interim_results: config.interim_results,
            voice_activity_events: config.voice_activity_events,
            language: match &config.language {
                Language::Unset => String::new(),
                Language::English => "en".into(),
                Language::Any(language) => language.clone(),
            },
            engine_events: config.engine_events,
        });
    StreamingRecognizeRequest {
        audio_content: Vec::new(),
        session_id,
        audio_config,
        recognition_config,
        finalize: choice.finalize,
    }
}

/// The stream ends with INVALID_ARGUMENT and a message fit for a client and a log line.
fn check_refusal(status: &tonic::Status) {
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    check_message(status.message());
}

fn check_message(message: &str) {
    assert!(
        !message.is_empty() && message.len() < 1024,
        "{} bytes: {message:?}",
        message.len()
    );
    assert!(!message.chars().any(char::is_control), "{message:?}");
}

struct Stream {
    session: Session,
    in_flight: Option<(DecodeTicket, RecognitionRequest)>,
    checker: Checker,
}

impl Stream {
    /// One request's audio and `finalize`; false when the stream ends on it.
    fn push(&mut self, audio: &[u8], finalize: bool) -> bool {
        if let Err(error) = self.session.push_audio(audio) {
            check_message(&error.to_string());
            return false;
        }
        if finalize {
            self.session.finalize();
            self.checker.finalizes += 1;
        }
        self.collect_outputs();
        true
    }

    /// As the service schedules: empty windows are answered at once, one real window at a time.
    fn schedule(&mut self) {
        while self.in_flight.is_none() {
            let Some((ticket, request)) = self.session.next_window() else {
                break;
            };
            match request {
                None => {
                    assert_eq!(ticket.priority, Priority::Final, "an empty partial window");
                    self.session.finish(ticket, None);
                }
                Some(request) => {
                    self.checker.check_window(&ticket, &request);
                    self.in_flight = Some((ticket, request));
                }
            }
            self.collect_outputs();
        }
    }

    fn answer(&mut self) {
        if let Some((ticket, request)) = self.in_flight.take() {
            self.session.finish(ticket, Some(recognise(&request)));
            self.collect_outputs();
        }
    }

    fn collect_outputs(&mut self) {
        let heard = self.session.audio_duration();
        for output in self.session.take_outputs() {
            self.checker.check_output(&output, heard);
        }
    }
}

/// The fake recogniser: a word per half second of window (none for some lengths, as for
/// silence), tokens counting up so that consecutive partials agree on a prefix, and word timings
/// inside the window for finals.
fn recognise(request: &RecognitionRequest) -> Transcript {
    let frames = request.raw_log_mel.len() / N_MELS;
    let n_words = frames / 50;
    if frames % 7 == 3 || n_words == 0 {
        return Transcript {
            no_speech_prob: 0.9,
            ..Transcript::default()
        };
    }
    let words: Vec<String> = (0..n_words).map(|index| format!("word{index}")).collect();
    let timings = match request.kind {
        WindowKind::Final => words
            .iter()
            .enumerate()
            .map(|(index, word)| WordTiming {
                word: word.clone(),
                start: Duration::from_millis(500 * index as u64),
                end: Duration::from_millis(500 * index as u64 + 400),
                confidence: 0.9,
            })
            .collect(),
        WindowKind::Partial => Vec::new(),
    };
    let tokens: Vec<u32> = (1..=n_words as u32).collect();
    Transcript {
        text: words.join(" "),
        confidence: 0.9,
        avg_logprob: -0.1,
        no_speech_prob: 0.01,
        n_tokens: tokens.len(),
        stopped_by_loop_guard: frames % 11 == 0,
        words: timings,
        token_probs: vec![0.9; tokens.len()],
        tokens,
    }
}

struct Checker {
    max_utterance: Duration,
    max_window_frames: usize,
    interim_results: bool,
    voice_activity_events: bool,
    engine_events: bool,
    finalizes: usize,
    finals_from_finalize: usize,
    last_segment: Option<u32>,
    /// Segment and end of the last final.
    last_final: Option<(u32, Duration)>,
    speaking: bool,
    last_voice_event: Duration,
}

/// Results are in 10 ms mel frames and the resampler rounds to a sample: allow a frame.
const SLACK: Duration = Duration::from_millis(10);

impl Checker {
    fn check_window(&self, ticket: &DecodeTicket, request: &RecognitionRequest) {
        assert_eq!(request.raw_log_mel.len() % N_MELS, 0);
        let frames = request.raw_log_mel.len() / N_MELS;
        assert!(frames > 0);
        assert!(
            frames <= self.max_window_frames,
            "a window of {frames} frames, max_utterance {:?}",
            self.max_utterance
        );
        assert!(request.raw_log_mel.iter().all(|value| value.is_finite()));
        assert_eq!(request.prefix_tokens.len(), request.prefix_probs.len());
        match ticket.priority {
            Priority::Final => {
                assert_eq!(request.kind, WindowKind::Final);
                assert!(request.prefix_tokens.is_empty(), "finals decode freely");
            }
            Priority::Partial => {
                assert_eq!(request.kind, WindowKind::Partial);
                assert!(
                    self.interim_results,
                    "a partial window with interim_results off"
                );
            }
        }
    }

    fn check_output(&mut self, output: &SessionOutput, heard: Duration) {
        match output {
            SessionOutput::Result(result) => self.check_result(result, heard),
            SessionOutput::SpeechStarted { at } | SessionOutput::SpeechEnded { at } => {
                assert!(self.voice_activity_events, "an unrequested voice event");
                let started = matches!(output, SessionOutput::SpeechStarted { .. });
                assert_ne!(
                    started, self.speaking,
                    "voice events out of turn: {output:?}"
                );
                self.speaking = started;
                assert!(
                    *at >= self.last_voice_event,
                    "{output:?} before {:?}",
                    self.last_voice_event
                );
                assert!(
                    *at <= heard + SLACK,
                    "{output:?} after the audio ({heard:?})"
                );
                self.last_voice_event = *at;
            }
            SessionOutput::EngineEvent { code, message } => {
                assert!(self.engine_events, "an unrequested engine event");
                assert!(
                    matches!(*code, "utterance_split" | "repetition_removed"),
                    "{code}"
                );
                check_message(message);
            }
        }
    }

    fn check_result(&mut self, result: &RecognitionResult, heard: Duration) {
        assert!(result.start <= result.end, "{result:?}");
        assert!(
            result.end <= heard + SLACK,
            "{result:?} after the audio ({heard:?})"
        );
        assert!(result.confidence.is_finite());
        assert!(
            self.last_segment.is_none_or(|last| result.segment >= last),
            "segment {} after {:?}",
            result.segment,
            self.last_segment
        );
        self.last_segment = Some(result.segment);
        if let Some((segment, end)) = self.last_final {
            assert!(
                result.segment > segment,
                "{result:?} after the final of segment {segment}"
            );
            assert!(
                result.start >= end,
                "{result:?} overlaps the final ending at {end:?}"
            );
        }
        if result.is_final {
            assert!(
                result.end - result.start <= self.max_utterance,
                "{result:?} is longer than {:?}",
                self.max_utterance
            );
            assert_eq!(result.stability, 1.0);
            for word in &result.words {
                assert!(
                    word.start >= result.start && word.end <= result.end,
                    "{word:?} outside {result:?}"
                );
            }
            if result.from_finalize {
                self.finals_from_finalize += 1;
                assert!(
                    self.finals_from_finalize <= self.finalizes,
                    "an unasked finalize final"
                );
            }
            self.last_final = Some((result.segment, result.end));
        } else {
            assert!(self.interim_results, "a partial with interim_results off");
            assert!(!result.from_finalize && result.words.is_empty());
            assert!((0.0..=1.0).contains(&result.stability), "{result:?}");
            assert!(!result.text.is_empty(), "an empty partial");
        }
    }
}
