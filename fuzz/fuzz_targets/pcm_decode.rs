//! The engine's audio path before the model: a declared format checked, PCM bytes decoded in
//! every encoding (whole and in arbitrary frames), and the samples resampled to 16 kHz from a
//! rate taken from the input, in arbitrary chunk splits.
#![no_main]

use std::cell::RefCell;
use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use earshot_audio::pcm::{self, AudioError, AudioFormat, Encoding};
use earshot_audio::resample::StreamResampler;
use earshot_audio::{MAX_SAMPLE_RATE, MIN_SAMPLE_RATE, TARGET_SAMPLE_RATE};
use libfuzzer_sys::fuzz_target;

/// The rates clients use, and therefore the ones worth most of the time.
const COMMON_RATES: [u32; 9] = [
    8_000, 11_025, 12_000, 16_000, 22_050, 24_000, 32_000, 44_100, 48_000,
];

/// Rates off the usual list: both of the resampler's paths (FFT where the ratio to 16 kHz reduces
/// to small blocks, windowed sinc elsewhere) and the edges of the range. Any rate at all goes
/// through the `engine_requests` target; here they are few enough for their resamplers to be kept.
fn odd_rate(choice: u8) -> u32 {
    const EDGES: [u32; 8] = [8_001, 8_016, 15_999, 16_001, 16_016, 44_099, 47_984, 47_999];
    match choice {
        0..8 => EDGES[usize::from(choice)],
        _ => MIN_SAMPLE_RATE + u32::from(choice) * 156,
    }
}

/// Resamplers kept between runs, per rate: building the windowed-sinc one costs about a
/// millisecond, more than a run. Reuse relies on `flush` resetting them, which is itself checked:
/// the two resamplers of a rate have been fed differently (in chunks, and whole) in every earlier
/// run, and must still agree exactly.
const CACHED_RATES: usize = COMMON_RATES.len() + 256;

thread_local! {
    static RESAMPLERS: RefCell<HashMap<u32, (StreamResampler, StreamResampler)>> =
        RefCell::new(HashMap::new());
}

#[derive(Arbitrary, Debug)]
enum RateChoice {
    Common(u8),
    Odd(u8),
    /// Outside 8000..=48000: refused.
    Unsupported(u32),
}

#[derive(Arbitrary, Debug)]
struct Declared {
    sample_rate: i32,
    channels: i32,
    encoding: DeclaredEncoding,
}

#[derive(Arbitrary, Debug)]
enum DeclaredEncoding {
    Int16,
    Float32,
    Empty,
    LowerCase(bool),
    Other(String),
}

#[derive(Arbitrary, Debug)]
struct Input {
    declared: Declared,
    rate: RateChoice,
    /// Frame sizes in bytes, used in turn (0 means an empty frame).
    frames: Vec<u16>,
    /// The samples are streamed this many times over (1 to 4), for streams longer than a block.
    repeat: u8,
}

fuzz_target!(|data: &[u8]| {
    let mut unstructured = Unstructured::new(data);
    let Ok(input) = Input::arbitrary(&mut unstructured) else {
        return;
    };
    let bytes = unstructured.take_rest();
    check_declared(&input.declared);
    let mut streamed = None;
    for encoding in [Encoding::PcmInt16, Encoding::Float32] {
        if let Some(samples) = decode(bytes, encoding, &input.frames) {
            streamed.get_or_insert(samples);
        }
    }
    let samples = streamed.unwrap_or_default();
    let repeat = usize::from(input.repeat % 4) + 1;
    let samples: Vec<f32> = std::iter::repeat_n(&samples[..], repeat)
        .flatten()
        .copied()
        .collect();
    let rate = match input.rate {
        RateChoice::Common(index) => COMMON_RATES[usize::from(index) % COMMON_RATES.len()],
        RateChoice::Odd(choice) => odd_rate(choice),
        RateChoice::Unsupported(rate) => {
            if !(MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&rate) {
                assert!(matches!(
                    StreamResampler::new(rate),
                    Err(AudioError::UnsupportedSampleRate { .. })
                ));
            }
            return;
        }
    };
    resample(rate, &samples, &input.frames);
});

fn check_declared(declared: &Declared) {
    let encoding = match &declared.encoding {
        DeclaredEncoding::Int16 => "PCM_INT16".to_owned(),
        DeclaredEncoding::Float32 => "FLOAT32".to_owned(),
        DeclaredEncoding::Empty => String::new(),
        DeclaredEncoding::LowerCase(false) => "pcm_int16".to_owned(),
        DeclaredEncoding::LowerCase(true) => "float32".to_owned(),
        DeclaredEncoding::Other(name) => name.clone(),
    };
    match AudioFormat::from_declared(declared.sample_rate, declared.channels, &encoding) {
        Ok(format) => {
            assert!((MIN_SAMPLE_RATE..=MAX_SAMPLE_RATE).contains(&format.sample_rate));
            assert_eq!(
                i64::from(format.sample_rate),
                i64::from(declared.sample_rate)
            );
            assert!(matches!(declared.channels, 0 | 1));
            assert_eq!(Encoding::parse(&encoding), Ok(format.encoding));
            assert!(format.bytes_per_second() <= 4 * MAX_SAMPLE_RATE as usize);
        }
        Err(error) => {
            // The message is sent to the client and logged: bounded, escaped, on one line.
            let message = error.to_string();
            assert!(message.len() < 1024, "{} bytes: {message:?}", message.len());
            assert!(!message.chars().any(char::is_control), "{message:?}");
        }
    }
}

