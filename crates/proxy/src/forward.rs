//! The HTTP stage: Host check, path routing, and streaming to the upstream.
//!
//! Per request, in order: Host must match SNI (`421`); client-sent identity, auth and
//! forwarding headers, in any spelling, are removed on every service
//! (`client_headers.rs`); a CORS preflight is answered (`cors`); the route is chosen by path
//! (`404`); a declared body larger than `max_body_bytes` is refused (`413`, otherwise
//! the limit is enforced while streaming); `forward_auth` decides; `tailscale_identity`
//! adds who is connecting; the request streams to the upstream (`http://` or
//! `https://`). Answers get the CORS headers and, for 404/500/502/503/504, the
//! service's custom error page.
//!
//! Timing of one exchange: an opt-in `limits.max_upstream_connections` slot (waited
//! for at most `timeouts.upstream_response`), then the request body for as long as it
//! keeps moving (each read within `timeouts.idle`), then `timeouts.upstream_response`
//! for the response head, then the response body, again bounded per read.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use thread_local::ThreadLocal;
use tokio::sync::OwnedSemaphorePermit;

use crate::access::{Refusal, Verdict};
use crate::access_log::Outcome;
use crate::body::{ProxyBody, detach_headers};
use crate::client_addr::Client;
use crate::client_headers::{self, X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP};
use crate::conn_info::ConnInfo;
use crate::hop_by_hop::strip_hop_by_hop;
use crate::identity::{Identities, Lookup};
use crate::local::{error_chain, local};
use crate::options::ProxyOptions;
use crate::pool::{Lease, Pool, UpstreamError};
use crate::routes::{RouteTable, ServicePolicy};
use crate::tunnel::Tunnels;
use crate::upstream::{BodyFailure, BodyProgress, Connector, Slots, UpstreamBody};

/// The answer for a name no service has: under a `[domains]` entry, a redirect (the
/// domain itself with `apex_redirect`: its fixed target plus the request's path and
/// query — never a target taken from the request) or a 404 page; anywhere else `421`.
fn unrouted(table: &RouteTable, sni: &str, uri: &Uri) -> Response<ProxyBody> {
    let Some((domain, apex_redirect)) = table.domain_of(sni) else {
        return local(
            StatusCode::MISDIRECTED_REQUEST,
            format!("{sni} is no longer served by this router; reconnect to retry"),
        );
    };
    if let (true, Some(target)) = (domain == sni, apex_redirect) {
        let pq = uri.path_and_query().map_or("/", PathAndQuery::as_str);
        let mut resp = local(StatusCode::FOUND, format!("{sni} moved to {target}"));
        if let Ok(v) = HeaderValue::from_str(&format!("{target}{pq}")) {
            resp.headers_mut().insert(header::LOCATION, v);
        }
        return resp;
    }
    let resp = local(StatusCode::NOT_FOUND, format!("no service is served at {sni}"));
    match table.domain_pages() {
        Some(pages) => pages.apply(resp, ProxyBody::full),
        None => resp,
    }
}

/// One thread's upstream clients.
#[derive(Debug)]
struct ThreadPools {
    /// `http://` and verified `https://` upstreams, and forward-auth servers.
    verified: Arc<Pool>,
    /// `https://` upstreams of services with `insecure_skip_verify`.
    insecure: Arc<Pool>,
}

/// Forwards requests to upstreams over pooled keep-alive clients.
#[derive(Debug)]
pub(crate) struct Forwarder {
    /// `http://` and verified `https://` upstreams, and forward-auth servers.
    connector: Connector,
    /// `https://` upstreams of services with `insecure_skip_verify`.
    insecure_connector: Connector,
    /// One set of pools per thread: a request and the upstream connection it uses
    /// stay on one thread (see `workers.rs`).
    pools: ThreadLocal<ThreadPools>,
    /// `limits.max_upstream_connections`, when set.
    slots: Option<Slots>,
    identities: Identities,
    response_timeout: Duration,
    /// `timeouts.idle`: the bound between two reads of a body.
    body_idle: Duration,
    tunnels: Arc<Tunnels>,
    /// This node's own tailnet addresses (tailscaled's status): a PROXY source among them
    /// is a process on this host that reached a Service it hosts (tailscaled ≥ 1.96).
    own_addresses: arc_swap::ArcSwap<Vec<std::net::IpAddr>>,
}

