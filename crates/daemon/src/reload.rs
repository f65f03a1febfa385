//! Reload: re-read the config file the daemon was started from and apply it without
//! dropping anything in flight (see [`crate::start`] for the order), and the listener
//! helpers start and reload share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use snirouter_certs::{FileSource, ServedName};
use snirouter_config::Config;
use snirouter_proxy::{ListenerKind, RouteTable, Server};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::shared::{ListenerHandle, Shared};
use crate::status::LastReload;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}\n  fix: {fix}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// The OS error.
    #[source]
    pub source: std::io::Error,
    /// What to do about it.
    pub fix: &'static str,
}

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file does not validate (every problem, with line and fix).
    #[error("the new configuration is invalid; still serving the previous one\n{0}")]
    Invalid(snirouter_config::Diagnostics),
    /// A new listener could not be bound.
    #[error("{0}\n  (reload refused; still serving the previous configuration)")]
    Bind(BindError),
}

/// What a reload changed.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadReport {
    /// Services now served that were not before.
    pub added: Vec<String>,
    /// Services no longer served.
    pub removed: Vec<String>,
    /// Services whose routes, upstreams or options changed.
    pub changed: Vec<String>,
    /// Listeners bound by this reload.
    pub listeners_added: Vec<String>,
    /// Listeners stopped by this reload (their open connections drain).
    pub listeners_removed: Vec<String>,
    /// Settings that changed in the file but only take effect after a restart.
    pub restart_needed: Vec<String>,
}

/// Applies the config file again; see [`crate::start::Daemon::reload`].
pub(crate) async fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    use std::sync::atomic::Ordering;
    crate::sdnotify::reloading();
    let result = reload_inner(shared).await;
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let last = match &result {
        Ok(report) => {
            shared.reloads_ok.fetch_add(1, Ordering::Relaxed);
            tracing::info!(
                added = ?report.added,
                removed = ?report.removed,
                changed = ?report.changed,
                listeners_added = ?report.listeners_added,
                listeners_removed = ?report.listeners_removed,
                "configuration reloaded"
            );
            for setting in &report.restart_needed {
                tracing::warn!(setting = %setting, "changed in the config file; takes effect only after a restart");
            }
            LastReload { at: now, ok: true, error: None }
        }
        Err(e) => {
            shared.reloads_refused.fetch_add(1, Ordering::Relaxed);
            let error = e.to_string();
            // One log line per event: the diagnostics (file, key, help) folded into it.
            let cause = error.lines().map(str::trim).filter(|l| !l.is_empty()).collect::<Vec<_>>().join("; ");
            tracing::error!(cause = %cause, "reload refused; still serving the previous configuration");
            LastReload { at: now, ok: false, error: Some(error) }
        }
    };
    *shared.last_reload.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    shared.upstreams.wake();
    crate::sdnotify::ready();
    result
}

/// One log line per configuration warning (`snirouter check` prints the same).
pub(crate) fn log_warnings(config: &Config) {
    for w in config.warnings() {
        tracing::warn!(key = %w.key_path, line = w.line, fix = w.help.as_deref().unwrap_or(""), "{}", w.message);
    }
}

