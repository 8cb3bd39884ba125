//! The `stt.SpeechToText` gRPC service: admission, one task per stream, and the mapping of
//! session outputs and errors onto the wire (the only place that builds a `tonic::Status`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use earshot_audio::AudioFormat;
use earshot_proto::speech_to_text_server::SpeechToText;
use earshot_proto::{
    EngineEvent, ResponseKind, StreamingRecognizeRequest, StreamingRecognizeResponse, WordInfo,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::Instrument;

use crate::batcher::{BatcherHandle, JobResult, SubmitError};
use crate::config::{CHUNK_RANGE, ENDPOINT_RANGE, EngineConfig};
use crate::session::{DecodeTicket, Session, SessionOutput, SessionSettings};

/// Responses buffered per stream before partials are dropped and finals wait for room (up to
/// the write timeout). One more place is kept for the status that ends the stream.
const RESPONSE_BUFFER: usize = 32;
/// Finals and events waiting for room in the response buffer beyond which the stream stops
/// reading audio (HTTP/2 flow control then pushes back on the client).
const MAX_UNSENT: usize = 8;
/// Longest `session_id` accepted, in bytes (printable ASCII only).
pub const MAX_SESSION_ID_BYTES: usize = 128;
/// Client strings quoted in error messages (and so in logs) are cut to this many characters.
const MAX_QUOTED_CHARS: usize = 64;
/// The most audio of one request whose DSP runs without yielding to the runtime (about 2 ms of
/// work on one core at 48 kHz: 60 s took 122 ms on the 2-core CI machine).
const DSP_PIECE: Duration = Duration::from_secs(1);

type ResponseSender = mpsc::Sender<Result<StreamingRecognizeResponse, Status>>;

/// Everything the streams share.
pub struct EngineState {
    pub config: EngineConfig,
    pub batcher: BatcherHandle,
    pub mel_filters: Arc<[f32]>,
    pub n_mels: usize,
    admission: Arc<Semaphore>,
    /// Cancelled on shutdown: streams flush their finals and end.
    pub shutdown: CancellationToken,
    pub tracker: TaskTracker,
}

impl EngineState {
    pub fn new(
        config: EngineConfig,
        batcher: BatcherHandle,
        mel_filters: Arc<[f32]>,
        n_mels: usize,
    ) -> Self {
        Self {
            admission: Arc::new(Semaphore::new(config.max_sessions)),
            config,
            batcher,
            mel_filters,
            n_mels,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
        }
    }

    pub fn active_sessions(&self) -> usize {
        self.config.max_sessions - self.admission.available_permits()
    }
}

#[derive(Clone)]
pub struct SpeechService {
    state: Arc<EngineState>,
}

impl SpeechService {
    pub fn new(state: Arc<EngineState>) -> Self {
        Self { state }
    }
}

#[tonic::async_trait]
impl SpeechToText for SpeechService {
    type StreamingRecognizeStream = ReceiverStream<Result<StreamingRecognizeResponse, Status>>;

    async fn streaming_recognize(
        &self,
        request: Request<Streaming<StreamingRecognizeRequest>>,
    ) -> Result<Response<Self::StreamingRecognizeStream>, Status> {
        if self.state.shutdown.is_cancelled() {
            return Err(Status::unavailable("engine is shutting down"));
        }
        if self.state.batcher.failure().reason().is_some() {
            return Err(Status::unavailable(
                "the engine's recognizer has stopped working; use another engine",
            ));
        }
        // Refuse at once rather than queueing: the caller can try another engine.
        let permit = self
            .state
            .admission
            .clone()
            .try_acquire_owned()
            .map_err(|_| {
                self.state.batcher.metrics().streams_refused.inc();
                Status::resource_exhausted(format!(
                    "engine is at capacity ({} concurrent streams); retry later or use another engine",
                    self.state.config.max_sessions
                ))
            })?;
        let peer = request.remote_addr();
        let (sender, receiver) = mpsc::channel(RESPONSE_BUFFER + 1);
        let state = self.state.clone();
        let inbound = request.into_inner();
        let span = tracing::info_span!("stream", session_id = tracing::field::Empty, ?peer);
        self.state
            .tracker
            .spawn(run_stream(state, inbound, sender, permit).instrument(span));
        Ok(Response::new(ReceiverStream::new(receiver)))
    }
}

/// Why a stream ended early; mapped onto a status in one place.
#[derive(Debug, thiserror::Error)]
enum StreamError {
    #[error("{0}")]
    InvalidArgument(String),
    #[error(
        "no request within {0:?} of opening the stream: the first request (with audio_config) must be sent at once"
    )]
    NoFirstRequest(Duration),
    #[error("the client did not read its responses for {0:?}; the stream was ended")]
    NotReading(Duration),
    #[error("model inference failed: {0}")]
    Inference(String),
    #[error("the engine's recognizer has stopped working; the stream was ended")]
    RecognizerFailed,
    #[error("engine is shutting down; every word heard before this point was sent as a final")]
    ShuttingDown,
    #[error("the recognizer is unavailable: {0}")]
    Unavailable(String),
    #[error(
        "no audio for {0:?}: the stream was closed after its finals; send audio (or silence) continuously"
    )]
    Idle(Duration),
}

