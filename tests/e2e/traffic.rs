//! Issue 12: real traffic shapes behave as if connected directly — uploads longer than
//! `timeouts.upstream_response`, bodies bounded per read (not in total), long-polls and
//! streams that never make other requests wait, the upstream TLS handshake under
//! `timeouts.upstream_connect`, and WebSocket tunnels as first-class connections.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Frame;
use snirouter_testkit::backend;
use snirouter_testkit::tailscaled::SimConfig;

use crate::harness::*;
use crate::operate::{metrics_over, roots, service, tls, value, wait_status};

const WAIT: Duration = Duration::from_secs(60);

/// An environment with the sample services plus `extra` (name, upstream URL).
async fn env_with(extra: &[(&str, String)], timeouts: &str) -> Env {
    let mut opts = EnvOptions::default();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.extend(extra.iter().map(|(n, _)| *n));
    opts.sim = SimConfig::storage(SUFFIX, &names);
    opts.timeouts = timeouts.to_owned();
    opts.extra_services = extra.iter().map(|(n, u)| format!("[services.{n}]\nupstream = \"{u}\"\n\n")).collect();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    env
}

type H2 = hyper::client::conn::http2::SendRequest<ClientBody>;
type ClientBody = http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>;

/// One HTTP/2 connection to `name` (all its streams stay on one router thread).
async fn h2_connection(env: &Env, name: &str) -> H2 {
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let server = rustls::pki_types::ServerName::try_from(fqdn(name)).expect("name");
    let tls = tokio_rustls::TlsConnector::from(client_tls(env, &[b"h2"])).connect(server, tcp).await.expect("tls");
    let io = hyper_util::rt::TokioIo::new(tls);
    let (h2, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io).await.expect("h2 handshake");
    tokio::spawn(conn);
    h2
}

fn request(env: &Env, name: &str, method: &str, path: &str, body: ClientBody) -> hyper::Request<ClientBody> {
    hyper::Request::builder()
        .method(method)
        .uri(format!("https://{}:{}{path}", fqdn(name), env.https.port()))
        .body(body)
        .expect("request")
}

fn empty() -> ClientBody {
    http_body_util::Empty::new().boxed()
}

/// A request body that sends `first` and then nothing, never ending.
struct ThenSilence(Option<Bytes>);

impl hyper::body::Body for ThenSilence {
    type Data = Bytes;
    type Error = std::convert::Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::convert::Infallible>>> {
        match self.0.take() {
            Some(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
            None => Poll::Pending,
        }
    }
}

/// A 600 KB upload sent at 120 KB/s (about 5 s) to a service whose
/// `timeouts.upstream_response` is 2 s: the wait for the answer starts once the body
/// has been sent, so the upload succeeds, as it does without a proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upload_longer_than_upstream_response_succeeds_while_it_keeps_moving() {
    let env = env_with(&[], "upstream_response = \"2s\"\n").await;
    let file = env.dir.path().join("upload.bin");
    std::fs::write(&file, vec![7u8; 600_000]).expect("write upload");
    let started = Instant::now();
    let out =
        curl(&env, "immich", "/upload", &["--limit-rate", "120K", "--data-binary", &format!("@{}", file.display())])
            .await;
    let (body, status) = body_and_status(&out);
    assert_eq!(status, 200, "{body}{}\nrouter log:\n{}", String::from_utf8_lossy(&out.stderr), env.router().logs());
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).expect("json")["received"], 600_000);
    assert!(started.elapsed() > Duration::from_secs(3), "the upload really outlasted upstream_response");
}

/// `timeouts.idle` bounds each read of a body, not its total: on one HTTP/2
/// connection kept busy by other requests, an upload whose client goes quiet is
/// answered 408 naming the key, and a download whose upstream goes quiet is cut (reset,
/// never passed off as complete) — both after about `timeouts.idle`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quiet_bodies_are_ended_after_timeouts_idle_in_either_direction() {
    let env = env_with(&[], "idle = \"2s\"\n").await;
    let h2 = h2_connection(&env, "immich").await;
    // Other streams keep the connection itself from going idle.
    let busy = {
        let mut h2 = h2.clone();
        let reqs: Vec<_> = (0..40).map(|_| request(&env, "immich", "GET", "/", empty())).collect();
        tokio::spawn(async move {
            for r in reqs {
                let _ = h2.send_request(r).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
    };

    let upload = ThenSilence(Some(Bytes::from_static(&[1u8; 1024]))).boxed();
    let mut sender = h2.clone();
    let upload = tokio::spawn(sender.send_request(request(&env, "immich", "POST", "/upload", upload)));
    let download = h2.clone().send_request(request(&env, "immich", "GET", "/stall/1000", empty())).await;
    let download = download.expect("download head");
    assert_eq!(download.status(), 200);
    let mut body = download.into_body();
    let mut received = 0;
    let ended = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match body.frame().await {
                Some(Ok(f)) => received += f.data_ref().map_or(0, |d| d.len()),
                Some(Err(e)) => return Err(e.to_string()),
                None => return Ok(()),
            }
        }
    })
    .await
    .expect("the stalled download is cut within the bound");
    assert_eq!(received, 1000, "what the upstream sent arrived");
    assert!(ended.is_err(), "a cut body is an error, never a clean end");

    let answer = tokio::time::timeout(Duration::from_secs(20), upload).await.expect("answered").expect("task");
    let answer = answer.expect("an answer to the quiet upload");
    assert_eq!(answer.status(), 408);
    let text = answer.into_body().collect().await.expect("body").to_bytes();
    assert!(String::from_utf8_lossy(&text).contains("timeouts.idle"), "{}", String::from_utf8_lossy(&text));
    busy.abort();
    let logs = env.router().logs();
    assert!(logs.contains("response cut") && logs.contains("immich"), "the cut is logged with its service:\n{logs}");
    assert!(logs.contains("408"), "the 408 is logged:\n{logs}");
}

