//! The session in process: an in-memory socket, a fake engine the test plays, a real
//! in-memory SQLite store where storage matters, and a paused clock where time matters.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::ws::Message;
use earshot_proto::{StreamingRecognizeRequest, StreamingRecognizeResponse, WordInfo};
use earshot_store::{SessionStatus, SqliteStore, StoreWriter, TranscriptStore};
use futures::channel::mpsc as fmpsc;
use futures::future::BoxFuture;
use futures::{Sink, SinkExt, Stream, StreamExt};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::GatewayConfig;
use crate::engine_link::{
    AUDIO_QUEUE_FRAMES, EngineConnector, EngineLink, OpenError, QueuedRequests, audio_queue,
};
use crate::metrics::GatewayMetrics;
use crate::protocol::StreamSettings;

// ---- the socket ----------------------------------------------------------------------------

struct TestSocket {
    incoming: fmpsc::Receiver<Result<Message, axum::Error>>,
    outgoing: fmpsc::Sender<Message>,
}

impl Stream for TestSocket {
    type Item = Result<Message, axum::Error>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.incoming).poll_next(cx)
    }
}

impl Sink<Message> for TestSocket {
    type Error = axum::Error;
    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing)
            .poll_ready(cx)
            .map_err(axum::Error::new)
    }
    fn start_send(mut self: Pin<&mut Self>, item: Message) -> Result<(), Self::Error> {
        Pin::new(&mut self.outgoing)
            .start_send(item)
            .map_err(axum::Error::new)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing)
            .poll_flush(cx)
            .map_err(axum::Error::new)
    }
    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.outgoing)
            .poll_close(cx)
            .map_err(axum::Error::new)
    }
}

/// The client's end of a [`TestSocket`].
struct Client {
    to_server: fmpsc::Sender<Result<Message, axum::Error>>,
    from_server: fmpsc::Receiver<Message>,
}

fn socket_pair(outgoing_capacity: usize) -> (TestSocket, Client) {
    let (to_server, incoming) = fmpsc::channel(64);
    let (outgoing, from_server) = fmpsc::channel(outgoing_capacity);
    (
        TestSocket { incoming, outgoing },
        Client {
            to_server,
            from_server,
        },
    )
}

impl Client {
    async fn send(&mut self, message: Message) {
        self.to_server
            .send(Ok(message))
            .await
            .expect("session reads");
    }

    async fn text(&mut self, json: &str) {
        self.send(Message::Text(json.into())).await;
    }

    async fn audio(&mut self, n_bytes: usize) {
        self.send(Message::Binary(vec![0u8; n_bytes].into())).await;
    }

    /// The next server frame, answering WebSocket pings is left to the caller.
    async fn frame(&mut self) -> Message {
        tokio::time::timeout(Duration::from_secs(3600), self.from_server.next())
            .await
            .expect("a frame in time")
            .expect("the socket is open")
    }

    /// The next JSON message (pings skipped).
    async fn json(&mut self) -> Value {
        loop {
            match self.frame().await {
                Message::Text(text) => return serde_json::from_str(&text).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a JSON message, got {other:?}"),
            }
        }
    }

    /// The next JSON message of `kind`, skipping others.
    async fn json_of(&mut self, kind: &str) -> Value {
        loop {
            let message = self.json().await;
            if message["type"] == kind {
                return message;
            }
        }
    }

    /// Reads to the close frame: the JSON messages before it and its code.
    async fn until_close(&mut self) -> (Vec<Value>, u16) {
        let mut messages = Vec::new();
        loop {
            match self.frame().await {
                Message::Text(text) => messages.push(serde_json::from_str(&text).unwrap()),
                Message::Close(frame) => return (messages, frame.map_or(0, |f| f.code)),
                _ => {}
            }
        }
    }
}

// ---- the engine ----------------------------------------------------------------------------

/// One stream as the fake engine sees it.
struct EngineSide {
    first: StreamingRecognizeRequest,
    requests: QueuedRequests,
    responses: mpsc::Sender<Result<StreamingRecognizeResponse, tonic::Status>>,
}

