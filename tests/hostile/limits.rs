//! Timeouts and limits: slow or silent clients are cut off, floods are bounded, and a
//! fresh client is still served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::{raw_exchange, status_of, tls_config};

const WAIT: Duration = Duration::from_secs(60);

/// Prometheus text from the router's admin socket.
pub(crate) async fn admin_metrics(env: &Env) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--unix-socket"])
        .arg(&env.admin_socket)
        .arg("http://localhost/metrics")
        .output()
        .await
        .expect("curl admin socket");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads until EOF; returns how long that took (bounded by `limit`).
async fn time_to_close<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 1024];
    let result = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    result.ok().map(|_| started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_and_slow_clients_are_cut_off() {
    let mut opts = EnvOptions::default();
    opts.proxy_protocol = true;
    opts.timeouts = "proxy_header = \"2s\"\ntls_handshake = \"2s\"\nrequest_header = \"2s\"\n".into();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;

    // TCP connect, then silence: closed after timeouts.tls_handshake.
    let mut silent = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    assert!(time_to_close(&mut silent, Duration::from_secs(15)).await.is_some(), "silent TLS client not closed");

    // PROXY listener, no header: closed after timeouts.proxy_header.
    let mut silent = tokio::net::TcpStream::connect(env.proxy.expect("proxy listener")).await.expect("connect");
    assert!(time_to_close(&mut silent, Duration::from_secs(15)).await.is_some(), "silent PROXY client not closed");

    // Slowloris: a request head trickled one byte every 100 ms (about 12 s for all of it)
    // is cut off by timeouts.request_header (2 s), before the head is complete.
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(fqdn("grafana")).expect("name");
    let tls = tokio_rustls::TlsConnector::from(tls_config(&env)).connect(name, tcp).await.expect("tls");
    let head = format!("GET / HTTP/1.1\r\nHost: {}\r\nX-Slow: {}\r\n\r\n", fqdn("grafana"), "a".repeat(64));
    let (mut rd, mut wr) = tokio::io::split(tls);
    let started = Instant::now();
    let trickle = async {
        for b in head.as_bytes() {
            if wr.write_all(&[*b]).await.is_err() || wr.flush().await.is_err() {
                // The server is gone: wait for the reader to see it.
                std::future::pending::<()>().await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let cut = async {
        let mut answer = Vec::new();
        let _ = rd.read_to_end(&mut answer).await;
        (started.elapsed(), String::from_utf8_lossy(&answer).into_owned())
    };
    let (cut_at, answer) = tokio::time::timeout(Duration::from_secs(30), async {
        tokio::select! {
            c = cut => c,
            () = trickle => panic!("the whole slow head ({} bytes) was sent and the connection is still open", head.len()),
        }
    })
    .await
    .expect("bounded");
    assert!(!answer.contains("200 OK"), "slowloris request was served: {answer}");
    assert!(cut_at >= Duration::from_millis(1500), "cut off after {cut_at:?}, before timeouts.request_header (2 s)");
    assert!(cut_at < Duration::from_secs(8), "cut off only after {cut_at:?} (timeouts.request_header is 2 s)");

    let logs = env.router().logs();
    assert!(logs.contains("timeouts.tls_handshake"), "{logs}");
    assert!(logs.contains("timeouts.proxy_header"), "{logs}");
    // A fresh client is served normally.
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_and_header_limit() {
    let mut opts = EnvOptions::default();
    opts.timeouts = "tls_handshake = \"30s\"\n\n[limits]\nmax_connections = 20\nmax_header_bytes = \"16KiB\"\n".into();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;

    // Oversized request head ⇒ 431.
    let big = format!(
        "GET / HTTP/1.1\r\nHost: {}\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        fqdn("grafana"),
        "b".repeat(64 * 1024)
    );
    let r = raw_exchange(&env, "grafana", big.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(status_of(&r), 431, "{r}");

    // 20 idle connections fill the limit; the 21st is closed at once.
    let mut idle = Vec::new();
    for _ in 0..20 {
        idle.push(tokio::net::TcpStream::connect(env.https).await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut over = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    assert!(time_to_close(&mut over, Duration::from_secs(5)).await.is_some(), "connection over the limit stayed open");
    let logs = env.router().wait_log("the limit log line", WAIT, |l| l.contains("limits.max_connections")).await;
    assert!(logs.contains("limits.max_connections"));
    let metrics = admin_metrics(&env).await;
    assert!(metrics.contains("snirouter_connections_refused_total{limit=\"max_connections\"} 1"), "{metrics}");
    // Freeing the slots lets new clients in.
    drop(idle);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_take_every_slot() {
    let mut opts = EnvOptions::default();
    opts.timeouts = "tls_handshake = \"30s\"\n\n[limits]\nmax_connections_per_client = 5\n".into();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let from = |ip: &str| {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.bind(format!("{ip}:0").parse().expect("addr")).expect("bind source");
        socket.connect(env.https)
    };
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(from("127.0.0.7").await.expect("connect"));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut sixth = from("127.0.0.7").await.expect("connect");
    assert!(
        time_to_close(&mut sixth, Duration::from_secs(5)).await.is_some(),
        "the 6th connection from one address stayed open"
    );
    env.router()
        .wait_log("the per-client limit log line", WAIT, |l| l.contains("limits.max_connections_per_client"))
        .await;
    // Another client address is served while 127.0.0.7 holds its five.
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
    let metrics = admin_metrics(&env).await;
    assert!(
        metrics.contains("snirouter_connections_refused_total{limit=\"max_connections_per_client\"} 1"),
        "{metrics}"
    );
    drop(held);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_http2_connection_is_closed() {
    let mut opts = EnvOptions::default();
    opts.timeouts = "idle = \"2s\"\nrequest_header = \"120s\"\n".into();
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let mut cfg = (*tls_config(&env)).clone();
    cfg.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let name = rustls::pki_types::ServerName::try_from(fqdn("grafana")).expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg)).connect(name, tcp).await.expect("tls");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // No preface, no frames: only timeouts.idle can end this connection.
    assert!(time_to_close(&mut tls, Duration::from_secs(20)).await.is_some(), "idle HTTP/2 connection stayed open");
}
