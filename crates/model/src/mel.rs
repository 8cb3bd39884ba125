//! Whisper's log-mel front-end: the filter bank, an incremental (streaming) STFT and the offline reference.
//!
//! Whisper normalises a whole window at once (clamp to max − 8, then `(x + 4) / 4`), so the
//! streaming path keeps *raw* `log10` frames, which never change once computed, and normalises
//! only the frames handed to the encoder (`normalize_to_model_input`).

use std::sync::Arc;

use realfft::num_complex::Complex;
use realfft::{RealFftPlanner, RealToComplex};

/// STFT window and FFT length, in samples.
pub const N_FFT: usize = 400;
/// Frame hop, in samples (10 ms).
pub const HOP_LENGTH: usize = 160;
/// The only sample rate Whisper accepts.
pub const SAMPLE_RATE: u32 = 16_000;
/// Frequency bins of the one-sided spectrum.
pub const N_FREQS: usize = N_FFT / 2 + 1;

/// Half a window: frame `i` is centred on sample `i * HOP_LENGTH`.
const HALF: usize = N_FFT / 2;
/// `log10` of the power floor Whisper clamps to (1e-10): the raw value of digital silence.
pub const LOG_FLOOR: f32 = -10.0;

/// Slaney-style mel scale (librosa's default, `htk=False`): linear below 1 kHz, logarithmic above.
fn hz_to_mel(f: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if f >= MIN_LOG_HZ {
        min_log_mel + (f / MIN_LOG_HZ).ln() / logstep
    } else {
        f / F_SP
    }
}

fn mel_to_hz(m: f64) -> f64 {
    const F_SP: f64 = 200.0 / 3.0;
    const MIN_LOG_HZ: f64 = 1000.0;
    let min_log_mel = MIN_LOG_HZ / F_SP;
    let logstep = 6.4f64.ln() / 27.0;
    if m >= min_log_mel {
        MIN_LOG_HZ * (logstep * (m - min_log_mel)).exp()
    } else {
        F_SP * m
    }
}

/// The mel filter bank, row-major `[n_mels, 201]`, identical to
/// `librosa.filters.mel(sr=16000, n_fft=400, n_mels, fmin=0, fmax=8000, htk=False, norm="slaney")`,
/// which is what OpenAI ships in `mel_filters.npz`. Computed in f64 and rounded once, like librosa.
pub fn mel_filters(n_mels: usize) -> Vec<f32> {
    if n_mels == 0 {
        return Vec::new();
    }
    let fmax = f64::from(SAMPLE_RATE) / 2.0;
    let bin_hz = f64::from(SAMPLE_RATE) / N_FFT as f64;
    let (min_mel, max_mel) = (hz_to_mel(0.0), hz_to_mel(fmax));
    let n_points = n_mels + 2;
    // numpy.linspace: start + i * step, with the last point pinned to `stop`.
    let step = (max_mel - min_mel) / (n_points - 1) as f64;
    let mel_f: Vec<f64> = (0..n_points)
        .map(|i| {
            if i == n_points - 1 {
                mel_to_hz(max_mel)
            } else {
                mel_to_hz(min_mel + i as f64 * step)
            }
        })
        .collect();
    let mut weights = vec![0f32; n_mels * N_FREQS];
    for m in 0..n_mels {
        let (lo, center, hi) = (mel_f[m], mel_f[m + 1], mel_f[m + 2]);
        // Slaney normalisation: each triangle has unit area in Hz.
        let enorm = 2.0 / (hi - lo);
        for k in 0..N_FREQS {
            let f = k as f64 * bin_hz;
            let lower = (f - lo) / (center - lo);
            let upper = (hi - f) / (hi - center);
            let w = lower.min(upper).max(0.0);
            weights[m * N_FREQS + k] = (w * enorm) as f32;
        }
    }
    weights
}

