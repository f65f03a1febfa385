//! The admin socket: read-only JSON state and Prometheus metrics over HTTP/1.1 on a
//! unix socket (mode 0660), plus `POST /reload`, its only state-changing endpoint.
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /` | the status page: self-contained HTML that reads `GET /status` every 5 s |
//! | `GET /status` | [`crate::model::StatusReport`] as JSON |
//! | `GET /metrics` | Prometheus text (format 0.0.4) |
//! | `POST /reload` | re-reads the config file; `200` with what changed, `422` with the diagnostics |
//!
//! `[admin] metrics_listen` adds a TCP listener that serves the same, read-only: `GET /`,
//! `GET /status` and `GET /metrics` (no reload).

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use snirouter_localapi::{Error as LocalError, Status};
use snirouter_proxy::ListenerKind;
use snirouter_proxy::metrics::{self, Exposition};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::model::*;
use crate::shared::Shared;

/// Binds the admin socket at `path` (creating its directory). A live socket of another
/// snirouter is left alone; a stale file is replaced. Failures are logged, not fatal:
/// the router serves without its admin socket.
pub(crate) async fn bind_socket(path: &Path) -> Option<UnixListener> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && let Err(e) = std::fs::create_dir_all(dir)
    {
        tracing::warn!(socket = %path.display(), error = %e, "cannot create the admin socket's directory; `snirouter status` will not work. fix: create it (systemd: RuntimeDirectory=snirouter) or set [admin] socket");
        return None;
    }
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            tracing::warn!(socket = %path.display(), "a file that is not a socket is at the admin socket path; not deleting it, `snirouter status` will not work. fix: move that file away or set [admin] socket");
            return None;
        }
        if tokio::net::UnixStream::connect(path).await.is_ok() {
            tracing::warn!(socket = %path.display(), "another process (a second snirouter?) answers on the admin socket; not taking it over. fix: give each instance its own [admin] socket");
            return None;
        }
        let _ = std::fs::remove_file(path);
    }
    match UnixListener::bind(path) {
        Ok(l) => {
            if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)) {
                tracing::warn!(socket = %path.display(), error = %e, "cannot set the admin socket's mode to 0660");
            }
            tracing::info!(socket = %path.display(), "admin socket ready (snirouter status)");
            Some(l)
        }
        Err(e) => {
            tracing::warn!(socket = %path.display(), error = %e, "cannot bind the admin socket; `snirouter status` will not work. fix: check the directory's permissions or set [admin] socket");
            None
        }
    }
}

/// Serves the admin socket until `shutdown`, then removes the socket file.
pub(crate) async fn serve_socket(
    listener: UnixListener,
    path: PathBuf,
    shared: Arc<Shared>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let shared = Arc::clone(&shared);
                    tokio::spawn(serve_conn(TokioIo::new(stream), shared, true));
                }
                Err(e) => {
                    tracing::warn!(socket = %path.display(), error = %e, "admin socket accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
            },
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    let _ = std::fs::remove_file(&path);
}

/// Connections the TCP metrics listener serves at once (a scraper needs one).
const MAX_METRICS_CONNECTIONS: usize = 32;
/// A request head must arrive within this, also on an idle keep-alive connection.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the read-only endpoints (`GET /`, `/status`, `/metrics`) on a TCP listener
/// until `shutdown`, at most [`MAX_METRICS_CONNECTIONS`] connections at once.
pub(crate) async fn serve_metrics_tcp(listener: TcpListener, shared: Arc<Shared>, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_METRICS_CONNECTIONS));
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, peer)) = accepted else { continue };
                // Connections past the cap are closed at once; each one held is closed
                // after HEADER_TIMEOUT without a request, so a flood cannot pin them.
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tracing::debug!(peer = %peer, limit = MAX_METRICS_CONNECTIONS, "metrics connection refused: too many open");
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    serve_conn(TokioIo::new(stream), shared, false).await;
                    drop(slot);
                });
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
}

async fn serve_conn<I>(io: I, shared: Arc<Shared>, full: bool)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let shared = Arc::clone(&shared);
        async move { Ok::<_, Infallible>(route(req, &shared, full).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(io, service);
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin connection ended with an error");
    }
}

/// The status page (`GET /`): self-contained HTML whose script reads `GET status`.
const STATUS_PAGE: &str = include_str!("status_page.html");

/// What the page may load: nothing but its own inline script and style, and the status
/// JSON from the same origin.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                           connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// `full`: the admin socket (everything); otherwise the TCP listener of
/// `[admin] metrics_listen` (read-only: no reload).
async fn route(req: Request<Incoming>, shared: &Arc<Shared>, full: bool) -> Response<Full<Bytes>> {
    let endpoints = if full {
        "GET / (status page), GET /status, GET /metrics, POST /reload"
    } else {
        "GET / (status page), GET /status, GET /metrics"
    };
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/") => page(),
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, "text/plain; version=0.0.4; charset=utf-8", metrics_text(shared).await)
        }
        (&Method::GET, "/status") if full => {
            let report = status_report(shared).await;
            json(StatusCode::OK, &report)
        }
        (&Method::GET, "/status") => reply(StatusCode::OK, "application/json", tcp_status(shared).await),
        (&Method::POST, "/reload") if full => match crate::reload::reload(shared).await {
            Ok(report) => json(StatusCode::OK, &serde_json::json!({"ok": true, "changes": report})),
            Err(e) => json(StatusCode::UNPROCESSABLE_ENTITY, &serde_json::json!({"ok": false, "error": e.to_string()})),
        },
        (_, path @ ("/" | "/metrics" | "/status" | "/reload")) if full || path != "/reload" => {
            reply(StatusCode::METHOD_NOT_ALLOWED, "text/plain; charset=utf-8", format!("use {endpoints}\n"))
        }
        _ => reply(StatusCode::NOT_FOUND, "text/plain; charset=utf-8", format!("endpoints: {endpoints}\n")),
    }
}

/// How long the TCP listener reuses one status document: building it asks tailscaled
/// (and the control API when `[tailscale.api]` is set), and every open status page reads
/// it every 5 s. The admin socket (`snirouter status`) always builds a fresh one.
const TCP_STATUS_TTL: Duration = Duration::from_secs(5);

/// The status document for the TCP listener, at most [`TCP_STATUS_TTL`] old. Readers
/// arriving while it is being built wait for that one.
async fn tcp_status(shared: &Shared) -> String {
    let mut cached = shared.tcp_status.lock().await;
    if let Some((at, text)) = cached.as_ref()
        && at.elapsed() < TCP_STATUS_TTL
    {
        return text.clone();
    }
    let text = json_text(&status_report(shared).await).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot encode the status: {e}") }).to_string() + "\n"
    });
    *cached = Some((std::time::Instant::now(), text.clone()));
    text
}

fn page() -> Response<Full<Bytes>> {
    let mut resp = reply(StatusCode::OK, "text/html; charset=utf-8", STATUS_PAGE.to_owned());
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, header::HeaderValue::from_static(PAGE_POLICY));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, header::HeaderValue::from_static("nosniff"));
    resp
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    resp
}

/// `value` as the admin endpoints send JSON: pretty-printed, with a final newline.
fn json_text<T: serde::Serialize>(value: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(value).map(|s| s + "\n")
}

fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match json_text(value) {
        Ok(s) => reply(status, "application/json", s),
        Err(e) => {
            reply(StatusCode::INTERNAL_SERVER_ERROR, "text/plain; charset=utf-8", format!("cannot encode: {e}\n"))
        }
    }
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `GET /status` document.
pub(crate) async fn status_report(shared: &Shared) -> StatusReport {
    let now = SystemTime::now();
    let config = shared.config().await;
    let domains = shared.manager.domains().borrow().clone();
    // The certificates before tailscaled's health: a certificate that arrives while the
    // LocalAPI and control API are asked then shows up next time, instead of a name
    // counted as serving beside tailscaled's stale "fetching it" warning.
    let entries = shared.store.snapshot();
    let status = tailscaled_status(shared).await;
    let tailscaled_health = status.as_ref().map(|s| s.health.clone()).unwrap_or_default();
    let tailscale_services = observe_services(shared, &config, status.as_ref()).await;
    let table = shared.router.routes();
    let services: Vec<ServiceStatus> = config
        .services
        .iter()
        .map(|svc| {
            let fqdn = svc.fqdn(&shared.names_suffix());
            let entry = entries.iter().find(|e| e.fqdn == fqdn);
            let live = table.get(&fqdn);
            let mut status = ServiceStatus {
                name: svc.name.clone(),
                serving: false,
                problems: Vec::new(),
                routes: route_statuses(shared, svc),
                certificate: entry.and_then(|e| e.cert.as_ref()).map(|c| certificate_info(c, now)),
                fetch: entry.map(|e| fetch_info(&e.state)).unwrap_or_default(),
                in_cert_domains: domains.list.as_ref().map(|l| l.contains(&fqdn)),
                requests: live.map(|r| request_counts(r.stats.snapshot())).unwrap_or_default(),
                access_log: live.is_some_and(|r| r.access_log),
                allow: svc.allow.as_ref().map(|a| a.iter().map(ToString::to_string).collect()),
                names: name_statuses(&config, svc, &entries, now),
                history: shared.history.of(&svc.name),
                tailscale_service: tailscale_services.get(&svc.name).cloned(),
                fqdn,
            };
            let pending = is_pending(&tailscaled_health, &status.fqdn);
            status.problems = problems(&status, svc.passthrough.is_some(), pending);
            status.serving = status.problems.is_empty();
            status
        })
        .collect();
    StatusReport {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at: unix(shared.started),
        uptime_seconds: now.duration_since(shared.started).map(|d| d.as_secs()).unwrap_or(0),
        config: config.origin.clone(),
        magic_dns_suffix: shared.suffix().unwrap_or_default(),
        listeners: listener_infos(shared).await,
        active_connections: shared.router.active_connections() as u64,
        tunnels: shared.router.tunnels() as u64,
        cert_domains: domains.list.clone(),
        cert_domains_error: domains.error.clone(),
        tailscaled_health,
        last_reload: shared.last_reload.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        services_drift: snirouter_services::Ownership::load(&config.cache.dir).ok().and_then(|o| o.drift),
        serving: services.iter().all(|s| s.serving),
        services,
    }
}

/// The service's further names and their certificates from files.
fn name_statuses(
    config: &snirouter_config::Config,
    svc: &snirouter_config::Service,
    entries: &[snirouter_certs::EntrySnapshot],
    now: SystemTime,
) -> Vec<NameStatus> {
    svc.names
        .iter()
        .map(|name| {
            let entry = entries.iter().find(|e| &e.fqdn == name);
            NameStatus {
                fqdn: name.clone(),
                domain: config.domain_for(name).map(|d| d.name.clone()).unwrap_or_default(),
                certificate: entry.and_then(|e| e.cert.as_ref()).map(|c| certificate_info(c, now)),
                error: entry.and_then(|e| e.state.last_error.clone()),
                fix: entry.and_then(|e| e.state.fix.clone()),
            }
        })
        .collect()
}

async fn listener_infos(shared: &Shared) -> Vec<ListenerInfo> {
    let kind = |k| match k {
        ListenerKind::Tls => "tls",
        ListenerKind::ProxyV2 => "proxy_protocol",
        ListenerKind::RedirectHttp => "redirect_http",
    };
    let listeners = shared.listeners().await.into_iter();
    listeners.map(|(k, addr)| ListenerInfo { kind: kind(k).to_owned(), address: addr.to_string() }).collect()
}

/// Each route with the last reachability check of its upstream.
fn route_statuses(shared: &Shared, svc: &snirouter_config::Service) -> Vec<RouteStatus> {
    let route = |r: &snirouter_config::Route| {
        let reach = shared.upstreams.get(r.upstream.authority.as_str());
        RouteStatus {
            path: r.path.clone(),
            upstream: r.upstream.to_string(),
            reachable: reach.as_ref().map(|r| r.reachable),
            checked_at: reach.as_ref().map(|r| unix(r.checked_at)),
            error: reach.and_then(|r| r.error),
        }
    };
    svc.routes.iter().map(route).collect()
}

fn certificate_info(c: &snirouter_certs::CertSnapshot, now: SystemTime) -> CertificateInfo {
    CertificateInfo {
        not_before: c.not_before,
        not_after: c.not_after,
        expires_in_seconds: c.not_after as i64 - unix(now) as i64,
        issuer: c.issuer.clone(),
        serial: c.serial.clone(),
        source: match c.source {
            snirouter_certs::CertSource::Tailscaled => "tailscaled",
            snirouter_certs::CertSource::Cache => "cache",
            snirouter_certs::CertSource::File => "file",
        }
        .to_owned(),
    }
}

fn fetch_info(s: &snirouter_certs::FetchState) -> FetchInfo {
    FetchInfo {
        in_flight: s.in_flight,
        failures: s.failures,
        total_failures: s.total_failures,
        last_attempt: s.last_attempt.map(unix),
        last_success: s.last_success.map(unix),
        next_attempt: s.next_attempt.map(unix),
        last_error_kind: s.last_error_kind.clone(),
        last_error: s.last_error.clone(),
        fix: s.fix.clone(),
    }
}

fn request_counts(s: snirouter_proxy::StatsSnapshot) -> RequestCounts {
    RequestCounts {
        requests: s.requests,
        responses_2xx: s.responses_2xx,
        responses_3xx: s.responses_3xx,
        responses_4xx: s.responses_4xx,
        responses_5xx: s.responses_5xx,
        upstream_errors: s.upstream_errors,
        tunnels: s.tunnels,
    }
}

/// Why a service is not serving (empty when it is). A passthrough service's backend
/// terminates TLS, so snirouter holds no certificate for it; `pending` is tailscaled's
/// word that it is fetching the certificate now, which outranks an older failure.
fn problems(s: &ServiceStatus, passthrough: bool, pending: bool) -> Vec<String> {
    let mut problems = Vec::new();
    match &s.certificate {
        None if !passthrough => problems.push(match &s.fetch.last_error {
            _ if pending => "no certificate yet: tailscaled is fetching it from Let's Encrypt now \
                 (ACME DNS-01, usually under a minute)"
                .to_owned(),
            Some(e) => format!("no certificate: {e}"),
            None if s.fetch.in_flight => "no certificate yet: the request to tailscaled is in progress".to_owned(),
            None => "no certificate yet".to_owned(),
        }),
        Some(c) if c.expires_in_seconds <= 0 => problems.push("the certificate has expired".to_owned()),
        _ => {}
    }
    for n in &s.names {
        match (&n.certificate, &n.error) {
            (None, Some(e)) => problems.push(format!("{}: no certificate: {e}", n.fqdn)),
            (None, None) => problems.push(format!("{}: no certificate yet", n.fqdn)),
            (Some(c), _) if c.expires_in_seconds <= 0 => {
                problems.push(format!("{}: the certificate has expired", n.fqdn))
            }
            _ => {}
        }
    }
    for r in s.routes.iter().filter(|r| r.reachable == Some(false)) {
        let why = r.error.as_deref().unwrap_or("connect failed");
        problems.push(format!("upstream {} ({}) is down: {why}", r.upstream, r.path));
    }
    problems
}

/// tailscaled's status, bounded to 2 s: its `Health` strings and the Services state
/// both come from this one read.
async fn tailscaled_status(shared: &Shared) -> Result<Status, LocalError> {
    let after = Duration::from_secs(2);
    let status = tokio::time::timeout(after, shared.client.status())
        .await
        .unwrap_or_else(|_| Err(LocalError::Timeout { what: "GET /localapi/v0/status".to_owned(), after }));
    if let Err(e) = &status {
        tracing::debug!(cause = %e, "tailscaled status not read");
    }
    status
}

/// The prefix of tailscaled's `tls-cert-pending` warning, followed by the domains being fetched.
const CERT_PENDING: &str = "Fetching TLS certificate via ACME for: ";

/// Whether tailscaled's health says it is fetching the first certificate for `fqdn`.
fn is_pending(health: &[String], fqdn: &str) -> bool {
    health.iter().filter_map(|h| h.strip_prefix(CERT_PENDING)).any(|list| list.split(", ").any(|d| d == fqdn))
}

/// Tailscale Service state per service name (`snirouter_services::observe`: LocalAPI
/// reads, plus the control API when `[tailscale.api]` is set), bounded to 5 s; empty when
/// it cannot be observed in time.
async fn observe_services(
    shared: &Shared,
    config: &snirouter_config::Config,
    status: Result<&Status, &LocalError>,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let control = config.tailscale.api.as_ref().and_then(|api| shared.control_client(api));
    let observed = tokio::time::timeout(
        Duration::from_secs(5),
        snirouter_services::observe(config, &shared.client, status, control.as_deref()),
    )
    .await;
    let Ok(states) = observed else {
        tracing::debug!("Tailscale Service state not observed within 5s");
        return Default::default();
    };
    states
        .into_iter()
        .filter_map(|mut s| {
            let cert = shared.store.current(s.fqdn.as_deref().unwrap_or_default()).is_some();
            s.certificate = Some(cert);
            Some((s.name.clone(), serde_json::to_value(&s).ok()?))
        })
        .collect()
}

/// The `GET /metrics` text.
pub(crate) async fn metrics_text(shared: &Shared) -> String {
    use std::sync::atomic::Ordering;
    let mut out = Exposition::new();
    out.family("snirouter_build_info", "gauge", "Always 1; the version label is the running snirouter.");
    out.sample("snirouter_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    shared.router.render_metrics(&mut out);
    metrics::render_certs(&shared.store.snapshot(), SystemTime::now(), &mut out);

    out.family(
        "snirouter_upstream_up",
        "gauge",
        "1 when the last TCP connect to the upstream succeeded, 0 when it failed (checked every 10s).",
    );
    let table = shared.router.routes();
    let mut services: Vec<_> = table.services().cloned().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    for svc in &services {
        for r in &svc.routes {
            if let Some(reach) = shared.upstreams.get(r.upstream.authority.as_str()) {
                let upstream = r.upstream.to_string();
                out.sample(
                    "snirouter_upstream_up",
                    &[("service", &svc.name), ("upstream", &upstream)],
                    if reach.reachable { 1.0 } else { 0.0 },
                );
            }
        }
    }
    out.family("snirouter_config_reloads_total", "counter", "Configuration reloads, by result (ok, refused).");
    out.sample("snirouter_config_reloads_total", &[("result", "ok")], shared.reloads_ok.load(Ordering::Relaxed) as f64);
    out.sample(
        "snirouter_config_reloads_total",
        &[("result", "refused")],
        shared.reloads_refused.load(Ordering::Relaxed) as f64,
    );
    let healed = "snirouter_services_healed_total";
    out.family(healed, "counter", "Times the Tailscale Services were put back after something else changed them.");
    out.sample(healed, &[], snirouter_services::heals() as f64);
    out.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_that_is_not_a_socket_is_left_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("admin.sock");
        std::fs::write(&path, "precious").expect("write");
        assert!(bind_socket(&path).await.is_none(), "bound over a regular file");
        assert_eq!(std::fs::read_to_string(&path).expect("still there"), "precious");
        // A stale socket (nobody listening) is taken over.
        std::fs::remove_file(&path).expect("rm");
        drop(std::os::unix::net::UnixListener::bind(&path).expect("bind"));
        assert!(bind_socket(&path).await.is_some(), "a stale socket is replaced");
    }
}
