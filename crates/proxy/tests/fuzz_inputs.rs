//! Deterministic fuzzing of the two parsers that read untrusted bytes before TLS:
//! the ClientHello reader and the PROXY v2 reader. Random and mutated inputs must
//! never panic, and must never make the reader consume more than it was given.
//! (`cargo fuzz` targets for the same entry points live in `fuzz/`.)

use snirouter_proxy::{hello, proxy_header};
use tokio::io::{AsyncRead, AsyncWrite};

/// A duplex stream that yields `input` and then EOF, and swallows writes.
struct Scripted {
    input: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl AsyncRead for Scripted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let end = (self.pos + self.chunk).min(self.input.len());
        let n = (end - self.pos).min(buf.remaining());
        buf.put_slice(&self.input[self.pos..self.pos + n]);
        self.pos += n;
        std::task::Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Scripted {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::task::Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// A real ClientHello (from rustls' client) as the seed for mutations.
fn real_client_hello() -> Vec<u8> {
    use std::sync::Arc;
    let trust = snirouter_tls::Trust::Roots(Arc::new(rustls::RootCertStore::empty()));
    let cfg = snirouter_tls::client_config(trust, &[]).expect("client config");
    let name = rustls::pki_types::ServerName::try_from("grafana.tailnet.ts.net").expect("name");
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).expect("client");
    let mut out = Vec::new();
    conn.write_tls(&mut out).expect("hello");
    out
}

#[tokio::test]
async fn client_hello_reader_survives_mutations() {
    let seed = real_client_hello();
    // The unmutated hello parses and names the server.
    let mut s = Scripted { input: seed.clone(), pos: 0, chunk: 7 };
    let h = hello::read(&mut s).await.expect("a real ClientHello parses");
    assert_eq!(h.accepted.client_hello().server_name(), Some("grafana.tailnet.ts.net"));
    assert_eq!(h.raw, seed, "the raw bytes are kept for passthrough");

    let mut rng = fastrand::Rng::with_seed(0x5eed_1234_abcd_0001);
    for i in 0..5_000 {
        let mut input = if i % 3 == 0 { Vec::new() } else { seed.clone() };
        let flips = rng.u64(..8);
        for _ in 0..flips {
            if input.is_empty() {
                break;
            }
            let at = rng.usize(..input.len());
            input[at] = rng.u8(..);
        }
        if i % 5 == 0 {
            let cut = rng.usize(..=input.len());
            input.truncate(cut);
        }
        for _ in 0..rng.u64(..40) {
            input.push(rng.u8(..));
        }
        let chunk = 1 + rng.usize(..600);
        let mut s = Scripted { input, pos: 0, chunk };
        let _ = hello::read(&mut s).await;
    }
}

#[tokio::test]
async fn proxy_header_reader_never_reads_past_the_header() {
    let mut rng = fastrand::Rng::with_seed(0x0dd_ba11_cafe_f00d);
    for _ in 0..5_000 {
        let mut input = ppp::v2::PROTOCOL_PREFIX.to_vec();
        input.push(0x21);
        input.push([0x11, 0x21, 0x31, 0x00][rng.usize(..4)]);
        let len = rng.u16(..300);
        input.extend_from_slice(&len.to_be_bytes());
        for _ in 0..rng.u64(..320) {
            input.push(rng.u8(..));
        }
        let total = input.len();
        let mut cursor = &input[..];
        let result = proxy_header::read(&mut cursor).await;
        let consumed = total - cursor.len();
        if result.is_ok() {
            assert_eq!(consumed, 16 + len as usize, "a parsed header consumes exactly its length");
        }
        assert!(consumed <= total);
    }
}
