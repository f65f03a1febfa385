//! HTTP handling for the simulated LocalAPI: framing checks, permissions and
//! one function per endpoint. Mirrors `ipn/localapi` (`ServeHTTP`,
//! `serveStatus`, `serveCert`, `serveKeyPair`, `serveServeConfig`,
//! `servePrefs`, `serveWhoIs`, `serveWatchIPNBus`) and `feature/acme`
//! (`getCertPEMWithValidity`, `resolveCertDomain`).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, Version, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::TokioIo;
use ring::rand::SecureRandom;
use serde_json::Value;
use tokio::sync::{broadcast, mpsc, watch};

use super::json::{self, CapMap, state_num};
use super::serve_config::{self, ServeConfig};
use super::{BusEvent, CachedCert, Inner, IssuedRecord, RequestRecord, SimConfig, SimPeer};
use crate::gofmt::{self, hex, quote, quote_slice};

/// Response body type: either a full buffer or a channel-fed stream.
pub(crate) enum Body {
    Full(Full<Bytes>),
    Stream(mpsc::Receiver<Bytes>),
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            Body::Full(f) => Pin::new(f).poll_frame(cx),
            Body::Stream(rx) => rx.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(f) => f.is_end_stream(),
            Body::Stream(_) => false,
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        match self {
            Body::Full(f) => f.size_hint(),
            Body::Stream(_) => hyper::body::SizeHint::default(),
        }
    }
}

type Resp = Response<Body>;

fn full(status: u16, content_type: Option<&str>, body: impl Into<Bytes>) -> Resp {
    let mut r = Response::new(Body::Full(Full::new(body.into())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(ct) = content_type
        && let Ok(v) = HeaderValue::from_str(ct)
    {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r
}

/// Go `http.Error`: text/plain; charset=utf-8, nosniff, message + "\n".
fn go_error(status: u16, msg: &str) -> Resp {
    let mut r = full(status, Some("text/plain; charset=utf-8"), format!("{msg}\n"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// `localapi.WriteErrorJSON`: 500, application/json, `{"error":"..."}` + "\n".
fn go_error_json(msg: &str) -> Resp {
    let body = format!("{}\n", gofmt::to_go_json_compact(&serde_json::json!({ "error": msg })));
    full(500, Some("application/json"), body)
}

/// prefs' `resJSON{Error}` answer (`servePrefs`): capital `Error`, unlike serve-config.
fn prefs_error(status: u16, msg: &str) -> Resp {
    let body = format!("{}\n", gofmt::to_go_json_compact(&serde_json::json!({ "Error": msg })));
    full(status, Some("application/json"), body)
}

/// Marks a response as a Go handler panic: `net/http` recovers it, logs it and
/// closes the connection without an answer.
#[derive(Clone, Copy)]
struct GoPanic;

fn go_panic(what: &str) -> Resp {
    tracing::debug!(what, "simulated tailscaled: handler panic, closing the connection");
    let mut r = full(500, None, Bytes::new());
    r.extensions_mut().insert(GoPanic);
    r
}

fn json_indented<T: serde::Serialize>(v: &T) -> Resp {
    full(200, Some("application/json"), gofmt::to_go_json_indented(v))
}

/// Serve one accepted connection until it ends or the simulator kills it.
pub(crate) async fn serve_conn(inner: Arc<Inner>, stream: tokio::net::UnixStream, mut kill_rx: watch::Receiver<u64>) {
    let conn_uid = stream.peer_cred().ok().map(|c| c.uid());
    let svc_inner = inner.clone();
    let svc = hyper::service::service_fn(move |req| {
        let inner = svc_inner.clone();
        async move {
            let resp = handle(inner, conn_uid, req).await;
            match resp.extensions().get::<GoPanic>() {
                Some(_) => Err(std::io::Error::other("simulated handler panic")),
                None => Ok(resp),
            }
        }
    });
    let conn = hyper::server::conn::http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), svc);
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "simulated tailscaled: connection ended with error");
            }
        }
        _ = kill_rx.changed() => {
            tracing::debug!("simulated tailscaled: connection closed by outage/shutdown");
        }
    }
}

/// Records the request when dropped; status 499 unless `finish` was called.
struct RecordGuard {
    inner: Arc<Inner>,
    rec: Option<RequestRecord>,
}

impl RecordGuard {
    fn finish(mut self, status: u16) {
        if let Some(mut r) = self.rec.take() {
            r.status = status;
            self.inner.state().requests.push(r);
        }
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        if let Some(r) = self.rec.take() {
            tracing::debug!(path = %r.path_and_query, "simulated tailscaled: client went away");
            self.inner.state().requests.push(r);
        }
    }
}

async fn handle(inner: Arc<Inner>, conn_uid: Option<u32>, req: Request<Incoming>) -> Resp {
    let host = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_string())
        .or_else(|| req.headers().get(header::HOST).map(|h| String::from_utf8_lossy(h.as_bytes()).into_owned()));
    let path_and_query =
        req.uri().path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| req.uri().path().to_string());
    tracing::debug!(method = %req.method(), path = %path_and_query, "simulated tailscaled request");
    let guard = RecordGuard {
        inner: inner.clone(),
        rec: Some(RequestRecord {
            at: Instant::now(),
            method: req.method().to_string(),
            path_and_query,
            host: host.clone(),
            status: 499,
        }),
    };
    let resp = route(&inner, conn_uid, host, req).await;
    // 0: no answer at all (a handler panic closed the connection).
    guard.finish(if resp.extensions().get::<GoPanic>().is_some() { 0 } else { resp.status().as_u16() });
    resp
}

struct Perms {
    /// The caller's uid (`SimConfig.peer_uid` or `SO_PEERCRED`).
    uid: Option<u32>,
    read: bool,
    write: bool,
    cert: bool,
}

