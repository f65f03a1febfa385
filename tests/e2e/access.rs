//! Issue 15, part 3: access by tailnet identity (`allow`), end to end.
//!
//! Clients come through the PROXY v2 listener with the tailnet address of their
//! choice, the way tailscaled's service handler forwards them; the simulated
//! tailscaled's `whois` names the user, the node's tags and the capabilities granted
//! toward each service. The backends echo what reached them, so the header
//! assertions are about what an application really sees.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use snirouter_testkit::tailscaled::{SimConfig, SimPeer};

use crate::harness::*;
use crate::operate::{cli, service, status_json};
use crate::parity::{GOOD, REMOTE_USER, auth_server};

const CAP: &str = "example.com/cap/grafana";

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

fn peers() -> Vec<SimPeer> {
    vec![
        SimPeer::user(ip("100.64.0.7"), "alice@example.com", "Alice"),
        SimPeer::user(ip("100.64.0.8"), "bob@other.org", "Bob <b>"),
        SimPeer::tagged(ip("100.64.0.9"), &["tag:monitoring"]),
        SimPeer::user(ip("100.64.0.10"), "carol@other.org", "Carol").with_service_cap(
            "grafana",
            CAP,
            serde_json::json!({"role": "editor"}),
        ),
        SimPeer::user(ip("100.64.0.12"), "dave@example.com", "Dave"),
    ]
}

/// Adds `lines` to `[services.NAME]` of the harness's generated config.
fn add_keys(text: &str, name: &str, lines: &str) -> String {
    let header = format!("[services.{name}]\n");
    text.replacen(&header, &format!("{header}{lines}\n"), 1)
}

