//! One WebSocket session bridged to one engine stream.
//!
//! The session loop is generic over the client socket (any `Stream` + `Sink` of WebSocket
//! messages) and reaches engines through an [`EngineConnector`], so that tests drive it with
//! in-memory channels and a fake engine. Audio frames go to the engine through a bounded queue
//! whose unsent bytes drive flow control (`slow_down` / `resume` / close 1008 at the hard
//! limit); engine responses come back as JSON. Every way a session can go wrong is a
//! [`SessionError`], mapped to the wire in one place (`error.rs`). A client that just drops the
//! socket still has its audio flushed through the engine and stored.

mod error;
mod latency;
mod pace;
mod transcript;

#[cfg(test)]
mod tests;

pub use error::{CloseReason, SessionError, close_code};
pub use latency::{ArrivalLog, LatencyTracker};
pub use pace::{PACE_WINDOW, PaceMeter};
pub use transcript::{LiveSessions, Transcript};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes};
use bytes::Bytes;
use earshot_proto::{
    AudioConfig, RecognitionConfig, ResponseKind, StreamingRecognizeRequest,
    StreamingRecognizeResponse,
};
use earshot_store::StoreWriter;
use futures::{Sink, SinkExt, Stream, StreamExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::GatewayConfig;
use crate::engine_link::{EngineConnector, EngineLink};
use crate::flow::{FlowControl, FlowSignal};
use crate::metrics::{GatewayMetrics, GaugeGuard};
use crate::protocol::{ClientMessage, ServerMessage, StreamParams, StreamSettings, Word};

/// How long a closing session waits for the client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the engine gets to send its last finals once the audio has ended.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the last messages to a client that stopped reading may take.
const SLOW_CONSUMER_GRACE: Duration = Duration::from_secs(1);

/// Unanswered WebSocket pings after which the client is taken to be gone.
const MAX_UNANSWERED_PINGS: u32 = 2;

/// What a client socket must be: a stream of received messages and a sink for sent ones
/// (axum's `WebSocket` is one; tests use in-memory channels).
pub trait ClientSocket:
    Stream<Item = Result<Message, axum::Error>> + Sink<Message, Error = axum::Error> + Unpin + Send
{
}

impl<T> ClientSocket for T where
    T: Stream<Item = Result<Message, axum::Error>>
        + Sink<Message, Error = axum::Error>
        + Unpin
        + Send
{
}

/// What every session shares: limits, metrics, the store, the engines and the shutdown signal.
#[derive(Clone)]
pub struct SessionEnv {
    pub config: Arc<GatewayConfig>,
    pub metrics: GatewayMetrics,
    pub store: Option<StoreWriter>,
    pub connector: Arc<dyn EngineConnector>,
    /// Cancelled when the gateway begins to shut down: sessions end their audio, deliver their
    /// finals and close with 1012.
    pub shutdown: CancellationToken,
    pub live: Arc<LiveSessions>,
}

/// Where a session is in its life.
#[derive(Debug, Clone, PartialEq)]
enum Phase {
    /// Upgraded; the client has sent nothing yet.
    Connected,
    /// The client's messages are read and its audio goes to the engine.
    Open,
    /// No more audio: the engine is sending its last finals, which the client still gets (if it
    /// is there); then `notice` (if any), `closed` with `reason`, and the close frame.
    Draining {
        reason: CloseReason,
        notice: Option<SessionError>,
    },
}

/// What a handler tells the loop.
enum Step {
    Continue,
    End(CloseReason),
}

/// The client socket while it is open; dropping it updates `stt_websocket_connections_active`.
struct OpenSocket<S> {
    socket: S,
    _open: GaugeGuard,
}

pub struct Session<S> {
    env: SessionEnv,
    id: String,
    peer: Option<SocketAddr>,
    settings: StreamSettings,
    /// Why the query was refused, reported once the session starts.
    invalid_query: Option<String>,
    socket: Option<OpenSocket<S>>,
    engine: Option<EngineLink>,
    phase: Phase,
    flow: FlowControl,
    pace: PaceMeter,
    audio_bytes: u64,
    latency: LatencyTracker,
    transcript: Transcript,
    /// Limit on one write to the client.
    write_timeout: Duration,
    /// Reading is paused because the engine queue is full.
    read_paused: bool,
    connected_at: Instant,
    /// The last audio, keepalive or finalize (or the end of a read pause).
    last_activity: Instant,
    next_ping: Instant,
    unanswered_pings: u32,
    drain_deadline: Option<Instant>,
}

impl<S: ClientSocket> Session<S> {
    /// `params` is the validated query, or why it is invalid (reported after the upgrade, so
    /// that a browser can see it).
    pub fn new(
        env: SessionEnv,
        socket: S,
        peer: Option<SocketAddr>,
        params: Result<StreamSettings, String>,
    ) -> Self {
        let (settings, invalid_query) = match params {
            Ok(settings) => (settings, None),
            Err(message) => (StreamSettings::default(), Some(message)),
        };
        let now = Instant::now();
        let id = uuid::Uuid::new_v4().to_string();
        let transcript = Transcript::new(
            id.clone(),
            peer.map(|peer| peer.to_string()).unwrap_or_default(),
            env.store.clone(),
            env.metrics.clone(),
            env.live.clone(),
        );
        let config = &env.config;
        Self {
            flow: flow_control(config, &settings),
            pace: PaceMeter::new(config.max_pace, now),
            write_timeout: config.write_timeout,
            next_ping: now + config.ping_interval,
            socket: Some(OpenSocket {
                socket,
                _open: GaugeGuard::new(&env.metrics.connections_active),
            }),
            id,
            peer,
            settings,
            invalid_query,
            engine: None,
            phase: Phase::Connected,
            audio_bytes: 0,
            latency: LatencyTracker::default(),
            transcript,
            read_paused: false,
            connected_at: now,
            last_activity: now,
            unanswered_pings: 0,
            drain_deadline: None,
            env,
        }
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Runs the session to its end and returns why it ended. A panic inside the session loop
    /// ends this session alone, with `internal` and 1011.
    pub async fn run(mut self) -> CloseReason {
        let outcome = match self.invalid_query.take() {
            Some(message) => Err(SessionError::InvalidParameter(message)),
            None => {
                let serve = std::panic::AssertUnwindSafe(self.serve());
                match futures::FutureExt::catch_unwind(serve).await {
                    Ok(outcome) => outcome,
                    Err(panic) => {
                        tracing::error!(panic = panic_message(&panic), "session panicked");
                        Err(SessionError::Internal)
                    }
                }
            }
        };
        self.finish(outcome).await
    }

    /// The session loop. `Ok` when the session ended with every final delivered (or the client
    /// gone); `Err` for a refusal, after which the engine's finals are only stored.
    async fn serve(&mut self) -> Result<CloseReason, SessionError> {
        self.send_session().await?;
        loop {
            if self.socket.is_none() && self.engine.is_none() {
                // Nobody to talk to and nothing to wait for.
                return Ok(self.ending_reason());
            }
            let queue_full = self
                .engine
                .as_ref()
                .is_some_and(|engine| engine.audio.is_full());
            self.note_read_pause(queue_full);
            let reading = self.socket.is_some()
                && !queue_full
                && matches!(self.phase, Phase::Connected | Phase::Open);
            let draining = matches!(self.phase, Phase::Draining { .. });
            let deadline = self.next_deadline(reading);
            let step = tokio::select! {
                biased;
                () = self.env.shutdown.cancelled(), if !draining => {
                    self.begin_drain(CloseReason::ServerShutdown, None)
                }
                event = next_engine_event(&mut self.engine), if self.engine.is_some() => {
                    self.on_engine_event(event).await?
                }
                message = next_message(&mut self.socket), if reading => {
                    self.on_message(message).await?
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    self.on_timer().await?
                }
                else => Step::End(self.ending_reason()),
            };
            if let Step::End(reason) = step {
                return Ok(reason);
            }
        }
    }

    /// The reason the session ends with when nothing is left to wait for.
    fn ending_reason(&self) -> CloseReason {
        match &self.phase {
            Phase::Draining { reason, .. } => *reason,
            Phase::Connected | Phase::Open if self.socket.is_none() => CloseReason::ClientClosed,
            Phase::Connected | Phase::Open => CloseReason::Normal,
        }
    }

    fn note_read_pause(&mut self, paused: bool) {
        if paused && !self.read_paused {
            self.env.metrics.read_pauses.inc();
        }
        if paused {
            // Time spent not reading is not the client's idleness, and its pongs wait unread.
            let now = Instant::now();
            self.last_activity = now;
            self.unanswered_pings = 0;
            self.next_ping = now + self.env.config.ping_interval;
        }
        self.read_paused = paused;
    }

    /// The earliest timer that applies now.
    fn next_deadline(&self, reading: bool) -> Option<Instant> {
        let config = &self.env.config;
        if let Phase::Draining { .. } = self.phase {
            return self.drain_deadline;
        }
        if !reading {
            return None;
        }
        let timeout = match self.phase {
            Phase::Connected => self.connected_at + config.first_message_timeout,
            _ => self.last_activity + config.idle_timeout,
        };
        Some(timeout.min(self.next_ping))
    }

    async fn on_timer(&mut self) -> Result<Step, SessionError> {
        let now = Instant::now();
        let config = self.env.config.clone();
        match self.phase {
            Phase::Draining { .. } => {
                self.engine = None;
                return Err(SessionError::EngineFailure(format!(
                    "the engine did not send its last finals within {} s",
                    DRAIN_TIMEOUT.as_secs()
                )));
            }
            Phase::Connected if now >= self.connected_at + config.first_message_timeout => {
                return Err(SessionError::FirstMessageTimeout(
                    config.first_message_timeout,
                ));
            }
            Phase::Open if now >= self.last_activity + config.idle_timeout => {
                tracing::info!(idle = ?config.idle_timeout, "session idle; ending it");
                return Ok(self.begin_drain(
                    CloseReason::IdleTimeout,
                    Some(SessionError::IdleTimeout(config.idle_timeout)),
                ));
            }
            _ => {}
        }
        if now >= self.next_ping {
            if self.unanswered_pings >= MAX_UNANSWERED_PINGS {
                return Err(SessionError::PingTimeout);
            }
            self.unanswered_pings += 1;
            self.next_ping = now + config.ping_interval;
            self.send_frame(Message::Ping(Bytes::from_static(b"earshot")))
                .await?;
        }
        Ok(Step::Continue)
    }

    /// Ends the audio; the session ends once the engine has sent its last finals.
    fn begin_drain(&mut self, reason: CloseReason, notice: Option<SessionError>) -> Step {
        let Some(engine) = &mut self.engine else {
            // No engine stream: nothing to wait for; a notice goes out with `closed`.
            self.phase = Phase::Draining { reason, notice };
            return Step::End(reason);
        };
        engine.audio.close();
        self.phase = Phase::Draining { reason, notice };
        self.drain_deadline = Some(Instant::now() + DRAIN_TIMEOUT);
        Step::Continue
    }

    async fn on_message(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
    ) -> Result<Step, SessionError> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(err)) if is_message_too_big(&err) => {
                return Err(SessionError::MessageTooBig {
                    limit: self.env.config.max_message_bytes(),
                });
            }
            // The client is gone (or broke the protocol): its audio is still flushed.
            Some(Err(_)) | None => return Ok(self.client_gone()),
        };
        if self.phase == Phase::Connected {
            self.phase = Phase::Open;
        }
        match message {
            Message::Binary(data) => self.on_audio(data).await,
            Message::Text(text) => match serde_json::from_str::<ClientMessage>(&text) {
                Ok(ClientMessage::Close) => Ok(self.begin_drain(CloseReason::Normal, None)),
                Ok(message) => self.on_control(message).await,
                Err(err) => Err(SessionError::InvalidMessage(err.to_string())),
            },
            Message::Pong(_) => {
                self.unanswered_pings = 0;
                Ok(Step::Continue)
            }
            Message::Ping(_) => Ok(Step::Continue),
            // The client closed (the seed's client just closes): its audio is still flushed.
            Message::Close(_) => Ok(self.client_gone()),
        }
    }

    fn client_gone(&mut self) -> Step {
        self.socket = None;
        self.begin_drain(CloseReason::ClientClosed, None)
    }

    async fn on_audio(&mut self, data: Bytes) -> Result<Step, SessionError> {
        if data.is_empty() {
            return Ok(Step::Continue);
        }
        let limit = self.env.config.max_frame_bytes;
        if data.len() > limit {
            return Err(SessionError::FrameTooLarge {
                len: data.len(),
                limit,
            });
        }
        let sample_bytes = self.settings.encoding.bytes_per_sample();
        if !data.len().is_multiple_of(sample_bytes) {
            return Err(SessionError::InvalidAudio {
                len: data.len(),
                sample_bytes,
                encoding: self.settings.encoding.as_str(),
            });
        }
        let now = Instant::now();
        let frame_ms = (data.len() as f64 / self.settings.bytes_per_ms()) as u64;
        if !self.pace.record(frame_ms, now) {
            return Err(SessionError::TooFast {
                pace: self.env.config.max_pace,
                window_secs: PACE_WINDOW.as_secs(),
            });
        }
        self.last_activity = now;
        self.ensure_engine().await?;
        self.audio_bytes += data.len() as u64;
        let metrics = &self.env.metrics;
        metrics.audio_chunks_received.inc();
        metrics.audio_bytes_received.inc_by(data.len() as u64);
        self.latency.audio(self.audio_ms(), now);
        self.transcript.set_audio_ms(self.audio_ms());
        self.queue(StreamingRecognizeRequest {
            audio_content: data.into(),
            ..Default::default()
        })
        .await
    }

    async fn on_control(&mut self, message: ClientMessage) -> Result<Step, SessionError> {
        match message {
            ClientMessage::Config(config) => {
                if self.engine.is_some() {
                    self.send_error(&SessionError::ConfigAfterAudio).await?;
                    return Ok(Step::Continue);
                }
                let settings = self
                    .settings
                    .apply(&StreamParams::from(config))
                    .map_err(SessionError::InvalidParameter)?;
                self.flow = flow_control(&self.env.config, &settings);
                self.settings = settings;
                self.send_session().await?;
                Ok(Step::Continue)
            }
            ClientMessage::Finalize => {
                self.last_activity = Instant::now();
                self.ensure_engine().await?;
                self.queue(StreamingRecognizeRequest {
                    finalize: true,
                    ..Default::default()
                })
                .await
            }
            ClientMessage::Keepalive => {
                self.last_activity = Instant::now();
                // An empty request keeps the engine's idle timer from closing the stream.
                if self.engine.is_some() {
                    return self.queue(StreamingRecognizeRequest::default()).await;
                }
                Ok(Step::Continue)
            }
            ClientMessage::Ping { id } => {
                self.send(ServerMessage::Pong { id }).await?;
                Ok(Step::Continue)
            }
            ClientMessage::Close => Ok(self.begin_drain(CloseReason::Normal, None)),
        }
    }

    async fn ensure_engine(&mut self) -> Result<(), SessionError> {
        if self.engine.is_some() {
            return Ok(());
        }
        let settings = &self.settings;
        let first = StreamingRecognizeRequest {
            session_id: self.id.clone(),
            audio_config: Some(AudioConfig {
                sample_rate: settings.sample_rate as i32,
                channels: 1,
                encoding: settings.encoding.engine_name().into(),
            }),
            recognition_config: Some(RecognitionConfig {
                chunk_ms: settings.chunk_ms.unwrap_or(0) as i32,
                endpoint_ms: settings.endpointing_ms.unwrap_or(0) as i32,
                interim_results: Some(settings.interim_results),
                voice_activity_events: true,
                engine_events: false,
                language: settings.language.clone(),
            }),
            ..Default::default()
        };
        let link = self.env.connector.open(first).await?;
        self.engine = Some(link);
        self.transcript.create();
        Ok(())
    }

    async fn queue(&mut self, request: StreamingRecognizeRequest) -> Result<Step, SessionError> {
        let Some(engine) = &self.engine else {
            return Ok(Step::Continue);
        };
        if engine.audio.is_closed() {
            return Ok(Step::Continue);
        }
        if engine.audio.try_push(request).is_err() {
            // Cannot happen: the socket is only read while the queue has room, and each client
            // message queues at most one request. Refuse loudly rather than lose audio.
            return Err(self.buffer_limit());
        }
        self.apply_flow().await
    }

    async fn apply_flow(&mut self) -> Result<Step, SessionError> {
        let buffered = self
            .engine
            .as_ref()
            .map_or(0, |engine| engine.audio.buffered_bytes());
        match self.flow.on_buffered(buffered) {
            FlowSignal::Nothing => {}
            FlowSignal::SlowDown => {
                self.env.metrics.slow_down.inc();
                let buffered_ms = (buffered as f64 / self.settings.bytes_per_ms()) as u64;
                self.send(ServerMessage::SlowDown { buffered_ms }).await?;
            }
            FlowSignal::Resume => self.send(ServerMessage::Resume).await?,
            FlowSignal::Overflow => return Err(self.buffer_limit()),
        }
        Ok(Step::Continue)
    }

    fn buffer_limit(&self) -> SessionError {
        self.env.metrics.buffer_limit.inc();
        SessionError::BufferLimit {
            limit: self.env.config.max_buffer_bytes,
        }
    }

    async fn on_engine_event(&mut self, event: EngineEvent) -> Result<Step, SessionError> {
        match event {
            EngineEvent::Taken => self.apply_flow().await,
            EngineEvent::Response(Some(Ok(response))) => {
                self.on_response(response).await?;
                Ok(Step::Continue)
            }
            EngineEvent::Response(None) => match std::mem::replace(&mut self.phase, Phase::Open) {
                Phase::Draining { reason, notice } => {
                    self.engine = None;
                    if let Some(notice) = notice {
                        self.send_error(&notice).await?;
                    }
                    Ok(Step::End(reason))
                }
                _ => {
                    self.engine = None;
                    Err(SessionError::EngineFailure(
                        "the engine ended the stream unexpectedly".into(),
                    ))
                }
            },
            EngineEvent::Response(Some(Err(status))) => {
                self.engine = None;
                tracing::warn!(code = ?status.code(), message = status.message(), "engine stream failed");
                Err(SessionError::from_engine_status(
                    &status,
                    self.env.config.idle_timeout,
                ))
            }
        }
    }

    async fn on_response(
        &mut self,
        response: StreamingRecognizeResponse,
    ) -> Result<(), SessionError> {
        let message = match ResponseKind::try_from(response.kind) {
            Ok(ResponseKind::SpeechStarted) => {
                self.latency.speech_started(response.event_ms);
                ServerMessage::SpeechStarted {
                    at_ms: response.event_ms,
                }
            }
            Ok(ResponseKind::SpeechEnded) => {
                self.latency.speech_ended(response.event_ms);
                ServerMessage::SpeechEnded {
                    at_ms: response.event_ms,
                }
            }
            Ok(ResponseKind::Result) => {
                self.latency.result(
                    response.end_ms,
                    response.is_final,
                    Instant::now(),
                    &self.env.metrics,
                );
                if response.is_final {
                    self.transcript.final_result(&response);
                }
                result_message(response)
            }
            Ok(ResponseKind::EngineEvent) | Err(_) => return Ok(()),
        };
        self.send(message).await
    }

    /// Tells the client how the session ended and closes the socket, then lets the engine
    /// finish: its finals belong to the transcript even when nobody reads them.
    async fn finish(&mut self, outcome: Result<CloseReason, SessionError>) -> CloseReason {
        let reason = match &outcome {
            Ok(reason) => *reason,
            Err(error) => error.close_reason().unwrap_or(CloseReason::Internal),
        };
        if let Phase::Draining {
            notice: Some(notice),
            ..
        } = &self.phase
        {
            // Ended with no engine stream to drain: the notice is still owed.
            let notice = notice.clone();
            let _ = self.send_error(&notice).await;
        }
        if let Err(error) = &outcome {
            if let Some(kind) = error.metric_kind() {
                self.env.metrics.error(kind);
            }
            if matches!(error, SessionError::SlowConsumer(_)) {
                self.write_timeout = SLOW_CONSUMER_GRACE;
            }
            tracing::warn!(code = error.code(), %error, "session refused");
            let _ = self.send_error(error).await;
        }
        let audio_ms = self.audio_ms();
        let _ = self
            .send(ServerMessage::Closed {
                reason: reason.as_str(),
                audio_ms,
                segments: self.transcript.finals(),
            })
            .await;
        self.close_socket(reason).await;
        if let Some(mut engine) = self.engine.take() {
            engine.audio.close();
            let drained = tokio::time::timeout(DRAIN_TIMEOUT, async {
                while let Some(response) = engine.responses.next().await {
                    match response {
                        Ok(response) if response.is_final => {
                            self.transcript.final_result(&response);
                        }
                        Ok(_) => {}
                        Err(status) => {
                            tracing::warn!(code = ?status.code(), message = status.message(), "engine failed while flushing");
                            return;
                        }
                    }
                }
            })
            .await;
            if drained.is_err() {
                tracing::warn!("the engine did not flush within the drain timeout");
            }
        }
        self.transcript.finish(reason, audio_ms);
        tracing::info!(
            peer = ?self.peer,
            reason = reason.as_str(),
            audio_ms,
            segments = self.transcript.finals(),
            "session ended"
        );
        reason
    }

    /// Sends the close frame and completes the closing handshake: reads (and discards) until
    /// the client's close, so that unread audio does not make the kernel reset the connection
    /// before the client has read what was just sent.
    async fn close_socket(&mut self, reason: CloseReason) {
        let frame = CloseFrame {
            code: reason.close_code(),
            reason: Utf8Bytes::from(reason.as_str()),
        };
        if self.send_frame(Message::Close(Some(frame))).await.is_err() {
            self.socket = None;
        }
        let Some(mut open) = self.socket.take() else {
            return;
        };
        let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
            while let Some(Ok(message)) = open.socket.next().await {
                if matches!(message, Message::Close(_)) {
                    break;
                }
            }
        })
        .await;
    }

    async fn send_session(&mut self) -> Result<(), SessionError> {
        self.send(ServerMessage::Session {
            session_id: self.id.clone(),
            sample_rate: self.settings.sample_rate,
            encoding: self.settings.encoding.as_str(),
        })
        .await
    }

    async fn send_error(&mut self, error: &SessionError) -> Result<(), SessionError> {
        self.send(ServerMessage::Error {
            code: error.code(),
            message: error.to_string(),
        })
        .await
    }

    async fn send(&mut self, message: ServerMessage) -> Result<(), SessionError> {
        self.send_frame(Message::Text(Utf8Bytes::from(message.to_json())))
            .await
    }

    /// Writes one frame within the write timeout; a client that does not read is refused
    /// (`slow_consumer`), one that is gone is forgotten.
    async fn send_frame(&mut self, frame: Message) -> Result<(), SessionError> {
        let Some(open) = &mut self.socket else {
            return Ok(());
        };
        match tokio::time::timeout(self.write_timeout, open.socket.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => {
                self.socket = None;
                Ok(())
            }
            Err(_) => {
                if self.write_timeout == SLOW_CONSUMER_GRACE {
                    // Already refused as a slow consumer: give up on the socket.
                    self.socket = None;
                    return Ok(());
                }
                Err(SessionError::SlowConsumer(self.write_timeout))
            }
        }
    }

    fn audio_ms(&self) -> u64 {
        (self.audio_bytes as f64 / self.settings.bytes_per_ms()) as u64
    }
}

