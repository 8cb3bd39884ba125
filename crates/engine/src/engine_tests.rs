//! The engine in process: the real server and service over in-memory connections, with fake
//! recognizers, so that hostile clients are cheap to play and timeouts run on a paused clock.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use earshot_audio::pcm;
use earshot_model::{ModelError, RecognitionRequest, Recognizer, Transcript};
use earshot_proto::speech_to_text_client::SpeechToTextClient;
use earshot_proto::{RecognitionConfig, StreamingRecognizeRequest, StreamingRecognizeResponse};
use futures::StreamExt;
use hyper_util::rt::TokioIo;
use tokio::io::DuplexStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::codegen::Service;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::{Code, Status, Streaming};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::client::read_to_end;
use crate::{EngineConfig, EngineError, EngineMetrics, RunningEngine, SERVICE_NAME};

type Connections = mpsc::Sender<Result<DuplexStream, io::Error>>;

struct TestEngine {
    engine: RunningEngine,
    connections: Connections,
}

impl TestEngine {
    async fn start(config: EngineConfig, recognizer: impl Recognizer + 'static) -> Self {
        let (connections, accepted) = mpsc::channel(16);
        let engine = RunningEngine::start_on(
            config,
            Box::new(recognizer),
            ReceiverStream::new(accepted),
            None,
            EngineMetrics::default(),
        )
        .await
        .expect("the engine starts");
        Self {
            engine,
            connections,
        }
    }

    /// A new HTTP/2 connection, and a token that cuts it (a client that vanishes).
    async fn connection(&self) -> (Channel, CancellationToken) {
        let cut = CancellationToken::new();
        let connector = InMemory {
            connections: self.connections.clone(),
            cut: cut.clone(),
        };
        let channel = Endpoint::from_static("http://engine.test")
            // A small window, so that a client that does not read fills it quickly.
            .initial_stream_window_size(Some(65_535))
            .connect_with_connector(connector)
            .await
            .expect("connect in memory");
        (channel, cut)
    }

    async fn client(&self) -> SpeechToTextClient<Channel> {
        SpeechToTextClient::new(self.connection().await.0)
    }

    fn streams_active(&self) -> i64 {
        self.engine.metrics().streams_active.get()
    }
}

/// Connects through a relay task, which the token stops: both ends then see the connection
/// drop, as with a client whose machine went away.
#[derive(Clone)]
struct InMemory {
    connections: Connections,
    cut: CancellationToken,
}

impl Service<Uri> for InMemory {
    type Response = TokioIo<DuplexStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, io::Error>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), io::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let connections = self.connections.clone();
        let cut = self.cut.clone();
        Box::pin(async move {
            let (client, mut client_side) = tokio::io::duplex(64 * 1024);
            let (mut server_side, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client_side, &mut server_side) => {}
                    () = cut.cancelled() => {}
                }
            });
            connections
                .send(Ok(server))
                .await
                .map_err(|_| io::Error::other("the engine has stopped"))?;
            Ok(TokioIo::new(client))
        })
    }
}

/// Answers every window at once with the same words.
struct Echo;

impl Recognizer for Echo {
    fn n_mels(&self) -> usize {
        80
    }

    fn recognize_batch(
        &mut self,
        batch: &[RecognitionRequest],
    ) -> Result<Vec<Transcript>, ModelError> {
        Ok(batch
            .iter()
            .map(|_| Transcript {
                text: "hello world".into(),
                confidence: 0.9,
                ..Default::default()
            })
            .collect())
    }
}

/// Answers the warm-up, then panics.
#[derive(Default)]
struct PanicsAfterWarmUp {
    calls: usize,
}

impl Recognizer for PanicsAfterWarmUp {
    fn n_mels(&self) -> usize {
        80
    }

    fn recognize_batch(
        &mut self,
        batch: &[RecognitionRequest],
    ) -> Result<Vec<Transcript>, ModelError> {
        self.calls += 1;
        assert!(self.calls == 1, "the model broke down");
        Echo.recognize_batch(batch)
    }
}

fn first_request(session_id: &str) -> StreamingRecognizeRequest {
    crate::client::first_request(session_id, 16_000)
}

fn finalize() -> StreamingRecognizeRequest {
    StreamingRecognizeRequest {
        finalize: true,
        ..Default::default()
    }
}

fn jfk() -> Vec<f32> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/speech/wav/jfk.wav");
    earshot_audio::wav::read_wav(&path).unwrap().samples
}

/// Sends `requests`, half-closes, and reads to the end: the responses and how the stream ended.
async fn exchange(
    engine: &TestEngine,
    requests: Vec<StreamingRecognizeRequest>,
) -> (Vec<StreamingRecognizeResponse>, Status) {
    let mut client = engine.client().await;
    match client
        .streaming_recognize(futures::stream::iter(requests))
        .await
    {
        Ok(response) => read_to_end(response.into_inner()).await,
        Err(status) => (Vec::new(), status),
    }
}

