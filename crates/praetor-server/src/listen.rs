//! Accepting connections: at most `max_connections` open at once, and each given
//! `connection_idle_secs` to send a request's headers, after it connects and after each
//! answer on a kept-alive connection (hyper's header timeout, which runs in both).
//!
//! `axum::serve` sets neither: a client that connected and sent half a request line,
//! or nothing, held its connection for ever, and twenty thousand of them, sent without
//! any key, took every file descriptor the process had, after which no agent could
//! connect and the store could not open a file. With a deadline, such a connection is
//! closed; with a bound, a flood of them cannot take the descriptors the store and the
//! webhooks need. (A body is bounded too: on the decision endpoints by
//! `extract::DecisionBody`, elsewhere only after the caller's key is checked.)
//!
//! When every slot is taken and another client connects, the connection idle longest is
//! closed to make room for it (as a web server does with idle keep-alive connections),
//! so that connections that send nothing, or clients that pool many, cannot keep a new
//! client out for the idle time. Idle means no request being answered and no byte
//! received for at least [`IDLE_BEFORE_CLOSING`] (since it connected, or its last
//! answer): a connection whose request is being answered, or still arriving, is never
//! chosen. Of the idle ones:
//! - first, one that has not begun a request (a silent or half-sent one): it is dropped;
//! - then, one kept alive between requests, longest idle first: it is shut down as on
//!   SIGTERM (hyper closes it if it is still idle, or after the request it has just
//!   begun).
//!
//! The chosen connection checks again, in its own task and after reading whatever has
//! arrived, that it is still idle. Otherwise the new connection waits for a slot,
//! holding one descriptor past the bound.
//!
//! HTTP/1.1 only: the first read of hyper's HTTP/2 detection has no timer, and neither
//! has an HTTP/2 connection, so either would hold a slot for ever. No client of the
//! API needs HTTP/2, nor any upgrade.
//!
//! The default deadline is long (75 s) because it is also the keep-alive idle time: a
//! client that sends a request on a pooled connection at the moment the server closes
//! it gets an error (urllib3 does not retry a POST, and a fail-open SDK then runs the
//! action), so it should be rare, and longer than the idle time of a proxy in front.
//! Closing to make room has the same race, which is why only connections idle at
//! least [`IDLE_BEFORE_CLOSING`] are closed, and only when a client is waiting.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// How long a connection must have been idle (since it connected, or since its last
/// answer) before it may be closed to make room for a new one.
pub const IDLE_BEFORE_CLOSING: Duration = Duration::from_secs(1);

/// While a new connection waits for a slot, how often another idle connection is
/// looked for (one may have become idle, or old enough).
const LOOK_AGAIN_EVERY: Duration = Duration::from_millis(250);

/// How long a shutdown waits for the open connections to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(8);

/// Serve `app` on `listener` until `shutdown` completes, then let the connections
/// finish what they were answering.
pub async fn serve(listener: TcpListener, app: axum::Router, max_connections: usize, idle: Duration, shutdown: impl Future<Output = ()>) {
    let slots = Arc::new(Semaphore::new(max_connections));
    let open = Arc::new(Open::new());
    let (stop, stopping) = watch::channel(false);
    let mut builder = Builder::new(TokioExecutor::new()).http1_only();
    builder.http1().timer(TokioTimer::new()).header_read_timeout(idle);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut waiting = Waiting { warned: None, max_connections };
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
        spawn_connection(stream, slot, &builder, &app, &open, stopping.clone());
    }
    // New connections are refused at once while the open ones finish: requests in
    // flight are answered, idle connections close, and ones that never began a request
    // are dropped. A request still sending its body would be waited for up to its
    // deadline, so the wait is bounded (a supervisor's grace period is often 30 s).
    drop(listener);
    let _ = stop.send(true);
    if tokio::time::timeout(SHUTDOWN_GRACE, open.all_closed()).await.is_err() {
        tracing::warn!(seconds = SHUTDOWN_GRACE.as_secs(), "connections still open at shutdown were dropped");
    }
}

/// A connection accepted while every slot is taken.
struct Waiting {
    warned: Option<Instant>,
    max_connections: usize,
}