fn perms(inner: &Inner, cfg: &SimConfig, conn_uid: Option<u32>) -> Perms {
    let uid = cfg.peer_uid.or(conn_uid);
    let daemon_uid = cfg.daemon_uid.unwrap_or(inner.process_uid);
    let write = match uid {
        None => false, // unknown peer credentials: read-only
        Some(0) => true,
        Some(u) => Some(u) == cfg.operator_uid || (u == daemon_uid && daemon_uid != 0),
    };
    Perms { uid, read: true, write, cert: uid.is_some() && uid == cfg.permit_cert_uid }
}

fn add_localapi_headers(resp: &mut Resp, cfg: &SimConfig) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&cfg.version) {
        h.insert("tailscale-version", v);
    }
    h.insert("tailscale-cap", HeaderValue::from(cfg.capver));
    h.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'none'; frame-ancestors 'none'; script-src 'none'; script-src-elem 'none'; script-src-attr 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
}

async fn route(inner: &Arc<Inner>, conn_uid: Option<u32>, host: Option<String>, req: Request<Incoming>) -> Resp {
    // Go's net/http rejects HTTP/1.1 requests without a Host header before any
    // handler runs.
    if req.version() == Version::HTTP_11 && host.is_none() {
        let mut r = full(400, Some("text/plain; charset=utf-8"), "400 Bad Request: missing required Host header");
        r.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        return r;
    }
    let has_referer = req.headers().get(header::REFERER).is_some_and(|v| !v.is_empty());
    let has_origin = req.headers().get(header::ORIGIN).is_some_and(|v| !v.is_empty());
    let host_ok = matches!(host.as_deref(), None | Some("") | Some("local-tailscaled.sock"));
    if has_referer || has_origin || !host_ok {
        // Sent before the LocalAPI headers are added, like ServeHTTP.
        return go_error(403, "invalid localapi request");
    }
    let cfg = inner.cfg();
    let mut resp = dispatch(inner, &cfg, conn_uid, req).await;
    add_localapi_headers(&mut resp, &cfg);
    resp
}

async fn dispatch(inner: &Arc<Inner>, cfg: &SimConfig, conn_uid: Option<u32>, req: Request<Incoming>) -> Resp {
    let Some(path) = gofmt::unescape(req.uri().path(), false) else {
        return full(400, Some("text/plain; charset=utf-8"), "400 Bad Request");
    };
    let query = gofmt::parse_query(req.uri().query().unwrap_or(""));
    let p = perms(inner, cfg, conn_uid);
    if path == "/" {
        return full(200, Some("text/plain; charset=utf-8"), "tailscaled\n");
    }
    let Some(suffix) = path.strip_prefix("/localapi/v0/") else {
        return go_error(404, "404 page not found");
    };
    match suffix {
        "status" => serve_status(inner, cfg, &p, &query),
        "cert-domains" if cfg.has_cert_domains_endpoint => serve_cert_domains(cfg, &p),
        "dns-config" if cfg.has_cert_domains_endpoint => serve_dns_config(cfg, &p),
        "query-feature" => serve_query_feature(cfg, &p, &req, &query),
        "watch-ipn-bus" => serve_watch_ipn_bus(inner, &p, &query),
        "serve-config" => serve_serve_config(inner, &p, req).await,
        "prefs" => serve_prefs(inner, &p, req).await,
        "whois" => serve_whois(cfg, &p, &query),
        "services" if version_at_least(cfg, 1, 98) => serve_services(cfg, &req),
        "usermetrics" => serve_usermetrics(cfg),
        s if s.starts_with("cert/") => {
            let domain = &s["cert/".len()..];
            serve_cert(inner, &p, domain, &query).await
        }
        _ => go_error(404, "404 page not found"),
    }
}

// ---------------------------------------------------------------------------
// status, cert-domains, dns-config, query-feature, whois

fn serve_status(inner: &Inner, cfg: &SimConfig, p: &Perms, query: &[(String, String)]) -> Resp {
    if !p.read {
        return go_error(403, "status access denied");
    }
    let peers = gofmt::parse_bool(gofmt::query_get(query, "peers")).unwrap_or(true);
    let pending = pending_text(&inner.state().pending_certs);
    json_indented(&json::status(cfg, peers, pending))
}

/// `certPendingWarnable`'s text: the pending domains sorted, joined with `, `.
fn pending_text(pending: &std::collections::BTreeSet<String>) -> Option<String> {
    pending_domains(pending).map(|domains| format!("{CERT_PENDING_TEXT}{domains}"))
}

/// `certPendingWarnable.Text` before its `domains` argument.
const CERT_PENDING_TEXT: &str = "Fetching TLS certificate via ACME for: ";

/// The warning's `domains` argument: the pending domains (sorted by the set), `, `-joined.
fn pending_domains(pending: &std::collections::BTreeSet<String>) -> Option<String> {
    (!pending.is_empty()).then(|| pending.iter().map(String::as_str).collect::<Vec<_>>().join(", "))
}

/// The IPN bus's `Health` value (`health.State`): `{"Warnings":null}` when healthy.
fn health_state(st: &super::State) -> Value {
    let (Some(domains), Some(since)) = (pending_domains(&st.pending_certs), st.pending_since) else {
        return serde_json::json!({ "Warnings": null });
    };
    let text = format!("{CERT_PENDING_TEXT}{domains}");
    let etag = hex(ring::digest::digest(&ring::digest::SHA256, text.as_bytes()).as_ref());
    serde_json::json!({ "Warnings": { "tls-cert-pending": {
        "WarnableCode": "tls-cert-pending",
        "Severity": "low",
        "Title": "Fetching TLS certificate",
        "Text": text,
        "BrokenSince": gofmt::format_rfc3339(since),
        "Args": { "domains": domains },
        "DependsOn": ["warming-up"],
        "ETag": etag,
    }}})
}

/// `setCertPending(domain, true)` for as long as it lives (the ACME flow for a domain
/// without a usable cached certificate), `false` when dropped — also when the client
/// goes away mid-issuance.
struct PendingCert {
    inner: Arc<Inner>,
    domain: String,
}

impl PendingCert {
    fn start(inner: &Arc<Inner>, domain: &str) -> PendingCert {
        {
            let mut st = inner.state();
            st.pending_certs.insert(domain.to_owned());
            st.pending_since.get_or_insert_with(SystemTime::now);
        }
        let _ = inner.bus.send(BusEvent::Health);
        PendingCert { inner: inner.clone(), domain: domain.to_owned() }
    }
}

