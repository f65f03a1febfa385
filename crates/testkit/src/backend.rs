//! Sample HTTP/1.1 backends on loopback for proxy tests.
//!
//! Routes of a backend spawned with [`spawn`]:
//!
//! | Path | Behaviour |
//! |---|---|
//! | `/bytes/N` | 200, `N` zero bytes streamed in 64 KiB chunks (`Content-Length: N`), never buffered |
//! | `/upload` | consumes the request body as a stream, answers `{"received": N}` |
//! | `/delay/MS` | waits `MS` ms, then answers like the echo route |
//! | `/hang` | never answers (until the backend shuts down) |
//! | `/stall/N` | 200, `N` zero bytes (no `Content-Length`), then the body never continues nor ends |
//! | `/status/N` | answers with status `N` (echo JSON body unless 1xx/204/304) |
//! | `/ws` | RFC 6455 WebSocket echo (text/binary echoed, ping → pong, close → close) |
//! | anything else | 200 JSON `{"service", "method", "path", "headers"}` |
//!
//! The echo JSON has `path` = path and query as received and `headers` =
//! lower-cased header names mapped to their values (repeated headers joined
//! with `", "`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::gofmt::base64;

/// Chunk size used by `/bytes/N`.
pub const CHUNK: usize = 64 * 1024;
static ZEROS: [u8; CHUNK] = [0u8; CHUNK];

/// A running sample backend.
#[derive(Debug)]
pub struct Backend {
    /// The loopback address it listens on.
    pub addr: SocketAddr,
    /// The service name reported in echo responses.
    pub name: String,
    hits: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl Backend {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Number of requests received so far (all routes, including `/ws`).
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// Number of TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.counters.connections.load(Ordering::SeqCst)
    }

    /// The most requests that were being answered at the same time (from arrival until
    /// the response head is ready, e.g. the wait of `/delay/MS`).
    pub fn peak_in_flight(&self) -> usize {
        self.counters.peak_in_flight.load(Ordering::SeqCst)
    }

    /// Stop listening and close every connection (hung requests included).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// Spawn a backend named `name` on `127.0.0.1:0`.
pub async fn spawn(name: &str) -> std::io::Result<Backend> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let (stop, stop_rx) = watch::channel(false);
    let hits = Arc::new(AtomicUsize::new(0));
    let counters = Arc::new(Counters::default());
    let name_s: Arc<str> = Arc::from(name);
    let task = tokio::spawn(accept_loop(listener, name_s, hits.clone(), counters.clone(), stop_rx));
    Ok(Backend { addr, name: name.to_string(), hits, counters, stop, task: Some(task) })
}

/// Connection and concurrency counters of one backend.
#[derive(Debug, Default)]
struct Counters {
    connections: AtomicUsize,
    in_flight: AtomicUsize,
    peak_in_flight: AtomicUsize,
}

/// An address on loopback where nothing is listening (connects are refused).
pub async fn spawn_refusing() -> SocketAddr {
    match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9))),
        Err(_) => SocketAddr::from(([127, 0, 0, 1], 9)),
    }
}

async fn accept_loop(
    listener: TcpListener,
    name: Arc<str>,
    hits: Arc<AtomicUsize>,
    counters: Arc<Counters>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            a = listener.accept() => match a {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    counters.connections.fetch_add(1, Ordering::SeqCst);
                    let name = name.clone();
                    let hits = hits.clone();
                    let counters = counters.clone();
                    let mut stop = stop.clone();
                    tokio::spawn(async move {
                        let svc = hyper::service::service_fn(move |req| {
                            hits.fetch_add(1, Ordering::SeqCst);
                            let name = name.clone();
                            let counters = counters.clone();
                            async move {
                                let now = counters.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                                counters.peak_in_flight.fetch_max(now, Ordering::SeqCst);
                                let resp = route(&name, req).await;
                                counters.in_flight.fetch_sub(1, Ordering::SeqCst);
                                Ok::<_, Infallible>(resp)
                            }
                        });
                        let conn = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .with_upgrades();
                        tokio::select! {
                            _ = conn => {}
                            _ = stop.changed() => {}
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "backend accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    }
}

/// Response body used by the backend.
enum Body {
    Full(Full<Bytes>),
    Zeros(u64),
    /// `N` zero bytes, then pending for ever.
    ThenStall(u64),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(f) => Pin::new(f).poll_frame(cx),
            Body::Zeros(remaining) => {
                if *remaining == 0 {
                    return Poll::Ready(None);
                }
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
            }
            Body::ThenStall(0) => Poll::Pending,
            Body::ThenStall(remaining) => {
                let n = (*remaining).min(CHUNK as u64) as usize;
                *remaining -= n as u64;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(&ZEROS[..n])))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(f) => f.is_end_stream(),
            Body::Zeros(r) => *r == 0,
            Body::ThenStall(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(f) => f.size_hint(),
            Body::Zeros(r) => SizeHint::with_exact(*r),
            Body::ThenStall(_) => SizeHint::default(),
        }
    }
}

fn resp(status: u16, ct: Option<&'static str>, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Body::Full(Full::new(body.into())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = ct {
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    }
    r
}

fn echo_json(name: &str, req: &Request<Incoming>) -> String {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in req.headers() {
        let v = String::from_utf8_lossy(v.as_bytes()).into_owned();
        headers
            .entry(k.as_str().to_ascii_lowercase())
            .and_modify(|e| {
                e.push_str(", ");
                e.push_str(&v);
            })
            .or_insert(v);
    }
    let path = req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| req.uri().to_string());
    serde_json::json!({
        "service": name,
        "method": req.method().as_str(),
        "path": path,
        "headers": headers,
    })
    .to_string()
}

