//! The control API's HTTP client: reqwest over rustls (`snirouter-tls`, Mozilla roots),
//! HTTP/1.1, one deadline per request, answers read up to [`MAX_BODY`]. Plain `http://`
//! is for loopback test servers.

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{Method, header};
use snirouter_tls::Trust;

/// Largest response body read.
const MAX_BODY: usize = 4 << 20;

/// A buffered response.
pub(crate) struct Reply {
    pub status: u16,
    pub body: Bytes,
}

#[derive(Clone)]
pub(crate) struct Client {
    inner: reqwest::Client,
    timeout: Duration,
}

impl Client {
    pub(crate) fn new(timeout: Duration) -> Result<Client, String> {
        let tls =
            snirouter_tls::client_config(Trust::MozillaRoots, &[b"http/1.1"]).map_err(|e| format!("TLS setup: {e}"))?;
        let inner = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .user_agent(concat!("snirouter/", env!("CARGO_PKG_VERSION")))
            .no_proxy()
            .timeout(timeout)
            .build()
            .map_err(|e| format!("HTTP client setup: {e}"))?;
        Ok(Client { inner, timeout })
    }

    /// Sends one request to `url` (`http[s]://host[:port]/path?query`).
    pub(crate) async fn send(
        &self,
        method: Method,
        url: &str,
        headers: &[(header::HeaderName, String)],
        body: Option<(&'static str, Vec<u8>)>,
    ) -> Result<Reply, String> {
        let mut req = self.inner.request(method, url).header(header::ACCEPT, "application/json");
        for (name, value) in headers {
            req = req.header(name, value);
        }
        if let Some((content_type, bytes)) = body {
            req = req.header(header::CONTENT_TYPE, content_type).body(bytes);
        }
        let resp = req.send().await.map_err(|e| self.describe(&e))?;
        let status = resp.status().as_u16();
        let body = read_limited(resp).await.map_err(|e| match e {
            Some(e) => format!("reading the answer: {}", self.describe(&e)),
            None => format!("the answer is larger than {} MiB", MAX_BODY >> 20),
        })?;
        Ok(Reply { status, body })
    }

    /// reqwest's error with its causes (`error sending request: … connection refused`).
    fn describe(&self, e: &reqwest::Error) -> String {
        if e.is_timeout() {
            return format!("no answer within {:?}", self.timeout);
        }
        let causes = std::iter::successors(Some(e as &(dyn std::error::Error + 'static)), |e| e.source());
        causes.map(ToString::to_string).collect::<Vec<_>>().join(": ")
    }
}

/// The body; `Err(None)` once it passes [`MAX_BODY`].
async fn read_limited(mut resp: reqwest::Response) -> Result<Bytes, Option<reqwest::Error>> {
    let mut body = BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(None);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
