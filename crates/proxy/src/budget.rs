//! The memory budget for answers on their way to clients (`limits.buffer_per_connection`,
//! `buffer_per_client`, `buffer_total`).
//!
//! A response body chunk is *buffered* from the moment it is handed to hyper until its
//! connection has written that many bytes to the TLS stream: it sits in h2's per-stream
//! send queue or hyper's HTTP/1 write buffer. A client that never reads its socket stops
//! those writes, so without a bound every upstream answer it asks for piles up in the
//! router's memory (hundreds of KiB per HTTP/2 stream).
//!
//! Every request in flight also holds [`REQUEST_COST`] ([`STREAM_COST`] on HTTP/2) of its
//! client's and the process's budget until its answer has ended: what a stream costs
//! beyond its bytes (its state, the upstream connection and that connection's read
//! buffer, and on HTTP/1.1 the connection's TLS buffer). So the
//! budget bounds connections × streams × buffers, and a client that opens streams
//! faster than it reads their answers waits before any upstream work is started.
//!
//! Three levels are counted: the connection, the client address (all its connections)
//! and the process. [`Budgeted`] asks for room before it takes the next chunk from the
//! upstream; when the connection or its client is at its limit the body waits — the
//! upstream is not read, so its answer stays in the upstream's socket, not here — until
//! the connection writes again. When the whole process is at its limit, only
//! connections holding more than [`FAIR_SHARE`] wait: a client that reads what it asked
//! for never holds that much, so the clients that cause the pressure are the ones
//! that wait, never the others. A connection that stays stuck is closed by
//! `timeouts.idle`, as nothing moves on it.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Buf;
use hyper::body::{Body, Frame, SizeHint};

use crate::metrics::Exposition;

/// Under process-wide pressure, connections holding at most this much keep going.
pub(crate) const FAIR_SHARE: usize = 256 * 1024;

/// What an HTTP/1.1 request in flight holds of its client's budget beyond its answer's
/// bytes. Measured on a stalled exchange: besides the counted bytes, the upstream
/// connection's read buffer (up to 64 KiB), the TLS record buffer (up to 64 KiB: the
/// connection's own) and ~9 KiB of state.
pub(crate) const REQUEST_COST: usize = 128 * 1024;

/// The same for an HTTP/2 stream: its streams share the connection's TLS buffer, so the
/// upstream read buffer and the state remain. 512 streams of one client (32 MiB) are
/// admitted at once — `just bench`'s HTTP/2 run (32 connections × 16 streams) never waits.
pub(crate) const STREAM_COST: usize = 64 * 1024;

/// One level's count of buffered bytes and of what requests in flight hold, its limit,
/// and the bodies and requests waiting for room.
///
/// The two counts are compared with the limit apart: an answer waits while the *bytes*
/// fill the level, a new request while bytes and holds together do. Were answers held
/// back by the requests' holds, a client whose requests filled its budget could never
/// finish one — the holds are given back only when the answers end.
#[derive(Debug)]
pub(crate) struct Level {
    used: AtomicUsize,
    reserved: AtomicUsize,
    limit: usize,
    /// Set while `waiters` is not empty, so writes need not take the lock.
    waiting: AtomicBool,
    waiters: Mutex<Vec<Waker>>,
}

