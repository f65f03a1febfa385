//! Issue 13 (first part): the public half of each service. A `[domains]` entry serves
//! `NAME.example.com` with a wildcard certificate from files (as NixOS `security.acme`
//! writes them) and its own forward auth, beside the tailnet name from tailscaled; a
//! renewal of the files under load loses no request; unusable new files keep the last
//! good pair and say so in `status` and `doctor`; `check` names bad files.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::certs_lifecycle::{client_config, one_request};
use crate::harness::*;
use crate::operate::{cfg, cli, service, wait_status};
use crate::parity::{REMOTE_USER, auth_server};

const DOMAIN: &str = "example.com";
const DAY: Duration = Duration::from_secs(86_400);

/// Writes a fresh `*.example.com` pair from the simulator's CA; returns its serial.
pub(crate) fn renew(env: &Env, dir: &Path) -> String {
    let now = SystemTime::now();
    let pair = env.sim.ca().issue(&format!("*.{DOMAIN}"), now - DAY, now + 90 * DAY);
    std::fs::write(dir.join("fullchain.pem"), &pair.chain_pem).expect("cert");
    // As lego/certbot do it: the chain first, the key a moment later.
    std::thread::sleep(Duration::from_millis(50));
    std::fs::write(dir.join("key.pem"), &pair.key_pem).expect("key");
    pair.serial
}

/// `curl https://HOST/who` through the router's TLS listener: (body, status).
async fn curl_host(env: &Env, host: &str, extra: &[&str]) -> (String, u16) {
    body_and_status(&curl_at(env, host, "/who", extra).await)
}

