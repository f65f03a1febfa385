//! plan / sync / observe against the simulated tailscaled and control API.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use snirouter_services::{Change, ControlClient, Error, HandlerState, Ownership, observe, plan, sync};
use snirouter_testkit::control::{SimControl, SimControlConfig};
use snirouter_testkit::tailscaled::{SimConfig, SimTailscaled};
use tempfile::TempDir;

const SUFFIX: &str = "tailnet-svc.ts.net";
const NAMES: [&str; 14] = snirouter_testkit::SAMPLE_SERVICES;
const TARGET: &str = "127.0.0.1:8443";

fn config(dir: &Path, names: &[&str], extra_tailscale: &str) -> Config {
    let mut src = format!(
        "[tailscale]\nsocket = \"{}\"\n{extra_tailscale}\n[listen]\nproxy_protocol = [\"{TARGET}\"]\n[cache]\ndir = \"{}\"\n",
        dir.join("ts.sock").display(),
        dir.join("cache").display()
    );
    for n in names {
        src.push_str(&format!("[services.{n}]\nupstream = \"http://127.0.0.1:3000\"\n"));
    }
    snirouter_config::parse(&src, "test.toml").expect("valid config")
}

struct Env {
    dir: TempDir,
    sim: SimTailscaled,
    local: LocalClient,
}

async fn env(sim: SimConfig) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let sim = SimTailscaled::start(dir.path().join("ts.sock"), sim).await.expect("sim");
    let local = LocalClient::new(sim.socket_path()).expect("client").with_default_timeout(Duration::from_secs(5));
    Env { dir, sim, local }
}

fn handler() -> Value {
    json!({"TCPForward": TARGET, "ProxyProtocol": 2})
}

/// The node's own handlers and another client's service, which must survive every sync.
fn foreign_config() -> Value {
    json!({
        "TCP": {"443": {"HTTPS": true}},
        "Web": {format!("storage.{SUFFIX}:443"): {"Handlers": {"/": {"Proxy": "http://127.0.0.1:9999"}}}},
        "Services": {"svc:other": {"TCP": {"443": {"HTTPS": true}}}}
    })
}

fn expected(names: &[&str]) -> Value {
    let mut cfg = foreign_config();
    for n in names {
        cfg["Services"][format!("svc:{n}")] = json!({"TCP": {"443": handler()}});
    }
    cfg
}

fn svcs(names: &[&str]) -> Vec<String> {
    names.iter().map(|n| format!("svc:{n}")).collect()
}

#[tokio::test]
async fn plan_touches_nothing_then_sync_merges_and_is_idempotent() {
    let e = env(SimConfig::storage(SUFFIX, &NAMES)).await;
    e.sim.set_serve_config(foreign_config());
    e.sim.set_advertised_services(&["svc:other"]);
    let cfg = config(e.dir.path(), &NAMES, "");

    let p = plan(&cfg, &e.local, None).await.expect("plan");
    assert_eq!(p.changes.len(), 28, "{p}");
    assert!(p.blockers.is_empty() && p.conflicts.is_empty(), "{p}");
    let text = p.to_string();
    assert!(text.contains("+ serve-config  Services[\"svc:grafana\"].TCP[\"443\"]"), "{text}");
    assert!(text.contains("AdvertiseServices += svc:prometheus"), "{text}");
    assert_eq!(e.sim.serve_config(), foreign_config(), "plan must not write");
    assert_eq!(e.sim.advertised_services(), ["svc:other"]);

    let r = sync(&cfg, &e.local, None).await.expect("sync");
    assert_eq!(r.applied.len(), 28, "{r}");
    assert!(r.is_clean(), "{r}");
    assert_eq!(e.sim.serve_config(), expected(&NAMES));
    let mut want = vec!["svc:other".to_owned()];
    want.extend(svcs(&NAMES));
    assert_eq!(e.sim.advertised_services(), want);
    let owned = Ownership::load(&cfg.cache.dir).expect("ownership");
    assert_eq!(owned.services.len(), 14);
    assert!(owned.services.values().all(|o| o.advertised && o.handler == Some(handler())));

    let again = sync(&cfg, &e.local, None).await.expect("second sync");
    assert!(again.is_noop(), "{again}");
    assert!(again.to_string().contains("No changes"), "{again}");
    assert!(plan(&cfg, &e.local, None).await.expect("plan").is_noop());
    assert_eq!(e.sim.serve_config(), expected(&NAMES));
    // Only one serve-config write happened.
    let posts =
        e.sim.requests().iter().filter(|r| r.method == "POST" && r.path_and_query.contains("serve-config")).count();
    assert_eq!(posts, 1);
}