impl Level {
    /// An empty level holding at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Level {
        Level {
            used: AtomicUsize::new(0),
            reserved: AtomicUsize::new(0),
            limit,
            waiting: AtomicBool::new(false),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Bytes buffered now.
    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// What requests in flight hold now.
    pub(crate) fn reserved(&self) -> usize {
        self.reserved.load(Ordering::Relaxed)
    }

    /// No room for answer bytes (`Need::Bytes`) or for another request (`Need::Request`).
    fn full(&self, need: Need) -> bool {
        match need {
            Need::Bytes => self.used() >= self.limit,
            Need::Request => self.used().saturating_add(self.reserved()) >= self.limit,
        }
    }

    /// Registers `cx` to be woken when the level has room; `Ready` if it has room by now.
    fn wait(&self, cx: &Context<'_>, need: Need) -> Poll<()> {
        let mut waiters = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        // A waiting body is polled again only when woken (which empties the list), so
        // comparing with the last entry is enough to keep one entry per waiter.
        if !waiters.last().is_some_and(|w| w.will_wake(cx.waker())) {
            waiters.push(cx.waker().clone());
        }
        self.waiting.store(true, Ordering::Release);
        // Checked after registering: a write in between has seen the waiter.
        if self.full(need) { Poll::Pending } else { Poll::Ready(()) }
    }

    fn reserve(&self, n: usize) {
        self.reserved.fetch_add(n, Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        self.reserved.fetch_sub(n, Ordering::Relaxed);
        self.wake_if_room();
    }

    fn add(&self, n: usize) {
        self.used.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        self.used.fetch_sub(n, Ordering::Relaxed);
        self.wake_if_room();
    }

    /// Wakes every waiter once there is room for bytes; a waiting request that still
    /// finds no room for itself registers again.
    fn wake_if_room(&self) {
        if !self.full(Need::Bytes) && self.waiting.load(Ordering::Acquire) {
            let woken = std::mem::take(&mut *self.waiters.lock().unwrap_or_else(PoisonError::into_inner));
            self.waiting.store(false, Ordering::Release);
            woken.into_iter().for_each(Waker::wake);
        }
    }
}

/// What a waiter needs room for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Need {
    /// An answer's next chunk: bytes only.
    Bytes,
    /// A new request: bytes and holds.
    Request,
}

/// Process-wide figures for the metrics.
#[derive(Debug)]
pub(crate) struct ProcessBudget {
    pub(crate) level: Level,
    /// Times a body had to wait for room, by level: connection, client, process.
    pub(crate) waits: [AtomicU64; 3],
    /// Connections closed by `timeouts.idle` with answers their client never read.
    pub(crate) closed_holding: AtomicU64,
    /// Requests in flight (each holds [`REQUEST_COST`] or [`STREAM_COST`]).
    requests: AtomicUsize,
}

impl ProcessBudget {
    /// At most `limit` bytes buffered across the process.
    pub(crate) fn new(limit: usize) -> Arc<ProcessBudget> {
        Arc::new(ProcessBudget {
            level: Level::new(limit),
            waits: Default::default(),
            closed_holding: AtomicU64::new(0),
            requests: AtomicUsize::new(0),
        })
    }

    /// Appends the budget's families to `out`.
    pub(crate) fn render(&self, out: &mut Exposition) {
        let name = "snirouter_buffered_bytes";
        out.family(name, "gauge", "Answer bytes handed on that clients have not read yet (limits.buffer_total).");
        let requests = self.requests.load(Ordering::Relaxed);
        out.sample(name, &[], self.level.used() as f64);
        let name = "snirouter_buffer_requests";
        out.family(
            name,
            "gauge",
            "Requests in flight, each holding 128 KiB (HTTP/1.1) or 64 KiB (HTTP/2) of its client's buffer budget.",
        );
        out.sample(name, &[], requests as f64);
        let name = "snirouter_buffer_waits_total";
        out.family(
            name,
            "counter",
            "Times an answer or a request waited for its client to read, by the budget that was full.",
        );
        for (level, n) in ["connection", "client", "process"].into_iter().zip(&self.waits) {
            out.sample(name, &[("level", level)], n.load(Ordering::Relaxed) as f64);
        }
        let name = "snirouter_buffer_connections_closed_total";
        out.family(
            name,
            "counter",
            "Connections closed by timeouts.idle while holding answers their client never read.",
        );
        out.sample(name, &[], self.closed_holding.load(Ordering::Relaxed) as f64);
    }
}

/// One connection's budget, and the levels it counts against.
#[derive(Debug)]
pub(crate) struct ConnBudget {
    conn: Level,
    client: Arc<Level>,
    process: Arc<ProcessBudget>,
    /// What one request on this connection holds ([`REQUEST_COST`] or [`STREAM_COST`]).
    request_cost: usize,
}

impl ConnBudget {
    /// A budget of `limit` bytes for a connection of the client whose level is `client`,
    /// each request on it holding `request_cost` ([`REQUEST_COST`] or [`STREAM_COST`]).
    pub(crate) fn new(
        limit: usize,
        request_cost: usize,
        client: Arc<Level>,
        process: Arc<ProcessBudget>,
    ) -> Arc<ConnBudget> {
        Arc::new(ConnBudget { conn: Level::new(limit), client, process, request_cost })
    }

