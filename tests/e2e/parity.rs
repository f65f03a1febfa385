//! Issue 6: drop-in parity with the owner's Caddy gateway, end to end with real clients.
//!
//! One config mirrors the gateway: the 14 sample services, Authelia-style forward auth
//! for most of them through `[defaults]` (`bypass_auth` on grafana, jellyfin, immich,
//! jellyseerr, audiobookshelf), CORS on homepage and audiobookshelf, an `https://`
//! upstream with `insecure_skip_verify` (qbittorrent), custom error pages, a 5 MB
//! header limit, a body limit on immich, Tailscale identity on grafana and a
//! `redirect_http` listener. Three test-only services sit next to it: `vault` (TLS
//! passthrough to a backend with its own CA), `strict` (an `https://` upstream that is
//! *verified* and fails) and `authdown` (forward auth pointing at a closed port).
//!
//! The forward-auth server and the TLS backends are small servers written here; the
//! HTTP backends echo what they received, so every assertion about headers is about
//! what really reached an upstream.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, Request, Response};
use http_body_util::Full;
use hyper_util::rt::TokioIo;
use snirouter_testkit::backend::{self, Backend};
use snirouter_testkit::tailscaled::{SimConfig, SimPeer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);
pub(crate) const GOOD: &str = "Cookie: session=good";
/// Sent by the forward-auth server for a good session.
pub(crate) const REMOTE_USER: &str = "alice";

/// Services protected by `[defaults] forward_auth`.
const PROTECTED: [&str; 8] =
    ["sonarr", "radarr", "prowlarr", "lidarr", "bazarr", "qbittorrent", "homepage", "prometheus"];

// ---------------------------------------------------------------------------------
// Test servers

/// A forward-auth server speaking Authelia's `/api/verify` protocol, and 4.38's
/// `/api/authz/forward-auth?authelia_url=…`: `Cookie: session=good` (a browser's session)
/// or `Authorization: Basic Z29vZA==` (an API client's) ⇒ 200 with `Remote-*` headers; other
/// credentials ⇒ 401, as Authelia answers API clients; none ⇒ 302 to the portal, built from
/// the `X-Forwarded-*`.
pub(crate) struct AuthServer {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Vec<HeaderMap>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for AuthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) async fn auth_server() -> AuthServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind auth");
    let addr = listener.local_addr().expect("addr");
    let seen: Arc<Mutex<Vec<HeaderMap>>> = Arc::default();
    let log = Arc::clone(&seen);
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    log.lock().expect("lock").push(req.headers().clone());
                    let good = req
                        .headers()
                        .get_all(http::header::COOKIE)
                        .iter()
                        .filter_map(|v| v.to_str().ok())
                        .any(|v| v.split(';').any(|c| c.trim() == "session=good"))
                        || req.headers().get(http::header::AUTHORIZATION).is_some_and(|v| v == "Basic Z29vZA==");
                    let resp = if good {
                        Response::builder()
                            .status(200)
                            .header("Remote-User", REMOTE_USER)
                            .header("Remote-Groups", "admins,dev")
                            .header("Remote-Name", "Alice")
                            .header("Remote-Email", "alice@example.com")
                            .header("X-Not-Copied", "1")
                            .body(Full::new(Bytes::new()))
                    } else if req.headers().contains_key(http::header::AUTHORIZATION) {
                        Response::builder().status(401).body(Full::new(Bytes::from_static(b"who are you?")))
                    } else {
                        let h = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                        let target =
                            format!("{}://{}{}", h("x-forwarded-proto"), h("x-forwarded-host"), h("x-forwarded-uri"));
                        // Authelia >= 4.38's /api/authz/forward-auth sends the portal its
                        // authelia_url says, with the method; /api/verify its own rd.
                        let portal = match req.uri().path() {
                            "/api/authz/forward-auth" => req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("authelia_url="))
                                .map(|portal| format!("{portal}?rd={target}&rm={}", h("x-forwarded-method"))),
                            _ => None,
                        };
                        Response::builder()
                            .status(302)
                            .header(
                                "Location",
                                portal.unwrap_or_else(|| format!("https://auth.example.com/?rd={target}")),
                            )
                            .header("Set-Cookie", "authelia_flow=1; Secure; HttpOnly")
                            .body(Full::new(Bytes::from_static(b"<a href=\"https://auth.example.com/\">Found</a>")))
                    };
                    std::future::ready(resp)
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    AuthServer { addr, seen, task }
}