impl Drop for PendingCert {
    fn drop(&mut self) {
        {
            let mut st = self.inner.state();
            st.pending_certs.remove(&self.domain);
            if st.pending_certs.is_empty() {
                st.pending_since = None;
            }
        }
        let _ = self.inner.bus.send(BusEvent::Health);
    }
}

/// Whether the simulated daemon's `version` is at least `major.minor` (unreadable: newest).
fn version_at_least(cfg: &SimConfig, major: u32, minor: u32) -> bool {
    let mut parts = cfg.version.split(['.', '-']).map(|p| p.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(a), Some(b)) => (a, b) >= (major, minor),
        _ => true,
    }
}

/// `serveServices` (1.98+): GET only, no permission check, `nm.Services()` of the
/// netmap (503 "no netmap" before the first one), JSON-encoded with a trailing newline.
fn serve_services(cfg: &SimConfig, req: &Request<Incoming>) -> Resp {
    if req.method() != Method::GET {
        return go_error(405, "only GET allowed");
    }
    if matches!(cfg.backend_state.as_str(), "NoState" | "NeedsLogin" | "NeedsMachineAuth") {
        return go_error(503, "no netmap");
    }
    let mut out = serde_json::Map::new();
    for (i, (name, ports)) in cfg.visible_services.iter().enumerate() {
        let name = json::svc_name(name);
        // `ServiceDetails`: Name, DisplayName (omitzero), Addrs, Ports (omitempty).
        // The same addresses as the host's `service-host` map gives an approved Service.
        let vips = cfg.approved_services.iter().position(|s| json::svc_name(s) == name).unwrap_or(1000 + i);
        let mut fields = vec![("Name", Value::String(name.clone()))];
        fields.push(("Addrs", serde_json::json!(json::service_vips(vips))));
        if !ports.is_empty() {
            fields.push(("Ports", serde_json::json!(ports)));
        }
        out.insert(name, serde_json::to_value(gofmt::Ordered(fields)).unwrap_or(Value::Null));
    }
    let body = if out.is_empty() { "{}".to_owned() } else { gofmt::to_go_json_compact(&Value::Object(out)) };
    full(200, Some("application/json"), format!("{body}\n"))
}

/// `serveUserMetrics`: the user-metrics registry in Prometheus text, no permission check;
/// the per-Service Serve byte counters exist from 1.102 on.
fn serve_usermetrics(cfg: &SimConfig) -> Resp {
    let mut out = String::from(
        "# HELP tailscaled_advertised_routes Number of advertised network routes (e.g. by a subnet router)\n\
         # TYPE tailscaled_advertised_routes gauge\ntailscaled_advertised_routes 0\n",
    );
    if version_at_least(cfg, 1, 102) && !cfg.serve_bytes.is_empty() {
        for (metric, dir, inbound) in [
            ("tailscaled_serve_inbound_bytes_total", "received from", true),
            ("tailscaled_serve_outbound_bytes_total", "sent to", false),
        ] {
            out.push_str(&format!(
                "# HELP {metric} Bytes {dir} peers on Serve connections for Tailscale Services, labeled by Tailscale Service name.\n# TYPE {metric} counter\n"
            ));
            for (svc, (i, o)) in &cfg.serve_bytes {
                out.push_str(&format!("{metric}{{service=\"{svc}\"}} {}\n", if inbound { i } else { o }));
            }
        }
    }
    full(200, Some("text/plain; version=0.0.4; charset=utf-8"), out)
}

fn serve_cert_domains(cfg: &SimConfig, p: &Perms) -> Resp {
    if !p.read {
        return go_error(403, "cert-domains access denied");
    }
    let mut domains: Option<Vec<String>> = None;
    if cfg.backend_state == "Running"
        && let Some(d) = &cfg.cert_domains
        && !d.is_empty()
    {
        let mut d = d.clone();
        d.sort();
        domains = Some(d);
    }
    full(200, Some("application/json"), format!("{}\n", gofmt::to_go_json_compact(&domains)))
}

/// `serveWhoIsWithBackend`: `addr` is an IP, `IP:port` or `nodekey:HEX`; `svc_name`
/// and `dst_ip` (1.100+) are validated once a node matched, and select the caps.
/// `serveDNSConfig` (1.100+, with `cert-domains`): `nm.DNS`, tab-indented.
fn serve_dns_config(cfg: &SimConfig, p: &Perms) -> Resp {
    if !p.read {
        return go_error(403, "dns-config access denied");
    }
    if cfg.backend_state != "Running" {
        return go_error(503, "no netmap");
    }
    json_indented(&json::dns_config(cfg))
}

/// `serveQueryFeature`: tailscaled asks control (`/machine/feature/query`) and relays
/// its status and body. Control's text is a third-party observation (fidelity note §9b).
fn serve_query_feature(cfg: &SimConfig, p: &Perms, req: &Request<Incoming>, query: &[(String, String)]) -> Resp {
    let feature = gofmt::query_get(query, "feature");
    if !p.read {
        return go_error(403, "access denied");
    }
    if req.method() != Method::POST {
        return go_error(405, "use POST");
    }
    if feature.is_empty() {
        return go_error(500, "missing feature");
    }
    if cfg.backend_state != "Running" {
        return go_error(503, "no netmap");
    }
    let answer = cfg.query_feature.clone().unwrap_or_else(|| {
        if cfg.cert_domains.as_ref().is_some_and(|d| !d.is_empty()) {
            serde_json::json!({"Complete": true})
        } else {
            let node = json::ident(&cfg.hostname).stable_id;
            serde_json::json!({
                "Text": "Serve is not enabled on your tailnet.\nTo enable, visit:",
                "URL": format!("https://login.tailscale.com/f/serve?node={node}"),
            })
        }
    });
    full(200, Some("application/json"), gofmt::to_go_json_compact(&answer))
}

