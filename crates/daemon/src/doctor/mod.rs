//! `snirouter doctor`'s checks: every check, in order, that explains why a name is not
//! served — everything that broke for the owner and everything the LocalAPI reference
//! lists. Each gives `PASS`, `WARN`, `FAIL` or `SKIP` with its cause and, when it did not
//! pass, the fix. Works whether or not the daemon runs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use snirouter_certs::cache::CacheState;
use snirouter_config::Config;
use snirouter_localapi::{BackendState, CurrentUser, Error as LocalError, LocalClient, Status};

use crate::hairpin;

mod services;

/// A check's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Fine.
    Pass,
    /// Works, but something is at risk.
    Warn,
    /// Broken: a name is (or will be) not served.
    Fail,
    /// Not checked because an earlier check failed.
    Skip,
}

impl Level {
    /// `PASS`, `WARN`, `FAIL` or `SKIP`.
    pub fn label(self) -> &'static str {
        match self {
            Level::Pass => "PASS",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
            Level::Skip => "SKIP",
        }
    }
}

/// One result line.
#[derive(Debug, Clone)]
pub struct Check {
    /// Verdict.
    pub level: Level,
    /// What was checked (`tailscaled socket`, `in CertDomains: grafana.x.ts.net`, …).
    pub name: String,
    /// What was found (the cause, when not passing).
    pub detail: String,
    /// What to do about it.
    pub fix: Option<String>,
}

fn check(level: Level, name: impl Into<String>, detail: impl Into<String>, fix: Option<String>) -> Check {
    Check { level, name: name.into(), detail: detail.into(), fix }
}

/// Days covered by the Let's Encrypt budget check.
const WEEK: u64 = 7 * 86_400;

/// Runs every check in order.
pub async fn run_checks(config_path: &Path, cert_timeout: Duration) -> Vec<Check> {
    let mut out = Vec::new();
    let Some(config) = config_check(config_path, &mut out) else { return out };
    file_checks(&config, &mut out);
    let me = snirouter_localapi::current_user();
    let Some((client, status)) = socket_check(&config, me, &mut out).await else {
        local_checks(&config, None, &mut out).await;
        if let Some(suffix) = &config.tailscale.magic_dns_suffix {
            hairpin_checks(&config, &hairpin::fqdns(&config, suffix), None, &mut out).await;
        }
        return out;
    };
    let socket_idx = out.len() - 1;
    let running = status.backend_state == BackendState::Running;
    let domains = tailnet_checks(&client, &status, running, &mut out).await;
    proxy_exposure_check(&config, &status, &mut out);
    if running {
        services::definition_checks(&config, &client, &status, &mut out).await;
    }
    let names = service_fqdns(&config, &status);
    let in_domains = if running && !domains.is_empty() {
        name_checks(&config, &client, &status, &names, &domains, &mut out).await
    } else {
        for (_, fqdn) in &names {
            out.push(check(Level::Skip, format!("in CertDomains: {fqdn}"), "no CertDomains (see above)", None));
        }
        Vec::new()
    };
    let (issued, denied) = cert_checks(&client, &names, &in_domains, cert_timeout, &mut out).await;
    fold_permission(&client, denied, !issued.is_empty(), me, &mut out[socket_idx]);
    local_checks(&config, Some((&issued, &status)), &mut out).await;
    let fqdns: Vec<String> = names.into_iter().map(|(_, fqdn)| fqdn).collect();
    hairpin_checks(&config, &fqdns, Some(&status.version), &mut out).await;
    identity_checks(&config, &client, &status, &mut out).await;
    out
}

/// Check 1: the config file validates.
fn config_check(config_path: &Path, out: &mut Vec<Check>) -> Option<Config> {
    match crate::config_file::load(config_path) {
        Ok(c) => {
            let listeners = c.listen.https.len() + c.listen.proxy_protocol.len();
            out.push(check(
                Level::Pass,
                "config",
                format!("{}: {} service(s), {listeners} TLS listener(s)", config_path.display(), c.services.len()),
                None,
            ));
            // What `check` warns about (a tunnel that would pass as local, …) is at risk here.
            for w in c.warnings() {
                out.push(check(Level::Warn, format!("config {}", w.key_path), w.message, w.help));
            }
            Some(c)
        }
        Err(d) => {
            let first = d.0.first().map(|x| x.to_string()).unwrap_or_default();
            out.push(check(
                Level::Fail,
                "config",
                format!("{} problem(s):\n{d}", d.0.len()),
                Some(format!(
                    "correct the file (`snirouter check --config {}`); first: {first}",
                    config_path.display()
                )),
            ));
            None
        }
    }
}

