//! One WebSocket session bridged to one engine stream.
//!
//! Audio frames go to the engine through a bounded queue whose unsent bytes drive flow control
//! (`slow_down` / `resume` / close 1008 at the hard limit); engine responses come back as JSON.
//! A client that just drops the socket still has its audio flushed through the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use bytes::Bytes;
use earshot_proto::speech_to_text_client::SpeechToTextClient;
use earshot_proto::{
    AudioConfig, RecognitionConfig, ResponseKind, StreamingRecognizeRequest,
    StreamingRecognizeResponse,
};
use futures::StreamExt;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Code, Streaming};

use crate::GatewayState;
use crate::engines::EngineClaim;
use crate::flow::{FlowControl, FlowSignal};
use crate::metrics::ArrivalLog;
use crate::protocol::{ClientMessage, ServerMessage, StreamParams, StreamSettings, Word};
use earshot_store::{SegmentRecord, SessionEnd, SessionRecord, SessionStatus, StoreOp, WordRecord};

/// WebSocket close codes of protocol v1.
pub mod close_code {
    pub const NORMAL: u16 = 1000;
    pub const UNSUPPORTED_DATA: u16 = 1003;
    pub const POLICY: u16 = 1008;
    pub const ENGINE_FAILURE: u16 = 1011;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// How long a closing session waits for the client's close frame.
const CLOSE_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Frames queued for the engine, whatever their size; bytes are bounded separately (by
/// `--max-buffer-bytes`). When it is full the session stops reading its socket.
const AUDIO_QUEUE_FRAMES: usize = 1024;

/// How a session ended, for the `closed` message, logs and storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    Normal,
    ClientClosed,
    BufferLimit,
    FrameTooLarge,
    InvalidInput,
    EngineFailure,
    Overloaded,
}

impl CloseReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::ClientClosed => "client_closed",
            Self::BufferLimit => "buffer_limit",
            Self::FrameTooLarge => "frame_too_large",
            Self::InvalidInput => "invalid_input",
            Self::EngineFailure => "engine_failure",
            Self::Overloaded => "overloaded",
        }
    }

    fn close_code(self) -> u16 {
        match self {
            Self::Normal | Self::ClientClosed => close_code::NORMAL,
            Self::BufferLimit | Self::FrameTooLarge => close_code::POLICY,
            Self::InvalidInput => close_code::UNSUPPORTED_DATA,
            Self::EngineFailure => close_code::ENGINE_FAILURE,
            Self::Overloaded => close_code::TRY_AGAIN_LATER,
        }
    }
}

/// The open engine stream of a session.
struct EngineStream {
    audio: Option<mpsc::Sender<StreamingRecognizeRequest>>,
    responses: Streaming<StreamingRecognizeResponse>,
    buffered_bytes: Arc<AtomicUsize>,
    buffered_changed: watch::Receiver<()>,
    /// The request stream is finished: no more buffer changes will come.
    buffer_watch_closed: bool,
    _claim: EngineClaim,
}

enum OpenError {
    Overloaded(String),
    Unavailable(String),
}

pub struct Session {
    state: Arc<GatewayState>,
    id: String,
    peer: Option<SocketAddr>,
    settings: StreamSettings,
    socket: Option<WebSocket>,
    engine: Option<EngineStream>,
    flow: FlowControl,
    audio_bytes: u64,
    segments: u64,
    arrivals: ArrivalLog,
    /// Audio time of the current utterance's onset until its first partial is sent.
    awaiting_first_partial: Option<i64>,
    /// Audio time where the current utterance's speech ended, until its final is sent.
    awaiting_final: Option<i64>,
    /// The socket is not being read because the engine queue is full.
    read_paused: bool,
}

