//! The keep-alive pool of HTTP/1.1 connections to upstreams, one per I/O thread (a
//! request and the upstream connection it uses stay on one thread, see `workers.rs`).
//!
//! No request ever waits for another's long response, and a burst of short requests
//! does not open a connection each:
//!
//! * a request takes an idle connection if there is one;
//! * otherwise it joins this upstream's queue for the next released connection, and
//!   opens its own connection at once unless, at the rate connections were released
//!   over the last 100–200 ms, its turn would come within [`PATIENCE`]. Connections
//!   held by long-polls, downloads or slow answers are not released, so a request
//!   behind them connects at once; it only ever waits behind exchanges that finish
//!   fast enough to serve it within [`PATIENCE`], and never longer than that. While it
//!   connects it still takes a released connection that comes first (and drops the
//!   half-open one). At most [`MAX_CONNECTING`] requests per upstream and thread
//!   connect at once. A connect runs as a task of its own: a request that goes away
//!   meanwhile (a client that reset its stream) leaves the new connection to the next
//!   request instead of throwing it away;
//! * a request that goes away after it was sent leaves its exchange to finish in the
//!   background — an answer of up to [`DRAIN_LIMIT`] within [`DRAIN_TIME`] is read and
//!   dropped, and the connection stays in the pool — so a client resetting its streams
//!   cannot make the router open an upstream connection per stream;
//! * a connection whose response has ended goes to the oldest waiting request, else to
//!   the idle list: at most [`MAX_IDLE_PER_UPSTREAM`] per upstream and thread, closed
//!   after [`IDLE_TIMEOUT`] unused. This bounds pooling, never a request.
//!
//! hyper-util's pooled client opened a connection for every request that found none
//! idle and finished it in the background even when a freed one won the race, so
//! 512 multiplexed streams kept hundreds of upstream connections open (and churned
//! through more): +60 % CPU and +16 MiB in `just bench`'s HTTP/2 phase. Waiting only
//! while released connections will serve the request soon keeps a saturated upstream
//! at the connections that keep it busy (docs/benchmarks.md).

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower_service::Service;

use crate::upstream::{BoxError, Connector, MAX_UPSTREAM_READ, UpstreamBody};

/// The longest a request is expected to wait for a released connection before it opens
/// its own instead.
pub(crate) const PATIENCE: Duration = Duration::from_millis(50);
/// How often a request re-checks while [`MAX_CONNECTING`] others are connecting.
const RECHECK: Duration = Duration::from_millis(1);
/// Releases are counted over windows of this length to estimate the release rate.
const RATE_WINDOW: Duration = Duration::from_millis(100);
/// Requests per upstream and thread that open a connection at the same time.
pub(crate) const MAX_CONNECTING: usize = 4;
/// Idle keep-alive connections kept per upstream address and thread.
pub(crate) const MAX_IDLE_PER_UPSTREAM: usize = 32;
/// An idle connection unused for this long is closed.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// The most of an abandoned answer read to keep its connection.
pub(crate) const DRAIN_LIMIT: usize = 64 * 1024;
/// The longest an abandoned answer is waited for to keep its connection.
pub(crate) const DRAIN_TIME: Duration = Duration::from_secs(1);

type Sender = http1::SendRequest<UpstreamBody>;

/// Why an exchange with an upstream failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum UpstreamError {
    /// TCP connect or TLS handshake (or its timeout, `timeouts.upstream_connect`).
    #[error("connecting failed: {0}")]
    Connect(#[source] BoxError),
    /// Sending the request or reading the response head.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

/// Connections are pooled per scheme and address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    https: bool,
    authority: Authority,
}

/// One upstream's connections on this thread.
#[derive(Debug)]
struct Entry {
    idle: Vec<(Sender, Instant)>,
    waiters: VecDeque<oneshot::Sender<Sender>>,
    connecting: usize,
    releases: ReleaseRate,
}