/// Check 1b: each `[domains]` entry's certificate files serve every name under it.
fn file_checks(config: &Config, out: &mut Vec<Check>) {
    use crate::machine::{DirProblem, Finding};
    for finding in crate::machine::cert_files(config) {
        out.push(match finding {
            Finding::Usable { domain, names, days_left } => check(
                Level::Pass,
                format!("certificate files: {domain}"),
                format!("serve {names} name(s); the certificate expires in {days_left} days"),
                None,
            ),
            Finding::Unused { domain } => check(
                Level::Fail,
                format!("certificate files: {domain}"),
                "serves nothing: no service lists a name under this domain and it has no apex_redirect",
                Some(format!("add names = [\"NAME.{domain}\"] to the services it should serve, or remove the table")),
            ),
            Finding::RedirectOnly { domain } => check(
                Level::Pass,
                format!("certificate files: {domain}"),
                "no service name under it; its apex redirects (apex_redirect) and other names get 404",
                None,
            ),
            Finding::Unreadable { domain, error, fix } | Finding::Unusable { domain, error, fix } => {
                check(Level::Fail, format!("certificate files: {domain}"), error, Some(fix))
            }
        });
    }
    for p in crate::machine::error_page_dirs(config) {
        let problem = match p.problem {
            DirProblem::NotADirectory => "is a file, not a directory".to_owned(),
            DirProblem::Unreadable(e) => format!("cannot be read: {e}"),
        };
        let detail = format!("{} {problem}: every page falls back to the built-in text", p.dir.display());
        let fix = "create the directory with 404.html, 500.html, 502.html, 503.html and/or 504.html, readable by \
                   the user snirouter runs as, or fix the path";
        out.push(check(Level::Warn, p.key, detail, Some(fix.to_owned())));
    }
}

/// Check 2: the socket answers. Certificate permission is decided later, by the first
/// certificate request (the only way to know); this check is the last one pushed.
async fn socket_check(config: &Config, me: &CurrentUser, out: &mut Vec<Check>) -> Option<(LocalClient, Status)> {
    let client = match LocalClient::new(&config.tailscale.socket) {
        Ok(c) => c,
        Err(e) => {
            out.push(check(Level::Fail, "tailscaled socket", e.to_string(), e.fix()));
            return None;
        }
    };
    let status = match client.status().await {
        Ok(s) => s,
        Err(e) => {
            out.push(check(Level::Fail, "tailscaled socket", e.to_string(), e.fix()));
            for what in ["backend state", "MagicDNS and HTTPS", "host tagged"] {
                out.push(check(Level::Skip, what, "needs tailscaled", None));
            }
            return None;
        }
    };
    out.push(check(
        Level::Pass,
        "tailscaled socket",
        format!(
            "{} answers (tailscaled {}); snirouter runs as {}",
            config.tailscale.socket.display(),
            status.version,
            me.label()
        ),
        None,
    ));
    Some((client, status))
}

/// Checks 3–5: backend state, MagicDNS + HTTPS, a tagged host. Returns CertDomains
/// (lowercase, no trailing dot).
async fn tailnet_checks(client: &LocalClient, status: &Status, running: bool, out: &mut Vec<Check>) -> Vec<String> {
    // 3. Backend state.
    if running {
        out.push(check(Level::Pass, "backend state", "Running", None));
    } else {
        out.push(check(
            Level::Fail,
            "backend state",
            format!("tailscaled is {} (no network map: certificates cannot be issued)", status.backend_state),
            LocalError::NoNetmap.fix(),
        ));
    }

    // 4. MagicDNS + HTTPS.
    let domains: Vec<String> = match client.cert_domains().await {
        Ok(d) => d,
        Err(_) => status.cert_domains.clone(),
    };
    let domains: Vec<String> = domains.iter().map(|d| d.trim_end_matches('.').to_ascii_lowercase()).collect();
    let magic_dns = status.current_tailnet.as_ref().map(|t| t.magic_dns_enabled);
    if !running {
        out.push(check(Level::Skip, "MagicDNS and HTTPS", "tailscaled is not Running", None));
    } else if domains.is_empty() {
        let why = if magic_dns == Some(false) {
            "MagicDNS is disabled and CertDomains is empty"
        } else {
            "CertDomains is empty: HTTPS certificates are disabled for the tailnet (tailscaled would answer \"your Tailscale account does not support getting TLS certs\")"
        };
        out.push(check(Level::Fail, "MagicDNS and HTTPS", why, Some(https_fix(client).await)));
    } else {
        out.push(check(Level::Pass, "MagicDNS and HTTPS", format!("CertDomains: {}", domains.join(", ")), None));
    }

    // 5. Tagged host.
    let tags = status.self_node.as_ref().map(|n| n.tags.clone()).unwrap_or_default();
    if !running {
        out.push(check(Level::Skip, "host tagged", "tailscaled is not Running", None));
    } else if tags.is_empty() {
        out.push(check(
            Level::Fail,
            "host tagged",
            "this node has no ACL tag; Tailscale Service hosts must be tagged nodes",
            Some("tag the host: `tailscale up --advertise-tags=tag:server` (the tag needs an owner in the policy's tagOwners) or Machines → Edit ACL tags in the admin console".to_owned()),
        ));
    } else {
        out.push(check(Level::Pass, "host tagged", tags.join(", "), None));
    }

    domains
}

