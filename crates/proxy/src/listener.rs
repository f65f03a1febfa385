//! Listeners and the per-connection pipeline: accept → PROXY header → ClientHello →
//! TLS handshake → HTTP.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use snirouter_certs::{CertStore, Lookup};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::StartHandshake;

use crate::admit::{Admission, Counted};
use crate::conn_info::ConnInfo;
use crate::forward::Forwarder;
use crate::metrics::{AccessRecord, ConnectionLimit, HandshakeFailure as Hf, MeteredBody, Metrics};
use crate::options::ProxyOptions;
use crate::routes::RouteTable;
use crate::tls::ServerTls;
use crate::workers::Workers;
use crate::{coalesce, hello, idle, proxy_header};

/// `[::]` listeners see IPv4 clients as `::ffff:a.b.c.d`: the IPv4 address is what
/// whois, logs, `X-Forwarded-For` and the per-client limits use.
fn canonical(peer: SocketAddr) -> SocketAddr {
    SocketAddr::new(peer.ip().to_canonical(), peer.port())
}

/// What a listener expects before TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerKind {
    /// TLS straight away (`[listen] https`).
    Tls,
    /// A PROXY v2 header, then TLS (`[listen] proxy_protocol`).
    ProxyV2,
    /// Plain HTTP answered with `308` redirects to `https://` (`[listen] redirect_http`).
    RedirectHttp,
}

/// Where the ClientHello stage leaves a connection.
enum Stage {
    /// TLS terminated here, for this SNI name.
    Terminated(Box<tokio_rustls::server::TlsStream<TcpStream>>, String),
    /// A passthrough service: the raw stream, the bytes read so far, the service.
    Passthrough(TcpStream, Vec<u8>, Arc<crate::routes::ServiceRoutes>),
}

/// The shared state of the data path.
pub struct Router {
    routes: ArcSwap<RouteTable>,
    certs: Arc<CertStore>,
    tls: ServerTls,
    forwarder: Forwarder,
    opts: ProxyOptions,
    admission: Admission,
    metrics: Metrics,
    /// Thread-per-core connection workers; `None` runs connections on the caller's
    /// runtime (used when the worker threads cannot be started).
    workers: Option<Workers>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router").field("active", &self.admission.active()).finish()
    }
}