async fn reload_inner(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    let mut live = shared.live.lock().await;
    let old = Arc::clone(&live.config);
    let path = PathBuf::from(&old.origin);
    let new = crate::config_file::load(&path).map_err(ReloadError::Invalid)?;
    if let Some(suffix) = shared.suffix() {
        new.check_fqdns(&suffix).map_err(ReloadError::Invalid)?;
    }
    log_warnings(&new);

    let mut report = ReloadReport { restart_needed: restart_needed(&old, &new), ..ReloadReport::default() };
    for svc in &new.services {
        match old.services.iter().find(|o| o.name == svc.name) {
            None => report.added.push(svc.name.clone()),
            Some(o) if o != svc => report.changed.push(svc.name.clone()),
            Some(_) => {}
        }
    }
    report.removed = old
        .services
        .iter()
        .filter(|o| !new.services.iter().any(|s| s.name == o.name))
        .map(|o| o.name.clone())
        .collect();

    // Bind new listeners first: a failure refuses the whole reload.
    let wanted = wanted_listeners(&new);
    let mut bound = Vec::new();
    for (kind, addr) in &wanted {
        if live.listeners.iter().any(|l| l.kind == *kind && l.configured == *addr) {
            continue;
        }
        let listener = bind(*addr).await.map_err(ReloadError::Bind)?;
        bound.push((*kind, *addr, listener));
    }

    // Names first (a new name is known to the TLS stage before its routes exist, and
    // answers `unrecognized_name` until its certificate arrives), then routes.
    shared.store.set_names(&service_names(&new, shared.suffix().as_deref()));
    shared.files.set_sources(file_sources(&new)); // and re-reads every pair (SIGHUP)
    shared.manager.load_cache();
    let table = RouteTable::from_config(&new, &shared.names_suffix(), Some(&shared.router.routes()));
    shared.router.set_routes(table);
    shared.manager.sync_names();
    // Reopened whether or not it changed: `snirouter reload` after logrotate.
    shared.router.access_log().configure(new.log.access_format, new.log.access_file.clone());

    for (kind, addr, listener) in bound {
        let handle = spawn_listener(&shared.router, listener, kind, addr, shared.grace);
        tracing::info!(address = %handle.local, kind = ?kind, "listening (added by reload)");
        report.listeners_added.push(handle.local.to_string());
        live.listeners.push(handle);
    }
    let mut kept = Vec::new();
    for l in std::mem::take(&mut live.listeners) {
        if wanted.iter().any(|(k, a)| *k == l.kind && *a == l.configured) {
            kept.push(l);
        } else {
            tracing::info!(address = %l.local, kind = ?l.kind, "listener removed by reload; open connections drain");
            let _ = l.stop.send(true);
            report.listeners_removed.push(l.local.to_string());
            live.draining.push(l.task);
        }
    }
    live.listeners = kept;
    live.draining.retain(|t| !t.is_finished());
    live.config = Arc::new(new);
    shared.reloaded.notify_one();
    Ok(report)
}

/// Settings a reload cannot apply to a running process.
pub(crate) fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |changed: bool, what: &str| {
        if changed {
            out.push(what.to_owned());
        }
    };
    check(old.tailscale != new.tailscale, "[tailscale]");
    check(old.cache != new.cache, "[cache]");
    check(old.timeouts != new.timeouts, "[timeouts]");
    check(old.limits != new.limits, "[limits]");
    check(old.admin != new.admin, "[admin]");
    check(old.listen.proxy_protocol_from != new.listen.proxy_protocol_from, "[listen] proxy_protocol_from");
    check(old.log.format != new.log.format || old.log.level != new.log.level, "[log] format/level");
    out
}

/// The names that need a certificate (passthrough services terminate TLS themselves):
/// each service's tailnet name from tailscaled, its `names` from their domain's files.
/// The names to serve: every service's tailnet name — once the MagicDNS `suffix` is
/// known, or at once with an `fqdn` of its own — and its public `names`.
pub(crate) fn service_names(config: &Config, suffix: Option<&str>) -> Vec<ServedName> {
    let mut out = Vec::new();
    for s in config.services.iter().filter(|s| s.needs_certificate()) {
        if s.fqdn.is_some() || suffix.is_some() {
            out.push(ServedName::tailscaled(&s.fqdn(suffix.unwrap_or_default()), &s.name));
        }
        for name in &s.names {
            out.push(ServedName::from_files(name, &s.name));
        }
    }
    out
}

/// Each `[domains]` entry with the names served under it.
pub(crate) fn file_sources(config: &Config) -> Vec<FileSource> {
    config
        .domains
        .iter()
        .map(|d| FileSource {
            domain: d.name.clone(),
            cert: d.cert.clone(),
            key: d.key.clone(),
            names: config
                .services
                .iter()
                .flat_map(|s| s.names.iter())
                .filter(|n| config.domain_for(n).is_some_and(|owner| owner.name == d.name))
                .cloned()
                .collect(),
        })
        .collect()
}