/// `(service name, FQDN)` for every configured service.
fn service_fqdns(config: &Config, status: &Status) -> Vec<(String, String)> {
    let suffix = config
        .tailscale
        .magic_dns_suffix
        .clone()
        .or_else(|| status.magic_dns_suffix().map(str::to_owned))
        .unwrap_or_default();
    config.services.iter().map(|s| (s.name.clone(), s.fqdn(&suffix))).collect()
}

/// Check 6: each name is in CertDomains (and resolves to its service). Returns the
/// names to request certificates for (passthrough services need none).
async fn name_checks(
    config: &Config,
    client: &LocalClient,
    status: &Status,
    names: &[(String, String)],
    domains: &[String],
    out: &mut Vec<Check>,
) -> Vec<String> {
    let control =
        config.tailscale.api.as_ref().and_then(|api| snirouter_services::ControlClient::from_config(api).ok());
    let observed: Vec<snirouter_services::ServiceState> = tokio::time::timeout(
        Duration::from_secs(10),
        snirouter_services::observe(config, client, Ok(status), control.as_ref()),
    )
    .await
    .unwrap_or_default();
    let mut in_domains = Vec::new();
    for (name, fqdn) in names {
        if domains.contains(fqdn) {
            out.push(check(
                Level::Pass,
                format!("in CertDomains: {fqdn}"),
                format!("service {name} may get a certificate"),
                None,
            ));
            // Passthrough backends terminate TLS themselves: nothing to request.
            if config.services.iter().any(|s| s.name == *name && s.passthrough.is_none()) {
                in_domains.push(fqdn.clone());
            }
        } else {
            let state = observed.iter().find(|s| s.name == *name);
            out.push(not_in_cert_domains(name, fqdn, domains, state));
        }
    }
    dns_checks(client, names, domains, &observed, out).await;
    in_domains
}

/// The failing `in CertDomains` check: tailscaled's words, what is known of the service,
/// and the missing steps.
fn not_in_cert_domains(
    name: &str,
    fqdn: &str,
    domains: &[String],
    state: Option<&snirouter_services::ServiceState>,
) -> Check {
    let facts = match state {
        Some(s) => format!(
            "; svc:{name}: defined {}, advertised {}, host approved {}",
            yes_no(s.defined),
            yes_no(s.advertised),
            yes_no(s.approved)
        ),
        None => String::new(),
    };
    check(
        Level::Fail,
        format!("in CertDomains: {fqdn}"),
        format!(
            "{fqdn} is not in this node's CertDomains, so tailscaled refuses it (`tailscale cert {fqdn}`: invalid domain {fqdn:?}; must be one of {domains:?}); TLS clients get unrecognized_name{facts}"
        ),
        Some(cert_domain_fix(fqdn, name, state)),
    )
}

/// Check 7: a certificate for each name in CertDomains. Returns the certificates
/// obtained and, when tailscaled refused this uid, that refusal (one cause for all names).
async fn cert_checks(
    client: &LocalClient,
    names: &[(String, String)],
    in_domains: &[String],
    cert_timeout: Duration,
    out: &mut Vec<Check>,
) -> (Vec<(String, snirouter_certs::ServedCert)>, Option<LocalError>) {
    let certs = fetch_certs(client, in_domains, cert_timeout).await;
    let mut denied: Option<LocalError> = None;
    let mut issued: Vec<(String, snirouter_certs::ServedCert)> = Vec::new();
    for (_, fqdn) in names {
        let what = format!("certificate: {fqdn}");
        match certs.get(fqdn) {
            None => out.push(check(Level::Skip, what, "not requested: the name is not in CertDomains", None)),
            Some(Err(e @ LocalError::CertAccessDenied { .. })) => {
                // One cause for every name: reported once, on the socket check.
                out.push(check(Level::Skip, what, "cert access denied (see the tailscaled socket check)", None));
                denied.get_or_insert_with(|| e.clone());
            }
            Some(Err(e)) => out.push(check(Level::Fail, what, format!("tailscaled: {e}"), e.fix())),
            Some(Ok(pair)) => match served(fqdn, pair) {
                Ok(cert) => {
                    let days = cert.remaining(SystemTime::now()).as_secs() / 86_400;
                    let detail = format!("obtained from tailscaled: expires in {days} days, issuer {}", cert.issuer);
                    out.push(check(Level::Pass, what, detail, None));
                    issued.push((fqdn.clone(), cert));
                }
                Err(e) => out.push(check(
                    Level::Fail,
                    what,
                    format!("tailscaled returned a certificate that cannot be served: {e}"),
                    Some(
                        "check the host's clock and tailscaled's certificate store (/var/lib/tailscale/certs)"
                            .to_owned(),
                    ),
                )),
            },
        }
    }
    (issued, denied)
}

