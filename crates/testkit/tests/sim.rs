//! Behaviour of the simulated tailscaled, checked over a raw unix socket.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{T, get, pem_labels, raw, req};
use rustls::client::danger::ServerCertVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use snirouter_testkit::{SimConfig, SimPeer, SimTailscaled};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

const SUFFIX: &str = "bat-boa.ts.net";

async fn sim_with(f: impl FnOnce(&mut SimConfig)) -> (TempDir, SimTailscaled) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cfg = SimConfig::storage(SUFFIX, &["grafana", "jellyfin"]);
    f(&mut cfg);
    let sim = SimTailscaled::start(dir.path().join("ts.sock"), cfg).await.unwrap();
    (dir, sim)
}

async fn sim() -> (TempDir, SimTailscaled) {
    sim_with(|_| {}).await
}

fn assert_go_error(r: &common::Resp, status: u16, msg: &str) {
    assert_eq!(r.status, status, "{r:?}");
    assert_eq!(r.body, format!("{msg}\n"), "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
}

#[tokio::test]
async fn root_404_and_common_headers() {
    let (_d, sim) = sim().await;
    let r = get(sim.socket_path(), "/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "tailscaled\n");
    assert_eq!(r.header("tailscale-version"), Some("1.102.4-t3caf7d9e7-g084ee3b64"));
    assert_eq!(r.header("tailscale-cap"), Some("145"));
    assert_eq!(r.header("x-frame-options"), Some("DENY"));
    assert_eq!(r.header("x-content-type-options"), Some("nosniff"));
    assert!(r.header("content-security-policy").unwrap().starts_with("default-src 'none'"));

    for p in ["/nope", "/localapi/v0/nope", "/localapi/v1/status", "/localapi/v0/cert"] {
        let r = get(sim.socket_path(), p).await;
        assert_go_error(&r, 404, "404 page not found");
        assert_eq!(r.header("tailscale-cap"), Some("145"));
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn host_header_rules() {
    let (_d, sim) = sim().await;
    let s = sim.socket_path();
    let ok = raw(s, "GET / HTTP/1.1\r\nHost: local-tailscaled.sock\r\nConnection: close\r\n\r\n").await;
    assert_eq!(ok.status, 200);
    let empty = raw(s, "GET / HTTP/1.1\r\nHost: \r\nConnection: close\r\n\r\n").await;
    assert_eq!(empty.status, 200, "{empty:?}");
    let http10 = raw(s, "GET / HTTP/1.0\r\n\r\n").await;
    assert_eq!(http10.status, 200, "{http10:?}");
    for bad in ["local-tailscaled.sock:80", "localhost:41112", "127.0.0.1", "foo"] {
        let r = raw(s, &format!("GET /localapi/v0/status HTTP/1.1\r\nHost: {bad}\r\nConnection: close\r\n\r\n")).await;
        assert_go_error(&r, 403, "invalid localapi request");
        // Rejected before ServeHTTP adds the LocalAPI headers.
        assert_eq!(r.header("tailscale-version"), None);
    }
    // Go's net/http: HTTP/1.1 without Host is a 400 before any handler.
    let nohost = raw(s, "GET / HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(nohost.status, 400);
    assert_eq!(nohost.body, "400 Bad Request: missing required Host header");
    sim.shutdown().await;
}

#[tokio::test]
async fn origin_and_referer_are_forbidden() {
    let (_d, sim) = sim().await;
    for h in [("Origin", "http://evil.example"), ("Referer", "http://evil.example/x")] {
        let r = req(sim.socket_path(), "GET", "/localapi/v0/status", &[h], None).await;
        assert_go_error(&r, 403, "invalid localapi request");
    }
    sim.shutdown().await;
}

fn key_positions(body: &str, keys: &[&str]) {
    let mut last = 0;
    for k in keys {
        let needle = format!("\n\t\"{k}\": ");
        let pos = body.find(&needle).unwrap_or_else(|| panic!("missing top-level {k} in\n{body}"));
        assert!(pos >= last, "{k} out of order");
        last = pos;
    }
}

#[tokio::test]
async fn status_running_shape() {
    let (_d, sim) = sim().await;
    let r = get(sim.socket_path(), "/localapi/v0/status?peers=false").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let b = &r.body;
    assert!(b.starts_with("{\n\t\"Version\": \"1.102.4-t3caf7d9e7-g084ee3b64\",\n\t\"TUN\": true,\n"), "{b}");
    assert!(b.ends_with("}\n"));
    key_positions(
        b,
        &[
            "Version",
            "TUN",
            "BackendState",
            "AuthURL",
            "TailscaleIPs",
            "Self",
            "Health",
            "MagicDNSSuffix",
            "CurrentTailnet",
            "CertDomains",
            "ExtraRecords",
            "Peer",
            "User",
            "ClientVersion",
        ],
    );
    assert!(b.contains("\n\t\"Health\": [],\n"), "{b}");
    // storage() publishes each service's VIPs as records; none at all is `null`.
    assert!(b.contains("\n\t\"ExtraRecords\": [\n\t\t{\n\t\t\t\"Name\": \"grafana.bat-boa.ts.net\",\n\t\t\t\"Value\": \"100.100.5.2\"\n"), "{b}");
    assert!(b.contains("\n\t\"Peer\": null,\n"));
    assert!(b.contains("\n\t\"ClientVersion\": null\n}"));
    assert!(b.contains("\t\t\"DNSName\": \"storage.bat-boa.ts.net.\",\n"));
    let v: serde_json::Value = serde_json::from_str(b).unwrap();
    assert_eq!(v["BackendState"], "Running");
    assert_eq!(
        v["CertDomains"],
        serde_json::json!(["storage.bat-boa.ts.net", "grafana.bat-boa.ts.net", "jellyfin.bat-boa.ts.net"])
    );
    assert_eq!(v["MagicDNSSuffix"], SUFFIX);
    assert_eq!(v["CurrentTailnet"]["MagicDNSSuffix"], SUFFIX);
    assert_eq!(v["Self"]["Tags"], serde_json::json!(["tag:storage"]));
    assert!(v["Self"].get("KeyExpiry").is_none(), "tagged nodes have no key expiry");
    let cap = &v["Self"]["CapMap"];
    assert!(cap.get("https").is_some_and(|h| h.is_null()));
    let sh = &cap["service-host"][0];
    assert_eq!(sh["svc:grafana"].as_array().unwrap().len(), 2);
    assert!(sh["svc:jellyfin"][0].as_str().unwrap().starts_with("100."));
    assert!(sh["svc:jellyfin"][1].as_str().unwrap().starts_with("fd7a:"));
    assert_eq!(v["Self"]["Capabilities"][1], "https");
    assert_eq!(v["User"]["987654321"]["LoginName"], "tagged-devices");
    sim.shutdown().await;
}

#[tokio::test]
async fn status_signed_out_and_https_off() {
    let (_d, sim) = sim_with(|c| c.backend_state = "NeedsLogin".into()).await;
    let r = get(sim.socket_path(), "/localapi/v0/status").await;
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    for k in ["TailscaleIPs", "CurrentTailnet", "CertDomains", "ExtraRecords", "Peer", "User", "ClientVersion"] {
        assert!(v[k].is_null(), "{k} should be null: {}", r.body);
    }
    assert_eq!(v["Health"], serde_json::json!(["Tailscale is stopped."]));
    assert_eq!(v["Self"]["DNSName"], "");
    assert_eq!(v["Self"]["Addrs"], serde_json::json!([]));
    assert!(v["Self"]["PeerAPIURL"].is_null());
    assert!(v["Self"].get("CapMap").is_none());
    assert_eq!(v["MagicDNSSuffix"], "");

    sim.update(|c| {
        c.backend_state = "Running".into();
        c.cert_domains = None;
        c.approved_services.clear();
    });
    let r = get(sim.socket_path(), "/localapi/v0/status").await;
    assert!(r.body.contains("\n\t\"CertDomains\": null,\n"), "{}", r.body);
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert!(v["Self"].get("CapMap").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn cert_domains_endpoint() {
    let (_d, sim) = sim().await;
    let r = get(sim.socket_path(), "/localapi/v0/cert-domains").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "[\"grafana.bat-boa.ts.net\",\"jellyfin.bat-boa.ts.net\",\"storage.bat-boa.ts.net\"]\n");
    sim.update(|c| c.cert_domains = None);
    assert_eq!(get(sim.socket_path(), "/localapi/v0/cert-domains").await.body, "null\n");
    sim.update(|c| c.has_cert_domains_endpoint = false);
    assert_go_error(&get(sim.socket_path(), "/localapi/v0/cert-domains").await, 404, "404 page not found");
    sim.shutdown().await;
}

#[tokio::test]
async fn cert_error_bodies_byte_for_byte() {
    let (_d, sim) = sim().await;
    let s = sim.socket_path();
    let cert = |d: &str| format!("/localapi/v0/cert/{d}?type=pair");

    for bad in ["nodot", "a..b.ts.net", "a.b.ts.net:443", "%2A%2A.x.ts.net", "x.*.ts.net"] {
        assert_go_error(&get(s, &cert(bad)).await, 500, "invalid domain");
    }
    assert_go_error(
        &get(s, &cert("immich.bat-boa.ts.net")).await,
        500,
        r#"invalid domain "immich.bat-boa.ts.net"; must be one of ["storage.bat-boa.ts.net" "grafana.bat-boa.ts.net" "jellyfin.bat-boa.ts.net"]"#,
    );
    assert_go_error(
        &get(s, &cert("*.storage.bat-boa.ts.net")).await,
        500,
        "wildcard certificates are not enabled for this node",
    );
    sim.update(|c| c.subdomain_resolve = true);
    assert_go_error(
        &get(s, &cert("*.other.bat-boa.ts.net")).await,
        500,
        r#"invalid domain "*.other.bat-boa.ts.net"; wildcard certificates are not enabled for this domain"#,
    );
    assert_go_error(
        &get(s, "/localapi/v0/cert/storage.bat-boa.ts.net?min_validity=abc").await,
        400,
        r#"invalid validity parameter: time: invalid duration "abc""#,
    );
    assert_go_error(
        &get(s, "/localapi/v0/cert/storage.bat-boa.ts.net?min_validity=5").await,
        400,
        r#"invalid validity parameter: time: missing unit in duration "5""#,
    );
    sim.update(|c| c.cert_domains = Some(vec![]));
    assert_go_error(
        &get(s, &cert("storage.bat-boa.ts.net")).await,
        500,
        "your Tailscale account does not support getting TLS certs",
    );
    sim.update(|c| c.backend_state = "Starting".into());
    assert_go_error(&get(s, &cert("storage.bat-boa.ts.net")).await, 500, "no netmap available");
    assert!(sim.issued().is_empty());

    // Invalid type is reported only after the certificate was obtained.
    sim.update(|c| {
        c.backend_state = "Running".into();
        c.cert_domains = Some(vec!["storage.bat-boa.ts.net".into()]);
    });
    assert_go_error(
        &get(s, "/localapi/v0/cert/storage.bat-boa.ts.net?type=der").await,
        400,
        r#"invalid type; want "cert" (default), "key", or "pair""#,
    );
    assert_eq!(sim.issued().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn pair_is_key_then_chain_and_verifies() {
    let (_d, sim) = sim().await;
    // Trailing dot is trimmed (v1.102+).
    let r = get(sim.socket_path(), "/localapi/v0/cert/grafana.bat-boa.ts.net.?type=pair&min_validity=0s").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-type"), Some("text/plain"));
    assert_eq!(pem_labels(&r.body), ["EC PRIVATE KEY", "CERTIFICATE", "CERTIFICATE"]);
    assert!(r.body.contains("-----END EC PRIVATE KEY-----\n-----BEGIN CERTIFICATE-----"));
    let key = PrivateKeyDer::from_pem_slice(r.body.as_bytes()).unwrap();
    assert!(matches!(key, PrivateKeyDer::Sec1(_)));
    rustls::crypto::ring::sign::any_supported_type(&key).unwrap();
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(r.body.as_bytes()).collect::<Result<_, _>>().unwrap();
    assert_eq!(certs.len(), 2);

    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from_pem_slice(sim.root_pem().as_bytes()).unwrap()).unwrap();
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    verifier
        .verify_server_cert(
            &certs[0],
            &certs[1..],
            &ServerName::try_from("grafana.bat-boa.ts.net").unwrap(),
            &[],
            UnixTime::now(),
        )
        .unwrap();

    // type=key / type=cert / default return the parts (cached, same cert).
    let k = get(sim.socket_path(), "/localapi/v0/cert/grafana.bat-boa.ts.net?type=key").await;
    assert_eq!(pem_labels(&k.body), ["EC PRIVATE KEY"]);
    assert!(r.body.starts_with(&k.body));
    let c = get(sim.socket_path(), "/localapi/v0/cert/grafana.bat-boa.ts.net").await;
    assert_eq!(pem_labels(&c.body), ["CERTIFICATE", "CERTIFICATE"]);
    assert!(r.body.ends_with(&c.body));
    assert_eq!(sim.issued().len(), 1);
    assert_eq!(sim.issued()[0].domain, "grafana.bat-boa.ts.net");
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_first_issuance_then_fast_cache() {
    let (_d, sim) = sim_with(|c| c.first_issue_delay = Duration::from_millis(800)).await;
    let path = "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair";
    let t0 = Instant::now();
    let a = get(sim.socket_path(), path).await;
    assert!(t0.elapsed() >= Duration::from_millis(800));
    let t1 = Instant::now();
    let b = get(sim.socket_path(), path).await;
    assert!(t1.elapsed() < Duration::from_millis(600), "cached answer took {:?}", t1.elapsed());
    assert_eq!(a.body, b.body);
    assert_eq!(sim.issued().len(), 1);
    assert_eq!(sim.cached_serial("storage.bat-boa.ts.net").as_deref(), Some(sim.issued()[0].serial.as_str()));
    sim.shutdown().await;
}

#[tokio::test]
async fn concurrent_first_requests_share_one_issuance() {
    let (_d, sim) = sim_with(|c| c.first_issue_delay = Duration::from_millis(300)).await;
    let p = sim.socket_path().to_path_buf();
    let path = "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair";
    let (a, b) = tokio::join!(get(&p, path), get(&p, path));
    assert_eq!(a.status, 200);
    assert_eq!(a.body, b.body);
    assert_eq!(sim.issued().len(), 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn min_validity_forces_new_serial() {
    let (_d, sim) = sim_with(|c| c.cert_lifetime = Duration::from_secs(3600)).await;
    let s = sim.socket_path();
    let base = "/localapi/v0/cert/jellyfin.bat-boa.ts.net?type=pair";
    get(s, base).await;
    get(s, &format!("{base}&min_validity=30m")).await;
    assert_eq!(sim.issued().len(), 1, "30m is satisfied by a 1h cert");
    let r = get(s, &format!("{base}&min_validity=2h")).await;
    assert_eq!(r.status, 200);
    let issued = sim.issued();
    assert_eq!(issued.len(), 2);
    assert_ne!(issued[0].serial, issued[1].serial);
    assert_eq!(sim.cached_serial("jellyfin.bat-boa.ts.net").unwrap(), issued[1].serial);
    sim.shutdown().await;
}

#[tokio::test]
async fn background_renewal_after_two_thirds() {
    // 9 s lifetime: renewal is due after 6 s; at 6.5 s at least 1.5 s of validity is
    // left even with notBefore truncated to the second and a busy machine.
    let (_d, sim) = sim_with(|c| c.cert_lifetime = Duration::from_secs(9)).await;
    let s = sim.socket_path();
    let path = "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair";
    let first = get(s, path).await;
    tokio::time::sleep(Duration::from_millis(6500)).await;
    let second = get(s, path).await;
    assert_eq!(first.body, second.body, "still-valid cert is returned while renewing");
    tokio::time::timeout(T, async {
        while sim.issued().len() < 2 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap();
    let third = get(s, path).await;
    assert_ne!(first.body, third.body);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_429_with_retry_after() {
    let (_d, sim) = sim_with(|c| c.rate_limited = Some(Duration::from_secs(3600))).await;
    let r = get(sim.socket_path(), "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair").await;
    assert_eq!(r.status, 429);
    assert_eq!(r.header("retry-after"), Some("3600"));
    assert_eq!(r.header("content-type"), Some("text/plain; charset=utf-8"));
    assert!(
        r.body.starts_with("429 urn:ietf:params:acme:error:rateLimited: too many certificates (5) already issued for this exact set of identifiers in the last 168h0m0s, retry after "),
        "{}",
        r.body
    );
    assert!(r.body.ends_with('\n'));
    // A cached cert is still served while rate limited.
    sim.update(|c| c.rate_limited = None);
    assert_eq!(get(sim.socket_path(), "/localapi/v0/cert/storage.bat-boa.ts.net").await.status, 200);
    sim.update(|c| c.rate_limited = Some(Duration::from_millis(1500)));
    assert_eq!(get(sim.socket_path(), "/localapi/v0/cert/storage.bat-boa.ts.net").await.status, 200);
    let r = get(sim.socket_path(), "/localapi/v0/cert/grafana.bat-boa.ts.net").await;
    assert_eq!(r.header("retry-after"), Some("2"), "rounded up");
    sim.shutdown().await;
}

/// Send a request and give up (drop the connection) after `after`.
async fn request_and_abandon(sock: &std::path::Path, path: &str, after: Duration) {
    let mut s = UnixStream::connect(sock).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = [0u8; 64];
    let r = tokio::time::timeout(after, tokio::io::AsyncReadExt::read(&mut s, &mut buf)).await;
    assert!(r.is_err(), "expected no answer, got {r:?}");
    drop(s);
}

async fn wait_for_status(sim: &SimTailscaled, path_part: &str, status: u16) {
    tokio::time::timeout(T, async {
        loop {
            if sim.requests().iter().any(|r| r.path_and_query.contains(path_part) && r.status == status) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("request record");
}

#[tokio::test]
async fn rate_limit_hang_until_client_disconnects() {
    let (_d, sim) = sim_with(|c| {
        c.rate_limited = Some(Duration::from_secs(60));
        c.rate_limit_hangs = true;
    })
    .await;
    request_and_abandon(
        sim.socket_path(),
        "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair",
        Duration::from_millis(300),
    )
    .await;
    wait_for_status(&sim, "/cert/storage", 499).await;
    assert!(sim.issued().is_empty());
    // The per-domain lock was released: once the limit lifts, issuance works.
    sim.update(|c| c.rate_limited = None);
    assert_eq!(get(sim.socket_path(), "/localapi/v0/cert/storage.bat-boa.ts.net").await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn disconnect_during_issuance_aborts_it() {
    let (_d, sim) = sim_with(|c| c.first_issue_delay = Duration::from_millis(600)).await;
    request_and_abandon(
        sim.socket_path(),
        "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair",
        Duration::from_millis(150),
    )
    .await;
    wait_for_status(&sim, "/cert/storage", 499).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(sim.issued().is_empty());
    assert!(sim.cached_serial("storage.bat-boa.ts.net").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn setdns_and_readonly_store_failures() {
    let (_d, sim) = sim_with(|c| c.setdns_fails = true).await;
    let r = get(sim.socket_path(), "/localapi/v0/cert/grafana.bat-boa.ts.net?type=pair").await;
    assert_eq!(r.status, 500);
    assert!(r.body.starts_with("SetDNS \"_acme-challenge.grafana.bat-boa.ts.net\" => \""), "{}", r.body);
    assert!(
        r.body.ends_with("\": set-dns response: 500 Internal Server Error, failed to create DNS record\n"),
        "{}",
        r.body
    );
    assert!(sim.issued().is_empty());

    sim.update(|c| {
        c.setdns_fails = false;
        c.cert_store_readonly = true;
    });
    for _ in 0..2 {
        let r = get(sim.socket_path(), "/localapi/v0/cert/grafana.bat-boa.ts.net?type=pair").await;
        assert_eq!(r.status, 500);
        assert!(r.body.starts_with("open /var/lib/tailscale/certs/grafana.bat-boa.ts.net.key.tmp"), "{}", r.body);
        assert!(r.body.ends_with(": read-only file system\n"));
    }
    assert_eq!(sim.issued().len(), 2, "each attempt burns a real issuance");
    assert!(sim.cached_serial("grafana.bat-boa.ts.net").is_none());
    sim.shutdown().await;
}

#[tokio::test]
async fn peer_uid_permissions() {
    let (_d, sim) = sim_with(|c| {
        c.peer_uid = Some(1000);
        c.daemon_uid = Some(0);
    })
    .await;
    let s = sim.socket_path();
    let cert = "/localapi/v0/cert/storage.bat-boa.ts.net?type=pair";
    assert_go_error(&get(s, cert).await, 403, "cert access denied");
    assert_eq!(get(s, "/localapi/v0/status").await.status, 200, "read is allowed for everyone");
    assert_eq!(get(s, "/localapi/v0/serve-config").await.status, 200);
    assert_go_error(&req(s, "POST", "/localapi/v0/serve-config", &[], Some("{}")).await, 403, "serve config denied");
    assert_go_error(
        &req(s, "PATCH", "/localapi/v0/prefs", &[], Some(r#"{"AdvertiseServicesSet":true}"#)).await,
        403,
        "prefs write access denied",
    );

    sim.update(|c| c.permit_cert_uid = Some(1000));
    assert_eq!(get(s, cert).await.status, 200, "TS_PERMIT_CERT_UID grants cert access");
    assert_go_error(&req(s, "POST", "/localapi/v0/serve-config", &[], Some("{}")).await, 403, "serve config denied");

    sim.update(|c| {
        c.permit_cert_uid = None;
        c.operator_uid = Some(1000);
    });
    assert_eq!(get(s, cert).await.status, 200, "operator has write");
    assert_eq!(req(s, "POST", "/localapi/v0/serve-config", &[], Some("{}")).await.status, 200);

    sim.update(|c| {
        c.operator_uid = None;
        c.daemon_uid = Some(1000);
    });
    assert_eq!(get(s, cert).await.status, 200, "the daemon's own uid has write");

    sim.update(|c| {
        c.daemon_uid = Some(0);
        c.peer_uid = Some(0);
    });
    assert_eq!(get(s, cert).await.status, 200, "root has write");
    sim.shutdown().await;
}

#[tokio::test]
async fn real_peer_credentials_are_used_by_default() {
    let (_d, sim) = sim().await;
    // This process is either root or the daemon's own uid: write access.
    assert_eq!(get(sim.socket_path(), "/localapi/v0/cert/storage.bat-boa.ts.net").await.status, 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn outage_really_refuses_then_recovers() {
    let (_d, sim) = sim().await;
    let path = sim.socket_path().to_path_buf();
    // An idle keep-alive connection opened before the outage.
    let mut idle = UnixStream::connect(&path).await.unwrap();
    idle.write_all(b"GET / HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n").await.unwrap();
    let mut line = String::new();
    let mut idle_r = BufReader::new(idle);
    idle_r.read_line(&mut line).await.unwrap();
    assert!(line.starts_with("HTTP/1.1 200"));

    sim.update(|c| c.unavailable = true);
    assert!(UnixStream::connect(&path).await.is_err(), "connect must fail during the outage");
    assert!(!path.exists());
    // The idle connection gets closed.
    tokio::time::timeout(T, async {
        let mut buf = Vec::new();
        let _ = tokio::io::AsyncReadExt::read_to_end(&mut idle_r, &mut buf).await;
    })
    .await
    .expect("existing connection closed");

    sim.update(|c| c.unavailable = false);
    assert_eq!(get(&path, "/").await.status, 200);
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o666);
    sim.shutdown().await;
}

#[tokio::test]
async fn start_unavailable_and_socket_file_lifecycle() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sock = dir.path().join("ts.sock");
    std::fs::write(&sock, b"stale").unwrap();
    let mut cfg = SimConfig::storage(SUFFIX, &[]);
    cfg.unavailable = true;
    let sim = SimTailscaled::start(&sock, cfg).await.unwrap();
    assert!(UnixStream::connect(&sock).await.is_err());
    sim.update(|c| c.unavailable = false);
    assert_eq!(std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777, 0o666);
    assert_eq!(get(&sock, "/").await.status, 200);
    sim.shutdown().await;
    assert!(!sock.exists(), "shutdown removes the socket");

    // Drop also cleans up.
    let sim = SimTailscaled::start(&sock, SimConfig::default()).await.unwrap();
    assert!(sock.exists());
    drop(sim);
    assert!(!sock.exists());
}

#[tokio::test]
async fn keep_alive_with_hyper_client() {
    use http_body_util::{BodyExt, Empty};
    use hyper_util::rt::TokioIo;
    let (_d, sim) = sim().await;
    let stream = UnixStream::connect(sim.socket_path()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    for path in ["/localapi/v0/status?peers=false", "/localapi/v0/cert-domains", "/"] {
        let req = http::Request::get(path)
            .header("host", "local-tailscaled.sock")
            .body(Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tokio::time::timeout(T, sender.send_request(req)).await.unwrap().unwrap();
        assert_eq!(resp.status(), 200);
        resp.into_body().collect().await.unwrap();
    }
    let recs = sim.requests();
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[0].host.as_deref(), Some("local-tailscaled.sock"));
    assert_eq!(recs[0].method, "GET");
    assert_eq!(recs[0].path_and_query, "/localapi/v0/status?peers=false");
    sim.shutdown().await;
}

#[tokio::test]
async fn serve_config_etag_and_412() {
    let (_d, sim) = sim().await;
    let s = sim.socket_path();
    let r = get(s, "/localapi/v0/serve-config").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body, "null");
    let null_etag = r.header("etag").unwrap().to_string();
    assert_eq!(null_etag, "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b", "sha256(\"null\")");

    let body = r#"{"Services":{"svc:grafana":{"TCP":{"443":{"TCPForward":"127.0.0.1:8443","ProxyProtocol":2}}}}}"#;
    assert_go_error(
        &req(s, "POST", "/localapi/v0/serve-config", &[("If-Match", "deadbeef")], Some(body)).await,
        412,
        "etag mismatch",
    );
    let ok = req(s, "POST", "/localapi/v0/serve-config", &[("If-Match", &null_etag)], Some(body)).await;
    assert_eq!(ok.status, 200, "{ok:?}");
    assert_eq!(ok.body, "");
    let after = get(s, "/localapi/v0/serve-config").await;
    let v: serde_json::Value = serde_json::from_str(&after.body).unwrap();
    assert_eq!(v["Services"]["svc:grafana"]["TCP"]["443"]["ProxyProtocol"], 2);
    assert_eq!(sim.serve_config(), v);
    let etag2 = after.header("etag").unwrap().to_string();
    assert_ne!(etag2, null_etag);
    // The old etag is now stale.
    assert_eq!(req(s, "POST", "/localapi/v0/serve-config", &[("If-Match", &null_etag)], Some("{}")).await.status, 412);
    // No If-Match: unconditional overwrite.
    assert_eq!(req(s, "POST", "/localapi/v0/serve-config", &[], Some("{}")).await.status, 200);
    assert_eq!(get(s, "/localapi/v0/serve-config").await.body, "{}");
    // Bad bodies.
    let r = req(s, "POST", "/localapi/v0/serve-config", &[], Some("[1]")).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        r.body,
        "{\"error\":\"decoding config: json: cannot unmarshal array into Go value of type ipn.ServeConfig\"}\n"
    );
    assert_eq!(
        req(s, "POST", "/localapi/v0/serve-config", &[], Some("")).await.body,
        "{\"error\":\"decoding config: EOF\"}\n"
    );

    sim.update(|c| c.locked_config_file = true);
    let r = req(s, "POST", "/localapi/v0/serve-config", &[], Some(body)).await;
    assert_eq!(r.status, 500);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(
        r.body,
        "{\"error\":\"updating config: can't reconfigure tailscaled when using a config file; config file is locked\"}\n"
    );
    assert_go_error(&req(s, "DELETE", "/localapi/v0/serve-config", &[], None).await, 405, "method not allowed");
    sim.shutdown().await;
}

#[tokio::test]
async fn prefs_get_and_patch_advertise_services() {
    let (_d, sim) = sim().await;
    let s = sim.socket_path();
    let r = get(s, "/localapi/v0/prefs").await;
    assert_eq!(r.status, 200);
    assert!(r.body.starts_with("{\n\t\"ControlURL\": "), "{}", r.body);
    assert!(r.body.contains("\n\t\"AdvertiseServices\": null,\n"));
    assert!(r.body.contains("\n\t\"Hostname\": \"storage\",\n"));

    let patch = r#"{"AdvertiseServicesSet":true,"AdvertiseServices":["svc:grafana","svc:jellyfin"]}"#;
    let r = req(s, "PATCH", "/localapi/v0/prefs", &[], Some(patch)).await;
    assert_eq!(r.status, 200, "{r:?}");
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["AdvertiseServices"], serde_json::json!(["svc:grafana", "svc:jellyfin"]));
    assert_eq!(sim.advertised_services(), ["svc:grafana", "svc:jellyfin"]);

    // Without the Set bit the field is ignored; with it the list is replaced wholesale.
    req(s, "PATCH", "/localapi/v0/prefs", &[], Some(r#"{"AdvertiseServices":[]}"#)).await;
    assert_eq!(sim.advertised_services().len(), 2);
    req(
        s,
        "PATCH",
        "/localapi/v0/prefs",
        &[],
        Some(r#"{"AdvertiseServicesSet":true,"AdvertiseServices":["svc:immich"]}"#),
    )
    .await;
    assert_eq!(sim.advertised_services(), ["svc:immich"]);

    let bad =
        req(s, "PATCH", "/localapi/v0/prefs", &[], Some(r#"{"AdvertiseServicesSet":true,"AdvertiseServices":"x"}"#))
            .await;
    assert_go_error(
        &bad,
        400,
        "json: cannot unmarshal string into Go struct field MaskedPrefs.AdvertiseServices of type []string",
    );
    assert_go_error(&req(s, "POST", "/localapi/v0/prefs", &[], Some("{}")).await, 405, "unsupported method");
    sim.shutdown().await;
}

async fn next_line(r: &mut BufReader<UnixStream>) -> String {
    let mut l = String::new();
    tokio::time::timeout(T, r.read_line(&mut l)).await.unwrap().unwrap();
    l
}

/// One chunked-encoding chunk holding one JSON line: "<size>\r\n<json>\n\r\n".
async fn read_msg(r: &mut BufReader<UnixStream>) -> serde_json::Value {
    let _size = next_line(r).await;
    let json = next_line(r).await;
    let _crlf = next_line(r).await;
    serde_json::from_str(json.trim_end()).unwrap()
}

#[tokio::test]
async fn watch_ipn_bus_streams_updates() {
    let (_d, sim) = sim().await;
    let mut s = UnixStream::connect(sim.socket_path()).await.unwrap();
    s.write_all(b"GET /localapi/v0/watch-ipn-bus?mask=10 HTTP/1.1\r\nHost: local-tailscaled.sock\r\n\r\n")
        .await
        .unwrap();
    let mut r = BufReader::new(s);
    // Head.
    let status = next_line(&mut r).await;
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    while next_line(&mut r).await != "\r\n" {}
    let first = read_msg(&mut r).await;
    assert_eq!(first["State"], 6);
    assert_eq!(first["Version"], "1.102.4-t3caf7d9e7-g084ee3b64");
    assert!(first["NetMap"]["DNS"]["CertDomains"].is_array());
    assert!(first["SelfChange"]["Name"].is_string(), "the initial netmap comes with SelfChange: {first}");

    // A new netmap reaches Linux watchers as SelfChange only (1.100+); CertDomains is
    // re-read by the consumer, not pushed.
    sim.update(|c| c.cert_domains.as_mut().unwrap().push(format!("immich.{SUFFIX}")));
    let second = read_msg(&mut r).await;
    assert!(second["SelfChange"]["Name"].is_string(), "{second}");
    assert!(second["NetMap"].is_null(), "no NetMap after the first message: {second}");
    for always in ["ErrMessage", "LoginFinished", "State", "Prefs", "Engine", "BrowseToURL", "DriveShares"] {
        assert!(second.get(always).is_some_and(serde_json::Value::is_null), "{always} in {second}");
    }

    sim.update(|c| c.backend_state = "Stopped".into());
    let third = read_msg(&mut r).await;
    assert_eq!((&third["State"], &third["Version"]), (&serde_json::json!(4), &first["Version"]), "{third}");
    sim.shutdown().await;
}

#[tokio::test]
async fn whois_peers() {
    let (_d, sim) = sim_with(|c| {
        c.peers = vec![SimPeer::user("100.64.0.7".parse().unwrap(), "alice@example.com", "Alice")];
    })
    .await;
    let s = sim.socket_path();
    let r = get(s, "/localapi/v0/whois?addr=100.64.0.7:51234").await;
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.body.starts_with("{\n\t\""));
    let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(v["UserProfile"]["LoginName"], "alice@example.com");
    assert_eq!(v["UserProfile"]["DisplayName"], "Alice");
    assert!(v["UserProfile"]["ProfilePicURL"].as_str().unwrap().starts_with("https://"));
    assert_eq!(v["Node"]["Addresses"][0], "100.64.0.7/32");
    assert_go_error(&get(s, "/localapi/v0/whois?addr=100.64.0.8:1").await, 404, "no match for IP:port");
    assert_go_error(&get(s, "/localapi/v0/whois").await, 400, "missing 'addr' parameter");
    assert_go_error(&get(s, "/localapi/v0/whois?addr=banana").await, 400, "invalid 'addr' parameter");
    // 1.103 details (docs/notes/simulator-fidelity-1.103.md §7): CapMap is always there.
    assert!(v.get("CapMap").is_some_and(serde_json::Value::is_null), "{v}");
    // An IPv4-mapped address is the IPv4 peer; a node key finds it too.
    assert_eq!(get(s, "/localapi/v0/whois?addr=%5B::ffff:100.64.0.7%5D:1").await.status, 200);
    let key = v["Node"]["Key"].as_str().unwrap().to_owned();
    assert_eq!(get(s, &format!("/localapi/v0/whois?addr={key}")).await.status, 200);
    assert_go_error(&get(s, "/localapi/v0/whois?addr=nodekey:abc").await, 400, "invalid nodekey in 'addr' parameter");
    let nobody = format!("/localapi/v0/whois?addr=nodekey:{}", "0".repeat(64));
    assert_go_error(&get(s, &nobody).await, 404, "no match for IP:port");
    // svc_name and dst_ip are checked once a node matched.
    assert_eq!(get(s, "/localapi/v0/whois?addr=100.64.0.7&svc_name=svc:grafana").await.status, 200);
    let bad_svc = "/localapi/v0/whois?addr=100.64.0.7&svc_name=grafana";
    assert_go_error(&get(s, bad_svc).await, 400, "invalid svc_name");
    assert_go_error(&get(s, "/localapi/v0/whois?addr=100.64.0.7&dst_ip=x").await, 400, "invalid dst_ip");
    // Peers also appear in status (with peers).
    let st: serde_json::Value = serde_json::from_str(&get(s, "/localapi/v0/status").await.body).unwrap();
    assert_eq!(st["Peer"].as_object().unwrap().len(), 1);
    sim.shutdown().await;
}

/// `Node.Tags` for tagged peers (owned by `tagged-devices`), and `CapMap` as
/// `serveWhoIsWithBackend` scopes it: toward the node without parameters, toward a
/// service hosted here with `svc_name` (nothing once the service is not approved
/// here), toward an address with `dst_ip`.
#[tokio::test]
async fn whois_tags_and_capabilities() {
    let monitor: std::net::IpAddr = "100.64.0.9".parse().unwrap();
    let carol: std::net::IpAddr = "100.64.0.10".parse().unwrap();
    let (_d, sim) = sim_with(|c| {
        c.approved_services = vec!["grafana".into(), "wiki".into()];
        c.peers = vec![
            SimPeer::tagged(monitor, &["tag:monitoring"]),
            SimPeer::user(carol, "carol@example.com", "Carol")
                .with_service_cap("grafana", "example.com/cap/grafana", serde_json::json!({"role": "editor"}))
                .with_node_cap("example.com/cap/ssh", serde_json::json!({})),
        ];
    })
    .await;
    let s = sim.socket_path();
    let doc = |body: &str| serde_json::from_str::<serde_json::Value>(body).unwrap();
    let m = doc(&get(s, "/localapi/v0/whois?addr=100.64.0.9:1").await.body);
    assert_eq!(m["Node"]["Tags"], serde_json::json!(["tag:monitoring"]), "{m}");
    assert_eq!(m["UserProfile"]["LoginName"], "tagged-devices");
    let c = doc(&get(s, "/localapi/v0/whois?addr=100.64.0.10:1").await.body);
    assert!(c["Node"].get("Tags").is_none(), "omitempty for untagged nodes: {c}");
    assert_eq!(c["CapMap"], serde_json::json!({"example.com/cap/ssh": [{}]}), "toward the node");
    let g = doc(&get(s, "/localapi/v0/whois?addr=100.64.0.10:1&svc_name=svc:grafana").await.body);
    assert_eq!(g["CapMap"], serde_json::json!({"example.com/cap/grafana": [{"role": "editor"}]}));
    let w = doc(&get(s, "/localapi/v0/whois?addr=100.64.0.10:1&svc_name=svc:wiki").await.body);
    assert!(w["CapMap"].is_null(), "no grant toward svc:wiki: {w}");
    let vip = "100.100.5.2"; // grafana's VIP (the first approved service)
    let d = doc(&get(s, &format!("/localapi/v0/whois?addr=100.64.0.10:1&dst_ip={vip}")).await.body);
    assert_eq!(d["CapMap"], g["CapMap"], "dst_ip of the service's VIP");
    sim.update(|c| c.approved_services = vec!["wiki".into()]);
    let gone = doc(&get(s, "/localapi/v0/whois?addr=100.64.0.10:1&svc_name=svc:grafana").await.body);
    assert!(gone["CapMap"].is_null(), "not in the node's service-host map any more: {gone}");
    let st = doc(&get(s, "/localapi/v0/status").await.body);
    let tagged = st["Peer"].as_object().unwrap().values().find(|p| p["Tags"].is_array()).expect("tagged peer");
    assert_eq!(tagged["Tags"], serde_json::json!(["tag:monitoring"]));
    sim.shutdown().await;
}

#[tokio::test]
async fn hostile_inputs_never_break_the_sim() {
    let (_d, sim) = sim().await;
    let s = sim.socket_path();
    let long = "a".repeat(5000);
    let cases = [
        "/localapi/v0/cert/%ff%fe.ts.net?type=pair".to_string(),
        "/localapi/v0/cert/%zz".to_string(),
        format!("/localapi/v0/cert/{long}.ts.net"),
        "/localapi/v0/cert/storage.bat-boa.ts.net?min_validity=%".to_string(),
        "/localapi/v0/cert/storage.bat-boa.ts.net?min_validity=-5h&type=".to_string(),
        "/localapi/v0/cert/storage.bat-boa.ts.net?min_validity=1.5.5h".to_string(),
        "/localapi/v0/cert/storage.bat-boa.ts.net?min_validity=9223372036854775807ns".to_string(),
        "/localapi/v0/cert/\u{e9}.ts.net".replace('\u{e9}', "%C3%A9"),
        "/localapi/v0/watch-ipn-bus?mask=abc".to_string(),
        "/localapi/v0/status?peers=maybe".to_string(),
        "/localapi/v0/whois?addr=%".to_string(),
    ];
    for c in &cases {
        let r = get(s, c).await;
        assert!((200..600).contains(&r.status), "{c}: {r:?}");
    }
    assert_go_error(&get(s, "/localapi/v0/watch-ipn-bus?mask=abc").await, 400, "bad mask");
    let r = req(s, "PATCH", "/localapi/v0/prefs", &[], Some("{not json")).await;
    assert_eq!(r.status, 400);
    let r = req(s, "POST", "/localapi/v0/serve-config", &[], Some("\u{0}\u{1}")).await;
    assert_eq!(r.status, 500);
    // Still healthy.
    assert_eq!(get(s, "/").await.status, 200);
    sim.shutdown().await;
}
