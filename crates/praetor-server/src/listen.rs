//! Accepting connections: at most `max_connections` open at once, and each given
//! `connection_idle_secs` to send a request's headers, after it connects and after each
//! answer on a kept-alive connection (hyper's header timeout, which runs in both).
//!
//! `axum::serve` sets neither: a client that connected and sent half a request line,
//! or nothing, held its connection for ever, and twenty thousand of them, sent without
//! any key, took every file descriptor the process had, after which no agent could
//! connect and the store could not open a file. With a deadline, such a connection is
//! closed; with a bound, a flood of them waits in the listen backlog instead of taking
//! the descriptors the store and the webhooks need. (A body is bounded too: on the
//! decision endpoints by `extract::DecisionBody`, elsewhere only after the caller's key
//! is checked.)
//!
//! HTTP/1.1 only: the first read of hyper's HTTP/2 detection has no timer, and neither
//! has an HTTP/2 connection, so either would hold a slot for ever. No client of the
//! API needs HTTP/2, nor any upgrade.
//!
//! The default deadline is long (75 s) because it is also the keep-alive idle time: a
//! client that sends a request on a pooled connection at the moment the server closes
//! it gets an error (urllib3 does not retry a POST, and a fail-open SDK then runs the
//! action), so it should be rare, and longer than the idle time of a proxy in front.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Serve `app` on `listener` until `shutdown` completes, then let the connections
/// finish what they were answering.
pub async fn serve(listener: TcpListener, app: axum::Router, max_connections: usize, idle: Duration, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let connections = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut warned: Option<tokio::time::Instant> = None;
    loop {
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => {
                // Once a minute at most: while full, every connection that ends lets one in.
                if warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                    tracing::warn!(max_connections, "every connection slot is taken; new connections wait in the listen backlog");
                    warned = Some(tokio::time::Instant::now());
                }
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
                    () = &mut shutdown => break,
                }
            }
        };
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors, or a connection reset before it was taken:
                    // wait a little rather than spin on the same error.
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone())).into_owned();
        let connection = connections.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    // New connections are refused at once while the open ones finish: requests in
    // flight are answered, idle connections close. One still sending its headers would
    // be waited for up to the idle time, so the wait is bounded (a supervisor's grace
    // period is often 30 s).
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, connections.shutdown()).await.is_err() {
        tracing::warn!(seconds = SHUTDOWN_GRACE.as_secs(), "connections still open at shutdown were dropped");
    }
}

/// How long a shutdown waits for the open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);