fn served(
    fqdn: &str,
    pair: &snirouter_localapi::CertPair,
) -> Result<snirouter_certs::ServedCert, snirouter_certs::CertError> {
    let source = snirouter_certs::CertSource::Tailscaled;
    snirouter_certs::ServedCert::new(fqdn, &pair.key, pair.chain.clone(), source, SystemTime::now())
}

/// The socket check, given what the certificate requests showed about permission.
fn fold_permission(
    client: &LocalClient,
    denied: Option<LocalError>,
    any_issued: bool,
    me: &CurrentUser,
    socket: &mut Check,
) {
    let path = client.socket_path().display();
    let user = me.name_or_uid();
    if let Some(e) = denied {
        *socket = check(Level::Fail, "tailscaled socket", format!("{path} answers, but {e}"), e.fix());
    } else if any_issued {
        socket.detail.push_str("; may fetch certificates");
    } else if me.uid != 0 {
        *socket = check(
            Level::Warn,
            "tailscaled socket",
            format!("{path} answers; certificate access for {} is unverified (no name could be requested)", me.label()),
            Some(format!(
                "non-root users need TS_PERMIT_CERT_UID={user} in tailscaled's environment (NixOS: services.tailscale.permitCertUid = \"{user}\")"
            )),
        );
    }
}

/// Checks that need no tailscaled: listeners, upstreams, clock, Let's Encrypt budget.
async fn local_checks(
    config: &Config,
    fetched: Option<(&[(String, snirouter_certs::ServedCert)], &Status)>,
    out: &mut Vec<Check>,
) {
    // 8. Listeners (and who keeps undoing the Services, from the ownership record).
    let drift = snirouter_services::Ownership::load(&config.cache.dir).ok().and_then(|o| o.drift);
    services::drift_check(drift.as_ref(), out);
    let running: Option<Vec<String>> =
        running_report(config).await.map(|r| r.listeners.into_iter().map(|l| l.address).collect());
    let addrs = config.listen.https.iter().chain(&config.listen.proxy_protocol);
    for addr in addrs {
        out.push(listener_check(*addr, running.as_deref()));
    }

    // 9. Upstreams.
    let mut upstreams: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    for svc in &config.services {
        for r in &svc.routes {
            upstreams
                .entry(r.upstream.authority.to_string())
                .or_insert_with(|| (r.upstream.to_string(), Vec::new()))
                .1
                .push(svc.name.clone());
        }
    }
    let mut probes = tokio::task::JoinSet::new();
    for authority in upstreams.keys().cloned() {
        probes.spawn(async move {
            let r = crate::health::probe(&authority).await;
            (authority, r)
        });
    }
    let mut results = BTreeMap::new();
    while let Some(Ok((a, r))) = probes.join_next().await {
        results.insert(a, r);
    }
    for (authority, (url, services)) in &upstreams {
        let what = format!("upstream: {url}");
        match results.get(authority) {
            Some(Ok(())) => {
                out.push(check(Level::Pass, what, format!("answers (service {})", services.join(", ")), None))
            }
            Some(Err(e)) => out.push(check(
                Level::Fail,
                what,
                format!("TCP connect failed: {e} (service {} answers 502)", services.join(", ")),
                Some(format!(
                    "start the backend, or correct the upstream of [services.{}] in the config",
                    services.first().map(String::as_str).unwrap_or("NAME")
                )),
            )),
            None => {}
        }
    }

    // 10. Clock.
    out.push(clock_check(fetched.map(|(f, _)| f).unwrap_or_default(), &config.cache.dir));

    // 11. Let's Encrypt budget.
    out.push(budget_check(&config.cache.dir, SystemTime::now()));
}

/// Asks tailscaled for each name (all at once, each bounded by `timeout`).
async fn fetch_certs(
    client: &LocalClient,
    names: &[String],
    timeout: Duration,
) -> BTreeMap<String, Result<snirouter_localapi::CertPair, LocalError>> {
    let mut set = tokio::task::JoinSet::new();
    for fqdn in names.iter().cloned() {
        let client = client.clone();
        set.spawn(async move {
            let r = client.cert_pair(&fqdn, None, timeout).await;
            (fqdn, r)
        });
    }
    let mut out = BTreeMap::new();
    while let Some(Ok((fqdn, r))) = set.join_next().await {
        out.insert(fqdn, r);
    }
    out
}

/// The running daemon's status document, from its admin socket (`None` when it does
/// not run).
async fn running_report(config: &Config) -> Option<crate::status::StatusReport> {
    let (code, body) = crate::admin_client::request(&config.admin.socket, http::Method::GET, "/status").await.ok()?;
    if code != 200 {
        return None;
    }
    serde_json::from_str(&body).ok()
}

