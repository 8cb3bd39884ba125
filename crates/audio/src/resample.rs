//! Streaming, band-limited resampling of client audio to the model's 16 kHz, time-aligned with the input.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{
    Async, Fft, FixedAsync, FixedSync, Indexing, Resampler, SincInterpolationParameters,
    WindowFunction,
};

use crate::{AudioError, MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, TARGET_SAMPLE_RATE};

/// Output block the FFT resampler aims for: 20 ms at 16 kHz. Each block costs latency (the block must fill before it
/// is transformed, plus half a block of filter delay), while a longer block sharpens the anti-aliasing filter; 20 ms
/// keeps 7 kHz in the pass band while adding only about 30 ms of latency.
const PREFERRED_OUTPUT_BLOCK: usize = 320;

/// Largest FFT output block accepted before switching to the sinc resampler (64 ms). Rates sharing only a small
/// common divisor with 16 kHz (say 44 099 Hz) would need blocks of up to a second, i.e. a second of latency.
const LARGEST_OUTPUT_BLOCK: usize = 1024;

/// Streaming resampler from any supported rate to 16 kHz using rubato (a band-limited resampler, not linear
/// interpolation). At 16 kHz input it is a pass-through.
///
/// Output is aligned with input: the resampler's own delay is trimmed at the start and flushed at the end, so that
/// after [`flush`](Self::flush) the total output length is `round(total_input * 16000 / input_rate)` and a sample at
/// input time t appears at output time t. Input chunks may have any length, including 0 and 1, and the output does
/// not depend on how the input was chunked.
///
/// Rates whose ratio to 16 kHz reduces to small integers (all the usual ones: 8, 11.025, 12, 22.05, 24, 32, 44.1,
/// 48 kHz) use rubato's synchronous FFT resampler, which is exact and cheap. Other rates use its windowed-sinc
/// resampler, which works for any ratio at a higher CPU cost.
pub struct StreamResampler {
    input_rate: u32,
    conversion: Option<Conversion>,
    total_input_samples: u64,
}

/// State of a real (non pass-through) conversion.
struct Conversion {
    resampler: Box<dyn Resampler<f32>>,
    /// Input received but not yet handed to rubato, which only accepts whole chunks.
    pending_input: Vec<f32>,
    /// Reused output buffer sized for the largest chunk rubato may produce.
    output_scratch: Vec<f32>,
    /// Leading output samples that are filter delay rather than signal, still to be dropped.
    delay_samples_left_to_trim: usize,
    /// Samples returned to the caller so far, after trimming.
    emitted_samples: u64,
}

impl StreamResampler {
    pub fn new(input_rate: u32) -> Result<Self, AudioError> {
        if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&input_rate) {
            return Err(AudioError::UnsupportedSampleRate {
                sample_rate: i64::from(input_rate),
            });
        }
        let conversion = if input_rate == TARGET_SAMPLE_RATE {
            None
        } else {
            Some(Conversion::new(build_resampler(input_rate)?))
        };
        Ok(StreamResampler {
            input_rate,
            conversion,
            total_input_samples: 0,
        })
    }

    pub fn input_rate(&self) -> u32 {
        self.input_rate
    }

    /// Resamples the next piece of the stream. Returns whatever output is ready, which lags the input by up to one
    /// internal block plus the filter delay (30 ms at the usual rates, 60 ms at 11.025 kHz); the remainder comes out
    /// of [`flush`](Self::flush).
    ///
    /// Samples are expected in [-1, 1]. Out-of-range values are clamped and NaN/infinity become silence, because
    /// rubato's FFT path panics on non-finite data; the pass-through applies the same rule so every rate behaves alike.
    pub fn process(&mut self, input: &[f32]) -> Vec<f32> {
        self.total_input_samples += input.len() as u64;
        let sanitised = input.iter().map(|&sample| sanitise(sample));
        match &mut self.conversion {
            None => sanitised.collect(),
            Some(conversion) => conversion.process(sanitised),
        }
    }

    /// Ends the stream: returns the rest of the output so that the total equals
    /// `round(total_input * 16000 / input_rate)`, then resets so the resampler can start a new stream.
    pub fn flush(&mut self) -> Vec<f32> {
        let expected_total_output = expected_output_len(self.total_input_samples, self.input_rate);
        self.total_input_samples = 0;
        match &mut self.conversion {
            None => Vec::new(),
            Some(conversion) => conversion.flush(expected_total_output),
        }
    }
}

