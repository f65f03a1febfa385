//! `error_pages = "/dir"`: custom HTML for `404`, `500`, `502`, `503` and `504` answers,
//! whether they come from an upstream or from the router itself (no route, upstream
//! down, timeout, forward-auth server down).
//!
//! With `error_pages_upstream = [500, 503]` only upstream answers of those statuses get
//! the page (an upstream's own 404 page passes through); snirouter's own answers always
//! do. Upstream answers carry the [`FromUpstream`] mark to tell them apart.
//!
//! The files (`404.html`, …) are read when the route table is built — at start and on
//! every reload — so serving a page never touches the disk. A missing or unreadable
//! file falls back to the built-in text (logged once per load).

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

/// The statuses that can have a custom page.
pub(crate) const STATUSES: [u16; 5] = [404, 500, 502, 503, 504];

/// Largest page file read (a page is served from memory).
pub(crate) const MAX_PAGE_BYTES: u64 = 1024 * 1024;

/// Response headers of the original answer that survive the page swap.
const KEPT: [HeaderName; 4] =
    [header::RETRY_AFTER, header::WWW_AUTHENTICATE, header::VARY, HeaderName::from_static("x-request-id")];

/// Marks an answer that came from the upstream (a response extension).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FromUpstream;

/// The loaded pages of one service.
#[derive(Debug, Default, Clone)]
pub struct ErrorPages {
    pages: HashMap<u16, Bytes>,
    /// Upstream statuses that get a page (`None`: every status with one).
    upstream: Option<Vec<u16>>,
}

impl ErrorPages {
    /// Reads `STATUS.html` for every status in [`STATUSES`] from `dir`.
    pub fn load(service: &str, dir: &Path) -> ErrorPages {
        let mut pages = HashMap::new();
        for status in STATUSES {
            let path = dir.join(format!("{status}.html"));
            match std::fs::metadata(&path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(service = %service, file = %path.display(), cause = %e, "error page unreadable; using the built-in text")
                }
                Ok(m) if m.len() > MAX_PAGE_BYTES => {
                    tracing::warn!(service = %service, file = %path.display(), bytes = m.len(), limit = MAX_PAGE_BYTES, "error page too large; using the built-in text")
                }
                Ok(_) => match std::fs::read(&path) {
                    Ok(data) => {
                        pages.insert(status, Bytes::from(data));
                    }
                    Err(e) => {
                        tracing::warn!(service = %service, file = %path.display(), cause = %e, "error page unreadable; using the built-in text")
                    }
                },
            }
        }
        tracing::debug!(service = %service, dir = %dir.display(), pages = pages.len(), "error pages loaded");
        ErrorPages { pages, upstream: None }
    }

    /// Pages upstream answers only for `statuses` (`error_pages_upstream`; `None`: all).
    pub fn for_upstream(mut self, statuses: Option<Vec<u16>>) -> ErrorPages {
        self.upstream = statuses;
        self
    }

    /// Number of custom pages loaded.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// True when no page was loaded.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// `resp`, or the custom page for its status (same status, the original body
    /// dropped unread); `body` turns the page into the response body type.
    pub fn apply<B>(&self, resp: Response<B>, body: impl FnOnce(Bytes) -> B) -> Response<B> {
        let code = resp.status().as_u16();
        let Some(page) = self.pages.get(&code) else { return resp };
        if let Some(chosen) = &self.upstream
            && resp.extensions().get::<FromUpstream>().is_some()
            && !chosen.contains(&code)
        {
            return resp;
        }
        let status: StatusCode = resp.status();
        let mut out = Response::new(body(page.clone()));
        *out.status_mut() = status;
        copy_kept(resp.headers(), out.headers_mut());
        let h = out.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        h.insert(HeaderName::from_static("x-content-type-options"), HeaderValue::from_static("nosniff"));
        out
    }
}

fn copy_kept(from: &HeaderMap, to: &mut HeaderMap) {
    for name in KEPT {
        for v in from.get_all(&name) {
            to.append(name.clone(), v.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::ProxyBody;

    #[test]
    fn chosen_upstream_statuses_only_and_always_our_own() {
        let tmp = tempfile::tempdir().expect("temp dir");
        for status in ["404", "500", "503"] {
            std::fs::write(tmp.path().join(format!("{status}.html")), format!("<h1>{status}</h1>")).expect("write");
        }
        let pages = ErrorPages::load("t", tmp.path()).for_upstream(Some(vec![500, 503]));
        let upstream = |status| {
            let mut r = crate::local::local(status, "from the app".into());
            r.extensions_mut().insert(FromUpstream);
            r
        };
        let paged = |r: &Response<ProxyBody>| matches!(r.body(), ProxyBody::Full(Some(b)) if b.starts_with(b"<h1>"));
        assert!(!paged(&pages.apply(upstream(StatusCode::NOT_FOUND), ProxyBody::full)), "the app's 404 passes");
        assert!(paged(&pages.apply(upstream(StatusCode::SERVICE_UNAVAILABLE), ProxyBody::full)));
        let own = crate::local::local(StatusCode::NOT_FOUND, "no route".into());
        assert!(paged(&pages.apply(own, ProxyBody::full)), "snirouter's own 404 gets the page");
    }

    #[test]
    fn pages_replace_matching_statuses_only() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        std::fs::write(dir.join("404.html"), "<h1>gone</h1>").expect("write");
        std::fs::write(dir.join("503.html"), "<h1>later</h1>").expect("write");
        std::fs::write(dir.join("418.html"), "teapot").expect("write");
        let pages = ErrorPages::load("t", dir);
        assert_eq!(pages.len(), 2);

        let mut resp = crate::local::local(StatusCode::SERVICE_UNAVAILABLE, "down".into());
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("30"));
        resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_static("a=b"));
        let out = pages.apply(resp, ProxyBody::full);
        assert_eq!(out.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(out.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(out.headers()[header::RETRY_AFTER], "30");
        assert!(!out.headers().contains_key(header::SET_COOKIE));
        assert!(matches!(out.body(), ProxyBody::Full(Some(b)) if b.as_ref() == b"<h1>later</h1>"));

        let other = pages.apply(crate::local::local(StatusCode::BAD_GATEWAY, "x".into()), ProxyBody::full);
        assert!(matches!(other.body(), ProxyBody::Full(Some(b)) if b.starts_with(b"502 Bad Gateway")));
    }
}