/// With the default config, 70 long-polls and 40 streaming downloads on one HTTP/2
/// connection (one router thread) to one upstream never make another request to it
/// wait: it is answered while every long-poll is still open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_polls_and_streams_never_make_other_requests_wait() {
    let env = env_with(&[], "").await;
    let h2 = h2_connection(&env, "navidrome").await;
    let polls_done = Arc::new(AtomicUsize::new(0));
    let mut polls = tokio::task::JoinSet::new();
    for i in 0..70 {
        let (mut h2, done) = (h2.clone(), Arc::clone(&polls_done));
        let req = request(&env, "navidrome", "GET", &format!("/delay/15000?poll={i}"), empty());
        polls.spawn(async move {
            let status = h2.send_request(req).await.map(|r| r.status());
            done.fetch_add(1, Ordering::SeqCst);
            status
        });
    }
    let mut streams = Vec::new();
    for i in 0..40 {
        let resp =
            h2.clone().send_request(request(&env, "navidrome", "GET", &format!("/bytes/50000000?s={i}"), empty()));
        streams.push(resp.await.unwrap_or_else(|e| panic!("stream head: {e}\nrouter log:\n{}", env.router().logs())));
    }
    let backend = &env.backends[SERVICES.iter().position(|s| *s == "navidrome").expect("navidrome backend")];
    let deadline = Instant::now() + Duration::from_secs(10);
    // The long-polls wait in the backend; the streams' heads have arrived (above).
    while backend.peak_in_flight() < 70 {
        assert!(
            Instant::now() < deadline,
            "only {} requests reached the upstream; router log:\n{}",
            backend.peak_in_flight(),
            env.router().logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let ping = h2.clone().send_request(request(&env, "navidrome", "GET", "/rest/system/ping", empty()));
    let ping = tokio::time::timeout(Duration::from_secs(10), ping).await.expect("answered").expect("ping");
    assert_eq!(ping.status(), 200);
    assert_eq!(polls_done.load(Ordering::SeqCst), 0, "answered while every long-poll was still open");
    drop(streams);
    polls.abort_all();
}

/// The TLS handshake to an `https://` upstream is part of `timeouts.upstream_connect`:
/// an upstream that accepts TCP and never answers the ClientHello is a 504 naming that
/// key after 1 s, not a wait for `timeouts.upstream_response` (60 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstream_tls_handshake_is_under_upstream_connect() {
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = silent.local_addr().expect("addr");
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            open.push(s);
        }
    });
    let env = env_with(
        &[("silent", format!("https://127.0.0.1:{}", addr.port()))],
        "upstream_connect = \"1s\"\nupstream_response = \"60s\"\n",
    )
    .await;
    env.wait_serving("silent", WAIT).await;
    let (body, status) = body_and_status(&curl(&env, "silent", "/", &[]).await);
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("timeouts.upstream_connect"), "{body}");
    held.abort();
}

async fn websocket(env: &Env, name: &str) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let mut ws = tls(env.https, &fqdn(name), roots(env)).await?;
    backend::ws_client::handshake(&mut ws, &fqdn(name), "/ws").await.map_err(|e| format!("ws handshake: {e:?}"))?;
    Ok(ws)
}

async fn echo(ws: &mut tokio_rustls::client::TlsStream<tokio::net::TcpStream>, msg: &str) -> Result<(), String> {
    backend::ws_client::send_text(ws, msg).await.map_err(|e| format!("send: {e:?}"))?;
    let got = tokio::time::timeout(Duration::from_secs(10), backend::ws_client::recv_text(ws))
        .await
        .map_err(|_| "no echo within 10 s".to_owned())?
        .map_err(|e| format!("recv: {e:?}"))?;
    if got == msg { Ok(()) } else { Err(format!("echoed {got:?}")) }
}

