//! Serving a router on a bound listener with limits per connection, which `axum::serve`
//! does not set: a connection that has not sent a request's whole head within
//! `header_timeout` is closed (so is a keep-alive connection idle that long: waiting for
//! the next head is the same wait), a head larger than `max_header_bytes` is answered
//! `431` and closed, and past `max_connections` open connections a new one is closed at
//! once. Without them, sockets holding unfinished headers or nothing at all stay open and
//! hold memory for ever. Shutdown stops accepting and lets open connections finish.
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// The limits of one listener's connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionLimits {
    /// How long a connection may take to send a request's head, or stay idle between
    /// requests, before it is closed.
    pub header_timeout: Duration,
    /// The largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Connections open at once; more are closed as they arrive.
    pub max_connections: usize,
}

/// One default per setting; the binary's flags take theirs from here.
pub mod connection_defaults {
    pub const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
    pub const MAX_HEADER_BYTES: usize = 16 * 1024;
    pub const MAX_CONNECTIONS: usize = 4_096;
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        ConnectionLimits {
            header_timeout: connection_defaults::HEADER_TIMEOUT,
            max_header_bytes: connection_defaults::MAX_HEADER_BYTES,
            max_connections: connection_defaults::MAX_CONNECTIONS,
        }
    }
}

/// A connection ends in an error when its client misbehaves (a head too slow or too large,
/// a reset, a failed handshake): that is the client's, not the server's.
fn ended(e: &(dyn std::error::Error + 'static)) {
    tracing::debug!(error = e, "A connection ended with an error.");
}

/// How long open connections may take to finish once shutdown is asked for.
const DRAIN_FOR: Duration = Duration::from_secs(30);

/// Serves `router` on `listener` (HTTPS with `tls`, else plain HTTP) until `shutdown`
/// resolves, then stops accepting and waits (at most 30 s) for open connections to finish
/// their requests. A TLS handshake gets the header timeout too: a socket that never
/// finishes one holds a connection's place no longer than one that never sends a head.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    tls: Option<Arc<crate::tls::Tls>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_header_size(limits.max_header_bytes)
        .keep_alive(true);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                // Out of file descriptors and the like: the listener itself is fine.
                Err(e) => {
                    tracing::warn!(error = &e as &dyn std::error::Error, "Accepting a connection failed. Going on.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(place) = open.clone().try_acquire_owned() else {
            metrics::counter!("orderflow_http_connections_refused_total").increment(1);
            drop(stream);
            continue;
        };
        let service = TowerToHyperService::new(router.clone());
        match &tls {
            None => {
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                tokio::spawn(async move {
                    if let Err(e) = connection.await {
                        ended(&e);
                    }
                    drop(place);
                });
            }
            Some(tls) => {
                let (acceptor, http, watcher) = (tls.acceptor(), http.clone(), graceful.watcher());
                tokio::spawn(async move {
                    let stream = match tokio::time::timeout(limits.header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream)) => stream,
                        Ok(Err(e)) => return ended(&e),
                        Err(_) => return tracing::debug!("A TLS handshake did not finish within the header timeout."),
                    };
                    if let Err(e) = watcher.watch(http.serve_connection(TokioIo::new(stream), service)).await {
                        ended(&e);
                    }
                    drop(place);
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_FOR, graceful.shutdown()).await.is_err() {
        tracing::warn!("Open connections did not finish within 30 s of shutdown. Closing them.");
    }
    Ok(())
}