async fn route(name: &str, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    if let Some(n) = path.strip_prefix("/bytes/") {
        return match n.parse::<u64>() {
            Ok(n) => {
                let mut r = Response::new(Body::Zeros(n));
                r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
                r.headers_mut().insert(header::CONTENT_LENGTH, HeaderValue::from(n));
                r
            }
            Err(_) => resp(400, Some("text/plain"), "bad byte count\n"),
        };
    }
    if let Some(n) = path.strip_prefix("/stall/") {
        return match n.parse::<u64>() {
            Ok(n) => Response::new(Body::ThenStall(n)),
            Err(_) => resp(400, Some("text/plain"), "bad byte count\n"),
        };
    }
    if path == "/upload" {
        let mut body = req.into_body();
        let mut received: u64 = 0;
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => {
                    if let Some(d) = f.data_ref() {
                        received += d.len() as u64;
                    }
                }
                Err(e) => return resp(400, Some("text/plain"), format!("body error: {e}\n")),
            }
        }
        return resp(200, Some("application/json"), serde_json::json!({ "received": received }).to_string());
    }
    if let Some(ms) = path.strip_prefix("/delay/") {
        let Ok(ms) = ms.parse::<u64>() else {
            return resp(400, Some("text/plain"), "bad delay\n");
        };
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return resp(200, Some("application/json"), echo_json(name, &req));
    }
    if path == "/hang" {
        std::future::pending::<()>().await;
    }
    if let Some(code) = path.strip_prefix("/status/") {
        return match code.parse::<u16>().ok().and_then(|c| StatusCode::from_u16(c).ok()) {
            Some(c) if matches!(c.as_u16(), 100..=199 | 204 | 304) => resp(c.as_u16(), None, Bytes::new()),
            Some(c) => resp(c.as_u16(), Some("application/json"), echo_json(name, &req)),
            None => resp(400, Some("text/plain"), "bad status\n"),
        };
    }
    if path == "/ws" {
        return ws_upgrade(req);
    }
    resp(200, Some("application/json"), echo_json(name, &req))
}

// ---------------------------------------------------------------------------
// WebSocket

const WS_GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// Largest frame payload accepted (protects the test process).
const MAX_FRAME: u64 = 16 << 20;

/// `Sec-WebSocket-Accept` for a `Sec-WebSocket-Key` (RFC 6455 §4.2.2).
pub fn accept_key(key: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY);
    ctx.update(key.trim().as_bytes());
    ctx.update(WS_GUID.as_bytes());
    base64(ctx.finish().as_ref())
}

fn header_has_token(req: &Request<Incoming>, name: header::HeaderName, token: &str) -> bool {
    req.headers()
        .get_all(name)
        .iter()
        .any(|v| String::from_utf8_lossy(v.as_bytes()).split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
}

fn ws_upgrade(mut req: Request<Incoming>) -> Response<Body> {
    let key = req.headers().get("sec-websocket-key").map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let version_ok = req.headers().get("sec-websocket-version").is_some_and(|v| v.as_bytes() == b"13");
    let Some(key) = key else {
        return resp(400, Some("text/plain"), "missing Sec-WebSocket-Key\n");
    };
    if !header_has_token(&req, header::UPGRADE, "websocket")
        || !header_has_token(&req, header::CONNECTION, "upgrade")
        || !version_ok
    {
        return resp(400, Some("text/plain"), "not a websocket handshake\n");
    }
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(up) => {
                let mut io = TokioIo::new(up);
                if let Err(e) = ws_echo(&mut io).await {
                    tracing::debug!(error = %e, "websocket echo ended");
                }
            }
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    let mut r = resp(101, None, Bytes::new());
    let h = r.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept_key(&key)) {
        h.insert("sec-websocket-accept", v);
    }
    r
}