fn listener_check(addr: SocketAddr, running: Option<&[String]>) -> Check {
    let what = format!("listener: {addr}");
    if addr.port() == 0 {
        return check(Level::Pass, what, "port 0: the OS picks a free port", None);
    }
    match std::net::TcpListener::bind(addr) {
        Ok(_) => check(Level::Pass, what, "free", None),
        Err(e) => {
            let held_by_us = running.is_some_and(|l| l.iter().any(|a| a == &addr.to_string()));
            match e.kind() {
                std::io::ErrorKind::AddrInUse if held_by_us => {
                    check(Level::Pass, what, "held by the running snirouter", None)
                }
                std::io::ErrorKind::AddrInUse => check(
                    Level::Fail,
                    what,
                    "in use by another process (snirouter is not the one listening)",
                    Some(format!(
                        "find it with `ss -ltnp 'sport = :{}'` and stop it (an old Caddy?), or change [listen]",
                        addr.port()
                    )),
                ),
                std::io::ErrorKind::PermissionDenied => check(
                    Level::Fail,
                    what,
                    format!("cannot bind: {e}"),
                    Some(
                        "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities= in the unit)"
                            .to_owned(),
                    ),
                ),
                std::io::ErrorKind::AddrNotAvailable => check(
                    Level::Fail,
                    what,
                    format!("cannot bind: {e}"),
                    Some("the address is not on this host; listen on 0.0.0.0 or [::]".to_owned()),
                ),
                _ => check(Level::Fail, what, format!("cannot bind: {e}"), Some("check [listen]".to_owned())),
            }
        }
    }
}

/// Compares this host's clock with the validity of certificates the CA just issued
/// (the CA's clock) and with issuance times recorded in the cache.
fn clock_check(certs: &[(String, snirouter_certs::ServedCert)], cache_dir: &Path) -> Check {
    let now = SystemTime::now();
    let what = "clock";
    for (fqdn, c) in certs {
        if c.not_before > now + Duration::from_secs(60) {
            let behind = c.not_before.duration_since(now).unwrap_or_default().as_secs();
            return check(
                Level::Fail,
                what,
                format!(
                    "this host's clock is at least {behind}s behind the CA's: the certificate for {fqdn} is valid only from its notBefore"
                ),
                Some(
                    "enable time synchronisation (`timedatectl set-ntp true`, systemd-timesyncd or chrony)".to_owned(),
                ),
            );
        }
        if c.not_after < now {
            return check(
                Level::Fail,
                what,
                format!(
                    "the certificate tailscaled just returned for {fqdn} is already past its notAfter: this host's clock is ahead"
                ),
                Some(
                    "enable time synchronisation (`timedatectl set-ntp true`, systemd-timesyncd or chrony)".to_owned(),
                ),
            );
        }
    }
    let unix_now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let latest = read_state(cache_dir).and_then(|s| s.issued.values().flatten().max().copied());
    if let Some(latest) = latest
        && latest > unix_now + 60
    {
        return check(
            Level::Warn,
            what,
            format!("the clock went backwards: the cache records an issuance {}s in the future", latest - unix_now),
            Some("enable time synchronisation (`timedatectl set-ntp true`)".to_owned()),
        );
    }
    if certs.is_empty() {
        check(
            Level::Warn,
            what,
            "no certificate to compare with (the clock is checked against the notBefore/notAfter of certificates from tailscaled)",
            Some("fix the certificate checks above, then run doctor again".to_owned()),
        )
    } else {
        check(
            Level::Pass,
            what,
            format!(
                "within the notBefore/notAfter of {} certificate(s) just issued by the CA, and not before any issuance recorded in the cache",
                certs.len()
            ),
            None,
        )
    }
}

