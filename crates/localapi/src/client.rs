//! The LocalAPI HTTP client over tailscaled's unix socket.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::header::{CONTENT_TYPE, ETAG, HeaderMap, HeaderValue, IF_MATCH, RETRY_AFTER};
use reqwest::{Method, StatusCode};
use rustls::RootCertStore;
use snirouter_tls::Trust;

use crate::error::{self, Error, classify};
use crate::services::{ServeBytes, ServiceDetails};
use crate::status::{DnsConfig, FeatureQuery, Status, WhoIs};
use crate::{CertPair, format_go_duration, parse_pair_pem};

/// Base URL; the host part becomes the `Host` header, which tailscaled requires to be exactly
/// `local-tailscaled.sock` (no port).
const BASE: &str = "http://local-tailscaled.sock/localapi/v0/";

/// Capability version sent in `Tailscale-Cap` (informational; tailscaled does not require it).
const TAILSCALE_CAP: &str = "122";

/// Default deadline for calls other than `cert_pair` and the watch stream.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest single line accepted from the IPN bus (netmaps can be several MB).
const MAX_BUS_LINE: usize = 64 << 20;

/// A client for tailscaled's LocalAPI. Cheap to clone (shares one connection pool).
#[derive(Clone)]
pub struct LocalClient {
    http: reqwest::Client,
    socket: Arc<Path>,
    default_timeout: Duration,
    /// The `Tailscale-Version` of the last answer (shared by clones).
    version: Arc<std::sync::Mutex<Option<String>>>,
}

impl std::fmt::Debug for LocalClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalClient")
            .field("socket", &self.socket)
            .field("default_timeout", &self.default_timeout)
            .finish()
    }
}

/// A buffered, fully read answer.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

/// One request to make.
struct Req<'a> {
    method: Method,
    /// Path below `/localapi/v0/`, without query; used in error messages.
    endpoint: &'a str,
    /// Optional query string (already encoded), without `?`.
    query: Option<String>,
    body: Option<Vec<u8>>,
    if_match: Option<&'a str>,
}

impl<'a> Req<'a> {
    fn get(endpoint: &'a str) -> Self {
        Req { method: Method::GET, endpoint, query: None, body: None, if_match: None }
    }

    fn what(&self) -> String {
        format!("{} /localapi/v0/{}", self.method, self.endpoint)
    }

    fn url(&self) -> String {
        match &self.query {
            Some(q) => format!("{BASE}{}?{q}", self.endpoint),
            None => format!("{BASE}{}", self.endpoint),
        }
    }
}