#[tokio::test]
async fn a_concurrent_change_is_retried_and_kept() {
    let e = env(SimConfig::storage(SUFFIX, &NAMES)).await;
    e.sim.set_serve_config(foreign_config());
    let mut raced = foreign_config();
    raced["Services"]["svc:late"] = json!({"TCP": {"443": {"TCPForward": "127.0.0.1:7000"}}});
    e.sim.race_next_serve_config_write(raced.clone());
    let cfg = config(e.dir.path(), &NAMES, "");
    let r = sync(&cfg, &e.local, None).await.expect("sync");
    assert_eq!(r.retries, 1, "{r}");
    assert!(r.to_string().contains("retried 1 time"), "{r}");
    let statuses: Vec<u16> = e
        .sim
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path_and_query.contains("serve-config"))
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, [412, 200]);
    let mut want = expected(&NAMES);
    want["Services"]["svc:late"] = raced["Services"]["svc:late"].clone();
    assert_eq!(e.sim.serve_config(), want, "the other writer's change must survive");
}

#[tokio::test]
async fn removing_a_service_removes_only_what_snirouter_added() {
    let e = env(SimConfig::storage(SUFFIX, &NAMES)).await;
    e.sim.set_serve_config(foreign_config());
    // jellyfin was advertised before snirouter: not snirouter's to withdraw.
    e.sim.set_advertised_services(&["svc:other", "svc:jellyfin"]);
    sync(&config(e.dir.path(), &NAMES, ""), &e.local, None).await.expect("sync");

    let fewer: Vec<&str> = NAMES.iter().copied().filter(|n| !matches!(*n, "grafana" | "jellyfin")).collect();
    let cfg = config(e.dir.path(), &fewer, "");
    let p = plan(&cfg, &e.local, None).await.expect("plan");
    let kinds: Vec<String> = p.changes.iter().map(|c| format!("{}", c)).collect();
    assert_eq!(p.changes.len(), 3, "{p}");
    assert!(p.changes.contains(&Change::Unadvertise { service: "svc:grafana".into() }), "{kinds:?}");
    let r = sync(&cfg, &e.local, None).await.expect("sync");
    assert_eq!(r.applied.len(), 3, "{r}");
    assert_eq!(e.sim.serve_config(), expected(&fewer));
    let adv = e.sim.advertised_services();
    assert!(adv.contains(&"svc:jellyfin".to_owned()), "not ours: {adv:?}");
    assert!(adv.contains(&"svc:other".to_owned()));
    assert!(!adv.contains(&"svc:grafana".to_owned()));
    assert_eq!(adv.len(), 14);
    assert!(sync(&cfg, &e.local, None).await.expect("sync").is_noop());

    // Everything removed: the foreign config is exactly what is left.
    let cfg = config(e.dir.path(), &["grafana"], "");
    sync(&cfg, &e.local, None).await.expect("sync");
    assert_eq!(e.sim.serve_config(), expected(&["grafana"]));
}