enum Behaviour {
    Accept,
    Refuse(OpenError),
    Panic,
}

struct FakeConnector {
    behaviour: Behaviour,
    streams: mpsc::UnboundedSender<EngineSide>,
}

impl EngineConnector for FakeConnector {
    fn open(
        &self,
        first: StreamingRecognizeRequest,
    ) -> BoxFuture<'_, Result<EngineLink, OpenError>> {
        Box::pin(async move {
            match &self.behaviour {
                Behaviour::Refuse(err) => return Err(err.clone()),
                Behaviour::Panic => panic!("the connector broke"),
                Behaviour::Accept => {}
            }
            let (audio, requests) = audio_queue(AUDIO_QUEUE_FRAMES);
            let (responses, receiver) = mpsc::channel(64);
            let _ = self.streams.send(EngineSide {
                first,
                requests,
                responses,
            });
            Ok(EngineLink {
                audio,
                responses: tokio_stream::wrappers::ReceiverStream::new(receiver).boxed(),
                claim: Box::new(()),
            })
        })
    }
}

fn final_result(segment: i32, text: &str) -> StreamingRecognizeResponse {
    StreamingRecognizeResponse {
        transcript: text.into(),
        is_final: true,
        confidence: 0.9,
        start_ms: 0,
        end_ms: 1000,
        segment_index: segment,
        words: text
            .split_whitespace()
            .map(|word| WordInfo {
                word: word.into(),
                start_ms: 0,
                end_ms: 100,
                confidence: 0.9,
            })
            .collect(),
        ..Default::default()
    }
}

fn partial(segment: i32, text: &str) -> StreamingRecognizeResponse {
    StreamingRecognizeResponse {
        transcript: text.into(),
        is_final: false,
        segment_index: segment,
        end_ms: 100,
        stability: 0.5,
        ..Default::default()
    }
}

impl EngineSide {
    async fn respond(&self, response: StreamingRecognizeResponse) {
        self.responses.send(Ok(response)).await.unwrap();
    }

    /// Reads requests until the half-close, counting audio bytes and finalize requests.
    async fn read_to_end(&mut self) -> (usize, usize, usize) {
        let (mut bytes, mut finalizes, mut empty) = (0, 0, 0);
        while let Some(request) = self.requests.next().await {
            bytes += request.audio_content.len();
            finalizes += usize::from(request.finalize);
            empty += usize::from(request.audio_content.is_empty() && !request.finalize);
        }
        (bytes, finalizes, empty)
    }
}

// ---- the session under test ----------------------------------------------------------------

struct Harness {
    env: SessionEnv,
    streams: mpsc::UnboundedReceiver<EngineSide>,
    store: Option<Arc<dyn TranscriptStore>>,
    writer: Option<StoreWriter>,
}

fn harness(config: GatewayConfig, behaviour: Behaviour) -> Harness {
    let (streams_tx, streams) = mpsc::unbounded_channel();
    let env = SessionEnv {
        config: Arc::new(config),
        metrics: GatewayMetrics::default(),
        store: None,
        connector: Arc::new(FakeConnector {
            behaviour,
            streams: streams_tx,
        }),
        shutdown: CancellationToken::new(),
        live: Arc::default(),
    };
    Harness {
        env,
        streams,
        store: None,
        writer: None,
    }
}

impl Harness {
    async fn with_store(mut self) -> Self {
        let store: Arc<dyn TranscriptStore> =
            Arc::new(SqliteStore::open_in_memory().await.unwrap());
        let writer = StoreWriter::spawn(store.clone(), 1000);
        self.env.store = Some(writer.clone());
        self.store = Some(store);
        self.writer = Some(writer);
        self
    }

    /// Starts a session; returns the client, its session id and the session's task.
    async fn start(&self, settings: Result<StreamSettings, String>, outgoing: usize) -> Started {
        let (socket, mut client) = socket_pair(outgoing);
        let session = Session::new(self.env.clone(), socket, None, settings);
        let id = session.id().to_string();
        let task = tokio::spawn(session.run());
        let first = if outgoing > 0 {
            Some(client.json().await)
        } else {
            None
        };
        Started {
            client,
            id,
            task,
            first,
        }
    }