impl LocalClient {
    /// tailscaled's version as its last answer said (`Tailscale-Version`), if any yet.
    pub fn daemon_version(&self) -> Option<String> {
        self.version.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// Creates a client for the socket at `socket` (e.g. `/var/run/tailscale/tailscaled.sock`).
    /// Does not connect; the first call does.
    pub fn new(socket: impl Into<PathBuf>) -> Result<Self, Error> {
        let socket: Arc<Path> = Arc::from(socket.into());
        let mut builder = reqwest::Client::builder();
        // The socket speaks plain HTTP, but once any crate in the build turns on reqwest's
        // TLS (the control API does), a client without a TLS config would look for a
        // process-wide rustls provider; this one trusts nothing and is never used.
        // (`client_config` fails only for a provider without TLS 1.2/1.3 suites; ring has both.)
        if let Ok(tls) = snirouter_tls::client_config(Trust::Roots(Arc::new(RootCertStore::empty())), &[]) {
            builder = builder.tls_backend_preconfigured(tls);
        }
        let http = builder
            .unix_socket(socket.clone())
            .http1_only()
            .no_proxy()
            // No idle pooling: a fresh unix-socket connect costs microseconds, and a pooled
            // connection goes stale when tailscaled restarts (the next call would fail with
            // ECONNRESET instead of reconnecting or reporting a missing socket).
            .pool_max_idle_per_host(0)
            .user_agent(concat!("snirouter-localapi/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| error::from_transport(e, &socket, "building the HTTP client", None))?;
        Ok(LocalClient { http, socket, default_timeout: DEFAULT_TIMEOUT, version: Arc::default() })
    }

    /// Returns a client whose non-certificate calls use `timeout` instead of
    /// [`DEFAULT_TIMEOUT`] (10 s).
    pub fn with_default_timeout(mut self, timeout: Duration) -> Self {
        self.default_timeout = timeout;
        self
    }

    /// The socket path this client talks to.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }

    /// `GET /localapi/v0/status?peers=false`.
    pub async fn status(&self) -> Result<Status, Error> {
        let mut req = Req::get("status");
        req.query = Some("peers=false".to_owned());
        let reply = self.call_ok(req, Some(self.default_timeout), None).await?;
        parse_json(&reply.body, "status JSON (ipnstate.Status)")
    }

    /// `GET /localapi/v0/status` with the peers ([`Status::peers`]): for naming the other
    /// hosts of a service. Larger than [`LocalClient::status`] on a big tailnet.
    pub async fn status_with_peers(&self) -> Result<Status, Error> {
        let reply = self.call_ok(Req::get("status"), Some(self.default_timeout), None).await?;
        parse_json(&reply.body, "status JSON (ipnstate.Status)")
    }

    /// The names this node may get certificates for: `GET /localapi/v0/cert-domains`
    /// (tailscaled ≥ 1.98); on 404 falls back to `status().cert_domains`.
    pub async fn cert_domains(&self) -> Result<Vec<String>, Error> {
        match self.call_ok(Req::get("cert-domains"), Some(self.default_timeout), None).await {
            Ok(reply) => {
                let v: Option<Vec<String>> = parse_json(&reply.body, "a JSON array of domain names")?;
                Ok(v.unwrap_or_default())
            }
            Err(Error::NotSupported { .. }) => {
                tracing::debug!("cert-domains not supported by this tailscaled; falling back to status");
                Ok(self.status().await?.cert_domains)
            }
            Err(e) => Err(e),
        }
    }

    /// `GET /localapi/v0/dns-config` (tailscaled ≥ 1.100): the DNS configuration control
    /// sent this node, ExtraRecords included. Older daemons answer [`Error::NotSupported`].
    pub async fn dns_config(&self) -> Result<DnsConfig, Error> {
        let reply = self.call_ok(Req::get("dns-config"), Some(self.default_timeout), None).await?;
        parse_json(&reply.body, "dns-config JSON (tailcfg.DNSConfig)")
    }

    /// `GET /localapi/v0/services` (tailscaled ≥ 1.98; older ones answer
    /// [`Error::NotSupported`]): the Services this node may reach and the ports control
    /// lists for each, by `svc:NAME`. A Service this node hosts but may not reach itself
    /// is not listed.
    pub async fn services(&self) -> Result<BTreeMap<String, ServiceDetails>, Error> {
        let reply = self.call_ok(Req::get("services"), Some(self.default_timeout), None).await?;
        let v: Option<BTreeMap<String, ServiceDetails>> =
            parse_json(&reply.body, "services JSON (map of tailcfg.ServiceDetails)")?;
        Ok(v.unwrap_or_default())
    }

    /// The per-Service Serve byte counters from `GET /localapi/v0/usermetrics`, by
    /// `svc:NAME` (empty before tailscaled 1.102, which added them).
    pub async fn serve_bytes(&self) -> Result<BTreeMap<String, ServeBytes>, Error> {
        let reply = self.call_ok(Req::get("usermetrics"), Some(self.default_timeout), None).await?;
        Ok(crate::services::serve_bytes(&String::from_utf8_lossy(&reply.body)))
    }

    /// `POST /localapi/v0/query-feature?feature=<name>`: tailscaled asks control whether a
    /// feature (`serve`, `funnel`) is enabled and, if not, where to enable it.
    pub async fn query_feature(&self, feature: &str) -> Result<FeatureQuery, Error> {
        let mut req = Req::get("query-feature");
        req.method = Method::POST;
        req.query = Some(format!("feature={}", encode_query_value(feature)));
        let reply = self.call_ok(req, Some(self.default_timeout), None).await?;
        parse_json(&reply.body, "query-feature JSON (tailcfg.QueryFeatureResponse)")
    }

    /// `GET /localapi/v0/cert/<fqdn>?type=pair[&min_validity=<dur>]`.
    ///
    /// `min_validity`: if the cached certificate expires sooner, tailscaled renews it
    /// synchronously (tailscaled ≥ 1.72). `timeout` bounds the whole call — first issuance can
    /// take minutes, and dropping the request aborts tailscaled's issuance.
    ///
    /// `fqdn` may carry a trailing dot and any case; it is sent lower-cased without the dot.
    /// Names with characters that cannot occur in a DNS name are rejected locally with
    /// [`Error::InvalidDomain`].
    pub async fn cert_pair(
        &self,
        fqdn: &str,
        min_validity: Option<Duration>,
        timeout: Duration,
    ) -> Result<CertPair, Error> {
        let domain = normalize_domain(fqdn)?;
        let endpoint = format!("cert/{domain}");
        let mut query = "type=pair".to_owned();
        if let Some(mv) = min_validity {
            query.push_str("&min_validity=");
            query.push_str(&encode_query_value(&format_go_duration(mv)));
        }
        let mut req = Req::get(&endpoint);
        req.query = Some(query);
        let reply = self.call_ok(req, Some(timeout), Some(&domain)).await?;
        parse_pair_pem(&reply.body)
    }

    /// `GET /localapi/v0/whois?addr=<ip:port>[&svc_name=svc:NAME]`. `Ok(None)` when
    /// tailscaled knows no node for the address (404 `no match for IP:port`).
    ///
    /// With `service` (`svc:NAME`), [`WhoIs::caps`] are the capabilities granted toward
    /// that Tailscale Service on this node (tailscaled ≥ 1.100; older daemons ignore the
    /// parameter and answer with the capabilities toward the node itself).
    pub async fn whois(&self, addr: SocketAddr, service: Option<&str>) -> Result<Option<WhoIs>, Error> {
        let mut req = Req::get("whois");
        let mut query = format!("addr={}", encode_query_value(&addr.to_string()));
        if let Some(svc) = service {
            query.push_str("&svc_name=");
            query.push_str(&encode_query_value(svc));
        }
        req.query = Some(query);
        let reply = self.call(req, Some(self.default_timeout)).await?;
        if reply.status == StatusCode::NOT_FOUND {
            let msg = error::message_from_body(&reply.body);
            if msg.contains("no match") {
                return Ok(None);
            }
        }
        let reply = check(reply, "whois", None)?;
        WhoIs::from_json(&reply.body).map(Some).map_err(|e| Error::BadResponse {
            what: "whois JSON (apitype.WhoIsResponse)".to_owned(),
            detail: e.to_string(),
        })
    }

    /// Opens `GET /localapi/v0/watch-ipn-bus?mask=<mask>`, a stream of newline-delimited
    /// `ipn.Notify` JSON objects. Useful bits: `NotifyInitialState = 2`, `NotifyInitialNetMap = 8`,
    /// `NotifyInitialHealthState = 128`, `NotifyNoNetMap = 8192`.
    ///
    /// Waiting for the response head is bounded by the default timeout; reading the stream is
    /// not (wrap [`IpnBusWatcher::next`] in a timeout if needed).
    pub async fn watch_ipn_bus(&self, mask: u64) -> Result<IpnBusWatcher, Error> {
        let mut req = Req::get("watch-ipn-bus");
        req.query = Some(format!("mask={mask}"));
        let what = req.what();
        let timeout = self.default_timeout;
        let started = Instant::now();
        let resp = match tokio::time::timeout(timeout, self.build(&req).send()).await {
            Err(_) => return Err(Error::Timeout { what, after: timeout }),
            Ok(Err(e)) => return Err(self.transport_error(e, &what, Some(timeout))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        tracing::debug!(
            method = "GET",
            path = "/localapi/v0/watch-ipn-bus",
            status = status.as_u16(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "localapi request"
        );
        if !status.is_success() {
            let headers = resp.headers().clone();
            let body = match tokio::time::timeout(timeout, resp.bytes()).await {
                Ok(Ok(b)) => b,
                _ => Bytes::new(),
            };
            let retry_after = headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
            return Err(classify("watch-ipn-bus", None, status.as_u16(), retry_after, &body));
        }
        Ok(IpnBusWatcher { resp, buf: Vec::new(), eof: false, socket: self.socket.clone() })
    }

    /// `GET /localapi/v0/serve-config`: the ServeConfig JSON (`null` is returned as `{}`) and
    /// its `ETag`, for a later [`LocalClient::set_serve_config`].
    pub async fn serve_config(&self) -> Result<(serde_json::Value, Option<String>), Error> {
        let reply = self.call_ok(Req::get("serve-config"), Some(self.default_timeout), None).await?;
        let etag = reply.headers.get(ETAG).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let mut v: serde_json::Value = if reply.body.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Null
        } else {
            parse_json(&reply.body, "serve config JSON (ipn.ServeConfig)")?
        };
        if v.is_null() {
            v = serde_json::Value::Object(serde_json::Map::new());
        }
        Ok((v, etag))
    }

    /// `POST /localapi/v0/serve-config` (full replacement). With `if_match` = the ETag from
    /// [`LocalClient::serve_config`], a concurrent change yields [`Error::PreconditionFailed`].
    pub async fn set_serve_config(&self, cfg: &serde_json::Value, if_match: Option<&str>) -> Result<(), Error> {
        let body = serde_json::to_vec(cfg).map_err(|e| Error::BadResponse {
            what: "a serializable serve config".to_owned(),
            detail: e.to_string(),
        })?;
        let req = Req { method: Method::POST, endpoint: "serve-config", query: None, body: Some(body), if_match };
        self.call_ok(req, Some(self.default_timeout), None).await?;
        Ok(())
    }

    /// `GET /localapi/v0/prefs`: the node's `ipn.Prefs` JSON.
    pub async fn prefs(&self) -> Result<serde_json::Value, Error> {
        let reply = self.call_ok(Req::get("prefs"), Some(self.default_timeout), None).await?;
        parse_json(&reply.body, "prefs JSON (ipn.Prefs)")
    }

    /// `PATCH /localapi/v0/prefs` with a MaskedPrefs body (e.g.
    /// `{"AdvertiseServicesSet": true, "AdvertiseServices": [...]}`); returns the new prefs.
    pub async fn edit_prefs(&self, masked: &serde_json::Value) -> Result<serde_json::Value, Error> {
        let body = serde_json::to_vec(masked)
            .map_err(|e| Error::BadResponse { what: "serializable masked prefs".to_owned(), detail: e.to_string() })?;
        let req = Req { method: Method::PATCH, endpoint: "prefs", query: None, body: Some(body), if_match: None };
        let reply = self.call_ok(req, Some(self.default_timeout), None).await?;
        parse_json(&reply.body, "prefs JSON (ipn.Prefs)")
    }

    // -----------------------------------------------------------------------------------------

    fn build(&self, req: &Req<'_>) -> reqwest::RequestBuilder {
        let mut rb = self
            .http
            .request(req.method.clone(), req.url())
            .header("Tailscale-Cap", HeaderValue::from_static(TAILSCALE_CAP));
        if let Some(etag) = req.if_match {
            rb = rb.header(IF_MATCH, etag);
        }
        if let Some(body) = &req.body {
            rb = rb.header(CONTENT_TYPE, "application/json").body(body.clone());
        }
        rb
    }

    fn transport_error(&self, e: reqwest::Error, what: &str, timeout: Option<Duration>) -> Error {
        error::from_transport(e, &self.socket, what, timeout)
    }

    /// Sends `req` and reads the whole body, all within `timeout` (if any).
    async fn call(&self, req: Req<'_>, timeout: Option<Duration>) -> Result<Reply, Error> {
        let what = req.what();
        let started = Instant::now();
        let fut = async {
            let resp = self.build(&req).send().await.map_err(|e| self.transport_error(e, &what, timeout))?;
            let status = resp.status();
            let headers = resp.headers().clone();
            if let Some(v) = headers.get("tailscale-version").and_then(|v| v.to_str().ok()) {
                *self.version.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(v.to_owned());
            }
            let body = resp.bytes().await.map_err(|e| self.transport_error(e, &what, timeout))?;
            Ok::<_, Error>(Reply { status, headers, body })
        };
        let result = match timeout {
            Some(t) => match tokio::time::timeout(t, fut).await {
                Ok(r) => r,
                Err(_) => Err(Error::Timeout { what: what.clone(), after: t }),
            },
            None => fut.await,
        };
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match &result {
            Ok(r) => {
                tracing::debug!(method = %req.method, path = %format!("/localapi/v0/{}", req.endpoint), status = r.status.as_u16(), elapsed_ms, "localapi request")
            }
            Err(e) => {
                tracing::debug!(method = %req.method, path = %format!("/localapi/v0/{}", req.endpoint), error = %e, elapsed_ms, "localapi request failed")
            }
        }
        result
    }

    /// [`Self::call`] plus classification of non-2xx answers.
    async fn call_ok(&self, req: Req<'_>, timeout: Option<Duration>, domain: Option<&str>) -> Result<Reply, Error> {
        let endpoint = req.endpoint.to_owned();
        let reply = self.call(req, timeout).await?;
        check(reply, &endpoint, domain)
    }
}

/// Passes 2xx replies through; classifies everything else.
fn check(reply: Reply, endpoint: &str, domain: Option<&str>) -> Result<Reply, Error> {
    if reply.status.is_success() {
        return Ok(reply);
    }
    let retry_after = reply.headers.get(RETRY_AFTER).and_then(|v| v.to_str().ok());
    Err(classify(endpoint, domain, reply.status.as_u16(), retry_after, &reply.body))
}

fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8], what: &str) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::BadResponse { what: what.to_owned(), detail: e.to_string() })
}

/// Trims one trailing dot, lower-cases, and rejects names that cannot be a certificate domain
/// or that would break the request path.
fn normalize_domain(fqdn: &str) -> Result<String, Error> {
    let d = fqdn.strip_suffix('.').unwrap_or(fqdn).to_ascii_lowercase();
    let ok = !d.is_empty()
        && d.len() <= 253
        && d.contains('.')
        && !d.contains("..")
        && !d.starts_with('.')
        && d.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b'*'));
    if ok { Ok(d) } else { Err(Error::InvalidDomain { domain: fqdn.to_owned() }) }
}