/// Decodes `bytes` whole and frame by frame; returns the samples when they decode.
fn decode(bytes: &[u8], encoding: Encoding, frames: &[u16]) -> Option<Vec<f32>> {
    let bytes_per_sample = encoding.bytes_per_sample();
    let whole = pcm::decode_samples(bytes, encoding);
    match &whole {
        Ok(samples) => {
            assert_eq!(samples.len() * bytes_per_sample, bytes.len());
            assert!(
                samples
                    .iter()
                    .all(|s| s.is_finite() && (-1.0..=1.0).contains(s))
            );
            match encoding {
                // 16-bit samples round-trip exactly.
                Encoding::PcmInt16 => assert_eq!(pcm::encode_pcm16(samples), bytes),
                Encoding::Float32 => assert_eq!(
                    pcm::decode_samples(&pcm::encode_f32(samples), encoding).as_ref(),
                    Ok(samples)
                ),
            }
        }
        Err(AudioError::IncompleteSample { byte_count, .. }) => {
            assert_eq!(*byte_count, bytes.len());
            assert!(!bytes.len().is_multiple_of(bytes_per_sample));
        }
        Err(AudioError::NonFiniteSample { index, .. }) => {
            assert_eq!(encoding, Encoding::Float32);
            let quad = &bytes[index * 4..index * 4 + 4];
            assert!(!f32::from_le_bytes(quad.try_into().unwrap()).is_finite());
        }
        Err(other) => panic!("unexpected error {other:?}"),
    }

    // Frame by frame, as a stream sends them: the same samples when every frame holds whole
    // samples, an error naming the frame's size otherwise.
    let mut framed = Vec::new();
    let mut framed_ok = true;
    let mut rest = bytes;
    let mut frame_sizes = frames.iter().cycle();
    while !rest.is_empty() && !frames.is_empty() {
        let mut size = usize::from(*frame_sizes.next().unwrap());
        if size == 0 {
            // An empty frame is no audio; then the rest in one frame, so that the loop ends.
            assert_eq!(pcm::decode_samples(&[], encoding), Ok(Vec::new()));
            size = rest.len();
        }
        let (frame, after) = rest.split_at(size.min(rest.len()));
        rest = after;
        match pcm::decode_samples(frame, encoding) {
            Ok(samples) => framed.extend(samples),
            Err(AudioError::IncompleteSample { byte_count, .. }) => {
                assert_eq!(byte_count, frame.len());
                framed_ok = false;
            }
            Err(AudioError::NonFiniteSample { .. }) => framed_ok = false,
            Err(other) => panic!("unexpected error {other:?}"),
        }
    }
    if framed_ok && !frames.is_empty() {
        if let Ok(samples) = &whole {
            assert_eq!(&framed, samples);
        }
    }
    whole.ok()
}

fn resample(rate: u32, samples: &[f32], frames: &[u16]) {
    RESAMPLERS.with_borrow_mut(|resamplers| {
        if resamplers.len() >= CACHED_RATES && !resamplers.contains_key(&rate) {
            resamplers.clear();
        }
        let (chunked, one_shot) = resamplers.entry(rate).or_insert_with(|| {
            (
                StreamResampler::new(rate).expect("a supported rate"),
                StreamResampler::new(rate).expect("a supported rate"),
            )
        });
        assert_eq!(chunked.input_rate(), rate);

        let mut output = Vec::new();
        let mut rest = samples;
        let mut chunk_sizes = frames.iter().cycle();
        while !rest.is_empty() {
            let size = match chunk_sizes.next() {
                Some(0) => {
                    // An empty chunk; then the rest in one, so that the loop ends.
                    output.extend(chunked.process(&[]));
                    rest.len()
                }
                Some(&size) => usize::from(size),
                None => rest.len(),
            };
            let (chunk, after) = rest.split_at(size.min(rest.len()));
            rest = after;
            output.extend(chunked.process(chunk));
        }
        output.extend(chunked.flush());

        let expected_len = (samples.len() as u64 * u64::from(TARGET_SAMPLE_RATE)
            + u64::from(rate / 2))
            / u64::from(rate);
        assert_eq!(output.len() as u64, expected_len, "rate {rate}");
        // Band-limited filters overshoot a little on full-scale steps, never by this much.
        assert!(
            output.iter().all(|s| s.is_finite() && s.abs() <= 4.0),
            "rate {rate}"
        );

        // The output does not depend on how the input was chunked.
        let mut reference = one_shot.process(samples);
        reference.extend(one_shot.flush());
        assert_eq!(output, reference, "rate {rate}");
    });
}
