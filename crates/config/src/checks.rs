//! Pure value checks shared by the validator: DNS labels and names, upstream URLs, route
//! paths, socket addresses and "did you mean" suggestions. Each returns a [`Problem`]
//! (message + optional help) instead of a positioned diagnostic.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

use crate::schema::{Scheme, Upstream};

/// A message and an optional fix, not yet tied to a position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Problem {
    pub(crate) message: String,
    pub(crate) help: Option<String>,
}

impl Problem {
    pub(crate) fn new(message: impl Into<String>, help: Option<String>) -> Self {
        Problem { message: message.into(), help }
    }
}

/// Why `label` is not a valid lowercase DNS label (1–63 of `a-z 0-9 -`, no leading/trailing
/// `-`), or `None` when it is.
pub(crate) fn label_error(label: &str) -> Option<String> {
    if label.is_empty() {
        return Some("is empty".to_owned());
    }
    if label.len() > 63 {
        return Some(format!("is {} characters long; the limit is 63", label.len()));
    }
    if let Some(c) = label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-')) {
        return Some(if c.is_ascii_uppercase() {
            "contains uppercase letters".to_owned()
        } else {
            format!("contains {c:?}; only a-z, 0-9 and '-' are allowed")
        });
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Some("starts or ends with '-'".to_owned());
    }
    None
}

/// A best-effort valid label derived from `s` (lowercased, invalid characters turned into
/// `-`, dashes trimmed), for help messages.
pub(crate) fn suggest_label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() { c } else { '-' }
        })
        .collect();
    while out.contains("--") {
        out = out.replace("--", "-");
    }
    let trimmed = out.trim_matches('-');
    let mut s: String = trimmed.chars().take(63).collect();
    while s.ends_with('-') {
        s.pop();
    }
    if s.is_empty() { "my-service".to_owned() } else { s }
}

/// Checks a service name (becomes `svc:NAME` and `NAME.<suffix>`).
pub(crate) fn check_service_name(name: &str) -> Result<(), Problem> {
    match label_error(name) {
        None => Ok(()),
        Some(_) if label_error(&name.to_ascii_lowercase()).is_none() => Err(Problem::new(
            format!("service name {name:?} must be lowercase (it becomes svc:{name} and {name}.<tailnet>.ts.net)"),
            Some(format!("rename it to [services.{}]", name.to_ascii_lowercase())),
        )),
        Some(why) => Err(Problem::new(
            format!("service name {name:?} is not a valid DNS label: it {why}"),
            Some(format!(
                "service names become svc:NAME and NAME.<tailnet>.ts.net, so use 1-63 characters from a-z, 0-9 and '-', not starting or ending with '-', e.g. [services.{}]",
                suggest_label(name)
            )),
        )),
    }
}

/// Normalizes and checks a DNS name: lowercased, one trailing dot trimmed, at least
/// `min_labels` labels, every label valid, at most 253 characters.
pub(crate) fn normalize_dns_name(raw: &str, min_labels: usize, what: &str) -> Result<String, Problem> {
    let lower = raw.trim().to_ascii_lowercase();
    let name = lower.strip_suffix('.').unwrap_or(&lower);
    let example = "e.g. \"grafana.tailnet-1234.ts.net\"";
    if name.is_empty() {
        return Err(Problem::new(format!("{what} is empty"), Some(format!("write a full DNS name, {example}"))));
    }
    if name.len() > 253 {
        return Err(Problem::new(
            format!("{what} {raw:?} is {} characters long; DNS names are limited to 253", name.len()),
            None,
        ));
    }
    let labels: Vec<&str> = name.split('.').collect();
    if labels.len() < min_labels {
        return Err(Problem::new(
            format!("{what} {raw:?} must have at least {min_labels} dot-separated labels"),
            Some(format!("write a full DNS name, {example}")),
        ));
    }
    for label in &labels {
        if let Some(why) = label_error(label) {
            return Err(Problem::new(
                format!("{what} {raw:?} is not a valid DNS name: label {label:?} {why}"),
                Some(format!(
                    "each dot-separated label needs 1-63 characters from a-z, 0-9 and '-', not starting or ending with '-'; {example}"
                )),
            ));
        }
    }
    Ok(name.to_owned())
}

