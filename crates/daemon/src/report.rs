//! What the admin socket answers, built from the running router's state: the status
//! document (`GET /status`, the types in [`crate::status`]) and the Prometheus text
//! (`GET /metrics`).

use std::time::{Duration, SystemTime};

use snirouter_localapi::{Error as LocalError, Status};
use snirouter_proxy::ListenerKind;
use snirouter_proxy::metrics::{self, Exposition};

use crate::shared::Shared;
use crate::status::*;

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// The `GET /status` document.
pub(crate) async fn status_report(shared: &Shared) -> StatusReport {
    let now = SystemTime::now();
    let config = shared.config().await;
    let domains = shared.manager.domains().borrow().clone();
    // The certificates before tailscaled's health: a certificate that arrives while the
    // LocalAPI and control API are asked then shows up next time, instead of a name
    // counted as serving beside tailscaled's stale "fetching it" warning.
    let entries = shared.store.snapshot();
    let status = tailscaled_status(shared).await;
    let tailscaled_health = status.as_ref().map(|s| s.health.clone()).unwrap_or_default();
    let tailscale_services = observe_services(shared, &config, status.as_ref()).await;
    let table = shared.router.routes();
    let services: Vec<ServiceStatus> = config
        .services
        .iter()
        .map(|svc| {
            let fqdn = svc.fqdn(&shared.names_suffix());
            let entry = entries.iter().find(|e| e.fqdn == fqdn);
            let live = table.get(&fqdn);
            let mut status = ServiceStatus {
                name: svc.name.clone(),
                serving: false,
                problems: Vec::new(),
                routes: route_statuses(shared, svc),
                certificate: entry.and_then(|e| e.cert.as_ref()).map(|c| certificate_info(c, now)),
                fetch: entry.map(|e| fetch_info(&e.state)).unwrap_or_default(),
                in_cert_domains: domains.list.as_ref().map(|l| l.contains(&fqdn)),
                requests: live.map(|r| request_counts(r.stats.snapshot())).unwrap_or_default(),
                access_log: live.is_some_and(|r| r.access_log),
                allow: svc.allow.as_ref().map(|a| a.iter().map(ToString::to_string).collect()),
                names: name_statuses(&config, svc, &entries, now),
                history: shared.history.of(&svc.name),
                tailscale_service: tailscale_services.get(&svc.name).cloned(),
                fqdn,
            };
            let pending = is_pending(&tailscaled_health, &status.fqdn);
            status.problems = problems(&status, svc.passthrough.is_some(), pending);
            status.serving = status.problems.is_empty();
            status
        })
        .collect();
    StatusReport {
        schema: SCHEMA,
        version: env!("CARGO_PKG_VERSION").to_owned(),
        pid: std::process::id(),
        started_at: unix(shared.started),
        uptime_seconds: now.duration_since(shared.started).map(|d| d.as_secs()).unwrap_or(0),
        config: config.origin.clone(),
        magic_dns_suffix: shared.suffix().unwrap_or_default(),
        listeners: listener_infos(shared).await,
        active_connections: shared.router.active_connections() as u64,
        tunnels: shared.router.tunnels() as u64,
        cert_domains: domains.list.clone(),
        cert_domains_error: domains.error.clone(),
        tailscaled_health,
        last_reload: shared.last_reload.lock().unwrap_or_else(|p| p.into_inner()).clone(),
        services_drift: snirouter_services::Ownership::load(&config.cache.dir).ok().and_then(|o| o.drift),
        serving: services.iter().all(|s| s.serving),
        services,
    }
}

/// The service's further names and their certificates from files.
fn name_statuses(
    config: &snirouter_config::Config,
    svc: &snirouter_config::Service,
    entries: &[snirouter_certs::EntrySnapshot],
    now: SystemTime,
) -> Vec<NameStatus> {
    svc.names
        .iter()
        .map(|name| {
            let entry = entries.iter().find(|e| &e.fqdn == name);
            NameStatus {
                fqdn: name.clone(),
                domain: config.domain_for(name).map(|d| d.name.clone()).unwrap_or_default(),
                certificate: entry.and_then(|e| e.cert.as_ref()).map(|c| certificate_info(c, now)),
                error: entry.and_then(|e| e.state.last_error.clone()),
                fix: entry.and_then(|e| e.state.fix.clone()),
            }
        })
        .collect()
}