impl Forwarder {
    /// A forwarder with the connect and response timeouts and the upstream connection
    /// limit from `opts`; `whois` answers `tailscale_identity` lookups.
    pub(crate) fn new(
        opts: &ProxyOptions,
        whois: Option<snirouter_localapi::LocalClient>,
    ) -> Result<Forwarder, rustls::Error> {
        Ok(Forwarder {
            connector: crate::upstream::connector(opts.upstream_connect_timeout, false)?,
            insecure_connector: crate::upstream::connector(opts.upstream_connect_timeout, true)?,
            pools: ThreadLocal::new(),
            slots: opts.max_upstream_connections.map(Slots::new),
            identities: Identities::new(whois),
            response_timeout: opts.upstream_response_timeout,
            body_idle: opts.idle_timeout,
            tunnels: Tunnels::new(opts.tunnel_idle_timeout),
            own_addresses: arc_swap::ArcSwap::from_pointee(Vec::new()),
        })
    }

    /// Replaces this node's own tailnet addresses.
    pub(crate) fn set_own_addresses(&self, addresses: Vec<std::net::IpAddr>) {
        self.own_addresses.store(Arc::new(addresses));
    }

    /// This thread's pools.
    fn pools(&self) -> &ThreadPools {
        self.pools.get_or(|| ThreadPools {
            verified: Pool::new(self.connector.clone()),
            insecure: Pool::new(self.insecure_connector.clone()),
        })
    }

    /// The open WebSocket (upgraded) tunnels.
    pub(crate) fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// Answers one request that arrived on `conn`.
    pub(crate) async fn handle(
        &self,
        mut req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
        table: &RouteTable,
    ) -> Response<ProxyBody> {
        let Some(svc) = table.get(&conn.sni) else {
            // A name under a [domains] entry that no service has, or a service removed by
            // a reload while this connection stayed open.
            return unrouted(table, &conn.sni, req.uri());
        };
        svc.stats.request();
        let origin = svc.cors.as_ref().map(|c| crate::cors::allowed_origin(c, req.headers()));
        let mut client = table.trusted().resolve(conn.client, &conn.client_ip, req.headers());
        client.this_host = self.own_addresses.load().contains(&client.peer.ip().to_canonical());
        table.trusted().strip_untrusted(&client, req.headers_mut());
        let mut outcome = Outcome { client: client.ip, user: None, upstream: None };
        let mut resp = self.handle_service(req, conn, &client, svc, &mut outcome).await;
        if let Some(pages) = &svc.error_pages
            && resp.status() != StatusCode::SWITCHING_PROTOCOLS
        {
            resp = pages.apply(resp, ProxyBody::full);
        }
        if let Some(origin) = origin {
            crate::cors::decorate(resp.headers_mut(), origin);
        }
        svc.response_headers.apply(resp.headers_mut());
        svc.stats.response(resp.status().as_u16());
        resp.extensions_mut().insert(outcome);
        resp
    }