/// True for a host name made of labels of `A-Z a-z 0-9 - _` (upstream hosts may be
/// container names, so `_` is tolerated here).
fn is_host_name(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// How a wrong upstream is written correctly.
const UPSTREAM_EXAMPLE: &str = "e.g. \"http://127.0.0.1:3000\"";

/// A problem with the usual help, `write http://HOST:PORT, e.g. …`.
fn bad_upstream(message: String) -> Problem {
    Problem::new(message, Some(format!("write http://HOST:PORT, {UPSTREAM_EXAMPLE}")))
}

/// Parses an upstream URL `http://host[:port][/]` or `https://host[:port][/]`.
pub(crate) fn parse_upstream(raw: &str) -> Result<Upstream, Problem> {
    let text = raw.trim();
    if text.is_empty() {
        return Err(Problem::new("upstream is empty", Some(format!("write the backend's URL, {UPSTREAM_EXAMPLE}"))));
    }
    if text.contains('#') {
        return Err(Problem::new(
            format!("upstream {raw:?} has a fragment ('#')"),
            Some(format!("write only scheme, host and port, {UPSTREAM_EXAMPLE}")),
        ));
    }
    let uri: http::Uri = text.parse().map_err(|e| bad_upstream(format!("upstream {raw:?} is not a valid URL: {e}")))?;
    let scheme = upstream_scheme(raw, text, &uri)?;
    let Some(authority) = uri.authority() else {
        return Err(bad_upstream(format!("upstream {raw:?} has no host")));
    };
    if authority.as_str().contains('@') {
        return Err(Problem::new(
            format!("upstream {raw:?} contains user info ('user@'); credentials in upstream URLs are not supported"),
            Some(format!("remove the 'user@' part, {UPSTREAM_EXAMPLE}")),
        ));
    }
    let host = upstream_host(raw, authority)?;
    let port = upstream_port(raw, authority, scheme)?;
    origin_only(raw, text, &uri, scheme, authority)?;
    let bracketed = if host.contains(':') { format!("[{host}]") } else { host.clone() };
    let authority: http::uri::Authority = format!("{bracketed}:{port}")
        .parse()
        .map_err(|e| bad_upstream(format!("upstream {raw:?} has an invalid authority: {e}")))?;
    Ok(Upstream { scheme, authority, host, port })
}

fn upstream_scheme(raw: &str, text: &str, uri: &http::Uri) -> Result<Scheme, Problem> {
    match uri.scheme_str() {
        None => Err(Problem::new(
            format!("upstream {raw:?} has no scheme"),
            Some(format!("write \"http://{}\"", text.trim_start_matches('/'))),
        )),
        Some(s) if s.eq_ignore_ascii_case("http") => Ok(Scheme::Http),
        Some(s) if s.eq_ignore_ascii_case("https") => Ok(Scheme::Https),
        Some(s) => Err(bad_upstream(format!(
            "upstream {raw:?} has unsupported scheme {s:?}; only http:// and https:// are supported"
        ))),
    }
}

/// The host, lowercase and without IPv6 brackets: an IP address or a host name.
fn upstream_host(raw: &str, authority: &http::uri::Authority) -> Result<String, Problem> {
    let host_raw = authority.host();
    let host = host_raw.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
    let host_ok = if host_raw.starts_with('[') {
        host.parse::<Ipv6Addr>().is_ok()
    } else {
        host.parse::<IpAddr>().is_ok() || is_host_name(&host)
    };
    if !host_ok {
        return Err(Problem::new(
            format!("upstream {raw:?} has an invalid host {host_raw:?}"),
            Some(format!("use an IP address or host name, {UPSTREAM_EXAMPLE}")),
        ));
    }
    Ok(host)
}

/// The port written, or the scheme's default.
fn upstream_port(raw: &str, authority: &http::uri::Authority, scheme: Scheme) -> Result<u16, Problem> {
    // `Authority::port` hides unparsable ports (e.g. 70000), so read the text after the host.
    let port_text = authority.as_str().strip_prefix(authority.host()).unwrap_or("");
    if port_text.is_empty() {
        return Ok(scheme.default_port());
    }
    port_text.strip_prefix(':').and_then(|p| p.parse::<u16>().ok()).filter(|p| *p != 0).ok_or_else(|| {
        bad_upstream(format!(
            "upstream {raw:?} has an invalid port {:?}; use 1-65535",
            port_text.trim_start_matches(':')
        ))
    })
}

/// Upstreams are origins: no path (routes do that) and no query.
fn origin_only(
    raw: &str,
    text: &str,
    uri: &http::Uri,
    scheme: Scheme,
    authority: &http::uri::Authority,
) -> Result<(), Problem> {
    let path = uri.path();
    if !(path.is_empty() || path == "/") {
        return Err(Problem::new(
            format!("upstream {raw:?} has a path {path:?}; upstreams are origins (scheme, host, port) only"),
            Some(format!(
                "write \"{}://{}\" and route by path with routes = [{{ path = \"{}\", upstream = ... }}] (strip_prefix = true removes the prefix)",
                scheme.as_str(),
                authority.as_str(),
                path.trim_end_matches('/')
            )),
        ));
    }
    if uri.query().is_some() || text.contains('?') {
        return Err(Problem::new(
            format!("upstream {raw:?} has a query string; upstreams are origins (scheme, host, port) only"),
            Some(format!("remove the '?...' part, {UPSTREAM_EXAMPLE}")),
        ));
    }
    Ok(())
}

/// Normalizes and checks a route path: starts with `/`, no `?`, `#`, `//`, whitespace or
/// control characters; a trailing `/` is dropped (except for the root).
pub(crate) fn normalize_route_path(raw: &str) -> Result<String, Problem> {
    let help_example = "e.g. path = \"/sonarr\"";
    if !raw.starts_with('/') {
        return Err(Problem::new(
            format!("route path {raw:?} must start with '/'"),
            Some(format!("write path = \"/{}\"", raw.trim_start_matches('/'))),
        ));
    }
    if let Some(c) = raw.chars().find(|c| matches!(c, '?' | '#')) {
        return Err(Problem::new(
            format!("route path {raw:?} contains {c:?}; routes match on the path only, never the query or fragment"),
            Some(format!("remove everything from {c:?} on, {help_example}")),
        ));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(Problem::new(
            format!("route path {raw:?} contains whitespace or control characters"),
            Some(format!("percent-encode them (%20 for a space), {help_example}")),
        ));
    }
    if raw.contains("//") {
        return Err(Problem::new(
            format!("route path {raw:?} contains an empty segment (\"//\")"),
            Some(format!("collapse repeated slashes, {help_example}")),
        ));
    }
    if raw.len() > 1 { Ok(raw.trim_end_matches('/').to_owned()) } else { Ok(raw.to_owned()) }
}

/// Parses a listener address; the help explains the expected `IP:PORT` form.
pub(crate) fn parse_socket_addr(raw: &str) -> Result<SocketAddr, Problem> {
    raw.trim().parse::<SocketAddr>().map_err(|_| {
        let help = if raw.trim().starts_with(':') {
            format!("give an IP address too: \"0.0.0.0{0}\" (all IPv4) or \"[::]{0}\" (all IPv6)", raw.trim())
        } else if raw.parse::<IpAddr>().is_ok() {
            "add a port: \"IP:PORT\" such as \"0.0.0.0:443\" (IPv6 in brackets: \"[::]:443\")".to_owned()
        } else if raw.chars().any(|c| c.is_ascii_alphabetic()) && !raw.contains("::") {
            "host names are not resolved; use an IP address such as \"127.0.0.1:8443\" or \"0.0.0.0:443\"".to_owned()
        } else {
            "write IP:PORT such as \"0.0.0.0:443\" (IPv6 in brackets: \"[::]:443\")".to_owned()
        };
        Problem::new(format!("invalid socket address {raw:?}"), Some(help))
    })
}

/// An IP address (one host) or a CIDR range such as `100.64.0.0/10`. A range with
/// host bits set (`10.0.0.1/8`) is refused: it usually means a typo in the prefix.
pub(crate) fn parse_ip_net(raw: &str) -> Result<IpNet, Problem> {
    let raw = raw.trim();
    if let Ok(ip) = raw.parse::<IpAddr>() {
        return Ok(IpNet::from(ip));
    }
    match raw.parse::<IpNet>() {
        Ok(net) if net.trunc() == net => Ok(net),
        Ok(net) => Err(Problem::new(
            format!("{raw:?} has host bits set after the /{} prefix", net.prefix_len()),
            Some(format!("write the network address: \"{}\"", net.trunc())),
        )),
        Err(_) => Err(Problem::new(
            format!("invalid address or CIDR range {raw:?}"),
            Some(
                "write an IP address (\"127.0.0.1\", \"::1\") or a range (\"100.64.0.0/10\", \"fd7a:115c:a1e0::/48\")"
                    .to_owned(),
            ),
        )),
    }
}

/// Levenshtein distance (on characters).
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.chars().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + cost);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

