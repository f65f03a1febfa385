//! A minimal HTTPS client for the demo (and later `doctor`): one request over a fresh
//! TLS connection to a given address with a given SNI, verified against given roots.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};
use tokio::net::TcpStream;

/// One answer.
#[derive(Debug)]
pub(crate) struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Body.
    pub body: Bytes,
    /// Time from connect to the end of the body.
    pub latency: Duration,
}

/// Trust anchors from a PEM bundle.
pub(crate) fn roots_from_pem(pem: &str) -> Result<Arc<RootCertStore>, String> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("bad CA PEM: {e}"))?;
        roots.add(cert).map_err(|e| format!("bad CA certificate: {e}"))?;
    }
    Ok(Arc::new(roots))
}

/// `GET path` on `addr` with SNI and Host `name`.
pub(crate) async fn get(
    addr: SocketAddr,
    name: &str,
    path: &str,
    roots: Arc<RootCertStore>,
    timeout: Duration,
) -> Result<Answer, String> {
    tokio::time::timeout(timeout, get_inner(addr, name, path, roots))
        .await
        .map_err(|_| format!("no answer within {}s", timeout.as_secs()))?
}

async fn get_inner(addr: SocketAddr, name: &str, path: &str, roots: Arc<RootCertStore>) -> Result<Answer, String> {
    let started = Instant::now();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    let server_name = ServerName::try_from(name.to_owned()).map_err(|e| format!("bad name {name}: {e}"))?;
    let tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(server_name, tcp)
        .await
        .map_err(|e| format!("TLS handshake: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, name)
        .body(Empty::<Bytes>::new())
        .map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?.to_bytes();
    Ok(Answer { status, body, latency: started.elapsed() })
}
