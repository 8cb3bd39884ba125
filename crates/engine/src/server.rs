//! Runs the engine: recognizer thread, gRPC server with health, keep-alive and per-connection
//! limits, warm-up before SERVING, NOT_SERVING for good if the recognizer dies, and an orderly
//! shutdown (not-serving, stop accepting, flush finals, deadline).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use earshot_model::{RecognitionRequest, Recognizer, WindowKind};
use earshot_proto::speech_to_text_server::SpeechToTextServer;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic_health::ServingStatus;

use crate::batcher::{BatchPolicy, Priority, RecognizerFailure, spawn_batcher};
use crate::config::EngineConfig;
use crate::metrics::EngineMetrics;
use crate::service::{EngineState, SpeechService};
use tokio_util::sync::CancellationToken;

/// The name the health service reports on, as in the proto.
pub const SERVICE_NAME: &str = "stt.SpeechToText";
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
const WARM_UP_AUDIO: Duration = Duration::from_secs(2);
/// HTTP/2 streams one connection may have open beyond `max_sessions`: room for health checks
/// and for streams that are ending. Admission is per engine, so one connection can still take
/// every session, but it cannot pile up more streams than that (hyper's default is 200).
const EXTRA_STREAMS_PER_CONNECTION: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("invalid engine configuration: {0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot start the recognizer thread: {0}")]
    Thread(std::io::Error),
    #[error("model warm-up failed: {0}")]
    WarmUp(String),
    #[error("gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("the recognizer failed: {0}")]
    RecognizerFailed(String),
}

/// Serves `stt.SpeechToText` on `listener` until `shutdown` resolves, then drains. If the
/// recognizer dies first, the engine stops at once and this returns
/// [`EngineError::RecognizerFailed`], so that the process exits with an error.
pub async fn run_engine(
    config: EngineConfig,
    recognizer: Box<dyn Recognizer>,
    listener: TcpListener,
    metrics: EngineMetrics,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    let engine = RunningEngine::start(config, recognizer, listener, metrics).await?;
    tokio::select! {
        () = shutdown => {}
        _ = engine.failed() => {}
    }
    engine.shutdown().await
}

/// An engine that is serving; [`RunningEngine::shutdown`] stops it in order.
pub struct RunningEngine {
    state: Arc<EngineState>,
    health_reporter: tonic_health::server::HealthReporter,
    stop_accepting: CancellationToken,
    server: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    recognizer_thread: std::thread::JoinHandle<()>,
    failure_watch: tokio::task::JoinHandle<()>,
}

impl RunningEngine {
    /// Starts serving at once (health NOT_SERVING), warms the model up, then reports SERVING.
    /// `metrics` is updated as the engine works; register it where it should be scraped.
    pub async fn start(
        config: EngineConfig,
        recognizer: Box<dyn Recognizer>,
        listener: TcpListener,
        metrics: EngineMetrics,
    ) -> Result<Self, EngineError> {
        let local_addr = listener.local_addr().ok();
        Self::start_on(config, recognizer, incoming(listener), local_addr, metrics).await
    }

    /// [`RunningEngine::start`] on any stream of connections (tests use in-memory ones).
    pub(crate) async fn start_on<I, IO, IE>(
        config: EngineConfig,
        recognizer: Box<dyn Recognizer>,
        connections: I,
        local_addr: Option<SocketAddr>,
        metrics: EngineMetrics,
    ) -> Result<Self, EngineError>
    where
        I: Stream<Item = Result<IO, IE>> + Send + 'static,
        IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
        IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    {
        config.validate()?;
        let n_mels = recognizer.n_mels();
        let mel_filters = recognizer.mel_filters();
        let policy = BatchPolicy {
            max_batch: config.max_batch,
            max_wait: config.max_wait,
            // One window per stream plus the warm-up.
            capacity: config.max_sessions + 1,
        };
        let (batcher, recognizer_thread) =
            spawn_batcher(recognizer, policy, metrics).map_err(EngineError::Thread)?;
        let state = Arc::new(EngineState::new(
            config.clone(),
            batcher,
            mel_filters,
            n_mels,
        ));

        let (health_reporter, health_service) = tonic_health::server::health_reporter();
        set_health(&health_reporter, ServingStatus::NotServing).await;

        let stop_accepting = CancellationToken::new();
        let streams_per_connection = config
            .max_sessions
            .saturating_add(EXTRA_STREAMS_PER_CONNECTION);
        // No `Server::timeout`: it bounds only the handler, which returns as soon as a stream is
        // admitted. A stream's life is bounded by the first-message, idle and write timeouts.
        let server = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(u32::try_from(streams_per_connection).unwrap_or(u32::MAX))
            // Counts calls whose handler has not returned yet; a backstop, as ours return at once.
            .concurrency_limit_per_connection(streams_per_connection)
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(SpeechToTextServer::new(SpeechService::new(state.clone())))
            .serve_with_incoming_shutdown(connections, stop_accepting.clone().cancelled_owned());
        let server = tokio::spawn(server);

        let warm_up = warm_up(&state, n_mels).await?;
        set_health(&health_reporter, ServingStatus::Serving).await;
        // Started after SERVING is set, so that a failure always has the last word.
        let failure_watch = tokio::spawn(report_failure(
            state.batcher.failure().clone(),
            health_reporter.clone(),
        ));
        tracing::info!(
            addr = ?local_addr,
            warm_up_ms = warm_up.as_millis() as u64,
            max_batch = config.max_batch,
            max_sessions = config.max_sessions,
            "engine serving"
        );
        Ok(Self {
            state,
            health_reporter,
            stop_accepting,
            server,
            recognizer_thread,
            failure_watch,
        })
    }

