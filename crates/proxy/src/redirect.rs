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

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        let src = "[listen]\nhttps=[\"127.0.0.1:1\"]\n[services.grafana]\nupstream=\"http://127.0.0.1:3000\"\n";
        let cfg = snirouter_config::parse(src, "test").expect("config");
        RouteTable::from_config(&cfg, "example.ts.net", None)
    }

    fn answer_for(uri: &str, hosts: &[&str]) -> Response<ProxyBody> {
        let mut req = Request::get(uri).body(()).expect("request");
        for h in hosts {
            req.headers_mut().append(header::HOST, HeaderValue::from_str(h).expect("host"));
        }
        answer(&req, &table())
    }

    #[test]
    fn a_served_name_is_sent_to_https_with_path_and_query() {
        let resp = answer_for("/d/abc?orgId=1", &["Grafana.example.ts.net.:80"]);
        assert_eq!(resp.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(resp.headers()[header::LOCATION], "https://grafana.example.ts.net/d/abc?orgId=1");
    }

    #[test]
    fn never_an_open_redirect() {
        for hosts in [&["evil.example.com"][..], &[], &["grafana.example.ts.net", "evil.example.com"]] {
            let resp = answer_for("/", hosts);
            assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{hosts:?}");
            assert!(!resp.headers().contains_key(header::LOCATION), "{hosts:?}");
        }
        // An absolute-form target names the host itself, and is checked the same way.
        assert_eq!(
            answer_for("http://evil.example.com/", &["grafana.example.ts.net"]).status(),
            StatusCode::BAD_REQUEST
        );
    }
}
