//! Issue 15 §4: the status page (`GET /` on the admin socket and on `[admin]
//! metrics_listen`), rendered by headless Chromium (Debian `chromium`): its script reads
//! `GET /status` and shows every service with its certificate, upstream health, rates
//! of the last minutes and tunnels, and the last reload. A phone-sized screenshot is
//! taken; the DOM is checked.

use std::path::Path;
use std::time::{Duration, Instant};

use super::harness::*;
use super::operate::{cfg, cli, metrics_over};

/// `chromium --headless` on `url` with `args` (`--dump-dom`, `--screenshot=…`); stdout.
async fn chromium(home: &Path, url: &str, args: &[&str]) -> String {
    let run = tokio::process::Command::new("chromium")
        .env("HOME", home)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-dev-shm-usage"])
        .args(["--disable-background-networking", "--disable-component-update", "--disable-sync"])
        .arg(format!("--user-data-dir={}", home.join("profile").display()))
        .arg("--virtual-time-budget=5000")
        .args(args)
        .arg(url)
        .kill_on_drop(true)
        .output();
    let out =
        tokio::time::timeout(Duration::from_secs(90), run).await.expect("chromium finished").expect("run chromium");
    assert!(out.status.success(), "chromium {args:?} failed:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `GET url` with curl: (headers, body).
async fn get(url: &str) -> (String, String) {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "-D", "-", url])
        .output()
        .await
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    (head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_shows_every_service_in_a_real_browser() {
    assert!(
        std::process::Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success()),
        "`chromium` is not on PATH: install the Debian package `chromium`; .ci/run installs it"
    );
    let port = free_port();
    let opts = EnvOptions { admin: format!("metrics_listen = \"127.0.0.1:{port}\"\n"), ..EnvOptions::default() };
    let env = Env::start(opts).await;
    for name in SERVICES {
        env.wait_serving(name, Duration::from_secs(60)).await;
    }
    let base = format!("http://127.0.0.1:{port}");
    let (head, body) = get(&format!("{base}/")).await;
    assert!(head.contains("content-type: text/html"), "{head}");
    assert!(head.contains("content-security-policy: default-src 'none'"), "{head}");
    for load in [" src=", "href=", "url(", "@import"] {
        assert!(!body.contains(load), "the page loads nothing ({load:?} found)");
    }
    let (code, _, err) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{err}");

    // Traffic, then wait (polling) until the rates of the last minutes show it.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for _ in 0..5 {
            assert!(curl(&env, "grafana", "/", &[]).await.status.success());
        }
        let (_, json) = get(&format!("{base}/status")).await;
        let v: serde_json::Value = serde_json::from_str(&json).expect("status JSON");
        let grafana = v["services"].as_array().and_then(|s| s.iter().find(|s| s["name"] == "grafana")).cloned();
        let seen =
            grafana.and_then(|g| g["history"]["requests"].as_array().map(|r| r.iter().any(|n| n.as_u64() > Some(0))));
        if seen == Some(true) {
            break;
        }
        assert!(Instant::now() < deadline, "no request ever showed in grafana's history:\n{json}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let home = temp_dir("status-page");
    let dom = chromium(home.path(), &format!("{base}/"), &["--dump-dom"]).await;
    assert!(dom.contains("14 of 14 services serving"), "{dom}");
    assert!(dom.contains("last reload") && dom.contains("applied"), "the last reload is shown:\n{dom}");
    for name in SERVICES {
        let start = dom.find(&format!("data-name=\"{name}\"")).unwrap_or_else(|| panic!("no card for {name}:\n{dom}"));
        let card = &dom[start..dom[start..].find("</section>").map_or(dom.len(), |e| start + e)];
        assert!(card.contains(&fqdn(name)), "{name}: {card}");
        assert!(card.contains(">serving<"), "{name}: {card}");
        assert!(
            card.contains("tailscaled") && card.contains("days left"),
            "{name}: certificate source and days: {card}"
        );
        assert!(card.contains("class=\"chart\"") && card.contains("<polyline"), "{name}: chart: {card}");
    }
    assert!(dom.contains("errors in the last"), "the chart says what it shows:\n{dom}");

    // Phone-sized screenshot: a real PNG of the rendered page.
    let shot = home.path().join("status.png");
    chromium(home.path(), &format!("{base}/"), &[&format!("--screenshot={}", shot.display()), "--window-size=390,844"])
        .await;
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "screenshot: {} bytes", png.len());

    // The same page on the admin socket; reload stays socket-only.
    let socket = env.admin_socket.to_str().expect("path");
    assert!(metrics_over(&["--unix-socket", socket, "http://snirouter/"]).await.contains("<title>snirouter</title>"));
    let reload =
        metrics_over(&["-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", &format!("{base}/reload")]).await;
    assert_eq!(reload, "404", "no reload over TCP");
}
