//! `[listen] redirect_http`: a plain-HTTP listener that sends every request to the same
//! URL over HTTPS with `308 Permanent Redirect` (method and body are kept by clients).
//!
//! The target host is the request's `Host` without its port; only names this router
//! serves are redirected — a missing or unknown `Host` gets `400`, so the listener is
//! never an open redirect.

use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};

use crate::body::ProxyBody;
use crate::local::local;
use crate::routes::RouteTable;

/// The answer to one plain-HTTP request.
pub(crate) fn answer<B>(req: &Request<B>, table: &RouteTable) -> Response<ProxyBody> {
    let raw = req.uri().authority().map(|a| a.as_str().to_owned()).or_else(|| {
        let mut hosts = req.headers().get_all(header::HOST).iter();
        match (hosts.next(), hosts.next()) {
            (Some(h), None) => h.to_str().ok().map(str::to_owned),
            _ => None,
        }
    });
    let Some(raw) = raw else {
        return local(
            StatusCode::BAD_REQUEST,
            "the request needs exactly one Host header to be redirected to https://".into(),
        );
    };
    let host = match raw.strip_prefix('[') {
        Some(rest) => format!("[{}]", rest.split(']').next().unwrap_or(rest)),
        None => raw.rsplit_once(':').map_or(raw.as_str(), |(h, _)| h).to_owned(),
    };
    let host = host.strip_suffix('.').unwrap_or(&host).to_ascii_lowercase();
    if table.get(&host).is_none() {
        return local(
            StatusCode::BAD_REQUEST,
            format!("{host:?} is not served by this router; nothing to redirect to"),
        );
    }
    let pq = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    let location = format!("https://{host}{pq}");
    let Ok(value) = HeaderValue::from_str(&location) else {
        return local(StatusCode::BAD_REQUEST, "the request target cannot be redirected".into());
    };
    let mut resp = local(StatusCode::PERMANENT_REDIRECT, format!("moved to {location}"));
    resp.headers_mut().insert(header::LOCATION, value);
    resp
}
