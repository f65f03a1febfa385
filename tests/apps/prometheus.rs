//! Prometheus (Debian `prometheus`) web UI in headless Chromium (Debian `chromium`) over
//! HTTP/2 through the router, with the simulated CA trusted the way a user trusts a CA:
//! in Chromium's NSS database (Debian `libnss3-tools` for `certutil`). Never
//! `--ignore-certificate-errors`.
//!
//! Prometheus needs nothing special behind the router (no Host check). Debian's package
//! ships the classic UI: `/graph` redirects to `/classic/graph`, whose script fetches a
//! template and the metric names over XHR and renders the query form from them.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{self, body_and_status, curl, free_port, temp_dir};
use crate::support::{self, App};

/// An NSS database in `home/.pki/nssdb`; with `ca`, that CA is trusted for TLS servers.
fn nss_db(home: &Path, ca: Option<&Path>) {
    let db = home.join(".pki/nssdb");
    std::fs::create_dir_all(&db).expect("nssdb dir");
    let db_arg = format!("sql:{}", db.display());
    let certutil = |args: &[&str]| {
        let out = Command::new("certutil").args(args).output().expect("run certutil");
        assert!(out.status.success(), "certutil {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    certutil(&["-d", &db_arg, "-N", "--empty-password"]);
    if let Some(ca) = ca {
        certutil(&["-d", &db_arg, "-A", "-t", "C,,", "-n", "snirouter-test", "-i", ca.to_str().expect("path")]);
    }
}

/// `chromium --headless --dump-dom URL` with `HOME=home` (so its NSS database is
/// `home/.pki/nssdb`) and the tailnet name mapped to the router on loopback; returns
/// the DOM (stdout) and Chromium's log (stderr).
async fn dump_dom(home: &Path, url: &str) -> (String, String) {
    let profile = home.join("chromium-profile");
    let mut cmd = tokio::process::Command::new("chromium");
    cmd.env("HOME", home)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--host-resolver-rules=MAP {} 127.0.0.1", harness::fqdn("prometheus")))
        .arg("--virtual-time-budget=10000")
        .arg("--dump-dom")
        .arg(url);
    let out = support::run_bounded(cmd, "chromium --dump-dom", Duration::from_secs(60)).await;
    let _ = std::fs::remove_dir_all(&profile);
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// What only the page's scripts put into the DOM: the query form rendered from the
/// template fetched over XHR, and a metric name from `/api/v1/label/__name__/values`.
fn rendered(dom: &str) -> bool {
    dom.contains("expression_input") && dom.contains("<option value=\"up\">")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_ui_renders_in_chromium_over_http2() {
    support::require_bin("prometheus", "prometheus");
    support::require_bin("chromium", "chromium");
    support::require_bin("certutil", "libnss3-tools");
    let dir = temp_dir("prometheus");
    let port = free_port();
    let config = dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: self\n    \
             static_configs:\n      - targets: ['127.0.0.1:{port}']\n"
        ),
    )
    .expect("prometheus.yml");
    let mut cmd = Command::new("prometheus");
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()));
    let mut app = App::spawn("prometheus", cmd, &dir.path().join("prometheus.log"));
    app.wait_http(port, "/-/ready").await;

    let services = format!("[services.prometheus]\nupstream = \"http://127.0.0.1:{port}\"\naccess_log = true\n");
    let env = support::env_with(&["prometheus"], services, "").await;

    // Wait for the first self-scrape, so the metric-name list the page loads is not empty.
    let scraped = support::poll_async(Duration::from_secs(30), || async {
        let (body, status) = body_and_status(&curl(&env, "prometheus", "/api/v1/query?query=up", &[]).await);
        status == 200 && body.contains("\"__name__\":\"up\"")
    })
    .await;
    assert!(scraped, "prometheus has not scraped itself within 30 s:\n{}", app.logs());

    let url = format!("{}/graph", support::origin(&env, "prometheus"));
    let trusted = dir.path().join("home-trusted");
    nss_db(&trusted, Some(&env.ca));
    // The page's scripts load over the network; give a slow machine a second try.
    let (mut dom, mut log) = (String::new(), String::new());
    for _ in 0..3 {
        (dom, log) = dump_dom(&trusted, &url).await;
        if rendered(&dom) || log.contains("ERR_CERT") {
            break;
        }
    }
    assert!(!log.contains("ERR_CERT"), "Chromium refused the certificate despite the trusted CA:\n{log}");
    assert!(
        rendered(&dom),
        "the DOM is not Prometheus's rendered UI:\n{dom}\nchromium:\n{log}\nrouter log (service=prometheus):\n{}",
        support::router_lines(&env, "prometheus")
    );
    assert!(dom.contains("navbar-brand") && dom.contains("Prometheus"), "{dom}");

    // The access log records the HTTP version of every request Chromium sent.
    let lines = support::router_lines(&env, "prometheus");
    for path in [
        "/graph",
        "/classic/graph",
        "/classic/static/js/graph/graph_template.handlebar",
        "/api/v1/label/__name__/values",
    ] {
        let line = lines
            .lines()
            .find(|l| l.contains("\"http.log.access\"") && l.contains(&format!("\"uri\":\"{path}")))
            .unwrap_or_else(|| panic!("no access-log line for {path}:\n{lines}"));
        eprintln!("{line}");
        assert!(line.contains("\"proto\":\"HTTP/2.0\""), "{path} did not come over HTTP/2: {line}");
        // Prometheus sends chunked bodies: their end is seen, not assumed.
        if line.contains("\"status\":200") {
            assert!(line.contains("\"complete\":true"), "{path} arrived whole: {line}");
        }
    }

    // The negative: with a fresh NSS database that does not trust the CA, Chromium
    // refuses the certificate and the UI does not render (so the assertions above can
    // fail). Headless Chromium shows no interstitial: the page load fails, the DOM it
    // dumps is empty, and it logs why.
    let untrusted = dir.path().join("home-untrusted");
    nss_db(&untrusted, None);
    let (dom, log) = dump_dom(&untrusted, &url).await;
    assert!(!rendered(&dom), "the UI rendered without trusting the CA:\n{dom}");
    assert!(log.contains("ERR_CERT_AUTHORITY_INVALID"), "Chromium did not refuse the certificate:\n{log}\n{dom}");
    app.assert_running();
}
