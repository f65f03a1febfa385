//! Wiring: config → LocalAPI client → certificate store and manager → listeners, plus
//! the operational side: admin socket, upstream checks, systemd watchdog and reload.
//!
//! Start order matters for availability: cached certificates are loaded and the
//! listeners bound *before* tailscaled is asked for anything, so a restart while
//! tailscaled is slow or down still serves every name that has a valid cache.
//!
//! **Reload** ([`Daemon::reload`], SIGHUP, `POST /reload` on the admin socket) re-reads
//! the file the config came from. A config that does not validate is refused with its
//! diagnostics logged and the running one keeps serving. Otherwise: new listeners are
//! bound first (a bind failure refuses the whole reload), then the served names, the
//! route table and the certificate tasks are swapped, then listeners no longer
//! configured stop accepting and drain in the background. Connections and requests
//! in flight are never interrupted: a request holds its service's routes until it
//! ends, and a connection to a removed name gets `421` only for its *next* request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use snirouter_certs::{CertManager, CertStore, DiskCache, ManagerOptions};
use snirouter_config::Config;
use snirouter_localapi::LocalClient;
use snirouter_proxy::{ListenerKind, ProxyOptions, RouteTable, Router};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::health::Upstreams;

/// Why the router could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The LocalAPI client could not be built.
    #[error("LocalAPI client: {0}")]
    LocalApi(#[from] snirouter_localapi::Error),
    /// The cache directory is unusable.
    #[error(
        "certificate cache: {0}\n  fix: create the directory owned by the user snirouter runs as, or set [cache] dir"
    )]
    Cache(#[from] snirouter_certs::cache::CacheError),
    /// Two services end up with the same name once the tailnet suffix is known.
    #[error("{0}")]
    Names(snirouter_config::Diagnostics),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}\n  fix: {fix}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
        /// What to do about it.
        fix: &'static str,
    },
    /// The TLS configuration could not be built.
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// Signal handling could not be installed.
    #[error("signal handler: {0}")]
    Signal(std::io::Error),
}

/// Why a reload was refused; the running configuration keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new file does not validate (every problem, with line and fix).
    #[error("the new configuration is invalid; still serving the previous one\n{0}")]
    Invalid(snirouter_config::Diagnostics),
    /// A new listener could not be bound.
    #[error("{0}\n  (reload refused; still serving the previous configuration)")]
    Bind(StartError),
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

/// The outcome of the last reload, for `snirouter status`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LastReload {
    /// When it ran (unix seconds).
    pub at: u64,
    /// Whether the new configuration is serving.
    pub ok: bool,
    /// Why it was refused.
    pub error: Option<String>,
}

/// One running listener.
struct ListenerHandle {
    kind: ListenerKind,
    /// The address as configured (port 0 stays 0 here).
    configured: SocketAddr,
    /// The address actually bound.
    local: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Mutable state, changed only by reload and shutdown.
struct Live {
    config: Arc<Config>,
    listeners: Vec<ListenerHandle>,
    /// Listeners removed by a reload, still draining their connections.
    draining: Vec<JoinHandle<()>>,
}

/// State shared by the daemon, the admin socket and the background tasks.
pub(crate) struct Shared {
    pub(crate) router: Arc<Router>,
    pub(crate) manager: Arc<CertManager>,
    pub(crate) store: Arc<CertStore>,
    /// For LocalAPI reads on behalf of the admin socket.
    pub(crate) client: LocalClient,
    pub(crate) suffix: String,
    pub(crate) started: SystemTime,
    pub(crate) upstreams: Arc<Upstreams>,
    pub(crate) last_reload: Mutex<Option<LastReload>>,
    pub(crate) reloads_ok: std::sync::atomic::AtomicU64,
    pub(crate) reloads_refused: std::sync::atomic::AtomicU64,
    /// The control API client `status` reads Services with, kept so that its OAuth
    /// token is reused; replaced when `[tailscale.api]` or its credentials change.
    control: Mutex<Option<Arc<snirouter_services::ControlClient>>>,
    live: tokio::sync::Mutex<Live>,
    grace: Duration,
}

impl Shared {
    /// A control API client for `api`, reused while `api` and its credentials stay the
    /// same (`None` when the credential files cannot be read; `doctor` explains that).
    pub(crate) fn control_client(
        &self,
        api: &snirouter_config::TailscaleApi,
    ) -> Option<Arc<snirouter_services::ControlClient>> {
        let mut kept = self.control.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = kept.as_ref().filter(|c| c.matches(api)) {
            return Some(Arc::clone(client));
        }
        let client = Arc::new(snirouter_services::ControlClient::from_config(api).ok()?);
        *kept = Some(Arc::clone(&client));
        Some(client)
    }

