//! Handwritten HTTP/1.1 over a unix socket, so tests control every header byte.
#![allow(dead_code)]

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

pub(crate) const T: Duration = Duration::from_secs(20);

#[derive(Debug)]
pub(crate) struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Resp {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

pub(crate) fn dechunk(mut b: &[u8]) -> Vec<u8> {
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

pub(crate) fn parse(raw: &[u8]) -> Resp {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").expect("response head");
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let body = &raw[split + 4..];
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let chunked = headers.iter().any(|(k, v)| k == "transfer-encoding" && v == "chunked");
    let body = if chunked { dechunk(body) } else { body.to_vec() };
    Resp { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

/// Send raw bytes (should include `Connection: close`) and read to EOF.
pub(crate) async fn raw(sock: &Path, request: &str) -> Resp {
    tokio::time::timeout(T, async {
        let mut s = UnixStream::connect(sock).await.expect("connect");
        s.write_all(request.as_bytes()).await.unwrap();
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await.unwrap();
        parse(&buf)
    })
    .await
    .expect("request timed out")
}

/// A well-formed LocalAPI request with optional extra headers and body.
pub(crate) async fn req(sock: &Path, method: &str, path: &str, extra: &[(&str, &str)], body: Option<&str>) -> Resp {
    let mut r = format!("{method} {path} HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n");
    for (k, v) in extra {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        r.push_str(&format!("Content-Length: {}\r\n\r\n{b}", b.len()));
    } else {
        r.push_str("\r\n");
    }
    raw(sock, &r).await
}

pub(crate) async fn get(sock: &Path, path: &str) -> Resp {
    req(sock, "GET", path, &[], None).await
}

/// PEM blocks as (label, full block text).
pub(crate) fn pem_labels(s: &str) -> Vec<String> {
    s.lines()
        .filter_map(|l| l.strip_prefix("-----BEGIN ").and_then(|l| l.strip_suffix("-----")))
        .map(str::to_string)
        .collect()
}
