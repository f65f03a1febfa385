//! The Nix side: every `.nix` file parses (`nix-instantiate --parse`), and `nix/module.nix`
//! evaluates with the real nixpkgs module system (the vendored nixpkgs `lib`,
//! `../shared/vendor/nixpkgs-lib/lib`) and the NixOS options it sets declared with their
//! NixOS types (`nix/tests/eval/nixos.nix`), for the 14-service example; the TOML it renders passes `snirouter check`, the systemd unit has
//! the hardening, and the module's assertions fire with their messages.
//!
//! Needs `nix-instantiate` (Debian: `nix-bin`; `.ci/run` installs it). Without it the test
//! says so on stderr and passes. Nix runs without a daemon and without touching /nix/var:
//! its state and config directories are a temp dir and it evaluates in `--readonly-mode`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::harness::{TempDir, temp_dir};

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The vendored nixpkgs `lib` next to the project (`../shared/vendor/nixpkgs-lib/lib`).
fn nixpkgs_lib() -> PathBuf {
    let lib = repo_root().join("../shared/vendor/nixpkgs-lib/lib");
    assert!(
        lib.join("default.nix").is_file(),
        "the nixpkgs lib is not at {} (see its SOURCE.md): the module cannot be evaluated with the real module system",
        lib.display()
    );
    lib.canonicalize().unwrap_or(lib)
}

/// `nix-instantiate` with a private state dir, or `None` when it is not installed.
pub(crate) struct Nix {
    state: TempDir,
}

impl Nix {
    pub(crate) fn find() -> Option<Nix> {
        match Command::new("nix-instantiate").arg("--version").output() {
            Ok(o) if o.status.success() => Some(Nix { state: temp_dir("nix-state") }),
            Ok(o) => panic!("nix-instantiate --version failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("cannot run nix-instantiate: {e}"),
        }
    }

    pub(crate) fn run(&self, args: &[&str]) -> Output {
        let conf = self.state.path().join("conf");
        std::fs::create_dir_all(&conf).expect("mkdir nix conf dir");
        Command::new("nix-instantiate")
            .args(args)
            .current_dir(repo_root())
            .env("NIX_STATE_DIR", self.state.path().join("state"))
            .env("NIX_CONF_DIR", &conf)
            .env("NIX_CONFIG", "build-users-group =")
            .env("NIX_REMOTE", "")
            .env("XDG_CACHE_HOME", self.state.path().join("cache"))
            .env("HOME", self.state.path())
            .output()
            .expect("run nix-instantiate")
    }

    /// `--eval --strict --json` of `nix/tests/eval` with `args`, attribute `attr`, under
    /// the vendored nixpkgs lib.
    pub(crate) fn eval(&self, attr: &str, args: &[&str]) -> Result<serde_json::Value, String> {
        let lib = nixpkgs_lib();
        let lib = lib.to_str().expect("utf-8 path");
        let mut all = vec!["--eval", "--strict", "--json", "--readonly-mode", "nix/tests/eval", "-A", attr];
        all.extend_from_slice(&["--arg", "nixpkgsLib", lib]);
        all.extend_from_slice(args);
        let out = self.run(&all);
        if !out.status.success() {
            return Err(String::from_utf8_lossy(&out.stderr).into_owned());
        }
        serde_json::from_slice(&out.stdout)
            .map_err(|e| format!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
    }
}

macro_rules! nix_or_skip {
    () => {
        match Nix::find() {
            Some(n) => n,
            None => {
                eprintln!(
                    "SKIPPED: nix-instantiate is not installed, so the Nix files were not checked \
                     (install nix-bin; .ci/run does)"
                );
                return;
            }
        }
    };
}

fn nix_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        if p.is_dir() && name != "target" && name != ".git" {
            nix_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "nix") {
            out.push(p);
        }
    }
}

