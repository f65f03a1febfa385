//! Talking to upstreams: a connector for `http://` and `https://` backends, the pooled
//! clients built on it, and the request body type sent upstream (the client's body,
//! streamed and optionally size-limited, or nothing).
//!
//! `https://` upstreams are verified against the Mozilla roots from `webpki-roots`
//! (already in the tree for the control-API client; no dependency on the host's
//! `/etc/ssl`, which a NixOS sandbox or a minimal container may not have). A service
//! with `insecure_skip_verify = true` uses a second client whose verifier accepts any
//! certificate (signatures are still checked), like Caddy's `tls_insecure_skip_verify`.
//! The two clients keep separate connection pools, so a verified and an unverified
//! service never share a connection to the same address.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::uri::Authority;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsConnector;

/// Boxed error used by the connector.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The pooled client type used for upstreams and forward-auth servers.
pub type UpstreamClient = Client<Connector, UpstreamBody>;

/// Builds the connector for upstreams; `insecure` skips certificate verification of
/// `https://` upstreams.
pub fn connector(connect_timeout: Duration, insecure: bool) -> Result<Connector, rustls::Error> {
    let mut http = HttpConnector::new();
    http.set_connect_timeout(Some(connect_timeout));
    http.set_nodelay(true);
    http.enforce_http(false);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(Arc::clone(&provider)).with_safe_default_protocol_versions()?;
    let mut tls = if insecure {
        builder.dangerous().with_custom_certificate_verifier(Arc::new(AcceptAny(provider))).with_no_client_auth()
    } else {
        let mut roots = RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    // Requests go upstream as HTTP/1.1 (WebSocket upgrades need it).
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Connector { http, tls: TlsConnector::from(Arc::new(tls)) })
}

/// The most read from an upstream connection at once; a response head still incomplete
/// after this many bytes is refused (hyper uses one buffer for both; a head that
/// arrives in one read may be larger). hyper's default lets the
/// buffer grow to ~400 KiB per connection while a large body streams, which is what the
/// 1 MiB benchmark's peak RSS was made of; with 64 KiB that peak fell from 15–16 to
/// 10 MiB with no measurable CPU cost (docs/benchmarks.md §1). nginx refuses upstream
/// heads over 4–8 KiB by default (`proxy_buffer_size`).
pub const MAX_UPSTREAM_READ: usize = 64 * 1024;

/// A keep-alive connection pool over `connector` keeping at most `max_idle`
/// connections per upstream. Pools are per thread (see `Forwarder`): a pooled
/// connection is driven by a task on the thread that opened it.
pub fn pool(connector: Connector, max_idle: usize) -> UpstreamClient {
    Client::builder(TokioExecutor::new())
        .http1_max_buf_size(MAX_UPSTREAM_READ)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(max_idle)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .set_host(false)
        .build(connector)
}

/// One thread's upstream connection slots: at most `per_upstream` requests in flight
/// to one upstream address (`limits.max_upstream_connections`). The pool opens a
/// connection per concurrent request, so without a bound 32 HTTP/2 clients with 16
/// streams each would open 512 upstream connections (and keep their buffers); with
/// it, requests over the bound wait for a connection to become idle. A slot is held
/// until the response body has ended, when the connection is back in the pool
/// ([`ProxyBody::Upstream`](crate::body::ProxyBody)). The bound is per thread because
/// the pools are: a client connection, with all its HTTP/2 streams, stays on one
/// thread, so it always has the whole bound, however many cores the machine has.
#[derive(Debug)]
pub struct Slots {
    per_upstream: usize,
    /// By address, then indexed by `insecure_skip_verify` (separate pools, separate
    /// connections).
    by_upstream: Mutex<HashMap<Authority, [Arc<Semaphore>; 2]>>,
}

impl Slots {
    /// `per_upstream` slots (at least 1) for every upstream address.
    pub fn new(per_upstream: usize) -> Slots {
        Slots { per_upstream: per_upstream.max(1), by_upstream: Mutex::new(HashMap::new()) }
    }

    /// Waits for a free slot to `upstream`. `None` only if the semaphore was closed,
    /// which never happens: the request then goes ahead without a slot.
    pub async fn acquire(&self, upstream: &Authority, insecure: bool) -> Option<OwnedSemaphorePermit> {
        let semaphore = {
            // Only this thread uses these slots: the lock is never contended.
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
pub struct Connector {
    http: HttpConnector,
    tls: TlsConnector,
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
        Box::pin(async move {
            let tcp = tcp.await?;
            if !https {
                return Ok(MaybeTls::Plain(tcp));
            }
            let name = ServerName::try_from(host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("TLS server name {host:?}: {e}")))?;
            let stream = tls.connect(name, tcp.into_inner()).await?;
            Ok(MaybeTls::Tls(Box::new(TokioIo::new(stream))))
        })
    }
}

/// A plain or TLS connection to an upstream.
pub enum MaybeTls {
    /// `http://`.
    Plain(TokioIo<TcpStream>),
    /// `https://`.
    Tls(Box<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>>),
}

impl Connection for MaybeTls {
    fn connected(&self) -> Connected {
        match self {
            MaybeTls::Plain(s) => s.connected(),
            MaybeTls::Tls(s) => s.inner().get_ref().0.connected(),
        }
    }
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

/// Accepts any server certificate (`insecure_skip_verify`); handshake signatures are
/// still verified, so the connection is encrypted to whoever holds the key.
#[derive(Debug)]
struct AcceptAny(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AcceptAny {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Why the body sent upstream stopped.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Reading the client's body failed.
    #[error("reading the client's request body failed: {0}")]
    Client(#[from] hyper::Error),
    /// The client sent more than `max_body_bytes`.
    #[error("request body larger than max_body_bytes ({limit} bytes)")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
}

/// The body of a request sent upstream.
#[derive(Debug)]
pub enum UpstreamBody {
    /// No body (forward-auth checks).
    Empty,
    /// The client's body, streamed frame by frame and counted against a limit.
    Client(LimitedBody),
}

/// A client body with an optional size limit, checked as frames pass (never buffered).
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    limit: Option<u64>,
    seen: u64,
    exceeded: Arc<AtomicBool>,
}

impl LimitedBody {
    /// Wraps `inner`; `exceeded` turns true when more than `limit` bytes arrived.
    pub fn new(inner: Incoming, limit: Option<u64>, exceeded: Arc<AtomicBool>) -> LimitedBody {
        LimitedBody { inner, limit, seen: 0, exceeded }
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
                if let (Some(data), Some(limit)) = (frame.data_ref(), body.limit) {
                    body.seen = body.seen.saturating_add(data.len() as u64);
                    if body.seen > limit {
                        body.exceeded.store(true, Ordering::Relaxed);
                        return Poll::Ready(Some(Err(BodyError::TooLarge { limit })));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
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
pub fn tls_cause<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(io) = err.downcast_ref::<io::Error>()
            && let Some(inner) = io.get_ref()
            && let Some(tls) = inner.downcast_ref::<rustls::Error>()
        {
            return Some(tls);
        }
        source = err.source();
    }
    None
}