fn sanitise(sample: f32) -> f32 {
    if sample.is_finite() {
        sample.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// `round(input_len * 16000 / input_rate)` in exact integer arithmetic.
fn expected_output_len(input_len: u64, input_rate: u32) -> u64 {
    let numerator = u128::from(input_len) * u128::from(TARGET_SAMPLE_RATE);
    let rate = u128::from(input_rate);
    u64::try_from((numerator + rate / 2) / rate).unwrap_or(u64::MAX)
}

fn greatest_common_divisor(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

fn build_resampler(input_rate: u32) -> Result<Box<dyn Resampler<f32>>, AudioError> {
    let input_rate = input_rate as usize;
    let output_rate = TARGET_SAMPLE_RATE as usize;
    let divisor = greatest_common_divisor(input_rate, output_rate);
    let smallest_input_block = input_rate / divisor;
    let smallest_output_block = output_rate / divisor;
    let construction_failed = |_| AudioError::UnsupportedSampleRate {
        sample_rate: input_rate as i64,
    };

    if smallest_output_block <= LARGEST_OUTPUT_BLOCK {
        let blocks = PREFERRED_OUTPUT_BLOCK.div_ceil(smallest_output_block);
        let resampler = Fft::<f32>::new_custom(
            input_rate,
            output_rate,
            blocks * smallest_input_block,
            1,
            1,
            WindowFunction::BlackmanHarris2,
            // Fixing both sides makes every chunk the same size, so chunking of the caller's input cannot matter.
            FixedSync::Both,
        )
        .map_err(construction_failed)?;
        Ok(Box::new(resampler))
    } else {
        let resampler = Async::<f32>::new_sinc(
            output_rate as f64 / input_rate as f64,
            1.0,
            &SincInterpolationParameters::new(256, WindowFunction::BlackmanHarris2),
            // 20 ms of input per chunk, matching the FFT path's latency.
            input_rate / 50,
            1,
            FixedAsync::Input,
        )
        .map_err(construction_failed)?;
        Ok(Box::new(resampler))
    }
}

impl Conversion {
    fn new(resampler: Box<dyn Resampler<f32>>) -> Self {
        let delay = resampler.output_delay();
        let output_capacity = resampler.output_frames_max();
        Conversion {
            resampler,
            pending_input: Vec::new(),
            output_scratch: vec![0.0; output_capacity],
            delay_samples_left_to_trim: delay,
            emitted_samples: 0,
        }
    }

    fn process(&mut self, input: impl Iterator<Item = f32>) -> Vec<f32> {
        self.pending_input.extend(input);
        let mut output = Vec::new();
        let mut consumed = 0;
        loop {
            let needed = self.resampler.input_frames_next();
            if needed == 0 || self.pending_input.len() - consumed < needed {
                break;
            }
            let (chunk_start, chunk_end) = (consumed, consumed + needed);
            consumed = chunk_end;
            // Moved out for the call so the chunk can be borrowed while `self` is borrowed mutably, without a copy.
            let chunk = std::mem::take(&mut self.pending_input);
            self.run_chunk(&chunk[chunk_start..chunk_end], None, &mut output);
            self.pending_input = chunk;
        }
        self.pending_input.drain(..consumed);
        output
    }

    fn flush(&mut self, expected_total_output: u64) -> Vec<f32> {
        let mut output = Vec::new();
        let final_input = std::mem::take(&mut self.pending_input);
        if !final_input.is_empty() {
            self.run_chunk(&final_input, Some(final_input.len()), &mut output);
        }
        // Pump silence through until the delayed tail of the signal has come out. The bound only guards against a
        // resampler that stops producing output; in practice one or two chunks suffice.
        let samples_still_owed = expected_total_output.saturating_sub(self.emitted_samples)
            + self.delay_samples_left_to_trim as u64;
        let mut chunks_left =
            2 + samples_still_owed / self.resampler.output_frames_next().max(1) as u64;
        while self.emitted_samples < expected_total_output && chunks_left > 0 {
            self.run_chunk(&[], Some(0), &mut output);
            chunks_left -= 1;
        }
        let excess = self.emitted_samples.saturating_sub(expected_total_output);
        let keep = output
            .len()
            .saturating_sub(usize::try_from(excess).unwrap_or(usize::MAX));
        output.truncate(keep);

        self.resampler.reset();
        self.pending_input.clear();
        self.delay_samples_left_to_trim = self.resampler.output_delay();
        self.emitted_samples = 0;
        output
    }

    /// Feeds one chunk to rubato and appends its output, minus any remaining start-up delay, to `output`.
    /// `partial_len` is set for the last, short chunk of a stream; rubato pads it with silence.
    fn run_chunk(&mut self, chunk: &[f32], partial_len: Option<usize>, output: &mut Vec<f32>) {
        let produced = match self.resample_into_scratch(chunk, partial_len) {
            Some(produced) => produced,
            // Cannot happen with the buffer sizes used here; emit silence of the expected length rather than
            // panicking or dropping time, so that downstream timestamps stay correct.
            None => {
                let expected = self
                    .resampler
                    .output_frames_next()
                    .min(self.output_scratch.len());
                self.output_scratch[..expected].fill(0.0);
                expected
            }
        };
        let trimmed = produced.min(self.delay_samples_left_to_trim);
        self.delay_samples_left_to_trim -= trimmed;
        output.extend_from_slice(&self.output_scratch[trimmed..produced]);
        self.emitted_samples += (produced - trimmed) as u64;
    }

    fn resample_into_scratch(
        &mut self,
        chunk: &[f32],
        partial_len: Option<usize>,
    ) -> Option<usize> {
        let needed_output = self.resampler.output_frames_max();
        if self.output_scratch.len() < needed_output {
            self.output_scratch.resize(needed_output, 0.0);
        }
        // rubato rejects a zero-frame adapter view, so the flush's "all silence" chunk gets a one-sample dummy that
        // partial_len tells it not to read.
        let silent_placeholder = [0.0f32];
        let input_slice = if chunk.is_empty() {
            &silent_placeholder[..]
        } else {
            chunk
        };
        let input_adapter = InterleavedSlice::new(input_slice, 1, input_slice.len()).ok()?;
        let output_frames = self.output_scratch.len();
        let mut output_adapter =
            InterleavedSlice::new_mut(&mut self.output_scratch, 1, output_frames).ok()?;
        let indexing = partial_len.map(|length| Indexing::new().partial_len(length));
        let (_consumed, produced) = self
            .resampler
            .process_into_buffer(&input_adapter, &mut output_adapter, indexing.as_ref())
            .ok()?;
        Some(produced)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::f32::consts::TAU;
    use std::time::Duration;

    const TEST_RATES: [u32; 4] = [8_000, 22_050, 44_100, 48_000];
    const CHUNK_SIZES: [usize; 4] = [1, 7, 160, 4_800];

    /// Phase is computed in f64: in f32 it loses precision after a few thousand cycles, and that phase noise is
    /// broadband, which would masquerade as aliasing in the attenuation test.
    fn sine(frequency: f32, rate: u32, len: usize, amplitude: f32) -> Vec<f32> {
        (0..len)
            .map(|index| {
                let cycles = f64::from(frequency) * index as f64 / f64::from(rate);
                amplitude * (std::f64::consts::TAU * cycles.fract()).sin() as f32
            })
            .collect()
    }

    fn resample_in_chunks(rate: u32, input: &[f32], chunk_size: usize) -> Vec<f32> {
        let mut resampler = StreamResampler::new(rate).unwrap();
        let mut output = Vec::new();
        for chunk in input.chunks(chunk_size) {
            output.extend(resampler.process(chunk));
        }
        output.extend(resampler.flush());
        output
    }

    fn rms(samples: &[f32]) -> f32 {
        (samples.iter().map(|sample| sample * sample).sum::<f32>() / samples.len().max(1) as f32)
            .sqrt()
    }

    /// Amplitude of the `frequency` component, by correlation with a quadrature pair.
    fn amplitude_at(samples: &[f32], frequency: f32, rate: u32) -> f32 {
        let (mut in_phase, mut quadrature) = (0.0f64, 0.0f64);
        for (index, &sample) in samples.iter().enumerate() {
            let phase = f64::from(TAU) * f64::from(frequency) * index as f64 / f64::from(rate);
            in_phase += f64::from(sample) * phase.cos();
            quadrature += f64::from(sample) * phase.sin();
        }
        (2.0 * (in_phase * in_phase + quadrature * quadrature).sqrt() / samples.len() as f64) as f32
    }

    #[test]
    fn rejects_rates_outside_supported_range() {
        for rate in [0, 7_999, 48_001, 96_000] {
            assert_eq!(
                StreamResampler::new(rate).err(),
                Some(AudioError::UnsupportedSampleRate {
                    sample_rate: i64::from(rate)
                })
            );
        }
    }

    #[test]
    fn passes_16k_through_unchanged() {
        let input = sine(440.0, 16_000, 1_000, 0.5);
        let mut resampler = StreamResampler::new(16_000).unwrap();
        assert_eq!(resampler.process(&input[..10]), input[..10]);
        assert_eq!(resampler.process(&input[10..]), input[10..]);
        assert!(resampler.flush().is_empty());
    }

    #[test]
    fn output_length_is_rounded_input_duration() {
        for rate in TEST_RATES
            .into_iter()
            .chain([11_025, 12_000, 24_000, 32_000, 44_099, 8_001])
        {
            for input_len in [0usize, 1, 2, 3, 100, 441, 4_799, 48_000, 100_003] {
                let input = sine(300.0, rate, input_len, 0.3);
                let output = resample_in_chunks(rate, &input, 160);
                let expected = (input_len as f64 * 16_000.0 / f64::from(rate)).round() as i64;
                assert!(
                    (output.len() as i64 - expected).abs() <= 1,
                    "rate {rate} input {input_len}: got {} samples, expected {expected}",
                    output.len()
                );
            }
        }
    }

    #[test]
    fn output_is_the_same_regardless_of_chunking() {
        for rate in TEST_RATES {
            let input = sine(1_000.0, rate, rate as usize, 0.5);
            let reference = resample_in_chunks(rate, &input, input.len());
            for chunk_size in CHUNK_SIZES {
                let output = resample_in_chunks(rate, &input, chunk_size);
                assert_eq!(
                    output.len(),
                    reference.len(),
                    "rate {rate} chunk {chunk_size}"
                );
                let worst = output
                    .iter()
                    .zip(&reference)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 1e-5,
                    "rate {rate} chunk {chunk_size}: differs by {worst}"
                );
            }
        }
    }

    #[test]
    fn accepts_empty_chunks_between_data() {
        let input = sine(1_000.0, 44_100, 10_000, 0.5);
        let reference = resample_in_chunks(44_100, &input, 4_800);
        let mut resampler = StreamResampler::new(44_100).unwrap();
        let mut output = resampler.process(&[]);
        for chunk in input.chunks(7) {
            output.extend(resampler.process(chunk));
            output.extend(resampler.process(&[]));
        }
        output.extend(resampler.flush());
        assert_eq!(output, reference);
    }

    /// Phase of the `frequency` component, in radians, relative to a sine starting at sample 0.
    fn phase_at(samples: &[f32], frequency: f32, rate: u32, first_index: usize) -> f64 {
        let (mut in_phase, mut quadrature) = (0.0f64, 0.0f64);
        for (offset, &sample) in samples.iter().enumerate() {
            let phase = f64::from(TAU) * f64::from(frequency) * (first_index + offset) as f64
                / f64::from(rate);
            in_phase += f64::from(sample) * phase.sin();
            quadrature += f64::from(sample) * phase.cos();
        }
        quadrature.atan2(in_phase)
    }

    /// A low sine resampled must match the same sine generated at 16 kHz. The phase difference gives the time shift
    /// precisely; it must be under one output sample (62.5 µs), far inside the ±1 ms the engine relies on. (It is not
    /// zero for rates whose FFT block has an odd input length, e.g. 441 samples at 22.05 and 11.025 kHz: the filter's
    /// true centre is then half an input sample off the delay rubato reports.)
    #[test]
    fn output_is_time_aligned_with_input() {
        let frequency = 440.0;
        for rate in TEST_RATES.into_iter().chain([11_025, 44_099]) {
            let input = sine(frequency, rate, 2 * rate as usize, 0.5);
            let expected = sine(frequency, 16_000, 32_000, 0.5);
            for chunk_size in CHUNK_SIZES {
                let output = resample_in_chunks(rate, &input, chunk_size);
                // Skip the edges where the band-limited filter sees the abrupt start and end of the tone; 400 samples
                // is exactly 11 periods of 440 Hz, keeping the analysis window phase-neutral.
                let interior = 400..32_000 - 400;
                let phase = phase_at(&output[interior.clone()], frequency, 16_000, interior.start);
                let shift =
                    Duration::from_secs_f64(phase.abs() / (f64::from(TAU) * f64::from(frequency)));
                assert!(
                    shift < Duration::from_nanos(62_500),
                    "rate {rate} chunk {chunk_size}: shifted by {shift:?} (phase {phase})"
                );
                let amplitude = amplitude_at(&output[interior.clone()], frequency, 16_000);
                assert!(
                    (amplitude - 0.5).abs() < 0.005,
                    "rate {rate} chunk {chunk_size}: amplitude {amplitude}"
                );
                // Sample-by-sample agreement, allowing for the sub-sample shift above (at most 0.5 * 2π * 440 / 16000).
                let worst = output[interior.clone()]
                    .iter()
                    .zip(&expected[interior])
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(
                    worst < 0.09,
                    "rate {rate} chunk {chunk_size}: max error {worst}"
                );
            }
        }
    }

    #[test]
    fn prints_resampler_delay_and_shift() {
        for rate in TEST_RATES.into_iter().chain([11_025, 44_099]) {
            let resampler = StreamResampler::new(rate).unwrap();
            let conversion = resampler.conversion.as_ref().unwrap();
            let input = sine(440.0, rate, 2 * rate as usize, 0.5);
            let output = resample_in_chunks(rate, &input, 4_800);
            let phase = phase_at(&output[400..31_600], 440.0, 16_000, 400);
            println!(
                "rate {rate}: chunk {} in / {} out, trimmed delay {} output samples, residual shift {:.1} µs",
                conversion.resampler.input_frames_next(),
                conversion.resampler.output_frames_next(),
                conversion.resampler.output_delay(),
                phase / (f64::from(TAU) * 440.0) * 1e6
            );
        }
    }

    #[test]
    fn impulse_keeps_its_time_position() {
        for rate in TEST_RATES.into_iter().chain([11_025, 44_099]) {
            let mut input = vec![0.0f32; rate as usize / 2];
            let impulse_time = 0.123_4;
            let impulse_index = (impulse_time * f64::from(rate)).round() as usize;
            input[impulse_index] = 1.0;
            let output = resample_in_chunks(rate, &input, 7);
            let peak_index = output
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .map(|(index, _)| index)
                .unwrap();
            let expected = impulse_index as f64 * 16_000.0 / f64::from(rate);
            // ±1 ms is 16 samples; demand far better than that.
            assert!(
                (peak_index as f64 - expected).abs() <= 1.0,
                "rate {rate}: impulse at output {peak_index}, expected {expected}"
            );
        }
    }

    #[test]
    fn one_khz_sine_keeps_frequency_and_amplitude() {
        for rate in TEST_RATES {
            let input = sine(1_000.0, rate, rate as usize, 0.5);
            let output = resample_in_chunks(rate, &input, 160);
            let interior = &output[800..output.len() - 800];
            let rising_zero_crossings = interior
                .windows(2)
                .filter(|pair| pair[0] < 0.0 && pair[1] >= 0.0)
                .count();
            let interior_seconds = interior.len() as f32 / 16_000.0;
            let measured_frequency = rising_zero_crossings as f32 / interior_seconds;
            assert!(
                (measured_frequency - 1_000.0).abs() < 5.0,
                "rate {rate}: {measured_frequency} Hz"
            );
            let amplitude = amplitude_at(interior, 1_000.0, 16_000);
            assert!(
                (amplitude - 0.5).abs() < 0.01,
                "rate {rate}: amplitude {amplitude}"
            );
            assert!((rms(interior) - 0.5 / 2f32.sqrt()).abs() < 0.01);
        }
    }

    /// 48 kHz is the case the brief names; 44.099 kHz exercises the sinc fallback.
    const ANTI_ALIASING_RATES: [u32; 3] = [48_000, 44_100, 44_099];

    #[test]
    fn passes_seven_khz_from_48k() {
        for rate in ANTI_ALIASING_RATES {
            let input = sine(7_000.0, rate, rate as usize, 0.5);
            let output = resample_in_chunks(rate, &input, 4_800);
            let amplitude = amplitude_at(&output[800..output.len() - 800], 7_000.0, 16_000);
            println!("7 kHz from {rate} Hz: amplitude {amplitude} (input 0.5)");
            assert!(
                amplitude > 0.45,
                "rate {rate}: 7 kHz came out at amplitude {amplitude}, expected about 0.5"
            );
        }
    }

    #[test]
    fn strongly_attenuates_eleven_khz_from_48k_instead_of_aliasing_it() {
        for rate in ANTI_ALIASING_RATES {
            let input = sine(11_000.0, rate, rate as usize, 0.5);
            let output = resample_in_chunks(rate, &input, 4_800);
            let interior = &output[800..output.len() - 800];
            // Without an anti-aliasing filter 11 kHz folds to 16 - 11 = 5 kHz at full strength.
            let alias = amplitude_at(interior, 5_000.0, 16_000);
            let total = rms(interior) * 2f32.sqrt();
            println!(
                "11 kHz from {rate} Hz: 5 kHz alias amplitude {alias}, residual {total} (input 0.5)"
            );
            // 0.5e-4 against 0.5 is 80 dB down.
            assert!(
                alias < 0.5e-4,
                "rate {rate}: aliased 5 kHz amplitude {alias} (input 0.5)"
            );
            assert!(
                total < 0.5e-4,
                "rate {rate}: residual amplitude {total} (input 0.5)"
            );
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(32))]
        #[test]
        fn random_chunking_matches_one_shot_output(
            rate in proptest::sample::select(vec![8_000u32, 11_025, 16_000, 22_050, 44_100, 44_099, 48_000]),
            chunk_sizes in proptest::collection::vec(0usize..3_000, 1..20),
        ) {
            let total: usize = chunk_sizes.iter().sum();
            let input = sine(1_234.0, rate, total, 0.7);
            let reference = resample_in_chunks(rate, &input, total.max(1));
            let mut resampler = StreamResampler::new(rate).unwrap();
            let mut output = Vec::new();
            let mut start = 0;
            for size in chunk_sizes {
                output.extend(resampler.process(&input[start..start + size]));
                start += size;
            }
            output.extend(resampler.flush());
            proptest::prop_assert_eq!(output.len() as u64, expected_output_len(total as u64, rate));
            proptest::prop_assert_eq!(output, reference);
        }
    }

    #[test]
    fn flush_resets_for_a_new_stream() {
        let input = sine(1_000.0, 22_050, 5_000, 0.5);
        let mut resampler = StreamResampler::new(22_050).unwrap();
        let mut first = resampler.process(&input);
        first.extend(resampler.flush());
        let mut second = resampler.process(&input);
        second.extend(resampler.flush());
        assert_eq!(first, second);
        assert!(resampler.flush().is_empty());
    }

    #[test]
    fn tolerates_non_finite_input_without_panicking() {
        for rate in [16_000, 44_100, 44_099] {
            let mut resampler = StreamResampler::new(rate).unwrap();
            let mut output = resampler.process(&[
                f32::NAN,
                f32::INFINITY,
                1.0e30,
                f32::NEG_INFINITY,
                -f32::MAX,
            ]);
            output.extend(resampler.process(&vec![f32::NAN; 5_000]));
            output.extend(resampler.flush());
            assert_eq!(output.len() as u64, expected_output_len(5_005, rate));
            assert!(
                output.iter().all(|sample| sample.is_finite()),
                "rate {rate}"
            );
        }
    }
}
