//! Client-declared audio formats, the crate's error type, and conversion between little-endian PCM bytes and f32 samples.

use std::path::PathBuf;

use crate::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE};

/// Characters of a client's string kept to be named in an error.
pub const MAX_ECHOED_CHARS: usize = 64;

/// Everything that can go wrong in this crate. Messages are meant to be shown to API clients as-is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AudioError {
    /// `name` is the client's string cut to [`MAX_ECHOED_CHARS`]; the message escapes it, so
    /// that it cannot forge log lines.
    #[error("unknown audio encoding {name:?}: accepted encodings are PCM_INT16 and FLOAT32")]
    UnknownEncoding { name: String },

    #[error("sample_rate is required")]
    MissingSampleRate,

    #[error(
        "sample_rate {sample_rate} Hz is not supported: it must be between {MIN_SAMPLE_RATE} and {MAX_SAMPLE_RATE} Hz"
    )]
    UnsupportedSampleRate { sample_rate: i64 },

    #[error("{channels} audio channels declared but only mono (1 channel) audio is supported")]
    UnsupportedChannelCount { channels: i64 },

    #[error("{}", incomplete_sample_message(*encoding, *byte_count))]
    IncompleteSample {
        encoding: Encoding,
        byte_count: usize,
    },

    #[error("FLOAT32 sample {index} is {value}: samples must be finite numbers")]
    NonFiniteSample { index: usize, value: &'static str },

    #[error("invalid endpoint configuration: {reason}")]
    InvalidEndpointConfig { reason: String },

    #[error("cannot read WAV file {}: {reason}", path.display())]
    WavUnreadable { path: PathBuf, reason: String },

    #[error("unsupported WAV sample format in {}: {format}", path.display())]
    WavUnsupportedFormat { path: PathBuf, format: String },
}

fn incomplete_sample_message(encoding: Encoding, byte_count: usize) -> String {
    match encoding {
        Encoding::PcmInt16 => format!(
            "odd number of bytes ({byte_count}) for PCM_INT16 audio: 16-bit samples need an even count"
        ),
        Encoding::Float32 => format!(
            "{byte_count} bytes is not a multiple of 4 for FLOAT32 audio: 32-bit float samples need whole groups of 4 bytes"
        ),
    }
}

/// How samples are laid out on the wire. Both encodings are little-endian and mono.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Encoding {
    /// Signed 16-bit integers.
    PcmInt16,
    /// IEEE-754 32-bit floats, nominally in [-1, 1].
    Float32,
}

impl Encoding {
    /// Parses the protobuf string form. The empty string means PCM_INT16 because proto3 leaves unset strings empty
    /// and PCM_INT16 is the documented default; matching ignores ASCII case so "pcm_int16" works too.
    pub fn parse(s: &str) -> Result<Self, AudioError> {
        if s.is_empty() || s.eq_ignore_ascii_case("PCM_INT16") {
            Ok(Encoding::PcmInt16)
        } else if s.eq_ignore_ascii_case("FLOAT32") {
            Ok(Encoding::Float32)
        } else {
            Err(AudioError::UnknownEncoding {
                name: s.chars().take(MAX_ECHOED_CHARS).collect(),
            })
        }
    }

    /// The canonical protobuf spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::PcmInt16 => "PCM_INT16",
            Encoding::Float32 => "FLOAT32",
        }
    }

    pub fn bytes_per_sample(self) -> usize {
        match self {
            Encoding::PcmInt16 => 2,
            Encoding::Float32 => 4,
        }
    }
}

impl std::fmt::Display for Encoding {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str(self.as_str())
    }
}

/// A validated description of the audio a client will send.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AudioFormat {
    pub sample_rate: u32,
    pub encoding: Encoding,
}