#[tokio::test]
async fn a_foreign_handler_is_a_conflict_and_left_alone() {
    let e = env(SimConfig::storage(SUFFIX, &NAMES)).await;
    let mut cfg_json = foreign_config();
    cfg_json["Services"]["svc:grafana"] = json!({"TCP": {"443": {"HTTPS": true}}, "Web": {format!("grafana.{SUFFIX}:443"): {"Handlers": {"/": {"Proxy": "http://127.0.0.1:3000"}}}}});
    e.sim.set_serve_config(cfg_json.clone());
    let cfg = config(e.dir.path(), &["grafana", "jellyfin"], "");
    let r = sync(&cfg, &e.local, None).await.expect("sync");
    assert_eq!(r.conflicts.len(), 1, "{r}");
    assert_eq!(r.conflicts[0].service, "svc:grafana");
    assert!(r.to_string().contains("! conflict      svc:grafana"), "{r}");
    assert_eq!(e.sim.serve_config()["Services"]["svc:grafana"], cfg_json["Services"]["svc:grafana"]);
    assert_eq!(e.sim.serve_config()["Services"]["svc:jellyfin"]["TCP"]["443"], handler());
    assert_eq!(e.sim.advertised_services(), ["svc:jellyfin"], "a conflicting service is not advertised");
    let status = e.local.status().await;
    let states = observe(&cfg, &e.local, status.as_ref(), None).await;
    assert!(matches!(states[0].handler, HandlerState::Foreign { .. }));
    assert!(!states[0].managed);
}

#[tokio::test]
async fn untagged_locked_and_no_listener_are_clear_errors() {
    let mut sim = SimConfig::storage(SUFFIX, &NAMES);
    sim.tags.clear();
    let e = env(sim).await;
    let cfg = config(e.dir.path(), &NAMES, "");
    let err = sync(&cfg, &e.local, None).await.expect_err("untagged");
    assert!(matches!(err, Error::NotTagged { .. }), "{err}");
    assert!(err.fix().contains("tailscale up --advertise-tags=tag:"), "{}", err.fix());
    let p = plan(&cfg, &e.local, None).await.expect("plan");
    assert_eq!(p.blockers.len(), 1);
    assert!(p.to_string().contains("--advertise-tags"), "{p}");
    assert!(e.sim.requests().iter().all(|r| r.method == "GET"), "nothing written");

    e.sim.update(|c| {
        c.tags = vec!["tag:storage".into()];
        c.locked_config_file = true;
    });
    let err = sync(&cfg, &e.local, None).await.expect_err("locked");
    assert!(matches!(err, Error::ConfigLocked), "{err}");
    assert!(err.fix().contains("--config"), "{}", err.fix());
    assert!(Ownership::load(&cfg.cache.dir).expect("load").services.is_empty(), "intent rolled back");

    // A prefs edit refused by tailscaled ({"Error": …}, capital E) is reported verbatim.
    e.sim.update(|c| {
        c.locked_config_file = false;
        c.edit_prefs_error = Some("can't set Internal fields".into());
    });
    let err = sync(&cfg, &e.local, None).await.expect_err("prefs refused");
    assert!(err.to_string().contains("can't set Internal fields"), "{err}");
    assert!(!err.to_string().contains("{\"Error\""), "the message, not the JSON body: {err}");
    e.sim.update(|c| c.edit_prefs_error = None);

    let src = format!(
        "[tailscale]\nsocket = \"{}\"\n[listen]\nhttps = [\"127.0.0.1:8443\"]\n[services.grafana]\nupstream = \"http://127.0.0.1:1\"\n",
        e.sim.socket_path().display()
    );
    let cfg = snirouter_config::parse(&src, "t.toml").expect("valid");
    let err = sync(&cfg, &e.local, None).await.expect_err("no listener");
    assert!(matches!(err, Error::NoProxyListener), "{err}");
    assert!(err.fix().contains("proxy_protocol = [\"127.0.0.1:8443\"]"));
}