/// Runs `snirouter check ARGS --config DIR/snirouter.toml` on `toml`, the module's
/// rendered config, and asserts that it is accepted; returns what check printed.
fn assert_check_accepts(dir: &Path, toml: &str, args: &[&str]) -> String {
    let path = dir.join("snirouter.toml");
    std::fs::write(&path, toml).expect("write config");
    let out = Command::new(env!("CARGO_BIN_EXE_snirouter"))
        .arg("check")
        .args(args)
        .args(["--config", path.to_str().expect("utf-8 path")])
        .output()
        .expect("run snirouter check");
    assert!(
        out.status.success(),
        "snirouter check refused the module's config:\n{}\n--- config ---\n{toml}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn every_nix_file_parses() {
    let nix = nix_or_skip!();
    let root = repo_root();
    let mut files = Vec::new();
    nix_files(&root.join("nix"), &mut files);
    files.push(root.join("flake.nix"));
    files.sort();
    for required in ["flake.nix", "nix/package.nix", "nix/module.nix", "nix/tests/vm.nix", "nix/tests/eval/nixos.nix"] {
        assert!(files.contains(&root.join(required)), "{required} is missing");
    }
    for f in &files {
        let out = nix.run(&["--parse", f.to_str().expect("utf-8 path")]);
        assert!(out.status.success(), "{} does not parse:\n{}", f.display(), String::from_utf8_lossy(&out.stderr));
    }
}

#[test]
fn module_renders_a_config_that_snirouter_accepts() {
    let nix = nix_or_skip!();
    let dir = temp_dir("nix-eval");
    let pages = dir.path().join("error-pages");
    std::fs::create_dir_all(&pages).expect("mkdir error pages");
    let pages = pages.to_str().expect("utf-8 path");

    let toml =
        nix.eval("toml", &["--argstr", "errorPages", pages]).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let toml = toml.as_str().expect("toml is a string");
    assert!(assert_check_accepts(dir.path(), toml, &[]).contains("ok — 14 service(s), 2 TLS listener(s)"));

    // What the typed options became, as snirouter understood it (`--print`: JSON alone).
    let stdout = assert_check_accepts(dir.path(), toml, &["--print"]);
    let cfg: serde_json::Value = serde_json::from_str(&stdout).expect("check --print JSON");
    let svc = |name: &str| -> &serde_json::Value {
        cfg["services"]
            .as_array()
            .and_then(|s| s.iter().find(|s| s["name"] == name))
            .unwrap_or_else(|| panic!("{name}"))
    };
    assert_eq!(svc("grafana")["forward_auth"]["url"], "http://127.0.0.1:9091/api/verify?rd=https://auth.arsfeld.one/");
    assert_eq!(svc("grafana")["tailscale_identity"], true);
    assert_eq!(svc("grafana")["error_pages"], pages);
    assert_eq!(svc("jellyfin")["routes"][0]["upstream"], "https://127.0.0.1:8920");
    assert_eq!(svc("jellyfin")["insecure_skip_verify"], true);
    assert!(svc("jellyfin")["forward_auth"].is_null() && svc("jellyfin")["bypass_auth"] == true);
    assert_eq!(svc("immich")["max_body_bytes"], 50_000_000_000u64);
    assert_eq!(svc("homepage")["cors"]["origins"][0], "https://grafana.bat-boa.ts.net");
    assert_eq!(svc("audiobookshelf")["routes"][0]["strip_prefix"], true);
    assert_eq!(svc("prometheus")["fqdn"], "metrics.bat-boa.ts.net");
    let allow = serde_json::json!(["tag:monitoring", "alice@example.com", "cap:example.com/cap/sonarr"]);
    assert_eq!(svc("sonarr")["allow"], allow);
    assert_eq!(svc("sonarr")["accept_app_caps"], serde_json::json!(["example.com/cap/sonarr"]));
    assert!(svc("grafana")["allow"].is_null(), "no allow: everyone who reaches it");
    let tcp = &svc("radarr")["tcp"];
    assert_eq!(
        (tcp[0]["port"].as_u64(), tcp[0]["target"]["address"]["port"].as_u64()),
        (Some(22), Some(2222)),
        "{tcp}"
    );
    assert_eq!(
        (&tcp[1]["target"]["unix"], tcp[1]["proxy_protocol"].as_u64()),
        (&serde_json::json!("/run/mosquitto/mqtt.sock"), Some(2)),
        "{tcp}"
    );
    assert_eq!(svc("sonarr")["names"], serde_json::json!(["sonarr.arsfeld.one"]));
    assert_eq!(cfg["domains"][0]["cert"], "/var/lib/acme/arsfeld.one/fullchain.pem");
    assert_eq!(cfg["tailscale"]["manage_services"], false, "the router runs as snirouter: root syncs before it");
    assert_eq!(cfg["tailscale"]["api"]["client_id_file"], "/run/credentials/snirouter.service/tailscale-client-id");
    assert_eq!(cfg["limits"]["max_header_bytes"], 5_000_000);
    assert_eq!(cfg["cache"]["dir"], "/var/lib/snirouter");
    assert_eq!(cfg["admin"]["socket"], "/run/snirouter/admin.sock");

    // The module validates the same file at build time.
    let build = nix.eval("buildCommand", &[]).expect("buildCommand");
    assert!(build.as_str().is_some_and(|b| b.contains("snirouter check --config \"$configFile\"")), "{build}");
}

#[test]
fn unit_is_hardened_and_tailscaled_may_hand_out_certificates() {
    let nix = nix_or_skip!();
    let unit = nix.eval("unit", &[]).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let sc = &unit["serviceConfig"];
    let expect = [
        ("Type", serde_json::json!("notify")),
        ("WatchdogSec", serde_json::json!("30s")),
        ("User", serde_json::json!("snirouter")),
        ("StateDirectory", serde_json::json!("snirouter")),
        ("RuntimeDirectory", serde_json::json!("snirouter")),
        ("AmbientCapabilities", serde_json::json!(["CAP_NET_BIND_SERVICE"])),
        ("CapabilityBoundingSet", serde_json::json!(["CAP_NET_BIND_SERVICE"])),
        ("ProtectSystem", serde_json::json!("strict")),
        ("ProtectHome", serde_json::json!(true)),
        ("PrivateTmp", serde_json::json!(true)),
        ("PrivateDevices", serde_json::json!(true)),
        ("NoNewPrivileges", serde_json::json!(true)),
        ("ProtectKernelTunables", serde_json::json!(true)),
        ("ProtectKernelModules", serde_json::json!(true)),
        ("ProtectControlGroups", serde_json::json!(true)),
        ("RestrictAddressFamilies", serde_json::json!(["AF_UNIX", "AF_INET", "AF_INET6"])),
        ("RestrictNamespaces", serde_json::json!(true)),
        ("LockPersonality", serde_json::json!(true)),
        ("MemoryDenyWriteExecute", serde_json::json!(true)),
        ("SystemCallArchitectures", serde_json::json!("native")),
        ("UMask", serde_json::json!("0077")),
        ("LimitNOFILE", serde_json::json!(65536)),
    ];
    for (key, value) in expect {
        assert_eq!(sc[key], value, "serviceConfig.{key}");
    }
    assert_eq!(sc["SystemCallFilter"][0], "@system-service");
    assert!(sc["ExecReload"].as_str().is_some_and(|s| s.ends_with("/bin/kill -HUP $MAINPID")), "{sc}");
    assert!(
        sc["ExecStart"].as_str().is_some_and(|s| s.ends_with("/bin/snirouter run --config /etc/snirouter/config.toml"))
    );
    assert!(
        sc["LoadCredential"].as_array().is_some_and(|c| c.len() == 2),
        "API credentials go through LoadCredential: {sc}"
    );
    for list in ["after", "wants"] {
        assert!(unit[list].as_array().is_some_and(|a| a.contains(&"tailscaled.service".into())), "{list}: {unit}");
    }
    assert_eq!(nix.eval("permitCertUid", &[]).expect("permitCertUid"), "snirouter");
    assert_eq!(nix.eval("firewall", &[]).expect("firewall"), serde_json::json!([443, 80]));
    assert_eq!(nix.eval("users", &[]).expect("users")["snirouter"]["isSystemUser"], true);
}

/// tailscaled lets only root and its operator write the serve config: the module runs the
/// sync as root before the unprivileged router starts, and the router does not try.
#[test]
fn a_non_root_router_gets_its_services_synced_by_root_and_restarts_for_listener_trust() {
    let nix = nix_or_skip!();
    let unit = nix.eval("unit", &[]).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let pre = unit["serviceConfig"]["ExecStartPre"].as_array().cloned().unwrap_or_default();
    assert!(
        pre.iter()
            .any(|c| c.as_str().is_some_and(|c| c.starts_with("-+")
                && c.ends_with("/bin/snirouter services sync --config /etc/snirouter/config.toml"))),
        "ExecStartPre: {pre:?}"
    );
    let toml = nix.eval("toml", &[]).expect("toml");
    assert!(toml.as_str().is_some_and(|t| t.contains("manage_services = false")), "{toml}");
    // While it runs, root puts back what something else wipes, every 30 s.
    let heal = nix.eval("heal", &[]).expect("heal unit");
    let exec = heal["serviceConfig"]["ExecStart"].as_str().unwrap_or_default();
    assert!(exec.ends_with("/bin/snirouter services sync --local --config /etc/snirouter/config.toml"), "{heal}");
    assert!(heal["serviceConfig"].get("User").is_none(), "the heal runs as root: {heal}");
    let timer = nix.eval("healTimer", &[]).expect("heal timer");
    assert_eq!(timer["timerConfig"]["OnUnitActiveSec"], "30s", "{timer}");
    assert_eq!(timer["partOf"], serde_json::json!(["snirouter.service"]), "{timer}");
    let triggers = unit["restartTriggers"].to_string();
    assert!(triggers.contains("proxy_protocol_from"), "a changed proxy_protocol_from restarts: {triggers}");
    let as_root = r#"{ services.snirouter.user = "root"; }"#;
    let unit = nix.eval("unit", &["--arg", "extraConfig", as_root]).expect("unit as root");
    assert!(unit["serviceConfig"].get("ExecStartPre").is_none_or(|p| p.is_null()), "{unit}");
    assert!(nix.eval("healTimer", &["--arg", "extraConfig", as_root]).expect("timer as root").is_null());
    let toml = nix.eval("toml", &["--arg", "extraConfig", as_root]).expect("toml as root");
    assert!(toml.as_str().is_some_and(|t| t.contains("manage_services = true")), "{toml}");
}

/// The migration guide's "take it as is" route: services and domains written as TOML in
/// `settings` get the same hairpin names and certificate access as typed ones.
#[test]
fn services_and_domains_written_as_settings_get_hairpin_names_and_certificate_access() {
    let nix = nix_or_skip!();
    let extra = r#"{
        security.acme.certs."example.org" = { domain = "*.example.org"; group = "acme-example"; };
        services.snirouter.settings.domains."example.org".cert_dir = "/var/lib/acme/example.org";
        services.snirouter.settings.services.wiki = { upstream = "http://127.0.0.1:8080"; names = [ "wiki.example.org" ]; };
        services.snirouter.hairpin = { enable = true; tailnet = "bat-boa.ts.net"; };
    }"#;
    let args = ["--arg", "extraConfig", extra];
    let hosts = nix.eval("hosts", &args).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let loopback = hosts["127.0.0.1"].as_array().cloned().unwrap_or_default();
    assert!(loopback.contains(&"wiki.bat-boa.ts.net".into()), "the TOML service is sent to loopback: {hosts}");
    assert!(loopback.contains(&"grafana.bat-boa.ts.net".into()), "{hosts}");
    let groups = &nix.eval("users", &args).expect("users")["snirouter"]["extraGroups"];
    assert!(groups.as_array().is_some_and(|g| g.contains(&"acme-example".into())), "read access: {groups}");
}