fn serve_whois(cfg: &SimConfig, p: &Perms, query: &[(String, String)]) -> Resp {
    if !p.read {
        return go_error(403, "whois access denied");
    }
    let v = gofmt::query_get(query, "addr");
    if v.is_empty() {
        return go_error(400, "missing 'addr' parameter");
    }
    let who = match whois_find(cfg, v) {
        Ok(_) if cfg.backend_state != "Running" => Found::Nobody,
        Ok(found) => found,
        Err(bad) => return go_error(400, bad),
    };
    let peer = match who {
        Found::Nobody => return go_error(404, "no match for IP:port"),
        Found::SelfNode => None,
        Found::Peer(i) => Some(i),
    };
    let caps = match whois_caps(cfg, peer.map(|i| &cfg.peers[i]), query) {
        Ok(caps) => caps,
        Err(bad) => return go_error(400, bad),
    };
    let doc = match peer {
        None => json::self_whois(cfg),
        Some(i) => json::whois(cfg, i, &cfg.peers[i], caps),
    };
    let mut buf = Vec::new();
    let fmt = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut buf, fmt);
    if serde::Serialize::serialize(&doc, &mut ser).is_err() {
        return go_error(500, "JSON encoding error");
    }
    // json.MarshalIndent: no trailing newline.
    full(200, Some("application/json"), gofmt::go_json_escape(String::from_utf8_lossy(&buf).into_owned()))
}

/// Whom a `whois` address names.
enum Found {
    Nobody,
    SelfNode,
    Peer(usize),
}

/// The node `addr` names (an IP, `IP:port` or `nodekey:HEX`).
/// An `Err` is the message of a 400 answer.
fn whois_find(cfg: &SimConfig, v: &str) -> Result<Found, &'static str> {
    if let Some(hex) = v.strip_prefix("nodekey:") {
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err("invalid nodekey in 'addr' parameter");
        }
        if json::ident(&cfg.hostname).node_key.eq_ignore_ascii_case(v) {
            return Ok(Found::SelfNode);
        }
        let i = (0..cfg.peers.len()).position(|i| json::peer_node_key(i, &cfg.peers[i]).eq_ignore_ascii_case(v));
        return Ok(i.map_or(Found::Nobody, Found::Peer));
    }
    let ip = match v.parse::<std::net::IpAddr>() {
        Ok(ip) => ip,
        Err(_) => match v.parse::<std::net::SocketAddr>() {
            Ok(sa) => sa.ip(),
            Err(_) => return Err("invalid 'addr' parameter"),
        },
    };
    // LocalBackend.WhoIs unmaps ::ffff:a.b.c.d first.
    let ip = ip.to_canonical();
    if cfg.tailscale_ips.contains(&ip) {
        return Ok(Found::SelfNode);
    }
    Ok(cfg.peers.iter().position(|p| p.ip == ip).map_or(Found::Nobody, Found::Peer))
}

/// The answer's `CapMap` (`serveWhoIsWithBackend`): with `svc_name`, what the peer may
/// do toward that service's VIP on this node (`PeerCapsForService`: nothing unless the
/// service is in the node's `service-host` map); with `dst_ip`, toward that address
/// (a service VIP or the node's own); otherwise toward the node (`PeerCaps`). `None`
/// encodes as `null`, as Go's nil map does. The node itself holds no caps toward itself.
fn whois_caps(
    cfg: &SimConfig,
    peer: Option<&SimPeer>,
    query: &[(String, String)],
) -> Result<Option<CapMap>, &'static str> {
    let svc = gofmt::query_get(query, "svc_name");
    let dst = gofmt::query_get(query, "dst_ip");
    let caps = if !svc.is_empty() {
        if !valid_service_name(svc) {
            return Err("invalid svc_name");
        }
        let approved = cfg.approved_services.iter().any(|s| json::svc_name(s) == svc);
        peer.filter(|_| approved).and_then(|p| p.service_caps.get(svc)).cloned()
    } else if !dst.is_empty() {
        let Ok(dst) = dst.parse::<std::net::IpAddr>() else {
            return Err("invalid dst_ip");
        };
        let vip_of = cfg
            .approved_services
            .iter()
            .enumerate()
            .find(|(i, _)| json::service_vips(*i).iter().any(|v| v.parse::<std::net::IpAddr>().ok() == Some(dst)));
        match (peer, vip_of) {
            (Some(p), Some((_, s))) => p.service_caps.get(&json::svc_name(s)).cloned(),
            (Some(p), None) if cfg.tailscale_ips.contains(&dst) => Some(p.node_caps.clone()),
            _ => None,
        }
    } else {
        peer.map(|p| p.node_caps.clone())
    };
    Ok(caps.filter(|c| !c.is_empty()))
}

/// `tailcfg.ServiceName.Validate`: `svc:` and a DNS label (letters, digits, inner
/// hyphens, at most 63 bytes).
fn valid_service_name(name: &str) -> bool {
    let Some(label) = name.strip_prefix("svc:") else { return false };
    let bytes = label.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes.iter().all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        && bytes.first().is_some_and(u8::is_ascii_alphanumeric)
        && bytes.last().is_some_and(u8::is_ascii_alphanumeric)
}

// ---------------------------------------------------------------------------
// cert/

struct CertErr {
    status: u16,
    msg: String,
    retry_after: Option<u64>,
}

impl CertErr {
    fn e500(msg: impl Into<String>) -> CertErr {
        CertErr { status: 500, msg: msg.into(), retry_after: None }
    }
}

/// `validLookingCertDomain`.
fn valid_looking_cert_domain(name: &str) -> bool {
    if name.is_empty() || name.contains("..") || name.contains([':', '/', '\\', '\0']) || !name.contains('.') {
        return false;
    }
    // Only a leading "*." wildcard, and only over a name with a dot (`*.b` is refused).
    match name.strip_prefix("*.") {
        Some(rest) => !rest.contains('*') && rest.contains('.'),
        None => !name.contains('*'),
    }
}

