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