#[test]
fn assertions_and_type_errors_explain_themselves() {
    let nix = nix_or_skip!();
    let cases = [
        ("{ lib, ... }: { services.tailscale.permitCertUid = lib.mkForce \"alice\"; }", "tailscaled permits only one"),
        ("{ services.snirouter.services.grafana.upstream = \"http://127.0.0.1:3001\"; }", "set exactly one of port"),
        (
            "{ services.snirouter.services.x = { passthrough = \"127.0.0.1:8920\"; }; }",
            "cannot be protected by services.snirouter.forwardAuth",
        ),
        ("{ services.snirouter.services.x.port = \"3000\"; }", "is not of type"),
        ("{ services.snirouter.servics = { }; }", "services.snirouter.servics' does not exist"),
        (
            "{ lib, ... }: { services.snirouter.tailscaleApi.clientSecretFile = lib.mkForce null; }",
            "set both clientIdFile and clientSecretFile",
        ),
        (
            "{ services.snirouter.acmeHost = \"nowhere.org\"; }",
            "acmeHost [\"nowhere.org\"] is not in security.acme.certs",
        ),
        (
            "{ lib, ... }: { services.snirouter.settings.listen.https = lib.mkForce [ ]; }",
            "public names (sonarr.arsfeld.one) need a TLS listener",
        ),
        (
            "{ lib, ... }: { options.services.tailscale.serve = lib.mkOption { type = lib.types.attrs; default = { }; }; config.services.tailscale.serve.services.svc-x = { }; }",
            "manageServices and services.tailscale.serve both write tailscaled's serve config",
        ),
    ];
    for (extra, needle) in cases {
        match nix.eval("toml", &["--arg", "extraConfig", extra]) {
            Ok(v) => panic!("{extra} evaluated: {v}"),
            Err(e) => assert!(e.contains(needle), "{extra}: expected {needle:?} in:\n{e}"),
        }
    }
}