async fn serve_cert(inner: &Arc<Inner>, p: &Perms, domain: &str, query: &[(String, String)]) -> Resp {
    if !p.write && !p.cert {
        return go_error(403, "cert access denied");
    }
    // Go's `minValidity != 0` switches the rule, so a negative value is "explicit" too
    // (and never renews a valid certificate).
    let mut min_validity = None;
    let mv = gofmt::query_get(query, "min_validity");
    if !mv.is_empty() {
        match gofmt::parse_duration(mv) {
            Ok(d) if d.0 == 0 => {}
            Ok(d) => min_validity = Some(d.to_std_saturating()),
            Err(e) => return go_error(400, &format!("invalid validity parameter: {e}")),
        }
    }
    let pair = match get_cert_pem(inner, domain, min_validity).await {
        Ok(p) => p,
        Err(e) => {
            let mut r = go_error(e.status, &e.msg);
            if let Some(secs) = e.retry_after {
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
            }
            return r;
        }
    };
    // serveKeyPair
    match gofmt::query_get(query, "type") {
        "" | "crt" | "cert" => full(200, Some("text/plain"), pair.chain_pem),
        "key" => full(200, Some("text/plain"), pair.key_pem),
        "pair" => full(200, Some("text/plain"), format!("{}{}", pair.key_pem, pair.chain_pem)),
        _ => go_error(400, "invalid type; want \"cert\" (default), \"key\", or \"pair\""),
    }
}

/// Whether a cached cert should be renewed (`shouldStartDomainRenewal`): with an
/// explicit `min_validity`, only when `NotAfter - now < min_validity` (the 2/3 rule and
/// ARI are skipped); without one, past 2/3 of its lifetime.
fn should_renew(c: &CachedCert, now: SystemTime, min_validity: Option<Duration>) -> bool {
    let remaining = c.not_after.duration_since(now).unwrap_or(Duration::ZERO);
    if let Some(min_validity) = min_validity {
        return remaining < min_validity;
    }
    let lifetime = c.not_after.duration_since(c.not_before).unwrap_or(Duration::ZERO);
    now >= c.not_before + lifetime * 2 / 3
}

fn cached_valid(inner: &Inner, domain: &str, now: SystemTime) -> Option<CachedCert> {
    let st = inner.state();
    let c = st.cache.get(domain)?;
    (now >= c.not_before && now < c.not_after).then(|| c.clone())
}

/// `getCertPEMWithValidity` (v1.102 ordering: resolve the domain first).
async fn get_cert_pem(inner: &Arc<Inner>, domain: &str, min_validity: Option<Duration>) -> Result<CachedCert, CertErr> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if !valid_looking_cert_domain(domain) {
        return Err(CertErr::e500("invalid domain"));
    }
    let cfg = inner.cfg();
    if cfg.backend_state != "Running" {
        return Err(CertErr::e500("no netmap available"));
    }
    let cds = cfg.cert_domains.clone().unwrap_or_default();
    if cds.is_empty() {
        return Err(CertErr::e500("your Tailscale account does not support getting TLS certs"));
    }
    if let Some(base) = domain.strip_prefix("*.") {
        if !cfg.subdomain_resolve {
            return Err(CertErr::e500("wildcard certificates are not enabled for this node"));
        }
        if !cds.iter().any(|d| d == base) {
            return Err(CertErr::e500(format!(
                "invalid domain {}; wildcard certificates are not enabled for this domain",
                quote(domain)
            )));
        }
    } else if !cds.iter().any(|d| d == domain) {
        return Err(CertErr::e500(format!("invalid domain {}; must be one of {}", quote(domain), quote_slice(&cds))));
    }

    let now = SystemTime::now();
    if let Some(c) = cached_valid(inner, domain, now) {
        if !should_renew(&c, now, min_validity) {
            return Ok(c);
        }
        if min_validity.is_none() {
            start_async_renewal(inner, domain);
            return Ok(c);
        }
    }

    let lock = inner.domain_lock(domain);
    let _held = lock.lock().await;
    let now = SystemTime::now();
    let previous = cached_valid(inner, domain, now);
    if let Some(c) = &previous
        && !should_renew(c, now, min_validity)
    {
        return Ok(c.clone());
    }
    // Only a fetch without a usable certificate is announced; renewals run quietly.
    let _pending = previous.is_none().then(|| PendingCert::start(inner, domain));
    issue_new(inner, domain).await
}

fn start_async_renewal(inner: &Arc<Inner>, domain: &str) {
    {
        let mut st = inner.state();
        if !st.renewing.insert(domain.to_string()) {
            return;
        }
    }
    let inner = inner.clone();
    let domain = domain.to_string();
    tokio::spawn(async move {
        let lock = inner.domain_lock(&domain);
        {
            let _held = lock.lock().await;
            let now = SystemTime::now();
            let fresh = cached_valid(&inner, &domain, now).is_some_and(|c| !should_renew(&c, now, None));
            if !fresh && let Err(e) = issue_new(&inner, &domain).await {
                tracing::info!(domain, status = e.status, error = %e.msg, "simulated async renewal failed");
            }
        }
        inner.state().renewing.remove(&domain);
    });
}

fn random_token(n: usize) -> String {
    let mut b = vec![0u8; n];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    b.iter()
        .map(|x| {
            const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            A[(*x & 63) as usize] as char
        })
        .collect()
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    let _ = ring::rand::SystemRandom::new().fill(&mut b);
    u32::from_be_bytes(b) % 1_000_000_000
}

