//! Write coalescing for HTTP/2 client connections: one TLS write per connection poll.
//!
//! The h2 crate flushes its I/O after every DATA frame it cannot copy into its own
//! buffer (payloads of 256 bytes and more are chained, and a chained frame must reach
//! the I/O before the next frame is encoded). Over TLS every flush became a TLS record
//! and a system call per response: 16 streams finishing together on one connection
//! cost 16 records and 16 `writev` calls instead of one.
//!
//! Two halves share one buffer:
//! - [`Coalesced`] is the stream hyper writes to. Writes go into the buffer and
//!   `poll_flush` only notes that bytes are owed;
//! - [`Batched`] wraps the connection future and, at the end of each of its polls,
//!   writes everything owed to the TLS stream and flushes it. During one poll h2 sends
//!   every frame that is ready on every stream, so they leave together.
//!
//! Back-pressure is kept: a buffer over [`HIGH_WATER`] is written out before more is
//! accepted, and a full socket makes both halves wait (the connection task is woken
//! when the socket is writable again). `poll_shutdown` writes everything first.
//!
//! The buffer is also where the router can speak HTTP/2 itself: it follows the frame
//! boundaries of what h2 writes, and when the connection's [`ResetDebt`] trips it
//! appends `GOAWAY ENHANCE_YOUR_CALM` after h2's last complete frame, sends it, and
//! fails every later read and write so that hyper ends the connection.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::calm::ResetDebt;

/// Buffered bytes above which a write first sends what is buffered.
pub(crate) const HIGH_WATER: usize = 64 * 1024;

/// A buffer whose capacity grew beyond this is released after it was sent, so an
/// idle connection does not keep it.
const KEEP_CAPACITY: usize = 16 * 1024;

/// The stream and its pending bytes, shared by [`Coalesced`] and [`Batched`] (both
/// are polled by the same task, so the lock is never contended).
#[derive(Debug)]
struct Shared<S> {
    inner: S,
    buf: Vec<u8>,
    /// How much of `buf` was already written to `inner`.
    sent: usize,
    /// A flush was asked for since the last one reached `inner`.
    owed: bool,
    /// A write error met by [`Batched`], reported on hyper's next write or flush.
    failed: Option<io::Error>,
    /// Where h2's frames begin and end in what it wrote.
    frames: Frames,
    /// When to send `GOAWAY ENHANCE_YOUR_CALM`.
    debt: Arc<ResetDebt>,
    calm: Calm,
}

/// How far the `GOAWAY ENHANCE_YOUR_CALM` of a tripped connection got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calm {
    /// Not tripped.
    No,
    /// In the buffer: h2 may write no more.
    Queued,
    /// Sent: every read and write fails.
    Sent,
}

/// Follows the frames h2 writes (a 9-byte header, then the payload it announces).
#[derive(Debug, Default)]
struct Frames {
    head: [u8; 9],
    head_len: usize,
    /// Payload bytes of the current frame still to come.
    left: usize,
    /// The highest stream a HEADERS frame was sent on: the last stream processed.
    last_stream: u32,
}

impl Frames {
    const HEADERS: u8 = 0x1;

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (9 - self.head_len).min(data.len());
            self.head[self.head_len..self.head_len + n].copy_from_slice(&data[..n]);
            self.head_len += n;
            data = &data[n..];
            if self.head_len == 9 {
                let h = self.head;
                self.left = usize::from(h[0]) << 16 | usize::from(h[1]) << 8 | usize::from(h[2]);
                let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
                if h[3] == Self::HEADERS {
                    self.last_stream = self.last_stream.max(stream);
                }
                self.head_len = 0;
            }
        }
    }

    fn at_boundary(&self) -> bool {
        self.left == 0 && self.head_len == 0
    }

    /// `GOAWAY` (RFC 9113 §6.8) with `ENHANCE_YOUR_CALM` and a reason for the client's logs.
    fn goaway(&self) -> Vec<u8> {
        const DEBUG: &[u8] = b"too_many_resets";
        const ENHANCE_YOUR_CALM: u32 = 0xb;
        let len = 8 + DEBUG.len();
        let mut frame = vec![0, 0, len as u8, 0x7, 0, 0, 0, 0, 0];
        frame.extend_from_slice(&self.last_stream.to_be_bytes());
        frame.extend_from_slice(&ENHANCE_YOUR_CALM.to_be_bytes());
        frame.extend_from_slice(DEBUG);
        frame
    }
}

fn calmed() -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, "sent GOAWAY ENHANCE_YOUR_CALM: too many streams reset")
}

impl<S: AsyncWrite + Unpin> Shared<S> {
    /// Writes everything buffered to `inner`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.buf.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.buf[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        if self.buf.capacity() > KEEP_CAPACITY {
            self.buf = Vec::new();
        } else {
            self.buf.clear();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Writes everything buffered and flushes `inner`.
    fn poll_send_and_flush(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_send(cx))?;
        self.owed = false;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    /// Makes room before accepting more bytes.
    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Some(e) = self.failed.take() {
            return Poll::Ready(Err(e));
        }
        if self.calm != Calm::No {
            return Poll::Ready(Err(calmed()));
        }
        if self.buf.len() >= HIGH_WATER {
            ready!(self.poll_send(cx))?;
        }
        Poll::Ready(Ok(()))
    }
}

