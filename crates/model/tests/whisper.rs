//! The Whisper recognizer on the real model and real speech.

use std::sync::Arc;

use earshot_loadgen::corpus;
use earshot_loadgen::wer::{WordErrors, word_errors};
use earshot_model::mel::{LogMelStream, mel_filters};
use earshot_model::{RecognitionRequest, Recognizer, WhisperRecognizer, WindowKind};

fn load() -> WhisperRecognizer {
    let dir = earshot_model::default_model_dir();
    WhisperRecognizer::load(&dir, &candle_core::Device::Cpu)
        .unwrap_or_else(|err| panic!("{err} (the README's test command installs the model first)"))
}

fn request(samples: &[f32], n_mels: usize) -> RecognitionRequest {
    let mut mel = LogMelStream::new(Arc::from(mel_filters(n_mels)), n_mels);
    mel.push(samples);
    mel.flush();
    RecognitionRequest::new(mel.raw_frames(0, mel.frames_computed()), WindowKind::Final)
}

fn first_two_fixtures(recognizer: &WhisperRecognizer) -> Vec<RecognitionRequest> {
    corpus::load(&corpus::fixtures_dir())
        .unwrap()
        .iter()
        .take(2)
        .map(|r| {
            let audio = earshot_audio::wav::read_wav(&r.path).unwrap();
            request(&audio.samples, recognizer.n_mels())
        })
        .collect()
}

#[test]
fn transcribes_bundled_recordings_in_one_batch() {
    let mut recognizer = load();
    let recordings = corpus::load(&corpus::fixtures_dir()).unwrap();
    assert!(recordings.len() >= 4);
    let mut requests = Vec::new();
    let mut durations = Vec::new();
    for recording in &recordings {
        let audio = earshot_audio::wav::read_wav(&recording.path).unwrap();
        durations.push(audio.samples.len() as f32 / 16_000.0);
        requests.push(request(&audio.samples, recognizer.n_mels()));
    }
    let started = std::time::Instant::now();
    let transcripts = recognizer.recognize_batch(&requests).unwrap();
    println!("batch of {} took {:?}", requests.len(), started.elapsed());
    let mut total = WordErrors::default();
    for ((recording, transcript), duration) in recordings.iter().zip(&transcripts).zip(&durations) {
        let errors = word_errors(&recording.reference, &transcript.text);
        println!(
            "{:>26} WER {:5.1}% conf {:.2} | {}",
            recording.name,
            100.0 * errors.rate(),
            transcript.confidence,
            transcript.text
        );
        total = total + errors;
        assert!(transcript.confidence > 0.3 && transcript.confidence <= 1.0);
        assert!(!transcript.stopped_by_loop_guard);
        // Word timings: one per word, in order, inside the audio.
        assert_eq!(
            transcript.words.len(),
            transcript.text.split_whitespace().count(),
            "{:?}",
            transcript.words
        );
        for pair in transcript.words.windows(2) {
            assert!(pair[1].start >= pair[0].start, "{:?}", transcript.words);
        }
        let last = transcript.words.last().unwrap();
        assert!(
            last.end.as_secs_f32() <= duration + 0.1,
            "{last:?} beyond {duration}s"
        );
    }
    println!("overall WER {:.1}%", 100.0 * total.rate());
    assert!(total.rate() < 0.10, "offline WER {:.3}", total.rate());
}

#[test]
fn batching_does_not_change_the_text() {
    let mut recognizer = load();
    let requests = first_two_fixtures(&recognizer);
    let batched = recognizer.recognize_batch(&requests).unwrap();
    for (request, batched) in requests.iter().zip(&batched) {
        let single = recognizer
            .recognize_batch(std::slice::from_ref(request))
            .unwrap();
        assert_eq!(single[0].text, batched.text);
    }
}

#[test]
fn digital_silence_is_recognised_as_silence() {
    let mut recognizer = load();
    let silence = vec![0.0f32; 16_000 * 3];
    let transcripts = recognizer
        .recognize_batch(&[request(&silence, recognizer.n_mels())])
        .unwrap();
    assert!(transcripts[0].is_probably_silence(), "{:?}", transcripts[0]);
}

#[test]
fn missing_model_names_the_fetch_command() {
    let dir = tempfile::tempdir().unwrap();
    let err = WhisperRecognizer::load(dir.path(), &candle_core::Device::Cpu)
        .err()
        .expect("an empty directory is not a model");
    assert!(err.to_string().contains("earshot model fetch"), "{err}");
}

#[test]
fn a_forced_prefix_is_kept_and_does_not_disturb_other_rows() {
    let mut recognizer = load();
    let requests = first_two_fixtures(&recognizer);
    let alone = recognizer.recognize_batch(&requests).unwrap();
    // Row 1 takes its own first five tokens as given; row 0 is padded to match.
    let mut prefixed = requests[1].clone();
    prefixed.prefix_tokens = alone[1].tokens[..5].to_vec();
    prefixed.prefix_probs = alone[1].token_probs[..5].to_vec();
    let together = recognizer
        .recognize_batch(&[requests[0].clone(), prefixed])
        .unwrap();
    assert_eq!(together[0].text, alone[0].text);
    assert_eq!(together[1].tokens[..5], alone[1].tokens[..5]);
    assert_eq!(together[1].text, alone[1].text);
}