#[test]
fn acme_host_gives_every_service_its_public_name_with_read_access_and_reloads() {
    let nix = nix_or_skip!();
    let dir = temp_dir("nix-acme");
    let pages = dir.path().to_str().expect("utf-8 path");
    let extra = r#"{
        security.acme.certs."arsfeld.one".domain = "*.arsfeld.one";
        services.snirouter.acmeHost = "arsfeld.one";
        services.snirouter.publicForwardAuth = { url = "http://127.0.0.1:9091/api/authz/forward-auth?authelia_url=https://auth.arsfeld.one/"; copyHeaders = [ "Remote-User" ]; };
        services.snirouter.services.jellyfin.acmeHost = null;
    }"#;
    let args = ["--argstr", "errorPages", pages, "--arg", "extraConfig", extra];
    let toml = nix.eval("toml", &args).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let toml = toml.as_str().expect("toml is a string");
    // The build-time check passes although /var/lib/acme is not there (a warning).
    let stdout = assert_check_accepts(dir.path(), toml, &["--print"]);
    let cfg: serde_json::Value = serde_json::from_str(&stdout).expect("json");
    let domain = &cfg["domains"][0];
    assert_eq!(domain["name"], "arsfeld.one");
    assert_eq!(domain["cert"], "/var/lib/acme/arsfeld.one/fullchain.pem");
    assert_eq!(
        domain["forward_auth"]["url"],
        "http://127.0.0.1:9091/api/authz/forward-auth?authelia_url=https://auth.arsfeld.one/"
    );
    let svc = |name: &str| {
        cfg["services"].as_array().and_then(|a| a.iter().find(|s| s["name"] == name)).cloned().expect(name)
    };
    assert_eq!(svc("grafana")["names"], serde_json::json!(["grafana.arsfeld.one"]));
    assert_eq!(svc("sonarr")["names"], serde_json::json!(["sonarr.arsfeld.one"]), "no duplicate with its own names");
    assert_eq!(svc("jellyfin")["names"], serde_json::json!([]), "acmeHost = null: tailnet only");
    let acme = nix.eval("acme", &args).expect("acme");
    assert_eq!(acme["arsfeld.one"]["reloadServices"], serde_json::json!(["snirouter.service"]));
    assert_eq!(nix.eval("users", &args).expect("users")["snirouter"]["extraGroups"], serde_json::json!(["acme"]));
    let unit = nix.eval("unit", &args).expect("unit");
    assert!(
        unit["after"].as_array().is_some_and(|a| a.contains(&serde_json::json!("acme-arsfeld.one.service"))),
        "{unit}"
    );
    assert!(
        unit["wants"].as_array().is_some_and(|a| a.contains(&serde_json::json!("acme-finished-arsfeld.one.target"))),
        "{unit}"
    );
}