impl From<StreamError> for Status {
    fn from(err: StreamError) -> Self {
        match &err {
            StreamError::InvalidArgument(_) => Status::invalid_argument(err.to_string()),
            StreamError::NoFirstRequest(_) | StreamError::NotReading(_) => {
                Status::deadline_exceeded(err.to_string())
            }
            StreamError::Inference(_) | StreamError::RecognizerFailed => {
                Status::internal(err.to_string())
            }
            StreamError::ShuttingDown | StreamError::Unavailable(_) => {
                Status::unavailable(err.to_string())
            }
            StreamError::Idle(_) => Status::out_of_range(err.to_string()),
        }
    }
}

async fn run_stream(
    state: Arc<EngineState>,
    inbound: Streaming<StreamingRecognizeRequest>,
    sender: ResponseSender,
    _permit: OwnedSemaphorePermit,
) {
    let _active = state.batcher.register_stream();
    // The status that ends the stream always has a place, however full the buffer is.
    let status_slot = sender.clone().try_reserve_owned().ok();
    let mut stream = StreamTask {
        state,
        sender,
        session_id: String::new(),
        unsent: VecDeque::new(),
    };
    let err = match stream.run(inbound).await {
        Ok(()) => {
            tracing::info!("stream ended");
            return;
        }
        Err(err) => err,
    };
    match &err {
        // The engine's own failures are not routine; the client's mistakes and planned ends are.
        StreamError::Inference(_) | StreamError::Unavailable(_) | StreamError::RecognizerFailed => {
            tracing::warn!(error = %err, "stream failed");
        }
        _ => tracing::info!(error = %err, "stream ended with an error"),
    }
    if !matches!(err, StreamError::NotReading(_)) {
        // Results produced before the error stand: deliver them first, within the deadline.
        stream.flush_unsent().await;
    }
    let status = Status::from(err);
    match status_slot {
        Some(slot) => {
            slot.send(Err(status));
        }
        None => {
            let _ = stream.sender.try_send(Err(status));
        }
    }
}

type InFlight = (DecodeTicket, tokio::sync::oneshot::Receiver<JobResult>);

struct StreamTask {
    state: Arc<EngineState>,
    sender: ResponseSender,
    session_id: String,
    /// Finals and events that found the response buffer full, oldest first. While any wait,
    /// partials are dropped (nothing may overtake a final) and the write deadline runs.
    unsent: VecDeque<StreamingRecognizeResponse>,
}

