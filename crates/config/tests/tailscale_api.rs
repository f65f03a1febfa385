//! `[tailscale.api]`: the optional control-API credentials for Tailscale Services.

use snirouter_config::{DEFAULT_API_BASE_URL, Diagnostic, Diagnostics, parse};

const TAIL: &str =
    "[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n";

fn errs(src: &str) -> Vec<Diagnostic> {
    match parse(src, "t.toml") {
        Ok(c) => panic!("expected errors, got {c:#?}"),
        Err(d) => d.0,
    }
}

#[track_caller]
fn expect(diags: &[Diagnostic], key_path: &str, line: usize, needle: &str) {
    let Some(d) = diags.iter().find(|d| d.key_path == key_path) else {
        panic!("no diagnostic for {key_path}; got:\n{}", Diagnostics(diags.to_vec()));
    };
    assert_eq!(d.line, line, "line of {key_path}: {d}");
    assert!(d.message.contains(needle) || d.help.as_deref().unwrap_or("").contains(needle), "{key_path}: {d}");
}

#[test]
fn defaults_and_every_key() {
    let src = format!(
        "[tailscale]\nmanage_services = true\n[tailscale.api]\nclient_id_file = \"/run/id\"\nclient_secret_file = \"/run/secret\"\n{TAIL}"
    );
    let c = parse(&src, "t.toml").expect("valid");
    let api = c.tailscale.api.expect("api");
    assert_eq!(api.client_id_file.to_str(), Some("/run/id"));
    assert_eq!(api.client_secret_file.to_str(), Some("/run/secret"));
    assert_eq!(api.tailnet, "-");
    assert_eq!(api.base_url, DEFAULT_API_BASE_URL);
    assert!(api.tags.is_empty());

    let src = format!(
        "[tailscale.api]\nclient_id_file = \"/i\"\nclient_secret_file = \"/s\"\ntailnet = \"example.com\"\nbase_url = \"http://127.0.0.1:8080/\"\ntags = [\"tag:storage-svc\", \"tag:media\"]\n{TAIL}"
    );
    let api = parse(&src, "t.toml").expect("valid").tailscale.api.expect("api");
    assert_eq!(api.tailnet, "example.com");
    assert_eq!(api.base_url, "http://127.0.0.1:8080");
    assert_eq!(api.tags, ["tag:storage-svc", "tag:media"]);

    // Inline-table spelling.
    let src = format!("[tailscale]\napi = {{ client_id_file = \"/i\", client_secret_file = \"/s\" }}\n{TAIL}");
    assert!(parse(&src, "t.toml").expect("valid").tailscale.api.is_some());
    // Absent: None.
    assert!(parse(TAIL, "t.toml").expect("valid").tailscale.api.is_none());
}

#[test]
fn every_problem_with_key_path_and_line() {
    let src = format!(
        "[tailscale.api]\nclient_id_file = 5\ntailnet = \"a/b\"\nbase_url = \"http://api.example.com\"\ntags = [\"storage\", 3, \"tag:\"]\nscope = \"x\"\n{TAIL}"
    );
    let d = errs(&src);
    expect(&d, "tailscale.api.client_id_file", 2, "expected a string");
    expect(&d, "tailscale.api", 1, "client_secret_file");
    expect(&d, "tailscale.api.tailnet", 3, "not allowed");
    expect(&d, "tailscale.api.base_url", 4, "unencrypted");
    expect(&d, "tailscale.api.tags[0]", 5, "must start with \"tag:\"");
    expect(&d, "tailscale.api.tags[1]", 5, "expected a tag string");
    expect(&d, "tailscale.api.tags[2]", 5, "not a valid tag");
    expect(&d, "tailscale.api.scope", 6, "unknown key");
}

#[test]
fn base_url_shapes() {
    for (url, ok) in [
        ("https://api.tailscale.com", true),
        ("https://API.tailscale.com/", true),
        ("http://localhost:1234", true),
        ("http://[::1]:1234", true),
        ("https://api.tailscale.com/api/v2", false),
        ("ftp://x", false),
        ("api.tailscale.com", false),
        ("https://u:p@api.tailscale.com", false),
    ] {
        let src = format!(
            "[tailscale.api]\nclient_id_file = \"/i\"\nclient_secret_file = \"/s\"\nbase_url = \"{url}\"\n{TAIL}"
        );
        assert_eq!(parse(&src, "t.toml").is_ok(), ok, "{url}");
    }
}

#[test]
fn api_must_be_a_table() {
    let d = errs(&format!("[tailscale]\napi = \"yes\"\n{TAIL}"));
    expect(&d, "tailscale.api", 2, "expected a table");
}