/// The closest candidate within edit distance 2 (case-insensitive); failing that, the only
/// candidate that starts with `word` (at least 3 characters, e.g. `strip` → `strip_prefix`).
pub(crate) fn did_you_mean<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    let lower = word.to_ascii_lowercase();
    let close = candidates
        .iter()
        .map(|c| (edit_distance(&lower, c), *c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c);
    if close.is_some() || lower.len() < 3 {
        return close;
    }
    let mut prefixed = candidates.iter().filter(|c| c.starts_with(lower.as_str()));
    match (prefixed.next(), prefixed.next()) {
        (Some(only), None) => Some(*only),
        _ => None,
    }
}

/// Checks `[tailscale.api] tailnet`: `-` or a tailnet name as used in API paths.
pub(crate) fn check_tailnet(raw: &str) -> Result<(), Problem> {
    let help = Some(
        "write tailnet = \"-\" (the OAuth client's own tailnet) or the tailnet's name, e.g. \"example.com\"".to_owned(),
    );
    if raw.is_empty() {
        return Err(Problem::new("tailnet is empty", help));
    }
    if raw.chars().any(|c| c.is_whitespace() || c.is_control() || matches!(c, '/' | '?' | '#' | '%')) {
        return Err(Problem::new(format!("tailnet {raw:?} contains characters not allowed in an API path"), help));
    }
    Ok(())
}

