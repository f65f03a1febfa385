//! Invalid configurations: every check reports the right key path, line and column.

use snirouter_config::{Diagnostic, Diagnostics, parse};

/// Joins lines with '\n' so that `lines[i]` is line `i + 1` of the file.
fn file(lines: &[&str]) -> String {
    lines.join("\n")
}

/// A valid `[listen]` + one service, appended to files that test something else.
const OK_TAIL: &[&str] =
    &["[listen]", "https = [\"0.0.0.0:443\"]", "[services.ok]", "upstream = \"http://127.0.0.1:1\""];

fn with_tail(lines: &[&str]) -> String {
    let mut all = lines.to_vec();
    all.extend_from_slice(OK_TAIL);
    file(&all)
}

fn errs(src: &str) -> Vec<Diagnostic> {
    match parse(src, "t.toml") {
        Ok(c) => panic!("expected errors, got a valid config: {c:#?}\n--- source ---\n{src}"),
        Err(d) => {
            assert!(!d.0.is_empty(), "Err must never be empty");
            d.0
        }
    }
}

/// Exactly one diagnostic.
fn one(src: &str) -> Diagnostic {
    let d = errs(src);
    assert_eq!(d.len(), 1, "expected one diagnostic, got:\n{}", Diagnostics(d.clone()));
    d.into_iter().next().expect("one")
}

/// The diagnostic at `key_path`, asserting its line and that its message contains `needle`.
#[track_caller]
fn expect(diags: &[Diagnostic], key_path: &str, line: usize, needle: &str) -> Diagnostic {
    let found = diags.iter().find(|d| d.key_path == key_path);
    let Some(d) = found else {
        panic!("no diagnostic for {key_path}; got:\n{}", Diagnostics(diags.to_vec()));
    };
    assert_eq!(d.line, line, "line of {key_path}: {d}");
    assert!(d.message.contains(needle), "message of {key_path} should contain {needle:?}: {d}");
    d.clone()
}

#[test]
fn display_format() {
    let d = one(&with_tail(&["[tailscale]", "sockett = \"/x\""]));
    assert_eq!(
        d.to_string(),
        "t.toml:2:1: tailscale.sockett: unknown key \"sockett\" in [tailscale]\n  help: did you mean \"socket\"? valid keys in [tailscale]: socket, magic_dns_suffix, manage_services, api"
    );
}