    async fn engine(&mut self) -> EngineSide {
        tokio::time::timeout(Duration::from_secs(3600), self.streams.recv())
            .await
            .expect("an engine stream in time")
            .expect("connector alive")
    }

    async fn stored(&self, id: &str) -> Option<earshot_store::SessionWithTranscript> {
        let writer = self.writer.as_ref().unwrap();
        assert_eq!(writer.flush(Duration::from_secs(10)).await, 0);
        self.store.as_ref().unwrap().get_session(id).await.unwrap()
    }
}

struct Started {
    client: Client,
    id: String,
    task: tokio::task::JoinHandle<CloseReason>,
    first: Option<Value>,
}

impl Started {
    /// The client goes away (ending the closing handshake); the session's end.
    async fn finished(self) -> CloseReason {
        drop(self.client);
        self.task.await.unwrap()
    }
}

fn config() -> GatewayConfig {
    GatewayConfig::default()
}

fn codes(messages: &[Value]) -> Vec<String> {
    messages
        .iter()
        .filter(|m| m["type"] == "error")
        .map(|m| m["code"].as_str().unwrap().to_string())
        .collect()
}

fn closed(messages: &[Value]) -> &Value {
    messages
        .iter()
        .find(|m| m["type"] == "closed")
        .expect("a closed message")
}

// ---- the tests -----------------------------------------------------------------------------

