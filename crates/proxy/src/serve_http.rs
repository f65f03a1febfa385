//! Stage 5 of a connection: HTTP/1.1 or HTTP/2 (as ALPN chose) over the terminated TLS
//! stream. hyper reads requests with the header size and time limits; each request goes
//! to the per-request policy and the upstream ([`crate::forward`]), timed and
//! access-logged; on HTTP/2, responses finishing together leave in one TLS write
//! ([`crate::coalesce`]); the connection closes after `timeouts.idle` without a byte.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::Watcher;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::server::TlsStream;

use http::header;

use crate::access_log::Outcome;
use crate::budget::{Budgeted, ConnBudget, REQUEST_COST, STREAM_COST};
use crate::calm::{Answering, ResetDebt};
use crate::conn_info::ConnInfo;
use crate::metrics::{AccessRecord, MeteredBody};
use crate::options::ProxyOptions;
use crate::refusals::Kind;
use crate::server::Server;
use crate::upstream::BoxError;
use crate::{coalesce, idle};

/// Serves HTTP on `tls` until the client closes, the server shuts down (`graceful`) or
/// the connection is idle for `timeouts.idle`. `IO` is a `TcpStream` in production and
/// an in-memory stream in tests.
pub(crate) async fn serve<IO>(router: &Arc<Server>, tls: TlsStream<IO>, info: Arc<ConnInfo>, graceful: Watcher)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let is_h2 = tls.get_ref().1.alpn_protocol() == Some(b"h2");
    let client = info.client;
    let opts = router.options();
    let request_cost = if is_h2 { STREAM_COST } else { REQUEST_COST };
    let budget =
        ConnBudget::new(opts.buffer_per_connection, request_cost, info.client_budget(), Arc::clone(&router.budget));
    let debt = is_h2.then(ResetDebt::new);
    let service = {
        let router = Arc::clone(router);
        let budget = Arc::clone(&budget);
        let debt = debt.clone();
        hyper::service::service_fn(move |req| {
            let router = Arc::clone(&router);
            let info = Arc::clone(&info);
            let budget = Arc::clone(&budget);
            let answering = debt.clone().map(Answering::new);
            // Boxed: the exchange's state machine is large, and hyper and tokio move the
            // service future several times while spawning a stream; a box moves as a pointer.
            Box::pin(async move {
                if answering.is_some() {
                    // hyper drops a stream reset meanwhile here, before any work (calm.rs).
                    tokio::task::yield_now().await;
                }
                let hold = budget.request().await;
                let resp = exchange(&router, req, &info).await;
                if let Some(answering) = answering {
                    answering.answered();
                }
                Ok::<_, std::convert::Infallible>(resp.map(|b| Budgeted::new(b, hold)))
            })
        })
    };
    let builder = builder(opts, is_h2);
    let activity = idle::Activity::new();
    let tracked = idle::Tracked::new(tls, Arc::clone(&activity)).crediting(Arc::clone(&budget));
    let end = match debt {
        Some(debt) => {
            let (io, flusher) = coalesce::wrap(tracked, Arc::clone(&debt));
            let conn = graceful.watch(builder.serve_connection_with_upgrades(TokioIo::new(io), service).into_owned());
            let end = drive(flusher.drive(conn), &activity, opts.idle_timeout, client).await;
            if debt.tripped() { End::Calmed } else { end }
        }
        None => {
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tracked), service);
            drive(graceful.watch(conn.into_owned()), &activity, opts.idle_timeout, client).await
        }
    };
    report(router, end, client, budget.unwritten());
}

/// How a client connection ended, as far as the log and the metrics care.
enum End {
    /// Closed by either side, or after an error that is not the client's doing.
    Closed,
    /// `timeouts.idle` passed without a byte moving.
    Idle,
    /// The router sent `GOAWAY ENHANCE_YOUR_CALM` for streams reset faster than answered.
    Calmed,
    /// h2 refused the client's frames with a connection error (`GOAWAY`): the reason
    /// sent, and h2's words.
    Refused(h2::Reason, String),
}

/// Logs and counts a connection's end: client abuse through the summarizing log.
fn report(router: &Server, end: End, client: SocketAddr, unwritten: usize) {
    let (kind, cause) = match end {
        End::Closed => return,
        End::Idle => {
            if unwritten > 0 {
                router.budget.closed_holding.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            return;
        }
        End::Calmed => (Kind::ResetFlood, "too many streams reset before they were answered".to_owned()),
        End::Refused(h2::Reason::ENHANCE_YOUR_CALM, cause) => (Kind::ResetFlood, cause),
        End::Refused(_, cause) => (Kind::Protocol, cause),
    };
    if router.refusals.note(kind, client.ip()) {
        tracing::warn!(client = %client, kind = kind.label(), cause = %cause, "hostile HTTP/2 client: sent GOAWAY and closed the connection");
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
        log: Arc::clone(&router.access_log),
        service: s.name.clone(),
        peer: info.client,
        host: req
            .uri()
            .host()
            .or_else(|| req.headers().get(header::HOST)?.to_str().ok())
            .unwrap_or(&info.sni)
            .to_owned(),
        method: req.method().clone(),
        uri: req.uri().path_and_query().map_or_else(|| req.uri().path().to_owned(), |pq| pq.to_string()),
        version: req.version(),
        started,
        at: SystemTime::now(),
        user_agent: req.headers().get(header::USER_AGENT).cloned(),
        referer: req.headers().get(header::REFERER).cloned(),
        outcome: None,
    });
    let resp = router.forwarder().handle(req, info, &table).await;
    if let Some(svc) = &svc {
        svc.stats.observe_latency(started.elapsed());
    }
    let status = resp.status().as_u16();
    let access = access.map(|mut a| {
        a.outcome = resp.extensions().get::<Outcome>().cloned();
        (a, status)
    });
    resp.map(|b| MeteredBody::new(b, access))
}