    /// The per-request policy, in order: Host must match SNI (421), client-sent identity
    /// and forwarding headers go, CORS preflights are answered, the route is chosen, the
    /// body limit applies (413), `forward_auth` and `tailscale_identity` run; then the
    /// request goes upstream and the answer (or a tunnel) comes back.
    async fn handle_service(
        &self,
        mut req: Request<Incoming>,
        conn: &Arc<ConnInfo>,
        client: &Client,
        svc: &Arc<ServicePolicy>,
        outcome: &mut Outcome,
    ) -> Response<ProxyBody> {
        let host_value = match host_matches_sni(&req, conn, svc) {
            Ok(v) => v,
            Err(refused) => return *refused,
        };
        // Identity, auth and forwarding headers are only ever set by this router (what a
        // trusted proxy said of the client is in `client`).
        client_headers::strip(req.headers_mut(), &svc.strip_headers);
        if let Some(cors) = &svc.cors
            && crate::cors::is_preflight(req.method(), req.headers())
            && let Some(origin) = crate::cors::allowed_origin(cors, req.headers())
        {
            return crate::cors::preflight(origin, req.headers());
        }
        let Some(route) = svc.route(req.uri().path()) else {
            return local(StatusCode::NOT_FOUND, format!("service {} has no route for {}", svc.name, req.uri().path()));
        };
        if let Some(limit) = svc.max_body_bytes
            && let Some(declared) = content_length(req.headers())
            && declared > limit
        {
            tracing::info!(service = %svc.name, client = %client.ip, declared, limit, "413: request body larger than max_body_bytes");
            drain_in_background(req.into_body());
            return too_large(&svc.name, limit);
        }
        let pq = req.uri().path_and_query().cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
        let added = match self.authorize(&req, &pq, &host_value, client, svc).await {
            Ok(added) => added,
            Err(denied) => return *denied,
        };
        if svc.access_log {
            outcome.user = added.user();
            outcome.upstream = Some(route.upstream.to_string());
        }
        let upgrade = upgrade_protocol(req.version(), req.headers());
        let client_upgrade = upgrade.as_ref().map(|_| hyper::upgrade::on(&mut req));
        let (mut parts, body) = req.into_parts();
        parts.uri = match upstream_uri(route, &pq) {
            Ok(uri) => uri,
            Err(refused) => return *refused,
        };
        upstream_head(&mut parts, upgrade, svc, client, host_value, added);
        svc.request_headers.apply(&mut parts.headers);
        let (body, progress) = UpstreamBody::from_client(body, svc.max_body_bytes, self.body_idle);
        let (mut resp, lease, slot) =
            match self.exchange(Request::from_parts(parts, body), &route.upstream, svc, progress.as_deref()).await {
                Ok(sent) => sent,
                Err(failure) => return self.failed(failure, &route.upstream, svc, conn),
            };
        if resp.status() == StatusCode::SWITCHING_PROTOCOLS
            && let Some(client_upgrade) = client_upgrade
        {
            let upstream_upgrade = hyper::upgrade::on(&mut resp);
            self.tunnels.spawn(client_upgrade, upstream_upgrade, svc, Arc::clone(conn));
            // The upgraded connection left the pool: its slot is free again.
            drop((lease, slot));
            let (parts, _) = resp.into_parts();
            return Response::from_parts(parts, ProxyBody::empty());
        }
        let (mut parts, body) = resp.into_parts();
        strip_hop_by_hop(&mut parts.headers);
        detach_headers(&mut parts.headers);
        parts.extensions.insert(crate::error_pages::FromUpstream);
        Response::from_parts(parts, ProxyBody::upstream(body, lease, slot, self.body_idle, Some(Arc::clone(svc))))
    }

    /// The trust decisions, in order — `allow` (tailnet identity), then `forward_auth`
    /// for whoever `allow` did not admit — and what this router adds to the upstream
    /// request: the auth server's headers (or the same names filled from the tailnet
    /// identity), the `tailscale_identity` headers, `Tailscale-App-Capabilities`.
    async fn authorize(
        &self,
        req: &Request<Incoming>,
        pq: &PathAndQuery,
        host_value: &HeaderValue,
        client: &Client,
        svc: &ServicePolicy,
    ) -> Result<Added, Refused> {
        let mut added = Added::default();
        let mut admitted = None;
        if let Some(access) = &svc.access {
            let refuse = |refusal: Refusal, why: &str| {
                tracing::info!(service = %svc.name, client = %client.ip, reason = %refusal.reason(), "{why}");
                Box::new(refusal.response(&svc.name, access, client, req.headers()).map(ProxyBody::full))
            };
            match access.decide(&self.identities, &svc.name, svc.whois_scope.as_ref(), client).await {
                Verdict::Admitted(peer) => admitted = Some(peer),
                Verdict::Pass => {}
                Verdict::Refused(refusal) if svc.forward_auth.is_some() => {
                    tracing::debug!(service = %svc.name, client = %client.ip, reason = %refusal.reason(), "not admitted by allow; forward_auth decides");
                }
                Verdict::Refused(refusal) => return Err(refuse(refusal, "refused by allow")),
                Verdict::Denied(refusal) => return Err(refuse(refusal, "refused by deny")),
            }
        }
        if let Some(auth) = &svc.forward_auth {
            added.auth = Some(match &admitted {
                Some(peer) => crate::access::auth_headers(peer.as_deref(), &auth.copy_headers),
                None => {
                    let original = crate::auth::Original {
                        method: req.method(),
                        headers: req.headers(),
                        host: host_value,
                        uri: pq.as_str(),
                        client,
                    };
                    self.forward_auth(&original, svc, auth).await?
                }
            });
        }
        added.peer = admitted.flatten();
        if svc.tailscale_identity || !svc.accept_app_caps.is_empty() {
            // The peer `allow` admitted is this same lookup's answer.
            let lookup = match (&added.peer, client.whois_addr()) {
                (Some(peer), _) => Lookup::Peer(Arc::clone(peer)),
                (None, Some(addr)) => self.identities.lookup(&svc.name, svc.whois_scope.as_ref(), addr).await,
                (None, None) => Lookup::NotAPeer,
            };
            if let Lookup::Peer(peer) = &lookup {
                added.app_caps = peer.app_capabilities(&svc.accept_app_caps);
                added.peer = Some(Arc::clone(peer));
            }
            added.identity = Some(lookup).filter(|_| svc.tailscale_identity);
        }
        Ok(added)
    }