    /// `Ready` when a body on this connection may take another chunk.
    fn poll_room(&self, cx: &Context<'_>) -> Poll<()> {
        self.poll_levels(cx, Need::Bytes)
    }

    /// `Ready` when the levels have room for `need`: the connection's (for bytes), the
    /// client's, and under process-wide pressure the process's for a connection over its
    /// fair share. Otherwise the wait is registered with the full level and counted.
    fn poll_levels(&self, cx: &Context<'_>, need: Need) -> Poll<()> {
        let level = if need == Need::Bytes && self.conn.full(Need::Bytes) {
            (0, &self.conn)
        } else if self.client.full(need) {
            (1, &*self.client)
        } else if self.process.level.full(need) && self.conn.used() > FAIR_SHARE {
            (2, &self.process.level)
        } else {
            return Poll::Ready(());
        };
        let poll = level.1.wait(cx, need);
        if poll.is_pending() {
            self.process.waits[level.0].fetch_add(1, Ordering::Relaxed);
        }
        poll
    }

    /// Waits until the client (and, under pressure, the process) has room for one more
    /// request, and holds the connection's request cost of it until the returned hold is
    /// dropped.
    pub(crate) async fn request(self: &Arc<Self>) -> RequestHold {
        // Not the connection's own level: that counts answer bytes, and a request waiting
        // for them to drain would wait for its own connection.
        std::future::poll_fn(|cx| self.poll_levels(cx, Need::Request)).await;
        self.client.reserve(self.request_cost);
        self.process.level.reserve(self.request_cost);
        self.process.requests.fetch_add(1, Ordering::Relaxed);
        RequestHold { budget: Arc::clone(self) }
    }

    /// Answer bytes handed to hyper that the connection has not written yet.
    pub(crate) fn unwritten(&self) -> usize {
        self.conn.used()
    }

    /// `n` bytes were handed to hyper.
    fn charge(&self, n: usize) {
        self.conn.add(n);
        self.client.add(n);
        self.process.level.add(n);
    }

    /// The connection wrote `n` bytes to its TLS stream. Frame headers and other
    /// protocol bytes are written too, so at most what is buffered is credited.
    pub(crate) fn written(&self, n: usize) {
        let mut take = 0;
        let _ = self.conn.used.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
            take = used.min(n);
            Some(used - take)
        });
        if take > 0 {
            self.conn.wake_if_room();
            self.client.sub(take);
            self.process.level.sub(take);
        }
    }
}

impl Drop for ConnBudget {
    fn drop(&mut self) {
        // What a closed connection never wrote is freed with it.
        let left = self.conn.used();
        self.client.sub(left);
        self.process.level.sub(left);
    }
}

/// A request's share of its client's budget, given back when dropped.
#[derive(Debug)]
pub(crate) struct RequestHold {
    budget: Arc<ConnBudget>,
}

impl Drop for RequestHold {
    fn drop(&mut self) {
        self.budget.process.requests.fetch_sub(1, Ordering::Relaxed);
        self.budget.client.release(self.budget.request_cost);
        self.budget.process.level.release(self.budget.request_cost);
    }
}

/// A response body that takes its next chunk only when its connection's budget has
/// room (see the module docs); it keeps its request's hold until it ends.
#[derive(Debug)]
pub(crate) struct Budgeted<B> {
    inner: B,
    hold: RequestHold,
}