/// A TLS-terminating echo backend with a certificate from its *own* CA.
struct TlsBackend {
    addr: SocketAddr,
    /// Lowercase hex serial of its leaf certificate.
    serial: String,
    /// Its CA root (PEM file), for clients that verify it.
    root: PathBuf,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsBackend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn tls_backend(dir: &Path, tag: &'static str, name: &str) -> TlsBackend {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let ca = snirouter_testkit::TestCa::new();
    let now = SystemTime::now();
    let pair = ca.issue(name, now - Duration::from_secs(3600), now + Duration::from_secs(86_400));
    let root = dir.join(format!("{tag}-root.pem"));
    std::fs::write(&root, ca.root_pem()).expect("write root");
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pair.chain_pem.as_bytes()).collect::<Result<_, _>>().expect("chain");
    let key = PrivateKeyDer::from_pem_slice(pair.key_pem.as_bytes()).expect("key");
    let mut cfg = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("cert");
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind tls backend");
    let addr = listener.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else { return };
                let svc = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                    let headers: BTreeMap<String, String> = req
                        .headers()
                        .iter()
                        .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                        .collect();
                    let body = serde_json::json!({
                        "backend": tag,
                        "tls": true,
                        "path": req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/"),
                        "headers": headers,
                    });
                    std::future::ready(
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string()))),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(tls), svc).await;
            });
        }
    });
    TlsBackend { addr, serial: pair.serial, root, task }
}

// ---------------------------------------------------------------------------------
// The gateway

#[allow(dead_code)]
struct Gateway {
    env: Env,
    auth: AuthServer,
    /// Self-signed-style https upstream of qbittorrent (insecure) and strict (verified).
    https_backend: TlsBackend,
    /// The passthrough backend of `vault`.
    vault: TlsBackend,
    /// The plain upstream of `authdown`, which must never be reached.
    authdown: Backend,
    redirect: SocketAddr,
    pages: PathBuf,
    config_text: String,
}

