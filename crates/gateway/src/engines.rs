//! The engines a gateway spreads sessions over: least loaded first, skipping engines that are
//! down or refuse (RESOURCE_EXHAUSTED), with a background health check for readiness.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// The engine's health service name.
const ENGINE_SERVICE: &str = "stt.SpeechToText";

/// HTTP/2 connections per engine. Each connection is driven by one task, so one connection
/// carrying every session's audio caps the gateway at about one core; sessions are spread over
/// these round-robin.
pub const CONNECTIONS_PER_ENGINE: usize = 4;

#[derive(Debug)]
pub struct Engine {
    pub url: String,
    channels: Vec<Channel>,
    next_channel: AtomicUsize,
    active_sessions: AtomicUsize,
    serving: AtomicBool,
}

impl Engine {
    /// The connection for the next session.
    pub fn channel(&self) -> Channel {
        let idx = self.next_channel.fetch_add(1, Ordering::Relaxed) % self.channels.len();
        self.channels[idx].clone()
    }

    pub fn active_sessions(&self) -> usize {
        self.active_sessions.load(Ordering::Relaxed)
    }

    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    async fn check_health(&self) {
        let mut client = HealthClient::new(self.channels[0].clone());
        let request = HealthCheckRequest {
            service: ENGINE_SERVICE.into(),
        };
        let serving = matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, client.check(request)).await,
            Ok(Ok(response)) if response.get_ref().status == ServingStatus::Serving as i32
        );
        let was_serving = self.serving.swap(serving, Ordering::Relaxed);
        if was_serving != serving {
            tracing::info!(engine = %self.url, serving, "engine health changed");
        }
    }

    /// Counts a session on this engine until the guard drops.
    pub fn claim(self: &Arc<Self>) -> EngineClaim {
        self.active_sessions.fetch_add(1, Ordering::Relaxed);
        EngineClaim {
            engine: self.clone(),
        }
    }
}

pub struct EngineClaim {
    pub engine: Arc<Engine>,
}

impl Drop for EngineClaim {
    fn drop(&mut self) {
        self.engine.active_sessions.fetch_sub(1, Ordering::Relaxed);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("no engine configured")]
    Empty,
    #[error("invalid engine url {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
}

#[derive(Debug)]
pub struct EnginePool {
    engines: Vec<Arc<Engine>>,
}

impl EnginePool {
    /// Connections are made lazily, so a gateway starts even while its engines are down.
    pub fn new(urls: &[String]) -> Result<Self, PoolError> {
        if urls.is_empty() {
            return Err(PoolError::Empty);
        }
        let engines = urls
            .iter()
            .map(|url| {
                let endpoint =
                    Endpoint::from_shared(url.clone()).map_err(|err| PoolError::InvalidUrl {
                        url: url.clone(),
                        reason: err.to_string(),
                    })?;
                let endpoint = endpoint
                    .connect_timeout(CONNECT_TIMEOUT)
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(10))
                    .keep_alive_timeout(Duration::from_secs(5));
                let channels = (0..CONNECTIONS_PER_ENGINE)
                    .map(|_| endpoint.connect_lazy())
                    .collect();
                Ok(Arc::new(Engine {
                    url: url.clone(),
                    channels,
                    next_channel: AtomicUsize::new(0),
                    active_sessions: AtomicUsize::new(0),
                    serving: AtomicBool::new(false),
                }))
            })
            .collect::<Result<Vec<_>, PoolError>>()?;
        Ok(Self { engines })
    }

    /// Engines to try for a new session: serving ones first, least loaded first.
    pub fn candidates(&self) -> Vec<Arc<Engine>> {
        let mut engines = self.engines.clone();
        engines.sort_by_key(|engine| (!engine.is_serving(), engine.active_sessions()));
        engines
    }

    pub fn any_serving(&self) -> bool {
        self.engines.iter().any(|engine| engine.is_serving())
    }

    /// Checks every engine's health now, all at once (a dead engine must not delay the others).
    pub async fn check_health(&self) {
        futures::future::join_all(self.engines.iter().map(|engine| engine.check_health())).await;
    }

    pub fn len(&self) -> usize {
        self.engines.len()
    }

    pub fn is_empty(&self) -> bool {
        self.engines.is_empty()
    }

    /// How many engines reported SERVING at the last check.
    pub fn serving_count(&self) -> usize {
        self.engines
            .iter()
            .filter(|engine| engine.is_serving())
            .count()
    }

    /// Re-checks health every two seconds until `cancel`.
    pub fn spawn_health_checks(
        self: Arc<Self>,
        cancel: tokio_util::sync::CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.check_health().await;
                tokio::select! {
                    () = cancel.cancelled() => return,
                    () = tokio::time::sleep(HEALTH_INTERVAL) => {}
                }
            }
        })
    }
}
