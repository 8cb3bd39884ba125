//! The engine end to end: the real binary, the real model, real speech over a real tonic client.

mod common;

use std::time::Duration;

use common::{EngineProcess, MAX_WER, fixture, fixtures, read_samples};
use earshot_audio::pcm;
use earshot_engine::client::{self, StreamOptions, StreamReport};
use earshot_loadgen::wer::{WordErrors, word_errors};
use earshot_proto::speech_to_text_client::SpeechToTextClient;
use earshot_proto::{AudioConfig, RecognitionConfig, ResponseKind, StreamingRecognizeRequest};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;

/// Highest word error rate accepted on the bundled recordings, streamed. Whisper tiny.en scores
/// about 6-7 % offline on clean read speech; streaming cuts at pauses cost a little more.
async fn stream_file(engine: &EngineProcess, name: &str, options: &StreamOptions) -> StreamReport {
    let recording = fixture(name);
    let (samples, rate) = read_samples(&recording);
    client::stream_audio(engine.channel().await, &samples, rate, options, |_| {})
        .await
        .expect("stream opens")
}

/// Streams 16 kHz samples as fast as the engine reads them.
async fn stream_16k(engine: &EngineProcess, samples: &[f32]) -> StreamReport {
    client::stream_audio(
        engine.channel().await,
        samples,
        16_000,
        &StreamOptions::default(),
        |_| {},
    )
    .await
    .expect("stream opens")
}

/// Sends raw requests and returns the final status (OK when the stream ended cleanly).
async fn send_raw(
    engine: &EngineProcess,
    requests: Vec<StreamingRecognizeRequest>,
) -> tonic::Status {
    let (sender, receiver) = mpsc::channel(requests.len().max(1));
    for request in requests {
        sender.send(request).await.unwrap();
    }
    drop(sender);
    let mut client = SpeechToTextClient::new(engine.channel().await);
    let mut inbound = match client
        .streaming_recognize(ReceiverStream::new(receiver))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return status,
    };
    loop {
        match inbound.message().await {
            Ok(Some(_)) => {}
            Ok(None) => return tonic::Status::ok(""),
            Err(status) => return status,
        }
    }
}

fn config(sample_rate: i32, channels: i32, encoding: &str) -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        audio_config: Some(AudioConfig {
            sample_rate,
            channels,
            encoding: encoding.into(),
        }),
        ..Default::default()
    }
}

fn audio(bytes: Vec<u8>) -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        audio_content: bytes,
        ..Default::default()
    }
}

#[tokio::test]
async fn transcribes_bundled_recordings_with_partials_before_finals() {
    let engine = EngineProcess::start(&[]).await;
    let options = StreamOptions {
        // A live speaker's pace, so that partials have time to appear.
        pace: Some(1.0),
        ..Default::default()
    };
    let streams = fixtures().into_iter().map(|recording| {
        let engine = &engine;
        let options = &options;
        async move {
            let report = stream_file(engine, &recording.name, options).await;
            (recording, report)
        }
    });
    let results = futures::future::join_all(streams).await;
    let mut total = WordErrors::default();
    for (recording, report) in &results {
        assert!(
            report.error.is_none(),
            "{}: {:?}",
            recording.name,
            report.error
        );
        let hypothesis = report.final_text();
        let errors = word_errors(&recording.reference, &hypothesis);
        println!(
            "{:>24}  WER {:5.1}%  {hypothesis}",
            recording.name,
            100.0 * errors.rate()
        );
        total = total + errors;
        let first_partial = report
            .responses
            .iter()
            .position(|r| r.response.kind == ResponseKind::Result as i32 && !r.response.is_final);
        let first_final = report.responses.iter().position(|r| r.response.is_final);
        assert!(
            matches!((first_partial, first_final), (Some(p), Some(f)) if p < f),
            "{}: a partial must arrive before the first final",
            recording.name
        );
        for response in report.finals() {
            assert!(
                response.confidence > 0.0 && response.confidence <= 1.0,
                "confidence comes from the model"
            );
            assert!(!response.words.is_empty(), "finals carry word timings");
            assert!(response.end_ms > response.start_ms);
        }
    }
    println!("overall WER {:.1}%", 100.0 * total.rate());
    assert!(
        total.rate() < MAX_WER,
        "WER {:.3} over {MAX_WER}",
        total.rate()
    );
}

#[tokio::test]
async fn half_close_flushes_the_last_words_as_finals() {
    let engine = EngineProcess::start(&[]).await;
    // No trailing silence: the last utterance only ends because the stream does.
    let report = stream_file(&engine, "jfk.wav", &StreamOptions::default()).await;
    assert!(report.error.is_none());
    let text = report.final_text().to_lowercase();
    assert!(
        text.contains("for your country"),
        "last words missing: {text}"
    );
    let last = report.responses.last().expect("responses");
    assert!(last.response.is_final, "the stream ends on a final");
}