async fn ws_echo<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<(), ws_client::WsError> {
    use ws_client::{Frame as WsFrame, read_frame, write_frame};
    loop {
        let f = read_frame(io).await?;
        if !f.masked {
            // RFC 6455 §5.1: a server must close on an unmasked client frame.
            let _ = write_frame(io, &WsFrame::close(1002, "unmasked frame"), false).await;
            return Err(ws_client::WsError::Protocol("unmasked client frame"));
        }
        match f.opcode {
            0x0..=0x2 => write_frame(io, &f, false).await?,
            0x8 => {
                let code_and_reason = f.payload.clone();
                let reply = WsFrame { fin: true, opcode: 0x8, payload: code_and_reason, masked: false };
                let _ = write_frame(io, &reply, false).await;
                let _ = io.shutdown().await;
                return Ok(());
            }
            0x9 => {
                let pong = WsFrame { fin: true, opcode: 0xA, payload: f.payload, masked: false };
                write_frame(io, &pong, false).await?;
            }
            0xA => {}
            _ => {
                let _ = write_frame(io, &WsFrame::close(1002, "bad opcode"), false).await;
                return Err(ws_client::WsError::Protocol("unknown opcode"));
            }
        }
    }
}

/// A minimal RFC 6455 client (and the frame codec the echo server uses), for
/// tests that drive a WebSocket through the proxy over any byte stream.
pub mod ws_client {
    use super::*;

    /// WebSocket errors.
    #[derive(Debug, thiserror::Error)]
    pub enum WsError {
        /// Transport error.
        #[error("i/o: {0}")]
        Io(#[from] std::io::Error),
        /// The handshake response was not a valid `101`.
        #[error("handshake failed: {0}")]
        Handshake(String),
        /// The peer violated the framing rules.
        #[error("protocol error: {0}")]
        Protocol(&'static str),
        /// The peer closed the connection (close frame received).
        #[error("closed by peer")]
        Closed,
    }

    /// One WebSocket frame.
    #[derive(Clone, Debug, PartialEq, Eq)]
    pub struct Frame {
        /// FIN bit.
        pub fin: bool,
        /// Opcode (1 text, 2 binary, 8 close, 9 ping, 10 pong, 0 continuation).
        pub opcode: u8,
        /// Unmasked payload.
        pub payload: Vec<u8>,
        /// Whether the frame arrived masked (ignored when writing).
        pub masked: bool,
    }

    impl Frame {
        /// A final text frame.
        pub fn text(s: &str) -> Frame {
            Frame { fin: true, opcode: 1, payload: s.as_bytes().to_vec(), masked: false }
        }
        /// A final binary frame.
        pub fn binary(b: &[u8]) -> Frame {
            Frame { fin: true, opcode: 2, payload: b.to_vec(), masked: false }
        }
        /// A close frame with status code and reason.
        pub fn close(code: u16, reason: &str) -> Frame {
            let mut p = code.to_be_bytes().to_vec();
            p.extend_from_slice(reason.as_bytes());
            Frame { fin: true, opcode: 8, payload: p, masked: false }
        }
        /// A ping frame.
        pub fn ping(payload: &[u8]) -> Frame {
            Frame { fin: true, opcode: 9, payload: payload.to_vec(), masked: false }
        }
    }

    fn random_bytes<const N: usize>() -> [u8; N] {
        use ring::rand::SecureRandom;
        let mut b = [0u8; N];
        let _ = ring::rand::SystemRandom::new().fill(&mut b);
        b
    }

    /// Read one frame (unmasking it if masked).
    pub async fn read_frame<S: AsyncRead + Unpin>(s: &mut S) -> Result<Frame, WsError> {
        let mut h = [0u8; 2];
        s.read_exact(&mut h).await?;
        let fin = h[0] & 0x80 != 0;
        if h[0] & 0x70 != 0 {
            return Err(WsError::Protocol("reserved bits set"));
        }
        let opcode = h[0] & 0x0f;
        let masked = h[1] & 0x80 != 0;
        let mut len = u64::from(h[1] & 0x7f);
        if len == 126 {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await?;
            len = u64::from(u16::from_be_bytes(b));
        } else if len == 127 {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await?;
            len = u64::from_be_bytes(b);
        }
        if opcode >= 8 && (len > 125 || !fin) {
            return Err(WsError::Protocol("bad control frame"));
        }
        if len > MAX_FRAME {
            return Err(WsError::Protocol("frame too large"));
        }
        let mut key = [0u8; 4];
        if masked {
            s.read_exact(&mut key).await?;
        }
        let mut payload = vec![0u8; len as usize];
        s.read_exact(&mut payload).await?;
        if masked {
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= key[i % 4];
            }
        }
        Ok(Frame { fin, opcode, payload, masked })
    }