impl StreamTask {
    async fn run(
        &mut self,
        mut inbound: Streaming<StreamingRecognizeRequest>,
    ) -> Result<(), StreamError> {
        let Some(first) = self.first_request(&mut inbound).await? else {
            // The client went away before saying anything.
            return Ok(());
        };
        let mut session = self.open_session(&first)?;
        session
            .push_audio(&first.audio_content)
            .map_err(|err| StreamError::InvalidArgument(err.to_string()))?;
        if first.finalize {
            session.finalize();
        }

        let mut in_flight: Option<InFlight> = None;
        let mut input_open = true;
        let mut shutting_down = false;
        let mut went_idle = false;
        let idle_timeout = self.state.config.idle_timeout;
        let idle = tokio::time::sleep(idle_timeout);
        tokio::pin!(idle);
        let write_timeout = self.state.config.write_timeout;
        let write_deadline = tokio::time::sleep(write_timeout);
        tokio::pin!(write_deadline);
        let failure = self.state.batcher.failure().clone();
        loop {
            let nothing_waited = self.unsent.is_empty();
            self.queue_outputs(&mut session);
            if in_flight.is_none() {
                in_flight = self.schedule(&mut session)?;
            }
            if nothing_waited && !self.unsent.is_empty() {
                write_deadline
                    .as_mut()
                    .reset(Instant::now() + write_timeout);
            }
            if !input_open && in_flight.is_none() && session.is_drained() && self.unsent.is_empty()
            {
                break;
            }
            let backlogged = session.is_backlogged();
            let read_allowed = input_open && !backlogged && self.unsent.len() < MAX_UNSENT;
            // Not reading because the model is behind is not the client's idleness; not reading
            // because the client does not take its results is, so the idle timer keeps running.
            let idle_counts = input_open && !backlogged;
            tokio::select! {
                message = inbound.message(), if read_allowed => match message {
                    Ok(Some(request)) => {
                        idle.as_mut().reset(Instant::now() + idle_timeout);
                        check_later_request(&request)?;
                        push_audio_in_pieces(&mut session, &request.audio_content).await?;
                        if request.finalize {
                            session.finalize();
                        }
                    }
                    Ok(None) => {
                        session.end_of_stream();
                        input_open = false;
                    }
                    Err(status) => {
                        // The client reset the stream: nobody is left to read results.
                        tracing::debug!(%status, "client stream failed");
                        return Ok(());
                    }
                },
                result = async { (&mut in_flight.as_mut().expect("guarded by the select condition").1).await },
                    if in_flight.is_some() =>
                {
                    let (ticket, _) = in_flight.take().expect("guarded by the select condition");
                    // Time spent not reading (backlogged) is not the client's idleness.
                    idle.as_mut().reset(Instant::now() + idle_timeout);
                    let transcript = match result {
                        Ok(Ok(transcript)) => transcript,
                        Ok(Err(message)) => return Err(StreamError::Inference(message)),
                        Err(_) => return Err(StreamError::RecognizerFailed),
                    };
                    session.finish(ticket, Some(transcript));
                }
                permit = self.sender.reserve(), if !self.unsent.is_empty() => {
                    let Ok(permit) = permit else {
                        tracing::debug!("client went away before its results were delivered");
                        return Ok(());
                    };
                    if let Some(response) = self.unsent.pop_front() {
                        permit.send(Ok(response));
                    }
                    // The client is reading: it has another write timeout for the rest.
                    let now = Instant::now();
                    write_deadline.as_mut().reset(now + write_timeout);
                    idle.as_mut().reset(now + idle_timeout);
                }
                () = &mut write_deadline, if !self.unsent.is_empty() => {
                    return Err(StreamError::NotReading(write_timeout));
                }
                () = &mut idle, if idle_counts => {
                    tracing::info!(?idle_timeout, "no audio; closing the stream");
                    session.end_of_stream();
                    input_open = false;
                    went_idle = true;
                }
                () = self.state.shutdown.cancelled(), if input_open => {
                    session.end_of_stream();
                    input_open = false;
                    shutting_down = true;
                }
                _ = failure.wait() => return Err(StreamError::RecognizerFailed),
                () = self.sender.closed() => {
                    tracing::debug!("client stopped reading; ending the stream");
                    return Ok(());
                }
            }
        }
        if shutting_down {
            return Err(StreamError::ShuttingDown);
        }
        if went_idle {
            return Err(StreamError::Idle(idle_timeout));
        }
        Ok(())
    }

    /// Waits for the first request, for at most the first-request timeout: a stream that
    /// says nothing must not hold a session for as long as its connection lives.
    async fn first_request(
        &self,
        inbound: &mut Streaming<StreamingRecognizeRequest>,
    ) -> Result<Option<StreamingRecognizeRequest>, StreamError> {
        let timeout = self.state.config.first_message_timeout;
        tokio::select! {
            message = inbound.message() => Ok(message.ok().flatten()),
            () = tokio::time::sleep(timeout) => Err(StreamError::NoFirstRequest(timeout)),
            () = self.state.shutdown.cancelled() => Err(StreamError::ShuttingDown),
            _ = self.state.batcher.failure().wait() => Err(StreamError::RecognizerFailed),
            () = self.sender.closed() => Ok(None),
        }
    }