/// WebSocket tunnels are connections: they count in `snirouter_active_connections` and
/// per service (`snirouter_tunnels`, `status`), they hold their client's place under
/// `limits.max_connections_per_client`, and shutdown waits for them (within the grace
/// period) instead of cutting them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_are_counted_limited_and_drained() {
    let mut env = env_with(&[], "idle = \"20s\"\n\n[limits]\nmax_connections_per_client = 2\n").await;
    let mut first = websocket(&env, "homepage").await.expect("first tunnel");
    let mut second = websocket(&env, "homepage").await.expect("second tunnel");
    echo(&mut first, "one").await.expect("first echoes");
    echo(&mut second, "two").await.expect("second echoes");

    let (_, status) = wait_status(&env, "two tunnels", |s| s["tunnels"] == 2).await;
    assert_eq!(service(&status, "homepage")["requests"]["tunnels"], 2, "{status:#}");
    assert!(status["active_connections"].as_u64().expect("count") >= 2, "{status:#}");
    let socket = env.admin_socket.display().to_string();
    let metrics = metrics_over(&["--unix-socket", &socket, "http://snirouter/metrics"]).await;
    assert_eq!(value(&metrics, "snirouter_tunnels{service=\"homepage\"}"), 2.0);
    assert_eq!(value(&metrics, "snirouter_tunnels{service=\"grafana\"}"), 0.0);

    // Both of this client's places are taken by its tunnels.
    assert!(websocket(&env, "homepage").await.is_err(), "a third connection is over the per-client limit");
    let logs = env.router().logs();
    assert!(logs.contains("limits.max_connections_per_client"), "{logs}");
    drop(second);
    wait_status(&env, "one tunnel", |s| s["tunnels"] == 1).await;
    let third = websocket(&env, "homepage").await.expect("a closed tunnel frees its place");
    drop(third);

    // SIGTERM: listeners close, the open tunnel keeps working until it ends.
    let router = env.router.as_mut().expect("router");
    let pid = router.child.id().to_string();
    std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
    router.wait_log("the drain to start", WAIT, |l| l.contains("SIGTERM; draining")).await;
    echo(&mut first, "still here").await.expect("the tunnel survives the start of shutdown");
    assert!(router.child.try_wait().expect("wait").is_none(), "the router waits for the open tunnel");
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(15);
    while router.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the router exits once its last tunnel closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!router.logs().contains("grace period over"), "{}", router.logs());
}

/// `timeouts.tunnel_idle` (opt-in) closes a tunnel on which nothing moved for that
/// long; one that keeps moving stays open past it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tunnel_idle_closes_quiet_tunnels_only() {
    let env = env_with(&[], "tunnel_idle = \"1s\"\n").await;
    let mut busy = websocket(&env, "grafana").await.expect("busy tunnel");
    let mut quiet = websocket(&env, "grafana").await.expect("quiet tunnel");
    echo(&mut quiet, "hello").await.expect("quiet echoes once");
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(2500) {
        echo(&mut busy, "tick").await.expect("a moving tunnel stays open past tunnel_idle");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let closed = tokio::time::timeout(Duration::from_secs(10), backend::ws_client::recv_text(&mut quiet)).await;
    assert!(matches!(closed, Ok(Err(_))), "the quiet tunnel was closed: {closed:?}");
    let logs = env.router().wait_log("the idle close", WAIT, |l| l.contains("closing tunnel")).await;
    assert!(logs.contains("timeouts.tunnel_idle") && logs.contains("grafana"), "{logs}");
}

/// One client, 32 HTTP/2 connections × 16 streams at once, 4,096 requests in all (the
/// shape of `just bench`'s HTTP/2 run): more requests than the client's buffer budget
/// holds at once (32 MiB / 128 KiB), so some wait for others to end — and every one
/// ends; a wait never blocks the answers it waits for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_multiplexed_requests_from_one_client_all_finish() {
    let env = env_with(&[], "").await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..32 {
        let h2 = h2_connection(&env, "grafana").await;
        for _ in 0..16 {
            let mut h2 = h2.clone();
            let reqs: Vec<_> = (0..8).map(|i| request(&env, "grafana", "GET", &format!("/n?{i}"), empty())).collect();
            tasks.spawn({
                async move {
                    for r in reqs {
                        let resp = h2.send_request(r).await.expect("answer");
                        assert_eq!(resp.status(), 200);
                        resp.into_body().collect().await.expect("body");
                    }
                }
            });
        }
    }
    let all = async {
        while let Some(done) = tasks.join_next().await {
            done.expect("a stream of requests");
        }
    };
    tokio::time::timeout(Duration::from_secs(60), all)
        .await
        .unwrap_or_else(|_| panic!("stuck\n{}", env.router().logs()));
}