async fn listener_infos(shared: &Shared) -> Vec<ListenerInfo> {
    let kind = |k| match k {
        ListenerKind::Tls => "tls",
        ListenerKind::ProxyV2 => "proxy_protocol",
        ListenerKind::RedirectHttp => "redirect_http",
    };
    let listeners = shared.listeners().await.into_iter();
    listeners.map(|(k, addr)| ListenerInfo { kind: kind(k).to_owned(), address: addr.to_string() }).collect()
}

/// Each route with the last reachability check of its upstream.
fn route_statuses(shared: &Shared, svc: &snirouter_config::Service) -> Vec<RouteStatus> {
    let route = |r: &snirouter_config::Route| {
        let reach = shared.upstreams.get(r.upstream.authority.as_str());
        RouteStatus {
            path: r.path.clone(),
            upstream: r.upstream.to_string(),
            reachable: reach.as_ref().map(|r| r.reachable),
            checked_at: reach.as_ref().map(|r| unix(r.checked_at)),
            error: reach.and_then(|r| r.error),
        }
    };
    svc.routes.iter().map(route).collect()
}

fn certificate_info(c: &snirouter_certs::CertSnapshot, now: SystemTime) -> CertificateInfo {
    CertificateInfo {
        not_before: c.not_before,
        not_after: c.not_after,
        expires_in_seconds: c.not_after as i64 - unix(now) as i64,
        issuer: c.issuer.clone(),
        serial: c.serial.clone(),
        source: match c.source {
            snirouter_certs::CertSource::Tailscaled => "tailscaled",
            snirouter_certs::CertSource::Cache => "cache",
            snirouter_certs::CertSource::File => "file",
        }
        .to_owned(),
    }
}

fn fetch_info(s: &snirouter_certs::FetchState) -> FetchInfo {
    FetchInfo {
        in_flight: s.in_flight,
        failures: s.failures,
        total_failures: s.total_failures,
        last_attempt: s.last_attempt.map(unix),
        last_success: s.last_success.map(unix),
        next_attempt: s.next_attempt.map(unix),
        last_error_kind: s.last_error_kind.clone(),
        last_error: s.last_error.clone(),
        fix: s.fix.clone(),
    }
}

fn request_counts(s: snirouter_proxy::StatsSnapshot) -> RequestCounts {
    RequestCounts {
        requests: s.requests,
        responses_2xx: s.responses_2xx,
        responses_3xx: s.responses_3xx,
        responses_4xx: s.responses_4xx,
        responses_5xx: s.responses_5xx,
        upstream_errors: s.upstream_errors,
        tunnels: s.tunnels,
    }
}

/// Why a service is not serving (empty when it is). A passthrough service's backend
/// terminates TLS, so snirouter holds no certificate for it; `pending` is tailscaled's
/// word that it is fetching the certificate now, which outranks an older failure.
fn problems(s: &ServiceStatus, passthrough: bool, pending: bool) -> Vec<String> {
    let mut problems = Vec::new();
    match &s.certificate {
        None if !passthrough => problems.push(match &s.fetch.last_error {
            _ if pending => "no certificate yet: tailscaled is fetching it from Let's Encrypt now \
                 (ACME DNS-01, usually under a minute)"
                .to_owned(),
            Some(e) => format!("no certificate: {e}"),
            None if s.fetch.in_flight => "no certificate yet: the request to tailscaled is in progress".to_owned(),
            None => "no certificate yet".to_owned(),
        }),
        Some(c) if c.expires_in_seconds <= 0 => problems.push("the certificate has expired".to_owned()),
        _ => {}
    }
    for n in &s.names {
        match (&n.certificate, &n.error) {
            (None, Some(e)) => problems.push(format!("{}: no certificate: {e}", n.fqdn)),
            (None, None) => problems.push(format!("{}: no certificate yet", n.fqdn)),
            (Some(c), _) if c.expires_in_seconds <= 0 => {
                problems.push(format!("{}: the certificate has expired", n.fqdn))
            }
            _ => {}
        }
    }
    for r in s.routes.iter().filter(|r| r.reachable == Some(false)) {
        let why = r.error.as_deref().unwrap_or("connect failed");
        problems.push(format!("upstream {} ({}) is down: {why}", r.upstream, r.path));
    }
    problems
}