impl Default for Entry {
    fn default() -> Entry {
        Entry { idle: Vec::new(), waiters: VecDeque::new(), connecting: 0, releases: ReleaseRate::new() }
    }
}

/// Connections released per window, for the current and the previous window.
#[derive(Debug)]
struct ReleaseRate {
    window_start: Instant,
    current: u32,
    previous: u32,
}

impl ReleaseRate {
    fn new() -> ReleaseRate {
        ReleaseRate { window_start: Instant::now(), current: 0, previous: 0 }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed >= RATE_WINDOW {
            self.previous = if elapsed >= 2 * RATE_WINDOW { 0 } else { self.current };
            self.current = 0;
            self.window_start = now;
        }
    }

    fn released(&mut self, now: Instant) {
        self.roll(now);
        self.current = self.current.saturating_add(1);
    }

    /// How long the `position`-th waiting request can expect to wait for a release at
    /// the recent rate (`None`: nothing was released lately).
    fn expected_wait(&mut self, position: usize) -> Option<Duration> {
        let now = Instant::now();
        self.roll(now);
        let into = now.saturating_duration_since(self.window_start).as_secs_f64() / RATE_WINDOW.as_secs_f64();
        let per_window = f64::from(self.previous) * (1.0 - into) + f64::from(self.current);
        (per_window >= 1.0).then(|| RATE_WINDOW.mul_f64(position as f64 / per_window))
    }
}

/// One thread's connections to every upstream, over one connector.
#[derive(Debug)]
pub(crate) struct Pool {
    connector: Connector,
    /// FNV, not SipHash: the keys are the config's upstream addresses, never chosen by a
    /// client, and hashing an `Authority` feeds the hasher one byte at a time (SipHash
    /// made the two lookups per request ~2 % of an HTTP/2 request's instructions).
    entries: Mutex<HashMap<Key, Entry, fnv::FnvBuildHasher>>,
}

/// A connection in use by one exchange; [`Lease::finish`] returns it once the
/// response body has ended. Dropped instead, the connection closes.
#[derive(Debug)]
pub(crate) struct Lease {
    pool: Arc<Pool>,
    key: Key,
    sender: Sender,
}

impl Lease {
    /// The response body ended: the connection may carry the next request.
    pub(crate) fn finish(self) {
        let Lease { pool, key, sender } = self;
        pool.put(&key, sender);
    }
}

/// What a request found when it asked for a connection.
enum Found {
    Idle(Sender),
    Queued(oneshot::Receiver<Sender>),
}

/// Counts one connect to an upstream while it lives.
struct Connecting {
    pool: Arc<Pool>,
    key: Key,
}

impl Drop for Connecting {
    fn drop(&mut self) {
        self.pool.with_entry(&self.key, |e| e.connecting -= 1);
    }
}

/// A request sent upstream whose answer has not arrived yet, with its connection.
/// Dropped before the answer (the client went away), the exchange finishes in the
/// background so that the connection can be used again (see the module docs).
struct Answer<F: Future<Output = hyper::Result<Response<Incoming>>> + Send + 'static> {
    pending: Option<(Pin<Box<F>>, Lease)>,
}

impl<F: Future<Output = hyper::Result<Response<Incoming>>> + Send + 'static> Future for Answer<F> {
    type Output = Result<(Response<Incoming>, Lease), UpstreamError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some((fut, _)) = self.pending.as_mut() else { return Poll::Pending };
        let result = ready!(fut.as_mut().poll(cx));
        let Some((_, lease)) = self.pending.take() else { return Poll::Pending };
        Poll::Ready(result.map(|r| (r, lease)).map_err(UpstreamError::Http))
    }
}

impl<F: Future<Output = hyper::Result<Response<Incoming>>> + Send + 'static> Drop for Answer<F> {
    fn drop(&mut self) {
        let Some((fut, lease)) = self.pending.take() else { return };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(fut, lease));
        }
    }
}