/// The simulated ACME flow: rate limit → delay → SetDNS → issue → store.
async fn issue_new(inner: &Arc<Inner>, domain: &str) -> Result<CachedCert, CertErr> {
    let cfg = inner.cfg();
    if let Some(retry) = cfg.rate_limited {
        if cfg.rate_limit_hangs {
            std::future::pending::<()>().await;
        }
        let secs = retry.as_secs() + u64::from(retry.subsec_nanos() > 0);
        let at = SystemTime::now() + Duration::from_secs(secs);
        return Err(CertErr {
            status: 429,
            msg: format!(
                "429 urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued for this exact set of identifiers in the last {}, retry after {}: see https://letsencrypt.org/docs/rate-limits/#new-certificates-per-exact-set-of-identifiers",
                gofmt::format_duration_secs(168 * 3600),
                gofmt::format_utc(at)
            ),
            retry_after: Some(secs),
        });
    }
    if !cfg.first_issue_delay.is_zero() {
        tokio::time::sleep(cfg.first_issue_delay).await;
    }
    let cfg = inner.cfg();
    if cfg.setdns_fails {
        return Err(CertErr::e500(format!(
            "SetDNS {} => {}: set-dns response: 500 Internal Server Error, failed to create DNS record",
            quote(&format!("_acme-challenge.{}", domain.strip_prefix("*.").unwrap_or(domain))),
            quote(&random_token(43))
        )));
    }
    let now = SystemTime::now();
    let ca_inner = inner.clone();
    let d = domain.to_string();
    let lifetime = cfg.cert_lifetime;
    let pair = tokio::task::spawn_blocking(move || ca_inner.ca.try_issue(&d, now, now + lifetime))
        .await
        .map_err(|e| CertErr::e500(format!("issuance task failed: {e}")))?
        .map_err(|e| CertErr::e500(e.to_string()))?;
    let cert = CachedCert {
        key_pem: pair.key_pem,
        chain_pem: pair.chain_pem,
        not_before: pair.not_before,
        not_after: pair.not_after,
        serial: pair.serial,
    };
    let mut st = inner.state();
    st.issued.push(IssuedRecord {
        domain: domain.to_string(),
        serial: cert.serial.clone(),
        not_after: cert.not_after,
        at: Instant::now(),
    });
    if st.cfg.cert_store_readonly {
        let file = match domain.strip_prefix("*.") {
            Some(base) => format!("wildcard_.{base}"),
            None => domain.to_string(),
        };
        return Err(CertErr::e500(format!(
            "open /var/lib/tailscale/certs/{file}.key.tmp{}: read-only file system",
            random_u32()
        )));
    }
    st.cache.insert(domain.to_string(), cert.clone());
    tracing::debug!(domain, serial = %cert.serial, "simulated tailscaled issued a certificate");
    Ok(cert)
}

// ---------------------------------------------------------------------------
// watch-ipn-bus

const NOTIFY_INITIAL_STATE: u64 = 2;
const NOTIFY_INITIAL_PREFS: u64 = 4;
const NOTIFY_INITIAL_NETMAP: u64 = 8;
const NOTIFY_INITIAL_HEALTH_STATE: u64 = 128;
const NOTIFY_INITIAL_STATUS: u64 = 16384;

fn notify_line(v: &gofmt::Ordered) -> Bytes {
    let mut s = gofmt::to_go_json_compact(v);
    s.push('\n');
    Bytes::from(s)
}

/// One `ipn.Notify` line as Go encodes it: `Version`, then the fields without
/// `omitzero` (`null` when unset) in declaration order, with `extra` (the `omitzero`
/// ones that are set) in their places.
fn notify(version: &str, extra: &[(&str, Value)]) -> gofmt::Ordered {
    const ORDER: [(&str, bool); 12] = [
        ("SessionID", false),
        ("ErrMessage", true),
        ("LoginFinished", true),
        ("State", true),
        ("Prefs", true),
        ("SelfChange", false),
        ("InitialStatus", false),
        ("NetMap", true),
        ("Engine", true),
        ("BrowseToURL", true),
        ("DriveShares", true),
        ("Health", false),
    ];
    let mut m = vec![("Version", Value::String(version.to_owned()))];
    for (key, always) in ORDER {
        match extra.iter().find(|(k, _)| *k == key) {
            Some((_, v)) => m.push((key, v.clone())),
            None if always => m.push((key, Value::Null)),
            None => {}
        }
    }
    gofmt::Ordered(m)
}

/// The node itself as `SelfChange` carries it (`None` without a netmap).
fn self_node(cfg: &SimConfig) -> Option<Value> {
    json::netmap(cfg).get("SelfNode").cloned()
}

/// `WatchNotificationsAs`'s first message: only for the "initial" bits (health alone
/// is not one); with the netmap bit it carries both `SelfChange` and `NetMap`.
fn initial_notify(inner: &Inner, mask: u64, session: &str) -> Option<gofmt::Ordered> {
    let initial_bits = NOTIFY_INITIAL_STATE | NOTIFY_INITIAL_PREFS | NOTIFY_INITIAL_NETMAP | NOTIFY_INITIAL_STATUS;
    if mask & initial_bits == 0 {
        return None;
    }
    let st = inner.state();
    let cfg = &st.cfg;
    let mut extra = Vec::new();
    if mask & NOTIFY_INITIAL_STATE != 0 {
        extra.push(("SessionID", Value::String(session.to_string())));
        extra.push(("State", Value::from(state_num(&cfg.backend_state))));
    }
    if mask & NOTIFY_INITIAL_PREFS != 0 {
        extra.push(("Prefs", serde_json::to_value(st.prefs.view(cfg)).unwrap_or(Value::Null)));
    }
    if mask & NOTIFY_INITIAL_NETMAP != 0 {
        if let Some(node) = self_node(cfg) {
            extra.push(("SelfChange", node));
        }
        extra.push(("NetMap", json::netmap(cfg)));
    }
    if mask & NOTIFY_INITIAL_HEALTH_STATE != 0 {
        extra.push(("Health", health_state(&st)));
    }
    Some(notify(&cfg.version, &extra))
}

/// Runtime messages. Since 1.100 a new netmap reaches Linux watchers as `SelfChange`
/// only, whatever the mask (`goosGetsLegacyNetmapNotify` is Windows-only): consumers
/// re-read what they need (CertDomains) when they see it.
fn event_notify(inner: &Inner, ev: &BusEvent) -> Option<gofmt::Ordered> {
    let st = inner.state();
    let cfg = &st.cfg;
    let extra = match ev {
        BusEvent::State => ("State", Value::from(state_num(&cfg.backend_state))),
        BusEvent::NetMap => ("SelfChange", self_node(cfg)?),
        BusEvent::Prefs => ("Prefs", serde_json::to_value(st.prefs.view(cfg)).unwrap_or(Value::Null)),
        BusEvent::Health => ("Health", health_state(&st)),
    };
    Some(notify(&cfg.version, &[extra]))
}