/// A stream that asks for a final again and again (each answered without the model) and
/// never reads what it gets.
async fn open_unread_stream(
    client: &mut SpeechToTextClient<Channel>,
) -> Streaming<StreamingRecognizeResponse> {
    let requests =
        futures::stream::iter([first_request("")]).chain(futures::stream::repeat_with(finalize));
    client
        .streaming_recognize(requests)
        .await
        .expect("admitted")
        .into_inner()
}

async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(120);
    while !condition() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn serving_status(channel: &Channel) -> i32 {
    HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: SERVICE_NAME.into(),
        })
        .await
        .expect("health answers")
        .into_inner()
        .status
}

fn one_session() -> EngineConfig {
    EngineConfig {
        max_sessions: 1,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_a_first_request_is_ended_with_deadline_exceeded() {
    let engine = TestEngine::start(one_session(), Echo).await;
    let (_silent_client, silent) = mpsc::channel::<StreamingRecognizeRequest>(1);
    let opened = Instant::now();
    let mut inbound = engine
        .client()
        .await
        .streaming_recognize(ReceiverStream::new(silent))
        .await
        .expect("admitted")
        .into_inner();
    let (_, refused) = exchange(&engine, vec![first_request(""), finalize()]).await;
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");

    let status = inbound.message().await.expect_err("ended with a status");
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("first request"), "{status:?}");
    let waited = opened.elapsed();
    assert!(
        (Duration::from_secs(10)..Duration::from_millis(10_500)).contains(&waited),
        "{waited:?}"
    );
    // Its session is free again.
    let (responses, status) = exchange(&engine, vec![first_request(""), finalize()]).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(responses.iter().any(|r| r.from_finalize), "{responses:?}");
}

#[tokio::test]
async fn shutdown_ends_a_stream_still_waiting_for_its_first_request() {
    let engine = TestEngine::start(EngineConfig::default(), Echo).await;
    let (silent_client, silent) = mpsc::channel::<StreamingRecognizeRequest>(1);
    let mut inbound = engine
        .client()
        .await
        .streaming_recognize(ReceiverStream::new(silent))
        .await
        .expect("admitted")
        .into_inner();
    let shutdown = tokio::spawn(engine.engine.shutdown());
    let status = tokio::time::timeout(Duration::from_secs(5), inbound.message())
        .await
        .expect("ended before the shutdown deadline")
        .expect_err("ended with a status");
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    drop(silent_client);
    shutdown.await.unwrap().expect("a clean shutdown");
}

#[tokio::test]
async fn a_session_id_must_be_short_printable_ascii() {
    let engine = TestEngine::start(EngineConfig::default(), Echo).await;
    for bad in [
        "a".repeat(129),
        "line\nbreak".to_string(),
        "tab\there".to_string(),
        "caf\u{e9}".to_string(),
        "nul\0".to_string(),
    ] {
        let (responses, status) = exchange(&engine, vec![first_request(&bad), finalize()]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{bad:?}: {status:?}");
        assert!(responses.is_empty(), "{responses:?}");
        assert!(
            status
                .message()
                .contains("at most 128 bytes of printable ASCII"),
            "{status:?}"
        );
        assert!(!status.message().contains(bad.as_str()), "{status:?}");
    }
    let longest: String = (0x20u8..=0x7e).map(char::from).cycle().take(128).collect();
    let (responses, status) = exchange(&engine, vec![first_request(&longest), finalize()]).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert!(!responses.is_empty());
    assert!(responses.iter().all(|r| r.session_id == longest));
    // None given: the engine names the stream itself.
    let (responses, status) = exchange(&engine, vec![first_request(""), finalize()]).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    assert_eq!(responses[0].session_id.len(), 36, "{responses:?}");
}

#[tokio::test]
async fn client_strings_in_errors_are_escaped_and_cut_short() {
    let engine = TestEngine::start(EngineConfig::default(), Echo).await;
    let hostile = format!(
        "X\n2026-12-01T00:00:00.000000Z  INFO forged: line {}",
        "A".repeat(10_000)
    );
    let mut bad_encoding = first_request("");
    if let Some(audio_config) = &mut bad_encoding.audio_config {
        audio_config.encoding = hostile.clone();
    }
    let mut bad_language = first_request("");
    bad_language.recognition_config = Some(RecognitionConfig {
        language: hostile.clone(),
        ..Default::default()
    });
    for request in [bad_encoding, bad_language] {
        let (_, status) = exchange(&engine, vec![request]).await;
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        let message = status.message();
        assert!(!message.contains('\n'), "{message}");
        assert!(message.contains("\"X\\n2026-12-01"), "{message}");
        assert!(message.len() < 300, "{} bytes", message.len());
    }
}

#[tokio::test(start_paused = true)]
async fn a_client_that_does_not_read_is_ended_at_the_write_deadline() {
    let engine = TestEngine::start(one_session(), Echo).await;
    let write_timeout = EngineConfig::default().write_timeout;
    let opened = Instant::now();
    let unread = open_unread_stream(&mut engine.client().await).await;
    wait_until("the stream ends", || engine.streams_active() == 0).await;
    let held = opened.elapsed();
    assert!(
        held >= write_timeout && held < write_timeout + Duration::from_secs(1),
        "{held:?}"
    );
    // Its session is free for someone else.
    let (_, status) = exchange(&engine, vec![first_request(""), finalize()]).await;
    assert_eq!(status.code(), Code::Ok, "{status:?}");
    // If it reads at last, it finds what was buffered, then why the stream ended.
    let (responses, status) = read_to_end(unread).await;
    assert!(responses.len() >= 32, "{}", responses.len());
    assert!(responses.iter().all(|r| r.is_final && r.from_finalize));
    assert_eq!(status.code(), Code::DeadlineExceeded, "{status:?}");
    assert!(status.message().contains("did not read"), "{status:?}");
}

#[tokio::test(start_paused = true)]
async fn a_client_that_vanishes_while_its_results_wait_frees_its_session_at_once() {
    let engine = TestEngine::start(one_session(), Echo).await;
    let (channel, cut) = engine.connection().await;
    let _unread = open_unread_stream(&mut SpeechToTextClient::new(channel)).await;
    // By now its buffers are full and the engine waits to write.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(engine.streams_active(), 1);
    let vanished = Instant::now();
    cut.cancel();
    wait_until("the stream ends", || engine.streams_active() == 0).await;
    assert!(
        vanished.elapsed() < Duration::from_secs(1),
        "{:?}",
        vanished.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn the_idle_timer_runs_while_results_wait_for_the_client() {
    let config = EngineConfig {
        idle_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(60),
        ..one_session()
    };
    let engine = TestEngine::start(config, Echo).await;
    let opened = Instant::now();
    let mut unread = open_unread_stream(&mut engine.client().await).await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    // The client reads at last: its finals, then the end for idleness, long before the write
    // deadline.
    // (Were the stream still open, it would go on for ever: the client now reads and asks.)
    let mut finals = 0;
    let status = loop {
        match unread.message().await {
            Ok(Some(_)) => finals += 1,
            Ok(None) => panic!("the stream ends with a status"),
            Err(status) => break status,
        }
        assert!(finals < 100_000, "the stream was not closed");
    };
    assert!(finals > 0);
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        opened.elapsed() < Duration::from_secs(10),
        "{:?}",
        opened.elapsed()
    );
}

#[tokio::test]
async fn a_recognizer_that_panics_stops_the_engine_serving_and_ends_every_stream() {
    let engine = TestEngine::start(EngineConfig::default(), PanicsAfterWarmUp::default()).await;
    let (channel, _) = engine.connection().await;
    assert_eq!(
        serving_status(&channel).await,
        ServingStatus::Serving as i32
    );
    // One stream waits quietly while another asks for a final of real speech.
    let (quiet_client, quiet_requests) = mpsc::channel(4);
    quiet_client.send(first_request("quiet")).await.unwrap();
    let quiet = SpeechToTextClient::new(channel.clone())
        .streaming_recognize(ReceiverStream::new(quiet_requests))
        .await
        .expect("admitted")
        .into_inner();
    let speech = StreamingRecognizeRequest {
        audio_content: pcm::encode_pcm16(&jfk()[..16_000 * 3]),
        finalize: true,
        ..Default::default()
    };
    let (_, status) = exchange(&engine, vec![first_request("speaker"), speech]).await;
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    let (_, quiet_status) = tokio::time::timeout(Duration::from_secs(10), read_to_end(quiet))
        .await
        .expect("the quiet stream is ended too");
    assert_eq!(quiet_status.code(), Code::Internal, "{quiet_status:?}");

    let failure = tokio::time::timeout(Duration::from_secs(10), engine.engine.failed())
        .await
        .expect("the failure is reported");
    assert!(
        matches!(&failure, EngineError::RecognizerFailed(reason) if reason.contains("the model broke down")),
        "{failure}"
    );
    let health = tokio::time::timeout(Duration::from_secs(10), async {
        while serving_status(&channel).await != ServingStatus::NotServing as i32 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    health.await.expect("NOT_SERVING is reported");
    let (_, refused) = exchange(&engine, vec![first_request(""), finalize()]).await;
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    drop(quiet_client);
    let stopped = engine.engine.shutdown().await;
    assert!(
        matches!(stopped, Err(EngineError::RecognizerFailed(_))),
        "{stopped:?}"
    );
}