/// Reads an abandoned answer to its end (at most [`DRAIN_LIMIT`] within
/// [`DRAIN_TIME`]) and returns its connection to the pool; else the connection closes.
async fn drain(answer: impl Future<Output = hyper::Result<Response<Incoming>>>, lease: Lease) {
    let read = async {
        let mut body = answer.await.ok()?.into_body();
        let mut seen = 0;
        while let Some(frame) = body.frame().await {
            seen += frame.ok()?.data_ref().map_or(0, Bytes::len);
            if seen > DRAIN_LIMIT {
                return None;
            }
        }
        Some(())
    };
    if let Ok(Some(())) = tokio::time::timeout(DRAIN_TIME, read).await {
        lease.finish();
    }
}

impl Pool {
    /// An empty pool over `connector`.
    pub(crate) fn new(connector: Connector) -> Arc<Pool> {
        Arc::new(Pool { connector, entries: Mutex::new(HashMap::default()) })
    }

    /// Sends `req` (absolute URI) to its upstream and returns the response head and
    /// the connection, which the caller hands back when the body has ended.
    pub(crate) async fn request(
        self: &Arc<Self>,
        mut req: Request<UpstreamBody>,
    ) -> Result<(Response<Incoming>, Lease), UpstreamError> {
        let uri = req.uri().clone();
        let Some(authority) = uri.authority().cloned() else {
            return Err(UpstreamError::Connect(format!("the upstream URI {uri} has no address").into()));
        };
        let key = Key { https: uri.scheme() == Some(&Scheme::HTTPS), authority };
        let mut sender = self.acquire(&key, &uri).await?;
        // Origin servers get the origin form (RFC 9112 §3.2.1), not the absolute URI.
        *req.uri_mut() = uri.path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/")).into();
        let answer = Box::pin(sender.send_request(req));
        Answer { pending: Some((answer, Lease { pool: Arc::clone(self), key, sender })) }.await
    }

    /// A ready connection to `key`: idle, released by another request, or new.
    async fn acquire(self: &Arc<Self>, key: &Key, uri: &Uri) -> Result<Sender, UpstreamError> {
        loop {
            let mut released = match self.idle_or_queue(key) {
                Found::Idle(sender) => sender,
                Found::Queued(rx) => match self.wait_or_connect(key, uri, rx).await? {
                    Some(sender) => sender,
                    None => continue,
                },
            };
            // A pooled connection the upstream closed meanwhile is not ready: next one.
            if released.ready().await.is_ok() {
                return Ok(released);
            }
        }
    }

    /// Waits in the queue, connecting when releases would not serve it within
    /// [`PATIENCE`]; `None` when the queue entry was lost (try again).
    async fn wait_or_connect(
        self: &Arc<Self>,
        key: &Key,
        uri: &Uri,
        mut rx: oneshot::Receiver<Sender>,
    ) -> Result<Option<Sender>, UpstreamError> {
        let mut impatient = false;
        loop {
            let pause = match self.start_connecting(key, impatient) {
                Ok(connecting) => {
                    let (connect, mut connected) = self.spawn_connect(connecting, uri.clone());
                    tokio::select! {
                        biased;
                        released = &mut rx => {
                            // The half-open connection is not needed.
                            connect.abort();
                            return Ok(released.ok());
                        }
                        result = &mut connected => {
                            // A connection released to us meanwhile goes to the next request.
                            rx.close();
                            if let Ok(extra) = rx.try_recv() {
                                self.put(key, extra);
                            }
                            let result = result.unwrap_or_else(|_| Err(UpstreamError::Connect("the connect task ended".into())));
                            return result.map(Some);
                        }
                    }
                }
                Err(pause) => pause,
            };
            tokio::select! {
                released = &mut rx => return Ok(released.ok()),
                () = tokio::time::sleep(pause) => impatient = pause == PATIENCE,
            }
        }
    }

    fn with_entry<R>(&self, key: &Key, f: impl FnOnce(&mut Entry) -> R) -> R {
        // Only this thread uses this pool: the lock is never contended.
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        match entries.get_mut(key) {
            Some(entry) => f(entry),
            None => f(entries.entry(key.clone()).or_default()),
        }
    }

