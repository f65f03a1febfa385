//! A minimal HTTP/1.1 client for the control API: one connection per request over
//! hyper + tokio-rustls (ring, Mozilla roots from `webpki-roots`), plain HTTP for loopback
//! test servers. The API is called a handful of times per sync, so there is no pooling.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, Request, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls_pki_types::ServerName;
use tokio::net::TcpStream;

/// Largest response body read.
const MAX_BODY: usize = 4 << 20;

/// A buffered response.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Client {
    tls: tokio_rustls::TlsConnector,
    timeout: Duration,
}

impl Client {
    pub(crate) fn new(timeout: Duration) -> Result<Client, String> {
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS setup: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Client { tls: tokio_rustls::TlsConnector::from(Arc::new(cfg)), timeout })
    }

    /// Sends one request to `url` (`http[s]://host[:port]/path?query`).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Reply, String> {
        match tokio::time::timeout(self.timeout, self.send_inner(method, url, headers, body)).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    async fn send_inner(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Reply, String> {
        let uri: http::Uri = url.parse().map_err(|e| format!("bad URL {url:?}: {e}"))?;
        let authority = uri.authority().ok_or_else(|| format!("URL {url:?} has no host"))?.clone();
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("URL {url:?} is neither http nor https")),
        };
        let host = authority.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp =
            TcpStream::connect((host.as_str(), port)).await.map_err(|e| format!("connect to {authority}: {e}"))?;
        let _ = tcp.set_nodelay(true);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/").to_owned();
        let mut req = Request::builder().method(method).uri(path);
        req = req
            .header(header::HOST, authority.as_str())
            .header(header::USER_AGENT, concat!("snirouter/", env!("CARGO_PKG_VERSION")))
            .header(header::ACCEPT, "application/json");
        for (name, value) in headers {
            let v = HeaderValue::from_str(value).map_err(|_| format!("invalid {name} header value"))?;
            req = req.header(name, v);
        }
        let bytes = match body {
            Some((content_type, b)) => {
                req = req.header(header::CONTENT_TYPE, content_type);
                Bytes::from(b)
            }
            None => Bytes::new(),
        };
        let req = req.body(Full::new(bytes)).map_err(|e| format!("building the request: {e}"))?;
        if https {
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("invalid TLS name {host:?}: {e}"))?;
            let tls = self.tls.connect(name, tcp).await.map_err(|e| format!("TLS handshake with {authority}: {e}"))?;
            exchange(TokioIo::new(tls), req).await
        } else {
            exchange(TokioIo::new(tcp), req).await
        }
    }
}

async fn exchange<T>(io: TokioIo<T>, req: Request<Full<Bytes>>) -> Result<Reply, String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| format!("HTTP handshake: {e}"))?;
    let conn = tokio::spawn(conn);
    let result = async {
        let resp = sender.send_request(req).await.map_err(|e| format!("HTTP request: {e}"))?;
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), MAX_BODY)
            .collect()
            .await
            .map_err(|e| format!("reading the response body: {e}"))?
            .to_bytes();
        Ok(Reply { status, body })
    }
    .await;
    conn.abort();
    result
}