/// Percent-encodes everything except RFC 3986 unreserved characters.
fn encode_query_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A live `watch-ipn-bus` stream; yields one JSON object per line.
pub struct IpnBusWatcher {
    resp: reqwest::Response,
    buf: Vec<u8>,
    eof: bool,
    socket: Arc<Path>,
}

impl std::fmt::Debug for IpnBusWatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IpnBusWatcher").field("buffered", &self.buf.len()).field("eof", &self.eof).finish()
    }
}

impl IpnBusWatcher {
    /// The next notification; `Ok(None)` once tailscaled closes the stream. Blank lines are
    /// skipped; lines split across HTTP chunks are reassembled.
    pub async fn next(&mut self) -> Result<Option<serde_json::Value>, Error> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if let Some(v) = parse_bus_line(&line)? {
                    return Ok(Some(v));
                }
                continue;
            }
            if self.eof {
                let rest = std::mem::take(&mut self.buf);
                return parse_bus_line(&rest);
            }
            match self.resp.chunk().await {
                Ok(Some(chunk)) => {
                    if self.buf.len() + chunk.len() > MAX_BUS_LINE {
                        return Err(Error::BadResponse {
                            what: "newline-delimited ipn.Notify JSON".to_owned(),
                            detail: format!("a line exceeded {MAX_BUS_LINE} bytes"),
                        });
                    }
                    self.buf.extend_from_slice(&chunk);
                }
                Ok(None) => self.eof = true,
                Err(e) => {
                    return Err(error::from_transport(e, &self.socket, "reading /localapi/v0/watch-ipn-bus", None));
                }
            }
        }
    }
}