    fn idle_or_queue(&self, key: &Key) -> Found {
        self.with_entry(key, |e| {
            while let Some((sender, since)) = e.idle.pop() {
                if !sender.is_closed() && since.elapsed() < IDLE_TIMEOUT {
                    return Found::Idle(sender);
                }
            }
            if e.waiters.len() >= MAX_IDLE_PER_UPSTREAM {
                // Requests that connected themselves or went away leave closed entries.
                e.waiters.retain(|w| !w.is_closed());
            }
            let (tx, rx) = oneshot::channel();
            e.waiters.push_back(tx);
            Found::Queued(rx)
        })
    }

    /// Room to open a connection, unless released connections should serve this
    /// request within [`PATIENCE`] (and it is not `impatient`, having waited that long)
    /// or [`MAX_CONNECTING`] requests are connecting; then how long to wait before
    /// asking again.
    fn start_connecting(self: &Arc<Self>, key: &Key, impatient: bool) -> Result<Connecting, Duration> {
        self.with_entry(key, |e| {
            let soon = e.releases.expected_wait(e.waiters.len()).is_some_and(|w| w <= PATIENCE);
            if soon && !impatient {
                return Err(PATIENCE);
            }
            if e.connecting >= MAX_CONNECTING {
                return Err(RECHECK);
            }
            e.connecting += 1;
            Ok(())
        })?;
        Ok(Connecting { pool: Arc::clone(self), key: key.clone() })
    }

