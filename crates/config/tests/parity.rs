//! The Caddy-parity keys: https upstreams, forward_auth with [defaults] and bypass_auth,
//! CORS, error pages, body limits, Tailscale identity and TLS passthrough — valid forms
//! and every error with key path and line.

use snirouter_config::{Diagnostic, Diagnostics, Scheme, parse};

fn file(lines: &[&str]) -> String {
    lines.join("\n")
}

fn errs(src: &str) -> Vec<Diagnostic> {
    match parse(src, "t.toml") {
        Ok(c) => panic!("expected errors, got a valid config: {c:#?}\n--- source ---\n{src}"),
        Err(d) => d.0,
    }
}

#[track_caller]
fn expect(diags: &[Diagnostic], key_path: &str, line: usize, needle: &str) -> Diagnostic {
    let found = diags.iter().find(|d| d.key_path == key_path);
    let Some(d) = found else { panic!("no diagnostic at {key_path}; got:\n{}", Diagnostics(diags.to_vec())) };
    assert_eq!(d.line, line, "line of {key_path}: {d}");
    assert!(d.message.contains(needle), "message of {key_path} lacks {needle:?}: {d}");
    assert!(d.help.is_some(), "every diagnostic carries a fix: {d}");
    d.clone()
}

#[test]
fn gateway_options_parse_and_defaults_apply() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let pages = tmp.path();
    let src = format!(
        r#"
[listen]
https = ["0.0.0.0:443"]
redirect_http = ["0.0.0.0:80"]

[defaults]
forward_auth = {{ url = "http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/", copy_headers = ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"] }}
error_pages = "{pages}"

[services.grafana]
upstream = "http://127.0.0.1:3000"
tailscale_identity = true
bypass_auth = true

[services.nas]
upstream = "https://127.0.0.1:5001"
insecure_skip_verify = true
cors = true
cors_origins = ["https://App.Example.com/"]
max_body_bytes = "10MB"

[services.immich]
upstream = "http://127.0.0.1:2283"
max_body_bytes = 5000
[services.immich.forward_auth]
url = "https://auth.example.com/api/verify"

[services.jellyfin]
passthrough = "127.0.0.1:8920"
bypass_auth = true
"#,
        pages = pages.display()
    );
    let c = parse(&src, "t.toml").unwrap_or_else(|d| panic!("{d}"));
    let auth = c.defaults.forward_auth.as_ref().expect("defaults.forward_auth");
    assert_eq!(auth.url.to_string(), "http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/");
    assert_eq!(auth.copy_headers, ["Remote-User", "Remote-Groups", "Remote-Name", "Remote-Email"]);

    let grafana = &c.services[0];
    assert!(grafana.bypass_auth && grafana.forward_auth.is_none() && grafana.tailscale_identity);
    assert_eq!(grafana.error_pages.as_deref(), Some(pages), "inherited from [defaults]");

    let nas = &c.services[1];
    assert_eq!(nas.routes[0].upstream.scheme, Scheme::Https);
    assert_eq!(nas.routes[0].upstream.to_string(), "https://127.0.0.1:5001");
    assert!(nas.insecure_skip_verify);
    assert_eq!(nas.forward_auth.as_ref(), Some(auth), "inherited from [defaults]");
    assert_eq!(nas.cors.as_ref().map(|c| c.origins.clone()), Some(vec!["https://app.example.com".to_owned()]));
    assert!(
        nas.cors.as_ref().is_some_and(|c| c.allows("https://APP.example.com") && !c.allows("https://evil.example"))
    );
    assert_eq!(nas.max_body_bytes, Some(10_000_000));

    let immich = &c.services[2];
    let own = immich.forward_auth.as_ref().expect("own forward_auth");
    assert_eq!(own.url.to_string(), "https://auth.example.com/api/verify");
    assert!(own.copy_headers.is_empty());
    assert_eq!(immich.max_body_bytes, Some(5000));

    let jellyfin = &c.services[3];
    let p = jellyfin.passthrough.as_ref().expect("passthrough");
    assert_eq!((p.host.as_str(), p.port, p.to_string().as_str()), ("127.0.0.1", 8920, "127.0.0.1:8920"));
    assert!(jellyfin.routes.is_empty() && !jellyfin.needs_certificate());
    assert!(jellyfin.forward_auth.is_none() && jellyfin.error_pages.is_none());
    // Serializable for `status --json` and friends.
    let json = serde_json::to_string(&c).expect("serialize");
    assert!(json.contains("\"url\":\"http://127.0.0.1:9091/api/verify?rd=https://auth.example.com/\""), "{json}");
}

#[test]
fn forward_auth_errors() {
    let src = file(&[
        "[listen]",                                 // 1
        "https = [\"0.0.0.0:443\"]",                // 2
        "[defaults]",                               // 3
        "forward_auth = \"http://127.0.0.1:9091\"", // 4
        "[services.a]",                             // 5
        "upstream = \"http://127.0.0.1:1\"",        // 6
        "forward_auth = { url = \"ftp://x/verify\", copy_headers = [\"Remote-User\", \"remote-user\", \"Host\", \"bad header\", 5] }", // 7
        "[services.b]",                                       // 8
        "upstream = \"http://127.0.0.1:2\"",                  // 9
        "forward_auth = { copy_headers = [] , uri = \"x\" }", // 10
        "bypass_auth = true",                                 // 11
        "[services.c]",                                       // 12
        "upstream = \"http://127.0.0.1:3\"",                  // 13
        "forward_auth = { url = \"http://u:p@auth:9091/\" }", // 14
    ]);
    let d = errs(&src);
    expect(&d, "defaults.forward_auth", 4, "expected a table with url and copy_headers");
    expect(&d, "services.a.forward_auth.url", 7, "unsupported scheme \"ftp\"");
    expect(&d, "services.a.forward_auth.copy_headers[1]", 7, "lists \"remote-user\" twice");
    expect(&d, "services.a.forward_auth.copy_headers[2]", 7, "cannot be copied");
    expect(&d, "services.a.forward_auth.copy_headers[3]", 7, "not a valid header name");
    expect(&d, "services.a.forward_auth.copy_headers[4]", 7, "expected a header name string");
    expect(&d, "services.b.forward_auth", 10, "forward_auth has no url");
    let uri = expect(&d, "services.b.forward_auth.uri", 10, "unknown key \"uri\"");
    assert!(uri.help.as_deref().is_some_and(|h| h.contains("did you mean \"url\"")), "{uri}");
    expect(&d, "services.b.bypass_auth", 11, "sets both forward_auth and bypass_auth");
    expect(&d, "services.c.forward_auth.url", 14, "user info");
}

#[test]
fn cors_body_limit_identity_errors() {
    let src = file(&[
        "[listen]",                                       // 1
        "https = [\"0.0.0.0:443\"]",                      // 2
        "[services.a]",                                   // 3
        "upstream = \"http://127.0.0.1:1\"",              // 4
        "cors = \"yes\"",                                 // 5
        "cors_origins = [\"https://a.example/path\", 7]", // 6
        "max_body_bytes = 0",                             // 7
        "tailscale_identity = 1",                         // 8
        "[services.b]",                                   // 9
        "upstream = \"http://127.0.0.1:2\"",              // 10
        "max_body_bytes = \"ten megs\"",                  // 11
        "insecure_skip_verify = true",                    // 12
    ]);
    let d = errs(&src);
    expect(&d, "services.a.cors", 5, "expected a boolean");
    expect(&d, "services.a.cors_origins", 6, "CORS is off");
    expect(&d, "services.a.cors_origins[0]", 6, "must be scheme://host[:port]");
    expect(&d, "services.a.cors_origins[1]", 6, "expected an origin string");
    expect(&d, "services.a.max_body_bytes", 7, "at least 1 byte");
    expect(&d, "services.a.tailscale_identity", 8, "expected a boolean");
    expect(&d, "services.b.max_body_bytes", 11, "size");
    expect(&d, "services.b.insecure_skip_verify", 12, "has none");
}

/// Parsing is pure: an `error_pages` path must be absolute; whether the directory exists is
/// for `check` and `doctor` on the host (tests/e2e/check_cmd.rs).
#[test]
fn error_pages_must_be_an_absolute_path() {
    let src = file(&[
        "[listen]",                                        // 1
        "https = [\"0.0.0.0:443\"]",                       // 2
        "[defaults]",                                      // 3
        "error_pages = \"/nonexistent/snirouter-errors\"", // 4
        "[services.b]",                                    // 5
        "upstream = \"http://127.0.0.1:2\"",               // 6
        "error_pages = \"errors\"",                        // 7
    ]);
    let d = errs(&src);
    assert_eq!(d.len(), 1, "{d:?}");
    expect(&d, "services.b.error_pages", 7, "must be an absolute path");
}

#[test]
fn passthrough_is_exclusive_and_needs_bypass_under_default_auth() {
    let src = file(&[
        "[listen]",                                                      // 1
        "https = [\"0.0.0.0:443\"]",                                     // 2
        "[defaults]",                                                    // 3
        "forward_auth = { url = \"http://127.0.0.1:9091/api/verify\" }", // 4
        "[services.a]",                                                  // 5
        "passthrough = \"127.0.0.1:8920\"",                              // 6
        "upstream = \"http://127.0.0.1:1\"",                             // 7
        "bypass_auth = true",                                            // 8
        "[services.b]",                                                  // 9
        "passthrough = \"127.0.0.1:8921\"",                              // 10
        "cors = true",                                                   // 11
        "tailscale_identity = true",                                     // 12
        "[services.c]",                                                  // 13
        "passthrough = \"https://127.0.0.1:8922/\"",                     // 14
        "bypass_auth = true",                                            // 15
        "[services.d]",                                                  // 16
        "passthrough = \"127.0.0.1\"",                                   // 17
        "bypass_auth = true",                                            // 18
    ]);
    let d = errs(&src);
    expect(&d, "services.a.passthrough", 6, "has passthrough and upstream");
    let b = expect(&d, "services.b.passthrough", 10, "cannot be protected by [defaults] forward_auth");
    assert!(b.help.as_deref().is_some_and(|h| h.contains("bypass_auth = true")), "{b}");
    expect(&d, "services.b.cors", 11, "no effect on passthrough service");
    expect(&d, "services.b.tailscale_identity", 12, "no effect on passthrough service");
    let c = expect(&d, "services.c.passthrough", 14, "without a scheme");
    assert!(c.help.as_deref().is_some_and(|h| h.contains("\"127.0.0.1:8922\"")), "{c}");
    expect(&d, "services.d.passthrough", 17, "needs a port");
}

#[test]
fn defaults_table_rejects_unknown_keys() {
    let src = file(&[
        "[listen]",
        "https = [\"0.0.0.0:443\"]",
        "[defaults]",
        "forward_auht = { url = \"http://127.0.0.1:9091/\" }",
        "[services.a]",
        "upstream = \"http://127.0.0.1:1\"",
    ]);
    let d = errs(&src);
    let k = expect(&d, "defaults.forward_auht", 4, "unknown key \"forward_auht\" in [defaults]");
    assert!(k.help.as_deref().is_some_and(|h| h.contains("did you mean \"forward_auth\"")), "{k}");
}
