//! Talking to upstreams: a connector for `http://` and `https://` backends (the pool
//! built on it is `pool.rs`), the opt-in cap on requests in flight, and the request
//! body type sent upstream (the client's body, streamed and optionally size-limited, or
//! nothing).
//!
//! `https://` upstreams are verified against the Mozilla roots (`snirouter_tls::Trust`;
//! no dependency on the host's `/etc/ssl`). A service with `insecure_skip_verify = true`
//! uses a second client that accepts any certificate (signatures are still checked),
//! like Caddy's `tls_insecure_skip_verify`.
//! The two clients keep separate connection pools, so a verified and an unverified
//! service never share a connection to the same address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::uri::Authority;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use snirouter_tls::Trust;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

use crate::stall::Stall;

/// Boxed error used by the connector.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Builds the connector for upstreams; `insecure` skips certificate verification of
/// `https://` upstreams. `connect_timeout` bounds the TCP connect and the TLS
/// handshake together (`timeouts.upstream_connect`).
pub(crate) fn connector(connect_timeout: Duration, insecure: bool) -> Result<Connector, rustls::Error> {
    let mut http = HttpConnector::new();
    http.set_nodelay(true);
    http.enforce_http(false);
    let trust = if insecure { Trust::AnyCertificate } else { Trust::MozillaRoots };
    // Requests go upstream as HTTP/1.1 (WebSocket upgrades need it).
    let tls = snirouter_tls::client_config(trust, &[b"http/1.1"])?;
    Ok(Connector { http, tls: TlsConnector::from(Arc::new(tls)), connect_timeout })
}

/// The most read from an upstream connection at once; a response head still incomplete
/// after this many bytes is refused (hyper uses one buffer for both; a head that
/// arrives in one read may be larger). hyper's default lets the
/// buffer grow to ~400 KiB per connection while a large body streams, which is what the
/// 1 MiB benchmark's peak RSS was made of; with 64 KiB that peak fell from 15–16 to
/// 10 MiB with no measurable CPU cost (docs/benchmarks.md §1). nginx refuses upstream
/// heads over 4–8 KiB by default (`proxy_buffer_size`).
pub(crate) const MAX_UPSTREAM_READ: usize = 64 * 1024;

/// The opt-in cap `limits.max_upstream_connections`: at most `per_upstream` requests
/// in flight to one upstream address across the router (so at most that many busy
/// connections to it). A slot is held until the response body has ended
/// ([`ProxyBody::Upstream`](crate::body::ProxyBody)) and freed when a WebSocket is
/// upgraded; requests over the cap wait for one.
#[derive(Debug)]
pub(crate) struct Slots {
    per_upstream: usize,
    /// By address, then indexed by `insecure_skip_verify` (separate pools, separate
    /// connections).
    by_upstream: Mutex<HashMap<Authority, [Arc<Semaphore>; 2]>>,
}

impl Slots {
    /// `per_upstream` slots (at least 1) for every upstream address.
    pub(crate) fn new(per_upstream: usize) -> Slots {
        Slots { per_upstream: per_upstream.max(1), by_upstream: Mutex::new(HashMap::new()) }
    }

    /// The cap.
    pub(crate) fn per_upstream(&self) -> usize {
        self.per_upstream
    }

    /// Waits for a free slot to `upstream`. `None` only if the semaphore was closed,
    /// which never happens: the request then goes ahead without a slot.
    pub(crate) async fn acquire(&self, upstream: &Authority, insecure: bool) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            let mut map = self.by_upstream.lock().unwrap_or_else(PoisonError::into_inner);
            // Looked up by reference: the address is cloned once per upstream, not per request.
            let pair = match map.get(upstream) {
                Some(pair) => pair,
                None => {
                    let new = || Arc::new(Semaphore::new(self.per_upstream));
                    map.entry(upstream.clone()).or_insert_with(|| [new(), new()])
                }
            };
            Arc::clone(&pair[usize::from(insecure)])
        };
        semaphore.acquire_owned().await.ok()
    }
}

/// TCP, plus TLS for `https://` URIs.
#[derive(Clone)]
pub(crate) struct Connector {
    http: HttpConnector,
    tls: TlsConnector,
    connect_timeout: Duration,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector").finish_non_exhaustive()
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = MaybeTls;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<MaybeTls, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let https = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
        let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_owned();
        let tcp = self.http.call(uri);
        let tls = self.tls.clone();
        let limit = self.connect_timeout;
        let connect = async move {
            let tcp = tcp.await?;
            if !https {
                return Ok(MaybeTls::Plain(tcp));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {host:?}: {e}")))?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(MaybeTls::Tls(Box::new(TokioIo::new(stream))))
        };
        Box::pin(async move {
            match tokio::time::timeout(limit, connect).await {
                Ok(result) => result,
                Err(_) => Err(Box::new(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("connect and TLS handshake took longer than {}s", limit.as_secs_f64()),
                )) as BoxError),
            }
        })
    }
}

