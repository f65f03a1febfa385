//! qBittorrent (Debian `qbittorrent-nox` 4.5) WebUI login through the router, with
//! curl and a cookie jar, as the WebUI's own script does it.
//!
//! qBittorrent's Host validation accepts any name by default (`WebUI\ServerDomains=*`)
//! but refuses a Host whose port is not its own ("Invalid Host header, port mismatch"):
//! fine on :443 (browsers send no port), not on this test's random router port. So the
//! service sends `upstream_host = "127.0.0.1:PORT"`, as qBittorrent's own reverse-proxy
//! guide does; its CSRF check then compares `Origin` / `Referer` with `X-Forwarded-Host`,
//! which the router sets to the Host the browser sent. Recommended behind a proxy: `WebUI\ReverseProxySupportEnabled=true`
//! with `WebUI\TrustedReverseProxiesList=127.0.0.1`, so qBittorrent takes the client
//! address from `X-Forwarded-For` (its login ban then hits the client, not the proxy);
//! and keep `WebUI\LocalHostAuth=true` (the default): every request arrives from
//! 127.0.0.1, so turning it off would skip authentication for the whole tailnet.

use std::process::Command;
use std::time::Duration;

use crate::harness::{body_and_status, curl, free_port, temp_dir};
use crate::support::{self, App};

/// A profile whose settings keep qBittorrent on loopback (no DHT, local peer discovery,
/// PeX, UPnP/NAT-PMP or GeoIP download) and accept the legal notice, which otherwise
/// waits for an answer on the terminal.
fn profile(dir: &std::path::Path, webui_port: u16, peer_port: u16) {
    let config = dir.join("qBittorrent/config");
    std::fs::create_dir_all(&config).expect("profile dir");
    std::fs::write(
        config.join("qBittorrent.conf"),
        format!(
            "[LegalNotice]\nAccepted=true\n\n\
             [BitTorrent]\nSession\\DHTEnabled=false\nSession\\LSDEnabled=false\nSession\\PeXEnabled=false\n\
             Session\\Interface=lo\nSession\\InterfaceName=lo\nSession\\InterfaceAddress=127.0.0.1\n\
             Session\\Port={peer_port}\n\n\
             [Network]\nPortForwardingEnabled=false\n\n\
             [Preferences]\nConnection\\UPnP=false\nConnection\\ResolvePeerCountries=false\n\
             WebUI\\Address=127.0.0.1\nWebUI\\Port={webui_port}\nWebUI\\UseUPnP=false\n\
             WebUI\\ReverseProxySupportEnabled=true\nWebUI\\TrustedReverseProxiesList=127.0.0.1\n"
        ),
    )
    .expect("qBittorrent.conf");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn qbittorrent_webui_login_and_csrf_check_through_the_router() {
    support::require_bin("qbittorrent-nox", "qbittorrent-nox");
    let dir = temp_dir("qbittorrent");
    let (webui_port, peer_port) = (free_port(), free_port());
    profile(dir.path(), webui_port, peer_port);
    let mut cmd = Command::new("qbittorrent-nox");
    cmd.arg(format!("--profile={}", dir.path().display()))
        .arg(format!("--webui-port={webui_port}"))
        .env("HOME", dir.path());
    let mut app = App::spawn("qbittorrent-nox", cmd, &dir.path().join("qbittorrent.stdout"));
    app.wait_http(webui_port, "/").await;

    let services = format!(
        "[services.qbittorrent]\nupstream = \"http://127.0.0.1:{webui_port}\"\nupstream_host = \"127.0.0.1:{webui_port}\"\n"
    );
    let env = support::env_with(&["qbittorrent"], services, "").await;
    let origin = support::origin(&env, "qbittorrent");
    let jar = dir.path().join("cookies.txt");
    let jar_arg = jar.to_str().expect("path");

    // The WebUI's login form: a POST with the page's Origin and Referer.
    let (referer, origin_h) = (format!("Referer: {origin}/"), format!("Origin: {origin}"));
    let login = ["--data-urlencode", "username=admin", "--data-urlencode", "password=adminadmin"];
    let mut args = vec!["-c", jar_arg, "-H", &referer, "-H", &origin_h];
    args.extend_from_slice(&login);
    let (body, status) = body_and_status(&curl(&env, "qbittorrent", "/api/v2/auth/login", &args).await);
    let qb_log = dir.path().join("qBittorrent/data/logs/qbittorrent.log");
    let qb_logs = || std::fs::read_to_string(&qb_log).unwrap_or_default();
    assert_eq!((status, body.as_str()), (200, "Ok."), "login through the router; qBittorrent log:\n{}", qb_logs());
    let cookies = std::fs::read_to_string(&jar).expect("cookie jar");
    assert!(cookies.lines().any(|l| l.split('\t').nth(5) == Some("SID")), "no SID cookie in the jar:\n{cookies}");

    // The session cookie authenticates API calls.
    let (version, status) = body_and_status(&curl(&env, "qbittorrent", "/api/v2/app/version", &["-b", jar_arg]).await);
    assert_eq!(status, 200, "{version}");
    assert!(version.starts_with("v4."), "app version: {version}");
    // Without it, no: the router's connections come from 127.0.0.1, and qBittorrent still
    // asks for authentication (WebUI\LocalHostAuth).
    let (body, status) = body_and_status(&curl(&env, "qbittorrent", "/api/v2/app/version", &[]).await);
    assert_eq!(status, 403, "an API call without the session cookie: {body}");

    // A login from a foreign page is refused by qBittorrent's CSRF check: the Origin
    // reached it unchanged and did not match the tailnet name in X-Forwarded-Host.
    let mut args = vec!["-H", "Origin: https://evil.example", "-H", "Referer: https://evil.example/"];
    args.extend_from_slice(&login);
    let (body, status) = body_and_status(&curl(&env, "qbittorrent", "/api/v2/auth/login", &args).await);
    assert_eq!(status, 401, "a cross-site login: {body}");
    assert_ne!(body, "Ok.");
    let seen = support::poll_until(Duration::from_secs(10), || {
        qb_logs().contains(&format!(
            "Origin header: 'https://evil.example'. Target origin: '{}:{}'",
            crate::harness::fqdn("qbittorrent"),
            env.https.port()
        ))
    })
    .await;
    assert!(seen, "qBittorrent's log does not show the foreign Origin against the tailnet Host:\n{}", qb_logs());
    app.assert_running();
}
