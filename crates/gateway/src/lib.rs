//! The gateway: WebSocket sessions (protocol v1, docs/websocket.md) bridged to engine gRPC
//! streams, with flow control, limits, timeouts and health endpoints.

pub mod api;
pub mod auth;
pub mod engine_link;
pub mod engines;
pub mod flow;
mod http_server;
pub mod metrics;
pub mod protocol;
pub mod session;
pub mod slots;
mod warn_limited;
pub mod web;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ws::{WebSocketUpgrade, rejection::WebSocketUpgradeRejection};
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{FutureExt, Stream, StreamExt};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::engine_link::GrpcConnector;
use crate::engines::EnginePool;
use crate::metrics::{EnginePoolCollector, GatewayMetrics, StoreCollector};
use crate::protocol::{StreamParams, StreamSettings};
use crate::session::{CloseReason, LiveSessions, Session, SessionEnv};
use crate::slots::{SessionSlots, SlotRefusal};
use crate::warn_limited::WarnLimited;
use earshot_store::{StoreWriter, TranscriptStore};
use prometheus_client::registry::Registry;

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    /// Engine URLs, e.g. `http://127.0.0.1:50051`.
    pub engines: Vec<String>,
    /// Concurrent WebSocket sessions; more are answered 503 before the upgrade.
    pub max_sessions: usize,
    /// Concurrent WebSocket sessions from one client address (0: no cap); more get 429.
    pub max_sessions_per_ip: usize,
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
    /// A session whose client sends nothing for this long after the upgrade is closed.
    pub first_message_timeout: Duration,
    /// A session with no audio and no keepalive for this long is ended (after its finals).
    pub idle_timeout: Duration,
    /// A write to a client that takes longer than this closes the session (`slow_consumer`).
    pub write_timeout: Duration,
    /// WebSocket pings are sent this often; two unanswered ones close the session.
    pub ping_interval: Duration,
    /// Audio faster than this many times real time (over 10 s) is refused; 0: no limit.
    pub max_pace: f64,
    /// HTTP request headers must arrive within this.
    pub header_read_timeout: Duration,
    /// Open HTTP connections that are not WebSockets; more are closed at once.
    pub max_http_connections: usize,
    /// On SIGTERM, how long sessions get to end before the gateway exits anyway.
    pub shutdown_deadline: Duration,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            engines: vec!["http://127.0.0.1:50051".into()],
            max_sessions: 1024,
            max_sessions_per_ip: 8,
            max_frame_bytes: 256 * 1024,
            max_buffer_bytes: 1024 * 1024,
            slow_down_ms: 2000,
            resume_ms: 500,
            metrics_listen: None,
            first_message_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(10),
            ping_interval: Duration::from_secs(20),
            max_pace: 4.0,
            header_read_timeout: Duration::from_secs(30),
            max_http_connections: 1024,
            shutdown_deadline: Duration::from_secs(15),
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
        let fail = |message: String| Err(GatewayError::Config(message));
        if self.max_sessions == 0 || self.max_http_connections == 0 {
            return fail("max connections must be at least 1".into());
        }
        if self.resume_ms >= self.slow_down_ms {
            return fail(format!(
                "resume at {} ms must be below slow-down at {} ms",
                self.resume_ms, self.slow_down_ms
            ));
        }
        if self.max_frame_bytes == 0 || self.max_buffer_bytes < self.max_frame_bytes {
            return fail("the buffer limit must hold at least one frame".into());
        }
        let timeouts = [
            ("first message timeout", self.first_message_timeout),
            ("idle timeout", self.idle_timeout),
            ("write timeout", self.write_timeout),
            ("ping interval", self.ping_interval),
            ("header read timeout", self.header_read_timeout),
        ];
        for (name, timeout) in timeouts {
            if timeout.is_zero() {
                return fail(format!("the {name} must be above 0"));
            }
        }
        if !self.max_pace.is_finite() || self.max_pace < 0.0 {
            return fail(format!(
                "max pace {} must be 0 (off) or a positive factor",
                self.max_pace
            ));
        }
        Ok(())
    }

    /// The largest WebSocket message read: a frame over `max_frame_bytes` but under this is
    /// refused with `frame_too_large`, anything larger unread with `message_too_big` (1009).
    pub fn max_message_bytes(&self) -> usize {
        self.max_frame_bytes.saturating_mul(2).max(64 * 1024)
    }
}

