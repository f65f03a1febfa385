//! `[limits]`: connection counts.

use snirouter_config::parse;

const BASE: &str = "[listen]\nhttps = [\"127.0.0.1:8443\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n";

#[test]
fn per_client_limit_default_and_override() {
    let cfg = parse(BASE, "t.toml").expect("valid");
    assert_eq!(cfg.limits.max_connections_per_client, 1024);
    let cfg = parse(&format!("{BASE}[limits]\nmax_connections_per_client = 64\n"), "t.toml").expect("valid");
    assert_eq!(cfg.limits.max_connections_per_client, 64);
}

#[test]
fn per_client_limit_must_be_a_positive_integer() {
    let err = parse(&format!("{BASE}[limits]\nmax_connections_per_client = 0\nmax_connections = \"x\"\n"), "t.toml")
        .expect_err("invalid")
        .to_string();
    assert!(
        err.contains("t.toml:6:") && err.contains("limits.max_connections_per_client") && err.contains("at least 1"),
        "{err}"
    );
    assert!(
        err.contains("t.toml:7:") && err.contains("limits.max_connections") && err.contains("expected an integer"),
        "{err}"
    );
}

#[test]
fn upstream_connection_limit_default_override_and_errors() {
    let cfg = parse(BASE, "t.toml").expect("valid");
    // Opt-in since issue 12: no request waits for another by default.
    assert_eq!(cfg.limits.max_upstream_connections, None);
    let cfg = parse(&format!("{BASE}[limits]\nmax_upstream_connections = 16\n"), "t.toml").expect("valid");
    assert_eq!(cfg.limits.max_upstream_connections, Some(16));
    let err =
        parse(&format!("{BASE}[limits]\nmax_upstream_connections = 0\n"), "t.toml").expect_err("invalid").to_string();
    assert!(
        err.contains("t.toml:6:") && err.contains("limits.max_upstream_connections") && err.contains("at least 1"),
        "{err}"
    );
    assert!(err.contains("remove the key for no limit"), "the fix says how to have no cap: {err}");
}

#[test]
fn tunnel_idle_is_optional_and_positive() {
    let cfg = parse(&format!("{BASE}[timeouts]\ntunnel_idle = \"30m\"\n"), "t.toml").expect("valid");
    assert_eq!(cfg.timeouts.tunnel_idle, Some(std::time::Duration::from_secs(1800)));
    let err = parse(&format!("{BASE}[timeouts]\ntunnel_idle = \"0s\"\n"), "t.toml").expect_err("invalid").to_string();
    assert!(
        err.contains("timeouts.tunnel_idle")
            && err.contains("greater than zero")
            && err.contains("remove tunnel_idle for no limit"),
        "{err}"
    );
}
