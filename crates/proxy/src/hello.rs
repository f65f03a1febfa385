//! Reading the TLS ClientHello before choosing what to do with a connection.
//!
//! The ClientHello is read with [`rustls::server::Acceptor`], which tells us the SNI
//! name before any certificate is chosen. The raw bytes read so far are kept, so a
//! later passthrough mode can replay them to a backend untouched.
//!
//! When the name is not ours (or has no certificate yet) we answer with a fatal
//! `unrecognized_name` alert ourselves: rustls would otherwise answer a resolver
//! miss with `access_denied`, and Go servers answer with `internal_error` — the
//! misleading alert behind the original "tlsv1 alert internal error" reports.

use rustls::server::{Accepted, Acceptor};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest ClientHello we buffer (several records with post-quantum key shares fit).
pub const MAX_HELLO_BYTES: usize = 64 * 1024;

/// A fatal `unrecognized_name(112)` alert in a plaintext TLS record.
pub const UNRECOGNIZED_NAME_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 112];

/// Why no ClientHello could be read.
#[derive(Debug, thiserror::Error)]
pub enum HelloError {
    /// The connection failed or closed.
    #[error("connection closed before the TLS ClientHello completed ({0})")]
    Io(#[from] std::io::Error),
    /// The client closed without sending anything.
    #[error("connection closed without sending a TLS ClientHello")]
    Empty,
    /// The bytes are not a TLS ClientHello (an alert has been sent).
    #[error("not a TLS ClientHello: {0}")]
    NotTls(rustls::Error),
    /// Too many bytes without a complete ClientHello.
    #[error("ClientHello larger than {MAX_HELLO_BYTES} bytes")]
    TooLarge,
}

/// A received ClientHello.
pub struct Hello {
    /// The accepted ClientHello, ready to continue the handshake.
    pub accepted: Accepted,
    /// Every byte read from the connection so far.
    pub raw: Vec<u8>,
}

/// Reads until a complete ClientHello has arrived.
pub async fn read<IO: AsyncRead + AsyncWrite + Unpin>(io: &mut IO) -> Result<Hello, HelloError> {
    let mut acceptor = Acceptor::default();
    let mut raw = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = io.read(&mut chunk).await?;
        if n == 0 {
            return Err(if raw.is_empty() {
                HelloError::Empty
            } else {
                HelloError::Io(std::io::ErrorKind::UnexpectedEof.into())
            });
        }
        raw.extend_from_slice(&chunk[..n]);
        if raw.len() > MAX_HELLO_BYTES {
            return Err(HelloError::TooLarge);
        }
        let mut rest = &chunk[..n];
        while !rest.is_empty() {
            if acceptor.read_tls(&mut rest)? == 0 {
                break;
            }
        }
        match acceptor.accept() {
            Ok(Some(accepted)) => return Ok(Hello { accepted, raw }),
            Ok(None) => continue,
            Err((err, mut alert)) => {
                let mut out = Vec::new();
                let _ = alert.write_all(&mut out);
                let _ = io.write_all(&out).await;
                return Err(HelloError::NotTls(err));
            }
        }
    }
}

/// Sends a fatal `unrecognized_name` alert and flushes.
pub async fn reject_unrecognized_name<IO: AsyncWrite + Unpin>(io: &mut IO) {
    let _ = io.write_all(&UNRECOGNIZED_NAME_ALERT).await;
    let _ = io.flush().await;
    let _ = io.shutdown().await;
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, duplex};

    use super::*;

    /// A real ClientHello for `sni` offering h2 and http/1.1.
    fn client_hello(sni: &'static str) -> Vec<u8> {
        let roots = Arc::new(rustls::RootCertStore::empty());
        let config = snirouter_tls::client_config(snirouter_tls::Trust::Roots(roots), &[b"h2", b"http/1.1"])
            .expect("client config");
        let name = rustls::pki_types::ServerName::try_from(sni).expect("name");
        let mut conn = rustls::ClientConnection::new(Arc::new(config), name).expect("client");
        let mut hello = Vec::new();
        conn.write_tls(&mut hello).expect("hello");
        hello
    }

    #[tokio::test]
    async fn a_hello_in_one_byte_pieces_gives_name_alpn_and_every_byte() {
        let bytes = client_hello("grafana.example.ts.net");
        let (mut server, mut client) = duplex(64);
        let sent = bytes.clone();
        let writer = tokio::spawn(async move {
            for b in sent {
                client.write_all(&[b]).await.expect("write");
            }
            client
        });
        let hello = read(&mut server).await.expect("hello");
        let ch = hello.accepted.client_hello();
        assert_eq!(ch.server_name(), Some("grafana.example.ts.net"));
        let alpn: Vec<&[u8]> = ch.alpn().expect("alpn").collect();
        assert_eq!(alpn, [&b"h2"[..], b"http/1.1"]);
        assert_eq!(hello.raw, bytes, "kept for passthrough");
        drop(writer.await.expect("writer"));
    }

    #[tokio::test]
    async fn no_bytes_plain_http_and_a_cut_hello_are_told_apart() {
        let (mut server, client) = duplex(1024);
        drop(client);
        assert!(matches!(read(&mut server).await, Err(HelloError::Empty)));

        let (mut server, mut client) = duplex(1024);
        client.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        assert!(matches!(read(&mut server).await, Err(HelloError::NotTls(_))));
        let mut alert = [0u8; 7];
        client.read_exact(&mut alert).await.expect("an alert is sent");
        assert_eq!(alert[0], 0x15, "a TLS alert record");

        let (mut server, mut client) = duplex(1024);
        let bytes = client_hello("a.example.ts.net");
        client.write_all(&bytes[..bytes.len() / 2]).await.expect("write");
        drop(client);
        assert!(matches!(read(&mut server).await, Err(HelloError::Io(_))));
    }
}