    /// The configuration being served.
    pub(crate) async fn config(&self) -> Arc<Config> {
        Arc::clone(&self.live.lock().await.config)
    }

    /// The bound listeners.
    pub(crate) async fn listeners(&self) -> Vec<(ListenerKind, SocketAddr)> {
        self.live.lock().await.listeners.iter().map(|l| (l.kind, l.local)).collect()
    }
}

/// A running router.
pub struct Daemon {
    /// The listeners bound at start, with their kind (see [`Daemon::listeners`] for the
    /// current set after reloads).
    pub listeners: Vec<(ListenerKind, SocketAddr)>,
    /// The certificate store.
    pub store: Arc<CertStore>,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
    background: JoinSet<()>,
}

impl Daemon {
    /// Starts everything described by `config`.
    pub async fn start(config: Config) -> Result<Daemon, StartError> {
        let client = LocalClient::new(&config.tailscale.socket)?;
        let cache = DiskCache::open(&config.cache.dir)?;
        let suffix = magic_dns_suffix(&config, &client, &cache).await;
        config.check_fqdns(&suffix).map_err(StartError::Names)?;
        log_warnings(&config);
        if config.tailscale.manage_services {
            // Tailscale Services sync in the background; errors are logged, never fatal.
            snirouter_services::spawn_startup_sync(config.clone());
        }

        let store = Arc::new(CertStore::new());
        let names = service_names(&config, &suffix);
        store.set_names(&names);

        let opts = ManagerOptions { request_timeout: config.timeouts.cert_request, ..ManagerOptions::default() };
        let manager = CertManager::new(Arc::clone(&store), client.clone(), Some(cache), opts);
        let cached = manager.load_cache();

        let table = RouteTable::from_config(&config, &suffix, None);
        let router = Router::new(table, Arc::clone(&store), ProxyOptions::from_config(&config), Some(client.clone()))?;
        let grace = config.timeouts.idle.min(Duration::from_secs(30));

        let mut handles = Vec::new();
        for (kind, addr) in wanted_listeners(&config) {
            let listener = bind(addr).await?;
            handles.push(spawn_listener(&router, listener, kind, addr, grace));
        }
        let listeners: Vec<(ListenerKind, SocketAddr)> = handles.iter().map(|l| (l.kind, l.local)).collect();

        let (shutdown, shutdown_rx) = watch::channel(false);
        let admin = config.admin.clone();
        let shared = Arc::new(Shared {
            router: Arc::clone(&router),
            manager: Arc::clone(&manager),
            store: Arc::clone(&store),
            client,
            suffix: suffix.clone(),
            started: SystemTime::now(),
            upstreams: Arc::new(Upstreams::default()),
            last_reload: Mutex::new(None),
            reloads_ok: Default::default(),
            reloads_refused: Default::default(),
            control: Mutex::new(None),
            live: tokio::sync::Mutex::new(Live { config: Arc::new(config), listeners: handles, draining: Vec::new() }),
            grace,
        });

        let mut background = JoinSet::new();
        background.spawn(crate::health::run(Arc::clone(&shared.upstreams), Arc::clone(&router), shutdown_rx.clone()));
        if let Some(server) = crate::admin::bind_socket(&admin.socket).await {
            background.spawn(crate::admin::serve_socket(
                server,
                admin.socket.clone(),
                Arc::clone(&shared),
                shutdown_rx.clone(),
            ));
        }
        if let Some(addr) = admin.metrics_listen {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    tracing::info!(address = %addr, "serving /metrics over TCP ([admin] metrics_listen)");
                    background.spawn(crate::admin::serve_metrics_tcp(l, Arc::clone(&shared), shutdown_rx.clone()));
                }
                Err(e) => {
                    tracing::warn!(address = %addr, error = %e, "cannot listen for metrics; fix: change [admin] metrics_listen or stop the process holding it")
                }
            }
        }
        if let Some(period) = crate::sdnotify::watchdog_interval() {
            tracing::info!(interval_ms = period.as_millis() as u64, "systemd watchdog enabled");
            background.spawn(crate::sdnotify::watchdog(period, shutdown_rx.clone()));
        }