#[tokio::test]
async fn long_stream_keeps_every_sentence_once() {
    // Four recordings back to back with short gaps, twice: about 65 s of speech in utterances
    // longer than the 15 s limit, so the engine must cut mid-stream without losing words.
    let engine = EngineProcess::start(&[]).await;
    let mut samples = Vec::new();
    let mut reference = String::new();
    for _ in 0..2 {
        for recording in fixtures() {
            let (audio, rate) = read_samples(&recording);
            assert_eq!(rate, 16_000);
            samples.extend(audio);
            samples.extend(std::iter::repeat_n(0.0, 16_000 * 3 / 10));
            reference.push_str(&recording.reference);
            reference.push(' ');
        }
    }
    let report = stream_16k(&engine, &samples).await;
    assert!(report.error.is_none());
    let hypothesis = report.final_text();
    let errors = word_errors(&reference, &hypothesis);
    println!(
        "long stream: {errors:?} WER {:.1}%\n{hypothesis}",
        100.0 * errors.rate()
    );
    assert!(errors.rate() < MAX_WER, "WER {:.3}", errors.rate());
    // Dropped or repeated sentences show up as runs of deletions or insertions.
    assert!(
        errors.deletions <= reference.split(' ').count() / 25,
        "{errors:?}"
    );
    assert!(
        errors.insertions <= reference.split(' ').count() / 25,
        "{errors:?}"
    );
    let segments: Vec<i32> = report.finals().map(|f| f.segment_index).collect();
    assert!(
        segments.windows(2).all(|w| w[1] > w[0]),
        "segments increase: {segments:?}"
    );
    let spans: Vec<(i64, i64)> = report.finals().map(|f| (f.start_ms, f.end_ms)).collect();
    assert!(
        spans.windows(2).all(|w| w[1].0 >= w[0].1),
        "finals never overlap: {spans:?}"
    );
}

