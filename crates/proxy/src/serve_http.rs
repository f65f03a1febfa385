//! Stage 5 of a connection: HTTP/1.1 or HTTP/2 (as ALPN chose) over the terminated TLS
//! stream. hyper reads requests with the header size and time limits; each request goes
//! to the per-request policy and the upstream ([`crate::forward`]), timed and
//! access-logged; on HTTP/2, responses finishing together leave in one TLS write
//! ([`crate::coalesce`]); the connection closes after `timeouts.idle` without a byte.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::conn_info::ConnInfo;
use crate::metrics::{AccessRecord, MeteredBody};
use crate::options::ProxyOptions;
use crate::server::Server;
use crate::{coalesce, idle};

/// Serves HTTP on `tls` until the client closes, the server shuts down (`graceful`) or
/// the connection is idle for `timeouts.idle`.
pub(crate) async fn serve(router: &Arc<Server>, tls: TlsStream<TcpStream>, info: Arc<ConnInfo>, graceful: Watcher) {
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let client = info.client;
    let opts = router.options();
    let service = {
        let router = Arc::clone(router);
        hyper::service::service_fn(move |req| {
            let router = Arc::clone(&router);
            let info = Arc::clone(&info);
            async move { Ok::<_, std::convert::Infallible>(exchange(&router, req, &info).await) }
        })
    };
    let builder = builder(opts, is_h2);
    let activity = idle::Activity::new();
    let tracked = idle::Tracked::new(tls, Arc::clone(&activity));
    if is_h2 {
        let (io, flusher) = coalesce::wrap(tracked);
        let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
        drive(flusher.drive(conn), &activity, opts.idle_timeout, client).await;
    } else {
        let conn = builder.serve_connection_with_upgrades(TokioIo::new(tracked), service);
        drive(graceful.watch(conn.into_owned()), &activity, opts.idle_timeout, client).await;
    }
}

/// One request: the forwarder's answer, with its latency observed and, for services
/// with `access_log`, an access record written when the body ends.
async fn exchange(
    router: &Server,
    req: hyper::Request<hyper::body::Incoming>,
    info: &Arc<ConnInfo>,
) -> hyper::Response<MeteredBody> {
    let started = Instant::now();
    let table = router.routes();
    let svc = table.get(&info.sni).cloned();
    let access = svc.as_ref().filter(|s| s.access_log).map(|s| AccessRecord {
        service: s.name.clone(),
        client: info.client,
        method: req.method().clone(),
        path: req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |pq| pq.to_string()),
        version: req.version(),
        started,
    });
    let resp = router.forwarder().handle(req, info, &table).await;
    if let Some(svc) = &svc {
        svc.stats.observe_latency(started.elapsed());
    }
    let status = resp.status().as_u16();
    resp.map(|b| MeteredBody::new(b, access.map(|a| (a, status))))
}

/// hyper's server for one protocol, with the limits of `opts`.
fn builder(opts: &ProxyOptions, is_h2: bool) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.request_header_timeout)
        .max_buf_size(opts.max_header_bytes.max(8192))
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        .keep_alive_interval(Some(Duration::from_secs(30)));
    if is_h2 { builder.http2_only() } else { builder.http1_only() }
}

/// Runs a client connection until it ends or `idle_timeout` passes without a byte moving.
pub(crate) async fn drive<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    activity: &idle::Activity,
    idle_timeout: Duration,
    client: SocketAddr,
) {
    tokio::select! {
        result = conn => if let Err(e) = result {
            tracing::debug!(client = %client, error = %e, "connection ended with an error");
        },
        _ = idle::expired(activity, idle_timeout) => {
            tracing::debug!(client = %client, idle_secs = idle_timeout.as_secs(), "closing idle connection (timeouts.idle)");
        }
    }
}