        manager.start();
        for (kind, addr) in &listeners {
            tracing::info!(address = %addr, kind = ?kind, "listening");
        }
        tracing::info!(
            services = names.len(),
            cached_certificates = cached,
            suffix = %suffix,
            "snirouter ready"
        );
        crate::sdnotify::notify("READY=1");
        Ok(Daemon { listeners, store, shared, shutdown, background })
    }

    /// The first listener of `kind`.
    pub fn addr(&self, kind: ListenerKind) -> Option<SocketAddr> {
        self.listeners.iter().find(|(k, _)| *k == kind).map(|(_, a)| *a)
    }

    /// Re-reads the config file this daemon was started from and applies it (see the
    /// module docs). On error the running configuration is untouched.
    pub async fn reload(&self) -> Result<ReloadReport, ReloadError> {
        reload(&self.shared).await
    }

    /// Stops accepting, lets open connections finish within the grace period, stops
    /// certificate work.
    pub async fn shutdown(mut self) {
        crate::sdnotify::notify("STOPPING=1");
        let _ = self.shutdown.send(true);
        let (tasks, draining) = {
            let mut live = self.shared.live.lock().await;
            for l in &live.listeners {
                let _ = l.stop.send(true);
            }
            let tasks: Vec<JoinHandle<()>> = live.listeners.drain(..).map(|l| l.task).collect();
            (tasks, std::mem::take(&mut live.draining))
        };
        for task in tasks.into_iter().chain(draining) {
            let _ = task.await;
        }
        self.shared.manager.shutdown();
        let grace = self.shared.grace;
        let _ = tokio::time::timeout(grace, async { while self.background.join_next().await.is_some() {} }).await;
        self.background.abort_all();
    }
}

/// Applies the config file again; see [`Daemon::reload`].
pub(crate) async fn reload(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    use std::sync::atomic::Ordering;
    crate::sdnotify::notify("RELOADING=1");
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
    crate::sdnotify::notify("READY=1");
    result
}

/// One log line per configuration warning (`snirouter check` prints the same).
fn log_warnings(config: &Config) {
    for w in config.warnings() {
        tracing::warn!(key = %w.key_path, line = w.line, fix = w.help.as_deref().unwrap_or(""), "{}", w.message);
    }
}

async fn reload_inner(shared: &Arc<Shared>) -> Result<ReloadReport, ReloadError> {
    let mut live = shared.live.lock().await;
    let old = Arc::clone(&live.config);
    let path = PathBuf::from(&old.origin);
    let new = snirouter_config::load(&path).map_err(ReloadError::Invalid)?;
    new.check_fqdns(&shared.suffix).map_err(ReloadError::Invalid)?;
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
    shared.store.set_names(&service_names(&new, &shared.suffix));
    shared.manager.load_cache();
    let table = RouteTable::from_config(&new, &shared.suffix, Some(&shared.router.routes()));
    shared.router.set_routes(table);
    shared.manager.sync_names();

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
    Ok(report)
}