    /// Asks the auth server: its allow headers, or its refusal as the answer.
    async fn forward_auth(
        &self,
        original: &crate::auth::Original<'_>,
        svc: &ServicePolicy,
        auth: &snirouter_config::ForwardAuth,
    ) -> Result<HeaderMap, Refused> {
        match crate::auth::check(&self.pools().verified, auth, original, &svc.name, self.response_timeout).await {
            crate::auth::Verdict::Allow(headers) => Ok(headers),
            crate::auth::Verdict::Deny(resp) => Err(Box::new(resp)),
        }
    }

    /// Sends `req` to `upstream` and waits for the response head: first for a
    /// `limits.max_upstream_connections` slot if that cap is set, then for as long as
    /// the request body keeps moving, then `timeouts.upstream_response` from the
    /// moment the body has been sent.
    async fn exchange(
        &self,
        req: Request<UpstreamBody>,
        upstream: &snirouter_config::Upstream,
        svc: &ServicePolicy,
        progress: Option<&BodyProgress>,
    ) -> Result<(Response<Incoming>, Lease, Option<OwnedSemaphorePermit>), Failure> {
        let slot = match &self.slots {
            Some(slots) => {
                let wait = slots.acquire(&upstream.authority, svc.insecure_skip_verify);
                match tokio::time::timeout(self.response_timeout, wait).await {
                    Ok(slot) => slot,
                    Err(_) => return Err(Failure::AllBusy(slots.per_upstream())),
                }
            }
            None => None,
        };
        let pools = self.pools();
        let client = if svc.insecure_skip_verify { &pools.insecure } else { &pools.verified };
        let response = client.request(req);
        let deadline = async {
            if let Some(progress) = progress {
                progress.sent().await;
            }
            tokio::time::sleep(self.response_timeout).await;
        };
        tokio::select! {
            result = response => match result {
                Ok((resp, lease)) => Ok((resp, lease, slot)),
                Err(e) => Err(match progress.and_then(BodyProgress::failure) {
                    Some(BodyFailure::TooLarge) => Failure::TooLarge,
                    Some(BodyFailure::Stalled) => Failure::ClientStalled,
                    None => Failure::Upstream(e),
                }),
            },
            () = deadline => Err(Failure::NoAnswer),
        }
    }

    /// The answer, log line and counter for a request that got no upstream response.
    fn failed(
        &self,
        failure: Failure,
        upstream: &snirouter_config::Upstream,
        svc: &ServicePolicy,
        conn: &ConnInfo,
    ) -> Response<ProxyBody> {
        let name = &svc.name;
        match failure {
            Failure::TooLarge => {
                let limit = svc.max_body_bytes.unwrap_or_default();
                tracing::info!(service = %name, client = %conn.client, limit, "413: streamed request body exceeded max_body_bytes");
                too_large(name, limit)
            }
            Failure::ClientStalled => {
                let secs = self.body_idle.as_secs();
                tracing::info!(service = %name, client = %conn.client, idle_secs = secs, "408: the client stopped sending its request body (timeouts.idle)");
                local(
                    StatusCode::REQUEST_TIMEOUT,
                    format!("the request body stopped arriving: nothing for {secs}s (timeouts.idle)"),
                )
            }
            Failure::Upstream(e) => {
                svc.stats.upstream_error();
                let (status, what) = classify_upstream_error(&e, svc.insecure_skip_verify);
                tracing::warn!(service = %name, upstream = %upstream, cause = %error_chain(&e), "{status}: {what}");
                local(status, format!("the upstream of service {name} ({upstream}) {what}"))
            }
            Failure::AllBusy(cap) => {
                svc.stats.upstream_error();
                let secs = self.response_timeout.as_secs();
                tracing::warn!(service = %name, upstream = %upstream, cap, timeout_secs = secs, "504: every upstream connection stayed busy (limits.max_upstream_connections)");
                local(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the upstream of service {name} ({upstream}) had all its {cap} connections busy for {secs}s; raise limits.max_upstream_connections, or remove it, if the upstream can take more requests at once"
                    ),
                )
            }
            Failure::NoAnswer => {
                svc.stats.upstream_error();
                let secs = self.response_timeout.as_secs();
                tracing::warn!(service = %name, upstream = %upstream, timeout_secs = secs, "504: upstream did not answer in time");
                local(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!(
                        "the upstream of service {name} ({upstream}) did not answer within {secs}s of receiving the request (timeouts.upstream_response)"
                    ),
                )
            }
        }
    }
}

