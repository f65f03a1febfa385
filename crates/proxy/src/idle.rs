//! `timeouts.idle`: a client connection on which no byte moved in either direction for
//! that long is closed. This covers HTTP/2 connections (hyper has no idle timeout for
//! them) and quiet HTTP/1.1 bodies; an idle HTTP/1.1 keep-alive connection is already
//! closed sooner by `timeouts.request_header`, which hyper starts when it goes idle.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Instant;

use crate::budget::ConnBudget;

/// When bytes last moved, shared between the stream and its watchdog.
#[derive(Debug)]
pub(crate) struct Activity {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    /// Activity starting now.
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity { origin: Instant::now(), last_ms: AtomicU64::new(0) })
    }

    fn touch(&self) {
        let ms = self.origin.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long nothing has moved.
    pub(crate) fn idle_for(&self) -> Duration {
        let now = self.origin.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.last_ms.load(Ordering::Relaxed)))
    }
}

/// A stream that records activity on every successful read or write, and credits
/// what it writes to the connection's memory budget.
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
    budget: Option<Arc<ConnBudget>>,
}

impl<S> Tracked<S> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity, budget: None }
    }

    /// Credits every write to `budget` (the HTTP stage's answers).
    pub(crate) fn crediting(mut self, budget: Arc<ConnBudget>) -> Tracked<S> {
        self.budget = Some(budget);
        self
    }

    fn wrote(&self, res: &Poll<io::Result<usize>>) {
        if let Poll::Ready(Ok(n)) = res
            && *n > 0
        {
            self.activity.touch();
            if let Some(budget) = &self.budget {
                budget.written(*n);
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let res = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(res, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        res
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write(cx, data);
        self.wrote(&res);
        res
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let res = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        self.wrote(&res);
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Resolves once `activity` has been idle for `limit` (checked a few times per limit).
pub(crate) async fn expired(activity: &Activity, limit: Duration) {
    let step = (limit / 4).max(Duration::from_millis(50));
    loop {
        let idle = activity.idle_for();
        if idle >= limit {
            return;
        }
        tokio::time::sleep((limit - idle).min(step)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn activity_postpones_expiry() {
        let (a, mut b) = tokio::io::duplex(64);
        let activity = Activity::new();
        let mut tracked = Tracked::new(a, Arc::clone(&activity));
        tokio::time::advance(Duration::from_secs(3)).await;
        tracked.write_all(b"x").await.expect("write");
        let mut one = [0u8; 1];
        b.read_exact(&mut one).await.expect("read");
        assert!(activity.idle_for() < Duration::from_secs(1));
        let limit = Duration::from_secs(10);
        let started = Instant::now();
        expired(&activity, limit).await;
        assert!(started.elapsed() >= Duration::from_secs(9), "expiry counts from the last byte");
    }
}