impl Router {
    /// A router serving `routes` with certificates from `certs`; `whois` (tailscaled's
    /// LocalAPI) answers `tailscale_identity` lookups (`None`: nobody is known).
    pub fn new(
        routes: RouteTable,
        certs: Arc<CertStore>,
        opts: ProxyOptions,
        whois: Option<snirouter_localapi::LocalClient>,
    ) -> Result<Arc<Router>, rustls::Error> {
        let tls = ServerTls::new(Arc::clone(&certs))?;
        let workers = match Workers::per_core() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "cannot start worker threads; serving connections on the main runtime");
                None
            }
        };
        Ok(Arc::new(Router {
            routes: ArcSwap::from_pointee(routes),
            certs,
            tls,
            forwarder: Forwarder::new(&opts, whois)?,
            admission: Admission::new(opts.max_connections, opts.max_connections_per_client),
            opts,
            metrics: Metrics::default(),
            workers,
        }))
    }

    /// Replaces the route table; requests already routed are unaffected.
    pub fn set_routes(&self, routes: RouteTable) {
        self.routes.store(Arc::new(routes));
    }

    /// The current route table.
    pub fn routes(&self) -> Arc<RouteTable> {
        self.routes.load_full()
    }

    /// Appends the data-path metrics (connections, handshake failures, per-service
    /// requests, errors and latency) to `out`.
    pub fn render_metrics(&self, out: &mut crate::metrics::Exposition) {
        crate::metrics::render_router(&self.metrics, self.active_connections(), &self.routes.load(), out);
    }

    /// Router-wide counters (handshake failures).
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Connections open right now, WebSocket tunnels included.
    pub fn active_connections(&self) -> usize {
        self.admission.active()
    }

    /// WebSocket (upgraded) tunnels open right now.
    pub fn tunnels(&self) -> usize {
        self.forwarder.tunnels().count()
    }

    /// Accepts connections on `listener` until `shutdown` turns true, then lets open
    /// connections finish (HTTP/1 keep-alive and HTTP/2 are told to close) and open
    /// tunnels end for at most `grace`.
    pub async fn serve(
        self: Arc<Self>,
        listener: TcpListener,
        kind: ListenerKind,
        mut shutdown: watch::Receiver<bool>,
        grace: Duration,
    ) {
        let local = listener.local_addr().ok();
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok((stream, peer)) => (stream, canonical(peer)),
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(listener = ?local, error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(counted) = self.admission.accept() else {
                        self.metrics.connection_refused(ConnectionLimit::MaxConnections);
                        tracing::warn!(client = %peer, limit = self.admission.max_connections(), "connection refused: limits.max_connections reached");
                        drop(stream);
                        continue;
                    };
                    let router = Arc::clone(&self);
                    let watcher = graceful.watcher();
                    match &self.workers {
                        // Move the socket to a worker runtime (re-registered with its
                        // reactor) so the whole connection lives on one thread.
                        Some(workers) => match stream.into_std() {
                            Ok(std) => workers.spawn(async move {
                                match TcpStream::from_std(std) {
                                    Ok(stream) => router.run_connection(stream, peer, kind, watcher, counted).await,
                                    Err(e) => tracing::warn!(client = %peer, error = %e, "cannot hand the connection to a worker"),
                                }
                            }),
                            Err(e) => tracing::warn!(client = %peer, error = %e, "cannot hand the connection to a worker"),
                        },
                        None => {
                            tokio::spawn(async move { router.run_connection(stream, peer, kind, watcher, counted).await });
                        }
                    }
                }
                changed = shutdown.changed() => {
                    if changed.is_err() || *shutdown.borrow() {
                        break;
                    }
                }
            }
        }
        drop(listener);
        let drained = async {
            graceful.shutdown().await;
            self.forwarder.tunnels().drained().await;
        };
        if tokio::time::timeout(grace, drained).await.is_err() {
            tracing::warn!(listener = ?local, grace_secs = grace.as_secs(), tunnels = self.tunnels(), "grace period over; closing remaining connections and tunnels");
        }
    }

    /// A `redirect_http` connection: plain HTTP/1.1, every request answered by
    /// [`crate::redirect::answer`].
    async fn handle_redirect(
        self: &Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        graceful: hyper_util::server::graceful::Watcher,
    ) {
        let router = Arc::clone(self);
        let service = hyper::service::service_fn(move |req| {
            let resp = crate::redirect::answer(&req, &router.routes.load());
            std::future::ready(Ok::<_, std::convert::Infallible>(resp))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.opts.request_header_timeout)
            .max_buf_size(self.opts.max_header_bytes.max(8192));
        let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
        if let Err(e) = conn.await {
            tracing::debug!(client = %peer, error = %e, "redirect connection ended with an error");
        }
    }

    /// One connection from accept to close, on whichever runtime runs it; `counted`
    /// is its place in `limits.max_connections`.
    async fn run_connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        kind: ListenerKind,
        watcher: hyper_util::server::graceful::Watcher,
        counted: Counted,
    ) {
        if kind == ListenerKind::RedirectHttp {
            self.handle_redirect(stream, peer, watcher).await;
        } else {
            self.handle(stream, peer, kind, watcher, counted).await;
        }
    }

    async fn handle(
        self: &Arc<Self>,
        mut stream: TcpStream,
        peer: SocketAddr,
        kind: ListenerKind,
        graceful: hyper_util::server::graceful::Watcher,
        counted: Counted,
    ) {
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let client = match kind {
            ListenerKind::Tls | ListenerKind::RedirectHttp => peer,
            ListenerKind::ProxyV2 => {
                if !self.opts.proxy_senders.allows(peer.ip()) {
                    self.metrics.handshake_failed(Hf::UntrustedProxy);
                    tracing::warn!(peer = %peer, "closing connection: PROXY headers are taken only from listen.proxy_protocol_from (default: loopback). fix: add this peer there if it is your proxy");
                    return;
                }
                match tokio::time::timeout(self.opts.proxy_header_timeout, proxy_header::read(&mut stream)).await {
                    Ok(Ok(Some(addr))) => addr,
                    Ok(Ok(None)) => peer,
                    Ok(Err(e)) => {
                        self.metrics.handshake_failed(Hf::ProxyHeader);
                        tracing::warn!(peer = %peer, cause = %e, "closing connection: bad PROXY header");
                        return;
                    }
                    Err(_) => {
                        self.metrics.handshake_failed(Hf::ProxyHeader);
                        tracing::warn!(peer = %peer, timeout_ms = self.opts.proxy_header_timeout.as_millis() as u64, "closing connection: no PROXY header within timeouts.proxy_header");
                        return;
                    }
                }
            }
        };
        let Some(admitted) = self.admission.client(counted, client.ip()) else {
            self.metrics.connection_refused(ConnectionLimit::MaxConnectionsPerClient);
            tracing::warn!(
                client = %client,
                limit = self.admission.max_per_client(),
                "connection refused: limits.max_connections_per_client reached"
            );
            return;
        };

        let handshake = async {
            let hello = hello::read(&mut stream).await.map_err(|e| (Hf::Protocol, e.to_string()))?;
            let sni = hello.accepted.client_hello().server_name().map(|s| s.to_ascii_lowercase());
            let Some(sni) = sni else {
                hello::reject_unrecognized_name(&mut stream).await;
                return Err((
                    Hf::UnknownSni,
                    "no SNI in ClientHello (connect by name, not by IP address); sent unrecognized_name".to_owned(),
                ));
            };
            let sni = sni.strip_suffix('.').map(str::to_owned).unwrap_or(sni);
            if let Some(svc) = self.routes.load().get(&sni).filter(|s| s.passthrough.is_some()) {
                return Ok(Stage::Passthrough(stream, hello.raw, Arc::clone(svc)));
            }
            match self.certs.lookup(&sni) {
                Lookup::Ready(_) => {}
                Lookup::Unknown => {
                    hello::reject_unrecognized_name(&mut stream).await;
                    return Err((
                        Hf::UnknownSni,
                        format!("unknown SNI {sni:?}: no service has this name; sent unrecognized_name"),
                    ));
                }
                Lookup::NotReady { service, reason } => {
                    hello::reject_unrecognized_name(&mut stream).await;
                    return Err((
                        Hf::NoCertificate,
                        format!("no certificate yet for {sni} (service {service}): {reason}; sent unrecognized_name"),
                    ));
                }
            }
            let config = self.tls.for_hello(&hello.accepted.client_hello());
            let tls = StartHandshake::from_parts(hello.accepted, stream)
                .into_stream(config)
                .await
                .map_err(|e| (Hf::Protocol, format!("TLS handshake with {sni} failed: {e}")))?;
            Ok(Stage::Terminated(Box::new(tls), sni))
        };
        let (tls, sni) = match tokio::time::timeout(self.opts.tls_handshake_timeout, handshake).await {
            Ok(Ok(Stage::Terminated(tls, sni))) => (*tls, sni),
            Ok(Ok(Stage::Passthrough(stream, raw, svc))) => {
                tracing::debug!(service = %svc.name, client = %client, "TLS passthrough");
                let (connect, idle) = (self.opts.upstream_connect_timeout, self.opts.idle_timeout);
                let _admitted = admitted;
                if let Err(e) = crate::passthrough::run(stream, raw, Arc::clone(&svc), connect, idle).await {
                    svc.stats.upstream_error();
                    tracing::warn!(service = %svc.name, client = %client, cause = %e, "passthrough failed; connection closed");
                }
                return;
            }
            Ok(Err((reason, cause))) => {
                self.metrics.handshake_failed(reason);
                tracing::info!(client = %client, cause = %cause, "TLS handshake refused");
                return;
            }
            Err(_) => {
                self.metrics.handshake_failed(Hf::Timeout);
                tracing::info!(client = %client, "TLS handshake not completed within timeouts.tls_handshake");
                return;
            }
        };

        let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
        let info = Arc::new(ConnInfo::new(client, sni, local, admitted));
        let router = Arc::clone(self);
        let service = hyper::service::service_fn(move |req| {
            let router = Arc::clone(&router);
            let info = Arc::clone(&info);
            async move {
                let started = std::time::Instant::now();
                let table = router.routes.load_full();
                let svc = table.get(&info.sni).cloned();
                let access = svc.as_ref().filter(|s| s.access_log).map(|s| AccessRecord {
                    service: s.name.clone(),
                    client: info.client,
                    method: req.method().clone(),
                    path: req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |pq| pq.to_string()),
                    version: req.version(),
                    started,
                });
                let resp = router.forwarder.handle(req, &info, &table).await;
                if let Some(svc) = &svc {
                    svc.stats.observe_latency(started.elapsed());
                }
                let status = resp.status().as_u16();
                Ok::<_, std::convert::Infallible>(resp.map(|b| MeteredBody::new(b, access.map(|a| (a, status)))))
            }
        });

        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.opts.request_header_timeout)
            .max_buf_size(self.opts.max_header_bytes.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.opts.max_header_bytes).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)));
        let builder = if is_h2 { builder.http2_only() } else { builder.http1_only() };
        let activity = idle::Activity::new();
        let tracked = idle::Tracked::new(tls, Arc::clone(&activity));
        if is_h2 {
            // Responses finishing together leave in one TLS write (see `coalesce`).
            let (io, flusher) = coalesce::wrap(tracked);
            let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
            self.drive(flusher.drive(conn), &activity, client).await;
        } else {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tracked), service);
            self.drive(graceful.watch(conn.into_owned()), &activity, client).await;
        }
    }

    /// Runs a client connection until it ends or `timeouts.idle` passes without a byte
    /// moving.
    async fn drive<E: std::fmt::Display>(
        &self,
        conn: impl Future<Output = Result<(), E>>,
        activity: &idle::Activity,
        client: SocketAddr,
    ) {
        tokio::select! {
            result = conn => if let Err(e) = result {
                tracing::debug!(client = %client, error = %e, "connection ended with an error");
            },
            _ = idle::expired(activity, self.opts.idle_timeout) => {
                tracing::debug!(client = %client, idle_secs = self.opts.idle_timeout.as_secs(), "closing idle connection (timeouts.idle)");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_mapped_peers_are_ipv4() {
        let mapped: SocketAddr = "[::ffff:100.64.0.7]:51234".parse().expect("addr");
        assert_eq!(canonical(mapped), "100.64.0.7:51234".parse::<SocketAddr>().expect("addr"));
        let v6: SocketAddr = "[fd7a:115c:a1e0::7]:1".parse().expect("addr");
        assert_eq!(canonical(v6), v6);
    }
}
