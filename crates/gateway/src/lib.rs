//! The gateway: WebSocket sessions (protocol v1, docs/websocket.md) bridged to engine gRPC
//! streams, with flow control, limits and health endpoints.

pub mod api;
pub mod engines;
pub mod flow;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{ConnectInfo, Query, State, WebSocketUpgrade};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::engines::EnginePool;
use crate::metrics::{EnginePoolCollector, GatewayMetrics, StoreCollector};
use crate::protocol::{StreamParams, StreamSettings};
use crate::session::{CloseReason, Session};
use earshot_store::{StoreWriter, TranscriptStore};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Engine URLs, e.g. `http://127.0.0.1:50051`.
    pub engines: Vec<String>,
    /// Concurrent WebSocket sessions; more are answered 503 before the upgrade.
    pub max_sessions: usize,
    /// Largest binary frame accepted.
    pub max_frame_bytes: usize,
    /// Unsent audio beyond which a session is closed with 1008.
    pub max_buffer_bytes: usize,
    /// Unsent audio (in ms) at which the client is told to slow down, and below which to resume.
    pub slow_down_ms: u64,
    pub resume_ms: u64,
    /// A separate address for `/metrics` (kept off the public port); `None` serves it on the
    /// main listener.
    pub metrics_listen: Option<SocketAddr>,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            engines: vec!["http://127.0.0.1:50051".into()],
            max_sessions: 1024,
            max_frame_bytes: 256 * 1024,
            max_buffer_bytes: 1024 * 1024,
            slow_down_ms: 2000,
            resume_ms: 500,
            metrics_listen: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error(transparent)]
    Engines(#[from] engines::PoolError),
    #[error("invalid gateway configuration: {0}")]
    Config(String),
}

impl GatewayConfig {
    pub fn validate(&self) -> Result<(), GatewayError> {
        if self.max_sessions == 0 {
            return Err(GatewayError::Config(
                "max sessions must be at least 1".into(),
            ));
        }
        if self.resume_ms >= self.slow_down_ms {
            return Err(GatewayError::Config(format!(
                "resume at {} ms must be below slow-down at {} ms",
                self.resume_ms, self.slow_down_ms
            )));
        }
        if self.max_frame_bytes == 0 || self.max_buffer_bytes < self.max_frame_bytes {
            return Err(GatewayError::Config(
                "the buffer limit must hold at least one frame".into(),
            ));
        }
        Ok(())
    }
}

pub struct GatewayState {
    pub config: GatewayConfig,
    pub engines: Arc<EnginePool>,
    pub metrics: GatewayMetrics,
    /// What `/metrics` serves: the gateway's metrics, the store writer's, and whatever the
    /// caller registered before (an in-process engine's).
    pub registry: Arc<Registry>,
    /// Where transcripts are kept; writes go through `store_writer` and never block audio.
    pub store: Option<Arc<dyn TranscriptStore>>,
    pub store_writer: Option<StoreWriter>,
    active_sessions: AtomicUsize,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
}

impl GatewayState {
    /// Must be called within a tokio runtime (the store writer is a task). The gateway's
    /// metrics are added to `registry`, which `/metrics` then serves.
    pub fn new(
        config: GatewayConfig,
        store: Option<Arc<dyn TranscriptStore>>,
        mut registry: Registry,
    ) -> Result<Arc<Self>, GatewayError> {
        config.validate()?;
        let engines = Arc::new(EnginePool::new(&config.engines)?);
        let store_writer = store
            .clone()
            .map(|store| StoreWriter::spawn(store, STORE_QUEUE_OPS));
        let metrics = GatewayMetrics::default();
        metrics.register(&mut registry);
        registry.register_collector(Box::new(EnginePoolCollector(engines.clone())));
        if let Some(writer) = &store_writer {
            registry.register_collector(Box::new(StoreCollector(writer.clone())));
        }
        Ok(Arc::new(Self {
            config,
            engines,
            metrics,
            registry: Arc::new(registry),
            store,
            store_writer,
            active_sessions: AtomicUsize::new(0),
            tracker: TaskTracker::new(),
            shutdown: CancellationToken::new(),
        }))
    }
}