/// Per-frame analysis: window, real FFT, power spectrum, mel projection, `log10`.
/// All buffers are allocated once; `analyze` allocates nothing.
struct FrameAnalyzer {
    fft: Arc<dyn RealToComplex<f32>>,
    window: Vec<f32>,
    input: Vec<f32>,
    spectrum: Vec<Complex<f32>>,
    scratch: Vec<Complex<f32>>,
    power: Vec<f32>,
    filters: Arc<[f32]>,
    /// Per mel band, the range of frequency bins where its filter is non-zero: the triangles are
    /// narrow, so this skips ~95% of the multiply-adds of the dense product.
    bands: Vec<(usize, usize)>,
}

impl FrameAnalyzer {
    fn new(filters: Arc<[f32]>, n_mels: usize) -> Self {
        assert_eq!(
            filters.len(),
            n_mels * N_FREQS,
            "mel filters must be [n_mels, {N_FREQS}]"
        );
        let fft = RealFftPlanner::<f32>::new().plan_fft_forward(N_FFT);
        // Periodic Hann (torch.hann_window's default), computed in f64 and rounded once.
        let window = (0..N_FFT)
            .map(|n| {
                (0.5 - 0.5 * (2.0 * std::f64::consts::PI * n as f64 / N_FFT as f64).cos()) as f32
            })
            .collect();
        let bands = filters
            .chunks_exact(N_FREQS)
            .map(|row| {
                let lo = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let hi = row.iter().rposition(|&w| w != 0.0).map_or(0, |i| i + 1);
                (lo, hi.max(lo))
            })
            .collect();
        Self {
            input: fft.make_input_vec(),
            spectrum: fft.make_output_vec(),
            scratch: fft.make_scratch_vec(),
            power: vec![0.0; N_FREQS],
            fft,
            window,
            filters,
            bands,
        }
    }

    /// Writes the raw `log10(max(mel, 1e-10))` values of one `N_FFT`-sample frame into `out`.
    fn analyze(&mut self, frame: &[f32], out: &mut [f32]) {
        for ((dst, &x), &w) in self.input.iter_mut().zip(frame).zip(&self.window) {
            *dst = x * w;
        }
        self.fft
            .process_with_scratch(&mut self.input, &mut self.spectrum, &mut self.scratch)
            .expect("buffers come from the plan, so their lengths match");
        for (p, c) in self.power.iter_mut().zip(&self.spectrum) {
            *p = c.norm_sqr();
        }
        for ((o, row), &(lo, hi)) in out
            .iter_mut()
            .zip(self.filters.chunks_exact(N_FREQS))
            .zip(&self.bands)
        {
            let mel: f32 = row[lo..hi]
                .iter()
                .zip(&self.power[lo..hi])
                .map(|(w, p)| w * p)
                .sum();
            *o = mel.max(1e-10).log10();
        }
    }
}

/// Incremental log-mel for one audio stream.
///
/// Frame `i` is centred on sample `i * 160` and covers samples `[i*160 - 200, i*160 + 200)`;
/// samples before the start of the stream count as zeros (not reflected, unlike the offline
/// transform), so a frame's value is final as soon as its last sample has been pushed.
pub struct LogMelStream {
    analyzer: FrameAnalyzer,
    n_mels: usize,
    /// Pending samples, in "padded" coordinates: padded index = sample index + 200.
    samples: Vec<f32>,
    /// Padded index of `samples[0]`.
    samples_start: u64,
    /// Retained raw frames, frame-major.
    frames: Vec<f32>,
    first_frame: u64,
    frames_computed: u64,
}

impl LogMelStream {
    /// A stream using `filters` (row-major `[n_mels, 201]`, e.g. from [`mel_filters`]).
    ///
    /// # Panics
    /// If `filters.len() != n_mels * 201`.
    pub fn new(filters: Arc<[f32]>, n_mels: usize) -> Self {
        Self {
            analyzer: FrameAnalyzer::new(filters, n_mels),
            n_mels,
            // The zeros before the stream start, so frame 0 needs no special case.
            samples: vec![0.0; HALF],
            samples_start: 0,
            frames: Vec::new(),
            first_frame: 0,
            frames_computed: 0,
        }
    }

    pub fn n_mels(&self) -> usize {
        self.n_mels
    }

