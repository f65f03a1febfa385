//! `forward_auth`: Caddy's `forward_auth` / Authelia protocol.
//!
//! For every request of a protected service a `GET` goes to the auth URL with
//!
//! * `X-Forwarded-Method` (the original method), `X-Forwarded-Proto: https`,
//!   `X-Forwarded-Host` (the client's Host), `X-Forwarded-Uri` (path and query as the
//!   client sent them), and `X-Forwarded-For` and `X-Real-IP` (the real client address:
//!   the PROXY v2 source on proxy listeners, the address a trusted proxy named) — what
//!   Authelia's `/api/verify` and, from 4.38, its `/api/authz/forward-auth` read (its
//!   login regulation bans by that address);
//! * `X-Original-URL` (`https://HOST/URI`) and `X-Original-Method` — what its
//!   `/api/authz/auth-request` reads, and `/api/verify` prefers when present;
//! * the client's `Cookie`, `Authorization`, `Accept`, `User-Agent`,
//!   `X-Requested-With` and `Accept-Language` (Authelia answers browsers with a `302`
//!   to its portal and API clients with `401`, based on `Accept`/`X-Requested-With`).
//!
//! Then:
//!
//! * `2xx` ⇒ the `copy_headers` are taken from the auth answer onto the upstream request
//!   (client-sent headers of those names were already removed, so a missing one stays
//!   missing);
//! * any other status ⇒ the auth answer goes to the client as it is (status, headers
//!   such as `Location` and `Set-Cookie`, streamed body); the upstream is not contacted;
//! * auth server unreachable, failing or too slow (`timeouts.upstream_response`) ⇒
//!   `502` — never the upstream.

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use snirouter_config::ForwardAuth;

use crate::body::ProxyBody;
use crate::client_addr::Client;
use crate::client_headers::{X_FORWARDED_FOR, X_FORWARDED_HOST, X_FORWARDED_PROTO, X_REAL_IP};
use crate::pool::Pool;
use crate::upstream::UpstreamBody;

/// Client request headers passed on to the auth server.
const PASSED: [HeaderName; 6] = [
    header::COOKIE,
    header::AUTHORIZATION,
    header::ACCEPT,
    header::USER_AGENT,
    header::ACCEPT_LANGUAGE,
    HeaderName::from_static("x-requested-with"),
];

const X_FORWARDED_METHOD: HeaderName = HeaderName::from_static("x-forwarded-method");
const X_FORWARDED_URI: HeaderName = HeaderName::from_static("x-forwarded-uri");
const X_ORIGINAL_URL: HeaderName = HeaderName::from_static("x-original-url");
const X_ORIGINAL_METHOD: HeaderName = HeaderName::from_static("x-original-method");

/// What the auth server decided.
#[derive(Debug)]
pub(crate) enum Verdict {
    /// `2xx`: forward, with these headers (the `copy_headers` the auth answer had).
    Allow(HeaderMap),
    /// Anything else, or no answer: send this to the client instead.
    Deny(Response<ProxyBody>),
}

/// What the auth check needs to know about the client's request.
#[derive(Debug)]
pub(crate) struct Original<'a> {
    /// The client's method.
    pub method: &'a Method,
    /// The client's headers (after identity headers were removed).
    pub headers: &'a HeaderMap,
    /// The `Host` the client asked for (with port, as sent).
    pub host: &'a HeaderValue,
    /// Path and query as the client sent them.
    pub uri: &'a str,
    /// The client (after `trusted_proxies`).
    pub client: &'a Client,
}

/// Asks the auth server about one request.
pub(crate) async fn check(
    client: &Arc<Pool>,
    auth: &ForwardAuth,
    original: &Original<'_>,
    service: &str,
    timeout: Duration,
) -> Verdict {
    let mut req = Request::new(UpstreamBody::Empty);
    *req.method_mut() = Method::GET;
    *req.uri_mut() = auth.url.clone();
    let h = req.headers_mut();
    if let Some(authority) = auth.url.authority()
        && let Ok(v) = HeaderValue::from_str(authority.as_str())
    {
        h.insert(header::HOST, v);
    }
    for name in &PASSED {
        for v in original.headers.get_all(name) {
            h.append(name.clone(), v.clone());
        }
    }
    if let Ok(m) = HeaderValue::from_str(original.method.as_str()) {
        h.insert(X_FORWARDED_METHOD, m.clone());
        h.insert(X_ORIGINAL_METHOD, m);
    }
    if let Ok(host) = original.host.to_str()
        && let Ok(url) = HeaderValue::from_str(&format!("https://{host}{}", original.uri))
    {
        h.insert(X_ORIGINAL_URL, url);
    }
    h.insert(X_FORWARDED_PROTO, HeaderValue::from_static("https"));
    h.insert(X_FORWARDED_HOST, original.host.clone());
    if let Ok(u) = HeaderValue::from_str(original.uri) {
        h.insert(X_FORWARDED_URI, u);
    }
    h.insert(X_FORWARDED_FOR, original.client.ip_value.clone());
    h.insert(X_REAL_IP, original.client.ip_value.clone());

    let url = auth.url.to_string();
    let (resp, lease) = match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(sent)) => sent,
        Ok(Err(e)) => {
            tracing::warn!(service = %service, auth_url = %url, cause = %crate::local::error_chain(&e), "502: forward_auth server failed; request refused");
            return Verdict::Deny(crate::local::local(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the authentication server of service {service} could not be reached, so the request was refused; start it or fix forward_auth.url"
                ),
            ));
        }
        Err(_) => {
            tracing::warn!(service = %service, auth_url = %url, timeout_secs = timeout.as_secs(), "502: forward_auth server did not answer in time; request refused");
            return Verdict::Deny(crate::local::local(
                StatusCode::BAD_GATEWAY,
                format!(
                    "the authentication server of service {service} did not answer within {}s (timeouts.upstream_response), so the request was refused",
                    timeout.as_secs()
                ),
            ));
        }
    };
    if resp.status().is_success() {
        let mut copied = HeaderMap::new();
        for name in &auth.copy_headers {
            let Ok(name) = HeaderName::from_bytes(name.as_bytes()) else { continue };
            for v in resp.headers().get_all(&name) {
                copied.append(name.clone(), v.clone());
            }
        }
        // An empty answer leaves the connection reusable; one with a body is closed.
        if hyper::body::Body::is_end_stream(resp.body()) {
            lease.finish();
        }
        return Verdict::Allow(copied);
    }
    tracing::debug!(service = %service, status = resp.status().as_u16(), "forward_auth refused the request");
    let (mut parts, body) = resp.into_parts();
    crate::hop_by_hop::strip_hop_by_hop(&mut parts.headers);
    Verdict::Deny(Response::from_parts(parts, ProxyBody::upstream(body, lease, None, timeout, None)))
}