/// Initial WebSocket read buffer per session.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024;

/// Store writes waiting (or retried) during a store outage before sessions report losses.
const STORE_QUEUE_OPS: usize = 100_000;

pub fn router(state: Arc<GatewayState>) -> Router {
    Router::new()
        .route("/", get(web::index))
        .route("/v1/stt", get(stt))
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .route("/v1/sessions", get(api::list_sessions))
        .route("/v1/sessions/{id}", get(api::get_session))
        .route("/{*path}", get(web::file))
        .with_state(state)
}

async fn metrics_text(State(state): State<Arc<GatewayState>>) -> Response {
    if state.config.metrics_listen.is_some() {
        return (
            StatusCode::NOT_FOUND,
            "metrics are served on --metrics-listen",
        )
            .into_response();
    }
    (
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics::encode(&state.registry),
    )
        .into_response()
}

async fn readyz(State(state): State<Arc<GatewayState>>) -> Response {
    if state.engines.any_serving() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no engine is serving").into_response()
    }
}

async fn stt(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(params): Query<StreamParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    // Count the session before the upgrade so that a burst cannot overshoot the limit.
    let previous = state.active_sessions.fetch_add(1, Ordering::AcqRel);
    if previous >= state.config.max_sessions || state.shutdown.is_cancelled() {
        state.active_sessions.fetch_sub(1, Ordering::AcqRel);
        state.metrics.connections_rejected.inc();
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "the gateway is at capacity; retry later",
        )
            .into_response();
    }
    let settings = StreamSettings::default().apply(&params);
    // Room for a frame over the limit, so that it is refused with a clear error rather than
    // by the WebSocket layer.
    let frame_limit = state
        .config
        .max_frame_bytes
        .saturating_mul(2)
        .max(64 * 1024);
    upgrade
        .max_message_size(frame_limit)
        .max_frame_size(frame_limit)
        // 100 ms of audio is 3.2 kB and every message is flushed at once: the 128 KiB
        // defaults would cost 256 KiB per session for nothing (buffers grow when needed).
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_upgrade(move |socket| {
            let tracker = state.tracker.clone();
            tracker.track_future(async move {
                state.metrics.sessions_opened.inc();
                state.metrics.connections_active.inc();
                let (session, validation) =
                    Session::new(state.clone(), socket, Some(peer), settings);
                let span = tracing::info_span!("session", session_id = %session.id());
                let reason = tracing::Instrument::instrument(session.run(validation), span).await;
                state.metrics.session_closed(reason.as_str());
                if matches!(
                    reason,
                    CloseReason::InvalidInput | CloseReason::FrameTooLarge
                ) {
                    state.metrics.error("websocket");
                }
                state.metrics.connections_active.dec();
                state.active_sessions.fetch_sub(1, Ordering::AcqRel);
            })
        })
}

/// Serves the gateway on `listener` until `shutdown`, then waits for sessions to end.
pub async fn serve(
    state: Arc<GatewayState>,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let health = state
        .engines
        .clone()
        .spawn_health_checks(state.shutdown.clone());
    let metrics_server = match state.config.metrics_listen {
        Some(addr) => {
            let metrics_listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
            let app = metrics::metrics_router(state.registry.clone());
            let stop = state.shutdown.clone();
            Some(tokio::spawn(async move {
                axum::serve(metrics_listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await
            }))
        }
        None => None,
    };
    let app = router(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    let stop = state.shutdown.clone();
    // Results are small messages often sent back to back (speech_ended, then the final):
    // without TCP_NODELAY the second waits for the client's delayed ACK (up to 40 ms).
    let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown.await;
            stop.cancel();
        })
        .await;
    state.tracker.close();
    state.tracker.wait().await;
    if let Some(writer) = &state.store_writer {
        let left = writer.flush(std::time::Duration::from_secs(10)).await;
        if left > 0 {
            tracing::error!(left, "store writes still pending at exit");
        }
    }
    health.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    result
}