fn read_state(cache_dir: &Path) -> Option<CacheState> {
    let bytes = std::fs::read(cache_dir.join("state.json")).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Let's Encrypt allows 50 new names per tailnet and 5 certificates per exact name per
/// week; warn at 40 names or 4 for one name.
pub(crate) fn budget_check(cache_dir: &Path, now: SystemTime) -> Check {
    let what = "Let's Encrypt budget";
    let now = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let Some(state) = read_state(cache_dir) else {
        return check(
            Level::Pass,
            what,
            format!("no issuance recorded yet ({}/state.json)", cache_dir.display()),
            None,
        );
    };
    let recent: BTreeMap<&String, usize> = state
        .issued
        .iter()
        .map(|(name, times)| (name, times.iter().filter(|t| now.saturating_sub(**t) < WEEK).count()))
        .filter(|(_, n)| *n > 0)
        .collect();
    let total: usize = recent.values().sum();
    let hot: Vec<String> = recent.iter().filter(|(_, n)| **n >= 4).map(|(name, n)| format!("{name} ({n})")).collect();
    let fix = "stop re-issuing: keep tailscaled's state (/var/lib/tailscale/certs) and snirouter's cache; do not wipe them or restart with fresh state — the limits are 50 new names per tailnet and 5 certificates per name per 7 days";
    if recent.len() >= 40 {
        check(
            Level::Warn,
            what,
            format!("{} names got new certificates in the last 7 days (limit 50 per tailnet)", recent.len()),
            Some(fix.to_owned()),
        )
    } else if !hot.is_empty() {
        check(
            Level::Warn,
            what,
            format!("4 or more certificates in the last 7 days for: {} (limit 5 per name)", hot.join(", ")),
            Some(fix.to_owned()),
        )
    } else {
        check(
            Level::Pass,
            what,
            format!(
                "{total} new certificate(s) for {} name(s) in the last 7 days (limits: 50 names, 5 per name)",
                recent.len()
            ),
            None,
        )
    }
}

/// How to turn HTTPS on, with the enable link control hands out (`query-feature`) when
/// tailscaled can ask for one.
async fn https_fix(client: &LocalClient) -> String {
    let generic = LocalError::HttpsDisabled.fix().unwrap_or_default();
    match client.query_feature("serve").await {
        Ok(q) if !q.complete && !q.url.is_empty() => {
            format!("{} — control says: {} {}", generic, q.text.replace('\n', " ").trim(), q.url)
        }
        Ok(_) => generic,
        Err(e) => {
            tracing::debug!(cause = %e, "query-feature failed");
            generic
        }
    }
}

/// Each name in CertDomains resolves to its service's address: tailscaled's DNS config
/// (`dns-config`, 1.100+) lists the ExtraRecords control publishes. A record pointing
/// elsewhere sends clients to another node; a missing one is not an error here, because
/// control may publish service records to clients only.
async fn dns_checks(
    client: &LocalClient,
    names: &[(String, String)],
    domains: &[String],
    observed: &[snirouter_services::ServiceState],
    out: &mut Vec<Check>,
) {
    let dns = match client.dns_config().await {
        Ok(d) => d,
        Err(e) => {
            out.push(check(
                Level::Skip,
                "names resolve",
                format!("tailscaled's DNS config is not readable: {e}"),
                None,
            ));
            return;
        }
    };
    let listed = |fqdn: &str| dns.extra_records.iter().any(|r| r.name.eq_ignore_ascii_case(fqdn));
    if !names.iter().any(|(_, f)| listed(f)) {
        out.push(check(
            Level::Skip,
            "names resolve",
            "this node's DNS config has no record for any service name (control may publish them to clients \
             only); from a client, `dig +short NAME.TAILNET.ts.net` should print the service's address",
            None,
        ));
        return;
    }
    for (name, fqdn) in names.iter().filter(|(_, f)| domains.contains(f)) {
        let what = format!("resolves: {fqdn}");
        let vips: Vec<String> = observed
            .iter()
            .find(|s| s.name == *name)
            .map(|s| s.vips.iter().map(ToString::to_string).collect())
            .unwrap_or_default();
        let values: Vec<&str> = dns
            .extra_records
            .iter()
            .filter(|r| r.kind.is_empty() && r.name.eq_ignore_ascii_case(fqdn))
            .map(|r| r.value.as_str())
            .collect();
        // Parsed, so that `fd7a::5:1` and its long form are one address.
        let is_vip = |v: &str| v.parse::<std::net::IpAddr>().is_ok_and(|ip| vips.contains(&ip.to_string()));
        let wrong: Vec<&str> = values.iter().copied().filter(|v| !is_vip(v)).collect();
        out.push(if values.is_empty() {
            check(
                Level::Skip,
                what,
                format!(
                    "no record in this node's DNS config (control may publish it to clients only); from a client: \
                     `dig +short {fqdn}` should print svc:{name}'s address"
                ),
                None,
            )
        } else if vips.is_empty() {
            check(Level::Skip, what, format!("resolves to {}; svc:{name}'s address is not known", values.join(", ")), None)
        } else if wrong.is_empty() {
            check(Level::Pass, what, format!("{} (svc:{name}'s address)", values.join(", ")), None)
        } else {
            check(
                Level::Fail,
                what,
                format!(
                    "{fqdn} resolves to {}, not to svc:{name}'s address ({}): clients reach another node, not this router",
                    wrong.join(", "),
                    vips.join(", ")
                ),
                Some(format!(
                    "another device or DNS record uses the name {name}: rename that device (admin console: Machines) or \
                     remove the custom record (DNS → Nameservers/records) so that {fqdn} is svc:{name}'s"
                )),
            )
        });
    }
}

/// The steps still missing before control lists `fqdn` in CertDomains (all of them when
/// the service state is unknown).
fn cert_domain_fix(fqdn: &str, name: &str, state: Option<&snirouter_services::ServiceState>) -> String {
    let missing = |v: Option<bool>| v != Some(true);
    let mut steps = Vec::new();
    if state.is_none_or(|s| missing(s.defined)) {
        steps.push(format!("define svc:{name} (ports tcp:443)"));
    }
    if state.is_none_or(|s| missing(s.advertised)) {
        steps.push("advertise it from this host".to_owned());
    }
    if state.is_none_or(|s| missing(s.approved)) {
        steps.push(format!(
            "approve this host for it (admin console: Services → svc:{name}, or autoApprovers.services in the policy)"
        ));
    }
    if steps.is_empty() {
        return format!(
            "svc:{name} is defined, advertised and approved; control adds {fqdn} to CertDomains with its next netmap — \
             if it does not within a minute, check the service's ports (tcp:443) in the admin console"
        );
    }
    format!(
        "make {fqdn} a Tailscale Service hosted by this node: {}; `snirouter services plan` shows the steps",
        steps.join(", ")
    )
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "NO",
        None => "unknown",
    }
}