pub struct GatewayState {
    pub config: Arc<GatewayConfig>,
    pub engines: Arc<EnginePool>,
    pub metrics: GatewayMetrics,
    /// What `/metrics` serves: the gateway's metrics, the store writer's, and whatever the
    /// caller registered before (an in-process engine's).
    pub registry: Arc<Registry>,
    /// Where transcripts are kept; writes go through `store_writer` and never block audio.
    pub store: Option<Arc<dyn TranscriptStore>>,
    pub store_writer: Option<StoreWriter>,
    /// What each session is given.
    pub sessions: SessionEnv,
    slots: SessionSlots,
    upgrade_failures: WarnLimited,
    slot_refusals: WarnLimited,
    pub tracker: TaskTracker,
    /// Cancelled on SIGTERM: new sessions are refused and open ones drain.
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
        let config = Arc::new(config);
        let engines = Arc::new(EnginePool::new(&config.engines)?);
        let store_writer = store
            .clone()
            .map(|store| StoreWriter::spawn_with_limits(store, STORE_QUEUE_OPS, STORE_QUEUE_BYTES));
        let metrics = GatewayMetrics::default();
        metrics.register(&mut registry);
        registry.register_collector(Box::new(EnginePoolCollector(engines.clone())));
        if let Some(writer) = &store_writer {
            registry.register_collector(Box::new(StoreCollector(writer.clone())));
        }
        let shutdown = CancellationToken::new();
        let sessions = SessionEnv {
            config: config.clone(),
            metrics: metrics.clone(),
            store: store_writer.clone(),
            connector: Arc::new(GrpcConnector {
                engines: engines.clone(),
            }),
            shutdown: shutdown.clone(),
            live: Arc::new(LiveSessions::default()),
        };
        Ok(Arc::new(Self {
            slots: SessionSlots::new(config.max_sessions, config.max_sessions_per_ip),
            config,
            engines,
            metrics,
            registry: Arc::new(registry),
            store,
            store_writer,
            sessions,
            upgrade_failures: WarnLimited::default(),
            slot_refusals: WarnLimited::default(),
            tracker: TaskTracker::new(),
            shutdown,
        }))
    }
}

/// Initial WebSocket read buffer per session.
const SOCKET_BUFFER_BYTES: usize = 8 * 1024;

/// Store writes waiting (or retried) during a store outage before sessions report losses.
const STORE_QUEUE_OPS: usize = 100_000;

/// The same queue's bound in bytes (a segment can hold some 300 words).
const STORE_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// Of the shutdown deadline, what is kept for flushing the store at the end.
const STORE_FLUSH_RESERVE: Duration = Duration::from_secs(2);

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
    if state.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, "shutting down").into_response()
    } else if state.engines.any_serving() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "no engine is serving").into_response()
    }
}

/// A refusal before the upgrade, with `Retry-After`.
fn refuse(status: StatusCode, code: &str, message: &str) -> Response {
    let mut response = api::error(status, code, message.into());
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
    response
}