fn parse_bus_line(line: &[u8]) -> Result<Option<serde_json::Value>, Error> {
    let trimmed = line.trim_ascii();
    if trimmed.is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(trimmed)
        .map(Some)
        .map_err(|e| Error::BadResponse { what: "newline-delimited ipn.Notify JSON".to_owned(), detail: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_normalization() {
        assert_eq!(normalize_domain("Grafana.Bat-Boa.ts.net.").unwrap(), "grafana.bat-boa.ts.net");
        assert_eq!(normalize_domain("*.storage.x.ts.net").unwrap(), "*.storage.x.ts.net");
        for bad in ["", ".", "localhost", "a..b", "a/b.c", "a.b?x=1", "a.b#f", "a b.c", "a.b:443", "../etc", "x.y\0"] {
            assert!(matches!(normalize_domain(bad), Err(Error::InvalidDomain { .. })), "{bad:?}");
        }
    }

    #[test]
    fn query_encoding() {
        assert_eq!(encode_query_value("720h0m0s"), "720h0m0s");
        assert_eq!(encode_query_value("1.5µs"), "1.5%C2%B5s");
        assert_eq!(encode_query_value("[fd7a::1]:443"), "%5Bfd7a%3A%3A1%5D%3A443");
    }

    #[test]
    fn bus_lines() {
        assert_eq!(parse_bus_line(b"  \r\n").unwrap(), None);
        assert_eq!(parse_bus_line(b"{\"a\":1}\r\n").unwrap(), Some(serde_json::json!({"a": 1})));
        assert!(matches!(parse_bus_line(b"{nope"), Err(Error::BadResponse { .. })));
    }
}
