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

#[test]
fn buffer_budgets_and_streams_defaults_overrides_and_errors() {
    let cfg = parse(BASE, "t.toml").expect("valid");
    assert_eq!(cfg.limits.max_streams_per_connection, 250);
    assert_eq!(cfg.limits.buffer_per_connection, 1 << 20);
    assert_eq!(cfg.limits.buffer_per_client, 32 << 20);
    assert_eq!(cfg.limits.buffer_total, 256 << 20);
    let text = format!(
        "{BASE}[limits]\nmax_streams_per_connection = 128\nbuffer_per_connection = \"256KiB\"\nbuffer_per_client = 8388608\nbuffer_total = \"1GiB\"\n"
    );
    let cfg = parse(&text, "t.toml").expect("valid");
    assert_eq!(cfg.limits.max_streams_per_connection, 128);
    assert_eq!(cfg.limits.buffer_per_connection, 256 << 10);
    assert_eq!(cfg.limits.buffer_per_client, 8 << 20);
    assert_eq!(cfg.limits.buffer_total, 1 << 30);
    let text = format!(
        "{BASE}[limits]\nmax_streams_per_connection = 5000\nbuffer_per_connection = \"1KiB\"\nbuffer_per_client = \"lots\"\nbuffer_total = true\n"
    );
    let err = parse(&text, "t.toml").expect_err("invalid").to_string();
    for (line, key, why) in [
        (6, "limits.max_streams_per_connection", "between 1 and 1000"),
        (7, "limits.buffer_per_connection", "between 64 KiB and 64 GiB"),
        (8, "limits.buffer_per_client", "invalid size"),
        (9, "limits.buffer_total", "expected a size"),
    ] {
        assert!(err.contains(&format!("t.toml:{line}:")) && err.contains(key) && err.contains(why), "{key}: {err}");
    }
    assert!(err.contains("buffer_per_client = \"32MiB\" (the default)"), "the fix names the default: {err}");
}