/// One request through the PROXY listener as `source`: (status, head, body).
async fn ask(env: &Env, source: &str, name: &str, extra_headers: &str) -> (u16, String, String) {
    let tls = via_proxy(env, source, name, roots_from(&env.ca)).await;
    let req = format!("GET /who HTTP/1.1\r\nHost: {}\r\n{extra_headers}Connection: close\r\n\r\n", fqdn(name));
    let text = raw_http(tls, &req).await;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_ascii_lowercase(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_admits_by_tailnet_identity_and_refuses_everyone_else() {
    let auth = auth_server().await;
    let mut sim = SimConfig::storage(SUFFIX, &SERVICES);
    sim.peers = peers();
    let mut env =
        Env::start(EnvOptions { sim, proxy_protocol: true, start_router: false, ..EnvOptions::default() }).await;
    let mut text = std::fs::read_to_string(&env.config).expect("config");
    text = add_keys(
        &text,
        "grafana",
        &format!(
            "allow = [\"alice@example.com\", \"tag:monitoring\", \"cap:{CAP}\"]\naccept_app_caps = [\"{CAP}\"]\ntailscale_identity = true"
        ),
    );
    text = add_keys(&text, "homepage", "allow = [\"*@example.com\", \"local\"]");
    text = add_keys(
        &text,
        "sonarr",
        &format!(
            "allow = [\"*\"]\nforward_auth = {{ url = \"http://{}/api/verify\", copy_headers = [\"Remote-User\", \"Remote-Email\", \"Remote-Name\"] }}",
            auth.addr
        ),
    );
    std::fs::write(&env.config, text).expect("write config");
    env.start_router().await;
    for name in ["grafana", "homepage", "sonarr"] {
        env.wait_serving(name, Duration::from_secs(60)).await;
    }

    // grafana: alice by login, the monitoring node by tag, carol by the capability
    // granted toward svc:grafana; forged identity and capability headers never pass.
    let forged = "Tailscale-User-Login: mallory@evil.example\r\nTailscale-App-Capabilities: {\"example.com/cap/grafana\":[{}]}\r\n";
    let (code, _, body) = ask(&env, "100.64.0.7:40000", "grafana", forged).await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert_eq!(echo["headers"]["tailscale-user-login"], "alice@example.com", "{echo}");
    assert!(echo["headers"]["tailscale-app-capabilities"].is_null(), "alice holds no capability: {echo}");
    let (code, _, body) = ask(&env, "100.64.0.9:40000", "grafana", forged).await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert!(echo["headers"]["tailscale-user-login"].is_null(), "tagged nodes have no user: {echo}");
    let (code, _, body) = ask(&env, "100.64.0.10:40000", "grafana", "").await;
    assert_eq!(code, 200, "{body}");
    let caps = json(&body)["headers"]["tailscale-app-capabilities"].as_str().map(str::to_owned);
    assert_eq!(caps.as_deref(), Some(r#"{"example.com/cap/grafana":[{"role":"editor"}]}"#));

    // bob matches nothing: 403 saying who he is and who is admitted; HTML for browsers.
    let (code, head, body) = ask(&env, "100.64.0.8:40000", "grafana", "Accept: text/html\r\n").await;
    assert_eq!(code, 403, "{body}");
    assert!(head.contains("content-type: text/html"), "{head}");
    for needle in ["bob@other.org", "Bob &lt;b&gt;", "100.64.0.8", "alice@example.com", "tag:monitoring", CAP] {
        assert!(body.contains(needle), "{needle} in the refusal page:\n{body}");
    }
    // An address no tailnet node has: 403, not a tailnet client.
    let (code, _, body) = ask(&env, "192.168.1.50:40000", "grafana", "").await;
    assert_eq!(code, 403, "{body}");
    assert!(body.contains("not a tailnet client"), "{body}");

    // homepage: every user at example.com, and this host itself (the https listener on
    // loopback, as hairpin clients reach it), nobody else.
    assert_eq!(ask(&env, "100.64.0.7:40000", "homepage", "").await.0, 200);
    assert_eq!(ask(&env, "100.64.0.8:40000", "homepage", "").await.0, 403);
    let out = curl(&env, "homepage", "/", &[]).await;
    assert_eq!(body_and_status(&out).1, 200, "a local client: {out:?}");
    // This host reaching a Service it hosts (tailscaled >= 1.96 terminates it locally):
    // the PROXY source is the node's own tailnet address, which is this host too.
    let own = env.sim.config().tailscale_ips[0];
    assert_eq!(ask(&env, &format!("{own}:40000"), "homepage", "").await.0, 200, "this node through its Service");

    // sonarr: tailnet nodes skip forward_auth, with Remote-* from the tailnet identity
    // (forged copies replaced); everyone else goes to the auth server.
    let asked_before = auth.seen.lock().expect("lock").len();
    let (code, _, body) = ask(&env, "100.64.0.7:40000", "sonarr", "Remote-User: mallory\r\n").await;
    assert_eq!(code, 200, "{body}");
    let echo = json(&body);
    assert_eq!(echo["headers"]["remote-user"], "alice@example.com", "{echo}");
    assert_eq!(echo["headers"]["remote-email"], "alice@example.com", "{echo}");
    assert_eq!(echo["headers"]["remote-name"], "Alice", "{echo}");
    assert_eq!(auth.seen.lock().expect("lock").len(), asked_before, "a tailnet client is not sent to the auth server");
    let (code, head, _) = ask(&env, "192.168.1.50:40000", "sonarr", "").await;
    assert_eq!(code, 302, "not a tailnet client: the auth server's login redirect\n{head}");
    let (code, _, body) = ask(&env, "192.168.1.50:40000", "sonarr", &format!("{GOOD}\r\n")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(json(&body)["headers"]["remote-user"], REMOTE_USER);

    // status and doctor show the policy.
    let (_, status) = status_json(&env).await;
    assert_eq!(
        service(&status, "grafana")["allow"],
        serde_json::json!(["alice@example.com", "tag:monitoring", format!("cap:{CAP}")])
    );
    assert!(service(&status, "jellyfin")["allow"].is_null());
    let (_, doctor, _) = cli(&["doctor", "--config", env.config.to_str().expect("path")]).await;
    for line in ["tailnet identity (whois)", "capabilities per service"] {
        assert!(doctor.lines().any(|l| l.starts_with("PASS") && l.contains(line)), "PASS {line}:\n{doctor}");
    }

    // A whois outage: nobody new is let through — 503 without forward_auth, the auth
    // server with it — and admission resumes once tailscaled answers again.
    env.sim.update(|c| c.unavailable = true);
    let (code, head, body) = ask(&env, "100.64.0.12:40000", "homepage", "").await;
    assert_eq!(code, 503, "{body}");
    assert!(head.contains("retry-after: 5") && body.contains("could not be established"), "{head}\n{body}");
    assert_eq!(ask(&env, "100.64.0.12:40001", "sonarr", "").await.0, 302, "the auth server decides");
    env.sim.update(|c| c.unavailable = false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while ask(&env, "100.64.0.12:40002", "homepage", "").await.0 != 200 {
        assert!(Instant::now() < deadline, "dave is admitted again once whois answers\n{}", env.router().logs());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
