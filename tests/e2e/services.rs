//! Issue 4: `snirouter services plan|sync` (the real binary) against the simulated
//! tailscaled and control API with the 14 harness services, and `run` with
//! `manage_services = true`.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{Value, json};
use snirouter_testkit::SimConfig;
use snirouter_testkit::control::{SimControl, SimControlConfig};

use crate::harness::*;
use crate::operate::{cfg, cli, service, status_json, wait_status};

pub(crate) async fn services(cmd: &str, config: &Path) -> Output {
    tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_snirouter"))
            .args(["services", cmd, "--config"])
            .arg(config)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("services command finished in time")
    .expect("run snirouter services")
}

pub(crate) fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

pub(crate) fn target(env: &Env) -> String {
    env.proxy.expect("proxy listener").to_string()
}

/// The node's own handlers plus another client's service: must survive every sync.
fn foreign() -> Value {
    json!({
        "TCP": {"443": {"HTTPS": true}},
        "Web": {format!("storage.{SUFFIX}:443"): {"Handlers": {"/": {"Proxy": "http://127.0.0.1:9999"}}}},
        "Services": {"svc:other": {"TCP": {"443": {"HTTPS": true}}}}
    })
}

fn expected(env: &Env, names: &[&str]) -> Value {
    let mut cfg = foreign();
    for n in names {
        cfg["Services"][format!("svc:{n}")] = json!({"TCP": {"443": {"TCPForward": target(env), "ProxyProtocol": 2}}});
    }
    cfg
}

