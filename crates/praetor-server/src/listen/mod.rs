//! Accepting connections: at most `max_connections` open at once, and each given
//! `connection_idle_secs` to send a request's headers, after it connects and after each
//! answer on a kept-alive connection (hyper's header timeout, which runs in both), and
//! `connection_send_secs` for its client to take some of an answer waiting on it
//! (`conns::Watched`: hyper has no write deadline).
//!
//! `axum::serve` sets neither: a client that connected and sent half a request line,
//! or nothing, held its connection for ever, and twenty thousand of them, sent without
//! any key, took every file descriptor the process had, after which no agent could
//! connect and the store could not open a file. With a deadline, such a connection is
//! closed; with a bound, a flood of them cannot take the descriptors the store and the
//! webhooks need. (A body is bounded too: on the decision endpoints by
//! `extract::DecisionBody`, elsewhere only after the caller's key is checked.)
//!
//! When every slot is taken and another client connects, a connection that is not a
//! client is dropped to make room for it, so that connections that send nothing, or
//! trickle bytes, cannot keep a new client out for the idle time
//! (`conns::Candidate::closable`): one that never began a request and has been silent
//! for 1 s since it connected, or sending its first request's headers for 2 s, the
//! oldest first. A connection that began a request (answering one, or kept alive
//! between requests) is never closed to make room: it is a client's, and closing it
//! would let an attacker's new connections, busy with keyless requests, take the slots
//! of clients in use.
//!
//! The chosen connection checks again, in its own task and after reading whatever has
//! arrived, that it may be closed. When none may, the new connection waits, accepted
//! (one descriptor past the bound) but not yet served, until a slot frees.
//!
//! HTTP/1.1 only: the first read of hyper's HTTP/2 detection has no timer, and neither
//! has an HTTP/2 connection, so either would hold a slot for ever. No client of the
//! API needs HTTP/2, nor any upgrade.
//!
//! The default deadline is long (75 s) because it is also the keep-alive idle time: a
//! client that sends a request on a pooled connection at the moment the server closes
//! it gets an error (urllib3 does not retry a POST, and a fail-open SDK then runs the
//! action), so it should be rare, and longer than the idle time of a proxy in front.
//! (Closing a kept-alive connection to make room would have the same race, another
//! reason it is never done.)

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

mod conns;

use conns::{Open, Registered, Tracked, Watched};

/// While a new connection waits for a slot, how often another connection to close is
/// looked for (one may have been silent, or sending its headers, long enough by then).
const LOOK_AGAIN_EVERY: Duration = Duration::from_millis(250);

/// How often, at most, closing connections to make room is reported.
const REPORT_EVERY: Duration = Duration::from_secs(60);

/// How long a shutdown waits for the open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// What a connection may hold and for how long.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Connections open at once.
    pub max_connections: usize,
    /// To send a request's headers, after connecting and between requests.
    pub idle: Duration,
    /// A write waiting for its client to take some of the answer, before the
    /// connection is closed (`conns::Watched`).
    pub send_within: Duration,
}

/// Serve `app` on `listener` until `shutdown` completes, then let the connections
/// finish what they were answering.
pub async fn serve(listener: TcpListener, app: axum::Router, limits: Limits, shutdown: impl Future<Output = ()>) {
    let Limits { max_connections, idle, send_within } = limits;
    let slots = Arc::new(Semaphore::new(max_connections));
    let open = Arc::new(Open::new());
    let (stop, stopping) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut waiting = Waiting { max_connections, last_report: None, asked_unreported: 0 };
    loop {
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
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => slot,
            Err(_) => match waiting.for_slot(&slots, &open, &mut shutdown).await {
                Some(slot) => slot,
                None => break,
            },
        };
        spawn_connection(stream, slot, &builder, &app, &open, send_within, stopping.clone());
    }
    // New connections are refused at once while the open ones finish: requests in
    // flight are answered, idle connections close, and ones that sent nothing are
    // dropped. Headers still arriving are waited for at most 2 s, a body up to its
    // deadline, and the whole wait is bounded (a supervisor's grace period is often 30 s).
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, open.all_closed()).await.is_err() {
        tracing::warn!(seconds = SHUTDOWN_GRACE.as_secs(), "connections still open at shutdown were dropped");
    }
}