    fn open_session(&mut self, first: &StreamingRecognizeRequest) -> Result<Session, StreamError> {
        self.session_id = stream_session_id(first)?;
        tracing::Span::current().record("session_id", self.session_id.as_str());
        open_session(
            &self.state.config,
            self.state.mel_filters.clone(),
            self.state.n_mels,
            first,
        )
    }

    /// Submits the next due window, if any. Empty windows are answered without the model.
    fn schedule(&mut self, session: &mut Session) -> Result<Option<InFlight>, StreamError> {
        loop {
            let Some((ticket, request)) = session.next_window() else {
                return Ok(None);
            };
            let Some(request) = request else {
                session.finish(ticket, None);
                self.queue_outputs(session);
                continue;
            };
            let receiver = self
                .state
                .batcher
                .submit(request, ticket.priority)
                .map_err(|err| match err {
                    SubmitError::Stopped => StreamError::RecognizerFailed,
                    SubmitError::QueueFull => StreamError::Unavailable(err.to_string()),
                })?;
            return Ok(Some((ticket, receiver)));
        }
    }

    /// Hands the session's outputs to the response buffer without waiting. A partial that
    /// finds no room is dropped (a newer one follows); a final or event waits in `unsent`.
    fn queue_outputs(&mut self, session: &mut Session) {
        let audio_duration_ms = session.audio_duration().as_millis() as i64;
        for output in session.take_outputs() {
            let is_partial = matches!(&output, SessionOutput::Result(r) if !r.is_final);
            let response = to_response(output, audio_duration_ms, &self.session_id);
            if !self.unsent.is_empty() {
                // Keep the order: nothing overtakes a final that waits for room.
                if !is_partial {
                    self.unsent.push_back(response);
                }
                continue;
            }
            match self.sender.try_send(Ok(response)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(Ok(response))) if !is_partial => {
                    self.unsent.push_back(response);
                }
                // A dropped partial; or the client is gone, which the stream loop sees next.
                Err(_) => {}
            }
        }
    }

    /// Delivers what waits in `unsent`, for at most the write timeout.
    async fn flush_unsent(&mut self) {
        let deadline = tokio::time::sleep(self.state.config.write_timeout);
        tokio::pin!(deadline);
        while let Some(response) = self.unsent.pop_front() {
            tokio::select! {
                permit = self.sender.reserve() => match permit {
                    Ok(permit) => permit.send(Ok(response)),
                    Err(_) => return,
                },
                () = &mut deadline => return,
            }
        }
    }
}

/// Consumes one request's audio a [`DSP_PIECE`] at a time, yielding to the runtime between
/// pieces: a request may carry minutes of audio (up to the 4 MiB message limit), and its DSP
/// (resampling, mel, VAD) done in one go would hold a runtime thread that other streams share.
async fn push_audio_in_pieces(session: &mut Session, bytes: &[u8]) -> Result<(), StreamError> {
    let samples = session
        .decode(bytes)
        .map_err(|err| StreamError::InvalidArgument(err.to_string()))?;
    let piece = (session.input_rate() as usize * DSP_PIECE.as_millis() as usize / 1000).max(1);
    for (index, piece) in samples.chunks(piece).enumerate() {
        if index > 0 {
            tokio::task::yield_now().await;
        }
        session.push_samples(piece);
    }
    Ok(())
}

/// The `session_id` a stream's responses echo: the client's, once checked, or a new one.
fn stream_session_id(first: &StreamingRecognizeRequest) -> Result<String, StreamError> {
    if first.session_id.is_empty() {
        Ok(uuid::Uuid::new_v4().to_string())
    } else {
        check_session_id(&first.session_id)?;
        Ok(first.session_id.clone())
    }
}