/// Normalizes `[tailscale.api] base_url` to `scheme://authority` (no trailing `/`).
/// `https://` anywhere; `http://` only for loopback hosts, since the OAuth secret is sent.
pub(crate) fn normalize_api_base_url(raw: &str) -> Result<String, Problem> {
    let help = Some(
        "write base_url = \"https://api.tailscale.com\" (the default); plain http:// is only for loopback test servers"
            .to_owned(),
    );
    let uri: http::Uri =
        raw.trim().parse().map_err(|e| Problem::new(format!("base_url {raw:?} is not a URL: {e}"), help.clone()))?;
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return Err(Problem::new(format!("base_url {raw:?} needs a scheme and a host"), help));
    };
    if !matches!(uri.path(), "" | "/") || uri.query().is_some() || authority.as_str().contains('@') {
        return Err(Problem::new(
            format!(
                "base_url {raw:?} must be an origin only (no path, query or user info); the /api/v2/... paths are added by snirouter"
            ),
            help,
        ));
    }
    let host = authority.host().trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    match scheme {
        "https" => {}
        "http" if loopback => {}
        "http" => {
            return Err(Problem::new(
                format!(
                    "base_url {raw:?} uses plain http:// to a non-loopback host; the OAuth client secret would travel unencrypted"
                ),
                help,
            ));
        }
        other => return Err(Problem::new(format!("base_url {raw:?} has unsupported scheme {other:?}"), help)),
    }
    Ok(format!("{scheme}://{}", authority.as_str().to_ascii_lowercase()))
}