pub(crate) fn wanted_listeners(config: &Config) -> Vec<(ListenerKind, SocketAddr)> {
    config
        .listen
        .https
        .iter()
        .map(|a| (ListenerKind::Tls, *a))
        .chain(config.listen.proxy_protocol.iter().map(|a| (ListenerKind::ProxyV2, *a)))
        .chain(config.listen.redirect_http.iter().map(|a| (ListenerKind::RedirectHttp, *a)))
        .collect()
}

pub(crate) fn spawn_listener(
    router: &Arc<Server>,
    listener: TcpListener,
    kind: ListenerKind,
    configured: SocketAddr,
    grace: Duration,
) -> ListenerHandle {
    let local = listener.local_addr().unwrap_or(configured);
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(Arc::clone(router).serve(listener, kind, stop_rx, grace));
    ListenerHandle { kind, configured, local, stop, task }
}

/// The listen queue asked of the kernel, which caps it at `net.core.somaxconn` (4096 on
/// current kernels). tokio's `TcpListener::bind` asks for 1024; when a network blip makes
/// every client reconnect at once, connections past the queue have their SYNs dropped
/// and retried a second later. nginx asks for 511 by default, HAProxy for its maxconn.
const LISTEN_BACKLOG: u32 = 4096;

pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    listen(addr).map_err(|source| {
        let fix = match source.kind() {
            std::io::ErrorKind::AddrInUse => "another process (an old Caddy?) already listens there; stop it or change [listen]",
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities in the systemd unit)",
            std::io::ErrorKind::AddrNotAvailable => "the address is not on this host (a tailnet IP before tailscaled is up?); listen on 0.0.0.0 or [::] instead",
            _ => "check the address in [listen]",
        };
        BindError { addr, source, fix }
    })
}

/// `SO_REUSEADDR` (as std and tokio set it), bind, listen with [`LISTEN_BACKLOG`].
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// After a network blip every client reconnects at once. Nothing accepts here, so
    /// each connect completes only if the kernel's listen queue has room for it; past a
    /// full queue the SYN is dropped and the connect hangs (a 1 s retransmit for real
    /// clients), which the timeout turns into a failure.
    #[tokio::test]
    async fn the_listen_queue_holds_a_burst_of_reconnecting_clients() {
        const BURST: usize = 1500;
        if crate::rlimit::raise_nofile().map_or(true, |(_, now)| now < 2 * BURST as u64 + 100) {
            eprintln!("skipped: RLIMIT_NOFILE cannot hold {BURST} client and server sockets");
            return;
        }
        let listener = bind("127.0.0.1:0".parse().expect("addr")).await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut clients = Vec::with_capacity(BURST);
        for i in 0..BURST {
            let connect = tokio::time::timeout(Duration::from_secs(2), tokio::net::TcpStream::connect(addr));
            let stream = connect.await.unwrap_or_else(|_| panic!("connect {i} was dropped: the listen queue is full"));
            clients.push(stream.expect("connect"));
        }
    }

    fn config(listen_extra: &str) -> Config {
        let src = format!(
            "[listen]\nproxy_protocol = [\"127.0.0.1:8443\"]\n{listen_extra}\n[services.a]\nupstream = \"http://127.0.0.1:1\"\n"
        );
        snirouter_config::parse(&src, "t.toml").expect("valid")
    }

    #[test]
    fn a_changed_proxy_sender_list_needs_a_restart() {
        let old = config("");
        assert!(restart_needed(&old, &config("")).is_empty());
        let new = config("proxy_protocol_from = [\"10.0.0.0/8\"]");
        assert_eq!(restart_needed(&old, &new), ["[listen] proxy_protocol_from"]);
    }
}