/// Checks the audio and recognition settings of a stream's first request and opens its session.
fn open_session(
    defaults: &EngineConfig,
    mel_filters: Arc<[f32]>,
    n_mels: usize,
    first: &StreamingRecognizeRequest,
) -> Result<Session, StreamError> {
    let audio_config = first.audio_config.as_ref().ok_or_else(|| {
        StreamError::InvalidArgument(
            "the first request must carry audio_config (sample_rate, channels, encoding)".into(),
        )
    })?;
    let format = AudioFormat::from_declared(
        audio_config.sample_rate,
        audio_config.channels,
        &audio_config.encoding,
    )
    .map_err(|err| StreamError::InvalidArgument(err.to_string()))?;
    let settings = session_settings(defaults, first)?;
    tracing::info!(
        sample_rate = format.sample_rate,
        encoding = format.encoding.as_str(),
        "stream opened"
    );
    Session::new(format, settings, mel_filters, n_mels)
        .map_err(|err| StreamError::InvalidArgument(err.to_string()))
}

/// Per-stream settings: the engine defaults with the first request's RecognitionConfig over them.
fn session_settings(
    defaults: &EngineConfig,
    first: &StreamingRecognizeRequest,
) -> Result<SessionSettings, StreamError> {
    let mut settings = SessionSettings {
        chunk: defaults.chunk,
        endpoint_silence: defaults.endpoint_silence,
        max_utterance: defaults.max_utterance,
        interim_results: true,
        voice_activity_events: false,
        engine_events: false,
    };
    let Some(config) = &first.recognition_config else {
        return Ok(settings);
    };
    if config.chunk_ms != 0 {
        let chunk = millis(config.chunk_ms);
        if !CHUNK_RANGE.contains(&chunk) {
            return Err(StreamError::InvalidArgument(format!(
                "chunk_ms {} is outside the allowed 100 to 1000",
                config.chunk_ms
            )));
        }
        settings.chunk = chunk;
    }
    if config.endpoint_ms != 0 {
        let endpoint = millis(config.endpoint_ms);
        if !ENDPOINT_RANGE.contains(&endpoint) {
            return Err(StreamError::InvalidArgument(format!(
                "endpoint_ms {} is outside the allowed 100 to 5000",
                config.endpoint_ms
            )));
        }
        settings.endpoint_silence = endpoint;
    }
    if !matches!(config.language.as_str(), "" | "en") {
        return Err(StreamError::InvalidArgument(format!(
            "language {} is not supported: this engine's model is English-only (use \"en\")",
            quoted(&config.language)
        )));
    }
    settings.interim_results = config.interim_results.unwrap_or(true);
    settings.voice_activity_events = config.voice_activity_events;
    settings.engine_events = config.engine_events;
    Ok(settings)
}

/// Only the first request may configure the stream.
fn check_later_request(request: &StreamingRecognizeRequest) -> Result<(), StreamError> {
    if request.audio_config.is_some() || request.recognition_config.is_some() {
        return Err(StreamError::InvalidArgument(
            "audio_config and recognition_config are only accepted in the first request".into(),
        ));
    }
    Ok(())
}

/// A `session_id` is echoed in every response and recorded in logs: keep it short and plain.
fn check_session_id(session_id: &str) -> Result<(), StreamError> {
    let rule = format!(
        "session_id must be at most {MAX_SESSION_ID_BYTES} bytes of printable ASCII (0x20 to 0x7E)"
    );
    if session_id.len() > MAX_SESSION_ID_BYTES {
        return Err(StreamError::InvalidArgument(format!(
            "{rule}; this one is {} bytes",
            session_id.len()
        )));
    }
    if let Some(position) = session_id.bytes().position(|b| !(0x20..=0x7e).contains(&b)) {
        return Err(StreamError::InvalidArgument(format!(
            "{rule}; byte {position} is not"
        )));
    }
    Ok(())
}

/// A client string as it may appear in a message or a log line: escaped (no line breaks or
/// control characters get through) and cut to [`MAX_QUOTED_CHARS`].
fn quoted(text: &str) -> String {
    let mut chars = text.chars();
    let head: String = chars.by_ref().take(MAX_QUOTED_CHARS).collect();
    if chars.next().is_some() {
        format!("{head:?}…")
    } else {
        format!("{head:?}")
    }
}

fn millis(value: i32) -> Duration {
    Duration::from_millis(u64::try_from(value).unwrap_or(0))
}