#[test]
fn a_tunnel_on_this_host_gets_trusted_proxies_an_access_log_logrotate_and_fail2ban() {
    let nix = nix_or_skip!();
    let dir = temp_dir("nix-tunnel");
    let pages = dir.path().to_str().expect("utf-8 path");
    let extra = r#"{
        services.snirouter.trustedProxies = [ "127.0.0.1/32" "::1/128" ];
        services.snirouter.clientIpHeaders = [ "CF-Connecting-IP" ];
        services.snirouter.accessLog.enable = true;
        services.snirouter.fail2ban.enable = true;
    }"#;
    let args = ["--argstr", "errorPages", pages, "--arg", "extraConfig", extra];
    let toml = nix.eval("toml", &args).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let toml = toml.as_str().expect("toml is a string");
    assert!(toml.contains("client_ip_headers = [\"CF-Connecting-IP\"]"), "{toml}");
    assert!(toml.contains("trusted_proxies = [\"127.0.0.1/32\", \"::1/128\"]"), "{toml}");
    assert!(
        toml.contains(
            "[log]\naccess = true\naccess_file = \"/var/log/snirouter/access.log\"\naccess_format = \"combined\""
        ),
        "{toml}"
    );
    assert_check_accepts(dir.path(), toml, &[]);
    let unit = nix.eval("unit", &args).expect("unit");
    assert_eq!(unit["serviceConfig"]["LogsDirectory"], "snirouter", "{unit}");
    let rotate = nix.eval("logrotate", &args).expect("logrotate");
    assert_eq!(rotate["snirouter"]["files"], "/var/log/snirouter/access.log");
    assert!(
        rotate["snirouter"]["postrotate"]
            .as_str()
            .is_some_and(|s| s.ends_with("systemctl kill --signal=USR1 snirouter.service"))
    );
    let f2b = nix.eval("fail2ban", &args).expect("fail2ban");
    assert_eq!(f2b["enable"], true);
    assert_eq!(f2b["jails"]["snirouter"]["settings"]["logpath"], "/var/log/snirouter/access.log");
    let etc = nix.eval("etc", &args).expect("etc");
    assert!(etc.as_array().is_some_and(|a| a.contains(&"fail2ban/filter.d/snirouter.conf".into())), "{etc}");
    // fail2ban without a file to read is refused with the fix.
    let journal = "{ services.snirouter.fail2ban.enable = true; }";
    let err =
        nix.eval("toml", &["--argstr", "errorPages", pages, "--arg", "extraConfig", journal]).expect_err("assertion");
    assert!(err.contains("services.snirouter.fail2ban reads the access log file"), "{err}");
}