async fn stt(
    State(state): State<Arc<GatewayState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    RawQuery(query): RawQuery,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    if state.shutdown.is_cancelled() {
        state.metrics.connection_refused("shutdown");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_shutdown",
            "the gateway is shutting down; retry on another",
        );
    }
    // Taken before the upgrade so that a burst cannot overshoot the limit, and moved into the
    // session so that it is freed whatever happens to the connection.
    let slot = match state.slots.try_acquire(peer.ip()) {
        Ok(slot) => slot,
        Err(refusal) => {
            state.metrics.connection_refused(refusal.as_str());
            state.slot_refusals.warn(|suppressed| {
                tracing::warn!(%peer, reason = refusal.as_str(), suppressed, "session refused before the upgrade")
            });
            return match refusal {
                SlotRefusal::Capacity => {
                    state.metrics.connections_rejected.inc();
                    refuse(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "the gateway is at capacity; retry later",
                    )
                }
                SlotRefusal::PerAddress => refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too_many_sessions",
                    "this address has too many open sessions; close one first",
                ),
            };
        }
    };
    let settings = StreamParams::from_query(query.as_deref().unwrap_or(""))
        .and_then(|params| StreamSettings::default().apply(&params));
    let limit = state.config.max_message_bytes();
    let on_failure = state.clone();
    upgrade
        .max_message_size(limit)
        .max_frame_size(limit)
        // 100 ms of audio is 3.2 kB and every message is flushed at once: the 128 KiB
        // defaults would cost 256 KiB per session for nothing (buffers grow when needed).
        .read_buffer_size(SOCKET_BUFFER_BYTES)
        .write_buffer_size(0)
        .on_failed_upgrade(move |err| {
            on_failure.metrics.upgrade_failures.inc();
            on_failure.upgrade_failures.warn(|suppressed| {
                tracing::warn!(%err, %peer, suppressed, "WebSocket upgrade failed");
            });
        })
        .on_upgrade(move |socket| {
            let tracker = state.tracker.clone();
            tracker.track_future(async move {
                state.metrics.sessions_opened.inc();
                let session = Session::new(state.sessions.clone(), socket, Some(peer), settings);
                let span = tracing::info_span!("session", session_id = %session.id(), %peer);
                let run = std::panic::AssertUnwindSafe(session.run()).catch_unwind();
                let reason = match run.instrument(span).await {
                    Ok(reason) => reason,
                    Err(_) => {
                        // The session's own guard already logged it; its socket and slot are
                        // freed by their guards as the task unwinds.
                        tracing::error!(%peer, "session task panicked");
                        CloseReason::Internal
                    }
                };
                state.metrics.session_closed(reason.as_str());
                drop(slot);
            })
        })
}

/// Serves the gateway on `listener`. The first item of `signals` starts the shutdown: no new
/// sessions (`/readyz` 503), open ones end their audio, receive their finals and close with
/// 1012, the store is flushed, and this returns within the shutdown deadline. A second signal,
/// or the deadline, ends it at once, with the sessions still open stored as `interrupted`.
pub async fn serve(
    state: Arc<GatewayState>,
    listener: tokio::net::TcpListener,
    mut signals: impl Stream<Item = ()> + Unpin + Send,
) -> std::io::Result<()> {
    let stop_health = CancellationToken::new();
    let health = state
        .engines
        .clone()
        .spawn_health_checks(stop_health.clone());
    let metrics_server = match state.config.metrics_listen {
        Some(addr) => {
            let metrics_listener = tokio::net::TcpListener::bind(addr).await?;
            tracing::info!(addr = %metrics_listener.local_addr()?, "metrics listening");
            let app = metrics::metrics_router(state.registry.clone());
            Some(tokio::spawn(async move {
                axum::serve(metrics_listener, app).await
            }))
        }
        None => None,
    };
    let stop_accepting = CancellationToken::new();
    let limits = http_server::HttpLimits {
        max_connections: state.config.max_http_connections,
        header_read_timeout: state.config.header_read_timeout,
    };
    let server = tokio::spawn(http_server::serve(
        listener,
        router(state.clone()),
        limits,
        state.metrics.clone(),
        stop_accepting.clone(),
    ));

    signals.next().await;
    let deadline = tokio::time::Instant::now() + state.config.shutdown_deadline;
    tracing::info!(
        sessions = state.tracker.len(),
        deadline = ?state.config.shutdown_deadline,
        "shutting down: ending sessions"
    );
    // New sessions are refused (503) and `/readyz` says so while open ones drain; the listener
    // itself stays up until they are done.
    state.shutdown.cancel();
    state.tracker.close();
    let sessions_deadline = deadline
        .checked_sub(STORE_FLUSH_RESERVE)
        .unwrap_or(deadline);
    let forced = tokio::select! {
        () = state.tracker.wait() => false,
        _ = signals.next() => {
            tracing::warn!("second signal: stopping now");
            true
        }
        () = tokio::time::sleep_until(sessions_deadline) => {
            tracing::warn!("shutdown deadline reached: stopping now");
            true
        }
    };
    if let Some(writer) = &state.store_writer {
        if forced {
            let interrupted = state.sessions.live.interrupt_all(writer);
            tracing::warn!(interrupted, "sessions still open stored as interrupted");
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let left = writer.flush(left.max(Duration::from_millis(500))).await;
        if left > 0 {
            tracing::error!(left, "store writes still pending at exit");
        }
    }
    stop_accepting.cancel();
    stop_health.cancel();
    health.abort();
    if let Some(metrics_server) = metrics_server {
        metrics_server.abort();
    }
    if !forced {
        let _ = server.await;
    }
    Ok(())
}
