//! Issue 5: operating snirouter — `status` and `doctor` in every failure mode of the
//! LocalAPI reference, reload under load, metrics and the access log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use snirouter_testkit::backend;
use snirouter_testkit::tailscaled::SimConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

/// Runs the snirouter binary; returns (exit code, stdout, stderr).
pub(crate) async fn cli(args: &[&str]) -> (i32, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_snirouter"))
        .args(args)
        .env("NO_COLOR", "1")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), out).await.expect("cli finished").expect("run cli");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

pub(crate) fn cfg(env: &Env) -> &str {
    env.config.to_str().expect("utf-8 path")
}

/// `(LEVEL, check name, rest of the line incl. the fix line)` for every doctor check.
pub(crate) fn doctor_checks(out: &str) -> Vec<(String, String, String)> {
    let mut checks: Vec<(String, String, String)> = Vec::new();
    for line in out.lines() {
        let level = line.get(..4).unwrap_or("");
        if ["PASS", "FAIL", "WARN", "SKIP"].contains(&level) {
            let rest = line[4..].trim_start();
            // Names and details are separated by at least two spaces.
            let (name, detail) = rest.split_once("  ").unwrap_or((rest, ""));
            checks.push((level.to_owned(), name.trim().to_owned(), detail.trim().to_owned()));
        } else if line.trim_start().starts_with("fix:")
            && let Some(last) = checks.last_mut()
        {
            last.2.push('\n');
            last.2.push_str(line.trim());
        }
    }
    checks
}

/// Asserts that exactly the checks whose names start with one of `failing` fail, each
/// with `fix_needle` in its text, and that everything else passes (or is skipped /
/// warned for a reason listed in `allowed_other`).
#[track_caller]
fn assert_doctor(out: &str, failing: &[&str], fix_needle: &str, allowed_other: &[(&str, &str)]) {
    let checks = doctor_checks(out);
    assert!(checks.len() > 10, "doctor printed too few checks:\n{out}");
    for (level, name, text) in &checks {
        let should_fail = failing.iter().any(|f| name.starts_with(f));
        if should_fail {
            assert_eq!(level, "FAIL", "{name} should fail:\n{out}");
            assert!(text.contains(fix_needle), "{name}: the fix should mention {fix_needle:?}:\n{out}");
        } else if level != "PASS" {
            // Local clients (hairpin) are opt-in and not set up here: tests/e2e/hairpin.rs.
            let hairpin = level == "WARN" && name == "hairpin (local clients)";
            let ok = hairpin || allowed_other.iter().any(|(lvl, prefix)| level == lvl && name.starts_with(prefix));
            assert!(ok, "unexpected {level} for {name}: {text}\n--- doctor output ---\n{out}");
        }
    }
    for f in failing {
        assert!(checks.iter().any(|(l, n, _)| l == "FAIL" && n.starts_with(f)), "no failing check {f}:\n{out}");
    }
}

pub(crate) async fn status_json(env: &Env) -> (i32, serde_json::Value) {
    let (code, stdout, stderr) = cli(&["status", "--json", "--config", cfg(env)]).await;
    let v = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("status --json: {e}\n{stdout}\n{stderr}"));
    (code, v)
}

pub(crate) fn service<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["services"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("no service {name} in {status:#}"))
}