/// Check 13, for services that decide by tailnet identity (`allow`, `tailscale_identity`,
/// `accept_app_caps`): `whois` must answer, and capabilities scoped to a service need
/// tailscaled 1.100 or later (older daemons ignore `svc_name` and report the
/// capabilities granted toward the node, which would admit the wrong grants).
async fn identity_checks(config: &Config, client: &LocalClient, status: &Status, out: &mut Vec<Check>) {
    use snirouter_config::Principal;
    let users: Vec<&str> = config
        .services
        .iter()
        .filter(|s| {
            s.tailscale_identity
                || !s.accept_app_caps.is_empty()
                || s.allow.iter().flatten().any(|p| *p != Principal::Local)
        })
        .map(|s| s.name.as_str())
        .collect();
    let Some(own) = status.tailscale_ips.first() else { return };
    if users.is_empty() {
        return;
    }
    let what = "tailnet identity (whois)";
    let for_whom = format!("for {}", users.join(", "));
    out.push(match client.whois(SocketAddr::new(*own, 0), None).await {
        Ok(Some(_)) => check(Level::Pass, what, format!("tailscaled answers whois {for_whom}"), None),
        Ok(None) => check(Level::Fail, what, format!("whois does not know this node's own address {own}"), None),
        Err(e) => check(
            Level::Fail,
            what,
            format!(
                "whois failed: {e}; while it fails {} get no tailnet identity (services with allow answer 503)",
                users.join(", ")
            ),
            e.fix().map(|f| f.to_string()),
        ),
    });
    let scoped: Vec<&str> = config
        .services
        .iter()
        .filter(|s| {
            !s.accept_app_caps.is_empty() || s.allow.iter().flatten().any(|p| matches!(p, Principal::Capability(_)))
        })
        .map(|s| s.name.as_str())
        .collect();
    if scoped.is_empty() {
        return;
    }
    let what = "capabilities per service";
    out.push(match version_at_least(&status.version, 1, 100) {
        Some(true) => check(Level::Pass, what, format!("tailscaled {} scopes capabilities to each service", status.version), None),
        Some(false) => check(
            Level::Fail,
            what,
            format!(
                "tailscaled {} ignores whois svc_name (added in 1.100): {} would see the capabilities granted toward the node, not toward the service",
                status.version,
                scoped.join(", ")
            ),
            Some("upgrade tailscaled to 1.100 or later, or remove the cap: entries and accept_app_caps".to_owned()),
        ),
        None => check(Level::Warn, what, format!("cannot read tailscaled's version {:?}; capabilities per service need 1.100 or later", status.version), None),
    });
}

/// The PROXY listener reachable through tailscaled's Service-address bug (`exposure.rs`).
fn proxy_exposure_check(config: &Config, status: &Status, out: &mut Vec<Check>) {
    let forwarding = crate::exposure::ip_forwarding();
    if let Some((now, detail, fix)) =
        crate::exposure::finding(&status.version, forwarding, &config.listen.proxy_protocol)
    {
        let level = if now { Level::Fail } else { Level::Warn };
        out.push(check(level, "PROXY listener exposure", detail, Some(fix)));
    }
}

/// Whether a tailscaled version string (`1.102.4-t3caf…`) is at least `major.minor`.
fn version_at_least(version: &str, major: u32, minor: u32) -> Option<bool> {
    snirouter_localapi::DaemonVersion::parse(version).map(|v| v.at_least(major, minor))
}

/// How local clients reach the services by name (the NixOS option is `hairpin.enable`).
const HAIRPIN_FIX: &str = "send the names to loopback (`snirouter hosts >> /etc/hosts`; NixOS: \
    services.snirouter.hairpin.enable = true) and take loopback connections: \"127.0.0.1:443\" and \"[::1]:443\" \
    in [listen] https";