#[tokio::test]
async fn accepts_float32_at_44_1_khz() {
    let engine = EngineProcess::start(&[]).await;
    let recording = fixture("jfk.wav");
    let (samples, _) = read_samples(&recording);
    // Upsample 16k -> 44.1k by linear interpolation: crude, but fine for a format test.
    let ratio = 44_100.0 / 16_000.0;
    let upsampled: Vec<f32> = (0..(samples.len() as f64 * ratio) as usize)
        .map(|i| {
            let position = i as f64 / ratio;
            let idx = position as usize;
            let frac = (position - idx as f64) as f32;
            let a = samples[idx.min(samples.len() - 1)];
            let b = samples[(idx + 1).min(samples.len() - 1)];
            a + (b - a) * frac
        })
        .collect();
    let mut requests = vec![config(44_100, 1, "FLOAT32")];
    for chunk in upsampled.chunks(4410) {
        requests.push(audio(pcm::encode_f32(chunk)));
    }
    let (sender, receiver) = mpsc::channel(requests.len());
    for request in requests {
        sender.send(request).await.unwrap();
    }
    drop(sender);
    let mut client = SpeechToTextClient::new(engine.channel().await);
    let mut inbound = client
        .streaming_recognize(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    while let Some(response) = inbound.message().await.unwrap() {
        if response.is_final {
            text.push_str(&response.transcript);
            text.push(' ');
        }
        assert!(response.audio_duration_ms <= 11_100);
    }
    let errors = word_errors(&recording.reference, &text);
    assert!(errors.rate() < MAX_WER, "{text}: {errors:?}");
}

#[tokio::test]
async fn rejects_bad_input_with_invalid_argument_naming_the_problem() {
    let engine = EngineProcess::start(&[]).await;
    let cases: Vec<(&str, Vec<StreamingRecognizeRequest>, &str)> = vec![
        ("no config", vec![audio(vec![0; 3200])], "audio_config"),
        ("stereo", vec![config(16_000, 2, "PCM_INT16")], "mono"),
        ("unknown encoding", vec![config(16_000, 1, "MP3")], "MP3"),
        ("rate too low", vec![config(7_999, 1, "PCM_INT16")], "7999"),
        (
            "rate too high",
            vec![config(96_000, 1, "PCM_INT16")],
            "96000",
        ),
        ("no rate", vec![config(0, 1, "PCM_INT16")], "sample_rate"),
        (
            "odd byte count",
            vec![config(16_000, 1, "PCM_INT16"), audio(vec![0; 3201])],
            "odd",
        ),
        (
            "float32 not whole samples",
            vec![config(16_000, 1, "FLOAT32"), audio(vec![0; 6])],
            "FLOAT32",
        ),
        (
            "float32 NaN",
            vec![
                config(16_000, 1, "FLOAT32"),
                audio(f32::NAN.to_le_bytes().to_vec()),
            ],
            "NaN",
        ),
        (
            "config repeated",
            vec![
                config(16_000, 1, "PCM_INT16"),
                config(16_000, 1, "PCM_INT16"),
            ],
            "first request",
        ),
        (
            "bad chunk_ms",
            vec![StreamingRecognizeRequest {
                recognition_config: Some(RecognitionConfig {
                    chunk_ms: 20,
                    ..Default::default()
                }),
                ..config(16_000, 1, "PCM_INT16")
            }],
            "chunk_ms",
        ),
        (
            "unsupported language",
            vec![StreamingRecognizeRequest {
                recognition_config: Some(RecognitionConfig {
                    language: "fr".into(),
                    ..Default::default()
                }),
                ..config(16_000, 1, "PCM_INT16")
            }],
            "English",
        ),
    ];
    for (name, requests, expected) in cases {
        let status = send_raw(&engine, requests).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{name}: {status:?}");
        assert!(
            status.message().contains(expected),
            "{name}: message {:?} should mention {expected:?}",
            status.message()
        );
    }
    // The engine is still healthy afterwards.
    let report = stream_file(
        &engine,
        "ls_1089-134691-0001.wav",
        &StreamOptions::default(),
    )
    .await;
    assert!(report.error.is_none());
    assert!(!report.final_text().is_empty());
}

#[tokio::test]
async fn silence_produces_no_text() {
    let engine = EngineProcess::start(&[]).await;
    let silence = vec![0.0f32; 16_000 * 6];
    let mut noise_state = 12345u32;
    // Faint noise, as a quiet room gives.
    let faint_noise: Vec<f32> = (0..16_000 * 6)
        .map(|_| {
            noise_state = noise_state
                .wrapping_mul(1_664_525)
                .wrapping_add(1_013_904_223);
            ((noise_state >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.002
        })
        .collect();
    for samples in [silence, faint_noise] {
        let report = stream_16k(&engine, &samples).await;
        assert!(report.error.is_none());
        let texts: Vec<&str> = report
            .responses
            .iter()
            .map(|r| r.response.transcript.as_str())
            .filter(|t| !t.is_empty())
            .collect();
        assert!(texts.is_empty(), "silence produced text: {texts:?}");
    }
}

#[tokio::test]
async fn finalize_turns_what_was_heard_into_a_final_at_once() {
    let engine = EngineProcess::start(&[]).await;
    let recording = fixture("jfk.wav");
    let (samples, _) = read_samples(&recording);
    let (sender, receiver) = mpsc::channel(256);
    let mut client = SpeechToTextClient::new(engine.channel().await);
    let mut requests = vec![config(16_000, 1, "PCM_INT16")];
    // The first 5 s, then finalize while the speaker is mid-sentence.
    for chunk in samples[..16_000 * 5].chunks(1600) {
        requests.push(audio(pcm::encode_pcm16(chunk)));
    }
    requests.push(StreamingRecognizeRequest {
        finalize: true,
        ..Default::default()
    });
    for request in requests {
        sender.send(request).await.unwrap();
    }
    let mut inbound = client
        .streaming_recognize(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let answer = loop {
        let response = tokio::time::timeout(Duration::from_secs(60), inbound.message())
            .await
            .expect("finalize is answered")
            .unwrap()
            .expect("stream still open");
        if response.from_finalize {
            break response;
        }
    };
    assert!(answer.is_final);
    assert!(answer.end_ms >= 4_900, "covers what was heard: {answer:?}");
    // A second finalize with nothing new is answered by an empty final.
    sender
        .send(StreamingRecognizeRequest {
            finalize: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let empty = loop {
        let response = inbound.message().await.unwrap().expect("open");
        if response.from_finalize {
            break response;
        }
    };
    assert!(empty.is_final);
    assert!(empty.transcript.is_empty(), "{empty:?}");
    drop(sender);
    while inbound.message().await.unwrap().is_some() {}
}

#[tokio::test]
async fn refuses_streams_beyond_max_sessions_at_once() {
    let engine = EngineProcess::start(&["--max-sessions", "1"]).await;
    let (held_sender, held_receiver) = mpsc::channel(4);
    held_sender
        .send(config(16_000, 1, "PCM_INT16"))
        .await
        .unwrap();
    let mut first_client = SpeechToTextClient::new(engine.channel().await);
    let _held = first_client
        .streaming_recognize(ReceiverStream::new(held_receiver))
        .await
        .expect("first stream admitted");
    let started = std::time::Instant::now();
    let status = send_raw(&engine, vec![config(16_000, 1, "PCM_INT16")]).await;
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused without queueing"
    );
    drop(held_sender);
}

#[tokio::test]
async fn sigterm_flushes_streams_in_flight_and_exits() {
    let mut engine = EngineProcess::start(&["--shutdown-deadline-secs", "20"]).await;
    let recording = fixture("jfk.wav");
    let (samples, rate) = read_samples(&recording);
    let channel = engine.channel().await;
    let options = StreamOptions {
        pace: Some(1.0),
        ..Default::default()
    };
    let stream = tokio::spawn(async move {
        client::stream_audio(channel, &samples, rate, &options, |_| {}).await
    });
    // Mid-sentence, about 6 s in.
    tokio::time::sleep(Duration::from_secs(6)).await;
    engine.terminate();
    let report = stream.await.unwrap().unwrap();
    let status = report.error.as_ref().expect("stream ends with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    let text = report.final_text().to_lowercase();
    assert!(
        text.contains("fellow americans"),
        "words heard before SIGTERM are kept: {text}"
    );
    let (exit, took) = engine.wait_exit(Duration::from_secs(30));
    assert!(exit.success(), "{exit:?}");
    println!("engine exited {took:?} after the stream ended");
}

#[tokio::test]
async fn shared_corpus_word_error_rate_by_group() {
    let Some(dir) = earshot_loadgen::corpus::shared_dir() else {
        println!("shared speech corpus not found (../shared/speech): skipping the full WER suite");
        return;
    };
    let engine = EngineProcess::start(&[]).await;
    let recordings = earshot_loadgen::corpus::load(&dir).unwrap();
    assert!(!recordings.is_empty());
    // A few streams at a time, each as fast as the engine takes it.
    let results: Vec<_> = futures::stream::iter(recordings.iter().map(|recording| {
        let engine = &engine;
        async move {
            let audio = earshot_audio::wav::read_wav(&recording.path).unwrap();
            let report = client::stream_audio(
                engine.channel().await,
                &audio.samples,
                audio.sample_rate,
                &StreamOptions::default(),
                |_| {},
            )
            .await
            .unwrap();
            (recording, report)
        }
    }))
    .buffer_unordered(4)
    .collect()
    .await;
    let mut by_group: std::collections::BTreeMap<String, WordErrors> = Default::default();
    let mut total = WordErrors::default();
    for (recording, report) in &results {
        assert!(
            report.error.is_none(),
            "{}: {:?}",
            recording.name,
            report.error
        );
        let errors = word_errors(&recording.reference, &report.final_text());
        println!(
            "{:>42}  WER {:5.1}%  {errors:?}",
            recording.name,
            100.0 * errors.rate()
        );
        if recording.name.starts_with("long_") {
            // Long streams: no sentence dropped or repeated at utterance boundaries.
            let n = errors.reference_words;
            assert!(errors.deletions * 20 <= n, "{}: {errors:?}", recording.name);
            assert!(
                errors.insertions * 20 <= n,
                "{}: {errors:?}",
                recording.name
            );
        }
        *by_group.entry(recording.group().to_string()).or_default() =
            by_group.get(recording.group()).copied().unwrap_or_default() + errors;
        total = total + errors;
    }
    for (group, errors) in &by_group {
        println!(
            "group {group:>6}: WER {:5.1}% over {} words",
            100.0 * errors.rate(),
            errors.reference_words
        );
    }
    println!(
        "overall WER {:.1}% over {} words",
        100.0 * total.rate(),
        total.reference_words
    );
    assert!(total.rate() < MAX_WER, "WER {:.3}", total.rate());
}

#[tokio::test]
async fn an_idle_stream_is_flushed_and_closed() {
    let engine = EngineProcess::start(&["--idle-timeout-secs", "2"]).await;
    let recording = fixture("ls_1089-134691-0001.wav");
    let (samples, _) = read_samples(&recording);
    let (sender, receiver) = mpsc::channel(128);
    sender.send(config(16_000, 1, "PCM_INT16")).await.unwrap();
    for chunk in samples.chunks(1600) {
        sender.send(audio(pcm::encode_pcm16(chunk))).await.unwrap();
    }
    // The client keeps the stream open but sends nothing more.
    let mut client = SpeechToTextClient::new(engine.channel().await);
    let mut inbound = client
        .streaming_recognize(ReceiverStream::new(receiver))
        .await
        .unwrap()
        .into_inner();
    let mut text = String::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(60), inbound.message())
            .await
            .expect("the engine closes an idle stream")
        {
            Ok(Some(response)) if response.is_final => text.push_str(&response.transcript),
            Ok(Some(_)) => {}
            Ok(None) => panic!("an idle stream ends with a status"),
            Err(status) => break status,
        }
    };
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(status.message().contains("no audio"), "{status:?}");
    let errors = word_errors(&recording.reference, &text);
    assert!(
        errors.rate() < MAX_WER,
        "audio before the pause is kept: {text}"
    );
    drop(sender);
}