impl Session {
    pub fn new(
        state: Arc<GatewayState>,
        socket: WebSocket,
        peer: Option<SocketAddr>,
        params: Result<StreamSettings, String>,
    ) -> (Self, Result<(), String>) {
        let (settings, validation) = match params {
            Ok(settings) => (settings, Ok(())),
            Err(message) => (StreamSettings::default(), Err(message)),
        };
        let flow = flow_control(&state, &settings);
        let session = Self {
            id: uuid::Uuid::new_v4().to_string(),
            peer,
            settings,
            socket: Some(socket),
            engine: None,
            flow,
            audio_bytes: 0,
            segments: 0,
            arrivals: ArrivalLog::default(),
            awaiting_first_partial: None,
            awaiting_final: None,
            read_paused: false,
            state,
        };
        (session, validation)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    pub async fn run(mut self, validation: Result<(), String>) -> CloseReason {
        self.persist(StoreOp::CreateSession(SessionRecord {
            id: self.id.clone(),
            started_at_ms: now_ms(),
            ended_at_ms: None,
            client_addr: self.peer.map(|peer| peer.to_string()).unwrap_or_default(),
            audio_ms: 0,
            close_reason: None,
            status: SessionStatus::Active,
        }));
        let reason = match validation {
            Err(message) => {
                self.send(ServerMessage::Error {
                    code: "invalid_parameter",
                    message,
                })
                .await;
                CloseReason::InvalidInput
            }
            Ok(()) => {
                self.send_session().await;
                self.serve().await
            }
        };
        self.finish(reason).await;
        reason
    }

    async fn send_session(&mut self) {
        self.send(ServerMessage::Session {
            session_id: self.id.clone(),
            sample_rate: self.settings.sample_rate,
            encoding: self.settings.encoding.as_str(),
        })
        .await;
    }

    /// The session loop; returns why it ended. After it, the engine may still be draining.
    async fn serve(&mut self) -> CloseReason {
        let mut closing = false;
        loop {
            // While the engine queue is full the socket is not read, so TCP pushes back on the
            // client; engine responses keep flowing meanwhile (they are what frees the queue).
            let queue_full = self.engine_queue_full();
            if queue_full && !self.read_paused {
                self.state.metrics.read_pauses.inc();
            }
            self.read_paused = queue_full;
            let socket_open = self.socket.is_some() && !closing && !queue_full;
            tokio::select! {
                message = next_message(&mut self.socket), if socket_open => {
                    match message {
                        Some(Message::Binary(data)) => {
                            if let Err(reason) = self.on_audio(data).await {
                                return reason;
                            }
                        }
                        Some(Message::Text(text)) => match serde_json::from_str::<ClientMessage>(&text) {
                            Ok(ClientMessage::Close) => {
                                closing = true;
                                if self.engine.is_none() {
                                    return CloseReason::Normal;
                                }
                                self.end_audio();
                            }
                            Ok(message) => {
                                if let Err(reason) = self.on_control(message).await {
                                    return reason;
                                }
                            }
                            Err(err) => {
                                self.send(ServerMessage::Error {
                                    code: "invalid_message",
                                    message: format!("text frames must be control messages (config, finalize, close, keepalive, ping): {err}"),
                                })
                                .await;
                                return CloseReason::InvalidInput;
                            }
                        },
                        Some(Message::Ping(_) | Message::Pong(_)) => {}
                        Some(Message::Close(_)) | None => {
                            // The client is gone (the seed's client just closes): its audio is
                            // still flushed through the engine.
                            self.socket = None;
                            if self.engine.is_none() {
                                return CloseReason::ClientClosed;
                            }
                            self.end_audio();
                        }
                    }
                }
                event = next_engine_event(&mut self.engine), if self.engine.is_some() => {
                    match event {
                        EngineEvent::Response(Ok(Some(response))) => self.on_response(response).await,
                        EngineEvent::Response(Ok(None)) => {
                            return if closing {
                                CloseReason::Normal
                            } else if self.socket.is_none() {
                                CloseReason::ClientClosed
                            } else {
                                tracing::warn!("engine ended the stream unexpectedly");
                                self.send(ServerMessage::Error {
                                    code: "engine_failure",
                                    message: "the engine ended the stream unexpectedly".into(),
                                })
                                .await;
                                CloseReason::EngineFailure
                            };
                        }
                        EngineEvent::Response(Err(status)) => {
                            if self.socket.is_none() {
                                return CloseReason::ClientClosed;
                            }
                            return self.on_engine_error(status).await;
                        }
                        EngineEvent::BufferChanged(false) => {
                            if let Some(engine) = &mut self.engine {
                                engine.buffer_watch_closed = true;
                            }
                        }
                        EngineEvent::BufferChanged(true) => {
                            if let Err(reason) = self.apply_flow().await {
                                return reason;
                            }
                        }
                    }
                }
            }
        }
    }

    async fn on_audio(&mut self, data: Bytes) -> Result<(), CloseReason> {
        if data.is_empty() {
            return Ok(());
        }
        let limit = self.state.config.max_frame_bytes;
        if data.len() > limit {
            self.send(ServerMessage::Error {
                code: "frame_too_large",
                message: format!(
                    "binary frame of {} bytes is larger than the {limit}-byte limit; send smaller frames",
                    data.len()
                ),
            })
            .await;
            return Err(CloseReason::FrameTooLarge);
        }
        let sample_bytes = self.settings.encoding.bytes_per_sample();
        if !data.len().is_multiple_of(sample_bytes) {
            self.send(ServerMessage::Error {
                code: "invalid_audio",
                message: format!(
                    "binary frame of {} bytes is not a whole number of {}-byte {} samples",
                    data.len(),
                    sample_bytes,
                    self.settings.encoding.as_str()
                ),
            })
            .await;
            return Err(CloseReason::InvalidInput);
        }
        self.ensure_engine().await?;
        self.audio_bytes += data.len() as u64;
        let metrics = &self.state.metrics;
        metrics.audio_chunks_received.inc();
        metrics.audio_bytes_received.inc_by(data.len() as u64);
        let audio_end_ms = (self.audio_bytes as f64 / self.settings.bytes_per_ms()) as u64;
        self.arrivals.record(audio_end_ms, Instant::now());
        self.queue(StreamingRecognizeRequest {
            audio_content: data.to_vec(),
            ..Default::default()
        })
        .await
    }

    /// The frame queue to the engine has no room: the transport is waiting for HTTP/2 flow
    /// control, because the engine reads slower than the client sends.
    fn engine_queue_full(&self) -> bool {
        self.engine
            .as_ref()
            .and_then(|engine| engine.audio.as_ref())
            .is_some_and(|audio| audio.capacity() == 0)
    }

    async fn queue(&mut self, request: StreamingRecognizeRequest) -> Result<(), CloseReason> {
        let Some(engine) = &self.engine else {
            return Ok(());
        };
        let Some(audio) = &engine.audio else {
            return Ok(());
        };
        let n_bytes = request.audio_content.len();
        engine.buffered_bytes.fetch_add(n_bytes, Ordering::Relaxed);
        if audio.try_send(request).is_err() {
            // Cannot happen: the socket is only read while the queue has room, and each client
            // message queues at most one request. Refuse loudly rather than lose audio.
            engine.buffered_bytes.fetch_sub(n_bytes, Ordering::Relaxed);
            return self.overflow().await;
        }
        self.apply_flow().await
    }

    async fn apply_flow(&mut self) -> Result<(), CloseReason> {
        let buffered = self
            .engine
            .as_ref()
            .map_or(0, |engine| engine.buffered_bytes.load(Ordering::Relaxed));
        match self.flow.on_buffered(buffered) {
            FlowSignal::Nothing => Ok(()),
            FlowSignal::SlowDown => {
                self.state.metrics.slow_down.inc();
                let buffered_ms = (buffered as f64 / self.settings.bytes_per_ms()) as u64;
                self.send(ServerMessage::SlowDown { buffered_ms }).await;
                Ok(())
            }
            FlowSignal::Resume => {
                self.send(ServerMessage::Resume).await;
                Ok(())
            }
            FlowSignal::Overflow => self.overflow().await,
        }
    }

    async fn overflow(&mut self) -> Result<(), CloseReason> {
        self.state.metrics.buffer_limit.inc();
        let limit = self.state.config.max_buffer_bytes;
        self.send(ServerMessage::Error {
            code: "buffer_limit",
            message: format!(
                "more than {limit} bytes of audio are waiting for the engine; send audio at real-time pace (slow down when told to)"
            ),
        })
        .await;
        Err(CloseReason::BufferLimit)
    }

    async fn on_control(&mut self, message: ClientMessage) -> Result<(), CloseReason> {
        match message {
            ClientMessage::Config(config) => {
                if self.engine.is_some() {
                    self.send(ServerMessage::Error {
                        code: "config_after_audio",
                        message:
                            "config is only accepted before the first audio frame; it was ignored"
                                .into(),
                    })
                    .await;
                    return Ok(());
                }
                match self.settings.apply(&StreamParams::from(config)) {
                    Ok(settings) => {
                        self.settings = settings;
                        self.flow = flow_control(&self.state, &self.settings);
                        self.send_session().await;
                        Ok(())
                    }
                    Err(message) => {
                        self.send(ServerMessage::Error {
                            code: "invalid_parameter",
                            message,
                        })
                        .await;
                        Err(CloseReason::InvalidInput)
                    }
                }
            }
            ClientMessage::Finalize => {
                self.ensure_engine().await?;
                self.queue(StreamingRecognizeRequest {
                    finalize: true,
                    ..Default::default()
                })
                .await
            }
            ClientMessage::Keepalive => Ok(()),
            ClientMessage::Ping { id } => {
                self.send(ServerMessage::Pong { id }).await;
                Ok(())
            }
            ClientMessage::Close => Ok(()),
        }
    }

    /// Half-closes the engine stream: the engine sends every remaining final, then ends it.
    fn end_audio(&mut self) {
        if let Some(engine) = &mut self.engine {
            engine.audio = None;
        }
    }

    async fn ensure_engine(&mut self) -> Result<(), CloseReason> {
        if self.engine.is_some() {
            return Ok(());
        }
        match open_engine(&self.state, &self.id, &self.settings).await {
            Ok(engine) => {
                self.engine = Some(engine);
                Ok(())
            }
            Err(OpenError::Overloaded(message)) => {
                self.state.metrics.error("grpc");
                self.send(ServerMessage::Error {
                    code: "overloaded",
                    message,
                })
                .await;
                Err(CloseReason::Overloaded)
            }
            Err(OpenError::Unavailable(message)) => {
                self.state.metrics.error("grpc");
                self.send(ServerMessage::Error {
                    code: "engine_unavailable",
                    message,
                })
                .await;
                Err(CloseReason::EngineFailure)
            }
        }
    }

    async fn on_response(&mut self, response: StreamingRecognizeResponse) {
        let now = Instant::now();
        let state = self.state.clone();
        let metrics = &state.metrics;
        let message = match ResponseKind::try_from(response.kind) {
            Ok(ResponseKind::SpeechStarted) => {
                self.awaiting_first_partial = Some(response.event_ms);
                ServerMessage::SpeechStarted {
                    at_ms: response.event_ms,
                }
            }
            Ok(ResponseKind::SpeechEnded) => {
                self.awaiting_final = Some(response.event_ms);
                ServerMessage::SpeechEnded {
                    at_ms: response.event_ms,
                }
            }
            Ok(ResponseKind::Result) => {
                if let Some(latency) = self.arrivals.elapsed_since(response.end_ms, now) {
                    metrics.latency.observe(latency.as_secs_f64());
                }
                if response.is_final {
                    self.persist_final(&response);
                    if let Some(latency) = self
                        .awaiting_final
                        .take()
                        .and_then(|at| self.arrivals.elapsed_since(at, now))
                    {
                        metrics.final_latency.observe(latency.as_secs_f64());
                    }
                } else if let Some(latency) = self
                    .awaiting_first_partial
                    .take()
                    .and_then(|at| self.arrivals.elapsed_since(at, now))
                {
                    metrics.first_partial.observe(latency.as_secs_f64());
                }
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
            Ok(ResponseKind::EngineEvent) | Err(_) => return,
        };
        self.send(message).await;
    }

    async fn on_engine_error(&mut self, status: tonic::Status) -> CloseReason {
        self.state.metrics.error("engine");
        tracing::warn!(code = ?status.code(), message = status.message(), "engine stream failed");
        let (code, reason) = match status.code() {
            Code::ResourceExhausted => ("overloaded", CloseReason::Overloaded),
            Code::InvalidArgument => ("invalid_audio", CloseReason::InvalidInput),
            _ => ("engine_failure", CloseReason::EngineFailure),
        };
        self.send(ServerMessage::Error {
            code,
            message: format!("engine: {}", status.message()),
        })
        .await;
        reason
    }

    /// Sends `closed` and the close frame (if the client is still there), then lets the engine
    /// finish flushing: its finals belong to the transcript even when nobody reads them.
    async fn finish(&mut self, reason: CloseReason) {
        let audio_ms = (self.audio_bytes as f64 / self.settings.bytes_per_ms()) as u64;
        self.send(ServerMessage::Closed {
            reason: reason.as_str(),
            audio_ms,
            segments: self.segments,
        })
        .await;
        if let Some(mut socket) = self.socket.take() {
            let frame = CloseFrame {
                code: reason.close_code(),
                reason: Utf8Bytes::from(reason.as_str()),
            };
            let _ = socket.send(Message::Close(Some(frame))).await;
            // Complete the closing handshake: read (and discard) until the client's close.
            // Dropping the connection with unread audio in it would make the kernel reset it,
            // and the client could lose the `closed` message and close frame just sent.
            let _ = tokio::time::timeout(CLOSE_HANDSHAKE_TIMEOUT, async {
                while let Some(Ok(message)) = socket.recv().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
        self.end_audio();
        if let Some(mut engine) = self.engine.take() {
            while let Ok(Some(response)) = engine.responses.message().await {
                if response.is_final {
                    self.persist_final(&response);
                }
            }
        }
        let status = match reason {
            CloseReason::Normal | CloseReason::ClientClosed => SessionStatus::Completed,
            _ => SessionStatus::Failed,
        };
        self.persist(StoreOp::FinishSession {
            id: self.id.clone(),
            end: SessionEnd {
                ended_at_ms: now_ms(),
                audio_ms: audio_ms as i64,
                close_reason: reason.as_str().to_string(),
                status,
            },
        });
        tracing::info!(
            session_id = %self.id,
            peer = ?self.peer,
            reason = reason.as_str(),
            audio_ms,
            segments = self.segments,
            "session ended"
        );
    }

    /// Counts a final and queues it for the store (empty finals carry no words to keep).
    fn persist_final(&mut self, response: &StreamingRecognizeResponse) {
        let index = self.segments as i32;
        self.segments += 1;
        if response.transcript.is_empty() {
            return;
        }
        self.persist(StoreOp::AppendSegment(SegmentRecord {
            session_id: self.id.clone(),
            index,
            text: response.transcript.clone(),
            start_ms: response.start_ms,
            end_ms: response.end_ms,
            confidence: response.confidence,
            words: response
                .words
                .iter()
                .map(|w| WordRecord {
                    word: w.word.clone(),
                    start_ms: w.start_ms,
                    end_ms: w.end_ms,
                    confidence: w.confidence,
                })
                .collect(),
        }));
    }

    /// Queues a store write without waiting; a refusal is reported, never silent.
    fn persist(&self, op: StoreOp) {
        let Some(writer) = &self.state.store_writer else {
            return;
        };
        let kind = op.kind();
        if let Err(err) = writer.submit(op) {
            self.state.metrics.error("store");
            tracing::error!(session_id = %self.id, op = kind, %err, "transcript write refused");
        }
    }

    async fn send(&mut self, message: ServerMessage) {
        let Some(socket) = &mut self.socket else {
            return;
        };
        if socket
            .send(Message::Text(Utf8Bytes::from(message.to_json())))
            .await
            .is_err()
        {
            self.socket = None;
        }
    }
}

/// Opens a stream on the least loaded engine that accepts it.
async fn open_engine(
    state: &GatewayState,
    session_id: &str,
    settings: &StreamSettings,
) -> Result<EngineStream, OpenError> {
    let mut refusals = Vec::new();
    let mut overloaded = 0;
    let candidates = state.engines.candidates();
    for engine in &candidates {
        let (sender, receiver) = mpsc::channel(AUDIO_QUEUE_FRAMES);
        let first = StreamingRecognizeRequest {
            session_id: session_id.to_string(),
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
        if sender.try_send(first).is_err() {
            continue;
        }
        let buffered_bytes = Arc::new(AtomicUsize::new(0));
        let (changed_sender, buffered_changed) = watch::channel(());
        let counter = buffered_bytes.clone();
        // Bytes leave the gateway's buffer when the transport takes them (HTTP/2 flow
        // control decides when).
        let requests = ReceiverStream::new(receiver).map(move |request| {
            counter.fetch_sub(request.audio_content.len(), Ordering::Relaxed);
            let _ = changed_sender.send(());
            request
        });
        let claim = engine.claim();
        let mut client = SpeechToTextClient::new(engine.channel());
        match client.streaming_recognize(requests).await {
            Ok(response) => {
                tracing::debug!(engine = %engine.url, session_id = %session_id, "engine stream opened");
                return Ok(EngineStream {
                    audio: Some(sender),
                    responses: response.into_inner(),
                    buffered_bytes,
                    buffered_changed,
                    buffer_watch_closed: false,
                    _claim: claim,
                });
            }
            Err(status) => {
                if status.code() == Code::ResourceExhausted {
                    overloaded += 1;
                }
                tracing::warn!(engine = %engine.url, code = ?status.code(), message = status.message(), "engine refused a stream");
                refusals.push(format!("{}: {}", engine.url, status.message()));
            }
        }
    }
    let detail = refusals.join("; ");
    // Full engines (even beside dead ones) mean "try again later"; only engines that are all
    // down or failing make it an engine failure.
    if overloaded > 0 {
        Err(OpenError::Overloaded(format!(
            "every engine that is up is at capacity; try again later ({detail})"
        )))
    } else {
        Err(OpenError::Unavailable(format!(
            "no engine accepted the stream ({detail})"
        )))
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

fn flow_control(state: &GatewayState, settings: &StreamSettings) -> FlowControl {
    let bytes_per_ms = settings.bytes_per_ms();
    let config = &state.config;
    FlowControl::new(
        (config.slow_down_ms as f64 * bytes_per_ms) as usize,
        (config.resume_ms as f64 * bytes_per_ms) as usize,
        config.max_buffer_bytes,
    )
}

async fn next_message(socket: &mut Option<WebSocket>) -> Option<Message> {
    match socket {
        Some(socket) => match socket.recv().await {
            Some(Ok(message)) => Some(message),
            Some(Err(_)) | None => None,
        },
        None => std::future::pending().await,
    }
}

enum EngineEvent {
    Response(Result<Option<StreamingRecognizeResponse>, tonic::Status>),
    /// The engine took audio from the buffer; false once that can no longer happen.
    BufferChanged(bool),
}

async fn next_engine_event(engine: &mut Option<EngineStream>) -> EngineEvent {
    let Some(engine) = engine else {
        return std::future::pending().await;
    };
    tokio::select! {
        response = engine.responses.message() => EngineEvent::Response(response),
        changed = engine.buffered_changed.changed(), if !engine.buffer_watch_closed => {
            EngineEvent::BufferChanged(changed.is_ok())
        }
    }
}