#[test]
fn unknown_keys_everywhere() {
    let src = file(&[
        "bogus = 1",                                                                    // 1
        "[listen]",                                                                     // 2
        "https = [\"0.0.0.0:443\"]",                                                    // 3
        "proxy = [\"127.0.0.1:8443\"]",                                                 // 4
        "[timeouts]",                                                                   // 5
        "idle_timeout = \"5m\"",                                                        // 6
        "[services.a]",                                                                 // 7
        "upstream = \"http://127.0.0.1:1\"",                                            // 8
        "upstream_hots = \"x\"",                                                        // 9
        "[services.b]",                                                                 // 10
        "routes = [{ path = \"/\", upstream = \"http://127.0.0.1:2\", strip = true }]", // 11
        "[service.c]",                                                                  // 12
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 6, "{}", Diagnostics(d.clone()));
    let top = expect(&d, "bogus", 1, "unknown key \"bogus\" at the top level");
    assert!(top.help.as_deref().is_some_and(|h| {
        h.contains("tailscale, listen, cache, timeouts, limits, log, admin, defaults, domains, services")
    }));
    let proxy = expect(&d, "listen.proxy", 4, "unknown key \"proxy\" in [listen]");
    // "proxy" starts two keys now, so no single guess (as for "up" in checks.rs).
    assert_eq!(
        proxy.help.as_deref(),
        Some(
            "valid keys in [listen]: https, proxy_protocol, redirect_http, proxy_protocol_from, trusted_proxies, client_ip_headers"
        )
    );
    expect(&d, "timeouts.idle_timeout", 6, "unknown key");
    let hots = expect(&d, "services.a.upstream_hots", 9, "unknown key");
    assert!(hots.help.as_deref().is_some_and(|h| h.starts_with("did you mean \"upstream_host\"?")), "{hots}");
    let strip = expect(&d, "services.b.routes[0].strip", 11, "unknown key \"strip\" in services.b.routes[0]");
    assert_eq!(strip.column, 58);
    assert!(strip.help.as_deref().is_some_and(|h| h.contains("did you mean \"strip_prefix\"?")), "{strip}");
    let service = expect(&d, "service", 12, "unknown key \"service\" at the top level");
    assert!(service.help.as_deref().is_some_and(|h| h.starts_with("did you mean \"services\"?")));
}

#[test]
fn not_implemented_gateway_keys_are_explained() {
    let d = one(&with_tail(&["[services.auth]", "upstream = \"http://127.0.0.1:9091\"", "funnel = true"]));
    assert_eq!((d.key_path.as_str(), d.line), ("services.auth.funnel", 3));
    assert!(d.message.contains("does not implement funnel"), "{d}");
    assert!(d.help.as_deref().is_some_and(|h| h.contains("has no --service") && h.contains("your own domain")), "{d}");
    let d = one(&with_tail(&["[services.nas]", "upstream = \"https://127.0.0.1:5001\"", "insecure_tls = true"]));
    assert_eq!((d.key_path.as_str(), d.line), ("services.nas.insecure_tls", 3));
    assert!(d.help.as_deref().is_some_and(|h| h.contains("insecure_skip_verify = true")), "{d}");
}

#[test]
fn wrong_types() {
    let src = file(&[
        "[tailscale]",                       // 1
        "socket = 5",                        // 2
        "manage_services = \"true\"",        // 3
        "[listen]",                          // 4
        "https = \"0.0.0.0:443\"",           // 5
        "proxy_protocol = [8443]",           // 6
        "[cache]",                           // 7
        "dir = []",                          // 8
        "[limits]",                          // 9
        "max_connections = \"many\"",        // 10
        "[log]",                             // 11
        "format = 1",                        // 12
        "[services]",                        // 13
        "a = \"http://127.0.0.1:1\"",        // 14
        "[services.b]",                      // 15
        "upstream = \"http://127.0.0.1:1\"", // 16
        "routes = \"/\"",                    // 17
    ]);
    let d = errs(&src);
    expect(&d, "tailscale.socket", 2, "expected a string, found the integer 5");
    let m = expect(&d, "tailscale.manage_services", 3, "expected a boolean");
    assert_eq!(m.help.as_deref(), Some("remove the quotes: manage_services = true"));
    let h = expect(&d, "listen.https", 5, "expected an array of socket addresses");
    assert_eq!(h.column, 9);
    assert_eq!(h.help.as_deref(), Some("wrap it in brackets: https = [\"0.0.0.0:443\"]"));
    expect(&d, "listen.proxy_protocol[0]", 6, "expected a socket address string, found the integer 8443");
    expect(&d, "cache.dir", 8, "expected a string, found an array");
    expect(&d, "limits.max_connections", 10, "expected an integer");
    expect(&d, "log.format", 12, "expected a string");
    expect(&d, "services.a", 14, "expected a service table, found the string");
    expect(&d, "services.b.routes", 17, "expected an array of routes");
    // "both upstream and routes" is reported too (on the routes key).
    expect(&d, "services.b", 17, "has both upstream and routes");
}

#[test]
fn bad_socket_addresses() {
    let src = with_tail(&[
        "[listen]",
        "proxy_protocol = [\"localhost:8443\", \":8443\", \"127.0.0.1\", \"::1:443\"]",
        "redirect_http = [\"0.0.0.0:http\"]",
    ]);
    // OK_TAIL repeats [listen]: that is a TOML syntax error, so build this one by hand.
    assert!(parse(&src, "t.toml").is_err());
    let src = file(&[
        "[listen]",
        "proxy_protocol = [\"localhost:8443\", \":8443\", \"127.0.0.1\", \"::1:443\"]",
        "redirect_http = [\"0.0.0.0:http\"]",
        "https = [\"0.0.0.0:443\"]",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 5, "{}", Diagnostics(d.clone()));
    let a = expect(&d, "listen.proxy_protocol[0]", 2, "invalid socket address \"localhost:8443\"");
    assert!(a.help.as_deref().is_some_and(|h| h.contains("host names are not resolved")));
    let b = expect(&d, "listen.proxy_protocol[1]", 2, "invalid socket address \":8443\"");
    assert!(b.help.as_deref().is_some_and(|h| h.contains("\"0.0.0.0:8443\"")));
    let c = expect(&d, "listen.proxy_protocol[2]", 2, "\"127.0.0.1\"");
    assert!(c.help.as_deref().is_some_and(|h| h.contains("add a port")));
    expect(&d, "listen.proxy_protocol[3]", 2, "\"::1:443\"");
    expect(&d, "listen.redirect_http[0]", 3, "\"0.0.0.0:http\"");
}

#[test]
fn no_tls_listener() {
    let d = one(&file(&[
        "[listen]",
        "https = []",
        "redirect_http = [\"0.0.0.0:80\"]",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]));
    assert_eq!((d.key_path.as_str(), d.line, d.column), ("listen", 1, 2));
    assert!(d.message.contains("no TLS listener configured"), "{d}");
    assert!(d.help.as_deref().is_some_and(|h| h.contains("https = [\"0.0.0.0:443\"]")));

    let d = one("[services.ok]\nupstream = \"http://127.0.0.1:1\"\n");
    assert_eq!((d.key_path.as_str(), d.line, d.column), ("listen", 0, 0));
    assert!(d.to_string().starts_with("t.toml: listen: no TLS listener configured"), "{d}");
}

#[test]
fn overlapping_listeners() {
    let src = file(&[
        "[listen]",                                                    // 1
        "https = [\"0.0.0.0:443\", \"[::]:443\", \"100.64.0.1:443\"]", // 2
        "proxy_protocol = [\"127.0.0.1:8443\", \"[::1]:443\"]",        // 3
        "redirect_http = [\"127.0.0.1:8443\", \"0.0.0.0:80\"]",        // 4
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 3, "{}", Diagnostics(d.clone()));
    let w4 = expect(&d, "listen.https[2]", 2, "listener 100.64.0.1:443 overlaps 0.0.0.0:443 (listen.https[0], line 2)");
    assert!(w4.message.contains("wildcard 0.0.0.0:443"));
    expect(&d, "listen.proxy_protocol[1]", 3, "listener [::1]:443 overlaps [::]:443 (listen.https[1], line 2)");
    expect(
        &d,
        "listen.redirect_http[0]",
        4,
        "listener 127.0.0.1:8443 is configured twice (also at listen.proxy_protocol[0], line 3)",
    );

    // The wildcard written after the specific address is reported too.
    let d = one(&file(&[
        "[listen]",
        "https = [\"127.0.0.1:443\"]",
        "proxy_protocol = [\"0.0.0.0:443\"]",
        "proxy_protocol_from = [\"10.0.0.0/8\"]",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]));
    assert_eq!((d.key_path.as_str(), d.line), ("listen.proxy_protocol[0]", 3));
    assert!(d.message.contains("overlaps 127.0.0.1:443 (listen.https[0], line 2)"), "{d}");
}

#[test]
fn durations_and_sizes() {
    let src = file(&[
        "[timeouts]",                    // 1
        "proxy_header = \"5\"",          // 2
        "tls_handshake = \"0s\"",        // 3
        "idle = 300",                    // 4
        "cert_request = \"10 minutes\"", // 5
        "[limits]",                      // 6
        "max_header_bytes = 512",        // 7
        "max_connections = 0",           // 8
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 6, "{}", Diagnostics(d.clone()));
    expect(&d, "timeouts.proxy_header", 2, "duration \"5\" has no unit");
    expect(&d, "timeouts.tls_handshake", 3, "must be greater than zero");
    let idle = expect(&d, "timeouts.idle", 4, "expected a duration string");
    assert!(idle.help.as_deref().is_some_and(|h| h.contains("idle = \"300s\"")), "{idle}");
    expect(&d, "timeouts.cert_request", 5, "unknown duration unit \"minutes\"");
    expect(&d, "limits.max_header_bytes", 7, "max_header_bytes = 512 is out of range");
    expect(&d, "limits.max_connections", 8, "must be at least 1");

    for (value, needle) in [
        ("\"65MiB\"", "out of range"),
        ("\"1000B\"", "out of range"),
        ("\"5XB\"", "unknown size unit \"XB\""),
        ("-1", "out of range"),
        ("1.5", "expected a size"),
    ] {
        let d = one(&file(&[
            "[limits]",
            &format!("max_header_bytes = {value}"),
            "[listen]",
            "https = [\"0.0.0.0:443\"]",
            "[services.ok]",
            "upstream = \"http://127.0.0.1:1\"",
        ]));
        assert_eq!((d.key_path.as_str(), d.line, d.column), ("limits.max_header_bytes", 2, 20), "{value}");
        assert!(d.message.contains(needle), "{value}: {d}");
    }
}

#[test]
fn service_names() {
    let long = format!("[services.{}]", "a".repeat(64));
    let src = file(&[
        "[listen]",                          // 1
        "https = [\"0.0.0.0:443\"]",         // 2
        "[services.Grafana]",                // 3
        "upstream = \"http://127.0.0.1:1\"", // 4
        "[services.my_svc]",                 // 5
        "upstream = \"http://127.0.0.1:1\"", // 6
        "[services.-x]",                     // 7
        "upstream = \"http://127.0.0.1:1\"", // 8
        &long,                               // 9
        "upstream = \"http://127.0.0.1:1\"", // 10
        "[services.\"a.b\"]",                // 11
        "upstream = \"http://127.0.0.1:1\"", // 12
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 5, "{}", Diagnostics(d.clone()));
    let g = expect(&d, "services.Grafana", 3, "service name \"Grafana\" must be lowercase");
    assert_eq!(g.column, 11);
    assert_eq!(g.help.as_deref(), Some("rename it to [services.grafana]"));
    let m = expect(&d, "services.my_svc", 5, "not a valid DNS label");
    assert!(m.help.as_deref().is_some_and(|h| h.contains("[services.my-svc]")), "{m}");
    expect(&d, "services.-x", 7, "starts or ends with '-'");
    expect(&d, &format!("services.{}", "a".repeat(64)), 9, "64 characters long");
    expect(&d, "services.\"a.b\"", 11, "contains '.'");
}

#[test]
fn upstream_and_routes_presence() {
    let src = file(&[
        "[listen]",                                                       // 1
        "https = [\"0.0.0.0:443\"]",                                      // 2
        "[services.both]",                                                // 3
        "upstream = \"http://127.0.0.1:1\"",                              // 4
        "routes = [{ path = \"/\", upstream = \"http://127.0.0.1:2\" }]", // 5
        "[services.neither]",                                             // 6
        "fqdn = \"x.example.com\"",                                       // 7
        "[services.empty]",                                               // 8
        "routes = []",                                                    // 9
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 3, "{}", Diagnostics(d.clone()));
    expect(&d, "services.both", 5, "has both upstream and routes");
    let n = expect(&d, "services.neither", 6, "has neither upstream nor routes");
    let help = n.help.unwrap_or_default();
    assert!(
        help.contains("upstream = \"http://127.0.0.1:3000\"") && help.contains("routes = [{ path = \"/\""),
        "{help}"
    );
    expect(&d, "services.empty.routes", 9, "routes is empty");
}

#[test]
fn upstream_urls() {
    let cases: &[(&str, &str)] = &[
        ("ftp://127.0.0.1:3000", "unsupported scheme \"ftp\"; only http:// and https:// are supported"),
        ("127.0.0.1:3000", "upstream \"127.0.0.1:3000\" has no scheme"),
        ("http://127.0.0.1:3000/grafana", "has a path \"/grafana\""),
        ("http://127.0.0.1:3000/?x=1", "has a query string"),
        ("http://admin:pw@127.0.0.1:3000", "contains user info"),
        ("http://127.0.0.1:99999", "invalid port \"99999\""),
        ("http:// spaces:1", "\"http:// spaces:1\""),
        ("unix:///run/x.sock", "\"unix:///run/x.sock\""),
    ];
    for (url, needle) in cases {
        let d = one(&file(&[
            "[listen]",
            "https = [\"0.0.0.0:443\"]",
            "[services.media]",
            &format!(
                "routes = [{{ path = \"/\", upstream = \"http://127.0.0.1:1\" }}, {{ path = \"/x\", upstream = {url:?} }}]"
            ),
        ]));
        assert_eq!((d.key_path.as_str(), d.line), ("services.media.routes[1].upstream", 4), "{url}");
        assert!(d.message.contains(needle), "{url}: {d}");
        assert!(d.help.is_some(), "{url}: every upstream error explains the fix");
    }
    // 'http://host' without a port is fine (port 80); 'upstream = 5' is a type error.
    let d = one(&with_tail(&["[services.a]", "upstream = 5"]));
    assert_eq!((d.key_path.as_str(), d.line), ("services.a.upstream", 2));
    assert!(d.message.contains("expected a string"));
}

#[test]
fn route_paths() {
    let src = file(&[
        "[listen]",                                                                       // 1
        "https = [\"0.0.0.0:443\"]",                                                      // 2
        "[services.media]",                                                               // 3
        "routes = [",                                                                     // 4
        "  { path = \"/sonarr\", upstream = \"http://127.0.0.1:1\" },",                   // 5
        "  { path = \"radarr\", upstream = \"http://127.0.0.1:2\" },",                    // 6
        "  { path = \"/a?b\", upstream = \"http://127.0.0.1:3\" },",                      // 7
        "  { path = \"/a#b\", upstream = \"http://127.0.0.1:3\" },",                      // 8
        "  { path = \"/a//b\", upstream = \"http://127.0.0.1:3\" },",                     // 9
        "  { path = \"/sonarr/\", upstream = \"http://127.0.0.1:4\" },",                  // 10
        "  { upstream = \"http://127.0.0.1:5\" },",                                       // 11
        "  { path = \"/n\" },",                                                           // 12
        "  \"/x\",",                                                                      // 13
        "  { path = \"/\", upstream = \"http://127.0.0.1:6\", strip_prefix = \"yes\" },", // 14
        "]",
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 9, "{}", Diagnostics(d.clone()));
    let r = expect(&d, "services.media.routes[1].path", 6, "route path \"radarr\" must start with '/'");
    assert_eq!(r.help.as_deref(), Some("write path = \"/radarr\""));
    expect(&d, "services.media.routes[2].path", 7, "contains '?'");
    expect(&d, "services.media.routes[3].path", 8, "contains '#'");
    expect(&d, "services.media.routes[4].path", 9, "\"//\"");
    let dup = expect(
        &d,
        "services.media.routes[5].path",
        10,
        "route can never match: path \"/sonarr/\" is the same as routes[0] (line 5)",
    );
    assert_eq!(dup.column, 12);
    let missing_path = d.iter().find(|x| x.key_path == "services.media.routes[6]").expect("missing path");
    assert_eq!((missing_path.line, missing_path.column), (11, 3));
    assert!(missing_path.message.contains("route has no path"));
    expect(&d, "services.media.routes[7]", 12, "route has no upstream");
    expect(&d, "services.media.routes[8]", 13, "expected a route table, found the string \"/x\"");
    expect(&d, "services.media.routes[9].strip_prefix", 14, "expected a boolean");
}

#[test]
fn duplicate_routes_in_array_of_tables() {
    let d = one(&file(&[
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "[[services.media.routes]]",
        "path = \"/app\"",
        "upstream = \"http://127.0.0.1:1\"",
        "[[services.media.routes]]",
        "path = \"/app/\"",
        "upstream = \"http://127.0.0.1:2\"",
    ]));
    assert_eq!((d.key_path.as_str(), d.line), ("services.media.routes[1].path", 7));
    assert!(d.message.contains("same as routes[0] (line 4)"), "{d}");
}

#[test]
fn fqdn_overrides() {
    let src = file(&[
        "[listen]",                          // 1
        "https = [\"0.0.0.0:443\"]",         // 2
        "[services.a]",                      // 3
        "upstream = \"http://127.0.0.1:1\"", // 4
        "fqdn = \"single\"",                 // 5
        "[services.b]",                      // 6
        "upstream = \"http://127.0.0.1:1\"", // 7
        "fqdn = \"bad_label.example.com\"",  // 8
        "[services.c]",                      // 9
        "upstream = \"http://127.0.0.1:1\"", // 10
        "fqdn = \"Web.Example.com.\"",       // 11
        "[services.d]",                      // 12
        "upstream = \"http://127.0.0.1:1\"", // 13
        "fqdn = \"web.example.com\"",        // 14
        "upstream_host = \"http://x/\"",     // 15
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 4, "{}", Diagnostics(d.clone()));
    expect(&d, "services.a.fqdn", 5, "must have at least 2 dot-separated labels");
    expect(&d, "services.b.fqdn", 8, "label \"bad_label\"");
    expect(&d, "services.d.fqdn", 14, "fqdn \"web.example.com\" is already used by service \"c\" (line 9)");
    expect(&d, "services.d.upstream_host", 15, "upstream_host \"http://x/\" is not a host name");
}

#[test]
fn services_missing_or_empty() {
    let d = one("[listen]\nhttps = [\"0.0.0.0:443\"]\n");
    assert_eq!((d.key_path.as_str(), d.line), ("services", 0));
    assert!(d.message.contains("no services configured"));
    assert!(d.help.as_deref().is_some_and(|h| h.contains("[services.grafana]")));
    let d = one("[listen]\nhttps = [\"0.0.0.0:443\"]\n[services]\n");
    assert_eq!((d.key_path.as_str(), d.line), ("services", 3));
}

#[test]
fn log_settings() {
    let src = with_tail(&["[log]", "format = \"jsno\"", "level = \"  \""]);
    let d = errs(&src);
    assert_eq!(d.len(), 2, "{}", Diagnostics(d.clone()));
    let f = expect(&d, "log.format", 2, "unknown log format \"jsno\"");
    assert_eq!(f.help.as_deref(), Some("did you mean \"json\"? use one of auto, human, json, logfmt"));
    expect(&d, "log.level", 3, "log level is empty");
}

#[test]
fn tailscale_settings() {
    let d =
        one(&with_tail(&["[tailscale]", "socket = \"\"", "magic_dns_suffix = \"ts\""]).replace("socket = \"\"\n", ""));
    assert_eq!((d.key_path.as_str(), d.line), ("tailscale.magic_dns_suffix", 2));
    let d = one(&with_tail(&["[tailscale]", "socket = \"\""]));
    assert_eq!((d.key_path.as_str(), d.line), ("tailscale.socket", 2));
    assert!(d.message.contains("empty"));
}

#[test]
fn three_problems_listed_together() {
    let src = file(&[
        "[listen]",                             // 1
        "https = [\"0.0.0.0:443\"]",            // 2
        "[timeouts]",                           // 3
        "idle = \"5 minutes\"",                 // 4
        "[services.grafana]",                   // 5
        "upstream = \"ftp://127.0.0.1:3000\"",  // 6
        "[services.Media]",                     // 7
        "upstream = \"http://127.0.0.1:8080\"", // 8
    ]);
    let err = parse(&src, "snirouter.toml").expect_err("three problems");
    assert_eq!(err.len(), 3);
    let text = err.to_string();
    let heads: Vec<&str> = text.lines().filter(|l| !l.starts_with("  help: ")).collect();
    assert_eq!(heads.len(), 3, "{text}");
    assert!(heads[0].starts_with("snirouter.toml:4:8: timeouts.idle: unknown duration unit \"minutes\""), "{text}");
    assert!(
        heads[1].starts_with(
            "snirouter.toml:6:12: services.grafana.upstream: upstream \"ftp://127.0.0.1:3000\" has unsupported scheme"
        ),
        "{text}"
    );
    assert!(
        heads[2].starts_with("snirouter.toml:7:11: services.Media: service name \"Media\" must be lowercase"),
        "{text}"
    );
    // Every diagnostic carries a fix.
    assert_eq!(text.lines().filter(|l| l.starts_with("  help: ")).count(), 3, "{text}");
    // Diagnostics implements std::error::Error.
    let boxed: Box<dyn std::error::Error> = Box::new(err);
    assert!(boxed.to_string().contains("timeouts.idle"));
}

#[test]
fn syntax_error_position() {
    let d = one("[listen]\nhttps = [\"0.0.0.0:443\"\n[services.a]\nupstream = \"http://127.0.0.1:1\"\n");
    assert_eq!((d.line, d.column), (3, 1));
    assert_eq!(d.key_path, "");
    assert!(d.message.starts_with("TOML syntax error:"), "{d}");

    let d = one("[listen]\nhttps = [\"0.0.0.0:443\"]\nhttps = []\n");
    assert_eq!((d.line, d.column), (3, 1));
    assert!(d.message.contains("duplicate key"), "{d}");

    let d = one("a = \"unterminated\n");
    assert_eq!(d.line, 1);
    assert!(d.to_string().starts_with("t.toml:1:"), "{d}");
}

#[test]
fn check_fqdns_collisions() {
    let src = file(&[
        "[listen]",                               // 1
        "https = [\"0.0.0.0:443\"]",              // 2
        "[services.grafana]",                     // 3
        "upstream = \"http://127.0.0.1:3000\"",   // 4
        "[services.metrics]",                     // 5
        "upstream = \"http://127.0.0.1:3001\"",   // 6
        "fqdn = \"grafana.tailnet-1234.ts.net\"", // 7
    ]);
    let c = parse(&src, "t.toml").expect("valid without a suffix");
    assert!(c.check_fqdns("other.ts.net").is_ok());
    let err = c.check_fqdns("Tailnet-1234.ts.net.").expect_err("collision");
    assert_eq!(err.len(), 1);
    let d = &err.0[0];
    assert_eq!((d.origin.as_str(), d.key_path.as_str(), d.line, d.column), ("t.toml", "services.metrics", 5, 1));
    assert_eq!(
        d.message,
        "service \"metrics\" and service \"grafana\" (line 3) both answer to \"grafana.tailnet-1234.ts.net\""
    );

    // With the suffix in the file, parse runs the same check.
    let with_suffix = format!("[tailscale]\nmagic_dns_suffix = \"tailnet-1234.ts.net\"\n{src}");
    let d = one(&with_suffix);
    assert_eq!((d.key_path.as_str(), d.line), ("services.metrics", 7));
    assert!(d.message.contains("(line 5) both answer to"), "{d}");

    // A derived name that is too long for DNS is reported too.
    let long = format!("{}.ts.net", vec!["x".repeat(60); 4].join("."));
    let err = c.check_fqdns(&long).expect_err("too long");
    assert!(err.0[0].message.contains("not a valid DNS name"), "{}", err);
}

#[test]
fn proxy_headers_are_trusted_by_peer() {
    // A PROXY listener others can reach needs the list of peers that may send headers.
    let d = one(&file(&[
        "[listen]",                                             // 1
        "proxy_protocol = [\"127.0.0.1:8443\", \"[::]:8443\"]", // 2
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]));
    assert_eq!((d.key_path.as_str(), d.line), ("listen.proxy_protocol[1]", 2), "{d}");
    assert!(d.message.contains("[::]:8443 is reachable from other hosts"), "{d}");
    assert!(d.help.as_deref().is_some_and(|h| h.contains("proxy_protocol_from")), "{d}");

    let d = errs(&file(&[
        "[listen]",                                                      // 1
        "proxy_protocol = [\"0.0.0.0:8443\"]",                           // 2
        "proxy_protocol_from = [\"10.0.0.1/8\", \"bogus\", 5, \"::1\"]", // 3
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]));
    assert_eq!(d.len(), 3, "{}", Diagnostics(d.clone()));
    let host_bits = expect(&d, "listen.proxy_protocol_from[0]", 3, "host bits set after the /8 prefix");
    assert_eq!(host_bits.help.as_deref(), Some("write the network address: \"10.0.0.0/8\""));
    expect(&d, "listen.proxy_protocol_from[1]", 3, "invalid address or CIDR range \"bogus\"");
    expect(&d, "listen.proxy_protocol_from[2]", 3, "expected an address string");

    let d = one(&file(&[
        "[listen]",
        "proxy_protocol = [\"127.0.0.1:8443\"]",
        "proxy_protocol_from = []",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]));
    assert_eq!((d.key_path.as_str(), d.line), ("listen.proxy_protocol_from", 3), "{d}");
    assert!(d.message.contains("trusts no peer"), "{d}");
}

#[test]
fn allow_entries_are_checked_where_they_are_written() {
    let src = with_tail(&[
        "[services.grafana]",
        "upstream = \"http://127.0.0.1:3000\"",
        "allow = [\"alice@example.com\", \"group:admins\", 7, \"tag:\"]",
        "accept_app_caps = [\"cap:example.com/cap/grafana\"]",
        "[services.wiki]",
        "upstream = \"http://127.0.0.1:3001\"",
        "allow = []",
        "[services.vault]",
        "passthrough = \"127.0.0.1:8200\"",
        "allow = [\"*\"]",
    ]);
    let d = errs(&src);
    let g = expect(&d, "services.grafana.allow[1]", 3, "groups cannot be checked");
    assert!(g.help.as_deref().is_some_and(|h| h.contains("cap:example.com/cap/grafana")), "{g}");
    expect(&d, "services.grafana.allow[2]", 3, "expected a string, found");
    expect(&d, "services.grafana.allow[3]", 3, "not a valid tag name");
    let c = expect(&d, "services.grafana.accept_app_caps[0]", 4, "without \"cap:\"");
    assert_eq!(c.help.as_deref(), Some("write \"example.com/cap/grafana\""));
    expect(&d, "services.wiki.allow", 7, "admits nobody");
    expect(&d, "services.vault.allow", 10, "passthrough");
    // A good list parses into principals, printed back as written.
    let ok = parse(
        &with_tail(&[
            "[services.grafana]",
            "upstream = \"http://127.0.0.1:3000\"",
            "allow = [\"Alice@Example.com\", \"tag:monitoring\", \"cap:example.com/cap/grafana\", \"local\"]",
            "accept_app_caps = [\"example.com/cap/grafana\"]",
        ]),
        "t.toml",
    )
    .expect("valid");
    let allow: Vec<String> = ok.services[0].allow.iter().flatten().map(ToString::to_string).collect();
    assert_eq!(allow, ["alice@example.com", "tag:monitoring", "cap:example.com/cap/grafana", "local"]);
    assert_eq!(ok.services[0].accept_app_caps, ["example.com/cap/grafana"]);
}

#[test]
fn domains_and_names_are_checked_where_they_are_written() {
    let src = file(&[
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "[domains.\"example.com\"]",
        "cert = \"/etc/c.pem\"",
        "[domains.\"other.org\"]",
        "cert_dir = \"/a\"",
        "key = \"/b\"",
        "[domains.\"x.tail-1.ts.net\"]",
        "cert_dir = \"/c\"",
        "[domains.\"bare.net\"]",
        "[services.grafana]",
        "upstream = \"http://127.0.0.1:3000\"",
        "names = [\"grafana.example.com\", \"grafana.nowhere.io\", \"grafana.tail-1.ts.net\"]",
        "[services.vault]",
        "passthrough = \"127.0.0.1:8200\"",
        "names = [\"vault.example.com\"]",
    ]);
    let d = errs(&src);
    let e = expect(&d, "domains.\"example.com\"", 3, "has cert but no key");
    assert!(e.help.as_deref().is_some_and(|h| h.contains("cert_dir")), "{e}");
    expect(&d, "domains.\"other.org\"", 5, "has cert_dir and cert/key");
    expect(&d, "domains.\"x.tail-1.ts.net\"", 8, "is a tailnet name");
    expect(&d, "domains.\"bare.net\"", 10, "has no certificate files");
    let n = expect(&d, "services.grafana.names[1]", 13, "no [domains] entry covers \"grafana.nowhere.io\"");
    assert!(n.help.as_deref().is_some_and(|h| h.contains("[domains.\"nowhere.io\"]")), "{n}");
    expect(&d, "services.grafana.names[2]", 13, "is a tailnet name");
    expect(&d, "services.vault.names", 16, "passthrough");
    // example.com's table is incomplete, so names under it are uncovered too.
    expect(&d, "services.grafana.names[0]", 13, "no [domains] entry covers");
}

#[test]
fn header_rules_and_page_statuses_are_checked() {
    let src = file(&[
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "[defaults]",
        "request_headers = { remove = [\"Host\"], set = { \"X-A\" = \"line\\r\\nbreak\" } }",
        "error_pages_upstream = [418]",
        "[services.grafana]",
        "upstream = \"http://127.0.0.1:3000\"",
        "forward_auth = { url = \"http://127.0.0.1:9091/api/verify\", copy_headers = [\"Remote-User\"] }",
        "request_headers = { set = { \"Remote-User\" = \"admin\" } }",
        "response_headers = { add = [\"x\"], remove = [\"Tailscale-User-Login\"] }",
    ]);
    let d = errs(&src);
    expect(&d, "defaults.request_headers.remove[0]", 4, "set by snirouter itself");
    expect(&d, "defaults.request_headers.set.X-A", 4, "characters a header cannot carry");
    expect(&d, "defaults.error_pages_upstream[0]", 5, "not a status with an error page");
    let e = expect(&d, "services.grafana.request_headers", 9, "which forward_auth's copy_headers decide");
    assert!(e.help.as_deref().is_some_and(|h| h.contains("every client in as that user")), "{e}");
    expect(&d, "services.grafana.response_headers.add", 10, "unknown key \"add\"");
    expect(&d, "services.grafana.response_headers.remove[0]", 10, "set by snirouter itself");
}

#[test]
fn trusted_proxies_client_ip_headers_access_log_and_deny_say_what_is_wrong() {
    let src = file(&[
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "trusted_proxies = [\"127.0.0.1/32\", \"0.0.0.0/0\", \"10.0.0.1/8\", \"nonsense\"]",
        "client_ip_headers = [\"CF-Connecting-IP\", \"X Forwarded\"]",
        "[log]",
        "access_format = \"clf\"",
        "access_file = \"access.log\"",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
        "allow = [\"192.168.1.300/24\"]",
        "deny = []",
    ]);
    let d = errs(&src);
    let everyone = expect(&d, "listen.trusted_proxies[1]", 3, "trusts every address");
    assert!(everyone.help.as_deref().is_some_and(|h| h.contains("127.0.0.1/32")), "{everyone:?}");
    expect(&d, "listen.trusted_proxies[2]", 3, "host bits set");
    expect(&d, "listen.trusted_proxies[3]", 3, "invalid address or CIDR range");
    expect(&d, "listen.client_ip_headers[1]", 4, "cannot be a header name");
    expect(&d, "log.access_format", 6, "unknown access log format");
    expect(&d, "log.access_file", 7, "absolute path");
    expect(&d, "services.ok.allow[0]", 10, "invalid address or CIDR range");
    expect(&d, "services.ok.deny", 11, "refuses nobody");
    // Headers without anyone to believe them.
    let alone = one(&file(&[
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "client_ip_headers = [\"CF-Connecting-IP\"]",
        "[services.ok]",
        "upstream = \"http://127.0.0.1:1\"",
    ]));
    assert!(alone.message.contains("none are configured") && alone.line == 3, "{alone:?}");
}

#[test]
fn a_service_defined_twice_names_the_service_and_its_first_line() {
    let src = "[listen]\nhttps = [\"127.0.0.1:8443\"]\n\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n\n[services.jellyfin]\nupstream = \"http://127.0.0.1:8096\"\n\n[services.grafana]\nupstream = \"http://127.0.0.1:3001\"\n";
    let err = snirouter_config::parse(src, "t.toml").expect_err("duplicate").to_string();
    assert!(
        err.starts_with("t.toml:10:")
            && err.contains("service \"grafana\" is defined twice: [services.grafana] was already opened at line 4"),
        "{err}"
    );
    assert!(err.contains("merge the two [services.grafana] tables"), "{err}");
}
