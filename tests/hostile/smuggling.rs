//! Request smuggling and header abuse (RFC 9112 / RFC 9110): every ambiguous message
//! is refused or normalized before it can reach an upstream.

use std::time::Duration;

use crate::harness::*;
use crate::{raw_exchange, status_of};

const WAIT: Duration = Duration::from_secs(60);
const READ: Duration = Duration::from_secs(3);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ambiguous_framing_and_hosts_are_refused_or_normalized() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    let host = fqdn("grafana");

    // CL + TE: Transfer-Encoding wins, Content-Length is dropped, the upstream gets one
    // unambiguous framing, and the connection is closed afterwards.
    let r = raw_exchange(
        &env,
        "grafana",
        format!("POST /cl-te HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(!r.contains("\"content-length\""), "the upstream must not see both framings: {r}");
    assert!(!r.contains("/smuggled"), "bytes after the chunked body are not a second request: {r}");

    // Two different Content-Length values.
    let r = raw_exchange(
        &env,
        "grafana",
        format!("POST / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd").as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");

    // Duplicate Host.
    let r = raw_exchange(
        &env,
        "grafana",
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nHost: {}\r\n\r\n", fqdn("jellyfin")).as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");

    // Missing Host on HTTP/1.1.
    let r = raw_exchange(&env, "grafana", b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n", READ).await;
    assert_eq!(status_of(&r), 400, "{r}");

    // obs-fold (a header continued on the next line).
    let r = raw_exchange(
        &env,
        "grafana",
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-A: a\r\n b\r\n\r\n").as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 400, "{r}");

    // Invalid bytes in a header name and value.
    for bad in ["X A: b", "X-A: b\u{7}c"] {
        let r =
            raw_exchange(&env, "grafana", format!("GET / HTTP/1.1\r\nHost: {host}\r\n{bad}\r\n\r\n").as_bytes(), READ)
                .await;
        assert_eq!(status_of(&r), 400, "{bad:?}: {r}");
    }

    // Absolute-form naming another service: the URI authority wins and must match SNI.
    let r = raw_exchange(
        &env,
        "grafana",
        format!("GET https://{}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n", fqdn("jellyfin")).as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 421, "{r}");

    // Host with port, upper case and a trailing dot is the same name.
    let r = raw_exchange(
        &env,
        "grafana",
        format!("GET / HTTP/1.1\r\nHost: {}.:443\r\nConnection: close\r\n\r\n", host.to_uppercase()).as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");

    // Client-sent forwarding headers never reach the upstream as sent.
    let r = raw_exchange(
        &env,
        "grafana",
        format!("GET / HTTP/1.1\r\nHost: {host}\r\nX-Forwarded-For: 6.6.6.6\r\nX-Real-IP: 6.6.6.6\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n").as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(!r.contains("6.6.6.6") && !r.contains("\"x-forwarded-proto\":\"http\""), "{r}");

    // Hop-by-hop headers named in Connection are not forwarded.
    let r = raw_exchange(
        &env,
        "grafana",
        format!(
            "GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\n\r\n"
        )
        .as_bytes(),
        READ,
    )
    .await;
    assert_eq!(status_of(&r), 200, "{r}");
    assert!(!r.contains("x-secret") && !r.contains("keep-alive"), "{r}");

    // The router survived all of it.
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_requests_route_by_authority_and_mismatches_are_421() {
    let env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    // curl sends :authority from the URL; a conflicting Host header must not win.
    let other = format!("Host: {}", fqdn("jellyfin"));
    let out = curl(&env, "grafana", "/", &["--http2", "-H", &other]).await;
    let (body, status) = body_and_status(&out);
    assert!(status == 421 || status == 400, "HTTP/2 with a conflicting Host: {status} {body}");
}