impl<B> Budgeted<B> {
    pub(crate) fn new(inner: B, hold: RequestHold) -> Budgeted<B> {
        Budgeted { inner, hold }
    }
}

impl<B: Body + Unpin> Body for Budgeted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let budget = &this.hold.budget;
        if budget.poll_room(cx).is_pending() {
            return Poll::Pending;
        }
        let frame = std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
            budget.charge(data.map_or(0, Buf::remaining));
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::task::Wake;

    use super::*;

    struct Flag(AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    fn budget(conn: usize, client: usize, total: usize) -> (Arc<ConnBudget>, Arc<Level>, Arc<ProcessBudget>) {
        let client = Arc::new(Level::new(client));
        let process = ProcessBudget::new(total);
        (ConnBudget::new(conn, REQUEST_COST, Arc::clone(&client), Arc::clone(&process)), client, process)
    }

    #[test]
    fn a_full_connection_waits_until_it_writes() {
        let (conn, client, process) = budget(100, 1000, 10_000);
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let cx = Context::from_waker(&waker);
        conn.charge(150);
        assert!(conn.poll_room(&cx).is_pending(), "over its own limit");
        assert_eq!((client.used(), process.level.used()), (150, 150));
        conn.written(40);
        assert!(!flag.0.load(Ordering::SeqCst), "still at 110 of 100");
        conn.written(500);
        assert!(flag.0.load(Ordering::SeqCst), "woken once under the limit");
        assert_eq!(
            (conn.conn.used(), client.used(), process.level.used()),
            (0, 0, 0),
            "credited at most what was charged"
        );
        assert!(conn.poll_room(&cx).is_ready());
    }

    #[test]
    fn answers_move_while_the_client_is_full_of_requests_and_new_requests_wait() {
        let (conn, client, process) = budget(1 << 20, 4 * REQUEST_COST, 1 << 30);
        let cx = Context::from_waker(Waker::noop());
        let holds: Vec<RequestHold> = (0..4)
            .map(|_| {
                let mut request = std::pin::pin!(conn.request());
                match request.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
                    Poll::Ready(hold) => hold,
                    Poll::Pending => panic!("room for four requests"),
                }
            })
            .collect();
        assert_eq!(client.reserved(), 4 * REQUEST_COST);
        let mut fifth = std::pin::pin!(conn.request());
        assert!(fifth.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_pending(), "the fifth waits");
        assert!(conn.poll_room(&cx).is_ready(), "the four requests' answers still move");
        drop(holds);
        assert_eq!((client.reserved(), process.level.reserved()), (0, 0));
        assert!(fifth.as_mut().poll(&mut Context::from_waker(Waker::noop())).is_ready(), "room again");
    }

    #[test]
    fn a_client_over_its_budget_waits_on_every_connection() {
        let (first, client, process) = budget(100, 150, 10_000);
        let second = ConnBudget::new(100, REQUEST_COST, Arc::clone(&client), Arc::clone(&process));
        let waker = Waker::noop();
        let cx = Context::from_waker(waker);
        first.charge(90);
        second.charge(90);
        assert!(first.poll_room(&cx).is_pending() && second.poll_room(&cx).is_pending());
        drop(second);
        assert_eq!(client.used(), 90, "a closed connection gives its bytes back");
        assert!(first.poll_room(&cx).is_ready());
    }

    #[test]
    fn under_process_pressure_only_connections_over_their_fair_share_wait() {
        let (hog, client, process) = budget(usize::MAX, usize::MAX, FAIR_SHARE * 2);
        let reader = ConnBudget::new(usize::MAX, REQUEST_COST, client, Arc::clone(&process));
        let cx = Context::from_waker(Waker::noop());
        hog.charge(FAIR_SHARE * 2);
        reader.charge(1000);
        assert!(hog.poll_room(&cx).is_pending(), "the connection holding the bytes waits");
        assert!(reader.poll_room(&cx).is_ready(), "a connection that reads goes on");
        assert_eq!(process.waits[2].load(Ordering::Relaxed), 1);
    }
}