/// The most h2 queues for one stream before it stops taking its body (hyper's default
/// is 400 KiB); what a connection queues in all is bounded by its budget (`budget.rs`).
const H2_SEND_BUFFER: usize = 64 * 1024;

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
        .max_concurrent_streams(opts.max_streams_per_connection)
        .max_send_buf_size(H2_SEND_BUFFER)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    if is_h2 { builder.http2_only() } else { builder.http1_only() }
}

/// Runs a client connection until it ends or `idle_timeout` passes without a byte moving.
async fn drive(
    conn: impl Future<Output = Result<(), BoxError>>,
    activity: &idle::Activity,
    idle_timeout: Duration,
    client: SocketAddr,
) -> End {
    tokio::select! {
        result = conn => match result {
            Ok(()) => End::Closed,
            Err(e) => {
                tracing::debug!(client = %client, error = %e, "connection ended with an error");
                match crate::upstream::cause::<h2::Error>(&*e) {
                    Some(h2) if h2.is_go_away() && h2.is_library() => {
                        End::Refused(h2.reason().unwrap_or(h2::Reason::PROTOCOL_ERROR), h2.to_string())
                    }
                    _ => End::Closed,
                }
            }
        },
        _ = idle::expired(activity, idle_timeout) => {
            tracing::debug!(client = %client, idle_secs = idle_timeout.as_secs(), "closing idle connection (timeouts.idle)");
            End::Idle
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use hyper_util::server::graceful::GracefulShutdown;
    use snirouter_certs::{CertSource, CertStore, ServedCert};
    use snirouter_tls::Trust;
    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;
    use crate::handshake::{Handshake, Outcome};
    use crate::routes::RouteTable;
    use crate::tls::ServerTls;

    const NAME: &str = "grafana.x.ts.net";

    /// A server for one service whose only route is `/api`, with a self-signed
    /// certificate for it; returns the server and the certificate to trust.
    fn server() -> (Arc<Server>, rustls::pki_types::CertificateDer<'static>) {
        let src = "[listen]\nhttps=[\"127.0.0.1:1\"]\n[services.grafana]\nroutes=[{path=\"/api\", upstream=\"http://127.0.0.1:9\"}]\n";
        let config = snirouter_config::parse(src, "test").expect("config");
        let issued = rcgen::generate_simple_self_signed(vec![NAME.to_owned()]).expect("certificate");
        let der = issued.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(issued.signing_key.serialize_der().into());
        let served = ServedCert::new(NAME, &key, vec![der.clone()], CertSource::Tailscaled, SystemTime::now())
            .expect("servable");
        let certs = Arc::new(CertStore::new());
        certs.set_names(&[snirouter_certs::ServedName::tailscaled(NAME, "grafana")]);
        certs.install(NAME, served);
        let table = RouteTable::from_config(&config, "x.ts.net", None);
        let server = Server::new(table, certs, ProxyOptions::from_config(&config), None).expect("server");
        (server, der)
    }

    /// Two requests on one HTTP/1.1 keep-alive connection, over an in-memory stream:
    /// the handshake and HTTP stages answer without any socket or upstream.
    #[tokio::test]
    async fn one_connection_gets_policy_answers_over_an_in_memory_stream() {
        let (server, root) = server();
        let (server_io, client_io) = duplex(64 * 1024);
        let stage = {
            let server = Arc::clone(&server);
            tokio::spawn(async move {
                let routes = server.routes();
                let tls = ServerTls::new(Arc::clone(&server.certs)).expect("tls");
                let outcome = Handshake { routes: &routes, certs: &server.certs, tls: &tls }.run(server_io).await;
                let Ok(Outcome::Terminated(stream, sni)) = outcome else { panic!("terminated") };
                let hold =
                    server.admission.client(server.admission.accept().expect("slot"), [127, 0, 0, 1].into(), false);
                let client = "100.64.0.9:40000".parse().expect("addr");
                let info = Arc::new(ConnInfo::new(client, sni, None, hold.expect("admitted")));
                let shutdown = GracefulShutdown::new();
                serve(&server, *stream, info, shutdown.watcher()).await;
            })
        };
        let mut roots = rustls::RootCertStore::empty();
        roots.add(root).expect("root");
        let config = snirouter_tls::client_config(Trust::Roots(Arc::new(roots)), &[b"http/1.1"]).expect("client");
        let name = rustls::pki_types::ServerName::try_from(NAME).expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, client_io).await.expect("tls");
        let requests = format!(
            "GET / HTTP/1.1\r\nHost: {NAME}\r\n\r\nGET /api HTTP/1.1\r\nHost: jellyfin.x.ts.net\r\nConnection: close\r\n\r\n"
        );
        tls.write_all(requests.as_bytes()).await.expect("send");
        let mut answer = String::new();
        tls.read_to_string(&mut answer).await.expect("read");
        let statuses: Vec<&str> = answer.lines().filter(|l| l.starts_with("HTTP/1.1 ")).collect();
        assert_eq!(statuses, ["HTTP/1.1 404 Not Found", "HTTP/1.1 421 Misdirected Request"], "{answer}");
        stage.await.expect("the stage ends when the client closes");
    }
}