    /// Appends audio (16 kHz mono) and computes every frame whose window is now complete.
    pub fn push(&mut self, samples: &[f32]) {
        self.samples.extend_from_slice(samples);
        let available = self.samples_start + self.samples.len() as u64;
        let n = self.n_mels;
        loop {
            let start = self.frames_computed * HOP_LENGTH as u64;
            if start + N_FFT as u64 > available {
                break;
            }
            let offset = (start - self.samples_start) as usize;
            let len = self.frames.len();
            self.frames.resize(len + n, 0.0);
            self.analyzer.analyze(
                &self.samples[offset..offset + N_FFT],
                &mut self.frames[len..],
            );
            self.frames_computed += 1;
        }
        // Keep only what the next frame needs.
        let next_start = self.frames_computed * HOP_LENGTH as u64;
        let drop = (next_start - self.samples_start).min(self.samples.len() as u64) as usize;
        self.samples.drain(..drop);
        self.samples_start += drop as u64;
    }

    /// Appends 200 zero samples (half a window), so every sample pushed so far lies in a
    /// computed frame. Call at the end of the audio; later pushes continue after those zeros.
    pub fn flush(&mut self) {
        const ZEROS: [f32; HALF] = [0.0; HALF];
        self.push(&ZEROS);
    }

    /// Frames computed since the start of the stream (including discarded ones).
    pub fn frames_computed(&self) -> u64 {
        self.frames_computed
    }

    /// The oldest frame still held.
    pub fn first_retained_frame(&self) -> u64 {
        self.first_frame
    }

    /// Forgets frames before `frame` (clamped to the frames computed so far), bounding memory.
    pub fn discard_before(&mut self, frame: u64) {
        let frame = frame.min(self.frames_computed);
        if frame <= self.first_frame {
            return;
        }
        let n = (frame - self.first_frame) as usize * self.n_mels;
        self.frames.drain(..n);
        self.first_frame = frame;
    }

    /// Raw `log10(max(mel, 1e-10))` values of frames `[start, end)`, frame-major
    /// (`n_mels` values per frame), clamped to the frames retained and computed.
    pub fn raw_frames(&self, start: u64, end: u64) -> Vec<f32> {
        let start = start.max(self.first_frame);
        let end = end.min(self.frames_computed);
        if start >= end {
            return Vec::new();
        }
        let a = (start - self.first_frame) as usize * self.n_mels;
        let b = (end - self.first_frame) as usize * self.n_mels;
        self.frames[a..b].to_vec()
    }
}

/// Whisper's normalisation of raw frames (frame-major, `n_mels` per frame) followed by
/// `pad_frames` frames of digital silence, returned mel-major `[n_mels, frames + pad_frames]`
/// as the encoder's first convolution reads it.
///
/// Values are clamped to `max − 8` and mapped by `(x + 4) / 4`; the maximum is taken over the
/// real frames only, so padding never changes how the audio itself is scaled.
pub fn normalize_to_model_input(
    raw_frame_major: &[f32],
    n_mels: usize,
    pad_frames: usize,
) -> Vec<f32> {
    if n_mels == 0 {
        return Vec::new();
    }
    let n_frames = raw_frame_major.len() / n_mels;
    let raw = &raw_frame_major[..n_frames * n_mels];
    let max = raw.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let max = if max.is_finite() { max } else { LOG_FLOOR };
    let floor = max - 8.0;
    let norm = |x: f32| (x.max(floor) + 4.0) / 4.0;
    let total = n_frames + pad_frames;
    let mut out = vec![norm(LOG_FLOOR); n_mels * total];
    for (f, frame) in raw.chunks_exact(n_mels).enumerate() {
        for (m, &x) in frame.iter().enumerate() {
            out[m * total + f] = norm(x);
        }
    }
    out
}

/// OpenAI's `log_mel_spectrogram` on a whole clip, for reference: centred STFT with reflect
/// padding, the last frame dropped, and the same normalisation; mel-major `[n_mels, len / 160]`.
pub fn log_mel_offline(samples: &[f32], filters: &[f32], n_mels: usize) -> Vec<f32> {
    normalize_to_model_input(&offline_raw_frames(samples, filters, n_mels), n_mels, 0)
}