fn result_message(response: StreamingRecognizeResponse) -> ServerMessage {
    ServerMessage::Result {
        text: response.transcript,
        is_final: response.is_final,
        confidence: response.confidence,
        stability: (!response.is_final).then_some(response.stability),
        start_ms: response.start_ms,
        end_ms: response.end_ms,
        segment: response.segment_index,
        words: response.is_final.then(|| {
            response
                .words
                .into_iter()
                .map(|w| Word {
                    word: w.word,
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                    confidence: w.confidence,
                })
                .collect()
        }),
        from_finalize: response.from_finalize,
    }
}

fn flow_control(config: &GatewayConfig, settings: &StreamSettings) -> FlowControl {
    let bytes_per_ms = settings.bytes_per_ms();
    FlowControl::new(
        (config.slow_down_ms as f64 * bytes_per_ms) as usize,
        (config.resume_ms as f64 * bytes_per_ms) as usize,
        config.max_buffer_bytes,
    )
}

/// The WebSocket layer refused a message over its size limit without reading it.
fn is_message_too_big(err: &axum::Error) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<tungstenite::Error>())
        .is_some_and(|err| matches!(err, tungstenite::Error::Capacity(_)))
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}

async fn next_message<S: ClientSocket>(
    socket: &mut Option<OpenSocket<S>>,
) -> Option<Result<Message, axum::Error>> {
    match socket {
        Some(open) => open.socket.next().await,
        None => std::future::pending().await,
    }
}

enum EngineEvent {
    Response(Option<Result<StreamingRecognizeResponse, tonic::Status>>),
    /// The transport took audio from the queue.
    Taken,
}

async fn next_engine_event(engine: &mut Option<EngineLink>) -> EngineEvent {
    let Some(engine) = engine else {
        return std::future::pending().await;
    };
    tokio::select! {
        response = engine.responses.next() => EngineEvent::Response(response),
        () = engine.audio.taken() => EngineEvent::Taken,
    }
}