/// Drops `[services.NAME]` from the harness config.
fn remove_service(env: &Env, name: &str) {
    let text = std::fs::read_to_string(&env.config).expect("config");
    let start = text.find(&format!("[services.{name}]\n")).expect("service in config");
    let end = text[start..].find("\n\n").map(|i| start + i + 2).expect("end of service");
    std::fs::write(&env.config, format!("{}{}", &text[..start], &text[end..])).expect("write config");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_plan_and_sync_fourteen_services() {
    let env = Env::start(EnvOptions { proxy_protocol: true, start_router: false, ..EnvOptions::default() }).await;
    env.sim.set_serve_config(foreign());
    env.sim.set_advertised_services(&["svc:other"]);

    let out = services("plan", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("+ serve-config  Services[").count(), 14, "{stdout}");
    assert_eq!(stdout.matches("+ prefs         AdvertiseServices += svc:").count(), 14, "{stdout}");
    assert!(stdout.contains("28 change(s)."), "{stdout}");
    // No API credentials: the admin-console steps and the policy for exactly these names.
    assert!(stdout.contains("Define a Service"), "{stdout}");
    assert!(stdout.contains("\"svc:navidrome\": [\"tag:storage\"],"), "{stdout}");
    assert!(stdout.contains("\"ip\": [\"tcp:443\"]"), "{stdout}");
    assert_eq!(env.sim.serve_config(), foreign(), "plan touches nothing");

    let out = services("sync", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("Applied 28 change(s)."), "{stdout}");
    assert_eq!(env.sim.serve_config(), expected(&env, &SERVICES));
    let mut want = vec!["svc:other".to_owned()];
    want.extend(SERVICES.iter().map(|n| format!("svc:{n}")));
    assert_eq!(env.sim.advertised_services(), want);

    // Idempotent.
    let out = services("sync", &env.config).await;
    let (stdout, _) = text(&out);
    assert!(out.status.success());
    assert!(stdout.contains("No changes"), "{stdout}");
    assert_eq!(env.sim.serve_config(), expected(&env, &SERVICES));

    // Removing a service from the config removes exactly snirouter's entries; another
    // writer's concurrent change (412) is retried and survives.
    remove_service(&env, "grafana");
    let mut raced = expected(&env, &SERVICES);
    raced["Services"]["svc:late"] = json!({"TCP": {"443": {"TCPForward": "127.0.0.1:7000"}}});
    env.sim.race_next_serve_config_write(raced.clone());
    let out = services("sync", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("- serve-config  Services[\"svc:grafana\"]"), "{stdout}");
    assert!(stdout.contains("AdvertiseServices -= svc:grafana"), "{stdout}");
    assert!(stdout.contains("retried 1 time"), "{stdout}");
    let rest: Vec<&str> = SERVICES.iter().copied().filter(|n| *n != "grafana").collect();
    let mut want_cfg = expected(&env, &rest);
    want_cfg["Services"]["svc:late"] = raced["Services"]["svc:late"].clone();
    assert_eq!(env.sim.serve_config(), want_cfg);
    assert!(!env.sim.advertised_services().contains(&"svc:grafana".to_owned()));
    assert!(env.sim.advertised_services().contains(&"svc:other".to_owned()));
    let statuses: Vec<u16> = env
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query.contains("serve-config"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [200, 412, 200]);
}

/// A simulated control API, its credential files and the `[tailscale.api]` table for them.
pub(crate) async fn control_api() -> (SimControl, TempDir, String) {
    let api = SimControl::start(SimControlConfig::default()).await.expect("control sim");
    let secrets = temp_dir("api");
    let c = api.config();
    std::fs::write(secrets.path().join("id"), &c.client_id).expect("id");
    std::fs::write(secrets.path().join("secret"), &c.client_secret).expect("secret");
    let tailscale = format!(
        "[tailscale.api]\nclient_id_file = \"{}\"\nclient_secret_file = \"{}\"\nbase_url = \"{}\"\ntags = [\"tag:storage-svc\"]\n",
        secrets.path().join("id").display(),
        secrets.path().join("secret").display(),
        api.base_url()
    );
    (api, secrets, tailscale)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sync_defines_services_through_the_control_api() {
    let (api, _secrets, tailscale) = control_api().await;
    let env =
        Env::start(EnvOptions { proxy_protocol: true, start_router: false, tailscale, ..EnvOptions::default() }).await;
    let before = api.insert_service(json!({"name": "svc:grafana", "ports": ["tcp:443"], "comment": "by hand"}));
    // This node is its only host, so snirouter may add its tags (with other hosts it
    // would not: tests/e2e/several_hosts.rs).
    api.update(|c| c.hosts = vec![(env.sim.stable_id(), "approved:auto".to_owned())]);

    let out = services("plan", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.matches("+ control       define svc:").count(), 13, "{stdout}");
    assert!(stdout.contains("~ control       update svc:grafana: tags += tag:storage-svc (addrs kept)"), "{stdout}");
    assert!(!stdout.contains("Define a Service"), "no manual steps with API credentials: {stdout}");

    let out = services("sync", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let defined = api.services();
    assert_eq!(defined.len(), 14);
    assert_eq!(defined["svc:grafana"]["addrs"], before["addrs"], "addrs kept on update");
    assert_eq!(defined["svc:grafana"]["tags"], json!(["tag:storage-svc"]));
    for n in SERVICES {
        let s = &defined[&format!("svc:{n}")];
        assert_eq!(s["ports"], json!(["tcp:443"]), "{n}");
        assert_eq!(s["addrs"].as_array().map(Vec::len), Some(2), "{n}");
    }
    assert_eq!(env.sim.serve_config()["Services"].as_object().map(|m| m.len()), Some(14));
    assert!(text(&services("sync", &env.config).await).0.contains("No changes"));

    // An API error is surfaced verbatim with its status; the local side is still synced.
    api.update(|c| c.allowed_tags = Some(vec!["tag:storage-svc".to_owned()]));
    remove_service(&env, "prometheus");
    std::fs::write(
        &env.config,
        std::fs::read_to_string(&env.config).expect("cfg").replace("tag:storage-svc", "tag:nope"),
    )
    .expect("write");
    let out = services("sync", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("control API answered HTTP 400: tag \"tag:nope\" is not a valid tag: it must be defined in the policy's tagOwners"),
        "{stdout}"
    );
    assert!(stdout.contains("- serve-config  Services[\"svc:prometheus\"]"), "{stdout}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn services_sync_refuses_untagged_hosts_and_locked_config() {
    let mut opts = EnvOptions { proxy_protocol: true, start_router: false, ..EnvOptions::default() };
    opts.sim.tags.clear();
    let env = Env::start(opts).await;
    let out = services("sync", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("is not tagged"), "{stderr}");
    assert!(stderr.contains("fix: tag the host, e.g. `tailscale up --advertise-tags=tag:storage`"), "{stderr}");
    assert!(env.sim.serve_config().is_null(), "nothing written");

    env.sim.update(|c| {
        c.tags = vec!["tag:storage".to_owned()];
        c.locked_config_file = true;
    });
    let out = services("sync", &env.config).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("locked config file"), "{stderr}");
    assert!(stderr.contains("fix: tailscaled was started with --config"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_with_manage_services_syncs_at_start() {
    let opts =
        EnvOptions { proxy_protocol: true, tailscale: "manage_services = true\n".to_owned(), ..EnvOptions::default() };
    let env = Env::start(opts).await;
    env.router()
        .wait_log("the startup sync", Duration::from_secs(30), |l| l.contains("Tailscale Services synced"))
        .await;
    let cfg = env.sim.serve_config();
    for n in SERVICES {
        assert_eq!(cfg["Services"][format!("svc:{n}")]["TCP"]["443"]["TCPForward"], target(&env).as_str(), "{n}");
    }
    assert_eq!(env.sim.advertised_services().len(), 14);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reuses_one_control_api_token() {
    let (api, _secrets, tailscale) = control_api().await;
    let env = Env::start(EnvOptions { tailscale, ..EnvOptions::default() }).await;
    env.wait_serving("grafana", Duration::from_secs(60)).await;
    let socket = env.admin_socket.to_str().expect("path").to_owned();
    for _ in 0..3 {
        let body = crate::operate::metrics_over(&["--unix-socket", &socket, "http://snirouter/status"]).await;
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("status JSON: {e}\n{body}"));
        assert!(v["services"].is_array() || v["services"].is_object(), "{v}");
    }
    let tokens = api.requests().iter().filter(|r| r.path == "/api/v2/oauth/token").count();
    let reads = api.requests().iter().filter(|r| r.path.contains("/services")).count();
    assert!(reads >= 3, "status read the control API {reads} times");
    assert_eq!(tokens, 1, "one OAuth token for three status reads (expires_in is 3600)");
}

/// Issue 14, the whole fresh-install path: nothing is defined, advertised or approved.
/// The router's startup sync defines and advertises every service; control lists a name
/// in CertDomains only once the host is approved for it; the router then fetches and
/// serves the certificate without a restart, and `status`/`doctor` say what is pending
/// at each step.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_install_serves_once_the_host_is_approved_without_a_restart() {
    let (api, _secrets, tailscale) = control_api().await;
    let mut sim = SimConfig::storage(SUFFIX, &SERVICES);
    sim.approved_services.clear();
    sim.derive_service_cert_domains = true;
    // Long enough for status to be polled while tailscaled's ACME flow runs.
    sim.first_issue_delay = Duration::from_secs(3);
    let opts = EnvOptions {
        sim,
        proxy_protocol: true,
        tailscale: format!("manage_services = true\n{tailscale}"),
        ..EnvOptions::default()
    };
    let env = Env::start(opts).await;
    api.update(|c| c.hosts = vec![(env.sim.stable_id(), "not-approved".to_owned())]);
    env.router()
        .wait_log("the startup sync", Duration::from_secs(30), |l| l.contains("Tailscale Services synced"))
        .await;
    assert_eq!(api.services().len(), 14, "every service defined");
    assert_eq!(env.sim.advertised_services().len(), 14);
    assert_eq!(env.sim.config().cert_domains, Some(vec![fqdn("storage")]), "nothing approved: only the node");

    // Pending approval: status and doctor name it.
    let (code, st) =
        wait_status(&env, "approval pending", |st| service(st, "grafana")["tailscale_service"]["approved"] == false)
            .await;
    assert_eq!(code, 1, "not serving yet");
    let pid = st["pid"].clone();
    let grafana = service(&st, "grafana");
    assert_eq!(grafana["serving"], false);
    assert_eq!(grafana["in_cert_domains"], false);
    assert_eq!(grafana["tailscale_service"]["approval_level"], "not-approved", "{grafana:#}");
    let (_, human, _) = cli(&["status", "--config", cfg(&env)]).await;
    assert!(human.contains("not approved for svc:grafana"), "{human}");
    let (_, doctor, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    assert!(doctor.contains("defined yes, advertised yes, host approved NO"), "{doctor}");
    assert!(doctor.contains("approve this host for it") && !doctor.contains("define svc:grafana"), "{doctor}");

    // Approval: control marks the host approved and sends a netmap with the names.
    api.update(|c| c.hosts = vec![(env.sim.stable_id(), "approved:manual".to_owned())]);
    env.sim.update(|c| c.approved_services = SERVICES.iter().map(|s| (*s).to_owned()).collect());
    let (_, st) = wait_status(&env, "tailscaled fetching", |st| {
        st["tailscaled_health"].as_array().is_some_and(|h| {
            h.iter().any(|w| w.as_str().is_some_and(|w| w.starts_with("Fetching TLS certificate via ACME for: ")))
        }) && service(st, "grafana")["problems"].to_string().contains("tailscaled is fetching it")
    })
    .await;
    assert_eq!(service(&st, "grafana")["in_cert_domains"], true);

    let (code, st) = wait_status(&env, "every service serving", |st| st["serving"] == true).await;
    assert_eq!(code, 0);
    assert_eq!(st["pid"], pid, "served without a restart");
    assert_eq!(st["tailscaled_health"], json!([]), "the pending warning cleared");
    env.wait_serving("grafana", Duration::from_secs(10)).await;
    let (_, human, _) = cli(&["status", "--config", cfg(&env)]).await;
    assert!(!human.contains("tailscaled:"), "{human}");
}

/// The router as the NixOS module installs it, run for real as an unprivileged user
/// (`nobody`) against a simulated tailscaled that decides by the caller's uid, as the real
/// one does: certificates through `TS_PERMIT_CERT_UID`, writes only for root. The router's
/// own sync is refused with the ways in named; root's `services sync` (the unit's
/// `ExecStartPre=-+`) writes; the router, with `manage_services` off, serves every name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_root_router_serves_while_root_syncs_the_services() {
    const NOBODY: u32 = 65534;
    if !nix::unistd::Uid::effective().is_root() || !Path::new("/usr/bin/setpriv").exists() {
        eprintln!("SKIPPED: needs root and setpriv to run the router as another user");
        return;
    }
    let mut opts = EnvOptions {
        proxy_protocol: true,
        start_router: false,
        tailscale: "manage_services = true\n".into(),
        ..EnvOptions::default()
    };
    opts.sim.permit_cert_uid = Some(NOBODY);
    let mut env = Env::start(opts).await;
    // What the unit gives the service user: a state and a runtime directory of its own.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let own = env.dir.path().join("nobody");
    std::fs::create_dir(&own).expect("mkdir");
    std::os::unix::fs::chown(&own, Some(NOBODY), Some(NOBODY)).expect("chown");
    let config = std::fs::read_to_string(&env.config).expect("config");
    let cache = env.dir.path().join("cache").display().to_string();
    let config = config
        .replace(&cache, &own.join("cache").display().to_string())
        .replace(&env.admin_socket.display().to_string(), &own.join("admin.sock").display().to_string());
    std::fs::write(&env.config, &config).expect("config");

    let start_as_nobody = |env: &Env, tag: &str| {
        let log = env.dir.path().join(format!("router-nobody-{tag}.log"));
        let child = std::process::Command::new("/usr/bin/setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(env!("CARGO_BIN_EXE_snirouter"))
            .args(["run", "--config"])
            .arg(&env.config)
            .env("SNIROUTER_LOG", "info")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("setpriv snirouter");
        RouterProcess { child, log }
    };

    // 1. manage_services = true as nobody: certificates yes, writes no — and it says how.
    env.router = Some(start_as_nobody(&env, "1"));
    env.wait_serving("grafana", Duration::from_secs(60)).await;
    let logs = env
        .router()
        .wait_log("the refused sync", Duration::from_secs(30), |l| l.contains("Tailscale Services sync"))
        .await;
    assert!(logs.contains("denied"), "tailscaled refuses nobody's writes:\n{logs}");
    assert!(logs.contains("run `snirouter services sync` as root"), "the fix names the root sync:\n{logs}");
    assert!(env.sim.advertised_services().is_empty(), "nothing was written");
    env.router.take();

    // 2. The module's shape: root syncs (ExecStartPre=-+), the router leaves it off.
    let sync = services("sync", &env.config).await;
    assert!(sync.status.success(), "root's sync: {:?}", text(&sync));
    assert!(env.sim.advertised_services().contains(&"svc:grafana".to_owned()), "{:?}", env.sim.advertised_services());
    std::fs::write(&env.config, config.replace("manage_services = true", "manage_services = false")).expect("config");
    env.router = Some(start_as_nobody(&env, "2"));
    env.wait_serving("grafana", Duration::from_secs(60)).await;
    env.wait_serving("jellyfin", Duration::from_secs(60)).await;
    assert!(!env.router().logs().contains("denied"), "{}", env.router().logs());

    // 3. The heal timer's shape: `services sync --local` as root says nothing while all is
    // in place, puts back a `serve reset` as drift, and the record is `doctor`'s.
    let (code, out, err) = cli(&["services", "sync", "--local", "--config", cfg(&env)]).await;
    assert_eq!((code, out.as_str()), (0, ""), "silent when nothing changed: {err}");
    env.sim.set_serve_config(json!({}));
    let (code, out, err) = cli(&["services", "sync", "--local", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert!(err.contains("Tailscale Services drifted") && out.contains("Applied 14 change(s)"), "{out}{err}");
    assert_eq!(env.sim.serve_config()["Services"]["svc:grafana"]["TCP"]["443"]["TCPForward"], target(&env).as_str());
    let (_, v) = status_json(&env).await;
    assert_eq!(v["services_drift"]["healed"], 1, "{v:#}");
}

/// tailscaled is not up when the router starts (boot order), then comes up: the sync is
/// retried until it answers. Later something else wipes what the router owns — the shape
/// of `tailscale serve set-config --all` (only another client's entries left, the
/// advertisement reset), then of `tailscale serve reset` (nothing left) — and within one
/// check the handlers and the advertisement are back, everything else kept, logged and
/// counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_services_are_retried_at_boot_and_healed_after_someone_else_wipes_them() {
    let opts = EnvOptions {
        proxy_protocol: true,
        start_router: false,
        tailscale: "manage_services = true\nmagic_dns_suffix = \"tailnet-e2e.ts.net\"\n".to_owned(),
        ..EnvOptions::default()
    };
    let mut env = Env::start(opts).await;
    let socket = env.dir.path().join("ts.sock");
    let hidden = env.dir.path().join("ts.sock.later");
    std::fs::rename(&socket, &hidden).expect("tailscaled not up yet");
    env.start_router().await;
    env.router()
        .wait_log("the failed sync", Duration::from_secs(30), |l| l.contains("sync failed; serving anyway, retrying"))
        .await;
    std::fs::rename(&hidden, &socket).expect("tailscaled comes up");
    let owned = |env: &Env| {
        let cfg = env.sim.serve_config();
        let advertised = env.sim.advertised_services();
        SERVICES.iter().all(|n| {
            cfg["Services"][format!("svc:{n}")]["TCP"]["443"]["TCPForward"] == target(env).as_str()
                && advertised.contains(&format!("svc:{n}"))
        })
    };
    let wait_owned = |what: &'static str| {
        let env = &env;
        async move {
            let deadline = std::time::Instant::now() + Duration::from_secs(60);
            while !owned(env) {
                assert!(std::time::Instant::now() < deadline, "{what}: not back in 60 s\n{}", env.router().logs());
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    wait_owned("after tailscaled came up").await;

    // `tailscale serve set-config --all`: another client's config replaces everything.
    env.sim.set_serve_config(foreign());
    env.sim.set_advertised_services(&["svc:other"]);
    wait_owned("after set-config --all").await;
    let cfg = env.sim.serve_config();
    assert_eq!(cfg["Services"]["svc:other"], foreign()["Services"]["svc:other"], "the other entries are kept");
    assert!(env.sim.advertised_services().contains(&"svc:other".to_owned()));
    // `tailscale serve reset`: nothing left.
    env.sim.set_serve_config(json!({}));
    wait_owned("after serve reset").await;

    let logs = env.router().logs();
    assert!(logs.contains("Tailscale Services drifted"), "{logs}");
    // The reset advertisement was announced on tailscaled's IPN bus: that woke the check.
    assert!(
        logs.lines().any(|l| l.contains("Tailscale Services drifted") && l.contains("tailscaled's prefs changed")),
        "{logs}"
    );
    let metrics = crate::operate::metrics_over(&[
        "--unix-socket",
        env.admin_socket.to_str().expect("path"),
        "http://snirouter/metrics",
    ])
    .await;
    let healed = metrics.lines().find(|l| l.starts_with("snirouter_services_healed_total ")).expect("the counter");
    assert!(!healed.ends_with(" 0"), "{healed}");
}

/// Polls the simulated daemon's serve config until `pred` holds (60 s, a heal takes one
/// 15 s check).
async fn wait_serve_config(env: &Env, what: &str, pred: impl Fn(&Value) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !pred(&env.sim.serve_config()) {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within 60 s\n{:#}\n{}",
            env.sim.serve_config(),
            env.router().logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A service's further TCP ports (Forgejo's SSH on 22; MQTT with PROXY v2 on 1883) are
/// written beside TCP 443, put back after a wipe of one port and after a `serve reset`,
/// reported by `status`, and released by a reload that drops one — which is not drift.
/// tailscaled's own view of the definition (`/localapi/v0/services`, listing tcp:443
/// only) shows in `plan`, `status` and `doctor`; its per-Service byte counters in
/// `status`; `doctor` names the other writer once the heals repeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_further_tcp_port_is_configured_healed_reported_and_released() {
    let mut sim = SimConfig::storage(SUFFIX, &SERVICES);
    sim.visible_services = [("svc:grafana".to_owned(), vec!["tcp:443".to_owned()])].into();
    sim.serve_bytes = [("svc:grafana".to_owned(), (1536, 3 * 1024 * 1024))].into();
    let opts = EnvOptions {
        sim,
        proxy_protocol: true,
        start_router: false,
        tailscale: format!("manage_services = true\nmagic_dns_suffix = \"{SUFFIX}\"\n"),
        ..EnvOptions::default()
    };
    let mut env = Env::start(opts).await;
    let tcp = r#"tcp = { 22 = "127.0.0.1:2222", 1883 = { to = "127.0.0.1:1883", proxy_protocol = 2 } }"#;
    add_to_service(&env.config, "grafana", tcp);
    let (code, out, err) = cli(&["services", "plan", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    for needle in [
        r#"+ serve-config  Services["svc:grafana"].TCP["22"] = {"TCPForward":"127.0.0.1:2222"}"#,
        r#"TCP["1883"] = {"ProxyProtocol":2,"TCPForward":"127.0.0.1:1883"}"#,
        "the definition of svc:grafana does not list tcp:22, tcp:1883",
        "svc:grafana   tcp:443, tcp:22, tcp:1883",
    ] {
        assert!(out.contains(needle), "plan lacks {needle:?}:\n{out}");
    }
    env.start_router().await;
    let ssh = json!({"TCPForward": "127.0.0.1:2222"});
    let mqtt = json!({"TCPForward": "127.0.0.1:1883", "ProxyProtocol": 2});
    let all_three = |c: &Value| {
        let t = &c["Services"]["svc:grafana"]["TCP"];
        t["22"] == ssh && t["1883"] == mqtt && t["443"]["TCPForward"] == target(&env).as_str()
    };
    wait_serve_config(&env, "the three handlers", all_three).await;

    // Someone removes port 22 only; later `tailscale serve reset` removes everything.
    let mut wiped = env.sim.serve_config();
    wiped["Services"]["svc:grafana"]["TCP"].as_object_mut().expect("TCP").remove("22");
    env.sim.set_serve_config(wiped);
    wait_serve_config(&env, "port 22 after its wipe", all_three).await;
    env.sim.set_serve_config(json!({}));
    wait_serve_config(&env, "every handler after serve reset", all_three).await;

    let (_, v) = wait_status(&env, "the tcp ports in status", |v| {
        service(v, "grafana")["tailscale_service"]["tcp"][0]["handler"]["state"] == "correct"
    })
    .await;
    let ts = &service(&v, "grafana")["tailscale_service"];
    assert_eq!(ts["tcp"][0]["to"], "127.0.0.1:2222", "{ts:#}");
    assert_eq!((ts["tcp"][1]["port"].as_u64(), ts["tcp"][1]["managed"].as_bool()), (Some(1883), Some(true)), "{ts:#}");
    assert_eq!(ts["bytes"], json!({"inbound": 1536, "outbound": 3 * 1024 * 1024}), "{ts:#}");
    assert_eq!(ts["definition"], json!({"state": "missing_ports", "ports": ["tcp:22", "tcp:1883"]}), "{ts:#}");
    assert_eq!(v["services_drift"]["healed"], 2, "{v:#}");
    let (_, text, _) = cli(&["status", "--config", cfg(&env)]).await;
    for needle in ["tcp 22 → 127.0.0.1:2222 (in place)", "through tailscaled: 1.5 KiB in, 3.0 MiB out"] {
        assert!(text.contains(needle), "status lacks {needle:?}:\n{text}");
    }

    let (_, out, _) = cli(&["doctor", "--config", cfg(&env)]).await;
    let checks = crate::operate::doctor_checks(&out);
    let find = |name: &str| checks.iter().find(|(_, n, _)| n.starts_with(name)).cloned();
    let (level, _, text) = find("definition: svc:grafana").unwrap_or_else(|| panic!("no definition check:\n{out}"));
    assert!(level == "FAIL" && text.contains("tcp:22, tcp:1883") && text.contains("fix:"), "{out}");
    let (level, _, text) = find("Services drift").unwrap_or_else(|| panic!("no drift check:\n{out}"));
    assert!(level == "WARN" && text.contains("2 times") && text.contains("one writer"), "{out}");

    // A reload drops port 1883: its handler goes, 22 and 443 stay, and it is no drift.
    let config = std::fs::read_to_string(&env.config).expect("config");
    std::fs::write(&env.config, config.replace(tcp, r#"tcp = { 22 = "127.0.0.1:2222" }"#)).expect("write");
    let (code, out, err) = cli(&["reload", "--config", cfg(&env)]).await;
    assert_eq!(code, 0, "{out}{err}");
    wait_serve_config(&env, "1883 released by the reload", |c| {
        let t = &c["Services"]["svc:grafana"]["TCP"];
        t.get("1883").is_none() && t["22"] == ssh && t["443"]["TCPForward"] == target(&env).as_str()
    })
    .await;
    let (_, v) = status_json(&env).await;
    assert_eq!(v["services_drift"]["healed"], 2, "a reload is not drift: {v:#}");
    let owned = snirouter_services::Ownership::load(&env.dir.path().join("cache")).expect("ownership");
    assert_eq!(owned.get("svc:grafana").ports(), [443, 22]);
}
