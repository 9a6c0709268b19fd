//! What choosing a connection to close needs to know of each: whether a request is
//! being answered on it, whether it ever began one, when it connected, and since when
//! the headers of its next request have been arriving. The service and the stream of
//! each connection are wrapped to keep these up to date.

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
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit};

/// A connection that has sent nothing since it connected may be closed to make room
/// after this long. Only connections that never began a request are ever closed to
/// make room: a kept-alive connection is a client's (closing it would let an
/// attacker's new connections, busy with cheap requests without a key, take the slots
/// of clients in use), and bytes read after an answer may be the rest of a body its
/// handler did not read, not a next request's headers.
pub const SILENT_BEFORE_CLOSING: Duration = Duration::from_secs(1);

/// A connection's first request gets this long from when it connected to send its
/// headers before the connection may be closed to make room: a client sends them at
/// once (a lost packet costs a few hundred milliseconds of retransmission), while a
/// connection trickling bytes to look busy is holding a slot. At shutdown, headers
/// arriving for less than this long (from their first byte, for a later request) are
/// waited for.
pub const HEADERS_WITHIN: Duration = Duration::from_secs(2);

/// Milliseconds since the listener started.
#[derive(Clone, Copy)]
pub struct Clock(Instant);

impl Clock {
    pub fn now_ms(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

/// `arriving_since_ms` when nothing is arriving.
const NOTHING_ARRIVING: u64 = u64::MAX;

pub struct Conn {
    connected_ms: u64,
    /// When the first byte of a request not yet begun was read, or `NOTHING_ARRIVING`.
    arriving_since_ms: AtomicU64,
    /// Requests begun and not yet answered (hyper runs one at a time).
    in_flight: AtomicU32,
    began_a_request: AtomicBool,
    /// Asked to close already: not chosen again (unless it declines).
    pub asked: AtomicBool,
    pub close: Notify,
}

impl Conn {
    fn new(now_ms: u64) -> Conn {
        Conn {
            connected_ms: now_ms,
            arriving_since_ms: AtomicU64::new(NOTHING_ARRIVING),
            in_flight: AtomicU32::new(0),
            began_a_request: AtomicBool::new(false),
            asked: AtomicBool::new(false),
            close: Notify::new(),
        }
    }

    pub fn state(&self, now_ms: u64) -> Candidate {
        let arriving = self.arriving_since_ms.load(Ordering::Acquire);
        let began_a_request = self.began_a_request.load(Ordering::Acquire);
        // A first request's headers are timed from the connection's start: a silent
        // second before its first byte does not earn a connection more time.
        let arriving_since = if began_a_request { arriving } else { self.connected_ms };
        Candidate {
            in_flight: self.in_flight.load(Ordering::Acquire) > 0,
            began_a_request,
            connected_for: Duration::from_millis(now_ms.saturating_sub(self.connected_ms)),
            arriving_for: (arriving != NOTHING_ARRIVING).then(|| Duration::from_millis(now_ms.saturating_sub(arriving_since))),
        }
    }

    /// Bytes were read: between requests, they are taken as the next request's headers.
    /// They may be the unread rest of the last one's body instead, which hyper drains
    /// after the answer: only shutdown looks at a later request's headers, so at worst
    /// it waits `HEADERS_WITHIN` for nothing, or, if a real request follows that mark
    /// before the next request begins, times it from the drain and closes under it
    /// sooner (a body left partly unread and a request started just before SIGTERM).
    /// The clock is read only when the mark is set: most reads (a body's, or more of
    /// headers already marked) leave it as it is.
    fn bytes_arrived(&self, now_ms: impl FnOnce() -> u64) {
        if self.in_flight.load(Ordering::Acquire) == 0 && self.arriving_since_ms.load(Ordering::Acquire) == NOTHING_ARRIVING {
            let _ = self.arriving_since_ms.compare_exchange(NOTHING_ARRIVING, now_ms(), Ordering::AcqRel, Ordering::Acquire);
        }
    }

    fn request_began(&self) {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        self.began_a_request.store(true, Ordering::Release);
        self.arriving_since_ms.store(NOTHING_ARRIVING, Ordering::Release);
    }

    fn request_answered(&self) {
        self.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One connection's state, as choosing one to close looks at it.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    pub in_flight: bool,
    pub began_a_request: bool,
    pub connected_for: Duration,
    /// How long the headers of a request not yet begun have been arriving (a first
    /// request's counted from when the connection started).
    pub arriving_for: Option<Duration>,
}

impl Candidate {
    /// Not a client: it never began a request, and has been silent for
    /// [`SILENT_BEFORE_CLOSING`] since it connected, or sending its first request's
    /// headers for [`HEADERS_WITHIN`].
    pub fn closable(&self) -> bool {
        let allowed = if self.arriving_for.is_some() { HEADERS_WITHIN } else { SILENT_BEFORE_CLOSING };
        !self.in_flight && !self.began_a_request && self.connected_for >= allowed
    }

    /// Headers arriving that may still become a request: at shutdown, worth waiting for.
    pub fn headers_in_good_time(&self) -> bool {
        !self.in_flight && self.arriving_for.is_some_and(|arriving| arriving < HEADERS_WITHIN)
    }

    /// At shutdown: nothing begun, and nothing arriving that could still become a
    /// request within the grace period.
    pub fn drop_at_shutdown(&self) -> bool {
        !self.began_a_request && !self.headers_in_good_time()
    }
}

/// The connection to close to make room: of the [`Candidate::closable`] ones, the one
/// connected longest ago.
pub fn choose_to_close<T>(candidates: impl Iterator<Item = (T, Candidate)>) -> Option<T> {
    candidates.filter(|(_, c)| c.closable()).max_by_key(|(_, c)| c.connected_for).map(|(conn, _)| conn)
}

/// The open connections.
pub struct Open {
    conns: Mutex<HashMap<u64, Arc<Conn>>>,
    next_id: AtomicU64,
    pub clock: Clock,
    /// Told each time a connection is removed.
    removed: Notify,
}

impl Open {
    pub fn new() -> Open {
        Open { conns: Mutex::new(HashMap::new()), next_id: AtomicU64::new(0), clock: Clock(Instant::now()), removed: Notify::new() }
    }

    fn add(&self) -> (u64, Arc<Conn>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::new(self.clock.now_ms()));
        self.conns.lock().insert(id, conn.clone());
        (id, conn)
    }

    fn remove(&self, id: u64) {
        self.conns.lock().remove(&id);
        self.removed.notify_waiters();
    }

    pub async fn all_closed(&self) {
        loop {
            let removed = self.removed.notified();
            if self.conns.lock().is_empty() {
                return;
            }
            removed.await;
        }
    }

    /// Ask the connection [`choose_to_close`] picks, of those not asked yet, to close;
    /// false if there is none.
    pub fn ask_one_to_close(&self) -> bool {
        let now_ms = self.clock.now_ms();
        let conns = self.conns.lock();
        let not_asked = conns.values().filter(|c| !c.asked.load(Ordering::Acquire)).map(|c| (c, c.state(now_ms)));
        match choose_to_close(not_asked) {
            Some(conn) => {
                conn.asked.store(true, Ordering::Release);
                conn.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// A connection's place in [`Open`] and its slot, given back when its task ends, even
/// by a panic: a connection left registered would hold every shutdown for its grace.
pub struct Registered {
    pub open: Arc<Open>,
    id: u64,
    pub conn: Arc<Conn>,
    _slot: OwnedSemaphorePermit,
}

impl Registered {
    pub fn new(open: Arc<Open>, slot: OwnedSemaphorePermit) -> Registered {
        let (id, conn) = open.add();
        Registered { open, id, conn, _slot: slot }
    }

    pub fn state(&self) -> Candidate {
        self.conn.state(self.open.clock.now_ms())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.open.remove(self.id);
    }
}

/// Unsent bytes a served socket holds before a write waits (`TCP_NOTSENT_LOWAT`; a
/// waiting write goes on once fewer than half of them are left). Without it, Linux
/// wakes a waiting writer only once a third of the send buffer has drained, and that
/// buffer grows to 4 MB: a client reading a large answer steadily but under about
/// 20 KB/s looked stalled to the send deadline (review 29a). Bytes the client's window
/// takes are sent, not held, so this does not slow a client that reads (review 29b:
/// raw writes over loopback 2.4 GB/s against 4.0, more writes; large answers as fast,
/// their JSON being the bound).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
pub const UNSENT_HELD: u32 = 128 * 1024;

/// The connection's stream, noting when the headers of a request begin to arrive, and
/// failing a write that has waited `send_within` for the client to take some of its
/// answer.
///
/// hyper has no write deadline: a client that sends requests (pipelined, or one with a
/// large answer) and never reads the answers stops hyper writing, and with it reading,
/// and its connection held its slot for as long as it stayed connected. Such a
/// connection began a request, so making room never closes it; sixteen of them kept
/// every new client out. Only a wait without progress counts (as nginx's
/// `send_timeout`). With [`UNSENT_HELD`], a client has made progress once it has taken
/// about 64 KB plus what its receive buffer holds (its kernel reopens the window only
/// once that buffer is mostly read; review 29b): with default buffers 100–200 KB, so a
/// client reading a large answer at 4 KB/s keeps its connection at the default 60 s.
pub struct Watched {
    stream: TcpStream,
    conn: Arc<Conn>,
    clock: Clock,
    send_within: Duration,
    /// While a write waits on the client: when it gives up. Made at the first wait
    /// after a write that made progress, dropped at the next one.
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Watched {
    pub fn new(stream: TcpStream, conn: Arc<Conn>, clock: Clock, send_within: Duration) -> Watched {
        #[cfg(target_os = "linux")]
        if let Err(e) = socket2::SockRef::from(&stream).set_tcp_notsent_lowat(UNSENT_HELD) {
            // The deadline still holds; a slow reader may be taken for a stalled one.
            // Said once: it would fail alike for every connection.
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| tracing::warn!(error = %e, "cannot bound a connection's unsent bytes (TCP_NOTSENT_LOWAT); slow readers may be closed by the send deadline"));
        }
        Watched { stream, conn, clock, send_within, stalled: None }
    }

    /// A write's outcome under the send deadline: progress (or an error) ends a wait;
    /// a wait starts the deadline's timer, or fails once it has run out.
    fn within_deadline<T>(&mut self, cx: &mut Context<'_>, written: Poll<std::io::Result<T>>) -> Poll<std::io::Result<T>> {
        if written.is_ready() {
            self.stalled = None;
            return written;
        }
        let send_within = self.send_within;
        let stalled = self.stalled.get_or_insert_with(|| Box::pin(tokio::time::sleep(send_within)));
        match stalled.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                tracing::info!(seconds = send_within.as_secs_f64(), "closed a connection whose client took too little of its answer in time");
                Poll::Ready(Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("the client took too little of its answer for {} s", send_within.as_secs_f64()),
                )))
            }
        }
    }
}

impl tokio::io::AsyncRead for Watched {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut tokio::io::ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let read = Pin::new(&mut self.stream).poll_read(cx, buf);
        if matches!(read, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let clock = self.clock;
            self.conn.bytes_arrived(|| clock.now_ms());
        }
        read
    }
}

impl tokio::io::AsyncWrite for Watched {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write(cx, buf);
        self.within_deadline(cx, written)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[std::io::IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let written = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        self.within_deadline(cx, written)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    // A TCP stream's flush and shutdown never wait on the client (they are ready at
    // once): only writes can stall.
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// The app, noting on its connection when each request begins and is answered.
#[derive(Clone)]
pub struct Tracked {
    pub app: axum::Router,
    pub conn: Arc<Conn>,
}

/// One request in flight on its connection, until its answer's body is dropped (hyper
/// has taken the last of it into its buffer, which it flushes before any close, or the
/// connection failed) or the request is dropped unanswered.
struct InFlight {
    conn: Arc<Conn>,
}

impl InFlight {
    fn begin(conn: Arc<Conn>) -> InFlight {
        conn.request_began();
        InFlight { conn }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.conn.request_answered();
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
        let in_flight = InFlight::begin(self.conn.clone());
        let answer = self.app.call(request);
        Box::pin(async move {
            let response = answer.await?;
            // The request stays in flight while its answer is sent: the guard lives in
            // the body.
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

    fn silent(secs: f64) -> Candidate {
        Candidate { in_flight: false, began_a_request: false, connected_for: Duration::from_secs_f64(secs), arriving_for: None }
    }

    fn sending_first(secs: f64) -> Candidate {
        Candidate { arriving_for: Some(Duration::from_secs_f64(secs)), ..silent(secs) }
    }

    fn kept_alive(arriving_secs: Option<f64>) -> Candidate {
        Candidate { began_a_request: true, arriving_for: arriving_secs.map(Duration::from_secs_f64), ..silent(60.0) }
    }

    #[test]
    fn the_connection_connected_longest_ago_goes_first() {
        let chosen = choose_to_close([("a", silent(3.0)), ("b", sending_first(9.0)), ("c", silent(5.0))].into_iter());
        assert_eq!(chosen, Some("b"));
        let chosen = choose_to_close([("a", silent(3.0)), ("b", sending_first(2.5)), ("c", silent(5.0))].into_iter());
        assert_eq!(chosen, Some("c"));
    }

    #[test]
    fn a_client_connection_or_one_silent_or_sending_briefly_is_never_chosen() {
        let answering = Candidate { in_flight: true, ..kept_alive(None) };
        let none = [
            ("answering", answering),
            ("kept alive", kept_alive(None)),
            ("kept alive, receiving long", kept_alive(Some(30.0))),
            ("sending its first request", sending_first(1.9)),
            ("silent briefly", silent(0.9)),
        ];
        assert_eq!(choose_to_close(none.into_iter()), None);
        assert_eq!(choose_to_close(none.into_iter().chain([("silent", silent(1.0))])), Some("silent"));
        assert_eq!(choose_to_close(none.into_iter().chain([("stalled", sending_first(2.0))])), Some("stalled"));
    }

    #[test]
    fn shutdown_drops_only_what_cannot_become_a_request_in_time() {
        assert!(silent(0.0).drop_at_shutdown());
        assert!(sending_first(2.0).drop_at_shutdown());
        assert!(!sending_first(0.1).drop_at_shutdown());
        assert!(!kept_alive(None).drop_at_shutdown());
    }

    #[test]
    fn headers_arriving_in_good_time_are_waited_for_at_shutdown() {
        assert!(kept_alive(Some(1.9)).headers_in_good_time());
        assert!(!kept_alive(Some(2.0)).headers_in_good_time());
        assert!(!kept_alive(None).headers_in_good_time());
    }

    /// A stream served through `Watched`, and the client's end of it.
    async fn watched_pair(send_within: Duration) -> (Watched, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (served, _) = listener.accept().await.unwrap();
        (Watched::new(served, Arc::new(Conn::new(0)), Clock(Instant::now()), send_within), client)
    }

    #[tokio::test]
    async fn a_write_to_a_client_that_reads_nothing_fails_after_the_send_deadline() {
        use tokio::io::AsyncWriteExt;
        let (mut served, _client) = watched_pair(Duration::from_millis(300)).await;
        let chunk = vec![b'x'; 64 * 1024];
        let started = Instant::now();
        let mut written = 0usize;
        let error = loop {
            match tokio::time::timeout(Duration::from_secs(20), served.write(&chunk)).await {
                Ok(Ok(n)) => written += n,
                Ok(Err(e)) => break e,
                Err(_) => panic!("a write waited 20 s on a client that reads nothing"),
            }
        };
        assert_eq!(error.kind(), std::io::ErrorKind::TimedOut, "{error}");
        assert!(written > 0, "the socket's buffers took something first");
        assert!(started.elapsed() >= Duration::from_millis(300), "failed before the deadline: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_client_reading_slowly_keeps_its_connection_past_the_send_deadline() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let send_within = Duration::from_millis(300);
        let (mut served, mut client) = watched_pair(send_within).await;
        // More than the sockets' buffers hold, read at most 16 KB every 16 ms (1 MB/s):
        // the writes wait on the client again and again, in all much longer than the
        // deadline. Without `UNSENT_HELD` a waiting write went on only once a third of
        // the send buffer (several MB on loopback) had drained, more than this client
        // reads in 300 ms, and the connection was closed.
        let total = 4 * 1024 * 1024;
        let reader = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut read = 0usize;
            while read < total {
                tokio::time::sleep(Duration::from_millis(16)).await;
                match client.read(&mut buf).await.unwrap() {
                    0 => break,
                    n => read += n,
                }
            }
            read
        });
        let started = Instant::now();
        served.write_all(&vec![b'x'; total]).await.expect("a client that reads is never cut off");
        let writing = started.elapsed();
        served.shutdown().await.unwrap();
        assert_eq!(reader.await.unwrap(), total);
        assert!(writing > send_within * 2, "the writes did not wait on the client long enough to test the deadline: {writing:?}");
    }

    #[test]
    fn the_state_follows_bytes_requests_and_answers() {
        let conn = Conn::new(0);
        let state = conn.state(500);
        assert!(state.connected_for == Duration::from_millis(500) && state.arriving_for.is_none() && !state.began_a_request);
        conn.bytes_arrived(|| 1_000);
        conn.bytes_arrived(|| 1_500);
        assert_eq!(conn.state(3_000).arriving_for, Some(Duration::from_secs(3)), "a first request's, from the connection's start");
        conn.request_began();
        let state = conn.state(3_000);
        assert!(state.in_flight && state.began_a_request && state.arriving_for.is_none());
        conn.bytes_arrived(|| 3_100); // the body: not a next request
        assert!(conn.state(3_200).arriving_for.is_none());
        conn.request_answered();
        assert!(!conn.state(4_500).in_flight);
        conn.bytes_arrived(|| 9_000);
        conn.bytes_arrived(|| 9_500);
        assert_eq!(conn.state(10_000).arriving_for, Some(Duration::from_secs(1)), "a later request's, from its first byte");
    }
}
