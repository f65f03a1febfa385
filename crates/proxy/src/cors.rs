//! `cors = true`: the owner's Caddy CORS snippet, built in.
//!
//! * An allowed `Origin` (any origin, or one of `cors_origins`) is echoed in
//!   `Access-Control-Allow-Origin` with `Access-Control-Allow-Credentials: true`;
//!   `Vary: Origin` is added to every answer of the service (caches must not mix them).
//! * A preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed origin
//!   is answered here with `204`: the requested method and headers are allowed,
//!   `Access-Control-Max-Age: 86400`. Preflights carry no credentials, so they are
//!   answered before forward auth (which would otherwise redirect them to a login page).
//! * Requests from origins not on the list get no CORS headers (the browser blocks
//!   the page from reading the answer).

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Response, StatusCode};
use snirouter_config::Cors;

use crate::body::ProxyBody;

/// Methods always listed in a preflight answer (plus the requested one).
const METHODS: &str = "GET, POST, PUT, PATCH, DELETE, HEAD, OPTIONS";

/// The request's `Origin` when CORS is on and the origin is allowed.
pub(crate) fn allowed_origin(cors: &Cors, headers: &HeaderMap) -> Option<HeaderValue> {
    let origin = headers.get(header::ORIGIN)?;
    let text = origin.to_str().ok()?;
    (!text.is_empty() && text != "null" && cors.allows(text)).then(|| origin.clone())
}

/// True for a CORS preflight request.
pub(crate) fn is_preflight(method: &Method, headers: &HeaderMap) -> bool {
    method == Method::OPTIONS
        && headers.contains_key(header::ORIGIN)
        && headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

/// The `204` answer to a preflight from `origin`.
pub(crate) fn preflight(origin: HeaderValue, headers: &HeaderMap) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    let methods = match headers.get(header::ACCESS_CONTROL_REQUEST_METHOD).and_then(|m| m.to_str().ok()) {
        Some(m) if !METHODS.split(", ").any(|known| known.eq_ignore_ascii_case(m.trim())) => {
            HeaderValue::from_str(&format!("{METHODS}, {}", m.trim())).unwrap_or(HeaderValue::from_static(METHODS))
        }
        _ => HeaderValue::from_static(METHODS),
    };
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, methods);
    if let Some(requested) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
    }
    h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from_static("86400"));
    decorate(h, Some(origin));
    h.append(header::VARY, HeaderValue::from_static("Access-Control-Request-Method, Access-Control-Request-Headers"));
    resp
}

/// Adds `Vary: Origin` and, for an allowed origin, the allow-origin/credentials
/// headers (replacing any the upstream set).
pub(crate) fn decorate(headers: &mut HeaderMap, origin: Option<HeaderValue>) {
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("origin") || t.trim() == "*");
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if let Some(origin) = origin {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(http::HeaderName::from_bytes(k.as_bytes()).expect("name"), HeaderValue::from_str(v).expect("v"));
        }
        h
    }

    #[test]
    fn allow_list_and_any() {
        let any = Cors::default();
        let listed = Cors { origins: vec!["https://app.example.com".into()] };
        let h = req(&[("origin", "https://evil.example")]);
        assert_eq!(allowed_origin(&any, &h).as_ref().map(|v| v.as_bytes()), Some(&b"https://evil.example"[..]));
        assert!(allowed_origin(&listed, &h).is_none());
        assert!(allowed_origin(&listed, &req(&[("origin", "https://app.example.com")])).is_some());
        assert!(allowed_origin(&any, &req(&[("origin", "null")])).is_none());
        assert!(allowed_origin(&any, &req(&[])).is_none());
    }

    #[test]
    fn preflight_echoes_method_and_headers() {
        let h = req(&[
            ("origin", "https://app.example.com"),
            ("access-control-request-method", "PROPFIND"),
            ("access-control-request-headers", "x-api-key, content-type"),
        ]);
        assert!(is_preflight(&Method::OPTIONS, &h));
        assert!(!is_preflight(&Method::GET, &h));
        let resp = preflight(HeaderValue::from_static("https://app.example.com"), &h);
        assert_eq!(resp.status(), StatusCode::NO_CONTENT);
        let out = resp.headers();
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://app.example.com");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        assert_eq!(out[header::ACCESS_CONTROL_ALLOW_HEADERS], "x-api-key, content-type");
        assert!(out[header::ACCESS_CONTROL_ALLOW_METHODS].to_str().is_ok_and(|m| m.ends_with("PROPFIND")));
        assert_eq!(out[header::ACCESS_CONTROL_MAX_AGE], "86400");
        assert_eq!(out.get_all(header::VARY).iter().next().map(|v| v.as_bytes()), Some(&b"Origin"[..]));
    }

    #[test]
    fn decorate_does_not_repeat_vary() {
        let mut h = req(&[("vary", "Accept-Encoding, Origin"), ("access-control-allow-origin", "*")]);
        decorate(&mut h, Some(HeaderValue::from_static("https://a.example")));
        assert_eq!(h.get_all(header::VARY).iter().count(), 1);
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "https://a.example");
    }
}
