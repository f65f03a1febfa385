//! End-to-end tests against the simulated tailscaled from `snirouter-testkit`:
//! status, cert-domains, cert pairs and every classified failure scenario.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use snirouter_localapi::{BackendState, Error, ErrorKind, LocalClient, notify};
use snirouter_testkit::{SimConfig, SimPeer, SimTailscaled};
use tempfile::TempDir;

const SFX: &str = "bat-boa.ts.net";
const DEADLINE: Duration = Duration::from_secs(30);
const T: Duration = Duration::from_secs(10);

struct Env {
    sim: SimTailscaled,
    lc: LocalClient,
    _dir: TempDir,
}

async fn env(services: &[&str], tweak: impl FnOnce(&mut SimConfig)) -> Env {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = SimConfig::storage(SFX, services);
    tweak(&mut cfg);
    let sim = SimTailscaled::start(dir.path().join("ts.sock"), cfg).await.unwrap();
    let lc = LocalClient::new(sim.socket_path()).unwrap();
    Env { sim, lc, _dir: dir }
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(DEADLINE, f).await.expect("test exceeded its deadline");
}

fn fq(name: &str) -> String {
    format!("{name}.{SFX}")
}

#[tokio::test]
async fn status_and_cert_domains() {
    bounded(async {
        let e = env(&["grafana", "jellyfin"], |_| {}).await;
        let st = e.lc.status().await.unwrap();
        assert_eq!(st.backend_state, BackendState::Running);
        assert_eq!(st.magic_dns_suffix(), Some(SFX));
        assert_eq!(st.cert_domains, vec![fq("storage"), fq("grafana"), fq("jellyfin")]);
        let me = st.self_node.as_ref().unwrap();
        assert_eq!(me.dns_name, fq("storage"));
        assert!(me.tags.contains(&"tag:storage".to_owned()));
        let sh = me.service_host();
        assert!(sh.contains_key("svc:grafana") && sh.contains_key("svc:jellyfin"), "{sh:?}");
        assert!(!st.tailscale_ips.is_empty());

        let mut domains = e.lc.cert_domains().await.unwrap();
        domains.sort();
        let mut want = st.cert_domains.clone();
        want.sort();
        assert_eq!(domains, want);

        // Old daemon without /cert-domains: falls back to status.
        e.sim.update(|c| c.has_cert_domains_endpoint = false);
        let mut domains = e.lc.cert_domains().await.unwrap();
        domains.sort();
        assert_eq!(domains, want);

        for r in e.sim.requests() {
            assert_eq!(r.host.as_deref(), Some("local-tailscaled.sock"), "{r:?}");
            assert_ne!(r.status, 403, "{r:?}");
        }
    })
    .await;
}

#[tokio::test]
async fn cert_pair_issue_cache_and_renew() {
    bounded(async {
        let e = env(&["grafana"], |_| {}).await;
        let pair = e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap();
        assert!(!pair.chain.is_empty());
        assert!(matches!(pair.key, rustls_pki_types::PrivateKeyDer::Sec1(_)), "tailscaled sends EC PRIVATE KEY");
        assert!(pair.pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
        assert_eq!(e.sim.issued().len(), 1);

        // Cached: same chain, nothing new issued.
        let again = e.lc.cert_pair(&fq("grafana"), Some(Duration::ZERO), T).await.unwrap();
        assert_eq!(again.chain, pair.chain);
        assert_eq!(e.sim.issued().len(), 1);

        // min_validity longer than the remaining lifetime forces a synchronous renewal.
        let renewed = e.lc.cert_pair(&fq("grafana"), Some(Duration::from_secs(200 * 86400)), T).await.unwrap();
        assert_ne!(renewed.chain[0], pair.chain[0]);
        assert_eq!(e.sim.issued().len(), 2);
        assert!(
            e.sim.requests().iter().any(|r| r.path_and_query.contains("min_validity=4800h0m0s")),
            "{:?}",
            e.sim.requests()
        );
    })
    .await;
}

#[tokio::test]
async fn cert_domain_errors() {
    bounded(async {
        let e = env(&["grafana"], |_| {}).await;
        match e.lc.cert_pair(&fq("immich"), None, T).await.unwrap_err() {
            Error::NotInCertDomains { domain, allowed } => {
                assert_eq!(domain, fq("immich"));
                assert_eq!(allowed, vec![fq("storage"), fq("grafana")]);
            }
            other => panic!("{other:?}"),
        }
        let err = e.lc.cert_pair(&format!("*.{}", fq("storage")), None, T).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::WildcardNotEnabled, "{err:?}");

        e.sim.update(|c| c.cert_domains = None);
        let err = e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap_err();
        assert!(matches!(err, Error::HttpsDisabled), "{err:?}");
        assert!(e.lc.cert_domains().await.unwrap().is_empty());

        e.sim.update(|c| c.backend_state = "NeedsLogin".to_owned());
        let err = e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap_err();
        assert!(matches!(err, Error::NoNetmap), "{err:?}");
        let st = e.lc.status().await.unwrap();
        assert_eq!(st.backend_state, BackendState::NeedsLogin);
        assert!(st.cert_domains.is_empty());
    })
    .await;
}

