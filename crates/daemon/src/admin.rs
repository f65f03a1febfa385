//! The admin socket: read-only JSON state and Prometheus metrics over HTTP/1.1 on a
//! unix socket (mode 0660), plus `POST /reload`, its only state-changing endpoint.
//!
//! | Request | Answer |
//! | --- | --- |
//! | `GET /` | the status page: self-contained HTML that reads `GET /status` every 5 s |
//! | `GET /status` | [`crate::status::StatusReport`] as JSON |
//! | `GET /metrics` | Prometheus text (format 0.0.4) |
//! | `POST /reload` | re-reads the config file; `200` with what changed, `422` with the diagnostics |
//!
//! `[admin] metrics_listen` adds a TCP listener that serves the same, read-only: `GET /`,
//! `GET /status` and `GET /metrics` (no reload).

use std::convert::Infallible;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;

use crate::report::{metrics_text, status_report};
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
