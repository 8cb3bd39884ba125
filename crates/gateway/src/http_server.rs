//! The gateway's HTTP server: accepts TCP connections, serves each with hyper under a
//! header-read timeout, holds at most `max_connections` connections that are not (yet)
//! WebSockets (an upgraded connection leaves this count for the session slots), and stops
//! accepting when told to.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::metrics::{GatewayMetrics, GaugeGuard};
use crate::warn_limited::WarnLimited;

#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections open and not upgraded to a WebSocket; more are closed at once.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slowloris).
    pub header_read_timeout: Duration,
}

/// How long connections still open at shutdown get to finish their request.
const GRACEFUL_CLOSE: Duration = Duration::from_secs(1);

/// Serves `app` on `listener` until `stop`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: HttpLimits,
    metrics: GatewayMetrics,
    stop: CancellationToken,
) {
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .timer(TokioTimer::new())
        .enable_connect_protocol();
    let refused_log = WarnLimited::default();
    let accept_errors = WarnLimited::default();
    loop {
        let (tcp, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    accept_errors.warn(|suppressed| tracing::warn!(%err, suppressed, "cannot accept a connection"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            metrics.connection_refused("http_connections");
            refused_log.warn(|suppressed| {
                tracing::warn!(
                    limit = limits.max_connections,
                    suppressed,
                    "too many HTTP connections; closing new ones"
                )
            });
            drop(tcp);
            continue;
        };
        // Results are small messages often sent back to back (speech_ended, then the final):
        // without TCP_NODELAY the second waits for the client's delayed ACK (up to 40 ms).
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "cannot set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(tower::util::MapRequest::new(
            app.clone(),
            move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(peer));
                request
            },
        ));
        let open = GaugeGuard::new(&metrics.http_connections_active);
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let header_read_timeout = limits.header_read_timeout;
        tokio::spawn(async move {
            // hyper's header timer starts with the first byte: a socket that sends nothing
            // at all is closed here.
            let mut first = [0u8; 1];
            match tokio::time::timeout(header_read_timeout, tcp.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let connection = builder.serve_connection_with_upgrades(TokioIo::new(tcp), service);
            if let Err(err) = watcher.watch(connection).await {
                tracing::debug!(%err, %peer, "connection ended with an error");
            }
            drop(open);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(GRACEFUL_CLOSE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("some HTTP connections were still open at shutdown");
    }
}