async fn gateway() -> (Env, PathBuf, crate::parity::AuthServer) {
    let auth = auth_server().await;
    let domain = format!(
        "[domains.\"{DOMAIN}\"]\ncert_dir = \"{{dir}}\"\napex_redirect = \"https://www.{DOMAIN}\"\nforward_auth = {{ url = \"http://{}/api/authz/forward-auth?authelia_url=https://auth.{DOMAIN}/\", copy_headers = [\"Remote-User\"] }}\n",
        auth.addr
    );
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let acme = env.dir.path().join("acme");
    std::fs::create_dir_all(&acme).expect("acme dir");
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, format!("{text}\n{}", domain.replace("{dir}", &acme.display().to_string())))
        .expect("write");
    add_to_service(&env.config, "grafana", &format!("names = [\"grafana.{DOMAIN}\"]"));
    add_to_service(&env.config, "jellyfin", &format!("names = [\"jellyfin.{DOMAIN}\"]\nbypass_auth = true"));

    // check: files missing here is a warning (a NixOS build has none), bad files an error.
    let (code, _, err) = cli(&["check", "--config", cfg(&env)]).await;
    assert!(code == 0 && err.contains("not checked here") && err.contains("fullchain.pem"), "{err}");
    std::fs::write(acme.join("fullchain.pem"), "junk").expect("junk");
    std::fs::write(acme.join("key.pem"), "junk").expect("junk");
    let (code, _, err) = cli(&["check", "--config", cfg(&env)]).await;
    assert!(code == 1 && err.contains("holds no PEM certificate"), "{err}");
    renew(&env, &acme);
    let (code, out, err) = cli(&["check", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    // A domain no service name is under, without a redirect, serves nothing: an error.
    let unused = env.dir.path().join("unused.toml");
    let text = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&unused, format!("{text}\n[domains.\"other.org\"]\ncert_dir = \"{}\"\n", acme.display()))
        .expect("write");
    let (code, _, err) = cli(&["check", "--config", unused.to_str().expect("utf-8")]).await;
    assert!(code == 1 && err.contains("domains.\"other.org\": serves nothing"), "{err}");

    env.start_router().await;
    (env, acme, auth)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_names_serve_file_certificates_with_their_own_auth_and_renew_under_load() {
    let (env, acme, auth) = gateway().await;
    env.wait_serving("grafana", Duration::from_secs(60)).await;
    let (public, bypassed) = (format!("grafana.{DOMAIN}"), format!("jellyfin.{DOMAIN}"));

    // The tailnet name: no login. The public name: the domain's forward auth.
    let (body, code) = curl_host(&env, &fqdn("grafana"), &[]).await;
    assert_eq!(code, 200, "{body}");
    assert!(auth.seen.lock().expect("lock").is_empty(), "the tailnet name never asks the auth server");
    let port = env.https.port();
    let (body, code) = curl_host(&env, &public, &["-D", "-"]).await;
    assert_eq!(code, 302, "no session: the portal: {body}");
    let portal = format!("location: https://auth.{DOMAIN}/?rd=https://{public}:{port}/who&rm=GET");
    assert!(body.to_ascii_lowercase().contains(&portal.to_ascii_lowercase()), "{body}");
    let (body, code) = curl_host(&env, &public, &["-H", "Cookie: session=good"]).await;
    assert_eq!(code, 200, "{body}");
    // What Authelia reads: X-Forwarded-* (/api/verify, 4.38's /api/authz/forward-auth)
    // and X-Original-URL/-Method (/api/authz/auth-request; /api/verify prefers it).
    let seen = auth.seen.lock().expect("lock").last().cloned().expect("asked");
    for (name, value) in [
        ("x-forwarded-method", "GET".to_owned()),
        ("x-forwarded-proto", "https".to_owned()),
        ("x-forwarded-host", format!("{public}:{port}")),
        ("x-forwarded-uri", "/who".to_owned()),
        ("x-original-method", "GET".to_owned()),
        ("x-original-url", format!("https://{public}:{port}/who")),
    ] {
        assert_eq!(seen.get(name).and_then(|v| v.to_str().ok()), Some(value.as_str()), "{name}: {seen:?}");
    }
    assert_eq!(json(&body)["headers"]["remote-user"], REMOTE_USER, "{body}");
    assert_eq!(json(&body)["service"], "grafana", "{body}");
    let (body, code) = curl_host(&env, &bypassed, &[]).await;
    assert_eq!((code, &json(&body)["service"]), (200, &serde_json::json!("jellyfin")), "bypass_auth: {body}");
    // SNI ≠ Host is still refused across the two names of one service.
    let (_, code) = curl_host(&env, &public, &["-H", &format!("Host: {}", fqdn("grafana"))]).await;
    assert_eq!(code, 421);
    let tls = s_client(&env, &public).await;
    assert!(tls.contains("Verification: OK") && tls.contains(&format!("*.{DOMAIN}")), "{tls}");
    // Names under the domain that no service has: the wildcard, then a 404 page; the
    // apex: a redirect to its fixed target, with the path and query, whatever the Host.
    let (body, code) = curl_host(&env, &format!("nothing.{DOMAIN}"), &[]).await;
    assert_eq!(code, 404, "{body}");
    assert!(body.contains(&format!("no service is served at nothing.{DOMAIN}")), "{body}");
    let out = curl_at(&env, DOMAIN, "/a/b?c=1", &["-D", "-", "-H", "Host: evil.example.org"]).await;
    let (head, code) = body_and_status(&out);
    assert_eq!(code, 302, "{head}");
    assert!(head.to_ascii_lowercase().contains(&format!("location: https://www.{DOMAIN}/a/b?c=1")), "{head}");

    // Renewal under load: the files change twice (key a moment after the chain) while
    // four clients keep opening new connections; nothing fails, the new pair serves.
    let tls_cfg = client_config(&env);
    let env = Arc::new(env);
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let leaves = Arc::new(std::sync::Mutex::new(Vec::<Vec<u8>>::new()));
    let deadline = Instant::now() + Duration::from_secs(14);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (env, cfg, ok, failed, leaves, host) =
            (env.clone(), tls_cfg.clone(), ok.clone(), failed.clone(), leaves.clone(), bypassed.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match one_request(&env, cfg.clone(), &host, &[]).await {
                    Ok(leaf) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        let mut seen = leaves.lock().expect("lock");
                        if seen.last() != Some(&leaf) {
                            seen.push(leaf);
                        }
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    renew(&env, &acme);
    tokio::time::sleep(Duration::from_secs(6)).await;
    let last = renew(&env, &acme);
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let changes = leaves.lock().expect("lock").len();
    eprintln!("file renewal under load: {ok} requests ok, {failed} failed, {changes} certificate changes seen");
    assert_eq!(failed, 0, "no request may fail while the files are renewed");
    assert!(ok > 100, "the load ran ({ok} requests)");
    assert!(changes >= 3, "both renewals were picked up ({changes}); router log:\n{}", env.router().logs());
    let (_, st) = wait_status(&env, "the last pair served", |st| {
        service(st, "jellyfin")["names"][0]["certificate"]["serial"]
            .as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case(&last))
    })
    .await;
    assert_eq!(service(&st, "jellyfin")["names"][0]["certificate"]["source"], "file");

    // Unusable new files: the last good pair keeps serving; status and doctor say why.
    std::fs::write(acme.join("key.pem"), "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n")
        .expect("bad key");
    let (code, st) =
        wait_status(&env, "the bad key noticed", |st| !service(st, "grafana")["names"][0]["error"].is_null()).await;
    assert_eq!(code, 0, "still serving: {st:#}");
    let name = &service(&st, "grafana")["names"][0];
    assert!(name["certificate"]["serial"].as_str().is_some_and(|s| s.eq_ignore_ascii_case(&last)), "{name:#}");
    assert!(name["error"].as_str().is_some_and(|e| e.contains("key.pem")), "{name:#}");
    let (body, code) = curl_host(&env, &bypassed, &[]).await;
    assert_eq!(code, 200, "{body}");
    let (_, human, _) = cli(&["status", "--config", cfg(&env)]).await;
    assert!(human.contains(&format!("also {public}")) && human.contains("new files not used"), "{human}");
    let (code, doctor, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{doctor}");
    let line = doctor.lines().find(|l| l.contains("certificate files: example.com")).unwrap_or_default();
    assert!(line.starts_with("FAIL") && line.contains("key.pem"), "{doctor}");
}

/// A gateway Caddyfile for the harness: every service on the tailnet (no login) and under
/// `example.com` (the wildcard from files, Authelia unless it bypasses), a catch-all and
/// an apex redirect.
fn gateway_caddyfile(env: &Env, acme: &Path, auth: std::net::SocketAddr, bypass: &[&str]) -> String {
    let (cert, key) = (acme.join("fullchain.pem"), acme.join("key.pem"));
    let tls = format!("\ttls {} {}\n", cert.display(), key.display());
    let mut out = format!(
        "(strip) {{\n\trequest_header -x-middleware-subrequest\n}}\n\n(authelia) {{\n\tforward_auth {auth} {{\n\t\turi /api/authz/forward-auth?authelia_url=https://auth.{{args[0]}}/\n\t\theader_up X-Original-URL {{scheme}}://{{host}}{{uri}}\n\t\tcopy_headers Remote-User Remote-Groups Remote-Name Remote-Email\n\t}}\n}}\n\n"
    );
    for (name, backend) in SERVICES.iter().zip(&env.backends) {
        let upstream = backend.addr;
        out.push_str(&format!(
            "https://{} {{\n\tbind tailscale/{name}\n\timport strip\n\treverse_proxy {upstream}\n}}\n\n",
            fqdn(name)
        ));
        let auth = if bypass.contains(name) { String::new() } else { format!("\timport authelia {DOMAIN}\n") };
        out.push_str(&format!("{name}.{DOMAIN} {{\n{tls}\timport strip\n{auth}\treverse_proxy {upstream}\n}}\n\n"));
    }
    out.push_str(&format!(
        "*.{DOMAIN} {{\n{tls}\trespond 404\n}}\n\n{DOMAIN} {{\n{tls}\tredir https://www.{DOMAIN}{{uri}}\n}}\n"
    ));
    out
}

/// Issue 13's "done when": a gateway Caddyfile with every service on both domains imports
/// with nothing untranslated, and the result serves every name with the right
/// certificate and policy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_caddyfile_imports_and_serves_both_halves_of_every_service() {
    let auth = auth_server().await;
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let acme = env.dir.path().join("acme");
    std::fs::create_dir_all(&acme).expect("acme dir");
    renew(&env, &acme);
    let bypass = ["jellyfin", "immich"];
    let caddyfile = env.dir.path().join("Caddyfile");
    std::fs::write(&caddyfile, gateway_caddyfile(&env, &acme, auth.addr, &bypass)).expect("write");

    let imported = env.dir.path().join("imported.toml");
    let (code, _, err) =
        cli(&["import-caddyfile", caddyfile.to_str().expect("utf-8"), "--output", imported.to_str().expect("utf-8")])
            .await;
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("14 service(s) translated, nothing left out"), "{err}");
    // The harness's own [tailscale], [listen], [cache], [admin] with the imported rest.
    let harness = std::fs::read_to_string(&env.config).expect("config");
    let head = &harness[..harness.find("[services.").expect("services")];
    let body = std::fs::read_to_string(&imported).expect("imported");
    // The imported [listen] (its PROXY listener and, for the public sites, an https one on
    // :443) gives way to the harness's listeners.
    let listen = body.find("\n[listen]").expect("[listen]");
    assert!(body[listen..].contains("https = [\"0.0.0.0:443\"]"), "the public sites keep a way in");
    let after = listen + 1 + body[listen + 1..].find("\n[").expect("a table after [listen]") + 1;
    std::fs::write(&env.config, format!("{head}\n{}{}", &body[..listen], &body[after..])).expect("write config");
    let (code, out, err) = cli(&["check", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    env.start_router().await;
    env.wait_serving("grafana", Duration::from_secs(60)).await;

    for name in SERVICES {
        let (body, code) = curl_host(&env, &fqdn(name), &[]).await;
        assert_eq!((code, &json(&body)["service"]), (200, &serde_json::json!(name)), "tailnet {name}: {body}");
        let public = format!("{name}.{DOMAIN}");
        let (body, code) = curl_host(&env, &public, &[]).await;
        if bypass.contains(&name) {
            assert_eq!(code, 200, "{public} bypasses the auth server: {body}");
            continue;
        }
        assert_eq!(code, 302, "{public} without a session: {body}");
        let (body, code) = curl_host(&env, &public, &["-H", "Cookie: session=good"]).await;
        assert_eq!(code, 200, "{public}: {body}");
        let echo = json(&body);
        assert_eq!(
            (&echo["service"], &echo["headers"]["remote-user"]),
            (&serde_json::json!(name), &serde_json::json!(REMOTE_USER))
        );
        assert!(echo["headers"]["x-middleware-subrequest"].is_null(), "{echo}");
    }
    let tls = s_client(&env, &format!("sonarr.{DOMAIN}")).await;
    assert!(tls.contains("Verification: OK") && tls.contains(&format!("*.{DOMAIN}")), "{tls}");
    let tls = s_client(&env, &fqdn("sonarr")).await;
    assert!(
        tls.contains("Verification: OK") && tls.contains(&fqdn("sonarr")),
        "the tailnet name keeps tailscaled's: {tls}"
    );
    let (_, code) = curl_host(&env, &format!("nothing.{DOMAIN}"), &[]).await;
    assert_eq!(code, 404);
    let (head, code) = body_and_status(&curl_at(&env, DOMAIN, "/x", &["-D", "-"]).await);
    assert!(code == 302 && head.to_ascii_lowercase().contains(&format!("location: https://www.{DOMAIN}/x")), "{head}");
}
