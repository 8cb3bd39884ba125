//! Reading WAV files (integer or float PCM) into mono f32 samples, for tools and tests.

use std::path::Path;

use hound::{SampleFormat, WavReader};

use crate::AudioError;

/// A decoded WAV file. `samples` is mono (channels averaged) in [-1, 1] at the file's own `sample_rate`;
/// `channels` records how many the file had.
#[derive(Debug, Clone, PartialEq)]
pub struct WavAudio {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<f32>,
}

impl WavAudio {
    pub fn duration(&self) -> std::time::Duration {
        if self.sample_rate == 0 {
            return std::time::Duration::ZERO;
        }
        std::time::Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.sample_rate))
    }
}

/// Reads 8/16/24/32-bit integer or 32-bit float WAV via hound and mixes it down to mono.
pub fn read_wav(path: &Path) -> Result<WavAudio, AudioError> {
    let unreadable = |reason: String| AudioError::WavUnreadable {
        path: path.to_owned(),
        reason,
    };
    let unsupported = |format: String| AudioError::WavUnsupportedFormat {
        path: path.to_owned(),
        format,
    };

    let reader = WavReader::open(path).map_err(|error| unreadable(error.to_string()))?;
    let spec = reader.spec();
    if spec.channels == 0 {
        return Err(unsupported("the header declares 0 channels".to_owned()));
    }
    if spec.sample_rate == 0 {
        return Err(unsupported(
            "the header declares a sample rate of 0 Hz".to_owned(),
        ));
    }

    let interleaved: Vec<f32> = match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Float, 32) => reader
            .into_samples::<f32>()
            .map(|sample| {
                sample.map(|value| {
                    if value.is_finite() {
                        value.clamp(-1.0, 1.0)
                    } else {
                        0.0
                    }
                })
            })
            .collect::<Result<_, _>>()
            .map_err(|error| unreadable(error.to_string()))?,
        (SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            // Full scale of a `bits`-bit signed integer, so that every depth maps onto [-1, 1).
            let full_scale = (1u64 << (bits - 1)) as f64;
            reader
                .into_samples::<i32>()
                .map(|sample| sample.map(|value| (f64::from(value) / full_scale) as f32))
                .collect::<Result<_, _>>()
                .map_err(|error| unreadable(error.to_string()))?
        }
        (SampleFormat::Float, bits) => {
            return Err(unsupported(format!(
                "{bits}-bit float samples (only 32-bit float is supported)"
            )));
        }
        (SampleFormat::Int, bits) => {
            return Err(unsupported(format!(
                "{bits}-bit integer samples (supported: 8, 16, 24 and 32 bits)"
            )));
        }
    };

    let channel_count = usize::from(spec.channels);
    // A truncated file can end partway through a frame; that fragment is under one sample period, so it is dropped.
    let samples = interleaved
        .chunks_exact(channel_count)
        .map(|frame| frame.iter().sum::<f32>() / channel_count as f32)
        .collect();
    Ok(WavAudio {
        sample_rate: spec.sample_rate,
        channels: spec.channels,
        samples,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hound::{WavSpec, WavWriter};
    use std::path::PathBuf;

    fn write_wav<S: hound::Sample + Copy>(
        directory: &tempfile::TempDir,
        name: &str,
        spec: WavSpec,
        samples: &[S],
    ) -> PathBuf {
        let path = directory.path().join(name);
        let mut writer = WavWriter::create(&path, spec).unwrap();
        for &sample in samples {
            writer.write_sample(sample).unwrap();
        }
        writer.finalize().unwrap();
        path
    }

    fn int_spec(bits: u16, channels: u16) -> WavSpec {
        WavSpec {
            channels,
            sample_rate: 22_050,
            bits_per_sample: bits,
            sample_format: SampleFormat::Int,
        }
    }

    #[test]
    fn reads_16_bit_mono() {
        let directory = tempfile::tempdir().unwrap();
        let path = write_wav(
            &directory,
            "a.wav",
            int_spec(16, 1),
            &[0i16, 16_384, -32_768, 32_767],
        );
        let audio = read_wav(&path).unwrap();
        assert_eq!(audio.sample_rate, 22_050);
        assert_eq!(audio.channels, 1);
        assert_eq!(audio.samples, vec![0.0, 0.5, -1.0, 32_767.0 / 32_768.0]);
    }

    #[test]
    fn reads_8_bit_integer_samples() {
        let directory = tempfile::tempdir().unwrap();
        let path = write_wav(&directory, "a.wav", int_spec(8, 1), &[0i8, 64, -128]);
        assert_eq!(read_wav(&path).unwrap().samples, vec![0.0, 0.5, -1.0]);
    }

    #[test]
    fn reads_24_bit_integer_samples() {
        let directory = tempfile::tempdir().unwrap();
        let path = write_wav(
            &directory,
            "a.wav",
            int_spec(24, 1),
            &[0i32, 1 << 22, -(1 << 23)],
        );
        assert_eq!(read_wav(&path).unwrap().samples, vec![0.0, 0.5, -1.0]);
    }

    #[test]
    fn reads_32_bit_integer_samples() {
        let directory = tempfile::tempdir().unwrap();
        let path = write_wav(
            &directory,
            "a.wav",
            int_spec(32, 1),
            &[0i32, 1 << 30, i32::MIN],
        );
        assert_eq!(read_wav(&path).unwrap().samples, vec![0.0, 0.5, -1.0]);
    }

    #[test]
    fn reads_32_bit_float_samples_clamping_out_of_range() {
        let directory = tempfile::tempdir().unwrap();
        let spec = WavSpec {
            channels: 1,
            sample_rate: 48_000,
            bits_per_sample: 32,
            sample_format: SampleFormat::Float,
        };
        let path = write_wav(&directory, "a.wav", spec, &[0.25f32, -0.75, 3.0, f32::NAN]);
        let audio = read_wav(&path).unwrap();
        assert_eq!(audio.sample_rate, 48_000);
        assert_eq!(audio.samples, vec![0.25, -0.75, 1.0, 0.0]);
    }

    #[test]
    fn averages_channels_to_mono() {
        let directory = tempfile::tempdir().unwrap();
        let path = write_wav(
            &directory,
            "a.wav",
            int_spec(16, 2),
            &[16_384i16, 0, -16_384, -16_384],
        );
        let audio = read_wav(&path).unwrap();
        assert_eq!(audio.channels, 2);
        assert_eq!(audio.samples, vec![0.25, -0.5]);
        assert_eq!(
            audio.duration(),
            std::time::Duration::from_secs_f64(2.0 / 22_050.0)
        );
    }

    #[test]
    fn reports_missing_file_with_its_path() {
        let path = Path::new("/nonexistent/earshot/missing.wav");
        let error = read_wav(path).unwrap_err();
        assert!(
            matches!(error, AudioError::WavUnreadable { .. }),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(
            message.starts_with("cannot read WAV file /nonexistent/earshot/missing.wav: "),
            "{message}"
        );
    }

    #[test]
    fn reports_non_wav_file() {
        let directory = tempfile::tempdir().unwrap();
        let path = directory.path().join("not.wav");
        std::fs::write(&path, b"this is plainly not a RIFF file").unwrap();
        let error = read_wav(&path).unwrap_err();
        assert!(
            matches!(error, AudioError::WavUnreadable { .. }),
            "{error:?}"
        );
        assert!(error.to_string().contains("not.wav"), "{error}");
    }

    #[test]
    fn reports_truncated_file_without_panicking() {
        let directory = tempfile::tempdir().unwrap();
        let samples: Vec<i16> = (0..1_000).map(|index| index as i16).collect();
        let path = write_wav(&directory, "a.wav", int_spec(16, 1), &samples);
        let bytes = std::fs::read(&path).unwrap();
        for cut in [10, 30, 44, 45, 1_001] {
            std::fs::write(&path, &bytes[..cut]).unwrap();
            // Either a clear error or the samples that are present; never a panic.
            if let Err(error) = read_wav(&path) {
                assert!(error.to_string().contains("a.wav"), "{error}");
            }
        }
    }

    #[test]
    fn rejects_12_bit_samples_with_a_clear_error() {
        let directory = tempfile::tempdir().unwrap();
        let path = write_wav(&directory, "a.wav", int_spec(16, 1), &[0i16, 100]);
        // hound cannot write 12-bit audio, so declare 12 valid bits in the 16-bit file's fmt chunk (byte 34).
        let mut bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[34..36], &16u16.to_le_bytes());
        bytes[34..36].copy_from_slice(&12u16.to_le_bytes());
        std::fs::write(&path, bytes).unwrap();
        // hound itself refuses bit depths that are not whole bytes, so the error comes from it.
        let message = read_wav(&path).unwrap_err().to_string();
        assert!(
            message.contains("a.wav") && message.contains("bits per sample"),
            "{message}"
        );
    }
}