    /// Connects to `uri` in a task of its own, which ends with sending the result.
    /// If nobody waits for it any more (the request went away, not aborting it), the
    /// new connection goes to the pool.
    fn spawn_connect(
        self: &Arc<Self>,
        connecting: Connecting,
        uri: Uri,
    ) -> (tokio::task::JoinHandle<()>, oneshot::Receiver<Result<Sender, UpstreamError>>) {
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let result = connecting.pool.connect(&uri).await;
            if let Err(Ok(sender)) = tx.send(result) {
                connecting.pool.put(&connecting.key, sender);
            }
        });
        (task, rx)
    }

    async fn connect(&self, uri: &Uri) -> Result<Sender, UpstreamError> {
        let io = self.connector.clone().call(uri.clone()).await.map_err(UpstreamError::Connect)?;
        let (sender, conn) = http1::Builder::new().max_buf_size(MAX_UPSTREAM_READ).handshake(io).await?;
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection ended with an error");
            }
        });
        Ok(sender)
    }

    /// A connection whose exchange ended: to the oldest waiting request, else idle.
    fn put(&self, key: &Key, mut sender: Sender) {
        if sender.is_closed() {
            return;
        }
        self.with_entry(key, |e| {
            let now = Instant::now();
            e.releases.released(now);
            while let Some(waiter) = e.waiters.pop_front() {
                match waiter.send(sender) {
                    Ok(()) => return,
                    // That request went away or connected first: try the next one.
                    Err(back) => sender = back,
                }
            }
            if e.idle.len() >= MAX_IDLE_PER_UPSTREAM {
                e.idle.retain(|(s, since)| !s.is_closed() && now.saturating_duration_since(*since) < IDLE_TIMEOUT);
            }
            if e.idle.len() < MAX_IDLE_PER_UPSTREAM {
                e.idle.push((sender, now));
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;
    use tokio::sync::Notify;

    use super::*;

    /// A backend counting its connections; `/hold` answers once `release` is notified.
    async fn backend(release: Arc<Notify>) -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let counted = Arc::clone(&connections);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                let release = Arc::clone(&release);
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let release = Arc::clone(&release);
                    async move {
                        if req.uri().path() == "/hold" {
                            release.notified().await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (format!("http://{addr}"), connections)
    }

    fn pool() -> Arc<Pool> {
        Pool::new(crate::upstream::connector(Duration::from_secs(5), false).expect("connector"))
    }

    fn get(base: &str, path: &str) -> Request<UpstreamBody> {
        Request::get(format!("{base}{path}")).body(UpstreamBody::Empty).expect("request")
    }

    /// Sends one request and reads its body to the end, returning the connection.
    async fn exchange(pool: &Arc<Pool>, base: &str, path: &str) -> Bytes {
        let (resp, lease) = pool.request(get(base, path)).await.expect("answer");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        lease.finish();
        body
    }

    #[tokio::test]
    async fn requests_that_go_away_leave_their_connections_to_the_next() {
        let release = Arc::new(Notify::new());
        let (base, connections) = backend(Arc::clone(&release)).await;
        let pool = pool();
        // Cancelled while connecting (a reset stream): the connect goes on, into the pool.
        for _ in 0..50 {
            let mut request = std::pin::pin!(pool.request(get(&base, "/")));
            let waker = std::task::Waker::noop();
            let _ = request.as_mut().poll(&mut Context::from_waker(waker));
        }
        // Cancelled after it was sent: the answer is read in the background.
        for _ in 0..50 {
            let sent = tokio::time::timeout(Duration::from_millis(1), pool.request(get(&base, "/hold")));
            let _ = sent.await;
            release.notify_waiters();
        }
        release.notify_waiters();
        assert_eq!(exchange(&pool, &base, "/").await, "ok");
        let opened = connections.load(Ordering::SeqCst);
        assert!(opened <= 2 * MAX_CONNECTING, "100 abandoned requests opened {opened} connections");
    }

    #[tokio::test]
    async fn sequential_requests_reuse_one_connection() {
        let (base, connections) = backend(Arc::new(Notify::new())).await;
        let pool = pool();
        for _ in 0..5 {
            assert_eq!(exchange(&pool, &base, "/").await, "ok");
        }
        assert_eq!(connections.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_request_behind_held_connections_opens_its_own_and_never_waits() {
        let release = Arc::new(Notify::new());
        let (base, connections) = backend(Arc::clone(&release)).await;
        let pool = pool();
        assert_eq!(exchange(&pool, &base, "/").await, "ok", "one idle connection to start with");
        let held: Vec<_> = (0..6)
            .map(|_| {
                let (pool, base) = (Arc::clone(&pool), base.clone());
                tokio::spawn(async move { exchange(&pool, &base, "/hold").await })
            })
            .collect();
        while connections.load(Ordering::SeqCst) < 6 {
            tokio::task::yield_now().await;
        }
        // Every connection is held by a long response: the next request connects.
        let answered = tokio::time::timeout(Duration::from_secs(5), exchange(&pool, &base, "/")).await;
        assert_eq!(answered.expect("answered while six responses are held"), "ok");
        assert_eq!(connections.load(Ordering::SeqCst), 7);
        release.notify_waiters();
        for h in held {
            drop(h);
        }
    }

    #[tokio::test]
    async fn a_released_connection_goes_to_the_waiting_request_and_the_idle_list_is_bounded() {
        let (base, connections) = backend(Arc::new(Notify::new())).await;
        let pool = pool();
        // A burst of short requests on one thread opens at most MAX_CONNECTING at once
        // and reuses what is released, rather than a connection each.
        let burst: Vec<_> = (0..200)
            .map(|_| {
                let (pool, base) = (Arc::clone(&pool), base.clone());
                tokio::spawn(async move { exchange(&pool, &base, "/").await })
            })
            .collect();
        for b in burst {
            assert_eq!(b.await.expect("task"), "ok");
        }
        let opened = connections.load(Ordering::SeqCst);
        assert!(opened < 200, "200 short requests opened {opened} connections");
        let idle =
            pool.with_entry(&Key { https: false, authority: base[7..].parse().expect("authority") }, |e| e.idle.len());
        assert!(idle <= MAX_IDLE_PER_UPSTREAM, "{idle} idle connections kept");
    }
}