    /// Resolves if the recognizer thread dies (the model panicked, or the thread ended). From
    /// then on the engine reports NOT_SERVING, ends every open stream with INTERNAL and refuses
    /// new ones with UNAVAILABLE; the owner should call [`RunningEngine::shutdown`] (which
    /// returns the same error) and exit with a failure. Never resolves while the recognizer
    /// works.
    pub fn failed(&self) -> impl Future<Output = EngineError> + Send + 'static {
        let failure = self.state.batcher.failure().clone();
        async move { EngineError::RecognizerFailed(failure.wait().await) }
    }

    /// Streams, model calls, batch sizes and inference time.
    pub fn metrics(&self) -> &EngineMetrics {
        self.state.batcher.metrics()
    }

    /// Reports NOT_SERVING, lets every stream flush its finals (up to the shutdown deadline),
    /// then stops accepting and closes connections. Returns
    /// [`EngineError::RecognizerFailed`] if the recognizer died at any point.
    pub async fn shutdown(self) -> Result<(), EngineError> {
        let deadline = self.state.config.shutdown_deadline;
        tracing::info!(
            active_streams = self.state.active_sessions(),
            "shutting down: flushing finals"
        );
        set_health(&self.health_reporter, ServingStatus::NotServing).await;
        self.state.shutdown.cancel();
        self.state.tracker.close();
        if tokio::time::timeout(deadline, self.state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("shutdown deadline passed with streams still open");
        }
        self.stop_accepting.cancel();
        match tokio::time::timeout(Duration::from_secs(2), self.server).await {
            Ok(Ok(result)) => result?,
            Ok(Err(join_error)) => tracing::error!(%join_error, "server task failed"),
            Err(_) => tracing::warn!("connections still open after the deadline; exiting anyway"),
        }
        self.failure_watch.abort();
        let failure = self.state.batcher.failure().clone();
        drop(self.state);
        // The recognizer thread ends once every handle is gone; don't wait on a long model call.
        let thread = self.recognizer_thread;
        let _ = tokio::time::timeout(
            Duration::from_secs(5),
            tokio::task::spawn_blocking(move || thread.join()),
        )
        .await;
        match failure.reason() {
            Some(reason) => Err(EngineError::RecognizerFailed(reason)),
            None => Ok(()),
        }
    }
}

/// Once the recognizer has died, nothing this engine accepts can be answered: say so on the
/// health service for good (open streams see the failure themselves and end with INTERNAL).
async fn report_failure(
    failure: RecognizerFailure,
    health_reporter: tonic_health::server::HealthReporter,
) {
    let reason = failure.wait().await;
    tracing::error!(
        %reason,
        "the recognizer has failed: reporting NOT_SERVING and ending every stream"
    );
    set_health(&health_reporter, ServingStatus::NotServing).await;
}

/// Accepted connections with TCP_NODELAY: the builder's `tcp_nodelay` only applies to
/// listeners tonic binds itself. Without it, a response written right after another (a speech
/// event, then the final) waits for the client's delayed ACK, up to 40 ms.
pub(crate) fn incoming(listener: TcpListener) -> tonic::transport::server::TcpIncoming {
    tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true))
}

async fn set_health(reporter: &tonic_health::server::HealthReporter, status: ServingStatus) {
    reporter.set_service_status("", status).await;
    reporter.set_service_status(SERVICE_NAME, status).await;
}

/// Runs the model once on synthetic audio so that the first real stream does not pay for
/// lazy initialisation (allocation, thread pools).
async fn warm_up(state: &EngineState, n_mels: usize) -> Result<Duration, EngineError> {
    let started = Instant::now();
    let n_frames = WARM_UP_AUDIO.as_millis() as usize / 10;
    // Quiet noise, as raw log10 mel power.
    let raw_log_mel = (0..n_frames * n_mels)
        .map(|i| -6.0 + ((i * 7919) % 17) as f32 * 0.05)
        .collect();
    let request = RecognitionRequest::new(raw_log_mel, WindowKind::Final);
    let reply = state
        .batcher
        .submit(request, Priority::Final)
        .map_err(|err| EngineError::WarmUp(err.to_string()))?;
    match reply.await {
        Ok(Ok(_)) => Ok(started.elapsed()),
        Ok(Err(message)) => Err(EngineError::WarmUp(message)),
        Err(_) => Err(EngineError::WarmUp("recognizer thread stopped".into())),
    }
}