/// The handler's mask checks: `NotifyInProcessNoDisconnect`, then
/// `ValidateNotifyWatchOpt` (rate limiting excludes the delta-stream bits).
fn validate_mask(mask: u64) -> Result<(), String> {
    const IN_PROCESS_NO_DISCONNECT: u64 = 1 << 16;
    const RATE_LIMIT: u64 = 1 << 8;
    const INCOMPATIBLE: [(u64, &str); 4] = [
        (1 << 12, "NotifyPeerChanges"),
        (1 << 13, "NotifyNoNetMap"),
        (NOTIFY_INITIAL_STATUS, "NotifyInitialStatus"),
        (1 << 15, "NotifyPeerPatches"),
    ];
    if mask & IN_PROCESS_NO_DISCONNECT != 0 {
        return Err("NotifyInProcessNoDisconnect is only valid for in-process IPN bus subscribers".to_owned());
    }
    let bad: Vec<String> =
        INCOMPATIBLE.iter().filter(|(bit, _)| mask & bit != 0).map(|(_, name)| format!("ipn.{name}")).collect();
    if mask & RATE_LIMIT == 0 || bad.is_empty() {
        return Ok(());
    }
    // NotifyWatchOpt.String(): one name, or several in parentheses.
    let bits = if bad.len() == 1 { bad[0].clone() } else { format!("({})", bad.join(" | ")) };
    Err(format!("NotifyRateLimit is incompatible with new-style IPN bus subscription bits {bits}"))
}

fn serve_watch_ipn_bus(inner: &Arc<Inner>, p: &Perms, query: &[(String, String)]) -> Resp {
    if !p.read {
        return go_error(403, "watch ipn bus access denied");
    }
    let mut mask = 0u64;
    let m = gofmt::query_get(query, "mask");
    if !m.is_empty() {
        match m.parse::<u64>() {
            Ok(v) if !m.starts_with('+') => mask = v,
            _ => return go_error(400, "bad mask"),
        }
    }
    if let Err(e) = validate_mask(mask) {
        return go_error(400, &e);
    }
    let mut sub = inner.bus.subscribe();
    let (tx, rx) = mpsc::channel::<Bytes>(32);
    let session = random_token(16);
    inner.state().bus_sessions.insert(session.clone());
    if let Some(ini) = initial_notify(inner, mask, &session) {
        let _ = tx.try_send(notify_line(&ini));
    }
    let inner = inner.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tx.closed() => break,
                ev = sub.recv() => match ev {
                    Ok(ev) => {
                        if let Some(v) = event_notify(&inner, &ev)
                            && tx.send(notify_line(&v)).await.is_err()
                        {
                            break;
                        }
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
            }
        }
        inner.state().bus_sessions.remove(&session);
    });
    let mut r = Response::new(Body::Stream(rx));
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

// ---------------------------------------------------------------------------
// serve-config and prefs

const MAX_BODY: usize = 1 << 20;

async fn read_body(req: Request<Incoming>) -> Result<Bytes, String> {
    match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(e.to_string()),
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Array(_) => "array",
        Value::String(_) => "string",
        Value::Number(_) => "number",
        Value::Bool(_) => "bool",
        Value::Object(_) => "object",
        Value::Null => "null",
    }
}

/// Decode a JSON body like Go's `json.NewDecoder(r.Body).Decode(&T{})`,
/// returning Go-like error texts for the common failure shapes.
fn decode_object(body: &[u8], go_type: &str) -> Result<Option<serde_json::Map<String, Value>>, String> {
    if body.iter().all(|b| b.is_ascii_whitespace()) {
        return Err("EOF".to_string());
    }
    let mut de = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
    match de.next() {
        Some(Ok(Value::Object(m))) => Ok(Some(m)),
        Some(Ok(Value::Null)) => Ok(None),
        Some(Ok(v)) => Err(format!("json: cannot unmarshal {} into Go value of type {go_type}", json_kind(&v))),
        Some(Err(e)) => Err(e.to_string()),
        None => Err("EOF".to_string()),
    }
}

/// `connIsLocalAdmin` on Linux: root, or (no operator, or the operator) with sudo rights.
fn is_local_admin(cfg: &SimConfig, p: &Perms) -> bool {
    match p.uid {
        Some(0) => true,
        Some(uid) => cfg.operator_uid.is_none_or(|op| op == uid) && cfg.caller_can_sudo_tailscale,
        None => false,
    }
}

const ADMIN_REQUIRED: &str =
    "must be root, or be an operator and able to run 'sudo tailscale' to serve a path or Unix socket";

fn serve_config_etag(cfg: Option<&ServeConfig>) -> (String, String) {
    let body = cfg.map_or_else(|| "null".to_owned(), ServeConfig::to_json);
    let etag = hex(ring::digest::digest(&ring::digest::SHA256, body.as_bytes()).as_ref());
    (body, etag)
}

/// Decodes on a thread of its own with a large stack (Go's decoder accepts 10 000 levels
/// of nesting), awaited without blocking the runtime.
async fn decode_serve_config(body: Bytes) -> Result<ServeConfig, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(move || {
            let _ = tx.send(serve_config::decode(&body));
        })
        .map_err(|e| e.to_string())?;
    rx.await.unwrap_or_else(|_| Err("decoder thread failed".to_owned()))
}

async fn serve_serve_config(inner: &Arc<Inner>, p: &Perms, req: Request<Incoming>) -> Resp {
    match *req.method() {
        Method::GET => {
            if !p.read {
                return go_error(403, "serve config denied");
            }
            let (body, etag) = serve_config_etag(inner.state().serve_config.as_ref());
            let mut r = full(200, Some("application/json"), body);
            if let Ok(v) = HeaderValue::from_str(&etag) {
                r.headers_mut().insert(header::ETAG, v);
            }
            r
        }
        Method::POST => post_serve_config(inner, p, req).await,
        _ => go_error(405, "method not allowed"),
    }
}

