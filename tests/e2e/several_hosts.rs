//! Issue 15 part 2: one Tailscale Service, several hosts. Two snirouter nodes (each
//! with its own simulated tailscaled, router and backends) share one simulated control
//! API: they sync at once, again and again, and must converge on one definition
//! without rewriting each other; a real disagreement is an error naming both hosts;
//! `status` shows who hosts each service; with one node stopped the other serves on.

use std::net::IpAddr;

use serde_json::{Value, json};
use snirouter_testkit::{SimConfig, SimPeer};

use crate::harness::*;
use crate::operate::{cfg, cli, service, wait_status};
use crate::services::{control_api, services, target, text};

const STORAGE_IP: &str = "100.64.0.1";
const BACKUP_IP: &str = "100.64.0.2";

/// Node `hostname` at `ip`, reporting to `link`, that sees `other` as a peer.
fn node(hostname: &str, ip: &str, other: (&str, &str), link: snirouter_testkit::control::ControlLink) -> SimConfig {
    let mut sim = SimConfig::storage(SUFFIX, &SERVICES);
    sim.hostname = hostname.to_owned();
    sim.tailscale_ips = vec![ip.parse::<IpAddr>().expect("ip")];
    sim.peers = vec![SimPeer::host(other.1.parse().expect("ip"), other.0, &["tag:storage"])];
    sim.control = Some(link);
    sim
}

/// `storage` and `backup`, both with `[tailscale.api]` on the same control API.
async fn two_hosts(tailscale: &str, api: &snirouter_testkit::control::SimControl) -> (Env, Env) {
    let opts = |sim| EnvOptions { sim, proxy_protocol: true, tailscale: tailscale.to_owned(), ..EnvOptions::default() };
    let storage = Env::start(opts(node("storage", STORAGE_IP, ("backup", BACKUP_IP), api.link()))).await;
    let backup = Env::start(opts(node("backup", BACKUP_IP, ("storage", STORAGE_IP), api.link()))).await;
    (storage, backup)
}

/// Definitions written (PUTs the API accepted).
fn puts(api: &snirouter_testkit::control::SimControl) -> usize {
    api.requests().iter().filter(|r| r.method == "PUT" && r.status < 300).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hosts_share_a_service_without_rewriting_each_other() {
    let (api, _secrets, tailscale) = control_api().await;
    api.update(|c| c.hosts.clear()); // only nodes that advertise are hosts
    let (storage, backup) = two_hosts(&tailscale, &api).await;

    // Both sync at once, three times over: the definitions converge after the first
    // round and are never written again.
    let mut defined: Option<Value> = None;
    let mut puts_after_first = 0;
    for round in 0..3 {
        let (a, b) = tokio::join!(services("sync", &storage.config), services("sync", &backup.config));
        for (host, out) in [("storage", &a), ("backup", &b)] {
            let (stdout, stderr) = text(out);
            assert!(out.status.success(), "round {round}, {host}:\n{stdout}\n{stderr}");
        }
        let now = json!(api.services());
        assert_eq!(now.as_object().map(|m| m.len()), Some(14), "round {round}: {now:#}");
        for n in SERVICES {
            let s = &now[format!("svc:{n}")];
            assert_eq!((&s["ports"], &s["tags"]), (&json!(["tcp:443"]), &json!(["tag:storage-svc"])), "{n}: {s}");
            assert_eq!(s["addrs"].as_array().map(Vec::len), Some(2), "{n}: {s}");
        }
        match &defined {
            None => {
                defined = Some(now);
                puts_after_first = puts(&api);
            }
            Some(first) => {
                assert_eq!(&now, first, "round {round}: the shared definitions did not change");
                assert_eq!(puts(&api), puts_after_first, "round {round}: nothing was written again");
            }
        }
    }
    assert_eq!(puts_after_first, 14, "each service written exactly once, by whichever host came first");

    // Each host configured only itself: its own handler, its own advertisement.
    for env in [&storage, &backup] {
        let svcs = env.sim.serve_config()["Services"].clone();
        for n in SERVICES {
            assert_eq!(svcs[format!("svc:{n}")]["TCP"]["443"]["TCPForward"], target(env), "{n}");
        }
        assert_eq!(env.sim.advertised_services().len(), 14);
    }

    // status on each host lists both hosts of every service.
    let (_, st) = wait_status(&storage, "both hosts listed", |st| {
        service(st, "grafana")["tailscale_service"]["hosts"].as_array().is_some_and(|h| h.len() == 2)
    })
    .await;
    let hosts = &service(&st, "grafana")["tailscale_service"]["hosts"];
    let this: Vec<(&Value, &Value)> =
        hosts.as_array().expect("hosts").iter().map(|h| (&h["name"], &h["this_host"])).collect();
    assert!(this.contains(&(&json!(fqdn("storage")), &json!(true))), "{hosts:#}");
    assert!(this.contains(&(&json!(fqdn("backup")), &json!(false))), "{hosts:#}");
    let (_, human, _) = cli(&["status", "--config", cfg(&backup)]).await;
    assert!(human.contains("hosts: ") && human.contains("backup (this host, approved:auto)"), "{human}");
    assert!(human.contains("storage (approved:auto)"), "{human}");

    // A real disagreement: backup is configured with other tags. Its sync names both
    // hosts and changes nothing; storage's sync stays clean.
    let text_cfg = std::fs::read_to_string(&backup.config).expect("config");
    std::fs::write(&backup.config, text_cfg.replace("tag:storage-svc", "tag:backup-svc")).expect("write");
    let plan = services("plan", &backup.config).await;
    let (stdout, _) = text(&plan);
    assert!(stdout.contains("! error         svc:grafana is also hosted by storage"), "{stdout}");
    let out = services("sync", &backup.config).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    for needle in [
        "svc:grafana is also hosted by storage",
        "this host (backup) would add tags tag:backup-svc",
        "tags [tag:storage-svc]",
        "the same [tailscale.api] tags as storage",
    ] {
        assert!(stdout.contains(needle), "{needle}:\n{stdout}");
    }
    assert_eq!(json!(api.services()), defined.clone().expect("defined"), "nothing rewritten");
    assert_eq!(puts(&api), puts_after_first);
    assert!(text(&services("sync", &storage.config).await).0.contains("No changes"));
    std::fs::write(&backup.config, text_cfg).expect("restore");

    // storage goes away; backup serves every name on, and says storage is offline.
    drop(storage);
    backup.sim.update(|c| c.peers[0].online = false);
    for n in SERVICES {
        let (body, code) = body_and_status(&curl(&backup, n, "/", &[]).await);
        assert_eq!(code, 200, "{n}: {body}");
    }
    let out = services("sync", &backup.config).await;
    assert!(out.status.success() && text(&out).0.contains("No changes"), "{:?}", text(&out));
    let (_, human, _) = cli(&["status", "--config", cfg(&backup)]).await;
    assert!(human.contains("storage (approved:auto, offline)"), "{human}");
}
