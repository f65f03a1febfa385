//! Hostile input and faults: what an untrusted tailnet peer (or a broken dependency)
//! can do to the router, and the answer it gets. The real binary, loopback only,
//! every test bounded in time.

// Tests build EnvOptions by changing a few fields of the defaults.
#![allow(clippy::field_reassign_with_default)]

#[path = "../e2e/harness.rs"]
#[allow(dead_code)]
mod harness;

mod faults;
mod h2;
mod limits;
mod smuggling;

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TLS client config trusting the environment's simulated CA.
pub(crate) fn tls_config(env: &harness::Env) -> Arc<rustls::ClientConfig> {
    harness::client_tls(env, &[b"http/1.1"])
}

/// Opens TLS to the router for `name`, writes `raw` verbatim, and returns everything
/// read until the server closes or `wait` passes.
pub(crate) async fn raw_exchange(env: &harness::Env, name: &str, raw: &[u8], wait: Duration) -> String {
    let tcp = tokio::net::TcpStream::connect(env.https).await.expect("connect");
    let server_name = rustls::pki_types::ServerName::try_from(harness::fqdn(name)).expect("name");
    let tls = tokio_rustls::TlsConnector::from(tls_config(env)).connect(server_name, tcp).await.expect("tls");
    // Write and read at once: the router may answer (431, 400) and close before it
    // has read everything we send.
    let (mut rd, mut wr) = tokio::io::split(tls);
    let raw = raw.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&raw).await;
        wr
    });
    let mut out = Vec::new();
    let _ = tokio::time::timeout(wait, rd.read_to_end(&mut out)).await;
    writer.abort();
    String::from_utf8_lossy(&out).into_owned()
}

/// The status code of the first response in `text`.
pub fn status_of(text: &str) -> u16 {
    text.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0)
}