#[tokio::test]
async fn a_session_streams_audio_and_stores_finals_under_the_live_segment_number() {
    let mut h = harness(config(), Behaviour::Accept).with_store().await;
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    let session = s.first.take().unwrap();
    assert_eq!(session["type"], "session");
    assert_eq!(session["session_id"], s.id.as_str());
    s.client.audio(3200).await;
    let mut engine = h.engine().await;
    let config = engine.first.audio_config.clone().unwrap();
    assert_eq!(
        (config.sample_rate, config.encoding.as_str()),
        (16_000, "PCM_INT16")
    );
    assert_eq!(engine.first.session_id, s.id);
    engine.respond(partial(3, "hello")).await;
    let result = s.client.json_of("result").await;
    assert_eq!(
        (result["is_final"].clone(), result["segment"].clone()),
        (false.into(), 3.into())
    );
    engine.respond(final_result(3, "hello there")).await;
    let result = s.client.json_of("result").await;
    assert_eq!(result["text"], "hello there");
    assert_eq!(result["words"].as_array().unwrap().len(), 2);
    s.client.text(r#"{"type":"close"}"#).await;
    let (bytes, _, _) = engine.read_to_end().await;
    assert_eq!(bytes, 3200);
    engine.respond(final_result(4, "bye")).await;
    drop(engine);
    let (messages, code) = s.client.until_close().await;
    assert_eq!(code, 1000);
    assert_eq!(messages.last().unwrap()["type"], "closed");
    let closed = closed(&messages);
    assert_eq!(
        (closed["reason"].clone(), closed["segments"].clone()),
        ("normal".into(), 2.into())
    );
    assert_eq!(closed["audio_ms"], 100);
    assert_eq!(s.task.await.unwrap(), CloseReason::Normal);
    let stored = h.stored(&s.id).await.unwrap();
    assert_eq!(stored.session.status, SessionStatus::Completed);
    let indices: Vec<i32> = stored.segments.iter().map(|seg| seg.index).collect();
    assert_eq!(indices, vec![3, 4], "stored index = live segment");
    assert_eq!(h.env.metrics.connections_active.get(), 0);
}

/// Every fatal row of docs/websocket.md's error table that the client's input causes.
#[tokio::test]
async fn bad_input_gets_its_error_code_and_close_code_and_no_store_row() {
    let cases: Vec<(&str, Vec<Message>, &str, u16)> = vec![
        (
            "bad json",
            vec![Message::Text("nope".into())],
            "invalid_message",
            1003,
        ),
        (
            "unknown type",
            vec![Message::Text(r#"{"type":"dance"}"#.into())],
            "invalid_message",
            1003,
        ),
        (
            "odd bytes",
            vec![Message::Binary(vec![0u8; 3].into())],
            "invalid_audio",
            1003,
        ),
        (
            "bad config",
            vec![Message::Text(r#"{"type":"config","sample_rate":5}"#.into())],
            "invalid_parameter",
            1003,
        ),
        (
            "big frame",
            vec![Message::Binary(vec![0u8; 256 * 1024 + 2].into())],
            "frame_too_large",
            1008,
        ),
    ];
    for (name, input, code, close) in cases {
        let h = harness(config(), Behaviour::Accept).with_store().await;
        let mut s = h.start(Ok(StreamSettings::default()), 64).await;
        for message in input {
            s.client.send(message).await;
        }
        let (messages, got_close) = s.client.until_close().await;
        assert_eq!(codes(&messages), vec![code.to_string()], "{name}");
        assert_eq!(got_close, close, "{name}");
        assert!(h.stored(&s.id).await.is_none(), "{name}: nothing stored");
    }
}

#[tokio::test]
async fn an_invalid_query_is_reported_after_the_upgrade() {
    let h = harness(config(), Behaviour::Accept).with_store().await;
    let mut s = h
        .start(Err("sample_rate \"x\" is not a whole number".into()), 64)
        .await;
    let error = s.first.take().unwrap();
    assert_eq!(error["code"], "invalid_parameter");
    assert!(error["message"].as_str().unwrap().contains("sample_rate"));
    let (messages, close) = s.client.until_close().await;
    assert_eq!(closed(&messages)["reason"], "invalid_input");
    assert_eq!(close, 1003);
    assert!(h.stored(&s.id).await.is_none());
}

#[tokio::test]
async fn a_message_over_the_websocket_limit_gets_1009() {
    let h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    let too_long =
        tungstenite::Error::Capacity(tungstenite::error::CapacityError::MessageTooLong {
            size: 1 << 20,
            max_size: 1 << 19,
        });
    s.client
        .to_server
        .send(Err(axum::Error::new(too_long)))
        .await
        .unwrap();
    let (messages, close) = s.client.until_close().await;
    assert_eq!(codes(&messages), vec!["message_too_big"]);
    assert_eq!(close, 1009);
    assert_eq!(s.task.await.unwrap(), CloseReason::MessageTooBig);
}

#[tokio::test]
async fn config_before_audio_answers_a_new_session_and_after_audio_is_refused_not_fatally() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client
        .text(r#"{"type":"config","sample_rate":48000,"encoding":"pcm_f32le"}"#)
        .await;
    let session = s.client.json().await;
    assert_eq!(
        (session["sample_rate"].clone(), session["encoding"].clone()),
        (48_000.into(), "pcm_f32le".into())
    );
    s.client.audio(4 * 480).await;
    let engine = h.engine().await;
    assert_eq!(
        engine.first.audio_config.as_ref().unwrap().sample_rate,
        48_000
    );
    s.client
        .text(r#"{"type":"config","sample_rate":16000}"#)
        .await;
    assert_eq!(s.client.json().await["code"], "config_after_audio");
    s.client.text(r#"{"type":"ping","id":"x"}"#).await;
    let pong = s.client.json().await;
    assert_eq!(
        (pong["type"].clone(), pong["id"].clone()),
        ("pong".into(), "x".into())
    );
}

#[tokio::test]
async fn engine_refusals_map_to_overloaded_and_unavailable() {
    let cases = [
        (
            OpenError::Overloaded {
                detail: "e1: full".into(),
            },
            "overloaded",
            1013,
        ),
        (
            OpenError::Unavailable {
                detail: "e1: down".into(),
            },
            "engine_unavailable",
            1011,
        ),
    ];
    for (refusal, code, close) in cases {
        let h = harness(config(), Behaviour::Refuse(refusal))
            .with_store()
            .await;
        let mut s = h.start(Ok(StreamSettings::default()), 64).await;
        s.client.audio(320).await;
        let (messages, got) = s.client.until_close().await;
        assert_eq!(codes(&messages), vec![code.to_string()]);
        assert!(
            messages[0]["message"].as_str().unwrap().contains("e1"),
            "{messages:?}"
        );
        assert_eq!(got, close);
        assert!(
            h.stored(&s.id).await.is_none(),
            "a refused session leaves no row"
        );
    }
}

#[tokio::test]
async fn an_engine_failure_ends_with_1011_and_keeps_the_finals_so_far() {
    for failure in ["status", "end"] {
        let mut h = harness(config(), Behaviour::Accept).with_store().await;
        let mut s = h.start(Ok(StreamSettings::default()), 64).await;
        s.client.audio(3200).await;
        let engine = h.engine().await;
        engine.respond(final_result(0, "first words")).await;
        assert_eq!(s.client.json_of("result").await["text"], "first words");
        if failure == "status" {
            engine
                .responses
                .send(Err(tonic::Status::internal("boom")))
                .await
                .unwrap();
        }
        drop(engine);
        let (messages, close) = s.client.until_close().await;
        assert_eq!(codes(&messages), vec!["engine_failure"], "{failure}");
        assert_eq!(close, 1011);
        let id = s.id.clone();
        assert_eq!(s.finished().await, CloseReason::EngineFailure);
        let stored = h.stored(&id).await.unwrap();
        assert_eq!(stored.session.status, SessionStatus::Failed);
        assert_eq!(stored.segments.len(), 1);
        assert_eq!(
            stored.session.close_reason.as_deref(),
            Some("engine_failure")
        );
    }
}

#[tokio::test]
async fn the_engines_own_idle_timeout_is_an_idle_timeout_not_a_failure() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(320).await;
    let engine = h.engine().await;
    engine
        .responses
        .send(Err(tonic::Status::out_of_range("idle")))
        .await
        .unwrap();
    let (messages, close) = s.client.until_close().await;
    assert_eq!(codes(&messages), vec!["idle_timeout"]);
    assert_eq!(close, 1000);
}

#[tokio::test]
async fn slow_down_then_resume_as_the_engine_falls_behind_and_catches_up() {
    let mut config = config();
    config.slow_down_ms = 300;
    config.resume_ms = 100;
    let mut h = harness(config, Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    // 100 ms frames; the engine reads nothing yet.
    for _ in 0..3 {
        s.client.audio(3200).await;
    }
    let slow = s.client.json().await;
    assert_eq!(slow["type"], "slow_down");
    assert!(slow["buffered_ms"].as_u64().unwrap() >= 300);
    let mut engine = h.engine().await;
    for _ in 0..3 {
        engine.requests.next().await.unwrap();
    }
    assert_eq!(s.client.json().await["type"], "resume");
    assert_eq!(h.env.metrics.slow_down.get(), 1);
}

#[tokio::test]
async fn past_the_buffer_limit_the_session_is_closed_with_1008_and_its_finals_stored() {
    let mut config = config();
    config.max_buffer_bytes = 16_000;
    config.max_frame_bytes = 3200;
    let mut h = harness(config, Behaviour::Accept).with_store().await;
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(3200).await;
    let mut engine = h.engine().await;
    engine.respond(final_result(0, "kept")).await;
    for _ in 0..5 {
        s.client.audio(3200).await;
    }
    let (messages, close) = s.client.until_close().await;
    assert!(
        codes(&messages).contains(&"buffer_limit".to_string()),
        "{messages:?}"
    );
    assert_eq!(close, 1008);
    // The audio the engine already took still counts: it reads to the half-close.
    engine.read_to_end().await;
    drop(engine);
    assert_eq!(s.task.await.unwrap(), CloseReason::BufferLimit);
    let stored = h.stored(&s.id).await.unwrap();
    assert_eq!(stored.session.close_reason.as_deref(), Some("buffer_limit"));
    assert_eq!(stored.segments[0].text, "kept");
}

#[tokio::test]
async fn a_client_that_disconnects_is_still_flushed_and_stored() {
    let mut h = harness(config(), Behaviour::Accept).with_store().await;
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(3200).await;
    let mut engine = h.engine().await;
    drop(s.client);
    let (bytes, _, _) = engine.read_to_end().await;
    assert_eq!(bytes, 3200, "the half-close follows the client's audio");
    engine
        .respond(final_result(0, "after the client left"))
        .await;
    drop(engine);
    assert_eq!(s.task.await.unwrap(), CloseReason::ClientClosed);
    let stored = h.stored(&s.id).await.unwrap();
    assert_eq!(stored.session.status, SessionStatus::Completed);
    assert_eq!(stored.segments[0].text, "after the client left");
    assert_eq!(h.env.metrics.connections_active.get(), 0);
}

#[tokio::test]
async fn an_engine_failure_while_flushing_a_gone_client_is_stored_as_failed() {
    let mut h = harness(config(), Behaviour::Accept).with_store().await;
    let s = h.start(Ok(StreamSettings::default()), 64).await;
    let mut client = s.client;
    client.audio(3200).await;
    let mut engine = h.engine().await;
    drop(client);
    engine.read_to_end().await;
    engine
        .responses
        .send(Err(tonic::Status::unavailable("gone")))
        .await
        .unwrap();
    assert_eq!(s.task.await.unwrap(), CloseReason::EngineFailure);
    let stored = h.stored(&s.id).await.unwrap();
    assert_eq!(stored.session.status, SessionStatus::Failed);
}

#[tokio::test]
async fn a_failed_write_before_any_audio_ends_the_session_without_a_panic() {
    let h = harness(config(), Behaviour::Accept);
    let (socket, client) = socket_pair(0);
    drop(client.from_server);
    let session = Session::new(h.env.clone(), socket, None, Ok(StreamSettings::default()));
    let reason = tokio::time::timeout(Duration::from_secs(5), session.run())
        .await
        .expect("ends");
    assert_eq!(reason, CloseReason::ClientClosed);
    drop(client.to_server);
    assert_eq!(h.env.metrics.connections_active.get(), 0);
}

#[tokio::test]
async fn a_panic_in_the_session_closes_it_with_1011_internal() {
    let h = harness(config(), Behaviour::Panic);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(320).await;
    let (messages, close) = s.client.until_close().await;
    assert_eq!(codes(&messages), vec!["internal"]);
    assert_eq!(closed(&messages)["reason"], "internal");
    assert_eq!(close, 1011);
    assert_eq!(s.task.await.unwrap(), CloseReason::Internal);
    assert_eq!(h.env.metrics.connections_active.get(), 0);
}

#[tokio::test]
async fn finalize_and_keepalive_reach_the_engine() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(320).await;
    s.client.text(r#"{"type":"finalize"}"#).await;
    s.client.text(r#"{"type":"keepalive"}"#).await;
    s.client.text(r#"{"type":"close"}"#).await;
    let mut engine = h.engine().await;
    let (bytes, finalizes, keepalives) = engine.read_to_end().await;
    assert_eq!((bytes, finalizes, keepalives), (320, 1, 1));
}

// ---- time ----------------------------------------------------------------------------------

#[tokio::test(start_paused = true)]
async fn a_client_that_sends_nothing_is_closed_after_the_first_message_timeout() {
    let h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    let started = tokio::time::Instant::now();
    let (messages, close) = s.client.until_close().await;
    assert_eq!(codes(&messages), vec!["first_message_timeout"]);
    assert_eq!(close, 1008);
    assert_eq!(started.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn an_idle_session_gets_its_finals_then_idle_timeout_and_1000() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(3200).await;
    let mut engine = h.engine().await;
    let started = tokio::time::Instant::now();
    // The engine answers the half-close with the last final.
    let engine_task = tokio::spawn(async move {
        engine.read_to_end().await;
        engine.respond(final_result(0, "last words")).await;
    });
    let (messages, close) = s.client.until_close().await;
    let kinds: Vec<_> = messages
        .iter()
        .map(|m| m["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kinds, vec!["result", "error", "closed"], "finals first");
    assert_eq!(codes(&messages), vec!["idle_timeout"]);
    assert_eq!(closed(&messages)["reason"], "idle_timeout");
    assert_eq!(close, 1000);
    assert!(started.elapsed() >= Duration::from_secs(60));
    engine_task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn keepalive_keeps_a_quiet_session_open() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(320).await;
    let _engine = h.engine().await;
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(30)).await;
        s.client.text(r#"{"type":"keepalive"}"#).await;
        // Answer the server's pings as a browser does.
        while let Ok(Some(frame)) =
            tokio::time::timeout(Duration::from_millis(1), s.client.from_server.next()).await
        {
            assert!(matches!(frame, Message::Ping(_)), "{frame:?}");
            s.client.send(Message::Pong(Default::default())).await;
        }
    }
    assert!(!s.task.is_finished(), "three minutes of keepalive");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_answers_no_pings_is_closed() {
    let mut config = config();
    config.idle_timeout = Duration::from_secs(3600);
    let mut h = harness(config, Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(320).await;
    let _engine = h.engine().await;
    let started = tokio::time::Instant::now();
    let mut pings = 0;
    let close = loop {
        match s.client.frame().await {
            Message::Ping(_) => pings += 1,
            Message::Close(frame) => break frame.unwrap().code,
            _ => {}
        }
    };
    assert_eq!((pings, close), (2, 1008));
    assert_eq!(started.elapsed(), Duration::from_secs(60));
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_closed_as_a_slow_consumer() {
    let mut h = harness(config(), Behaviour::Accept).with_store().await;
    let mut s = h.start(Ok(StreamSettings::default()), 1).await;
    s.client.audio(3200).await;
    let engine = h.engine().await;
    engine.respond(final_result(0, "stored anyway")).await;
    for idx in 0..10 {
        let _ = engine
            .responses
            .try_send(Ok(partial(1, &format!("p{idx}"))));
    }
    let reason = s.task.await.unwrap();
    assert_eq!(reason, CloseReason::SlowConsumer);
    drop(engine);
    // Real time again for the store's worker.
    tokio::time::resume();
    let stored = h.stored(&s.id).await.unwrap();
    assert_eq!(
        stored.session.close_reason.as_deref(),
        Some("slow_consumer")
    );
    assert_eq!(stored.segments[0].text, "stored anyway");
}

#[tokio::test(start_paused = true)]
async fn audio_much_faster_than_real_time_is_refused() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(3200).await;
    let mut engine = h.engine().await;
    tokio::spawn(async move { engine.read_to_end().await });
    // 8 s of audio every second: twice the 4x allowance.
    let mut client = s.client;
    let sender = tokio::spawn(async move {
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if client
                .to_server
                .send(Ok(Message::Binary(vec![0u8; 25_600].into())))
                .await
                .is_err()
            {
                break;
            }
        }
        client
    });
    let mut client = sender.await.unwrap();
    let (messages, close) = client.until_close().await;
    assert_eq!(codes(&messages), vec!["too_fast"]);
    assert_eq!(close, 1008);
}

#[tokio::test(start_paused = true)]
async fn shutdown_delivers_the_finals_then_closes_with_1012() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(3200).await;
    let mut engine = h.engine().await;
    h.env.shutdown.cancel();
    let (bytes, _, _) = engine.read_to_end().await;
    assert_eq!(bytes, 3200);
    engine
        .respond(final_result(0, "said before the restart"))
        .await;
    drop(engine);
    let (messages, close) = s.client.until_close().await;
    assert_eq!(messages[0]["text"], "said before the restart");
    assert_eq!(closed(&messages)["reason"], "server_shutdown");
    assert_eq!(close, 1012);
}

#[tokio::test(start_paused = true)]
async fn an_engine_that_never_finishes_flushing_is_given_up_on() {
    let mut h = harness(config(), Behaviour::Accept);
    let mut s = h.start(Ok(StreamSettings::default()), 64).await;
    s.client.audio(3200).await;
    let _engine = h.engine().await;
    s.client.text(r#"{"type":"close"}"#).await;
    let (messages, close) = s.client.until_close().await;
    assert_eq!(codes(&messages), vec!["engine_failure"]);
    assert_eq!(close, 1011);
}