/// Settings a reload cannot apply to a running process.
fn restart_needed(old: &Config, new: &Config) -> Vec<String> {
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

/// The names that need a certificate (passthrough services terminate TLS themselves).
fn service_names(config: &Config, suffix: &str) -> Vec<(String, String)> {
    config.services.iter().filter(|s| s.needs_certificate()).map(|s| (s.fqdn(suffix), s.name.clone())).collect()
}

fn wanted_listeners(config: &Config) -> Vec<(ListenerKind, SocketAddr)> {
    config
        .listen
        .https
        .iter()
        .map(|a| (ListenerKind::Tls, *a))
        .chain(config.listen.proxy_protocol.iter().map(|a| (ListenerKind::ProxyV2, *a)))
        .chain(config.listen.redirect_http.iter().map(|a| (ListenerKind::RedirectHttp, *a)))
        .collect()
}

fn spawn_listener(
    router: &Arc<Router>,
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

/// `run`: start, then serve until SIGINT or SIGTERM; SIGHUP reloads the config file.
pub async fn run_until_signal(config: Config) -> Result<(), StartError> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).map_err(StartError::Signal)?;
    let mut hup = signal(SignalKind::hangup()).map_err(StartError::Signal)?;
    // Starting can wait for tailscaled for a long time (no MagicDNS suffix yet):
    // SIGTERM and Ctrl-C must still stop it.
    let daemon = tokio::select! {
        started = Daemon::start(config) => started?,
        _ = tokio::signal::ctrl_c() => {
            tracing::info!("interrupted while starting");
            return Ok(());
        }
        _ = term.recv() => {
            tracing::info!("SIGTERM while starting; stopped");
            return Ok(());
        }
    };
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {
                tracing::info!("interrupted; draining connections");
                break;
            }
            _ = term.recv() => {
                tracing::info!("SIGTERM; draining connections");
                break;
            }
            _ = hup.recv() => {
                tracing::info!("SIGHUP; reloading the configuration");
                // The outcome is logged by reload().
                let _ = daemon.reload().await;
            }
        }
    }
    daemon.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

/// The suffix names are built from: the config's override, else the one cached from
/// the last run (so a restart does not wait for tailscaled), else tailscaled's status —
/// waited for, with a log line per failure naming the cause and the fix.
async fn magic_dns_suffix(config: &Config, client: &LocalClient, cache: &DiskCache) -> String {
    if let Some(s) = &config.tailscale.magic_dns_suffix {
        return s.clone();
    }
    if let Some(s) = cache.state().magic_dns_suffix {
        // Confirm in the background; a renamed tailnet needs a restart to rename names.
        let client = client.clone();
        let cached = s.clone();
        tokio::spawn(async move {
            if let Ok(status) = client.status().await
                && let Some(live) = status.magic_dns_suffix()
                && live != cached
            {
                tracing::error!(cached = %cached, tailscaled = %live, "the tailnet's MagicDNS suffix changed; restart snirouter to serve the new names");
            }
        });
        return s;
    }
    let mut delay = Duration::from_secs(1);
    loop {
        match client.status().await {
            Ok(status) => match status.magic_dns_suffix() {
                Some(s) => {
                    let s = s.to_owned();
                    if let Err(e) = cache.update_state(|st| st.magic_dns_suffix = Some(s.clone())) {
                        tracing::warn!(error = %e, "cannot remember the MagicDNS suffix in the cache");
                    }
                    return s;
                }
                None => tracing::warn!(
                    backend_state = ?status.backend_state,
                    "tailscaled has no tailnet yet; fix: log in with `tailscale up` (or set [tailscale] magic_dns_suffix)"
                ),
            },
            Err(e) => tracing::warn!(
                cause = %e,
                fix = e.fix().unwrap_or_default(),
                "waiting for tailscaled to learn the tailnet's MagicDNS suffix"
            ),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(30));
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr).await.map_err(|source| {
        let fix = match source.kind() {
            std::io::ErrorKind::AddrInUse => "another process (an old Caddy?) already listens there; stop it or change [listen]",
            std::io::ErrorKind::PermissionDenied => "ports below 1024 need root or CAP_NET_BIND_SERVICE (AmbientCapabilities in the systemd unit)",
            std::io::ErrorKind::AddrNotAvailable => "the address is not on this host (a tailnet IP before tailscaled is up?); listen on 0.0.0.0 or [::] instead",
            _ => "check the address in [listen]",
        };
        StartError::Bind { addr, source, fix }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