/// A connection accepted while every slot is taken.
struct Waiting {
    max_connections: usize,
    last_report: Option<Instant>,
    asked_unreported: u64,
}

impl Waiting {
    /// Close connections, one at a time, until a slot frees; `None` at shutdown.
    async fn for_slot(&mut self, slots: &Arc<Semaphore>, open: &Open, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> Option<OwnedSemaphorePermit> {
        loop {
            let asked = open.ask_one_to_close();
            self.report(asked);
            tokio::select! {
                slot = slots.clone().acquire_owned() => return Some(slot.expect("the semaphore is never closed")),
                () = shutdown.as_mut() => return None,
                () = tokio::time::sleep(LOOK_AGAIN_EVERY) => {}
            }
        }
    }

    /// At the first time and then once a minute at most: a full server means the bound
    /// is too low for the clients, or someone is holding slots.
    fn report(&mut self, asked: bool) {
        self.asked_unreported += u64::from(asked);
        if self.last_report.is_some_and(|at| at.elapsed() < REPORT_EVERY) {
            return;
        }
        if self.asked_unreported > 0 {
            tracing::warn!(
                max_connections = self.max_connections,
                asked_to_close = self.asked_unreported,
                "every connection slot was taken; connections that never sent a request in time were asked to close to make room for new ones"
            );
        } else {
            tracing::warn!(max_connections = self.max_connections, "every connection slot is taken and none may be closed; new connections wait");
        }
        self.asked_unreported = 0;
        self.last_report = Some(Instant::now());
    }
}

fn spawn_connection(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    builder: &Builder<TokioExecutor>,
    app: &axum::Router,
    open: &Arc<Open>,
    send_within: Duration,
    stopping: watch::Receiver<bool>,
) {
    let registered = Registered::new(open.clone(), slot);
    let service = Tracked { app: app.clone(), conn: registered.conn.clone() };
    let stream = Watched::new(stream, registered.conn.clone(), open.clock, send_within);
    let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)).into_owned();
    tokio::spawn(async move {
        // The connection (and its socket) is dropped when `run` returns, before its slot
        // is given back.
        run(connection, &registered, stopping).await;
        drop(registered);
    });
}

type Served = hyper_util::server::conn::auto::Connection<'static, TokioIo<Watched>, TowerToHyperService<Tracked>, TokioExecutor>;

/// Serve one connection until it ends, is closed to make room, or the server stops.
async fn run(connection: Served, registered: &Registered, mut stopping: watch::Receiver<bool>) {
    let conn = &registered.conn;
    let mut connection = std::pin::pin!(connection);
    let mut stop_seen = false;
    let mut shutting_down = false;
    loop {
        // Biased, the connection first: whatever it can read now is read (and a request
        // whose headers are complete begun) before a request to close is looked at.
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.close.notified(), if !shutting_down => {
                // Looked at again here, where nothing of this connection runs at the same
                // time (hyper calls the service in the connection's own poll).
                if !registered.state().closable() {
                    conn.asked.store(false, Ordering::Release);
                    continue;
                }
                tracing::debug!("dropped a connection that sent no request in time, to make room");
                return;
            }
            _ = stopping.wait_for(|stop| *stop), if !stop_seen => stop_seen = true,
            () = tokio::time::sleep(HEADERS_POLL), if stop_seen && !shutting_down => {}
        }
        if stop_seen && !shutting_down {
            // Headers arriving in good time are waited for: once the request begins, it is
            // answered before the connection closes. (hyper would close a kept-alive
            // connection at once, its half-read headers with it.)
            let state = registered.state();
            if state.headers_in_good_time() {
                continue;
            }
            if state.drop_at_shutdown() {
                return;
            }
            connection.as_mut().graceful_shutdown();
            shutting_down = true;
        }
    }
}

/// At shutdown, how often a connection whose request headers are arriving looks again
/// whether the request has begun.
const HEADERS_POLL: Duration = Duration::from_millis(50);