#[test]
fn passthrough_service_renders_and_checks() {
    let nix = nix_or_skip!();
    let dir = temp_dir("nix-pass");
    let pages = dir.path().to_str().expect("utf-8 path");
    let extra = "{ services.snirouter.services.nas = { passthrough = \"127.0.0.1:5001\"; bypassAuth = true; }; }";
    let toml = nix
        .eval("toml", &["--argstr", "errorPages", pages, "--arg", "extraConfig", extra])
        .unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let toml = toml.as_str().expect("toml is a string");
    assert!(toml.contains("[services.nas]\nbypass_auth = true\npassthrough = \"127.0.0.1:5001\"\n"), "{toml}");
    assert!(assert_check_accepts(dir.path(), toml, &[]).contains("15 service(s)"));
}

#[test]
fn hairpin_sends_every_name_to_loopback_listeners() {
    let nix = nix_or_skip!();
    let dir = temp_dir("nix-hairpin");
    let pages = dir.path().to_str().expect("utf-8 path");
    let extra = "{ services.snirouter.hairpin = { enable = true; tailnet = \"bat-boa.ts.net\"; }; }";
    let args = ["--argstr", "errorPages", pages, "--arg", "extraConfig", extra];
    let hosts = nix.eval("hosts", &args).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    for addr in ["127.0.0.1", "::1"] {
        let names: Vec<&str> = hosts[addr].as_array().expect(addr).iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(names.len(), 14, "{addr}: {hosts}");
        assert!(names.contains(&"grafana.bat-boa.ts.net"), "{addr}: {hosts}");
        assert!(names.contains(&"metrics.bat-boa.ts.net"), "an fqdn override is kept: {hosts}");
    }
    // The example listens on 0.0.0.0:443, which already takes 127.0.0.1: only ::1 is added,
    // and loopback listeners open no firewall port.
    let toml = nix.eval("toml", &args).unwrap_or_else(|e| panic!("evaluation failed:\n{e}"));
    let toml = toml.as_str().expect("toml is a string");
    assert!(toml.contains("https = [\"0.0.0.0:443\", \"[::1]:443\"]"), "{toml}");
    assert_eq!(nix.eval("firewall", &args).expect("firewall"), serde_json::json!([443, 80]));
    assert_check_accepts(dir.path(), toml, &[]);

    let no_suffix = "{ services.snirouter.hairpin.enable = true; }";
    match nix.eval("toml", &["--argstr", "errorPages", pages, "--arg", "extraConfig", no_suffix]) {
        Ok(v) => panic!("hairpin without a tailnet evaluated: {v}"),
        Err(e) => assert!(e.contains("services.snirouter.hairpin.tailnet"), "{e}"),
    }
}