impl Waiting {
    /// Close idle connections, one at a time, until a slot frees; `None` at shutdown.
    async fn for_slot(&mut self, slots: &Arc<Semaphore>, open: &Open, shutdown: &mut Pin<&mut impl Future<Output = ()>>) -> Option<OwnedSemaphorePermit> {
        loop {
            if !open.ask_one_to_close() && self.warned.is_none_or(|at| at.elapsed() >= Duration::from_secs(60)) {
                // Once a minute at most: while full, every connection that ends lets one in.
                tracing::warn!(
                    max_connections = self.max_connections,
                    "every connection slot is taken, none idle long enough to close; new connections wait to be accepted"
                );
                self.warned = Some(Instant::now());
            }
            tokio::select! {
                slot = slots.clone().acquire_owned() => return Some(slot.expect("the semaphore is never closed")),
                () = shutdown.as_mut() => return None,
                () = tokio::time::sleep(LOOK_AGAIN_EVERY) => {}
            }
        }
    }
}

fn spawn_connection(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    builder: &Builder<TokioExecutor>,
    app: &axum::Router,
    open: &Arc<Open>,
    stopping: watch::Receiver<bool>,
) {
    let registered = Registered::new(open.clone(), slot);
    let service = Tracked { app: app.clone(), conn: registered.conn.clone(), clock: open.clock };
    let stream = Watched { stream, conn: registered.conn.clone(), clock: open.clock };
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
    let mut shutting_down = false;
    loop {
        // Biased, the connection first: whatever it can read is read (and a request whose
        // headers are complete begun) before a request to close is looked at.
        tokio::select! {
            biased;
            ended = connection.as_mut() => {
                if let Err(e) = ended {
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            () = conn.close.notified(), if !shutting_down => {
                // Checked here, where no request of this connection can be running (hyper
                // calls the service in the connection's own poll): one that received
                // bytes or began a request since it was chosen is left open.
                if !conn.still_idle(registered.open.now_ms()) {
                    conn.asked.store(false, Ordering::Release);
                    continue;
                }
                if conn.never_began_a_request() {
                    tracing::debug!("closed a connection that sent no request, to make room");
                    return;
                }
                tracing::debug!("closing an idle kept-alive connection, to make room");
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
            _ = stopping.wait_for(|stop| *stop), if !shutting_down => {
                if conn.never_began_a_request() {
                    return;
                }
                connection.as_mut().graceful_shutdown();
                shutting_down = true;
            }
        }
    }
}

/// A connection's place in [`Open`] and its slot, given back when its task ends, even
/// by a panic: a connection left registered would hold every shutdown for its grace.
struct Registered {
    open: Arc<Open>,
    id: u64,
    conn: Arc<Conn>,
    _slot: OwnedSemaphorePermit,
}

impl Registered {
    fn new(open: Arc<Open>, slot: OwnedSemaphorePermit) -> Registered {
        let (id, conn) = open.add();
        Registered { open, id, conn, _slot: slot }
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.remove(self.id);
    }
}

/// The connection's stream, noting when it last received bytes: a request on its way
/// (headers still arriving) makes the connection busy, not idle.
struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
    clock: Instant,
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.conn.last_active_ms.store(millis_since(self.clock), Ordering::Release);
        }
        read
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The open connections, as far as choosing one to close needs.
struct Open {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    /// Times are kept as milliseconds since this instant.
    clock: Instant,
    /// Told each time a connection is removed.
    removed: Notify,
}

struct Conn {
    /// When it connected, last received bytes, or last finished an answer, whichever
    /// is latest.
    last_active_ms: AtomicU64,
    /// Requests begun on it.
    requests: AtomicU64,
    /// Requests begun and not yet answered (hyper runs one at a time).
    in_flight: AtomicU32,
    /// Asked to close already: not chosen again.
    asked: AtomicBool,
    close: Notify,
}

impl Conn {
    fn never_began_a_request(&self) -> bool {
        self.requests.load(Ordering::Acquire) == 0
    }

    fn candidate(&self, now_ms: u64) -> Candidate {
        Candidate {
            in_flight: self.in_flight.load(Ordering::Acquire) > 0,
            began_a_request: !self.never_began_a_request(),
            idle_for: Duration::from_millis(now_ms.saturating_sub(self.last_active_ms.load(Ordering::Acquire))),
            asked: false,
        }
    }

    /// Still closable to make room (asked or not).
    fn still_idle(&self, now_ms: u64) -> bool {
        choose_to_close(std::iter::once(((), self.candidate(now_ms)))).is_some()
    }
}

impl Open {
    fn new() -> Open {
        Open { conns: Mutex::new(HashMap::new()), next_id: AtomicU64::new(0), clock: Instant::now(), removed: Notify::new() }
    }

    fn now_ms(&self) -> u64 {
        millis_since(self.clock)
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            last_active_ms: AtomicU64::new(self.now_ms()),
            requests: AtomicU64::new(0),
            in_flight: AtomicU32::new(0),
            asked: AtomicBool::new(false),
            close: Notify::new(),
        });
        self.conns.lock().insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
        self.removed.notify_waiters();
    }

    async fn all_closed(&self) {
        loop {
            let removed = self.removed.notified();
            if self.conns.lock().is_empty() {
                return;
            }
            removed.await;
        }
    }

    /// Ask the connection [`choose_to_close`] picks to close; false if there is none.
    fn ask_one_to_close(&self) -> bool {
        let now_ms = self.now_ms();
        let conns = self.conns.lock();
        let idle = conns.values().map(|c| (c, Candidate { asked: c.asked.load(Ordering::Acquire), ..c.candidate(now_ms) }));
        match choose_to_close(idle) {
            Some(conn) => {
                conn.asked.store(true, Ordering::Release);
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

fn millis_since(clock: Instant) -> u64 {
    u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// What choosing a connection to close looks at.
#[derive(Clone, Copy, Debug)]
struct Candidate {
    in_flight: bool,
    began_a_request: bool,
    idle_for: Duration,
    asked: bool,
}

/// The connection to close to make room: never one answering a request, one already
/// asked, or one idle less than [`IDLE_BEFORE_CLOSING`]; of the rest, one that never
/// began a request before any kept alive, and the longest idle first.
fn choose_to_close<T>(candidates: impl Iterator<Item = (T, Candidate)>) -> Option<T> {
    candidates
        .filter(|(_, c)| !c.in_flight && !c.asked && c.idle_for >= IDLE_BEFORE_CLOSING)
        .max_by_key(|(_, c)| (!c.began_a_request, c.idle_for))
        .map(|(conn, _)| conn)
}

/// The app, counting each connection's requests and when it was last answered.
#[derive(Clone)]
struct Tracked {
    app: axum::Router,
    conn: Arc<Conn>,
    clock: Instant,
}

/// One request in flight on its connection, until its answer's body is dropped (sent
/// whole, or the connection failed) or the request is dropped unanswered.
struct InFlight {
    conn: Arc<Conn>,
    clock: Instant,
}

impl InFlight {
    fn begin(conn: Arc<Conn>, clock: Instant) -> InFlight {
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        conn.requests.fetch_add(1, Ordering::AcqRel);
        InFlight { conn, clock }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.last_active_ms.store(millis_since(self.clock), Ordering::Release);
        self.conn.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl<B> tower::Service<Request<B>> for Tracked
where
    axum::Router: tower::Service<Request<B>, Response = axum::response::Response, Error = Infallible>,
    <axum::Router as tower::Service<Request<B>>>::Future: Send + 'static,
{
    type Response = axum::response::Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<axum::response::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        tower::Service::<Request<B>>::poll_ready(&mut self.app, cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let in_flight = InFlight::begin(self.conn.clone(), self.clock);
        let answer = self.app.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // The request stays in flight while its answer is sent: the guard lives in
            // the body, which hyper drops once it has written the last of it.
            Ok(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _in_flight = &in_flight;
                    frame
                }))
            }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle(secs: f64, began_a_request: bool) -> Candidate {
        Candidate { in_flight: false, began_a_request, idle_for: Duration::from_secs_f64(secs), asked: false }
    }

    #[test]
    fn a_connection_that_never_began_a_request_goes_before_a_kept_alive_one() {
        let chosen = choose_to_close([("kept alive", idle(30.0, true)), ("silent", idle(2.0, false))].into_iter());
        assert_eq!(chosen, Some("silent"));
    }

    #[test]
    fn the_longest_idle_goes_first() {
        let chosen = choose_to_close([("a", idle(3.0, true)), ("b", idle(9.0, true)), ("c", idle(5.0, true))].into_iter());
        assert_eq!(chosen, Some("b"));
        let chosen = choose_to_close([("a", idle(3.0, false)), ("b", idle(9.0, false)), ("c", idle(5.0, false))].into_iter());
        assert_eq!(chosen, Some("b"));
    }

    #[test]
    fn a_connection_answering_asked_already_or_idle_briefly_is_never_chosen() {
        let answering = Candidate { in_flight: true, ..idle(60.0, true) };
        let asked = Candidate { asked: true, ..idle(60.0, false) };
        let brief = idle(0.5, false);
        assert_eq!(choose_to_close([("answering", answering), ("asked", asked), ("brief", brief)].into_iter()), None);
        assert_eq!(choose_to_close([("answering", answering), ("idle", idle(1.0, true))].into_iter()), Some("idle"));
    }
}