/// `doctor`'s hairpin checks: one line per name once any name is sent to loopback,
/// else one line on how local clients reach the services by name — natively through
/// tailscaled from 1.96 on (`daemon` is its version, when known), else not at all.
async fn hairpin_checks(config: &Config, names: &[String], daemon: Option<&str>, out: &mut Vec<Check>) {
    let resolved: Vec<(&String, hairpin::Resolved)> =
        names.iter().zip(hairpin::resolve_all(config, names).await).collect();
    let fix = HAIRPIN_FIX;
    if resolved.iter().all(|(_, r)| matches!(r, hairpin::Resolved::Elsewhere(_))) {
        let example = resolved.first().map_or_else(String::new, |(n, r)| match r {
            hairpin::Resolved::Elsewhere(how) => format!(" ({n} {how})"),
            _ => String::new(),
        });
        if let Some(v) = daemon.filter(|v| version_at_least(v, 1, 96) == Some(true)) {
            let detail = format!(
                "no served name resolves to this host's loopback{example}; tailscaled {v} terminates this host's own \
                 active Service addresses locally (since 1.96), so local clients reach the names through it and the \
                 PROXY listener, as this node's tailnet address (allow = [\"local\"] admits them)"
            );
            out.push(check(Level::Pass, "hairpin (local clients)", detail, None));
            return;
        }
        let detail = format!(
            "no served name resolves to this host's loopback{example}: before tailscaled 1.96 a Service host cannot \
             reach the Services it hosts, so local clients (widgets, scrapes, webhooks) may fail to use the names"
        );
        out.push(check(Level::Warn, "hairpin (local clients)", detail, Some(fix.to_owned())));
        return;
    }
    for (name, r) in resolved {
        let what = format!("hairpin: {name}");
        out.push(match r {
            hairpin::Resolved::Served(ip, l) => {
                let port = match l.port() {
                    443 => String::new(),
                    p => format!(" (local clients use https://{name}:{p}/)"),
                };
                check(Level::Pass, what, format!("resolves to {ip} here; the https listener {l} serves it{port}"), None)
            }
            hairpin::Resolved::Unserved(ip) => check(
                Level::Warn,
                what,
                format!("resolves to {ip} here, but no [listen] https listener takes {ip}"),
                Some(format!("add \"{}\" to [listen] https", SocketAddr::new(ip, 443))),
            ),
            hairpin::Resolved::Elsewhere(how) => check(
                Level::Warn,
                what,
                format!("{how}, while other names go to loopback: local clients may not reach it"),
                Some(fix.to_owned()),
            ),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hairpin_fix_names_the_module_option_that_exists() {
        assert!(HAIRPIN_FIX.contains("services.snirouter.hairpin.enable = true"), "{HAIRPIN_FIX}");
        let module = include_str!("../../../../nix/module.nix");
        let block = module.split("    hairpin = {").nth(1).expect("the module has a hairpin option set");
        assert!(block.trim_start().starts_with("enable = "), "hairpin.enable is the option");
    }

    #[test]
    fn tailscaled_versions_compare_by_major_and_minor() {
        assert_eq!(version_at_least("1.102.4-t3caf7d9e7-g084ee3b64", 1, 100), Some(true));
        assert_eq!(version_at_least("1.100.0", 1, 100), Some(true));
        assert_eq!(version_at_least("1.98.1-tabc", 1, 100), Some(false));
        assert_eq!(version_at_least("2.0.0", 1, 100), Some(true));
        assert_eq!(version_at_least("", 1, 100), None);
        assert_eq!(version_at_least("unknown", 1, 100), None);
    }

    #[test]
    fn budget_thresholds() {
        let tmp = tempfile::tempdir().expect("temp dir");
        let dir = tmp.path();
        let now = SystemTime::now();
        let t = now.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        let mut state = CacheState::default();
        state.issued.insert("a.x.ts.net".into(), vec![t - 10, t - 20, t - 30, t - 2 * WEEK]);
        std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).expect("json")).expect("write");
        assert_eq!(budget_check(dir, now).level, Level::Pass);
        state.issued.insert("a.x.ts.net".into(), vec![t - 10, t - 20, t - 30, t - 40]);
        std::fs::write(dir.join("state.json"), serde_json::to_vec(&state).expect("json")).expect("write");
        let c = budget_check(dir, now);
        assert_eq!(c.level, Level::Warn);
        assert!(c.detail.contains("a.x.ts.net (4)"), "{}", c.detail);
        let mut many = CacheState::default();
        for i in 0..40 {
            many.issued.insert(format!("n{i}.x.ts.net"), vec![t - 100]);
        }
        std::fs::write(dir.join("state.json"), serde_json::to_vec(&many).expect("json")).expect("write");
        assert_eq!(budget_check(dir, now).level, Level::Warn);
    }
}