fn gateway_config(g: &Gateway, backends: &[Backend]) -> String {
    let dir = &g.env.dir.path();
    let addr = |name: &str| backends.iter().find(|b| b.name == name).map(|b| b.addr).expect("backend");
    let mut s = format!(
        r#"# Mirrors the owner's Caddy gateway (14 services) plus three test-only services.
[tailscale]
socket = "{socket}"

[listen]
https = ["{https}"]
proxy_protocol = ["{proxy}"]
redirect_http = ["{redirect}"]

[cache]
dir = "{cache}"

[admin]
socket = "{admin}"

[limits]
max_header_bytes = "5MB"                 # Caddy: max_header_size 5MB

[timeouts]
upstream_response = "10s"

[defaults]
forward_auth = {{ url = "http://{auth}/api/verify?rd=https://auth.example.com/", copy_headers = ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"] }}
error_pages = "{pages}"

[services.grafana]
upstream = "http://{grafana}"
bypass_auth = true
tailscale_identity = true

[services.jellyfin]
upstream = "http://{jellyfin}"
bypass_auth = true

[services.immich]
upstream = "http://{immich}"
bypass_auth = true
max_body_bytes = "64KB"

[services.jellyseerr]
upstream = "http://{jellyseerr}"
bypass_auth = true

[services.audiobookshelf]
upstream = "http://{audiobookshelf}"
bypass_auth = true
cors = true
cors_origins = ["https://app.example.com"]

[services.homepage]
upstream = "http://{homepage}"
cors = true

[services.qbittorrent]
upstream = "https://{https_backend}"
insecure_skip_verify = true

"#,
        socket = dir.join("ts.sock").display(),
        https = g.env.https,
        proxy = g.env.proxy.expect("proxy listener"),
        redirect = g.redirect,
        cache = dir.join("cache").display(),
        admin = g.env.admin_socket.display(),
        auth = g.auth.addr,
        pages = g.pages.display(),
        grafana = addr("grafana"),
        jellyfin = addr("jellyfin"),
        immich = addr("immich"),
        jellyseerr = addr("jellyseerr"),
        audiobookshelf = addr("audiobookshelf"),
        homepage = addr("homepage"),
        https_backend = g.https_backend.addr,
    );
    for name in ["sonarr", "radarr", "prowlarr", "lidarr", "bazarr", "navidrome", "prometheus"] {
        s.push_str(&format!("[services.{name}]\nupstream = \"http://{}\"\n\n", addr(name)));
    }
    s.push_str(&format!(
        r#"# Test-only services.
[services.vault]
passthrough = "{vault}"
bypass_auth = true

[services.strict]
upstream = "https://{https_backend}"
bypass_auth = true

[services.authdown]
upstream = "http://{authdown}"
forward_auth = {{ url = "http://{refused}/api/verify", copy_headers = ["Remote-User"] }}
"#,
        vault = g.vault.addr,
        https_backend = g.https_backend.addr,
        authdown = g.authdown.addr,
        refused = closed_port_addr(),
    ));
    s
}

/// `127.0.0.1:PORT` where nothing listens.
fn closed_port_addr() -> String {
    format!("127.0.0.1:{}", free_port())
}

async fn gateway() -> Gateway {
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.extend(["strict", "authdown"]); // vault needs no certificate: not in CertDomains
    let mut sim = SimConfig::storage(SUFFIX, &names);
    sim.peers = vec![
        SimPeer::user("127.0.0.1".parse().expect("ip"), "alice@example.com", "Alice Zoë"),
        SimPeer::user("100.64.0.7".parse().expect("ip"), "bob@example.com", "Bob"),
    ];
    let env = Env::start(EnvOptions { sim, proxy_protocol: true, start_router: false, ..EnvOptions::default() }).await;
    let pages = env.dir.path().join("errors");
    std::fs::create_dir_all(&pages).expect("pages dir");
    std::fs::write(pages.join("404.html"), "<h1>custom 404</h1>").expect("404");
    std::fs::write(pages.join("502.html"), "<h1>custom 502</h1>").expect("502");
    std::fs::write(pages.join("503.html"), "<h1>custom 503</h1>").expect("503");
    let https_backend = tls_backend(env.dir.path(), "https-upstream", "backend.lan").await;
    let vault = tls_backend(env.dir.path(), "vault", &fqdn("vault")).await;
    let mut g = Gateway {
        auth: auth_server().await,
        https_backend,
        vault,
        authdown: backend::spawn("authdown").await.expect("backend"),
        redirect: format!("127.0.0.1:{}", free_port()).parse().expect("addr"),
        pages,
        config_text: String::new(),
        env,
    };
    let text = gateway_config(&g, &g.env.backends);
    std::fs::write(&g.env.config, &text).expect("write config");
    g.config_text = text;
    g.env.start_router().await;
    g
}

// ---------------------------------------------------------------------------------
// Client helpers

/// curl output → (body, status, response headers lower-cased).
async fn fetch(env: &Env, name: &str, path: &str, extra: &[&str]) -> (String, u16, String) {
    let hdr = env.dir.path().join(format!("hdr-{}", free_port()));
    let mut args: Vec<&str> = vec!["-D"];
    let hdr_s = hdr.display().to_string();
    args.push(&hdr_s);
    args.extend_from_slice(extra);
    let out = curl(env, name, path, &args).await;
    let (body, status) = body_and_status(&out);
    let headers = std::fs::read_to_string(&hdr).unwrap_or_default().to_ascii_lowercase();
    let _ = std::fs::remove_file(&hdr);
    assert!(
        status != 0,
        "curl failed for {name}{path}: {}\nrouter log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        env.router().logs()
    );
    (body, status, headers)
}

// ---------------------------------------------------------------------------------
// Tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owner_gateway_passes_check_and_forward_auth_works_over_h1_and_h2() {
    let g = gateway().await;
    let env = &g.env;
    let check = tokio::process::Command::new(env!("CARGO_BIN_EXE_snirouter"))
        .args(["check", "--config"])
        .arg(&env.config)
        .output()
        .await
        .expect("snirouter check");
    assert!(
        check.status.success(),
        "snirouter check failed:\n{}{}\n--- config ---\n{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr),
        g.config_text
    );
    for name in SERVICES.iter().chain(&["strict", "authdown"]) {
        env.wait_serving(name, WAIT).await;
    }

    for http2 in [false, true] {
        let v: &[&str] = if http2 { &["--http2"] } else { &["--http1.1"] };
        // Bypassed services answer without a session.
        for name in ["grafana", "jellyfin", "immich", "jellyseerr", "audiobookshelf"] {
            let (body, status, _) = fetch(env, name, "/", v).await;
            assert_eq!(status, 200, "{name} (bypass_auth): {body}");
        }
        for name in PROTECTED {
            // No session: Authelia's redirect reaches the client, the upstream is not asked.
            let (body, status, headers) = fetch(env, name, "/page?x=1", v).await;
            assert_eq!(status, 302, "{name} without a session: {body}");
            let location = header_line(&headers, "location").unwrap_or_default();
            assert_eq!(
                location,
                format!("https://auth.example.com/?rd=https://{}:{}/page?x=1", fqdn(name), env.https.port()),
                "{name}"
            );
            assert!(header_line(&headers, "set-cookie").is_some_and(|c| c.starts_with("authelia_flow=1")), "{headers}");
            assert!(body.contains("Found"), "the auth answer's body is passed on: {body}");

            // Good session: the upstream gets Remote-* from the auth answer, nothing else.
            let mut args = v.to_vec();
            args.extend(["-H", GOOD]);
            let (body, status, _) = fetch(env, name, "/page?x=1", &args).await;
            assert_eq!(status, 200, "{name} with a session: {body}");
            let echo = json(&body);
            assert_eq!(echo["headers"]["remote-user"], REMOTE_USER, "{name}: {echo}");
            assert_eq!(echo["headers"]["remote-groups"], "admins,dev");
            assert_eq!(echo["headers"]["remote-email"], "alice@example.com");
            assert!(echo["headers"]["x-not-copied"].is_null(), "only copy_headers are copied: {echo}");
        }
    }

    // What the auth server was told about a POST.
    g.auth.seen.lock().expect("lock").clear();
    let (_, status, _) = fetch(
        env,
        "sonarr",
        "/api/v3/queue?page=2",
        &["-X", "POST", "-H", GOOD, "-H", "Accept: application/json", "-d", "x=1"],
    )
    .await;
    assert_eq!(status, 200);
    let seen = g.auth.seen.lock().expect("lock").clone();
    let last = seen.last().expect("the auth server was asked");
    let get = |n: &str| last.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    assert_eq!(get("x-forwarded-method"), "POST");
    assert_eq!(get("x-forwarded-proto"), "https");
    assert_eq!(get("x-forwarded-host"), format!("{}:{}", fqdn("sonarr"), env.https.port()));
    assert_eq!(get("x-forwarded-uri"), "/api/v3/queue?page=2");
    assert_eq!(get("x-forwarded-for"), "127.0.0.1");
    assert_eq!(get("cookie"), "session=good");
    assert_eq!(get("accept"), "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_forged_identity_headers_never_reach_an_upstream() {
    let g = gateway().await;
    let env = &g.env;
    for name in ["grafana", "jellyfin", "sonarr"] {
        env.wait_serving(name, WAIT).await;
    }
    let forged = [
        "-H",
        "Remote-User: mallory",
        "-H",
        "remote-groups: admins",
        "-H",
        "Remote-Email: mallory@evil.example",
        "-H",
        "Tailscale-User-Login: mallory@evil.example",
        "-H",
        "Tailscale-User-Name: Mallory",
        "-H",
        "Tailscale-User-Profile-Pic: https://evil.example/x.png",
        "-H",
        "Tailscale-Headers-Info: forged",
        // CGI, WSGI and PHP-FPM read these as HTTP_REMOTE_USER etc. (issue 14).
        "-H",
        "Remote_User: mallory",
        "-H",
        "Tailscale_User_Login: mallory@evil.example",
        "-H",
        "X_Forwarded_For: 6.6.6.6",
        "-H",
        "Forwarded: for=6.6.6.6;proto=http",
        "-H",
        "X-Forwarded-Port: 1",
        "-H",
        "X-Forwarded-Prefix: /evil",
        "-H",
        "X-Forwarded-Server: evil.example",
    ];
    for http2 in [false, true] {
        let mut args: Vec<&str> = vec![if http2 { "--http2" } else { "--http1.1" }];
        args.extend(forged);
        // Bypassed service without identity: every forged header is gone.
        let (body, status, _) = fetch(env, "jellyfin", "/", &args).await;
        assert_eq!(status, 200, "{body}");
        let echo = json(&body);
        for h in [
            "remote-user",
            "remote-groups",
            "remote-email",
            "tailscale-user-login",
            "tailscale-user-name",
            "tailscale-user-profile-pic",
            "tailscale-headers-info",
            "remote_user",
            "tailscale_user_login",
            "x_forwarded_for",
            "forwarded",
            "x-forwarded-port",
            "x-forwarded-prefix",
            "x-forwarded-server",
        ] {
            assert!(echo["headers"][h].is_null(), "{h} reached jellyfin: {echo}");
        }
        assert_eq!(echo["headers"]["x-forwarded-for"], "127.0.0.1", "{echo}");
        // Protected service: only the auth server's values arrive.
        let mut with_session = args.clone();
        with_session.extend(["-H", GOOD]);
        let echo = json(&fetch(env, "sonarr", "/", &with_session).await.0);
        assert_eq!(echo["headers"]["remote-user"], REMOTE_USER, "{echo}");
        assert_eq!(echo["headers"]["remote-groups"], "admins,dev", "{echo}");
        assert!(echo["headers"]["tailscale-user-login"].is_null(), "{echo}");
        // Identity service: whois(127.0.0.1) is alice, whatever the client claims.
        let echo = json(&fetch(env, "grafana", "/", &args).await.0);
        assert_eq!(echo["headers"]["tailscale-user-login"], "alice@example.com", "{echo}");
        assert_eq!(echo["headers"]["tailscale-user-name"], "=?utf-8?q?Alice_Zo=C3=AB?=", "{echo}");
        assert_eq!(echo["headers"]["tailscale-user-profile-pic"], "https://example.com/avatars/1.png");
        assert_eq!(echo["headers"]["tailscale-headers-info"], "https://tailscale.com/s/serve-headers");
        assert!(echo["headers"]["remote-user"].is_null(), "{echo}");
    }

    // Through the PROXY v2 listener the header's source is the identity: bob, or nobody.
    let sim_roots = roots_from(&env.ca);
    for (source, want) in [("100.64.0.7:40000", Some("bob@example.com")), ("100.64.0.99:40000", None)] {
        let tls = via_proxy(env, source, "grafana", Arc::clone(&sim_roots)).await;
        let req = format!(
            "GET /who HTTP/1.1\r\nHost: {}\r\nTailscale-User-Login: mallory@evil.example\r\nConnection: close\r\n\r\n",
            fqdn("grafana")
        );
        let text = raw_http(tls, &req).await;
        let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
        let echo = json(body);
        match want {
            Some(login) => assert_eq!(echo["headers"]["tailscale-user-login"], login, "{echo}"),
            None => assert!(echo["headers"]["tailscale-user-login"].is_null(), "{echo}"),
        }
    }

    // WebSocket on the identity service still upgrades and echoes.
    let tcp = TcpStream::connect(env.https).await.expect("connect");
    let server = rustls::pki_types::ServerName::try_from(fqdn("grafana")).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(client_config(sim_roots)).connect(server, tcp).await.expect("tls");
    backend::ws_client::handshake(&mut tls, &fqdn("grafana"), "/ws").await.expect("websocket handshake");
    backend::ws_client::send_text(&mut tls, "grafana live").await.expect("send");
    let echoed = tokio::time::timeout(Duration::from_secs(10), backend::ws_client::recv_text(&mut tls))
        .await
        .expect("echo in time")
        .expect("recv");
    assert_eq!(echoed, "grafana live");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_down_is_502_error_pages_and_https_upstreams() {
    let g = gateway().await;
    let env = &g.env;
    for name in ["authdown", "sonarr", "qbittorrent", "strict"] {
        env.wait_serving(name, WAIT).await;
    }
    // Forward auth unreachable: 502 (with the custom page), never the upstream.
    for v in ["--http1.1", "--http2"] {
        let (body, status, headers) = fetch(env, "authdown", "/admin", &[v, "-H", GOOD]).await;
        assert_eq!(status, 502, "{body}");
        assert_eq!(body, "<h1>custom 502</h1>");
        assert!(header_line(&headers, "content-type").is_some_and(|c| c.starts_with("text/html")), "{headers}");
    }
    assert_eq!(g.authdown.hits(), 0, "the upstream of a service whose auth server is down was contacted");
    let logs = env.router().logs();
    assert!(logs.contains("forward_auth server failed") && logs.contains("authdown"), "router log:\n{logs}");

    // Error pages for upstream answers: 404 and 503 have pages, 500 has none (upstream body).
    let (body, status, _) = fetch(env, "sonarr", "/status/404", &["-H", GOOD]).await;
    assert_eq!((status, body.as_str()), (404, "<h1>custom 404</h1>"));
    let (body, status, _) = fetch(env, "sonarr", "/status/503", &["--http2", "-H", GOOD]).await;
    assert_eq!((status, body.as_str()), (503, "<h1>custom 503</h1>"));
    let (body, status, _) = fetch(env, "sonarr", "/status/500", &["-H", GOOD]).await;
    assert_eq!(status, 500);
    assert_eq!(json(&body)["service"], "sonarr", "no 500.html: the upstream's own body");

    // https:// upstream with a certificate from an unknown CA: insecure_skip_verify works …
    let (body, status, _) = fetch(env, "qbittorrent", "/api/v2/app/version", &["-H", GOOD]).await;
    assert_eq!(status, 200, "{body}");
    let echo = json(&body);
    assert_eq!((echo["backend"].as_str(), echo["tls"].as_bool()), (Some("https-upstream"), Some(true)));
    assert_eq!(echo["path"], "/api/v2/app/version");
    assert_eq!(echo["headers"]["remote-user"], REMOTE_USER);
    // … and without it the certificate is refused: a 502 (router-made, custom page).
    let (body, status, _) = fetch(env, "strict", "/", &[]).await;
    assert_eq!((status, body.as_str()), (502, "<h1>custom 502</h1>"));
    let logs = env.router().logs();
    assert!(logs.contains("insecure_skip_verify"), "the log names the fix:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cors_preflight_echo_and_redirect_http() {
    let g = gateway().await;
    let env = &g.env;
    for name in ["homepage", "audiobookshelf"] {
        env.wait_serving(name, WAIT).await;
    }
    let origin = "Origin: https://dash.example.com";
    for v in ["--http1.1", "--http2"] {
        // Preflight on a protected service: answered here, no session needed.
        let (body, status, headers) = fetch(
            env,
            "homepage",
            "/api/widgets",
            &[
                v,
                "-X",
                "OPTIONS",
                "-H",
                origin,
                "-H",
                "Access-Control-Request-Method: PUT",
                "-H",
                "Access-Control-Request-Headers: x-api-key, content-type",
            ],
        )
        .await;
        assert_eq!(status, 204, "{body}\n{headers}");
        assert_eq!(header_line(&headers, "access-control-allow-origin"), Some("https://dash.example.com"));
        assert_eq!(header_line(&headers, "access-control-allow-credentials"), Some("true"));
        assert_eq!(header_line(&headers, "access-control-allow-headers"), Some("x-api-key, content-type"));
        assert!(header_line(&headers, "access-control-allow-methods").is_some_and(|m| m.contains("put")), "{headers}");
        assert!(header_line(&headers, "access-control-max-age").is_some(), "{headers}");
        assert!(headers.contains("vary: origin"), "{headers}");

        // A credentialed request: Origin echoed on the upstream's answer.
        let (body, status, headers) = fetch(env, "homepage", "/", &[v, "-H", origin, "-H", GOOD]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(header_line(&headers, "access-control-allow-origin"), Some("https://dash.example.com"));
        assert_eq!(header_line(&headers, "access-control-allow-credentials"), Some("true"));
        assert!(headers.contains("vary: origin"), "{headers}");
        // Even the auth redirect carries them (the browser can follow it).
        let (_, status, headers) = fetch(env, "homepage", "/", &[v, "-H", origin]).await;
        assert_eq!(status, 302);
        assert_eq!(header_line(&headers, "access-control-allow-origin"), Some("https://dash.example.com"));

        // Allow-list: only listed origins are echoed.
        let (_, status, headers) =
            fetch(env, "audiobookshelf", "/", &[v, "-H", "Origin: https://app.example.com"]).await;
        assert_eq!(status, 200);
        assert_eq!(header_line(&headers, "access-control-allow-origin"), Some("https://app.example.com"));
        let (_, status, headers) = fetch(env, "audiobookshelf", "/", &[v, "-H", "Origin: https://evil.example"]).await;
        assert_eq!(status, 200);
        assert!(header_line(&headers, "access-control-allow-origin").is_none(), "{headers}");
        assert!(headers.contains("vary: origin"), "{headers}");
    }

    // redirect_http: 308 to the same URL over https, only for served names.
    let curl_http = |host: Option<String>, extra: &'static [&'static str]| {
        let url = format!("http://{}/a/b?c=d", g.redirect);
        async move {
            let mut cmd = tokio::process::Command::new("curl");
            cmd.args(["-sS", "--max-time", "10", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}"]);
            if let Some(h) = host {
                cmd.args(["-H", &format!("Host: {h}")]);
            }
            cmd.args(extra).arg(url);
            let out = cmd.output().await.expect("curl");
            String::from_utf8_lossy(&out.stdout).into_owned()
        }
    };
    let out = curl_http(Some(format!("{}:80", fqdn("grafana"))), &[]).await;
    assert_eq!(out, format!("308 https://{}/a/b?c=d", fqdn("grafana")));
    let out = curl_http(Some("evil.example".into()), &[]).await;
    assert!(out.starts_with("400"), "unknown Host: {out}");
    let out = curl_http(Some(String::new()), &["-0"]).await; // HTTP/1.0 without Host
    assert!(out.starts_with("400"), "missing Host: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_431_and_body_limit_413() {
    let g = gateway().await;
    let env = &g.env;
    env.wait_serving("immich", WAIT).await;
    // The raw TLS clients below name jellyfin: its certificate must be there too.
    env.wait_serving("jellyfin", WAIT).await;

    // 300 KB of header: far over hyper's 64 KiB default, under the 5 MB limit.
    let sim_roots = roots_from(&env.ca);
    let tcp = TcpStream::connect(env.https).await.expect("connect");
    let server = rustls::pki_types::ServerName::try_from(fqdn("jellyfin")).expect("name");
    let tls = tokio_rustls::TlsConnector::from(client_config(Arc::clone(&sim_roots)))
        .connect(server, tcp)
        .await
        .expect("tls");
    let req = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        fqdn("jellyfin"),
        "a".repeat(300_000)
    );
    let text = raw_http(tls, &req).await;
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "300 KB header under max_header_bytes = 5MB: {:?}\nrouter log:\n{}",
        &text[..text.len().min(300)],
        env.router().logs()
    );

    // Over 5 MB: 431 from the router (raw TLS client; curl cannot send that much).
    let tcp = TcpStream::connect(env.https).await.expect("connect");
    let server = rustls::pki_types::ServerName::try_from(fqdn("jellyfin")).expect("name");
    let mut tls =
        tokio_rustls::TlsConnector::from(client_config(roots_from(&env.ca))).connect(server, tcp).await.expect("tls");
    let head = format!("GET / HTTP/1.1\r\nHost: {}\r\nX-Huge: ", fqdn("jellyfin"));
    tls.write_all(head.as_bytes()).await.expect("head");
    let chunk = vec![b'a'; 64 * 1024];
    let mut sent = 0usize;
    while sent < 5_100_000 {
        if tls.write_all(&chunk).await.is_err() {
            break;
        }
        sent += chunk.len();
    }
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(15), tls.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    assert!(
        text.starts_with("HTTP/1.1 431"),
        "expected 431 after {sent} header bytes, got {:?}",
        &text[..text.len().min(200)]
    );

    // Body limit (immich: 64 KB): Content-Length fast path and streamed (chunked).
    let file = env.dir.path().join("body");
    std::fs::write(&file, vec![b'z'; 100_000]).expect("write");
    let at_file = format!("@{}", file.display());
    for v in ["--http1.1", "--http2"] {
        let (body, status, _) = fetch(env, "immich", "/upload", &[v, "--data-binary", &at_file]).await;
        assert_eq!(status, 413, "{v} declared 100 KB: {body}");
        assert!(body.contains("max_body_bytes"), "{body}");
    }
    let (body, status, _) =
        fetch(env, "immich", "/upload", &["--http1.1", "-H", "Transfer-Encoding: chunked", "--data-binary", &at_file])
            .await;
    assert_eq!(status, 413, "chunked 100 KB: {body}");
    let small = env.dir.path().join("small");
    std::fs::write(&small, vec![b'z'; 60_000]).expect("write");
    let (body, status, _) = fetch(
        env,
        "immich",
        "/upload",
        &["--http1.1", "-H", "Transfer-Encoding: chunked", "--data-binary", &format!("@{}", small.display())],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["received"], 60_000);
    let logs = env.router().logs();
    assert!(logs.contains("413") && logs.contains("immich"), "router log:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passthrough_keeps_the_backend_tls_session_end_to_end() {
    let g = gateway().await;
    let env = &g.env;
    env.wait_serving("grafana", WAIT).await;
    let vault = fqdn("vault");

    // openssl sees the backend's own certificate (serial, issuer chain of its own CA).
    let script = format!(
        "openssl s_client -connect {} -servername {vault} -CAfile {} -verify_return_error </dev/null 2>/dev/null | openssl x509 -noout -serial",
        env.https,
        g.vault.root.display()
    );
    let out =
        tokio::process::Command::new("sh").args(["-c", &script]).stdin(Stdio::null()).output().await.expect("openssl");
    let serial = String::from_utf8_lossy(&out.stdout).trim().to_ascii_lowercase();
    assert_eq!(serial, format!("serial={}", g.vault.serial), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    let out = tokio::process::Command::new("openssl")
        .args(["s_client", "-connect", &env.https.to_string(), "-servername", &vault, "-CAfile"])
        .arg(&g.vault.root)
        .args(["-verify_return_error", "-brief"])
        .stdin(Stdio::null())
        .output()
        .await
        .expect("openssl");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("Verification: OK"), "verified against the backend's CA, not the router's:\n{text}");

    // HTTP inside the passed-through session comes from the backend itself.
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&g.vault.root)
        .arg("--resolve")
        .arg(format!("{vault}:{}:127.0.0.1", env.https.port()))
        .arg(format!("https://{vault}:{}/v1/sys/health", env.https.port()))
        .output()
        .await
        .expect("curl");
    let echo = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(echo["backend"], "vault", "{echo}");
    assert_eq!(echo["path"], "/v1/sys/health");
    assert!(echo["headers"]["x-forwarded-for"].is_null(), "the router did not touch the HTTP: {echo}");

    // Also behind the PROXY v2 listener (tailscaled's serve-config path).
    let tls = via_proxy(env, "100.64.0.7:1234", "vault", roots_from(&g.vault.root)).await;
    let peer_serial = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .expect("peer certificate");
    let want = (0..g.vault.serial.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&g.vault.serial[i..i + 2], 16).expect("hex"))
        .collect::<Vec<u8>>();
    assert!(
        peer_serial.windows(want.len()).any(|w| w == want.as_slice()),
        "the PROXY listener passed the backend's certificate through"
    );
    let text = raw_http(tls, &format!("GET /x HTTP/1.1\r\nHost: {vault}\r\nConnection: close\r\n\r\n")).await;
    assert!(text.starts_with("HTTP/1.1 200") && text.contains("\"backend\":\"vault\""), "{text}");

    // The router never asked tailscaled for a certificate for the passthrough name.
    let asked: Vec<String> =
        env.sim.requests().iter().map(|r| format!("{r:?}")).filter(|r| r.contains(&vault)).collect();
    assert!(asked.is_empty(), "certificate requested for a passthrough name: {asked:?}");

    // `snirouter status` does not call a passthrough service "not serving" for lacking
    // a certificate it never needs.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_snirouter"))
        .args(["status", "--json", "--config"])
        .arg(&env.config)
        .output()
        .await
        .expect("status");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let vault_status = report["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == "vault"))
        .cloned()
        .expect("vault in status");
    assert_eq!(vault_status["serving"], true, "{vault_status}");
}