/// The raw (pre-normalisation) frames of `log_mel_offline`, frame-major.
fn offline_raw_frames(samples: &[f32], filters: &[f32], n_mels: usize) -> Vec<f32> {
    let n_frames = samples.len() / HOP_LENGTH;
    if n_frames == 0 || n_mels == 0 {
        return Vec::new();
    }
    let mut analyzer = FrameAnalyzer::new(Arc::from(filters), n_mels);
    let len = samples.len() as i64;
    // torch.stft's reflect padding (repeated for clips shorter than half a window).
    let period = 2 * (len - 1);
    let reflect = |j: i64| -> usize {
        if period == 0 {
            return 0;
        }
        let j = j.rem_euclid(period);
        (if j >= len { period - j } else { j }) as usize
    };
    let mut frame = vec![0f32; N_FFT];
    let mut raw = vec![0f32; n_frames * n_mels];
    for (i, out) in raw.chunks_exact_mut(n_mels).enumerate() {
        let start = (i * HOP_LENGTH) as i64 - HALF as i64;
        for (k, s) in frame.iter_mut().enumerate() {
            *s = samples[reflect(start + k as i64)];
        }
        analyzer.analyze(&frame, out);
    }
    raw
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stream(n_mels: usize) -> LogMelStream {
        LogMelStream::new(Arc::from(mel_filters(n_mels)), n_mels)
    }

    fn noise(n: usize, seed: u32) -> Vec<f32> {
        let mut state = seed;
        (0..n)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let t = i as f32 / SAMPLE_RATE as f32;
                0.3 * (2.0 * std::f32::consts::PI * 523.0 * t).sin()
                    + 0.1 * ((state >> 8) as f32 / (1u32 << 24) as f32 - 0.5)
            })
            .collect()
    }

    #[test]
    fn chunking_does_not_change_frames() {
        let audio = noise(16_000 + 123, 1);
        let mut reference: Option<Vec<f32>> = None;
        for chunk in [1, 37, 160, 1600, audio.len()] {
            let mut s = stream(80);
            for c in audio.chunks(chunk) {
                s.push(c);
            }
            s.flush();
            // flush covers every sample: the last frame's centre is at or past the last sample.
            assert_eq!(s.frames_computed(), (audio.len() / HOP_LENGTH) as u64 + 1);
            let frames = s.raw_frames(0, u64::MAX);
            assert_eq!(frames.len(), s.frames_computed() as usize * 80);
            match &reference {
                None => reference = Some(frames),
                Some(r) => assert_eq!(r, &frames, "chunk size {chunk}"),
            }
        }
    }

    #[test]
    fn frames_appear_as_soon_as_their_samples_do() {
        let mut s = stream(80);
        s.push(&[0.1; 199]);
        assert_eq!(s.frames_computed(), 0);
        s.push(&[0.1]);
        assert_eq!(s.frames_computed(), 1);
        s.push(&[0.1; 159]);
        assert_eq!(s.frames_computed(), 1);
        s.push(&[0.1]);
        assert_eq!(s.frames_computed(), 2);
    }

    #[test]
    fn streaming_matches_offline_away_from_the_start() {
        let audio = noise(8_000, 2);
        let filters = mel_filters(80);
        let mut s = stream(80);
        s.push(&audio);
        s.flush();
        let offline = offline_raw_frames(&audio, &filters, 80);
        let n = audio.len() / HOP_LENGTH;
        assert_eq!(offline.len(), n * 80);
        // Frames 0 and 1 reach before the first sample (reflected offline, zeros when
        // streaming), and the last one past the end; everything between must agree.
        let (first, last) = (2, (audio.len() - HALF) / HOP_LENGTH);
        let streamed = s.raw_frames(first as u64, last as u64 + 1);
        let offline = &offline[first * 80..(last + 1) * 80];
        assert_eq!(streamed.len(), offline.len());
        for (i, (a, b)) in offline.iter().zip(&streamed).enumerate() {
            assert!((a - b).abs() < 1e-4, "value {i}: {a} vs {b}");
        }
        // The edge frames do differ (reflection vs zeros), which is why the engine skips them.
        assert_ne!(
            s.raw_frames(0, 1),
            offline_raw_frames(&audio, &filters, 80)[..80].to_vec()
        );
    }

    #[test]
    fn discard_before_bounds_memory() {
        let mut s = stream(80);
        let audio = noise(1_600, 3);
        for _ in 0..600 {
            // 60 s in 100 ms chunks, keeping the last 3 s of frames.
            s.push(&audio);
            s.discard_before(s.frames_computed().saturating_sub(300));
            assert!(s.frames.len() <= 310 * 80);
            assert!(s.samples.len() <= N_FFT);
        }
        assert_eq!(s.frames_computed(), 6000 - 1);
        assert_eq!(s.first_retained_frame(), 6000 - 1 - 300);
        assert_eq!(s.raw_frames(0, 10), Vec::<f32>::new());
        assert_eq!(s.raw_frames(0, u64::MAX).len(), 300 * 80);
        // Discarding past the end clamps to what exists.
        s.discard_before(u64::MAX);
        assert_eq!(s.first_retained_frame(), s.frames_computed());
        assert!(s.raw_frames(0, u64::MAX).is_empty());
    }

    #[test]
    fn padding_does_not_raise_the_maximum() {
        // Two frames of very quiet audio: max −12 ⇒ floor −20, so silence (−10) stays −10.
        let raw = vec![-12.0f32; 2 * 3];
        let out = normalize_to_model_input(&raw, 3, 2);
        assert_eq!(out.len(), 3 * 4);
        for m in 0..3 {
            assert_eq!(out[m * 4], (-12.0 + 4.0) / 4.0);
            assert_eq!(out[m * 4 + 3], (-10.0 + 4.0) / 4.0);
        }
        // Loud audio: silence is clamped to max − 8.
        let out = normalize_to_model_input(&[1.0, 0.0], 2, 1);
        assert_eq!(
            out,
            vec![1.25, (1.0 - 8.0 + 4.0) / 4.0, 1.0, (1.0 - 8.0 + 4.0) / 4.0]
        );
        // Nothing but padding behaves like Whisper on an all-zero clip.
        assert_eq!(normalize_to_model_input(&[], 2, 1), vec![-1.5, -1.5]);
    }

    #[test]
    fn offline_handles_tiny_inputs() {
        let f = mel_filters(80);
        assert!(log_mel_offline(&[], &f, 80).is_empty());
        assert!(log_mel_offline(&[0.5; 100], &f, 80).is_empty());
        assert_eq!(log_mel_offline(&[0.5; 160], &f, 80).len(), 80);
        assert_eq!(log_mel_offline(&[0.5; 1000], &f, 80).len(), 6 * 80);
    }

    fn reference() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/mel_reference.json");
        serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
    }

    fn floats(v: &serde_json::Value) -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    }

    #[test]
    fn filters_match_librosa() {
        let r = reference();
        let f80 = mel_filters(80);
        let nonzero = r["filters"]["nonzero_80"].as_array().unwrap();
        let mut worst = 0f64;
        for e in nonzero {
            let (row, col) = (
                e[0].as_u64().unwrap() as usize,
                e[1].as_u64().unwrap() as usize,
            );
            let want = e[2].as_f64().unwrap();
            worst = worst.max((f64::from(f80[row * N_FREQS + col]) - want).abs());
        }
        eprintln!("worst filter error vs numpy: {worst:e}");
        assert!(worst < 1e-6, "worst filter error {worst}");
        assert_eq!(f80.iter().filter(|&&w| w != 0.0).count(), nonzero.len());

        let f128 = mel_filters(128);
        for (row, want) in f128
            .chunks_exact(N_FREQS)
            .zip(floats(&r["filters"]["row_sums_128"]))
        {
            let sum: f64 = row.iter().map(|&w| f64::from(w)).sum();
            assert!((sum - want).abs() < 1e-5, "{sum} vs {want}");
        }
        for (got, want) in f128[100 * N_FREQS..101 * N_FREQS]
            .iter()
            .zip(floats(&r["filters"]["row_128_100"]))
        {
            assert!((f64::from(*got) - want).abs() < 1e-6);
        }
    }

    /// Mirrors `generated_signal` in tests/data/gen_mel_reference.py.
    fn generated_signal(n: usize) -> Vec<f32> {
        let mut state: u32 = 12345;
        (0..n)
            .map(|i| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let noise = f64::from(state >> 8) / f64::from(1u32 << 24) - 0.5;
                let t = i as f64 / f64::from(SAMPLE_RATE);
                let tau = 2.0 * std::f64::consts::PI;
                let v = 0.5 * (tau * 440.0 * t).sin()
                    + 0.25 * (tau * 3000.5 * t + 0.3).sin()
                    + 0.05 * noise;
                if (8000..10000).contains(&i) {
                    0.0
                } else {
                    v as f32
                }
            })
            .collect()
    }

    /// Compares a mel-major log-mel against a reference summary; returns the worst value error.
    fn check_against(spec: &[f32], r: &serde_json::Value) -> f64 {
        let n = r["n_frames"].as_u64().unwrap() as usize;
        assert_eq!(spec.len(), n * 80);
        let mut worst = 0f64;
        for (f, want) in floats(&r["frame_sums"]).into_iter().enumerate() {
            let got: f64 = (0..80).map(|m| f64::from(spec[m * n + f])).sum();
            assert!(
                (got - want).abs() < 80.0 * 1e-4,
                "frame {f} sum {got} vs {want}"
            );
        }
        for (m, want) in floats(&r["mel_sums"]).into_iter().enumerate() {
            let got: f64 = spec[m * n..(m + 1) * n].iter().map(|&x| f64::from(x)).sum();
            assert!(
                (got - want).abs() < n as f64 * 1e-4,
                "mel {m} sum {got} vs {want}"
            );
        }
        for (f, values) in r["frames"].as_object().unwrap() {
            let f: usize = f.parse().unwrap();
            for (m, want) in floats(values).into_iter().enumerate() {
                worst = worst.max((f64::from(spec[m * n + f]) - want).abs());
            }
        }
        worst
    }

    #[test]
    fn offline_matches_openai_on_a_generated_signal() {
        let r = reference();
        let audio = generated_signal(SAMPLE_RATE as usize);
        let spec = log_mel_offline(&audio, &mel_filters(80), 80);
        let worst = check_against(&spec, &r["generated"]);
        eprintln!("worst log-mel error vs numpy: {worst:e}");
        assert!(worst < 2e-5, "worst value error {worst}");
    }

    /// The first second of 16-bit mono `path`, or `None` if it is absent.
    fn first_second_of_wav(path: &str) -> Option<Vec<f32>> {
        let bytes = std::fs::read(path).ok()?;
        let mut at = 12;
        while at + 8 <= bytes.len() {
            let id = &bytes[at..at + 4];
            let size = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
            if id == b"data" {
                let data = &bytes[at + 8..(at + 8 + size).min(bytes.len())];
                return Some(
                    data.chunks_exact(2)
                        .take(SAMPLE_RATE as usize)
                        .map(|c| f32::from(i16::from_le_bytes([c[0], c[1]])) / 32768.0)
                        .collect(),
                );
            }
            at += 8 + size + (size & 1);
        }
        None
    }

    #[test]
    fn offline_matches_openai_on_speech() {
        let Some(audio) = first_second_of_wav("/work/shared/speech/wav/jfk.wav") else {
            eprintln!("skipping: /work/shared/speech/wav/jfk.wav is absent");
            return;
        };
        let spec = log_mel_offline(&audio, &mel_filters(80), 80);
        let worst = check_against(&spec, &reference()["jfk_first_second"]);
        eprintln!("worst log-mel error vs numpy: {worst:e}");
        assert!(worst < 2e-5, "worst value error {worst}");
    }
}