/// Checks an ACL tag such as `tag:storage-svc`.
pub(crate) fn check_acl_tag(raw: &str) -> Result<(), Problem> {
    let Some(name) = raw.strip_prefix("tag:") else {
        return Err(Problem::new(
            format!("tag {raw:?} must start with \"tag:\""),
            Some(format!("write \"tag:{}\"", suggest_label(raw))),
        ));
    };
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
        return Err(Problem::new(
            format!("tag {raw:?} is not a valid tag name"),
            Some(format!("tags are tag: followed by letters, digits and '-', e.g. \"tag:{}\"", suggest_label(name))),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        assert!(label_error("grafana").is_none());
        assert!(label_error("a-1").is_none());
        assert!(label_error(&"a".repeat(63)).is_none());
        assert!(label_error(&"a".repeat(64)).is_some());
        for bad in ["", "-a", "a-", "a_b", "a.b", "Grafana", "ü"] {
            assert!(label_error(bad).is_some(), "{bad}");
        }
        assert_eq!(suggest_label("My_Svc!"), "my-svc");
        assert_eq!(suggest_label("__"), "my-service");
    }

    #[test]
    fn dns_names() {
        assert_eq!(normalize_dns_name("Grafana.Example.TS.net.", 2, "fqdn").unwrap(), "grafana.example.ts.net");
        assert!(normalize_dns_name("grafana", 2, "fqdn").is_err());
        assert!(normalize_dns_name("a..b", 2, "fqdn").is_err());
        assert!(normalize_dns_name("a_b.c", 2, "fqdn").is_err());
        assert!(normalize_dns_name(".", 2, "fqdn").is_err());
    }

    #[test]
    fn upstreams() {
        let u = parse_upstream("http://127.0.0.1:3000").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str()), ("127.0.0.1", 3000, "127.0.0.1:3000"));
        assert_eq!(u.to_string(), "http://127.0.0.1:3000");
        let u = parse_upstream("HTTP://Backend/").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str()), ("backend", 80, "backend:80"));
        let u = parse_upstream("http://[::1]:8080").unwrap();
        assert_eq!((u.host.as_str(), u.port, u.authority.as_str()), ("::1", 8080, "[::1]:8080"));
        assert_eq!(u.to_string(), "http://[::1]:8080");
        let u = parse_upstream("https://Nas.lan").unwrap();
        assert_eq!((u.scheme, u.port, u.authority.as_str()), (Scheme::Https, 443, "nas.lan:443"));
        assert_eq!(u.to_string(), "https://nas.lan:443");
        let cases = [
            ("127.0.0.1:3000", "has no scheme"),
            ("ftp://x:1", "unsupported scheme"),
            ("http://x:3000/api", "has a path \"/api\""),
            ("http://x:3000/?a=b", "query"),
            ("http://x:3000?", "query"),
            ("http://u:p@x:3000", "user info"),
            ("http://x:0", "invalid port"),
            ("http://x:70000", "\"http://x:70000\""),
            ("http://x#f", "fragment"),
            ("http://", "\"http://\""),
            ("", "empty"),
            ("http://bad host:1", "\"http://bad host:1\""),
        ];
        for (raw, want) in cases {
            let err = parse_upstream(raw).expect_err(raw);
            assert!(err.message.contains(want), "{raw}: {}", err.message);
        }
    }

    #[test]
    fn paths() {
        assert_eq!(normalize_route_path("/").unwrap(), "/");
        assert_eq!(normalize_route_path("/a/").unwrap(), "/a");
        assert_eq!(normalize_route_path("/a/b").unwrap(), "/a/b");
        for bad in ["a", "", "/a?b", "/a#b", "/a//b", "//", "/a b"] {
            assert!(normalize_route_path(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(did_you_mean("upstrem", &["upstream", "routes"]), Some("upstream"));
        assert_eq!(did_you_mean("Routes", &["upstream", "routes"]), Some("routes"));
        assert_eq!(did_you_mean("zzzzzz", &["upstream", "routes"]), None);
        assert_eq!(did_you_mean("strip", &["path", "upstream", "strip_prefix"]), Some("strip_prefix"));
        assert_eq!(did_you_mean("up", &["upstream", "upstream_host"]), None);
        assert_eq!(did_you_mean("upstream_", &["upstream", "upstream_host"]), Some("upstream"));
    }
}