/// Polls `status --json` until `pred` holds.
pub(crate) async fn wait_status(
    env: &Env,
    what: &str,
    pred: impl Fn(&serde_json::Value) -> bool,
) -> (i32, serde_json::Value) {
    let deadline = Instant::now() + WAIT;
    loop {
        let (code, v) = status_json(env).await;
        if pred(&v) {
            return (code, v);
        }
        if Instant::now() > deadline {
            panic!("timed out waiting for {what}; last status:\n{v:#}\nrouter log:\n{}", env.router().logs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn opts_with_suffix() -> EnvOptions {
    // A fixed suffix so the router starts even when tailscaled cannot tell it.
    EnvOptions { tailscale: format!("magic_dns_suffix = \"{SUFFIX}\"\n"), ..EnvOptions::default() }
}

// ---------------------------------------------------------------------------------------
// status and doctor, one failure mode each
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn owners_failure_name_not_in_cert_domains_is_diagnosed_with_the_exact_fix() {
    let mut opts = EnvOptions::default();
    let immich = fqdn("immich");
    if let Some(d) = opts.sim.cert_domains.as_mut() {
        d.retain(|x| *x != immich);
    }
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let (code, v) = wait_status(&env, "immich to be explained", |v| {
        service(v, "immich")["fetch"]["last_error_kind"] == "not_in_cert_domains"
    })
    .await;
    assert_eq!(code, 1, "a service without certificate makes status exit 1");
    let immich_status = service(&v, "immich");
    assert_eq!(immich_status["serving"], false);
    assert_eq!(immich_status["in_cert_domains"], false);
    assert!(immich_status["certificate"].is_null());
    assert!(immich_status["fetch"]["fix"].as_str().unwrap_or("").contains("svc:immich"), "{immich_status:#}");
    let ts = &immich_status["tailscale_service"];
    assert_eq!(ts["service"], "svc:immich", "{immich_status:#}");
    assert_eq!(ts["in_cert_domains"], false, "{ts:#}");
    assert_eq!(ts["certificate"], false, "{ts:#}");
    let grafana = service(&v, "grafana");
    assert_eq!(grafana["serving"], true);
    assert_eq!(grafana["in_cert_domains"], true);
    assert_eq!(grafana["certificate"]["source"], "tailscaled");
    assert_eq!(grafana["routes"][0]["reachable"], true);
    assert!(grafana["requests"]["requests"].as_u64().unwrap_or(0) >= 1);

    let (code, table, _) = cli(&["status", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{table}");
    let row = table.lines().find(|l| l.starts_with("immich ")).unwrap_or_else(|| panic!("no immich row:\n{table}"));
    assert!(row.contains("NOT SERVING") && row.contains("not_in_cert_domains"), "{row}");
    assert!(table.contains("fix: ") && table.contains("svc:immich"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("grafana ") && l.ends_with("serving")), "{table}");
    assert!(!table.contains('\x1b'), "no colour when stdout is not a terminal");

    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(
        &out,
        &[&format!("in CertDomains: {immich}")],
        "svc:immich",
        &[("SKIP", &format!("certificate: {immich}"))],
    );
    let fail = out.lines().find(|l| l.starts_with("FAIL")).unwrap_or_default();
    assert!(fail.contains("must be one of"), "the daemon's own words: {fail}");
    // Approved already (the simulator's default): only the missing steps are named.
    assert!(out.contains("define svc:immich (ports tcp:443), advertise it from this host;"), "{out}");
    println!("--- status ---\n{table}\n--- doctor ---\n{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cert_access_denied_fails_the_socket_check_with_ts_permit_cert_uid() {
    let mut opts = EnvOptions::default();
    opts.sim.peer_uid = Some(4242);
    let env = Env::start(opts).await;
    let (code, v) = wait_status(&env, "access denied", |v| {
        service(v, "grafana")["fetch"]["last_error_kind"] == "cert_access_denied"
    })
    .await;
    assert_eq!(code, 1);
    assert!(service(&v, "grafana")["fetch"]["fix"].as_str().unwrap_or("").contains("TS_PERMIT_CERT_UID"));
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(&out, &["tailscaled socket"], "TS_PERMIT_CERT_UID", &[("SKIP", "certificate: "), ("WARN", "clock")]);
    assert!(out.contains("cert access denied"), "the daemon's text: {out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_disabled_fails_the_magicdns_https_check() {
    let mut opts = EnvOptions::default();
    opts.sim.cert_domains = None;
    let env = Env::start(opts).await;
    let (code, _) = wait_status(&env, "no certificate domains", |v| v["cert_domains"] == serde_json::json!([])).await;
    assert_eq!(code, 1);
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(
        &out,
        &["MagicDNS and HTTPS"],
        "HTTPS Certificates",
        &[("SKIP", "in CertDomains: "), ("SKIP", "certificate: "), ("WARN", "clock"), ("WARN", "tailscaled socket")],
    );
    // The enable link control hands out through query-feature.
    assert!(out.contains("control says: Serve is not enabled on your tailnet. To enable, visit: https://login.tailscale.com/f/serve?node=n"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_another_node_fails_its_dns_check() {
    let mut opts = EnvOptions::default();
    let grafana = fqdn("grafana");
    opts.sim.extra_records.retain(|(name, _)| *name != grafana);
    opts.sim.extra_records.push((grafana.clone(), "100.64.9.9".to_owned()));
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(&out, &[&format!("resolves: {grafana}")], "rename that device", &[]);
    assert!(
        out.contains("resolves to 100.64.9.9, not to svc:grafana's address (100.100.5.2, fd7a:115c:a1e0::5:1)"),
        "{out}"
    );
    assert!(out.contains(&format!("PASS  resolves: {}", fqdn("jellyfin"))), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn not_logged_in_fails_the_backend_check() {
    let mut opts = opts_with_suffix();
    opts.sim.backend_state = "NeedsLogin".into();
    let env = Env::start(opts).await;
    let (code, _) = wait_status(&env, "a status", |v| v["services"].as_array().is_some_and(|a| a.len() == 14)).await;
    assert_eq!(code, 1, "nothing can be served without a netmap");
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(
        &out,
        &["backend state"],
        "tailscale up",
        &[
            ("SKIP", "MagicDNS and HTTPS"),
            ("SKIP", "host tagged"),
            ("SKIP", "in CertDomains: "),
            ("SKIP", "certificate: "),
            ("WARN", "clock"),
            // Not logged in, no name can be requested: permission cannot be verified
            // (only when the tests do not run as root).
            ("WARN", "tailscaled socket"),
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_missing_fails_the_socket_check() {
    let mut opts = opts_with_suffix();
    let missing = std::env::temp_dir().join(format!("sr-missing-{}.sock", std::process::id()));
    opts.socket_override = Some(missing.clone());
    let env = Env::start(opts).await;
    let (code, v) =
        wait_status(&env, "socket missing", |v| service(v, "grafana")["fetch"]["last_error_kind"] == "socket_missing")
            .await;
    assert_eq!(code, 1);
    assert_eq!(service(&v, "grafana")["serving"], false);
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(
        &out,
        &["tailscaled socket"],
        "start it (systemctl start tailscaled)",
        &[("SKIP", "backend state"), ("SKIP", "MagicDNS and HTTPS"), ("SKIP", "host tagged"), ("WARN", "clock")],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn untagged_host_fails_only_the_tag_check() {
    let mut opts = EnvOptions::default();
    opts.sim.tags = vec![];
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(&out, &["host tagged"], "--advertise-tags", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_down_fails_its_upstream_check_and_status() {
    let mut env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let idx = SERVICES.iter().position(|s| *s == "sonarr").expect("sonarr");
    let sonarr = env.backends.remove(idx);
    let dead = format!("http://{}", sonarr.addr);
    sonarr.shutdown().await;
    env.start_router().await;
    env.wait_serving("grafana", WAIT).await;
    let (code, v) = wait_status(&env, "sonarr's upstream down and every certificate", |v| {
        service(v, "sonarr")["routes"][0]["reachable"] == false
            && v["services"].as_array().is_some_and(|a| a.iter().all(|s| !s["certificate"].is_null()))
    })
    .await;
    assert_eq!(code, 1);
    let sonarr = service(&v, "sonarr");
    assert_eq!(sonarr["serving"], false);
    assert!(sonarr["problems"][0].as_str().unwrap_or("").contains("is down"), "{sonarr:#}");
    assert_eq!(v["services"].as_array().map(|a| a.iter().filter(|s| s["serving"] == false).count()), Some(1));
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 1, "{out}");
    assert_doctor(&out, &[&format!("upstream: {dead}")], "start the backend", &[]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_without_a_daemon_says_so_and_exits_3() {
    let env = Env::start(EnvOptions { start_router: false, ..EnvOptions::default() }).await;
    let (code, stdout, stderr) = cli(&["status", "--config", cfg(&env)]).await;
    assert_eq!(code, 3, "{stdout}{stderr}");
    let want = format!("snirouter is not running: cannot connect to {}", env.admin_socket.display());
    assert!(stderr.contains(&want), "{stderr}");
    let (code, _, stderr) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_eq!(code, 3, "{stderr}");
    // With nothing running, every tailscaled and local check passes.
    let (code, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("PASS  listener: "), "{out}");
}

// ---------------------------------------------------------------------------------------
// reload under load
// ---------------------------------------------------------------------------------------

pub(crate) fn roots(env: &Env) -> Arc<rustls::RootCertStore> {
    roots_from(&env.ca)
}

pub(crate) async fn tls(
    addr: SocketAddr,
    name: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    let trust = snirouter_tls::Trust::Roots(roots);
    let cfg = snirouter_tls::client_config(trust, &[b"http/1.1"]).map_err(|e| e.to_string())?;
    let tcp = tokio::net::TcpStream::connect(addr).await.map_err(|e| format!("connect: {e}"))?;
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(Arc::new(cfg)).connect(server, tcp).await.map_err(|e| format!("tls: {e}"))
}

/// One `GET` on a fresh connection; returns (status, body).
async fn get(
    addr: SocketAddr,
    name: &str,
    path: &str,
    roots: Arc<rustls::RootCertStore>,
) -> Result<(u16, String), String> {
    let mut s = tls(addr, name, roots).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf))
        .await
        .map_err(|_| "timeout".to_owned())?
        .map_err(|e| format!("read: {e}"))?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text.split(' ').nth(1).and_then(|c| c.parse().ok()).ok_or_else(|| format!("bad answer {text:?}"))?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// Drops the `[services.NAME]` block the harness generated.
fn without_service(config: &str, name: &str) -> String {
    let start = config.find(&format!("[services.{name}]\n")).expect("service block");
    let end = config[start..].find("\n\n").map(|i| start + i + 2).expect("block end");
    format!("{}{}", &config[..start], &config[end..])
}

fn upstream_of(config: &str, name: &str) -> String {
    let start = config.find(&format!("[services.{name}]\nupstream = \"")).expect("service block");
    let rest = &config[start..];
    let q = rest.find('"').expect("quote") + 1;
    rest[q..q + rest[q..].find('"').expect("quote")].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_adds_removes_and_keeps_open_connections() {
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.push("newsvc");
    let opts = EnvOptions { sim: SimConfig::storage(SUFFIX, &names), ..EnvOptions::default() };
    let env = Env::start(opts).await;
    for name in ["grafana", "jellyfin", "radarr", "sonarr"] {
        env.wait_serving(name, WAIT).await;
    }
    let roots = roots(&env);

    // A long download from a service that the reload removes, read slowly.
    const N: usize = 8 * 1024 * 1024;
    let mut stream = tls(env.https, &fqdn("radarr"), roots.clone()).await.expect("tls radarr");
    let req = format!("GET /bytes/{N} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", fqdn("radarr"));
    stream.write_all(req.as_bytes()).await.expect("send");
    let mut received = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    while received.len() < 256 * 1024 {
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "download ended early");
        received.extend_from_slice(&chunk[..n]);
    }

    // A WebSocket to another service the reload removes.
    let mut ws = tls(env.https, &fqdn("sonarr"), roots.clone()).await.expect("tls sonarr");
    backend::ws_client::handshake(&mut ws, &fqdn("sonarr"), "/ws").await.expect("ws handshake");
    backend::ws_client::send_text(&mut ws, "before").await.expect("send");
    assert_eq!(backend::ws_client::recv_text(&mut ws).await.expect("echo"), "before");

    // Requests to services that stay, on fresh connections, all the time.
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut loops = Vec::new();
    for name in ["grafana", "jellyfin"] {
        let (stop, ok, failures, roots, addr) = (stop.clone(), ok.clone(), failures.clone(), roots.clone(), env.https);
        loops.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match get(addr, &fqdn(name), "/", roots.clone()).await {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok((code, body)) => failures.lock().expect("lock").push(format!("{name}: {code} {body}")),
                    Err(e) => failures.lock().expect("lock").push(format!("{name}: {e}")),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    // New config: radarr and sonarr removed, newsvc added, grafana's upstream changed,
    // a second TLS listener added.
    let original = std::fs::read_to_string(&env.config).expect("config");
    let homepage = upstream_of(&original, "homepage");
    let grafana_old = upstream_of(&original, "grafana");
    let second: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
    let mut next = without_service(&without_service(&original, "radarr"), "sonarr");
    next = next.replace(&format!("upstream = \"{grafana_old}\""), &format!("upstream = \"{homepage}\""));
    next = next.replace(&format!("https = [\"{}\"]", env.https), &format!("https = [\"{}\", \"{second}\"]", env.https));
    next.push_str(&format!("[services.newsvc]\nupstream = \"{}\"\n", upstream_of(&original, "jellyfin")));
    std::fs::write(&env.config, &next).expect("write config");
    let (code, out, err) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("added newsvc") && out.contains("radarr") && out.contains("sonarr"), "{out}");
    assert!(out.contains(&second.to_string()), "{out}");

    // Added service serves (on both listeners); removed ones are refused by name.
    env.wait_serving("newsvc", WAIT).await;
    let (status, _) = get(second, &fqdn("newsvc"), "/", roots.clone()).await.expect("second listener");
    assert_eq!(status, 200);
    let sclient = s_client(&env, &fqdn("radarr")).await;
    assert!(sclient.contains("unrecognized name"), "{sclient}");
    // Changed upstream takes effect.
    let (status, body) = get(env.https, &fqdn("grafana"), "/", roots.clone()).await.expect("grafana");
    assert_eq!(status, 200);
    assert!(body.contains("\"service\":\"homepage\""), "grafana now goes to the homepage backend: {body}");

    // The open WebSocket and the download are undisturbed.
    backend::ws_client::send_text(&mut ws, "after").await.expect("send after reload");
    assert_eq!(backend::ws_client::recv_text(&mut ws).await.expect("echo after reload"), "after");
    loop {
        let n = tokio::time::timeout(Duration::from_secs(20), stream.read(&mut chunk))
            .await
            .expect("download progresses")
            .expect("read");
        if n == 0 {
            break;
        }
        received.extend_from_slice(&chunk[..n]);
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").expect("head") + 4;
    assert!(received.starts_with(b"HTTP/1.1 200"), "{:?}", String::from_utf8_lossy(&received[..head_end]));
    assert_eq!(received.len() - head_end, N, "the whole body arrived across the reload");

    // A broken config is refused; the running one keeps serving.
    std::fs::write(&env.config, format!("{next}\n[services.broken]\nupstream = \"ftp://x\"\n")).expect("write");
    let (code, _, err) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_ne!(code, 0, "a broken config must be refused");
    assert!(err.contains("services.broken.upstream"), "diagnostics with the key path: {err}");
    // The daemon refuses it too when asked directly (SIGHUP).
    let pid = env.router().child.id().to_string();
    let _ = std::process::Command::new("kill").args(["-HUP", &pid]).status();
    env.router().wait_log("the refused reload", WAIT, |l| l.contains("reload refused")).await;
    let (_, v) = status_json(&env).await;
    assert_eq!(v["last_reload"]["ok"], false, "{v:#}");
    assert!(v["last_reload"]["error"].as_str().unwrap_or("").contains("services.broken"), "{v:#}");
    assert_eq!(service(&v, "newsvc")["serving"], true);

    // Removing the second listener stops it.
    std::fs::write(&env.config, next.replace(&format!(", \"{second}\""), "")).expect("write");
    let (code, out, err) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("removed {second}")), "{out}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while tokio::net::TcpStream::connect(second).await.is_ok() {
        assert!(Instant::now() < deadline, "the removed listener still accepts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.expect("loop");
    }
    let failures = failures.lock().expect("lock").clone();
    assert!(failures.is_empty(), "requests to services that stayed failed during reloads: {failures:#?}");
    assert!(ok.load(Ordering::Relaxed) > 20, "the load loop ran");
}

// ---------------------------------------------------------------------------------------
// metrics and access log
// ---------------------------------------------------------------------------------------

pub(crate) async fn metrics_over(args: &[&str]) -> String {
    let out = tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .kill_on_drop(true)
        .output()
        .await
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub(crate) fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no series {series} in\n{metrics}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tcp_metrics_listener_bounds_its_connections() {
    let metrics_port = free_port();
    let opts =
        EnvOptions { admin: format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"), ..EnvOptions::default() };
    let env = Env::start(opts).await;
    env.wait_serving("grafana", WAIT).await;
    let addr = format!("127.0.0.1:{metrics_port}");
    let url = format!("http://{addr}/metrics");
    let scrape_works = || async { metrics_over(&[url.as_str()]).await.contains("snirouter_build_info") };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !scrape_works().await {
        assert!(Instant::now() < deadline, "the metrics listener never answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // 32 idle connections take every slot: the next one is closed unanswered.
    let mut held = Vec::new();
    for _ in 0..32 {
        held.push(tokio::net::TcpStream::connect(&addr).await.expect("connect"));
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let mut extra = tokio::net::TcpStream::connect(&addr).await.expect("connect");
        let mut buf = [0u8; 16];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(500), extra.read(&mut buf)).await {
            break;
        }
        assert!(Instant::now() < deadline, "a connection past the cap stayed open");
    }
    // The TLS listeners do not share the cap.
    let (_, status) = body_and_status(&curl(&env, "grafana", "/", &[]).await);
    assert_eq!(status, 200);
    // Closed connections give their slots back.
    drop(held);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !scrape_works().await {
        assert!(Instant::now() < deadline, "scrapes did not recover after the idle connections closed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_names_and_labels_are_stable_and_move_with_traffic() {
    let logged = backend::spawn("logged").await.expect("backend");
    let metrics_port = free_port();
    let mut names: Vec<&str> = SERVICES.to_vec();
    names.push("logged");
    let opts = EnvOptions {
        sim: SimConfig::storage(SUFFIX, &names),
        admin: format!("metrics_listen = \"127.0.0.1:{metrics_port}\"\n"),
        extra_services: format!("[services.logged]\nupstream = \"http://{}\"\naccess_log = true\n", logged.addr),
        ..EnvOptions::default()
    };
    let env = Env::start(opts).await;
    env.wait_serving("logged", WAIT).await;
    let socket = env.admin_socket.to_str().expect("path").to_owned();
    let before = metrics_over(&["--unix-socket", &socket, "http://snirouter/metrics"]).await;

    // A known sequence: 3 × 200, one 404, one 503 from the upstream, one unknown SNI.
    for path in ["/a", "/b", "/c?x=1", "/status/404", "/status/503"] {
        let out = curl(&env, "logged", path, &[]).await;
        assert!(out.status.success());
    }
    let out = s_client(&env, "nobody.example").await;
    assert!(out.contains("unrecognized name"), "{out}");

    let after = metrics_over(&["--unix-socket", &socket, "http://snirouter/metrics"]).await;
    let families: Vec<&str> = after.lines().filter(|l| l.starts_with("# TYPE ")).collect();
    assert_eq!(
        families,
        [
            "# TYPE snirouter_build_info gauge",
            "# TYPE snirouter_active_connections gauge",
            "# TYPE snirouter_tls_handshake_failures_total counter",
            "# TYPE snirouter_connections_refused_total counter",
            "# TYPE snirouter_requests_total counter",
            "# TYPE snirouter_upstream_errors_total counter",
            "# TYPE snirouter_tunnels gauge",
            "# TYPE snirouter_request_duration_seconds histogram",
            "# TYPE snirouter_access_log_lines_total counter",
            "# TYPE snirouter_buffered_bytes gauge",
            "# TYPE snirouter_buffer_requests gauge",
            "# TYPE snirouter_buffer_waits_total counter",
            "# TYPE snirouter_buffer_connections_closed_total counter",
            "# TYPE snirouter_h2_refusals_total counter",
            "# TYPE snirouter_certificate_present gauge",
            "# TYPE snirouter_certificate_expiry_seconds gauge",
            "# TYPE snirouter_certificate_renewal_failures_total counter",
            "# TYPE snirouter_upstream_up gauge",
            "# TYPE snirouter_config_reloads_total counter",
            "# TYPE snirouter_services_healed_total counter",
        ]
    );
    let svc = "service=\"logged\"";
    let two = value(&before, &format!("snirouter_requests_total{{{svc},class=\"2xx\"}}"));
    for line in [
        format!("snirouter_requests_total{{{svc},class=\"2xx\"}} {}", two + 3.0),
        format!("snirouter_requests_total{{{svc},class=\"3xx\"}} 0"),
        format!("snirouter_requests_total{{{svc},class=\"4xx\"}} 1"),
        format!("snirouter_requests_total{{{svc},class=\"5xx\"}} 1"),
        format!("snirouter_upstream_errors_total{{{svc}}} 0"),
        format!("snirouter_request_duration_seconds_count{{{svc}}} {}", two + 5.0),
        format!("snirouter_request_duration_seconds_bucket{{{svc},le=\"+Inf\"}} {}", two + 5.0),
        format!("snirouter_certificate_present{{name=\"{}\",{svc}}} 1", fqdn("logged")),
        format!("snirouter_certificate_renewal_failures_total{{name=\"{}\",{svc}}} 0", fqdn("logged")),
        format!("snirouter_upstream_up{{{svc},upstream=\"http://{}\"}} 1", logged.addr),
        "snirouter_config_reloads_total{result=\"ok\"} 0".to_owned(),
        "snirouter_tls_handshake_failures_total{reason=\"proxy_header\"} 0".to_owned(),
    ] {
        assert!(after.lines().any(|l| l == line), "missing line {line:?} in\n{after}");
    }
    let unknown = "snirouter_tls_handshake_failures_total{reason=\"unknown_sni\"}";
    assert_eq!(value(&after, unknown), value(&before, unknown) + 1.0);
    let expiry = value(&after, &format!("snirouter_certificate_expiry_seconds{{name=\"{}\",{svc}}}", fqdn("logged")));
    assert!((89.0 * 86_400.0..=90.0 * 86_400.0).contains(&expiry), "{expiry}");
    assert!(after.contains(&format!("snirouter_request_duration_seconds_bucket{{{svc},le=\"0.005\"}}")));

    // Every metric the shipped Grafana dashboard queries exists.
    let dashboard = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/grafana-dashboard.json"))
        .expect("docs/grafana-dashboard.json");
    let mut rest = dashboard.as_str();
    let mut queried = 0;
    while let Some(i) = rest.find("snirouter_") {
        let name: String =
            rest[i..].chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_').collect();
        assert!(
            after.lines().any(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} "))),
            "the dashboard queries {name}, which is not exported"
        );
        queried += 1;
        rest = &rest[i + name.len()..];
    }
    assert!(queried > 10);

    // The TCP metrics listener serves the same text, and is read-only: since the status
    // page (issue 15), also `GET /` and `GET /status`, but never a reload.
    let tcp = metrics_over(&[&format!("http://127.0.0.1:{metrics_port}/metrics")]).await;
    assert!(tcp.contains("# TYPE snirouter_requests_total counter"), "{tcp}");
    let code = ["-o", "/dev/null", "-w", "%{http_code}"];
    let status = metrics_over(&[&code[..], &[&format!("http://127.0.0.1:{metrics_port}/status")]].concat()).await;
    assert_eq!(status, "200");
    let reload = format!("http://127.0.0.1:{metrics_port}/reload");
    assert_eq!(metrics_over(&[&code[..], &["-X", "POST", &reload]].concat()).await, "404", "no reload over TCP");

    // The access log: one line per request, only for the service that asked for it.
    // JSON by default, Caddy's `http.log.access` fields.
    const ACCESS: &str = "\"logger\":\"http.log.access\"";
    let logs = env.router().wait_log("six access-log lines", WAIT, |l| l.matches(ACCESS).count() >= 6).await;
    // wait_serving's first successful request, then the five of the sequence.
    let lines: Vec<serde_json::Value> = logs.lines().filter(|l| l.contains(ACCESS)).map(json).collect();
    assert_eq!(lines.len(), 6, "{lines:#?}");
    let first = lines.iter().find(|l| l["request"]["uri"] == "/c?x=1").expect("the /c?x=1 line");
    assert_eq!(first["service"], "logged");
    assert_eq!(first["request"]["method"], "GET");
    assert_eq!(first["request"]["client_ip"], "127.0.0.1");
    assert_eq!(first["status"], 200);
    assert!(first["size"].is_u64() && first["duration"].is_f64(), "{first}");
    assert!(lines.iter().any(|l| l["status"] == 503), "{lines:#?}");
    assert!(!lines.iter().any(|l| l["service"] == "grafana"));
    logged.shutdown().await;
}