/// tailscaled's status, bounded to 2 s: its `Health` strings and the Services state
/// both come from this one read.
async fn tailscaled_status(shared: &Shared) -> Result<Status, LocalError> {
    let after = Duration::from_secs(2);
    let status = tokio::time::timeout(after, shared.client.status())
        .await
        .unwrap_or_else(|_| Err(LocalError::Timeout { what: "GET /localapi/v0/status".to_owned(), after }));
    if let Err(e) = &status {
        tracing::debug!(cause = %e, "tailscaled status not read");
    }
    status
}

/// The prefix of tailscaled's `tls-cert-pending` warning, followed by the domains being fetched.
const CERT_PENDING: &str = "Fetching TLS certificate via ACME for: ";

/// Whether tailscaled's health says it is fetching the first certificate for `fqdn`.
fn is_pending(health: &[String], fqdn: &str) -> bool {
    health.iter().filter_map(|h| h.strip_prefix(CERT_PENDING)).any(|list| list.split(", ").any(|d| d == fqdn))
}

/// Tailscale Service state per service name (`snirouter_services::observe`: LocalAPI
/// reads, plus the control API when `[tailscale.api]` is set), bounded to 5 s; empty when
/// it cannot be observed in time.
async fn observe_services(
    shared: &Shared,
    config: &snirouter_config::Config,
    status: Result<&Status, &LocalError>,
) -> std::collections::BTreeMap<String, serde_json::Value> {
    let control = config.tailscale.api.as_ref().and_then(|api| shared.control_client(api));
    let observed = tokio::time::timeout(
        Duration::from_secs(5),
        snirouter_services::observe(config, &shared.client, status, control.as_deref()),
    )
    .await;
    let Ok(states) = observed else {
        tracing::debug!("Tailscale Service state not observed within 5s");
        return Default::default();
    };
    states
        .into_iter()
        .filter_map(|mut s| {
            let cert = shared.store.current(s.fqdn.as_deref().unwrap_or_default()).is_some();
            s.certificate = Some(cert);
            Some((s.name.clone(), serde_json::to_value(&s).ok()?))
        })
        .collect()
}

/// The `GET /metrics` text.
pub(crate) async fn metrics_text(shared: &Shared) -> String {
    use std::sync::atomic::Ordering;
    let mut out = Exposition::new();
    out.family("snirouter_build_info", "gauge", "Always 1; the version label is the running snirouter.");
    out.sample("snirouter_build_info", &[("version", env!("CARGO_PKG_VERSION"))], 1.0);
    shared.router.render_metrics(&mut out);
    metrics::render_certs(&shared.store.snapshot(), SystemTime::now(), &mut out);

    out.family(
        "snirouter_upstream_up",
        "gauge",
        "1 when the last TCP connect to the upstream succeeded, 0 when it failed (checked every 10s).",
    );
    let table = shared.router.routes();
    let mut services: Vec<_> = table.services().cloned().collect();
    services.sort_by(|a, b| a.name.cmp(&b.name));
    for svc in &services {
        for r in &svc.routes {
            if let Some(reach) = shared.upstreams.get(r.upstream.authority.as_str()) {
                let upstream = r.upstream.to_string();
                out.sample(
                    "snirouter_upstream_up",
                    &[("service", &svc.name), ("upstream", &upstream)],
                    if reach.reachable { 1.0 } else { 0.0 },
                );
            }
        }
    }
    out.family("snirouter_config_reloads_total", "counter", "Configuration reloads, by result (ok, refused).");
    out.sample("snirouter_config_reloads_total", &[("result", "ok")], shared.reloads_ok.load(Ordering::Relaxed) as f64);
    out.sample(
        "snirouter_config_reloads_total",
        &[("result", "refused")],
        shared.reloads_refused.load(Ordering::Relaxed) as f64,
    );
    let healed = "snirouter_services_healed_total";
    out.family(healed, "counter", "Times the Tailscale Services were put back after something else changed them.");
    out.sample(healed, &[], snirouter_services::heals() as f64);
    out.finish()
}