/// Creates the two halves over `inner`: the stream to give hyper, and the wrapper for
/// the connection future that hyper returns for it; `debt` says when to send GOAWAY.
pub(crate) fn wrap<S>(inner: S, debt: Arc<ResetDebt>) -> (Coalesced<S>, Flusher<S>) {
    let shared = Arc::new(Mutex::new(Shared {
        inner,
        buf: Vec::new(),
        sent: 0,
        owed: false,
        failed: None,
        frames: Frames::default(),
        debt,
        calm: Calm::No,
    }));
    (Coalesced { shared: Arc::clone(&shared) }, Flusher { shared })
}

fn lock<S>(shared: &Mutex<Shared<S>>) -> MutexGuard<'_, Shared<S>> {
    shared.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The stream half: what hyper reads from and writes to (see the module docs).
#[derive(Debug)]
pub(crate) struct Coalesced<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

/// The flushing half, to be turned into a [`Batched`] around the connection future.
#[derive(Debug)]
pub(crate) struct Flusher<S> {
    shared: Arc<Mutex<Shared<S>>>,
}

impl<S> Flusher<S> {
    /// Drives `conn`, the connection served over this flusher's [`Coalesced`] stream.
    pub(crate) fn drive<F>(self, conn: F) -> Batched<F, S> {
        Batched { inner: conn, shared: self.shared }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Coalesced<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        if shared.calm == Calm::Sent {
            return Poll::Ready(Err(calmed()));
        }
        Pin::new(&mut shared.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Coalesced<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_room(cx))?;
        shared.buf.extend_from_slice(data);
        shared.frames.feed(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_room(cx))?;
        let mut n = 0;
        for b in bufs {
            shared.buf.extend_from_slice(b);
            shared.frames.feed(b);
            n += b.len();
        }
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        if let Some(e) = shared.failed.take() {
            return Poll::Ready(Err(e));
        }
        // Sent by `Batched` when this poll of the connection ends.
        shared.owed = true;
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut shared = lock(&self.shared);
        ready!(shared.poll_send_and_flush(cx))?;
        Pin::new(&mut shared.inner).poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A connection future whose [`Coalesced`] stream is flushed at the end of every
    /// poll (see the module docs).
    #[derive(Debug)]
    pub struct Batched<F, S> {
        #[pin]
        inner: F,
        shared: Arc<Mutex<Shared<S>>>,
    }
}

impl<F: Future, S: AsyncWrite + Unpin> Future for Batched<F, S> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let out = this.inner.poll(cx);
        let mut shared = lock(this.shared);
        shared.debt.register(cx);
        if shared.calm == Calm::No && shared.debt.tripped() && shared.frames.at_boundary() {
            let goaway = shared.frames.goaway();
            shared.buf.extend_from_slice(&goaway);
            shared.calm = Calm::Queued;
            shared.owed = true;
        }
        if shared.owed {
            // Pending: the socket wakes this task when it can take more.
            if let Poll::Ready(Err(e)) = shared.poll_send_and_flush(cx) {
                shared.failed = Some(e);
                if out.is_pending() {
                    // Let hyper see the error on its next write.
                    cx.waker().wake_by_ref();
                }
            }
        }
        if shared.calm == Calm::Queued && !shared.owed {
            // The GOAWAY is out: hyper ends on its next read or write.
            shared.calm = Calm::Sent;
            cx.waker().wake_by_ref();
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Counts the writes that reach the inner stream.
    struct Counting {
        writes: usize,
        data: Vec<u8>,
    }

    impl AsyncWrite for Counting {
        fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
            self.writes += 1;
            self.data.extend_from_slice(data);
            Poll::Ready(Ok(data.len()))
        }
        fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn writes_and_flushes_of_one_poll_leave_as_one_write_at_its_end() {
        let (mut io, flusher) = wrap(Counting { writes: 0, data: Vec::new() }, ResetDebt::new());
        let mut polls = 0;
        // One "connection poll" that writes and flushes three frames, as h2 does.
        let conn = std::future::poll_fn(|cx| {
            polls += 1;
            let mut io = Pin::new(&mut io);
            let before = lock(&io.shared).inner.writes;
            for frame in [&b"one"[..], b"two", b"three"] {
                assert!(io.as_mut().poll_write(cx, frame).is_ready());
                assert!(io.as_mut().poll_flush(cx).is_ready());
            }
            assert_eq!(lock(&io.shared).inner.writes, before, "nothing is written during the poll");
            if polls == 1 { Poll::Pending } else { Poll::Ready(()) }
        });
        let mut batched = std::pin::pin!(flusher.drive(conn));
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(batched.as_mut().poll(&mut cx).is_pending());
        let shared = Arc::clone(&batched.shared);
        assert_eq!(lock(&shared).inner.writes, 1, "one write at the end of the poll");
        assert_eq!(lock(&shared).inner.data, b"onetwothree");
        assert!(batched.as_mut().poll(&mut cx).is_ready());
        assert_eq!(lock(&shared).inner.writes, 2, "one write per poll");
    }

    #[tokio::test]
    async fn a_write_error_reaches_hyper_on_its_next_write() {
        struct Broken;
        impl AsyncWrite for Broken {
            fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, _: &[u8]) -> Poll<io::Result<usize>> {
                Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()))
            }
            fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
            fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
                Poll::Ready(Ok(()))
            }
        }
        let (mut io, flusher) = wrap(Broken, ResetDebt::new());
        let mut first = true;
        let conn = std::future::poll_fn(move |cx| {
            let mut io = Pin::new(&mut io);
            if first {
                first = false;
                assert!(matches!(io.as_mut().poll_write(cx, b"x"), Poll::Ready(Ok(1))));
                assert!(matches!(io.as_mut().poll_flush(cx), Poll::Ready(Ok(()))));
                return Poll::Pending;
            }
            match io.as_mut().poll_write(cx, b"y") {
                Poll::Ready(Err(e)) => Poll::Ready(e.kind()),
                other => panic!("expected the broken pipe, got {other:?}"),
            }
        });
        let kind = tokio::time::timeout(std::time::Duration::from_secs(5), flusher.drive(conn)).await.expect("woken");
        assert_eq!(kind, io::ErrorKind::BrokenPipe);
    }

    #[tokio::test]
    async fn a_tripped_connection_gets_goaway_after_h2s_last_whole_frame() {
        use std::task::Waker;
        let debt = ResetDebt::new();
        let (mut io, flusher) = wrap(Counting { writes: 0, data: Vec::new() }, Arc::clone(&debt));
        // HEADERS on stream 5 (3 bytes of payload), then the first half of a DATA frame.
        let headers = [0, 0, 3, 0x1, 0x4, 0, 0, 0, 5, 1, 2, 3];
        let data_head = [0, 0, 4, 0x0, 0x0, 0, 0, 0, 5, 9, 9];
        let mut step = 0;
        let conn = std::future::poll_fn(|cx| {
            let mut io = Pin::new(&mut io);
            let chunk: &[u8] = match step {
                0 => &headers,
                1 => &data_head,
                2 => &[9, 9],
                _ => return io.as_mut().poll_write(cx, b"more").map(|r| r.map(|_| ())),
            };
            step += 1;
            assert!(io.as_mut().poll_write(cx, chunk).is_ready());
            assert!(io.as_mut().poll_flush(cx).is_ready());
            Poll::Pending
        });
        let mut batched = std::pin::pin!(flusher.drive(conn));
        let mut cx = Context::from_waker(Waker::noop());
        assert!(batched.as_mut().poll(&mut cx).is_pending());
        for _ in 0..=crate::calm::CALM_AFTER {
            drop(crate::calm::Answering::new(Arc::clone(&debt)));
        }
        assert!(debt.tripped());
        assert!(batched.as_mut().poll(&mut cx).is_pending(), "mid-frame: no GOAWAY yet");
        let shared = Arc::clone(&batched.shared);
        assert_eq!(lock(&shared).inner.data.len(), headers.len() + data_head.len());
        assert!(batched.as_mut().poll(&mut cx).is_pending(), "the frame completes, then GOAWAY");
        let sent = lock(&shared).inner.data.clone();
        let goaway = &sent[headers.len() + data_head.len() + 2..];
        assert_eq!(&goaway[3..5], &[0x7, 0], "a GOAWAY frame");
        assert_eq!(&goaway[9..13], &5u32.to_be_bytes(), "last stream: the last one answered");
        assert_eq!(&goaway[13..17], &0xbu32.to_be_bytes(), "ENHANCE_YOUR_CALM");
        let end = batched.as_mut().poll(&mut cx);
        assert!(matches!(end, Poll::Ready(Err(ref e)) if e.kind() == io::ErrorKind::ConnectionAborted), "{end:?}");
    }

    #[tokio::test]
    async fn shutdown_writes_what_is_buffered_and_big_buffers_are_written_early() {
        let (a, mut b) = tokio::io::duplex(1 << 20);
        let (mut io, _flusher) = wrap(a, ResetDebt::new());
        let big = vec![7u8; HIGH_WATER + 10];
        io.write_all(&big).await.expect("write");
        io.write_all(b"tail").await.expect("write");
        assert_eq!(
            lock(&io.shared).buf.len(),
            4,
            "the buffer over the high-water mark was sent before more was accepted"
        );
        io.shutdown().await.expect("shutdown");
        let mut got = Vec::new();
        b.read_to_end(&mut got).await.expect("read");
        assert_eq!(got.len(), HIGH_WATER + 14);
        assert!(got.ends_with(b"tail"));
    }
}