/// tailscaled lets only root, or an operator who may `sudo tailscale`, write a serve config
/// with a Path handler; snirouter writes another tool's Path handler back with its own.
#[tokio::test]
async fn a_path_handler_needs_an_admin_and_the_refusal_says_how() {
    let mut sim = SimConfig::storage(SUFFIX, &NAMES);
    sim.peer_uid = Some(1000);
    sim.operator_uid = Some(1000);
    let e = env(sim).await;
    let mut foreign = foreign_config();
    foreign["Web"][format!("storage.{SUFFIX}:443")]["Handlers"]["/files"] = json!({"Path": "/srv/files"});
    e.sim.set_serve_config(foreign.clone());
    let cfg = config(e.dir.path(), &["grafana"], "");

    let err = sync(&cfg, &e.local, None).await.expect_err("operator without sudo");
    assert!(err.to_string().contains("Path handler or a unix: target"), "{err}");
    assert!(err.fix().contains("sudo snirouter services sync"), "{}", err.fix());
    assert_eq!(e.sim.serve_config(), foreign, "nothing written");
    assert!(Ownership::load(&cfg.cache.dir).expect("load").services.values().all(|o| o.handler.is_none()));

    e.sim.update(|c| c.caller_can_sudo_tailscale = true);
    let r = sync(&cfg, &e.local, None).await.expect("an operator with sudo rights may");
    assert!(r.is_clean(), "{r}");
    assert_eq!(e.sim.serve_config()["Services"]["svc:grafana"]["TCP"]["443"], handler());
    assert_eq!(e.sim.serve_config()["Web"], foreign["Web"], "the Path handler is kept");
}

async fn control() -> (SimControl, TempDir) {
    let sim = SimControl::start(SimControlConfig::default()).await.expect("control sim");
    let dir = tempfile::tempdir().expect("temp dir");
    let c = sim.config();
    std::fs::write(dir.path().join("id"), format!("{}\n", c.client_id)).expect("id");
    std::fs::write(dir.path().join("secret"), c.client_secret).expect("secret");
    (sim, dir)
}

fn api_toml(sim: &SimControl, secrets: &Path, tags: &str) -> String {
    format!(
        "[tailscale.api]\nclient_id_file = \"{}\"\nclient_secret_file = \"{}\"\nbase_url = \"{}\"\ntags = [{tags}]\n",
        secrets.join("id").display(),
        secrets.join("secret").display(),
        sim.base_url()
    )
}

#[tokio::test]
async fn control_api_defines_missing_services_and_keeps_addrs() {
    let e = env(SimConfig::storage(SUFFIX, &NAMES)).await;
    let (api_sim, secrets) = control().await;
    let before = api_sim.insert_service(json!({
        "name": "svc:grafana", "addrs": ["100.100.9.9", "fd7a:115c:a1e0::9:9"], "ports": ["tcp:80"], "comment": "by hand",
        "displayName": "Grafana"
    }));
    let cfg = config(e.dir.path(), &NAMES, &api_toml(&api_sim, secrets.path(), "\"tag:storage-svc\""));
    let api = ControlClient::from_config(cfg.tailscale.api.as_ref().expect("api")).expect("client");

    let p = plan(&cfg, &e.local, Some(&api)).await.expect("plan");
    assert!(p.control_api);
    assert_eq!(p.changes.iter().filter(|c| matches!(c, Change::DefineService { .. })).count(), 13, "{p}");
    assert_eq!(api_sim.services().len(), 1, "plan must not write");

    let r = sync(&cfg, &e.local, Some(&api)).await.expect("sync");
    assert!(r.is_clean(), "{r}");
    let services = api_sim.services();
    assert_eq!(services.len(), 14);
    let g = &services["svc:grafana"];
    assert_eq!(g["addrs"], before["addrs"], "addrs kept on update");
    assert_eq!(g["ports"], json!(["tcp:80", "tcp:443"]));
    assert_eq!(g["tags"], json!(["tag:storage-svc"]));
    assert_eq!(g["displayName"], "Grafana", "unknown fields kept");
    assert_eq!(g["comment"], "by hand");
    let j = &services["svc:jellyfin"];
    assert_eq!(j["comment"], "managed by snirouter");
    assert_eq!(j["ports"], json!(["tcp:443"]));
    let addrs = j["addrs"].as_array().expect("addrs");
    assert!(addrs[0].as_str().is_some_and(|a| a.starts_with("100.100.")), "{addrs:?}");
    assert!(addrs[1].as_str().is_some_and(|a| a.starts_with("fd7a:115c:a1e0:")), "{addrs:?}");
    // One token for the whole sync.
    assert_eq!(api_sim.requests().iter().filter(|r| r.path == "/api/v2/oauth/token").count(), 1);

    let again = sync(&cfg, &e.local, Some(&api)).await.expect("sync");
    assert!(again.is_noop(), "{again}");

    let status = e.local.status().await;
    let states = observe(&cfg, &e.local, status.as_ref(), Some(&api)).await;
    assert_eq!(states.len(), 14);
    let s = &states[0];
    assert_eq!(s.service, "svc:grafana");
    assert_eq!(s.fqdn.as_deref(), Some("grafana.tailnet-svc.ts.net"));
    assert_eq!(
        (s.defined, s.advertised, s.approved, s.in_cert_domains),
        (Some(true), Some(true), Some(true), Some(true))
    );
    assert_eq!(s.handler, HandlerState::Correct);
    assert!(s.managed && s.problems.is_empty(), "{s:?}");
    assert_eq!(s.vips.len(), 2);
    assert!(serde_json::to_value(s).is_ok());
}