fn ms(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

fn to_response(
    output: SessionOutput,
    audio_duration_ms: i64,
    session_id: &str,
) -> StreamingRecognizeResponse {
    let base = StreamingRecognizeResponse {
        audio_duration_ms,
        session_id: session_id.to_string(),
        ..Default::default()
    };
    match output {
        SessionOutput::SpeechStarted { at } => StreamingRecognizeResponse {
            kind: ResponseKind::SpeechStarted as i32,
            event_ms: ms(at),
            ..base
        },
        SessionOutput::SpeechEnded { at } => StreamingRecognizeResponse {
            kind: ResponseKind::SpeechEnded as i32,
            event_ms: ms(at),
            ..base
        },
        SessionOutput::EngineEvent { code, message } => StreamingRecognizeResponse {
            kind: ResponseKind::EngineEvent as i32,
            engine_event: Some(EngineEvent {
                code: code.to_string(),
                message,
            }),
            ..base
        },
        SessionOutput::Result(result) => StreamingRecognizeResponse {
            kind: ResponseKind::Result as i32,
            transcript: result.text,
            is_final: result.is_final,
            confidence: result.confidence,
            start_ms: ms(result.start),
            end_ms: ms(result.end),
            stability: result.stability,
            segment_index: result.segment as i32,
            from_finalize: result.from_finalize,
            words: result
                .words
                .into_iter()
                .map(|word| WordInfo {
                    word: word.word,
                    start_ms: ms(word.start),
                    end_ms: ms(word.end),
                    confidence: word.confidence,
                })
                .collect(),
            ..base
        },
    }
}

/// The checks a stream's requests go through, without the gRPC plumbing, for the fuzz targets in
/// `fuzz/`. Errors come back as the statuses the stream would end with.
#[doc(hidden)]
pub mod fuzzing {
    use super::*;

    /// The first request: its `session_id` (a fresh one when empty) and the opened session.
    pub fn open_stream(
        defaults: &EngineConfig,
        mel_filters: Arc<[f32]>,
        n_mels: usize,
        first: &StreamingRecognizeRequest,
    ) -> Result<(String, Session), Status> {
        let session_id = stream_session_id(first)?;
        let session = open_session(defaults, mel_filters, n_mels, first)?;
        Ok((session_id, session))
    }

    /// Any request after the first.
    pub fn check_later_request(request: &StreamingRecognizeRequest) -> Result<(), Status> {
        Ok(super::check_later_request(request)?)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use earshot_audio::{Encoding, pcm};
    use earshot_model::mel::mel_filters;

    use super::*;

    fn session(sample_rate: u32) -> Session {
        let format = AudioFormat {
            sample_rate,
            encoding: Encoding::PcmInt16,
        };
        let settings = session_settings(
            &EngineConfig::default(),
            &StreamingRecognizeRequest::default(),
        )
        .unwrap();
        Session::new(format, settings, Arc::from(mel_filters(80)), 80).unwrap()
    }

    /// On a one-thread runtime, another task runs between the pieces of one large request.
    #[tokio::test(flavor = "current_thread")]
    async fn a_large_request_yields_to_other_tasks_between_pieces() {
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let ticks = ticks.clone();
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::Relaxed);
                    tokio::task::yield_now().await;
                }
            }
        });
        let mut session = session(8_000);
        // 20 s of a tone: 20 pieces of a second.
        let samples: Vec<f32> = (0..8_000 * 20)
            .map(|index| 0.3 * (index as f32 * 0.2).sin())
            .collect();
        tokio::task::yield_now().await;
        let before = ticks.load(Ordering::Relaxed);
        push_audio_in_pieces(&mut session, &pcm::encode_pcm16(&samples))
            .await
            .unwrap();
        let during = ticks.load(Ordering::Relaxed) - before;
        ticker.abort();
        assert!(during >= 19, "the other task ran {during} times");
        assert_eq!(session.audio_duration(), Duration::from_secs(20));
    }

    #[tokio::test]
    async fn a_request_that_is_not_whole_samples_is_refused_before_any_is_consumed() {
        let mut session = session(16_000);
        let error = push_audio_in_pieces(&mut session, &vec![0; 16_000 * 2 * 3 + 1])
            .await
            .unwrap_err();
        assert!(matches!(error, StreamError::InvalidArgument(_)));
        assert_eq!(session.audio_duration(), Duration::ZERO);
    }
}
