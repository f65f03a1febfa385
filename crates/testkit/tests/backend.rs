//! The sample HTTP backends and the WebSocket client helpers.

use std::time::{Duration, Instant};

use snirouter_testkit::backend::{self, ws_client};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const T: Duration = Duration::from_secs(20);

struct Resp {
    status: u16,
    head: String,
    body: Vec<u8>,
}

fn dechunk(mut b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let Some(pos) = b.windows(2).position(|w| w == b"\r\n") else { return out };
        let size = usize::from_str_radix(std::str::from_utf8(&b[..pos]).unwrap().trim(), 16).unwrap();
        b = &b[pos + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

async fn send(addr: std::net::SocketAddr, request: &[u8]) -> Resp {
    tokio::time::timeout(T, async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        let split = buf.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        let head = String::from_utf8_lossy(&buf[..split]).into_owned();
        let status = head.split(' ').nth(1).unwrap().parse().unwrap();
        let raw = &buf[split + 4..];
        let body =
            if head.to_ascii_lowercase().contains("transfer-encoding: chunked") { dechunk(raw) } else { raw.to_vec() };
        Resp { status, head, body }
    })
    .await
    .expect("backend request timed out")
}

async fn get(addr: std::net::SocketAddr, path: &str) -> Resp {
    send(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: app.example\r\nX-Test: a\r\nX-Test: b\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
}

#[tokio::test]
async fn echo_reports_request() {
    let b = backend::spawn("grafana").await.unwrap();
    let r = get(b.addr, "/some/path?x=1&y=%20").await;
    assert_eq!(r.status, 200);
    assert!(r.head.to_ascii_lowercase().contains("content-type: application/json"));
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["service"], "grafana");
    assert_eq!(v["method"], "GET");
    assert_eq!(v["path"], "/some/path?x=1&y=%20");
    assert_eq!(v["headers"]["host"], "app.example");
    assert_eq!(v["headers"]["x-test"], "a, b");
    assert_eq!(b.hits(), 1);
    assert!(b.url("/x").starts_with("http://127.0.0.1:"));
    b.shutdown().await;
}

#[tokio::test]
async fn bytes_streams_exact_length() {
    let b = backend::spawn("media").await.unwrap();
    let n = 5 * 1024 * 1024 + 17;
    let r = get(b.addr, &format!("/bytes/{n}")).await;
    assert_eq!(r.status, 200);
    assert!(r.head.to_ascii_lowercase().contains(&format!("content-length: {n}")), "{}", r.head);
    assert_eq!(r.body.len(), n);
    assert!(r.body.iter().all(|&x| x == 0));
    assert_eq!(get(b.addr, "/bytes/nope").await.status, 400);
    b.shutdown().await;
}

#[tokio::test]
async fn upload_counts_streamed_body() {
    let b = backend::spawn("upload").await.unwrap();
    // Chunked upload of 3 MiB.
    let mut req =
        b"POST /upload HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    let chunk = vec![b'a'; 256 * 1024];
    for _ in 0..12 {
        req.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        req.extend_from_slice(&chunk);
        req.extend_from_slice(b"\r\n");
    }
    req.extend_from_slice(b"0\r\n\r\n");
    let r = send(b.addr, &req).await;
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["received"], 3 * 1024 * 1024);
    // Content-Length upload.
    let r =
        send(b.addr, b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello").await;
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["received"], 5);
    b.shutdown().await;
}

#[tokio::test]
async fn delay_status_and_hang() {
    let b = backend::spawn("misc").await.unwrap();
    let t0 = Instant::now();
    assert_eq!(get(b.addr, "/delay/200").await.status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let r = get(b.addr, "/status/418").await;
    assert_eq!(r.status, 418);
    assert_eq!(serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["service"], "misc");
    let r = get(b.addr, "/status/204").await;
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());

    // /hang never answers...
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    s.write_all(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 16];
    assert!(tokio::time::timeout(Duration::from_millis(300), s.read(&mut buf)).await.is_err());
    // ...until the backend shuts down, which closes the connection.
    b.shutdown().await;
    let n = tokio::time::timeout(T, s.read(&mut buf)).await.unwrap().unwrap_or(0);
    assert_eq!(n, 0);
}

#[tokio::test]
async fn refusing_address_refuses() {
    let addr = backend::spawn_refusing().await;
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn websocket_echo() {
    let b = backend::spawn("ws").await.unwrap();
    let mut s = TcpStream::connect(b.addr).await.unwrap();
    tokio::time::timeout(T, async {
        ws_client::handshake(&mut s, "ws.example", "/ws").await.unwrap();
        ws_client::send_text(&mut s, "hello").await.unwrap();
        assert_eq!(ws_client::recv_text(&mut s).await.unwrap(), "hello");
        let big = "x".repeat(70_000);
        ws_client::send_text(&mut s, &big).await.unwrap();
        assert_eq!(ws_client::recv_text(&mut s).await.unwrap(), big);

        ws_client::send_binary(&mut s, &[1, 2, 3]).await.unwrap();
        let f = ws_client::read_frame(&mut s).await.unwrap();
        assert_eq!((f.opcode, f.payload.as_slice(), f.masked), (2, &[1u8, 2, 3][..], false));

        ws_client::send_ping(&mut s, b"p").await.unwrap();
        let f = ws_client::read_frame(&mut s).await.unwrap();
        assert_eq!((f.opcode, f.payload.as_slice()), (10, &b"p"[..]));

        ws_client::send_close(&mut s, 1000, "bye").await.unwrap();
        let f = ws_client::read_frame(&mut s).await.unwrap();
        assert_eq!(f.opcode, 8);
        assert_eq!(&f.payload[..2], &1000u16.to_be_bytes());
        assert!(matches!(ws_client::recv_text(&mut s).await, Err(ws_client::WsError::Io(_))));
    })
    .await
    .expect("websocket test timed out");

    // A plain GET to /ws is refused.
    assert_eq!(get(b.addr, "/ws").await.status, 400);
    b.shutdown().await;
}