/// Why a request got no upstream response.
#[derive(Debug)]
enum Failure {
    /// The client's body went over `max_body_bytes` while streaming.
    TooLarge,
    /// The client stopped sending its body for `timeouts.idle`.
    ClientStalled,
    /// Connecting, sending or reading the response head failed.
    Upstream(UpstreamError),
    /// Every slot of `limits.max_upstream_connections` (the cap) stayed busy.
    AllBusy(usize),
    /// No response head within `timeouts.upstream_response` after the body was sent.
    NoAnswer,
}

/// A request refused by the policy: the answer itself (boxed: refusals are rare, the
/// `Ok` path stays small).
type Refused = Box<Response<ProxyBody>>;

/// What this router adds to a request: `forward_auth`'s allow headers and the
/// `tailscale_identity` headers.
#[derive(Default)]
struct Added {
    auth: Option<HeaderMap>,
    /// The `whois` answer whose identity headers are sent (`tailscale_identity`).
    identity: Option<Lookup>,
    app_caps: Option<HeaderValue>,
    /// The tailnet node `allow` admitted or `whois` named.
    peer: Option<Arc<crate::identity::Peer>>,
}

impl Added {
    /// Who the request is from, for the access log: the auth server's `Remote-User`,
    /// else the tailnet login (a tagged node's name).
    fn user(&self) -> Option<String> {
        let from_auth = self.auth.as_ref().and_then(|h| h.get("remote-user")).and_then(|v| v.to_str().ok());
        if let Some(user) = from_auth.filter(|u| !u.is_empty()) {
            return Some(user.to_owned());
        }
        let peer = self.peer.as_ref()?;
        Some(if peer.is_user() { peer.who.login_name.clone() } else { peer.who.node_name.clone() })
    }
}

/// The request's Host, which must be the name its TLS connection was opened for
/// (else 421, or 400 without exactly one valid Host).
fn host_matches_sni<B>(req: &Request<B>, conn: &ConnInfo, svc: &ServicePolicy) -> Result<HeaderValue, Refused> {
    let Some((host, host_value)) = request_host(req) else {
        return Err(Box::new(local(
            StatusCode::BAD_REQUEST,
            "the request needs exactly one valid Host header".to_owned(),
        )));
    };
    if host != conn.sni {
        tracing::info!(service = %svc.name, client = %conn.client, sni = %conn.sni, host = %host, "421: Host does not match the TLS server name");
        return Err(Box::new(local(
            StatusCode::MISDIRECTED_REQUEST,
            format!(
                "this TLS connection was opened for {} but the request is for {host}; open a new connection for {host}",
                conn.sni
            ),
        )));
    }
    Ok(host_value)
}

/// The upstream's absolute URI for `pq` on `route` (the prefix rewritten as configured).
fn upstream_uri(route: &snirouter_config::Route, pq: &PathAndQuery) -> Result<Uri, Refused> {
    let scheme = match route.upstream.scheme {
        snirouter_config::Scheme::Http => Scheme::HTTP,
        snirouter_config::Scheme::Https => Scheme::HTTPS,
    };
    Uri::builder()
        .scheme(scheme)
        .authority(route.upstream.authority.clone())
        .path_and_query(crate::routes::upstream_path(route, pq))
        .build()
        .map_err(|e| Box::new(local(StatusCode::BAD_REQUEST, format!("cannot build the upstream URI: {e}"))))
}

/// The upstream request's head: HTTP/1.1, no hop-by-hop headers (an upgrade asked for
/// again), the Host to send, the forwarding headers and what this router adds.
fn upstream_head(
    parts: &mut http::request::Parts,
    upgrade: Option<HeaderValue>,
    svc: &ServicePolicy,
    client: &Client,
    host_value: HeaderValue,
    added: Added,
) {
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    if let Some(proto) = upgrade {
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        parts.headers.insert(header::UPGRADE, proto);
    }
    let upstream_host = match &svc.upstream_host {
        Some(h) => HeaderValue::from_str(h).unwrap_or(host_value.clone()),
        None => host_value.clone(),
    };
    let h = &mut parts.headers;
    h.insert(header::HOST, upstream_host);
    // What a trusted proxy said of the original request is kept, as Caddy does.
    let said = client.via_proxy.as_ref();
    h.insert(X_FORWARDED_FOR, client.forwarded_for());
    h.insert(X_REAL_IP, client.ip_value.clone());
    h.insert(X_FORWARDED_PROTO, said.and_then(|f| f.proto.clone()).unwrap_or(HeaderValue::from_static("https")));
    h.insert(X_FORWARDED_HOST, said.and_then(|f| f.host.clone()).unwrap_or(host_value));
    for (name, value) in added.auth.iter().flatten() {
        h.append(name.clone(), value.clone());
    }
    if let Some(identity) = added.identity.as_ref().and_then(Lookup::identity) {
        identity.apply(h);
    }
    if let Some(caps) = added.app_caps {
        h.insert(crate::identity::APP_CAPABILITIES, caps);
    }
}

