//! Pure, synchronous audio handling for Earshot: PCM decoding, resampling to the model rate, framing and voice activity detection.
//!
//! Nothing in this crate performs I/O except [`wav::read_wav`], keeps clocks or spawns threads; every type is
//! driven by the samples pushed into it, so behaviour is deterministic and easy to test.

pub mod pcm;
pub mod resample;
pub mod vad;
pub mod wav;

pub use pcm::{AudioError, AudioFormat, Encoding};

/// Sample rate the speech model consumes; all audio is resampled to this rate before VAD and inference.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;

/// Lowest client sample rate accepted (narrow-band telephony).
pub const MIN_SAMPLE_RATE: u32 = 8_000;

/// Highest client sample rate accepted.
pub const MAX_SAMPLE_RATE: u32 = 48_000;