/// `serveServeConfig` POST then `setServeConfigLocked`, in their order.
async fn post_serve_config(inner: &Arc<Inner>, p: &Perms, req: Request<Incoming>) -> Resp {
    if !p.write {
        return go_error(403, "serve config denied");
    }
    let if_match = req
        .headers()
        .get(header::IF_MATCH)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .unwrap_or_default();
    let body = match read_body(req).await {
        Ok(b) => b,
        Err(e) => return go_error_json(&format!("decoding config: {e}")),
    };
    let mut incoming = match decode_serve_config(body).await {
        Ok(c) => c,
        Err(e) => return go_error_json(&format!("decoding config: {e}")),
    };
    if incoming.has_nil() {
        return go_panic("nil pointer dereference in the serve-config admin check");
    }
    if incoming.needs_admin() && !is_local_admin(&inner.cfg(), p) {
        return go_error(401, ADMIN_REQUIRED);
    }
    let mut st = inner.state();
    if incoming.is_funnel_on() && st.prefs.shields_up {
        return go_error_json("updating config: Unable to turn on Funnel while shields-up is enabled");
    }
    if st.cfg.locked_config_file {
        return go_error_json(
            "updating config: can't reconfigure tailscaled when using a config file; config file is locked",
        );
    }
    if st.cfg.backend_state != "Running" {
        return go_error_json("updating config: netMap is nil");
    }
    if !if_match.is_empty() {
        if let Some(raced) = st.serve_config_race.take() {
            st.serve_config = Some(raced);
        }
        if if_match != serve_config_etag(st.serve_config.as_ref()).1 {
            return go_error(412, "etag mismatch");
        }
    }
    if let Err(e) = serve_config::validate_update(st.serve_config.as_ref(), &incoming) {
        return go_error_json(&format!("updating config: {e}"));
    }
    incoming.prune_foreground(&st.bus_sessions);
    st.serve_config = Some(incoming);
    if st.refresh_cert_domains() {
        let _ = inner.bus.send(BusEvent::NetMap);
    }
    full(200, None, Bytes::new())
}

async fn serve_prefs(inner: &Arc<Inner>, p: &Perms, req: Request<Incoming>) -> Resp {
    if !p.read {
        return go_error(403, "prefs access denied");
    }
    match *req.method() {
        Method::PATCH => {
            if !p.write {
                return go_error(403, "prefs write access denied");
            }
            let body = match read_body(req).await {
                Ok(b) => b,
                Err(e) => return go_error(400, &e),
            };
            let mp = match decode_object(&body, "ipn.MaskedPrefs") {
                Ok(m) => m.unwrap_or_default(),
                Err(e) => return go_error(400, &e),
            };
            let services = match mp.get("AdvertiseServices") {
                None | Some(Value::Null) => None,
                Some(Value::Array(a)) => {
                    let mut out = Vec::with_capacity(a.len());
                    for v in a {
                        match v {
                            Value::String(s) => out.push(s.clone()),
                            other => {
                                return go_error(
                                    400,
                                    &format!(
                                        "json: cannot unmarshal {} into Go struct field MaskedPrefs.AdvertiseServices of type string",
                                        json_kind(other)
                                    ),
                                );
                            }
                        }
                    }
                    Some(out)
                }
                Some(other) => {
                    return go_error(
                        400,
                        &format!(
                            "json: cannot unmarshal {} into Go struct field MaskedPrefs.AdvertiseServices of type []string",
                            json_kind(other)
                        ),
                    );
                }
            };
            if let Some(msg) = inner.cfg().edit_prefs_error {
                return prefs_error(400, &msg);
            }
            let set = matches!(mp.get("AdvertiseServicesSet"), Some(Value::Bool(true)));
            let (view, new_netmap) = {
                let mut st = inner.state();
                if set {
                    st.prefs.advertise_services = services;
                    if let Some(control) = &st.cfg.control {
                        let advertised = st.prefs.advertise_services.clone().unwrap_or_default();
                        control.report_services(&json::ident(&st.cfg.hostname).stable_id, &advertised);
                    }
                }
                let new_netmap = set && st.refresh_cert_domains();
                (st.prefs.view(&st.cfg), new_netmap)
            };
            if set {
                let _ = inner.bus.send(BusEvent::Prefs);
            }
            if new_netmap {
                let _ = inner.bus.send(BusEvent::NetMap);
            }
            json_indented(&view)
        }
        Method::GET | Method::HEAD => {
            let st = inner.state();
            json_indented(&st.prefs.view(&st.cfg))
        }
        _ => go_error(405, "unsupported method"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domain_shapes() {
        for ok in ["a.b", "storage.x.ts.net", "*.storage.x.ts.net"] {
            assert!(valid_looking_cert_domain(ok), "{ok}");
        }
        for bad in ["", "nodot", "a..b", "a:443.b", "a/b.c", "a\\b.c", "a\0.b", "a.*.b", "**.b.c", "*a.b", "*.b", "*."]
        {
            assert!(!valid_looking_cert_domain(bad), "{bad:?}");
        }
    }

    #[test]
    fn renewal_rule() {
        let nb = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let c = CachedCert {
            key_pem: String::new(),
            chain_pem: String::new(),
            not_before: nb,
            not_after: nb + Duration::from_secs(90),
            serial: String::new(),
        };
        assert!(!should_renew(&c, nb + Duration::from_secs(10), None));
        assert!(should_renew(&c, nb + Duration::from_secs(10), Some(Duration::from_secs(81))));
        assert!(!should_renew(&c, nb + Duration::from_secs(10), Some(Duration::from_secs(80))));
        assert!(should_renew(&c, nb + Duration::from_secs(60), None));
        // An explicit min_validity skips the 2/3 rule: 30 s left of 90, 20 s asked.
        assert!(!should_renew(&c, nb + Duration::from_secs(60), Some(Duration::from_secs(20))));
        // Negative (clamped to zero): a valid certificate is never renewed.
        assert!(!should_renew(&c, nb + Duration::from_secs(89), Some(Duration::ZERO)));
    }
}