/// The declared `Content-Length`, if exactly one valid value was sent.
fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.next().is_some() {
        return None;
    }
    first.to_str().ok()?.trim().parse().ok()
}

/// Most of a refused request body read and thrown away so the client sees the answer.
const DRAIN_MAX_BYTES: u64 = 4 << 20;
/// Longest time spent draining a refused request body.
const DRAIN_MAX_TIME: Duration = Duration::from_secs(10);

/// Reads and discards what the client still sends of a body refused by its declared
/// length (up to [`DRAIN_MAX_BYTES`] / [`DRAIN_MAX_TIME`]). Without it an HTTP/2 stream
/// is reset while the client is still sending, and clients such as curl report a
/// framing error instead of the 413; an HTTP/1.1 connection can also stay open.
fn drain_in_background(mut body: Incoming) {
    tokio::spawn(async move {
        let mut seen: u64 = 0;
        let _ = tokio::time::timeout(DRAIN_MAX_TIME, async {
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    seen += data.len() as u64;
                    if seen > DRAIN_MAX_BYTES {
                        break;
                    }
                }
            }
        })
        .await;
    });
}

/// `413` for a body over `max_body_bytes`.
fn too_large(service: &str, limit: u64) -> Response<ProxyBody> {
    // The rest of the body is never read; hyper closes an HTTP/1.1 connection whose
    // request body was not consumed, and resets the HTTP/2 stream.
    local(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("the request body is larger than service {service} accepts (max_body_bytes = {limit})"),
    )
}

/// The request's host (lowercase, no port, no trailing dot) and the header value to
/// forward. HTTP/2 and absolute-form requests carry it in the URI authority, which
/// takes precedence over a Host header (RFC 9112 §3.2.2).
fn request_host<B>(req: &Request<B>) -> Option<(String, HeaderValue)> {
    // RFC 9112 §3.2: more than one Host field line is a 400, never "pick one".
    if req.headers().get_all(header::HOST).iter().nth(1).is_some() {
        return None;
    }
    let (raw, value) = match req.uri().authority() {
        Some(a) => (a.as_str().to_owned(), HeaderValue::from_str(a.as_str()).ok()?),
        None => {
            let v = req.headers().get(header::HOST)?;
            (v.to_str().ok()?.to_owned(), v.clone())
        }
    };
    let host = match raw.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest).to_owned(),
        None => raw.rsplit_once(':').map_or(raw.as_str(), |(h, _)| h).to_owned(),
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    Some((host, value))
}

/// The `Upgrade` protocol of an HTTP/1.1 upgrade request (WebSocket and others).
fn upgrade_protocol(version: Version, headers: &HeaderMap) -> Option<HeaderValue> {
    if version != Version::HTTP_11 {
        return None;
    }
    let wants = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    if !wants {
        return None;
    }
    headers.get(header::UPGRADE).cloned()
}

// The "larger than 64 KiB" answer below names this limit.
const _: () = assert!(crate::upstream::MAX_UPSTREAM_READ == 64 * 1024);

