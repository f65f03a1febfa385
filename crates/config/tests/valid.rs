//! Valid configurations: every key, the brief's example, defaults, derived values.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use snirouter_config::{Config, LogFormat, Scheme, parse};

fn ok(src: &str) -> Config {
    match parse(src, "test.toml") {
        Ok(c) => c,
        Err(d) => panic!("expected a valid config, got:\n{d}"),
    }
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

const FULL: &str = r#"
[tailscale]
socket = "/run/ts/tailscaled.sock"
magic_dns_suffix = "Tailnet-1234.TS.net."
manage_services = true

[listen]
https = ["0.0.0.0:443", "[::1]:443"]
proxy_protocol = ["127.0.0.1:8443"]
redirect_http = ["0.0.0.0:80"]
proxy_protocol_from = ["127.0.0.1", "100.64.0.0/10", "fd7a:115c:a1e0::/48"]

[cache]
dir = "/var/cache/snirouter"

[timeouts]
proxy_header = "2s"
tls_handshake = "15s"
request_header = "1m"
idle = "10m"
upstream_connect = "500ms"
upstream_response = "2m"
cert_request = "1h"

[limits]
max_header_bytes = "5MB"
max_connections = 512

[log]
format = "json"
level = "info,snirouter=debug"

[services.grafana]
upstream = "http://127.0.0.1:3000"
fqdn = "Metrics.Example.TS.net."
upstream_host = "grafana.internal"

[services.media]
routes = [
  { path = "/", upstream = "http://127.0.0.1:8080" },
  { path = "/sonarr/", upstream = "http://127.0.0.1:8989", strip_prefix = true },
  { path = "/sonarr/api", upstream = "http://[::1]:8990" },
]
"#;

#[test]
fn full_config_every_key() {
    let c = ok(FULL);
    assert_eq!(c.tailscale.socket, PathBuf::from("/run/ts/tailscaled.sock"));
    assert_eq!(c.tailscale.magic_dns_suffix.as_deref(), Some("tailnet-1234.ts.net"));
    assert!(c.tailscale.manage_services);
    assert_eq!(c.listen.https, vec![addr("0.0.0.0:443"), addr("[::1]:443")]);
    assert_eq!(c.listen.proxy_protocol, vec![addr("127.0.0.1:8443")]);
    assert_eq!(c.listen.redirect_http, vec![addr("0.0.0.0:80")]);
    let senders: Vec<String> = c.listen.proxy_senders().iter().map(ToString::to_string).collect();
    assert_eq!(senders, ["127.0.0.1/32", "100.64.0.0/10", "fd7a:115c:a1e0::/48"]);
    assert_eq!(c.cache.dir, PathBuf::from("/var/cache/snirouter"));
    let t = &c.timeouts;
    assert_eq!(t.proxy_header, Duration::from_secs(2));
    assert_eq!(t.tls_handshake, Duration::from_secs(15));
    assert_eq!(t.request_header, Duration::from_secs(60));
    assert_eq!(t.idle, Duration::from_secs(600));
    assert_eq!(t.upstream_connect, Duration::from_millis(500));
    assert_eq!(t.upstream_response, Duration::from_secs(120));
    assert_eq!(t.tunnel_idle, None, "not set in this file");
    assert_eq!(t.cert_request, Duration::from_secs(3600));
    assert_eq!(c.limits.max_header_bytes, 5_000_000);
    assert_eq!(c.limits.max_connections, 512);
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(c.log.level, "info,snirouter=debug");
    assert_eq!(c.origin, "test.toml");

    assert_eq!(c.services.len(), 2);
    let g = &c.services[0];
    assert_eq!(g.name, "grafana");
    assert_eq!(g.line, 33);
    assert_eq!(g.fqdn.as_deref(), Some("metrics.example.ts.net"));
    assert_eq!(g.fqdn("whatever.ts.net"), "metrics.example.ts.net");
    assert_eq!(g.upstream_host.as_deref(), Some("grafana.internal"));
    assert_eq!(g.routes.len(), 1);
    assert_eq!(g.routes[0].path, "/");
    assert!(!g.routes[0].strip_prefix);
    let u = &g.routes[0].upstream;
    assert_eq!((u.scheme, u.host.as_str(), u.port), (Scheme::Http, "127.0.0.1", 3000));
    assert_eq!(u.authority.as_str(), "127.0.0.1:3000");

    let m = &c.services[1];
    assert_eq!(m.name, "media");
    assert_eq!(m.line, 38);
    assert_eq!(m.fqdn, None);
    assert_eq!(m.fqdn("tailnet-1234.ts.net"), "media.tailnet-1234.ts.net");
    let paths: Vec<&str> = m.routes.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/sonarr/api", "/sonarr", "/"], "longest first, trailing '/' trimmed");
    assert!(m.routes[1].strip_prefix);
    assert_eq!(m.routes[0].upstream.to_string(), "http://[::1]:8990");
    assert_eq!(m.routes[0].upstream.host, "::1");
}

#[test]
fn parsing_is_deterministic_and_serializes_to_json() {
    let a = ok(FULL);
    let b = ok(FULL);
    assert_eq!(a, b);
    let json = serde_json::to_value(&a).expect("serialize");
    assert_eq!(json["timeouts"]["upstream_connect"], "500ms");
    assert_eq!(json["timeouts"]["request_header"], "1m");
    assert_eq!(json["timeouts"]["cert_request"], "1h");
    assert_eq!(json["log"]["format"], "json");
    assert_eq!(json["listen"]["https"][1], "[::1]:443");
    assert_eq!(json["services"][1]["routes"][0]["upstream"], "http://[::1]:8990");
    assert_eq!(json["services"][0]["routes"][0]["upstream"], "http://127.0.0.1:3000");
    assert!(json.get("origin").is_none(), "origin is not part of the effective config");
    // Every serialized duration parses back to the same value.
    assert!(json["timeouts"]["tunnel_idle"].is_null(), "an unset optional timeout is null");
    for (k, v) in json["timeouts"].as_object().expect("object") {
        if k == "tunnel_idle" {
            continue;
        }
        let text = v.as_str().expect("string");
        let back = snirouter_config::parse_duration(text).expect("parses back");
        let d = match k.as_str() {
            "proxy_header" => a.timeouts.proxy_header,
            "tls_handshake" => a.timeouts.tls_handshake,
            "request_header" => a.timeouts.request_header,
            "idle" => a.timeouts.idle,
            "upstream_connect" => a.timeouts.upstream_connect,
            "upstream_response" => a.timeouts.upstream_response,
            "cert_request" => a.timeouts.cert_request,
            other => panic!("unexpected key {other}"),
        };
        assert_eq!(back, d, "{k}");
    }
}

/// The example from the product brief, verbatim.
#[test]
fn brief_example() {
    let c = ok(r#"
[tailscale]
socket = "/var/run/tailscale/tailscaled.sock"  # LocalAPI socket (default shown)

[listen]
https = ["0.0.0.0:443"]              # TLS listeners
proxy_protocol = ["127.0.0.1:8443"]  # TLS listeners that require a PROXY v2 header first

[cache]
dir = "/var/lib/snirouter"           # certificate cache

[services.grafana]                   # name -> FQDN grafana.<MagicDNSSuffix>, Tailscale Service svc:grafana
upstream = "http://127.0.0.1:3000"

[services.media]
routes = [
  { path = "/sonarr", upstream = "http://127.0.0.1:8989" },
  { path = "/", upstream = "http://127.0.0.1:8080" },
]
"#);
    assert_eq!(c.tailscale.socket, PathBuf::from(snirouter_config::DEFAULT_SOCKET));
    assert_eq!(c.listen.https, vec![addr("0.0.0.0:443")]);
    assert_eq!(c.listen.proxy_protocol, vec![addr("127.0.0.1:8443")]);
    assert!(c.listen.redirect_http.is_empty());
    assert_eq!(c.cache.dir, PathBuf::from("/var/lib/snirouter"));
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["grafana", "media"]);
    assert_eq!(c.services[0].tailscale_service(), "svc:grafana");
    assert_eq!(c.services[0].fqdn("tailnet-1234.ts.net"), "grafana.tailnet-1234.ts.net");
    let media = &c.services[1];
    assert_eq!(media.routes[0].path, "/sonarr");
    assert_eq!(media.routes[0].upstream.port, 8989);
    assert_eq!(media.routes[1].path, "/");
    assert_eq!(media.routes[1].upstream.port, 8080);
    // Longest path first: the first route that matches is the one the proxy takes.
    let route_for = |path: &str| media.routes.iter().find(|r| r.matches(path)).map(|r| r.upstream.port);
    assert_eq!(route_for("/sonarr/calendar"), Some(8989));
    assert_eq!(route_for("/sonarrx"), Some(8080));
    assert_eq!(route_for("/"), Some(8080));
    assert!(c.check_fqdns("tailnet-1234.ts.net").is_ok());
    assert_eq!(
        c.service_for("Media.Tailnet-1234.ts.net.", "tailnet-1234.ts.net").map(|s| s.name.as_str()),
        Some("media")
    );
}

#[test]
fn defaults_when_tables_are_omitted() {
    let c = ok("[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n[services.a]\nupstream = \"http://127.0.0.1:1\"\n");
    assert_eq!(c.tailscale.socket, PathBuf::from("/var/run/tailscale/tailscaled.sock"));
    assert_eq!(c.tailscale.magic_dns_suffix, None);
    assert!(!c.tailscale.manage_services);
    assert!(c.listen.https.is_empty());
    assert_eq!(c.listen.proxy_protocol_from, None);
    let senders: Vec<String> = c.listen.proxy_senders().iter().map(ToString::to_string).collect();
    assert_eq!(senders, ["127.0.0.0/8", "::1/128"], "loopback only by default");
    assert_eq!(c.cache.dir, PathBuf::from("/var/lib/snirouter"));
    let t = &c.timeouts;
    assert_eq!(t.proxy_header, Duration::from_secs(5));
    assert_eq!(t.tls_handshake, Duration::from_secs(10));
    assert_eq!(t.request_header, Duration::from_secs(30));
    assert_eq!(t.idle, Duration::from_secs(300));
    assert_eq!(t.upstream_connect, Duration::from_secs(5));
    // 5 minutes since issue 12 (was 60 s, shorter than Syncthing's 60 s long-polls).
    assert_eq!(t.upstream_response, Duration::from_secs(300));
    assert_eq!(t.tunnel_idle, None);
    assert_eq!(t.cert_request, Duration::from_secs(600));
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.limits.max_connections, 20_000);
    assert_eq!(c.log.format, LogFormat::Auto);
    assert_eq!(c.log.level, "info");
    assert_eq!(c.services[0].upstream_host, None);
    // Empty tables are the same as missing ones.
    let d = ok(
        "[tailscale]\n[cache]\n[timeouts]\n[limits]\n[log]\n[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n[services.a]\nupstream = \"http://127.0.0.1:1\"\n",
    );
    assert_eq!(c.timeouts, d.timeouts);
    assert_eq!(c.limits, d.limits);
    assert_eq!(c.log, d.log);
    assert_eq!(c.cache, d.cache);
    assert_eq!(c.tailscale, d.tailscale);
}

