//! Listeners and the per-connection pipeline: accept → PROXY header → ClientHello →
//! TLS handshake → HTTP.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::admit::Counted;
use crate::conn_info::ConnInfo;
use crate::handshake::{Handshake, Outcome};
use crate::metrics::{ConnectionLimit, HandshakeFailure as Hf};
use crate::proxy_header::{self, Rejected};
use crate::refusals::Kind;
use crate::serve_http;
use crate::server::Server;

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

impl Server {
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
                            if self.refusals.note(Kind::AcceptFailed, std::net::Ipv4Addr::UNSPECIFIED.into()) {
                                tracing::warn!(listener = ?local, error = %e, "accept failed");
                            }
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let Some(counted) = self.admission.accept() else {
                        self.metrics.connection_refused(ConnectionLimit::MaxConnections);
                        if self.refusals.note(Kind::MaxConnections, peer.ip()) {
                            tracing::warn!(client = %peer, limit = self.admission.max_connections(), "connection refused: limits.max_connections reached");
                        }
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

    /// One TLS connection through its stages: client address (PROXY header), the
    /// per-client limit, the handshake, then HTTP or passthrough.
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
        let Some(client) = self.client_address(&mut stream, peer, kind).await else { return };
        let Some(admitted) = self.admit_client(counted, client) else { return };
        let outcome = {
            let routes = self.routes.load_full();
            let handshake = Handshake { routes: &routes, certs: &self.certs, tls: &self.tls };
            tokio::time::timeout(self.opts.tls_handshake_timeout, handshake.run(stream)).await
        };
        match outcome {
            Ok(Ok(Outcome::Terminated(tls, sni))) => {
                let info = Arc::new(ConnInfo::new(client, sni, local, admitted));
                serve_http::serve(self, *tls, info, graceful).await;
            }
            Ok(Ok(Outcome::Passthrough(stream, raw, svc))) => {
                tracing::debug!(service = %svc.name, client = %client, "TLS passthrough");
                let (connect, idle) = (self.opts.upstream_connect_timeout, self.opts.idle_timeout);
                let _admitted = admitted;
                if let Err(e) = crate::passthrough::run(stream, raw, Arc::clone(&svc), connect, idle).await {
                    svc.stats.upstream_error();
                    tracing::warn!(service = %svc.name, client = %client, cause = %e, "passthrough failed; connection closed");
                }
            }
            Ok(Err((reason, cause))) => {
                self.metrics.handshake_failed(reason);
                if self.refusals.note(Kind::HandshakeRefused, client.ip()) {
                    tracing::info!(client = %client, cause = %cause, "TLS handshake refused");
                }
            }
            Err(_) => {
                self.metrics.handshake_failed(Hf::Timeout);
                if self.refusals.note(Kind::HandshakeTimeout, client.ip()) {
                    tracing::info!(client = %client, "TLS handshake not completed within timeouts.tls_handshake");
                }
            }
        }
    }

    /// The client: the TCP peer, or on `proxy_protocol` listeners the address the PROXY
    /// header names (`None`: refused, counted and logged).
    async fn client_address(&self, stream: &mut TcpStream, peer: SocketAddr, kind: ListenerKind) -> Option<SocketAddr> {
        if kind != ListenerKind::ProxyV2 {
            return Some(peer);
        }
        let timeout = self.opts.proxy_header_timeout;
        match proxy_header::client_address(stream, peer, &self.opts.proxy_senders, timeout).await {
            Ok(client) => return Some(client),
            Err(Rejected::Untrusted) => {
                self.metrics.handshake_failed(Hf::UntrustedProxy);
                if !self.refusals.note(Kind::UntrustedProxy, peer.ip()) {
                    return None;
                }
                tracing::warn!(peer = %peer, "closing connection: PROXY headers are taken only from listen.proxy_protocol_from (default: loopback). fix: add this peer there if it is your proxy");
            }
            Err(Rejected::Bad(e)) => {
                self.metrics.handshake_failed(Hf::ProxyHeader);
                if !self.refusals.note(Kind::BadProxyHeader, peer.ip()) {
                    return None;
                }
                tracing::warn!(peer = %peer, cause = %e, "closing connection: bad PROXY header");
            }
            Err(Rejected::Timeout) => {
                self.metrics.handshake_failed(Hf::ProxyHeader);
                if !self.refusals.note(Kind::ProxyHeaderTimeout, peer.ip()) {
                    return None;
                }
                tracing::warn!(peer = %peer, timeout_ms = timeout.as_millis() as u64, "closing connection: no PROXY header within timeouts.proxy_header");
            }
        }
        None
    }

    /// `limits.max_connections_per_client` for `client` (`None`: refused, counted, logged).
    fn admit_client(&self, counted: Counted, client: SocketAddr) -> Option<crate::admit::Admitted> {
        let trusted = self.routes.load().trusted().trusts(client.ip());
        let admitted = self.admission.client(counted, client.ip(), trusted);
        if admitted.is_none() {
            self.metrics.connection_refused(ConnectionLimit::MaxConnectionsPerClient);
        }
        if admitted.is_none() && self.refusals.note(Kind::MaxConnectionsPerClient, client.ip()) {
            tracing::warn!(
                client = %client,
                limit = self.admission.max_per_client(),
                "connection refused: limits.max_connections_per_client reached"
            );
        }
        admitted
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
