//! Issue 4: the `[listen] proxy_protocol` listener end to end — a PROXY v2 header (built
//! with the `ppp` crate, as tailscaled's serve-config `ProxyProtocol: 2` sends it), then
//! TLS, then HTTP. The backend must see the header's source address; a missing,
//! truncated or garbage header closes only that connection.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

fn tls_config(env: &Env) -> Arc<rustls::ClientConfig> {
    client_tls(env, &[])
}

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// Connects to the PROXY listener, sends the header for `source`, completes TLS for `name`.
async fn connect(env: &Env, source: &str, name: &str) -> Result<Tls, String> {
    connect_to(env, env.proxy.expect("proxy listener"), source, name).await
}

/// Connects to `listener`, sends a PROXY header for `source`, completes TLS for `name`.
async fn connect_to(env: &Env, listener: SocketAddr, source: &str, name: &str) -> Result<Tls, String> {
    let mut tcp = TcpStream::connect(listener).await.map_err(|e| e.to_string())?;
    tcp.write_all(&proxy_header(source)).await.map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(fqdn(name)).map_err(|e| e.to_string())?;
    tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls_config(env)).connect(server_name, tcp),
    )
    .await
    .map_err(|_| "TLS handshake timed out".to_owned())?
    .map_err(|e| format!("tls: {e}"))
}

/// `GET /` on an established connection; returns the echo backend's JSON.
async fn get(tls: Tls, name: &str) -> serde_json::Value {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.expect("http handshake");
    tokio::spawn(conn);
    let req =
        http::Request::get("/who").header(http::header::HOST, fqdn(name)).body(Empty::<Bytes>::new()).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), sender.send_request(req))
        .await
        .expect("in time")
        .expect("response");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    serde_json::from_slice(&body).expect("backend JSON")
}

/// The server closes the connection (EOF or reset) within `within`, sending nothing.
async fn assert_closed(mut tcp: TcpStream, within: Duration, what: &str) {
    let mut buf = [0u8; 256];
    match tokio::time::timeout(within, tcp.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => {}
        Ok(Ok(n)) => panic!("{what}: the server answered {n} bytes instead of closing"),
        Err(_) => panic!("{what}: the connection was still open after {within:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_v2_source_address_reaches_the_backend() {
    let env = Env::start(EnvOptions { proxy_protocol: true, ..EnvOptions::default() }).await;
    env.wait_serving("grafana", WAIT).await;
    env.wait_serving("jellyfin", WAIT).await;
    for (source, name, want) in [
        ("100.101.102.103:51234", "grafana", "100.101.102.103"),
        ("[fd7a:115c:a1e0::abcd]:40000", "jellyfin", "fd7a:115c:a1e0::abcd"),
    ] {
        let tls = connect(&env, source, name).await.expect("connect through the PROXY listener");
        let v = get(tls, name).await;
        assert_eq!(v["service"], name);
        assert_eq!(v["headers"]["x-forwarded-for"], want, "{v}");
        assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    }
    // The plain TLS listener does not read PROXY headers: a header followed by a real
    // ClientHello is not TLS there, so the handshake fails (a listener that skipped the
    // header would complete it).
    let r = connect_to(&env, env.https, "100.101.102.103:1", "grafana").await;
    assert!(
        r.as_ref().is_err_and(|e| e.starts_with("tls:")),
        "the plain TLS listener: {:?}",
        r.map(|_| "handshake completed")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_headers_from_peers_outside_proxy_protocol_from_are_refused() {
    // Only 10.0.0.0/8 may send PROXY headers, so this test's loopback client may not.
    let opts = EnvOptions {
        proxy_protocol: true,
        listen: "proxy_protocol_from = [\"10.0.0.0/8\"]\n".to_owned(),
        ..EnvOptions::default()
    };
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let refused = connect(&env, "100.101.102.103:1", "grafana").await;
    assert!(refused.is_err(), "a well-formed header from an untrusted peer was accepted");
    let router = env.router.as_ref().expect("router");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !router.logs().contains("PROXY headers are taken only from listen.proxy_protocol_from") {
        assert!(tokio::time::Instant::now() < deadline, "no log line for the refusal:\n{}", router.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(router.logs().contains("peer=127.0.0.1:"), "{}", router.logs());
    let socket = env.admin_socket.to_str().expect("path").to_owned();
    let metrics = crate::operate::metrics_over(&["--unix-socket", &socket, "http://snirouter/metrics"]).await;
    let refused = "snirouter_tls_handshake_failures_total{reason=\"untrusted_proxy\"}";
    assert_eq!(crate::operate::value(&metrics, refused), 1.0, "{metrics}");
    // The plain TLS listener is not affected.
    let out = curl(&env, "grafana", "/", &[]).await;
    assert!(out.status.success(), "{out:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_proxy_headers_close_only_their_connection() {
    let opts =
        EnvOptions { proxy_protocol: true, timeouts: "proxy_header = \"1s\"\n".to_owned(), ..EnvOptions::default() };
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let proxy = env.proxy.expect("proxy listener");
    // A good connection, established before and used after the bad ones.
    let good = connect(&env, "100.101.102.103:1111", "grafana").await.expect("good connection");

    // 1. No header at all: a TLS ClientHello straight away.
    let tcp = TcpStream::connect(proxy).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(fqdn("grafana")).expect("name");
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        tokio_rustls::TlsConnector::from(tls_config(&env)).connect(name, tcp),
    )
    .await
    .expect("closed in time");
    assert!(r.is_err(), "a handshake without PROXY header must fail");

    // 2. A truncated header, then the client half-closes.
    let full = proxy_header("100.101.102.103:2222");
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    tcp.write_all(&full[..20]).await.expect("write");
    tcp.shutdown().await.expect("half-close");
    assert_closed(tcp, Duration::from_secs(5), "truncated header + EOF").await;

    // 3. A truncated header on a connection left open: closed after timeouts.proxy_header.
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    tcp.write_all(&full[..13]).await.expect("write");
    assert_closed(tcp, Duration::from_secs(5), "truncated header, stalled").await;

    // 4. Garbage.
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    let garbage: Vec<u8> = (0u32..64).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    tcp.write_all(&garbage).await.expect("write");
    assert_closed(tcp, Duration::from_secs(5), "garbage").await;

    // 5. An HTTP request instead of a header.
    let mut tcp = TcpStream::connect(proxy).await.expect("connect");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
    assert_closed(tcp, Duration::from_secs(5), "plain HTTP").await;

    // The good connection is unaffected, and new good ones still work.
    let v = get(good, "grafana").await;
    assert_eq!(v["headers"]["x-forwarded-for"], "100.101.102.103");
    let again = connect(&env, "100.101.102.104:3333", "grafana").await.expect("new good connection");
    assert_eq!(get(again, "grafana").await["headers"]["x-forwarded-for"], "100.101.102.104");

    // Each kind is logged in full once per 10 s window, the rest of the window summed up.
    let logs = env
        .router()
        .wait_log("the bad headers to be logged", Duration::from_secs(25), |l| {
            let summed: u64 = l
                .lines()
                .filter(|line| line.contains("kind=\"bad_proxy_header\""))
                .filter_map(|line| line.split(" more=").nth(1)?.split(' ').next()?.parse::<u64>().ok())
                .sum();
            l.matches("closing connection: bad PROXY header").count() as u64 + summed >= 4
                && l.contains("no PROXY header within")
        })
        .await;
    assert!(logs.contains("closing connection: bad PROXY header"), "the first is logged with its cause: {logs}");
}