/// A plain or TLS connection to an upstream.
pub(crate) enum MaybeTls {
    /// `http://`.
    Plain(TokioIo<TcpStream>),
    /// `https://`.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl hyper::rt::Read for MaybeTls {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for MaybeTls {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_write(cx, data),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTls::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTls::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Why the body sent upstream stopped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BodyError {
    /// Reading the client's body failed.
    #[error("reading the client's request body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client sent more than `max_body_bytes`.
    #[error("request body larger than max_body_bytes ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The client stopped sending its body.
    #[error("the client stopped sending its request body: {0}")]
    Stalled(#[from] crate::stall::Stalled),
}

/// The body of a request sent upstream.
#[derive(Debug)]
pub(crate) enum UpstreamBody {
    /// No body (forward-auth checks, requests without one).
    Empty,
    /// The client's body, streamed frame by frame and counted against a limit. Boxed:
    /// hyper queues requests in blocks of 32 per upstream connection, so every byte of
    /// this type is paid 64 times per pooled connection.
    Client(Box<LimitedBody>),
}

impl UpstreamBody {
    /// The client's body `inner` as sent upstream (at most `limit` bytes, no pause
    /// longer than `idle`), and its progress; a request without a body is sent as
    /// [`UpstreamBody::Empty`] and has none to follow.
    pub(crate) fn from_client(
        inner: Incoming,
        limit: Option<u64>,
        idle: Duration,
    ) -> (UpstreamBody, Option<Arc<BodyProgress>>) {
        if inner.is_end_stream() {
            return (UpstreamBody::Empty, None);
        }
        let progress = Arc::new(BodyProgress::default());
        let body = LimitedBody { inner, limit, seen: 0, stall: Stall::new(idle), progress: Arc::clone(&progress) };
        (UpstreamBody::Client(Box::new(body)), Some(progress))
    }
}

/// What stopped a request body before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BodyFailure {
    /// More than `max_body_bytes` arrived.
    TooLarge,
    /// The client sent nothing for `timeouts.idle`.
    Stalled,
}

/// How far the request body got, shared between [`LimitedBody`] and the forwarder:
/// the wait for the response head starts once the body has been sent, and a failed
/// request is answered by what stopped its body.
#[derive(Debug, Default)]
pub(crate) struct BodyProgress {
    finished: AtomicBool,
    sent: Notify,
    /// 0 while the body has not failed, else 1 + the [`BodyFailure`] discriminant.
    failure: AtomicU8,
}

impl BodyProgress {
    /// Resolves once the whole body has been handed to the upstream connection (or the
    /// body was dropped).
    pub(crate) async fn sent(&self) {
        if !self.finished.load(Ordering::Acquire) {
            // `notify_one` keeps a permit when nobody waits yet: no lost wake-up.
            self.sent.notified().await;
        }
    }

    /// Why the body stopped early, if it did.
    pub(crate) fn failure(&self) -> Option<BodyFailure> {
        match self.failure.load(Ordering::Relaxed) {
            1 => Some(BodyFailure::TooLarge),
            2 => Some(BodyFailure::Stalled),
            _ => None,
        }
    }

    fn finish(&self) {
        if !self.finished.swap(true, Ordering::AcqRel) {
            self.sent.notify_one();
        }
    }

    fn fail(&self, why: BodyFailure) {
        let code = match why {
            BodyFailure::TooLarge => 1,
            BodyFailure::Stalled => 2,
        };
        self.failure.store(code, Ordering::Relaxed);
    }
}

/// A client body with an optional size limit, checked as frames pass (never buffered),
/// and the per-read bound `timeouts.idle`; made by [`UpstreamBody::from_client`].
#[derive(Debug)]
pub(crate) struct LimitedBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    stall: Stall,
    progress: Arc<BodyProgress>,
}

impl LimitedBody {
    fn on_data(&mut self, len: usize) -> Result<(), BodyError> {
        self.stall.moved();
        self.seen = self.seen.saturating_add(len as u64);
        match self.limit {
            Some(limit) if self.seen > limit => {
                self.progress.fail(BodyFailure::TooLarge);
                Err(BodyError::TooLarge { limit })
            }
            _ => Ok(()),
        }
    }
}

impl Drop for LimitedBody {
    fn drop(&mut self) {
        // hyper drops the body once it has written all of it.
        self.progress.finish();
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let body = match self.get_mut() {
            UpstreamBody::Empty => return Poll::Ready(None),
            UpstreamBody::Client(b) => b,
        };
        match Pin::new(&mut body.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && let Err(e) = body.on_data(data.len())
                {
                    return Poll::Ready(Some(Err(e)));
                }
                if body.inner.is_end_stream() {
                    body.progress.finish();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => {
                body.progress.finish();
                Poll::Ready(None)
            }
            Poll::Pending => match body.stall.poll_check(cx) {
                Ok(()) => Poll::Pending,
                Err(stalled) => {
                    body.progress.fail(BodyFailure::Stalled);
                    Poll::Ready(Some(Err(stalled.into())))
                }
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            UpstreamBody::Empty => true,
            UpstreamBody::Client(b) => b.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            UpstreamBody::Empty => SizeHint::with_exact(0),
            UpstreamBody::Client(b) => b.inner.size_hint(),
        }
    }
}

/// The TLS error behind an upstream failure, if the failure was a TLS handshake.
pub(crate) fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    cause::<rustls::Error>(e)
}

/// The first `T` in `e`'s chain of sources, looking inside `io::Error`s too (whose
/// `source` skips the error they wrap).
pub(crate) fn cause<'a, T: std::error::Error + 'static>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a T> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(found) = inner.downcast_ref::<T>()
        {
            return Some(found);
        }
        source = err.source();
    }
    None
}