impl AudioFormat {
    /// Validates a client-declared format (values come straight from protobuf i32 fields).
    ///
    /// `sample_rate` must lie in 8000..=48000 (0 means the client forgot it). `channels` must be 1; 0 is proto3's
    /// "unset" and is taken as 1. The encoding goes through [`Encoding::parse`].
    pub fn from_declared(
        sample_rate: i32,
        channels: i32,
        encoding: &str,
    ) -> Result<Self, AudioError> {
        let sample_rate = match sample_rate {
            0 => return Err(AudioError::MissingSampleRate),
            rate => u32::try_from(rate)
                .ok()
                .filter(|rate| (MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(rate))
                .ok_or(AudioError::UnsupportedSampleRate {
                    sample_rate: i64::from(rate),
                })?,
        };
        if channels != 0 && channels != 1 {
            return Err(AudioError::UnsupportedChannelCount {
                channels: i64::from(channels),
            });
        }
        let encoding = Encoding::parse(encoding)?;
        Ok(AudioFormat {
            sample_rate,
            encoding,
        })
    }

    /// Number of bytes one second of this audio occupies on the wire, useful for sizing limits.
    pub fn bytes_per_second(self) -> usize {
        self.sample_rate as usize * self.encoding.bytes_per_sample()
    }
}

/// Decodes little-endian bytes into f32 samples in [-1, 1].
///
/// PCM_INT16 maps each sample to `i16 / 32768`. A byte count that is not a whole number of samples is an error rather
/// than being silently truncated, because a dropped byte would shift every later sample and turn speech into noise.
/// FLOAT32 NaN or infinity is an error; finite floats outside [-1, 1] are clamped since the model expects that range.
pub fn decode_samples(bytes: &[u8], encoding: Encoding) -> Result<Vec<f32>, AudioError> {
    let bytes_per_sample = encoding.bytes_per_sample();
    if !bytes.len().is_multiple_of(bytes_per_sample) {
        return Err(AudioError::IncompleteSample {
            encoding,
            byte_count: bytes.len(),
        });
    }
    match encoding {
        Encoding::PcmInt16 => Ok(bytes
            .chunks_exact(2)
            .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0)
            .collect()),
        Encoding::Float32 => bytes
            .chunks_exact(4)
            .enumerate()
            .map(|(index, quad)| {
                let value = f32::from_le_bytes([quad[0], quad[1], quad[2], quad[3]]);
                if value.is_finite() {
                    Ok(value.clamp(-1.0, 1.0))
                } else {
                    Err(AudioError::NonFiniteSample {
                        index,
                        value: describe_non_finite(value),
                    })
                }
            })
            .collect(),
    }
}

fn describe_non_finite(value: f32) -> &'static str {
    if value.is_nan() {
        "NaN"
    } else if value > 0.0 {
        "+infinity"
    } else {
        "-infinity"
    }
}

/// Encodes samples as little-endian PCM_INT16, clamping to [-1, 1] and rounding to the nearest step.
/// NaN encodes as 0 (silence) rather than failing, since this is used for producing test and debug audio.
pub fn encode_pcm16(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|&sample| {
            // `as` saturates, so +1.0 (which scales to 32768) lands on i16::MAX and NaN on 0.
            let quantised = (sample.clamp(-1.0, 1.0) * 32768.0).round() as i16;
            quantised.to_le_bytes()
        })
        .collect()
}