#[test]
fn alternative_toml_spellings() {
    // Dotted keys, inline service tables and [[array of tables]] routes mean the same thing.
    let c = ok(r#"
listen.https = ["0.0.0.0:443"]
services.a.upstream = "http://127.0.0.1:1"
services.b = { upstream = "http://127.0.0.1:2" }

[[services.c.routes]]
path = "/x"
upstream = "http://127.0.0.1:3"

[[services.c.routes]]
path = "/"
upstream = "http://127.0.0.1:4"
strip_prefix = false
"#);
    let names: Vec<&str> = c.services.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(c.services.iter().map(|s| s.line).collect::<Vec<_>>(), [3, 4, 6]);
    assert_eq!(c.services[2].routes.len(), 2);
    assert_eq!(c.services[2].routes[0].path, "/x");
}

#[test]
fn upstream_forms() {
    let c = ok(r#"
[listen]
https = ["0.0.0.0:443"]
[services.a]
upstream = "http://Backend.LAN"
[services.b]
upstream = "http://10.0.0.2:8080/"
"#);
    let a = &c.services[0].routes[0].upstream;
    assert_eq!((a.host.as_str(), a.port, a.authority.as_str()), ("backend.lan", 80, "backend.lan:80"));
    assert_eq!(a.to_string(), "http://backend.lan:80");
    let b = &c.services[1].routes[0].upstream;
    assert_eq!(b.to_string(), "http://10.0.0.2:8080");
}

#[test]
fn sizes_and_port_zero() {
    let c = ok(r#"
[listen]
https = ["127.0.0.1:0", "127.0.0.1:0"]
[limits]
max_header_bytes = "64KiB"
[services.a]
upstream = "http://127.0.0.1:1"
"#);
    assert_eq!(c.limits.max_header_bytes, 65536);
    assert_eq!(c.listen.https.len(), 2, "port 0 listeners never collide");
    for (text, want) in [("1024", 1024), ("\"1KiB\"", 1024), ("\"64MiB\"", 64 << 20), ("\"5MB\"", 5_000_000)] {
        let src = format!(
            "[listen]\nhttps=[\"0.0.0.0:443\"]\n[limits]\nmax_header_bytes = {text}\n[services.a]\nupstream=\"http://a:1\"\n"
        );
        assert_eq!(ok(&src).limits.max_header_bytes, want, "{text}");
    }
}

#[test]
fn fqdn_derivation() {
    let c = ok(
        "[listen]\nhttps=[\"0.0.0.0:443\"]\n[services.grafana]\nupstream=\"http://a:1\"\n[services.x]\nupstream=\"http://a:1\"\nfqdn=\"Other.Example.COM.\"\n",
    );
    let g = &c.services[0];
    assert_eq!(g.fqdn("tailnet-1234.ts.net"), "grafana.tailnet-1234.ts.net");
    assert_eq!(g.fqdn("Tailnet-1234.TS.net."), "grafana.tailnet-1234.ts.net");
    assert_eq!(g.fqdn(".tailnet-1234.ts.net"), "grafana.tailnet-1234.ts.net");
    assert_eq!(c.services[1].fqdn("tailnet-1234.ts.net"), "other.example.com");
}

#[test]
fn magic_dns_suffix_override_is_used_for_checks() {
    let c = ok(r#"
[tailscale]
magic_dns_suffix = "tailnet-1234.ts.net"
[listen]
https = ["0.0.0.0:443"]
[services.grafana]
upstream = "http://127.0.0.1:3000"
[services.metrics]
upstream = "http://127.0.0.1:3001"
fqdn = "metrics.example.com"
"#);
    let suffix = c.tailscale.magic_dns_suffix.clone().expect("set");
    assert_eq!(c.services[0].fqdn(&suffix), "grafana.tailnet-1234.ts.net");
}

#[test]
fn cors_for_any_origin_on_an_identity_service_is_a_warning() {
    let c = ok(r#"
[listen]
https = ["127.0.0.1:443"]

[services.grafana]
upstream = "http://127.0.0.1:3000"
tailscale_identity = true
cors = true

[services.sonarr]
upstream = "http://127.0.0.1:8989"
forward_auth = { url = "http://127.0.0.1:9091/api/verify", copy_headers = ["Remote-User"] }
cors = true
cors_origins = ["https://app.example.com"]

[services.public]
upstream = "http://127.0.0.1:8080"
cors = true
"#);
    let warnings = c.warnings();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    let w = &warnings[0];
    assert_eq!((w.key_path.as_str(), w.line), ("services.grafana.cors", 5));
    assert!(w.message.contains("any web page") && w.message.contains("tailscale_identity"), "{w}");
    assert!(w.help.as_deref().is_some_and(|h| h.contains("cors_origins")), "{w}");
}

#[test]
fn domains_give_services_further_names_with_their_own_auth() {
    let src = r#"
[listen]
https = ["0.0.0.0:443"]

[domains."example.com"]
cert_dir = "/var/lib/acme/example.com"
forward_auth = { url = "http://127.0.0.1:9091/api/authz/forward-auth", copy_headers = ["Remote-User"] }

[domains."lab.example.com"]
cert = "/etc/lab/fullchain.pem"
key = "/etc/lab/key.pem"

[services.grafana]
upstream = "http://127.0.0.1:3000"
names = ["grafana.example.com", "Grafana.Example.com.", "grafana.lab.example.com"]

[services.jellyfin]
upstream = "http://127.0.0.1:8096"
names = ["jellyfin.example.com"]
bypass_auth = true
"#;
    let cfg = snirouter_config::parse(src, "t.toml").expect("valid");
    let d = &cfg.domains[0];
    assert_eq!((d.name.as_str(), d.line), ("example.com", 5));
    assert_eq!(d.cert, std::path::Path::new("/var/lib/acme/example.com/fullchain.pem"));
    assert_eq!(d.key, std::path::Path::new("/var/lib/acme/example.com/key.pem"));
    assert_eq!(cfg.domains[1].cert, std::path::Path::new("/etc/lab/fullchain.pem"));
    let grafana = &cfg.services[0];
    assert_eq!(grafana.names, ["grafana.example.com", "grafana.lab.example.com"], "normalized, deduplicated");
    assert_eq!(
        grafana.all_names("tail-1.ts.net"),
        ["grafana.tail-1.ts.net", "grafana.example.com", "grafana.lab.example.com"]
    );
    assert_eq!(cfg.domain_for("grafana.lab.example.com").map(|d| d.name.as_str()), Some("lab.example.com"));
    assert_eq!(cfg.domain_for("example.com").map(|d| d.name.as_str()), Some("example.com"));
    assert!(cfg.domain_for("grafana.tail-1.ts.net").is_none());
    // The domain's forward_auth applies to names under it only, and not with bypass_auth.
    let auth = |svc: usize, name: &str| cfg.forward_auth_for(&cfg.services[svc], name).map(|a| a.url.to_string());
    assert_eq!(auth(0, "grafana.example.com").as_deref(), Some("http://127.0.0.1:9091/api/authz/forward-auth"));
    assert_eq!(auth(0, "grafana.tail-1.ts.net"), None, "the tailnet name has no login");
    assert_eq!(auth(0, "grafana.lab.example.com"), None, "lab.example.com has no forward_auth of its own");
    assert_eq!(auth(1, "jellyfin.example.com"), None, "bypass_auth");
    // Two services cannot share a name.
    let dup = src.replace("names = [\"jellyfin.example.com\"]", "names = [\"grafana.example.com\"]");
    let cfg = snirouter_config::parse(&dup, "t.toml").expect("valid syntax");
    let e = cfg.check_fqdns("tail-1.ts.net").expect_err("duplicate");
    assert!(e.to_string().contains("both answer to \"grafana.example.com\""), "{e}");
}

#[test]
fn header_rules_merge_over_the_defaults() {
    let src = r#"
[listen]
https = ["0.0.0.0:443"]

[defaults]
request_headers = { remove = ["X-Middleware-Subrequest"] }
response_headers = { set = { "X-Frame-Options" = "DENY", "Referrer-Policy" = "no-referrer" } }
error_pages_upstream = [500, 503]

[services.grafana]
upstream = "http://127.0.0.1:3000"
response_headers = { set = { "X-Frame-Options" = "SAMEORIGIN" }, remove = ["Server"] }

[services.vault]
passthrough = "127.0.0.1:8200"
"#;
    let cfg = snirouter_config::parse(src, "t.toml").expect("valid");
    let g = &cfg.services[0];
    assert_eq!(g.request_headers.remove, ["x-middleware-subrequest"]);
    assert_eq!(
        g.response_headers.set,
        [
            ("referrer-policy".to_owned(), "no-referrer".to_owned()),
            ("x-frame-options".to_owned(), "SAMEORIGIN".to_owned())
        ]
    );
    assert_eq!(g.response_headers.remove, ["server"]);
    assert_eq!(g.error_pages_upstream.as_deref(), Some(&[500, 503][..]));
    assert!(cfg.services[1].request_headers.is_empty(), "passthrough services see no HTTP");
}

#[test]
fn public_names_without_a_tls_listener_are_a_warning_that_names_the_fix() {
    let src = r#"
[listen]
proxy_protocol = ["127.0.0.1:8444"]

[domains."example.com"]
cert_dir = "/var/lib/acme/example.com"

[services.grafana]
upstream = "http://127.0.0.1:3000"
names = ["grafana.example.com"]
allow = ["100.64.0.0/10"]
"#;
    let warnings = ok(src).warnings();
    let w = warnings.iter().find(|w| w.message.contains("no listener can reach")).expect("the warning");
    assert!(w.message.contains("grafana.example.com") && w.key_path == "services.grafana.names", "{w}");
    assert!(w.help.as_deref().is_some_and(|h| h.contains("https = [\"0.0.0.0:443\"")), "{w}");
    let with_listener = src.replace("[listen]\n", "[listen]\nhttps = [\"0.0.0.0:443\"]\n");
    assert!(ok(&with_listener).warnings().iter().all(|w| !w.message.contains("no listener")));
}

#[test]
fn a_trailing_dot_is_dropped_with_a_word_where_it_was_written() {
    let src = "[listen]\nhttps = [\"0.0.0.0:443\"]\n\n[domains.\"example.com.\"]\ncert_dir = \"/var/lib/acme/example.com\"\n\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\nfqdn = \"grafana.bat-boa.ts.net.\"\nnames = [\"grafana.example.com\", \"Grafana.Example.com.\"]\n";
    let (cfg, warnings) = snirouter_config::parse_with_warnings(src, "t.toml");
    let cfg = cfg.expect("valid");
    assert_eq!(cfg.domains[0].name, "example.com");
    let dots: Vec<String> =
        warnings.iter().filter(|w| w.message.contains("trailing dot")).map(|w| w.to_string()).collect();
    assert_eq!(dots.len(), 3, "{dots:#?}");
    assert!(dots[0].starts_with("t.toml:4:10: domains.\"example.com.\""), "{dots:#?}");
    assert!(
        dots[1].starts_with(
            "t.toml:9:8: services.grafana.fqdn: \"grafana.bat-boa.ts.net.\" is served as \"grafana.bat-boa.ts.net\""
        ),
        "{dots:#?}"
    );
    assert!(dots[2].starts_with("t.toml:10:33: services.grafana.names[1]"), "{dots:#?}");
}