#[tokio::test]
async fn control_api_errors_are_surfaced_and_vip_services_is_the_fallback() {
    let e = env(SimConfig::storage(SUFFIX, &["grafana"])).await;
    let (api_sim, secrets) = control().await;
    api_sim.set_services_path_missing(true);
    api_sim.update(|c| c.allowed_tags = Some(vec!["tag:storage-svc".into()]));
    let cfg = config(e.dir.path(), &["grafana"], &api_toml(&api_sim, secrets.path(), "\"tag:nope\""));
    let api = ControlClient::from_config(cfg.tailscale.api.as_ref().expect("api")).expect("client");
    let r = sync(&cfg, &e.local, Some(&api)).await.expect("local side still synced");
    assert_eq!(r.errors.len(), 1, "{r}");
    let msg = &r.errors[0];
    assert!(msg.contains("HTTP 400"), "{msg}");
    assert!(msg.contains("tag \"tag:nope\" is not a valid tag: it must be defined in the policy's tagOwners"), "{msg}");
    assert!(msg.contains("/vip-services/svc:grafana"), "fell back: {msg}");
    assert_eq!(e.sim.serve_config()["Services"]["svc:grafana"]["TCP"]["443"], handler());

    // Updating without addrs is refused by the API (the pitfall the client avoids).
    api_sim.insert_service(json!({"name": "svc:x", "ports": ["tcp:443"]}));
    let put = snirouter_services::ServiceInfo {
        name: "svc:x".into(),
        addrs: vec![],
        comment: String::new(),
        ports: vec!["tcp:443".into()],
        tags: vec![],
        extra: Default::default(),
    };
    let err = api.put_service(&put).await.expect_err("addrs required");
    assert!(err.to_string().contains("addrs must contain one IPv4 and one IPv6"), "{err}");

    // Wrong credentials: the OAuth error is surfaced with a fix.
    let bad = ControlClient::new(&api_sim.base_url(), "-", "nobody", "wrong").expect("client");
    let err = bad.list_services().await.expect_err("401");
    assert!(err.to_string().contains("HTTP 401: invalid client credentials"), "{err}");
    assert!(err.fix().contains("[tailscale.api]"));
}

