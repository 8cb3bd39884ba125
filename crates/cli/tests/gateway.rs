//! The gateway end to end: `earshot serve` on port 0, driven by a real WebSocket client with
//! real speech (protocol v1, docs/websocket.md).

mod common;

use std::time::Duration;

use common::ws::{
    Socket, connect as connect_url, final_text, of_type, read_session_id, read_to_close,
    send_audio, send_text, speech, stored_text, stream_and_close,
};
use common::{
    GatewayProcess, MAX_WER, fixture, http_get, http_get_upgrade, metric_value, read_samples,
};
use earshot_audio::pcm;
use earshot_loadgen::wer::word_errors;
use futures::{SinkExt, StreamExt};
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

async fn connect(serve: &GatewayProcess, query: &str) -> Socket {
    connect_url(&serve.ws_url(query)).await
}

#[tokio::test]
async fn streams_speech_and_closes_cleanly() {
    let serve = GatewayProcess::serve(&[]).await;
    let recording = fixture("jfk.wav");
    let (samples, _) = read_samples(&recording);
    let mut socket = connect(&serve, "").await;
    // 100 ms frames at real-time pace.
    let (messages, code) = stream_and_close(&mut socket, &samples, true).await;
    assert_eq!(messages[0]["type"], "session", "{:?}", messages[0]);
    assert_eq!(messages[0]["sample_rate"], 16_000);
    let results = of_type(&messages, "result");
    let first_partial = results.iter().position(|r| r["is_final"] == false);
    let first_final = results.iter().position(|r| r["is_final"] == true);
    assert!(
        matches!((first_partial, first_final), (Some(p), Some(f)) if p < f),
        "partials come before finals"
    );
    let text = final_text(&messages);
    let errors = word_errors(&recording.reference, &text);
    assert!(errors.rate() < MAX_WER, "{text:?}: {errors:?}");
    let final_result = results.iter().find(|r| r["is_final"] == true).unwrap();
    assert!(
        final_result["words"]
            .as_array()
            .is_some_and(|w| !w.is_empty())
    );
    assert!(final_result["confidence"].as_f64().unwrap() > 0.0);
    assert!(!of_type(&messages, "speech_started").is_empty());
    let closed = messages.last().unwrap();
    assert_eq!(closed["type"], "closed");
    assert_eq!(closed["reason"], "normal");
    assert!(closed["audio_ms"].as_u64().unwrap() >= 10_900);
    assert_eq!(code, Some(CloseCode::Normal));

    // Complete the closing handshake, then wait for the session to be counted as closed.
    let _ = socket.close(None).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let metrics = loop {
        let metrics = serve.metrics().await;
        if metrics.contains("stt_sessions_closed_total{reason=\"normal\"} 1") {
            break metrics;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let value = |name: &str| -> f64 {
        metric_value(&metrics, name).unwrap_or_else(|| panic!("{name} missing:\n{metrics}"))
    };
    assert_eq!(value("stt_audio_chunks_received_total"), 110.0);
    assert!(value("stt_latency_seconds_count") >= 2.0);
    assert!(value("stt_latency_seconds_bucket{le=\"+Inf\"}") >= 2.0);
    assert_eq!(value("stt_sessions_closed_total{reason=\"normal\"}"), 1.0);
    assert!(value("stt_first_partial_seconds_count") >= 1.0);
    assert!(value("stt_final_latency_seconds_count") >= 1.0);
}

#[tokio::test]
async fn finalize_and_ping_are_answered() {
    let serve = GatewayProcess::serve(&[]).await;
    let recording = fixture("lv_austen-0870.wav");
    let (samples, _) = read_samples(&recording);
    let mut socket = connect(&serve, "?interim_results=false").await;
    send_text(&mut socket, r#"{"type":"ping","id":42}"#).await;
    send_audio(&mut socket, &samples[..16_000 * 3], false).await;
    send_text(&mut socket, r#"{"type":"finalize"}"#).await;
    let mut pong = false;
    let answer = loop {
        let message = tokio::time::timeout(Duration::from_secs(60), socket.next())
            .await
            .expect("answered")
            .unwrap()
            .unwrap();
        let Message::Text(text) = message else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        if value["type"] == "pong" {
            assert_eq!(value["id"], 42);
            pong = true;
        }
        if value["type"] == "result" {
            assert_eq!(
                value["is_final"], true,
                "interim_results=false: finals only"
            );
            if value["from_finalize"] == true {
                break value;
            }
        }
    };
    assert!(pong);
    assert!(!answer["text"].as_str().unwrap().is_empty());
    socket.close(None).await.unwrap();
}

#[tokio::test]
async fn bad_input_gets_an_error_and_the_documented_close_code() {
    let serve = GatewayProcess::serve(&["--max-frame-bytes", "32000"]).await;
    let cases: Vec<(&str, Message, &str, CloseCode)> = vec![
        (
            "",
            Message::Text(r#"{"type":"dance"}"#.into()),
            "invalid_message",
            CloseCode::Unsupported,
        ),
        (
            "",
            Message::Text("not json".into()),
            "invalid_message",
            CloseCode::Unsupported,
        ),
        (
            "",
            Message::Binary(vec![0u8; 3201].into()),
            "invalid_audio",
            CloseCode::Unsupported,
        ),
        (
            "?encoding=pcm_f32le",
            Message::Binary(vec![0u8; 3202].into()),
            "invalid_audio",
            CloseCode::Unsupported,
        ),
        (
            "",
            Message::Binary(vec![0u8; 40_000].into()),
            "frame_too_large",
            CloseCode::Policy,
        ),
        (
            "?sample_rate=96000",
            Message::Binary(vec![0u8; 3200].into()),
            "invalid_parameter",
            CloseCode::Unsupported,
        ),
    ];
    for (query, message, expected_code, expected_close) in cases {
        let mut socket = connect(&serve, query).await;
        let _ = socket.send(message).await;
        let (messages, code) = read_to_close(&mut socket).await;
        let errors = of_type(&messages, "error");
        assert_eq!(errors.len(), 1, "{query} {messages:?}");
        assert_eq!(errors[0]["code"], expected_code, "{messages:?}");
        assert!(!errors[0]["message"].as_str().unwrap().is_empty());
        assert_eq!(code, Some(expected_close), "{expected_code}: {messages:?}");
        assert_eq!(messages.last().unwrap()["type"], "closed");
    }
}

#[tokio::test]
async fn overload_is_refused_before_the_upgrade_with_503() {
    let serve = GatewayProcess::serve(&["--max-connections", "1"]).await;
    let _first = connect(&serve, "").await;
    let (status, response) = http_get_upgrade(&serve.addr).await;
    assert_eq!(status, 503, "{response}");
    assert!(
        response.to_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    assert_eq!(http_get(&serve.addr, "/healthz").await.0, 200);
}

#[tokio::test]
async fn a_client_faster_than_the_engine_is_told_to_slow_down_then_resume() {
    let serve = GatewayProcess::serve(&["--slow-down-ms", "1000", "--resume-ms", "200"]).await;
    let mut socket = connect(&serve, "").await;
    // 25 s of speech at once: far faster than the engine transcribes it on this machine.
    send_audio(&mut socket, &speech(25), false).await;
    send_text(&mut socket, r#"{"type":"close"}"#).await;
    let (messages, code) = read_to_close(&mut socket).await;
    let kinds: Vec<&str> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap())
        .filter(|k| *k == "slow_down" || *k == "resume")
        .collect();
    assert!(
        kinds.starts_with(&["slow_down", "resume"]),
        "slow_down then resume expected: {kinds:?}"
    );
    let slow_down = of_type(&messages, "slow_down")[0];
    assert!(slow_down["buffered_ms"].as_u64().unwrap() >= 1000);
    assert_eq!(code, Some(CloseCode::Normal));
    assert_eq!(messages.last().unwrap()["reason"], "normal");
}

/// The transcript so far is kept: the finals the client saw, and those of the audio the engine
/// had already taken, which it flushes after the close.
#[tokio::test]
async fn passing_the_buffer_limit_closes_with_1008_and_keeps_the_transcript() {
    // A flood well past the pace limit, which is not what this test is about.
    let serve = GatewayProcess::serve(&["--max-buffer-bytes", "300000", "--max-pace", "0"]).await;
    let socket = connect(&serve, "").await;
    let (mut writer, mut reader) = socket.split();
    // A client that ignores slow_down: it keeps writing while the server answers.
    let flood = tokio::spawn(async move {
        for frame in speech(40).chunks(1600) {
            if writer
                .send(Message::Binary(pcm::encode_pcm16(frame).into()))
                .await
                .is_err()
            {
                break;
            }
        }
        writer
    });
    let mut messages: Vec<Value> = Vec::new();
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(120), reader.next())
            .await
            .expect("the server answers")
        {
            Some(Ok(Message::Text(text))) => messages.push(serde_json::from_str(&text).unwrap()),
            Some(Ok(Message::Close(frame))) => break frame.map(|f| f.code),
            Some(Ok(_)) => {}
            Some(Err(err)) => panic!("{err}: {messages:?}"),
            None => break None,
        }
    };
    let _ = flood.await;
    let errors = of_type(&messages, "error");
    assert_eq!(errors.len(), 1, "{messages:?}");
    assert_eq!(errors[0]["code"], "buffer_limit", "{messages:?}");
    assert_eq!(
        messages.last().unwrap()["reason"],
        "buffer_limit",
        "{messages:?}"
    );
    assert_eq!(code, Some(CloseCode::Policy));

    let session_id = messages[0]["session_id"].as_str().unwrap();
    let stored = serve.stored_session(session_id).await;
    assert_eq!(
        stored["session"]["close_reason"], "buffer_limit",
        "{stored}"
    );
    assert_eq!(stored["session"]["status"], "failed");
    assert!(stored["session"]["audio_ms"].as_i64().unwrap() > 0);
    let segments = stored["segments"].as_array().unwrap();
    assert!(!segments.is_empty(), "{stored}");
    let sent_finals = of_type(&messages, "result")
        .iter()
        .filter(|r| r["is_final"] == true && r["text"] != "")
        .count();
    assert!(segments.len() >= sent_finals, "{stored}");
}

#[tokio::test]
async fn a_client_that_just_disconnects_still_gets_its_audio_transcribed_and_stored() {
    let serve = GatewayProcess::serve(&[]).await;
    let recording = fixture("ls_1089-134691-0001.wav");
    let (samples, _) = read_samples(&recording);
    let mut socket = connect(&serve, "").await;
    let session_id = read_session_id(&mut socket).await;
    send_audio(&mut socket, &samples, false).await;
    // Like the seed's client: no close message, just the socket closed (a browser's
    // `ws.close()`, which still reads until the connection ends).
    socket.close(None).await.unwrap();
    while let Some(Ok(_)) = socket.next().await {}
    let stored = serve.stored_session(&session_id).await;
    assert_eq!(
        stored["session"]["close_reason"], "client_closed",
        "{stored}"
    );
    assert_eq!(stored["session"]["status"], "completed");
    let text = stored_text(&stored);
    let errors = word_errors(&recording.reference, &text);
    assert!(errors.rate() < MAX_WER, "{text:?}");
}

/// Tiny frames fill the engine queue's 1024 slots long before the byte limit: the gateway then
/// stops reading (TCP pushes back) instead of refusing, and every frame is transcribed.
#[tokio::test]
async fn a_queue_full_of_tiny_frames_pauses_reading_instead_of_closing() {
    let serve = GatewayProcess::serve(&[
        "--max-pace",
        "0",
        "--max-buffer-bytes",
        "4000000",
        "--slow-down-ms",
        "100000",
        "--resume-ms",
        "50000",
    ])
    .await;
    let mut socket = connect(&serve, "").await;
    let samples = speech(40);
    // 10 ms frames as fast as the connection takes them.
    for frame in samples.chunks(160) {
        socket
            .send(Message::Binary(pcm::encode_pcm16(frame).into()))
            .await
            .unwrap();
    }
    send_text(&mut socket, r#"{"type":"close"}"#).await;
    let (messages, code) = read_to_close(&mut socket).await;
    assert!(of_type(&messages, "error").is_empty(), "{messages:?}");
    assert_eq!(code, Some(CloseCode::Normal));
    let closed = messages.last().unwrap();
    assert_eq!(closed["reason"], "normal");
    assert_eq!(closed["audio_ms"], 40_000);
    assert!(
        final_text(&messages).split(' ').count() > 60,
        "{messages:?}"
    );
    let metrics = serve.metrics().await;
    assert!(
        metric_value(&metrics, "stt_read_pauses_total").unwrap() >= 1.0,
        "{metrics}"
    );
}

/// Recordings from the shared corpus (LJ Speech, LibriSpeech, LibriVox), two sessions at a
/// time, each sent in 100 ms frames at twice real-time pace: the finals pass the engine's WER
/// threshold. Falls back to the bundled recordings when the corpus is absent.
#[tokio::test]
async fn shared_corpus_through_the_gateway_at_twice_real_time() {
    let recordings: Vec<_> = match earshot_loadgen::corpus::shared_dir() {
        Some(dir) => {
            let all = earshot_loadgen::corpus::load(&dir).unwrap();
            ["lj", "ls", "lv"]
                .into_iter()
                .flat_map(|group| {
                    all.iter()
                        .filter(move |r| r.group() == group)
                        .take(5)
                        .cloned()
                })
                .collect()
        }
        None => {
            println!(
                "shared speech corpus not found (../shared/speech): using the bundled recordings"
            );
            common::fixtures()
        }
    };
    let serve = GatewayProcess::serve(&[]).await;
    let serve = &serve;
    let results: Vec<_> = futures::stream::iter(recordings.iter().map(|recording| async move {
        let (samples, rate) = read_samples(recording);
        let mut socket = connect(serve, &format!("?sample_rate={rate}")).await;
        let frame = rate as usize / 10;
        let started = tokio::time::Instant::now();
        for (idx, chunk) in samples.chunks(frame).enumerate() {
            tokio::time::sleep_until(started + Duration::from_millis(50 * idx as u64)).await;
            socket
                .send(Message::Binary(pcm::encode_pcm16(chunk).into()))
                .await
                .unwrap();
        }
        send_text(&mut socket, r#"{"type":"close"}"#).await;
        let (messages, code) = read_to_close(&mut socket).await;
        assert_eq!(
            code,
            Some(CloseCode::Normal),
            "{}: {messages:?}",
            recording.name
        );
        (recording, final_text(&messages))
    }))
    .buffer_unordered(2)
    .collect()
    .await;
    let mut total = earshot_loadgen::wer::WordErrors::default();
    for (recording, text) in &results {
        let errors = word_errors(&recording.reference, text);
        println!("{:>32}  WER {:5.1}%", recording.name, 100.0 * errors.rate());
        total = total + errors;
    }
    println!(
        "{} recordings, WER {:.1}% over {} words",
        results.len(),
        100.0 * total.rate(),
        total.reference_words
    );
    assert!(total.rate() < MAX_WER, "{total:?}");
}