/// Encodes samples as little-endian FLOAT32 unchanged.
pub fn encode_f32(samples: &[f32]) -> Vec<u8> {
    samples
        .iter()
        .flat_map(|sample| sample.to_le_bytes())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_canonical_encoding_names() {
        assert_eq!(Encoding::parse("PCM_INT16"), Ok(Encoding::PcmInt16));
        assert_eq!(Encoding::parse("FLOAT32"), Ok(Encoding::Float32));
    }

    #[test]
    fn parses_lower_case_encoding_names() {
        assert_eq!(Encoding::parse("pcm_int16"), Ok(Encoding::PcmInt16));
        assert_eq!(Encoding::parse("float32"), Ok(Encoding::Float32));
    }

    #[test]
    fn an_unknown_encoding_is_named_escaped_and_cut_short() {
        let hostile = format!("X\n2026-12-01 INFO forged line {}", "A".repeat(10_000));
        let message = Encoding::parse(&hostile).unwrap_err().to_string();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("X\\n2026"), "{message}");
        assert!(message.len() < 200, "{} bytes", message.len());
    }

    #[test]
    fn empty_encoding_means_pcm_int16() {
        assert_eq!(Encoding::parse(""), Ok(Encoding::PcmInt16));
    }

    #[test]
    fn rejects_unknown_encoding_naming_it_and_listing_accepted_ones() {
        let error = Encoding::parse("MULAW").unwrap_err();
        assert_eq!(
            error,
            AudioError::UnknownEncoding {
                name: "MULAW".to_owned()
            }
        );
        let message = error.to_string();
        assert!(message.contains("MULAW"), "{message}");
        assert!(message.contains("PCM_INT16"), "{message}");
        assert!(message.contains("FLOAT32"), "{message}");
    }

    #[test]
    fn encoding_names_round_trip() {
        for encoding in [Encoding::PcmInt16, Encoding::Float32] {
            assert_eq!(Encoding::parse(encoding.as_str()), Ok(encoding));
            assert_eq!(encoding.to_string(), encoding.as_str());
        }
        assert_eq!(Encoding::PcmInt16.bytes_per_sample(), 2);
        assert_eq!(Encoding::Float32.bytes_per_sample(), 4);
    }

    #[test]
    fn accepts_supported_declared_formats() {
        assert_eq!(
            AudioFormat::from_declared(16_000, 1, "PCM_INT16"),
            Ok(AudioFormat {
                sample_rate: 16_000,
                encoding: Encoding::PcmInt16
            })
        );
        assert_eq!(
            AudioFormat::from_declared(8_000, 1, "FLOAT32").map(|format| format.encoding),
            Ok(Encoding::Float32)
        );
        assert_eq!(
            AudioFormat::from_declared(48_000, 1, "").map(|format| format.sample_rate),
            Ok(48_000)
        );
    }

    #[test]
    fn unset_channel_count_is_taken_as_mono() {
        assert!(AudioFormat::from_declared(16_000, 0, "PCM_INT16").is_ok());
    }

    #[test]
    fn rejects_missing_sample_rate() {
        let error = AudioFormat::from_declared(0, 1, "PCM_INT16").unwrap_err();
        assert_eq!(error, AudioError::MissingSampleRate);
        assert_eq!(error.to_string(), "sample_rate is required");
    }

    #[test]
    fn rejects_sample_rate_below_minimum() {
        let error = AudioFormat::from_declared(7_999, 1, "PCM_INT16").unwrap_err();
        assert_eq!(
            error,
            AudioError::UnsupportedSampleRate { sample_rate: 7_999 }
        );
        let message = error.to_string();
        assert!(
            message.contains("7999") && message.contains("8000") && message.contains("48000"),
            "{message}"
        );
    }

    #[test]
    fn rejects_sample_rate_above_maximum() {
        assert_eq!(
            AudioFormat::from_declared(48_001, 1, "PCM_INT16"),
            Err(AudioError::UnsupportedSampleRate {
                sample_rate: 48_001
            })
        );
    }

    #[test]
    fn rejects_negative_sample_rate() {
        assert_eq!(
            AudioFormat::from_declared(-16_000, 1, "PCM_INT16"),
            Err(AudioError::UnsupportedSampleRate {
                sample_rate: -16_000
            })
        );
        assert_eq!(
            AudioFormat::from_declared(i32::MIN, 1, "PCM_INT16"),
            Err(AudioError::UnsupportedSampleRate {
                sample_rate: i64::from(i32::MIN)
            })
        );
    }

    #[test]
    fn rejects_stereo_saying_only_mono_is_supported() {
        let error = AudioFormat::from_declared(16_000, 2, "PCM_INT16").unwrap_err();
        assert_eq!(error, AudioError::UnsupportedChannelCount { channels: 2 });
        let message = error.to_string();
        assert!(
            message.contains('2') && message.contains("only mono"),
            "{message}"
        );
    }

    #[test]
    fn rejects_negative_channel_count() {
        assert_eq!(
            AudioFormat::from_declared(16_000, -1, "PCM_INT16"),
            Err(AudioError::UnsupportedChannelCount { channels: -1 })
        );
    }

    #[test]
    fn rejects_unknown_encoding_in_declared_format() {
        assert_eq!(
            AudioFormat::from_declared(16_000, 1, "OPUS"),
            Err(AudioError::UnknownEncoding {
                name: "OPUS".to_owned()
            })
        );
    }

    #[test]
    fn bytes_per_second_follows_rate_and_encoding() {
        let format = AudioFormat::from_declared(16_000, 1, "FLOAT32").unwrap();
        assert_eq!(format.bytes_per_second(), 64_000);
    }

    #[test]
    fn rejects_odd_byte_count_for_pcm16() {
        let error = decode_samples(&[0u8; 1601], Encoding::PcmInt16).unwrap_err();
        assert_eq!(
            error.to_string(),
            "odd number of bytes (1601) for PCM_INT16 audio: 16-bit samples need an even count"
        );
    }

    #[test]
    fn rejects_partial_sample_for_float32() {
        for byte_count in [1, 2, 3, 5, 1602] {
            let error = decode_samples(&vec![0u8; byte_count], Encoding::Float32).unwrap_err();
            assert_eq!(
                error,
                AudioError::IncompleteSample {
                    encoding: Encoding::Float32,
                    byte_count
                }
            );
            assert!(error.to_string().contains(&byte_count.to_string()));
        }
    }

    #[test]
    fn rejects_nan_float32_sample_naming_its_index() {
        let bytes = encode_f32(&[0.0, 0.5, f32::NAN]);
        let error = decode_samples(&bytes, Encoding::Float32).unwrap_err();
        assert_eq!(
            error,
            AudioError::NonFiniteSample {
                index: 2,
                value: "NaN"
            }
        );
        assert_eq!(
            error.to_string(),
            "FLOAT32 sample 2 is NaN: samples must be finite numbers"
        );
    }

    #[test]
    fn rejects_infinite_float32_samples() {
        let bytes = encode_f32(&[f32::INFINITY]);
        assert_eq!(
            decode_samples(&bytes, Encoding::Float32),
            Err(AudioError::NonFiniteSample {
                index: 0,
                value: "+infinity"
            })
        );
        let bytes = encode_f32(&[0.0, f32::NEG_INFINITY]);
        assert_eq!(
            decode_samples(&bytes, Encoding::Float32),
            Err(AudioError::NonFiniteSample {
                index: 1,
                value: "-infinity"
            })
        );
    }

    #[test]
    fn clamps_out_of_range_float32_samples() {
        let bytes = encode_f32(&[1.5, -7.0, 0.25, f32::MAX]);
        assert_eq!(
            decode_samples(&bytes, Encoding::Float32).unwrap(),
            vec![1.0, -1.0, 0.25, 1.0]
        );
    }

    #[test]
    fn decodes_pcm16_extremes() {
        let bytes = [0x00, 0x80, 0xff, 0x7f, 0x00, 0x00, 0x00, 0x40];
        assert_eq!(
            decode_samples(&bytes, Encoding::PcmInt16).unwrap(),
            vec![-1.0, 32767.0 / 32768.0, 0.0, 0.5]
        );
    }

    #[test]
    fn decodes_empty_input_to_no_samples() {
        assert_eq!(
            decode_samples(&[], Encoding::PcmInt16).unwrap(),
            Vec::<f32>::new()
        );
        assert_eq!(
            decode_samples(&[], Encoding::Float32).unwrap(),
            Vec::<f32>::new()
        );
    }

    #[test]
    fn encode_pcm16_clamps_and_maps_nan_to_silence() {
        let decoded = decode_samples(
            &encode_pcm16(&[2.0, -2.0, f32::NAN, 1.0]),
            Encoding::PcmInt16,
        )
        .unwrap();
        assert_eq!(
            decoded,
            vec![32767.0 / 32768.0, -1.0, 0.0, 32767.0 / 32768.0]
        );
    }

    #[test]
    fn float32_round_trips_exactly() {
        let samples = [0.0, -1.0, 1.0, 0.123_456_79, -0.5];
        assert_eq!(
            decode_samples(&encode_f32(&samples), Encoding::Float32).unwrap(),
            samples
        );
    }

    proptest! {
        #[test]
        fn pcm16_round_trip_is_within_one_quantisation_step(samples in prop::collection::vec(-1.0f32..=1.0, 0..512)) {
            let decoded = decode_samples(&encode_pcm16(&samples), Encoding::PcmInt16).unwrap();
            prop_assert_eq!(decoded.len(), samples.len());
            for (original, round_tripped) in samples.iter().zip(&decoded) {
                prop_assert!((original - round_tripped).abs() <= 1.0 / 32768.0, "{} vs {}", original, round_tripped);
            }
        }

        #[test]
        fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
            for encoding in [Encoding::PcmInt16, Encoding::Float32] {
                match decode_samples(&bytes, encoding) {
                    Ok(samples) => {
                        prop_assert_eq!(samples.len() * encoding.bytes_per_sample(), bytes.len());
                        prop_assert!(samples.iter().all(|sample| (-1.0..=1.0).contains(sample)));
                    }
                    Err(error) => prop_assert!(!error.to_string().is_empty()),
                }
            }
        }
    }
}
