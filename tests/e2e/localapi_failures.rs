//! Issue 2: each LocalAPI failure gives its message and fix, and the other names keep
//! serving. Issue 3: a name added to CertDomains at runtime starts serving without a
//! restart; a 429 is honoured.

use std::time::Duration;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn name_missing_from_cert_domains_is_explained_then_served_when_it_appears() {
    let mut opts = EnvOptions::default();
    let immich = fqdn("immich");
    if let Some(domains) = opts.sim.cert_domains.as_mut() {
        domains.retain(|d| *d != immich);
    }
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let logs = env
        .router()
        .wait_log("the CertDomains explanation", WAIT, |l| l.contains("not in this node's CertDomains"))
        .await;
    assert!(logs.contains("svc:immich"), "the fix names the Tailscale Service to define:\n{logs}");
    let out = s_client(&env, &immich).await;
    assert!(out.contains("unrecognized name"), "{out}");
    // Every other name serves.
    for name in SERVICES.iter().filter(|n| **n != "immich") {
        let (_, status) = body_and_status(&curl(&env, name, "/", &[]).await);
        assert_eq!(status, 200, "{name}");
    }
    // No certificate request was sent for the refused name.
    let asked = env.sim.requests().iter().filter(|r| r.path_and_query.contains("/cert/immich.")).count();
    assert_eq!(asked, 0, "a name outside CertDomains must not be requested");

    // The host gets approved: the name appears, and is served without a restart.
    env.sim.update(|c| {
        if let Some(d) = c.cert_domains.as_mut() {
            d.push(immich.clone());
        }
    });
    env.wait_serving("immich", Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_access_denied_names_ts_permit_cert_uid() {
    let mut opts = EnvOptions::default();
    opts.sim.peer_uid = Some(4242);
    opts.sim.permit_cert_uid = None;
    opts.sim.operator_uid = None;
    let env = Env::start(opts).await;
    let logs = env.router().wait_log("the access-denied explanation", WAIT, |l| l.contains("cert access denied")).await;
    assert!(logs.contains("TS_PERMIT_CERT_UID"), "{logs}");
    assert!(logs.contains("permitCertUid"), "{logs}");
    let out = s_client(&env, &fqdn("grafana")).await;
    assert!(out.contains("unrecognized name"), "no certificate means unrecognized_name, not internal_error:\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_disabled_says_enable_https_and_magicdns() {
    let mut opts = EnvOptions::default();
    opts.sim.cert_domains = None;
    let env = Env::start(opts).await;
    let logs =
        env.router().wait_log("the HTTPS-disabled explanation", WAIT, |l| l.contains("no certificate domains")).await;
    assert!(logs.contains("HTTPS") && logs.contains("MagicDNS"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_is_honoured() {
    const RETRY_AFTER: Duration = Duration::from_secs(4);
    let mut opts = EnvOptions::default();
    opts.sim.rate_limited = Some(RETRY_AFTER);
    let env = Env::start(opts).await;
    let logs = env.router().wait_log("the rate-limit log line", WAIT, |l| l.contains("rate limit")).await;
    assert!(logs.contains("retry_after_secs=4"), "{logs}");
    let grafana = format!("/localapi/v0/cert/{}", fqdn("grafana"));
    let asked = || -> Vec<std::time::Instant> {
        env.sim.requests().iter().filter(|r| r.path_and_query.starts_with(&grafana)).map(|r| r.at).collect()
    };
    // The next request comes once Retry-After has passed, not before.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while asked().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no request after Retry-After: {:?}", asked());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let at = asked();
    let gap = at[1].duration_since(at[0]);
    assert!(gap >= RETRY_AFTER - Duration::from_millis(100), "asked again after {gap:?}, before Retry-After");
    assert!(gap < RETRY_AFTER + Duration::from_secs(5), "asked again only after {gap:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_socket_is_explained() {
    let mut opts = EnvOptions::default();
    let dir = temp_dir("nosock");
    opts.socket_override = Some(dir.path().join("absent.sock"));
    opts.tailscale = format!("magic_dns_suffix = \"{SUFFIX}\"\n");
    let env = Env::start(opts).await;
    let logs = env.router().wait_log("the missing-socket explanation", WAIT, |l| l.contains("does not exist")).await;
    assert!(logs.contains("systemctl start tailscaled") || logs.contains("[tailscale] socket"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_logged_in_says_tailscale_up() {
    let mut opts = EnvOptions::default();
    opts.sim.backend_state = "NeedsLogin".into();
    opts.tailscale = format!("magic_dns_suffix = \"{SUFFIX}\"\n");
    let env = Env::start(opts).await;
    let logs = env.router().wait_log("the not-logged-in explanation", WAIT, |l| l.contains("logged in")).await;
    assert!(logs.contains("tailscale status") || logs.contains("tailscale up"), "{logs}");
    let out = s_client(&env, &fqdn("grafana")).await;
    assert!(out.contains("unrecognized name"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_router_still_waiting_for_tailscaled() {
    // No socket and no MagicDNS suffix anywhere: the router waits for tailscaled.
    let dir = temp_dir("waitterm");
    let config = dir.path().join("snirouter.toml");
    std::fs::write(
        &config,
        format!(
            "[tailscale]\nsocket = \"{}\"\n[listen]\nhttps = [\"127.0.0.1:{}\"]\n[cache]\ndir = \"{}\"\n[admin]\nsocket = \"{}\"\n[services.grafana]\nupstream = \"http://127.0.0.1:9\"\n",
            dir.path().join("absent.sock").display(),
            free_port(),
            dir.path().join("cache").display(),
            dir.path().join("admin.sock").display(),
        ),
    )
    .expect("config");
    let log = dir.path().join("router.log");
    let mut router = RouterProcess::start(&config, &log);
    router.wait_log("the waiting log line", WAIT, |l| l.contains("waiting for tailscaled")).await;
    let pid = router.child.id().to_string();
    let _ = std::process::Command::new("kill").args(["-TERM", &pid]).status();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exited = loop {
        if let Ok(Some(status)) = router.child.try_wait() {
            break Some(status);
        }
        if std::time::Instant::now() > deadline {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let status = exited.unwrap_or_else(|| panic!("SIGTERM did not stop the router:\n{}", router.logs()));
    assert!(status.success(), "{status:?}");
}

/// tailscaled is not up at boot and there is no cache yet: the public names (certificate
/// files) serve as soon as the router is ready, and the tailnet names join within seconds
/// of tailscaled appearing — nothing waits for the MagicDNS suffix.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_tailscaled_at_boot_the_public_names_serve_at_once_and_the_tailnet_names_join_later() {
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let acme = env.dir.path().join("acme");
    std::fs::create_dir_all(&acme).expect("acme dir");
    crate::domains::renew(&env, &acme);
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, format!("{text}\n[domains.\"example.com\"]\ncert_dir = \"{}\"\n", acme.display()))
        .expect("config");
    add_to_service(&env.config, "grafana", "names = [\"grafana.example.com\"]");
    // tailscaled "not running": its socket is somewhere else for now.
    let socket = env.dir.path().join("ts.sock");
    let hidden = env.dir.path().join("ts.sock.later");
    std::fs::rename(&socket, &hidden).expect("hide the socket");

    let started = std::time::Instant::now();
    env.start_router().await;
    let (_, status) = body_and_status(&curl_at(&env, "grafana.example.com", "/", &[]).await);
    let public_after = started.elapsed();
    assert_eq!(status, 200, "the public name serves without tailscaled:\n{}", env.router().logs());
    assert!(public_after < Duration::from_secs(5), "public name after {public_after:?}");
    let out = curl(&env, "grafana", "/", &[]).await;
    assert!(!out.status.success(), "no tailnet name before tailscaled answers");
    let logs = env.router().logs();
    assert!(logs.contains("the tailnet names join once tailscaled"), "{logs}");
    let (code, stdout, _) = crate::operate::cli(&["status", "--config", crate::operate::cfg(&env)]).await;
    assert!(stdout.contains("tailnet names waiting for tailscaled"), "status says what waits ({code}):\n{stdout}");

    std::fs::rename(&hidden, &socket).expect("tailscaled appears");
    let appeared = std::time::Instant::now();
    env.wait_serving("grafana", Duration::from_secs(30)).await;
    env.wait_serving("jellyfin", Duration::from_secs(30)).await;
    assert!(appeared.elapsed() < Duration::from_secs(15), "tailnet names after {:?}", appeared.elapsed());
    assert!(env.router().logs().contains("tailscaled answered: the tailnet names join"));
    let (_, status) = body_and_status(&curl_at(&env, "grafana.example.com", "/", &[]).await);
    assert_eq!(status, 200, "the public name still serves");
}

/// A restart serves the tailnet names from the suffix cached by the last run at once, and
/// the status task confirms it with tailscaled: a renamed tailnet is named in the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_suffix_serves_at_once_and_a_renamed_tailnet_is_reported() {
    let mut env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", Duration::from_secs(30)).await;
    env.sim.update(|c| c.magic_dns_suffix = "renamed-tailnet.ts.net".to_owned());
    env.start_router().await;
    let logs = env.router().logs();
    assert!(!logs.contains("the tailnet names join once tailscaled"), "the cached suffix is used at once:\n{logs}");
    let line =
        env.router().wait_log("the rename", Duration::from_secs(30), |l| l.contains("MagicDNS suffix changed")).await;
    assert!(line.contains("renamed-tailnet.ts.net") && line.contains(SUFFIX), "{line}");
}

/// tailscaled 1.100 (no fix for tailscale/tailscale#20362) forwards unserved Service ports
/// to 127.0.0.1: `doctor` flags the PROXY listener there, with the upgrade and the move to
/// 127.0.0.2; 1.102 is not flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_flags_a_daemon_that_exposes_the_proxy_listener() {
    for (version, flagged) in [("1.100.0", true), ("1.102.0", false)] {
        let mut opts = EnvOptions { proxy_protocol: true, ..EnvOptions::default() };
        opts.sim.version = version.to_owned();
        let env = Env::start(opts).await;
        env.wait_serving("grafana", WAIT).await;
        let (_, out, _) = crate::operate::cli(&["doctor", "--config", crate::operate::cfg(&env)]).await;
        assert_eq!(out.contains("PROXY listener exposure"), flagged, "tailscaled {version}:\n{out}");
        if flagged {
            assert!(out.contains("tailscale/tailscale#20362") && out.contains("127.0.0.2:8443"), "{out}");
        }
    }
}