#[tokio::test]
async fn cert_permission_by_peer_uid() {
    bounded(async {
        let e = env(&["grafana"], |c| c.peer_uid = Some(4242)).await;
        // Reading is allowed to everyone.
        assert_eq!(e.lc.status().await.unwrap().backend_state, BackendState::Running);
        let err = e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CertAccessDenied, "{err:?}");
        assert!(err.fix().unwrap().contains("TS_PERMIT_CERT_UID"));
        // Writes are denied too, but not as a cert problem.
        let err =
            e.lc.edit_prefs(&serde_json::json!({"AdvertiseServicesSet": true, "AdvertiseServices": []}))
                .await
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::AccessDenied, "{err:?}");

        e.sim.update(|c| c.permit_cert_uid = Some(4242));
        e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn acme_failures() {
    bounded(async {
        let e = env(&["grafana", "jellyfin", "immich"], |c| c.rate_limited = Some(Duration::from_secs(120))).await;
        let err = e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::RateLimited, "{err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(120)));

        e.sim.update(|c| {
            c.rate_limited = None;
            c.setdns_fails = true;
        });
        let err = e.lc.cert_pair(&fq("jellyfin"), None, T).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SetDnsFailed, "{err:?}");

        e.sim.update(|c| {
            c.setdns_fails = false;
            c.cert_store_readonly = true;
        });
        let err = e.lc.cert_pair(&fq("immich"), None, T).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::CertStoreReadOnly, "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn slow_issuance_times_out_and_aborts() {
    bounded(async {
        let e = env(&["grafana"], |c| c.first_issue_delay = Duration::from_secs(5)).await;
        let err = e.lc.cert_pair(&fq("grafana"), None, Duration::from_millis(300)).await.unwrap_err();
        assert!(matches!(err, Error::Timeout { after, .. } if after == Duration::from_millis(300)), "{err:?}");
        // Dropping the request aborted the simulated issuance.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(e.sim.issued().is_empty());

        e.sim.update(|c| c.first_issue_delay = Duration::from_millis(100));
        e.lc.cert_pair(&fq("grafana"), None, T).await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn outage_is_socket_missing() {
    bounded(async {
        let e = env(&[], |_| {}).await;
        e.lc.status().await.unwrap();
        e.sim.update(|c| c.unavailable = true);
        let err = e.lc.status().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::SocketMissing, "{err:?}");
        e.sim.update(|c| c.unavailable = false);
        e.lc.status().await.unwrap();
    })
    .await;
}

#[tokio::test]
async fn serve_config_prefs_and_whois() {
    bounded(async {
        let peer: IpAddr = "100.64.0.7".parse().unwrap();
        let e = env(&["grafana"], |c| c.peers = vec![SimPeer::user(peer, "alice@example.com", "Alice")]).await;

        let (mut cfg, etag) = e.lc.serve_config().await.unwrap();
        assert!(cfg.is_object());
        cfg["Services"] =
            serde_json::json!({"svc:grafana": {"TCP": {"443": {"TCPForward": "127.0.0.1:8443", "ProxyProtocol": 2}}}});
        e.lc.set_serve_config(&cfg, etag.as_deref()).await.unwrap();
        assert_eq!(e.sim.serve_config()["Services"], cfg["Services"]);
        // The old ETag is stale now.
        assert!(etag.is_some());
        let err = e.lc.set_serve_config(&cfg, etag.as_deref()).await.unwrap_err();
        assert!(matches!(err, Error::PreconditionFailed), "{err:?}");

        let prefs = e.lc.prefs().await.unwrap();
        assert!(prefs.is_object());
        let out =
            e.lc.edit_prefs(&serde_json::json!({"AdvertiseServicesSet": true, "AdvertiseServices": ["svc:grafana"]}))
                .await
                .unwrap();
        assert_eq!(out["AdvertiseServices"], serde_json::json!(["svc:grafana"]));
        assert_eq!(e.sim.advertised_services(), vec!["svc:grafana"]);

        let w = e.lc.whois(SocketAddr::new(peer, 41641), None).await.unwrap().unwrap();
        assert_eq!(w.login_name, "alice@example.com");
        assert_eq!(w.display_name, "Alice");
        assert!(e.lc.whois("100.64.0.99:1".parse().unwrap(), None).await.unwrap().is_none());
        // The node's own address is in nodeByAddr too (a hairpin connection): a tagged node.
        let own = SocketAddr::new(e.sim.config().tailscale_ips[0], 443);
        let me = e.lc.whois(own, None).await.unwrap().expect("the node itself");
        assert_eq!(me.login_name, "tagged-devices");
        // Capabilities scoped to a service hosted here (svc_name, 1.100+).
        e.sim.update(|c| {
            c.peers[0] = SimPeer::user(peer, "alice@example.com", "Alice").with_service_cap(
                "grafana",
                "example.com/cap/grafana",
                serde_json::json!({"role": "admin"}),
            );
        });
        let scoped = e.lc.whois(SocketAddr::new(peer, 1), Some("svc:grafana")).await.unwrap().unwrap();
        assert_eq!(scoped.caps["example.com/cap/grafana"], [serde_json::json!({"role": "admin"})]);
        assert!(e.lc.whois(SocketAddr::new(peer, 1), None).await.unwrap().unwrap().caps.is_empty());

        // tailscaled decodes into the typed struct and checks the update: a wrong type and
        // a port changing its serve type are refused with its words, nothing is stored.
        let before = e.sim.serve_config();
        let bad = serde_json::json!({"Services": {"svc:grafana": {"TCP": {"443": {"TCPForward": 8443}}}}});
        let err = e.lc.set_serve_config(&bad, None).await.unwrap_err();
        assert!(
            err.to_string().contains(
                "decoding config: json: cannot unmarshal number into Go struct field \
                 TCPPortHandler.Services.TCP.TCPForward of type string"
            ),
            "{err}"
        );
        let https = serde_json::json!({"Services": {"svc:grafana": {"TCP": {"443": {"HTTPS": true}}}}});
        let err = e.lc.set_serve_config(&https, None).await.unwrap_err();
        assert!(
            err.to_string().contains(
                r#"updating config: want to serve "https", but port 443 is already serving "tcp" for svc:grafana"#
            ),
            "{err}"
        );
        assert_eq!(e.sim.serve_config(), before);

        e.sim.update(|c| c.locked_config_file = true);
        let (cfg, etag) = e.lc.serve_config().await.unwrap();
        let err = e.lc.set_serve_config(&cfg, etag.as_deref()).await.unwrap_err();
        assert!(matches!(err, Error::ConfigLocked), "{err:?}");
    })
    .await;
}

#[tokio::test]
async fn watch_ipn_bus_sees_cert_domain_changes() {
    bounded(async {
        let e = env(&["grafana"], |_| {}).await;
        let mut w = e.lc.watch_ipn_bus(notify::INITIAL_STATE).await.unwrap();
        let first = w.next().await.unwrap().expect("initial state line");
        assert!(first.is_object(), "{first}");
        e.sim.update(|c| {
            if let Some(d) = c.cert_domains.as_mut() {
                d.push(fq("immich"));
            }
        });
        let next = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("a bus line after the change");
        assert!(next.unwrap().is_some());
        assert!(e.lc.cert_domains().await.unwrap().contains(&fq("immich")));
    })
    .await;
}

/// The simulator's CertDomains model (`derive_service_cert_domains`): a name appears only
/// once the service is both approved for this host and hosted here (serve config or
/// `AdvertiseServices`), and its appearance is a new netmap on the bus (`SelfChange`).
#[tokio::test]
async fn cert_domains_grow_only_for_approved_services_this_host_hosts() {
    bounded(async {
        let e = env(&["grafana", "jellyfin"], |c| {
            c.derive_service_cert_domains = true;
            c.approved_services = vec!["grafana".into()];
        })
        .await;
        assert_eq!(e.lc.cert_domains().await.unwrap(), vec![fq("storage")], "approved, but not hosted yet");
        let mut w = e.lc.watch_ipn_bus(notify::INITIAL_STATE).await.unwrap();
        w.next().await.unwrap().expect("initial line");

        e.lc.edit_prefs(
            &serde_json::json!({"AdvertiseServicesSet": true, "AdvertiseServices": ["svc:grafana", "svc:jellyfin"]}),
        )
        .await
        .unwrap();
        let mut saw_self_change = false;
        while !saw_self_change {
            let line = tokio::time::timeout(Duration::from_secs(5), w.next()).await.expect("bus line").unwrap();
            saw_self_change = line.expect("open stream")["SelfChange"].is_object();
        }
        assert_eq!(e.lc.cert_domains().await.unwrap(), vec![fq("grafana"), fq("storage")], "jellyfin is not approved");
        let err = e.lc.cert_pair(&fq("jellyfin"), None, T).await.unwrap_err();
        assert!(matches!(err, Error::NotInCertDomains { .. }), "{err:?}");
    })
    .await;
}

/// `tls-cert-pending` (1.100+): set while a name without a usable certificate is fetched,
/// shown in `status` Health and sent to every bus watcher on set and on clear.
#[tokio::test]
async fn a_first_issuance_is_a_tls_cert_pending_warning() {
    bounded(async {
        let e = env(&["grafana"], |c| c.first_issue_delay = Duration::from_millis(400)).await;
        let mut w = e.lc.watch_ipn_bus(notify::INITIAL_STATE | 128).await.unwrap();
        let first = w.next().await.unwrap().expect("initial line");
        assert_eq!(first["Health"], serde_json::json!({"Warnings": null}));

        let lc = e.lc.clone();
        let fetch = tokio::spawn(async move { lc.cert_pair(&fq("grafana"), None, T).await });
        let set = w.next().await.unwrap().expect("health line");
        let warning = &set["Health"]["Warnings"]["tls-cert-pending"];
        assert_eq!(warning["Text"], format!("Fetching TLS certificate via ACME for: {}", fq("grafana")));
        assert_eq!(warning["Severity"], "low");
        let st = e.lc.status().await.unwrap();
        assert!(st.health.iter().any(|h| h.ends_with(&fq("grafana"))), "{:?}", st.health);

        fetch.await.unwrap().expect("issued");
        let cleared = w.next().await.unwrap().expect("health line");
        assert_eq!(cleared["Health"], serde_json::json!({"Warnings": null}));
        assert!(e.lc.status().await.unwrap().health.is_empty());
        // A renewal of a still-valid certificate runs quietly.
        e.lc.cert_pair(&fq("grafana"), Some(Duration::from_secs(365 * 86400)), T).await.expect("renewed");
        assert!(tokio::time::timeout(Duration::from_millis(200), w.next()).await.is_err(), "no health line");
    })
    .await;
}

/// `dns-config` (1.100+) and `query-feature` as tailscaled serves them.
#[tokio::test]
async fn dns_config_and_query_feature() {
    bounded(async {
        let e = env(&["grafana"], |c| c.extra_records = vec![(fq("grafana"), "100.100.5.2".into())]).await;
        let dns = e.lc.dns_config().await.unwrap();
        assert_eq!(dns.domains, [SFX]);
        assert!(dns.proxied);
        assert!(dns.cert_domains.contains(&fq("grafana")));
        assert_eq!(dns.extra_records[0].name, fq("grafana"));
        assert_eq!(dns.extra_records[0].value, "100.100.5.2");
        assert!(e.lc.query_feature("serve").await.unwrap().complete);

        e.sim.update(|c| c.cert_domains = None);
        let q = e.lc.query_feature("serve").await.unwrap();
        assert!(!q.complete && q.url.starts_with("https://login.tailscale.com/f/serve?node="), "{q:?}");
        e.sim.update(|c| c.backend_state = "NeedsLogin".into());
        assert!(matches!(e.lc.dns_config().await.unwrap_err(), Error::NoNetmap));
        assert!(matches!(e.lc.query_feature("serve").await.unwrap_err(), Error::NoNetmap));
        e.sim.update(|c| c.has_cert_domains_endpoint = false);
        assert!(matches!(e.lc.dns_config().await.unwrap_err(), Error::NotSupported { .. }));
    })
    .await;
}
