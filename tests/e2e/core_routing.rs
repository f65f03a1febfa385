//! Issue 2: every name handshakes and routes; unknown SNI, Host mismatch, path routing,
//! WebSocket, large streamed bodies, 502/504.

use std::time::Duration;

use crate::harness::*;
use snirouter_testkit::backend;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_fourteen_names_handshake_and_route() {
    let env = Env::start(EnvOptions::default()).await;
    for name in SERVICES {
        env.wait_serving(name, WAIT).await;
    }
    for name in SERVICES {
        let out = curl(&env, name, "/hello/world?x=1", &[]).await;
        let (body, status) = body_and_status(&out);
        assert_eq!(status, 200, "{name}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&body).expect("backend JSON");
        assert_eq!(v["service"], name);
        assert_eq!(v["path"], "/hello/world?x=1");
        // curl sends the port because the test listener is not on 443.
        assert_eq!(v["headers"]["host"], format!("{}:{}", fqdn(name), env.https.port()).as_str());
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
        assert_eq!(v["headers"]["x-forwarded-for"], "127.0.0.1");
        assert_eq!(v["headers"]["x-forwarded-host"], format!("{}:{}", fqdn(name), env.https.port()).as_str());
    }
    // An outside TLS stack verifies the whole chain against the (simulated) root.
    let out = s_client(&env, &fqdn("grafana")).await;
    assert!(out.contains("Verification: OK"), "openssl s_client:\n{out}");
    assert!(out.contains("TLSv1.3"), "openssl s_client:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_gets_unrecognized_name_not_internal_error() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    let out = s_client(&env, "nosuch.tailnet-e2e.ts.net").await;
    assert!(out.contains("unrecognized name"), "openssl s_client:\n{out}");
    assert!(!out.contains("internal error"), "openssl s_client:\n{out}");

    let host = "nosuch.tailnet-e2e.ts.net";
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&env.ca)
        .arg("--resolve")
        .arg(format!("{host}:{}:127.0.0.1", env.https.port()))
        .arg(format!("https://{host}:{}/", env.https.port()))
        .output()
        .await
        .expect("curl");
    assert_eq!(out.status.code(), Some(35), "curl exit code for a TLS alert");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unrecognized name"), "curl: {err}");
    // The other names are unaffected.
    let (_, status) = body_and_status(&curl(&env, "jellyfin", "/", &[]).await);
    assert_eq!(status, 200);
    let logs = env.router().logs();
    assert!(logs.contains("unknown SNI"), "router log:\n{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_must_match_sni_and_http2_routes_the_same() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    let other = format!("Host: {}", fqdn("jellyfin"));
    let out = curl(&env, "grafana", "/", &["-H", &other]).await;
    let (body, status) = body_and_status(&out);
    assert_eq!(status, 421, "{body}");
    assert!(body.contains("opened for grafana.tailnet-e2e.ts.net"), "{body}");

    // Host with a trailing dot and upper case is the same name.
    let same = format!("Host: {}.:{}", fqdn("grafana").to_uppercase(), env.https.port());
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &["-H", &same]).await);
    assert_eq!(status, 200);

    let out = curl(&env, "grafana", "/h2", &["--http2", "-w", "\n%{http_code}\n%{http_version}"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().rev();
    assert_eq!(lines.next(), Some("2"), "curl --http2 output: {text}");
    assert_eq!(lines.next(), Some("200"), "curl --http2 output: {text}");
    assert!(text.contains("\"service\":\"grafana\"") || text.contains("\"service\": \"grafana\""), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn path_routes_pick_the_longest_prefix() {
    let sonarr = backend::spawn("sonarr-backend").await.expect("backend");
    let api = backend::spawn("sonarr-api-backend").await.expect("backend");
    let web = backend::spawn("media-web").await.expect("backend");
    let mut opts = EnvOptions::default();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.push("media");
    opts.sim = snirouter_testkit::tailscaled::SimConfig::storage(SUFFIX, &names);
    opts.extra_services = format!(
        "[services.media]\nroutes = [\n  {{ path = \"/\", upstream = \"http://{}\" }},\n  {{ path = \"/sonarr\", upstream = \"http://{}\" }},\n  {{ path = \"/sonarr/api\", upstream = \"http://{}\", strip_prefix = true }},\n]\n",
        web.addr, sonarr.addr, api.addr
    );
    let env = Env::start(opts).await;
    env.wait_serving("media", WAIT).await;
    for (path, service, seen_path) in [
        ("/", "media-web", "/"),
        ("/sonarrx", "media-web", "/sonarrx"),
        ("/sonarr", "sonarr-backend", "/sonarr"),
        ("/sonarr/calendar?week=2", "sonarr-backend", "/sonarr/calendar?week=2"),
        ("/sonarr/api/v3/series", "sonarr-api-backend", "/v3/series"),
    ] {
        let (body, status) = body_and_status(&curl(&env, "media", path, &[]).await);
        assert_eq!(status, 200, "{path}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["service"], service, "{path}");
        assert_eq!(v["path"], seen_path, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_passes_through() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("homepage", WAIT).await;
    let cfg = client_tls(&env, &[]);
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(fqdn("homepage")).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.expect("tls");
    let ws = backend::ws_client::handshake(&mut tls, &fqdn("homepage"), "/ws").await;
    ws.expect("websocket handshake through the router");
    for msg in ["hello", "über", &"x".repeat(70_000)] {
        backend::ws_client::send_text(&mut tls, msg).await.expect("send");
        let echoed = tokio::time::timeout(Duration::from_secs(10), backend::ws_client::recv_text(&mut tls))
            .await
            .expect("echo in time")
            .expect("recv");
        assert_eq!(echoed, msg);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_with_bounded_memory() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("jellyfin", WAIT).await;
    let before = env.router().peak_rss_kib();
    const GIB: u64 = 1 << 30;
    let out = curl(&env, "jellyfin", &format!("/bytes/{GIB}"), &["-o", "/dev/null", "-w", "\n%{size_download}"]).await;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        text.lines().last(),
        Some(GIB.to_string().as_str()),
        "curl: {text} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Upload: 256 MiB streamed from a pipe, counted by the backend.
    let port = env.https.port();
    let host = fqdn("jellyfin");
    let script = format!(
        "head -c 268435456 /dev/zero | curl -sS --max-time 120 --cacert {} --resolve {host}:{port}:127.0.0.1 -T - https://{host}:{port}/upload",
        env.ca.display()
    );
    let out = tokio::process::Command::new("sh").args(["-c", &script]).output().await.expect("upload");
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(body.contains("268435456"), "upload answer: {body} {}", String::from_utf8_lossy(&out.stderr));

    let after = env.router().peak_rss_kib();
    eprintln!("router peak RSS before: {before} KiB, after 1 GiB down + 256 MiB up: {after} KiB");
    assert!(after < before + 32 * 1024, "peak RSS grew from {before} KiB to {after} KiB while streaming");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_refused_is_502_and_silent_is_504() {
    let hang = backend::spawn("slow").await.expect("backend");
    let dead_port = free_port();
    let mut opts = EnvOptions::default();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.extend(["broken", "slow"]);
    opts.sim = snirouter_testkit::tailscaled::SimConfig::storage(SUFFIX, &names);
    opts.timeouts = "upstream_response = \"2s\"\n".into();
    opts.extra_services = format!(
        "[services.broken]\nupstream = \"http://127.0.0.1:{dead_port}\"\n\n[services.slow]\nupstream = \"http://{}\"\n",
        hang.addr
    );
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    // wait_serving needs a 2xx-independent success: curl succeeds on any HTTP answer.
    env.wait_serving("broken", WAIT).await;
    let (body, status) = body_and_status(&curl(&env, "broken", "/", &[]).await);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("service broken") && body.contains("refused"), "{body}");

    let (body, status) = body_and_status(&curl(&env, "slow", "/hang", &[]).await);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("service slow") && body.contains("timeouts.upstream_response"), "{body}");
    // Other services are unaffected.
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
    let logs = env.router().logs();
    assert!(logs.contains("service=broken") || logs.contains("service: broken"), "log names the service:\n{logs}");
}

/// `limits.max_upstream_connections`: multiplexed HTTP/2 requests to one upstream wait
/// for a free upstream connection instead of opening one each; a response body still
/// streaming holds its connection; a wait longer than `timeouts.upstream_response` is a
/// 504 that names the key. Other services keep their own connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_connections_are_bounded_and_requests_wait_for_one() {
    let slow = backend::spawn("slow").await.expect("backend");
    let mut opts = EnvOptions::default();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.push("slow");
    opts.sim = snirouter_testkit::tailscaled::SimConfig::storage(SUFFIX, &names);
    // One HTTP/2 connection stays on one worker thread, and the limit is per thread.
    opts.timeouts = "upstream_response = \"3s\"\n\n[limits]\nmax_upstream_connections = 1\n".into();
    opts.extra_services = format!("[services.slow]\nupstream = \"http://{}\"\n", slow.addr);
    let env = Env::start(opts).await;
    env.wait_serving("slow", WAIT).await;

    // One HTTP/2 connection (one worker thread) for everything below.
    let host = fqdn("slow");
    let port = env.https.port();
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(host.clone()).expect("name");
    let tls = tokio_rustls::TlsConnector::from(client_tls(&env, &[b"h2"])).connect(name, tcp).await.expect("tls");
    let io = hyper_util::rt::TokioIo::new(tls);
    let (mut h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(conn);
    let get = |path: &str| {
        hyper::Request::get(format!("https://{host}:{port}{path}"))
            .body(http_body_util::Empty::<hyper::body::Bytes>::new())
            .expect("request")
    };

    // Eleven requests multiplexed at once, 200 ms each at the backend.
    let started = std::time::Instant::now();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..11 {
        let (mut h2, req) = (h2.clone(), get(&format!("/delay/200?n={i}")));
        requests.spawn(async move { h2.send_request(req).await.map(|r| r.status()) });
    }
    while let Some(answer) = requests.join_next().await {
        assert_eq!(answer.expect("task").expect("answer"), 200);
    }
    assert_eq!(slow.peak_in_flight(), 1, "requests reached the upstream one at a time");
    assert!(started.elapsed() >= Duration::from_millis(11 * 200), "the requests waited for each other");
    // Connections are reused, not opened per request (a request that finds its slot
    // free just before the connection is back in the pool may open one more).
    assert!(slow.connections() <= 4, "upstream connections for 12 requests: {}", slow.connections());

    // A download whose body is still streaming holds the only upstream connection; a
    // request sent behind it waits and gets a 504 naming the limit once
    // timeouts.upstream_response passes. Meanwhile another service answers at once.
    let download = h2.send_request(get("/bytes/100000000")).await.expect("download starts");
    assert_eq!(download.status(), 200);
    let waited = std::time::Instant::now();
    let other = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        body_and_status(&curl(&env, "grafana", "/", &[]).await).1
    };
    let (blocked, other) = tokio::join!(h2.send_request(get("/status/200")), other);
    assert_eq!(other, 200);
    let blocked = blocked.expect("an answer");
    assert_eq!(blocked.status(), 504);
    assert!(waited.elapsed() >= Duration::from_secs(2), "it waited for timeouts.upstream_response");
    let body = http_body_util::BodyExt::collect(blocked.into_body()).await.expect("body").to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("limits.max_upstream_connections"), "the 504 names the limit: {body}");
    drop(download);
    let logs = env.router().logs();
    assert!(logs.contains("limits.max_upstream_connections"), "router log:\n{logs}");
}

/// Reads from an upstream are capped at 64 KiB (bounded memory while large bodies
/// stream), and a response head that grows past that is a 502 that says why: a 32 KiB
/// head passes, a 100 KiB one sent in pieces does not, and the router keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_upstream_response_head_is_a_502_that_says_why() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let size = if req.starts_with(b"GET /big") { 100 * 1024 } else { 32 * 1024 };
                let head = format!("HTTP/1.1 200 OK\r\nx-big: {}\r\ncontent-length: 2\r\n\r\nok", "a".repeat(size));
                // In 4 KiB pieces, as a slow upstream would send it: the router reads it
                // piece by piece and sees how large the unfinished head grows.
                for piece in head.as_bytes().chunks(4096) {
                    if s.write_all(piece).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            });
        }
    });
    let mut opts = EnvOptions::default();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.push("bighead");
    opts.sim = snirouter_testkit::tailscaled::SimConfig::storage(SUFFIX, &names);
    opts.extra_services = format!("[services.bighead]\nupstream = \"http://{addr}\"\n");
    let env = Env::start(opts).await;
    env.wait_serving("bighead", WAIT).await;
    let (body, status) = body_and_status(&curl(&env, "bighead", "/small", &[]).await);
    assert_eq!((status, body.as_str()), (200, "ok"));
    let (body, status) = body_and_status(&curl(&env, "bighead", "/big", &[]).await);
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("service bighead") && body.contains("response header larger than 64 KiB"), "{body}");
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
    server.abort();
}

/// The harness itself: when the port it picked for the router was taken before the
/// router bound it (a backend or client got it from the kernel), the router reports
/// "Address already in use" and the harness moves the listener and starts it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn harness_moves_a_listener_whose_port_was_taken() {
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let squatter = std::net::TcpListener::bind(env.https).expect("take the router's port");
    let taken = env.https;
    env.start_router().await;
    assert_ne!(env.https, taken);
    env.wait_serving("grafana", WAIT).await;
    drop(squatter);
}
