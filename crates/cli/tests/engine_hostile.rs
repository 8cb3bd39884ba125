//! The real `earshot engine` against clients that misbehave on purpose: streams that never
//! start, session ids that are too long or not text, and clients that never read. Each must be
//! refused or ended with a defined status, and none may hold a session for long.

mod common;

use std::time::{Duration, Instant};

use common::EngineProcess;
use earshot_engine::client::read_to_end;
use earshot_proto::speech_to_text_client::SpeechToTextClient;
use earshot_proto::{StreamingRecognizeRequest, StreamingRecognizeResponse};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// The engine's defaults for its first-request and write timeouts.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

fn first_request(session_id: &str) -> StreamingRecognizeRequest {
    earshot_engine::client::first_request(session_id, 16_000)
}

fn finalize() -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        finalize: true,
        ..Default::default()
    }
}

/// Opens a stream, asks for one final and half-closes: its responses and how it ended.
async fn ask_once(
    engine: &EngineProcess,
    session_id: &str,
) -> (Vec<StreamingRecognizeResponse>, Status) {
    let requests = futures::stream::iter([first_request(session_id), finalize()]);
    let mut client = SpeechToTextClient::new(engine.channel().await);
    match client.streaming_recognize(requests).await {
        Ok(response) => read_to_end(response.into_inner()).await,
        Err(status) => (Vec::new(), status),
    }
}

/// Retries [`ask_once`] until the engine admits it; how long that took.
async fn wait_for_a_free_session(engine: &EngineProcess, limit: Duration) -> Duration {
    let started = Instant::now();
    loop {
        let (_, status) = ask_once(engine, "").await;
        if status.code() != Code::ResourceExhausted {
            assert_eq!(status.code(), Code::Ok, "{status:?}");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < limit,
            "no session came free within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
async fn a_stream_that_never_sends_a_request_is_ended_with_deadline_exceeded() {
    let engine = EngineProcess::start(&["--max-sessions", "1"]).await;
    let (_silent_client, silent) = mpsc::channel::<StreamingRecognizeRequest>(1);
    let opened = Instant::now();
    let mut inbound = SpeechToTextClient::new(engine.channel().await)
        .streaming_recognize(ReceiverStream::new(silent))
        .await
        .expect("admitted")
        .into_inner();
    let (_, refused) = ask_once(&engine, "").await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    let status = tokio::time::timeout(FIRST_REQUEST_TIMEOUT * 3, inbound.message())
        .await
        .expect("the engine ends the stream")
        .expect_err("with a status");
    let waited = opened.elapsed();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(
        waited >= FIRST_REQUEST_TIMEOUT - Duration::from_millis(100)
            && waited < FIRST_REQUEST_TIMEOUT * 2,
        "{waited:?}"
    );
    let freed_after = wait_for_a_free_session(&engine, Duration::from_secs(5)).await;
    println!("ended after {waited:?}; its session was free {freed_after:?} later");
}

#[tokio::test]
async fn a_session_id_that_is_too_long_or_not_printable_is_invalid_argument() {
    let engine = EngineProcess::start(&[]).await;
    for bad in [
        "x".repeat(129),
        "x".repeat(4 * 1024 * 1024 - 1024),
        "two\nlines".to_string(),
        "esc\u{1b}[31m".to_string(),
    ] {
        let (responses, status) = ask_once(&engine, &bad).await;
        assert_eq!(
            status.code(),
            Code::InvalidArgument,
            "{} bytes: {status:?}",
            bad.len()
        );
        assert!(responses.is_empty(), "{responses:?}");
        assert!(status.message().contains("session_id"), "{status:?}");
        assert!(status.message().len() < 200, "{status:?}");
    }
    let longest = "session-".repeat(16);
    assert_eq!(longest.len(), 128);
    let (responses, status) = ask_once(&engine, &longest).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(!responses.is_empty() && responses.iter().all(|r| r.session_id == longest));
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_its_session() {
    let engine = EngineProcess::start(&["--max-sessions", "1"]).await;
    // Its own connection, with a small window so that its unread responses fill it quickly.
    let channel: Channel = Endpoint::from_shared(engine.url.clone())
        .unwrap()
        .initial_stream_window_size(Some(65_535))
        .connect()
        .await
        .expect("connect");
    // Asks for a final again and again (answered without the model) and reads nothing.
    let requests =
        futures::stream::iter([first_request("")]).chain(futures::stream::repeat_with(finalize));
    let opened = Instant::now();
    let unread = SpeechToTextClient::new(channel)
        .streaming_recognize(requests)
        .await
        .expect("admitted")
        .into_inner();
    let (_, refused) = ask_once(&engine, "").await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    wait_for_a_free_session(&engine, WRITE_TIMEOUT * 3).await;
    let held = opened.elapsed();
    assert!(
        held >= WRITE_TIMEOUT - Duration::from_millis(100),
        "{held:?}"
    );
    // Reading at last, it finds the results buffered for it, then why its stream was ended.
    let (responses, status) = tokio::time::timeout(Duration::from_secs(30), read_to_end(unread))
        .await
        .expect("the stream has ended");
    assert!(!responses.is_empty());
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("did not read"), "{status:?}");
    println!(
        "held its session {held:?}; {} responses were waiting for it",
        responses.len()
    );
}