/// The version gates of what tailscaled tells without an API key, each on both sides:
/// `/localapi/v0/services` from 1.98 (a 404 before, so nothing is claimed), the per-Service
/// byte counters in `usermetrics` from 1.102 (absent before).
#[tokio::test]
async fn services_list_and_byte_counters_follow_the_daemon_version() {
    let names = ["grafana", "git"];
    for (version, listed, counted) in
        [("1.96.4-tabc", false, false), ("1.98.0", true, false), ("1.100.2", true, false), ("1.102.0", true, true)]
    {
        let mut sim = SimConfig::storage(SUFFIX, &names);
        sim.version = version.to_owned();
        sim.visible_services = [("svc:grafana".to_owned(), vec!["tcp:443".to_owned()])].into();
        sim.serve_bytes = [("svc:grafana".to_owned(), (10, 20))].into();
        let e = env(sim).await;
        let cfg = config(e.dir.path(), &names, "");
        let visible = snirouter_services::visible_services(&e.local).await;
        assert_eq!(visible.is_some(), listed, "{version}");
        let bytes = e.local.serve_bytes().await.expect("usermetrics answers at every version");
        assert_eq!(bytes.contains_key("svc:grafana"), counted, "{version}");
        let p = plan(&cfg, &e.local, None).await.expect("plan");
        let hidden_note = p.notes.iter().any(|n| n.contains("not among the Services") && n.contains("svc:git"));
        assert_eq!(hidden_note, listed, "{version}: {:?}", p.notes);
        let st = observe(&cfg, &e.local, e.local.status().await.as_ref(), None).await;
        assert_eq!(st[0].definition.is_some(), listed, "{version}");
        assert_eq!(st[0].bytes.map(|b| (b.inbound, b.outbound)), counted.then_some((10, 20)), "{version}");
    }
}

/// Drift is what a sync of the same config puts back; it is recorded in the ownership file
/// across processes. A sync for a changed config (a further port) is not drift.
#[tokio::test]
async fn drift_is_recorded_across_syncs_and_a_new_config_is_not_drift() {
    let names = ["grafana", "git"];
    let e = env(SimConfig::storage(SUFFIX, &names)).await;
    let cfg = config(e.dir.path(), &names, "");
    let first = sync(&cfg, &e.local, None).await.expect("first sync");
    assert!(!first.drift && !first.is_noop(), "{first}");
    e.sim.set_serve_config(json!({}));
    let healed = sync(&cfg, &e.local, None).await.expect("heal");
    assert!(healed.drift, "{healed}");
    let drift = Ownership::load(&cfg.cache.dir).expect("ownership").drift.expect("recorded");
    assert_eq!(drift.healed, 1);
    assert!(drift.last_changes.iter().any(|c| c.contains("svc:git")), "{drift:?}");

    // The config gains a port: applied, not drift.
    let src = format!(
        "[tailscale]\nsocket = \"{}\"\n[listen]\nproxy_protocol = [\"{TARGET}\"]\n[cache]\ndir = \"{}\"\n\
         [services.grafana]\nupstream = \"http://127.0.0.1:3000\"\n\
         [services.git]\nupstream = \"http://127.0.0.1:3000\"\ntcp = {{ 22 = \"127.0.0.1:2222\" }}\n",
        e.dir.path().join("ts.sock").display(),
        e.dir.path().join("cache").display()
    );
    let with_ssh = snirouter_config::parse(&src, "test.toml").expect("valid");
    let grown = sync(&with_ssh, &e.local, None).await.expect("new config");
    assert!(!grown.drift && grown.applied.len() == 1, "{grown}");
    assert_eq!(e.sim.serve_config()["Services"]["svc:git"]["TCP"]["22"], json!({"TCPForward": "127.0.0.1:2222"}));
    // Someone removes port 22 alone: drift again, counted on.
    let mut wiped = e.sim.serve_config();
    wiped["Services"]["svc:git"]["TCP"].as_object_mut().expect("TCP").remove("22");
    e.sim.set_serve_config(wiped);
    let healed = sync(&with_ssh, &e.local, None).await.expect("heal 22");
    assert!(healed.drift && healed.applied.len() == 1, "{healed}");
    assert_eq!(Ownership::load(&cfg.cache.dir).expect("ownership").drift.map(|d| d.healed), Some(2));
}