    /// Write one frame; `mask` must be true for client-to-server frames.
    pub async fn write_frame<S: AsyncWrite + Unpin>(s: &mut S, f: &Frame, mask: bool) -> Result<(), WsError> {
        let mut out = Vec::with_capacity(f.payload.len() + 14);
        out.push(if f.fin { 0x80 } else { 0 } | (f.opcode & 0x0f));
        let mbit = if mask { 0x80 } else { 0 };
        let len = f.payload.len();
        if len < 126 {
            out.push(mbit | len as u8);
        } else if len <= 0xffff {
            out.push(mbit | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(mbit | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        if mask {
            let key: [u8; 4] = random_bytes();
            out.extend_from_slice(&key);
            out.extend(f.payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        } else {
            out.extend_from_slice(&f.payload);
        }
        s.write_all(&out).await?;
        s.flush().await?;
        Ok(())
    }

    /// Perform the client opening handshake for `ws://host/path` on `stream`.
    /// Reads the response byte-by-byte so no frame data is consumed.
    pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
        stream: &mut S,
        host: &str,
        path: &str,
    ) -> Result<(), WsError> {
        let key = base64(&random_bytes::<16>());
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        stream.flush().await?;
        let mut head = Vec::new();
        let mut b = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                return Err(WsError::Handshake("response head too large".into()));
            }
            let n = stream.read(&mut b).await?;
            if n == 0 {
                return Err(WsError::Handshake(format!(
                    "EOF during handshake after {:?}",
                    String::from_utf8_lossy(&head)
                )));
            }
            head.push(b[0]);
        }
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut lines = text.split("\r\n");
        let status = lines.next().unwrap_or_default();
        if status.split(' ').nth(1) != Some("101") {
            return Err(WsError::Handshake(format!("unexpected status line {status:?}")));
        }
        let want = accept_key(&key);
        let got = lines
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|(_, v)| v.trim().to_string());
        if got.as_deref() != Some(want.as_str()) {
            return Err(WsError::Handshake(format!("bad Sec-WebSocket-Accept {got:?}, want {want}")));
        }
        Ok(())
    }

    /// Send a masked text frame.
    pub async fn send_text<S: AsyncWrite + Unpin>(stream: &mut S, text: &str) -> Result<(), WsError> {
        write_frame(stream, &Frame::text(text), true).await
    }

    /// Send a masked binary frame.
    pub async fn send_binary<S: AsyncWrite + Unpin>(stream: &mut S, data: &[u8]) -> Result<(), WsError> {
        write_frame(stream, &Frame::binary(data), true).await
    }

    /// Send a masked ping.
    pub async fn send_ping<S: AsyncWrite + Unpin>(stream: &mut S, payload: &[u8]) -> Result<(), WsError> {
        write_frame(stream, &Frame::ping(payload), true).await
    }

    /// Send a masked close frame.
    pub async fn send_close<S: AsyncWrite + Unpin>(stream: &mut S, code: u16, reason: &str) -> Result<(), WsError> {
        write_frame(stream, &Frame::close(code, reason), true).await
    }

    /// Receive the next text message, skipping pongs. A close frame yields
    /// [`WsError::Closed`].
    pub async fn recv_text<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, WsError> {
        loop {
            let f = read_frame(stream).await?;
            match f.opcode {
                1 => return String::from_utf8(f.payload).map_err(|_| WsError::Protocol("text frame is not UTF-8")),
                8 => return Err(WsError::Closed),
                9 | 10 => continue,
                _ => return Err(WsError::Protocol("expected a text frame")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rfc6455_accept_example() {
        // RFC 6455 §1.3 example.
        assert_eq!(super::accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }
}
