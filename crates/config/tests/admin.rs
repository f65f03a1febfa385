//! `[admin]`, `[log] access` and per-service `access_log`: defaults, values and
//! diagnostics with key path and line.

use snirouter_config::{DEFAULT_ADMIN_SOCKET, parse};

const TAIL: &str = "[listen]\nhttps = [\"0.0.0.0:443\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n";

#[test]
fn defaults_no_tcp_port_and_no_access_log() {
    let cfg = parse(TAIL, "t.toml").expect("valid");
    assert_eq!(cfg.admin.socket.to_str(), Some(DEFAULT_ADMIN_SOCKET));
    assert_eq!(cfg.admin.metrics_listen, None);
    assert!(!cfg.log.access);
    assert_eq!(cfg.services[0].access_log, None);
    assert!(!cfg.services[0].access_logged(&cfg.log));
}

#[test]
fn values_are_read() {
    let src = format!(
        "[admin]\nsocket = \"/run/x/admin.sock\"\nmetrics_listen = \"127.0.0.1:9469\"\n[log]\naccess = true\n{TAIL}access_log = false\n[services.jellyfin]\nupstream = \"http://127.0.0.1:8096\"\n"
    );
    let cfg = parse(&src, "t.toml").expect("valid");
    assert_eq!(cfg.admin.socket.to_str(), Some("/run/x/admin.sock"));
    assert_eq!(cfg.admin.metrics_listen, Some("127.0.0.1:9469".parse().expect("addr")));
    assert!(cfg.log.access);
    let grafana = &cfg.services[0];
    assert_eq!(grafana.access_log, Some(false));
    assert!(!grafana.access_logged(&cfg.log), "the service's switch wins over [log] access");
    assert!(cfg.services[1].access_logged(&cfg.log), "a service without the key follows [log] access");
}

#[test]
fn problems_have_key_path_line_and_fix() {
    let src = format!(
        "[admin]\nsocket = \"admin.sock\"\nmetrics_listen = \":9469\"\nmetrics = true\n[log]\naccess = \"yes\"\n{TAIL}access_log = 1\n"
    );
    let diags = parse(&src, "t.toml").expect_err("invalid").0;
    let find = |path: &str| {
        diags.iter().find(|d| d.key_path == path).unwrap_or_else(|| panic!("no diagnostic for {path}: {diags:#?}"))
    };
    let d = find("admin.socket");
    assert_eq!(d.line, 2);
    assert!(d.message.contains("relative"), "{d}");
    assert!(d.help.as_deref().unwrap_or("").contains("/run/snirouter/admin.sock"), "{d}");
    let d = find("admin.metrics_listen");
    assert_eq!(d.line, 3);
    assert!(d.help.as_deref().unwrap_or("").contains("0.0.0.0:9469"), "{d}");
    let d = find("admin.metrics");
    assert_eq!(d.line, 4);
    assert!(d.help.as_deref().unwrap_or("").contains("metrics_listen"), "did you mean: {d}");
    let d = find("log.access");
    assert_eq!(d.line, 6);
    assert!(d.message.contains("boolean"), "{d}");
    let d = find("services.grafana.access_log");
    assert_eq!(d.line, 11);
    assert_eq!(diags.len(), 5, "{diags:#?}");
}

#[test]
fn admin_must_be_a_table() {
    let src = format!("admin = \"/run/x.sock\"\n{TAIL}");
    let diags = parse(&src, "t.toml").expect_err("invalid").0;
    assert_eq!(diags.len(), 1, "{diags:#?}");
    assert_eq!(diags[0].key_path, "admin");
    assert_eq!(diags[0].line, 1);
}