fn classify_upstream_error(e: &UpstreamError, insecure: bool) -> (StatusCode, &'static str) {
    if crate::upstream::tls_cause(e).is_some() {
        return if insecure {
            (StatusCode::BAD_GATEWAY, "failed the TLS handshake: is it really an https:// port?")
        } else {
            (
                StatusCode::BAD_GATEWAY,
                "presented a certificate that is not trusted (self-signed? set insecure_skip_verify = true for this service) or failed the TLS handshake",
            )
        };
    }
    let connect = matches!(e, UpstreamError::Connect(_));
    // From the wrapped error itself: `Http` is transparent, so `e.source()` would skip
    // the hyper::Error and go straight to its cause.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(match e {
        UpstreamError::Connect(cause) => cause.as_ref(),
        UpstreamError::Http(h) => h,
    });
    while let Some(err) = source {
        if err.downcast_ref::<hyper::Error>().is_some_and(hyper::Error::is_parse_too_large) {
            return (StatusCode::BAD_GATEWAY, "sent a response header larger than 64 KiB");
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::TimedOut => {
                    (StatusCode::GATEWAY_TIMEOUT, "did not accept the connection in time (timeouts.upstream_connect)")
                }
                std::io::ErrorKind::ConnectionRefused => {
                    (StatusCode::BAD_GATEWAY, "refused the connection: is it running?")
                }
                _ if connect => (StatusCode::BAD_GATEWAY, "could not be reached"),
                _ => (StatusCode::BAD_GATEWAY, "failed while answering"),
            };
        }
        source = err.source();
    }
    if connect {
        (StatusCode::BAD_GATEWAY, "could not be reached")
    } else {
        (StatusCode::BAD_GATEWAY, "closed the connection or sent an invalid answer")
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, X-Secret"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(header::TRANSFER_ENCODING, HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-kept"));
    }

    #[test]
    fn upgrade_detection() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive, Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        assert_eq!(upgrade_protocol(Version::HTTP_11, &h), Some(HeaderValue::from_static("websocket")));
        assert_eq!(upgrade_protocol(Version::HTTP_2, &h), None);
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        assert_eq!(upgrade_protocol(Version::HTTP_11, &h), None);
    }
    fn conn(sni: &str) -> ConnInfo {
        let admission = crate::admit::Admission::new(10, 10, 1 << 20);
        let counted = admission.accept().expect("admitted");
        let client: SocketAddr = "100.64.0.7:50000".parse().expect("addr");
        let hold = admission.client(counted, client.ip(), false).expect("client slot");
        ConnInfo::new(client, sni.to_owned(), None, hold)
    }

    fn get(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut req = Request::get(uri).body(()).expect("request");
        for h in hosts {
            req.headers_mut().append(header::HOST, HeaderValue::from_str(h).expect("host"));
        }
        req
    }

    fn route(path: &str, strip: bool, upstream: &str) -> snirouter_config::Route {
        let src = format!(
            "[listen]\nhttps=[\"127.0.0.1:1\"]\n[services.a]\nroutes=[{{path=\"{path}\", upstream=\"{upstream}\", strip_prefix={strip}}}]\n"
        );
        let mut cfg = snirouter_config::parse(&src, "test").expect("config");
        cfg.services.remove(0).routes.remove(0)
    }

    #[test]
    fn the_request_host_is_one_name_without_port_or_trailing_dot() {
        let host = |uri: &str, hosts: &[&str]| request_host(&get(uri, hosts)).map(|(h, _)| h);
        assert_eq!(host("/", &["Grafana.Example.ts.net.:443"]).as_deref(), Some("grafana.example.ts.net"));
        assert_eq!(host("/", &["[::1]:8443"]).as_deref(), Some("::1"));
        // Absolute form (and HTTP/2's :authority) wins over Host (RFC 9112 §3.2.2).
        assert_eq!(host("https://a.example.ts.net/x", &["b.example.ts.net"]).as_deref(), Some("a.example.ts.net"));
        assert_eq!(host("/", &["a.example.ts.net", "b.example.ts.net"]), None, "two Host lines are a 400");
        assert_eq!(host("/", &[]), None);
        assert_eq!(host("/", &[":443"]), None);
    }

    #[test]
    fn a_host_other_than_the_tls_name_is_misdirected() {
        let svc = ServicePolicy::plain("grafana", Vec::new());
        let conn = conn("grafana.example.ts.net");
        let ok = host_matches_sni(&get("/", &["grafana.example.ts.net:443"]), &conn, &svc).expect("same name");
        assert_eq!(ok, "grafana.example.ts.net:443", "the client's Host is forwarded as written");
        let other = host_matches_sni(&get("/", &["jellyfin.example.ts.net"]), &conn, &svc).expect_err("other name");
        assert_eq!(other.status(), StatusCode::MISDIRECTED_REQUEST);
        let none = host_matches_sni(&get("/", &[]), &conn, &svc).expect_err("no Host");
        assert_eq!(none.status(), StatusCode::BAD_REQUEST);
    }

    #[test]
    fn the_upstream_uri_keeps_the_query_and_strips_only_when_asked() {
        let pq = PathAndQuery::from_static("/sonarr/api/v3?apikey=x");
        let kept = upstream_uri(&route("/sonarr", false, "http://127.0.0.1:8989"), &pq).expect("uri");
        assert_eq!(kept.to_string(), "http://127.0.0.1:8989/sonarr/api/v3?apikey=x");
        let stripped = upstream_uri(&route("/sonarr", true, "https://[::1]:8443"), &pq).expect("uri");
        assert_eq!(stripped.to_string(), "https://[::1]:8443/api/v3?apikey=x");
    }

    #[test]
    fn the_upstream_head_carries_the_real_client_and_no_hop_by_hop_headers() {
        let mut req = get("/", &["grafana.example.ts.net"]);
        let h = req.headers_mut();
        h.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6"));
        h.insert(X_REAL_IP, HeaderValue::from_static("6.6.6.6"));
        h.insert(header::CONNECTION, HeaderValue::from_static("close, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        let (mut parts, ()) = req.into_parts();
        parts.version = Version::HTTP_2;
        let mut svc = ServicePolicy::plain("grafana", Vec::new());
        svc.upstream_host = Some("grafana.internal".to_owned());
        let host = HeaderValue::from_static("grafana.example.ts.net");
        upstream_head(&mut parts, None, &svc, &direct("100.64.0.7:50000"), host, Added::default());
        let h = &parts.headers;
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(h[header::HOST], "grafana.internal");
        assert_eq!(h.get_all(X_FORWARDED_FOR).iter().collect::<Vec<_>>(), ["100.64.0.7"], "a forged value is replaced");
        assert_eq!(h[X_REAL_IP], "100.64.0.7");
        assert_eq!(h[X_FORWARDED_PROTO], "https");
        assert_eq!(h[X_FORWARDED_HOST], "grafana.example.ts.net");
        assert!(!h.contains_key(header::CONNECTION) && !h.contains_key("x-private"));
        // An upgrade is asked for again, explicitly.
        let (mut parts, ()) = get("/ws", &["grafana.example.ts.net"]).into_parts();
        let ws = Some(HeaderValue::from_static("websocket"));
        let host = HeaderValue::from_static("grafana.example.ts.net");
        upstream_head(&mut parts, ws, &svc, &direct("100.64.0.7:50000"), host, Added::default());
        assert_eq!(
            (&parts.headers[header::CONNECTION], &parts.headers[header::UPGRADE]),
            (&"upgrade".parse::<HeaderValue>().expect("v"), &"websocket".parse::<HeaderValue>().expect("v"))
        );
    }

    /// A client connected from `peer` that sent no forwarding header.
    fn direct(peer: &str) -> Client {
        let peer: SocketAddr = peer.parse().expect("addr");
        let value = HeaderValue::from_str(&peer.ip().to_string()).expect("ip");
        crate::client_addr::TrustedProxies::default().resolve(peer, &value, &HeaderMap::new())
    }

    #[test]
    fn a_trusted_proxys_chain_is_appended_to_and_its_proto_and_host_kept() {
        let src = "[listen]\nhttps=[\"127.0.0.1:1\"]\ntrusted_proxies=[\"127.0.0.1\"]\n[services.a]\nupstream=\"http://127.0.0.1:9\"\n";
        let cfg = snirouter_config::parse(src, "test").expect("config");
        let trusted = crate::client_addr::TrustedProxies::from_config(&cfg.listen);
        let mut sent = HeaderMap::new();
        sent.insert(X_FORWARDED_FOR, HeaderValue::from_static("6.6.6.6, 203.0.113.7"));
        sent.insert(X_FORWARDED_PROTO, HeaderValue::from_static("http"));
        let peer: SocketAddr = "127.0.0.1:40000".parse().expect("addr");
        let client = trusted.resolve(peer, &HeaderValue::from_static("127.0.0.1"), &sent);
        let (mut parts, ()) = get("/", &["a.example.com"]).into_parts();
        let svc = ServicePolicy::plain("a", Vec::new());
        upstream_head(&mut parts, None, &svc, &client, HeaderValue::from_static("a.example.com"), Added::default());
        let h = &parts.headers;
        assert_eq!(h[X_FORWARDED_FOR], "6.6.6.6, 203.0.113.7, 127.0.0.1");
        assert_eq!(h[X_REAL_IP], "203.0.113.7");
        assert_eq!(h[X_FORWARDED_PROTO], "http");
        assert_eq!(h[X_FORWARDED_HOST], "a.example.com");
    }

    #[test]
    fn only_one_valid_content_length_counts() {
        let lengths = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).expect("value"));
            }
            content_length(&h)
        };
        assert_eq!(lengths(&["42"]), Some(42));
        assert_eq!(lengths(&[]), None);
        assert_eq!(lengths(&["x"]), None);
    }
}
