//! Speech recognition models: the `Recognizer` trait and the real Whisper backend (candle).
//!
//! This crate is the only place that touches inference code and model files.

pub mod ct2;
pub mod mel;
pub mod whisper;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use whisper::WhisperRecognizer;

/// The model that `earshot model fetch` installs.
pub const DEFAULT_MODEL_NAME: &str = "whisper-tiny.en";
/// The command that installs the default model; named in every "model not found" error.
pub const FETCH_COMMAND: &str = "earshot model fetch";

/// One window of audio to recognize, as raw (un-normalised) log-mel frames, frame-major
/// (`n_frames * n_mels` values from [`mel::LogMelStream::raw_frames`]).
#[derive(Debug, Clone)]
pub struct RecognitionRequest {
    pub raw_log_mel: Vec<f32>,
    /// Finals get per-word timings and the full trailing-silence padding; partials skip the
    /// alignment pass and use a shorter pad (cheaper, and their text is provisional anyway).
    pub kind: WindowKind,
    /// Text tokens to take as already decoded (with their probabilities), e.g. what the last
    /// two partials agreed on: the decoder reads them in one pass instead of one step each.
    pub prefix_tokens: Vec<u32>,
    pub prefix_probs: Vec<f32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowKind {
    Partial,
    Final,
}

impl RecognitionRequest {
    pub fn new(raw_log_mel: Vec<f32>, kind: WindowKind) -> Self {
        Self {
            raw_log_mel,
            kind,
            prefix_tokens: Vec::new(),
            prefix_probs: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct WordTiming {
    pub word: String,
    /// Offsets from the start of the window.
    pub start: Duration,
    pub end: Duration,
    pub confidence: f32,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Transcript {
    pub text: String,
    /// Mean probability of the emitted text tokens (0 when there are none).
    pub confidence: f32,
    pub avg_logprob: f32,
    /// Probability the model gave to "no speech" at the start of the window.
    pub no_speech_prob: f32,
    pub n_tokens: usize,
    /// Decoding stopped because the model started repeating itself.
    pub stopped_by_loop_guard: bool,
    pub words: Vec<WordTiming>,
    /// The text tokens and their probabilities (to seed the next partial's prefix).
    pub tokens: Vec<u32>,
    pub token_probs: Vec<f32>,
}

impl Transcript {
    /// Whisper's own silence test (a likely "no speech" that the text does not contradict),
    /// plus a near-certain "no speech" on its own: tiny models hallucinate a confident "you"
    /// on silence.
    pub fn is_probably_silence(&self) -> bool {
        self.text.is_empty()
            || (self.no_speech_prob > 0.6 && self.avg_logprob < -1.0)
            || self.no_speech_prob > 0.85
    }
}

/// A speech recognizer that decodes a batch of windows in one model call.
///
/// Implementations are driven from one dedicated thread, never from the async reactor.
pub trait Recognizer: Send {
    fn n_mels(&self) -> usize;
    /// The mel filterbank the front-end must use, row-major `[n_mels, 201]`.
    fn mel_filters(&self) -> std::sync::Arc<[f32]> {
        mel::mel_filters(self.n_mels()).into()
    }
    fn recognize_batch(
        &mut self,
        batch: &[RecognitionRequest],
    ) -> Result<Vec<Transcript>, ModelError>;
}

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file {file} not found in {dir}; run `{FETCH_COMMAND}` to install the default model", dir = .dir.display())]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("cannot read {path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid model files: {0}")]
    Format(String),
    #[error("inference failed: {0}")]
    Inference(#[from] candle_core::Error),
}

/// Where models live unless `--model` says otherwise: `$EARSHOT_MODEL_DIR`, else
/// `~/.cache/earshot/models/whisper-tiny.en`.
pub fn default_model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("EARSHOT_MODEL_DIR") {
        return PathBuf::from(dir);
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cache")))
        .unwrap_or_else(|| PathBuf::from(".cache"));
    cache
        .join("earshot")
        .join("models")
        .join(DEFAULT_MODEL_NAME)
}

/// The best device this build can use: the first CUDA GPU with the `cuda` feature, else the CPU.
pub fn best_device() -> candle_core::Device {
    #[cfg(feature = "cuda")]
    if let Ok(device) = candle_core::Device::new_cuda(0) {
        return device;
    }
    candle_core::Device::Cpu
}
