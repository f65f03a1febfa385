//! Headers that describe one hop only, removed in both directions.

use http::header::{self, HeaderMap, HeaderName};

/// Headers that describe one hop only (RFC 9110 §7.6.1, plus the legacy ones Go's
/// reverse proxy also drops). Never forwarded in either direction.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`.
///
/// One pass over the names the message has, then a removal only for those present: most
/// messages carry one or none of them, and each `remove` hashes and probes the map
/// (nine of them per message were ~5 % of the instructions of an HTTP/2 request).
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    let present: Vec<HeaderName> =
        headers.keys().filter(|k| HOP_BY_HOP.contains(k) || named.contains(k)).cloned().collect();
    for name in present {
        headers.remove(name);
    }
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_go_and_the_rest_stay() {
        let mut h = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "close"),
            ("keep-alive", "timeout=5"),
            ("x-secret-hop", "1"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "websocket"),
            ("proxy-connection", "keep-alive"),
            ("content-type", "text/plain"),
            ("x-kept", "1"),
            ("x-kept", "2"),
        ] {
            h.append(HeaderName::from_static(name), HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["content-type", "x-kept"]);
        assert_eq!(h.get_all("x-kept").iter().count(), 2);
    }
}
