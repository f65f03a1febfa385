//! Issue 3: renewal under load, restart with tailscaled down, Retry-After, cache files.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use crate::harness::*;

const WAIT: Duration = Duration::from_secs(60);

pub(crate) fn client_config(env: &Env) -> Arc<rustls::ClientConfig> {
    let trust = snirouter_tls::Trust::Roots(env_roots(env));
    let mut cfg = snirouter_tls::client_config(trust, &[]).expect("client config");
    // Full handshakes only: a resumed session reports the certificate of the session
    // it resumes, not the one the server would send now.
    cfg.resumption = rustls::client::Resumption::disabled();
    Arc::new(cfg)
}

/// One request to `host` (with `headers`) on a fresh TLS connection; returns the leaf
/// certificate served.
pub(crate) async fn one_request(
    env: &Env,
    cfg: Arc<rustls::ClientConfig>,
    host: &str,
    headers: &[(&str, &str)],
) -> Result<Vec<u8>, String> {
    let tcp = tokio::net::TcpStream::connect(env.https).await.map_err(|e| e.to_string())?;
    let server_name = rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(server_name, tcp).await.map_err(|e| format!("tls: {e}"))?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .ok_or("no peer certificate")?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.map_err(|e| format!("http: {e}"))?;
    tokio::spawn(conn);
    let mut req = http::Request::get("/load").header(http::header::HOST, host);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| format!("request: {e}"))?;
    let status = resp.status();
    resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_is_renewed_under_load_without_a_failed_request() {
    let mut opts = EnvOptions::default();
    // Renewal window opens when a third of the lifetime is left: after 30 s.
    opts.sim.cert_lifetime = Duration::from_secs(45);
    let env = Arc::new(Env::start(opts).await);
    env.wait_serving("grafana", WAIT).await;
    let first_serial = env.sim.cached_serial(&fqdn("grafana")).expect("issued");

    let cfg = client_config(&env);
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let leaves = Arc::new(std::sync::Mutex::new(HashSet::new()));
    let deadline = Instant::now() + Duration::from_secs(40);
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (env, cfg, ok, failed, leaves) = (env.clone(), cfg.clone(), ok.clone(), failed.clone(), leaves.clone());
        workers.push(tokio::spawn(async move {
            while Instant::now() < deadline {
                match one_request(&env, cfg.clone(), &fqdn("grafana"), &[]).await {
                    Ok(leaf) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        leaves.lock().expect("lock").insert(leaf);
                    }
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    let distinct = leaves.lock().expect("lock").len();
    let new_serial = env.sim.cached_serial(&fqdn("grafana")).expect("issued");
    eprintln!(
        "rotation under load: {ok} requests ok, {failed} failed, {distinct} distinct certificates served, serial {first_serial} -> {new_serial}"
    );
    assert_eq!(failed, 0, "no request may fail during renewal");
    assert!(ok > 100, "the load actually ran ({ok} requests)");
    assert_ne!(first_serial, new_serial, "tailscaled issued a new certificate");
    assert!(distinct >= 2, "the router switched to the renewed certificate; router log:\n{}", env.router().logs());
    let renewal_asked_with_min_validity = env
        .sim
        .requests()
        .iter()
        .any(|r| r.path_and_query.contains(&fqdn("grafana")) && r.path_and_query.contains("min_validity="));
    assert!(renewal_asked_with_min_validity, "renewal asks with min_validity");
    let logs = env.router().logs();
    assert!(logs.contains("certificate installed"), "{logs}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_tailscaled_down_serves_cached_names_and_recovers_the_rest() {
    let mut env = Env::start(EnvOptions::default()).await;
    for name in SERVICES {
        env.wait_serving(name, WAIT).await;
    }
    if let Some(mut r) = env.router.take() {
        r.stop();
    }
    // Two names lose their cache; tailscaled goes away.
    let certs = env.dir.path().join("cache/certs");
    for name in ["immich", "navidrome"] {
        std::fs::remove_file(certs.join(format!("{}.pem", fqdn(name)))).expect("remove cache file");
    }
    env.sim.update(|c| c.unavailable = true);
    env.start_router().await;
    // Every cached name serves at once, with tailscaled down.
    for name in SERVICES.iter().filter(|n| !["immich", "navidrome"].contains(n)) {
        let (_, status) = body_and_status(&curl(&env, name, "/", &[]).await);
        assert_eq!(status, 200, "{name} must serve from the cache while tailscaled is down");
    }
    let out = s_client(&env, &fqdn("immich")).await;
    assert!(out.contains("unrecognized name"), "{out}");
    let logs = env.router().logs();
    assert!(logs.contains("serving cached certificate"), "{logs}");
    // tailscaled comes back: the uncached names recover without a restart.
    env.sim.update(|c| c.unavailable = false);
    env.wait_serving("immich", WAIT).await;
    env.wait_serving("navidrome", WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_then_the_name_is_fetched() {
    let mut opts = EnvOptions::default();
    opts.sim.rate_limited = Some(Duration::from_secs(4));
    let env = Env::start(opts).await;
    let grafana = format!("/localapi/v0/cert/{}", fqdn("grafana"));
    let first = loop {
        if let Some(r) = env.sim.requests().into_iter().find(|r| r.path_and_query.starts_with(&grafana)) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(first.status, 429);
    env.sim.update(|c| c.rate_limited = None);
    env.wait_serving("grafana", WAIT).await;
    let asks: Vec<_> = env.sim.requests().into_iter().filter(|r| r.path_and_query.starts_with(&grafana)).collect();
    assert!(asks.len() >= 2, "{asks:?}");
    let gap = asks[1].at.duration_since(first.at);
    assert!(gap >= Duration::from_secs(4), "second request {gap:?} after the 429; Retry-After said 4 s");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cache_files_are_private_and_a_corrupt_one_is_ignored() {
    let mut env = Env::start(EnvOptions::default()).await;
    env.wait_serving("grafana", WAIT).await;
    let cache = env.dir.path().join("cache");
    let file = cache.join("certs").join(format!("{}.pem", fqdn("grafana")));
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode(&cache), 0o700);
    assert_eq!(mode(&cache.join("certs")), 0o700);
    assert_eq!(mode(&file), 0o600);
    let pem = std::fs::read_to_string(&file).expect("read");
    assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----"), "key first, then the chain");
    assert_eq!(pem.matches("BEGIN CERTIFICATE").count(), 2, "leaf and intermediate");

    if let Some(mut r) = env.router.take() {
        r.stop();
    }
    std::fs::write(&file, "-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n").expect("corrupt");
    env.start_router().await;
    let logs =
        env.router().wait_log("the corrupt cache report", WAIT, |l| l.contains("ignoring cached certificate")).await;
    assert!(logs.contains(&fqdn("grafana")), "{logs}");
    env.wait_serving("grafana", WAIT).await;
    // Replaced atomically by the fresh certificate, still private, no temp files left.
    let pem = std::fs::read_to_string(&file).expect("read");
    assert!(pem.starts_with("-----BEGIN EC PRIVATE KEY-----"));
    assert_eq!(mode(&file), 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(cache.join("certs"))
        .expect("ls")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

/// Before 1.102 tailscaled held one ACME lock for all names (calls queued behind it timed
/// out while waiting): the router asks one certificate at a time; from 1.102 several.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificate_requests_are_serialised_for_daemons_with_one_acme_lock() {
    for (version, serial) in [("1.100.0", true), ("1.102.0", false)] {
        let mut opts = EnvOptions::default();
        opts.sim.version = version.to_owned();
        opts.sim.first_issue_delay = Duration::from_millis(400);
        let env = Env::start(opts).await;
        for name in ["grafana", "jellyfin", "immich", "sonarr"] {
            env.wait_serving(name, Duration::from_secs(60)).await;
        }
        let mut arrivals: Vec<_> = env
            .sim
            .requests()
            .into_iter()
            .filter(|r| r.path_and_query.starts_with("/localapi/v0/cert/"))
            .map(|r| r.at)
            .collect();
        arrivals.sort();
        let closest = arrivals.windows(2).map(|w| w[1] - w[0]).min().expect("several requests");
        if serial {
            assert!(closest >= Duration::from_millis(350), "{version}: two requests {closest:?} apart");
        } else {
            assert!(closest < Duration::from_millis(200), "{version}: requests ran one at a time ({closest:?})");
        }
    }
}
